"""How long ``Index.open`` takes on a large index (memory-mapped: no per-row parsing).

Usage: ``python benchmarks/open_index.py [--n 100000] [--dim 2048] [--runs 7]``

Writes an index of N synthetic vectors with ``Index.from_vectors`` into a temporary folder, then times
``Index.open`` (manifest + shard headers) and ``Index.open(...).paths`` (reading the N relative paths),
medians of several runs, in a fresh state each time (no object reused).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from revsearch.embedding import Embedder
from revsearch import Index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vectors"
        rng = np.random.default_rng(0)
        spec = dict(Embedder("resnet50", weights=None).spec)
        spec["dim"] = args.dim
        vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
        paths = [f"{i // 1000:04d}/{i:08d}.jpg" for i in range(args.n)]
        Index.from_vectors(folder, vectors, paths, spec)
        del vectors
        open_s, paths_s = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            index = Index.open(folder)
            t1 = time.perf_counter()
            n_paths = len(index.paths)
            t2 = time.perf_counter()
            assert len(index) == args.n == n_paths
            open_s.append(t1 - t0)
            paths_s.append(t2 - t1)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        print(f"index: {args.n:,} vectors x {args.dim}-d, {size:.0f} MiB on disk (page cache warm)")
        print("| step | median of %d runs |" % args.runs)
        print("|---|---|")
        print(f"| `Index.open` (manifest, memory-map the vectors) | {statistics.median(open_s) * 1e3:.2f} ms |")
        print(f"| then `.paths` (read {args.n:,} relative paths) | {statistics.median(paths_s) * 1e3:.2f} ms |")


if __name__ == "__main__":
    main()
