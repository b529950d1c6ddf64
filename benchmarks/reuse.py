"""An update after reorganising a photo library costs hashing, not embedding (issue 14).

    python benchmarks/reuse.py [--images 2000] [--moved 1000] [--model mobilenet] [--runs 1]

Writes N synthetic photos (smooth gradients and blobs, 320x240 JPEG) into a temporary folder and,
in each run, side by side on the same machine:

* **fresh build**: ``Index.build`` of the folder into a new index (every photo embedded);
* **update after moving M photos**: the photos are moved into a new subfolder (renamed paths,
  same content), then ``Index.build`` updates the index: the moved photos are found by content
  hash and take their stored vectors; nothing is embedded;
* **update, nothing changed**: the same call again (sizes and times match: no reading at all).

Reports medians and the ratio update / fresh build. The model is built with random weights
(``weights=None``): the same speed as its ImageNet weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, machine_lines, synthetic_photo  # noqa: E402
from PIL import Image  # noqa: E402

from revsearch.embedding import get_embedder  # noqa: E402
from revsearch import Index  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--moved", type=int, default=1000)
    ap.add_argument("--model", default="mobilenet")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    emb = get_embedder(args.model, weights=None)
    emb.keras_model  # noqa: B018  (built once, outside the timings)
    fresh_s, moved_s, same_s = [], [], []
    with tempfile.TemporaryDirectory(prefix="revsearch-bench-reuse-") as tmp:
        ds = Path(tmp) / "photos"
        (ds / "2023").mkdir(parents=True)
        for i in range(args.images):
            Image.fromarray(synthetic_photo(i, (320, 240), max_radius=60)).save(ds / "2023" / f"img{i:05d}.jpg", quality=90)
        for run in range(args.runs):
            vec = Path(tmp) / f"vec{run}"
            t0 = time.perf_counter()
            fresh, r0 = Index.build(ds, vec, emb, progress=False)
            fresh_s.append(time.perf_counter() - t0)
            assert r0.embedded == args.images
            new = ds / f"moved{run}"
            new.mkdir()
            for p in sorted(p for p in ds.rglob("*.jpg"))[: args.moved]:
                shutil.move(str(p), str(new / p.name))
            t0 = time.perf_counter()
            idx, r1 = Index.build(ds, vec, emb, progress=False)
            moved_s.append(time.perf_counter() - t0)
            assert r1.embedded == 0 and len(r1.moved) == args.moved and len(idx) == args.images, r1.summary()
            t0 = time.perf_counter()
            _, r2 = Index.build(ds, vec, emb, progress=False)
            same_s.append(time.perf_counter() - t0)
            assert r2.embedded == 0 and len(r2.unchanged) == args.images
            shutil.rmtree(vec)
    f, m, s = (statistics.median(x) for x in (fresh_s, moved_s, same_s))
    print(f"`{command_line()}`\n")
    for line in machine_lines():
        print(f"- {line}")
    print(f"- {args.images} synthetic 320x240 JPEG photos, {args.model} (random weights), median of {args.runs} run(s)\n")
    print("| step | seconds | vs fresh build |")
    print("|---|---|---|")
    print(f"| fresh build (every photo embedded) | {f:.1f} | 1 |")
    print(f"| update after moving {args.moved} photos to a new folder | {m:.2f} | {m / f:.3f} |")
    print(f"| update, nothing changed | {s:.2f} | {s / f:.3f} |")


if __name__ == "__main__":
    main()
