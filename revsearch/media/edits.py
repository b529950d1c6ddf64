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

__all__ = ["COPY_EDITS", "EDITS", "burst_neighbours", "jpeg_roundtrip", "make_edits"]


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


# ---------------------------------------------------------------------------------------- copy edits, hard negatives
def _jpeg_q75(img: Image.Image) -> Image.Image:
    return jpeg_roundtrip(img, 75)


def _resize_25(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.resize((max(1, round(w / 4)), max(1, round(h / 4))), Image.Resampling.BICUBIC)


def _crop_70(img: Image.Image) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * 0.7)), max(1, round(h * 0.7))
    left, top = (w - cw) // 3, (h - ch) // 2  # off centre: crops are rarely centred
    return img.crop((left, top, left + cw, top + ch))


def _rot(k: int) -> Callable[[Image.Image], Image.Image]:
    turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}[k]
    return lambda img: img.transpose(turn)


def _saturation(img: Image.Image) -> Image.Image:
    return ImageEnhance.Color(img).enhance(0.3)


def _darker(img: Image.Image) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(0.7)).enhance(1.2)


def _border_white(img: Image.Image) -> Image.Image:
    w, h = img.size
    return ImageOps.expand(img, border=max(4, round(0.06 * max(w, h))), fill=(255, 255, 255))


def _caption_band(img: Image.Image) -> Image.Image:
    """A solid band with a caption over the bottom sixth of the photo (a meme, a news caption)."""
    out = img.copy()
    w, h = out.size
    band = max(8, h // 6)
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, h - band, w, h), fill=(20, 20, 20))
    size = max(8, band * 2 // 3)
    draw.text((w // 20, h - band + (band - size) // 2), "WHEN THE COPY SAYS HELLO", fill=(255, 255, 255), font=_font(size))
    return out


def _logo(img: Image.Image) -> Image.Image:
    """A semi-opaque logo (a watermark box with text) in a corner."""
    out = img.convert("RGBA")
    w, h = out.size
    over = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(over)
    bw, bh = max(8, w // 4), max(6, h // 8)
    draw.rectangle((w - bw - w // 30, h // 30, w - w // 30, h // 30 + bh), fill=(255, 255, 255, 170))
    draw.text((w - bw, h // 30 + bh // 5), "LOGO", fill=(200, 0, 0, 255), font=_font(max(6, bh // 2)))
    return Image.alpha_composite(out, over).convert("RGB")


def _screenshot(img: Image.Image) -> Image.Image:
    """The photo shown smaller inside an app's screen: grey bars, a title bar, scaled to 80%."""
    w, h = img.size
    inner = img.resize((max(1, round(w * 0.8)), max(1, round(h * 0.8))), Image.Resampling.BILINEAR)
    cw, ch = round(w * 0.95), round(h * 1.25)
    canvas = Image.new("RGB", (cw, ch), (238, 238, 238))
    draw = ImageDraw.Draw(canvas)
    top = max(6, ch // 10)
    draw.rectangle((0, 0, cw, top), fill=(40, 90, 160))
    draw.text((cw // 30, top // 5), "Photos  12:04", fill=(255, 255, 255), font=_font(max(6, top // 2)))
    canvas.paste(inner, ((cw - inner.width) // 2, top + (ch - top - inner.height) // 3))
    draw.rectangle((0, ch - top, cw, ch), fill=(250, 250, 250))
    return canvas


def _tiny_jpeg(img: Image.Image) -> Image.Image:
    """A thumbnail of the photo at most 160 pixels wide, saved as a JPEG of quality 15."""
    w, h = img.size
    s = min(1.0, 160 / max(w, h))
    small = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    return jpeg_roundtrip(small, 15)


#: Edits of the copy-detection benchmark (``benchmarks/duplicates.py``): the :data:`EDITS` and
#: harder ones. Each maps an RGB image to an edited RGB copy.
COPY_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q30": _jpeg_q30,
    "jpeg_q75": _jpeg_q75,
    "resize_50": _resize_50,
    "resize_25": _resize_25,
    "crop_80": _crop_80,
    "crop_70": _crop_70,
    "rotate_10": _rotate_10,
    "rot90": _rot(90),
    "rot180": _rot(180),
    "rot270": _rot(270),
    "hflip": _hflip,
    "brightness": _brightness,
    "darker": _darker,
    "saturation": _saturation,
    "colour": _colour,
    "greyscale": _greyscale,
    "border": _border_white,
    "letterbox": _letterbox,
    "text": _text,
    "caption_band": _caption_band,
    "logo": _logo,
    "screenshot": _screenshot,
    "tiny_jpeg": _tiny_jpeg,
}


def _perspective(img: Image.Image, shift: np.ndarray) -> Image.Image:
    """The photo seen from a slightly moved camera: its 4 corners moved by ``shift`` (4, 2) times its size."""
    w, h = img.size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    dst = src + shift * np.array([w, h])
    # PIL's perspective transform maps output pixels to input pixels: solve for dst -> src
    A, bb = [], []
    for (x, y), (u, v) in zip(dst, src):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        bb.extend([u, v])
    coeffs = np.linalg.solve(np.asarray(A), np.asarray(bb))
    return img.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC)


def burst_neighbours(image: Image.Image | np.ndarray, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """Two simulated neighbouring frames of a burst: hard negatives of copy detection.

    A real burst is a handheld camera firing several frames a second: between two frames the
    camera turns and shifts a little (the view changes by a perspective, not a similarity: near
    and far things move differently), whatever moves in the scene moves, and each frame has its
    own sensor noise. Both frames are therefore simulated from one photo by a crop with a small
    shift and zoom, a perspective change (corners 2.5-4% of the frame apart between the frames), a displaced region (the subject
    moving), and independent noise. A plain shifted crop of the same pixels is not a burst
    frame: it is a crop, an edited copy, and copy detection accepts it.

    Parameters
    ----------
    image : PIL.Image.Image or numpy.ndarray
        An RGB photo.
    seed : int, default 0

    Returns
    -------
    (PIL.Image.Image, PIL.Image.Image)
        Two RGB frames of the same size.
    """
    img = Image.fromarray(np.asarray(image, dtype=np.uint8)) if isinstance(image, np.ndarray) else image
    img = img.convert("RGB")
    rng = np.random.default_rng(seed)
    w, h = img.size
    frames = []
    base = rng.uniform(-0.01, 0.01, size=(4, 2))
    for step in range(2):  # the camera moved between the frames: corners 2.5-4% apart
        move = rng.choice([-1.0, 1.0], size=(4, 2)) * rng.uniform(0.0125, 0.02, size=(4, 2))
        f = _perspective(img, base + (move if step else -move))
        zoom = rng.uniform(0.90, 0.95)
        cw, ch = round(w * zoom), round(h * zoom)
        left = int(rng.integers(0, w - cw + 1))
        top = int(rng.integers(0, h - ch + 1))
        f = f.crop((left, top, left + cw, top + ch)).resize((round(w * 0.92), round(h * 0.92)), Image.Resampling.BICUBIC)
        # the subject moves: a region is displaced by a few percent
        fw, fh = f.size
        rw, rh = fw // 3, fh // 3
        x0, y0 = int(rng.integers(fw // 6, fw - rw - fw // 6)), int(rng.integers(fh // 6, fh - rh - fh // 6))
        dx, dy = int(rng.integers(-fw // 25 - 1, fw // 25 + 2)), int(rng.integers(-fh // 25 - 1, fh // 25 + 2))
        region = f.crop((x0, y0, x0 + rw, y0 + rh))
        f.paste(region, (x0 + dx, y0 + dy))
        arr = np.asarray(f, np.float32) + rng.normal(0.0, 3.0, size=(fh, fw, 3))
        frames.append(jpeg_roundtrip(Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)), 90))
    return frames[0], frames[1]


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
