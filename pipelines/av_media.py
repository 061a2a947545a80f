"""Opening media files with PyAV, for the audio and the video decoders alike.

Both want the same answers before decoding a frame: is there such a file, is it empty, does
FFmpeg read it, does it hold a stream of the wanted kind, and does this PyAV build have a
decoder for it. Every "no" is a `MediaError` naming the file and the reason. av is imported
lazily.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from mmrag.pipelines.base import MediaError, NoVideoStream, camera_name


def open_stream(
    path: Path, kind: str, unreadable: Callable[[Path, Exception], str] | None = None
) -> tuple[Any, Any]:
    """The opened container and its first `kind` ("audio" or "video") stream. `unreadable`
    words the message when FFmpeg cannot open the file at all."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        message = unreadable(path, exc) if unreadable else None
        raise MediaError(
            message or f"{path}: not a readable audio or video file ({reason(exc)})"
        ) from exc
    streams = [s for s in getattr(container.streams, kind) if not is_cover_art(s)]
    if not streams:
        has_audio = bool(container.streams.audio)
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        if kind == "video" and has_audio:
            raise NoVideoStream(f"{path}: no video stream (audio only)")
        raise MediaError(f"{path}: no {kind} stream (the file has {', '.join(kinds)})")
    stream = streams[0]
    if stream.codec_context is None or not can_decode(stream):
        name = f"'{stream.codec_context.name}'" if stream.codec_context else "(unknown to FFmpeg)"
        container.close()
        raise MediaError(f"{path}: unsupported {kind} codec {name}; this PyAV cannot decode it")
    return container, stream


def is_cover_art(stream: Any) -> bool:
    """An album cover inside an audio file is a one-picture "video" stream: not a video."""
    import av

    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def can_decode(stream: Any) -> bool:
    import av

    try:
        av.codec.Codec(stream.codec_context.name, "r")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def reason(exc: Exception | None) -> str:
    """FFmpeg's own words without the errno and file name it repeats."""
    if exc is None:
        return ""
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__


def header_duration(container: Any, stream: Any) -> float | None:
    """Seconds the headers give: the stream's own, else the container's; None when neither."""
    import av

    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def time_origin(container: Any) -> float:
    """Seconds of the container's start (what a player shows as 0:00), to subtract from every
    stream's times so sound and picture share one clock. Not always 0: an MPEG-TS written by
    ffmpeg starts at 1.4 s. A negative start (mp4 edit lists) counts as 0."""
    import av

    start = container.start_time
    return max(0.0, start / av.time_base) if start is not None else 0.0


def check_length(seconds: float, max_hours: float) -> None:
    """Refuse a recording or video longer than the configured limit (a day-long stream, or a
    header that claims one), before any decoding time is spent on it."""
    if seconds / 3600 > max_hours:
        raise MediaError(f"{seconds / 3600:.1f} hours long, over max_media_hours={max_hours:g}")


# ISO 6709 in decimal degrees, as phones write it: "+48.8584+002.2945+035.000/"
_ISO6709 = re.compile(r"([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)(?:[+-]\d+(?:\.\d+)?)?/?")


def recorded_facts(container: Any) -> dict[str, Any]:
    """When, with what and where a phone or camera recorded the file, from the container's
    tags (MP4/QuickTime as phones write them): the keys of a photo's EXIF meta (taken_at,
    camera, gps), each left out when absent or bogus."""
    tags = {str(k).lower(): str(v).strip() for k, v in (container.metadata or {}).items()}
    facts: dict[str, Any] = {}
    keys = ("com.apple.quicktime.creationdate", "creation_time", "date")
    if when := next(filter(None, (_when(tags.get(k)) for k in keys)), None):
        facts["taken_at"] = when

    def first(*keys: str) -> str | None:
        return next((tags[k] for k in keys if tags.get(k)), None)

    camera = camera_name(
        first("com.apple.quicktime.make", "make", "com.android.manufacturer"),
        first("com.apple.quicktime.model", "model", "com.android.model"),
    )
    if camera:
        facts["camera"] = camera
    match = _ISO6709.fullmatch(first("com.apple.quicktime.location.iso6709", "location") or "")
    if match:
        lat, lon = float(match.group(1)), float(match.group(2))
        if abs(lat) <= 90 and abs(lon) <= 180 and (lat, lon) != (0.0, 0.0):
            facts["gps"] = {"lat": round(lat, 6), "lon": round(lon, 6)}
    return facts


def _when(value: str | None) -> str | None:
    """An ISO-8601 time (phones: "2024-05-01T12:00:00+0200", muxers: "...000000Z"); the zero
    dates muxers write for "unknown" (1904, 1970) are dropped."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.isoformat(timespec="seconds") if when.year > 1970 else None
