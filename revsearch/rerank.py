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
from .search import topk_cosine

if TYPE_CHECKING:  # pragma: no cover
    from .embedding import Embedder
    from .search import Match
    from .images import ImageSource
    from .index import Index

logger = logging.getLogger(__name__)

__all__ = [
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
    dba: DatabaseAugmentation | None = None,
    exclude: Sequence[int] | None = None,
    exact: bool = False,
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
    dba : DatabaseAugmentation, optional
        Search its augmented vectors instead of the index's (exact search; it must have been made
        from this index, see :func:`search_options`).
    exclude : sequence of int, optional
        Rows never to return (nor use for expansion).
    exact : bool, default False
        Force exact search where the index has an approximate one (without ``dba``).

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

    def search(v: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        if dba is not None:
            return topk_cosine([dba.vectors], v, kk, exclude=exclude)
        return index.topk(v, kk, exclude=exclude, exact=exact)

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
        Database-augmentation neighbours (0: off); computed here from the index's vectors.
    dba_alpha : float, default 3.0

    Returns
    -------
    dict
        ``qe``, ``alpha`` and ``dba`` (a :class:`DatabaseAugmentation` or None), for
        :func:`search_expanded` / :func:`search_rotated`.
    """
    _check(qe, alpha)
    _check(dba, dba_alpha, "dba")
    aug = None
    if dba:
        if len(index) > 200_000:
            logger.warning("database augmentation of %d vectors is an exact k-NN of all of them: slow", len(index))
        aug = DatabaseAugmentation.compute(index.shards, dba, dba_alpha)
    return {"qe": int(qe), "alpha": float(alpha), "dba": aug}


def search_images(
    index: Index,
    images: ImageSource | Sequence[ImageSource],
    k: int = 9,
    *,
    qe: int = 0,
    alpha: float = 3.0,
    dba: int | DatabaseAugmentation = 0,
    dba_alpha: float = 3.0,
    rotations: bool = False,
    embedder: Embedder | None = None,
    dataset_dir: str | os.PathLike | None = None,
    exact: bool = False,
) -> list[Match] | list[list[Match]]:
    """Search an index with query images, with any of the search-side options.

    Parameters
    ----------
    index : Index
    images : ImageSource or list of ImageSource
        One image (path, bytes, PIL image or (H, W, 3) uint8 array) or a list of them.
    k : int, default 9
    qe : int, default 0
        Alpha query expansion from the ``qe`` best matches (0: off; ``qe=2`` is a good start).
    alpha : float, default 3.0
        Query-expansion exponent (0: average query expansion).
    dba : int or DatabaseAugmentation, default 0
        Database-side augmentation with ``dba`` neighbours (0: off), computed from the index here
        (an exact k-NN of the collection), or one computed before with :class:`DatabaseAugmentation`
        (reuse it over many searches).
    dba_alpha : float, default 3.0
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
    if isinstance(dba, DatabaseAugmentation):
        _check(qe, alpha)
        aug: DatabaseAugmentation | None = dba
    else:
        opts = search_options(index, qe=qe, alpha=alpha, dba=dba, dba_alpha=dba_alpha)
        aug = opts["dba"]
    emb = embedder if embedder is not None else index.embedder()
    index.check_compatible(emb.spec)
    if rotations:
        scores, rows, _ = search_rotated(index, images, k, embedder=emb, qe=qe, alpha=alpha, dba=aug, exact=exact)
    else:
        vecs = emb.embed(list(images) if not single else [images])  # type: ignore[list-item]
        scores, rows = search_expanded(index, vecs, k, qe=qe, alpha=alpha, dba=aug, exact=exact)
    out = index.matches(scores, rows, dataset_dir)
    return out[0] if single else out
