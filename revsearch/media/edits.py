"""The image-edit library: edited copies of a photo, as people re-share them.

Used to measure near-duplicate recall (:func:`revsearch.quality.evaluate.evaluate_near_duplicates`),
by the demo (an unseen edited copy as the query) and by the benchmarks. :data:`EDITS` maps each
edit's name to a function from an RGB image to an edited RGB copy; :func:`make_edits` applies
several; :func:`jpeg_roundtrip` is the JPEG re-save on its own.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

__all__ = ["EDITS", "jpeg_roundtrip", "make_edits"]


def jpeg_roundtrip(img: Image.Image, quality: int = 30) -> Image.Image:
    """The image as it reads back after being saved as a JPEG of ``quality`` (RGB).

    Parameters
    ----------
    img : PIL.Image.Image
    quality : int, default 30

    Returns
    -------
    PIL.Image.Image
    """
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def _jpeg_q30(img: Image.Image) -> Image.Image:
    return jpeg_roundtrip(img, 30)


def _resize_50(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.resize((max(1, round(w / 2)), max(1, round(h / 2))), Image.Resampling.BICUBIC)


def _crop_80(img: Image.Image) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * 0.8)), max(1, round(h * 0.8))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _rotate_10(img: Image.Image) -> Image.Image:
    return img.rotate(10, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))


def _brightness(img: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(1.4)


def _colour(img: Image.Image) -> Image.Image:
    warm = np.asarray(ImageEnhance.Color(img).enhance(1.6), dtype=np.float32) * np.array([1.12, 1.0, 0.85], np.float32)
    return Image.fromarray(np.clip(np.rint(warm), 0, 255).astype(np.uint8))


def _greyscale(img: Image.Image) -> Image.Image:
    return img.convert("L").convert("RGB")


def _hflip(img: Image.Image) -> Image.Image:
    return ImageOps.mirror(img)


def _letterbox(img: Image.Image) -> Image.Image:
    w, h = img.size
    if w * 9 >= h * 16:  # wider than 16:9: bars above and below
        cw, ch = w, max(h, round(w * 9 / 16))
    else:  # bars left and right
        cw, ch = max(w, round(h * 16 / 9)), h
    canvas = Image.new("RGB", (cw, ch), (0, 0, 0))
    canvas.paste(img, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _text(img: Image.Image) -> Image.Image:
    out = img.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    size = max(10, h // 9)
    stroke = max(1, size // 12)
    draw.text((w // 20, h - h // 20 - size), "(c) revsearch 2024", fill=(255, 255, 255), font=_font(size),
              stroke_width=stroke, stroke_fill=(0, 0, 0))
    draw.text((w // 20, h // 20), "SAMPLE", fill=(255, 230, 0), font=_font(size), stroke_width=stroke,
              stroke_fill=(0, 0, 0))
    return out


#: The edits of the near-duplicate mode, by name: each maps an RGB image to an edited RGB copy.
EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q30": _jpeg_q30,
    "resize_50": _resize_50,
    "crop_80": _crop_80,
    "rotate_10": _rotate_10,
    "brightness": _brightness,
    "colour": _colour,
    "greyscale": _greyscale,
    "hflip": _hflip,
    "letterbox": _letterbox,
    "text": _text,
}

_EDIT_DOCS = {
    "jpeg_q30": "re-encoded as JPEG at quality 30",
    "resize_50": "resized to half the width and height",
    "crop_80": "the central 80% of the width and height",
    "rotate_10": "rotated 10 degrees anticlockwise, same size, black corners",
    "brightness": "brightness x1.4",
    "colour": "saturation x1.6 and a warm tint (red x1.12, blue x0.85)",
    "greyscale": "grey-scale (still RGB)",
    "hflip": "mirrored left to right",
    "letterbox": "black bars to a 16:9 frame",
    "text": "two captions drawn over the photo",
}


def make_edits(image: Image.Image | np.ndarray, edits: Sequence[str] | None = None) -> dict[str, Image.Image]:
    """Make edited copies of a photo.

    Parameters
    ----------
    image : PIL.Image.Image or numpy.ndarray
        An RGB image (an array of shape (H, W, 3) uint8).
    edits : sequence of str, optional
        Names from :data:`EDITS` (default: all of them):

        - ``jpeg_q30``: re-encoded as JPEG at quality 30;
        - ``resize_50``: half the width and height;
        - ``crop_80``: the central 80% of the width and height;
        - ``rotate_10``: rotated 10 degrees, same size, black corners;
        - ``brightness``: brightness x1.4;
        - ``colour``: saturation x1.6 and a warm tint;
        - ``greyscale``: grey-scale (as RGB);
        - ``hflip``: mirrored left to right;
        - ``letterbox``: black bars to a 16:9 frame;
        - ``text``: captions drawn over the photo.

    Returns
    -------
    dict of str to PIL.Image.Image
        One RGB copy per edit, in the order asked.

    Raises
    ------
    ValueError
        For an unknown edit name.
    """
    img = Image.fromarray(np.asarray(image, dtype=np.uint8)) if isinstance(image, np.ndarray) else image
    img = img.convert("RGB")
    names = list(EDITS) if edits is None else list(edits)
    unknown = [e for e in names if e not in EDITS]
    if unknown:
        raise ValueError(f"unknown edit(s) {unknown}: choose from {', '.join(EDITS)}")
    return {name: EDITS[name](img) for name in names}
