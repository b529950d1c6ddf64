"""Approximate search (``revsearch.ann``, FAISS IVF-PQ + exact re-ranking) against exact search.

    python benchmarks/ann.py [--sizes 100000 1000000] [--dim 2048] [--queries 300]
                             [--data structured|isotropic] [--target-recall 0.95] [--tmp DIR] [--json FILE]

For each size N a real revsearch index folder of N synthetic vectors (``--dim``-d float32, the
product's 2048 by default) is generated chunk by chunk straight into memory-mapped shard files
of the index's usual size (never whole in memory), then:

1. exact search (``Index.topk(exact=True)``) gives the true top-9 of ``--queries`` queries, and
   its time per query, in a batch and one query at a time;
2. ``revsearch.ann.build_ann`` builds (and tunes to ``--target-recall`` on its own vectors) the approximate index the library would choose by itself
   (``kind="auto"``: IVF-PQ at these sizes, training on a sample), timed, with its peak extra
   memory (VmHWM after clearing it) and its size on disk and in memory (RSS growth on loading);
   (the build's peak heap is sampled from RssAnon: the memory-mapped shards it reads are page
   cache, not counted);
3. ``Index.topk`` then searches through it (``nprobe`` cells, ``rerank`` candidates re-scored
   exactly from the memory-mapped shards): recall@9 against exact search, and time per query,
   in a batch and one at a time; a small grid of ``nprobe`` x ``rerank`` shows the trade-off.

Timings of exact and approximate search alternate, and medians are reported, because the
machine may be shared (its load average is printed).

The data are synthetic, NOT image features (say so wherever the numbers are quoted):

``structured`` (default)
    A two-level Gaussian mixture: 1,000 top-level centres, each with 10 sub-centres (10,000
    leaves, sizes drawn log-normally), in a 256-d latent space with a power-law spectrum
    (variance of the i-th direction ~ 1/i), mapped into ``dim`` dimensions by a random
    orthonormal map, plus isotropic noise (30% of the norm), then L2-normalised. This mimics the
    low intrinsic dimension and cluster structure of CNN features.
``isotropic``
    The plain Gaussian mixture: 4,096 random centres plus isotropic noise, L2-normalised. Within
    a cluster every point is about equally far from every other (in 2048 dimensions), so the
    top-9 are decided by noise: hard for a compressed index once a cluster holds more points
    than ``rerank`` candidates (about 244 per cluster at 1M).

Queries are fresh draws from the same distribution, not copies of indexed vectors. Files go to
``--tmp`` (default: the system's temporary folder) and are deleted at the end; N x dim x 4 bytes
of disk are needed (8 GB at 1,000,000 x 2048), and the page cache should hold as much for the
exact-search timings to measure computing rather than disk reads.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import command_line, fmt_mb, fmt_ms, load_average, machine_lines, median, proc_kib, synthetic_spec, table

from revsearch import ann
from revsearch import store
from revsearch import Index
from revsearch.indexing import TARGET_SHARD_BYTES
from revsearch.store import ROW_DTYPE

K = 9


# ---------------------------------------------------------------------------------------- data
class Structured:
    """Two-level Gaussian mixture in a 256-d power-law latent space, mapped to ``dim``-d, plus noise."""

    def __init__(self, dim: int, latent: int = 256, tops: int = 1000, leaves: int = 10, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        latent = min(latent, dim)
        w, _ = np.linalg.qr(rng.standard_normal((dim, latent)).astype(np.float32))
        self.map = np.ascontiguousarray(w.T, dtype=np.float32)  # (latent, dim), orthonormal rows
        s = np.arange(1, latent + 1, dtype=np.float32) ** -0.5
        self.scale = (s / np.sqrt((s**2).sum())).astype(np.float32)
        top = rng.standard_normal((tops, latent), dtype=np.float32) * self.scale
        leaf = np.repeat(top, leaves, 0) + 0.5 * rng.standard_normal((tops * leaves, latent), dtype=np.float32) * self.scale
        self.centres = leaf.astype(np.float32)
        p = rng.lognormal(0, 0.5, len(leaf))
        self.p = p / p.sum()
        self.dim = dim

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        j = rng.choice(len(self.p), n, p=self.p)
        lat = self.centres[j] + 0.35 * rng.standard_normal((n, len(self.scale)), dtype=np.float32) * self.scale
        x = lat @ self.map
        x += (0.3 / np.sqrt(self.dim)) * rng.standard_normal((n, self.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


class Isotropic:
    """Gaussian mixture: 4096 random centres plus isotropic noise."""

    def __init__(self, dim: int, centres: int = 4096, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.centres = (rng.standard_normal((centres, dim)) / np.sqrt(dim)).astype(np.float32)
        self.dim = dim

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        j = rng.integers(0, len(self.centres), n)
        x = self.centres[j] + (0.6 / np.sqrt(self.dim)) * rng.standard_normal((n, self.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def write_index(folder: Path, gen: Any, n: int, chunk: int = 16384) -> Index:
    """Write an index of ``n`` generated vectors, shard by shard, streamed through the store's writer."""
    dim = gen.dim
    per_shard = max(chunk, TARGET_SHARD_BYTES // (4 * dim))
    with store.writing(folder) as w:
        w.commit(spec=synthetic_spec(dim), complete=False)
        shards = []
        for start in range(0, n, per_shard):
            m = min(per_shard, n - start)
            blocks = (
                gen.sample(min(m, a + chunk) - a, seed=1000 + (start + a) // chunk) for a in range(0, m, chunk)
            )
            rows = np.zeros(m, ROW_DTYPE)
            rows["size"] = -1
            paths = [f"img{i:08d}.jpg" for i in range(start, start + m)]
            shards.append(w.write_shard(blocks, rows, paths, dim=dim))
        w.commit(shards=shards, complete=True)
    return Index.open(folder)


# ---------------------------------------------------------------------------------------- measuring
def rss_anon() -> int:
    """Resident anonymous memory (heap, not the memory-mapped shard files) of this process, in bytes."""
    return proc_kib("RssAnon") or 0


class AnonPeak:
    """Peak of :func:`rss_anon` while a block runs (sampled every 20 ms by a thread)."""

    def __enter__(self) -> AnonPeak:
        import threading

        self.base = self.peak = rss_anon()
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, rss_anon())

        self._t = threading.Thread(target=watch, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon())

    @property
    def extra(self) -> int:
        return self.peak - self.base


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def bench_size(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    gen = (Structured if args.data == "structured" else Isotropic)(args.dim)
    folder = tmp / f"ann-bench-{n}"
    out: dict[str, Any] = {"n": n, "dim": args.dim, "data": args.data, "matrix_bytes": n * args.dim * 4}
    try:
        t0 = time.perf_counter()
        index = write_index(folder, gen, n)
        out["generate_s"] = time.perf_counter() - t0
        q = gen.sample(args.queries, seed=7)
        print(f"[{n}] generated in {out['generate_s']:.0f} s; {len(index.shards)} shards", flush=True)

        # exact: ground truth (the first batch run warms the page cache), then timings
        t0 = time.perf_counter()
        _, truth = index.topk(q, K, exact=True)
        out["exact_first_batch_s"] = time.perf_counter() - t0
        print(f"[{n}] exact ground truth in {out['exact_first_batch_s']:.0f} s", flush=True)

        # the approximate index the library chooses by itself
        t0 = time.perf_counter()
        with AnonPeak() as mem:
            meta = ann.build_ann(index, target_recall=args.target_recall or None, progress=False)
        out["build_s"] = time.perf_counter() - t0
        out["build_peak_extra_bytes"] = mem.extra
        out["ann"] = {k: meta[k] for k in ("kind", "params", "file_bytes", "memory_bytes_estimate")}
        if meta.get("tuning"):
            out["tuning"] = {k: v for k, v in meta["tuning"].items() if k != "tried"}
            print(f"[{n}] tuned: {out['tuning']}", flush=True)
        print(f"[{n}] built {meta['kind']} {meta['params']} in {out['build_s']:.0f} s", flush=True)
        ann.clear_cache()
        gc.collect()
        before = rss_anon()
        fidx = ann.load_ann(index)
        out["loaded_rss_growth_bytes"] = rss_anon() - before  # rough: freed memory may be reused
        out["ram_bytes"] = meta["file_bytes"]  # the file is read whole into memory ...
        if meta["kind"] == "ivfpq":
            inv = fidx.invlists
            codes = sum(inv.list_size(i) for i in range(fidx.nlist)) * (fidx.code_size + 8)
            table_bytes = fidx.precomputed_table.size() * 4
            out["faiss_parts_bytes"] = {"codes+ids": codes, "precomputed_table": table_bytes,
                                        "coarse_centroids": fidx.nlist * args.dim * 4}
            out["ram_bytes"] += table_bytes  # ... plus the IVF-PQ distance table computed on loading

        # search: exact and approximate timings alternate; medians
        singles = q[: args.single]
        ex_b, ap_b, ex_1, ap_1 = [], [], [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            index.topk(q, K, exact=True)
            ex_b.append((time.perf_counter() - t0) / len(q))
            t0 = time.perf_counter()
            _, found = index.topk(q, K)
            ap_b.append((time.perf_counter() - t0) / len(q))
            for v in singles:
                t0 = time.perf_counter()
                index.topk(v, K, exact=True)
                ex_1.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                index.topk(v, K)
                ap_1.append(time.perf_counter() - t0)
        out["recall"] = recall(found, truth)
        out["exact_batch_s"], out["ann_batch_s"] = median(ex_b), median(ap_b)
        out["exact_single_s"], out["ann_single_s"] = median(ex_1), median(ap_1)
        print(f"[{n}] recall@9 {out['recall']:.4f}; per query exact {fmt_ms(out['exact_batch_s'])} vs "
              f"ann {fmt_ms(out['ann_batch_s'])} (batch), {fmt_ms(out['exact_single_s'])} vs "
              f"{fmt_ms(out['ann_single_s'])} (one query)", flush=True)

        grid = []
        if meta["kind"] == "ivfpq":
            nl = meta["params"]["nlist"]
            for nprobe in sorted({max(1, nl // 128), max(1, nl // 64), max(1, nl // 32), max(1, nl // 16)}):
                for rr in (0, 50, 100, 200):
                    t0 = time.perf_counter()
                    _, f = ann.ann_topk(index, q, K, nprobe=nprobe, rerank=rr)
                    dt = (time.perf_counter() - t0) / len(q)
                    grid.append({"nprobe": nprobe, "rerank": rr, "recall": recall(f, truth), "batch_s": dt})
        out["grid"] = grid
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        ann.clear_cache()
    return out


def report(results: list[dict[str, Any]], info: list[str]) -> str:
    lines = ["# Approximate search (FAISS) against exact search", "", f"`{command_line()}`", ""]
    lines += [f"- {x}" for x in info]
    lines.append(f"- load average at the end: {load_average()}")
    lines.append("- data: synthetic (" + ", ".join(sorted({r['data'] for r in results})) + "), see the script's notes; "
                 "not image features")
    lines.append("")
    rows = []
    for r in results:
        a = r["ann"]
        p = a["params"]
        desc = a["kind"] + (f" nlist={p['nlist']} pq={p['pq_bytes']}B nprobe={p['nprobe']} rerank={p['rerank']}"
                            if a["kind"] == "ivfpq" else "")
        t = r.get("tuning")
        desc += (f"; tuned to {t['target_recall']:.2f}: {t['recall']:.3f} on its own vectors in {t['seconds']:.0f} s"
                 if t else "; not tuned")
        rows.append([
            f"{r['n']:,}", desc, f"{r['recall']:.4f}",
            fmt_ms(r["exact_batch_s"]), fmt_ms(r["ann_batch_s"]), f"{r['exact_batch_s'] / r['ann_batch_s']:.0f}x",
            fmt_ms(r["exact_single_s"]), fmt_ms(r["ann_single_s"]), f"{r['exact_single_s'] / r['ann_single_s']:.0f}x",
            f"{r['build_s']:.0f} s",
            fmt_mb(r["matrix_bytes"]), fmt_mb(a["file_bytes"]), fmt_mb(r["ram_bytes"]),
            f"1/{r['matrix_bytes'] / max(1, r['ram_bytes']):.0f}",
            fmt_mb(r["build_peak_extra_bytes"]) if r.get("build_peak_extra_bytes") is not None else "?",
        ])
    lines.append(table(
        ["N", "index (auto)", "recall@9", "exact/q batch", "ANN/q batch", "speed-up", "exact 1 q", "ANN 1 q",
         "speed-up", "build", "float32 matrix", "ANN file", "ANN in RAM", "RAM/matrix", "build peak heap"],
        rows,
    ))
    for r in results:
        if r.get("grid"):
            lines += ["", f"nprobe x rerank at N={r['n']:,} (batch of queries; rerank 0 = PQ scores only):", ""]
            lines.append(table(["nprobe", "rerank", "recall@9", "per query"],
                               [[g["nprobe"], g["rerank"], f"{g['recall']:.4f}", fmt_ms(g["batch_s"])] for g in r["grid"]]))
        if r.get("faiss_parts_bytes"):
            parts = ", ".join(f"{k} {fmt_mb(v)}" for k, v in r["faiss_parts_bytes"].items())
            lines += ["", f"N={r['n']:,}: FAISS index parts: {parts}; generation {r['generate_s']:.0f} s"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=300, help="queries in the batch (recall is measured on them)")
    ap.add_argument("--single", type=int, default=5, help="queries timed one at a time, per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", choices=["structured", "isotropic"], default="structured")
    ap.add_argument("--target-recall", type=float, default=ann.DEFAULT_TARGET_RECALL,
                    help="build_ann's self-tuning target (0: no tuning, the planned settings)")
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    small = [n for n in args.sizes if n < ann.FLAT_MAX_VECTORS]
    if small:
        ap.error(f"sizes {small}: under {ann.FLAT_MAX_VECTORS:,} vectors revsearch searches exactly (no approximate "
                 "index to measure); use larger sizes")
    logging.basicConfig(level=logging.WARNING)
    import faiss

    info = machine_lines({"faiss": f"{faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads"})
    tmp = Path(tempfile.mkdtemp(prefix="revsearch-ann-", dir=args.tmp))
    results = []
    try:
        for n in args.sizes:
            results.append(bench_size(n, args, tmp))
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(report(results, info))


if __name__ == "__main__":
    main()
