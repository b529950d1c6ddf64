"""Feature maps of the two labelled photo sets, pooled every way the expansion benchmark compares.

Run from the repository root (writes a cache; ``benchmarks/expansion.py quality`` reads it):

    python benchmarks/expansion_features.py [--datasets ../shared/datasets] [--cache /tmp/expand/features]

Keras MobileNet (offline ImageNet weights), centre crop as ``revsearch.Embedder("mobilenet")``
prepares it, no pooling: feature maps at 224 (prepared at 224: today's default pipeline), and at
448, 320 and 224 prepared at 448 and resized down (as ``Embedder(scales=...)`` does). Each map is
pooled: ``avg`` (the default), ``gem`` (p=3), ``mac`` (max) and ``rmac`` (R-MAC, Tolias et al. 2016:
max-pooled regions at 3 levels, 14 regions on a square map, each L2-normalised, summed; no
whitening). Saved per dataset and input: ``<dataset>.<input>.<pool>.npy`` (n, 1024) float32, not
normalised.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: input name -> (side prepared from the file, side given to the network)
INPUTS = {"224": (224, 224), "448": (448, 448), "320from448": (448, 320), "224from448": (448, 224)}
POOLS = ("avg", "gem", "mac", "rmac")
DATASETS = (("flowers", "oxford17_flowers"), ("ukbench", "ukbench_subset"))


def pool_maps(fmap: np.ndarray) -> dict[str, np.ndarray]:
    """Shape (b, h, w, c) feature maps -> each pooling's (b, c) descriptors."""
    from revsearch.embedding import GEM_P, l2_normalize, rmac_regions  # the library's regions (pooling="rmac")

    f = np.asarray(fmap, np.float32)
    out = {
        "avg": f.mean(axis=(1, 2)),
        "gem": np.power(np.power(np.maximum(f, 1e-6), GEM_P).mean(axis=(1, 2)), 1 / GEM_P),
        "mac": f.max(axis=(1, 2)),
    }
    acc = np.zeros(out["avg"].shape, np.float32)
    for y0, y1, x0, x1 in rmac_regions(f.shape[1], f.shape[2]):
        acc += l2_normalize(f[:, y0:y1, x0:x1, :].max(axis=(1, 2)))
    out["rmac"] = acc
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/expand/features"))
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)
    from benchmarks.common import offline_keras_home

    offline_keras_home(args.datasets.parent / "keras" / "models")
    import keras
    from concurrent.futures import ThreadPoolExecutor

    from revsearch.embedding import resize_prepared
    from revsearch.images import find_images, prepare_image

    models = {s: keras.applications.MobileNet(include_top=False, weights="imagenet", input_shape=(s, s, 3))
              for s in (224, 320, 448)}
    from keras.applications import mobilenet

    args.cache.mkdir(parents=True, exist_ok=True)
    for name, folder in DATASETS:
        root = args.datasets / folder
        files = find_images(root)
        if all((args.cache / f"{name}.{i}.{p}.npy").is_file() for i in INPUTS for p in POOLS):
            print(f"{name}: cached")
            continue
        (args.cache / f"{name}.paths.txt").write_text("".join(f.relative_to(root).as_posix() + "\n" for f in files))
        parts: dict[str, dict[str, list[np.ndarray]]] = {i: {p: [] for p in POOLS} for i in INPUTS}
        t0 = time.perf_counter()

        def prep(f: Path) -> dict[str, np.ndarray]:
            p224 = prepare_image(f, 224, fit="crop", fill=(0, 0, 0))
            p448 = prepare_image(f, 448, fit="crop", fill=(0, 0, 0))
            return {"224": p224, "448": p448, "320from448": resize_prepared(p448, 320),
                    "224from448": resize_prepared(p448, 224)}

        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(files), args.batch):
                prepared = list(pool.map(prep, files[start : start + args.batch]))
                for inp, (_, side) in INPUTS.items():
                    x = mobilenet.preprocess_input(np.stack([p[inp] for p in prepared]).astype(np.float32))
                    pooled = pool_maps(models[side].predict_on_batch(x))
                    for p in POOLS:
                        parts[inp][p].append(pooled[p])
                print(f"{name}: {start + len(prepared)}/{len(files)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for inp in INPUTS:
            for p in POOLS:
                np.save(args.cache / f"{name}.{inp}.{p}.npy", np.concatenate(parts[inp][p]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
