"""Indexing: scanning a dataset folder, the incremental writer, and merging shards.

Used by :meth:`revsearch.Index.build` / :meth:`~revsearch.Index.update` (one process) and by
:mod:`revsearch.storage.distributed` (a Dask cluster). Every file goes through :mod:`revsearch.storage.store`.

One run, in order, so that a failure at any step leaves the index as it was or with its
progress committed:

1. the dataset folder is scanned (names with line breaks are skipped, with the reason);
2. for a new index the model is loaded first: no reachable weights, nothing written;
3. under the folder's lock, the plan: which rows stay (same size and mtime, or same content
   hash), which files are embedded (new or changed), which rows go (files deleted). An update
   that would remove all rows, or more than half of an index of at least
   :data:`PRUNE_MIN_ROWS` rows, stops here unless ``prune=True``: an unmounted Drive folder
   looks exactly like a folder whose photos were deleted;
4. the model is loaded if anything is to be embedded, before anything is written;
5. images are embedded in batches; progress is committed every ``checkpoint_every`` images
   and every ``checkpoint_seconds`` (default 30 s), whichever comes first;
6. small shards are merged into shards of about :data:`TARGET_SHARD_BYTES` (skipped, with a
   warning, if the disk is too full for the copy), the index is marked complete, and an
   approximate index it had is extended or rebuilt (:mod:`revsearch.retrieval.ann`);
7. the database-side augmentation search uses (:func:`refresh_augmentation`) is brought up to
   date: only rows whose neighbour lists change are computed again, then committed on its own.
   A run killed before this commit leaves the previous augmentation aside (``dba_stale``), and
   the next run starts from it; search meanwhile computes it in memory.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import store
from ..models.embedding import Embedder, FileInfo, get_embedder, l2_normalize
from ..core.errors import RevsearchError, StorageFullError, UpdateRefusedError
from ..media.images import FOLLOW_LINKS, SkippedFile, file_digest, find_images, path_excluded
from .index import Index
from .store import ROW_DTYPE, FolderWriter, Manifest, ShardRef, ShardView
from .thumbs import fill_thumbnails

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_EVERY",
    "CHECKPOINT_SECONDS",
    "TARGET_SHARD_BYTES",
    "PRUNE_MIN_ROWS",
    "IGNORE_FILE",
    "Scan",
    "UpdateReport",
    "path_excluded",
    "scan_dataset",
    "read_ignore_file",
    "rows_from_infos",
    "check_prune",
    "index_fields",
    "merge_shards",
    "refresh_ann",
    "refresh_augmentation",
    "ANN_AUGMENT_MIN_ROWS",
    "ANN_AUGMENT_MIN_SEARCHES",
    "update_folder",
    "index_from_vectors",
]

#: Commit progress after this many embedded images ...
CHECKPOINT_EVERY = 512
#: ... or after this many seconds of embedding, whichever comes first.
CHECKPOINT_SECONDS = 30.0
#: Shards are merged at the end of an indexing run until each holds about this many bytes.
TARGET_SHARD_BYTES = 256 * 2**20
#: An update removing more than half the rows of an index this big (or all rows of any index) needs prune=True.
PRUNE_MIN_ROWS = 10
#: A file in the dataset folder listing more exclusion patterns, one per line (``#`` starts a comment).
IGNORE_FILE = ".revsearchignore"
#: From this many rows, the augmentation's neighbours are found approximately (FAISS, where installed):
#: through the index's approximate index if it has one, else a temporary IVF-PQ (:func:`revsearch.retrieval.ann.neighbour_search`) ...
ANN_AUGMENT_MIN_ROWS = 50_000
#: ... when at least this many rows are to be searched (fewer, e.g. an update adding 1%: exactly).
ANN_AUGMENT_MIN_SEARCHES = 20_000


# ---------------------------------------------------------------------------------------- the report
@dataclass
class UpdateReport:
    """What an indexing run did.

    Attributes
    ----------
    added, updated, removed, unchanged : list of str
        Relative paths of images that were new, changed (re-embedded), deleted from the folder
        or excluded (dropped from the index), or kept as they were.
    moved, copied : list of str
        New relative paths whose content the index already held (found by content hash), so their
        vector was reused, not computed again: ``moved`` if the old path is gone (a move or
        rename; the old path is not listed in ``removed``), ``copied`` if it is still there.
    skipped : list of SkippedFile
        Files that could not be read, with the reason.
    seconds : float
        Wall time of the run.
    augmented : int
        Rows whose database-side augmentation (stored for search) was computed again: only rows
        whose neighbour lists changed (0 when nothing changed).
    """

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    moved: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    augmented: int = 0

    @property
    def embedded(self) -> int:
        """Number of images embedded in this run."""
        return len(self.added) + len(self.updated)

    def summary(self) -> str:
        """One line: counts of each kind."""
        reused = "".join(f"{len(v)} {k}, " for k, v in (("moved", self.moved), ("copied", self.copied)) if v)
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
            f"{len(self.unchanged)} unchanged, {reused}{len(self.skipped)} skipped in {self.seconds:.1f} s"
            + (f"; search augmentation recomputed for {self.augmented} rows" if self.augmented else "")
        )


# ---------------------------------------------------------------------------------------- scanning
@dataclass
class Scan:
    """The images of a dataset folder, as an indexing run sees them.

    Attributes
    ----------
    dataset : pathlib.Path
        The dataset folder.
    files : list of pathlib.Path
        Shape (n,), the image files, sorted by ``rel``.
    rel : list of str
        Shape (n,), their paths relative to ``dataset``, ``/``-separated (non-UTF-8 bytes of a
        POSIX name kept as surrogate escapes, so the file can be opened again).
    skipped : list of SkippedFile
        Files that cannot be indexed (a line break in the name).
    excluded : list of str
        Relative paths left out by an exclusion pattern.
    patterns : list of str
        The patterns applied (given ones, then those of the ignore file).
    """

    dataset: Path
    files: list[Path]
    rel: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)

    def stats(self) -> list[tuple[int, int]]:
        """Each file's (size, mtime_ns), shape (n,)."""
        out = []
        for f in self.files:
            st = os.stat(f)
            out.append((st.st_size, st.st_mtime_ns))
        return out


def read_ignore_file(dataset_dir: str | os.PathLike) -> list[str]:
    """The exclusion patterns of the dataset folder's :data:`IGNORE_FILE` (empty if there is none)."""
    path = Path(dataset_dir) / IGNORE_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def scan_dataset(
    dataset_dir: str | os.PathLike,
    vector_dir: str | os.PathLike | None = None,
    exclude: Sequence[str] = (),
    *,
    follow_links: str = "inside",
) -> Scan:
    """List the images of a dataset folder for indexing.

    Hidden files and folders and the index folder (if it lies inside ``dataset_dir``) are left
    out, and so is every path matching a pattern of ``exclude`` or of the folder's
    :data:`IGNORE_FILE` (syntax: :func:`revsearch.media.images.path_excluded`).

    Parameters
    ----------
    dataset_dir : path
    vector_dir : path, optional
        The index folder.
    exclude : sequence of str
        Exclusion patterns, e.g. ``"*/thumbnails/*"``, ``"raw"``, ``"*.png"``.
    follow_links : {"inside", "all", "none"}, default "inside"
        Which symbolic links are followed (see :func:`revsearch.media.images.find_images`).

    Returns
    -------
    Scan
    """
    dataset = Path(dataset_dir)
    folders_skipped: list[SkippedFile] = []  # unreadable folders, links to folders already searched
    files = find_images(
        dataset, exclude=[Path(vector_dir)] if vector_dir is not None else None, skipped=folders_skipped,
        follow_links=follow_links,
    )
    rel = [p.relative_to(dataset).as_posix() for p in files]
    patterns = [*exclude, *read_ignore_file(dataset)]
    scan = Scan(dataset, [], [], skipped=folders_skipped, patterns=patterns)
    for f, r in zip(files, rel):
        if path_excluded(r, patterns):
            scan.excluded.append(r)
            continue
        why = store.check_relpath(r)
        if why is not None:
            scan.skipped.append(SkippedFile(f, "file name contains a line break" if "line break" in why else why))
            continue
        scan.files.append(f)
        scan.rel.append(r)
    return scan


def rows_from_infos(infos: Sequence[FileInfo]) -> np.ndarray:
    """File records for the index, shape (n,) :data:`~revsearch.storage.store.ROW_DTYPE`."""
    rows = np.zeros(len(infos), ROW_DTYPE)
    for i, inf in enumerate(infos):
        rows[i] = (inf.size, inf.mtime_ns, inf.digest)
    return rows


def index_fields(dataset: Path | None, emb: Embedder | None = None) -> dict[str, Any]:
    """What an indexing run records about its dataset folder and weights file, as keyword arguments
    of :meth:`revsearch.storage.store.FolderWriter.commit` (the store knows how they are written)."""
    fields: dict[str, Any] = {}
    if dataset is not None:
        fields["dataset_dir"] = Path(dataset)
    if emb is not None and emb.weights_path is not None:
        fields["weights_path"] = str(emb.weights_path)
    return fields


def check_prune(
    folder: Path, dataset: Path, n_old: int, removed: int, n_found: int, recorded: str | None, prune: bool
) -> None:
    """Refuse (before anything is written) an update that would remove all or most rows.

    Raises
    ------
    UpdateRefusedError
        Unless ``prune``, if ``removed`` is all of ``n_old`` rows, or more than half of at
        least :data:`PRUNE_MIN_ROWS`.
    """
    if prune or removed == 0:
        return
    if removed < n_old and not (n_old >= PRUNE_MIN_ROWS and 2 * removed > n_old):
        return
    where = ""
    here = str(Path(dataset).resolve())
    if recorded and recorded != here:
        where = f" (the index was built from {recorded!r})"
    raise UpdateRefusedError(
        f"refusing to update the index in {str(folder)!r}: the dataset folder {str(dataset)!r}{where} holds "
        f"{n_found} images, so {removed} of the {n_old} indexed images would be removed. Nothing was changed. "
        "Check the folder (is the drive mounted and synced?); if those images were really deleted, run again "
        "with prune=True (command line: --prune)"
    )


# ---------------------------------------------------------------------------------------- merging
def merge_shards(writer: FolderWriter, shards: Sequence[ShardRef], dim: int) -> list[ShardRef]:
    """Merge runs of small shards into shards of about :data:`TARGET_SHARD_BYTES` (streamed).

    If the disk is too full for the merged copy, the shards are kept as they are (searching
    them is as exact; only opening is a little slower) and a warning is logged.

    Returns
    -------
    list of ShardRef
        The new shard list (not committed yet).
    """
    target_rows = max(1, TARGET_SHARD_BYTES // (4 * dim))
    groups: list[list[ShardRef]] = []
    for s in shards:
        if groups and sum(g.count for g in groups[-1]) + s.count <= target_rows:
            groups[-1].append(s)
        else:
            groups.append([s])
    out: list[ShardRef] = []
    for g in groups:
        if len(g) == 1:
            out.extend(g)
            continue
        views = [writer.view(s, dim=dim) for s in g]
        try:
            merged = writer.write_shard(
                (v.vectors for v in views),
                np.concatenate([np.asarray(v.rows) for v in views]),
                [p for v in views for p in v.paths],
                dim=dim,
            )
        except StorageFullError as e:
            logger.warning("%s; the index keeps %d small shards instead of one", e, len(g))
            out.extend(g)
            continue
        out.append(merged)
    return out


# ---------------------------------------------------------------------------------------- the writer
class _Run:
    """Commits one indexing run's progress: kept shards, new checkpoint shards, then the merge."""

    def __init__(self, writer: FolderWriter, emb: Embedder, fields: dict[str, Any], every: int, seconds: float) -> None:
        self.w = writer
        self.emb = emb
        self.fields = fields
        self.every = int(every)
        self.seconds = float(seconds)
        self.shards: list[ShardRef] = []
        self.buf_vec: list[np.ndarray] = []
        self.buf_paths: list[str] = []
        self.buf_infos: list[FileInfo] = []
        self.last_commit = time.monotonic()

    def commit(self, *, complete: bool) -> Manifest:
        # the approximate index is stale once the vectors change: kept for the end of the run (stale_ann)
        manifest = self.w.commit(shards=self.shards, spec=self.emb.spec, complete=complete, stale_ann=True, **self.fields)
        self.last_commit = time.monotonic()
        return manifest

    def add(self, paths: list[str], vectors: np.ndarray, infos: list[FileInfo]) -> None:
        self.buf_vec.append(vectors)
        self.buf_paths.extend(paths)
        self.buf_infos.extend(infos)
        if len(self.buf_paths) >= self.every or time.monotonic() - self.last_commit >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if not self.buf_paths:
            return
        shard = self.w.write_shard(np.concatenate(self.buf_vec), rows_from_infos(self.buf_infos), self.buf_paths)
        self.shards.append(shard)
        self.buf_vec, self.buf_paths, self.buf_infos = [], [], []
        self.commit(complete=False)

    def finish(self) -> Manifest:
        self.flush()
        self.shards = merge_shards(self.w, self.shards, self.emb.dim)
        return self.commit(complete=True)


def _same_file(path: Path, row: np.void) -> str:
    """``"same"``, ``"refreshed"`` (same content, new size/mtime recorded in ``row``) or ``"changed"``."""
    try:
        st = os.stat(path)
    except OSError:
        return "changed"
    if int(row["size"]) == st.st_size and int(row["mtime_ns"]) == st.st_mtime_ns:
        return "same"
    if int(row["size"]) in (st.st_size, -1):
        digest = file_digest(path)
        if int(row["size"]) == -1:
            row["digest"] = digest  # a legacy row: trust the vector, learn the file
            row["size"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
            return "refreshed"
        if bytes(row["digest"]) == digest:
            row["size"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
            return "refreshed"
    return "changed"


@dataclass
class _Plan:
    kept: list[tuple[ShardView, np.ndarray, np.ndarray, bool]]  # view, keep mask, rows, rewrite?
    todo: list[int]
    n_old: int
    reuse: list[tuple[int, ShardView, int, FileInfo]] = field(default_factory=list)  # scan index, old row


def _find_reuse(plan: _Plan, scan: Scan, report: UpdateReport) -> None:
    """Take the vectors of files the index already holds under another path (moved, renamed, copied).

    Only files whose size equals a stored row's are hashed, so an ordinary update reads nothing more.
    """
    by_size: dict[int, list[tuple[ShardView, int]]] = {}
    for view, _, rows, _ in plan.kept:
        sizes = np.asarray(rows["size"])
        for j in np.flatnonzero(sizes >= 0):
            by_size.setdefault(int(sizes[j]), []).append((view, int(j)))
    if not by_size:
        return
    rows_of = {id(view): rows for view, _, rows, _ in plan.kept}
    removed = set(report.removed)
    claimed: set[str] = set()
    todo = []
    for i in plan.todo:
        try:
            st = os.stat(scan.files[i])
        except OSError:
            todo.append(i)
            continue
        candidates = by_size.get(st.st_size)
        if not candidates:
            todo.append(i)
            continue
        try:
            digest = file_digest(scan.files[i])
        except OSError:
            todo.append(i)
            continue
        same = [(v, j) for v, j in candidates if bytes(rows_of[id(v)][j]["digest"]) == digest]
        if not same:
            todo.append(i)
            continue
        moved = [(v, j) for v, j in same if v.paths[j] in removed and v.paths[j] not in claimed]
        view, j = (moved or same)[0]
        new = scan.rel[i]
        for lst in (report.added, report.updated):
            if new in lst:
                lst.remove(new)
        if moved:
            claimed.add(view.paths[j])
            report.moved.append(new)
        else:
            report.copied.append(new)
        plan.reuse.append((i, view, j, FileInfo(st.st_size, st.st_mtime_ns, digest)))
    if claimed:
        report.removed = [p for p in report.removed if p not in claimed]
    plan.todo = todo


def _plan(snap: store.Snapshot | None, scan: Scan, report: UpdateReport) -> _Plan:
    """Decide which rows stay, which are taken for moved or copied files, and which files are embedded
    (nothing is written)."""
    where = {r: i for i, r in enumerate(scan.rel)}
    if snap is None:
        report.added.extend(scan.rel)
        return _Plan([], list(range(len(scan.rel))), 0)
    kept: list[tuple[ShardView, np.ndarray, np.ndarray, bool]] = []
    keep_paths: list[str] = []
    again: set[str] = set()
    for shard in snap.shards:
        rows = np.array(shard.rows)  # small copy: (n,) records
        mask = np.zeros(shard.count, bool)
        refreshed = False
        damaged = shard.damaged_rows()  # NaN, inf, wrong length: a damaged file; embedded again
        if damaged.any():
            logger.warning(
                "the index in %s holds %d damaged vectors (NaN, infinite or not unit length) in %s: their images "
                "are embedded again", snap.folder, int(damaged.sum()), shard.ref.files["vectors"],
            )
            rows["size"][damaged] = -2  # never taken for a moved or copied file
        for j, path in enumerate(shard.paths):
            i = where.get(path)
            if i is None:
                report.removed.append(path)
                continue
            status = "changed" if damaged[j] else _same_file(scan.files[i], rows[j])
            if status == "changed":
                again.add(path)
                continue
            mask[j] = True
            refreshed |= status == "refreshed"
        keep_paths.extend(p for p, m in zip(shard.paths, mask) if m)
        kept.append((shard, mask, rows, refreshed or not mask.all()))
    kept_set = set(keep_paths)
    report.unchanged.extend(keep_paths)
    todo = []
    for i, r in enumerate(scan.rel):
        if r in kept_set:
            continue
        (report.updated if r in again else report.added).append(r)
        todo.append(i)
    plan = _Plan(kept, todo, len(snap))
    if todo:
        _find_reuse(plan, scan, report)
    return plan


def update_folder(
    dataset_dir: str | os.PathLike,
    vector_dir: str | os.PathLike,
    embedder: Embedder | str = "resnet50",
    *,
    weights: str | os.PathLike | None = "imagenet",
    batch_size: int | None = None,
    workers: int | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    prune: bool = False,
    exclude: Sequence[str] | None = None,
    progress: bool = True,
    expansion: Any = None,
    follow_links: str | None = None,
) -> tuple[Index, UpdateReport]:
    """Create or incrementally update the index of ``dataset_dir`` in ``vector_dir``.

    Only new or changed images are embedded (a file is unchanged if its size and modification
    time match, or failing that its content hash); a moved, renamed or copied file whose content
    the index holds takes the stored vector; rows of deleted or excluded files are dropped.

    Parameters
    ----------
    dataset_dir : path
        Folder of images (searched recursively).
    vector_dir : path
        Index folder (created if needed). May lie inside ``dataset_dir`` (it is not indexed), or
        be the dataset folder itself.
    embedder : Embedder or str, default "resnet50"
        The model. An existing index must have been built with a compatible one (an empty
        index may be rebuilt with another).
    weights : {"imagenet", None} or path
        Used when ``embedder`` is a name.
    batch_size : int, optional
        Images per model call (at least 1). Default: the embedder's (``Embedder.batch_size``: 32
        on a CPU, larger on a GPU with room for it).
    workers : int, optional
        Image-reading threads.
    checkpoint_every : int, default 512
        Commit progress after this many images ...
    checkpoint_seconds : float, default 30
        ... or after this many seconds, whichever comes first: a killed run loses at most that.
    prune : bool, default False
        Confirm an update that removes all the rows, or more than half of them (see
        :func:`check_prune`); without it such an update is refused before anything changes.
        Rows of files excluded on purpose do not count.
    exclude : sequence of str, optional
        Exclusion patterns (see :func:`revsearch.media.images.path_excluded`), recorded in the index so
        later updates apply them too; None keeps the recorded ones, ``[]`` clears them. The
        dataset folder's :data:`IGNORE_FILE` adds more.
    progress : bool, default True
    expansion : Expansion or bool, optional
        The search-side expansion recorded in the index (what its searches use by default;
        :class:`revsearch.retrieval.rerank.Expansion`); its database-side augmentation is stored. None
        keeps the recorded one (a new index: the default), False records no expansion.
    follow_links : {"inside", "all", "none"}, optional
        Which symbolic links in the dataset folder are followed (see
        :func:`revsearch.media.images.find_images`): ``"inside"`` (the default for a new index) only
        links whose target lies inside the dataset folder; ``"all"`` every one; ``"none"`` none.
        Recorded in the index; None keeps the recorded choice.

    Returns
    -------
    index : Index
    report : UpdateReport

    Raises
    ------
    ModelMismatchError
        If ``vector_dir`` holds a non-empty index made by another model.
    UpdateRefusedError
        If the update would remove all or most rows and ``prune`` is False.
    WeightsUnavailableError
        If the model's weights cannot be loaded (nothing was written).
    StorageFullError
        If the disk fills up (the progress committed so far is kept; run again once space is freed).
    """
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be at least 1, not {checkpoint_every}")
    t0 = time.perf_counter()
    dataset = Path(dataset_dir)
    folder = Path(vector_dir)
    emb = embedder if isinstance(embedder, Embedder) else get_embedder(embedder, weights=weights)
    batch_size = int(batch_size or emb.batch_size)
    recorded_manifest = store.read_manifest(folder) if store.exists(folder) else None
    if exclude is None:
        exclude = recorded_manifest.exclude if recorded_manifest is not None else []
    if isinstance(exclude, str):
        exclude = [exclude]
    exclude = [str(p) for p in exclude]
    if follow_links is None:
        follow_links = (recorded_manifest.follow_links if recorded_manifest is not None else None) or "inside"
    if follow_links not in FOLLOW_LINKS:
        raise ValueError(f"follow_links must be one of {', '.join(FOLLOW_LINKS)}, not {follow_links!r}")
    scan = scan_dataset(dataset, folder, exclude, follow_links=follow_links)
    report = UpdateReport(skipped=list(scan.skipped))
    if scan.files and emb.needs_calibration:  # int8 without its cached model: calibrate on this collection
        emb.calibrate(scan.files)
    if not store.exists(folder) and scan.files:
        emb.load()  # the weights (or the cached OpenVINO model) before anything is written: no weights, no folder
    with store.writing(folder) as w:
        snap, problems = w.open_committed()
        for p in problems:
            logger.warning("repairing the index in %s: %s; its images are embedded again", folder, p)
        if snap is not None and len(snap):
            Index(snap).check_compatible(emb.spec)
        plan = _plan(snap, scan, report)
        recorded = snap.manifest.dataset_absolute if snap is not None else None
        on_purpose = sum(1 for p in report.removed if path_excluded(p, scan.patterns))
        check_prune(folder, dataset, plan.n_old, len(report.removed) - on_purpose, len(scan.rel), recorded, prune)
        if plan.todo:
            emb.load()  # load the model before writing anything (OpenVINO: from its cache, without TensorFlow)
        fields = {**index_fields(dataset, emb), "exclude": list(exclude), "follow_links": follow_links}
        run = _Run(w, emb, fields, checkpoint_every, checkpoint_seconds)
        changed = snap is None or bool(problems) or w.needs_migration
        for view, mask, rows, rewrite in plan.kept:
            if not rewrite:
                run.shards.append(view.ref)  # kept as it is: unchanged shards are never rewritten
                continue
            changed = True
            if mask.any():  # rewrite this shard only (bounded memory: one shard at a time)
                paths = [p for p, m in zip(view.paths, mask) if m]
                run.shards.append(w.write_shard(np.asarray(view.vectors)[mask], rows[mask], paths))
        if plan.reuse:  # moved, renamed or copied files: their stored vectors, no model call. Written before the
            # first commit drops the old paths' rows, so a run killed in between never loses a vector it could reuse
            for i, view, j, info in plan.reuse:  # one shard, one commit: all of them or none
                run.buf_vec.append(np.asarray(view.vectors[j : j + 1], np.float32))
                run.buf_paths.append(scan.rel[i])
                run.buf_infos.append(info)
            run.flush()
        elif (
            changed
            or snap.spec != emb.spec
            or list(exclude) != snap.manifest.exclude
            or follow_links != snap.manifest.follow_links
        ):
            run.commit(complete=False)
        done: set[str] = set()
        if plan.todo:
            for batch in emb.embed_files(
                [scan.files[i] for i in plan.todo], batch_size=batch_size, workers=workers, progress=progress,
                desc="indexing",
            ):
                names = [scan.rel[plan.todo[j]] for j in batch.indices]
                run.add(names, batch.vectors, batch.infos)
                done.update(names)
                report.skipped.extend(batch.skipped)
        manifest = run.finish()
        refresh_ann(w, manifest, progress=progress)
        report.augmented = refresh_augmentation(w, expansion=expansion)
        fill_thumbnails(w, dataset, workers=workers, progress=progress)  # what the duplicate verifier compares
    report.added = [r for r in report.added if r in done]
    report.updated = [r for r in report.updated if r in done]
    report.seconds = time.perf_counter() - t0
    logger.info("index %s: %s", folder, report.summary())
    return Index.open(folder), report


def refresh_augmentation(writer: FolderWriter, *, expansion: Any = None) -> int:
    """Bring the stored database-side augmentation up to date with the committed rows, and commit it.

    Rows are matched to the previous augmentation (``dba``, or ``dba_stale`` left by a commit
    that changed the shards) by :func:`revsearch.storage.store.row_keys`; only rows whose neighbour lists
    change are computed again (:func:`revsearch.retrieval.rerank.update_augmentation`). Neighbours are
    found exactly, or through the approximate index from :data:`ANN_AUGMENT_MIN_ROWS` rows.
    The augmented vectors are streamed to new files and committed in one manifest replacement,
    so a process killed at any moment leaves the previous state.

    Parameters
    ----------
    writer : FolderWriter
    expansion : Expansion or bool, optional
        Recorded in the manifest (None: keep the recorded one; False: no expansion, the section
        is dropped).

    Returns
    -------
    int
        Rows whose augmented vector was computed again (0 when it was up to date).
    """
    from ..retrieval import rerank

    manifest = writer.manifest
    if manifest is None:
        return 0
    if expansion is None:
        exp = rerank.recorded_expansion(manifest)
    else:
        exp = rerank.resolve_expansion(expansion)
    keywords: dict[str, Any] = {}  # of writer.commit
    if expansion is not None and manifest.expansion != exp.to_dict():
        keywords["expansion"] = exp.to_dict()
    snap = writer.snapshot()
    assert snap is not None
    n = len(snap)
    if not exp.dba or n == 0:
        if manifest.dba or manifest.dba_stale or keywords:
            writer.commit(dba=None, **keywords)
        return 0
    k, alpha = int(exp.dba), float(exp.dba_alpha)
    current = store.open_augmentation(writer.folder, manifest, "dba", snap.shards) if manifest.dba else None
    if current is not None and current.k == k and current.alpha == alpha:
        if keywords:
            writer.commit(**keywords)
        return 0
    old = current or store.open_augmentation(writer.folder, manifest, "dba_stale")
    keys = store.row_keys(_all_paths(snap), np.concatenate([np.asarray(s.rows) for s in snap.shards]))
    def approximate() -> Any:
        from ..retrieval import ann

        if manifest.ann and manifest.ann.get("kind") != "flat":
            return lambda q, kk: ann.ann_topk(snap, q, kk)
        found = ann.neighbour_search(snap)
        if found is None:
            logger.info("FAISS is not installed: the augmentation's neighbours of %d rows are searched exactly", n)
        return found

    t0 = time.perf_counter()
    upd = rerank.update_augmentation(
        snap.vectors, keys, k, old, approximate=approximate if n >= ANN_AUGMENT_MIN_ROWS else None,
        approximate_from=ANN_AUGMENT_MIN_SEARCHES,
    )
    try:
        entry = writer.write_augmentation(
            rerank.augmented_blocks(snap.vectors, upd, alpha, old), upd.neighbours, upd.scores, keys,
            k=k, alpha=alpha, shards=snap.refs(), dim=snap.dim,
        )
    except StorageFullError as e:
        logger.warning("%s; search computes the augmentation in memory until an update can store it", e)
        if keywords:
            writer.commit(**keywords)
        return 0
    writer.commit(dba=entry, **keywords)
    recomputed = upd.recomputed if old is not None and old.alpha == alpha else n
    logger.info("augmentation of %s: %d of %d rows recomputed (%d searched) in %.2f s", writer.folder, recomputed, n,
                upd.searched, time.perf_counter() - t0)
    return recomputed


def _all_paths(snap: store.Snapshot) -> list[str]:
    out: list[str] = []
    for s in snap.shards:
        out.extend(s.paths)
    return out


def refresh_ann(writer: FolderWriter, manifest: Manifest, *, progress: bool = True) -> None:
    """Extend or rebuild the approximate index an update made stale (see :func:`revsearch.retrieval.ann.refresh_after_update`)."""
    stale = manifest.ann_stale
    if stale:
        from ..retrieval import ann

        ann.refresh_after_update(writer, stale, progress=progress)


# ---------------------------------------------------------------------------------------- from vectors
def index_from_vectors(
    vector_dir: str | os.PathLike,
    vectors: np.ndarray,
    paths: Sequence[str],
    spec: dict[str, Any],
    *,
    dataset_dir: str | os.PathLike | None = None,
    rows: np.ndarray | None = None,
    imported_from: dict[str, Any] | None = None,
    shard_rows: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Index:
    """Write a new index from vectors made elsewhere (e.g. imported legacy files).

    Parameters
    ----------
    vector_dir : path
        An empty or new folder (an existing index there is refused, not overwritten).
    vectors : numpy.ndarray
        Shape (n, dim); normalised here.
    paths : sequence of str
        Shape (n,), paths relative to the dataset folder (no line breaks, no ``..``).
    spec : dict
        ``model``, ``preprocessing``, ``dim``, ``weights`` (and ``precision``).
    dataset_dir : path, optional
    rows : numpy.ndarray, optional
        Shape (n,) file size/mtime/hash records; unknown (size -1) by default.
    imported_from : dict, optional
        Where the vectors came from (recorded: :attr:`revsearch.storage.store.Manifest.imported_from`).
    extra : dict, optional
        Other manifest entries, written as given (kept for callers of earlier versions; prefer the
        keyword arguments, which :class:`revsearch.storage.store.Manifest` reads back typed).
    shard_rows : int, optional
        Rows per shard (default: one shard).

    Returns
    -------
    Index

    Raises
    ------
    ValueError
        If a path cannot be stored (line break, absolute, ``..``), or shapes disagree.
    """
    folder = Path(vector_dir)
    if store.exists(folder):
        raise RevsearchError(
            f"{str(folder)!r} already holds an index: choose an empty folder (nothing was overwritten)"
        )
    paths = list(paths)
    store.encode_paths(paths)  # refuse unstorable paths before anything is written
    dim = int(spec["dim"])
    vectors = np.asarray(vectors, np.float32)
    vectors = l2_normalize(vectors.reshape(len(paths), -1 if len(paths) else dim))
    if vectors.shape[1] != dim:
        raise ValueError(f"vectors have dimension {vectors.shape[1]}, spec says {dim}")
    store.check_vectors(vectors)  # refuse NaN, inf, wrong length before anything is written
    if rows is None:
        rows = np.zeros(len(paths), ROW_DTYPE)
        rows["size"] = -1
    step = max(1, int(shard_rows)) if shard_rows else max(1, len(paths))
    with store.writing(folder) as w:
        w.commit(spec=spec, shards=[], complete=False)
        shards = [
            w.write_shard(vectors[a : a + step], rows[a : a + step], paths[a : a + step])
            for a in range(0, len(paths), step)
        ]
        w.commit(shards=shards, complete=True, imported_from=imported_from, fields=dict(extra) if extra else None,
                 **index_fields(Path(dataset_dir) if dataset_dir is not None else None))
        refresh_augmentation(w)
    return Index.open(folder)
