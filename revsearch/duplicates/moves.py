"""Acting on a report: move the copies not kept out of the dataset folder, and undo it.

:func:`move_duplicates` moves the copies not kept out of the dataset folder (with their relative
paths), logging every move to a CSV file before it is made, and updates the index;
:func:`undo_moves` puts every file back from that log, byte for byte. Nothing is ever deleted.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OutsideFoldersError, RevsearchError
from ..images import file_digest
from ..safety import confine, crash_point, display_name
from .groups import DuplicateReport

logger = logging.getLogger(__name__)

#: Columns of the move log written by :func:`move_duplicates`.
LOG_COLUMNS = (
    "source", "destination", "bytes", "blake2b", "mtime_ns", "group", "kept", "score", "index", "dataset_dir",
)
#: A move log larger than this is not read (one line is ~300 bytes: 3 million moves).
MAX_LOG_BYTES = 1 << 30



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
        Files not put back, with the reason (empty when everything is back).
    index_updated : bool
    already : list of pathlib.Path
        Files that were at their old place already (never moved: the move was stopped before it
        happened; or put back by an earlier undo).
    """

    restored: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    index_updated: bool = False
    already: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One line."""
        return (
            f"restored {len(self.restored)} files, {len(self.already)} already in place, "
            f"{len(self.skipped)} not restored" + ("; index updated" if self.index_updated else "")
        )


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _digest(path: Path) -> str:
    return file_digest(path).hex()  # the index's content hash (revsearch.images.file_digest), as hex


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
        crash_point(f"link {dst.name}")
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
    crash_point(f"unlink {src.name}")
    os.unlink(src)  # the file now lives at dst (a hard link or a verified copy)


def _lock_log(f: Any, path: Path) -> None:
    """Take an exclusive lock on an open move log: one move or undo of a log at a time (POSIX)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise RevsearchError(
            f"another process is moving or putting back the files of {display_name(path)!r}: wait for it to finish"
        ) from None


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
    # surrogateescape: a file name that is not UTF-8 is logged byte for byte, so it can be put back
    with open(log_path, "a", newline="", encoding="utf-8", errors="surrogateescape") as lf:
        _lock_log(lf, log_path)
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
            crash_point(f"logged the move of {src.name}")
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
    from ..index import Index
    from ..indexing import update_folder

    try:
        update_folder(dataset, index_dir, Index.open(index_dir).embedder(), progress=False)
        return True
    except RevsearchError as e:
        logger.warning("the index in %s was not updated (%s): run `revsearch index %s %s`", index_dir, e, dataset, index_dir)
        return False


def _log_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of every line of a move log; a last line cut short by a crash is kept as it is."""
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            if os.fstat(f.fileno()).st_size > MAX_LOG_BYTES:
                raise RevsearchError(f"{display_name(path)!r} is larger than any move log ({MAX_LOG_BYTES} bytes): not read")
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, line) for line in reader]
    except FileNotFoundError:
        raise RevsearchError(f"no move log at {display_name(path)!r}") from None
    except (OSError, csv.Error) as e:
        raise RevsearchError(f"{display_name(path)!r} is not a revsearch move log ({e})") from None
    if header is None:
        return []
    if not set(LOG_COLUMNS) <= set(header):
        raise RevsearchError(
            f"{display_name(path)!r} is not a revsearch move log (columns {', '.join(LOG_COLUMNS)} expected)"
        )
    return [(n, dict(zip(header, line))) for n, line in rows]


def undo_moves(
    log: str | os.PathLike,
    *,
    index: Any = None,
    dataset_dir: str | os.PathLike | None = None,
    move_to: str | os.PathLike | None = None,
    update_index: bool = True,
) -> UndoReport:
    """Put back every file a :func:`move_duplicates` log records, byte for byte; safe to run again.

    The log is data anyone can edit, so it is checked whole before anything happens: every
    source must lie in the dataset folder and every destination in the move-to folder (both
    named here, symbolic links resolved; see :func:`revsearch.safety.confine`), else
    :class:`~revsearch.errors.OutsideFoldersError` names the line and nothing is read, moved or
    created. Then moves are undone last first:

    * a file still at its destination with the content it was moved with (its hash is checked)
      is put back, unless something else took its old place (reported, never overwritten);
    * a file already at its old place counts as restored (a move the crash stopped before it
      happened, or an earlier undo): running undo twice is harmless. A second name left by a
      crash between the two steps of a move (the same file at both places) is removed;
    * a last log line cut short by a crash names a move that never happened.

    Parameters
    ----------
    log : path
        The CSV log written by :func:`move_duplicates`.
    index : Index or path, optional
        The index the files were found with: brought up to date afterwards (``update_index``),
        and its dataset folder is the default ``dataset_dir``.
    dataset_dir : path, optional
        The folder the files were moved out of (default: the index's dataset folder). One of
        ``index`` and ``dataset_dir`` is needed: the folder is never taken from the log.
    move_to : path, optional
        The folder they were moved to (default: the folder holding the log, where
        :func:`move_duplicates` writes it).
    update_index : bool, default True
        Bring ``index`` up to date (the restored files are embedded again).

    Returns
    -------
    UndoReport
        ``skipped`` is empty when every logged file is back at its old place.

    Raises
    ------
    RevsearchError
        If the log is missing or not a move log, or neither ``index`` nor ``dataset_dir`` is given.
    OutsideFoldersError
        If a line names a file outside the dataset folder or the move-to folder (nothing was done).
    """
    path = Path(log)
    try:
        held = open(path, "rb")  # held (locked) until the undo is done: one undo of a log at a time
    except FileNotFoundError:
        raise RevsearchError(f"no move log at {display_name(path)!r}") from None
    except OSError as e:
        raise RevsearchError(f"cannot read the move log {display_name(path)!r} ({e.strerror or e})") from None
    with held:
        _lock_log(held, path)
        return _undo(path, index, dataset_dir, move_to, update_index)


def _undo(
    path: Path, index: Any, dataset_dir: str | os.PathLike | None, move_to: str | os.PathLike | None, update_index: bool
) -> UndoReport:
    rows = _log_rows(path)
    idx = None
    if index is not None:
        from ..index import Index

        idx = index if isinstance(index, Index) else Index.open_manifest(index)
    if dataset_dir is None and idx is not None:
        dataset_dir = idx.dataset_dir
    if dataset_dir is None:
        said = sorted({r.get("dataset_dir") or "" for _, r in rows} - {""})
        raise RevsearchError(
            f"name the dataset folder the files of {display_name(path)!r} were moved out of (undo_moves(LOG, "
            "index=VECTOR_DIR) or dataset_dir=...; command line: revsearch duplicates VECTOR_DIR --undo LOG): it is "
            "never taken from the log" + (f" (the log says {display_name(said[0])!r})" if said else "")
        )
    dataset = Path(os.path.realpath(dataset_dir))
    dest_root = Path(os.path.realpath(move_to if move_to is not None else path.parent))
    if not dataset.is_dir():  # an unmounted drive looks like a missing folder: never create it
        raise RevsearchError(
            f"the dataset folder {display_name(dataset_dir)!r} does not exist (is the drive mounted?): nothing was "
            "put back; run the undo again once it is there"
        )
    # 1. check every line before anything is done
    plan: list[tuple[int, Path, Path, dict[str, str]]] = []
    for i, (line, row) in enumerate(rows):
        if any(not row.get(c) for c in ("source", "destination", "blake2b")) or None in row.values():
            if i == len(rows) - 1:  # the last line, cut short by a crash: that move never started
                continue
            raise RevsearchError(f"{display_name(path)}, line {line}: an incomplete line in the middle of the log: not a "
                                 "log revsearch wrote; nothing was done")
        if not re.fullmatch(r"[0-9a-f]{32}", row["blake2b"]) or not re.fullmatch(r"-?[0-9]{1,20}", row.get("mtime_ns") or "0"):
            raise RevsearchError(f"{display_name(path)}, line {line}: a damaged line (hash or time); nothing was done")
        src = confine(row["source"], [dataset], source=path, line=line, what="the source")
        dst = confine(row["destination"], [dest_root], source=path, line=line, what="the destination")
        if src == dataset or dst == dest_root:
            raise OutsideFoldersError(f"{display_name(path)}, line {line}: names a folder, not a file; nothing was done")
        plan.append((line, src, dst, row))
    # 2. undo, last move first
    out = UndoReport()
    for line, src, dst, row in reversed(plan):
        want = row["blake2b"]
        try:
            at_src = src.is_file() and not src.is_symlink()
            at_dst = dst.is_file() and not dst.is_symlink()
            if at_src and at_dst and os.path.samefile(src, dst):  # killed between link and unlink: one file, two names
                crash_point(f"remove the second name {dst.name}")
                os.unlink(dst)
                at_dst = False
            if at_src:
                if at_dst and _digest(dst) == want and _digest(src) != want:
                    out.skipped.append((src, f"another file took its old place: left at {display_name(dst)!r}"))
                else:
                    out.already.append(src)
                continue
            if os.path.lexists(src):
                out.skipped.append((src, "something that is not a file is at its old place: left where it is"))
                continue
            if not at_dst:
                out.skipped.append((src, f"not found at {display_name(dst)!r}"))
                continue
            if _digest(dst) != want:
                out.skipped.append((src, f"{display_name(dst)!r} changed since it was moved: left there"))
                continue
            _move_file(dst, src, want)
        except (OSError, RevsearchError) as e:
            out.skipped.append((src, str(e)))
            continue
        with contextlib.suppress(OSError, ValueError):
            os.utime(src, ns=(int(row["mtime_ns"]), int(row["mtime_ns"])))
        out.restored.append(src)
    if update_index and idx is not None and out.restored:
        out.index_updated = _update_index(idx.folder, dataset)
    return out
