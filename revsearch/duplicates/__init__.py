"""Duplicate groups in a collection, and what to do with them.

Two modes: ``copies`` (default; :func:`find_duplicates` verifies a shortlist pair by pair with
:mod:`.verify`: one image must be an edited copy of the other) and ``similar`` (the vectors'
cosine threshold, below: near-identical shots, the same scene).

:func:`find_duplicates` reads the vectors an index already holds and groups the photos that are
copies of one another (re-encoded, resized, cropped, captioned, recoloured...):

1. For every image, its ``k`` most similar images whose cosine is at least ``threshold``
   (ties broken by row number) are its duplicate neighbours.
2. The groups are the connected components of that graph (union-find); every group has one
   copy to keep, chosen by a rule (``keep``), and the others.

Modules: :mod:`.candidates` (the shortlists), :mod:`.verify` (the verifier), :mod:`.groups` (the groups and the report),
:mod:`.moves` (move and undo), :mod:`.plot` (pictures).

How the neighbours are found:

``"exact"`` (the default up to :data:`EXACT_MAX_VECTORS` vectors)
    Every pair is scored, block by block (``BLOCK_ROWS`` x ``BLOCK_ROWS`` float32 scores at a
    time, each pair once), straight from the memory-mapped shards: memory stays bounded and the
    groups equal a brute-force computation.
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

``--against``: with ``against=OTHER`` only pairs with one image in each collection count (a new
folder against an archive); the other collection is read, never changed.

:func:`move_duplicates` moves the copies not kept out of the dataset folder (with their relative
paths), logging every move to a CSV file before it is made, and updates the index;
:func:`undo_moves` puts every file back from that log, byte for byte. Nothing is ever deleted.

The default threshold depends on the model: see :data:`CALIBRATIONS` and
:func:`default_threshold`.
"""
from __future__ import annotations

from .candidates import (
    BLOCK_ROWS,
    CALIBRATIONS,
    DEFAULT_K,
    DEFAULT_NPROBE,
    EXACT_MAX_VECTORS,
    Calibration,
    default_nlist,
    default_threshold,
    duplicate_edges,
    shortlist_floor,
)
from .groups import (
    KEEP_RULES,
    MODES,
    PAIRWISE_MAX,
    DuplicateFile,
    DuplicateGroup,
    DuplicateReport,
    connected_components,
    find_duplicates,
)
from .moves import LOG_COLUMNS, MoveReport, UndoReport, check_destination, move_duplicates, undo_moves
from .plot import plot_duplicates

__all__ = [
    "BLOCK_ROWS",
    "CALIBRATIONS",
    "Calibration",
    "DEFAULT_K",
    "DEFAULT_NPROBE",
    "DuplicateFile",
    "DuplicateGroup",
    "DuplicateReport",
    "EXACT_MAX_VECTORS",
    "KEEP_RULES",
    "MODES",
    "LOG_COLUMNS",
    "MoveReport",
    "PAIRWISE_MAX",
    "UndoReport",
    "check_destination",
    "connected_components",
    "default_nlist",
    "default_threshold",
    "duplicate_edges",
    "find_duplicates",
    "move_duplicates",
    "plot_duplicates",
    "shortlist_floor",
    "undo_moves",
]
