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
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RevsearchError
from ..images import file_digest
from .groups import DuplicateReport

logger = logging.getLogger(__name__)

#: Columns of the move log written by :func:`move_duplicates`.
LOG_COLUMNS = (
    "source", "destination", "bytes", "blake2b", "mtime_ns", "group", "kept", "score", "index", "dataset_dir",
)



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
        Files not put back, with the reason.
    index_updated : bool
    """

    restored: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    index_updated: bool = False

    def summary(self) -> str:
        """One line."""
        return f"restored {len(self.restored)} files, skipped {len(self.skipped)}" + (
            "; index updated" if self.index_updated else ""
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
    os.unlink(src)  # the file now lives at dst (a hard link or a verified copy)


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
    with open(log_path, "a", newline="", encoding="utf-8") as lf:
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


def undo_moves(log: str | os.PathLike, *, update_index: bool = True) -> UndoReport:
    """Put back every file a :func:`move_duplicates` log records, byte for byte.

    A file is put back only if it is still at its destination with the content it was moved with
    (its hash is checked) and nothing has taken its old place; the others are reported, never
    overwritten. Moves are undone last first.

    Parameters
    ----------
    log : path
        The CSV log written by :func:`move_duplicates`.
    update_index : bool, default True
        Bring each index named in the log up to date (the restored files are embedded again).

    Returns
    -------
    UndoReport

    Raises
    ------
    RevsearchError
        If the log is missing or not a move log.
    """
    path = Path(log)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise RevsearchError(f"no move log at {str(path)!r}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise RevsearchError(f"{str(path)!r} is not a revsearch move log ({e})") from None
    if rows and not set(LOG_COLUMNS) <= set(rows[0]):
        raise RevsearchError(f"{str(path)!r} is not a revsearch move log (columns {', '.join(LOG_COLUMNS)} expected)")
    out = UndoReport()
    indexes: dict[str, str] = {}
    for row in reversed(rows):
        if any(not row.get(c) for c in ("source", "destination", "blake2b")):  # a line cut short by a crash
            out.skipped.append((Path(row.get("source") or "?"), "incomplete log line (the move was interrupted)"))
            continue
        src, dst = Path(row["source"]), Path(row["destination"])
        if src.exists():
            out.skipped.append((src, "a file is at its old place (it was not moved, or was put back)"))
            continue
        if not dst.exists():
            out.skipped.append((src, f"not found at {str(dst)!r}"))
            continue
        if _digest(dst) != row["blake2b"]:
            out.skipped.append((src, f"{str(dst)!r} changed since it was moved: left there"))
            continue
        try:
            _move_file(dst, src, row["blake2b"])
        except (OSError, RevsearchError) as e:
            out.skipped.append((src, str(e)))
            continue
        with contextlib.suppress(OSError, ValueError):
            os.utime(src, ns=(int(row["mtime_ns"]), int(row["mtime_ns"])))
        out.restored.append(src)
        if row.get("index"):
            indexes[row["index"]] = row["dataset_dir"]
    if update_index:
        ok = [_update_index(i, Path(d)) for i, d in indexes.items()]
        out.index_updated = bool(ok) and all(ok)
    return out
