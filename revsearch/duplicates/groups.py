"""Stage two and three: the groups of duplicates, and the report users act on.

The groups are the connected components of the duplicate graph (union-find); every group has
one copy to keep, chosen by a rule (``keep``), and the others.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.safety import display_name, to_json
from ..retrieval.ann import Rows
from .candidates import (
    DEFAULT_K,
    DEFAULT_NPROBE,
    SHORTLIST_K,
    TURN_SIDE,
    Calibration,
    check_threshold,
    default_threshold,
    duplicate_edges,
    knn_pairs,
    shortlist_floor,
    turn_descriptors,
    turn_pairs,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..storage.index import Index

logger = logging.getLogger(__name__)

#: Groups up to this size list every pairwise score; larger ones list the graph's edges only.
PAIRWISE_MAX = 64
#: Which copy of a group is kept.
KEEP_RULES = ("largest", "oldest", "newest", "first")
#: What counts as a duplicate: ``copies`` (one image is an edited copy of the other, verified) or
#: ``similar`` (the vectors' cosine reaches a threshold: near-identical shots, the same scene).
MODES = ("copies", "similar")
#: Mode copies: a member of a group not verified against the group's hub (the member with the most
#: verified matches) stays if it is a verified copy of at least this many other members.
MIN_LINKS = 3


def _copy_edges(
    index: Index, other: Index | None, base: Path | None, obase: Path | None, floor: float | None, k: int,
    method: str, nprobe: int, workers: int | None, progress: bool, info: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, dict[tuple[int, int], Any]]:
    """Mode copies: the shortlist (vectors, and turned/mirrored thumbnails), then the verifier.

    Returns the verified edges (src, dst, cosine), ``check(kept, other)``, which verifies a
    group member against the copy kept (features cached), and the verdicts of the verified pairs
    by (i, j), i < j (each maps j onto i)."""
    from ..core.errors import ImageReadError
    from ..storage.thumbs import StoredThumbnails, thumbnail_of_file
    from .verify import FeatureCache, Verdict, verify_pair, verify_pairs

    n = len(index)
    t0 = time.perf_counter()
    pairs, _ = knn_pairs(index, k, floor, against=other, method=method, nprobe=nprobe, progress=progress, info=info)
    t_knn = time.perf_counter() - t0
    stored = [StoredThumbnails(index.snapshot)] + ([StoredThumbnails(other.snapshot)] if other is not None else [])
    made = {"photos": 0, "unreadable": 0}
    from collections import OrderedDict

    from_photos: OrderedDict[int, np.ndarray | None] = OrderedDict()  # bounded: made thumbnails kept for reuse

    def thumb_of(row: int) -> np.ndarray | None:
        which, local, folder, idx = (0, row, base, index) if row < n else (1, row - n, obase, other)
        t = stored[which].get(local)
        if t is not None:
            return t
        if row in from_photos:
            return from_photos[row]
        rel = idx.snapshot.path_at(local)  # type: ignore[union-attr]
        path = (folder / rel) if folder is not None else Path(rel)
        made["photos"] += 1
        try:
            t = thumbnail_of_file(path)
        except (ImageReadError, OSError) as e:
            made["unreadable"] += 1
            logger.warning("cannot verify %s: %s", path, e)
            t = None
        from_photos[row] = t
        if len(from_photos) > 20_000:  # 37 KiB each
            from_photos.popitem(last=False)
        return t

    missing = sum(int((~s.present).sum()) for s in stored)
    if missing:
        logger.info("%d images have no stored thumbnail: made from the photos (an index update stores them)", missing)
    t1 = time.perf_counter()
    n_all = n + (len(other) if other is not None else 0)
    desc = np.zeros((n_all, TURN_SIDE * TURN_SIDE), np.float16)  # 512 bytes per image
    for s0 in range(0, n_all, 4096):
        rows = range(s0, min(n_all, s0 + 4096))
        desc[s0 : s0 + len(rows)] = turn_descriptors([thumb_of(r) for r in rows])
    turns = turn_pairs(desc, n_first=n if other is not None else None)
    del desc
    t_turn = time.perf_counter() - t1
    cand = np.unique(np.concatenate([pairs.reshape(-1, 2), turns]), axis=0) if len(turns) else pairs.reshape(-1, 2)
    cache = FeatureCache(thumb_of)
    t2 = time.perf_counter()
    verdicts_list = verify_pairs(cand, cache, workers=workers, progress=progress)
    t_verify = time.perf_counter() - t2
    ok = np.array([v.accepted for v in verdicts_list], bool)
    acc = cand[ok] if len(cand) else np.zeros((0, 2), np.int64)
    all_rows = Rows(_shards(index) + (_shards(other) if other is not None else []))
    sc = np.einsum("ij,ij->i", all_rows.take(acc[:, 0]), all_rows.take(acc[:, 1])) if len(acc) else np.zeros(0, np.float32)

    def check(kept: int, other: int) -> Any:
        """Verify ``other`` against the copy kept (its transform maps other onto kept)."""
        fa, fb = cache.get(kept), cache.get(other)
        if fa is None or fb is None:
            return Verdict(False, reason="an image has no thumbnail (unreadable or missing)")
        return verify_pair(fa, fb)
    info.update(
        candidates=int(len(cand)), candidates_vectors=int(len(pairs)), candidates_turned=int(len(turns)),
        verified=int(ok.sum()), thumbnails_from_photos=made["photos"], unreadable=made["unreadable"],
        shortlist_seconds=round(t_knn, 3), turn_seconds=round(t_turn, 3), verify_seconds=round(t_verify, 3),
        features_computed=cache.computed,
        ms_per_pair=round(1000 * t_verify / max(1, len(cand)), 3),
    )
    src = np.concatenate([acc[:, 0], acc[:, 1]]).astype(np.int64)
    dst = np.concatenate([acc[:, 1], acc[:, 0]]).astype(np.int64)
    verdicts = {(int(i), int(j)): v for (i, j), v in zip(acc.tolist(), [v for v in verdicts_list if v.accepted])}
    return src, dst, np.concatenate([sc, sc]).astype(np.float32), check, verdicts


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
    matches : list of (int, int, Verdict)
        Mode ``copies``: for every copy j not kept, (0, j, verdict) when it is a verified copy
        of the kept one, else (i, j, verdict) for a verified copy i in the group (a member must
        be verified against the group's hub - its member with the most verified matches - or against
        :data:`MIN_LINKS` others, or it leaves the group). The
        verdict says why it matched (:class:`~revsearch.duplicates.verify.Verdict`: the
        transform mapping file j onto file i, tiles, residual).
    """

    files: list[DuplicateFile]
    pairs: list[tuple[int, int, float]] = field(default_factory=list)
    matches: list[tuple[int, int, Any]] = field(default_factory=list)

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
            "matches": [[i, j, v.to_dict()] for i, j, v in self.matches],
        }


@dataclass
class DuplicateReport:
    """The near-duplicate groups of a collection (or across two).

    Attributes
    ----------
    groups : list of DuplicateGroup
        Largest groups first, then by the kept copy's path.
    threshold : float
        Mode ``similar``: the cosine from which images are duplicates. Mode ``copies``: the
        shortlist's cosine floor (nan: the shortlist is by rank only, for a model without
        calibration).
    calibration : Calibration or None
        Where the default threshold came from (None if ``threshold`` was given).
    mode : str
        ``"copies"`` (verified edited copies) or ``"similar"`` (cosine threshold).
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
    mode: str = "similar"

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
            f"images{against} ({self._how()}, keep {self.keep_rule}, {self.method}, "
            f"{self.seconds:.1f} s)"
        )

    def _how(self) -> str:
        if self.mode == "similar":
            return f"similar: cosine >= {self.threshold:.3f}"
        floor = "by rank" if math.isnan(self.threshold) else f"cosine >= {self.threshold:.3f}"
        return (f"copies: {self.info.get('verified', 0)} of {self.info.get('candidates', 0)} candidate pairs verified, "
                f"shortlist {floor}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "mode": self.mode,
            "threshold": None if math.isnan(self.threshold) else self.threshold,
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
        return to_json(self.to_dict(), **kwargs)  # NaN and infinity never written (strict JSON)

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write one line per file: group, role (keep/duplicate), collection, path, score, pixels,
        bytes, mtime."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["group", "role", "collection", "path", "relpath", "score_to_kept", "pixels", "bytes", "mtime"])
            for gi, g in enumerate(self.groups):
                for j, m in enumerate(g.files):
                    w.writerow([
                        # a report for people: control characters of names shown escaped
                        gi + 1, "keep" if j == 0 else "duplicate", m.collection, display_name(m.path),
                        display_name(m.relpath),
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
    from ..storage.index import Index

    return index_or_folder if isinstance(index_or_folder, Index) else Index.open(index_or_folder)


def _shards(index: Index) -> list[np.ndarray]:
    shards = getattr(index, "shards", None)  # the memory-mapped shards, if the index exposes them
    return list(shards) if shards is not None else [index.vectors]


def find_duplicates(
    index_or_folder: Index | str | os.PathLike,
    threshold: float | None = None,
    *,
    against: Index | str | os.PathLike | None = None,
    k: int | None = None,
    keep: str = "largest",
    method: str = "auto",
    nprobe: int = DEFAULT_NPROBE,
    dataset_dir: str | os.PathLike | None = None,
    against_dataset_dir: str | os.PathLike | None = None,
    progress: bool = False,
    mode: str = "copies",
    workers: int | None = None,
) -> DuplicateReport:
    """Find the groups of duplicate images of an index (or across two indexes).

    Two modes. ``"copies"`` (the default): one image is an edited copy of the other. A
    shortlist (each image's ``k`` nearest by the vectors, with a calibrated cosine floor when
    the model has one, plus the turned/mirrored thumbnails' nearest) is verified pair by pair
    on the stored thumbnails (:mod:`revsearch.duplicates.verify`); every member of a group is
    verified against the group's hub (its member with the most verified matches) or against
    MIN_LINKS (3) other members. ``"similar"``: the vectors'
    cosine reaches ``threshold`` (near-identical shots, the same scene).

    Parameters
    ----------
    index_or_folder : Index or path
        An index, or its folder (the vector folder).
    threshold : float, optional
        Mode similar: the cosine similarity in [-1, 1] at or above which two images are
        duplicates (default: the model's calibrated threshold, :func:`default_threshold`).
        Mode copies: the shortlist's cosine floor (default :func:`shortlist_floor`: calibrated
        per model; none, by rank only, for a model without calibration).
    against : Index or path, optional
        Another index made by the same model: only pairs with one image in each count. It is
        never modified.
    k : int, optional
        Neighbours per image in the graph (default :data:`DEFAULT_K` in mode similar,
        :data:`SHORTLIST_K` in mode copies).
    keep : {"largest", "oldest", "newest", "first"}
        The copy to keep: most pixels (then largest file); oldest or newest modification time;
        first by path. Ties go to the first path.
    method : {"auto", "exact", "approximate"}
        See the module docstring; ``auto`` is exact up to :data:`EXACT_MAX_VECTORS` vectors, approximate
        (FAISS, :func:`revsearch.retrieval.ann.knn_join`) above it where FAISS is installed.
    nprobe : int, default DEFAULT_NPROBE
        Cells compared per vector by the approximate method.
    dataset_dir, against_dataset_dir : path, optional
        Where the images are (default: as recorded in each index).
    progress : bool, default False
    mode : {"copies", "similar"}, default "copies"
    workers : int, optional
        Verification threads in mode copies (default: the number of CPUs, at most 8).

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
        For a threshold outside [-1, 1], an unknown ``keep`` rule, ``method`` or ``mode``, or ``k`` < 1.
    OptionalDependencyError
        Mode copies without OpenCV (``pip install revsearch[duplicates]``).
    """
    t0 = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if k is None:
        k = DEFAULT_K if mode == "similar" else SHORTLIST_K
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)}, not {keep!r}")
    if threshold is not None:
        threshold = check_threshold(threshold)
    index = _open_index(index_or_folder)
    other = _open_index(against) if against is not None else None
    if other is not None:
        index.check_compatible(other.spec)
    calibration = None
    if threshold is None and mode == "similar":
        threshold, calibration = default_threshold(index.spec)
    elif threshold is None:
        threshold, calibration = shortlist_floor(index.spec)
    base = Path(dataset_dir) if dataset_dir is not None else index.dataset_dir
    obase = None
    if other is not None:
        obase = Path(against_dataset_dir) if against_dataset_dir is not None else other.dataset_dir
    n = len(index)
    info: dict[str, Any] = {"mode": mode}
    n_total = n + (len(other) if other is not None else 0)
    check = None
    neighbours: dict[int, list[int]] = {}
    edge_verdicts: dict[tuple[int, int], Any] = {}
    if mode == "similar":
        src, dst, scores = duplicate_edges(
            _shards(index), threshold, against=_shards(other) if other is not None else None, k=k, method=method,
            nprobe=nprobe, progress=progress, info=info,
        )
    else:
        src, dst, scores, check, edge_verdicts = _copy_edges(
            index, other, base, obase, threshold, k, method, nprobe, workers, progress, info,
        )
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
    for u, w in zip(src.tolist(), dst.tolist()):  # mode copies: the verified matches of each image
        neighbours.setdefault(u, []).append(w)
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
    all_rows = Rows(_shards(index) + (_shards(other) if other is not None else []))
    for label, nodes in groups_rows.items():
        files = []
        for node in nodes:
            if node < n:
                rel, folder, coll, row = index_paths[node], base, "index", node
            else:
                rel, folder, coll, row = other_paths[node - n], obase, "against", node - n
            path = (folder / rel) if folder is not None else Path(rel)
            files.append(DuplicateFile(path, rel, row, coll, 1.0, *_stat(path)))
        to_keep: dict[int, Any] = {}
        via: dict[int, tuple[int, Any]] = {}
        if check is not None:
            # mode copies: the group's hub is the member with the most verified matches (usually the
            # original); a member stays if it is a verified copy of the hub, or of MIN_LINKS members (one
            # or two false matches never pull another frame or shot into a group of copies)
            in_group = set(nodes)
            links = {u: [w for w in neighbours.get(u, ()) if w in in_group] for u in nodes}
            hub = max(range(len(nodes)), key=lambda i: (len(set(links[nodes[i]])), -nodes[i]))
            to_hub = {i: check(nodes[hub], nodes[i]) for i in range(len(nodes)) if i != hub}
            valid = [i for i in range(len(nodes))
                     if i == hub or to_hub[i].accepted or len(set(links[nodes[i]])) >= MIN_LINKS]
            if len(valid) < len(nodes):
                info["dropped_from_groups"] = info.get("dropped_from_groups", 0) + len(nodes) - len(valid)
            if len(valid) < 2:
                continue
            remap = {old: new for new, old in enumerate(valid)}
            files = [files[i] for i in valid]
            nodes = [nodes[i] for i in valid]
            to_hub = {remap[i]: v for i, v in to_hub.items() if i in remap}
            hub = remap[hub]
            order = sorted(range(len(files)), key=lambda i: _keep_key(keep)(files[i]))
            kept = order[0]
            # why each copy matched: against the kept copy if verified, else against the hub, else a link
            for i in range(len(files)):
                if i == kept:
                    continue
                v = check(nodes[kept], nodes[i])
                if v.accepted:
                    to_keep[i] = v
                elif i != hub and to_hub.get(i) is not None and to_hub[i].accepted:
                    via[i] = (hub, to_hub[i], True)
                else:
                    w_node = next((w for w in links[nodes[i]] if w in set(nodes)), None)
                    if w_node is not None:
                        a_, b_ = sorted((nodes[i], w_node))
                        via[i] = (nodes.index(w_node), edge_verdicts[(a_, b_)], a_ == w_node)
        else:
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
                if u not in where or w not in where:  # a member dropped (not verified against the copy kept)
                    continue
                i, j = sorted((where[u], where[w]))
                if (i, j) not in seen:
                    seen.add((i, j))
                    pairs.append((i, j, float(sc)))
            pairs.sort()
        matches = [(0, perm.index(i), v) for i, v in to_keep.items()]
        for i, (w, ev, w_is_first) in via.items():
            # a verdict maps its second image onto its first
            matches.append((perm.index(w), perm.index(i), ev) if w_is_first else (perm.index(i), perm.index(w), ev))
        matches.sort(key=lambda m: (m[1], m[0]))
        groups.append(DuplicateGroup(files, pairs, matches))
    groups.sort(key=lambda g: (-len(g), str(g.keep.path)))
    report = DuplicateReport(
        groups=groups, threshold=float(threshold) if threshold is not None else float("nan"), mode=mode, calibration=calibration, k=k, keep_rule=keep,
        method=str(info.get("method", method)), n_images=n, n_against=len(other) if other is not None else 0,
        index_dir=index.folder, dataset_dir=base, against_index_dir=other.folder if other is not None else None,
        against_dataset_dir=obase, info=info,
    )
    report.seconds = time.perf_counter() - t0
    logger.info("duplicates in %s: %s", index.folder, report.summary())
    return report
