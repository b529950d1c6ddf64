"""Measure retrieval quality: class retrieval on a labelled folder, and near-duplicate recall.

Two questions, two modes:

*Does a search return images of the same kind?* :func:`evaluate_index` takes an index of a
dataset laid out one class per folder (``daisy/image_0001.jpg``), or with the class as a file
name prefix as the original project's data (``0001_000026.jpg``), uses every image as a query
against all the others (leaving itself out) and reports precision@k, mean average precision,
recall@1 of the same class and per-class scores (:class:`ClassRetrievalReport`). The index's
own vectors are the queries, so nothing is embedded again: it works on any index the library
builds and on an imported legacy index. :func:`retrieval_metrics` does the same on any matrix
of vectors and labels.

*Does a search find the original of an edited copy?* :func:`evaluate_near_duplicates` makes
edited copies of indexed photos (:data:`EDITS`: JPEG quality 30, half size, 80% crop,
10 degree rotation, brightness, colour, grey-scale, mirror, letterbox, caption), queries the
index with each copy and reports recall@1 and recall@k of the original per edit kind
(:class:`NearDuplicateReport`). :func:`near_duplicate_metrics` does the scoring on vectors.

Ranking ties are broken by row number, as :func:`revsearch.search.topk_cosine` does.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .edits import EDITS, jpeg_roundtrip, make_edits
from .errors import DatasetLayoutError, ImageReadError
from .safety import damaged_rows

if TYPE_CHECKING:  # pragma: no cover
    from .embedding import Embedder
    from .index import Index

logger = logging.getLogger(__name__)

__all__ = [
    "EDITS",
    "ClassRetrievalReport",
    "ClassScores",
    "EditScores",
    "NearDuplicateReport",
    "class_labels",
    "evaluate_index",
    "evaluate_near_duplicates",
    "jpeg_roundtrip",
    "make_edits",
    "near_duplicate_metrics",
    "retrieval_metrics",
    "tune_expansion",
]

#: A file name stem ``CLASS_NUMBER`` (the original project's ``0001_000026.jpg``).
_PREFIX_RE = re.compile(r"^(?P<cls>[^_]+)_(?P<num>\d+)$")

#: Scores computed per matrix product in :func:`retrieval_metrics` (bounds temporary memory).
_SCORE_BLOCK = 1 << 22


# ============================================================================ labels


def class_labels(paths: Sequence[str], layout: str = "auto") -> tuple[list[str], str]:
    """Find each image's class from its path relative to the dataset folder.

    Parameters
    ----------
    paths : sequence of str
        Shape (n,): ``/``-separated paths relative to the dataset folder (as an index stores them).
    layout : {"auto", "folder", "prefix"}, default "auto"
        ``"folder"``: the class is the image's folder (``daisy/image_0001.jpg`` -> ``daisy``;
        nested folders are one class each: ``a/b/x.jpg`` -> ``a/b``). ``"prefix"``: the class is
        the file name up to the first underscore, the rest of the name being a number
        (``0001_000026.jpg`` -> ``0001``). ``"auto"``: folders if every image is in a subfolder
        and there are at least two, else prefixes if every name has one and there are at least two.

    Returns
    -------
    labels : list of str
        Shape (n,), the class of each path.
    layout : str
        ``"folder"`` or ``"prefix"``: the layout used.

    Raises
    ------
    DatasetLayoutError
        If the paths show no class structure (a flat folder of freely named images, a single
        class, or no class with two images), saying which layouts are understood.
    """
    if layout not in ("auto", "folder", "prefix"):
        raise ValueError(f"layout must be 'auto', 'folder' or 'prefix', not {layout!r}")
    paths = list(paths)
    help_text = (
        "evaluate needs labelled images: one folder per class (CLASS/any_name.jpg), or a flat folder "
        "with the class as a file name prefix (CLASS_NUMBER.jpg, as the original project's 0001_000026.jpg)"
    )
    if len(paths) < 2:
        raise DatasetLayoutError(f"the index holds {len(paths)} image(s): nothing to evaluate; {help_text}")
    pure = [PurePosixPath(p) for p in paths]
    folders = [p.parent.as_posix() for p in pure]
    in_folders = sum(f != "." for f in folders)
    matches = [_PREFIX_RE.match(p.stem) for p in pure]
    prefixed = sum(m is not None for m in matches)

    def prefix_labels() -> list[str]:
        return [("" if f == "." else f + "/") + m.group("cls") for f, m in zip(folders, matches)]  # type: ignore[union-attr]

    candidates: list[tuple[str, list[str]]] = []
    if layout in ("auto", "folder") and in_folders == len(paths):
        candidates.append(("folder", folders))
    if layout in ("auto", "prefix") and prefixed == len(paths):
        candidates.append(("prefix", prefix_labels()))
    for name, labels in candidates:
        counts: dict[str, int] = {}
        for lab in labels:
            counts[lab] = counts.get(lab, 0) + 1
        if len(counts) >= 2 and max(counts.values()) >= 2:
            return labels, name
    # nothing fitted: say what was found
    def folder_problem() -> str:
        if in_folders < len(paths):
            return f"{len(paths) - in_folders} of the {len(paths)} images are not in a class folder"
        n_folders = len(set(folders))
        if n_folders < 2:
            return f"all {len(paths)} images are in one folder ({folders[0]!r}): a single class"
        return f"each of the {n_folders} folders holds a single image"

    def prefix_problem() -> str:
        if prefixed < len(paths):
            bad = next(p for p, m in zip(paths, matches) if m is None)
            return f"{len(paths) - prefixed} of the {len(paths)} file names (e.g. {bad!r}) have no CLASS_NUMBER prefix"
        n_classes = len(set(prefix_labels()))
        if n_classes < 2:
            return f"all {len(paths)} file names have the same prefix: a single class"
        return f"each of the {n_classes} prefixes names a single image"

    if layout == "folder":
        problems = [folder_problem()]
    elif layout == "prefix":
        problems = [prefix_problem()]
    elif in_folders == 0:
        problems = [f"the {len(paths)} images lie in a flat folder and {prefix_problem()}"]
    else:
        problems = [folder_problem(), prefix_problem()]
    raise DatasetLayoutError(f"no class structure found: {'; '.join(problems)}. {help_text[0].upper()}{help_text[1:]}")


# ============================================================================ class retrieval


@dataclass
class ClassScores:
    """Retrieval scores of the queries of one class.

    Attributes
    ----------
    n_images : int
        Images of the class (each one a query).
    precision_at_k : float
        Mean over the class's queries of the share of same-class images among the top k.
    average_precision : float
        Mean over the class's queries of their average precision.
    recall_at_1 : float
        Share of the class's queries whose best match is of the same class.
    """

    n_images: int
    precision_at_k: float
    average_precision: float
    recall_at_1: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "n_images": self.n_images,
            "precision_at_k": round(self.precision_at_k, 6),
            "average_precision": round(self.average_precision, 6),
            "recall_at_1": round(self.recall_at_1, 6),
        }


@dataclass
class ClassRetrievalReport:
    """Leave-one-out class retrieval: every image queries all the others.

    Attributes
    ----------
    k : int
        The cut-off of precision@k.
    n_images : int
        Images in the collection.
    n_queries : int
        Images used as queries: all but those alone in their class (nothing to find).
    n_classes : int
        Classes with at least two images.
    layout : str
        ``"folder"``, ``"prefix"`` or ``"given"`` (labels passed in).
    precision_at_k : float
        Mean over queries of (same-class images among the top k) / k. A class with fewer than
        k + 1 images cannot reach 1.
    mean_average_precision : float
        Mean over queries of the average precision of the full ranking of all other images.
    recall_at_1 : float
        Share of queries whose best match is of the same class.
    per_class : dict of str to ClassScores
        The same scores per class, sorted by class name.
    excluded : list of str
        Images not used as queries because no other image shares their class.
    options : dict
        The search-side options evaluated: ``qe``, ``alpha``, ``dba``, ``dba_alpha`` (0: off), and
        ``as_search`` (True when they are what a search of the index uses by default).
    """

    k: int
    n_images: int
    n_queries: int
    n_classes: int
    layout: str
    precision_at_k: float
    mean_average_precision: float
    recall_at_1: float
    per_class: dict[str, ClassScores] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (floats rounded to 6 digits)."""
        return {
            "mode": "classes",
            "options": dict(self.options),
            "k": self.k,
            "n_images": self.n_images,
            "n_queries": self.n_queries,
            "n_classes": self.n_classes,
            "layout": self.layout,
            "precision_at_k": round(self.precision_at_k, 6),
            "mean_average_precision": round(self.mean_average_precision, 6),
            "recall_at_1": round(self.recall_at_1, 6),
            "per_class": {c: s.to_dict() for c, s in self.per_class.items()},
            "excluded": list(self.excluded),
        }

    def summary(self) -> str:
        """One line with the three headline numbers."""
        return (
            f"precision@{self.k} {self.precision_at_k:.4f}, mAP {self.mean_average_precision:.4f}, "
            f"recall@1 {self.recall_at_1:.4f} ({self.n_queries} queries, {self.n_classes} classes)"
        )

    def options_text(self) -> str:
        """The search-side options, e.g. ``"query expansion qe=2 alpha=3; no database augmentation"``."""
        o = self.options
        qe = f"query expansion qe={o['qe']} alpha={o['alpha']:g}" if o.get("qe") else "no query expansion"
        dba = (f"database augmentation k={o['dba']} alpha={o['dba_alpha']:g}" if o.get("dba")
               else "no database augmentation")
        if "as_search" in o:
            return f"{qe}; {dba} ({'what search does by default' if o['as_search'] else 'not the default search'})"
        return f"{qe}; {dba}"


def _shards_of(vectors: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(vectors, np.ndarray):
        return [vectors]
    return list(vectors)


def retrieval_metrics(
    vectors: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[str] | np.ndarray,
    k: int = 9,
    *,
    paths: Sequence[str] | None = None,
    layout: str = "given",
    progress: bool = False,
    qe: int = 0,
    alpha: float = 3.0,
    dba: int = 0,
    dba_alpha: float = 3.0,
) -> ClassRetrievalReport:
    """Leave-one-out class retrieval scores of a set of vectors.

    Each vector queries all the others by inner product (cosine for L2-normalised vectors);
    the full ranking (ties broken by row number) gives precision@k, average precision and
    recall@1 of the query's class. Queries are scored in blocks by matrix products.

    Parameters
    ----------
    vectors : numpy.ndarray or sequence of numpy.ndarray
        Shape (n, d), or shards of shapes (n_i, d) whose rows run on (an index's shards); float32,
        L2-normalised.
    labels : sequence of str
        Shape (n,), the class of each row.
    k : int, default 9
        Cut-off of precision@k; at most n - 1 (larger values are lowered, with a warning).
    paths : sequence of str, optional
        Shape (n,), names for :attr:`ClassRetrievalReport.excluded` (default: row numbers).
    layout : str, default "given"
        Recorded in the report.
    progress : bool, default False
        Show a progress bar over query blocks.
    qe : int, default 0
        Evaluate alpha query expansion from each query's ``qe`` best matches (0: off); see
        :mod:`revsearch.rerank`.
    alpha : float, default 3.0
        Query-expansion exponent (0: average query expansion).
    dba : int, default 0
        Evaluate database-side augmentation with ``dba`` neighbours (0: off), computed from the
        vectors; each query is scored against the augmentation made without it.
    dba_alpha : float, default 3.0

    Returns
    -------
    ClassRetrievalReport

    Raises
    ------
    DatasetLayoutError
        If no class has two images.
    ValueError
        If shapes disagree or ``k`` < 1.
    """
    from tqdm.auto import tqdm

    shards = [np.asarray(s) for s in _shards_of(vectors)]
    n = sum(len(s) for s in shards)
    bad = [damaged_rows(s) for s in shards]  # (n_i,) bool each
    if any(b.any() for b in bad):  # a damaged vector (NaN, inf) scores 0 with everything: no NaN in any figure
        logger.warning("%d damaged vector(s) (NaN, infinite or not unit length) count as matching nothing",
                       sum(int(b.sum()) for b in bad))
        shards = [np.where(b[:, None], 0.0, s).astype(np.float32) if b.any() else s for s, b in zip(shards, bad)]
    lab = np.asarray([str(x) for x in labels])
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the vectors; got {lab.shape}")
    if paths is not None and len(paths) != n:
        raise ValueError(f"paths must have length {n}; got {len(paths)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    classes, codes, counts = np.unique(lab, return_inverse=True, return_counts=True)
    relevant_total = counts[codes] - 1  # (n,) other images of the same class
    queries = np.flatnonzero(relevant_total > 0)
    if queries.size == 0:
        raise DatasetLayoutError(f"no class has two images among the {n}: nothing to retrieve")
    if k > n - 1:
        logger.warning("k=%d is more than the %d other images: using k=%d", k, n - 1, n - 1)
        k = n - 1
    excluded_rows = np.flatnonzero(relevant_total == 0)
    if excluded_rows.size:
        logger.warning("%d image(s) are alone in their class and are not used as queries", excluded_rows.size)

    options = {"qe": int(qe), "alpha": float(alpha), "dba": int(dba), "dba_alpha": float(dba_alpha)}
    expanded = bool(qe or dba)
    if expanded:
        from .rerank import DatabaseAugmentation, leave_one_out_scores

        all_vectors = np.concatenate([np.asarray(s, np.float32) for s in shards]) if len(shards) != 1 else shards[0]
        aug = DatabaseAugmentation.compute(all_vectors, dba, dba_alpha) if dba else None
    prec = np.zeros(n, np.float64)
    ap = np.zeros(n, np.float64)
    r1 = np.zeros(n, np.float64)
    block = max(1, min(len(queries), _SCORE_BLOCK // (8 if expanded else 1) // max(n, 1)))
    offsets = np.cumsum([0] + [len(s) for s in shards])
    ranks = np.arange(1, n, dtype=np.float64)  # 1..n-1
    starts = range(0, len(queries), block)
    for start in tqdm(starts, desc="evaluating", unit="block", disable=not progress):
        rows = queries[start : start + block]
        if expanded:
            scores = leave_one_out_scores(all_vectors, rows, qe=qe, alpha=alpha, dba=aug)  # self is -inf
        else:
            q = np.empty((len(rows), shards[0].shape[1] if shards else 0), np.float32)
            for j, r in enumerate(rows):
                s_idx = int(np.searchsorted(offsets, r, side="right") - 1)
                q[j] = shards[s_idx][r - offsets[s_idx]]
            scores = np.concatenate([np.asarray(s, np.float32) @ q.T for s in shards], axis=0).T  # (b, n)
            scores[np.arange(len(rows)), rows] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, : n - 1]  # self (-inf) ranks last
        rel = codes[order] == codes[rows][:, None]  # (b, n-1)
        hits = np.cumsum(rel, axis=1)
        prec[rows] = hits[:, k - 1] / k
        r1[rows] = rel[:, 0]
        ap[rows] = (rel * (hits / ranks)).sum(axis=1) / relevant_total[rows]

    per_class: dict[str, ClassScores] = {}
    for ci, name in enumerate(classes):
        members = queries[codes[queries] == ci]
        if members.size == 0:
            continue
        per_class[str(name)] = ClassScores(
            n_images=int(members.size),
            precision_at_k=float(prec[members].mean()),
            average_precision=float(ap[members].mean()),
            recall_at_1=float(r1[members].mean()),
        )
    names = list(paths) if paths is not None else [str(i) for i in range(n)]
    return ClassRetrievalReport(
        k=k,
        n_images=n,
        n_queries=int(queries.size),
        n_classes=len(per_class),
        layout=layout,
        precision_at_k=float(prec[queries].mean()),
        mean_average_precision=float(ap[queries].mean()),
        recall_at_1=float(r1[queries].mean()),
        per_class=per_class,
        excluded=[names[i] for i in excluded_rows],
        options=options,
    )


def _check_dataset_dir(index: Index, dataset_dir: str | os.PathLike | None) -> Path | None:
    """The dataset folder to read images from; warn if the index's paths are not found in it."""
    base = Path(dataset_dir) if dataset_dir is not None else index.dataset_dir
    if base is None:
        return None
    if not base.is_dir():
        raise FileNotFoundError(f"dataset folder {str(base)!r} does not exist or is not a folder")
    paths = index.paths
    probe = paths[:: max(1, len(paths) // 50)][:50]
    if probe and not any((base / p).is_file() for p in probe):
        logger.warning(
            "none of the index's images (e.g. %r) is in %s: is it the folder the index was built from?", probe[0], base
        )
    return base


def evaluate_index(
    index: Index | str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    *,
    k: int = 9,
    layout: str = "auto",
    progress: bool = False,
    qe: int | None = None,
    alpha: float | None = None,
    dba: int | None = None,
    dba_alpha: float | None = None,
    expand: Any = None,
) -> ClassRetrievalReport:
    """Leave-one-out class retrieval on an index of a labelled dataset.

    With no options it measures exactly what a search of the index does by default: the index's
    expansion (:attr:`revsearch.Index.expansion`: query expansion and database-side
    augmentation, on by default); ``expand=False`` measures a plain cosine search, and ``qe``,
    ``alpha``, ``dba``, ``dba_alpha`` change single settings. The report's ``options`` say which
    (``as_search``).

    The classes come from the index's paths (relative to the dataset folder): one folder per
    class, or a ``CLASS_NUMBER.jpg`` file name prefix (see :func:`class_labels`). The index's
    own vectors are the queries: nothing is embedded, so this works on an imported legacy index
    as on any other, without the model.

    Parameters
    ----------
    index : Index or path
        An index, or its folder.
    dataset_dir : path, optional
        The dataset folder; only checked (a warning if the index's images are not in it).
    k : int, default 9
    layout : {"auto", "folder", "prefix"}, default "auto"
    progress : bool, default False
    qe, alpha, dba, dba_alpha : optional
        Search-side settings to evaluate instead of the index's own (None: as a search does),
        from the index's vectors as they are (nothing is rebuilt): see :func:`retrieval_metrics`
        and :mod:`revsearch.rerank`.
    expand : bool or Expansion, optional
        None/True: the index's expansion (what search does); False: a plain cosine search.

    Returns
    -------
    ClassRetrievalReport

    Raises
    ------
    DatasetLayoutError
        If the paths show no class structure.
    IndexNotFoundError
        If ``index`` is a folder without an index.
    """
    from .index import Index

    idx = index if isinstance(index, Index) else Index.open(index)
    if not idx.complete:
        logger.warning("the index in %s is incomplete (an indexing run did not finish)", idx.folder)
    if dataset_dir is not None:
        _check_dataset_dir(idx, dataset_dir)
    from .rerank import Expansion, resolve_expansion

    default = idx.expansion
    exp = resolve_expansion(expand, default)
    given = {name: v for name, v in (("qe", qe), ("alpha", alpha), ("dba", dba), ("dba_alpha", dba_alpha)) if v is not None}
    exp = Expansion(**{**exp.to_dict(), **given})
    paths = idx.paths
    labels, found = class_labels(paths, layout)
    report = retrieval_metrics(
        idx.shards, labels, k, paths=paths, layout=found, progress=progress, qe=exp.qe, alpha=exp.alpha, dba=exp.dba,
        dba_alpha=exp.dba_alpha,
    )
    report.options["as_search"] = exp == default
    return report


# ============================================================================ near duplicates
# The edits themselves are revsearch.edits (also used by the demo and the benchmarks).


@dataclass
class EditScores:
    """How often the original of one kind of edited copy is found.

    Attributes
    ----------
    n : int
        Copies queried.
    recall_at_1 : float
        Share of copies whose best match is their original.
    recall_at_k : float
        Share of copies whose original is among the top k.
    """

    n: int
    recall_at_1: float
    recall_at_k: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"n": self.n, "recall_at_1": round(self.recall_at_1, 6), "recall_at_k": round(self.recall_at_k, 6)}


@dataclass
class NearDuplicateReport:
    """Near-duplicate retrieval: edited copies of indexed photos query the index.

    Attributes
    ----------
    k : int
    n_originals : int
        Indexed photos that were edited.
    n_images : int
        Size of the collection searched.
    recall_at_1, recall_at_k : float
        Over all copies of all edits.
    per_edit : dict of str to EditScores
        The same per edit, in the order of :data:`EDITS`.
    skipped : list of str
        Originals that could not be read.
    """

    k: int
    n_originals: int
    n_images: int
    recall_at_1: float
    recall_at_k: float
    per_edit: dict[str, EditScores] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (floats rounded to 6 digits)."""
        return {
            "mode": "near-duplicates",
            "k": self.k,
            "n_originals": self.n_originals,
            "n_images": self.n_images,
            "recall_at_1": round(self.recall_at_1, 6),
            "recall_at_k": round(self.recall_at_k, 6),
            "per_edit": {e: s.to_dict() for e, s in self.per_edit.items()},
            "skipped": list(self.skipped),
        }

    def summary(self) -> str:
        """One line with the overall recall."""
        return (
            f"recall@1 {self.recall_at_1:.4f}, recall@{self.k} {self.recall_at_k:.4f} "
            f"({self.n_originals} originals x {len(self.per_edit)} edits, {self.n_images} images searched)"
        )


def near_duplicate_metrics(
    found_rows: np.ndarray,
    original_rows: Sequence[int] | np.ndarray,
    edit_names: Sequence[str],
    *,
    k: int | None = None,
    n_images: int = 0,
    skipped: Sequence[str] = (),
) -> NearDuplicateReport:
    """Score near-duplicate searches: was each copy's original found, and how high?

    Parameters
    ----------
    found_rows : numpy.ndarray
        Shape (m, k'), int: the rows returned for each copy, best first.
    original_rows : sequence of int
        Shape (m,): the row of each copy's original.
    edit_names : sequence of str
        Shape (m,): the edit that made each copy.
    k : int, optional
        Cut-off of recall@k (default: k', all columns).
    n_images : int, default 0
        Size of the collection, recorded in the report.
    skipped : sequence of str, optional
        Recorded in the report.

    Returns
    -------
    NearDuplicateReport
    """
    found = np.asarray(found_rows)
    orig = np.asarray(original_rows, dtype=np.int64)
    names = list(edit_names)
    if found.ndim != 2 or found.shape[0] != len(orig) or len(names) != len(orig):
        raise ValueError(
            f"found_rows (m, k), original_rows (m,) and edit_names (m,) must agree; got {found.shape}, "
            f"{orig.shape}, {len(names)}"
        )
    kk = found.shape[1] if k is None else min(k, found.shape[1])
    top1 = found[:, 0] == orig if found.shape[1] else np.zeros(len(orig), bool)
    topk = (found[:, :kk] == orig[:, None]).any(axis=1)
    order = [e for e in EDITS if e in set(names)] + sorted(set(names) - set(EDITS))
    per_edit = {}
    arr = np.asarray(names)
    for e in order:
        m = arr == e
        per_edit[e] = EditScores(int(m.sum()), float(top1[m].mean()), float(topk[m].mean()))
    return NearDuplicateReport(
        k=kk,
        n_originals=len(set(orig.tolist())),
        n_images=n_images,
        recall_at_1=float(top1.mean()) if len(orig) else 0.0,
        recall_at_k=float(topk.mean()) if len(orig) else 0.0,
        per_edit=per_edit,
        skipped=list(skipped),
    )


def sample_rows(n: int, sample: int | None, *, seed: int = 0) -> np.ndarray:
    """A reproducible sample of row numbers.

    Parameters
    ----------
    n : int
        Rows available.
    sample : int, optional
        How many; all rows if None or at least n.
    seed : int, default 0

    Returns
    -------
    numpy.ndarray
        Shape (min(sample, n),), int64, sorted.
    """
    if sample is None or sample >= n:
        return np.arange(n, dtype=np.int64)
    if sample < 1:
        raise ValueError(f"sample must be at least 1, not {sample}")
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False)).astype(np.int64)


def evaluate_near_duplicates(
    index: Index | str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    *,
    embedder: Embedder | None = None,
    k: int = 9,
    sample: int | None = 200,
    seed: int = 0,
    rows: Sequence[int] | None = None,
    edits: Sequence[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> NearDuplicateReport:
    """Query an index with edited copies of its own photos; report how often the original is found.

    For each sampled indexed photo, every edit of :data:`EDITS` makes a copy (in memory); each
    copy is embedded with the index's model and searched exactly; recall@1 and recall@k count
    the copies whose original comes first, or among the top k.

    Parameters
    ----------
    index : Index or path
        An index of the photos.
    dataset_dir : path, optional
        Where the photos are (default: as recorded in the index).
    embedder : Embedder, optional
        Defaults to the index's own (it must be compatible).
    k : int, default 9
    sample : int or None, default 200
        How many indexed photos to edit (a reproducible random sample); None: all.
    seed : int, default 0
        Seed of the sample.
    rows : sequence of int, optional
        The rows to edit, instead of a sample.
    edits : sequence of str, optional
        Names from :data:`EDITS` (default: all).
    batch_size : int, default 32
    progress : bool, default True

    Returns
    -------
    NearDuplicateReport

    Raises
    ------
    DatasetLayoutError
        If the dataset folder is unknown, or none of the sampled photos can be read.
    """
    from tqdm.auto import tqdm

    from .images import load_image
    from .index import Index

    idx = index if isinstance(index, Index) else Index.open(index)
    n = len(idx)
    if n == 0:
        raise DatasetLayoutError(f"the index in {str(idx.folder)!r} is empty: nothing to evaluate")
    base = _check_dataset_dir(idx, dataset_dir)
    if base is None:
        raise DatasetLayoutError(
            f"the index in {str(idx.folder)!r} does not record its dataset folder: pass dataset_dir (DATASET_DIR)"
        )
    emb = embedder if embedder is not None else idx.embedder()
    idx.check_compatible(emb.spec)
    names = list(EDITS) if edits is None else list(edits)
    make_edits(Image.new("RGB", (8, 8)), names)  # validate the names before any work
    chosen = np.asarray(rows, dtype=np.int64) if rows is not None else sample_rows(n, sample, seed=seed)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= n):
        raise ValueError(f"rows must lie in 0..{n - 1}")
    paths = idx.paths
    found_parts: list[np.ndarray] = []
    orig: list[int] = []
    kinds: list[str] = []
    skipped: list[str] = []
    group = max(1, batch_size // max(1, len(names)))
    bar = tqdm(total=int(chosen.size) * len(names), desc="near-duplicates", unit="img", disable=not progress)
    try:
        for start in range(0, int(chosen.size), group):
            copies: list[Image.Image] = []
            for r in chosen[start : start + group]:
                try:
                    img = load_image(base / paths[int(r)])
                except ImageReadError as e:
                    logger.warning("skipped %s: %s", paths[int(r)], e)
                    skipped.append(paths[int(r)])
                    bar.update(len(names))
                    continue
                for name, copy in make_edits(img, names).items():
                    copies.append(copy)
                    orig.append(int(r))
                    kinds.append(name)
            if not copies:
                continue
            vecs = emb.embed(copies, batch_size=batch_size)
            _, found = idx.topk(vecs, k, exact=True)
            found_parts.append(found)
            bar.update(len(copies))
    finally:
        bar.close()
    if not orig:
        raise DatasetLayoutError(f"none of the {chosen.size} sampled photos could be read from {str(base)!r}")
    found_all = np.concatenate(found_parts)
    return near_duplicate_metrics(found_all, orig, kinds, k=k, n_images=n, skipped=skipped)


# ============================================================================ tuning the search expansion


def tune_expansion(
    index: Index | str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    *,
    k: int = 9,
    layout: str = "auto",
    qe: Sequence[int] = (0, 1, 2, 3),
    dba: Sequence[int] = (0, 1, 2, 3),
    alpha: Sequence[float] = (1.0, 3.0),
    progress: bool = False,
) -> list[tuple[Any, ClassRetrievalReport]]:
    """Score search-expansion settings on a labelled collection, best first: to re-tune it for that collection.

    Every combination of ``qe`` x ``dba`` x ``alpha`` (the same exponent for query expansion and
    augmentation) is evaluated leave-one-out from the index's vectors (nothing is rebuilt), as
    :func:`evaluate_index` does. Record the winner with ``Index.build(..., expansion=...)``
    (``revsearch index ... --qe Q --dba D --alpha A --dba-alpha A``); searches then use it.

    Parameters
    ----------
    index : Index or path
    dataset_dir : path, optional
    k : int, default 9
    layout : {"auto", "folder", "prefix"}
    qe, dba : sequence of int
        Neighbours tried (0: off).
    alpha : sequence of float
        Exponents tried.
    progress : bool, default False

    Returns
    -------
    list of (Expansion, ClassRetrievalReport)
        Sorted by mean average precision, then precision@k, best first; the plain search is one
        of them (``qe=0, dba=0``).
    """
    from tqdm.auto import tqdm

    from .index import Index
    from .rerank import Expansion

    idx = index if isinstance(index, Index) else Index.open(index)
    if dataset_dir is not None:
        _check_dataset_dir(idx, dataset_dir)
    paths = idx.paths
    labels, found = class_labels(paths, layout)
    settings: list[Any] = []
    for a in alpha:
        for q in qe:
            for d in dba:
                e = Expansion(int(q), float(a), int(d), float(a))
                if not e.active:
                    e = Expansion(0, 3.0, 0, 3.0)
                if e not in settings:
                    settings.append(e)
    default = idx.expansion
    out = []
    for e in tqdm(settings, desc="tuning", unit="setting", disable=not progress):
        rep = retrieval_metrics(idx.shards, labels, k, paths=paths, layout=found, qe=e.qe, alpha=e.alpha, dba=e.dba,
                                dba_alpha=e.dba_alpha)
        rep.options["as_search"] = e == default
        out.append((e, rep))
    out.sort(key=lambda t: (-t[1].mean_average_precision, -t[1].precision_at_k))
    return out
