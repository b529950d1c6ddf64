"""Finding, reading and preparing images (revsearch.images)."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, features

import revsearch.images as images
from revsearch.errors import ImageReadError
from revsearch.images import find_images, is_image_file, load_image, pad_to_square, prepare_image

from conftest import make_photo

# ----------------------------------------------------------------------------- helpers


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _px(img: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(img)[xy[1], xy[0]])


def _mad(a, b) -> float:
    """Mean absolute difference of two images/arrays."""
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


# ----------------------------------------------------------------------------- find_images


@pytest.fixture()
def mixed_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    photo = Image.fromarray(make_photo(1, (24, 16)))
    files = {
        "z_last.JPG": ("JPEG", {}),
        "a/photo.Png": ("PNG", {}),
        "a/deep/x.jpeg": ("JPEG", {}),
        "b/c.webp": ("WEBP", {}) if features.check("webp") else ("PNG", {}),
        "b/d.bmp": ("BMP", {}),
        "b/e.gif": ("GIF", {}),
        "b/f.tiff": ("TIFF", {}),
        "b/g.TIF": ("TIFF", {}),
        "photo.dat": ("PNG", {}),  # an image under an odd extension
        "noextension": ("JPEG", {}),  # and with none
        ".hidden/h.jpg": ("JPEG", {}),  # hidden folder
        "vectors/v.jpg": ("JPEG", {}),  # excluded below
    }
    for rel, (fmt, kw) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        photo.save(p, fmt, **kw)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "notes.txt").write_text("BMW photos from the holiday\n")  # starts like a BMP, is not one
    (root / "a" / "README").write_text("just text")
    (root / "a" / ".thumb.jpg").write_bytes(_encode(photo, "JPEG"))  # hidden file
    return root


def test_find_images_by_content_sorted_hidden_and_excluded(mixed_dir: Path) -> None:
    found = find_images(mixed_dir, exclude=[mixed_dir / "vectors"])
    rel = [p.relative_to(mixed_dir).as_posix() for p in found]
    assert rel == [
        "a/deep/x.jpeg",
        "a/photo.Png",
        "b/c.webp",
        "b/d.bmp",
        "b/e.gif",
        "b/f.tiff",
        "b/g.TIF",
        "noextension",
        "photo.dat",
        "z_last.JPG",
    ]
    assert all(isinstance(p, Path) and p.is_file() for p in found)
    # every file found can actually be read
    for p in found:
        assert load_image(p).size == (24, 16)


def test_find_images_exclude_as_string_and_without_exclude(mixed_dir: Path) -> None:
    with_vectors = [p.relative_to(mixed_dir).as_posix() for p in find_images(str(mixed_dir))]
    assert "vectors/v.jpg" in with_vectors
    assert not any(r.startswith(".hidden") or r.endswith(".thumb.jpg") for r in with_vectors)
    without = [p.relative_to(mixed_dir).as_posix() for p in find_images(mixed_dir, exclude=[str(mixed_dir / "vectors")])]
    assert without == [r for r in with_vectors if r != "vectors/v.jpg"]


def test_find_images_is_deterministic_whatever_creation_order(tmp_path: Path) -> None:
    a, b = tmp_path / "one", tmp_path / "two"
    names = ["b/2.png", "a/10.png", "a/1.png", "c.png", "a/b/0.png"]
    img = Image.new("RGB", (4, 4))
    for root, order in ((a, names), (b, list(reversed(names)))):
        for n in order:
            (root / n).parent.mkdir(parents=True, exist_ok=True)
            img.save(root / n)
    ra = [p.relative_to(a).as_posix() for p in find_images(a)]
    rb = [p.relative_to(b).as_posix() for p in find_images(b)]
    assert ra == rb == sorted(names)


def test_find_images_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        find_images(tmp_path / "nope")


def test_is_image_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.JPEG"
    broken.write_bytes(b"not really")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    bmp_like = tmp_path / "bmw.txt"
    bmp_like.write_text("BMW cars are fast, BMW cars are nice")
    real_bmp = tmp_path / "pic.data"
    Image.new("RGB", (3, 3)).save(real_bmp, "BMP")
    assert is_image_file(broken)  # named like an image: reported as broken later, not hidden
    assert not is_image_file(text)
    assert not is_image_file(bmp_like)
    assert is_image_file(real_bmp)
    assert not is_image_file(tmp_path / "missing.bin")


# ----------------------------------------------------------------------------- load_image: formats


def _exif_jpeg(upright: Image.Image, orientation: int, path: Path) -> None:
    """Store the pixels rotated, with the EXIF tag that tells a viewer how to turn them upright."""
    stored = {
        6: upright.transpose(Image.Transpose.ROTATE_90),  # viewer turns 90 degrees clockwise
        8: upright.transpose(Image.Transpose.ROTATE_270),  # viewer turns 90 degrees counter-clockwise
        3: upright.transpose(Image.Transpose.ROTATE_180),
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif)


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_applied(tmp_path: Path, orientation: int) -> None:
    upright = Image.fromarray(make_photo(3, (64, 40)))
    p = tmp_path / "phone.jpg"
    _exif_jpeg(upright, orientation, p)
    with Image.open(p) as raw:
        assert raw.getexif()[0x0112] == orientation
        if orientation in (6, 8):
            assert raw.size == (40, 64)  # stored sideways
        raw_arr = np.asarray(raw.convert("RGB"))
    out = load_image(p)
    assert out.mode == "RGB"
    assert out.size == (64, 40)
    assert _mad(out, upright) < 4.0
    # the wrong way round would be far off (the check above can fail)
    assert _mad(out.transpose(Image.Transpose.ROTATE_180), upright) > 20.0
    # a PIL image opened by the caller is turned upright too, and bytes as well
    with Image.open(p) as im:
        assert _mad(load_image(im), upright) < 4.0
    assert _mad(load_image(p.read_bytes()), upright) < 4.0
    assert raw_arr.shape[:2] in ((64, 40), (40, 64))


def test_cmyk_jpeg_colours(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    cmyk = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red
    cmyk.paste((255, 255, 0, 0), (16, 0, 32, 16))  # blue
    cmyk.save(p, "JPEG", quality=95)
    with Image.open(p) as raw:
        assert raw.mode == "CMYK"
    out = load_image(p)
    assert out.mode == "RGB"
    r = _px(out, (4, 8))
    b = _px(out, (28, 8))
    assert r[0] > 200 and r[1] < 60 and r[2] < 60, r
    assert b[2] > 200 and b[0] < 60 and b[1] < 60, b


def test_greyscale_L() -> None:
    out = load_image(_encode(Image.new("L", (5, 4), 77), "PNG"))
    assert out.mode == "RGB" and out.size == (5, 4)
    assert _px(out) == (77, 77, 77)


def _palette_image(transparent: bool) -> Image.Image:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    p.putpixel((1, 1), 1)
    if transparent:
        p.info["transparency"] = 0
    return p


def test_palette_without_transparency() -> None:
    data = _encode(_palette_image(False), "PNG")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "P"
    out = load_image(data)
    assert _px(out, (0, 0)) == (10, 20, 30)
    assert _px(out, (1, 1)) == (200, 100, 50)


def test_palette_with_transparency_uses_background() -> None:
    data = _encode(_palette_image(True), "PNG")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    out = load_image(data)
    assert _px(out, (0, 0)) == (255, 255, 255)  # transparent entry -> default white background
    assert _px(out, (1, 1)) == (200, 100, 50)
    assert _px(load_image(data, background=(0, 128, 0)), (0, 0)) == (0, 128, 0)


def test_one_bit() -> None:
    im = Image.new("1", (8, 8), 0)
    im.putpixel((3, 3), 1)
    out = load_image(_encode(im, "PNG"))
    assert out.mode == "RGB"
    assert _px(out, (0, 0)) == (0, 0, 0)
    assert _px(out, (3, 3)) == (255, 255, 255)


@pytest.mark.parametrize("value,expected", [(32768, 128), (65535, 255), (0, 0), (16384, 64)])
def test_sixteen_bit_png_keeps_tones(value: int, expected: int) -> None:
    arr = np.full((6, 6), value, np.uint16)
    data = _encode(Image.fromarray(arr), "PNG")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode.startswith("I")  # read as a 16-bit (or 32-bit integer) image
    out = np.asarray(load_image(data))
    assert out.dtype == np.uint8
    assert np.all(np.abs(out.astype(int) - expected) <= 1), out[0, 0]


def test_sixteen_bit_tiff_and_uint16_array() -> None:
    arr = np.full((4, 4), 32768, np.uint16)
    out = np.asarray(load_image(_encode(Image.fromarray(arr), "TIFF")))
    assert abs(int(out[0, 0, 0]) - 128) <= 1
    rgb16 = np.full((4, 4, 3), 32768, np.uint16)
    assert abs(int(np.asarray(load_image(rgb16))[0, 0, 1]) - 128) <= 1


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_composited_on_background(mode: str) -> None:
    if mode == "RGBA":
        im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
        im.putpixel((1, 1), (0, 0, 255, 255))  # opaque blue
        opaque = (0, 0, 255)
    else:
        im = Image.new("LA", (4, 4), (30, 0))
        im.putpixel((1, 1), (90, 255))
        opaque = (90, 90, 90)
    data = _encode(im, "PNG")
    out = load_image(data)
    assert out.mode == "RGB"
    assert _px(out, (0, 0)) == (255, 255, 255)
    assert _px(out, (1, 1)) == opaque
    assert _px(load_image(data, background=(1, 2, 3)), (0, 0)) == (1, 2, 3)


def test_half_transparent_pixel_is_blended() -> None:
    im = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    r, g, b = _px(load_image(im))  # black at half opacity over white
    assert 120 <= r <= 135 and r == g == b


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 6), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(p) as raw:
        assert raw.n_frames == 3
        raw.seek(2)  # a caller's image left on a later frame
        out_from_pil = load_image(raw)
    assert _px(load_image(p)) == (255, 0, 0)
    assert _px(out_from_pil) == (255, 0, 0)
    assert load_image(p).size == (8, 6)


@pytest.mark.parametrize(
    "fmt,kw",
    [
        pytest.param(
            "WEBP",
            {"lossless": True},
            marks=pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP"),
        ),
        ("TIFF", {}),
        ("BMP", {}),
        ("PNG", {}),
    ],
)
def test_lossless_formats_roundtrip(tmp_path: Path, fmt: str, kw: dict) -> None:
    arr = make_photo(5, (30, 20))
    p = tmp_path / f"img.{fmt.lower()}"
    Image.fromarray(arr).save(p, fmt, **kw)
    out = load_image(p)
    assert out.mode == "RGB" and out.size == (30, 20)
    np.testing.assert_array_equal(np.asarray(out), arr)


def test_webp_lossy() -> None:
    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    arr = make_photo(6, (40, 30))
    out = load_image(_encode(Image.fromarray(arr), "WEBP", quality=90))
    assert out.size == (40, 30)
    assert _mad(out, arr) < 6.0


def test_draft_size_decodes_jpeg_smaller_but_not_below(tmp_path: Path) -> None:
    p = tmp_path / "big.jpg"
    Image.fromarray(make_photo(7, (960, 640))).save(p, quality=90)
    small = load_image(p, draft_size=224)
    assert 224 <= max(small.size) < 960
    full = load_image(p)
    assert full.size == (960, 640)
    # prepare_image (which uses the draft) gives nearly the same input as decoding in full
    direct = np.asarray(pad_to_square(full).resize((224, 224), Image.Resampling.BICUBIC), np.float32)
    assert _mad(prepare_image(p), direct) < 3.0


# ----------------------------------------------------------------------------- load_image: input kinds


@pytest.fixture()
def jpeg_file(tmp_path: Path) -> Path:
    p = tmp_path / "photo.jpg"
    Image.fromarray(make_photo(2, (40, 30))).save(p, quality=95)
    return p


def test_path_kinds(jpeg_file: Path) -> None:
    a = load_image(jpeg_file)
    b = load_image(str(jpeg_file))
    assert a.size == (40, 30) and a.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _mad(a, make_photo(2, (40, 30))) < 4.0


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, io.BytesIO])
def test_bytes_kinds(jpeg_file: Path, kind) -> None:
    data = jpeg_file.read_bytes()
    out = load_image(kind(data))
    assert out.mode == "RGB" and out.size == (40, 30)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(load_image(jpeg_file)))


def test_open_binary_file_object(jpeg_file: Path) -> None:
    with open(jpeg_file, "rb") as f:
        assert load_image(f).size == (40, 30)


def test_pil_image_kinds() -> None:
    arr = make_photo(4, (12, 9))
    rgb = Image.fromarray(arr)
    out = load_image(rgb)
    np.testing.assert_array_equal(np.asarray(out), arr)
    grey = load_image(Image.new("L", (3, 2), 200))
    assert grey.mode == "RGB" and _px(grey) == (200, 200, 200)


def test_array_rgb_uint8_exact() -> None:
    arr = make_photo(8, (13, 7))  # (H, W, 3) = (7, 13, 3)
    out = load_image(arr)
    assert out.size == (13, 7)  # PIL size is (W, H)
    np.testing.assert_array_equal(np.asarray(out), arr)


def test_array_grey_and_single_channel() -> None:
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = np.asarray(load_image(g))
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[..., 0], g)
    np.testing.assert_array_equal(out[..., 2], g)
    np.testing.assert_array_equal(np.asarray(load_image(g[..., None])), out)


def test_array_rgba_composited() -> None:
    a = np.zeros((2, 3, 4), np.uint8)
    a[0, 0] = (0, 255, 0, 255)
    a[1, 2] = (0, 255, 0, 0)
    out = np.asarray(load_image(a))
    assert out.shape == (2, 3, 3)
    assert tuple(out[0, 0]) == (0, 255, 0)
    assert tuple(out[1, 2]) == (255, 255, 255)


def test_array_float_zero_to_one() -> None:
    f = np.zeros((4, 5, 3), np.float32)
    f[..., 0] = 1.0
    f[..., 1] = 0.5
    out = np.asarray(load_image(f))
    assert out.dtype == np.uint8
    assert tuple(out[0, 0]) == (255, 128, 0)
    f64 = np.full((2, 2), 0.25, np.float64)
    assert tuple(np.asarray(load_image(f64))[0, 0]) == (64, 64, 64)


# ----------------------------------------------------------------------------- broken inputs


def _assert_read_error(source, *needles: str) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        load_image(source)
    msg = str(info.value)
    for n in needles:
        assert n.lower() in msg.lower(), msg
    return info.value


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _assert_read_error(p, str(p), "empty")


def test_truncated_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "cut.jpg"
    data = _encode(Image.fromarray(make_photo(9, (120, 90))), "JPEG", quality=90)
    p.write_bytes(data[: len(data) // 2])
    _assert_read_error(p, str(p), "truncated")
    _assert_read_error(data[: len(data) // 2], "truncated")


def test_corrupt_bytes_under_jpg(tmp_path: Path) -> None:
    p = tmp_path / "noise.jpg"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    _assert_read_error(p, str(p), "not an image")
    # a JPEG header followed by garbage
    q = tmp_path / "garbage.jpg"
    q.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    _assert_read_error(q, str(q))


def test_text_under_png(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("this is not a picture\n")
    _assert_read_error(p, str(p), "not an image")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    _assert_read_error(missing, str(missing), "does not exist")
    _assert_read_error(str(missing), str(missing), "does not exist")
    _assert_read_error(tmp_path, str(tmp_path), "folder")


@pytest.mark.parametrize("empty", [b"", bytearray(), memoryview(b"")])
def test_empty_bytes(empty) -> None:
    _assert_read_error(empty, "empty")


def test_decompression_bomb_by_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(p)
    monkeypatch.setattr(images, "MAX_PIXELS", 5000)
    _assert_read_error(p, str(p), "decompression bomb", "100x100")
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    assert load_image(p).size == (100, 100)


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 12_000])  # 4e8 pixels (> 2x Pillow's limit), 1.44e8 (> Pillow's, < ours)
def test_decompression_bomb_header(tmp_path: Path, side: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000_000)
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_claiming(side, side))
    _assert_read_error(p, str(p), "decompression bomb")


@pytest.mark.parametrize(
    "shape", [(4, 4, 2), (4, 4, 5), (2, 4, 4, 3), (12,), (0, 4, 3), (4, 0)]
)
def test_wrong_array_shapes(shape: tuple[int, ...]) -> None:
    err = _assert_read_error(np.zeros(shape, np.uint8))
    assert str(shape) in str(err)


def test_bad_array_values() -> None:
    bad = np.full((2, 2, 3), np.nan, np.float32)
    _assert_read_error(bad, "nan")
    _assert_read_error(np.zeros((2, 2, 3), np.complex64), "dtype")


def test_read_error_is_value_error(tmp_path: Path) -> None:
    """Callers that catch ValueError (or RevsearchError) catch it too."""
    from revsearch.errors import RevsearchError

    p = tmp_path / "x.jpg"
    p.write_bytes(b"xx")
    with pytest.raises(ValueError):
        load_image(p)
    with pytest.raises(RevsearchError):
        load_image(p)


# ----------------------------------------------------------------------------- pad_to_square / prepare_image


def test_pad_to_square_wide_black_centred() -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    out = pad_to_square(img)
    a = np.asarray(out)
    assert out.size == (40, 40)
    assert (a[:10] == 0).all() and (a[30:] == 0).all()
    assert (a[10:30] == 255).all()


def test_pad_to_square_tall_odd() -> None:
    img = Image.new("RGB", (5, 12), (200, 10, 10))
    a = np.asarray(pad_to_square(img))
    assert a.shape == (12, 12, 3)
    # 7 columns of padding: 3 left, 4 right
    assert (a[:, :3] == 0).all() and (a[:, 8:] == 0).all()
    assert (a[:, 3:8] == (200, 10, 10)).all()


def test_pad_to_square_square_unchanged_and_fill_colour() -> None:
    sq = Image.new("RGB", (7, 7), (1, 2, 3))
    assert np.array_equal(np.asarray(pad_to_square(sq)), np.asarray(sq))
    a = np.asarray(pad_to_square(Image.new("RGB", (4, 2), (9, 9, 9)), (10, 20, 30)))
    assert tuple(a[0, 0]) == (10, 20, 30) and tuple(a[1, 0]) == (9, 9, 9)


def test_pad_to_square_mean() -> None:
    arr = np.zeros((2, 4, 3), np.uint8)
    arr[:, :2] = (100, 0, 200)
    arr[:, 2:] = (200, 50, 0)
    a = np.asarray(pad_to_square(Image.fromarray(arr), "mean"))
    assert a.shape == (4, 4, 3)
    assert tuple(a[0, 0]) == (150, 25, 100)
    assert tuple(a[3, 3]) == (150, 25, 100)
    np.testing.assert_array_equal(a[1:3], arr)


def test_pad_to_square_edge() -> None:
    arr = np.zeros((2, 3, 3), np.uint8)
    arr[0] = (255, 0, 0)
    arr[1] = (0, 0, 255)
    a = np.asarray(pad_to_square(Image.fromarray(arr), "edge"))
    assert a.shape == (3, 3, 3)
    # 1 row of padding: at the top (top = 0) or bottom; the padded row repeats the edge
    np.testing.assert_array_equal(a[:2], arr)
    np.testing.assert_array_equal(a[2], arr[1])
    tall = np.zeros((6, 2, 3), np.uint8)
    tall[:, 0] = (0, 255, 0)
    tall[:, 1] = (9, 9, 9)
    t = np.asarray(pad_to_square(Image.fromarray(tall), "edge"))
    assert t.shape == (6, 6, 3)
    assert (t[:, :2] == (0, 255, 0)).all() and (t[:, 4:] == (9, 9, 9)).all()


def test_prepare_image_shape_dtype_range(jpeg_file: Path) -> None:
    x = prepare_image(jpeg_file)
    assert x.shape == (224, 224, 3)
    assert x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 255.0
    assert x.max() > 1.0  # 0..255, not 0..1
    assert prepare_image(jpeg_file, 64).shape == (64, 64, 3)


def test_prepare_image_pad_vs_crop_wide() -> None:
    wide = np.full((100, 200, 3), 255, np.uint8)  # W=200, H=100
    padded = prepare_image(wide)
    # padding at the top and bottom rows (a quarter each), not at the sides
    assert (padded[:50] == 0).all() and (padded[-50:] == 0).all()
    assert (padded[60:164] == 255).all()
    assert (padded[:, 0][60:164] == 255).all()
    cropped = prepare_image(wide, fit="crop")
    assert (cropped == 255).all()
    stretched = prepare_image(wide, fit="stretch")  # the whole image, aspect ratio not kept (SigLIP's way)
    assert stretched.shape == (224, 224, 3) and (stretched == 255).all()
    with pytest.raises(ValueError, match="fit"):
        prepare_image(wide, fit="squash")


def test_prepare_image_crop_takes_centre() -> None:
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 255  # white centre third
    out = prepare_image(arr, 10, fit="crop")
    assert (out == 255).all()


@pytest.mark.parametrize("mode,key,other", [("RGB", (255, 0, 0), (0, 0, 255)), ("L", 7, 99)])
def test_png_transparency_colour_key(mode: str, key, other) -> None:
    """A PNG tRNS colour key makes that colour transparent, in RGB as in grey images."""
    im = Image.new(mode, (4, 4), key)
    im.putpixel((1, 1), other)
    data = _encode(im, "PNG", transparency=key)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == mode and "transparency" in raw.info
    out = load_image(data, background=(0, 255, 0))
    assert _px(out, (0, 0)) == (0, 255, 0)
    expected = other if mode == "RGB" else (other,) * 3
    assert _px(out, (1, 1)) == tuple(expected)


def test_read_source(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    Image.new("RGB", (3, 3)).save(p)
    assert images.read_source(p) == p.read_bytes()
    assert images.read_source(str(p)) == p.read_bytes()
    arr = np.zeros((2, 2, 3), np.uint8)
    assert images.read_source(arr) is arr
    with pytest.raises(ImageReadError, match="does not exist"):
        images.read_source(tmp_path / "none.png")
    with pytest.raises(ImageReadError, match="folder"):
        images.read_source(tmp_path)
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        images.read_source(tmp_path / "e.png")


def test_crop_of_a_wide_jpeg_is_not_upscaled_from_a_reduced_decode(tmp_path: Path) -> None:
    """A reduced-scale JPEG decode must keep the *short* side at 224 px when the image will be
    centre-cropped: a 1024x500 photo cropped to 224 must match a full decode, not a 125 px crop
    stretched to 224."""
    from PIL import ImageFilter

    rng = np.random.default_rng(3)
    noise = Image.fromarray((rng.random((500, 1024, 3)) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    path = tmp_path / "wide.jpg"
    noise.save(path, quality=95)
    fast = prepare_image(path, 224, fit="crop")
    full = Image.open(path).convert("RGB")
    w, h = full.size
    ref = full.crop(((w - h) // 2, 0, (w - h) // 2 + h, h)).resize((224, 224), Image.Resampling.BICUBIC)
    err = np.abs(fast - np.asarray(ref, np.float32)).mean()
    assert err < 6.0, f"mean abs difference {err:.1f}: the crop was upscaled from a too small decode"


# ----------------------------------------------------------------------------- large and odd files (issue 8)


def _big_jpeg(path: Path, w: int, h: int) -> Path:
    """A w x h grey JPEG: dark left half, bright right half (cheap to encode, small on disk)."""
    img = Image.new("L", (w, h), 40)
    img.paste(220, (w // 2, 0, w, h))
    img.save(path, quality=50)
    return path


def test_108_megapixel_jpeg_is_read_not_refused(tmp_path: Path) -> None:
    """12000x9000 is over half of MAX_PIXELS, where Pillow warns: it was refused as a bomb."""
    path = _big_jpeg(tmp_path / "big.jpg", 12000, 9000)
    x = prepare_image(path, 224)  # decoded at 1/8 (1500x1125), then padded and resized
    assert x.shape == (224, 224, 3)
    assert x[112, 20].mean() < 60 and x[112, 200].mean() > 200  # the two halves, not a refusal
    data = images.read_source(path)
    small = load_image(data, draft_size=224, label=str(path))
    assert small.size == (1500, 1125)
    full = load_image(path)  # no draft asked: 108 MP is under MAX_PIXELS, decoded whole
    assert full.size == (12000, 9000) and full.mode == "RGB"


def test_jpeg_over_pillows_hard_limit_is_decoded_at_a_reduced_scale(tmp_path: Path) -> None:
    """16000x12000 (192 MP) makes Image.open raise DecompressionBombError; 1/2 scale fits MAX_PIXELS."""
    path = _big_jpeg(tmp_path / "huge.jpg", 16000, 12000)
    img = load_image(path)
    assert img.size == (8000, 6000)
    assert _px(img, (100, 3000))[0] < 60 and _px(img, (7900, 3000))[0] > 200
    assert prepare_image(path.read_bytes(), 224).shape == (224, 224, 3)


def test_true_jpeg_bomb_still_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _big_jpeg(tmp_path / "b.jpg", 400, 400)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # even 1/8 (50x50 = 2500 pixels) is over
    _assert_read_error(path, str(path), "decompression bomb", "400x400", "MAX_PIXELS")
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)  # 1/4 (100x100) fits
    assert load_image(path).size == (100, 100)


def test_30_gb_sparse_jpg_is_skipped_unread(tmp_path: Path) -> None:
    """A 30 GB (sparse) x.jpg was read whole (MemoryError, run lost): refused by its size first."""
    big = tmp_path / "x.jpg"
    with open(big, "wb") as f:
        f.truncate(30 * 1024**3)
    assert find_images(tmp_path) == [big]  # named like an image: found, then reported
    for call in (images.read_source, load_image, images.read_image_file):
        with pytest.raises(ImageReadError) as info:
            call(big)
        msg = str(info.value)
        assert str(big) in msg and "32.2 GB" in msg and "MAX_FILE_BYTES" in msg, msg


def test_max_file_bytes_is_configurable_and_the_header_checked_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = tmp_path / "p.jpg"
    Image.fromarray(make_photo(3, (64, 48))).save(photo)
    size = photo.stat().st_size
    assert images.read_image_file(photo) == photo.read_bytes()
    with pytest.raises(ImageReadError, match="more than the limit"):
        images.read_image_file(photo, max_bytes=size - 1)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", size - 1)
    with pytest.raises(ImageReadError, match="MAX_FILE_BYTES"):
        images.read_source(photo)
    monkeypatch.undo()
    zeros = tmp_path / "zeros.jpg"  # 40 MB of zeros under an image name: not read past its first bytes
    with open(zeros, "wb") as f:
        f.truncate(40 * 1024**2)
    with pytest.raises(ImageReadError, match="not an image Pillow can read.*not read further"):
        images.read_image_file(zeros)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):  # would block forever if read
        images.read_image_file(fifo)


def test_symlinked_folders_followed_once_without_loops(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    outside = tmp_path / "elsewhere"
    for folder, name in ((root / "real", "a.jpg"), (outside, "b.jpg"), (outside / "deeper", "c.jpg")):
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_photo(1, (16, 12))).save(folder / name)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "real" / "up").symlink_to(root, target_is_directory=True)  # a loop: a link to an ancestor
    (root / "again").symlink_to(root / "real", target_is_directory=True)  # a second name for a real folder
    (outside / "back").symlink_to(outside, target_is_directory=True)  # a loop inside the linked folder
    skipped: list[images.SkippedFile] = []
    found = find_images(root, skipped=skipped, follow_links="all")
    assert [p.relative_to(root).as_posix() for p in found] == ["linked/b.jpg", "linked/deeper/c.jpg", "real/a.jpg"]
    reasons = {p.path.relative_to(root).as_posix(): p.reason for p in skipped}
    assert set(reasons) == {"real/up", "again", "linked/back"}
    assert "loop" in reasons["real/up"] and "loop" in reasons["linked/back"]
    assert "already searched" in reasons["again"] and "'real'" in reasons["again"]
    assert find_images(root, follow_links="all") == found  # without a list to fill, the same answer
    # the default follows only links that stay inside the folder: the link out is reported, not followed
    skipped = []
    inside = find_images(root, skipped=skipped)
    assert [p.relative_to(root).as_posix() for p in inside] == ["real/a.jpg"]
    reasons = {p.path.relative_to(root).as_posix(): p.reason for p in skipped}
    assert "outside the dataset folder" in reasons["linked"] and "already searched" in reasons["again"]
    assert find_images(root, follow_links="none") == inside


def test_unreadable_folder_is_reported_not_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "photos"
    for folder in ("a", "locked", "locked/inner", "z"):
        (root / folder).mkdir(parents=True)
        Image.fromarray(make_photo(2, (16, 12))).save(root / folder / "p.jpg")
    locked = root / "locked"
    locked.chmod(0)  # enough for a normal user; root ignores it, so also refuse it below
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    skipped: list[images.SkippedFile] = []
    try:
        with caplog.at_level(logging.WARNING, logger="revsearch.images"):
            found = find_images(root, skipped=skipped)
    finally:
        locked.chmod(0o755)
    assert [p.relative_to(root).as_posix() for p in found] == ["a/p.jpg", "z/p.jpg"]
    assert [s.path for s in skipped] == [locked]
    assert "cannot be read" in skipped[0].reason and "Permission denied" in skipped[0].reason
    assert any(str(locked) in r.getMessage() and "cannot be read" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fmt", [None, "TIFF"])
def test_mode_I_with_8_bit_values_is_not_darkened(fmt: str | None) -> None:
    """A 32-bit integer (mode "I") image holding 0..255 was scaled as 16-bit: nearly black."""
    arr = np.tile(np.array([0, 60, 128, 200, 255], np.int32), (4, 1))
    img = Image.fromarray(arr)
    assert img.mode == "I"
    source = img if fmt is None else _encode(img, fmt)
    if fmt is not None:
        with Image.open(io.BytesIO(source)) as raw:
            assert raw.mode == "I"
    out = np.asarray(load_image(source))
    assert out[0, :, 0].tolist() == [0, 60, 128, 200, 255]
    twelve_bit = Image.fromarray(np.full((2, 2), 4095 * 16, np.int32))  # values above 255: 16-bit scale
    assert abs(int(np.asarray(load_image(twelve_bit))[0, 0, 0]) - 255) <= 1
    wide = Image.fromarray(np.array([[0, 1 << 20]], np.int32))  # beyond 16 bits: scaled by the maximum
    assert np.asarray(load_image(wide))[0, :, 0].tolist() == [0, 255]
