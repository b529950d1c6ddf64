"""Search-side retrieval tricks: query expansion, database-side augmentation, rotated queries.

All three work on an index's vectors as they are; nothing is re-embedded or rewritten:

* **alpha query expansion** (:func:`expand_queries`, ``qe`` neighbours, ``alpha``): a query is searched,
  then replaced by the L2-normalised sum of itself and its ``qe`` best matches, each weighted by its
  cosine to the power ``alpha`` (``alpha=0``: average query expansion), and searched again;
* **database-side augmentation** (:class:`DatabaseAugmentation`, ``k``, ``alpha``): every indexed vector
  is replaced the same way by the weighted sum of itself and its ``k`` nearest indexed neighbours,
  computed from the index (an exact k-NN of the collection: O(n^2 d), seconds per 10,000 vectors);
* **rotated queries** (:func:`search_rotated`): the query is also embedded rotated by 90, 180 and 270
  degrees and each indexed image keeps its best score, for collections with photos stored sideways.

Radenovic, Tolias, Chum: "Fine-tuning CNN image retrieval with no human annotation" (alpha-QE and
alpha-DBA, 2018); Arandjelovic, Zisserman: "Three things everyone should know..." (database-side
augmentation, 2012). Measured effects and costs: docs/quality.md (``benchmarks/quality.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .embedding import l2_normalize
from .safety import damaged_rows
from .search import topk_cosine

if TYPE_CHECKING:  # pragma: no cover
    from .embedding import Embedder
    from .search import Match
    from .images import ImageSource
    from .index import Index

logger = logging.getLogger(__name__)

__all__ = [
    "AugmentationUpdate",
    "AugmentedVectors",
    "DEFAULT_EXPANSION",
    "Expansion",
    "NO_EXPANSION",
    "augmented_blocks",
    "augmented_rows",
    "neighbours_of",
    "recorded_expansion",
    "resolve_expansion",
    "update_augmentation",
    "DatabaseAugmentation",
    "ROTATIONS",
    "expand_queries",
    "leave_one_out_scores",
    "rotated_copies",
    "search_expanded",
    "search_images",
    "search_options",
    "search_rotated",
]

#: Quarter turns of the rotation option: 0, 90, 180, 270 degrees anticlockwise.
ROTATIONS = (0, 1, 2, 3)


def _check(qe: int, alpha: float, what: str = "qe") -> None:
    if isinstance(qe, bool) or not isinstance(qe, (int, np.integer)) or qe < 0:
        raise ValueError(f"{what} must be a whole number of neighbours >= 0 (0: off); got {qe!r}")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0 (0: plain average); got {alpha!r}")


def _weights(scores: np.ndarray, alpha: float) -> np.ndarray:
    """Neighbour weights: cosine ** alpha, negative cosines count 0, unfilled (-inf) places count 0."""
    s = np.where(np.isfinite(scores), np.maximum(scores, 0.0), 0.0).astype(np.float32)
    w = np.power(s, np.float32(alpha)) if alpha != 0 else (np.isfinite(scores)).astype(np.float32)
    return w.astype(np.float32)


def expand_queries(queries: np.ndarray, scores: np.ndarray, neighbours: np.ndarray, alpha: float = 3.0) -> np.ndarray:
    """Alpha query expansion of query vectors from their best matches.

    Parameters
    ----------
    queries : numpy.ndarray
        Shape (b, d), L2-normalised.
    scores : numpy.ndarray
        Shape (b, K): each query's cosine to its K best matches (``-inf`` for a missing match).
    neighbours : numpy.ndarray
        Shape (b, K, d): the vectors of those matches.
    alpha : float, default 3.0
        Weight of a match = cosine ** alpha (0: every match weighs 1, average query expansion).

    Returns
    -------
    numpy.ndarray
        Shape (b, d) float32: L2-normalised ``query + sum(weight_i * neighbour_i)``.
    """
    q = np.asarray(queries, np.float32)
    w = _weights(np.asarray(scores), alpha)
    return l2_normalize(q + np.einsum("bk,bkd->bd", w, np.asarray(neighbours, np.float32)))


def _gather(shards: Sequence[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Vectors of global row numbers over shards; shape rows.shape + (d,)."""
    rows = np.asarray(rows, np.int64)
    offsets = np.cumsum([0] + [len(s) for s in shards])
    d = shards[0].shape[1]
    out = np.zeros(rows.shape + (d,), np.float32)
    flat, dest = rows.ravel(), out.reshape(-1, d)
    which = np.searchsorted(offsets, flat, side="right") - 1
    for i, shard in enumerate(shards):
        m = (which == i) & (flat >= 0)
        if m.any():
            dest[m] = np.asarray(shard[flat[m] - offsets[i]])
    return out


@dataclass
class DatabaseAugmentation:
    """Database-side augmentation of a collection's vectors.

    Each vector ``x_j`` becomes ``l2(x_j + sum_i cos(x_j, x_i) ** alpha * x_i)`` over its ``k`` nearest
    other vectors ``x_i``. Build it with :meth:`compute`.

    Attributes
    ----------
    k : int
    alpha : float
    neighbours : numpy.ndarray
        Shape (n, k) int64, each row's k nearest other rows (-1 where there are fewer).
    weights : numpy.ndarray
        Shape (n, k) float32, their weights (0 for -1).
    sums : numpy.ndarray
        Shape (n, d) float32, the unnormalised weighted sums.
    vectors : numpy.ndarray
        Shape (n, d) float32, the augmented, L2-normalised vectors (search these).
    next_neighbour, next_weight : numpy.ndarray
        Shape (n,): each row's (k+1)-th nearest other row (-1 if none) and its weight, which takes the
        place of a neighbour left out (:func:`leave_one_out_scores`).
    """

    k: int
    alpha: float
    neighbours: np.ndarray
    weights: np.ndarray
    sums: np.ndarray
    vectors: np.ndarray
    next_neighbour: np.ndarray
    next_weight: np.ndarray

    @classmethod
    def compute(
        cls, vectors: np.ndarray | Sequence[np.ndarray], k: int = 2, alpha: float = 3.0, *, block: int = 256
    ) -> DatabaseAugmentation:
        """Augment a collection from its own exact k-nearest neighbours.

        Parameters
        ----------
        vectors : numpy.ndarray or sequence of numpy.ndarray
            Shape (n, d), or shards (n_i, d) whose rows run on (``Index.shards``); L2-normalised.
        k : int, default 2
            Neighbours added to each vector (at least 1).
        alpha : float, default 3.0
        block : int, default 256
            Vectors searched per matrix product.

        Returns
        -------
        DatabaseAugmentation
        """
        _check(k, alpha, "k")
        if k < 1:
            raise ValueError("database-side augmentation needs k >= 1 neighbours")
        shards = [vectors] if isinstance(vectors, np.ndarray) else list(vectors)
        x = np.concatenate([np.asarray(s, np.float32) for s in shards]) if len(shards) != 1 else np.asarray(shards[0], np.float32)
        bad = damaged_rows(x)  # (n,) bool
        if bad.any():  # a damaged row (NaN, inf: a bad copy of the file) neighbours nobody and is searched by nobody
            x = x.copy()
            x[bad] = 0.0
            shards = [x]
        n = len(x)
        nb = np.full((n, k + 1), -1, np.int64)
        sc = np.full((n, k + 1), -np.inf, np.float32)
        for start in range(0, n, block):
            rows = np.arange(start, min(n, start + block))
            s, r = topk_cosine(shards, x[rows], min(n, k + 2))
            keep = r != rows[:, None]  # drop each row itself, wherever it ranks
            for j in range(len(rows)):
                rr, ss = r[j][keep[j]][: k + 1], s[j][keep[j]][: k + 1]
                nb[rows[j], : len(rr)], sc[rows[j], : len(ss)] = rr, ss
        w = np.where(nb >= 0, _weights(sc, alpha), 0.0).astype(np.float32)
        sums = x + np.einsum("nk,nkd->nd", w[:, :k], x[np.maximum(nb[:, :k], 0)])
        return cls(int(k), float(alpha), nb[:, :k].copy(), w[:, :k].copy(), sums.astype(np.float32),
                   l2_normalize(sums), nb[:, k].copy(), w[:, k].copy())


def leave_one_out_scores(
    vectors: np.ndarray,
    rows: np.ndarray,
    *,
    qe: int = 0,
    alpha: float = 3.0,
    dba: DatabaseAugmentation | None = None,
) -> np.ndarray:
    """Scores of collection members used as queries against all the others, with the options applied.

    For evaluation (:func:`revsearch.evaluate.evaluate_index`): row ``r`` queries the collection
    without itself, exactly as if it had never been indexed. With ``dba``, every augmented vector
    that summed ``x_r`` in is recomputed without it (its next nearest neighbour takes the place), so
    the query never meets its own vector. With ``qe``, the query is expanded from its ``qe`` best
    matches among the others.

    Parameters
    ----------
    vectors : numpy.ndarray
        Shape (n, d), L2-normalised.
    rows : numpy.ndarray
        Shape (b,), the query rows.
    qe : int, default 0
        Query-expansion neighbours (0: none).
    alpha : float, default 3.0
        Query-expansion weight exponent.
    dba : DatabaseAugmentation, optional
        Made from the same ``vectors``.

    Returns
    -------
    numpy.ndarray
        Shape (b, n) float32; ``-inf`` at each query's own row.
    """
    _check(qe, alpha)
    x = np.asarray(vectors, np.float32)
    rows = np.asarray(rows, np.int64)
    n, b = len(x), len(rows)
    q = x[rows]
    zeros = np.zeros((b, n), np.float32)
    if dba is None:
        sums, wq, we, ext = x, zeros, zeros, np.zeros_like(x)
    else:
        if dba.sums.shape != x.shape:
            raise ValueError(f"the augmentation was made for {dba.sums.shape} vectors, not {x.shape}")
        sums = dba.sums
        # wq[i, j]: weight of query rows[i] in augmented vector j (0 unless it is one of j's neighbours);
        # we[i, j]: then the weight of j's next neighbour, ext[j], which replaces it.
        pos = np.full(n, -1, np.int64)
        pos[rows] = np.arange(b)
        js = np.repeat(np.arange(n), dba.k)
        rs, ws = dba.neighbours.ravel(), dba.weights.ravel()
        m = (rs >= 0) & (pos[np.maximum(rs, 0)] >= 0)
        wq = zeros.copy()
        wq[pos[rs[m]], js[m]] = ws[m]
        we = zeros.copy()
        we[pos[rs[m]], js[m]] = dba.next_weight[js[m]]
        nxt = dba.next_neighbour
        ext = np.where((nxt >= 0)[:, None], x[np.maximum(nxt, 0)], 0.0).astype(np.float32)
    # The augmented vector j seen by query i: v_ij = S_j - wq_ij x_i + we_ij e_j, with e_j = ext[j].
    s_norm2 = np.einsum("nd,nd->n", sums, sums)[None, :]
    s_dot_e = np.einsum("nd,nd->n", sums, ext)[None, :]
    q_dot_s = q @ sums.T
    q_dot_e = q @ ext.T
    q_norm2 = np.einsum("bd,bd->b", q, q)[:, None]
    norm2 = s_norm2 + wq**2 * q_norm2 + we**2 - 2 * wq * q_dot_s + 2 * we * s_dot_e - 2 * wq * we * q_dot_e
    norm = np.sqrt(np.maximum(norm2, 0.0))
    norm = np.where(norm > 0, norm, 1.0)

    def scores_of(v: np.ndarray) -> np.ndarray:
        """Cosine of query vectors v (b, d) with every vector j as query i sees it."""
        num = v @ sums.T - wq * np.einsum("bd,bd->b", v, q)[:, None] + we * (v @ ext.T)
        s = (num / norm).astype(np.float32)
        s[np.arange(b), rows] = -np.inf
        return s

    s = scores_of(q)
    if qe > 0:
        kk = min(qe, n - 1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :kk]  # ties by row, as a search breaks them
        top_s = np.take_along_axis(s, top, axis=1)
        w_q = np.take_along_axis(wq, top, axis=1)[..., None]
        w_e = np.take_along_axis(we, top, axis=1)[..., None]
        nv = l2_normalize(sums[top] - w_q * q[:, None, :] + w_e * ext[top])
        s = scores_of(expand_queries(q, top_s, nv, alpha))
    return s


def search_expanded(
    index: Index,
    vectors: np.ndarray,
    k: int = 9,
    *,
    qe: int = 0,
    alpha: float = 3.0,
    dba: Any = None,
    exclude: Sequence[int] | None = None,
    exact: bool = False,
    under: str | None = None,
    exclude_paths: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of query vectors over an index, with query expansion and/or an augmented database.

    Parameters
    ----------
    index : Index
    vectors : numpy.ndarray
        Shape (d,) or (b, d), L2-normalised query vectors.
    k : int, default 9
    qe : int, default 0
        Query-expansion neighbours (0: none): the query is searched, expanded from its ``qe`` best
        matches (weights cosine ** ``alpha``) and searched again (twice the search cost).
    alpha : float, default 3.0
    dba : DatabaseAugmentation or StoredAugmentation, optional
        Search its augmented vectors instead of the index's (it must have been made from this
        index: :meth:`revsearch.Index.augmentation`). Exact search of them; where the index has
        an approximate index (and not ``exact``), its shortlist of ``max(4 k, 64)`` rows is
        re-scored with their augmented vectors.
    exclude : sequence of int, optional
        Rows never to return (nor use for expansion).
    exact : bool, default False
        Force exact search where the index has an approximate one.
    under, exclude_paths : optional
        Search only the rows :meth:`revsearch.Index.select` selects (their augmented vectors are
        made from the whole collection).

    Returns
    -------
    scores : numpy.ndarray
        Shape (b, k') float32, best first.
    rows : numpy.ndarray
        Shape (b, k') int64.
    """
    _check(qe, alpha)
    q = l2_normalize(np.atleast_2d(np.asarray(vectors, np.float32)))
    if dba is not None and len(dba.vectors) != len(index):
        raise ValueError(
            f"the database augmentation holds {len(dba.vectors)} vectors but the index {len(index)}: "
            "compute it again from this index"
        )

    mask = index.select(under, exclude_paths) if (under or exclude_paths) else None
    if mask is not None and not mask.any():
        b = len(q)
        return np.zeros((b, 0), np.float32), np.zeros((b, 0), np.int64)
    approximate = not exact and bool(index.manifest.ann)

    def search(v: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        if dba is None:
            return index.topk(v, kk, exclude=exclude, exact=exact, under=under, exclude_paths=exclude_paths)
        if approximate:  # the approximate index's shortlist, re-scored with the augmented vectors
            _, cand = index.topk(v, max(4 * kk, 64), exclude=exclude, under=under, exclude_paths=exclude_paths)
            cs = np.einsum("bd,bkd->bk", v, _gather([dba.vectors], cand)).astype(np.float32)
            cs[cand < 0] = -np.inf
            order = np.lexsort((cand, -cs), axis=1)[:, :kk]
            return np.take_along_axis(cs, order, axis=1), np.take_along_axis(cand, order, axis=1)
        ex = list(index.without_damaged(exclude) or [])
        if mask is not None:
            ex = np.union1d(np.asarray(ex, np.int64), np.flatnonzero(~mask))
        return topk_cosine([dba.vectors], v, kk, exclude=ex if len(ex) else None)

    if qe > 0:
        s, r = search(q, qe)
        shards = [dba.vectors] if dba is not None else index.shards
        q = expand_queries(q, s, _gather(shards, r), alpha)
    return search(q, k)


def rotated_copies(prepared: np.ndarray) -> np.ndarray:
    """A prepared square image rotated by each of :data:`ROTATIONS` quarter turns.

    Parameters
    ----------
    prepared : numpy.ndarray
        Shape (S, S, 3), as :meth:`revsearch.embedding.Embedder.prepare` returns it.

    Returns
    -------
    numpy.ndarray
        Shape (4, S, S, 3): 0, 90, 180 and 270 degrees anticlockwise.
    """
    return np.stack([np.ascontiguousarray(np.rot90(prepared, t)) for t in ROTATIONS])


def search_rotated(
    index: Index,
    images: ImageSource | Sequence[ImageSource],
    k: int = 9,
    *,
    embedder: Embedder | None = None,
    qe: int = 0,
    alpha: float = 3.0,
    dba: DatabaseAugmentation | None = None,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search with each query image as it is and rotated by 90, 180 and 270 degrees; keep each row's best score.

    The image is prepared once (crop or pad, resize) and the prepared square is rotated, so each
    rotation is embedded exactly as an upright image is. The result is exact: a row among the best
    k by its best rotation is among the best k of that rotation's own search. Costs 4 embeddings
    and 4 searches per query.

    Parameters
    ----------
    index : Index
    images : ImageSource or sequence of ImageSource
    k : int, default 9
    embedder : Embedder, optional
        Default: the index's own.
    qe, alpha, dba, exact
        As for :func:`search_expanded`, applied to each rotation's search.

    Returns
    -------
    scores : numpy.ndarray
        Shape (b, k') float32, best first.
    rows : numpy.ndarray
        Shape (b, k') int64.
    turns : numpy.ndarray
        Shape (b, k') int: the quarter turns of the query that matched each row best.
    """
    emb = embedder if embedder is not None else index.embedder()
    index.check_compatible(emb.spec)
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    out_s, out_r, out_t = [], [], []
    for item in items:
        vecs = emb.embed_prepared(rotated_copies(emb.prepare(item)))  # (4, d)
        s, r = search_expanded(index, vecs, k, qe=qe, alpha=alpha, dba=dba, exact=exact)
        turns = np.repeat(np.asarray(ROTATIONS)[:, None], r.shape[1], axis=1)
        s, r, turns = s.ravel(), r.ravel(), turns.ravel()
        order = np.lexsort((r, -s))  # best first, ties by row
        _, first = np.unique(r[order], return_index=True)  # each row's best place
        keep = order[np.sort(first)][:k]
        out_s.append(s[keep]), out_r.append(r[keep]), out_t.append(turns[keep])
    return np.stack(out_s), np.stack(out_r), np.stack(out_t)


def search_options(
    index: Index, *, qe: int = 0, alpha: float = 3.0, dba: int = 0, dba_alpha: float = 3.0
) -> dict[str, Any]:
    """Check search-side options and compute what they need from an index.

    Parameters
    ----------
    index : Index
    qe : int, default 0
        Query-expansion neighbours (0: off).
    alpha : float, default 3.0
        Query-expansion exponent.
    dba : int, default 0
        Database-augmentation neighbours (0: off): the one stored in the index
        (:meth:`revsearch.Index.augmentation`), computed in memory if it stores none with ``dba``.
    dba_alpha : float, default 3.0

    Returns
    -------
    dict
        ``qe``, ``alpha`` and ``dba`` (a :class:`DatabaseAugmentation` or None), for
        :func:`search_expanded` / :func:`search_rotated`.
    """
    _check(qe, alpha)
    _check(dba, dba_alpha, "dba")
    aug = index.augmentation(dba, dba_alpha) if dba else None  # the stored one where it has these settings
    return {"qe": int(qe), "alpha": float(alpha), "dba": aug}


def search_images(
    index: Index,
    images: ImageSource | Sequence[ImageSource],
    k: int = 9,
    *,
    qe: int | None = None,
    alpha: float | None = None,
    dba: int | DatabaseAugmentation | None = None,
    dba_alpha: float | None = None,
    rotations: bool = False,
    embedder: Embedder | None = None,
    dataset_dir: str | os.PathLike | None = None,
    exact: bool = False,
    expand: bool | Expansion | None = None,
) -> list[Match] | list[list[Match]]:
    """Search an index with query images, with any of the search-side options.

    Settings left at None are the index's expansion (:attr:`revsearch.Index.expansion`, on by
    default); ``expand=False`` starts from a plain search instead.

    Parameters
    ----------
    index : Index
    images : ImageSource or list of ImageSource
        One image (path, bytes, PIL image or (H, W, 3) uint8 array) or a list of them.
    k : int, default 9
    qe : int, optional
        Alpha query expansion from the ``qe`` best matches (0: off; default: the index's, 2).
    alpha : float, optional
        Query-expansion exponent (0: average query expansion; default: the index's, 3).
    dba : int or DatabaseAugmentation, optional
        Database-side augmentation with ``dba`` neighbours (0: off; default: the index's, 2): the
        one stored in the index (:meth:`revsearch.Index.augmentation`; computed in memory once if it
        stores none with this ``dba``), or one computed before with :class:`DatabaseAugmentation`.
    dba_alpha : float, optional
    rotations : bool, default False
        Also search with the query rotated by 90, 180 and 270 degrees; each image keeps its best score.
    embedder : Embedder, optional
        Default: the index's own.
    dataset_dir : path, optional
        Where the images are now (default: as recorded in the index).
    exact : bool, default False
        Force exact search where the index has an approximate one.

    Returns
    -------
    list of Match, or list of lists of Match for a list of images
        Best first.
    """
    single = not isinstance(images, (list, tuple))
    base = resolve_expansion(expand, index.expansion)
    qe = base.qe if qe is None else qe
    alpha = base.alpha if alpha is None else alpha
    dba_alpha = base.dba_alpha if dba_alpha is None else dba_alpha
    if isinstance(dba, DatabaseAugmentation):
        _check(qe, alpha)
        aug: Any = dba
    else:
        dba = base.dba if dba is None else dba
        _check(qe, alpha)
        _check(dba, dba_alpha, "dba")
        aug = index.augmentation(dba, dba_alpha) if dba else None
    emb = embedder if embedder is not None else index.embedder()
    index.check_compatible(emb.spec)
    if rotations:
        scores, rows, _ = search_rotated(index, images, k, embedder=emb, qe=qe, alpha=alpha, dba=aug, exact=exact)
    else:
        vecs = emb.embed(list(images) if not single else [images])  # type: ignore[list-item]
        scores, rows = search_expanded(index, vecs, k, qe=qe, alpha=alpha, dba=aug, exact=exact)
    out = index.matches(scores, rows, dataset_dir)
    return out[0] if single else out


# ============================================================================ stored augmentation

#: Query rows per exact k-NN batch when an augmentation is computed or brought up to date.
AUGMENT_BLOCK = 1024


@dataclass(frozen=True)
class Expansion:
    """Search-side expansion settings: alpha query expansion and database-side augmentation.

    ``Expansion()`` is the default every search uses (chosen by the rule over every dataset
    measured, see README, Quality); :data:`NO_EXPANSION` is a plain cosine search.

    Attributes
    ----------
    qe : int, default 2
        Query-expansion neighbours (0: off).
    alpha : float, default 3.0
        Query-expansion exponent.
    dba : int, default 2
        Database-augmentation neighbours (0: off); stored in the index by every update.
    dba_alpha : float, default 3.0
    """

    qe: int = 2
    alpha: float = 3.0
    dba: int = 2
    dba_alpha: float = 3.0

    def __post_init__(self) -> None:
        _check(self.qe, self.alpha)
        _check(self.dba, self.dba_alpha, "dba")

    @property
    def active(self) -> bool:
        """Whether anything differs from a plain search."""
        return bool(self.qe or self.dba)

    def to_dict(self) -> dict[str, Any]:
        return {"qe": int(self.qe), "alpha": float(self.alpha), "dba": int(self.dba), "dba_alpha": float(self.dba_alpha)}

    def describe(self) -> str:
        """E.g. ``"query expansion qe=2 alpha=3; database augmentation k=2 alpha=3"``."""
        qe = f"query expansion qe={self.qe} alpha={self.alpha:g}" if self.qe else "no query expansion"
        dba = f"database augmentation k={self.dba} alpha={self.dba_alpha:g}" if self.dba else "no database augmentation"
        return f"{qe}; {dba}"


#: The default expansion of every search (see :class:`Expansion`).
DEFAULT_EXPANSION = Expansion()
#: A plain cosine search (``expand=False``).
NO_EXPANSION = Expansion(qe=0, dba=0)


def resolve_expansion(expand: bool | Expansion | None, default: Expansion | None = None) -> Expansion:
    """``True``/None: ``default`` (:data:`DEFAULT_EXPANSION` if None); ``False``: :data:`NO_EXPANSION`;
    an :class:`Expansion` as it is."""
    if isinstance(expand, Expansion):
        return expand
    if expand is None or expand is True:
        return default if default is not None else DEFAULT_EXPANSION
    if expand is False:
        return NO_EXPANSION
    raise TypeError(f"expand must be True, False or an Expansion, not {expand!r}")


def recorded_expansion(manifest: Any) -> Expansion:
    """The :class:`Expansion` an index's manifest (a :class:`revsearch.store.Manifest`) records
    (:data:`DEFAULT_EXPANSION` where it records none)."""
    rec = getattr(manifest, "expansion", None)
    if not isinstance(rec, dict):
        return DEFAULT_EXPANSION
    try:
        return Expansion(int(rec["qe"]), float(rec["alpha"]), int(rec["dba"]), float(rec["dba_alpha"]))
    except (KeyError, TypeError, ValueError) as e:
        logger.warning("the index records an unusable expansion %r (%s): using the default", rec, e)
        return DEFAULT_EXPANSION


KnnSearch = Any  # callable (queries (b, d), k) -> (scores (b, k'), rows (b, k'))


def neighbours_of(
    shards: Sequence[np.ndarray], rows: np.ndarray, k: int, *, search: KnnSearch | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows of the collection (itself left out, ties by row number).

    Parameters
    ----------
    shards : sequence of numpy.ndarray
        The collection, shards (n_i, d) whose rows run on; L2-normalised.
    rows : numpy.ndarray
        Shape (b,), global row numbers.
    k : int
    search : callable, optional
        ``search(queries, kk) -> (scores, rows)``, e.g. an approximate index's; default exact
        (:func:`~revsearch.search.topk_cosine`).

    Returns
    -------
    neighbours : numpy.ndarray
        Shape (b, k) int64, -1 where the collection has fewer other rows.
    scores : numpy.ndarray
        Shape (b, k) float32, their cosines, -inf for -1.
    """
    rows = np.asarray(rows, np.int64)
    n = sum(len(s) for s in shards)
    nb = np.full((len(rows), k), -1, np.int64)
    sc = np.full((len(rows), k), -np.inf, np.float32)
    if len(rows) == 0 or n <= 1:
        return nb, sc
    q = _gather(shards, rows)
    good = np.isfinite(q).all(axis=1)  # a damaged stored vector (NaN, inf) gets no neighbours
    if not good.all():
        nb[good], sc[good] = neighbours_of(shards, rows[good], k, search=search)
        return nb, sc
    kk = min(n, k + 1)
    s, r = search(q, kk) if search is not None else topk_cosine(shards, q, kk)
    for j in range(len(rows)):
        keep = (r[j] != rows[j]) & (r[j] >= 0)
        rr, ss = r[j][keep][:k], s[j][keep][:k]
        nb[j, : len(rr)], sc[j, : len(ss)] = rr, ss
    return nb, sc


def augmented_rows(
    shards: Sequence[np.ndarray], rows: np.ndarray, neighbours: np.ndarray, scores: np.ndarray, alpha: float
) -> np.ndarray:
    """The augmented vectors of some rows: ``l2(x_j + sum_i cos_i ** alpha * x_i)`` over their neighbours.

    Parameters
    ----------
    shards : sequence of numpy.ndarray
    rows : numpy.ndarray
        Shape (b,).
    neighbours, scores : numpy.ndarray
        Shape (b, k), as :func:`neighbours_of` returns them.
    alpha : float

    Returns
    -------
    numpy.ndarray
        Shape (b, d) float32, L2-normalised.
    """
    nb = np.asarray(neighbours, np.int64)
    w = np.where(nb >= 0, _weights(np.asarray(scores, np.float32), alpha), 0.0).astype(np.float32)
    x = _gather(shards, np.asarray(rows, np.int64))
    return l2_normalize(x + np.einsum("bk,bkd->bd", w, _gather(shards, nb)))


@dataclass
class AugmentedVectors:
    """A database-side augmentation computed in memory (:meth:`revsearch.Index.augmentation`).

    Attributes
    ----------
    k : int
    alpha : float
    vectors : numpy.ndarray
        Shape (n, d) float32, L2-normalised.
    neighbours : numpy.ndarray
        Shape (n, k) int64.
    scores : numpy.ndarray
        Shape (n, k) float32.
    """

    k: int
    alpha: float
    vectors: np.ndarray
    neighbours: np.ndarray
    scores: np.ndarray


@dataclass
class AugmentationUpdate:
    """An augmentation brought up to date with a collection (:func:`update_augmentation`).

    Attributes
    ----------
    neighbours : numpy.ndarray
        Shape (n, k) int64.
    scores : numpy.ndarray
        Shape (n, k) float32.
    changed : numpy.ndarray
        Shape (n,) bool: rows whose neighbour list (and so augmented vector) was recomputed.
    searched : int
        Rows whose neighbours were searched in the whole collection (new rows, and rows that lost
        a neighbour); the other changed rows only merged the new rows into their list.
    old_rows : numpy.ndarray
        Shape (n,) int64: each row's row in the previous augmentation (-1 if new).
    """

    neighbours: np.ndarray
    scores: np.ndarray
    changed: np.ndarray
    searched: int
    old_rows: np.ndarray

    @property
    def recomputed(self) -> int:
        """Rows whose augmented vector is computed again."""
        return int(self.changed.sum())


def update_augmentation(
    shards: Sequence[np.ndarray],
    keys: np.ndarray,
    k: int,
    old: Any = None,
    *,
    search: KnnSearch | None = None,
    block: int = AUGMENT_BLOCK,
    approximate: Any = None,
    approximate_from: int = 0,
) -> AugmentationUpdate:
    """Bring a stored augmentation's neighbour lists up to date with the collection, recomputing only what changed.

    Rows are matched to the previous augmentation by key (path and content hash). A kept row
    whose neighbours are all still there keeps its list, merged with the new rows that beat its
    k-th neighbour (exact: one product of the new rows with every row); a kept row that lost a
    neighbour, and every new row, is searched in the whole collection (``search``, exact by
    default). The result equals a computation from scratch (up to the approximation of ``search``).

    Parameters
    ----------
    shards : sequence of numpy.ndarray
        The collection now, (n_i, d) shards, L2-normalised.
    keys : numpy.ndarray
        Shape (n,), each row's key (:func:`revsearch.store.row_keys`).
    k : int
        Neighbours per row.
    old : StoredAugmentation, optional
        The previous augmentation (its ``keys``, ``neighbours``, ``scores``, ``k``); None computes
        every row.
    search : callable, optional
        As for :func:`neighbours_of`.
    block : int
        Rows per batch.
    approximate : callable, optional
        Called without arguments when at least ``approximate_from`` rows are to be searched;
        returns the ``search`` to use for them (e.g. :func:`revsearch.ann.neighbour_search`), or
        None for exact search. Small updates search exactly without building anything.
    approximate_from : int, default 0

    Returns
    -------
    AugmentationUpdate
    """
    if k < 1:
        raise ValueError("database-side augmentation needs k >= 1 neighbours")
    keys = np.asarray(keys)
    n = len(keys)
    old_rows = np.full(n, -1, np.int64)
    if old is not None and int(old.k) == k and len(old.keys):
        where = {bytes(key): i for i, key in enumerate(np.asarray(old.keys))}
        old_rows = np.fromiter((where.get(bytes(key), -1) for key in keys), np.int64, count=n)
        if len(set(old_rows[old_rows >= 0].tolist())) != int((old_rows >= 0).sum()):  # two rows, one key: start over
            old_rows[:] = -1
    nb = np.full((n, k), -1, np.int64)
    sc = np.full((n, k), -np.inf, np.float32)
    kept = old_rows >= 0
    search_rows = ~kept
    if kept.any():
        o2n = np.full(len(old.keys), -1, np.int64)
        o2n[old_rows[kept]] = np.flatnonzero(kept)
        onb = np.asarray(old.neighbours)[old_rows[kept]]
        translated = np.where(onb >= 0, o2n[np.maximum(onb, 0)], -1)
        lost = ((onb >= 0) & (translated < 0)).any(axis=1)
        nb[kept], sc[kept] = translated, np.asarray(old.scores)[old_rows[kept]]
        search_rows[np.flatnonzero(kept)[lost]] = True
    changed = search_rows.copy()
    new = np.flatnonzero(~kept)
    # kept rows that lost nothing: merge the new rows that beat their k-th neighbour
    merge = np.flatnonzero(kept & ~search_rows)
    if merge.size and new.size:
        xn = _gather(shards, new)  # (m, d)
        for a in range(0, merge.size, block):
            rows = merge[a : a + block]
            s = _gather(shards, rows) @ xn.T  # (b, m)
            s = np.where(np.isfinite(s), s, -np.inf)  # a damaged vector (NaN, inf) is nobody's neighbour
            kk = min(k, new.size)
            top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if new.size > kk else np.tile(np.arange(new.size), (len(rows), 1))
            cand_s = np.take_along_axis(s, top, axis=1).astype(np.float32)
            cand_r = new[top]
            all_s = np.concatenate([sc[rows], cand_s], axis=1)
            all_r = np.concatenate([nb[rows], cand_r], axis=1)
            order = np.lexsort((np.where(all_r >= 0, all_r, np.iinfo(np.int64).max), -all_s), axis=1)[:, :k]
            new_r, new_s = np.take_along_axis(all_r, order, axis=1), np.take_along_axis(all_s, order, axis=1)
            new_r = np.where(np.isfinite(new_s), new_r, -1)
            changed[rows] = (new_r != nb[rows]).any(axis=1)
            nb[rows], sc[rows] = new_r, new_s
    todo = np.flatnonzero(search_rows)
    if search is None and approximate is not None and todo.size and todo.size >= approximate_from:
        search = approximate()
    for a in range(0, todo.size, block):
        rows = todo[a : a + block]
        nb[rows], sc[rows] = neighbours_of(shards, rows, k, search=search)
    return AugmentationUpdate(nb, sc, changed, int(todo.size), old_rows)


def augmented_blocks(
    shards: Sequence[np.ndarray],
    update: AugmentationUpdate,
    alpha: float,
    old: Any = None,
    *,
    block: int = 8192,
) -> Any:
    """Yield the augmented vectors of every row in blocks of rows (to stream them to a file):
    computed for changed rows (and all rows if ``alpha`` differs from ``old``'s), copied from
    ``old.vectors`` for the others.

    Yields
    ------
    numpy.ndarray
        Shape (b, d) float32 blocks, in row order.
    """
    n = len(update.neighbours)
    reuse_old = old is not None and float(old.alpha) == float(alpha)
    for a in range(0, n, block):
        rows = np.arange(a, min(n, a + block))
        compute = update.changed[rows] | (update.old_rows[rows] < 0) | (not reuse_old)
        out = np.empty((len(rows), shards[0].shape[1] if shards else 0), np.float32)
        if (~compute).any():
            out[~compute] = np.asarray(old.vectors)[update.old_rows[rows[~compute]]]
        if compute.any():
            c = rows[compute]
            out[compute] = augmented_rows(shards, c, update.neighbours[c], update.scores[c], alpha)
        yield out
