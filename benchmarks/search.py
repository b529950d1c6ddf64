"""Search speed: exact cosine top-k over all vectors, against the memory-bandwidth floor and FAISS.

    python benchmarks/search.py [--sizes 100000 1000000] [--runs 3] [--dim 2048] [--batch 64]
                                [--baseline-files 500] [--tmp DIR]

For each size N, synthetic L2-normalised float32 vectors (N x dim) are generated in chunks into
a ``.npy`` file (``np.lib.format.open_memmap``, never whole in memory), and a real revsearch
index folder is written from it with ``Index.from_vectors``. Then, median of ``--runs`` runs:

* **in memory** (the index's matrix loaded into RAM):
  one query: ``topk_cosine`` vs the floor ``X @ q`` (the scores alone: reading the matrix once is
  the least any exact search must do) vs FAISS ``IndexFlatIP.search``;
  a batch of ``--batch`` queries: the same against ``X @ Q.T`` and FAISS.
* **memory-mapped**: ``Index.open`` then ``Index.topk`` (the matrix stays on disk / in the page
  cache), with tracemalloc's peak per call, against the matrix size and an N x batch float64 matrix.

FAISS: ``IndexFlatIP`` copies the vectors into itself; where that copy would not fit
(``--faiss-copy-max-gb``), ``faiss.knn(..., METRIC_INNER_PRODUCT)`` is timed instead: it runs the
same exhaustive inner-product search (``knn_inner_product``, what ``IndexFlatIP.search`` calls) on
our array without copying it. The two are timed side by side at the sizes where both fit.

Last, the original notebook's search (``benchmarks/original_baseline.py``: per-image ``.pbz2``
files, one cosine per pair, stop at 10,000 files) runs on ``--baseline-files`` vectors of its
100,352 dimensions, against revsearch on the same vectors and on their 2048-d reductions.

Files go to ``--tmp`` (default: the system's temporary folder) and are deleted at the end. The
machine needs about N x dim x 4 bytes of free memory (8 GB at 1,000,000 x 2048) and twice that on disk.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

import common  # noqa: E402  (also puts the repository on sys.path)

from revsearch import Index  # noqa: E402
from revsearch.search import topk_cosine  # noqa: E402

K = 9
GEN_CHUNK = 65536


# ---------------------------------------------------------------------------- data
def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def generate_npy(path: Path, n: int, dim: int, seed: int = 0) -> None:
    """N x dim unit vectors written chunk by chunk into a .npy file (never whole in memory)."""
    rng = np.random.default_rng(seed)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, GEN_CHUNK):
        m = min(GEN_CHUNK, n - start)
        mm[start : start + m] = unit_rows(rng, m, dim)
    mm.flush()
    del mm


def queries(n_rows: int, dim: int, b: int, source: np.ndarray, seed: int = 1) -> np.ndarray:
    """Queries near random rows of the collection (a row plus noise, normalised)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_rows, b)
    q = np.asarray(source[rows], np.float32) + 0.5 * unit_rows(rng, b, dim)
    return q / np.linalg.norm(q, axis=1, keepdims=True)



# ---------------------------------------------------------------------------- timing
def run_interleaved(fns: dict, runs: int, warmup: bool = True) -> dict[str, list[float]]:
    """Warm each function up once, then ``runs`` rounds calling each in turn: seconds per call."""
    for f in fns.values() if warmup else ():
        f()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            out[k].append(time.perf_counter() - t0)
    return out


def traced_peak(fn) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------- one size
def bench_size(n: int, dim: int, batch: int, runs: int, tmp: Path, faiss_copy_max_gb: float) -> dict:
    import faiss

    res: dict = {"n": n, "dim": dim, "batch": batch}
    work = Path(tempfile.mkdtemp(prefix=f"revsearch-bench-search-{n}-", dir=tmp))
    try:
        t0 = time.perf_counter()
        raw = work / "vectors.npy"
        generate_npy(raw, n, dim)
        src = np.load(raw, mmap_mode="r")
        q1 = queries(n, dim, 1, src)[0]
        qb = queries(n, dim, batch, src, seed=2)
        paths = [f"img{i:07d}.jpg" for i in range(n)]
        Index.from_vectors(work / "index", src, paths, common.synthetic_spec(dim))
        del src
        raw.unlink()  # only the index folder from here on
        res["setup_s"] = time.perf_counter() - t0
        print(f"  N={n:,}: generated and indexed in {res['setup_s']:.0f} s", flush=True)

        # ------------------------------------------------ in memory
        index = Index.open(work / "index")
        assert len(index.shards) == 1
        vec_file = index.shards[0].filename  # the memory-mapped shard's file
        X = np.load(vec_file)  # the whole matrix in RAM
        del index
        assert X.shape == (n, dim) and X.dtype == np.float32 and X.flags.c_contiguous

        use_index = n * dim * 4 <= faiss_copy_max_gb * 2**30
        fx = None
        if use_index:
            fx = faiss.IndexFlatIP(dim)
            fx.add(X)

        def faiss_knn(q):
            return faiss.knn(np.atleast_2d(q), X, K, metric=faiss.METRIC_INNER_PRODUCT)

        one = {
            "floor X @ q": lambda: X @ q1,
            "topk_cosine": lambda: topk_cosine([X], q1, K),
            "faiss.knn": lambda: faiss_knn(q1),
        }
        many = {
            "floor X @ Q.T": lambda: X @ qb.T,
            "topk_cosine": lambda: topk_cosine([X], qb, K),
            "faiss.knn": lambda: faiss_knn(qb),
        }
        if fx is not None:
            one["IndexFlatIP"] = lambda: fx.search(q1[None], K)
            many["IndexFlatIP"] = lambda: fx.search(qb, K)
        res["one"] = run_interleaved(one, runs)
        print(f"  N={n:,}: one query: " + ", ".join(f"{k} {common.median(v)*1e3:.1f} ms" for k, v in res["one"].items()), flush=True)
        res["many"] = run_interleaved(many, runs)
        print(f"  N={n:,}: batch of {batch}: " + ", ".join(f"{k} {common.median(v)*1e3:.0f} ms" for k, v in res["many"].items()), flush=True)

        # same answers as FAISS (rows; scores to float32 rounding)
        s_ours, r_ours = topk_cosine([X], qb, K)
        s_f, r_f = faiss_knn(qb)
        res["agree_rows"] = float(np.mean(r_ours == r_f))
        res["max_score_diff"] = float(np.abs(s_ours - s_f).max())
        res["faiss_is_index"] = fx is not None
        del fx, X
        gc.collect()

        # ------------------------------------------------ memory-mapped index
        index = Index.open(work / "index")
        shards = index.shards
        assert isinstance(shards[0], np.memmap)
        mm = {
            "floor X @ q (memmap)": lambda: shards[0] @ q1,
            "Index.topk one": lambda: index.topk(q1, K),
            f"Index.topk batch {batch}": lambda: index.topk(qb, K),
        }
        res["mmap"] = run_interleaved(mm, runs)
        res["mmap_peak_one"] = traced_peak(lambda: index.topk(q1, K))
        res["mmap_peak_batch"] = traced_peak(lambda: index.topk(qb, K))
        s_mm, r_mm = index.topk(qb, K)
        res["mmap_same"] = bool(np.array_equal(r_mm, r_ours))
        print(
            f"  N={n:,}: memory-mapped: "
            + ", ".join(f"{k} {common.median(v)*1e3:.1f} ms" for k, v in res["mmap"].items())
            + f"; tracemalloc peak one {common.fmt_mb(res['mmap_peak_one'])}, batch {common.fmt_mb(res['mmap_peak_batch'])}",
            flush=True,
        )
        del index, shards
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------- original notebook's search
def bench_original(n_files: int, runs: int, tmp: Path) -> dict:
    from original_baseline import ORIGINAL_FILE_LIMIT, search_original, write_vector_files

    from revsearch.legacy import LEGACY_DIM, reduce_legacy_vector

    work = Path(tempfile.mkdtemp(prefix="revsearch-bench-orig-", dir=tmp))
    try:
        rng = np.random.default_rng(5)
        # ReLU-like features: non-negative, about half zeros (as ResNet50's last conv block)
        vecs = np.maximum(rng.standard_normal((n_files, LEGACY_DIM), dtype=np.float32), 0)
        names = [f"{i // 80 + 1:04d}_{i:06d}.jpg" for i in range(n_files)]
        t0 = time.perf_counter()
        write_vector_files(vecs, names, work / "pbz2")
        write_s = time.perf_counter() - t0
        full = Index.from_vectors(work / "full", vecs, names, common.synthetic_spec(LEGACY_DIM))
        pooled = Index.from_vectors(work / "pooled", np.stack([reduce_legacy_vector(v) for v in vecs]), names, common.synthetic_spec(2048))
        qi = 7
        q_full = vecs[qi]
        q_pool = reduce_legacy_vector(q_full)
        q_pool = q_pool / np.linalg.norm(q_pool)
        qn_full = q_full / np.linalg.norm(q_full)
        fns = {
            "original": lambda: search_original(q_full, work / "pbz2", K, seed=0),
            "revsearch, same 100,352-d vectors": lambda: full.topk(qn_full, K, exclude=[qi]),
            "revsearch, 2048-d pooled": lambda: pooled.topk(q_pool, K, exclude=[qi]),
        }
        for k in list(fns)[1:]:
            fns[k]()  # warm up revsearch (the original's files were just written: they are in the page cache)
        times = run_interleaved(fns, runs, warmup=False)
        top_orig = [name for _, name in search_original(q_full, work / "pbz2", K, seed=0)]
        _, rows = full.topk(qn_full, K, exclude=[qi])
        same = top_orig == [names[r] for r in rows[0]]
        return {"n": n_files, "times": times, "same_top9": same, "write_s": write_s, "limit": ORIGINAL_FILE_LIMIT}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------- report
def report(results: list[dict], orig: dict | None, info: list[str], args: argparse.Namespace) -> str:
    med = common.median
    ms = lambda xs: common.fmt_ms(med(xs))  # noqa: E731
    lines = ["## Search", "", f"Command: `{common.command_line()}`", ""]
    lines += [f"- {x}" for x in info]
    lines += ["", f"Exact top-{K}, {args.dim}-d float32 unit vectors, median of {args.runs} runs (after one warm-up call).", ""]
    rows = []
    for r in results:
        one, many = r["one"], r["many"]
        fa1 = "IndexFlatIP" if r["faiss_is_index"] else "faiss.knn"
        t1, f1, t64 = med(one["topk_cosine"]), med(one["floor X @ q"]), med(many["topk_cosine"])
        rows.append(
            [
                f"{r['n']:,}", common.fmt_mb(r["n"] * r["dim"] * 4),
                ms(one["floor X @ q"]), ms(one["topk_cosine"]), f"**{t1 / f1:.2f}x**",
                f"{ms(one[fa1])} ({fa1})", f"**{med(one[fa1]) / t1:.1f}x**",
                ms(many["floor X @ Q.T"]), ms(many["topk_cosine"]), f"{t64 / med(many['floor X @ Q.T']):.2f}x",
                f"{ms(many[fa1])} ({fa1})", f"**{med(many[fa1]) / t64:.1f}x**",
            ]  # fmt: skip
        )
    lines.append("In memory (one query, and a batch of %d):" % args.batch)
    lines.append("")
    lines.append(
        common.table(
            [
                "vectors", "matrix", "floor `X @ q`", "topk_cosine", "topk / floor (target <= 1.25)",
                "FAISS", "FAISS / topk (target >= 1)",
                f"floor `X @ Q.T` ({args.batch})", f"topk_cosine ({args.batch})", "topk / floor",
                f"FAISS ({args.batch})", "FAISS / topk (target >= 1)",
            ],
            rows,
        )  # fmt: skip
    )
    both = [r for r in results if r["faiss_is_index"]]
    if both:
        lines += ["", "FAISS `IndexFlatIP.search` and `faiss.knn` side by side (same search, with and without FAISS's copy):", ""]
        lines.append(
            common.table(
                ["vectors", "IndexFlatIP one", "faiss.knn one", f"IndexFlatIP {args.batch}", f"faiss.knn {args.batch}"],
                [[f"{r['n']:,}", ms(r["one"]["IndexFlatIP"]), ms(r["one"]["faiss.knn"]), ms(r["many"]["IndexFlatIP"]), ms(r["many"]["faiss.knn"])] for r in both],
            )
        )
    lines += ["", "Memory-mapped index (`Index.open` of an index folder written by `Index.from_vectors`, then `Index.topk`):", ""]
    mrows = []
    for r in results:
        mm = r["mmap"]
        n_by_b = r["n"] * r["batch"] * 8
        mrows.append(
            [
                f"{r['n']:,}", ms(mm["floor X @ q (memmap)"]), ms(mm["Index.topk one"]),
                f"{med(mm['Index.topk one']) / med(mm['floor X @ q (memmap)']):.2f}x",
                ms(mm[f"Index.topk batch {r['batch']}"]),
                common.fmt_mb(r["mmap_peak_one"]), common.fmt_mb(r["n"] * r["dim"] * 4),
                common.fmt_mb(r["mmap_peak_batch"]), common.fmt_mb(n_by_b),
                "yes" if r["mmap_same"] else "NO",
            ]  # fmt: skip
        )
    lines.append(
        common.table(
            [
                "vectors", "floor `X @ q` (memmap)", "topk one", "topk / floor", f"topk batch {args.batch}",
                "tracemalloc peak, one query", "matrix size", f"tracemalloc peak, batch {args.batch}",
                f"N x {args.batch} float64", "same rows as in memory",
            ],
            mrows,
        )  # fmt: skip
    )
    lines += [""]
    for r in results:
        lines.append(
            f"- N={r['n']:,}: topk_cosine and FAISS agree on {r['agree_rows']:.1%} of the {args.batch}x{K} result rows "
            f"(max score difference {r['max_score_diff']:.1e}); setup (generate + `Index.from_vectors`) {r['setup_s']:.0f} s."
        )
    lines += ["", "All runs (ms):", ""]
    arows = []
    for r in results:
        for part in ("one", "many", "mmap"):
            for k, v in r[part].items():
                arows.append([f"{r['n']:,}", part, k, f"{med(v) * 1e3:.1f}", common.spread([x * 1e3 for x in v])])
    lines.append(common.table(["vectors", "set", "what", "median", "min..max"], arows))
    if orig:
        t = orig["times"]
        o = med(t["original"])
        lines += [
            "",
            f"### The original notebook's search (baseline, {orig['n']} vector files)",
            "",
            f"{orig['n']} per-image `.pbz2` files of 100,352-d ReLU-like float32 vectors (synthetic), searched the way the "
            f"notebook did (`benchmarks/original_baseline.py`: shuffle, open each file, one cosine per pair, keep 9, stop at "
            f"{orig['limit']:,} files), against revsearch indexes of the same vectors. Median of {args.runs} queries.",
            "",
        ]
        orows = [["original notebook's loop", common.fmt_ms(o), "1x", f"{o / orig['n'] * 1e3:.1f} ms per file"]]
        for k in ("revsearch, same 100,352-d vectors", "revsearch, 2048-d pooled"):
            orows.append([k, common.fmt_ms(med(t[k])), f"**{o / med(t[k]):,.0f}x**", ""])
        lines.append(common.table(["search", "per query", "speed-up", "note"], orows))
        lines += [
            "",
            f"- Same top-9 as the original on the 100,352-d vectors: {'yes' if orig['same_top9'] else 'no'}.",
            f"- At its cap of {orig['limit']:,} files the original loop would take about "
            f"{o / orig['n'] * orig['limit']:.0f} s per query (extrapolated from the per-file time above), and "
            "it never looks past 10,000 files.",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--baseline-files", type=int, default=500, help="0 to skip the original notebook's search")
    ap.add_argument("--faiss-copy-max-gb", type=float, default=2.0, help="largest matrix FAISS IndexFlatIP may copy")
    ap.add_argument("--tmp", default=None, help="folder for the temporary files (default: the system's)")
    ap.add_argument("--markdown", default=None, help="also write the report to this file")
    args = ap.parse_args()
    tmp = Path(args.tmp or tempfile.gettempdir())

    import faiss

    t_start = time.perf_counter()
    info = common.machine_lines({"FAISS": f"{faiss.__version__}, OpenMP threads {faiss.omp_get_max_threads()}"})
    print("\n".join(info), flush=True)
    results: list[dict] = []
    skipped: list[str] = []
    for n in args.sizes:
        need = n * args.dim * 4
        free = shutil.disk_usage(tmp).free
        if 2 * need > free:
            skipped.append(f"N={n:,}: SKIPPED, needs {2 * need / 2**30:.1f} GiB in {tmp}, {free / 2**30:.1f} free")
            print("  " + skipped[-1], flush=True)
            continue
        avail = common.proc_kib("MemAvailable", "/proc/meminfo")
        if avail is not None and 1.25 * need > avail:
            skipped.append(
                f"N={n:,}: SKIPPED, the matrix ({need / 2**30:.1f} GiB) does not fit in the memory available now "
                f"({avail / 2**30:.1f} GiB): pass smaller --sizes"
            )
            print("  " + skipped[-1], flush=True)
            continue
        results.append(bench_size(n, args.dim, args.batch, args.runs, tmp, args.faiss_copy_max_gb))
    orig = bench_original(args.baseline_files, args.runs, tmp) if args.baseline_files else None
    text = report(results, orig, info, args)
    if skipped:
        text += "\n\n" + "\n".join(f"- {x}" for x in skipped)
    common.emit(text, t_start, args.markdown)


if __name__ == "__main__":
    main()
