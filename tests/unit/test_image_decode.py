"""Image decoding on real files written to tmp_path: formats, orientation, modes, EXIF, failures.

Photos come from scikit-image's bundled samples (offline); awkward files (CMYK, 16-bit, bombs,
truncated) are made here the way cameras, print workflows and attackers make them.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin
from PIL.TiffImagePlugin import IFDRational
from skimage import data as skdata

from mmrag.pipelines.image import decode as image_decode
from mmrag.pipelines.image.decode import (
    DecodedImage,
    ImageDecodeError,
    decode_image,
    thumbnail,
)
from mmrag.store.thumbnails import (
    ensure_thumbnail,
    held_thumbnails,
    thumbnail_file,
    thumbnail_path,
    thumbnail_store,
)

RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255,) * 3


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    """The cat photo, 451x300 RGB: a real photo with texture, not flat test colours."""
    return Image.fromarray(skdata.chelsea())


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def _mean_error(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(_pixels(a) - _pixels(b)).mean())


def _close(pixel: tuple[int, ...], colour: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(p - c) <= tol for p, c in zip(pixel, colour, strict=True))


def _quadrants(w: int = 60, h: int = 40) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    im = Image.new("RGB", (w, h))
    im.paste(RED, (0, 0, w // 2, h // 2))
    im.paste(GREEN, (w // 2, 0, w, h // 2))
    im.paste(BLUE, (0, h // 2, w // 2, h))
    im.paste(YELLOW, (w // 2, h // 2, w, h))
    return im


# --- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix", "save_args", "tol"),
    [
        ("jpeg", ".jpg", {"quality": 92}, 6.0),
        ("png", ".png", {}, 0.0),
        ("webp", ".webp", {"lossless": True}, 0.0),
        ("bmp", ".bmp", {}, 0.0),
        ("tiff", ".tif", {"compression": "tiff_lzw"}, 0.0),
        ("gif", ".gif", {}, 12.0),  # 256-colour palette
    ],
)
def test_formats_decode_to_rgb(
    tmp_path: Path,
    chelsea: Image.Image,
    fmt: str,
    suffix: str,
    save_args: dict[str, object],
    tol: float,
) -> None:
    path = tmp_path / f"cat{suffix}"
    chelsea.save(path, **save_args)
    got = decode_image(path)
    assert got.format == fmt
    assert (got.width, got.height) == (451, 300) == got.image.size
    assert got.image.mode == "RGB"
    assert got.frames == 1
    assert _mean_error(got.image, chelsea) <= tol


def test_heic_round_trip(tmp_path: Path, chelsea: Image.Image) -> None:
    import pillow_heif

    path = tmp_path / "cat.heic"
    pillow_heif.from_pillow(chelsea).save(path, quality=90)
    got = decode_image(path)
    assert got.format == "heif"
    assert got.image.size == (451, 300)
    assert _mean_error(got.image, chelsea) < 8


def test_heic_with_orientation_is_rotated_once(tmp_path: Path, chelsea: Image.Image) -> None:
    """pillow-heif turns the picture itself; turning it again would put the cat on its side."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.heic"
    image_decode._ensure_heif_opener()
    chelsea.save(path, exif=exif.tobytes(), quality=90)
    got = decode_image(path)
    assert (got.width, got.height) == (300, 451) == got.image.size
    assert got.meta["orientation"] == 6


def test_heic_without_pillow_heif_says_how_to_get_it(
    tmp_path: Path, chelsea: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pillow_heif

    path = tmp_path / "cat.heic"
    pillow_heif.from_pillow(chelsea).save(path)
    monkeypatch.setattr(image_decode, "_heif_registered", False)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import now raises ImportError
    with pytest.raises(ImageDecodeError, match=r"HEIC needs pillow-heif: pip install pillow-heif"):
        decode_image(path)


def test_does_not_import_torch() -> None:
    code = "import sys, mmrag.pipelines.image.decode; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- orientation and EXIF -------------------------------------------------------------------


def test_exif_orientation_6_is_applied(tmp_path: Path, chelsea: Image.Image) -> None:
    """Orientation 6: the stored picture is turned 90° clockwise to be shown upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    _quadrants().save(path, exif=exif.tobytes(), quality=95)
    got = decode_image(path)
    assert (got.width, got.height) == (40, 60) == got.image.size
    assert got.meta["orientation"] == 6
    # After a clockwise quarter turn the stored bottom-left (blue) is shown top-left and the
    # stored top-left (red) top-right.
    assert _close(got.image.getpixel((2, 2)), BLUE)
    assert _close(got.image.getpixel((37, 2)), RED)
    assert _close(got.image.getpixel((37, 57)), GREEN)

    photo = tmp_path / "cat6.jpg"
    chelsea.save(photo, exif=exif.tobytes(), quality=95)
    upright = chelsea.transpose(Image.Transpose.ROTATE_270)
    assert _mean_error(decode_image(photo).image, upright) < 4


def _gps_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif[0x0132] = "2022:01:01 00:00:00"  # DateTime (file change), must lose to DateTimeOriginal
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2021:07:14 15:30:45"
    sub[0x9011] = "+10:00"
    sub[0xA434] = "RF24-105mm F4 L IS USM"
    gps = exif.get_ifd(0x8825)  # Sydney Opera House: 33°51'24.48"S 151°12'55.08"E, 4.5 m
    gps[1] = "S"
    gps[2] = (IFDRational(33), IFDRational(51), IFDRational(2448, 100))
    gps[3] = "E"
    gps[4] = (IFDRational(151), IFDRational(12), IFDRational(5508, 100))
    gps[5] = b"\x00"
    gps[6] = IFDRational(45, 10)
    return exif


def test_exif_date_camera_lens_and_gps(tmp_path: Path, chelsea: Image.Image) -> None:
    path = tmp_path / "trip.jpg"
    chelsea.save(path, exif=_gps_exif().tobytes())
    meta = decode_image(path).meta
    assert meta["taken_at"] == "2021-07-14T15:30:45+10:00"
    assert meta["camera"] == "Canon EOS R5"
    assert meta["lens"] == "RF24-105mm F4 L IS USM"
    assert meta["gps"]["lat"] == pytest.approx(-33.8568, abs=1e-4)
    assert meta["gps"]["lon"] == pytest.approx(151.2153, abs=1e-4)
    assert meta["gps"]["alt"] == pytest.approx(4.5)
    assert meta["mode"] == "RGB"
    assert meta["animated"] is False
    assert json.loads(json.dumps(meta)) == meta


def test_exif_date_falls_back_to_datetime_and_camera_joins_make(
    tmp_path: Path, chelsea: Image.Image
) -> None:
    exif = Image.Exif()
    exif[0x010F] = "NIKON CORPORATION"
    exif[0x0110] = "D750"
    exif[0x0132] = "2019:03:04 05:06:07"
    path = tmp_path / "nikon.png"
    chelsea.save(path, exif=exif.tobytes())
    meta = decode_image(path).meta
    assert meta["taken_at"] == "2019-03-04T05:06:07"
    assert meta["camera"] == "NIKON CORPORATION D750"
    assert "gps" not in meta
    assert "orientation" not in meta


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_malformed_exif_never_fails_the_decode(tmp_path: Path, chelsea: Image.Image) -> None:
    """IFD offsets pointing past the end and a zero date: fields skipped, picture kept."""
    exif = Image.Exif()
    exif[0x0132] = "0000:00:00 00:00:00"
    exif[0x0112] = 99
    broken = bytearray(exif.tobytes())
    broken += struct.pack(">HHII", 0x8825, 4, 1, 0x7FFFFFF0)  # junk after the IFD
    bad_gps = _gps_exif()
    bad_gps.get_ifd(0x8825)[2] = (IFDRational(1, 0), IFDRational(0), IFDRational(0))
    blobs = [bytes(broken), b"Exif\x00\x00MM\x00*\xff\xff\xff\xff", bad_gps.tobytes()]
    metas = []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"bad{i}.jpg"
        chelsea.save(path, exif=blob)
        got = decode_image(path)
        assert got.image.size == (451, 300)
        assert _mean_error(got.image, chelsea) < 8
        json.dumps(got.meta)
        metas.append(got.meta)
    assert set(metas[0]) == set(metas[1]) == {"mode", "animated"}
    assert "gps" not in metas[2]
    assert metas[2]["camera"] == "Canon EOS R5"  # the sound fields of the same EXIF are kept


# --- colour modes ---------------------------------------------------------------------------


def test_cmyk_jpeg_has_the_right_colours(tmp_path: Path, chelsea: Image.Image) -> None:
    """Pillow writes Adobe (inverted) CMYK JPEGs, as print workflows do; colours must survive."""
    path = tmp_path / "print.jpg"
    chelsea.convert("CMYK").save(path, quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
        assert "adobe" in raw.info
    got = decode_image(path)
    assert got.image.mode == "RGB"
    assert got.meta["mode"] == "CMYK"
    assert _mean_error(got.image, chelsea) < 6

    blocks = tmp_path / "blocks.jpg"
    _quadrants().convert("CMYK").save(blocks, quality=95)
    img = decode_image(blocks).image
    assert _close(img.getpixel((5, 5)), RED)
    assert _close(img.getpixel((55, 35)), YELLOW)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("I;16", ".png"), ("I;16B", ".tif"), ("I", ".tif"), ("F", ".tif")],
)
def test_high_bit_depth_is_scaled_not_clipped(tmp_path: Path, mode: str, suffix: str) -> None:
    ramp = np.tile(np.linspace(0, 65535, 512), (16, 1))
    if mode == "I;16":
        im = Image.fromarray(ramp.astype(np.uint16))
    elif mode == "I;16B":
        im = Image.frombytes(mode, (512, 16), ramp.astype(">u2").tobytes())
    elif mode == "I":
        im = Image.fromarray(ramp.astype(np.int32))
    else:
        im = Image.fromarray((ramp / 65535).astype(np.float32))
    path = tmp_path / f"ramp{suffix}"
    im.save(path)
    with Image.open(path) as raw:
        assert raw.mode == mode
    got = decode_image(path)
    row = np.asarray(got.image)[8, :, 0].astype(int)
    assert got.image.mode == "RGB"
    assert row.min() <= 1
    assert row.max() >= 254
    assert np.all(np.diff(row) >= 0)  # still a ramp
    assert 120 <= row[256] <= 135  # mid-grey in the middle, not clipped to white
    assert len(np.unique(row)) > 200


def _half_transparent(chelsea: Image.Image, mode: str) -> Image.Image:
    rgba = chelsea.convert("RGBA")
    alpha = Image.new("L", chelsea.size, 255)
    alpha.paste(0, (0, 0, 200, 300))  # left part fully transparent
    rgba.putalpha(alpha)
    return rgba if mode == "RGBA" else rgba.convert(mode)


@pytest.mark.parametrize(("mode", "suffix"), [("RGBA", ".png"), ("LA", ".png"), ("RGBA", ".webp")])
def test_transparent_areas_become_white(
    tmp_path: Path, chelsea: Image.Image, mode: str, suffix: str
) -> None:
    path = tmp_path / f"alpha{suffix}"
    _half_transparent(chelsea, mode).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    got = decode_image(path)
    px = np.asarray(got.image)
    assert got.meta["mode"] == mode
    assert np.all(px[:, :200] == 255)
    expected = _pixels(chelsea if mode == "RGBA" else chelsea.convert("L"))[:, 200:]
    assert np.abs(px[:, 200:].astype(int) - expected).mean() < 1


def test_palette_transparency_becomes_white(tmp_path: Path) -> None:
    im = Image.new("P", (20, 10), 0)
    im.putpalette([0, 0, 0, *RED, *([0] * 762)])
    im.paste(1, (10, 0, 20, 10))
    path = tmp_path / "sprite.png"
    im.save(path, transparency=0)
    got = decode_image(path).image
    assert got.getpixel((2, 2)) == WHITE
    assert got.getpixel((15, 5)) == RED


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_animation_uses_first_frame(tmp_path: Path, suffix: str) -> None:
    frames = [Image.new("RGB", (32, 24), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim{suffix}"
    extra = {"lossless": True} if suffix == ".webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)
    got = decode_image(path)
    assert got.frames == 3
    assert got.meta["animated"] is True
    assert _close(got.image.getpixel((16, 12)), RED, tol=8)


def test_bilevel_and_grey(tmp_path: Path, chelsea: Image.Image) -> None:
    for mode in ("1", "L"):
        path = tmp_path / f"{mode}.png"
        chelsea.convert(mode).save(path)
        got = decode_image(path)
        assert got.image.mode == "RGB"
        assert got.meta["mode"] == mode
        assert _mean_error(got.image, chelsea.convert(mode)) == 0


# --- bad files ------------------------------------------------------------------------------


def test_truncated_jpeg_is_reported(tmp_path: Path, chelsea: Image.Image) -> None:
    whole = tmp_path / "whole.jpg"
    chelsea.save(whole, quality=90)
    blob = whole.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(blob[: int(len(blob) * 0.6)])
    with pytest.raises(ImageDecodeError, match=r"^truncated JPEG \(.*truncated"):
        decode_image(cut)


def test_truncated_png_is_reported(tmp_path: Path, chelsea: Image.Image) -> None:
    whole = tmp_path / "whole.png"
    chelsea.save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:-5000])
    with pytest.raises(ImageDecodeError, match=r"^truncated PNG"):
        decode_image(cut)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"^empty file \(0 bytes\)$"):
        decode_image(path)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n" * 20)
    with pytest.raises(ImageDecodeError, match=r"^not a decodable image: .*notes\.jpg"):
        decode_image(path)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "gone.jpg")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bomb(path: Path, side: int = 20000) -> None:
    """A real, valid 1-bit PNG of side x side black pixels: ~50 KB on disk, 400 Mpx decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 1000) for _ in range(side // 1000)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    _png_bomb(path)
    assert path.stat().st_size < 100_000
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(path)
    assert time.perf_counter() - start < 1.0
    assert str(caught.value) == (
        "image too large: 20000x20000 = 400.0 Mpx, limit 100 Mpx (decompression bomb guard)"
    )


def test_own_pixel_limit_is_checked_before_decoding(
    tmp_path: Path, chelsea: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cat.png"
    chelsea.save(path)
    loads: list[object] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    with pytest.raises(ImageDecodeError, match=r"451x300 = 0\.1 Mpx, limit 0\.1 Mpx"):
        decode_image(path, max_pixels=100_000)
    assert loads == []


def test_higher_limit_than_pillows_own_guard_is_honoured(
    tmp_path: Path, chelsea: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow's guard is process-wide; ours is per call and must win without touching Pillow's."""
    path = tmp_path / "cat.png"
    chelsea.save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow errors above 2x this
    got = decode_image(path)
    assert got.image.size == (451, 300)
    assert _mean_error(got.image, chelsea) == 0
    assert Image.MAX_IMAGE_PIXELS == 10_000


def test_pillow_bomb_warning_as_error_does_not_override_our_limit(
    tmp_path: Path, chelsea: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where warnings are errors, Pillow's DecompressionBombWarning raises inside Image.open."""
    path = tmp_path / "cat.png"
    chelsea.save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 135,300 px: a warning, not an error
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert decode_image(path).image.size == (451, 300)
        with pytest.raises(ImageDecodeError, match=r"^image too large: 451x300"):
            decode_image(path, max_pixels=100_000)


# --- reduced decode and thumbnails ----------------------------------------------------------


def test_max_side_decodes_large_jpeg_reduced(tmp_path: Path, chelsea: Image.Image) -> None:
    big = chelsea.resize((3608, 2400), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    drafts: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int]) -> object:
        drafts.append(size or (0, 0))
        return real_draft(self, mode, size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
        got = decode_image(path, max_side=300)
    assert drafts, "JPEG was not decoded reduced"
    assert (got.width, got.height) == (3608, 2400)
    assert max(got.image.size) == 300
    assert _mean_error(got.image, chelsea.resize(got.image.size)) < 8

    png = tmp_path / "big.png"
    chelsea.save(png)
    small = decode_image(png, max_side=100)
    assert max(small.image.size) == 100
    assert (small.width, small.height) == (451, 300)


def test_short_side_reduces_once_to_what_the_models_need(
    tmp_path: Path, chelsea: Image.Image
) -> None:
    big = chelsea.resize((1804, 1200), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    got = decode_image(path, short_side=256)
    assert got.image.size == (385, 256)  # shorter side exactly 256, aspect kept
    assert (got.width, got.height) == (1804, 1200)
    assert _mean_error(got.image, chelsea.resize(got.image.size)) < 8
    small = tmp_path / "small.png"
    chelsea.resize((200, 133)).save(small)
    assert decode_image(small, short_side=256).image.size == (200, 133)  # never enlarged
    with pytest.raises(ValueError, match="not both"):
        decode_image(path, max_side=300, short_side=256)


def test_thumbnail_is_a_jpeg_with_shorter_side_256(tmp_path: Path, chelsea: Image.Image) -> None:
    path = tmp_path / "cat.png"
    chelsea.save(path)
    blob = thumbnail(decode_image(path))
    assert blob[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(blob)) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (385, 256)  # 451 x 300: fills a 256 px square cell
        assert _mean_error(thumb, chelsea.resize(thumb.size)) < 10
    # already that size (as the pipeline decodes photos): the pixels as they are, no resize
    decoded = decode_image(path, short_side=256)
    with Image.open(io.BytesIO(thumbnail(decoded))) as thumb:
        assert thumb.size == decoded.image.size == (385, 256)
    # a panorama: at most 4 x 256 long; a small image: never enlarged
    for size, want in (((3000, 300), (1024, 102)), ((120, 90), (120, 90))):
        small = DecodedImage(Image.new("RGB", size, BLUE), *size, "png", 1, {})
        with Image.open(io.BytesIO(thumbnail(small))) as thumb:
            assert thumb.size == want


def _decoded(chelsea: Image.Image) -> DecodedImage:
    return DecodedImage(chelsea, 451, 300, "png", 1, {})


def test_thumbnail_path_shards_by_media_id(tmp_path: Path) -> None:
    assert thumbnail_path(tmp_path, "ab12cd") == tmp_path / "ab" / "ab12cd_256.jpg"
    assert thumbnail_path(tmp_path, "ab12cd", 512).name == "ab12cd_512.jpg"
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            thumbnail_path(tmp_path, bad)


def test_ensure_thumbnail_stores_once_and_a_shown_one_becomes_a_file(
    tmp_path: Path, chelsea: Image.Image
) -> None:
    media_id = "9f86d081884c7d65"
    ensure_thumbnail(tmp_path, media_id, lambda: thumbnail(_decoded(chelsea)))
    assert thumbnail_store(tmp_path).entries() == [(media_id, 256)]
    assert not (tmp_path / "9f").exists()  # a file only when shown
    made = []
    ensure_thumbnail(tmp_path, media_id, lambda: made.append(1) or b"other")
    assert made == []  # the first one made for a content stays
    first = thumbnail_file(tmp_path, media_id)
    assert first == tmp_path / "9f" / f"{media_id}_256.jpg"
    with Image.open(first) as thumb:
        assert min(thumb.size) == 256
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))  # an old mtime a rewrite would change
    assert thumbnail_file(tmp_path, media_id) == first
    assert first.stat().st_mtime_ns == 1_000_000_000
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp files left
    assert thumbnail_file(tmp_path, "0123456789abcdef") is None  # none stored


def test_held_thumbnails_stay_out_of_the_cache_until_stored_together(
    tmp_path: Path, chelsea: Image.Image
) -> None:
    """A Ray worker's thumbnails come back with its file; the driver stores them in one go."""
    with held_thumbnails() as held:
        ensure_thumbnail(tmp_path / "worker", "cafe01", lambda: thumbnail(_decoded(chelsea)))
        ensure_thumbnail(tmp_path / "worker", "cafe01", lambda: b"a second one")
        ensure_thumbnail(tmp_path / "worker", "cafe02", lambda: b"\xff\xd8 page", size=512)
        with pytest.raises(RuntimeError, match="already held"), held_thumbnails():
            pass
    assert not (tmp_path / "worker").exists()  # nothing written where the worker runs
    assert sorted(held) == [("cafe01", 256), ("cafe02", 512)]
    assert held["cafe01", 256][:2] == b"\xff\xd8"  # the first one made stays

    store = thumbnail_store(tmp_path / "driver")
    store.put("cafe01", b"\xff\xd8 made before")
    store.put_many(held)
    assert store.entries() == [("cafe01", 256), ("cafe02", 512)]
    assert store.get("cafe01") == b"\xff\xd8 made before"  # what the cache had stays
    assert store.get("cafe02", 512) == b"\xff\xd8 page"
    with pytest.raises(ValueError, match="not a plain hash"):
        store.put_many({("ok1", 256): b"\xff\xd8", ("../etc", 256): b"\xff\xd8"})
    with pytest.raises(ValueError, match="'ok2' is empty"):
        store.put_many({("ok2", 256): b""})
    assert store.count() == 2  # a refused batch stores none of its thumbnails
    ensure_thumbnail(tmp_path / "driver", "cafe03", lambda: b"\xff\xd8")  # not held any more
    assert store.count() == 3


def test_a_shown_thumbnail_replaces_an_empty_file(tmp_path: Path, chelsea: Image.Image) -> None:
    ensure_thumbnail(tmp_path, "deadbeef", lambda: thumbnail(_decoded(chelsea)))
    target = thumbnail_path(tmp_path, "deadbeef")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")  # what a crash before the data reached the disk leaves
    assert thumbnail_file(tmp_path, "deadbeef") == target
    assert target.read_bytes()[:2] == b"\xff\xd8"


def test_a_thumbnail_file_from_an_older_cache_is_used_as_it_is(tmp_path: Path) -> None:
    target = thumbnail_path(tmp_path, "cafe0123")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\xff\xd8 older")
    assert thumbnail_file(tmp_path, "cafe0123") == target  # no SQLite file at all


def test_an_unreadable_thumbnail_cache_is_named(tmp_path: Path) -> None:
    (tmp_path / "thumbnails.sqlite").write_bytes(b"not a database, " * 100)
    with pytest.raises(ValueError, match=r"thumbnail cache .*thumbnails.sqlite is unreadable"):
        ensure_thumbnail(tmp_path, "deadbeef", lambda: b"\xff\xd8")
    assert thumbnail_file(tmp_path, "deadbeef") is None  # a search shows the hit without one
    with pytest.raises(ValueError, match="not a plain hash"):
        thumbnail_store(tmp_path.parent / "fresh").put("../etc", b"\xff\xd8")
