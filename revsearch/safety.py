"""What a file may make revsearch do: the confinement rule, safe display of names, checked numbers.

The bottom layer (it imports only :mod:`revsearch.errors`), used by every reader of data anyone
can edit: index manifests and shard path lists (:mod:`revsearch.store`), move logs
(:mod:`revsearch.duplicates`), vector files of the original project (:mod:`revsearch.legacy`).

* **One confinement rule** (:func:`confine`): a path that comes from a file is resolved (``..``
  and every symbolic link on the way followed) and accepted only inside the folders the user
  named for this run (dataset folder, vector folder, move-to folder); anything else raises
  :class:`~revsearch.errors.OutsideFoldersError` naming the file and the line. Nothing is read,
  moved or created before the check.
* **Names shown safely** (:func:`display_name`): control characters (line breaks, carriage return,
  tab, ESC, DEL, the C1 range, bidirectional overrides) are shown as escapes, so a file called
  ``"x\\n/etc/passwd.jpg"`` is one line ``x\\n/etc/passwd.jpg`` in every message, log, report and
  plot title. Names are stored as they are (the store keeps even non-UTF-8 names byte for byte).
* **Numbers checked** (:func:`damaged_rows`): a stored vector is unit length or all zero (an
  image the model sees as blank); NaN, infinity or another length means a damaged copy.
* **JSON that is JSON** (:func:`to_json`): NaN and infinity become ``null``, never ``NaN``.
* **Crash points** (:func:`crash_point`): with ``REVSEARCH_CRASH_AT=N`` in the environment the
  process stops dead (``os._exit``, no clean-up) at the N-th write step; the tests use it to
  kill an index update, an approximate-index build, a move and an undo at every step.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import OutsideFoldersError

__all__ = [
    "CRASH_ENV",
    "CRASH_EXIT_CODE",
    "NORM_TOLERANCE",
    "confine",
    "crash_point",
    "damaged_rows",
    "display_name",
    "inside",
    "to_json",
    "vector_problem",
]

#: Environment variable: stop the process at this write step (1 = the first).
CRASH_ENV = "REVSEARCH_CRASH_AT"
#: Exit status of a process stopped by :func:`crash_point`.
CRASH_EXIT_CODE = 86
#: A stored vector's length may differ from 1 by this much (float32 rounding is ~1e-6).
NORM_TOLERANCE = 1e-3
_SQ_LOW, _SQ_HIGH = (1 - NORM_TOLERANCE) ** 2, (1 + NORM_TOLERANCE) ** 2

# C0 controls, DEL, C1 controls, and the bidirectional controls that reorder what follows them.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b", "\\": "\\\\"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def display_name(name: object) -> str:
    """``name`` (a str or path) with control characters escaped, for messages, logs and pictures.

    Line breaks, carriage returns, tabs, ESC and the other C0 controls, DEL, the C1 range, the
    Unicode bidirectional overrides and isolates, and line/paragraph separators are written as
    ``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u202e``... A name without them is returned as it is
    (a backslash is doubled only when something else was escaped, so plain Windows paths read as
    usual). Bytes that are not UTF-8 (kept as surrogate escapes) are shown as ``\\xNN``, the byte.

    Parameters
    ----------
    name : str or os.PathLike

    Returns
    -------
    str
        Printable on one line, safe to write to a terminal.
    """
    text = os.fspath(name) if isinstance(name, os.PathLike) else name
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    text = str(text)
    if not _UNSAFE.search(text) and not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    text = re.sub(r"[\\]|" + _UNSAFE.pattern, _escape, text)
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in text)


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies in it, both resolved (symbolic links followed)."""
    p, f = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return p == f or f in p.parents


def confine(
    path: str | os.PathLike,
    folders: Sequence[str | os.PathLike | None],
    *,
    source: str | os.PathLike,
    line: int | None = None,
    what: str = "the path",
) -> Path:
    """The one confinement rule: accept a path read from a file only inside the folders named for this run.

    ``path`` is resolved as the operating system would follow it (``..`` parts and every
    symbolic link on the way, also a link planted later in the middle of the path); the result
    must be one of ``folders`` or lie inside one (the folders are resolved too).

    Parameters
    ----------
    path : path
        As the file gave it (absolute, or relative to the current folder).
    folders : sequence of path or None
        The folders the user named for this run (None entries are ignored).
    source : path or str
        The file the path came from (named in the error).
    line : int, optional
        Its line in ``source`` (1 = the first; named in the error).
    what : str
        What the path is, for the error (``"the source"``, ``"the destination"``...).

    Returns
    -------
    pathlib.Path
        The resolved path: use it, not the one given, so a link changed afterwards cannot steer
        the operation elsewhere.

    Raises
    ------
    OutsideFoldersError
        If it lies outside every one of ``folders`` (nothing was read, moved or created).
    """
    named = [Path(os.path.realpath(f)) for f in folders if f is not None]
    try:
        resolved = Path(os.path.realpath(path))
    except (OSError, ValueError) as e:  # NUL in the name, a link loop on some systems
        raise OutsideFoldersError(_where(source, line) + f"{what} {display_name(path)} cannot be resolved ({e}): refused") from None
    for f in named:
        if resolved == f or f in resolved.parents:
            return resolved
    allowed = ", ".join(display_name(f) for f in named) or "(none)"
    raise OutsideFoldersError(
        _where(source, line)
        + f"{what} {display_name(path)} lies outside the folders named for this run ({allowed})"
        + (f" (it leads to {display_name(resolved)})" if str(resolved) != os.path.abspath(path) else "")
        + ": refused, nothing was read, moved or created there; check the file, or name the folder"
    )


def _where(source: str | os.PathLike, line: int | None) -> str:
    return f"{display_name(source)}" + (f", line {line}" if line is not None else "") + ": "


def vector_problem(vectors: Any) -> str | None:
    """Why a block of vectors cannot be stored (None if it can): NaN, infinity, or a length far from 1.

    Parameters
    ----------
    vectors : numpy.ndarray
        Shape (n, dim).

    Returns
    -------
    str or None
        E.g. ``"row 3 holds NaN or infinite values"``.
    """
    import numpy as np

    bad = damaged_rows(vectors)
    if not bad.any():
        return None
    first = int(np.flatnonzero(bad)[0])
    v = np.asarray(vectors[first], np.float64)
    if not np.isfinite(v).all():
        why = "holds NaN or infinite values"
    else:
        why = f"has length {float(np.sqrt(v @ v)):.6g}, not 1"
    more = int(bad.sum()) - 1
    return f"row {first} {why}" + (f" ({more} more damaged rows)" if more else "")


def damaged_rows(vectors: Any, *, block_rows: int = 16384) -> Any:
    """Which rows of a vector matrix are damaged: NaN or infinite values, or a length that is
    neither 1 (within :data:`NORM_TOLERANCE`) nor 0 (an all-zero vector: a blank image).

    Read block by block (a memory-mapped matrix is never copied whole).

    Parameters
    ----------
    vectors : numpy.ndarray
        Shape (n, dim), float32.
    block_rows : int
        Rows read at a time.

    Returns
    -------
    numpy.ndarray
        Shape (n,) bool.
    """
    import numpy as np

    n = int(vectors.shape[0])
    out = np.zeros(n, bool)
    for a in range(0, n, block_rows):
        x = np.asarray(vectors[a : a + block_rows], np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", x, x)  # NaN or inf anywhere in a row makes its sum NaN or inf
            ok = ((sq >= _SQ_LOW) & (sq <= _SQ_HIGH)) | (sq == 0.0)  # NaN compares False
        out[a : a + len(x)] = ~ok
    return out


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (str, int, float, bool)) and k is not None else k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():  # numpy scalar
        return _clean(obj.item())
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array
        return _clean(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def to_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes JSON: NaN and infinity become ``null`` (never ``NaN``,
    ``Infinity``), numpy scalars and arrays become numbers and lists, paths strings.

    Parameters
    ----------
    obj : object
    **kwargs
        Passed to :func:`json.dumps` (``indent``...); ``allow_nan`` is always False.

    Returns
    -------
    str
    """
    kwargs["allow_nan"] = False
    return json.dumps(_clean(obj), **kwargs)


_crash_count = 0


def crash_point(step: str = "") -> None:
    """A write step: with ``REVSEARCH_CRASH_AT=N`` set, the N-th call stops the process at once.

    ``os._exit`` runs no ``finally`` block, flushes no buffer and releases nothing but what the
    operating system releases (file locks): the state a ``kill -9`` or a power cut leaves. The
    tests run an operation in a subprocess with N = 1, 2, ... until it completes, and check each
    time that the next run recovers. Without the variable it costs one dictionary look-up.

    Parameters
    ----------
    step : str
        What is about to happen (written to stderr when the process stops there).
    """
    global _crash_count
    at = os.environ.get(CRASH_ENV)
    if not at:
        return
    _crash_count += 1
    try:
        target = int(at)
    except ValueError:
        return
    if _crash_count == target:
        with _suppress():
            os.write(2, f"revsearch: stopped at write step {target} ({step})\n".encode("utf-8", "replace"))
        os._exit(CRASH_EXIT_CODE)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True

