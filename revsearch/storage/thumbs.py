"""Small greyscale thumbnails: what the duplicate verifier compares, made once at index time.

A thumbnail is the photo in grey levels (ITU-R 601 luma, after EXIF orientation), reduced so its
longer side is :data:`THUMB_SIDE` pixels (smaller photos are kept at their size), as a
``(h, w)`` uint8 array. The index stores one per distinct file content (keyed by the content
hash the index already records): :data:`THUMB_BYTES` bytes per photo, whatever its size.

Only :mod:`revsearch.storage.store` knows how they are laid out on disk; this module makes them and
reads them back by content hash.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import RevsearchError

logger = logging.getLogger(__name__)

__all__ = [
    "THUMB_SIDE", "THUMB_BYTES", "THUMB_DTYPE", "StoredThumbnails", "fill_thumbnails", "make_thumbnail",
    "thumbnail_of_file", "pack", "unpack",
]

#: Longer side of a stored thumbnail, in pixels. 192 (was 128 in the first format-4 indexes, whose
#: thumbnails the manifest records as 128 px: they are made again from the photos): a copy shown
#: small (letterboxed, framed, bordered) keeps enough pixels for the verifier to see the perspective
#: that tells a neighbouring burst frame from a copy (benchmarks/duplicates.py copies, docs/duplicates.md).
THUMB_SIDE = 192
#: One stored thumbnail: the content hash of its file, its height and width, and its pixels
#: (top-left corner of a THUMB_SIDE x THUMB_SIDE buffer).
THUMB_DTYPE = np.dtype([("digest", "V16"), ("h", "<u2"), ("w", "<u2"), ("pix", "u1", (THUMB_SIDE, THUMB_SIDE))])
#: Bytes stored per photo.
THUMB_BYTES = THUMB_DTYPE.itemsize


def make_thumbnail(img: Any, side: int = THUMB_SIDE) -> np.ndarray:
    """The greyscale thumbnail of an image.

    Parameters
    ----------
    img : PIL.Image.Image or numpy.ndarray
        An RGB (or grey) image; an array is (H, W, 3) or (H, W) uint8.
    side : int, default THUMB_SIDE
        Longer side of the result (images already smaller keep their size).

    Returns
    -------
    numpy.ndarray
        Shape (h, w) uint8, max(h, w) <= side.
    """
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    grey = img.convert("L")
    w, h = grey.size
    scale = min(1.0, side / max(w, h))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = grey.resize(size, Image.Resampling.BOX if scale < 0.5 else Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(grey, dtype=np.uint8)


def thumbnail_of_file(path: str | os.PathLike, side: int = THUMB_SIDE) -> np.ndarray:
    """Decode an image file (JPEG at a reduced scale where it can) and make its thumbnail.

    Raises
    ------
    ImageReadError
        If the file cannot be read as an image.
    """
    from ..media.images import load_image

    return make_thumbnail(load_image(Path(path), draft_size=2 * side), side)


def pack(digests: Sequence[bytes], thumbs: Sequence[np.ndarray]) -> np.ndarray:
    """Thumbnails as stored records, sorted by digest (one per digest).

    Parameters
    ----------
    digests : sequence of bytes
        16-byte content hashes (as in the index's rows).
    thumbs : sequence of numpy.ndarray
        (h, w) uint8 each, max side <= THUMB_SIDE.

    Returns
    -------
    numpy.ndarray
        Shape (m,) :data:`THUMB_DTYPE`.
    """
    out = np.zeros(len(digests), THUMB_DTYPE)
    for i, (d, t) in enumerate(zip(digests, thumbs)):
        t = np.asarray(t, np.uint8)
        h, w = t.shape
        if max(h, w) > THUMB_SIDE:
            raise ValueError(f"thumbnail of shape {t.shape} is larger than {THUMB_SIDE}")
        out[i]["digest"] = bytes(d)
        out[i]["h"], out[i]["w"] = h, w
        out[i]["pix"][:h, :w] = t
    order = np.argsort(out["digest"].view("S16") if len(out) else np.zeros(0), kind="stable")
    out = out[order]
    if len(out) > 1:
        keep = np.ones(len(out), bool)
        d = out["digest"].view("S16")
        keep[1:] = d[1:] != d[:-1]
        out = out[keep]
    return out


def unpack(record: np.void) -> np.ndarray:
    """The (h, w) uint8 thumbnail of one stored record (a copy)."""
    h, w = int(record["h"]), int(record["w"])
    return np.array(record["pix"][:h, :w], np.uint8)


# ---------------------------------------------------------------------------------------- stored thumbnails
def _digests(snap: Any) -> np.ndarray:
    """Shape (n,) S16: the content hash of every row of a snapshot, in row order."""
    parts = [np.asarray(s.rows["digest"]).view("S16") for s in snap.shards]
    return np.concatenate(parts) if parts else np.zeros(0, "S16")


class StoredThumbnails:
    """The thumbnails an index holds, looked up by row.

    Parameters
    ----------
    snapshot : revsearch.storage.store.Snapshot
        The committed state of the index (its ``thumbs`` section and its rows' content hashes).

    Attributes
    ----------
    present : numpy.ndarray
        Shape (n,) bool: rows whose thumbnail is stored.
    """

    def __init__(self, snapshot: Any) -> None:
        from . import store

        self.snapshot = snapshot
        self.row_digests = _digests(snapshot)
        manifest = snapshot.manifest
        self.files: list[np.ndarray] = []
        self.names: list[str] = []
        if manifest.thumb_side == THUMB_SIDE:
            for name in manifest.thumb_files:
                try:
                    self.files.append(store.open_section_npy(snapshot.folder, name, THUMB_DTYPE))
                    self.names.append(name)
                except RevsearchError as e:  # a damaged or missing file: those thumbnails are made again
                    logger.warning("%s; its thumbnails are made from the photos", e)
        keys = [np.asarray(f["digest"]).view("S16") for f in self.files]
        self._keys = np.concatenate(keys) if keys else np.zeros(0, "S16")
        self._file = np.concatenate([np.full(len(k), i, np.int32) for i, k in enumerate(keys)]) if keys else np.zeros(0, np.int32)
        self._pos = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys]) if keys else np.zeros(0, np.int64)
        order = np.argsort(self._keys, kind="stable")
        self._keys, self._file, self._pos = self._keys[order], self._file[order], self._pos[order]
        self._where = self._locate(self.row_digests)
        self.present = self._where >= 0

    def _locate(self, digests: np.ndarray) -> np.ndarray:
        """Index into the sorted keys of each digest, -1 where absent."""
        if not len(self._keys):
            return np.full(len(digests), -1, np.int64)
        i = np.searchsorted(self._keys, digests)
        i = np.minimum(i, len(self._keys) - 1)
        return np.where(self._keys[i] == digests, i, -1).astype(np.int64)

    def __len__(self) -> int:
        return int(len(self._keys))

    def get(self, row: int) -> np.ndarray | None:
        """The (h, w) uint8 thumbnail of a row, or None if the index does not hold it."""
        k = int(self._where[row])
        if k < 0:
            return None
        return unpack(self.files[int(self._file[k])][int(self._pos[k])])

    def stale(self) -> int:
        """Stored thumbnails of contents the index no longer holds."""
        return len(self) - int(np.isin(self._keys, self.row_digests).sum()) if len(self) else 0

    def missing_digests(self) -> np.ndarray:
        """Shape (m,) S16: content hashes of rows without a stored thumbnail (each once)."""
        return np.unique(self.row_digests[~self.present])


def _read_thumb(path: Path, digest: bytes) -> np.ndarray | None:
    """The thumbnail of a file if its content still has this hash (else None)."""
    import hashlib

    from ..core.errors import ImageReadError
    from ..media.images import load_image, read_image_file

    try:
        data = read_image_file(path)
    except (ImageReadError, OSError) as e:
        logger.warning("no thumbnail for %s: %s", path, e)
        return None
    if hashlib.blake2b(data, digest_size=16).digest() != bytes(digest):
        logger.info("no thumbnail for %s: it changed since it was indexed", path)
        return None
    try:
        return make_thumbnail(load_image(data, draft_size=2 * THUMB_SIDE))
    except ImageReadError as e:
        logger.warning("no thumbnail for %s: %s", path, e)
        return None


def fill_thumbnails(
    writer: Any, dataset_dir: str | os.PathLike | None, *, workers: int | None = None, progress: bool = True,
    commit_every: int = 4096,
) -> int:
    """Make and store the thumbnails the index lacks (one per distinct content), committing as it goes.

    Run by every index update under its lock, after the vectors are committed: a run killed
    meanwhile keeps the thumbnails committed so far, and the next update makes the rest.

    Parameters
    ----------
    writer : revsearch.storage.store.FolderWriter
    dataset_dir : path or None
        Where the photos are (None: nothing is made).
    workers : int, optional
        Decoding threads (default: the number of CPUs, at most 8).
    progress : bool, default True
    commit_every : int, default 4096
        Thumbnails per committed file.

    Returns
    -------
    int
        Thumbnails added.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from . import store

    snap = writer.snapshot()
    if snap is None or dataset_dir is None or not len(snap):
        return 0
    have = StoredThumbnails(snap)
    manifest = snap.manifest
    files = list(have.names)  # the sound files of the right size (a damaged one is dropped, its thumbnails made again)
    missing = have.missing_digests()
    # drop thumbnails of contents no longer indexed once they are a large share (merge the files)
    stale = have.stale()
    if not len(missing) and len(files) <= store.THUMB_FILES_MAX and stale <= len(have) // 2:
        if manifest.thumbs is not None and files == manifest.thumb_files:
            return 0
    wanted = set(missing.tolist())  # S16 items read back as bytes without their trailing zero bytes
    first_row: dict[bytes, int] = {}
    for row in np.flatnonzero(~have.present).tolist():
        key = have.row_digests[row]
        if key in wanted and key not in first_row:
            first_row[key] = row
    base = Path(dataset_dir)
    todo = [(key.ljust(16, b"\0"), base / snap.path_at(r)) for key, r in first_row.items()]
    workers = workers or min(8, os.cpu_count() or 1)
    added = 0
    buf_d: list[bytes] = []
    buf_t: list[np.ndarray] = []

    def commit(final: bool) -> None:
        nonlocal files
        if buf_d:
            rec = pack(buf_d, buf_t)
            files.append(store.write_section_npy(writer, "thumbs", rec, len(rec), THUMB_DTYPE))
            buf_d.clear()
            buf_t.clear()
        if final and (len(files) > store.THUMB_FILES_MAX or stale > len(have) // 2):
            files = [_merge(writer, files, have.row_digests)]
        writer.commit(thumbs=(THUMB_SIDE, list(files)))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="revsearch-thumbs") as pool, tqdm(
        total=len(todo), desc="thumbnails", unit="img", disable=not progress or not todo
    ) as bar:
        for start in range(0, len(todo), commit_every):
            chunk = todo[start : start + commit_every]
            for (d, _), t in zip(chunk, pool.map(lambda x: _read_thumb(x[1], x[0]), chunk)):
                bar.update(1)
                if t is not None:
                    buf_d.append(d)
                    buf_t.append(t)
                    added += 1
            if start + commit_every < len(todo):
                commit(False)
    commit(True)
    if added:
        logger.info("stored %d thumbnails in %s", added, snap.folder)
    return added


def _merge(writer: Any, files: list[str], keep: np.ndarray) -> str:
    """One file holding the records of ``files`` whose digest is in ``keep`` (streamed in blocks)."""
    from . import store

    keep = np.unique(keep)
    arrays = [store.open_section_npy(writer.folder, f, THUMB_DTYPE) for f in files]
    seen: set[bytes] = set()
    masks = []
    for a in arrays:
        d = np.asarray(a["digest"]).view("S16")
        m = np.isin(d, keep)
        for i in np.flatnonzero(m).tolist():  # each digest once
            if d[i] in seen:
                m[i] = False
            else:
                seen.add(d[i])
        masks.append(m)
    count = int(sum(int(m.sum()) for m in masks))

    def blocks() -> Any:
        for a, m in zip(arrays, masks):
            for s in range(0, len(a), 8192):
                yield np.asarray(a[s : s + 8192])[m[s : s + 8192]]

    return store.write_section_npy(writer, "thumbs", blocks(), count, THUMB_DTYPE)
