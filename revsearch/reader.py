"""Reading image files to embed them: in threads, ahead of the model, in order.

:meth:`revsearch.embedding.Embedder.embed_files` takes the prepared images from :func:`read_files`
and runs the model on batches of them while the next files are read, decoded and resized (the
image libraries release the GIL). Each file is read once: its bytes are hashed for the index
(:class:`FileInfo`: size, modification time, content hash) and decoded from the same bytes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageReadError
from .images import file_digest, read_image_file

__all__ = ["FileInfo", "read_file", "read_files"]

#: Prepares the bytes of an image file: ``prepare(data, label)`` -> an (S, S, 3) array.
Prepare = Callable[[bytes, str], np.ndarray]


@dataclass(frozen=True)
class FileInfo:
    """Size, modification time and content hash of a file, as read while embedding it."""

    size: int
    mtime_ns: int
    digest: bytes  # 16-byte BLAKE2b of the content (revsearch.images.file_digest)


def read_file(path: Path, prepare: Prepare) -> tuple[FileInfo | None, np.ndarray | None, str | None]:
    """Read, hash and prepare one image file.

    Parameters
    ----------
    path : pathlib.Path
    prepare : callable
        ``prepare(data, label)`` turns the file's bytes into the model's input, shape (S, S, 3).

    Returns
    -------
    info : FileInfo or None
        None if the file could not be read.
    image : numpy.ndarray or None
        Shape (S, S, 3); None if the file could not be read or decoded.
    error : str or None
        Why not, in words.
    """
    try:
        st = os.stat(path)
        data = read_image_file(path)  # size and first bytes checked before reading it whole
    except ImageReadError as e:
        return None, None, str(e)
    except OSError as e:
        return None, None, f"cannot read the file: {e.strerror or e}"
    info = FileInfo(st.st_size, st.st_mtime_ns, file_digest(data))
    try:
        return info, prepare(data, str(path)), None
    except ImageReadError as e:
        return info, None, str(e)


def read_files(
    paths: Sequence[Path], prepare: Prepare, *, workers: int, prefetch: int
) -> Iterator[tuple[int, FileInfo | None, np.ndarray | None, str | None]]:
    """Read, hash and prepare image files in ``workers`` threads, yielding them in the order of ``paths``.

    At most ``prefetch`` files are being read (or wait to be taken) at any time, so memory stays
    bounded however many files there are.

    Parameters
    ----------
    paths : sequence of pathlib.Path
    prepare : callable
        As for :func:`read_file`.
    workers : int
        Reading threads.
    prefetch : int
        Files read ahead of the one being taken.

    Yields
    ------
    tuple
        ``(position in paths, info, image, error)`` as :func:`read_file` returns them.
    """
    todo = iter(range(len(paths)))
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="revsearch-read") as pool:

        def refill() -> None:
            while len(pending) < max(1, prefetch):
                i = next(todo, None)
                if i is None:
                    return
                pending.append((i, pool.submit(read_file, paths[i], prepare)))

        refill()
        while pending:
            i, fut = pending.popleft()
            refill()
            yield (i, *fut.result())
