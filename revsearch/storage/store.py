"""The index folder on disk: the one module that names, writes, reads and deletes its files.

An index is one folder holding a manifest and the files it names, with no pickle in it::

    vector_dir/
        revsearch.json                      manifest: format, store id, model spec, dataset folder,
                                            shard list (with each shard's file names), sections (ANN)
        .revsearch.lock                     taken (flock) while a process writes the index
        vectors-<id>-<token>.npy            (n_i, dim) float32, L2-normalised, memory-mapped when opened
        rows-<id>-<token>.npy               (n_i,) size, mtime_ns and content hash of each row's file
        paths-<id>-<token>.txt              n_i lines: each row's image path relative to the dataset folder
        ann-<id>-<token>.faiss              an approximate index (revsearch.retrieval.ann), if one was built
        dba-<id>-<token>.npy                the database-side augmentation (4 files: augmented vectors,
                                            neighbour rows, their cosines, row keys), see below
        thumbs-<id>-<token>.npy             (m,) greyscale thumbnails for the duplicate verifier, keyed by
                                            content hash (revsearch.storage.thumbs; 36 KiB per distinct photo)

``<id>`` is the store id: 12 random hex digits drawn when the index is created and recorded in
the manifest. Every file the store writes carries it, so housekeeping can tell its own files
from anything else in the folder (a photo called ``vectors-holiday.jpg``, ``paths-notes.txt``).

Rules the store keeps:

* **Writes never modify a file in place.** New files get new names and are written through
  :func:`atomic_write` (write aside, fsync, rename); then the manifest is replaced the same way.
  A process killed at any moment leaves the previous manifest or the new one, each naming
  complete files. A full disk raises :class:`~revsearch.core.errors.StorageFullError` and leaves the
  last committed state.
* **Only the store's own files are ever deleted**, after a commit: files the previous manifest
  named that the new one does not, and files carrying this index's store id that no manifest
  names (left by a killed run). Nothing else in the folder is touched.
* **Readers hold a snapshot.** :func:`open_snapshot` memory-maps every file of the committed
  state when it opens it (no file handle stays open); a file deleted by a later commit stays
  readable through its mapping, so an open index keeps answering from the state it opened.
* **Everything read is validated**: the manifest's fields and types, every file name it lists
  (no ``/``, no ``..``), every shard's shape and dtype, every stored path (relative, no ``..``).
  A damaged index raises :class:`~revsearch.core.errors.IndexFormatError` (or its subclass
  :class:`~revsearch.core.errors.IndexDamagedError` when a rerun of the indexing can repair it).

The manifest is read and written as a :class:`Manifest`: a typed view of its JSON object and
the only code that names its keys (other modules use its properties, and say what changes
through :meth:`FolderWriter.commit`'s keyword arguments).

Format versions (:attr:`Manifest.VERSION`, with one migration per older version in
:data:`MIGRATIONS`, applied in order when a manifest is read): 1 (revsearch 0.1.0: shard files
``vectors-<token>.npy``, no store id) is read as it is and migrated by the first write (the
manifest is rewritten; the old shard files keep their names until a later commit replaces them).
2 (no augmentation section) is read as it is; search then computes the augmentation in memory,
and the first write (any update) stores it and migrates the manifest to 3.

**The augmentation section** (:attr:`Manifest.dba`, format 3): each indexed vector replaced by the
weighted sum of itself and its ``k`` nearest other vectors (:class:`revsearch.retrieval.rerank.DatabaseAugmentation`),
stored so search does not recompute it: ``vectors`` (n, dim) float32, ``neighbours`` (n, k) int64
rows, ``scores`` (n, k) float32 cosines, ``keys`` (n,) 16-byte row keys (path and content hash, see
:func:`row_keys`). It names the shard tokens it was made for; a commit that changes the shards
without giving a new section moves it to :attr:`Manifest.dba_stale` (kept, with its files, for the
next update to bring up to date incrementally: its keys say which of its rows are still there), so a
reader never meets an augmentation of other rows.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import mmap
import os
import re
import secrets
import time
from tokenize import TokenError
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..core.errors import (
    DamagedVectorsError,
    IndexDamagedError,
    IndexFormatError,
    IndexNotFoundError,
    OutsideFoldersError,
    RevsearchError,
    StorageFullError,
)
from ..core.safety import confine, crash_point, damaged_rows, display_name, vector_problem
from ..core.version import __version__

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "LOCK_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ROW_DTYPE",
    "SPEC_KEYS",
    "Manifest",
    "MIGRATIONS",
    "ShardRef",
    "ShardView",
    "Snapshot",
    "FolderWriter",
    "atomic_write",
    "write_npy",
    "read_manifest",
    "validate_manifest",
    "open_snapshot",
    "writing",
    "exists",
    "new_token",
    "utc_now",
    "encode_paths",
    "check_relpath",
    "check_vectors",
    "write_shard",
    "find_shard",
    "shard_file_names",
    "StoredAugmentation",
    "row_keys",
    "open_augmentation",
    "AUGMENTATION_SECTIONS",
    "KEY_DTYPE",
]

MANIFEST_NAME = "revsearch.json"
LOCK_NAME = ".revsearch.lock"
FORMAT_NAME = "revsearch-index"
#: 2: store id, file names per shard, paths stored with surrogateescape (non-UTF-8 names kept).
#: 3: the database-side augmentation section (``dba``, ``dba_stale``).
#: 4: the ``thumbs`` section (thumbnails for the duplicate verifier, :attr:`Manifest.thumbs`).
FORMAT_VERSION = 4
ROW_DTYPE = np.dtype([("size", "<i8"), ("mtime_ns", "<i8"), ("digest", "V16")])
#: Spec fields that must agree between an index and a query embedder.
SPEC_KEYS = ("model", "preprocessing", "dim", "weights")
#: Kinds of shard file and their suffixes.
SHARD_FILES = {"vectors": ".npy", "rows": ".npy", "paths": ".txt"}
#: Kinds of section file (one per section, e.g. the approximate index) and their suffixes.
SECTION_FILES = {"ann": ".faiss", "dba": ".npy", "thumbs": ".npy"}
#: Most files the ``thumbs`` section may name (each update adds one; then they are merged).
THUMB_FILES_MAX = 8
#: Manifest sections holding a database-side augmentation, and the arrays each one names.
AUGMENTATION_SECTIONS = ("dba", "dba_stale")
AUGMENTATION_FILES = ("vectors", "neighbours", "scores", "keys")
#: A row key of the augmentation section: 16 bytes (see :func:`row_keys`).
KEY_DTYPE = np.dtype("V16")

_ID_RE = re.compile(r"[0-9a-f]{12}")
_TOKEN_RE = re.compile(r"[0-9a-z][0-9a-z_-]{0,63}")
_V1_NAME = re.compile(r"(vectors|rows|paths)-[0-9a-zA-Z][0-9a-zA-Z_-]{0,63}\.(npy|txt)|ann-[0-9a-zA-Z_-]{1,64}\.faiss")
_NAME_RE = re.compile(r"(vectors|rows|paths|ann|dba|thumbs)-([0-9a-f]{12})-([0-9a-z][0-9a-z_-]{0,63})\.(npy|txt|faiss)")
#: Text encoding of stored paths: UTF-8, with undecodable bytes of POSIX file names kept as they are.
PATH_ERRORS = "surrogateescape"
_WRITE_CHUNK = 16 * 2**20
#: A manifest larger than this is damaged (one of a million shards takes ~250 bytes).
MAX_MANIFEST_BYTES = 256 * 2**20
#: Longest stored path, in bytes (PATH_MAX on Linux): a paths file longer than this per row is damaged.
MAX_PATH_BYTES = 4096


# ---------------------------------------------------------------------------------------- small helpers
def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (as stored in manifests)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_token() -> str:
    """A new unique shard or section token: milliseconds since the epoch and 6 random hex digits."""
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(3)}"


def exists(folder: str | os.PathLike) -> bool:
    """Tell whether ``folder`` holds an index (a manifest)."""
    return (Path(folder) / MANIFEST_NAME).is_file()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG):
        return True
    return isinstance(e, OSError) and e.errno is None and "requested and" in str(e) and "written" in str(e)


def atomic_write(path: Path, write: Callable[[BinaryIO], None], *, tag: str = "") -> None:
    """Call ``write(file)`` on a temporary sibling, fsync it, then rename it over ``path``.

    The one way files of an index are written. The temporary file is
    ``.<name>.<tag>-<8 hex>.tmp`` and is removed if anything fails.

    Parameters
    ----------
    path : pathlib.Path
        The final file.
    write : callable
        Writes the content to the binary file object it is given.
    tag : str
        Put in the temporary name (the store id), so housekeeping knows it wrote it.

    Raises
    ------
    StorageFullError
        If the disk (or quota) is full: nothing was replaced.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{tag or 'x'}-{secrets.token_hex(4)}.tmp")
    try:
        crash_point(f"write {path.name}")
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        crash_point(f"rename into {path.name}")
        os.replace(tmp, path)
        crash_point(f"renamed into {path.name}")
    except OSError as e:
        if _is_disk_full(e):
            raise StorageFullError(
                f"no space left on device in {str(path.parent)!r} (writing {path.name}): free some space and run "
                "again; the index keeps its last committed state"
            ) from e
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_npy(fh: BinaryIO, blocks: np.ndarray | Iterable[np.ndarray], shape: tuple[int, ...], dtype: Any) -> None:
    """Write an ``.npy`` file (format 1.0) from an array or from consecutive blocks of rows.

    Blocks are streamed (each converted to ``dtype``, C order), so a large array never needs to
    be in memory whole; a plain ``file.write`` reports a full disk with its errno.

    Parameters
    ----------
    fh : binary file
    blocks : numpy.ndarray or iterable of numpy.ndarray
        The rows, shape ``shape`` in total.
    shape : tuple of int
    dtype : numpy dtype
    """
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(int(s) for s in shape)}
    np.lib.format.write_array_header_1_0(fh, header)
    if isinstance(blocks, np.ndarray):
        blocks = [blocks]
    written = 0
    for block in blocks:
        arr = np.ascontiguousarray(block, dtype=dtype)
        flat = arr.reshape(-1).view(np.uint8)
        for a in range(0, len(flat), _WRITE_CHUNK):
            fh.write(memoryview(flat[a : a + _WRITE_CHUNK]))
        written += arr.shape[0] if arr.ndim else 1
    if shape and written != shape[0]:
        raise ValueError(f"wrote {written} rows, expected {shape[0]}")


def check_relpath(path: str) -> str | None:
    """Why ``path`` cannot be a stored image path (None if it can).

    A stored path is relative to the dataset folder, ``/``-separated, with no empty, ``.`` or
    ``..`` part and no line break or NUL, so that joining it to the dataset folder never leaves it.
    """
    if not path:
        return "it is empty"
    if "\n" in path or "\r" in path or "\0" in path:
        return "it contains a line break or NUL"
    if path.startswith("/"):
        return "it is absolute"
    parts = path.split("/")
    if os.name == "nt":  # there a backslash separates too, and "C:" starts an absolute path
        if path.startswith("\\") or (len(path) > 1 and path[1] == ":"):
            return "it is absolute"
        parts = re.split(r"[\\/]", path)
    if any(p in ("", ".", "..") for p in parts):
        return "it has an empty, '.' or '..' part"
    return None


def _suspect(raw: bytes) -> bool:
    """Whether a whole paths file (lines ending in newline) may hold a path :func:`check_relpath` refuses:
    an empty, "." or ".." part (which includes an absolute path and an empty line), a carriage return
    or NUL. Vectorised: 100,000 paths in a few milliseconds."""
    if b"\r" in raw or b"\0" in raw:
        return True
    a = np.frombuffer(raw + b"\n\n\n", np.uint8)
    sep = (a == ord("/")) | (a == ord("\n"))
    starts = np.concatenate([[0], np.flatnonzero(sep[: len(raw) - 1]) + 1])  # where each part begins
    dot = a == ord(".")
    empty = sep[starts]
    one_dot = dot[starts] & sep[starts + 1]
    two_dots = dot[starts] & dot[starts + 1] & sep[starts + 2]
    return bool((empty | one_dot | two_dots).any())


def encode_paths(paths: Sequence[str]) -> bytes:
    """The content of a paths file: one path per line, UTF-8 (non-UTF-8 file names kept byte for byte).

    Raises
    ------
    ValueError
        If a path could not be read back as it is (see :func:`check_relpath`).
    """
    for p in paths:
        why = check_relpath(p)
        if why is not None:
            raise ValueError(f"cannot store the image path {p!r}: {why}")
    return "".join(p + "\n" for p in paths).encode("utf-8", PATH_ERRORS)


# ---------------------------------------------------------------------------------------- confinement
def _inside_folder(folder: Path, path: Path) -> Path:
    """``path`` (a file of the index in ``folder``) if it resolves inside ``folder``; a link leading
    out (a manifest or shard file replaced by a symbolic link) raises IndexDamagedError."""
    try:
        return confine(path, [folder], source=folder / MANIFEST_NAME, what="the index file")
    except OutsideFoldersError as e:
        raise IndexDamagedError(folder, f"{e} (a symbolic link leading out of the index folder)") from None


def _read_small(folder: Path, path: Path, limit: int) -> bytes:
    """The bytes of a file of the index (inside its folder, at most ``limit`` bytes)."""
    if not path.is_symlink() and not path.exists():
        raise FileNotFoundError(str(path))
    real = _inside_folder(folder, path)
    with open(real, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise IndexFormatError(
                f"{display_name(path)!r} holds {size} bytes, more than any revsearch index file of its kind "
                f"({limit}): it is damaged or not an index file; restore it or index the images again"
            )
        return f.read(limit + 1)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# ---------------------------------------------------------------------------------------- manifest
def _damaged(mpath: Path, what: str) -> IndexFormatError:
    return IndexFormatError(
        f"the index manifest {str(mpath)!r} is damaged ({what}): index the images again into a new folder "
        "(or restore the folder from a backup)"
    )


def shard_file_names(store_id: str, token: str) -> dict[str, str]:
    """The file names of shard ``token`` of the index with this store id: ``{"vectors": ..., "rows": ..., "paths": ...}``."""
    return _shard_names(store_id, token)


def _shard_names(store_id: str | None, token: str) -> dict[str, str]:
    if store_id is None:  # format 1
        return {kind: f"{kind}-{token}{suffix}" for kind, suffix in SHARD_FILES.items()}
    return {kind: f"{kind}-{store_id}-{token}{suffix}" for kind, suffix in SHARD_FILES.items()}


def _valid_name(name: Any, store_id: str | None) -> bool:
    if not isinstance(name, str):
        return False
    return _NAME_RE.fullmatch(name) is not None or _V1_NAME.fullmatch(name) is not None


def _migrate_1_to_2(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2, in memory: each shard names its files (format 1's names, without a store id).

    The store id stays absent until the first write draws one; ``format_version`` keeps what the
    file says (so :attr:`Manifest.needs_migration` tells that the next commit rewrites it).
    """
    out = dict(raw)
    shards = raw.get("shards")
    if isinstance(shards, list):
        out["shards"] = [
            {**e, "files": _shard_names(None, e["token"])} if isinstance(e, dict) and isinstance(e.get("token"), str) else e
            for e in shards
        ]
    return out


#: The migrations, in order: ``MIGRATIONS[v]`` turns a manifest of format ``v`` into format ``v + 1``
#: (in memory; the next commit writes :attr:`Manifest.VERSION`). A version whose manifests read as
#: they are in the next one (e.g. a new optional section) needs no entry.
def _migrate_2_to_3(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 2 -> 3, in memory: nothing to change (format 3 adds the optional augmentation section;
    search computes it in memory until the next update stores it)."""
    return dict(raw)


def _migrate_3_to_4(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 3 -> 4, in memory: nothing to change (format 4 adds the optional ``thumbs`` section;
    ``duplicates`` makes thumbnails from the photos until the next update stores them)."""
    return dict(raw)


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4,
}


def validate_manifest(manifest: Any, mpath: Path) -> Manifest:
    """Check a manifest's structure and names; return it migrated to the current format (in memory).

    Raises
    ------
    IndexFormatError
        What is wrong, in one line.
    """
    if not isinstance(manifest, dict):
        raise _damaged(mpath, f"it holds a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{str(mpath)!r} is not a revsearch index manifest")
    version = manifest.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _damaged(mpath, f"format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"the index in {str(mpath.parent)!r} has format version {version}, newer than this revsearch "
            f"understands ({FORMAT_VERSION}): upgrade revsearch"
        )
    for v in range(version, FORMAT_VERSION):  # in order, each to the next version
        if v in MIGRATIONS:
            manifest = MIGRATIONS[v](manifest)
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        raise _damaged(mpath, "'spec' is missing or not an object")
    for key in ("model", "weights"):
        if not isinstance(spec.get(key), str):
            raise _damaged(mpath, f"spec {key!r} is missing or not a string")
    dim = spec.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= 1 << 20:
        raise _damaged(mpath, f"spec 'dim' is {dim!r}, not a positive integer")
    store_id = manifest.get("store_id")
    if version >= 2 and (not isinstance(store_id, str) or not _ID_RE.fullmatch(store_id)):
        raise _damaged(mpath, f"'store_id' is {store_id!r}, not 12 hex digits")
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise _damaged(mpath, "'shards' is missing or not a list")
    out_shards = []
    total = 0
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise _damaged(mpath, f"shard {i} is not an object")
        token, count = entry.get("token"), entry.get("count")
        if not isinstance(token, str) or not re.fullmatch(r"[0-9a-zA-Z][0-9a-zA-Z_-]{0,63}", token):
            raise _damaged(mpath, f"shard {i} has the token {token!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise _damaged(mpath, f"shard {i} has the count {count!r}")
        files = entry.get("files")
        if not isinstance(files, dict) or set(files) != set(SHARD_FILES):
            raise _damaged(mpath, f"shard {i} does not name its files")
        for kind, name in files.items():
            if not _valid_name(name, store_id) or not name.endswith(SHARD_FILES[kind]):
                raise _damaged(mpath, f"shard {i} names the file {name!r}")
        out_shards.append({**entry, "files": dict(files)})
        total += count
    names = [n for s in out_shards for n in s["files"].values()]
    if len(set(names)) != len(names):
        raise _damaged(mpath, "two shards name the same file")
    if "count" in manifest and manifest["count"] != total:
        raise _damaged(mpath, f"'count' is {manifest['count']!r} but the shards hold {total} rows")
    for section in ("ann", "ann_stale"):
        meta = manifest.get(section)
        if meta is None:
            continue
        if not isinstance(meta, dict):
            raise _damaged(mpath, f"{section!r} is not an object")
        name = meta.get("file")
        if name is not None and (not _valid_name(name, store_id) or not str(name).endswith(".faiss")):
            raise _damaged(mpath, f"{section!r} names the file {name!r}")
    for section in AUGMENTATION_SECTIONS:
        meta = manifest.get(section)
        if meta is None:
            continue
        if not isinstance(meta, dict):
            raise _damaged(mpath, f"{section!r} is not an object")
        files = meta.get("files")
        if not isinstance(files, dict) or set(files) != set(AUGMENTATION_FILES) or not all(
            isinstance(n, str) and n.startswith("dba-") and n.endswith(".npy") and _NAME_RE.fullmatch(n)
            for n in files.values()
        ):
            raise _damaged(mpath, f"{section!r} does not name its files")
        k, count, alpha = meta.get("k"), meta.get("count"), meta.get("alpha")
        if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            raise _damaged(mpath, f"{section!r} has k = {k!r}")
        if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
            raise _damaged(mpath, f"{section!r} has count = {count!r}")
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 <= alpha < float("inf")):
            raise _damaged(mpath, f"{section!r} has alpha = {alpha!r}")
        tokens = meta.get("shards")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise _damaged(mpath, f"{section!r} does not list its shards")
    thumbs = manifest.get("thumbs")
    if thumbs is not None:
        files = thumbs.get("files") if isinstance(thumbs, dict) else None
        side = thumbs.get("side") if isinstance(thumbs, dict) else None
        if not isinstance(files, list) or not isinstance(side, int) or isinstance(side, bool) or not 0 < side <= 1024:
            raise _damaged(mpath, "'thumbs' is not an object with a list of 'files' and a 'side'")
        for name in files:
            if not _valid_name(name, store_id) or not str(name).startswith("thumbs-") or not str(name).endswith(".npy"):
                raise _damaged(mpath, f"'thumbs' names the file {name!r}")
    links = manifest.get("follow_links")
    if links is not None and links not in ("inside", "all", "none"):
        raise _damaged(mpath, f"'follow_links' is {links!r}, not 'inside', 'all' or 'none'")
    ds = manifest.get("dataset_dir")
    if ds is not None and (
        not isinstance(ds, dict) or not all(isinstance(v, str) for v in ds.values() if v is not None)
    ):
        raise _damaged(mpath, "'dataset_dir' is not an object of strings")
    out = Manifest(manifest)
    out["shards"] = out_shards
    out["count"] = total
    if not isinstance(out.get("complete", True), bool):
        raise _damaged(mpath, f"'complete' is {out['complete']!r}")
    return out


class Manifest(dict):
    """The manifest of an index, typed: the only code that names its keys.

    A dict holding the manifest's JSON object (so it compares, copies and serialises as one),
    with a typed property for each entry. Code outside :mod:`revsearch.storage.store` reads these
    properties and changes the manifest through :meth:`FolderWriter.commit`'s keyword arguments.
    """

    #: The format version this revsearch writes (older ones are migrated, see :data:`MIGRATIONS`).
    VERSION = FORMAT_VERSION

    # ------------------------------------------------------------------ the format
    @property
    def format_version(self) -> int:
        """The version the file says (older than :attr:`VERSION` until the next commit migrates it)."""
        return int(self.get("format_version", 1))

    @property
    def needs_migration(self) -> bool:
        """True if the file is of an older format (the next commit rewrites it)."""
        return self.format_version < self.VERSION

    @property
    def migrated_from(self) -> int | None:
        """The format version an earlier commit migrated this index from, if any."""
        return self.get("migrated_from")

    @property
    def store_id(self) -> str | None:
        """12 hex digits carried by every file of the index (None for format 1 until its first write)."""
        return self.get("store_id")

    @property
    def revsearch_version(self) -> str | None:
        """The revsearch that committed this manifest."""
        return self.get("revsearch_version")

    @property
    def created(self) -> str | None:
        """When the index was created (ISO 8601, UTC)."""
        return self.get("created")

    @property
    def updated(self) -> str | None:
        """When the manifest was last committed (ISO 8601, UTC)."""
        return self.get("updated")

    # ------------------------------------------------------------------ the vectors
    @property
    def spec(self) -> dict[str, Any]:
        """What made the vectors: ``model``, ``preprocessing``, ``dim``, ``weights``, ``precision``, ... (a copy)."""
        return dict(self["spec"])

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self["spec"]["dim"])

    @property
    def shards(self) -> list[ShardRef]:
        """The committed shards, in row order."""
        return [ShardRef(e["token"], int(e["count"]), dict(e["files"])) for e in self.get("shards", [])]

    @property
    def count(self) -> int:
        """Rows of all shards together."""
        return int(self.get("count", 0))

    @property
    def complete(self) -> bool:
        """False while (or if) an indexing run has not finished."""
        return bool(self.get("complete", True))

    @property
    def weights_path(self) -> str | None:
        """The weights file the model was loaded from (spec ``weights`` ``"file:..."``), if any."""
        return self.get("weights_path")

    # ------------------------------------------------------------------ the dataset
    @property
    def dataset_absolute(self) -> str | None:
        """The dataset folder's absolute path when it was last indexed."""
        return (self.get("dataset_dir") or {}).get("absolute")

    @property
    def dataset_relative(self) -> str | None:
        """The dataset folder relative to the index folder when it was last indexed."""
        return (self.get("dataset_dir") or {}).get("relative_to_index")

    def dataset_dir(self, folder: str | os.PathLike) -> Path | None:
        """The dataset folder of the index in ``folder``: found next to it as when it was built, else
        its recorded absolute path (None if none is recorded)."""
        rel, absolute = self.dataset_relative, self.dataset_absolute
        if rel is not None and (Path(folder) / rel).is_dir():
            return (Path(folder) / rel).resolve()
        return Path(absolute) if absolute else None

    @property
    def exclude(self) -> list[str]:
        """Exclusion patterns later updates apply (see ``--exclude``)."""
        return list(self.get("exclude") or [])

    @property
    def follow_links(self) -> str | None:
        """Which symbolic links of the dataset folder indexing follows (``"inside"``, ``"all"``, ``"none"``;
        see :func:`revsearch.media.images.find_images`); None for an index made before the choice was recorded."""
        value = self.get("follow_links")
        return value if isinstance(value, str) else None

    @property
    def imported_from(self) -> dict[str, Any] | None:
        """Where an imported index came from (``legacy_dir``, ``files_skipped``), if it was imported."""
        return self.get("imported_from")

    @property
    def built_with(self) -> str | None:
        """``"dask"`` if the last indexing ran on a Dask cluster."""
        return self.get("built_with")

    # ------------------------------------------------------------------ the approximate index
    @property
    def ann(self) -> dict[str, Any] | None:
        """The approximate index's entry (:mod:`revsearch.retrieval.ann`: ``file``, ``kind``, ``params``, ``count``...)."""
        return self.get("ann")

    @property
    def ann_stale(self) -> dict[str, Any] | None:
        """The entry of an approximate index an unfinished update made stale (extended or rebuilt at its end)."""
        return self.get("ann_stale")

    def with_ann(self, meta: dict[str, Any] | None) -> Manifest:
        """A copy (in memory, not committed) naming ``meta`` as its approximate index."""
        out = Manifest(self)
        out.pop("ann_stale", None)
        if meta is None:
            out.pop("ann", None)
        else:
            out["ann"] = meta
        return out

    # ------------------------------------------------------------------ search expansion
    @property
    def dba(self) -> dict[str, Any] | None:
        """The stored database-side augmentation of these rows (``k``, ``alpha``, ``count``, ``shards``,
        ``files``; see :func:`open_augmentation`), or None."""
        return self.get("dba")

    @property
    def dba_stale(self) -> dict[str, Any] | None:
        """An augmentation a commit that changed the rows set aside (the next update starts from it)."""
        return self.get("dba_stale")

    @property
    def expansion(self) -> dict[str, Any] | None:
        """The search expansion recorded for this collection (``qe``, ``alpha``, ``dba``, ``dba_alpha``;
        :class:`revsearch.retrieval.rerank.Expansion`), or None for the default."""
        return self.get("expansion")

    # ------------------------------------------------------------------ the duplicate verifier's thumbnails
    @property
    def thumbs(self) -> dict[str, Any] | None:
        """The thumbnails' entry (:mod:`revsearch.storage.thumbs`: ``side``, ``files``), None before format 4's first update."""
        return self.get("thumbs")

    @property
    def thumb_side(self) -> int | None:
        """Longer side (pixels) of the stored thumbnails, None without them."""
        t = self.thumbs
        return int(t["side"]) if t else None

    @property
    def thumb_files(self) -> list[str]:
        """The files holding the stored thumbnails."""
        t = self.thumbs
        return list(t["files"]) if t else []

    # ------------------------------------------------------------------ files
    def file_names(self) -> set[str]:
        """Every file the manifest names (shards and sections)."""
        return _named_files(self)


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """Read and validate the manifest of the index in ``folder`` (format 1 is migrated in memory).

    Returns
    -------
    Manifest
        The manifest; ``format_version`` is what the file says, migrated to the current shape.

    Raises
    ------
    IndexNotFoundError
        If the folder holds no manifest.
    IndexFormatError
        If it is damaged or of a newer format.
    """
    folder = Path(folder)
    mpath = folder / MANIFEST_NAME
    try:
        raw = _read_small(folder, mpath, MAX_MANIFEST_BYTES)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        legacy = folder.is_dir() and any(
            p.suffix.lower() in (".pbz2", ".pickle", ".pkl") for p in folder.iterdir() if p.is_file()
        )
        hint = (
            " It holds vector files of the original project: convert them with "
            f"`revsearch import-legacy {folder} NEW_VECTOR_DIR`."
            if legacy
            else " Build one first: reverse_image_search(..., generate=True) or `revsearch index DATASET_DIR VECTOR_DIR`."
        )
        raise IndexNotFoundError(f"no revsearch index in {str(folder)!r}.{hint}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _damaged(mpath, f"not JSON: {e}") from None
    return validate_manifest(manifest, mpath)


# ---------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ShardRef:
    """A shard's name: its token, row count and file names (committed or about to be)."""

    token: str
    count: int
    files: dict[str, str]

    def entry(self) -> dict[str, Any]:
        """The shard's manifest entry."""
        return {"token": self.token, "count": self.count, "files": dict(self.files)}


def _map_bytes(path: Path) -> Any:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class ShardView:
    """One committed shard, opened: its three files are memory-mapped when the view is made.

    Attributes
    ----------
    ref : ShardRef
    vectors : numpy.ndarray
        Shape (count, dim) float32, memory-mapped.
    """

    def __init__(self, folder: Path, ref: ShardRef, dim: int) -> None:
        self.folder = folder
        self.ref = ref
        self._paths: list[str] | None = None
        f = ref.files
        self._damaged: np.ndarray | None = None
        self.vectors = self._load_npy("vectors", np.dtype(np.float32), (ref.count, dim))
        self._rows = self._load_npy("rows", ROW_DTYPE, (ref.count,))
        ppath = folder / f["paths"]
        try:
            real = _inside_folder(folder, ppath) if ppath.is_symlink() else ppath
            self._text = _map_bytes(real)
        except FileNotFoundError:
            raise _Missing(ppath) from None
        except OSError as e:
            raise IndexDamagedError(folder, f"index file {str(ppath)!r} cannot be read ({e})") from None
        if len(self._text) > ref.count * (MAX_PATH_BYTES + 1):
            raise IndexDamagedError(
                folder, f"index file {str(ppath)!r} holds {len(self._text)} bytes, too many for {ref.count} paths"
            )

    def _load_npy(self, kind: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        path = self.folder / self.ref.files[kind]
        try:
            real = _inside_folder(self.folder, path) if path.is_symlink() else path
            arr = np.load(real, mmap_mode="r" if self.ref.count else None, allow_pickle=False)
            size = os.stat(real).st_size
        except FileNotFoundError:
            raise _Missing(path) from None
        except (OSError, ValueError, EOFError, SyntaxError, TokenError, MemoryError, OverflowError, TypeError) as e:
            # numpy parses the header with ast.literal_eval: a damaged one raises any of these
            raise IndexDamagedError(self.folder, f"index file {str(path)!r} is damaged ({display_name(e)})") from None
        if arr.dtype != dtype or arr.shape != shape:
            raise IndexDamagedError(
                self.folder, f"index file {str(path)!r} holds {arr.shape} {arr.dtype}, expected {shape} {dtype}"
            )
        if isinstance(arr, np.memmap) and arr.offset + arr.nbytes != size:
            raise IndexDamagedError(
                self.folder, f"index file {str(path)!r} holds {size - arr.offset - arr.nbytes} bytes more than its {shape} rows"
            )
        return arr

    def damaged_rows(self) -> np.ndarray:
        """Shape (count,) bool: rows whose vector is damaged (NaN, infinite, length far from 1;
        see :func:`revsearch.core.safety.damaged_rows`). Computed once per view (one pass over the file)."""
        if self._damaged is None:
            self._damaged = damaged_rows(self.vectors)
        return self._damaged

    @property
    def token(self) -> str:
        return self.ref.token

    @property
    def count(self) -> int:
        return self.ref.count

    @property
    def rows(self) -> np.ndarray:
        """Shape (count,) :data:`ROW_DTYPE`: each row's file size, mtime and content hash."""
        return self._rows

    @property
    def paths(self) -> list[str]:
        """Shape (count,): each row's path relative to the dataset folder (validated on first use)."""
        if self._paths is None:
            path = self.folder / self.ref.files["paths"]
            raw = bytes(self._text)
            text = raw.decode("utf-8", PATH_ERRORS)
            paths = text.split("\n")[:-1] if text else []
            if len(paths) != self.count or (text and not text.endswith("\n")):
                raise IndexDamagedError(
                    self.folder, f"index file {str(path)!r} names {len(paths)} images, expected {self.count}"
                )
            if raw and (os.name == "nt" or _suspect(raw)):
                for p in paths:  # which path, and why (rare: only when the whole-text check found something)
                    why = check_relpath(p)
                    if why is not None:
                        raise IndexDamagedError(self.folder, f"index file {str(path)!r} holds the path {p!r}: {why}")
            self._paths = paths
        return self._paths


class _Missing(Exception):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


@dataclass
class Snapshot:
    """A committed state of an index, opened: the manifest and every shard, memory-mapped.

    Later commits by other processes do not change a snapshot: the files it maps stay readable
    even once deleted.

    Attributes
    ----------
    folder : pathlib.Path
    manifest : Manifest
    shards : list of ShardView
    """

    folder: Path
    manifest: Manifest
    shards: list[ShardView] = field(default_factory=list)
    #: The stored augmentation of these rows (memory-mapped when the snapshot was opened), or None.
    augmentation: StoredAugmentation | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.manifest, Manifest):
            self.manifest = Manifest(self.manifest)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest.spec

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    @property
    def store_id(self) -> str | None:
        return self.manifest.store_id

    def __len__(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def vectors(self) -> list[np.ndarray]:
        """Each shard's (n_i, dim) float32 matrix."""
        return [s.vectors for s in self.shards]

    def refs(self) -> list[ShardRef]:
        return [s.ref for s in self.shards]

    def take(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The vectors of global rows ``rows`` (any order), shape (len(rows), dim) float32 (a copy)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), self.dim), np.float32)
        offset = 0
        for s in self.shards:
            m = (rows >= offset) & (rows < offset + s.count)
            if m.any():
                out[m] = s.vectors[rows[m] - offset]
            offset += s.count
        if len(rows) and ((rows < 0) | (rows >= offset)).any():
            raise IndexError("row out of range")
        return out

    def damaged_rows(self) -> np.ndarray:
        """Global row numbers whose vector is damaged (NaN, infinite, length far from 1), shape (m,) int64.

        One pass over the vectors on the first call (per shard, cached); an index written by
        revsearch has none unless a file was damaged afterwards (a bad copy or sync).
        """
        out, offset = [], 0
        for s in self.shards:
            out.append(np.flatnonzero(s.damaged_rows()) + offset)
            offset += s.count
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def path_at(self, row: int) -> str:
        """The stored path of global row ``row``."""
        if row < 0:
            raise IndexError("row out of range")
        for s in self.shards:
            if row < s.count:
                return s.paths[row]
            row -= s.count
        raise IndexError("row out of range")


def _open_shards(folder: Path, manifest: Manifest) -> list[ShardView]:
    return [ShardView(folder, ref, manifest.dim) for ref in manifest.shards]


def open_snapshot(folder: str | os.PathLike, *, attempts: int = 8) -> Snapshot:
    """Open the committed state of the index in ``folder`` (memory-mapped; milliseconds).

    If a writer commits while the files are being mapped (so one is gone), the manifest is read
    again; a file missing from an unchanged manifest means the index is damaged.

    Raises
    ------
    IndexNotFoundError, IndexFormatError, IndexDamagedError
    """
    folder = Path(folder)
    for _ in range(attempts):
        manifest = read_manifest(folder)
        try:
            shards = _open_shards(folder, manifest)
            return Snapshot(folder, manifest, shards, open_augmentation(folder, manifest, "dba", shards))
        except _Missing as e:
            missing = e.path
            try:
                again = read_manifest(folder)
            except IndexNotFoundError:
                again = None
            if again == manifest:
                raise IndexDamagedError(folder, f"index file {str(missing)!r} is missing") from None
    raise IndexDamagedError(folder, f"index file {str(missing)!r} is missing")  # pragma: no cover


# ---------------------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class StoredAugmentation:
    """A database-side augmentation section, opened (every array memory-mapped).

    Attributes
    ----------
    meta : dict
        The manifest section: ``k``, ``alpha``, ``count``, ``shards`` (tokens), ``files``.
    vectors : numpy.ndarray
        Shape (n, dim) float32, the augmented, L2-normalised vectors.
    neighbours : numpy.ndarray
        Shape (n, k) int64, each row's k nearest other rows (-1 where there are fewer).
    scores : numpy.ndarray
        Shape (n, k) float32, their cosines (-inf for -1).
    keys : numpy.ndarray
        Shape (n,) :data:`KEY_DTYPE`, each row's key (:func:`row_keys`).
    """

    meta: dict[str, Any]
    vectors: np.ndarray
    neighbours: np.ndarray
    scores: np.ndarray
    keys: np.ndarray

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def alpha(self) -> float:
        return float(self.meta["alpha"])

    def __len__(self) -> int:
        return int(self.meta["count"])


def row_keys(paths: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """Each row's key for the augmentation section: a 16-byte hash of its path and its file's content hash.

    A row keeps its key while its file is unchanged (moved shards, merges, other rows added or
    removed); a re-embedded file gets a new content hash and so a new key.

    Parameters
    ----------
    paths : sequence of str
        Shape (n,), stored paths.
    rows : numpy.ndarray
        Shape (n,) :data:`ROW_DTYPE`.

    Returns
    -------
    numpy.ndarray
        Shape (n,) :data:`KEY_DTYPE`.
    """
    import hashlib

    rows = np.asarray(rows, ROW_DTYPE)
    out = np.zeros(len(paths), KEY_DTYPE)
    for i, (p, r) in enumerate(zip(paths, rows)):
        h = hashlib.blake2b(p.encode("utf-8", PATH_ERRORS) + b"\0" + bytes(r["digest"]), digest_size=16)
        out[i] = np.void(h.digest())
    return out


def open_augmentation(
    folder: str | os.PathLike, manifest: dict[str, Any], section: str = "dba", shards: Sequence[ShardView] | None = None
) -> StoredAugmentation | None:
    """Memory-map the augmentation section ``section`` of a manifest (None if there is none or it is unusable).

    With ``shards`` (the snapshot's), the section must have been made for exactly those shards
    and the manifest's dimension. A missing or damaged file is logged, not raised: search then
    computes the augmentation in memory and the next update writes it again.
    """
    meta = manifest.get(section)
    if not meta:
        return None
    folder = Path(folder)
    dim = int(manifest["spec"]["dim"])
    n, k = int(meta["count"]), int(meta["k"])
    if shards is not None and (meta["shards"] != [s.token for s in shards] or n != sum(s.count for s in shards)):
        logger.warning("the augmentation stored in %s is not of the index's rows: ignored", folder)
        return None
    expect = {"vectors": (np.float32, (n, dim)), "neighbours": (np.int64, (n, k)), "scores": (np.float32, (n, k)),
              "keys": (KEY_DTYPE, (n,))}
    arrays = {}
    for kind, (dtype, shape) in expect.items():
        path = folder / meta["files"][kind]
        try:
            arr = np.load(path, mmap_mode="r" if n else None, allow_pickle=False)
        except FileNotFoundError:
            if section == "dba" and shards is not None:
                raise _Missing(path) from None  # maybe a commit in between: open_snapshot reads the manifest again
            logger.warning("the augmentation file %s is missing: ignored (the next update writes it again)", path)
            return None
        except (OSError, ValueError) as e:
            logger.warning("the augmentation file %s is damaged (%s): ignored (the next update writes it again)", path, e)
            return None
        if arr.dtype != np.dtype(dtype) or arr.shape != shape:
            logger.warning("the augmentation file %s holds %s %s, expected %s %s: ignored", path, arr.shape, arr.dtype,
                           shape, np.dtype(dtype))
            return None
        arrays[kind] = arr
    nb = arrays["neighbours"]
    if n and (np.asarray(nb).min(initial=0) < -1 or np.asarray(nb).max(initial=-1) >= n):
        logger.warning("the augmentation stored in %s names rows out of range: ignored", folder)
        return None
    return StoredAugmentation(dict(meta), arrays["vectors"], nb, arrays["scores"], arrays["keys"])


# ---------------------------------------------------------------------------------------- writing
def write_shard(
    folder: str | os.PathLike,
    store_id: str,
    vectors: np.ndarray | Iterable[np.ndarray],
    rows: np.ndarray,
    paths: Sequence[str],
    *,
    token: str | None = None,
    dim: int | None = None,
) -> ShardRef:
    """Write the three files of a new shard (each atomically); no manifest names it yet.

    Used by :meth:`FolderWriter.write_shard` and by Dask workers (whose client holds the lock).

    Parameters
    ----------
    folder : path
    store_id : str
        The index's store id (in the file names).
    vectors : numpy.ndarray or iterable of numpy.ndarray
        Shape (n, dim) float32, or consecutive blocks of rows (streamed; give ``dim``).
    rows : numpy.ndarray
        Shape (n,) :data:`ROW_DTYPE`.
    paths : sequence of str
        Shape (n,), relative paths (checked by :func:`encode_paths`).
    token : str, optional
        Names the files (default: :func:`new_token`). A deterministic token (Dask partitions)
        makes a retried write replace the same files; the paths file is written last, so its
        presence means the shard is complete.
    dim : int, optional
        Vector dimension, needed when ``vectors`` is an iterable of blocks.

    Returns
    -------
    ShardRef
    """
    folder = Path(folder)
    token = token or new_token()
    if not _TOKEN_RE.fullmatch(token) or not _ID_RE.fullmatch(store_id):
        raise ValueError(f"bad shard token {token!r} or store id {store_id!r}")
    n = len(paths)
    rows = np.asarray(rows, ROW_DTYPE)
    if len(rows) != n:
        raise ValueError("vectors, rows and paths must be aligned")
    text = encode_paths(paths)
    if isinstance(vectors, np.ndarray):
        if vectors.ndim != 2 or len(vectors) != n:
            raise ValueError(f"vectors of shape {vectors.shape} do not match {n} paths")
        dim = vectors.shape[1]
    elif dim is None:
        raise ValueError("dim is needed when vectors are given as blocks")
    if isinstance(vectors, np.ndarray):
        _check_vectors(vectors, 0)
    else:
        vectors = _checked_blocks(vectors)
    names = _shard_names(store_id, token)
    atomic_write(folder / names["vectors"], lambda fh: write_npy(fh, vectors, (n, dim), np.float32), tag=store_id)
    atomic_write(folder / names["rows"], lambda fh: write_npy(fh, rows, (n,), ROW_DTYPE), tag=store_id)
    atomic_write(folder / names["paths"], lambda fh: fh.write(text), tag=store_id)
    return ShardRef(token, n, names)


def check_vectors(vectors: np.ndarray) -> None:
    """Refuse vectors the store would not write: NaN or infinite values, or a length neither 1 nor 0.

    Raises
    ------
    DamagedVectorsError
        Naming the first bad row.
    """
    _check_vectors(vectors, 0)


def _check_vectors(block: np.ndarray, start: int) -> None:
    why = vector_problem(np.asarray(block, np.float32))
    if why is not None:
        if start and why.startswith("row "):
            first, rest = why[4:].split(" ", 1)
            why = f"row {int(first) + start} {rest}"
        raise DamagedVectorsError(
            f"refusing to store damaged vectors ({why}): every stored vector must be finite and of unit "
            "length (or all zero); nothing was written. Normalise them (revsearch.models.embedding.l2_normalize) "
            "or leave those images out"
        )


def _checked_blocks(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    start = 0
    for block in blocks:
        _check_vectors(block, start)
        start += len(block)
        yield block


def find_shard(folder: str | os.PathLike, store_id: str, token: str, dim: int) -> ShardRef | None:
    """A complete, sound shard with this token written earlier (e.g. by an interrupted Dask run), or None."""
    folder = Path(folder)
    ref = ShardRef(token, 0, _shard_names(store_id, token))
    try:
        text = (folder / ref.files["paths"]).read_bytes()
        n = text.count(b"\n")
        view = ShardView(folder, ShardRef(token, n, ref.files), dim)
        view.paths  # noqa: B018  (validates)
    except (OSError, _Missing, IndexFormatError):
        return None
    return view.ref


#: Default of :meth:`FolderWriter.commit`'s entries: keep what the committed manifest says.
_KEEP: Any = object()


class _FolderLock:
    """An exclusive lock on an index folder while it is written (advisory flock, POSIX only)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.fh: Any = None

    def __enter__(self) -> _FolderLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock
            return self
        try:  # never through a symbolic link (a lock file replaced by one would create a file elsewhere)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise RevsearchError(
                f"cannot take the lock {display_name(self.path)!r} ({e.strerror or e}): if it is a symbolic link, "
                "delete it (revsearch creates it again)"
            ) from None
        self.fh = os.fdopen(fd, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            self.fh = None
            raise RevsearchError(
                f"another process is writing the index in {str(self.path.parent)!r}: wait for it to finish"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class FolderWriter:
    """The one writer of an index folder, holding its lock: writes files, commits manifests.

    Get one with :func:`writing`. Each :meth:`commit` replaces the manifest atomically, then
    deletes the store's own files that no manifest names any more. Files written since the last
    commit and never committed are deleted when the writer closes (or by the next commit).

    Attributes
    ----------
    folder : pathlib.Path
    manifest : Manifest or None
        The committed manifest (None before the first commit of a new index).
    store_id : str
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest: Manifest | None = read_manifest(folder) if exists(folder) else None
        sid = self.manifest.store_id if self.manifest is not None else None
        self.store_id: str = sid if isinstance(sid, str) else secrets.token_hex(6)
        self._pending: set[str] = set()

    # -------------------------------------------------------------- reading the committed state
    def snapshot(self) -> Snapshot | None:
        """The committed state, opened (None if there is no index yet)."""
        if self.manifest is None:
            return None
        return Snapshot(self.folder, self.manifest, _open_shards(self.folder, self.manifest))

    def open_committed(self) -> tuple[Snapshot | None, list[str]]:
        """The committed state with only its sound shards, and what is wrong with the others.

        Indexing uses it to repair an index: rows of a shard whose files are missing or damaged
        are dropped (their images are embedded again).

        Returns
        -------
        snapshot : Snapshot or None
            None if there is no index yet.
        problems : list of str
            One line per shard left out.
        """
        if self.manifest is None:
            return None, []
        dim = self.manifest.dim
        views, problems = [], []
        for ref in self.manifest.shards:
            try:
                view = ShardView(self.folder, ref, dim)
                view.paths  # noqa: B018  (validates the stored paths)
            except _Missing as err:
                problems.append(f"index file {str(err.path)!r} is missing")
                continue
            except IndexDamagedError as err:
                problems.append(err.detail)
                continue
            views.append(view)
        return Snapshot(self.folder, self.manifest, views), problems

    def view(self, ref: ShardRef, *, dim: int | None = None) -> ShardView:
        """Open a shard written by this writer (or committed), memory-mapped."""
        if dim is None:
            if self.manifest is None:
                raise ValueError("no spec yet: give dim or commit first")
            dim = self.manifest.dim
        try:
            return ShardView(self.folder, ref, dim)
        except _Missing as e:
            raise IndexDamagedError(self.folder, f"index file {str(e.path)!r} is missing") from None

    @property
    def needs_migration(self) -> bool:
        """True if the committed manifest is of an older format (the next commit rewrites it)."""
        return self.manifest is not None and self.manifest.needs_migration

    # -------------------------------------------------------------- writing files
    def write_shard(
        self,
        vectors: np.ndarray | Iterable[np.ndarray],
        rows: np.ndarray,
        paths: Sequence[str],
        *,
        token: str | None = None,
        dim: int | None = None,
    ) -> ShardRef:
        """Write a new shard's files (see :func:`write_shard`); commit to make it part of the index."""
        ref = write_shard(self.folder, self.store_id, vectors, rows, paths, token=token, dim=dim)
        self._pending.update(ref.files.values())
        return ref

    def write_section_file(self, kind: str, write: Callable[[BinaryIO], None]) -> str:
        """Write a new file of a section (``"ann"``) atomically; return its name (for the manifest)."""
        if kind not in SECTION_FILES:
            raise ValueError(f"unknown section {kind!r}")
        name = f"{kind}-{self.store_id}-{new_token()}{SECTION_FILES[kind]}"
        atomic_write(self.folder / name, write, tag=self.store_id)
        self._pending.add(name)
        return name

    def write_augmentation(
        self,
        vectors: np.ndarray | Iterable[np.ndarray],
        neighbours: np.ndarray,
        scores: np.ndarray,
        keys: np.ndarray,
        *,
        k: int,
        alpha: float,
        shards: Sequence[ShardRef],
        dim: int,
    ) -> dict[str, Any]:
        """Write an augmentation section's four files (each atomically); return its manifest entry.

        Commit it with ``commit(dba=entry)``.

        Parameters
        ----------
        vectors : numpy.ndarray or iterable of numpy.ndarray
            Shape (n, dim) float32, or consecutive blocks of rows (streamed).
        neighbours : numpy.ndarray
            Shape (n, k) int64.
        scores : numpy.ndarray
            Shape (n, k) float32.
        keys : numpy.ndarray
            Shape (n,) :data:`KEY_DTYPE`.
        k : int
        alpha : float
        shards : sequence of ShardRef
            The shards whose rows these are, in order.
        dim : int
        """
        n = len(keys)
        neighbours = np.asarray(neighbours, np.int64)
        scores = np.asarray(scores, np.float32)
        if neighbours.shape != (n, k) or scores.shape != (n, k) or sum(s.count for s in shards) != n:
            raise ValueError("augmentation arrays and shards do not agree")
        files = {}
        for kind, data, shape, dtype in (
            ("neighbours", neighbours, (n, k), np.int64),
            ("scores", scores, (n, k), np.float32),
            ("keys", np.asarray(keys, KEY_DTYPE), (n,), KEY_DTYPE),
            ("vectors", vectors, (n, dim), np.float32),
        ):
            files[kind] = self.write_section_file(
                "dba", lambda fh, d=data, sh=shape, dt=dtype: write_npy(fh, d, sh, dt)  # type: ignore[misc]
            )
        return {"k": int(k), "alpha": float(alpha), "count": n, "shards": [s.token for s in shards], "files": files}

    # -------------------------------------------------------------- committing
    def commit(
        self,
        *,
        shards: Sequence[ShardRef] | None = None,
        spec: dict[str, Any] | None = None,
        complete: bool | None = None,
        dataset_dir: Any = _KEEP,
        weights_path: Any = _KEEP,
        exclude: Any = _KEEP,
        imported_from: Any = _KEEP,
        built_with: Any = _KEEP,
        follow_links: Any = _KEEP,
        ann: Any = _KEEP,
        stale_ann: bool = False,
        dba: Any = _KEEP,
        expansion: Any = _KEEP,
        thumbs: Any = _KEEP,
        fields: dict[str, Any] | None = None,
        protect: Iterable[str] = (),
    ) -> Manifest:
        """Atomically replace the manifest, then delete the store's files it no longer names.

        Every argument left out keeps what the committed manifest says; None removes an entry.

        Parameters
        ----------
        shards : sequence of ShardRef, optional
            The new shard list.
        spec : dict, optional
            The model spec (required for a new index).
        complete : bool, optional
            Whether the index is complete (True for a new index).
        dataset_dir : path or None, optional
            The dataset folder (recorded absolute and relative to the index folder).
        weights_path : str or None, optional
            The weights file the model was loaded from.
        exclude : sequence of str or None, optional
            Exclusion patterns later updates apply (an empty list removes them).
        imported_from : dict or None, optional
            Where an imported index came from.
        built_with : str or None, optional
            ``"dask"`` when a Dask cluster indexed it.
        follow_links : {"inside", "all", "none"} or None, optional
            Which symbolic links of the dataset folder indexing follows (later updates keep it).
        ann : dict or None, optional
            The approximate index's entry (None: none); replaces a stale one.
        stale_ann : bool, default False
            The vectors change: an approximate index the manifest names becomes stale (kept as
            :attr:`Manifest.ann_stale` until the end of the run extends or rebuilds it).
        dba : dict or None, optional
            The augmentation section (:meth:`write_augmentation`'s entry; None: none); replaces
            one set aside. Left out, a commit that changes the shards sets the current one aside
            (:attr:`Manifest.dba_stale`): an augmentation never names other rows than the shards'.
        thumbs : (int, list of str) or None, optional
            The thumbnails' side and files (:mod:`revsearch.storage.thumbs`; None: none).
        expansion : dict or None, optional
            The search expansion recorded for the collection (None: the default).
        fields : dict, optional
            Entries no keyword covers yet (a value of None removes the entry); prefer a keyword.
        protect : iterable of str
            File names housekeeping must keep although no manifest names them (yet).

        Returns
        -------
        Manifest
            The new manifest.
        """
        previous = self.manifest
        manifest = Manifest(previous or {})
        if spec is not None:
            manifest["spec"] = dict(spec)
        if "spec" not in manifest:
            raise ValueError("the first commit of an index needs its spec")
        if shards is not None:
            manifest["shards"] = [s.entry() for s in shards]
        manifest.setdefault("shards", [])
        current = manifest.dba
        tokens = [s["token"] for s in manifest["shards"]]
        if current and dba is _KEEP and current.get("shards") != tokens:
            # an augmentation of other rows never stays current: kept aside for an incremental update
            manifest["dba_stale"] = current
            manifest.pop("dba")
        manifest["count"] = sum(int(s["count"]) for s in manifest["shards"])
        if complete is not None:
            manifest["complete"] = bool(complete)
        manifest.setdefault("complete", True)
        changes: dict[str, Any] = dict(fields or {})
        if dataset_dir is not _KEEP:
            if dataset_dir is None:
                changes["dataset_dir"] = None
            else:
                ds = Path(dataset_dir).resolve()
                changes["dataset_dir"] = {
                    "absolute": str(ds), "relative_to_index": os.path.relpath(ds, self.folder.resolve())
                }
        if weights_path is not _KEEP:
            changes["weights_path"] = None if weights_path is None else str(weights_path)
        if exclude is not _KEEP:
            changes["exclude"] = [str(p) for p in exclude] if exclude else None
        if dba is not _KEEP:
            changes["dba"], changes["dba_stale"] = dba, None
        if expansion is not _KEEP:
            changes["expansion"] = expansion
        if thumbs is not _KEEP:
            changes["thumbs"] = None if thumbs is None else {"side": int(thumbs[0]), "files": [str(f) for f in thumbs[1]]}
        if imported_from is not _KEEP:
            changes["imported_from"] = imported_from
        if built_with is not _KEEP:
            changes["built_with"] = built_with
        if follow_links is not _KEEP:
            changes["follow_links"] = follow_links
        if ann is not _KEEP:
            if stale_ann:
                raise ValueError("give ann or stale_ann, not both")
            changes["ann"], changes["ann_stale"] = ann, None
        elif stale_ann and manifest.ann:  # kept for the end of the run, which extends or rebuilds it
            changes["ann_stale"], changes["ann"] = manifest.ann, None
        for key, value in changes.items():
            if value is None:
                manifest.pop(key, None)
            else:
                manifest[key] = value
        now = utc_now()
        manifest.update(
            format=FORMAT_NAME,
            format_version=FORMAT_VERSION,
            store_id=self.store_id,
            revsearch_version=__version__,
            created=manifest.created or now,
            updated=now,
        )
        if previous is not None and previous.needs_migration:
            manifest.setdefault("migrated_from", previous.format_version)
        manifest = validate_manifest(json.loads(json.dumps(manifest)), self.folder / MANIFEST_NAME)
        data = json.dumps(manifest, indent=2).encode("utf-8")
        atomic_write(self.folder / MANIFEST_NAME, lambda f: f.write(data), tag=self.store_id)
        _fsync_dir(self.folder)
        crash_point("committed; housekeeping next")
        self.manifest = manifest
        live = _named_files(manifest)
        self._pending -= live
        self._housekeep(_named_files(previous) if previous else set(), live | set(protect))
        return manifest

    def _housekeep(self, previously_named: set[str], keep: set[str]) -> None:
        """Delete the store's own files that the committed manifest does not name."""
        ours = re.compile(
            r"\.?(?:vectors|rows|paths|ann|dba|thumbs)-" + re.escape(self.store_id) + r"-[0-9a-z][0-9a-z_-]{0,63}\.(?:npy|txt|faiss)"
            r"|\..+\." + re.escape(self.store_id) + r"-[0-9a-f]{8}\.tmp"
        )
        for name in sorted(os.listdir(self.folder)):
            if name in keep or name in self._pending:
                continue
            if name in previously_named or ours.fullmatch(name):
                crash_point(f"delete {name}")
                with contextlib.suppress(OSError):
                    (self.folder / name).unlink()
                    logger.debug("removed %s", self.folder / name)

    def discard_pending(self) -> None:
        """Delete files written since the last commit (an aborted run)."""
        for name in sorted(self._pending):
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()
        self._pending.clear()


def _named_files(manifest: dict[str, Any] | None) -> set[str]:
    if not manifest:
        return set()
    out = {n for s in manifest.get("shards", []) for n in s.get("files", {}).values()}
    for section in ("ann", "ann_stale"):
        name = (manifest.get(section) or {}).get("file")
        if name:
            out.add(name)
    for section in AUGMENTATION_SECTIONS:
        out.update(((manifest.get(section) or {}).get("files") or {}).values())
    out.update((manifest.get("thumbs") or {}).get("files") or [])
    return out


# ---------------------------------------------------------------------------------------- section files
def open_section_npy(folder: str | os.PathLike, name: str, dtype: np.dtype) -> np.ndarray:
    """Memory-map a section's .npy file of one-dimensional records of ``dtype`` (e.g. the thumbnails).

    Raises
    ------
    IndexDamagedError
        If the file is missing or does not hold such records.
    """
    folder = Path(folder)
    path = folder / name
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise IndexDamagedError(folder, f"index file {str(path)!r} is missing") from None
    except (OSError, ValueError) as e:
        raise IndexDamagedError(folder, f"index file {str(path)!r} is damaged ({e})") from None
    if arr.dtype != dtype or arr.ndim != 1:
        raise IndexDamagedError(folder, f"index file {str(path)!r} holds {arr.shape} {arr.dtype}, expected (m,) {dtype}")
    return arr


def write_section_npy(
    writer: FolderWriter, kind: str, records: np.ndarray | Iterable[np.ndarray], count: int, dtype: np.dtype
) -> str:
    """Write a section's .npy file of ``count`` records (an array, or blocks of one); return its name."""
    return writer.write_section_file(kind, lambda fh: write_npy(fh, records, (count,), dtype))


@contextlib.contextmanager
def writing(folder: str | os.PathLike, *, create: bool = True) -> Iterator[FolderWriter]:
    """Lock an index folder for writing; yield its :class:`FolderWriter`.

    Parameters
    ----------
    folder : path
    create : bool, default True
        Create the folder if needed (else a missing index raises IndexNotFoundError).

    Raises
    ------
    RevsearchError
        If another process is writing the index.
    """
    folder = Path(folder)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    elif not exists(folder):
        read_manifest(folder)  # raises IndexNotFoundError with the usual hint
    with _FolderLock(folder):
        writer = FolderWriter(folder)
        try:
            yield writer
        finally:
            writer.discard_pending()


