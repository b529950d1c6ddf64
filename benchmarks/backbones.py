"""Speed per image of every named backbone (random weights: the same cost as ImageNet's), side by side.

Run from the repository root:

    python benchmarks/backbones.py [--images 64] [--runs 3]

Each model embeds the same prepared photos (``Embedder.embed_prepared``: normalisation, forward pass,
pooling; decoding excluded) in batches of 16; the batches of all models are interleaved, in an order
that rotates, so a change in the machine's load hits them alike. Reports the median over runs of
images per second and the time relative to ResNet50 (the library's default model). Quality is not
measured here: only MobileNet's ImageNet weights are available offline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import cpu_count, cpu_name  # noqa: E402


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"]
                return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"
    except OSError:
        pass
    return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--models", default="resnet50,mobilenet,efficientnetv2-b0,efficientnetv2-s,convnext-tiny")
    args = ap.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.ERROR)
    from revsearch.models.embedding import Embedder

    names = args.models.split(",")
    embedders = {n: Embedder(n, weights=None) for n in names}
    rng = np.random.default_rng(0)
    photos = {}
    for n, e in embedders.items():
        # smooth random "photos" at each model's own input size (the forward cost does not depend on content)
        base = rng.uniform(0, 255, (args.images, 8, 8, 3)).astype(np.float32)
        photos[n] = np.repeat(np.repeat(base, e.input_size // 8 + 1, axis=1), e.input_size // 8 + 1, axis=2)[
            :, : e.input_size, : e.input_size
        ].copy()
        e.embed_prepared(photos[n][: args.batch])  # build + warm up
    per_run: dict[str, list[float]] = {n: [] for n in names}
    for run in range(args.runs):
        spent = dict.fromkeys(names, 0.0)
        for i, start in enumerate(range(0, args.images, args.batch)):
            shift = (i + run) % len(names)
            for n in names[shift:] + names[:shift]:
                t = time.perf_counter()
                embedders[n].embed_prepared(photos[n][start : start + args.batch])
                spent[n] += time.perf_counter() - t
        for n in names:
            per_run[n].append(spent[n])
    ref = statistics.median(per_run.get("resnet50", per_run[names[0]]))
    print(f"CPU: {cpu_name()} ({cpu_flags()}), {cpu_count()} usable cores; float32; batch {args.batch}; "
          f"{args.images} images x {args.runs} runs, medians; weights=None (same cost as ImageNet weights)")
    print("| model | input | vector | img/s | time vs resnet50 |")
    print("|---|---|---|---|---|")
    for n in names:
        med = statistics.median(per_run[n])
        e = embedders[n]
        print(f"| {n} | {e.input_size}x{e.input_size} | {e.dim} | {args.images / med:.1f} | {med / ref:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
