"""Finding, reading and preparing images.

Reading is the part users trip over: phone photos carry an EXIF rotation, scanners write CMYK
or 16-bit files, PNGs carry transparency, GIFs are animations. :func:`load_image` turns all of
them into one thing, an 8-bit RGB :class:`PIL.Image.Image` with its real tones, and raises
:class:`~revsearch.errors.ImageReadError` (with the file and the reason) for what cannot be read.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "SkippedFile",
    "find_images",
    "is_image_file",
    "load_image",
    "pad_to_square",
    "prepare_image",
    "read_source",
]

#: File name endings that are taken to be images (any case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
)

#: The largest image (in pixels) we decode; larger files are refused as possible decompression bombs.
MAX_PIXELS = 178_956_970  # Pillow's own default limit

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
        return f"{self.path}: {self.reason}"


def _has_image_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return False
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


def find_images(root: str | os.PathLike, *, exclude: list[str | os.PathLike] | None = None) -> list[Path]:
    """List the images under a folder, recursively, in sorted order.

    Hidden files and folders (names starting with ``.``) are ignored, and so are files that are
    neither named nor shaped like images (``notes.txt``, ``.DS_Store``).

    Parameters
    ----------
    root : str or os.PathLike
        The folder to search.
    exclude : list of path, optional
        Folders to leave out (e.g. an index folder kept inside the dataset folder).

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
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist or is not a folder")
    excluded = {Path(e).resolve() for e in (exclude or [])}
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded
        )
        for name in filenames:
            if name.startswith("."):
                continue
            p = here / name
            if p.is_file() and is_image_file(p):
                found.append((p.relative_to(root).as_posix(), p))
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(str(source))
    return f"the given {type(source).__name__}"


def _open(source: ImageSource) -> Image.Image:
    """Open ``source`` lazily with Pillow (no pixel decoding yet)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageReadError("the image data is empty (0 bytes): upload or pass a real image file")
        return Image.open(io.BytesIO(bytes(source)))
    if isinstance(source, io.IOBase):
        return Image.open(source)
    path = Path(source)  # type: ignore[arg-type]
    if not path.exists():
        raise ImageReadError(f"image file {str(path)!r} does not exist")
    if path.is_dir():
        raise ImageReadError(f"{str(path)!r} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"image file {str(path)!r} is empty (0 bytes)")
    return Image.open(path)


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


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB with its real tones."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:  # an RGB PNG may carry a tRNS colour key
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grey: scale the full range down instead of clipping at 255.
        a = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(a.max())
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
        If the source is missing, empty, truncated, corrupt, not an image, or larger than
        :data:`MAX_PIXELS` (a possible decompression bomb). The message names the file.
    """
    what = repr(label) if label is not None else _describe(source)
    try:
        if isinstance(source, np.ndarray):
            img = _array_to_image(source)
        elif isinstance(source, Image.Image):
            img = source
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = _open(source)
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageReadError(
                        f"image {what} is {w}x{h} pixels, more than the limit of {MAX_PIXELS}: "
                        "refused as a possible decompression bomb (resize it first)"
                    )
                if draft_size and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                    side = max(w, h) if draft_side == "long" else min(w, h)
                    req = (max(1, -(-draft_size * w // side)), max(1, -(-draft_size * h // side)))
                    img.draft(img.mode, req)
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
        if img is source:  # the caller's image: never changed in place
            img = ImageOps.exif_transpose(img) or img
        else:  # ours: rotate in place, no copy when there is nothing to rotate (Pillow copies otherwise)
            ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb(img, background)
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


def read_source(source: ImageSource) -> ImageSource:
    """Read a file path's bytes once; return any other source unchanged.

    A query is then decoded from the same bytes for embedding and for display, exactly as
    indexed files are (from their bytes, with JPEG draft decoding), so an image that is in
    the collection finds itself with a cosine of 1.

    Raises
    ------
    ImageReadError
        If the path is missing, a folder, or unreadable.
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = Path(source)
    if not path.is_file():
        raise ImageReadError(
            f"image file {str(path)!r} " + ("is a folder, not an image file" if path.is_dir() else "does not exist")
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"image file {str(path)!r} cannot be read: {e.strerror or e}") from None
    if not data:
        raise ImageReadError(f"image file {str(path)!r} is empty (0 bytes)")
    return data


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
    fit : {"pad", "crop"}, default "pad"
        ``"pad"`` pads to a centred square (as the original project did); ``"crop"`` takes the
        centred square.
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
    img = load_image(source, draft_size=size, draft_side="short" if fit == "crop" else "long", label=label)
    if fit == "pad":
        img = pad_to_square(img, fill)
    elif fit == "crop":
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    else:
        raise ValueError(f"fit must be 'pad' or 'crop', not {fit!r}")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(img, dtype=dtype)
