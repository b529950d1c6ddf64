"""Download and unpack the data the original project published on Google Drive.

The original 2021 notebook shared two zip files on Google Drive: the preprocessed images
(a flat folder of JPEGs named ``CCCC_NNNNNN.jpg``) and the vector files it computed
(``<n>.pbz2``). :func:`fetch_original_data` downloads and unpacks both; :func:`download`
and :func:`extract` are the two steps on their own, usable for any file.

Both steps are safe to interrupt and to run again: a download is written under a
temporary name and renamed into place only once it is complete and checked, and an
archive is unpacked into a temporary folder that is renamed into place only once every
member is out. Running a step again skips what is already there.

``gdown`` (which handles Google Drive's confirmation pages and cookies) is imported only
when something is downloaded, so importing this module is cheap.
"""

from __future__ import annotations

import errno
import fnmatch
import gzip
import inspect
import logging
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from revsearch.errors import DownloadError
from revsearch.images import format_size

__all__ = [
    "DRIVE_DOWNLOAD_URL",
    "IMAGE_PATTERNS",
    "ORIGINAL_IMAGES_ID",
    "ORIGINAL_VECTORS_ID",
    "VECTOR_PATTERNS",
    "describe_source",
    "download",
    "extract",
    "fetch_original_data",
    "folder_size",
    "format_bytes",
]

logger = logging.getLogger(__name__)

#: Google Drive file id of the original project's preprocessed images (a zip file).
ORIGINAL_IMAGES_ID = "1UagIDGCSQJWHdkrY0C0tEwOf_PwhOlpD"
#: Google Drive file id of the original project's vector files (a zip of ``<n>.pbz2``).
ORIGINAL_VECTORS_ID = "1O6k80XBJUJn6O0UTDCuD7w1mIHVSXIIr"

# Seconds to wait to connect, and between two bytes once connected.
_TIMEOUT = (30.0, 300.0)
# Extra attempts gdown makes after a dropped connection (it resumes the transfer).
_RETRIES = 2
# Suffix of a finished, not yet checked download next to its destination.
_PART_SUFFIX = ".part"
_CHUNK = 1024 * 1024

#: How a Google Drive file id becomes the URL gdown downloads (``{id}``); tests point it elsewhere.
DRIVE_DOWNLOAD_URL = "https://drive.google.com/uc?id={id}"
_DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})
_DRIVE_ID_RE = re.compile(r"^[-\w]{20,}$")
_DRIVE_PATH_ID_RE = re.compile(r"/(?:file/(?:u/\d+/)?d|document/d|uc)/([-\w]{20,})")


# --------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    url: str
    drive_id: str | None

    def describe(self) -> str:
        if self.drive_id is not None:
            return f"Google Drive file {self.drive_id}"
        return self.url

    def browser_hint(self, dest: Path) -> str:
        if self.drive_id is not None:
            where = f"https://drive.google.com/file/d/{self.drive_id}/view"
        else:
            where = self.url
        return f"download it by hand in a browser from {where} and put it at {dest}"


def parse_source(source: str) -> _Source:
    """Tell a Google Drive id, a Drive link and any other http(s) URL apart."""
    text = source.strip()
    if re.match(r"^https?://", text, flags=re.IGNORECASE):
        parsed = urllib.parse.urlparse(text)
        if (parsed.hostname or "").lower() not in _DRIVE_HOSTS:
            return _Source(url=text, drive_id=None)
        ids = urllib.parse.parse_qs(parsed.query).get("id")
        match = _DRIVE_PATH_ID_RE.search(parsed.path)
        drive_id = ids[0] if ids else (match.group(1) if match else None)
        if drive_id is None or not _DRIVE_ID_RE.match(drive_id):
            raise ValueError(
                f"Cannot find a Google Drive file id in {source!r}. Use a file's share link "
                "(https://drive.google.com/file/d/<id>/view) or its id; folder links are not "
                "supported."
            )
        return _Source(url=DRIVE_DOWNLOAD_URL.format(id=drive_id), drive_id=drive_id)
    if _DRIVE_ID_RE.match(text):
        return _Source(url=DRIVE_DOWNLOAD_URL.format(id=text), drive_id=text)
    raise ValueError(
        f"{source!r} is neither a Google Drive file id, a Google Drive link nor an "
        "http(s) URL."
    )


def describe_source(source: str) -> str:
    """Check a download source and say what it is.

    Parameters
    ----------
    source : str
        A Google Drive file id or link, or an http(s) URL.

    Returns
    -------
    str
        ``"Google Drive file <id>"`` or the URL.

    Raises
    ------
    ValueError
        If ``source`` is none of these (the message says what is accepted).
    """
    return parse_source(source).describe()


def _gdown_partials(target: Path) -> list[Path]:
    """The partial files gdown keeps next to ``target`` to resume a transfer."""
    # gdown names them <name><8 random characters>.part (tempfile.NamedTemporaryFile).
    name = target.name
    try:
        entries = os.listdir(target.parent)
    except FileNotFoundError:
        return []
    return [
        target.parent / entry
        for entry in entries
        if entry.startswith(name)
        and entry.endswith(".part")
        and len(entry) == len(name) + 8 + len(".part")
    ]


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover - e.g. a file locked on Windows
        logger.warning("Could not delete %s: %s", path, exc)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from, nearest first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1024)
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _download_error(exc: BaseException, src: _Source, dest: Path) -> DownloadError:
    """Turn whatever gdown or requests raised into a :class:`DownloadError` that says
    what failed and what to do."""
    import requests  # gdown depends on requests, so it is there whenever gdown is

    what = src.describe()
    drive_hint = (
        "the file's download quota may be exceeded (Google Drive limits how often a shared "
        "file can be downloaded in 24 hours) or the file may no longer be shared. "
        if src.drive_id is not None
        else ""
    )
    by_hand = f"Try again later, or {src.browser_hint(dest)}."
    for cause in _causes(exc):
        if isinstance(cause, requests.exceptions.HTTPError):
            status = cause.response.status_code if cause.response is not None else None
            if status == 404 and src.drive_id is None:
                return DownloadError(
                    f"Downloading {what} failed: the server answered HTTP 404 (not found). "
                    "Check the URL."
                )
            return DownloadError(
                f"Downloading {what} failed: the server answered HTTP {status}; "
                f"{drive_hint}{by_hand}"
            )
        if isinstance(cause, requests.exceptions.SSLError):
            return DownloadError(
                f"Downloading {what} failed with a network (TLS/SSL) error: {cause}. Check "
                "the machine's clock, proxy and certificate settings, then run again."
            )
        if isinstance(cause, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            host = urllib.parse.urlparse(src.url).hostname or src.url
            return DownloadError(
                f"Downloading {what} failed with a network error: could not reach {host} "
                f"({type(cause).__name__}: {cause}). Check the internet connection (and any "
                "proxy settings), then run again; an interrupted download is resumed."
            )
    name = type(exc).__name__
    first_line = str(exc).splitlines()[0] if str(exc) else name
    if "incomplete" in first_line or "byte range" in first_line:
        return DownloadError(
            f"Downloading {what} was interrupted: the network connection dropped before the "
            f"file was complete ({first_line}). Run again: the partial download is resumed, "
            "or started over if the server cannot resume it."
        )
    if name == "FileURLRetrievalError":
        return DownloadError(
            f"Google Drive did not hand out {what}: {drive_hint}{by_hand}\n"
            f"(gdown said: {exc})"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(
            f"Downloading {what} to {dest} failed: no space left on the disk ({exc}). "
            "Free some space, or download to another folder."
        )
    return DownloadError(
        f"Downloading {what} to {dest} failed ({name}: {exc}). Run again to resume; if it "
        f"keeps failing, {src.browser_hint(dest)}."
    )


def gdown_options(gdown: Any) -> tuple[dict[str, Any], tuple[type[BaseException], ...]]:
    """What this gdown accepts, found by looking, not by its version number.

    gdown 6.3+ takes ``timeout=`` and ``retries=`` and raises ``gdown.exceptions.DownloadError``;
    gdown 5.x (Colab's) and 6.0-6.2 lack the arguments, and 5.x lacks the exception (it raises
    ``FileURLRetrievalError`` or lets requests' errors through).
    """
    try:
        params = inspect.signature(gdown.download).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C function or an odd wrapper
        params = {}
    kwargs: dict[str, Any] = {}
    if "timeout" in params:
        kwargs["timeout"] = _TIMEOUT
    if "retries" in params:
        kwargs["retries"] = _RETRIES
    exceptions = getattr(gdown, "exceptions", None)
    errors = tuple(
        e
        for e in (getattr(exceptions, "DownloadError", None), getattr(exceptions, "FileURLRetrievalError", None))
        if isinstance(e, type) and issubclass(e, BaseException)
    )
    return kwargs, errors


def _cannot_resume(exc: BaseException) -> bool:
    text = str(exc)
    return "byte range" in text or "multiple temporary files" in text


def _gdown_fetch(src: _Source, target: Path, *, quiet: bool) -> None:
    """Download ``src`` to ``target`` with gdown (any version from 5.0), resuming a partial transfer."""
    import gdown  # imported here: it pulls in requests and bs4

    kwargs, gdown_errors = gdown_options(gdown)
    # Without gdown's own retries (gdown < 6.3), retry here: each attempt resumes the partial file.
    attempts = 1 if "retries" in kwargs else 1 + _RETRIES

    def attempt(resume: bool) -> None:
        # gdown writes to <target><8 chars>.part and renames it to target when done;
        # with resume=True it continues such a partial file, or returns at once if
        # target is already there (a finished download not yet checked).
        if resume and len(_gdown_partials(target)) > 1:
            # gdown 5.x prints a message and returns None here instead of raising.
            raise _ResumeError("multiple temporary files to resume")
        gdown.download(url=src.url, output=str(target), quiet=quiet, resume=resume, **kwargs)

    import requests

    transient = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                 requests.exceptions.ChunkedEncodingError)
    for i in range(attempts):
        try:
            attempt(resume=True)
            return
        except (_ResumeError, *gdown_errors) as exc:
            if not _cannot_resume(exc):
                raise
            # The partial file cannot be resumed (the server ignores Range requests, or the
            # file changed, or several partials exist): start again from scratch.
            logger.info("Cannot resume the partial download of %s (%s); starting again.", src.url, exc)
            for partial in _gdown_partials(target):
                _remove_quietly(partial)
            attempt(resume=False)
            return
        except transient as exc:
            if i + 1 == attempts:
                raise
            logger.info("The download of %s was interrupted (%s); resuming.", src.describe(), exc)


class _ResumeError(Exception):
    """A partial download cannot be resumed."""


class _IncompleteError(Exception):
    """The connection ended before the announced number of bytes arrived."""


def _http_partial(target: Path) -> Path:
    """The partial file :func:`_http_fetch` writes to (kept between calls, to resume)."""
    return target.with_name(target.name + "ial")  # <dest>.partial


def _http_fetch(src: _Source, target: Path, *, quiet: bool) -> None:
    """Download a plain http(s) URL to ``target`` with requests, resuming a partial transfer.

    Unlike gdown, this checks the HTTP status (a 404 page is never saved as the file), and it
    behaves the same whichever gdown is installed. The bytes go to ``<dest>.partial``, which
    is renamed to ``target`` once complete; a dropped connection is retried (resuming with an
    HTTP Range request where the server allows it, starting over where it does not).
    """
    import requests

    partial = _http_partial(target)
    transient = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                 requests.exceptions.ChunkedEncodingError, _IncompleteError)
    for i in range(1 + _RETRIES):
        try:
            _http_attempt(requests, src.url, partial, quiet=quiet)
            os.replace(partial, target)
            return
        except transient as exc:
            if i == _RETRIES:
                if isinstance(exc, requests.exceptions.ChunkedEncodingError):
                    raise _IncompleteError(f"the transfer is incomplete ({exc})") from exc
                raise
            logger.info("The download of %s was interrupted (%s); resuming.", src.url, exc)


def _http_attempt(requests: Any, url: str, partial: Path, *, quiet: bool) -> None:
    start = partial.stat().st_size if partial.is_file() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    with requests.get(url, stream=True, timeout=_TIMEOUT, headers=headers) as res:
        if start and res.status_code == 416:  # the partial file is not a prefix of this file
            logger.info("Cannot resume %s (HTTP 416); starting again.", url)
            _remove_quietly(partial)
            raise _IncompleteError("cannot resume: the server refused the byte range")
        res.raise_for_status()
        resumed = start > 0 and res.status_code == 206 and res.headers.get("Content-Range", "").startswith(
            f"bytes {start}-"
        )
        if start and not resumed:
            logger.info("The server of %s cannot resume a download; starting again.", url)
            start = 0
        length = res.headers.get("Content-Length")
        # With a Content-Encoding (gzip...), Content-Length counts the encoded bytes, not the file's.
        encoded = res.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        total = int(length) + start if length and length.isdigit() and not encoded else None
        progress = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=partial.name[: -len(".partial")], disable=quiet)
        try:
            with open(partial, "ab" if resumed else "wb") as out:
                for chunk in res.iter_content(_CHUNK):
                    out.write(chunk)
                    progress.update(len(chunk))
            got = partial.stat().st_size
        finally:
            progress.close()
        if total is not None and got != total:
            raise _IncompleteError(f"the transfer is incomplete: {got} of {total} bytes arrived")


def download(source: str, dest: str | Path, *, quiet: bool = False) -> Path:
    """Download a file from Google Drive or any http(s) URL, unless it is already there.

    The file is downloaded under a temporary name in ``dest``'s folder and renamed to
    ``dest`` only when it is complete and is not an HTML page, so an existing ``dest`` is
    always a complete download and is kept as it is. An interrupted transfer is resumed
    by the next call.

    Parameters
    ----------
    source : str
        A Google Drive file id, a Google Drive share link
        (``https://drive.google.com/file/d/<id>/view?...``) or any http(s) URL.
    dest : str or pathlib.Path
        The file to write. Missing parent folders are created.
    quiet : bool, default False
        Hide gdown's progress bar and messages.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DownloadError
        If the network cannot be reached, the server answers with an error status (for
        Google Drive, typically because the file's download quota is exceeded), the server
        sends an HTML page instead of the file, or the file cannot be written. The message
        says what to do. No file is left at ``dest``.
    ValueError
        If ``source`` is neither a Drive id, a Drive link nor an http(s) URL.
    """
    dest = Path(dest)
    if dest.is_file():
        logger.info("%s already exists; not downloading it again.", dest)
        return dest
    if dest.exists():
        raise DownloadError(f"Cannot download to {dest}: it exists and is not a file.")
    src = parse_source(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    target = dest.with_name(dest.name + _PART_SUFFIX)
    logger.info("Downloading %s to %s", src.describe(), dest)
    try:
        if src.drive_id is not None:
            _gdown_fetch(src, target, quiet=quiet)
        else:
            for stale in _gdown_partials(target):  # left by a gdown-based download of this URL
                _remove_quietly(stale)
            _http_fetch(src, target, quiet=quiet)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        partials = [p for p in (*_gdown_partials(target), _http_partial(target)) if p.is_file()]
        if partials:
            logger.info(
                "Kept the partial download %s; the next call resumes it (delete it to start "
                "again).",
                ", ".join(str(p) for p in partials),
            )
        raise _download_error(exc, src, dest) from exc

    if not target.is_file() or target.stat().st_size == 0:
        _remove_quietly(target)
        raise DownloadError(
            f"Downloading {src.describe()} gave an empty file. Try again later, or "
            f"{src.browser_hint(dest)}."
        )
    if _looks_like_html(target):
        _remove_quietly(target)
        drive = (
            "This is what Google Drive sends when the file's download quota is exceeded or "
            "it asks for a confirmation gdown could not pass. "
            if src.drive_id is not None
            else ""
        )
        raise DownloadError(
            f"Downloading {src.describe()} gave an HTML page instead of the file. {drive}"
            f"Try again later, or {src.browser_hint(dest)}."
        )
    os.replace(target, dest)
    logger.info("Downloaded %s (%d bytes)", dest, dest.stat().st_size)
    return dest


# --------------------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    parts: tuple[str, ...]  # path inside the archive, split, after layout normalisation
    is_dir: bool
    handle: object  # zipfile.ZipInfo or tarfile.TarInfo


def _corrupt(archive: Path, detail: object) -> DownloadError:
    return DownloadError(
        f"{archive} is not a readable archive: it may be truncated by an interrupted "
        f"download, damaged, or not a zip/tar file at all ({detail}). Delete it and "
        "download it again."
    )


# Errors that mean the archive's bytes are bad. (bz2 reports bad data as a plain OSError,
# which is handled with disk errors.)
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    gzip.BadGzipFile,
    EOFError,
    NotImplementedError,  # a zip compression method Python does not support
)


def _split_member(archive: Path, name: str) -> tuple[str, ...]:
    """Split a member name into path parts, refusing names that would escape."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise DownloadError(
            f"{archive} holds a member with an absolute path ({name!r}); refusing to "
            "extract it. Only unpack archives from sources you trust."
        )
    parts = tuple(p for p in unified.split("/") if p not in ("", "."))
    if ".." in parts:
        raise DownloadError(
            f"{archive} holds a member whose path leads outside the destination folder "
            f"({name!r}); refusing to extract it. Only unpack archives from sources you trust."
        )
    return parts


def _is_junk(parts: tuple[str, ...]) -> bool:
    """macOS metadata that zips made on a Mac carry along."""
    return "__MACOSX" in parts or parts[-1] == ".DS_Store" or parts[-1].startswith("._")


def _normalise_layout(members: list[_Member]) -> list[_Member]:
    """Strip single top-level folders, so the files end up directly in the destination.

    ``top/a.jpg, top/b.jpg`` and ``x/y/top/a.jpg, ...`` both become ``a.jpg, b.jpg``;
    an archive with several entries at its root is left as it is.
    """
    while True:
        heads = {m.parts[0] for m in members}
        if len(heads) != 1:
            return members
        # Only the folder's own entry may sit at this level; anything else is a file.
        if any(len(m.parts) == 1 and not m.is_dir for m in members):
            return members
        if not any(len(m.parts) > 1 for m in members):
            return members
        members = [
            _Member(m.parts[1:], m.is_dir, m.handle) for m in members if len(m.parts) > 1
        ]


def _list_zip(archive: Path, zf: zipfile.ZipFile) -> list[tuple[tuple[str, ...], bool, object]]:
    return [(_split_member(archive, i.filename), i.is_dir(), i) for i in zf.infolist()]


def _list_tar(archive: Path, tf: tarfile.TarFile) -> list[tuple[tuple[str, ...], bool, object]]:
    entries: list[tuple[tuple[str, ...], bool, object]] = []
    for info in tf.getmembers():
        parts = _split_member(archive, info.name)
        if not (info.isfile() or info.isdir()):
            # Links, devices and fifos are never needed for a data set, and links are
            # how tar archives escape their folder: leave them out.
            logger.warning("Skipping %s in %s: not a regular file or folder.", info.name, archive)
            continue
        entries.append((parts, info.isdir(), info))
    return entries


def _stale_temp_dirs(dest_dir: Path) -> list[Path]:
    prefix = f".{dest_dir.name}.extracting-"
    try:
        return [p for p in dest_dir.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except FileNotFoundError:
        return []


def _open_archive(archive: Path) -> tuple[str, zipfile.ZipFile | tarfile.TarFile]:
    try:
        if zipfile.is_zipfile(archive):
            return "zip", zipfile.ZipFile(archive)
        if tarfile.is_tarfile(archive):
            return "tar", tarfile.open(archive, mode="r:*")
    except _CORRUPT_ERRORS as exc:
        raise _corrupt(archive, exc) from exc
    with open(archive, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        detail = "it starts like a zip file but its end is missing"
    elif head.lstrip().lower().startswith((b"<!do", b"<htm")):
        detail = "it is an HTML page"
    else:
        detail = "unknown format"
    raise _corrupt(archive, detail)


def extract(
    archive: str | Path,
    dest_dir: str | Path,
    *,
    expect: str | Sequence[str] | None = None,
    quiet: bool = False,
) -> Path:
    """Unpack a zip or tar archive into a folder, unless that folder is already filled.

    The layout is normalised: if everything in the archive sits in one top-level folder
    (or a chain of single folders, like ``content/drive/data/``), that folder's contents
    go straight into ``dest_dir``; otherwise the archive's root becomes ``dest_dir``.
    macOS junk (``__MACOSX/``, ``.DS_Store``, ``._*``) is left out, and so are links and
    special files in tar archives. The archive is unpacked into a temporary folder next
    to ``dest_dir`` that is renamed to ``dest_dir`` only at the end, so an interrupted
    extraction never leaves a half-filled ``dest_dir`` (a later call removes the
    temporary folder it left).

    Parameters
    ----------
    archive : str or pathlib.Path
        A ``.zip``, ``.tar``, ``.tar.gz``, ``.tar.bz2`` or ``.tar.xz`` file (recognised by
        its contents, not its name).
    dest_dir : str or pathlib.Path
        The folder to fill. If it exists and is not empty, nothing is done.
    expect : str or sequence of str, optional
        File name patterns (``fnmatch`` style, case-insensitive, e.g. ``"*.pbz2"``) of which at
        least one file in the archive must match one; checked before anything is unpacked, to
        catch a wrong file early.
    quiet : bool, default False
        Hide the progress bar.

    Returns
    -------
    pathlib.Path
        ``dest_dir``.

    Raises
    ------
    DownloadError
        If ``archive`` is missing, is not a zip or tar file, is truncated or damaged (the
        message says to delete it and download it again), holds a member whose path would
        leave ``dest_dir`` (zip-slip), holds nothing matching ``expect``, or cannot be
        written out. ``dest_dir`` is not created then.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    if dest_dir.is_dir() and any(dest_dir.iterdir()):
        logger.info("%s already exists and is not empty; not extracting %s.", dest_dir, archive)
        return dest_dir
    if dest_dir.exists() and not dest_dir.is_dir():
        raise DownloadError(f"Cannot extract into {dest_dir}: it exists and is not a folder.")
    if not archive.is_file():
        raise DownloadError(f"Cannot extract {archive}: no such file.")

    kind, handle = _open_archive(archive)
    with handle:
        try:
            if kind == "zip":
                assert isinstance(handle, zipfile.ZipFile)
                entries = _list_zip(archive, handle)
            else:
                assert isinstance(handle, tarfile.TarFile)
                entries = _list_tar(archive, handle)
        except _CORRUPT_ERRORS as exc:
            raise _corrupt(archive, exc) from exc
        members = [_Member(parts, is_dir, h) for parts, is_dir, h in entries if parts]
        members = [m for m in members if not _is_junk(m.parts)]
        if not any(not m.is_dir for m in members):
            raise DownloadError(
                f"{archive} holds no files. Delete it and download it again, or check that "
                "it is the right file."
            )
        patterns = [expect] if isinstance(expect, str) else list(expect or ())
        if patterns and not any(
            fnmatch.fnmatchcase(m.parts[-1].lower(), pattern.lower())
            for m in members
            if not m.is_dir
            for pattern in patterns
        ):
            wanted = " or ".join(repr(p) for p in patterns)
            raise DownloadError(
                f"{archive} holds no file matching {wanted}; it is probably not the "
                "expected archive. Delete it and download it again."
            )
        members = _normalise_layout(members)

        for stale in _stale_temp_dirs(dest_dir):
            logger.info("Removing %s, left by an interrupted extraction.", stale)
            shutil.rmtree(stale, ignore_errors=True)
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.extracting-", dir=dest_dir.parent))
        try:
            _write_members(archive, kind, handle, members, tmp_dir, quiet=quiet)
            if dest_dir.is_dir():
                dest_dir.rmdir()  # empty (checked above); os.replace onto a folder fails on Windows
            os.replace(tmp_dir, dest_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    logger.info("Extracted %s into %s", archive, dest_dir)
    return dest_dir


def _write_members(
    archive: Path,
    kind: str,
    handle: zipfile.ZipFile | tarfile.TarFile,
    members: list[_Member],
    root: Path,
    *,
    quiet: bool,
) -> None:
    opener: Callable[[object], IO[bytes] | None]
    if kind == "zip":
        assert isinstance(handle, zipfile.ZipFile)
        zf = handle

        def opener(info: object) -> IO[bytes] | None:
            assert isinstance(info, zipfile.ZipInfo)
            return zf.open(info)

    else:
        assert isinstance(handle, tarfile.TarFile)
        tf = handle

        def opener(info: object) -> IO[bytes] | None:
            assert isinstance(info, tarfile.TarInfo)
            return tf.extractfile(info)

    root_resolved = root.resolve()
    progress = tqdm(members, desc=f"Extracting {archive.name}", unit="file", disable=quiet)
    try:
        for member in progress:
            target = root.joinpath(*member.parts)
            # _split_member already refused '..' and absolute names; check once more.
            if not target.resolve().is_relative_to(root_resolved):
                raise DownloadError(
                    f"{archive} holds a member that leads outside the destination folder "
                    f"({'/'.join(member.parts)!r}); refusing to extract it."
                )
            if member.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                source = opener(member.handle)
                if source is None:  # pragma: no cover - regular tar members always open
                    continue
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
            except _CORRUPT_ERRORS as exc:
                raise _corrupt(archive, f"{'/'.join(member.parts)}: {exc}") from exc
            except OSError as exc:
                raise DownloadError(
                    f"Extracting {archive} into {root.parent} failed at "
                    f"{'/'.join(member.parts)} ({exc}). If the disk is full, free some space "
                    "and run again; otherwise the archive may be damaged: delete it and "
                    "download it again."
                ) from exc
    finally:
        progress.close()


# --------------------------------------------------------------------------------------
# the original project's data
# --------------------------------------------------------------------------------------


def _is_filled_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


#: File name patterns of the original project's vector files (what :mod:`revsearch.legacy` reads).
VECTOR_PATTERNS = ("*.pbz2", "*.pickle", "*.pkl")
#: File name patterns of the original project's images.
IMAGE_PATTERNS = ("*.jpg", "*.jpeg")


def folder_size(path: str | Path) -> int:
    """Bytes taken by the files under ``path`` (0 if it does not exist; links not followed)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def fetch_original_data(
    root: str | Path,
    *,
    images: bool = True,
    vectors: bool = True,
    archive_dir: str | Path | None = None,
    quiet: bool = False,
    images_source: str = ORIGINAL_IMAGES_ID,
    vectors_source: str = ORIGINAL_VECTORS_ID,
    keep_archives: bool = False,
    images_dir: str | Path | None = None,
    vectors_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Download and unpack the original project's images and vector files.

    The archives are saved in ``archive_dir`` as ``imagenet_resized.zip`` and
    ``vectors.zip`` and unpacked into ``root/imagenet_resized`` (the JPEGs, directly in
    that folder) and ``root/legacy_vectors`` (the ``<n>.pbz2``, ``.pickle`` or ``.pkl``
    files). Each archive is deleted once unpacked, unless ``keep_archives``. A folder that is
    already filled is neither downloaded nor unpacked again, and an archive already in
    ``archive_dir`` is not downloaded again, so the call can be repeated after an
    interruption.

    Parameters
    ----------
    root : str or pathlib.Path
        The folder to unpack into.
    images : bool, default True
        Fetch the images.
    vectors : bool, default True
        Fetch the vector files.
    archive_dir : str or pathlib.Path, optional
        Where to download the archives; ``root/archives`` by default.
    quiet : bool, default False
        Hide progress bars and gdown's messages.
    images_source, vectors_source : str
        Where to download each archive from: a Google Drive id or link, or any http(s)
        URL. By default the original project's Google Drive files.
    keep_archives : bool, default False
        Keep the downloaded archives after unpacking them (they take as much space again).
    images_dir, vectors_dir : str or pathlib.Path, optional
        Unpack there instead of ``root/imagenet_resized`` / ``root/legacy_vectors``.

    Returns
    -------
    dict of str to pathlib.Path
        ``{"images": root/"imagenet_resized", "vectors": root/"legacy_vectors"}``, with
        only the keys asked for.

    Raises
    ------
    DownloadError
        If a download or an extraction fails; the message says what to do.
    """
    root = Path(root)
    archives = Path(archive_dir) if archive_dir is not None else root / "archives"
    wanted: list[tuple[str, str, str, Path, tuple[str, ...]]] = []
    if images:
        folder = Path(images_dir) if images_dir is not None else root / "imagenet_resized"
        wanted.append(("images", images_source, "imagenet_resized.zip", folder, IMAGE_PATTERNS))
    if vectors:
        folder = Path(vectors_dir) if vectors_dir is not None else root / "legacy_vectors"
        wanted.append(("vectors", vectors_source, "vectors.zip", folder, VECTOR_PATTERNS))

    result: dict[str, Path] = {}
    for key, source, archive_name, dest_dir, patterns in wanted:
        if _is_filled_dir(dest_dir):
            logger.info("%s is already there; skipping the %s.", dest_dir, key)
        else:
            archive = download(source, archives / archive_name, quiet=quiet)
            extract(archive, dest_dir, expect=patterns, quiet=quiet)
            if keep_archives:
                logger.info("Kept the archive %s (%s).", archive, format_bytes(archive.stat().st_size))
            else:
                size = archive.stat().st_size
                _remove_quietly(archive)
                logger.info("Deleted the archive %s once unpacked (%s freed).", archive, format_bytes(size))
        result[key] = dest_dir
    return result


#: ``n`` bytes in words (``"1.5 GB"``): :func:`revsearch.images.format_size`, the one byte formatter.
format_bytes = format_size
