"""Approximate nearest-neighbour search with FAISS: millions of vectors on one machine.

An approximate (ANN) index is built from an existing revsearch index and stored in the same
vector folder, next to the shards::

    vector_dir/
        revsearch.json             manifest["ann"] = {"file", "kind", "params", "count", "built", ...}
        ann-<id>-<token>.faiss     the FAISS index (absent for kind "flat")

Its file is written and committed through :mod:`revsearch.storage.store` (the atomic writer and a
manifest commit, under the folder's lock); the store deletes the previous file.

:meth:`revsearch.Index.topk` (and so ``search`` / ``search_vectors``) uses it automatically
when the manifest names one, and falls back to exact search otherwise; ``exact=True`` forces
exact search.

The kind of index is chosen from the collection size and a memory budget:

``"flat"`` (under :data:`FLAT_MAX_VECTORS` vectors)
    Exact search over the memory-mapped shards. No file is written: a FAISS flat index would
    hold a second copy of the float32 matrix and score exactly the same way.
``"ivfpq"`` (the default above that)
    An inverted file (``nlist`` k-means cells) of product-quantized codes (``pq_bytes`` bytes
    per vector). A query scans the ``nprobe`` nearest cells and keeps ``rerank`` candidates,
    which are then re-scored exactly with their float32 vectors read from the memory-mapped
    shards (only those rows are read). Defaults: ``nlist`` ~ sqrt(n) (a power of 2),
    ``pq_bytes`` = dim / 32 (64 bytes for 2048-d vectors, within the memory budget),
    ``nprobe`` = max(16, nlist / 64), ``rerank`` = 100, training on 32k-128k sampled vectors.
    Memory: about ``n * (pq_bytes + 8)`` bytes plus ``nlist * pq_bytes`` KiB of distance tables,
    a small fraction of the float32 matrix (1/57 at 1M x 2048).
``"hnsw"`` (when an explicit ``memory_budget`` holds the whole matrix again)
    A FAISS HNSW graph over full vectors: fastest and most accurate, but holds the matrix in
    memory.

Searches without a stored index, over a collection's own rows: :func:`neighbour_search` (a
temporary IVF-PQ, for the database-side augmentation) and :func:`knn_join` (every vector's nearest
vectors, within one collection or across two, every score exact: the approximate method of
:mod:`revsearch.duplicates`).

FAISS is an optional extra (``pip install revsearch[ann]``); it is imported only here, inside
functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..storage import store
from ..core.errors import OptionalDependencyError, RevsearchError
from .exact import as_queries, topk_cosine
from ..storage.store import FolderWriter, Snapshot

#: A :class:`revsearch.Index` (duck-typed: its ``snapshot``, ``folder``, ``manifest``) or a Snapshot.
IndexLike = Any

logger = logging.getLogger(__name__)

__all__ = [
    "FLAT_MAX_VECTORS",
    "KINDS",
    "ann_topk",
    "build_ann",
    "drop_ann",
    "ann_info",
    "plan_ann",
    "parse_bytes",
    "load_ann",
    "clear_cache",
    "refresh_after_update",
    "tune_ann",
    "DEFAULT_TARGET_RECALL",
    "neighbour_search",
    "Rows",
    "knn_join",
    "plan_join",
    "best_in_block",
    "JOIN_CELL_ROWS",
    "JOIN_NPROBE",
]

#: Below this many vectors "auto" chooses exact ("flat") search.
FLAT_MAX_VECTORS = 100_000
#: The kinds of approximate index that can be asked for.
KINDS = ("auto", "flat", "ivfpq", "hnsw")
#: Default candidates re-scored exactly per query (kind "ivfpq").
DEFAULT_RERANK = 100
#: Recall@k that :func:`build_ann` tunes the search parameters to reach on the collection's own vectors.
DEFAULT_TARGET_RECALL = 0.95
#: Vectors of the collection used as queries while tuning.
DEFAULT_TUNE_QUERIES = 200
#: Candidates re-scored exactly that tuning tries (kind "ivfpq"; with "hnsw" they set efSearch).
RERANK_GRID = (25, 50, 100, 200, 400, 800, 1600, 3200)
#: Rows read from the shards per FAISS ``add`` call while building.
ADD_CHUNK_ROWS = 32768
#: Build options recorded in the manifest's request that are not :func:`plan_ann` options.
_NOT_PLAN_OPTIONS = ("seed", "target_recall", "tune_queries")


def _snap(index: Any) -> Snapshot:
    """The committed state an Index (or a Snapshot) reads."""
    return index if isinstance(index, Snapshot) else index.snapshot


def _faiss() -> Any:
    """Import FAISS, or raise :class:`OptionalDependencyError` saying how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise OptionalDependencyError(
            "approximate search needs FAISS, an optional extra: pip install revsearch[ann] "
            f"(or pip install faiss-cpu) ({e})"
        ) from None
    return faiss


# ---------------------------------------------------------------------------------------- sizes
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | float | str | None) -> int | None:
    """Turn a size such as ``512MB``, ``1.5GiB`` or ``1000000`` into bytes.

    Parameters
    ----------
    value : int, float, str or None

    Returns
    -------
    int or None
        ``None`` stays ``None``.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"a memory budget must be positive, not {value}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {value!r} as a size: write e.g. 2GB, 512MiB or a number of bytes")
    return parse_bytes(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# ---------------------------------------------------------------------------------------- planning
def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def _ivfpq_bytes(n: int, dim: int, nlist: int, m: int, nbits: int) -> int:
    """Memory of an IVF-PQ index: codes and ids, coarse centroids, PQ centroids, precomputed tables."""
    ksub = 1 << nbits
    table = nlist * m * ksub * 4 if nlist * m * ksub * 4 <= 2**31 else 0
    return n * (m * nbits // 8 + 8) + nlist * dim * 4 + dim * ksub * 4 + table


def _hnsw_bytes(n: int, dim: int, hnsw_m: int) -> int:
    return int(n * (dim * 4 + hnsw_m * 2 * 4 * 1.1 + 16))


def plan_ann(
    n: int,
    dim: int,
    *,
    memory_budget: int | str | None = None,
    kind: str = "auto",
    nlist: int | None = None,
    pq_bytes: int | None = None,
    nprobe: int | None = None,
    rerank: int | None = None,
    hnsw_m: int | None = None,
    train_size: int | None = None,
) -> tuple[str, dict[str, Any], int]:
    """Choose the kind of approximate index and its parameters for a collection.

    Parameters
    ----------
    n : int
        Number of vectors.
    dim : int
        Their dimension.
    memory_budget : int or str, optional
        Bytes the approximate index may hold in memory (``"1GB"`` is understood), a hard limit.
        Default: aim at 1/8 of the float32 matrix (``n * dim * 4 / 8``), a target that tiny
        collections (where ids and tables dominate) may exceed.
    kind : {"auto", "flat", "ivfpq", "hnsw"}, default "auto"
        ``"auto"``: ``"flat"`` under :data:`FLAT_MAX_VECTORS` vectors; above, ``"hnsw"`` if an
        explicit budget holds the HNSW graph and the full vectors, else ``"ivfpq"``.
    nlist, pq_bytes, nprobe, rerank, hnsw_m, train_size : int, optional
        Override the chosen parameters (see the module notes).

    Returns
    -------
    kind : str
        ``"flat"``, ``"ivfpq"`` or ``"hnsw"``.
    params : dict
        The parameters, as recorded in the manifest.
    memory_bytes : int
        Estimated memory of the index once loaded (0 for ``"flat"``).

    Raises
    ------
    RevsearchError
        If the budget cannot hold even the smallest index of the kind asked for.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if n < 1:
        raise RevsearchError("the index is empty: index some images before building an approximate index")
    explicit_budget = parse_bytes(memory_budget)
    budget = explicit_budget if explicit_budget is not None else max(1, n * dim * 4 // 8)
    hnsw_m = int(hnsw_m or 32)
    if kind == "auto":
        if n < FLAT_MAX_VECTORS:
            kind = "flat"
        elif explicit_budget is not None and _hnsw_bytes(n, dim, hnsw_m) <= explicit_budget:
            kind = "hnsw"
        else:
            kind = "ivfpq"
    if kind == "flat":
        return "flat", {}, 0
    if kind == "hnsw":
        need = _hnsw_bytes(n, dim, hnsw_m)
        if explicit_budget is not None and need > explicit_budget:
            raise RevsearchError(
                f"an HNSW index of {n} {dim}-d vectors needs about {_fmt_bytes(need)}, more than the memory "
                f"budget of {_fmt_bytes(explicit_budget)}: use kind='ivfpq' (or 'auto')"
            )
        params = {"M": hnsw_m, "ef_construction": 80, "ef_search": 128, "metric": "inner_product"}
        return "hnsw", params, need
    # ivfpq
    if nlist is None:
        nlist = _pow2_near(math.sqrt(n))
        nlist = max(1, min(nlist, 65536, _pow2_floor(n // 39)))
    nlist = int(max(1, min(nlist, n)))
    nbits = 8 if n >= 39 * 256 else max(4, min(8, int(math.log2(max(16, n // 39)))))
    divisors = [m for m in range(dim, 0, -1) if dim % m == 0]
    if pq_bytes is not None:
        if dim % int(pq_bytes):
            raise ValueError(f"pq_bytes must divide the dimension {dim}; {pq_bytes} does not")
        m = int(pq_bytes)
    else:
        target = max(8, dim // 32)  # 2048-d -> 64 bytes per vector (128x smaller than float32)
        fitting = [d for d in divisors if d <= target and _ivfpq_bytes(n, dim, nlist, d, nbits) <= budget]
        if not fitting and explicit_budget is None:  # tiny collections: ids and tables dominate
            fitting = [d for d in divisors if d <= target]
        if not fitting:
            smallest = _ivfpq_bytes(n, dim, nlist, divisors[-1], nbits)
            raise RevsearchError(
                f"a memory budget of {_fmt_bytes(budget)} cannot hold an IVF-PQ index of {n} {dim}-d vectors "
                f"(at least {_fmt_bytes(smallest)} are needed): raise memory_budget"
            )
        m = fitting[0]
    if nprobe is None:
        nprobe = max(1, min(nlist, max(16, nlist // 64)))
    params = {
        "nlist": nlist,
        "pq_bytes": m,
        "nbits": nbits,
        "nprobe": int(min(nprobe, nlist)),
        "rerank": int(DEFAULT_RERANK if rerank is None else rerank),
        "train_size": int(min(n, train_size or min(131072, max(32768, 64 * nlist)))),
        "metric": "l2_on_unit_vectors",
    }
    return "ivfpq", params, _ivfpq_bytes(n, dim, nlist, m, nbits)


def _pow2_floor(x: int) -> int:
    return 1 << max(0, int(x).bit_length() - 1) if x >= 1 else 1


# ---------------------------------------------------------------------------------------- rows
def _offsets(index: Snapshot | Rows) -> np.ndarray:
    """Row number of each shard's first row, shape (n_shards + 1,)."""
    return np.concatenate([[0], np.cumsum([len(s) for s in index.vectors])]).astype(np.int64)


def _gather(index: Snapshot | Rows, rows: np.ndarray) -> np.ndarray:
    """Read the vectors of global ``rows`` (shape (r,), any order) from the memory-mapped shards: (r, dim)."""
    offsets = _offsets(index)
    shards = index.vectors
    if len(shards) == 1:
        return np.asarray(shards[0][rows], np.float32)
    out = np.empty((len(rows), index.dim), np.float32)
    which = np.searchsorted(offsets, rows, side="right") - 1
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(shards) + 1))
    for s, shard in enumerate(shards):
        sel = order[bounds[s] : bounds[s + 1]]
        if sel.size:
            out[sel] = shard[rows[sel] - offsets[s]]
    return out


def _iter_rows(index: Snapshot | Rows, start: int, stop: int, chunk: int = ADD_CHUNK_ROWS) -> Any:
    """Yield contiguous float32 blocks of rows ``start:stop`` (each at most ``chunk`` rows)."""
    offsets = _offsets(index)
    for s, shard in enumerate(index.vectors):
        lo, hi = max(start, offsets[s]), min(stop, offsets[s + 1])
        for a in range(int(lo), int(hi), chunk):
            b = min(int(hi), a + chunk)
            yield np.ascontiguousarray(shard[a - offsets[s] : b - offsets[s]], dtype=np.float32)


def _fingerprints(index: Snapshot, prefixes: Sequence[int]) -> dict[int, str]:
    """Hash of the paths and content digests of the first ``p`` rows, for each ``p`` in ``prefixes``.

    The hash does not depend on how rows are split into shards, so it tells whether the rows an
    approximate index was built on are still the first rows of the index, unchanged.
    """
    wanted = sorted(set(int(p) for p in prefixes))
    out: dict[int, str] = {}
    hp, hd = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)
    done = 0

    def snap(p: int) -> None:
        out[p] = hp.copy().hexdigest() + hd.copy().hexdigest()

    while wanted and wanted[0] <= 0:
        snap(wanted.pop(0))
    for shard in index.shards:
        if not wanted:
            break
        paths, digests = shard.paths, np.asarray(shard.rows["digest"])
        at = 0
        while at < shard.count and wanted:
            upto = min(shard.count, at + (wanted[0] - done))
            hp.update("".join(p + "\n" for p in paths[at:upto]).encode("utf-8", store.PATH_ERRORS))
            hd.update(np.ascontiguousarray(digests[at:upto]).tobytes())
            done += upto - at
            at = upto
            while wanted and wanted[0] == done:
                snap(wanted.pop(0))
    for p in wanted:  # beyond the end: cannot match
        out[p] = "beyond-end"
    return out


# ---------------------------------------------------------------------------------------- loading
_LOADED: OrderedDict[str, Any] = OrderedDict()
_LOADED_LOCK = threading.Lock()
_LOADED_MAX = 2
_WARNED: set[str] = set()


def _load(path: Path) -> Any:
    """Read a FAISS index file, keeping the last few in memory (file names are never reused)."""
    faiss = _faiss()
    key = str(path.resolve())
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    if not path.is_file():
        raise RevsearchError(
            f"the approximate index file {str(path)!r} is missing: rebuild it with `revsearch ann {path.parent}`"
        )
    idx = faiss.read_index(str(path))
    with _LOADED_LOCK:
        _LOADED[key] = idx
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    return idx


def load_ann(index: Any) -> Any:
    """The FAISS index of an index's approximate index (cached), or None if it has no file.

    Parameters
    ----------
    index : Index or Snapshot

    Returns
    -------
    faiss.Index or None
    """
    snap = _snap(index)
    meta = snap.manifest.ann or {}
    return _load(snap.folder / meta["file"]) if meta.get("file") else None


def clear_cache() -> None:
    """Forget the FAISS indexes kept in memory (and the warnings already given)."""
    with _LOADED_LOCK:
        _LOADED.clear()
    _WARNED.clear()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(message, *args)


# ---------------------------------------------------------------------------------------- searching
def ann_topk(
    index: IndexLike,
    vectors: np.ndarray,
    k: int = 9,
    *,
    exclude: Sequence[int] | None = None,
    nprobe: int | None = None,
    rerank: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate cosine top-k with the index's FAISS index (exact where it has none).

    Called by :meth:`revsearch.Index.topk` when the manifest names an approximate index. Falls
    back to exact search (with a warning) when the approximate index is stale (built on another
    number of rows) or FAISS is not installed, and for kind ``"flat"``.

    Parameters
    ----------
    index : Index or Snapshot
        The index to search.
    vectors : numpy.ndarray
        Shape (dim,) or (b, dim), L2-normalised float32.
    k : int, default 9
        Results per query.
    exclude : sequence of int, optional
        Rows never to return.
    nprobe : int, optional
        Cells scanned per query (kind ``"ivfpq"``); default as recorded in the manifest.
    rerank : int, optional
        Candidates re-scored exactly per query (0: return the approximate scores); default as recorded.

    Returns
    -------
    scores : numpy.ndarray
        Shape (b, k') float32, cosine similarities, best first (k' = min(k, rows not excluded)).
    rows : numpy.ndarray
        Shape (b, k') int64.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    index = _snap(index)
    meta = index.manifest.ann or {}
    n = len(index)
    k = max(1, min(int(k), n))  # never more places than rows
    exact = lambda: topk_cosine(index.vectors, vectors, k, exclude=exclude)  # noqa: E731
    if not meta or meta.get("kind") == "flat" or not meta.get("file"):
        return exact()
    if int(meta.get("count", -1)) != n:
        _warn_once(
            f"stale:{index.folder}:{meta.get('file')}",
            "the approximate index of %s was built on %s vectors but the index holds %s: using exact search "
            "(rebuild it with `revsearch ann %s`)",
            index.folder, meta.get("count"), n, index.folder,
        )
        return exact()
    try:
        faiss = _faiss()
    except OptionalDependencyError as e:
        _warn_once("nofaiss", "%s; using exact search", e)
        return exact()
    q, _ = as_queries(vectors, index.dim)
    try:
        fidx = _load(index.folder / meta["file"])
    except (RevsearchError, RuntimeError) as e:  # missing or damaged file (FAISS raises RuntimeError)
        _warn_once(f"load:{index.folder}:{meta['file']}", "%s; using exact search", e)
        return exact()
    if int(getattr(fidx, "d", index.dim)) != index.dim or int(getattr(fidx, "ntotal", n)) != n:
        _warn_once(
            f"shape:{index.folder}:{meta['file']}",
            "the approximate index file %s holds %s %s-d vectors but the index holds %s %s-d vectors: using exact "
            "search (rebuild it with `revsearch ann %s`)",
            index.folder / meta["file"], getattr(fidx, "ntotal", "?"), getattr(fidx, "d", "?"), n, index.dim,
            index.folder,
        )
        return exact()
    params = meta.get("params", {})
    kind = meta["kind"]
    excluded = np.unique(np.asarray([r for r in (exclude or ()) if 0 <= int(r) < n], dtype=np.int64))
    kk = min(k, n - len(excluded))
    b = q.shape[0]
    if kk <= 0:
        return np.zeros((b, 0), np.float32), np.zeros((b, 0), np.int64)
    rerank = int(params.get("rerank", 0) if rerank is None else rerank)
    kc = int(min(n, max(k, rerank) + len(excluded)))
    if kind == "ivfpq":
        sp = faiss.SearchParametersIVF(nprobe=int(min(nprobe or params.get("nprobe", 8), params.get("nlist", 1 << 30))))
    elif kind == "hnsw":
        sp = faiss.SearchParametersHNSW(efSearch=int(max(params.get("ef_search", 128), kc)))
    else:
        raise RevsearchError(f"unknown approximate index kind {kind!r} in {str(index.folder)!r}: rebuild it")
    dist, cand = fidx.search(q, kc, params=sp)
    cand = cand.astype(np.int64, copy=False)
    if rerank > 0:
        scores = _rescore(index, q, cand)
    elif kind == "hnsw":
        scores = np.where(cand >= 0, dist, -np.inf).astype(np.float32)
    else:  # squared L2 between unit vectors -> cosine
        scores = np.where(cand >= 0, 1.0 - dist / 2.0, -np.inf).astype(np.float32)
    if excluded.size:
        scores[np.isin(cand, excluded)] = -np.inf
    scores[cand < 0] = -np.inf
    order = np.lexsort((cand, -scores), axis=-1)[:, :kk]
    top_s = np.take_along_axis(scores, order, axis=-1)
    top_r = np.take_along_axis(cand, order, axis=-1)
    short = ~np.isfinite(top_s).all(axis=1)
    if short.any():  # too few candidates in the cells scanned: exact search for those queries
        logger.debug("%d queries found fewer than %d candidates; searched exactly", int(short.sum()), kk)
        es, er = topk_cosine(index.vectors, q[short], kk, exclude=excluded.tolist())
        top_s[short], top_r[short] = es, er
    return np.ascontiguousarray(top_s, np.float32), np.ascontiguousarray(top_r, np.int64)


def neighbour_search(
    index: IndexLike, *, nprobe: int = 16, rerank: int = 32, seed: int = 1234, progress: bool = False
) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None:
    """A k-NN search over a collection's own rows through a temporary in-memory IVF-PQ index.

    For the database-side augmentation of a large collection (every row's nearest rows): the
    index is planned as :func:`plan_ann` plans ``"ivfpq"`` (codes of a few bytes per vector,
    nothing written to disk), each query scans ``nprobe`` cells and its ``rerank`` best candidates
    are re-scored exactly from the memory-mapped shards. None when FAISS is not installed.

    Parameters
    ----------
    index : Index or Snapshot
    nprobe : int, default 16
    rerank : int, default 32
        With the defaults, 97.5% of the 2 nearest neighbours found exactly, at about 1/8 of the time
        of an exact search (100,000 clustered 1024-d vectors; ``benchmarks/expansion.py``).
    seed : int, default 1234
    progress : bool, default False

    Returns
    -------
    callable or None
        ``search(queries (b, d), k) -> (scores (b, k), rows (b, k))``, best first, ties by row.
    """
    index = _snap(index)
    try:
        faiss = _faiss()
    except OptionalDependencyError:
        return None
    n, dim = len(index), index.dim
    _, params, _ = plan_ann(n, dim, kind="ivfpq")
    params["seed"] = seed
    fidx = _new_faiss_index(faiss, "ivfpq", dim, params)
    t0 = time.perf_counter()
    fidx.train(_gather(index, _sample_rows(n, int(params["train_size"]), seed)))
    _add_rows(fidx, index, 0, n, progress, "neighbours (IVF-PQ)")
    sp = faiss.SearchParametersIVF(nprobe=int(min(nprobe, params["nlist"])))
    logger.info("temporary IVF-PQ of %d vectors (%s) for the neighbour search in %.1f s", n, params,
                time.perf_counter() - t0)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q, _ = as_queries(queries, dim)
        kk = max(1, min(int(k), n))
        kc = int(min(n, max(kk, rerank)))
        _, cand = fidx.search(q, kc, params=sp)
        cand = cand.astype(np.int64, copy=False)
        scores = _rescore(index, q, cand)
        scores[cand < 0] = -np.inf
        order = np.lexsort((cand, -scores), axis=-1)[:, :kk]
        top_s = np.take_along_axis(scores, order, axis=-1)
        top_r = np.take_along_axis(cand, order, axis=-1)
        short = ~np.isfinite(top_s).all(axis=1)
        if short.any():  # too few candidates in the cells scanned: exact for those
            top_s[short], top_r[short] = topk_cosine(index.vectors, q[short], kk)
        return np.ascontiguousarray(top_s, np.float32), np.ascontiguousarray(top_r, np.int64)

    return search


#: Vectors per cell that :func:`plan_join` aims at (the work is about n x nprobe x JOIN_CELL_ROWS dot products).
JOIN_CELL_ROWS = 1024
#: Cells each vector is compared with in :func:`knn_join` (its own and the next nearest).
JOIN_NPROBE = 3
#: k-means iterations of :func:`knn_join`'s cells (they only need to keep near vectors together).
JOIN_KMEANS_ITERATIONS = 8
#: Query rows scored against one cell at a time by :func:`knn_join` (a (rows, cell) float32 block).
JOIN_BLOCK_ROWS = 4096


def plan_join(n: int, *, nlist: int | None = None, nprobe: int | None = None) -> dict[str, int]:
    """Cells of :func:`knn_join` for n vectors: ``nlist`` a power of 2 near n / :data:`JOIN_CELL_ROWS`
    (16..16384, at most n / 8), ``nprobe`` :data:`JOIN_NPROBE`, and the k-means training sample."""
    if nlist is None:
        nlist = int(min(max(16, _pow2_near(n / JOIN_CELL_ROWS)), 1 << 14, max(1, n // 8)))
    nlist = int(max(1, min(int(nlist), max(1, n))))
    nprobe = int(min(max(1, int(nprobe if nprobe is not None else JOIN_NPROBE)), nlist))
    return {"nlist": nlist, "nprobe": nprobe, "train_size": int(min(n, max(32 * nlist, 32768), 65536))}


class Rows:
    """Rows of several (n_i, d) shards addressed by global row number, read in place.

    Parameters
    ----------
    shards : sequence of numpy.ndarray
        Shapes (n_i, d), float32 (memory-mapped arrays are read in place); empty ones are dropped.
    dim : int, optional
        d, for a collection with no rows (default: the first shard's).
    """

    def __init__(self, shards: Sequence[np.ndarray], dim: int | None = None) -> None:
        self.vectors = [s for s in shards if len(s)]
        self.offsets = np.cumsum([0] + [len(s) for s in self.vectors]).astype(np.int64)
        self.n = int(self.offsets[-1])
        self.dim = int(dim) if dim is not None else (int(shards[0].shape[1]) if len(shards) else 0)

    @property
    def shards(self) -> list[np.ndarray]:
        """The non-empty shards, in row order."""
        return self.vectors

    def __len__(self) -> int:
        return self.n

    def blocks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, block), block of shape (<= size, d), views where possible."""
        for start in range(0, self.n, size):
            yield start, self.slice(start, min(self.n, start + size))

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``, shape (stop - start, d): a view when they lie in one shard."""
        parts = []
        for s, lo in zip(self.vectors, self.offsets[:-1].tolist()):
            a, b = max(start, lo), min(stop, lo + len(s))
            if a < b:
                parts.append(s[a - lo : b - lo])
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Copy of the given global rows (shape (r,), any order): (r, d) float32."""
        return _gather(self, np.asarray(rows, np.int64))


def best_in_block(s: np.ndarray, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of a score block's entries that can be among a row's (resp. a column's) k best.

    Parameters
    ----------
    s : numpy.ndarray
        Shape (r, c) float32 scores (-inf: not a pair).
    threshold : float
        Least score kept.
    k : int
        Best entries per row (column) kept; ties with the k-th are kept too.

    Returns
    -------
    rows, cols : numpy.ndarray
        Shape (r, c) bool: ``s >= threshold`` and ``s`` at least the row's (column's) k-th best score.
    """
    ok = s >= threshold
    rows = ok.copy()
    cols = ok
    if s.shape[1] > k:
        kth = np.partition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k]
        rows &= s >= kth[:, None]
    if s.shape[0] > k:
        kth = np.partition(s, s.shape[0] - k, axis=0)[s.shape[0] - k, :]
        cols = ok & (s >= kth[None, :])
    return rows, cols


def knn_join(
    vectors: Sequence[np.ndarray],
    k: int,
    *,
    against: Sequence[np.ndarray] | None = None,
    threshold: float = -1.0,
    nprobe: int | None = None,
    nlist: int | None = None,
    seed: int = 1234,
    max_score: float = 1.01,
    block_rows: int = JOIN_BLOCK_ROWS,
    progress: bool = False,
    info: dict[str, Any] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Approximate k-NN self-join (or two-collection join) of unit vectors, every score exact.

    An inverted file over the vectors themselves, planned by :func:`plan_join`: FAISS spherical
    k-means on a sample splits them into ``nlist`` cells (~1,024 vectors each); each vector lies in
    its nearest cell (found with a FAISS flat search of the centroids) and is compared with every
    vector of its ``nprobe`` nearest cells, cell by cell as one float32 matrix product of the full
    vectors read from the (memory-mapped) shards, so a reported score is never an estimate. A pair
    is missed only if neither vector's ``nprobe`` nearest cells hold the other. Unlike
    :func:`build_ann`'s query index (compressed codes, re-ranking), this keeps every score exact
    and does the self-join's n x nprobe x 1,024 products as blocked GEMMs: at 50,000 2048-d
    vectors a temporary IVF-PQ index with exact re-ranking took 66 s where this takes 10 s, for
    the same recall (2-core Sapphire Rapids; see docs/duplicates.md).
    Vectors that are not finite or whose squared norm exceeds ``max_score`` (damaged) are given
    no cell: they never pair. Memory: the cell assignment (n x nprobe int64), the k-means sample
    and one cell's vectors at a time.

    Parameters
    ----------
    vectors : sequence of numpy.ndarray
        Shards (n_i, d), float32, L2-normalised; rows number on from one shard to the next.
    k : int
        Best neighbours kept per vector and per scored block (the caller merges the blocks).
    against : sequence of numpy.ndarray, optional
        Shards (m_i, d) of a second collection, numbered n..n+m-1; only pairs across the two
        collections are scored.
    threshold : float, default -1.0
        Least cosine of a reported pair.
    nprobe, nlist : int, optional
        Cells compared per vector, and in all (default :func:`plan_join`).
    seed : int, default 1234
        Seeds the sample and the k-means: the same seed gives the same pairs.
    max_score : float, default 1.01
        Largest squared norm (and score) of sound vectors.
    block_rows : int, default JOIN_BLOCK_ROWS
        Query rows scored against a cell at a time.
    progress : bool, default False
        Show a ``tqdm.auto`` progress bar (vectors whose cell was scored).
    info : dict, optional
        Filled with ``nlist``, ``nprobe``, ``train_sample``, ``pairs_scored``, ``damaged`` and seconds.

    Yields
    ------
    src, dst : numpy.ndarray
        Shape (e,) int64 global rows of candidate pairs, each among the ``k`` best of ``src``'s row
        or ``dst``'s column within its block (each pair appears in one direction or both).
    scores : numpy.ndarray
        Shape (e,) float32, the exact cosine of each pair (``>= threshold``).

    Raises
    ------
    OptionalDependencyError
        If FAISS is not installed (``pip install revsearch[ann]``).
    """
    from tqdm.auto import tqdm

    faiss = _faiss()
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    shards = [*vectors, *(against or [])]
    dim = int(next((s.shape[1] for s in shards if len(s)), 0))
    rows = Rows(shards, dim)
    n_first = Rows(vectors, dim).n if against is not None else None
    n = rows.n
    t0 = time.perf_counter()
    # sound rows: finite, squared norm <= max_score
    sound_l, start = [], 0
    for block in _iter_rows(rows, 0, n):
        with np.errstate(invalid="ignore", over="ignore"):
            sq = np.einsum("ij,ij->i", block, block)
        sound_l.append(start + np.flatnonzero(np.isfinite(sq) & (sq <= max_score)))
        start += len(block)
    sound = np.concatenate(sound_l).astype(np.int64) if sound_l else np.zeros(0, np.int64)
    plan = plan_join(max(1, len(sound)), nlist=nlist, nprobe=nprobe)
    details: dict[str, Any] = {**plan, "pairs_scored": 0, "damaged": n - len(sound)}
    if len(sound) < 2:
        if info is not None:
            info.update(details)
        return
    nlist, nprobe = plan["nlist"], plan["nprobe"]
    sample = _gather(rows, sound[_sample_rows(len(sound), plan["train_size"], seed)])
    km = faiss.Kmeans(dim, nlist, niter=JOIN_KMEANS_ITERATIONS, spherical=True, seed=int(seed) % (2**31),
                      max_points_per_centroid=max(256, plan["train_size"] // nlist + 1),
                      min_points_per_centroid=1, verbose=False)
    km.train(sample)
    del sample
    cells = faiss.IndexFlatIP(dim)
    cells.add(np.ascontiguousarray(km.centroids, np.float32))
    t_train = time.perf_counter() - t0
    # every sound vector's nprobe nearest cells, the first being its own
    probes = np.empty((len(sound), nprobe), np.int64)
    for s0 in range(0, len(sound), 16384):
        _, probes[s0 : s0 + 16384] = cells.search(_gather(rows, sound[s0 : s0 + 16384]), nprobe)
    t_assign = time.perf_counter() - t0 - t_train
    own = probes[:, 0]
    member_order = np.argsort(own, kind="stable")
    member_start = np.searchsorted(own[member_order], np.arange(nlist + 1))
    flat_cells = probes.ravel()
    probe_order = np.argsort(flat_cells, kind="stable")
    probe_start = np.searchsorted(flat_cells[probe_order], np.arange(nlist + 1))
    probe_rows = sound[probe_order // nprobe]
    member_rows = sound[member_order]
    del flat_cells, probe_order, probes, own, member_order
    scored = 0
    with tqdm(total=len(sound), desc="duplicates", unit="vec", disable=not progress) as bar:
        for c in range(nlist):
            members = member_rows[member_start[c] : member_start[c + 1]]
            queries = probe_rows[probe_start[c] : probe_start[c + 1]]
            if not len(members) or not len(queries):
                bar.update(len(members))
                continue
            xm = _gather(rows, members)
            for q0 in range(0, len(queries), block_rows):
                qs = queries[q0 : q0 + block_rows]
                with np.errstate(invalid="ignore", over="ignore"):
                    s = _gather(rows, qs) @ xm.T  # (q, members) exact float32 scores
                    s[~(s <= max_score)] = -np.inf
                scored += s.size
                invalid = qs[:, None] == members[None, :]
                if n_first is not None:  # across the two collections only
                    invalid |= (qs[:, None] < n_first) == (members[None, :] < n_first)
                s[invalid] = -np.inf
                row_keep, col_keep = best_in_block(s, threshold, k)
                for keep_, forward in ((row_keep, True), (col_keep, False)):
                    hits = np.flatnonzero(keep_)
                    if not hits.size:
                        continue
                    r, cc = np.divmod(hits, s.shape[1])
                    gi, gj, sc = qs[r], members[cc], s.ravel()[hits]
                    yield (gi, gj, sc) if forward else (gj, gi, sc)
            bar.update(len(members))
    details.update({"pairs_scored": int(scored), "train_seconds": round(t_train, 3),
                    "assign_seconds": round(t_assign, 3), "seconds": round(time.perf_counter() - t0, 3)})
    if info is not None:
        info.update(details)


def _rescore(index: Snapshot, q: np.ndarray, cand: np.ndarray, block_bytes: int = 32 * 2**20) -> np.ndarray:
    """Exact inner products of each query (b, d) with its candidates (b, c) read from the shards.

    Candidate rows are copied once, straight from the memory-mapped shards into a (block, c, d)
    buffer (only those rows are read), then scored with one batched matrix product.
    """
    b, c = cand.shape
    out = np.full((b, c), -np.inf, np.float32)
    per_block = max(1, block_bytes // max(1, c * index.dim * 4))
    for a in range(0, b, per_block):
        blk = cand[a : a + per_block]
        valid = blk >= 0
        flat = np.where(valid, blk, 0).ravel()
        vecs = _gather(index, flat).reshape(blk.shape[0], c, index.dim)
        s = np.matmul(vecs, q[a : a + per_block, :, None])[..., 0]  # (blk, c)
        out[a : a + per_block] = np.where(valid, s, -np.inf)
    return out


# ---------------------------------------------------------------------------------------- tuning
def recall_without_self(rows: np.ndarray, truth: np.ndarray, query_rows: np.ndarray, k: int) -> float:
    """Mean recall@k of ``rows`` against ``truth`` (both (b, k+1)), ignoring each query's own row."""
    hits = 0
    for got, want, own in zip(rows, truth, query_rows):
        want_k = [r for r in want.tolist() if r != own][:k]
        got_k = [r for r in got.tolist() if r != own][:k]
        hits += len(set(got_k) & set(want_k)) / max(1, len(want_k))
    return hits / max(1, len(rows))


def search_cost(kind: str, params: dict[str, Any], n: int, dim: int, nprobe: int, rerank: int) -> float:
    """A machine-independent cost model of one query, in bytes touched (to compare settings).

    IVF-PQ scans ``nprobe`` cells of ``n / nlist`` codes of ``pq_bytes`` bytes and then reads
    ``rerank`` float32 rows at random (counted twice: random reads cost more than a scan).
    HNSW visits about ``efSearch`` nodes of ``dim`` floats.
    """
    if kind == "ivfpq":
        scan = nprobe * (n / max(1, int(params["nlist"]))) * int(params["pq_bytes"])
        return float(scan + 2 * rerank * dim * 4)
    return float(max(rerank, int(params.get("ef_search", 0))) * dim * 4 * 2)


def tune_ann(
    index: IndexLike,
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    k: int = 9,
    queries: int = DEFAULT_TUNE_QUERIES,
    nprobe: int | None = None,
    rerank: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure recall@k of the index's approximate index and choose the cheapest search settings.

    A sample of the collection's own vectors is used as queries; exact search gives the true
    top-k (each query's own row left out of both). Settings are tried from cheap to expensive,
    starting at the recorded (planned) ones and never below them (``rerank`` candidates, and for
    IVF-PQ ``nprobe`` cells; with HNSW ``rerank`` also sets efSearch), and the one with the lowest cost (:func:`search_cost`, bytes touched per query,
    so the choice does not depend on the machine's load) that reaches ``target_recall`` is
    chosen; if none does, the one with the best recall, with a warning.

    Parameters
    ----------
    index : Index or Snapshot
        An index whose manifest names an approximate index (kind "ivfpq" or "hnsw").
    target_recall : float, default 0.95
        Recall@k to reach, in (0, 1].
    k : int, default 9
        Results per query that recall is measured on.
    queries : int, default 200
        Vectors of the collection used as queries (fewer if it holds fewer).
    nprobe, rerank : int, optional
        Keep this value fixed instead of tuning it.
    seed : int, default 0
        Seeds the draw of the query vectors.

    Returns
    -------
    dict
        ``{"target_recall", "k", "queries", "nprobe", "rerank", "recall", "reached", "seconds",
        "tried": [{"nprobe", "rerank", "recall", "cost"}, ...]}``; ``nprobe`` is None for HNSW.
    """
    if not 0 < float(target_recall) <= 1:
        raise ValueError(f"target_recall must be in (0, 1], not {target_recall}")
    if k < 1 or queries < 1:
        raise ValueError(f"k and queries must be at least 1, not {k} and {queries}")
    index = _snap(index)
    meta = index.manifest.ann or {}
    kind = meta.get("kind")
    if kind not in ("ivfpq", "hnsw"):
        raise RevsearchError(f"the index in {str(index.folder)!r} has no approximate index to tune (kind {kind!r})")
    t0 = time.perf_counter()
    params = meta.get("params", {})
    n, dim = len(index), index.dim
    rows = _sample_rows(n, queries, seed)
    q = _gather(index, rows)
    kk = min(k + 1, n)
    _, truth = topk_cosine(index.vectors, q, kk)
    # Never cheaper than the planned settings: the collection's own vectors are easier queries
    # than new photos (each lies in its own cluster's cell), so tuning only adds work where the
    # planned settings miss the target.
    floor_rerank = max(k, int(params.get("rerank", DEFAULT_RERANK)))
    if kind == "ivfpq":
        nlist = int(params["nlist"])
        floor = min(nlist, int(params.get("nprobe", 1)))
        doubling = {min(nlist, floor << i) for i in range(0, nlist.bit_length() + 1)}
        probes = [nprobe] if nprobe else sorted(doubling)
    else:
        probes = [None]
    grid = sorted({floor_rerank, *(r for r in RERANK_GRID if r > floor_rerank)})
    reranks = [rerank] if rerank is not None else grid
    tried: list[dict[str, Any]] = []
    best_cost = math.inf  # of the cheapest setting found that reaches the target
    for rr in reranks:
        if search_cost(kind, params, n, dim, probes[0] or 0, rr) >= best_cost:
            break  # the cost grows with rerank: nothing cheaper is left
        previous, flat = None, 0
        for npb in probes:
            cost = search_cost(kind, params, n, dim, npb or 0, rr)
            if cost >= best_cost:
                break
            _, got = ann_topk(index, q, kk, nprobe=npb, rerank=rr)
            rec = recall_without_self(got, truth, rows, k)
            tried.append({"nprobe": npb, "rerank": rr, "recall": round(rec, 4), "cost": cost})
            if rec >= target_recall:
                best_cost = cost
                break  # more cells cannot make this rerank cheaper
            flat = flat + 1 if previous is not None and rec - previous < 0.002 else 0
            if flat >= 2:
                break  # more cells no longer help: the candidates re-scored are the limit
            previous = rec
    reached = [t for t in tried if t["recall"] >= target_recall]
    if reached:
        best = min(reached, key=lambda t: (t["cost"], -t["recall"]))
    else:
        best = max(tried, key=lambda t: (t["recall"], -t["cost"]))
        logger.warning(
            "the approximate index of %s reaches recall@%d %.3f at best, below the target %.3f: search with "
            "exact=True, or rebuild it with a larger memory budget",
            index.folder, k, best["recall"], target_recall,
        )
    return {
        "target_recall": float(target_recall), "k": int(k), "queries": int(len(rows)),
        "nprobe": best["nprobe"], "rerank": int(best["rerank"]), "recall": best["recall"],
        "reached": bool(reached), "seconds": round(time.perf_counter() - t0, 3), "tried": tried,
    }


def _apply_tuning(meta: dict[str, Any], tuning: dict[str, Any]) -> dict[str, Any]:
    """A copy of an ``ann`` manifest entry searching with the tuned settings."""
    new = dict(meta)
    params = dict(meta.get("params", {}))
    if tuning["nprobe"] is not None:
        params["nprobe"] = int(tuning["nprobe"])
    params["rerank"] = int(tuning["rerank"])
    new["params"] = params
    new["tuning"] = {k: v for k, v in tuning.items()}
    return new


# ---------------------------------------------------------------------------------------- building
def _new_faiss_index(faiss: Any, kind: str, dim: int, params: dict[str, Any]) -> Any:
    if kind == "ivfpq":
        quantizer = faiss.IndexFlatL2(dim)
        idx = faiss.IndexIVFPQ(quantizer, dim, int(params["nlist"]), int(params["pq_bytes"]), int(params["nbits"]))
        idx.own_fields = True
        quantizer.this.disown()
        idx.do_polysemous_training = False  # slow, and useless here: candidates are re-scored exactly
        idx.cp.niter = 10
        idx.pq.cp.niter = 10
        idx.cp.seed = idx.pq.cp.seed = int(params.get("seed", 1234))
        return idx
    if kind == "hnsw":
        idx = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = int(params["ef_construction"])
        return idx
    raise ValueError(kind)


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, size), replace=False)).astype(np.int64)


def _add_chunk_rows(fidx: Any, dim: int) -> int:
    """Rows per ``add`` call: FAISS encodes a block with an (rows, M, 256) float32 distance table."""
    pq = getattr(fidx, "pq", None)
    per_row = dim * 8 + (pq.M * pq.ksub * 4 if pq is not None else 0)
    return int(min(ADD_CHUNK_ROWS, max(256, 2**28 // per_row)))  # about 256 MiB of temporaries


def _add_rows(fidx: Any, index: Snapshot, start: int, stop: int, progress: bool, desc: str) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=stop - start, desc=desc, unit="vec", disable=not progress) as bar:
        for block in _iter_rows(index, start, stop, _add_chunk_rows(fidx, index.dim)):
            fidx.add(block)
            bar.update(len(block))


def _write_faiss(faiss: Any, writer: FolderWriter, fidx: Any) -> str:
    """Write a FAISS index as a new section file through the store's atomic writer; return its name."""
    data = faiss.serialize_index(fidx)  # (bytes,) uint8: the file's content
    return writer.write_section_file("ann", lambda fh: fh.write(memoryview(np.ascontiguousarray(data))))


def _commit_ann(writer: FolderWriter, meta: dict[str, Any] | None) -> dict[str, Any]:
    """Record ``meta`` as the index's approximate index (None: none); the store deletes the old file."""
    return writer.commit(ann=meta)


def _request(meta: dict[str, Any]) -> dict[str, Any]:
    """The build options an existing approximate index was asked for (to rebuild it alike)."""
    return dict(meta.get("request") or {"kind": meta.get("kind", "auto")})


def _build_locked(
    writer: FolderWriter, index: Snapshot, request: dict[str, Any], *, progress: bool, action: str = "built"
) -> dict[str, Any]:
    """Build and commit an approximate index through the writer (which holds the folder's lock)."""
    if not index.complete:
        raise RevsearchError(
            f"the index in {str(index.folder)!r} is incomplete (an indexing run did not finish): run "
            "`revsearch index` on it again before building an approximate index"
        )
    damaged = index.damaged_rows()
    if damaged.size:
        from ..core.errors import IndexDamagedError

        raise IndexDamagedError(
            index.folder,
            f"{damaged.size} vectors are damaged (NaN, infinite or not unit length; the first is row {int(damaged[0])}), "
            "so no approximate index is built on them",
        )
    t0 = time.perf_counter()
    n, dim = len(index), index.dim
    opts = {k: v for k, v in request.items() if k not in _NOT_PLAN_OPTIONS}
    kind, params, mem = plan_ann(n, dim, **opts)
    name: str | None = None
    file_bytes = 0
    faiss_version = None
    if kind != "flat":
        faiss = _faiss()
        faiss_version = faiss.__version__
        params["seed"] = int(request.get("seed", 1234))
        fidx = _new_faiss_index(faiss, kind, dim, params)
        if kind == "ivfpq":
            rows = _sample_rows(n, int(params["train_size"]), params["seed"])
            logger.info("training IVF-PQ (%s) on %d of %d vectors", params, len(rows), n)
            fidx.train(_gather(index, rows))
        _add_rows(fidx, index, 0, n, progress, f"ANN {kind}")
        name = _write_faiss(faiss, writer, fidx)
        file_bytes = (index.folder / name).stat().st_size
    meta = {
        "file": name,
        "kind": kind,
        "params": params,
        "count": n,
        "trained_count": n,
        "dim": dim,
        "fingerprint": _fingerprints(index, [n])[n],
        "built": store.utc_now(),
        "build_seconds": round(time.perf_counter() - t0, 3),
        "file_bytes": file_bytes,
        "memory_bytes_estimate": int(mem),
        "faiss_version": faiss_version,
        "request": {k: v for k, v in request.items() if v is not None},
        "last_update": {"action": action, "at": store.utc_now(), "vectors": n},
    }
    target = request.get("target_recall", DEFAULT_TARGET_RECALL)
    if kind != "flat" and target:
        searchable = dataclasses.replace(index, manifest=index.manifest.with_ann(meta))  # committed below
        tuning = tune_ann(
            searchable, target_recall=target, queries=int(request.get("tune_queries") or DEFAULT_TUNE_QUERIES),
            nprobe=request.get("nprobe"), rerank=request.get("rerank"), seed=int(request.get("seed", 1234)),
        )
        meta = _apply_tuning(meta, tuning)
        meta["build_seconds"] = round(time.perf_counter() - t0, 3)
        logger.info(
            "tuned %s search to recall@%d %.3f (target %.3f) with nprobe=%s rerank=%s",
            kind, tuning["k"], tuning["recall"], target, tuning["nprobe"], tuning["rerank"],
        )
    _commit_ann(writer, meta)
    logger.info("approximate index of %s %s: %s, %d vectors, %s", index.folder, action, kind, n, params)
    return meta


def _extend_locked(writer: FolderWriter, index: Snapshot, meta: dict[str, Any], *, progress: bool) -> dict[str, Any]:
    """Add rows ``meta['count']:len(index)`` to the existing FAISS index and commit it under a new name."""
    t0 = time.perf_counter()
    n, old = len(index), int(meta["count"])
    new = dict(meta)
    if meta.get("file"):
        faiss = _faiss()
        fidx = faiss.read_index(str(index.folder / meta["file"]))
        _add_rows(fidx, index, old, n, progress, "ANN extend")
        new["file"] = _write_faiss(faiss, writer, fidx)
        new["file_bytes"] = (index.folder / new["file"]).stat().st_size
    new.update(
        count=n,
        fingerprint=_fingerprints(index, [n])[n],
        last_update={"action": "extended" if n > old else "kept", "at": store.utc_now(), "vectors": n - old,
                     "seconds": round(time.perf_counter() - t0, 3)},
    )
    _commit_ann(writer, new)
    logger.info("approximate index of %s extended with %d vectors (now %d)", index.folder, n - old, n)
    return new


def refresh_after_update(writer: FolderWriter, stale: dict[str, Any], *, progress: bool = True) -> dict[str, Any] | None:
    """Bring an approximate index up to date after the vectors changed, through the update's writer.

    Called at the end of :func:`revsearch.storage.indexing.update_folder` (and of a Dask build) when the
    index had an approximate index before. If the rows it was built on are still the first
    rows, unchanged, and the collection has not outgrown its training (more than twice the
    vectors it was trained on) or its kind, the new rows are added; otherwise it is rebuilt
    with the options it was first built with. Either way, this is logged.

    Parameters
    ----------
    writer : FolderWriter
        The writer of the update (it holds the folder's lock).
    stale : dict
        The manifest's ``ann`` entry before the update.
    progress : bool, default True

    Returns
    -------
    dict or None
        The new manifest ``ann`` entry; None if FAISS is missing (a warning says to rebuild).
    """
    index = writer.snapshot()
    assert index is not None
    folder = writer.folder
    n = len(index)
    request = _request(stale)
    try:
        if n == 0:
            _commit_ann(writer, None)
            logger.warning("approximate index of %s dropped: the index is empty", folder)
            return None
        old = int(stale.get("count", -1))
        want_kind, _, _ = plan_ann(n, index.dim, **{k: v for k, v in request.items() if k not in _NOT_PLAN_OPTIONS})
        reason = None
        if want_kind != stale.get("kind"):
            reason = f"{n} vectors now call for kind {want_kind!r} instead of {stale.get('kind')!r}"
        elif old < 0 or old > n or _fingerprints(index, [old])[old] != stale.get("fingerprint"):
            reason = "rows it was built on were changed or removed"
        elif n > 2 * int(stale.get("trained_count", old)):
            reason = f"the collection grew from {stale.get('trained_count', old)} to {n} vectors since it was trained"
        elif stale.get("file") and not (index.folder / stale["file"]).is_file():
            reason = "its file is missing"
        elif stale.get("file") and int(getattr(_faiss().read_index(str(index.folder / stale["file"])), "d", -1)) != index.dim:
            reason = "its file holds vectors of another dimension"
        if reason is None:
            return _extend_locked(writer, index, stale, progress=progress)
        logger.warning("approximate index of %s needs a rebuild (%s): rebuilding it", folder, reason)
        return _build_locked(writer, index, request, progress=progress, action="rebuilt")
    except OptionalDependencyError as e:
        logger.warning(
            "the approximate index of %s is out of date and could not be rebuilt (%s); search is exact until "
            "you run `revsearch ann %s`",
            folder, e, folder,
        )
        return None


def build_ann(
    index_or_dir: Any,
    *,
    memory_budget: int | str | None = None,
    kind: str = "auto",
    nlist: int | None = None,
    pq_bytes: int | None = None,
    nprobe: int | None = None,
    rerank: int | None = None,
    hnsw_m: int | None = None,
    train_size: int | None = None,
    seed: int = 1234,
    target_recall: float | None = DEFAULT_TARGET_RECALL,
    tune_queries: int = DEFAULT_TUNE_QUERIES,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or rebuild) the approximate index of a revsearch index, in its folder.

    The FAISS index is written aside and renamed into place (``ann-<token>.faiss``), then the
    manifest is replaced atomically with its description in ``manifest["ann"]``; an older
    approximate index file is deleted. Later searches use it automatically.

    Parameters
    ----------
    index_or_dir : Index or path
        The index (its ``manifest`` is refreshed in place) or its folder.
    memory_budget : int or str, optional
        Memory the approximate index may use, in bytes or as ``"1GB"``. Default: 1/8 of the
        float32 vectors.
    kind : {"auto", "flat", "ivfpq", "hnsw"}, default "auto"
        See :func:`plan_ann`.
    nlist, pq_bytes, nprobe, rerank, hnsw_m, train_size : int, optional
        Override the chosen parameters.
    seed : int, default 1234
        Seeds the training sample and k-means.
    target_recall : float or None, default 0.95
        After building, :func:`tune_ann` measures recall@9 on ``tune_queries`` of the
        collection's own vectors and records the cheapest ``nprobe`` / ``rerank`` (efSearch for
        HNSW) that reach it (an explicit ``nprobe`` or ``rerank`` is kept as given). None: no
        tuning, the planned defaults are used.
    tune_queries : int, default 200
        Vectors used as queries while tuning.
    progress : bool, default True
        Show a ``tqdm.auto`` progress bar while adding vectors.

    Returns
    -------
    dict
        The manifest's new ``ann`` entry: ``file``, ``kind``, ``params``, ``count``, ``built``,
        ``build_seconds``, ``file_bytes``, ``memory_bytes_estimate``, ...

    Raises
    ------
    OptionalDependencyError
        If FAISS is needed (kind other than ``"flat"``) and not installed.
    RevsearchError
        If the index is empty or incomplete, or the budget is too small.
    """
    folder = Path(getattr(index_or_dir, "folder", index_or_dir))
    request: dict[str, Any] = {
        "kind": kind, "memory_budget": parse_bytes(memory_budget), "nlist": nlist, "pq_bytes": pq_bytes,
        "nprobe": nprobe, "rerank": rerank, "hnsw_m": hnsw_m, "train_size": train_size, "seed": seed,
        # 0 records "no tuning" (None would be dropped from the manifest and mean the default).
        "target_recall": 0 if target_recall is None else target_recall, "tune_queries": tune_queries,
    }
    if target_recall is not None and not 0 < float(target_recall) <= 1:
        raise ValueError(f"target_recall must be in (0, 1], not {target_recall}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    with store.writing(folder, create=False) as w:
        index = w.snapshot()
        assert index is not None
        meta = _build_locked(w, index, request, progress=progress)
    if hasattr(index_or_dir, "reload"):  # an open Index moves to the state with its approximate index
        index_or_dir.reload()
    return meta


def drop_ann(index_or_dir: Any) -> bool:
    """Remove the approximate index of an index (search becomes exact).

    Parameters
    ----------
    index_or_dir : Index or path

    Returns
    -------
    bool
        Whether there was one.
    """
    folder = Path(getattr(index_or_dir, "folder", index_or_dir))
    with store.writing(folder, create=False) as w:
        had = w.manifest is not None and bool(w.manifest.ann or w.manifest.ann_stale)
        _commit_ann(w, None)
    if hasattr(index_or_dir, "reload"):
        index_or_dir.reload()
    return had


def ann_info(index_or_dir: Any) -> dict[str, Any] | None:
    """The manifest's ``ann`` entry of an index (None if it has no approximate index).

    Parameters
    ----------
    index_or_dir : Index or path

    Returns
    -------
    dict or None
    """
    manifest = getattr(index_or_dir, "manifest", None)
    if manifest is None:
        manifest = store.read_manifest(index_or_dir)
    return manifest.ann
