"""Read the vector files of the original (2021) project, safely.

The original project wrote one file per image, ``<vector_dir>/<count>.pbz2``: a
bz2-compressed pickle (some variants wrote a plain ``<count>.pickle``) holding a dict with
one entry, ``{file_name: numpy.ndarray}``, where ``file_name`` is the image's path relative
to the dataset folder and the array is ResNet50's last convolutional block, shape
``(7, 7, 2048)`` flattened in C order to ``(100352,)``, ``float32``. The count in the file
name is meaningless.

Those files usually come from a shared link, so they are **never** handed to
:func:`pickle.load`: :class:`RestrictedUnpickler` only lets a pickle build numpy arrays,
dtypes, scalars, dicts, lists, tuples, strings and bytes, and refuses everything else
(``os.system``, ``builtins.eval``, ...) with :class:`~revsearch.errors.UnsafePickleError`
*before* any of it runs. The arrays were pickled under NumPy 1.x and reference
``numpy.core.*``; they are mapped to the running NumPy (``numpy._core`` on NumPy 2) without
importing the deprecated ``numpy.core`` module.

Public API
----------
:class:`RestrictedUnpickler`, :func:`load_legacy_file`, :func:`reduce_legacy_vector`,
:func:`find_legacy_files`, :func:`read_legacy_vectors` and :class:`LegacyVectors`.
"""

from __future__ import annotations

import bz2
import io
import logging
import os
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
from tqdm.auto import tqdm

from .errors import LegacyFormatError, UnsafePickleError

__all__ = [
    "LEGACY_DIM",
    "FEATURE_DIM",
    "LEGACY_EXTENSIONS",
    "MAX_LEGACY_FILE_BYTES",
    "RestrictedUnpickler",
    "LegacyVectors",
    "load_legacy_file",
    "reduce_legacy_vector",
    "find_legacy_files",
    "read_legacy_vectors",
]

logger = logging.getLogger(__name__)

#: Length of one original vector: ResNet50's (7, 7, 2048) last conv block, flattened.
LEGACY_DIM: int = 7 * 7 * 2048
#: Length of the average-pooled vector that :func:`reduce_legacy_vector` returns.
FEATURE_DIM: int = 2048
#: File name endings (compared case-insensitively) that :func:`find_legacy_files` collects.
LEGACY_EXTENSIONS: tuple[str, ...] = (".pbz2", ".pickle", ".pkl")
#: Largest (decompressed) pickle :func:`load_legacy_file` reads by default. One original
#: file is about 0.4 MB; the cap stops a decompression bomb from exhausting memory.
MAX_LEGACY_FILE_BYTES: int = 1 << 30

_BZ2_MAGIC = b"BZh"
_GRID = (7, 7)
_POSITIONS = _GRID[0] * _GRID[1]
_ACCEPTED_SHAPES = (
    "(2048,), (100352,), (7, 7, 2048), or any of these with a leading axis of length 1 "
    "such as (1, 7, 7, 2048)"
)


# --------------------------------------------------------------------------- unpickling


def _numpy_core() -> Any:
    """Return the running NumPy's core package (``numpy._core`` on NumPy 2, else ``numpy.core``)."""
    if int(np.__version__.split(".")[0]) >= 2:
        import numpy._core.multiarray
        import numpy._core.numeric

        return numpy._core
    import numpy.core.multiarray  # pragma: no cover - NumPy 1.x
    import numpy.core.numeric  # pragma: no cover

    return numpy.core  # pragma: no cover


def _empty_bytes(*args: Any) -> bytes:
    """Stand-in for ``builtins.bytes``: protocol 2 pickles ``b""`` as ``bytes()``."""
    if args:
        raise pickle.UnpicklingError(f"bytes{args!r} is not something a vector file needs")
    return b""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds what a vector file of the original project holds.

    Dicts, lists, tuples, strings, numbers and bytes need no import; of the globals a
    pickle may name, only these are admitted (``numpy.core.X`` and ``numpy._core.X`` are
    the same entry, resolved against the running NumPy so NumPy 1.x pickles load under
    NumPy 2 without a deprecation warning):

    - ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``
      (arrays pickled with protocols 0-4),
    - ``numpy.core.numeric._frombuffer`` (arrays pickled with protocol 5),
    - ``numpy.core.multiarray.scalar`` (numpy scalars),
    - ``_codecs.encode`` with a Latin-1 codec only, and ``builtins.bytes()`` with no
      argument (how protocol 2 writes bytes).

    Anything else, and any persistent id, raises :class:`UnsafePickleError` before the
    object is built, so nothing the pickle asks for runs.

    Parameters
    ----------
    file : binary file
        The pickle stream, opened for reading.
    source : str or os.PathLike, optional
        The file the stream comes from, named in error messages.
    """

    def __init__(self, file: BinaryIO, *, source: str | os.PathLike[str] | None = None) -> None:
        # latin1: the documented way to read numpy arrays from Python 2 pickles; it does
        # not change how Python 3 pickles (the original project's) are read.
        super().__init__(file, encoding="latin1")
        self.source = str(source) if source is not None else "<pickle stream>"
        core = _numpy_core()
        self._allowed: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
            ("core.multiarray", "scalar"): core.multiarray.scalar,
            ("core.numeric", "_frombuffer"): core.numeric._frombuffer,
            ("_codecs", "encode"): self._latin1_encode,
            ("builtins", "bytes"): _empty_bytes,
            ("__builtin__", "bytes"): _empty_bytes,
        }

    def _refuse(self, what: str) -> UnsafePickleError:
        return UnsafePickleError(
            f"{self.source}: the pickle asks for {what}, which a vector file of the original "
            "project never needs. The file was NOT loaded: it may be malicious. Delete it "
            "(or the whole folder) and get the vectors from a source you trust."
        )

    def _latin1_encode(self, obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """``_codecs.encode`` restricted to how protocol 2 writes bytes: ``encode(str, 'latin1')``."""
        if (
            not isinstance(obj, str)
            or encoding.lower().replace("_", "-") not in {"latin1", "latin-1", "iso-8859-1"}
            or errors != "strict"
        ):
            raise self._refuse(f"_codecs.encode(..., {encoding!r}, {errors!r})")
        return obj.encode("latin1")

    def find_class(self, module: str, name: str) -> Any:
        """Return the admitted object for ``module.name``, or raise :class:`UnsafePickleError`.

        Parameters
        ----------
        module, name : str
            What the pickle asks for, e.g. ``"numpy.core.multiarray"``, ``"_reconstruct"``.

        Returns
        -------
        object
            The running NumPy's equivalent (or a restricted stand-in for ``_codecs.encode``
            and ``bytes``).

        Raises
        ------
        UnsafePickleError
            For anything not in the allowlist.
        """
        key_module = module
        for prefix in ("numpy._core.", "numpy.core."):
            if module.startswith(prefix):
                key_module = "core." + module[len(prefix) :]
                break
        try:
            return self._allowed[(key_module, name)]
        except KeyError:
            raise self._refuse(f"'{module}.{name}'") from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids: a vector file never has any.

        Raises
        ------
        UnsafePickleError
            Always.
        """
        raise self._refuse(f"a persistent id ({type(pid).__name__})")


# --------------------------------------------------------------------------- one file


def _check_name(name: Any, path: Path) -> str:
    """Return the dict key as a POSIX relative path, or raise LegacyFormatError."""
    if not isinstance(name, str):
        raise LegacyFormatError(
            f"{path}: a key of the dict is a {type(name).__name__}, not an image file name (str)."
        )
    posix = name.replace("\\", "/")
    rel = PurePosixPath(posix)
    if not posix.strip() or rel.is_absolute() or re.match(r"^[A-Za-z]:", posix) or ".." in rel.parts:
        raise LegacyFormatError(
            f"{path}: the key {name!r} is not an image path relative to the dataset folder."
        )
    return rel.as_posix()


def _validate(obj: Any, path: Path) -> dict[str, np.ndarray]:
    """Check that an unpickled object is ``{str: numeric ndarray}``; normalise the keys."""
    if not isinstance(obj, dict):
        raise LegacyFormatError(
            f"{path}: holds a {type(obj).__name__}, not a dict {{image file name: vector}} "
            "as the original project wrote."
        )
    if not obj:
        raise LegacyFormatError(f"{path}: holds an empty dict, no vector.")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = _check_name(key, path)
        if not isinstance(value, np.ndarray):
            raise LegacyFormatError(
                f"{path}: the value for {key!r} is a {type(value).__name__}, not a numpy array."
            )
        if value.dtype.kind not in "fiu":
            raise LegacyFormatError(
                f"{path}: the array for {key!r} has dtype {value.dtype}, not a real number type."
            )
        out[name] = value
    return out


def load_legacy_file(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_LEGACY_FILE_BYTES
) -> dict[str, np.ndarray]:
    """Safely read one vector file of the original project.

    The file is bz2-decompressed when it starts with the bz2 magic bytes ``BZh`` (whatever
    its extension), else read as a plain pickle, and unpickled with
    :class:`RestrictedUnpickler`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pbz2``, ``.pickle`` or ``.pkl`` file.
    max_bytes : int, optional
        Refuse files whose (decompressed) pickle is larger than this many bytes.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{image path relative to the dataset folder (``/`` separators): array}``; for an
        original file, one entry whose array has shape ``(100352,)`` and dtype ``float32``.
        Shapes are not checked here (see :func:`reduce_legacy_vector`).

    Raises
    ------
    UnsafePickleError
        The pickle asks for anything but numpy arrays and plain containers. Nothing it
        asked for was run.
    LegacyFormatError
        The file cannot be read, is corrupt or truncated, is larger than ``max_bytes``, or
        does not hold a dict of image names to numeric arrays.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            magic = raw.read(len(_BZ2_MAGIC))
            raw.seek(0)
            stream: BinaryIO = bz2.BZ2File(raw, "rb") if magic == _BZ2_MAGIC else raw  # type: ignore[assignment]
            with stream:
                data = stream.read(max_bytes + 1)
    except FileNotFoundError:
        raise LegacyFormatError(f"{path}: no such file.") from None
    except (OSError, EOFError, ValueError) as exc:  # bz2: "Invalid data stream", truncation
        raise LegacyFormatError(
            f"{path}: cannot be read or decompressed ({type(exc).__name__}: {exc}); the file "
            "is corrupt or incomplete. Download it again."
        ) from exc
    if len(data) > max_bytes:
        raise LegacyFormatError(
            f"{path}: its pickle is larger than {max_bytes} bytes, far more than a vector file "
            "of the original project; refusing to load it (pass a larger max_bytes if it is "
            "genuine)."
        )
    if not data:
        raise LegacyFormatError(f"{path}: is empty.")
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source=path).load()
    except LegacyFormatError:  # includes UnsafePickleError
        raise
    except Exception as exc:  # truncated / garbage pickle streams raise many types
        raise LegacyFormatError(
            f"{path}: is not a readable pickle ({type(exc).__name__}: {exc}); the file is "
            "corrupt or truncated. Download it again."
        ) from exc
    return _validate(obj, path)


# --------------------------------------------------------------------------- vectors


def reduce_legacy_vector(v: np.ndarray) -> np.ndarray:
    """Average-pool an original vector over its 7 x 7 positions.

    Parameters
    ----------
    v : numpy.ndarray
        Shape ``(100352,)`` (the original flattened ``(7, 7, 2048)`` block, C order),
        ``(7, 7, 2048)``, or already pooled ``(2048,)``; a leading axis of length 1 is
        allowed (e.g. ``(1, 7, 7, 2048)``).

    Returns
    -------
    numpy.ndarray
        Shape ``(2048,)``, ``float32``: ``v.reshape(49, 2048).mean(0)`` (computed in
        float64), or ``v`` itself as float32 when it already has 2048 elements. Not
        normalised.

    Raises
    ------
    LegacyFormatError
        ``v`` is not a numeric array of an accepted shape, or holds NaN or infinity.
    """
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiu":
        raise LegacyFormatError(
            f"expected a numeric numpy array, got {type(v).__name__}"
            + (f" of dtype {v.dtype}" if isinstance(v, np.ndarray) else "")
        )
    shape = v.shape
    a = v[0] if v.ndim > 1 and v.shape[0] == 1 else v
    if a.shape == (FEATURE_DIM,):
        out = np.asarray(a, dtype=np.float32)
    elif a.shape in ((LEGACY_DIM,), (*_GRID, FEATURE_DIM)):
        out = a.reshape(_POSITIONS, FEATURE_DIM).mean(axis=0, dtype=np.float64).astype(np.float32)
    else:
        raise LegacyFormatError(
            f"a vector of shape {shape} ({v.size} values) is not a ResNet50 vector of the "
            f"original project; accepted shapes are {_ACCEPTED_SHAPES}."
        )
    if not np.all(np.isfinite(out)):
        raise LegacyFormatError("the vector holds NaN or infinite values.")
    return out


def _natural_key(rel: PurePosixPath) -> tuple[Any, ...]:
    """Sort key that orders numbers by value: ``2.pbz2`` before ``10.pbz2``."""
    parts = []
    for part in rel.parts:
        # re.split with a group alternates text, number, text, ...: same types per position.
        chunks = re.split(r"(\d+)", part)
        parts.append(tuple(int(c) if i % 2 else c.casefold() for i, c in enumerate(chunks)))
    return (tuple(parts), rel.as_posix())


def find_legacy_files(legacy_dir: str | os.PathLike[str]) -> list[Path]:
    """List the vector files under a folder, in natural order.

    Parameters
    ----------
    legacy_dir : str or os.PathLike
        The original project's vector folder; searched recursively (symbolic links to
        folders are not followed). macOS ``__MACOSX`` folders and ``._*`` AppleDouble files
        that zip tools add are ignored.

    Returns
    -------
    list of pathlib.Path
        Files whose name ends with ``.pbz2``, ``.pickle`` or ``.pkl`` (any case), sorted by
        their path relative to ``legacy_dir`` with numbers compared by value
        (``2.pbz2`` before ``10.pbz2``).

    Raises
    ------
    LegacyFormatError
        ``legacy_dir`` does not exist, is not a folder, or holds no such file.
    """
    root = Path(legacy_dir)
    if not root.exists():
        raise LegacyFormatError(f"{root}: the legacy vector folder does not exist.")
    if not root.is_dir():
        raise LegacyFormatError(f"{root}: is not a folder; pass the folder holding the vector files.")
    found: list[tuple[tuple[Any, ...], Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__MACOSX"]
        for fname in filenames:
            if fname.startswith("._") or not fname.lower().endswith(LEGACY_EXTENSIONS):
                continue
            path = Path(dirpath, fname)
            if path.is_file():
                found.append((_natural_key(PurePosixPath(path.relative_to(root).as_posix())), path))
    if not found:
        raise LegacyFormatError(
            f"{root}: holds no vector file of the original project (looked recursively for "
            f"files ending with {', '.join(LEGACY_EXTENSIONS)}, any case)."
        )
    found.sort(key=lambda item: item[0])
    return [path for _, path in found]


@dataclass
class LegacyVectors:
    """Vectors read from an original project's folder by :func:`read_legacy_vectors`.

    Attributes
    ----------
    names : list of str
        Image paths relative to the dataset folder, ``/`` separators (the files' dict
        keys), sorted; ``names[i]`` is the image of ``vectors[i]``.
    vectors : numpy.ndarray
        Shape ``(n, 2048)``, ``float32``: the 49-position means. **Not** normalised.
    skipped : list of tuple of (pathlib.Path, str)
        Files (or entries of files) that were not used, with the reason: corrupt, wrong
        shape, or a name already read from an earlier file.
    """

    names: list[str]
    vectors: np.ndarray
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def read_legacy_vectors(
    legacy_dir: str | os.PathLike[str], *, progress: bool = True
) -> LegacyVectors:
    """Read and average-pool every vector file of an original project's folder.

    Each file is loaded safely (:func:`load_legacy_file`) and each of its arrays reduced at
    once to 2048 values (:func:`reduce_legacy_vector`), so the ``(100352,)`` arrays are
    never all held in memory. Corrupt files, arrays of a wrong shape and names already read
    from an earlier file (in :func:`find_legacy_files` order) are logged with a warning,
    recorded in :attr:`LegacyVectors.skipped`, and reading goes on.

    Parameters
    ----------
    legacy_dir : str or os.PathLike
        The folder of ``.pbz2`` / ``.pickle`` / ``.pkl`` files (searched recursively).
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    LegacyVectors
        ``names`` sorted, ``vectors`` of shape ``(n, 2048)`` ``float32``, not normalised.

    Raises
    ------
    UnsafePickleError
        Any file asks for something unsafe: the whole read is aborted, since the folder may
        have been tampered with.
    LegacyFormatError
        The folder does not exist or holds no vector file, or none of its files could be
        used (the message gives the first reasons).
    """
    files = find_legacy_files(legacy_dir)
    seen: dict[str, Path] = {}
    rows: dict[str, np.ndarray] = {}
    skipped: list[tuple[Path, str]] = []

    def skip(path: Path, reason: str) -> None:
        logger.warning("Skipping %s: %s", path, reason)
        skipped.append((path, reason))

    bar: Iterable[Path] = tqdm(files, desc="Reading legacy vectors", unit="file", disable=not progress)
    for path in bar:
        try:
            entries = load_legacy_file(path)
        except UnsafePickleError:
            logger.error("Aborting: %s is not a safe vector file; nothing was read from %s.", path, legacy_dir)
            raise
        except LegacyFormatError as exc:
            skip(path, str(exc))
            continue
        for name, arr in entries.items():
            if name in seen:
                skip(path, f"{name!r} was already read from {seen[name]}; keeping that one.")
                continue
            try:
                rows[name] = reduce_legacy_vector(arr)
            except LegacyFormatError as exc:
                skip(path, f"{name!r}: {exc}")
                continue
            seen[name] = path
        del entries

    if not rows:
        reasons = "; ".join(f"{p.name}: {r}" for p, r in skipped[:5])
        raise LegacyFormatError(
            f"{legacy_dir}: none of the {len(files)} vector files could be used ({reasons}"
            + (" ..." if len(skipped) > 5 else "")
            + ")."
        )
    names = sorted(rows)
    vectors = np.empty((len(names), FEATURE_DIM), dtype=np.float32)
    for i, name in enumerate(names):
        vectors[i] = rows.pop(name)
    logger.info(
        "Read %d legacy vectors from %d files in %s (%d skipped).",
        len(names), len(files), legacy_dir, len(skipped),
    )
    return LegacyVectors(names=names, vectors=vectors, skipped=skipped)


def import_legacy(
    legacy_dir: str | os.PathLike[str],
    vector_dir: str | os.PathLike[str],
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[Any, LegacyVectors]:
    """Convert an original project's vector folder into a revsearch index tagged ``resnet50-seed``.

    Each 100,352-d vector is reduced to 2048-d by averaging its 49 positions (which equals the
    original pipeline with ``pooling="avg"``), L2-normalised, and written as a normal index, so
    ``reverse_image_search(q, "resnet50-seed", dataset_dir, vector_dir, generate=False)``
    searches it.

    Parameters
    ----------
    legacy_dir : path
        The folder of ``.pbz2`` / ``.pickle`` files.
    vector_dir : path
        A new (or empty) folder for the index; an existing index there is never overwritten.
    dataset_dir : path, optional
        The folder of the images the vectors were made from, recorded in the index.
    progress : bool, default True

    Returns
    -------
    index : revsearch.index.Index
    legacy : LegacyVectors
        What was read, with the files that were skipped and why.
    """
    from .embedding import Embedder
    from .index import Index

    if Index.exists(vector_dir):
        raise LegacyFormatError(
            f"{str(vector_dir)!r} already holds an index: import into a new folder (nothing was changed)"
        )
    legacy = read_legacy_vectors(legacy_dir, progress=progress)
    spec = Embedder("resnet50-seed", weights="imagenet").spec
    index = Index.from_vectors(
        vector_dir,
        legacy.vectors,
        legacy.names,
        spec,
        dataset_dir=dataset_dir,
        extra={"imported_from": {"legacy_dir": str(Path(legacy_dir).resolve()), "files_skipped": len(legacy.skipped)}},
    )
    return index, legacy
