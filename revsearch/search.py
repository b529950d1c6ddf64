"""Exact cosine top-k search over an index, and the one-call ``reverse_image_search``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelMismatchError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    """One search result.

    Attributes
    ----------
    path : pathlib.Path
        The image file (the dataset folder joined with ``relpath``).
    relpath : str
        The image's path relative to the dataset folder, with ``/`` separators.
    score : float
        Cosine similarity to the query, in [-1, 1]; higher is more similar.
    rank : int
        0 for the best match.
    row : int
        The row of the image's vector in the index.
    """

    path: Path
    relpath: str
    score: float
    rank: int
    row: int

    @property
    def name(self) -> str:
        """The image's file name."""
        return Path(self.relpath).name


#: Most rows scored per matrix product (1 GiB of 2048-d float32): few, large products keep BLAS
#: threads busy; the temporary score matrix is bounded by CHUNK_ROWS x batch and SCORE_BUDGET.
CHUNK_ROWS = 1 << 18


def as_queries(queries: np.ndarray, dim: int) -> tuple[np.ndarray, bool]:
    """Check query vectors against an index's dimension.

    Parameters
    ----------
    queries : array_like
        Shape (dim,) or (b, dim).
    dim : int

    Returns
    -------
    queries : numpy.ndarray
        Shape (b, dim) float32, C-contiguous.
    single : bool
        Whether one vector (1-d) was given.
    """
    q = np.asarray(queries)
    single = q.ndim == 1
    q = np.atleast_2d(q)
    if q.ndim != 2:
        raise ValueError(f"query vectors must have shape (dim,) or (batch, dim); got {np.shape(queries)}")
    if q.shape[1] != dim:
        raise ModelMismatchError(
            f"query vectors have dimension {q.shape[1]} but the index holds {dim}-d vectors: "
            "embed the query with the model the index was built with"
        )
    if not np.isfinite(q).all():
        raise ValueError("query vectors contain NaN or infinite values")
    return np.ascontiguousarray(q, dtype=np.float32), single


_as_queries = as_queries  # the former private name, for code written against revsearch 0.1


#: At most this many scores (rows x queries) per matrix product for a batch: 1 MiB of float32.
#: A batch of b queries is scored min(chunk_rows, max(1024, SCORE_BUDGET // b)) rows at a time:
#: a score block that stays in cache makes the matrix product faster (single-threaded, 64
#: queries: 140 ms per 50,000 x 2048 rows in blocks of 4096, 162 ms in blocks of 65536).
SCORE_BUDGET = 1 << 18
#: Queries whose block scores are partitioned together (bounds that temporary copy).
_PARTITION_GROUP = 8


def _merge_topk(
    best_s: np.ndarray, best_r: np.ndarray, cand_s: np.ndarray, cand_r: np.ndarray, cand_q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge candidates (score, row, query) into the running (b, k) best: best first, ties by row."""
    b, k = best_s.shape
    have = np.isfinite(best_s)
    s = np.concatenate([best_s[have], cand_s])
    r = np.concatenate([best_r[have], cand_r])
    qq = np.concatenate([np.nonzero(have)[0], cand_q])
    order = np.lexsort((r, -s, qq))
    s, r, qq = s[order], r[order], qq[order]
    rank = np.arange(len(qq)) - np.searchsorted(qq, np.arange(b))[qq]
    keep = rank < k
    out_s = np.full((b, k), -np.inf, np.float32)
    out_r = np.full((b, k), -1, np.int64)
    out_s[qq[keep], rank[keep]] = s[keep]
    out_r[qq[keep], rank[keep]] = r[keep]
    return out_s, out_r


def topk_cosine(
    shards: Sequence[np.ndarray],
    queries: np.ndarray,
    k: int = 9,
    *,
    exclude: Sequence[int] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine for L2-normalised vectors) over all vectors.

    Scores are computed as float32 matrix products over blocks of rows (views of memory-mapped
    shards are read in place, never copied whole). A running top-k per query is kept: a row of a
    block is a candidate only if it beats the k-th best score so far, so most blocks cost one
    comparison per score beyond the matrix product; a block with many candidates (the first one)
    is cut to each query's k best with a partial sort. Ties are broken by row number (the lower
    row ranks first), also at the k-th place.

    Parameters
    ----------
    shards : sequence of numpy.ndarray
        Each of shape (n_i, d), float32; row numbers run on from one shard to the next.
    queries : numpy.ndarray
        Shape (d,) or (b, d), float32, L2-normalised.
    k : int, default 9
        Number of results per query (fewer if the index holds fewer vectors).
    exclude : sequence of int, optional
        Global row numbers never to return (e.g. the query's own row).
    chunk_rows : int
        Most rows per block; a batch of b queries uses at most ``SCORE_BUDGET // b`` rows
        (at least 1024), so the temporary score matrix stays within (chunk_rows, b) float32,
        and within 1 MiB for up to 256 queries, whatever the number of vectors.

    Returns
    -------
    scores : numpy.ndarray
        Shape (b, k') float32, best first, with k' = min(k, rows available).
    rows : numpy.ndarray
        Shape (b, k') int64, the matching global row numbers.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    k = max(1, min(int(k), sum(int(s.shape[0]) for s in shards)))  # never more places than rows
    dim = shards[0].shape[1] if shards else np.shape(queries)[-1]
    q, _ = as_queries(queries, dim)
    b = q.shape[0]
    qt = np.ascontiguousarray(q.T)  # (d, b)
    excluded = np.unique(np.asarray(list(exclude) if exclude is not None else [], dtype=np.int64))
    step = max(1, min(int(chunk_rows), max(1024, SCORE_BUDGET // b)))
    many = 16 * k * b + 4096  # more candidates than this in a block: cut them with a partial sort
    best_s = np.full((b, k), -np.inf, np.float32)  # running top-k, best first
    best_r = np.full((b, k), -1, np.int64)
    offset = 0
    for shard in shards:
        n = shard.shape[0]
        for start in range(0, n, step):
            block = np.asarray(shard[start : start + step])
            m = len(block)
            lo = offset + start
            with np.errstate(invalid="ignore", over="ignore"):
                s = block @ qt  # (m, b) float32
            bad = ~np.isfinite(s)  # a damaged row (NaN, inf) never takes a place from a good one
            if bad.any():
                s[bad] = -np.inf
            if excluded.size:
                e = excluded[np.searchsorted(excluded, lo) : np.searchsorted(excluded, lo + m)]
                if e.size:
                    s[e - lo] = -np.inf
            # Rows seen before have lower numbers and so win ties: a row of this block must beat
            # the k-th best strictly (NaN and excluded rows never do).
            mask = s > best_s[:, k - 1]
            if np.count_nonzero(mask) > many:
                kk = min(k, m)
                for j in range(0, b, _PARTITION_GROUP):
                    part = s[:, j : j + _PARTITION_GROUP].T.copy()  # (g, m): each query's scores contiguous
                    part.partition(m - kk, axis=1)
                    mask[:, j : j + _PARTITION_GROUP] &= s[:, j : j + _PARTITION_GROUP] >= part[:, m - kk]
                    del part
            hits = np.flatnonzero(mask)  # much faster than a 2-d nonzero
            del mask
            if hits.size:
                ri, qi = np.divmod(hits, b)
                best_s, best_r = _merge_topk(best_s, best_r, s[ri, qi], ri + lo, qi)
            del s
        offset += n
    keep = np.isfinite(best_s).all(axis=0)  # drop places no query could fill (k > rows available)
    return np.ascontiguousarray(best_s[:, keep]), np.ascontiguousarray(best_r[:, keep])
