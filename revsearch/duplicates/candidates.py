"""Stage one: the candidate pairs, from the vectors an index holds.

For every image, its ``k`` most similar images whose cosine is at least ``threshold`` (ties broken
by row number) are its candidate neighbours.

``"exact"`` (the default up to :data:`EXACT_MAX_VECTORS` vectors)
    Every pair is scored, block by block (``BLOCK_ROWS`` x ``BLOCK_ROWS`` float32 scores at a
    time, each pair once), straight from the memory-mapped shards: memory stays bounded and the
    edges equal a brute-force computation.
``"approximate"`` (above it)
    :func:`revsearch.retrieval.ann.knn_join`, an inverted file as approximate search indexes
    have: FAISS spherical k-means on a sample splits the vectors into ~n/1024 cells
    (:func:`revsearch.retrieval.ann.plan_join`); each vector lies in its nearest cell and is
    compared with every vector of its ``nprobe`` nearest cells. Candidate pairs are scored
    exactly (float32 dot products of the full vectors read from the shards, a cell at a time),
    so a reported score is never an estimate; a pair is missed only if neither image's
    ``nprobe`` nearest cells hold the other. Damaged (non-finite or too long) vectors get no
    cell and never pair. Memory: the cell assignment (n x nprobe) and one cell's vectors at a
    time. Deterministic for a ``seed``. FAISS is the ``ann`` extra (also in ``duplicates``):
    without it ``"auto"`` scores every pair exactly, with a logged warning naming
    ``pip install revsearch[ann]``, and ``"approximate"`` raises
    :class:`~revsearch.core.errors.OptionalDependencyError`.
``"ann"``
    The index's own approximate index (:mod:`revsearch.retrieval.ann`, built with ``revsearch ann``):
    each vector's ``k`` nearest rows, re-scored exactly.

The default threshold depends on the model: see :data:`CALIBRATIONS` and
:func:`default_threshold`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..retrieval.ann import Rows, ann_topk, best_in_block, knn_join, plan_join

logger = logging.getLogger(__name__)

#: Neighbours per image considered (the graph's out-degree bound; memory is n x k edges at most).
DEFAULT_K = 16
#: Up to this many vectors (both collections together) every pair is scored exactly. Exact work
#: grows as n^2: 50,000 2048-d vectors took 198 s exact against 34 s approximate (same planted pairs
#: found) on a shared 2-core EPYC (benchmarks/duplicates.py scale), so the approximate method takes over early.
EXACT_MAX_VECTORS = 30_000
#: Rows per block of the exact computation: a (BLOCK_ROWS, BLOCK_ROWS) float32 score block is 64 MiB.
BLOCK_ROWS = 4096
#: Cells each vector is compared with by the approximate method (:data:`revsearch.retrieval.ann.JOIN_NPROBE`).
DEFAULT_NPROBE = 3
#: Groups up to this size list every pairwise score; larger ones list the graph's edges only.
PAIRWISE_MAX = 64
#: Highest score of a pair of sound (unit-length) vectors, with float32 rounding; above it (or NaN) a vector
#: is damaged and the pair is not a duplicate.
MAX_SCORE = 1.01

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
    shortlist : float or None
        Mode ``copies``: the cosine floor of the shortlist, low enough to keep >= 99.5% of the
        edited copies of the calibration sets (None: not measured; the shortlist is by rank).
    """

    model: str
    threshold: float
    preprocessing: str | None
    calibrated: bool
    note: str
    shortlist: float | None = None


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
        "object score high); the default is the higher (the earlier crop + GeM pipeline gave 0.910 and 0.950). "
        "Mode copies: benchmarks/duplicates.py copies (2026-12-05) - 99.5% of the edited-copy pairs (turns and "
        "mirrors excluded: the thumbnails' shortlist reaches them) score >= 0.521; the shortlist floor is 0.50",
        shortlist=0.50,
    ),
}
#: Models without a calibration get the highest calibrated threshold (fewer, surer groups).
_UNCALIBRATED_NOTE = (
    "not calibrated for this model (no real weights measured here): the highest calibrated threshold "
    "of any model is used; check a few groups, or pass threshold="
)


def shortlist_floor(spec: dict[str, Any]) -> tuple[float | None, Calibration]:
    """The cosine floor of the copies shortlist for vectors made as ``spec`` says.

    Parameters
    ----------
    spec : dict
        An index's spec.

    Returns
    -------
    floor : float or None
        None for a model (or pipeline) without a calibration: the shortlist is then each
        image's nearest neighbours by rank, and only verified pairs are reported.
    calibration : Calibration
    """
    model = str(spec.get("model", ""))
    cal = CALIBRATIONS.get(model)
    if cal is None or cal.shortlist is None or (
        cal.preprocessing is not None and spec.get("preprocessing") not in (None, cal.preprocessing)
    ):
        note = "no calibration for this model or pipeline: the shortlist is by rank (nearest neighbours), and only "
        note += "verified pairs are reported"
        logger.info("copies of %r: %s", model, note)
        return None, Calibration(model, float("nan"), None, False, note, None)
    return cal.shortlist, cal


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


def shards_of(vectors: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(vectors, np.ndarray):
        return [vectors] if vectors.ndim == 2 else [np.atleast_2d(vectors)]
    return list(vectors)


class TopK:
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


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (-1.0 <= t <= 1.0):  # also refuses NaN
        raise ValueError(f"threshold must lie in [-1, 1] (a cosine similarity), not {threshold!r}")
    return t


def _exact_edges(a: Rows, b: Rows | None, threshold: float, top: TopK, block: int, bar: Any) -> None:
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
                s[~(s <= MAX_SCORE)] = -np.inf  # NaN, inf: a damaged vector
            if b is None and j0 < i0 + len(xi):  # upper triangle only, no self pairs
                gi_ = np.arange(i0, i0 + len(xi))[:, None]
                gj_ = np.arange(j0, j0 + s.shape[1])[None, :]
                s[gj_ <= gi_] = -np.inf
            # only entries that can be among a row's or column's k best: a low threshold would pass
            # every pair on to the top-k merge
            row_keep, col_keep = best_in_block(s, threshold, top.k)
            for keep_, forward in ((row_keep, True), (col_keep, False)):
                hits = np.flatnonzero(keep_)
                if not hits.size:
                    continue
                r, c = np.divmod(hits, s.shape[1])
                sc = s.ravel()[hits]
                gi, gj = r + i0, c + j0 + (nA if b is not None else 0)
                if forward:
                    top.add(gi, gj, sc)
                else:
                    top.add(gj, gi, sc)
            del s
        bar.update(len(xi))


def default_nlist(n: int) -> int:
    """Cells of the approximate method for n vectors: a power of 2 near n / 1024 (16..16384), as
    :func:`revsearch.retrieval.ann.plan_join` plans them."""

    return plan_join(max(1, int(n)))["nlist"]


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
        ``auto``: exact up to :data:`EXACT_MAX_VECTORS` vectors in all, approximate above it when
        FAISS is installed (without it: exact, with a logged warning). ``approximate`` without
        FAISS raises :class:`~revsearch.core.errors.OptionalDependencyError`.
    nprobe : int, default DEFAULT_NPROBE
        Cells each vector is compared with (approximate method).
    nlist : int, optional
        IVF cells in all (approximate method; default :func:`default_nlist`).
    seed : int, default 0
        Seeds the approximate method's k-means sample and its (FAISS) k-means: same seed, same edges.
    block_rows : int, default BLOCK_ROWS
        Rows per block of the exact method (query rows per cell block of the approximate one).
    progress : bool, default False
        Show ``tqdm.auto`` progress bars.
    info : dict, optional
        Filled with how the graph was computed (``method``, and the approximate method's
        ``nlist``, ``nprobe``, ``pairs_scored``, ``damaged`` (vectors skipped)...).

    Returns
    -------
    src, dst : numpy.ndarray
        Shape (e,) int64: directed edges, ``dst`` among the ``k`` best neighbours of ``src``,
        sorted by ``src``, then best score first.
    scores : numpy.ndarray
        Shape (e,) float32, the exact cosine of each edge.
    """
    from tqdm.auto import tqdm

    t = check_threshold(threshold)
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"method must be 'auto', 'exact' or 'approximate', not {method!r}")
    a = Rows(shards_of(vectors))
    b = Rows(shards_of(against)) if against is not None else None
    if b is not None and a.n and b.n and a.dim != b.dim:
        raise ValueError(f"the two sets hold vectors of dimension {a.dim} and {b.dim}: they cannot be compared")
    n_total = a.n + (b.n if b is not None else 0)
    details: dict[str, Any] = {"vectors": n_total}
    if method == "auto":
        method = "exact" if n_total <= EXACT_MAX_VECTORS else "approximate"
        if method == "approximate" and importlib.util.find_spec("faiss") is None:
            method = "exact"
            details["fallback"] = "FAISS is not installed"
            logger.warning(
                "%d vectors: without FAISS every pair is scored exactly, which grows as n^2 (50,000 vectors: "
                "minutes; 1,000,000: days). For the approximate method: pip install revsearch[ann]", n_total,
            )
    details["method"] = method
    top = TopK(k, max(1, n_total))
    t0 = time.perf_counter()
    if method == "exact":
        with tqdm(total=a.n, desc="duplicates", unit="vec", disable=not progress) as bar:
            if a.n and (b is None or b.n):
                _exact_edges(a, b, t, top, int(block_rows), bar)
    elif a.n and (b is None or b.n):

        found: dict[str, Any] = {}
        for src, dst, sc in knn_join(
            a.shards, k, against=b.shards if b is not None else None, threshold=t, nprobe=nprobe, nlist=nlist,
            seed=seed, max_score=MAX_SCORE, block_rows=int(block_rows), progress=progress, info=found,
        ):
            top.add(src, dst, sc)
        details.update({key: found[key] for key in ("nlist", "nprobe", "train_size", "pairs_scored", "damaged",
                                                    "train_seconds", "assign_seconds") if key in found})
    details["seconds"] = round(time.perf_counter() - t0, 3)
    if info is not None:
        info.update(details)
    return top.result()


# ============================================================================ the copies shortlist

#: Neighbours per image the copies shortlist takes from the vectors (before verification).
SHORTLIST_K = 10
#: Side of the turn/mirror descriptor grid (a SIDE x SIDE greyscale image, zero-mean, unit length).
TURN_SIDE = 16
#: Neighbours per turned or mirrored view of an image (the turn/mirror shortlist).
TURN_K = 3
#: Cosine of the turn/mirror descriptors from which a pair is a candidate.
TURN_FLOOR = 0.75
#: Up to this many images the turn/mirror shortlist is exact; above it FAISS (IVF) when installed.
TURN_EXACT_MAX = 60_000


def turn_descriptors(thumbs: Sequence[np.ndarray | None]) -> np.ndarray:
    """The turn/mirror descriptor of each thumbnail.

    The thumbnail is squeezed to a TURN_SIDE x TURN_SIDE grey grid (so turning the grid is
    turning the photo: :func:`turned_views`), blurred, made zero-mean and unit-length.

    Parameters
    ----------
    thumbs : sequence of numpy.ndarray or None
        (h, w) uint8 thumbnails (None: unknown, a zero descriptor).

    Returns
    -------
    numpy.ndarray
        Shape (n, TURN_SIDE**2) float32.
    """
    from .verify import require_cv2

    cv2 = require_cv2()
    n, s = len(thumbs), TURN_SIDE
    grids = np.zeros((n, s, s), np.float32)
    for i, t in enumerate(thumbs):
        if t is None or t.size == 0:
            continue
        g = cv2.resize(np.asarray(t, np.float32), (s, s), interpolation=cv2.INTER_AREA)
        g = cv2.GaussianBlur(g, (3, 3), 0.6)
        g -= g.mean()
        norm = float(np.linalg.norm(g))
        grids[i] = g / norm if norm > 1e-3 else 0.0
    return grids.reshape(n, -1)


def turned_views(base: np.ndarray) -> np.ndarray:
    """Descriptors (b, d) of images turned by 90, 180, 270 degrees and mirrored: shape (b, 4, d)."""
    s = TURN_SIDE
    grids = np.asarray(base, np.float32).reshape(-1, s, s)
    views = [np.rot90(grids, 1, axes=(1, 2)), np.rot90(grids, 2, axes=(1, 2)), np.rot90(grids, 3, axes=(1, 2)),
             grids[:, :, ::-1]]
    return np.ascontiguousarray(np.stack(views, axis=1).reshape(len(grids), 4, -1))


#: Images per block of turned queries (4 views each).
TURN_BLOCK = 4096


def turn_pairs(
    base: np.ndarray, *, k: int = TURN_K, floor: float = TURN_FLOOR, n_first: int | None = None,
) -> np.ndarray:
    """Candidate pairs (i, j) where a turned or mirrored view of i looks like j.

    Parameters
    ----------
    base : numpy.ndarray
        Shape (n, d) from :func:`turn_descriptors` (float16 or float32). The turned views are
        made block by block (memory: the descriptors, and FAISS's copy of them above
        :data:`TURN_EXACT_MAX` images).
    k : int
        Neighbours per turned view.
    floor : float
        Smallest descriptor cosine of a candidate.
    n_first : int, optional
        Only pairs across rows < n_first and rows >= n_first (two collections).

    Returns
    -------
    numpy.ndarray
        Shape (p, 2) int64, i < j, each pair once.
    """
    n = len(base)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    kk = min(k + 1, n)
    search = _turn_search_exact(base, kk) if n <= TURN_EXACT_MAX else _turn_search_faiss(base, kk)
    found = []
    for s0 in range(0, n, TURN_BLOCK):
        q = turned_views(base[s0 : s0 + TURN_BLOCK]).reshape(-1, base.shape[1])
        sc, idx = search(q)
        src = np.repeat(np.arange(s0, s0 + len(q) // 4), 4 * kk)
        dst, sc = idx.ravel().astype(np.int64), sc.ravel()
        m = (sc >= floor) & (src != dst) & (dst >= 0)
        if n_first is not None:
            m &= (src < n_first) != (dst < n_first)
        if m.any():
            p = np.sort(np.stack([src[m], dst[m]], axis=1), axis=1)
            found.append(np.unique(p, axis=0))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0).astype(np.int64)


def _turn_search_exact(base: np.ndarray, kk: int) -> Any:
    bt = np.ascontiguousarray(np.asarray(base, np.float32).T)

    def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = q @ bt
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        return np.take_along_axis(s, part, axis=1), part

    return search


def _turn_search_faiss(base: np.ndarray, kk: int) -> Any:
    """Approximate k-NN of turned views with a FAISS inverted file (inner product); exact without FAISS."""
    try:
        import faiss
    except ImportError:
        logger.warning(
            "%d images: the turn/mirror shortlist is exact (slow) without FAISS: pip install revsearch[ann]", len(base)
        )
        return _turn_search_exact(base, kk)
    n, d = base.shape
    nlist = int(min(4096, max(64, 2 ** round(math.log2(math.sqrt(n))))))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    ivf.train(np.asarray(base[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))], np.float32))
    for s0 in range(0, n, 65536):
        ivf.add(np.ascontiguousarray(base[s0 : s0 + 65536], np.float32))
    ivf.nprobe = 16

    def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = ivf.search(np.ascontiguousarray(q, np.float32), kk)
        return dist, idx

    return search


def knn_pairs(
    index: Any, k: int, floor: float | None, *, against: Any = None, method: str = "auto", nprobe: int = DEFAULT_NPROBE,
    progress: bool = False, info: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The vectors' shortlist: each image's ``k`` nearest images (cosine >= ``floor`` if given).

    Uses the index's approximate (FAISS) index when it has one (:func:`revsearch.retrieval.ann.ann_topk`,
    candidates re-scored exactly), else :func:`duplicate_edges` (exact, or a temporary FAISS index:
    :func:`revsearch.retrieval.ann.knn_join`).

    Returns
    -------
    pairs : numpy.ndarray
        Shape (p, 2) int64, i < j (rows of ``against`` numbered on after the index's), each once.
    scores : numpy.ndarray
        Shape (p,) float32 cosine.
    """
    floor_ = -1.0 if floor is None else float(floor)
    ann_meta = (index.manifest.ann or {}) if against is None else {}
    if ann_meta.get("file") and ann_meta.get("kind") not in (None, "flat") and method in ("auto", "ann"):

        n = len(index)
        src_l, dst_l, sc_l = [], [], []
        shards = index.shards
        start = 0
        for sh in shards:
            for s0 in range(0, len(sh), 4096):
                q = np.asarray(sh[s0 : s0 + 4096], np.float32)
                sc, rows = ann_topk(index, q, min(k + 1, n))
                src = np.repeat(np.arange(start + s0, start + s0 + len(q)), rows.shape[1])
                src_l.append(src)
                dst_l.append(rows.ravel())
                sc_l.append(sc.ravel())
            start += len(sh)
        src, dst, sc = np.concatenate(src_l), np.concatenate(dst_l), np.concatenate(sc_l)
        m = (src != dst) & (dst >= 0) & (sc >= floor_)
        src, dst, sc = src[m], dst[m], sc[m]
        if info is not None:
            info.update({"method": "ann", "ann_kind": ann_meta.get("kind")})
    else:
        shards = list(index.shards)
        other = list(against.shards) if against is not None else None
        src, dst, sc = duplicate_edges(
            shards, floor_, against=other, k=k, method=method if method != "ann" else "auto", nprobe=nprobe,
            progress=progress, info=info,
        )
    pairs = np.sort(np.stack([src, dst], axis=1), axis=1) if len(src) else np.zeros((0, 2), np.int64)
    if not len(pairs):
        return pairs.astype(np.int64), np.zeros(0, np.float32)
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    return pairs.astype(np.int64), np.asarray(sc, np.float32)[first]
