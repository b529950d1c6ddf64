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


#: Rows scored per matrix product: bounds the temporary score matrix to CHUNK_ROWS x batch float32.
CHUNK_ROWS = 65536


def _as_queries(queries: np.ndarray, dim: int) -> tuple[np.ndarray, bool]:
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


def topk_cosine(
    shards: Sequence[np.ndarray],
    queries: np.ndarray,
    k: int = 9,
    *,
    exclude: Sequence[int] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine for L2-normalised vectors) over all vectors.

    Scores are computed as float32 matrix products over blocks of at most ``chunk_rows`` rows
    (views of memory-mapped shards are read in place, never copied whole), keeping a running
    top-k per query with a partial sort.

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
        Block size; bounds the temporary score matrix to (chunk_rows, b) float32.

    Returns
    -------
    scores : numpy.ndarray
        Shape (b, k') float32, best first, with k' = min(k, rows available).
    rows : numpy.ndarray
        Shape (b, k') int64, the matching global row numbers.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    dim = shards[0].shape[1] if shards else queries.shape[-1]
    q, _ = _as_queries(queries, dim)
    b = q.shape[0]
    qt = np.ascontiguousarray(q.T)  # (d, b)
    excluded = np.asarray(sorted(set(exclude or ())), dtype=np.int64)
    best_s = np.empty((0, b), np.float32)
    best_r = np.empty((0, b), np.int64)
    offset = 0
    for shard in shards:
        n = shard.shape[0]
        for start in range(0, n, chunk_rows):
            block = np.asarray(shard[start : start + chunk_rows])
            s = block @ qt  # (m, b) float32
            rows = np.arange(offset + start, offset + start + len(block), dtype=np.int64)
            if excluded.size:
                hit = np.isin(rows, excluded)
                if hit.any():
                    s[hit] = -np.inf
            kk = min(k, len(block))
            if kk < len(block):
                part = np.argpartition(s, len(block) - kk, axis=0)[len(block) - kk :]
                s_top = np.take_along_axis(s, part, axis=0)
                r_top = rows[part]
            else:
                s_top, r_top = s, np.broadcast_to(rows[:, None], s.shape)
            best_s = np.concatenate([best_s, s_top])
            best_r = np.concatenate([best_r, r_top])
            if len(best_s) > k:
                part = np.argpartition(best_s, len(best_s) - k, axis=0)[len(best_s) - k :]
                best_s = np.take_along_axis(best_s, part, axis=0)
                best_r = np.take_along_axis(best_r, part, axis=0)
        offset += n
    # best first; ties broken by row number so results are deterministic
    order = np.lexsort((best_r, -best_s), axis=0)
    scores = np.take_along_axis(best_s, order, axis=0).T
    rows_out = np.take_along_axis(best_r, order, axis=0).T
    keep = np.isfinite(scores).all(axis=0)  # drop columns that were excluded rows
    return np.ascontiguousarray(scores[:, keep]), np.ascontiguousarray(rows_out[:, keep])
