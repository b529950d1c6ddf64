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
:class:`RestrictedUnpickler`, :func:`scan_pickle`, :func:`load_legacy_file`, :func:`reduce_legacy_vector`,
:func:`find_legacy_files`, :func:`read_legacy_vectors`, :func:`unstorable_name_reason`,
:func:`import_legacy` and :class:`LegacyVectors`.
"""

from __future__ import annotations

import bz2
import functools
import io
import logging
import os
import pickle
import pickletools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
from tqdm.auto import tqdm

from .errors import LegacyFormatError, OutsideFoldersError, UnsafePickleError
from .images import format_size
from .safety import confine, damaged_rows, display_name

__all__ = [
    "LEGACY_DIM",
    "FEATURE_DIM",
    "LEGACY_EXTENSIONS",
    "MAX_LEGACY_FILE_BYTES",
    "MAX_LEGACY_ENTRIES",
    "MAX_LEGACY_VECTORS",
    "MAX_PICKLE_DEPTH",
    "RestrictedUnpickler",
    "LegacyVectors",
    "scan_pickle",
    "load_legacy_file",
    "reduce_legacy_vector",
    "find_legacy_files",
    "read_legacy_vectors",
    "unstorable_name_reason",
    "import_legacy",
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
#: Most ``{name: array}`` entries :func:`load_legacy_file` accepts in one file by default. The
#: original project wrote one per file; the cap bounds the work and memory one small file can ask
#: for before anything is built.
MAX_LEGACY_ENTRIES: int = 10_000
#: Most vectors :func:`read_legacy_vectors` (and ``import_legacy``) read from a folder by default:
#: 250,000 x 2048 float32 = 2 GB in memory and on disk, from ~100 GB of original files.
MAX_LEGACY_VECTORS: int = 250_000
#: Deepest nesting of containers (tuples in tuples, ...) a vector file may hold; a real one
#: nests about 5 deep. Deeper pickles are refused unread: hashing a dict key that is a tuple
#: nested millions deep overflows the C stack and kills the process.
MAX_PICKLE_DEPTH: int = 64

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


def _refusal(source: str, what: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"{source}: the pickle asks for {what}, which a vector file of the original "
        "project never needs. The file was NOT loaded: it may be malicious. Delete it "
        "(or the whole folder) and get the vectors from a source you trust."
    )


def _latin1_encode(source: str, obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to how protocol 2 writes bytes: ``encode(str, 'latin1')``."""
    if (
        not isinstance(obj, str)
        or encoding.lower().replace("_", "-") not in {"latin1", "latin-1", "iso-8859-1"}
        or errors != "strict"
    ):
        raise _refusal(source, f"_codecs.encode(..., {encoding!r}, {errors!r})")
    return obj.encode("latin1")


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
            # A partial, not a bound method: no reference cycle keeps this unpickler (and its memo,
            # which holds every array it built) alive until the garbage collector runs.
            ("_codecs", "encode"): functools.partial(_latin1_encode, self.source),
            ("builtins", "bytes"): _empty_bytes,
            ("__builtin__", "bytes"): _empty_bytes,
        }

    def _refuse(self, what: str) -> UnsafePickleError:
        return _refusal(self.source, what)

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


# --------------------------------------------------------------------------- pre-scan

_SCALAR_KINDS = {
    "INT": "int", "BININT": "int", "BININT1": "int", "BININT2": "int", "LONG": "int", "LONG1": "int",
    "LONG4": "int", "FLOAT": "float", "BINFLOAT": "float", "NONE": "NoneType", "NEWTRUE": "bool",
    "NEWFALSE": "bool", "STRING": "str", "BINSTRING": "str", "SHORT_BINSTRING": "str", "UNICODE": "str",
    "SHORT_BINUNICODE": "str", "BINUNICODE": "str", "BINUNICODE8": "str", "BINBYTES": "bytes",
    "SHORT_BINBYTES": "bytes", "BINBYTES8": "bytes", "BYTEARRAY8": "bytearray", "NEXT_BUFFER": "buffer",
    "GLOBAL": "global", "EXT1": "object", "EXT2": "object", "EXT4": "object", "PERSID": "object",
}
_EMPTY_KINDS = {"EMPTY_LIST": "list", "EMPTY_TUPLE": "tuple", "EMPTY_DICT": "dict", "EMPTY_SET": "set"}
_MARKED_KINDS = {"TUPLE": "tuple", "LIST": "list", "DICT": "dict", "FROZENSET": "frozenset",
                 "INST": "object", "OBJ": "object"}
_POPPING_KINDS = {"TUPLE1": (1, "tuple"), "TUPLE2": (2, "tuple"), "TUPLE3": (3, "tuple"),
                  "REDUCE": (2, "object"), "NEWOBJ": (2, "object"), "NEWOBJ_EX": (3, "object"),
                  "STACK_GLOBAL": (2, "global"), "BINPERSID": (1, "object")}
_NO_STACK_EFFECT = {"PROTO", "FRAME", "STOP", "READONLY_BUFFER"}


def _article(kind: str) -> str:
    return "an object" if kind == "object" else f"a {kind}"


def scan_pickle(
    data: bytes | bytearray,
    *,
    source: str | os.PathLike[str] = "<pickle stream>",
    max_depth: int = MAX_PICKLE_DEPTH,
    max_entries: int = MAX_LEGACY_ENTRIES,
) -> int:
    """Check a pickle's structure without building anything; return how many dict entries it holds.

    Walks the opcodes (:func:`pickletools.genops`) and follows only the nesting depth and kind
    of what each would put on the unpickler's stack, so that structures whose mere building
    would crash or exhaust the process are refused before :meth:`RestrictedUnpickler.load`
    runs: hashing a dict key that is a tuple nested millions deep overflows the C stack
    (a 68-byte ``.pbz2`` does it), and a few bytes per operation can ask for gigabytes of
    objects.

    Parameters
    ----------
    data : bytes
        The (decompressed) pickle.
    source : str or os.PathLike, optional
        The file, named in error messages.
    max_depth : int, optional
        Deepest nesting of containers allowed.
    max_entries : int, optional
        Most dict entries allowed; the operations are capped at ``1024 + 64 * max_entries``.

    Returns
    -------
    int
        The number of dict entries (key/value pairs) the pickle sets.

    Raises
    ------
    UnsafePickleError
        Containers nested deeper than ``max_depth``.
    LegacyFormatError
        More than ``max_entries`` entries or too many operations, a dict key that is not a
        string, or a malformed pickle.
    """
    src = str(source)
    max_ops = 1024 + 64 * max_entries
    stack: list[tuple[int, str]] = []  # (nesting depth, kind) of what the unpickler would hold
    marks: list[int] = []
    memo: dict[int, tuple[int, str]] = {}
    entries = 0

    def bad(why: str) -> LegacyFormatError:
        return LegacyFormatError(f"{src}: is not a readable pickle ({why}); the file is corrupt. Download it again.")

    def pop(n: int = 1) -> list[tuple[int, str]]:
        if len(stack) - (marks[-1] if marks else 0) < n:
            raise bad("stack underflow")
        items = stack[len(stack) - n :]
        del stack[len(stack) - n :]
        return items

    def pop_mark() -> list[tuple[int, str]]:
        if not marks:
            raise bad("no MARK")
        m = marks.pop()
        items = stack[m:]
        del stack[m:]
        return items

    def deeper(items: list[tuple[int, str]], base: int = 0) -> int:
        depth = max([base] + [1 + d for d, _ in items])
        if depth > max_depth:
            raise UnsafePickleError(
                f"{src}: the pickle nests containers more than {max_depth} deep, which a vector file of the "
                "original project never does (building it can crash Python). The file was NOT loaded: it may "
                "be malicious. Delete it and get the vectors from a source you trust."
            )
        return depth

    def keys(pairs: list[tuple[int, str]]) -> None:
        nonlocal entries
        if len(pairs) % 2:
            raise bad("odd number of dict items")
        for _, kind in pairs[::2]:
            if kind != "str":
                raise LegacyFormatError(
                    f"{src}: a key of the dict is {_article(kind)}, not an image file name (str); the file was "
                    "not loaded."
                )
        entries += len(pairs) // 2
        if entries > max_entries:
            raise LegacyFormatError(
                f"{src}: holds more than {max_entries} entries (the original project wrote one per file); "
                f"refusing to load it. If the file is genuine, pass a larger max_entries."
            )

    def update_top(items: list[tuple[int, str]]) -> None:
        if not stack or (marks and marks[-1] == len(stack)):
            raise bad("stack underflow")
        depth, kind = stack[-1]
        stack[-1] = (deeper(items, depth), kind)

    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(data), 1):
            if count > max_ops:
                raise LegacyFormatError(
                    f"{src}: the pickle has more than {max_ops} operations, far more than a vector file of "
                    f"at most {max_entries} entries needs; refusing to load it. If the file is genuine, pass a "
                    "larger max_entries."
                )
            name = op.name
            if name in _NO_STACK_EFFECT:
                continue
            if name == "MARK":
                marks.append(len(stack))
            elif name in _SCALAR_KINDS:
                stack.append((0, _SCALAR_KINDS[name]))
            elif name in _EMPTY_KINDS:
                stack.append((deeper([(0, "")]), _EMPTY_KINDS[name]))
            elif name in _MARKED_KINDS:
                items = pop_mark()
                if name == "DICT":
                    keys(items)
                stack.append((deeper(items + [(0, "")]), _MARKED_KINDS[name]))
            elif name in _POPPING_KINDS:
                n, kind = _POPPING_KINDS[name]
                stack.append((deeper(pop(n)), kind))
            elif name == "APPEND":
                update_top(pop())
            elif name in ("APPENDS", "ADDITEMS"):
                update_top(pop_mark())
            elif name == "SETITEM":
                items = pop(2)
                keys(items)
                update_top(items)
            elif name == "SETITEMS":
                items = pop_mark()
                keys(items)
                update_top(items)
            elif name == "BUILD":
                update_top(pop())
            elif name == "POP":
                if marks and marks[-1] == len(stack):
                    marks.pop()
                else:
                    pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(pop()[0])
                stack.append(stack[-1])
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise bad(f"memo key {arg} is missing")
                stack.append(memo[arg])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack or (marks and marks[-1] == len(stack)):
                    raise bad("stack underflow")
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            else:  # pragma: no cover - every opcode of protocols 0-5 is handled above
                raise bad(f"unknown opcode {name}")
    except (ValueError, TypeError) as exc:  # genops: truncated or garbage stream
        if isinstance(exc, LegacyFormatError):
            raise
        raise bad(f"{type(exc).__name__}: {exc}") from exc
    return entries


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
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_LEGACY_FILE_BYTES,
    max_entries: int = MAX_LEGACY_ENTRIES,
) -> dict[str, np.ndarray]:
    """Safely read one vector file of the original project.

    The file is bz2-decompressed when it starts with the bz2 magic bytes ``BZh`` (whatever
    its extension), else read as a plain pickle, and unpickled with
    :class:`RestrictedUnpickler`, after :func:`scan_pickle` has checked its structure (nesting
    depth, string keys, number of entries) without building anything.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pbz2``, ``.pickle`` or ``.pkl`` file.
    max_bytes : int, optional
        Refuse files whose (decompressed) pickle is larger than this many bytes.
    max_entries : int, optional
        Refuse files holding more than this many ``{name: array}`` entries.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{image path relative to the dataset folder (``/`` separators): array}``; for an
        original file, one entry whose array has shape ``(100352,)`` and dtype ``float32``.
        Shapes are not checked here (see :func:`reduce_legacy_vector`).

    Raises
    ------
    UnsafePickleError
        The pickle asks for anything but numpy arrays and plain containers, or nests
        containers deeper than :data:`MAX_PICKLE_DEPTH`. Nothing it asked for was run.
    LegacyFormatError
        The file cannot be read, is corrupt or truncated, is larger than ``max_bytes``, holds
        more than ``max_entries`` entries, has a key that is not a string, has entries that
        share one array (so it would expand far beyond its size), or does not hold a dict of
        image names to numeric arrays.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            magic = raw.read(len(_BZ2_MAGIC))
            raw.seek(0)
            stream: BinaryIO = bz2.BZ2File(raw, "rb") if magic == _BZ2_MAGIC else raw  # type: ignore[assignment]
            with stream:
                # In pieces: read(max_bytes + 1) would allocate max_bytes (1 GiB) for every file.
                data = bytearray()
                while len(data) <= max_bytes:
                    piece = stream.read(min(1 << 18, max_bytes + 1 - len(data)))
                    if not piece:
                        break
                    data += piece
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
    scan_pickle(data, source=path, max_entries=max_entries)  # before anything is built
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source=path).load()
    except LegacyFormatError:  # includes UnsafePickleError
        raise
    except Exception as exc:  # truncated / garbage pickle streams raise many types
        raise LegacyFormatError(
            f"{path}: is not a readable pickle ({type(exc).__name__}: {exc}); the file is "
            "corrupt or truncated. Download it again."
        ) from exc
    out = _validate(obj, path)
    # Every array of a real file brings its own bytes, so the arrays cannot add up to more than
    # the pickle; entries sharing one array (a few bytes each) would expand to gigabytes.
    referenced = sum(int(a.nbytes) for a in out.values())
    if referenced > len(data):
        raise LegacyFormatError(
            f"{path}: its {len(out)} entries hold {format_size(referenced)} of arrays but its pickle is only "
            f"{format_size(len(data))}: the entries share arrays, which the original project never wrote (it would "
            "expand far beyond the file's size); refusing to load it."
        )
    return out


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


def unstorable_name_reason(name: str) -> str | None:
    """Why an index cannot store an image name, or None when it can.

    An index keeps one name per line of a UTF-8 text file, and a name stands for a file on disk:
    line breaks (``\\n``, ``\\r``), NUL characters (no file name holds one) and text that is not
    valid Unicode (a lone surrogate, which a pickle can carry) cannot be stored.

    Parameters
    ----------
    name : str
        An image path relative to the dataset folder.

    Returns
    -------
    str or None
        A short reason, e.g. ``"the name contains a line break"``.
    """
    if "\n" in name or "\r" in name:
        return "the name contains a line break (\\n or \\r), which an index cannot store"
    if "\x00" in name:
        return "the name contains a NUL character, which no file name can hold"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid Unicode text (a lone surrogate), which an index cannot store"
    return None


def _permute_rows(a: np.ndarray, order: np.ndarray) -> None:
    """Set ``a[i] = a[order[i]]`` for every i, in place (one spare row of memory)."""
    done = np.zeros(len(order), dtype=bool)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            done[start] = True
            continue
        spare = a[start].copy()
        i = start
        while True:
            done[i] = True
            j = int(order[i])
            if j == start:
                a[i] = spare
                break
            a[i] = a[j]
            i = j


def read_legacy_vectors(
    legacy_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    max_vectors: int = MAX_LEGACY_VECTORS,
    max_entries: int = MAX_LEGACY_ENTRIES,
) -> LegacyVectors:
    """Read and average-pool every vector file of an original project's folder.

    Each file is loaded safely (:func:`load_legacy_file`) and each of its arrays reduced at
    once to 2048 values (:func:`reduce_legacy_vector`) and written into one growing
    ``(n, 2048)`` array, so the ``(100352,)`` arrays are never all held in memory and the
    result is not copied at the end (memory: about ``n x 8 KB``). Corrupt files, arrays of a
    wrong shape, names an index cannot store (:func:`unstorable_name_reason`: line breaks, NUL,
    lone surrogates) and names already read from an earlier file (in
    :func:`find_legacy_files` order) are logged with a warning, recorded in
    :attr:`LegacyVectors.skipped`, and reading goes on.

    Parameters
    ----------
    legacy_dir : str or os.PathLike
        The folder of ``.pbz2`` / ``.pickle`` / ``.pkl`` files (searched recursively).
    progress : bool, optional
        Show a progress bar.
    max_vectors : int, optional
        Refuse (with :class:`LegacyFormatError`, nothing returned) a folder that yields more
        vectors than this; each takes 8 KB in memory and on disk.
    max_entries : int, optional
        Skip files holding more than this many entries (see :func:`load_legacy_file`).

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
        The folder does not exist or holds no vector file, yields more than ``max_vectors``
        vectors, or none of its files could be used (the message gives the first reasons).
    """
    files = find_legacy_files(legacy_dir)
    seen: dict[str, Path] = {}
    names: list[str] = []
    buf = np.empty((max(1, min(len(files), max_vectors)), FEATURE_DIM), dtype=np.float32)
    skipped: list[tuple[Path, str]] = []

    def skip(path: Path, reason: str) -> None:
        logger.warning("Skipping %s: %s", display_name(path), display_name(reason))
        skipped.append((path, reason))

    bar: Iterable[Path] = tqdm(files, desc="Reading legacy vectors", unit="file", disable=not progress)
    for path in bar:
        try:  # a vector file that is a link out of the folder named is never read
            confine(path, [legacy_dir], source=path, what="the vector file (a symbolic link)")
        except OutsideFoldersError as exc:
            skip(path, str(exc))
            continue
        try:
            entries = load_legacy_file(path, max_entries=max_entries)
        except UnsafePickleError:
            logger.error("Aborting: %s is not a safe vector file; nothing was read from %s.", path, legacy_dir)
            raise
        except LegacyFormatError as exc:
            skip(path, str(exc))
            continue
        for name, arr in entries.items():
            unstorable = unstorable_name_reason(name)
            if unstorable is not None:
                skip(path, f"{name!r}: {unstorable}; skipped (rename the image to import it).")
                continue
            if name in seen:
                skip(path, f"{name!r} was already read from {seen[name]}; keeping that one.")
                continue
            try:
                vector = reduce_legacy_vector(arr)
                v64 = vector.astype(np.float64)
                norm = float(np.sqrt(v64 @ v64))
                unit = (v64 / norm).astype(np.float32)[None] if norm > 0 else vector[None]
                if not np.isfinite(norm) or norm > float(np.finfo(np.float32).max) or damaged_rows(unit)[0]:
                    raise LegacyFormatError("the vector cannot be normalised to unit length (a damaged file?).")
            except LegacyFormatError as exc:
                skip(path, f"{name!r}: {exc}")
                continue
            if len(names) >= max_vectors:
                raise LegacyFormatError(
                    f"{legacy_dir}: yields more than {max_vectors} vectors (reached in {path}), the limit of "
                    f"max_vectors ({format_size(max_vectors * FEATURE_DIM * 4)} in memory and on disk); nothing was "
                    "imported. If the folder is genuine, pass a larger max_vectors (read_legacy_vectors, "
                    "import_legacy)."
                )
            if len(names) == len(buf):  # more entries than files: grow (rare)
                grown = np.empty((min(max_vectors, 2 * len(buf)), FEATURE_DIM), dtype=np.float32)
                grown[: len(buf)] = buf
                buf = grown
            buf[len(names)] = vector
            names.append(name)
            seen[name] = path
        del entries

    if not names:
        reasons = "; ".join(f"{p.name}: {r}" for p, r in skipped[:5])
        raise LegacyFormatError(
            f"{legacy_dir}: none of the {len(files)} vector files could be used ({reasons}"
            + (" ..." if len(skipped) > 5 else "")
            + ")."
        )
    n = len(names)
    order = np.array(sorted(range(n), key=names.__getitem__), dtype=np.int64)
    _permute_rows(buf, order)
    try:
        buf.resize((n, FEATURE_DIM), refcheck=True)  # in place: no copy of the n x 8 KB
    except ValueError:  # pragma: no cover - another reference to buf exists (a debugger)
        buf = buf[:n].copy()
    names = [names[i] for i in order]
    logger.info(
        "Read %d legacy vectors from %d files in %s (%d skipped).",
        n, len(files), legacy_dir, len(skipped),
    )
    return LegacyVectors(names=names, vectors=buf, skipped=skipped)


def import_legacy(
    legacy_dir: str | os.PathLike[str],
    vector_dir: str | os.PathLike[str],
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    max_vectors: int = MAX_LEGACY_VECTORS,
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
    max_vectors : int, optional
        Refuse a folder that yields more vectors than this (see :func:`read_legacy_vectors`).

    Returns
    -------
    index : revsearch.index.Index
    legacy : LegacyVectors
        What was read, with the files that were skipped and why.
    """
    from .embedding import Embedder
    from .index import Index
    from .indexing import index_from_vectors

    if Index.exists(vector_dir):
        raise LegacyFormatError(
            f"{str(vector_dir)!r} already holds an index: import into a new folder (nothing was changed)"
        )
    legacy = read_legacy_vectors(legacy_dir, progress=progress, max_vectors=max_vectors)
    # read_legacy_vectors skips names an index cannot store; never write one (a damaged index).
    unstorable = [n for n in legacy.names if unstorable_name_reason(n) is not None]
    if unstorable:  # pragma: no cover - defensive
        raise LegacyFormatError(f"{legacy_dir}: cannot store the image name {unstorable[0]!r}; nothing was imported")
    spec = Embedder("resnet50-seed", weights="imagenet").spec
    index = index_from_vectors(
        vector_dir,
        legacy.vectors,
        legacy.names,
        spec,
        dataset_dir=dataset_dir,
        imported_from={"legacy_dir": str(Path(legacy_dir).resolve()), "files_skipped": len(legacy.skipped)},
    )
    return index, legacy
