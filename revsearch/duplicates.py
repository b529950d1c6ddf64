"""Near-duplicate groups in a collection, and what to do with them.

:func:`find_duplicates` reads the vectors an index already holds and groups the photos that are
copies of one another (re-encoded, resized, cropped, captioned, recoloured...):

1. For every image, its ``k`` most similar images whose cosine is at least ``threshold``
   (ties broken by row number) are its duplicate neighbours.
2. The groups are the connected components of that graph (union-find); every group has one
   copy to keep, chosen by a rule (``keep``), and the others.

How the neighbours are found:

``"exact"`` (the default up to :data:`EXACT_MAX_VECTORS` vectors)
    Every pair is scored, block by block (``BLOCK_ROWS`` x ``BLOCK_ROWS`` float32 scores at a
    time, each pair once), straight from the memory-mapped shards: memory stays bounded and the
    groups equal a brute-force computation.
``"approximate"`` (above it)
    An inverted file, as approximate search indexes do: spherical k-means on a sample splits the
    vectors into ~n/1024 cells; each vector lies in its nearest cell and is compared with every
    vector of its ``nprobe`` nearest cells. Candidate pairs are scored exactly (float32 dot
    products of the full vectors read from the shards), so a reported score is never an
    estimate; a pair is missed only if neither image's ``nprobe`` nearest cells hold the
    other. Memory: the cell assignment (n x nprobe int32) and one cell's vectors at a time.

``--against``: with ``against=OTHER`` only pairs with one image in each collection count (a new
folder against an archive); the other collection is read, never changed.

:func:`move_duplicates` moves the copies not kept out of the dataset folder (with their relative
paths), logging every move to a CSV file before it is made, and updates the index;
:func:`undo_moves` puts every file back from that log, byte for byte. Nothing is ever deleted.

The default threshold depends on the model: see :data:`CALIBRATIONS` and
:func:`default_threshold`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import RevsearchError
from .safety import crash_point, display_name, to_json

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .index import Index

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATIONS",
    "Calibration",
    "DEFAULT_K",
    "DuplicateFile",
    "DuplicateGroup",
    "DuplicateReport",
    "EXACT_MAX_VECTORS",
    "KEEP_RULES",
    "MoveReport",
    "UndoReport",
    "check_destination",
    "connected_components",
    "default_nlist",
    "default_threshold",
    "duplicate_edges",
    "find_duplicates",
    "move_duplicates",
    "plot_duplicates",
    "undo_moves",
]

#: Neighbours per image considered (the graph's out-degree bound; memory is n x k edges at most).
DEFAULT_K = 16
#: Up to this many vectors (both collections together) every pair is scored exactly. Exact work
#: grows as n^2: 50,000 2048-d vectors took 198 s exact against 34 s approximate (same planted pairs
#: found) on a shared 2-core EPYC (benchmarks/duplicates.py scale), so the approximate method takes over early.
EXACT_MAX_VECTORS = 30_000
#: Rows per block of the exact computation: a (BLOCK_ROWS, BLOCK_ROWS) float32 score block is 64 MiB.
BLOCK_ROWS = 4096
#: Cells probed per vector by the approximate method.
DEFAULT_NPROBE = 3
#: k-means iterations of the approximate method (the cells only need to keep near vectors together).
KMEANS_ITERATIONS = 8
#: Vectors per cell the approximate method aims at (the work is about n x nprobe x CELL_ROWS dot products).
CELL_ROWS = 1024
#: Groups up to this size list every pairwise score; larger ones list the graph's edges only.
PAIRWISE_MAX = 64
#: Which copy of a group is kept.
KEEP_RULES = ("largest", "oldest", "newest", "first")
#: Highest score of a pair of sound (unit-length) vectors, with float32 rounding; above it (or NaN), a vector is damaged.
_MAX_SCORE = 1.01
#: Columns of the move log written by :func:`move_duplicates`.
LOG_COLUMNS = (
    "source", "destination", "bytes", "blake2b", "mtime_ns", "group", "kept", "score", "index", "dataset_dir",
)


# ============================================================================ default thresholds


@dataclass(frozen=True)
class Calibration:
    """The default duplicate threshold of a model, and where it comes from.

    Attributes
    ----------
    model : str
        The model name recorded in an index (``spec["model"]``).
    threshold : float
        Cosine similarity at or above which two images are duplicates.
    preprocessing : str or None
        The embedding pipeline (``spec["preprocessing"]``) the threshold was measured with; a
        threshold moves when the pipeline changes. None: not measured.
    calibrated : bool
        Whether the threshold was measured on real photos with real weights
        (``benchmarks/duplicates.py``), rather than set by a rule.
    note : str
        How it was chosen.
    """

    model: str
    threshold: float
    preprocessing: str | None
    calibrated: bool
    note: str


#: The MobileNet pipeline the calibration was run with (``Embedder("mobilenet").preprocessing``).
_MOBILENET_PIPELINE = "crop:rgb(0,0,0)/resize:224:bicubic/keras.applications.mobilenet.preprocess_input"

#: Default thresholds per model. Rerun ``python benchmarks/duplicates.py`` after changing an
#: embedding pipeline (pooling, crop...) and update the entry: it prints the new one.
CALIBRATIONS: dict[str, Calibration] = {
    "mobilenet": Calibration(
        "mobilenet",
        0.95,
        _MOBILENET_PIPELINE,
        True,
        "benchmarks/duplicates.py calibrate (2026-12-01, crop + average pooling): the lowest threshold from which "
        "pair precision stays >= 0.99 is 0.905 on Oxford flowers and 0.950 on UKBench (other shots of the same "
        "object score high); the default is the higher (the earlier crop + GeM pipeline gave 0.910 and 0.950)",
    ),
}
#: Models without a calibration get the highest calibrated threshold (fewer, surer groups).
_UNCALIBRATED_NOTE = (
    "not calibrated for this model (no real weights measured here): the highest calibrated threshold "
    "of any model is used; check a few groups, or pass threshold="
)


def default_threshold(spec: dict[str, Any]) -> tuple[float, Calibration]:
    """The default duplicate threshold for vectors made as ``spec`` says.

    Parameters
    ----------
    spec : dict
        An index's :attr:`~revsearch.Index.spec` (``model``, ``preprocessing``...).

    Returns
    -------
    threshold : float
    calibration : Calibration
        Where it comes from. A model without its own calibration (``resnet50`` here: its real
        weights could not be measured offline) gets the highest calibrated threshold, with
        ``calibrated=False``. A calibrated model whose index was made by another pipeline gets
        its threshold with a warning logged.
    """
    model = str(spec.get("model", ""))
    cal = CALIBRATIONS.get(model)
    if cal is None:
        best = max(CALIBRATIONS.values(), key=lambda c: c.threshold)
        cal = Calibration(model, best.threshold, None, False, _UNCALIBRATED_NOTE)
        logger.warning("duplicate threshold %.3f for model %r: %s", cal.threshold, model, cal.note)
    elif cal.preprocessing is not None and spec.get("preprocessing") not in (None, cal.preprocessing):
        logger.warning(
            "the duplicate threshold of %r (%.3f) was calibrated with preprocessing %r, the index used %r: "
            "rerun benchmarks/duplicates.py or pass threshold=",
            model, cal.threshold, cal.preprocessing, spec.get("preprocessing"),
        )
    return cal.threshold, cal


# ============================================================================ the graph


def _shards_of(vectors: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(vectors, np.ndarray):
        return [vectors] if vectors.ndim == 2 else [np.atleast_2d(vectors)]
    return list(vectors)


class _Rows:
    """Rows of several (n_i, d) shards addressed by global row number, read in place."""

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        self.shards = [s for s in shards if len(s)]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self.n = int(self.offsets[-1])
        self.dim = int(shards[0].shape[1]) if shards else 0

    def blocks(self, size: int) -> Any:
        """Yield (start, block) with block of shape (<= size, d), views where possible."""
        for start in range(0, self.n, size):
            yield start, self.slice(start, min(self.n, start + size))

    def slice(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for s, lo in zip(self.shards, self.offsets[:-1]):
            a, b = max(start, int(lo)), min(stop, int(lo) + len(s))
            if a < b:
                parts.append(s[a - int(lo) : b - int(lo)])
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Copy of the given rows (any order), shape (len(rows), d) float32."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for i, s in enumerate(self.shards):
            m = which == i
            if m.any():
                local = rows[m] - int(self.offsets[i])
                order = np.argsort(local, kind="stable")  # read in file order
                out[np.flatnonzero(m)[order]] = s[local[order]]
        return out


class _TopK:
    """Per node, the k best (score, neighbour) candidates, ties to the lower neighbour id."""

    def __init__(self, k: int, n_nodes: int) -> None:
        self.k = k
        self.n = n_nodes
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending = 0
        self.kept = 0

    def add(self, src: np.ndarray, dst: np.ndarray, score: np.ndarray) -> None:
        if not len(src):
            return
        self.parts.append((src.astype(np.int64), dst.astype(np.int64), score.astype(np.float32)))
        self.pending += len(src)
        if self.pending > max(1 << 22, 2 * self.kept):
            self._compact()

    def _compact(self) -> None:
        if not self.parts:
            return
        src = np.concatenate([p[0] for p in self.parts])
        dst = np.concatenate([p[1] for p in self.parts])
        s = np.concatenate([p[2] for p in self.parts])
        # one entry per (src, dst): the same pair may be scored twice (approximate method)
        key = src * self.n + dst
        order = np.lexsort((-s, key))
        key, src, dst, s = key[order], src[order], dst[order], s[order]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        src, dst, s = src[first], dst[first], s[first]
        order = np.lexsort((dst, -s, src))  # per src: best score first, ties to the lower dst
        src, dst, s = src[order], dst[order], s[order]
        start = np.searchsorted(src, src, side="left")
        rank = np.arange(len(src)) - start
        keep = rank < self.k
        self.parts = [(src[keep], dst[keep], s[keep])]
        self.kept = int(keep.sum())
        self.pending = self.kept

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._compact()
        if not self.parts:
            z = np.zeros(0, np.int64)
            return z, z.copy(), np.zeros(0, np.float32)
        return self.parts[0]


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (-1.0 <= t <= 1.0):  # also refuses NaN
        raise ValueError(f"threshold must lie in [-1, 1] (a cosine similarity), not {threshold!r}")
    return t


def _exact_edges(a: _Rows, b: _Rows | None, threshold: float, top: _TopK, block: int, bar: Any) -> None:
    """Score every pair (within ``a``, or between ``a`` and ``b``) block by block."""
    nA = a.n
    other = b if b is not None else a
    for i0, xi in a.blocks(block):
        xi = np.asarray(xi, np.float32)
        # within one set, each pair once: the blocks on and above the diagonal only
        for j0 in range(i0 if b is None else 0, other.n, block):
            xj = np.asarray(other.slice(j0, min(other.n, j0 + block)), np.float32)
            with np.errstate(invalid="ignore", over="ignore"):
                s = xi @ xj.T  # (bi, bj) float32
                hits = np.flatnonzero((s >= threshold) & (s <= _MAX_SCORE))  # NaN, inf: a damaged vector
            if hits.size:
                r, c = np.divmod(hits, s.shape[1])
                sc = s.ravel()[hits]
                gi, gj = r + i0, c + j0
                if b is None:
                    m = gj > gi  # upper triangle, no self pairs
                    gi, gj, sc = gi[m], gj[m], sc[m]
                else:
                    gj = gj + nA
                top.add(gi, gj, sc)
                top.add(gj, gi, sc)
            del s
        bar.update(len(xi))


def _spherical_kmeans(x: np.ndarray, nlist: int, iters: int, seed: int) -> np.ndarray:
    """Centroids (nlist, d), unit length, of unit vectors x (m, d)."""
    rng = np.random.default_rng(seed)
    c = x[rng.choice(len(x), size=nlist, replace=False)].copy()
    for _ in range(iters):
        assign = np.empty(len(x), np.int64)
        for s in range(0, len(x), 16384):
            assign[s : s + 16384] = np.argmax(x[s : s + 16384] @ c.T, axis=1)
        new = np.zeros_like(c)
        _sum_by(new, assign, x)
        counts = np.bincount(assign, minlength=nlist)
        empty = counts == 0
        if empty.any():  # re-seed empty cells with random points
            new[empty] = x[rng.choice(len(x), size=int(empty.sum()), replace=False)]
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        c = (new / np.maximum(norms, 1e-12)).astype(np.float32)
    return c


def _sum_by(out: np.ndarray, labels: np.ndarray, x: np.ndarray) -> None:
    """out[c] += sum of the rows of x labelled c."""
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    bounds = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[sl[a]] += x[order[a:b]].sum(axis=0)


def default_nlist(n: int) -> int:
    """Cells of the approximate method for n vectors: a power of 2 near n / CELL_ROWS (16..16384)."""
    return int(min(max(16, 2 ** round(math.log2(max(1, n / CELL_ROWS)))), 1 << 14, max(1, n // 8)))


def _approx_edges(
    rows: _Rows, n_first: int | None, threshold: float, top: _TopK, nprobe: int, nlist: int | None, seed: int,
    bar: Any,
) -> dict[str, Any]:
    """Inverted-file search with exact scoring of every candidate pair (see the module docstring)."""
    n = rows.n
    nlist = int(min(nlist, n)) if nlist else default_nlist(n)
    nprobe = int(min(max(1, nprobe), nlist))
    rng = np.random.default_rng(seed)
    sample_size = int(min(n, max(32 * nlist, 32768), 65536))
    sample_rows = np.sort(rng.choice(n, size=sample_size, replace=False))
    t0 = time.perf_counter()
    centroids = _spherical_kmeans(rows.take(sample_rows), nlist, iters=KMEANS_ITERATIONS, seed=seed)
    t_train = time.perf_counter() - t0
    # every vector's nprobe nearest cells, the first being its own
    probes = np.empty((n, nprobe), np.int32)
    ct = np.ascontiguousarray(centroids.T)
    for start, x in rows.blocks(16384):
        s = np.asarray(x, np.float32) @ ct
        if nprobe < nlist:
            part = np.argpartition(-s, nprobe - 1, axis=1)[:, :nprobe]
        else:
            part = np.tile(np.arange(nlist), (len(s), 1))
        ps = np.take_along_axis(s, part, axis=1)
        probes[start : start + len(x)] = np.take_along_axis(part, np.argsort(-ps, axis=1, kind="stable"), axis=1)
    t_assign = time.perf_counter() - t0 - t_train
    own = probes[:, 0].astype(np.int64)
    member_order = np.argsort(own, kind="stable")
    member_start = np.searchsorted(own[member_order], np.arange(nlist + 1))
    flat_cells = probes.ravel().astype(np.int64)
    probe_order = np.argsort(flat_cells, kind="stable")
    probe_start = np.searchsorted(flat_cells[probe_order], np.arange(nlist + 1))
    probe_rows = (probe_order // nprobe).astype(np.int64)
    del flat_cells, probe_order
    scored = 0
    for c in range(nlist):
        members = member_order[member_start[c] : member_start[c + 1]]
        queries = probe_rows[probe_start[c] : probe_start[c + 1]]
        if not len(members) or not len(queries):
            continue
        xm = rows.take(members)
        for q0 in range(0, len(queries), BLOCK_ROWS):
            qs = queries[q0 : q0 + BLOCK_ROWS]
            with np.errstate(invalid="ignore", over="ignore"):
                s = rows.take(qs) @ xm.T  # exact float32 scores of the candidate pairs
                hits = np.flatnonzero((s >= threshold) & (s <= _MAX_SCORE))  # NaN, inf: a damaged vector
            scored += s.size
            if hits.size:
                r, cc = np.divmod(hits, s.shape[1])
                gi, gj, sc = qs[r], members[cc], s.ravel()[hits]
                m = gi != gj
                if n_first is not None:
                    m &= (gi < n_first) != (gj < n_first)  # across the two collections only
                gi, gj, sc = gi[m], gj[m], sc[m]
                top.add(gi, gj, sc)
                top.add(gj, gi, sc)
        bar.update(len(members))
    return {
        "nlist": nlist, "nprobe": nprobe, "train_sample": sample_size, "pairs_scored": int(scored),
        "train_seconds": round(t_train, 3), "assign_seconds": round(t_assign, 3),
    }


def duplicate_edges(
    vectors: np.ndarray | Sequence[np.ndarray],
    threshold: float,
    *,
    against: np.ndarray | Sequence[np.ndarray] | None = None,
    k: int = DEFAULT_K,
    method: str = "auto",
    nprobe: int = DEFAULT_NPROBE,
    nlist: int | None = None,
    seed: int = 0,
    block_rows: int = BLOCK_ROWS,
    progress: bool = False,
    info: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The duplicate graph: each vector's ``k`` best neighbours scoring at least ``threshold``.

    Parameters
    ----------
    vectors : numpy.ndarray or sequence of numpy.ndarray
        Shape (n, d), or shards (n_i, d) whose rows number on from one to the next; float32,
        L2-normalised (memory-mapped arrays are read in place).
    threshold : float
        Cosine similarity in [-1, 1].
    against : numpy.ndarray or sequence of numpy.ndarray, optional
        Shape (m, d): only pairs with one vector in each set count. Its rows are numbered
        n..n+m-1 in the result.
    k : int, default DEFAULT_K
        Neighbours kept per vector (best score first, ties to the lower row).
    method : {"auto", "exact", "approximate"}
        ``auto``: exact up to :data:`EXACT_MAX_VECTORS` vectors in all.
    nprobe : int, default DEFAULT_NPROBE
        Cells each vector is compared with (approximate method).
    nlist : int, optional
        Cells of the approximate method (default :func:`default_nlist`).
    seed : int, default 0
        Seeds the approximate method's k-means.
    block_rows : int, default BLOCK_ROWS
        Rows per block of the exact method.
    progress : bool, default False
        Show a ``tqdm.auto`` progress bar.
    info : dict, optional
        Filled with how the graph was computed (``method``, and the approximate method's
        ``nlist``, ``nprobe``, ``pairs_scored``...).

    Returns
    -------
    src, dst : numpy.ndarray
        Shape (e,) int64: directed edges, ``dst`` among the ``k`` best neighbours of ``src``,
        sorted by ``src``, then best score first.
    scores : numpy.ndarray
        Shape (e,) float32, the exact cosine of each edge.
    """
    from tqdm.auto import tqdm

    t = _check_threshold(threshold)
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"method must be 'auto', 'exact' or 'approximate', not {method!r}")
    a = _Rows(_shards_of(vectors))
    b = _Rows(_shards_of(against)) if against is not None else None
    if b is not None and a.n and b.n and a.dim != b.dim:
        raise ValueError(f"the two sets hold vectors of dimension {a.dim} and {b.dim}: they cannot be compared")
    n_total = a.n + (b.n if b is not None else 0)
    if method == "auto":
        method = "exact" if n_total <= EXACT_MAX_VECTORS else "approximate"
    top = _TopK(k, max(1, n_total))
    details: dict[str, Any] = {"method": method, "vectors": n_total}
    t0 = time.perf_counter()
    with tqdm(total=a.n if method == "exact" else n_total, desc="duplicates", unit="vec", disable=not progress) as bar:
        if a.n and (b is None or b.n):
            if method == "exact":
                _exact_edges(a, b, t, top, int(block_rows), bar)
            else:
                rows = a if b is None else _Rows([*a.shards, *b.shards])
                details.update(_approx_edges(rows, a.n if b is not None else None, t, top, nprobe, nlist, seed, bar))
    details["seconds"] = round(time.perf_counter() - t0, 3)
    if info is not None:
        info.update(details)
    return top.result()


def connected_components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph (union-find by hooking and pointer jumping).

    Parameters
    ----------
    n : int
        Number of nodes.
    src, dst : numpy.ndarray
        Shape (e,) int: the edges.

    Returns
    -------
    numpy.ndarray
        Shape (n,) int64: each node's component label, the lowest node number in it.
    """
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(src, np.int64)
    b = np.asarray(dst, np.int64)
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        a, b, pa, pb = a[differ], b[differ], pa[differ], pb[differ]
        lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
        np.minimum.at(parent, hi, lo)  # hook each root under the lowest root it touches
        while True:  # pointer jumping until every node points at its root
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp


# ============================================================================ the report


@dataclass
class DuplicateFile:
    """One image of a duplicate group.

    Attributes
    ----------
    path : pathlib.Path
        The file (dataset folder joined with ``relpath``).
    relpath : str
        Path relative to its dataset folder, ``/``-separated.
    row : int
        Its row in its index.
    collection : str
        ``"index"`` (the collection searched) or ``"against"`` (the other one).
    score : float
        Cosine similarity to the kept copy (1.0 for the kept copy itself).
    pixels : int
        Width x height (-1 if unreadable or missing).
    bytes : int
        File size (-1 if missing).
    mtime : float
        Modification time, seconds since the epoch (nan if missing).
    """

    path: Path
    relpath: str
    row: int
    collection: str
    score: float = 1.0
    pixels: int = -1
    bytes: int = -1
    mtime: float = float("nan")

    @property
    def exists(self) -> bool:
        """Whether the file was found when the report was made."""
        return self.bytes >= 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "path": str(self.path), "relpath": self.relpath, "row": self.row, "collection": self.collection,
            "score": round(float(self.score), 6), "pixels": self.pixels, "bytes": self.bytes,
            "mtime": None if math.isnan(self.mtime) else self.mtime,
        }


@dataclass
class DuplicateGroup:
    """A group of near-duplicate images.

    Attributes
    ----------
    files : list of DuplicateFile
        The kept copy first, then the others by decreasing score to it.
    pairs : list of (int, int, float)
        Pairwise cosine scores, as indices into ``files``: every pair for groups of up to
        :data:`PAIRWISE_MAX` files, else the graph's edges that joined the group.
    """

    files: list[DuplicateFile]
    pairs: list[tuple[int, int, float]] = field(default_factory=list)

    @property
    def keep(self) -> DuplicateFile:
        """The copy to keep."""
        return self.files[0]

    @property
    def duplicates(self) -> list[DuplicateFile]:
        """The copies not kept."""
        return self.files[1:]

    def __len__(self) -> int:
        return len(self.files)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "keep": self.keep.to_dict(),
            "duplicates": [f.to_dict() for f in self.duplicates],
            "pairs": [[i, j, round(float(s), 6)] for i, j, s in self.pairs],
        }


@dataclass
class DuplicateReport:
    """The near-duplicate groups of a collection (or across two).

    Attributes
    ----------
    groups : list of DuplicateGroup
        Largest groups first, then by the kept copy's path.
    threshold : float
    calibration : Calibration or None
        Where the default threshold came from (None if ``threshold`` was given).
    k : int
    keep_rule : str
    method : str
        ``"exact"`` or ``"approximate"``.
    n_images : int
        Vectors in the index searched.
    n_against : int
        Vectors in the ``against`` index (0 without one).
    index_dir, dataset_dir : pathlib.Path or None
        The index searched and its dataset folder.
    against_index_dir, against_dataset_dir : pathlib.Path or None
    seconds : float
    info : dict
        How the graph was computed (see :func:`duplicate_edges`).
    """

    groups: list[DuplicateGroup]
    threshold: float
    calibration: Calibration | None
    k: int
    keep_rule: str
    method: str
    n_images: int
    n_against: int = 0
    index_dir: Path | None = None
    dataset_dir: Path | None = None
    against_index_dir: Path | None = None
    against_dataset_dir: Path | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def duplicates(self) -> list[DuplicateFile]:
        """Every copy not kept (of both collections), group by group."""
        return [f for g in self.groups for f in g.duplicates]

    def movable(self) -> list[tuple[int, DuplicateFile]]:
        """(group number, file) of the copies :func:`move_duplicates` would move: not kept, in the
        collection searched (never the ``against`` one), present on disk."""
        return [
            (gi, f) for gi, g in enumerate(self.groups) for f in g.duplicates if f.collection == "index" and f.exists
        ]

    def summary(self) -> str:
        """One line: groups, copies that would be moved, bytes."""
        mv = self.movable()
        size = sum(f.bytes for _, f in mv)
        against = f" against {self.n_against}" if self.against_index_dir is not None else ""
        return (
            f"{len(self.groups)} group{'s' if len(self.groups) != 1 else ''}, {len(mv)} copies to move ({size / 2**20:.1f} MiB) among {self.n_images} "
            f"images{against} (threshold {self.threshold:.3f}, keep {self.keep_rule}, {self.method}, "
            f"{self.seconds:.1f} s)"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "threshold": self.threshold,
            "threshold_source": (
                None if self.calibration is None
                else {"model": self.calibration.model, "calibrated": self.calibration.calibrated,
                      "preprocessing": self.calibration.preprocessing, "note": self.calibration.note}
            ),
            "k": self.k,
            "keep": self.keep_rule,
            "method": self.method,
            "n_images": self.n_images,
            "n_against": self.n_against,
            "index": str(self.index_dir) if self.index_dir else None,
            "dataset_dir": str(self.dataset_dir) if self.dataset_dir else None,
            "against_index": str(self.against_index_dir) if self.against_index_dir else None,
            "against_dataset_dir": str(self.against_dataset_dir) if self.against_dataset_dir else None,
            "seconds": round(self.seconds, 3),
            "info": self.info,
            "groups": [g.to_dict() for g in self.groups],
        }

    def to_json(self, **kwargs: Any) -> str:
        """The report as JSON text (``json.dumps`` keyword arguments pass through)."""
        kwargs.setdefault("indent", 2)
        return to_json(self.to_dict(), **kwargs)

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write one line per file: group, role (keep/duplicate), collection, path, score, pixels,
        bytes, mtime."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["group", "role", "collection", "path", "relpath", "score_to_kept", "pixels", "bytes", "mtime"])
            for gi, g in enumerate(self.groups):
                for j, m in enumerate(g.files):
                    w.writerow([  # a report for people: names with control characters shown escaped
                        gi + 1, "keep" if j == 0 else "duplicate", m.collection, display_name(m.path), display_name(m.relpath),
                        f"{m.score:.6f}", m.pixels, m.bytes, "" if math.isnan(m.mtime) else f"{m.mtime:.3f}",
                    ])


def _stat(path: Path) -> tuple[int, int, float]:
    """(pixels, bytes, mtime) of a file; -1/-1/nan where missing, pixels -1 if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1, float("nan")
    from PIL import Image

    pixels = -1
    try:
        with Image.open(path) as im:  # reads the header only
            pixels = int(im.size[0]) * int(im.size[1])
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # unreadable: ranked last by "largest"
        logger.warning("cannot read the size of %s: %s", display_name(path), display_name(e))
    return pixels, int(st.st_size), float(st.st_mtime)


def _keep_key(rule: str) -> Any:
    if rule == "largest":
        return lambda f: (not f.exists, -f.pixels, -f.bytes, f.relpath, f.collection)
    if rule == "oldest":
        return lambda f: (not f.exists, f.mtime if f.exists else 0.0, f.relpath, f.collection)
    if rule == "newest":
        return lambda f: (not f.exists, -f.mtime if f.exists else 0.0, f.relpath, f.collection)
    return lambda f: (not f.exists, f.relpath, f.collection)


def _open_index(index_or_folder: Any) -> Index:
    from .index import Index

    return index_or_folder if isinstance(index_or_folder, Index) else Index.open(index_or_folder)


def _shards(index: Index) -> list[np.ndarray]:
    shards = getattr(index, "shards", None)  # the memory-mapped shards, if the index exposes them
    return list(shards) if shards is not None else [index.vectors]


def find_duplicates(
    index_or_folder: Index | str | os.PathLike,
    threshold: float | None = None,
    *,
    against: Index | str | os.PathLike | None = None,
    k: int = DEFAULT_K,
    keep: str = "largest",
    method: str = "auto",
    nprobe: int = DEFAULT_NPROBE,
    dataset_dir: str | os.PathLike | None = None,
    against_dataset_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> DuplicateReport:
    """Find the groups of near-duplicate images of an index (or across two indexes).

    Parameters
    ----------
    index_or_folder : Index or path
        An index, or its folder (the vector folder).
    threshold : float, optional
        Cosine similarity in [-1, 1] at or above which two images are duplicates. Default: the
        model's calibrated threshold (:func:`default_threshold`).
    against : Index or path, optional
        Another index made by the same model: only pairs with one image in each count. It is
        never modified.
    k : int, default DEFAULT_K
        Neighbours per image in the graph.
    keep : {"largest", "oldest", "newest", "first"}
        The copy to keep: most pixels (then largest file); oldest or newest modification time;
        first by path. Ties go to the first path.
    method : {"auto", "exact", "approximate"}
        See the module docstring; ``auto`` is exact up to :data:`EXACT_MAX_VECTORS` vectors.
    nprobe : int, default DEFAULT_NPROBE
        Cells compared per vector by the approximate method.
    dataset_dir, against_dataset_dir : path, optional
        Where the images are (default: as recorded in each index).
    progress : bool, default False

    Returns
    -------
    DuplicateReport

    Raises
    ------
    IndexNotFoundError
        If a folder holds no index.
    ModelMismatchError
        If ``against`` was made by another model.
    ValueError
        For a threshold outside [-1, 1], an unknown ``keep`` rule or ``method``, or ``k`` < 1.
    """
    t0 = time.perf_counter()
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)}, not {keep!r}")
    if threshold is not None:
        threshold = _check_threshold(threshold)
    index = _open_index(index_or_folder)
    other = _open_index(against) if against is not None else None
    if other is not None:
        index.check_compatible(other.spec)
    calibration = None
    if threshold is None:
        threshold, calibration = default_threshold(index.spec)
    base = Path(dataset_dir) if dataset_dir is not None else index.dataset_dir
    obase = None
    if other is not None:
        obase = Path(against_dataset_dir) if against_dataset_dir is not None else other.dataset_dir
    n = len(index)
    info: dict[str, Any] = {}
    src, dst, scores = duplicate_edges(
        _shards(index), threshold, against=_shards(other) if other is not None else None, k=k, method=method,
        nprobe=nprobe, progress=progress, info=info,
    )
    n_total = n + (len(other) if other is not None else 0)
    damaged = index.damaged_rows() if hasattr(index, "damaged_rows") else np.zeros(0, np.int64)
    if other is not None and hasattr(other, "damaged_rows"):
        damaged = np.concatenate([damaged, other.damaged_rows() + n])
    if damaged.size:  # a damaged vector (NaN, inf, wrong length) is nobody's duplicate
        logger.warning(
            "%d damaged vectors (NaN, infinite or not unit length) are left out of the duplicate search; index "
            "the dataset folder again to repair them", damaged.size,
        )
        good = ~(np.isin(src, damaged) | np.isin(dst, damaged))
        src, dst, scores = src[good], dst[good], scores[good]
    labels = connected_components(n_total, src, dst)
    linked = np.unique(np.concatenate([src, dst]))
    groups_rows: dict[int, list[int]] = {}
    for node in linked.tolist():
        groups_rows.setdefault(int(labels[node]), []).append(int(node))
    index_paths = index.paths if groups_rows else []
    other_paths = other.paths if (other is not None and groups_rows) else []
    # edges per group, for groups too big to list every pair
    edge_group = labels[src] if len(src) else np.zeros(0, np.int64)
    groups: list[DuplicateGroup] = []
    all_rows = _Rows(_shards(index) + (_shards(other) if other is not None else []))
    for label, nodes in groups_rows.items():
        files = []
        for node in nodes:
            if node < n:
                rel, folder, coll, row = index_paths[node], base, "index", node
            else:
                rel, folder, coll, row = other_paths[node - n], obase, "against", node - n
            path = (folder / rel) if folder is not None else Path(rel)
            files.append(DuplicateFile(path, rel, row, coll, 1.0, *_stat(path)))
        order = sorted(range(len(files)), key=lambda i: _keep_key(keep)(files[i]))
        kept = order[0]
        vec = all_rows.take(np.asarray(nodes))
        to_kept = vec @ vec[kept]
        rest = sorted((i for i in range(len(files)) if i != kept), key=lambda i: (-float(to_kept[i]), files[i].relpath))
        perm = [kept, *rest]
        for i in perm:
            files[i].score = float(to_kept[i])
        files = [files[i] for i in perm]
        nodes_sorted = [nodes[i] for i in perm]
        where = {node: i for i, node in enumerate(nodes_sorted)}
        if len(files) <= PAIRWISE_MAX:
            v = vec[perm]
            s = v @ v.T
            pairs = [(i, j, float(s[i, j])) for i in range(len(files)) for j in range(i + 1, len(files))]
        else:
            m = edge_group == label
            seen = set()
            pairs = []
            for u, w, sc in zip(src[m].tolist(), dst[m].tolist(), scores[m].tolist()):
                i, j = sorted((where[u], where[w]))
                if (i, j) not in seen:
                    seen.add((i, j))
                    pairs.append((i, j, float(sc)))
            pairs.sort()
        groups.append(DuplicateGroup(files, pairs))
    groups.sort(key=lambda g: (-len(g), str(g.keep.path)))
    report = DuplicateReport(
        groups=groups, threshold=float(threshold), calibration=calibration, k=k, keep_rule=keep,
        method=str(info.get("method", method)), n_images=n, n_against=len(other) if other is not None else 0,
        index_dir=index.folder, dataset_dir=base, against_index_dir=other.folder if other is not None else None,
        against_dataset_dir=obase, info=info,
    )
    report.seconds = time.perf_counter() - t0
    logger.info("duplicates in %s: %s", index.folder, report.summary())
    return report


# ============================================================================ acting on it


@dataclass
class MoveReport:
    """What :func:`move_duplicates` did.

    Attributes
    ----------
    moved : list of (pathlib.Path, pathlib.Path)
        (source, destination) of every file moved.
    skipped : list of (pathlib.Path, str)
        Files not moved, with the reason.
    log : pathlib.Path
        The CSV log (give it to :func:`undo_moves`).
    index_updated : bool
        Whether the index was brought up to date (the moved files' rows dropped).
    """

    moved: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    log: Path | None = None
    index_updated: bool = False

    def summary(self) -> str:
        """One line."""
        return (
            f"moved {len(self.moved)} files, skipped {len(self.skipped)}; log: {self.log}"
            + ("; index updated" if self.index_updated else "")
        )


@dataclass
class UndoReport:
    """What :func:`undo_moves` did.

    Attributes
    ----------
    restored : list of pathlib.Path
        Files put back where they were.
    skipped : list of (pathlib.Path, str)
        Files not put back, with the reason.
    index_updated : bool
    """

    restored: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    index_updated: bool = False

    def summary(self) -> str:
        """One line."""
        return f"restored {len(self.restored)} files, skipped {len(self.skipped)}" + (
            "; index updated" if self.index_updated else ""
        )


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _free_name(path: Path) -> Path:
    """``path``, or ``name (2).ext``... if it exists: a move never replaces a file."""
    if not path.exists():
        return path
    for i in range(2, 100000):
        cand = path.with_name(f"{path.stem} ({i}){path.suffix}")
        if not cand.exists():
            return cand
    raise RevsearchError(f"too many files named like {str(path)!r}")


def _move_file(src: Path, dst: Path, digest: str) -> None:
    """Move src to dst (which does not exist): a rename, or across file systems a verified copy
    (kept metadata, fsynced) renamed into place before the source is removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        raise RevsearchError(f"{str(dst)!r} appeared while moving: not replaced")
    try:
        os.link(src, dst)  # same file system: atomic, and never replaces an existing file
    except OSError:
        tmp = dst.with_name(f".{dst.name}.revsearch-tmp")
        shutil.copy2(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if _digest(tmp) != digest:
            tmp.unlink()
            raise RevsearchError(f"the copy of {str(src)!r} differs from the original: not moved") from None
        os.replace(tmp, dst)
    os.unlink(src)  # the file now lives at dst (a hard link or a verified copy)


def _fsync(f: Any) -> None:
    f.flush()
    with contextlib.suppress(OSError):
        os.fsync(f.fileno())


def check_destination(
    destination: str | os.PathLike, *folders: str | os.PathLike | None
) -> Path:
    """Refuse a move destination inside any of ``folders`` (dataset and index folders).

    Parameters
    ----------
    destination : path
    *folders : path or None
        Folders the destination must not lie in (None entries are ignored).

    Returns
    -------
    pathlib.Path
        The destination, resolved.

    Raises
    ------
    RevsearchError
        If it lies inside one of them.
    """
    dest = Path(destination).resolve()
    for folder in folders:
        if folder is not None and _inside(dest, Path(folder).resolve()):
            raise RevsearchError(
                f"the destination {str(dest)!r} lies inside the dataset or index folder {str(Path(folder).resolve())!r}: "
                "choose a folder outside it (moved files would be indexed again)"
            )
    return dest


def move_duplicates(
    report: DuplicateReport,
    destination: str | os.PathLike,
    *,
    log: str | os.PathLike | None = None,
    update_index: bool = True,
    progress: bool = False,
) -> MoveReport:
    """Move the copies not kept into ``destination``, keeping their paths relative to the dataset.

    Only files of the collection searched move (never those of an ``against`` index); a file
    whose destination exists gets a new name (``name (2).jpg``), so nothing is ever replaced,
    and nothing is ever deleted. Each move is written to the CSV log (and flushed to disk)
    before it is made, so :func:`undo_moves` can put back everything, even after a crash.

    Parameters
    ----------
    report : DuplicateReport
        From :func:`find_duplicates`.
    destination : path
        A folder outside the dataset folder and the index folder (created if needed).
    log : path, optional
        The CSV log to write (default ``destination/revsearch-moves-<UTC time>.csv``).
    update_index : bool, default True
        Bring the index up to date afterwards (the moved files' rows are dropped; nothing is
        embedded unless other files of the folder changed).
    progress : bool, default False

    Returns
    -------
    MoveReport

    Raises
    ------
    RevsearchError
        If the destination lies inside the dataset folder or the index folder, or the report does
        not know its dataset folder.
    """
    from tqdm.auto import tqdm

    if report.dataset_dir is None:
        raise RevsearchError("the report does not know the dataset folder: pass dataset_dir to find_duplicates")
    dest = check_destination(destination, report.dataset_dir, report.index_dir, report.against_dataset_dir)
    dataset = Path(report.dataset_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    log_path = Path(log) if log is not None else dest / f"revsearch-moves-{stamp}.csv"
    out = MoveReport(log=log_path)
    todo = report.movable()
    new_log = not log_path.exists()
    with open(log_path, "a", newline="", encoding="utf-8") as lf:
        w = csv.writer(lf)
        if new_log:
            w.writerow(LOG_COLUMNS)
            _fsync(lf)
        for gi, f in tqdm(todo, desc="moving", unit="file", disable=not progress):
            src = Path(f.path).resolve()
            if not _inside(src, dataset):
                out.skipped.append((src, "not inside the dataset folder"))
                continue
            try:
                st = os.stat(src)
                digest = _digest(src)
            except OSError as e:
                out.skipped.append((src, f"cannot read it: {e}"))
                continue
            target = _free_name(dest / src.relative_to(dataset))
            w.writerow([
                str(src), str(target), st.st_size, digest, st.st_mtime_ns, gi + 1,
                str(report.groups[gi].keep.path), f"{f.score:.6f}", str(report.index_dir or ""), str(dataset),
            ])
            _fsync(lf)  # logged before it happens: an interrupted run can still be undone
            try:
                _move_file(src, target, digest)
            except (OSError, RevsearchError) as e:
                out.skipped.append((src, str(e)))
                continue
            out.moved.append((src, target))
    logger.info("moved %d duplicates to %s (log %s)", len(out.moved), dest, log_path)
    if update_index and out.moved and report.index_dir is not None:
        out.index_updated = _update_index(report.index_dir, dataset)
    return out


def _update_index(index_dir: Path | str, dataset: Path) -> bool:
    from .index import Index

    try:
        Index.open(index_dir).update(dataset, progress=False)
        return True
    except RevsearchError as e:
        logger.warning("the index in %s was not updated (%s): run `revsearch index %s %s`", index_dir, e, dataset, index_dir)
        return False


def undo_moves(log: str | os.PathLike, *, update_index: bool = True) -> UndoReport:
    """Put back every file a :func:`move_duplicates` log records, byte for byte.

    A file is put back only if it is still at its destination with the content it was moved with
    (its hash is checked) and nothing has taken its old place; the others are reported, never
    overwritten. Moves are undone last first.

    Parameters
    ----------
    log : path
        The CSV log written by :func:`move_duplicates`.
    update_index : bool, default True
        Bring each index named in the log up to date (the restored files are embedded again).

    Returns
    -------
    UndoReport

    Raises
    ------
    RevsearchError
        If the log is missing or not a move log.
    """
    path = Path(log)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise RevsearchError(f"no move log at {str(path)!r}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise RevsearchError(f"{str(path)!r} is not a revsearch move log ({e})") from None
    if rows and not set(LOG_COLUMNS) <= set(rows[0]):
        raise RevsearchError(f"{str(path)!r} is not a revsearch move log (columns {', '.join(LOG_COLUMNS)} expected)")
    out = UndoReport()
    indexes: dict[str, str] = {}
    for row in reversed(rows):
        if any(not row.get(c) for c in ("source", "destination", "blake2b")):  # a line cut short by a crash
            out.skipped.append((Path(row.get("source") or "?"), "incomplete log line (the move was interrupted)"))
            continue
        src, dst = Path(row["source"]), Path(row["destination"])
        if src.exists():
            out.skipped.append((src, "a file is at its old place (it was not moved, or was put back)"))
            continue
        if not dst.exists():
            out.skipped.append((src, f"not found at {str(dst)!r}"))
            continue
        if _digest(dst) != row["blake2b"]:
            out.skipped.append((src, f"{str(dst)!r} changed since it was moved: left there"))
            continue
        try:
            _move_file(dst, src, row["blake2b"])
        except (OSError, RevsearchError) as e:
            out.skipped.append((src, str(e)))
            continue
        with contextlib.suppress(OSError, ValueError):
            os.utime(src, ns=(int(row["mtime_ns"]), int(row["mtime_ns"])))
        out.restored.append(src)
        if row.get("index"):
            indexes[row["index"]] = row["dataset_dir"]
    if update_index:
        ok = [_update_index(i, Path(d)) for i, d in indexes.items()]
        out.index_updated = bool(ok) and all(ok)
    return out


# ============================================================================ pictures


def _thumbnail(path: Path, size: int) -> Any:
    from PIL import Image

    from .images import load_image

    img = load_image(path, draft_size=size)
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    return img


def plot_duplicates(
    report: DuplicateReport,
    *,
    groups_per_page: int = 8,
    max_per_group: int = 6,
    cell_size: float = 2.0,
    thumbnail: int = 256,
) -> list[Figure]:
    """Draw the groups: one row per group, the kept copy first, scores to it in the titles.

    Parameters
    ----------
    report : DuplicateReport
    groups_per_page : int, default 8
        Rows per figure; more groups give more figures (pages).
    max_per_group : int, default 6
        Images shown per group (the last cell says how many more there are).
    cell_size : float, default 2.0
        Inches per image.
    thumbnail : int, default 256
        Pixels of the longer side the images are reduced to.

    Returns
    -------
    list of matplotlib.figure.Figure
        One per page (empty if there are no groups), made without pyplot: display or save them.
    """
    from matplotlib.figure import Figure

    from .errors import ImageReadError

    if groups_per_page < 1 or max_per_group < 2:
        raise ValueError("groups_per_page must be at least 1 and max_per_group at least 2")
    figures = []
    groups = report.groups
    ncols = min(max_per_group, max((len(g) for g in groups), default=2))
    for p0 in range(0, len(groups), groups_per_page):
        page = groups[p0 : p0 + groups_per_page]
        fig = Figure(figsize=(ncols * cell_size, len(page) * cell_size * 1.15), layout="constrained")
        grid = fig.add_gridspec(len(page), ncols)
        for r, g in enumerate(page):
            shown = g.files if len(g) <= ncols else g.files[: ncols - 1]
            for c, f in enumerate(shown):
                ax = fig.add_subplot(grid[r, c])
                ax.set_axis_off()
                name = display_name(Path(f.relpath).name)  # control characters shown escaped
                name = name if len(name) <= 22 else name[:9] + "…" + name[-12:]
                head = f"#{p0 + r + 1} keep" if c == 0 else f"{f.score:.3f}"
                tag = " (against)" if f.collection == "against" else ""
                ax.set_title(f"{head}{tag}\n{name}", fontsize=7, fontweight="bold" if c == 0 else "normal")
                try:
                    ax.imshow(_thumbnail(f.path, thumbnail))
                except ImageReadError as e:
                    logger.warning("cannot show %s: %s", display_name(f.path), display_name(e))
                    ax.text(0.5, 0.5, "missing" if not f.exists else "unreadable", ha="center", va="center",
                            fontsize=8, transform=ax.transAxes)
            if len(g) > len(shown):
                ax = fig.add_subplot(grid[r, ncols - 1])
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"+{len(g) - len(shown)} more", ha="center", va="center", fontsize=10,
                        transform=ax.transAxes)
        figures.append(fig)
    return figures
