"""Finding, reading and preparing images.

Reading is the part users trip over: phone photos carry an EXIF rotation, scanners write CMYK
or 16-bit files, PNGs carry transparency, GIFs are animations. :func:`load_image` turns all of
them into one thing, an 8-bit RGB :class:`PIL.Image.Image` with its real tones, and raises
:class:`~revsearch.errors.ImageReadError` (with the file and the reason) for what cannot be read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError
from .safety import display_name

logger = logging.getLogger(__name__)

__all__ = [
    "FOLLOW_LINKS",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "SkippedFile",
    "format_size",
    "file_digest",
    "find_images",
    "is_image_file",
    "path_excluded",
    "under_folder",
    "load_image",
    "pad_to_square",
    "prepare_image",
    "read_image_file",
    "read_source",
    "MAX_PIXELS",
    "MAX_FILE_BYTES",
]

#: File name endings that are taken to be images (any case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
)

#: The most pixels decoded from one image; an image that would decode to more is refused as a
#: possible decompression bomb. A larger JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8) that
#: fits, so a 108-megapixel photo is read. Read at call time: set ``revsearch.images.MAX_PIXELS``
#: to change it.
MAX_PIXELS = 178_956_970  # Pillow's own default limit (it warns at half of it; we do not)

#: The largest image file read, in bytes; a larger one is skipped before any of it is read. A
#: 200-megapixel JPEG is about 100 MB, an uncompressed 16-bit RGB TIFF of :data:`MAX_PIXELS` about
#: 1 GB. Read at call time: set ``revsearch.images.MAX_FILE_BYTES`` to change it.
MAX_FILE_BYTES = 1 << 30

#: What :func:`load_image` accepts.
ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Image.Image, io.IOBase]

_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"II*\x00"),  # TIFF little endian
    (0, b"MM\x00*"),  # TIFF big endian
    (8, b"WEBP"),  # RIFF....WEBP
    (0, b"II+\x00"),  # BigTIFF little endian
    (0, b"MM\x00+"),  # BigTIFF big endian
)

#: DIB header sizes of the BMP variants (BITMAPCOREHEADER ... BITMAPV5HEADER).
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not indexed, and why.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    reason : str
        A one-line explanation (e.g. ``"truncated JPEG"``).
    """

    path: Path
    reason: str

    def __str__(self) -> str:
        return display_name(f"{self.path}: {self.reason}")  # one line whatever the name holds


def _has_image_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return False
    return _is_signature(head)


def _is_signature(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a JPEG, PNG, GIF, BMP, TIFF or WebP file."""
    if head[:2] == b"BM":
        # "BM" alone is too weak (a text file may start "BMW..."): also require a DIB header
        # size Pillow can read, a little-endian uint32 at offset 14.
        return len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _BMP_HEADER_SIZES
    return any(head[off : off + len(sig)] == sig for off, sig in _SIGNATURES)


def is_image_file(path: str | os.PathLike) -> bool:
    """Tell whether a file should be treated as an image.

    A file is an image if its first bytes are those of a JPEG, PNG, GIF, BMP, TIFF or WebP file
    (whatever its name), or if its name ends with an image extension (so that a broken file
    named ``photo.jpg`` is reported as broken rather than silently ignored).

    Parameters
    ----------
    path : str or os.PathLike
        The file to check.

    Returns
    -------
    bool
    """
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS or _has_image_signature(p)


def find_images(
    root: str | os.PathLike,
    *,
    exclude: list[str | os.PathLike] | None = None,
    skipped: list[SkippedFile] | None = None,
    follow_links: str = "inside",
) -> list[Path]:
    """List the images under a folder, recursively, in sorted order.

    Hidden files and folders (names starting with ``.``) are ignored, and so are files that are
    neither named nor shaped like images (``notes.txt``, ``.DS_Store``). Symbolic links to
    folders are followed, each folder once: the real folders first, then the links (in sorted
    order), so a folder reached both directly and through a link is listed under its real name,
    and a link to a folder already listed (a link to an ancestor, a loop) is reported and not
    followed. Folders that cannot be read are reported, not silently left out.

    Parameters
    ----------
    root : str or os.PathLike
        The folder to search.
    exclude : list of path, optional
        Folders to leave out (e.g. an index folder kept inside the dataset folder).
    skipped : list of SkippedFile, optional
        Where to report the folders that were not searched (unreadable, or a link to a folder
        already searched), one :class:`SkippedFile` each; they are logged as well.
    follow_links : {"inside", "all", "none"}, default "inside"
        Which symbolic links (to folders or to files) are followed: ``"inside"`` only those whose
        target lies inside ``root`` (a link leading out is reported and left out: the listing
        never reaches beyond the folder you named); ``"all"`` every one (a link to another disk
        or to your home folder brings its images in); ``"none"`` no link at all.

    Returns
    -------
    list of pathlib.Path
        Image files, sorted by their path relative to ``root`` (``/``-separated), so the order
        is the same on every machine.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    """
    root = Path(root)
    if follow_links not in FOLLOW_LINKS:
        raise ValueError(f"follow_links must be one of {', '.join(FOLLOW_LINKS)}, not {follow_links!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist or is not a folder")
    real_root = Path(os.path.realpath(root))

    def refused(path: Path) -> str | None:
        """Why the link ``path`` is not followed (None: it is)."""
        if follow_links == "all":
            return None
        if follow_links == "none":
            return "a symbolic link: not followed (follow_links='none')"
        target = Path(os.path.realpath(path))
        if target == real_root or real_root in target.parents:
            return None
        return (
            f"a symbolic link to {display_name(target)}, outside the dataset folder: not followed "
            "(follow_links='all', command line --follow-links all, follows it)"
        )
    excluded = {Path(e).resolve() for e in (exclude or [])}
    found: list[tuple[str, Path]] = []
    searched: dict[tuple[int, int], str] = {}  # (device, inode) of each folder searched -> its relative path
    links: list[tuple[str, Path]] = []  # symbolic links to folders, followed after the real folders

    def report(path: Path, reason: str, level: int = logging.WARNING) -> None:
        logger.log(level, "skipped %s: %s", display_name(path), display_name(reason))
        if skipped is not None:
            skipped.append(SkippedFile(path, reason))

    def search(rel: str, top: Path) -> None:
        todo = [(rel, top)]
        while todo:
            rel, folder = todo.pop()
            try:
                st = os.stat(folder)
                key = (st.st_dev, st.st_ino)
                if key in searched:
                    first = searched[key]
                    loop = first == "." or rel == first or rel.startswith(first + "/")
                    report(
                        folder,
                        f"a link to the folder {first!r}, which contains it (a loop): not followed"
                        if loop
                        else f"a link to the folder {first!r}, already searched: not followed again",
                        logging.INFO,
                    )
                    continue
                searched[key] = rel or "."
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                report(folder, f"folder cannot be read ({e.strerror or e}): the images in it are not indexed")
                continue
            subfolders = []
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                path = folder / name
                child = f"{rel}/{name}" if rel else name
                try:
                    is_dir = entry.is_dir()  # follows links
                    link = entry.is_symlink()
                    is_link = is_dir and link
                    is_file = not is_dir and entry.is_file()
                except OSError:
                    continue
                if link and (is_dir or is_file) and (why := refused(path)) is not None:
                    report(path, why)
                    continue
                if is_dir:
                    if excluded and path.resolve() in excluded:
                        continue
                    (links if is_link else subfolders).append((child, path))
                elif is_file and is_image_file(path):
                    found.append((child, path))
            todo.extend(reversed(subfolders))

    search("", root)
    while links:  # links found inside linked folders come in the next round
        batch = sorted(links)
        links.clear()
        for rel, path in batch:
            search(rel, path)
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]


#: Values of ``follow_links`` (:func:`find_images`, indexing): which symbolic links are followed.
FOLLOW_LINKS = ("inside", "all", "none")


def file_digest(source: str | os.PathLike | bytes | bytearray | memoryview) -> bytes:
    """The content hash of a file, as indexes record it (16-byte BLAKE2b): the one definition.

    Parameters
    ----------
    source : path or bytes
        A file (read in 1 MiB blocks) or its content already read.

    Returns
    -------
    bytes
        16 bytes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.blake2b(source, digest_size=16).digest()
    h = hashlib.blake2b(digest_size=16)
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def path_excluded(relpath: str, patterns: Sequence[str]) -> bool:
    """Whether a relative path is excluded by any of ``patterns`` (the syntax of ``--exclude``).

    A pattern without ``/`` is matched (:mod:`fnmatch`, case-sensitive) against each part of the
    path, so ``thumbnails`` or ``.*`` leave out such folders or files anywhere; a pattern with
    ``/`` is matched against the whole path and each of its parent folders, so
    ``'*/thumbnails/*'`` and ``raw/2019`` work as expected. ``*`` matches ``/`` too.

    Parameters
    ----------
    relpath : str
        ``/``-separated, relative to the dataset folder.
    patterns : sequence of str

    Returns
    -------
    bool
    """
    if not patterns:
        return False
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        pat = pat.strip().strip("/")
        if not pat:
            continue
        if "/" in pat:
            if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
                return True
        elif any(fnmatch.fnmatchcase(p, pat) for p in parts):
            return True
    return False


def under_folder(relpath: str, folder: str | None) -> bool:
    """Whether a relative path lies in ``folder`` (relative to the dataset folder; None or "" for all)."""
    if not folder:
        return True
    folder = folder.strip("/")
    return not folder or relpath == folder or relpath.startswith(folder + "/")


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(str(source))
    return f"the given {type(source).__name__}"


def _open(source: ImageSource) -> Image.Image:
    """Open ``source`` lazily with Pillow (no pixel decoding yet).

    Pillow's own decompression-bomb guard (a warning above ``Image.MAX_IMAGE_PIXELS``, an error
    above twice that) is replaced by :func:`load_image`'s, which knows that a JPEG can be decoded
    at a reduced scale: a JPEG that Pillow refuses to open is opened by its JPEG plugin directly.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageReadError("the image data is empty (0 bytes): upload or pass a real image file")
        fp: io.IOBase = io.BytesIO(bytes(source))
    elif isinstance(source, io.IOBase):
        fp = source
    else:
        path = Path(source)  # type: ignore[arg-type]
        if not path.exists():
            raise ImageReadError(f"image file {str(path)!r} does not exist")
        if path.is_dir():
            raise ImageReadError(f"{str(path)!r} is a folder, not an image file")
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # opening a pipe would block
            raise ImageReadError(f"{str(path)!r} is not a regular file (a pipe, a device, ...), not an image file")
        size = st.st_size
        if size == 0:
            raise ImageReadError(f"image file {str(path)!r} is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageReadError(
                f"image file {str(path)!r} is {format_size(size)}, more than the limit of "
                f"{format_size(MAX_FILE_BYTES)} "
                "(if it is a real image, raise revsearch.images.MAX_FILE_BYTES)"
            )
        return _open_stream(path)
    return _open_stream(fp)


def _open_stream(fp: io.IOBase | Path) -> Image.Image:
    start = fp.tell() if isinstance(fp, io.IOBase) and fp.seekable() else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)  # type: ignore[arg-type]
    except Image.DecompressionBombError:
        from PIL import JpegImagePlugin

        if isinstance(fp, Path):
            f: io.IOBase = io.BytesIO(fp.read_bytes())  # rare (> 179 MP), and size-checked by _open
        elif start is not None:
            fp.seek(start)
            f = fp
        else:
            raise
        if f.read(3) != b"\xff\xd8\xff":
            raise
        f.seek(-3, io.SEEK_CUR)
        return JpegImagePlugin.JpegImageFile(f)  # no size check here: load_image's follows


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageReadError(
            f"an image array must have shape (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey; got {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"the image array is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 + 32767) // 65535
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageReadError("the image array holds NaN or infinite values")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(np.rint(arr * scale), 0, 255)
    elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        arr = np.clip(arr.astype(np.int64) * (255 if arr.dtype == np.bool_ else 1), 0, 255)
    else:
        raise ImageReadError(f"cannot make an image of an array of dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr.astype(np.uint8, copy=False))
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1] if arr.ndim == 3 else 2]
    return Image.fromarray(arr, mode=mode) if mode != "L" else Image.fromarray(arr)


def _to_rgb(img: Image.Image, background: tuple[int, int, int], fmt: str | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB with its real tones (``fmt``: the file's format)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:  # an RGB PNG may carry a tRNS colour key
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grey: scale the full range down instead of clipping at 255.
        # Mode "I" says nothing about the range (a TIFF or an int32 array may hold 0..255): decide
        # from the values, except for a PNG, whose mode "I" (older Pillow) is always 16-bit.
        a = np.asarray(img).astype(np.float64)
        hi = float(a.max(initial=0))
        if mode.startswith("I;16") or (fmt or img.format) == "PNG" or 255 < hi <= 65535:
            top = 65535.0
        elif hi <= 255:
            top = 255.0
        else:
            top = hi
        a = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if mode == "F":
        a = np.asarray(img).astype(np.float64)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, LAB, HSV


def _limit_decoded_size(img: Image.Image, what: str, draft_size: int | None, draft_side: str) -> None:
    """Choose a JPEG's decoding scale; refuse an image that would decode to more than MAX_PIXELS.

    A JPEG is decoded at 1/2, 1/4 or 1/8 of its size (``draft``) when that keeps ``draft_size``
    pixels on the side ``draft_side`` names, and at whatever scale brings it under
    :data:`MAX_PIXELS`: so a 12000x9000 photo is read, not refused.
    """
    limit = MAX_PIXELS
    w, h = img.size
    draftable = img.format in ("JPEG", "MPO") and img.mode in ("RGB", "L", "CMYK")
    if draftable and (draft_size or w * h > limit):
        req_w, req_h = w, h
        if draft_size:
            side = max(w, h) if draft_side == "long" else min(w, h)
            req_w, req_h = max(1, -(-draft_size * w // side)), max(1, -(-draft_size * h // side))
        for scale in (1, 2, 4, 8):  # the smallest reduction that fits under the limit
            if -(-w // scale) * -(-h // scale) <= limit:
                req_w, req_h = min(req_w, max(1, w // scale)), min(req_h, max(1, h // scale))
                break
        img.draft(img.mode, (req_w, req_h))
    dw, dh = img.size
    if dw * dh > limit:
        reduced = f" (decoded at {dw}x{dh})" if (dw, dh) != (w, h) else ""
        raise ImageReadError(
            f"image {what} is {w}x{h} pixels{reduced}, more than the limit of {limit} "
            "(revsearch.images.MAX_PIXELS): refused as a possible decompression bomb (resize it first)"
        )


def load_image(
    source: ImageSource,
    *,
    background: tuple[int, int, int] = (255, 255, 255),
    draft_size: int | None = None,
    draft_side: str = "long",
    label: str | None = None,
) -> Image.Image:
    """Read an image into 8-bit RGB.

    Applies the EXIF orientation, takes the first frame of an animation, converts CMYK, grey,
    palette, 1-bit and 16-bit images to RGB with their real tones, and composites transparency
    onto ``background``.

    Parameters
    ----------
    source : str, os.PathLike, bytes, numpy.ndarray, PIL.Image.Image or binary file object
        A file path; the bytes of an image file (what an upload widget gives); an array of shape
        (H, W, 3) RGB or (H, W, 4) RGBA or (H, W) grey, uint8 (0..255), uint16, or float (0..1);
        or a Pillow image.
    background : tuple of 3 int, default (255, 255, 255)
        The colour transparent pixels are composited onto.
    draft_size : int, optional
        If given, a JPEG may be decoded at a reduced scale (a power of two) as long as the side
        named by ``draft_side`` stays at least ``draft_size`` pixels: much faster, for images that
        will be resized down anyway.
    draft_side : {"long", "short"}, default "long"
        Which side must keep ``draft_size`` pixels: the long one for an image that will be padded
        to a square, the short one for an image that will be centre-cropped.
    label : str, optional
        How error messages name the image (e.g. the file a buffer of bytes was read from).

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, fully loaded.

    Raises
    ------
    ImageReadError
        If the source is missing, empty, truncated, corrupt, not an image, a file larger than
        :data:`MAX_FILE_BYTES`, or an image that would decode to more than :data:`MAX_PIXELS`
        (a possible decompression bomb; a larger JPEG is first decoded at 1/2, 1/4 or 1/8 of
        its size). The message names the file.
    """
    what = repr(label) if label is not None else _describe(source)
    try:
        if isinstance(source, np.ndarray):
            img = _array_to_image(source)
        elif isinstance(source, Image.Image):
            img = source
        else:
            img = _open(source)
            _limit_decoded_size(img, what, draft_size, draft_side)
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
        fmt = img.format
        if img is source:  # the caller's image: never changed in place
            img = ImageOps.exif_transpose(img) or img
        else:  # ours: rotate in place, no copy when there is nothing to rotate (Pillow copies otherwise)
            ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb(img, background, fmt)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{what} is not an image Pillow can read (unknown or damaged format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image {what} refused as a possible decompression bomb: {e}") from None
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise ImageReadError(f"image {what} is truncated (the file is cut short): {msg}") from None
        raise ImageReadError(f"image {what} could not be decoded: {msg}") from None
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:
        raise ImageReadError(f"image {what} is damaged: {e}") from None


def format_size(n: float) -> str:
    """A byte count in words: ``31_500_000_000`` -> ``'31.5 GB'`` (powers of 1000, as Drive counts).

    The one byte formatter of the library (messages, storage reports).

    Parameters
    ----------
    n : float
        Bytes.

    Returns
    -------
    str
    """
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


#: A file larger than this whose first bytes are no image signature is refused unread; a smaller
#: one is read and left to the decoder (a few formats, such as TGA, have no signature).
_UNSIGNED_READ_BYTES = 16 << 20


def _pillow_knows(head: bytes) -> bool:
    """Whether any format Pillow reads accepts these first bytes (as :func:`PIL.Image.open` asks)."""
    if _is_signature(head):
        return True
    Image.init()
    prefix = head[:16]
    for _factory, accept in list(Image.OPEN.values()):
        try:
            if accept is not None and accept(prefix):  # (TGA & co. have no signature to check)
                return True
        except (IndexError, ValueError, TypeError, struct.error):  # a check failing: "not this format"
            continue
    return False


def read_image_file(path: str | os.PathLike, *, max_bytes: int | None = None) -> bytes:
    """Read an image file's bytes, checking its size and its first bytes before reading the rest.

    A file larger than ``max_bytes``, one that is not a regular file (a folder, a pipe, a
    device), and one over 16 MB whose first bytes are those of no image format Pillow reads are
    refused without being read, so a huge (or sparse) file that merely ends in ``.jpg`` costs
    nothing.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    max_bytes : int, optional
        The largest file read (default :data:`MAX_FILE_BYTES`, read at call time).

    Returns
    -------
    bytes
        The whole file.

    Raises
    ------
    ImageReadError
        If the file is missing, unreadable, empty, not a regular file, larger than ``max_bytes``,
        or not an image. The message names the file and, for the size, how to raise the limit.
    """
    path = Path(path)
    limit = MAX_FILE_BYTES if max_bytes is None else int(max_bytes)
    name = repr(str(path))
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise ImageReadError(f"{name} is a folder, not an image file")
        if not stat.S_ISREG(mode):  # before open(): opening a pipe blocks
            raise ImageReadError(f"{name} is not a regular file (a pipe, a device, ...), not an image file")
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ImageReadError(f"{name} is not a regular file (a pipe, a device, ...), not an image file")
            if st.st_size == 0:
                raise ImageReadError(f"image file {name} is empty (0 bytes)")
            if st.st_size > limit:
                raise ImageReadError(
                    f"image file {name} is {format_size(st.st_size)} ({st.st_size} bytes), more than the limit of "
                    f"{format_size(limit)}: skipped without reading it (if it is a real image, raise "
                    "revsearch.images.MAX_FILE_BYTES)"
                )
            head = f.read(64)
            if st.st_size > _UNSIGNED_READ_BYTES and not _pillow_knows(head):
                raise ImageReadError(
                    f"{name} is not an image Pillow can read: its first bytes {head[:8]!r} start no image "
                    f"format, and at {format_size(st.st_size)} it was not read further"
                )
            data = head + f.read(st.st_size - len(head))  # at most the size checked above
    except IsADirectoryError:
        raise ImageReadError(f"{name} is a folder, not an image file") from None
    except FileNotFoundError:
        raise ImageReadError(f"image file {name} does not exist") from None
    except OSError as e:
        raise ImageReadError(f"image file {name} cannot be read: {e.strerror or e}") from None
    if not data:
        raise ImageReadError(f"image file {name} is empty (0 bytes)")
    return data


def read_source(source: ImageSource) -> ImageSource:
    """Read a file path's bytes once; return any other source unchanged.

    A query is then decoded from the same bytes for embedding and for display, exactly as
    indexed files are (from their bytes, with JPEG draft decoding), so an image that is in
    the collection finds itself with a cosine of 1.

    Raises
    ------
    ImageReadError
        If the path is missing, a folder, unreadable, larger than :data:`MAX_FILE_BYTES` or not
        an image (see :func:`read_image_file`).
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = Path(source)
    if path.is_dir():
        raise ImageReadError(f"{str(path)!r} is a folder, not an image file")
    return read_image_file(path)


def pad_to_square(img: Image.Image, fill: tuple[int, int, int] | str = (0, 0, 0)) -> Image.Image:
    """Pad an image with a border to a centred square.

    Parameters
    ----------
    img : PIL.Image.Image
        An RGB image of size (W, H).
    fill : tuple of 3 int, or ``"edge"`` or ``"mean"``, default black
        The border colour; ``"edge"`` repeats the edge pixels, ``"mean"`` uses the image's mean colour.

    Returns
    -------
    PIL.Image.Image
        Size (S, S) with S = max(W, H); the original is centred.
    """
    w, h = img.size
    if w == h:
        return img
    s = max(w, h)
    left, top = (s - w) // 2, (s - h) // 2
    if fill == "edge":
        a = np.asarray(img)
        pad = ((top, s - h - top), (left, s - w - left), (0, 0))
        return Image.fromarray(np.pad(a, pad, mode="edge"))
    if fill == "mean":
        fill = tuple(int(round(c)) for c in np.asarray(img).reshape(-1, 3).mean(axis=0))  # type: ignore[assignment]
    canvas = Image.new("RGB", (s, s), fill)  # type: ignore[arg-type]
    canvas.paste(img, (left, top))
    return canvas


def prepare_image(
    source: ImageSource,
    size: int = 224,
    *,
    fit: str = "pad",
    fill: tuple[int, int, int] | str = (0, 0, 0),
    label: str | None = None,
    dtype: type | np.dtype = np.float32,
) -> np.ndarray:
    """Read an image and bring it to the model's input size, before ``preprocess_input``.

    Parameters
    ----------
    source : ImageSource
        Anything :func:`load_image` accepts.
    size : int, default 224
        The side of the square output.
    fit : {"pad", "crop", "stretch"}, default "pad"
        ``"pad"`` pads to a centred square (as the original project did); ``"crop"`` takes the
        centred square; ``"stretch"`` resizes the whole image to the square, not keeping its aspect
        ratio (as SigLIP's own preprocessing does).
    fill : tuple of 3 int, ``"edge"`` or ``"mean"``, default black
        The padding colour (see :func:`pad_to_square`).
    label : str, optional
        How error messages name the image.
    dtype : numpy dtype, default float32
        ``numpy.uint8`` returns the pixels without a float copy (for a caller that copies them into
        a float batch anyway).

    Returns
    -------
    numpy.ndarray
        Shape (size, size, 3), ``dtype``, RGB values in 0..255.
    """
    img = load_image(source, draft_size=size, draft_side="short" if fit in ("crop", "stretch") else "long", label=label)
    if fit == "pad":
        img = pad_to_square(img, fill)
    elif fit == "crop":
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    elif fit != "stretch":
        raise ValueError(f"fit must be 'pad', 'crop' or 'stretch', not {fit!r}")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(img, dtype=dtype)
