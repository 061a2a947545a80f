"""Image files -> one 8-bit RGB picture, upright, plus the EXIF facts worth filtering on.

Every encoder downstream wants the same thing: an RGB image the right way up. Photo libraries
deliver CMYK JPEGs from print workflows, 16-bit PNGs, transparent PNGs, animated GIFs, iPhone
HEICs and files that are truncated, mislabelled or hostile (decompression bombs). This module
turns all of that into `DecodedImage` or into `ImageDecodeError`, whose str() is a plain reason
the catalog stores as the file's last error.

Pillow opens files lazily, so the pixel count is checked from the header before any pixel is
decoded; a full `load()` is forced so truncation is found here and not later in a model's batch.
pillow-heif is imported only when a HEIF file is met. This module must not import torch.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmrag.pipelines.base import MediaError, camera_name
from mmrag.pipelines.image.resample import resize_image
from mmrag.store.thumbnails import THUMBNAIL_SIDE

WHITE = (255, 255, 255)
THUMBNAIL_MAX_ASPECT = 4  # a panorama's thumbnail is at most 4 x 256 px long
THUMBNAIL_QUALITY = 85

# ISO BMFF major brands that mean HEIF/HEIC (AVIF is read by Pillow itself).
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_ANIMATED_FORMATS = frozenset({"gif", "webp", "png"})
_FORMAT_NAMES = {"mpo": "jpeg"}  # camera JPEGs with a second (preview/depth) picture

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({_TRANSPOSE[5], _TRANSPOSE[6], _TRANSPOSE[7], _TRANSPOSE[8]})

# EXIF tags (numbers, so a missing name in an old Pillow cannot break us).
_ORIENTATION = 0x0112
_MAKE, _MODEL, _DATETIME = 0x010F, 0x0110, 0x0132
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL, _OFFSET_TIME, _OFFSET_TIME_ORIGINAL = 0x9003, 0x9010, 0x9011
_LENS_MAKE, _LENS_MODEL = 0xA433, 0xA434

_heif_lock = threading.Lock()
_heif_registered = False


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, 8-bit, orientation applied, alpha composited on white
    width: int  # of the original, after orientation (image may be smaller when max_side is set)
    height: int
    format: str  # "jpeg", "png", "webp", "gif", "bmp", "tiff", "heif", ...
    frames: int  # > 1 for animated GIF/WebP/APNG (and multi-page TIFF); the first is used
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-safe; only keys that exist


class ImageDecodeError(MediaError):
    """The file yields no usable image; str() says why in plain words."""


def decode_image(
    path: Path | BinaryIO,
    max_pixels: int = 100_000_000,
    max_side: int | None = None,
    short_side: int | None = None,
) -> DecodedImage:
    """Decode `path` (first frame) into an upright 8-bit RGB image with its EXIF metadata.
    `path` may be a binary file already open (the HTTP API's, checked inside the library): it
    is read from its start and left open.

    Images over `max_pixels` are refused from their header, before pixels are decoded. With
    `max_side`, the returned image's longest side is at most `max_side` (JPEGs decode reduced via
    `draft`, which is much faster for thumbnails and model input). With `short_side` instead, the
    shorter side is reduced to `short_side` (never enlarged): one reduction to what models and
    thumbnails need, rather than one per consumer. `width`/`height` stay those of the original.
    Raises ImageDecodeError for anything undecodable; OSError from opening the file (missing,
    unreadable) propagates.
    """
    for name, side in (("max_side", max_side), ("short_side", short_side)):
        if side is not None and side < 1:
            raise ValueError(f"{name} must be >= 1, not {side}")
    if max_side is not None and short_side is not None:
        raise ValueError("give max_side or short_side, not both")
    if not isinstance(path, str | os.PathLike):
        path.seek(0)
        return _decode_file(
            path, str(getattr(path, "name", "image")), max_pixels, max_side, short_side
        )
    with open(path, "rb") as fp:
        return _decode_file(fp, Path(path).name, max_pixels, max_side, short_side)


def _decode_file(
    fp: BinaryIO, name: str, max_pixels: int, max_side: int | None, short_side: int | None
) -> DecodedImage:
    head = fp.read(64)
    if not head:
        raise ImageDecodeError("empty file (0 bytes)")
    if _is_heif(head):
        _ensure_heif_opener()
    fp.seek(0)
    kind = "image"  # for messages until the format is known
    try:
        im = _open_guarded(fp, max_pixels)
        fmt = _format_name(im)
        kind = fmt.upper()
        return _decode_opened(im, fmt, max_side, short_side)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as e:
        raise ImageDecodeError(f"not a decodable image: cannot identify image file {name!r}") from e
    except Image.DecompressionBombError as e:  # a later frame or a crop over Pillow's limit
        raise ImageDecodeError(f"image too large: {e} (decompression bomb guard)") from e
    except MemoryError as e:
        raise ImageDecodeError(f"out of memory decoding {kind}") from e
    except Exception as e:  # decoders raise anything on hostile input; report, never crash
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower():
            raise ImageDecodeError(f"truncated {kind} ({reason})") from e
        raise ImageDecodeError(f"damaged {kind}: {reason}") from e


def thumbnail(img: DecodedImage | Image.Image, size: int = THUMBNAIL_SIDE) -> bytes:
    """JPEG bytes (quality 85) whose shorter side is `size` and longer side at most
    THUMBNAIL_MAX_ASPECT times that; smaller images are not enlarged."""
    if size < 1:
        raise ValueError(f"thumbnail size must be >= 1, not {size}")
    small = to_rgb(img.image if isinstance(img, DecodedImage) else img)
    w, h = small.size
    f = min(size / min(w, h), THUMBNAIL_MAX_ASPECT * size / max(w, h))
    if f < 1:
        small = resize_image(small, (max(1, round(w * f)), max(1, round(h * f))))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=THUMBNAIL_QUALITY)
    return buf.getvalue()


# --- opening --------------------------------------------------------------------------------


def _is_heif(head: bytes) -> bool:
    """True for ISO BMFF files whose brands say HEIF (not AVIF, which Pillow reads itself)."""
    if head[4:8] != b"ftyp":
        return False
    major = head[8:12]
    if major in _AVIF_BRANDS:
        return False
    box_len = int.from_bytes(head[:4], "big")
    compatible = {head[i : i + 4] for i in range(16, min(box_len, len(head)) - 3, 4)}
    if major in {b"mif1", b"msf1"} and compatible & _AVIF_BRANDS:
        return False
    return major in _HEIF_BRANDS or bool(compatible & (_HEIF_BRANDS - {b"mif1", b"msf1"}))


def _ensure_heif_opener() -> None:
    """Register pillow-heif with Pillow once, on the first HEIF file (it is a heavy import)."""
    global _heif_registered
    if _heif_registered:
        return
    with _heif_lock:
        if _heif_registered:
            return
        try:
            import pillow_heif
        except ImportError as e:
            raise ImageDecodeError("HEIC needs pillow-heif: pip install pillow-heif") from e
        pillow_heif.register_heif_opener()
        _heif_registered = True


def _open_guarded(fp: BinaryIO, max_pixels: int) -> Image.Image:
    """Open lazily and refuse images over `max_pixels` from the header alone.

    Pillow's own guard (Image.MAX_IMAGE_PIXELS, global) fires inside Image.open with no size in
    its message and regardless of our limit; when it does, the header is read again without it so
    the error can name the size, and so a caller's higher `max_pixels` is honoured without
    changing the process-wide setting.
    """
    try:
        im = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        fp.seek(0)
        im = _open_unguarded(fp)
        if im is None:
            raise ImageDecodeError(
                "image too large for Pillow's decompression bomb guard"
            ) from None
    _check_pixels(im.size, max_pixels)
    return im


def _open_unguarded(fp: BinaryIO) -> Image.Image | None:
    """Image.open's format probe without its pixel-count check (we check ourselves)."""
    prefix = fp.read(16)
    Image.init()
    for name in list(Image.ID):
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept else True
        if not verdict or isinstance(verdict, str):
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    return None


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageDecodeError(
            f"image too large: {w}x{h} = {w * h / 1e6:.1f} Mpx, limit {_mpx(max_pixels)} Mpx "
            "(decompression bomb guard)"
        )


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:g}"


def _format_name(im: Image.Image) -> str:
    name = (im.format or "image").lower()
    return _FORMAT_NAMES.get(name, name)


# --- decoding -------------------------------------------------------------------------------


def _decode_opened(
    im: Image.Image, fmt: str, max_side: int | None, short_side: int | None = None
) -> DecodedImage:
    original_mode = im.mode
    frames = int(getattr(im, "n_frames", 1) or 1)
    animated = frames > 1 and fmt in _ANIMATED_FORMATS
    if frames > 1:
        im.seek(0)
    width, height = im.size  # the header's size, before draft reduces it
    if (max_side or short_side) and fmt == "jpeg":
        scale = max(width, height) / max_side if max_side else min(width, height) / short_side
        if scale >= 2:  # draft picks the largest 1/2, 1/4, 1/8 reduction still >= the request
            im.draft(None, (math.ceil(width / scale), math.ceil(height / scale)))
    im.load()  # the whole first frame now: truncation and decoder errors surface here

    meta = _metadata(im)
    meta["mode"] = original_mode
    meta["animated"] = animated
    orientation = _orientation(im)
    if orientation is not None:
        meta["orientation"] = orientation

    rgb = to_rgb(im)
    step = _TRANSPOSE.get(_applied_orientation(im, orientation) or 1)
    if step is not None:
        rgb = rgb.transpose(step)
        if step in _SWAPS_AXES:
            width, height = height, width
    w, h = rgb.size
    if max_side is not None and max(w, h) > max_side:
        f = max_side / max(w, h)
        rgb = resize_image(rgb, (max(1, round(w * f)), max(1, round(h * f))))
    elif short_side is not None and min(w, h) > short_side:
        f = short_side / min(w, h)
        rgb = resize_image(rgb, (max(short_side, round(w * f)), max(short_side, round(h * f))))
    if rgb is im:  # detach from the (closing) file object
        rgb = im.copy()
    return DecodedImage(rgb, width, height, fmt, frames, meta)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB with sensible tone; transparency composited on white."""
    mode = im.mode
    if mode == "RGB":
        if "transparency" in im.info:
            return _on_white(im.convert("RGBA"))
        return im
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return _on_white(im.convert("RGBA"))
    if mode in ("P", "L") and "transparency" in im.info:
        return _on_white(im.convert("RGBA"))
    if mode in ("P", "L", "1", "RGBX", "YCbCr"):
        return im.convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(im), mode)).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise ImageDecodeError(f"unsupported colour mode {mode}") from e


def _on_white(rgba: Image.Image) -> Image.Image:
    out = Image.new("RGB", rgba.size, WHITE)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK via its embedded ICC profile when there is one, else Pillow's plain formula.

    Pillow already undoes Adobe's inverted CMYK when it reads the JPEG.
    """
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            converted = ImageCms.profileToProfile(
                im,
                ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                ImageCms.createProfile("sRGB"),
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
                outputMode="RGB",
            )
            if converted is not None:
                return converted
        except Exception:  # a broken or exotic profile: fall back, never fail the decode
            pass
    return im.convert("RGB")


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer and float pixels -> uint8, scaled (not clipped) to keep the tone.

    16-bit data is divided by 257 (65535 -> 255); 32-bit integers that fit 16 bits are read as
    16-bit; anything else, and floats outside [0, 1], are stretched from their own min..max.
    """
    if mode.startswith("I;16") or (
        mode == "I" and a.size and int(a.min()) >= 0 and int(a.max()) <= 65535
    ):
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((f - lo) * (255.0 / (hi - lo))).astype(np.uint8)


# --- metadata -------------------------------------------------------------------------------


def _exif(im: Image.Image) -> Image.Exif | None:
    try:
        return im.getexif()
    except Exception:  # malformed EXIF never fails the decode
        return None


def _orientation(im: Image.Image) -> int | None:
    """The file's EXIF orientation (for HEIF the value before pillow-heif applied it)."""
    value = im.info.get("original_orientation")
    if value is None:
        exif = _exif(im)
        value = _get(exif, _ORIENTATION) if exif is not None else None
    try:
        value = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if 1 <= value <= 8 else None


def _applied_orientation(im: Image.Image, orientation: int | None) -> int | None:
    """The rotation still to apply: none for HEIF, whose decoder already turned the picture."""
    if "original_orientation" in im.info:
        return None
    return orientation


def _get(mapping: Any, key: int) -> Any:
    try:
        return mapping.get(key)
    except Exception:
        return None


def _ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:
        return {}


def _metadata(im: Image.Image) -> dict[str, Any]:
    """taken_at, camera, lens and gps from EXIF; each field skipped alone when malformed."""
    meta: dict[str, Any] = {}
    exif = _exif(im)
    if exif is None:
        return meta
    sub = _ifd(exif, _EXIF_IFD)
    taken = _parse_datetime(
        _get(sub, _DATETIME_ORIGINAL), _get(sub, _OFFSET_TIME_ORIGINAL)
    ) or _parse_datetime(_get(exif, _DATETIME), _get(sub, _OFFSET_TIME))
    if taken:
        meta["taken_at"] = taken
    camera = camera_name(_text(_get(exif, _MAKE)), _text(_get(exif, _MODEL)))
    if camera:
        meta["camera"] = camera
    lens = _text(_get(sub, _LENS_MODEL)) or _text(_get(sub, _LENS_MAKE))
    if lens:
        meta["lens"] = lens
    gps = _parse_gps(_ifd(exif, _GPS_IFD))
    if gps:
        meta["gps"] = gps
    return meta


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", " ").strip()
    return value or None


_EXIF_DATE = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


def _parse_datetime(value: Any, offset: Any = None) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ OffsetTime) -> ISO-8601; zero or bogus dates -> None."""
    text = _text(value)
    match = _EXIF_DATE.match(text) if text else None
    if not match:
        return None
    try:
        when = datetime(*(int(g) for g in match.groups()))
    except ValueError:  # "0000:00:00 00:00:00" and friends
        return None
    off = _text(offset)
    off_match = _EXIF_OFFSET.fullmatch(off) if off else None
    if off_match:
        sign = -1 if off_match.group(1) == "-" else 1
        delta = timedelta(hours=int(off_match.group(2)), minutes=int(off_match.group(3)))
        if delta < timedelta(hours=24):
            when = when.replace(tzinfo=timezone(sign * delta))
    return when.isoformat()


def _parse_gps(gps: dict[int, Any]) -> dict[str, float] | None:
    """GPS IFD -> {"lat", "lon", "alt"?} in signed decimal degrees / metres.

    (0, 0) is dropped: it is what cameras without a fix write, not a place anyone stood.
    """
    try:
        lat = _degrees(gps.get(2), gps.get(1), "S")
        lon = _degrees(gps.get(4), gps.get(3), "W")
    except Exception:
        return None
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180 or (lat == 0 and lon == 0):
        return None
    out = {"lat": round(lat, 7), "lon": round(lon, 7)}
    try:
        alt = float(gps[6])
        ref = gps.get(5)
        below = ref in (1, b"\x01", "\x01", "1")
        if math.isfinite(alt):
            out["alt"] = round(-alt if below else alt, 2)
    except Exception:
        pass
    return out


def _degrees(value: Any, ref: Any, negative: str) -> float | None:
    if value is None:
        return None
    parts = [float(v) for v in (value if isinstance(value, (tuple, list)) else (value,))]
    if not parts or len(parts) > 3 or not all(math.isfinite(p) for p in parts):
        return None
    deg = sum(p / 60**i for i, p in enumerate(parts))
    ref_text = _text(ref) or ""
    return -deg if ref_text.upper().startswith(negative) else deg
