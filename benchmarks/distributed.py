"""Indexing on a Dask LocalCluster: 1 worker against 2 workers, against one plain process.

    python benchmarks/distributed.py [--images 320] [--partition-size 32] [--model resnet50]
                                     [--repeats 2] [--tmp DIR] [--json FILE]

Writes ``--images`` synthetic photos (smooth gradients and blobs, 160x120 JPEGs), then indexes
them with ResNet50 (seeded random weights: the same compute as ImageNet weights, no download):

* ``single process``: ``Index.build`` in this process (TensorFlow using every core);
* ``dask, 1 worker``: ``build_index_dask`` on a ``LocalCluster`` of one worker process, whose
  TensorFlow may use every core;
* ``dask, 2 workers``: the same with two worker processes, each letting TensorFlow use
  ``cores // 2`` threads (``revsearch.distributed.dask_client``'s default).

Each configuration indexes into a fresh folder ``--repeats`` times on the same cluster: the
first run includes building the model on the workers (the worker plugin), later ones are steady
state; the speed-up quoted is the ratio of steady-state medians, 1 worker / 2 workers, measured
in the same run of this script. The machine may be shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import sys

import numpy as np

# This file is named like Dask's `distributed` package: when run as a script its folder comes first
# on sys.path and would shadow it. Move the folder to the end (common.py stays importable).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

from common import command_line, cpu_count, load_average, machine_lines, median, synthetic_photo, table  # noqa: E402


def write_photos(folder: Path, n: int) -> None:
    from PIL import Image

    for i in range(n):
        sub = folder / f"part{i // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_photo(i)).save(sub / f"img{i:06d}.jpg", quality=92)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--partition-size", type=int, default=32)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING)
    import distributed  # noqa: F401  (its import sets its loggers' levels; quieten them after)

    logging.getLogger("distributed").setLevel(logging.ERROR)

    from revsearch.distributed import build_index_dask, dask_client
    from revsearch.embedding import get_embedder
    from revsearch import Index

    info = machine_lines()
    tmp = Path(tempfile.mkdtemp(prefix="revsearch-dask-", dir=args.tmp))
    results: dict[str, Any] = {"images": args.images, "partition_size": args.partition_size, "model": args.model}
    try:
        photos = tmp / "photos"
        write_photos(photos, args.images)
        runs: dict[str, list[float]] = {}

        emb = get_embedder(args.model, weights=None)
        t0 = time.perf_counter()
        emb.keras_model
        results["single_model_build_s"] = time.perf_counter() - t0
        runs["single process"] = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            Index.build(photos, tmp / f"single-{r}", emb, progress=False)
            runs["single process"].append(time.perf_counter() - t0)
            print(f"single process run {r}: {runs['single process'][-1]:.1f} s", flush=True)
        reference = Index.open(tmp / "single-0")

        for workers in (1, 2):
            name = f"dask, {workers} worker{'s' if workers > 1 else ''}"
            runs[name] = []
            t0 = time.perf_counter()
            with dask_client("local", n_workers=workers, threads_per_worker=1) as client:
                results[f"cluster_start_{workers}_s"] = time.perf_counter() - t0
                for r in range(args.repeats):
                    t0 = time.perf_counter()
                    index, rep = build_index_dask(
                        photos, tmp / f"dask{workers}-{r}", args.model, weights=None, client=client,
                        partition_size=args.partition_size, progress=False,
                    )
                    runs[name].append(time.perf_counter() - t0)
                    assert index.paths == reference.paths
                    err = float(np.abs(np.asarray(index.vectors) - np.asarray(reference.vectors)).max())
                    results[f"max_abs_diff_{workers}"] = err
                    print(f"{name} run {r}: {runs[name][-1]:.1f} s ({rep.partitions} partitions, "
                          f"{len({t['pid'] for t in rep.tasks})} worker processes used, max |diff| {err:.1e})",
                          flush=True)
        results["runs"] = runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    steady = {k: median(v[1:] if len(v) > 1 else v) for k, v in runs.items()}
    base = steady["dask, 1 worker"]
    rows = [
        [k, " / ".join(f"{x:.1f}" for x in v), f"{steady[k]:.1f} s", f"{args.images / steady[k]:.1f}",
         f"{base / steady[k]:.2f}x"]
        for k, v in runs.items()
    ]
    lines = ["# Indexing on Dask: 1 worker vs 2 workers", "", f"`{command_line()}`", ""]
    lines += [f"- {x}" for x in info]
    lines += [
        f"- load average at the end: {load_average()}",
        f"- {args.images} synthetic 160x120 JPEGs, {args.model} (random seeded weights), partitions of "
        f"~{args.partition_size} images, {cpu_count()} cores",
        f"- vectors of every Dask run equal the single-process ones within "
        f"{max(results.get('max_abs_diff_1', 0), results.get('max_abs_diff_2', 0)):.1e}",
        f"- cluster start: {results['cluster_start_1_s']:.1f} s (1 worker), {results['cluster_start_2_s']:.1f} s "
        "(2 workers); the first run on a cluster includes building the model on each worker",
        "",
        table(["configuration", "runs (s)", "steady state", "images/s", "vs 1 worker"], rows),
        "",
        f"Speed-up from 1 to 2 workers (steady state, same run): {base / steady['dask, 2 workers']:.2f}x",
    ]
    results["steady_s"] = steady
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
