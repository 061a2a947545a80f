"""Video files -> facts from the headers and a few RGB frames at known times, in bounded memory.

Video moments need pictures at times that agree with the sound track: a frame sampled "at 3 s"
must be the one a player shows at 3 s, also in phone videos with variable frame rate. So times
come from each frame's own pts * time_base, never from frame number / fps. A two-hour film
decodes sequentially, but only the frames picked are converted to RGB and scaled (by FFmpeg's
swscale, straight to the small size), and only one is held at a time.

Decisions:
- Times are seconds from the container's start (its earliest stream, normally 0), the clock the
  sound track is on too. A negative container start (mp4 edit lists) counts as 0.
- A truncated or partly corrupt file yields the frames that decode, then ends with a logged
  warning; a file of which nothing decodes raises `MediaError`. An mp4 cut short before its index
  (moov atom, written last by most muxers) cannot be read at all and says so.
- Frames are turned upright by the display matrix (portrait phone videos) and squeezed to square
  pixels (anamorphic DVDs), as players show them.
- Cover art in audio files (an "attached picture" stream) is not video: an m4a with a cover is
  audio only.
- Every failure is a `MediaError` whose str() is a plain reason naming the file.

av is imported lazily: modules that only want the types need not pay for it.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mmrag.pipelines.av_media import (
    header_duration,
    open_stream,
    reason,
    recorded_facts,
    time_origin,
)
from mmrag.pipelines.base import MediaError

log = logging.getLogger(__name__)

_PROBE_PACKETS = 120  # packets whose pts the frame-rate check looks at
_FIRST_FRAME_PACKETS = 600  # packets probe_video decodes at most looking for a first picture
_VFR_SPREAD = 1.5  # longest / shortest frame interval above this means variable frame rate
_TIME_EPS = 1e-3  # pts rounded to a coarse time base may land just before a multiple
_MAX_BAD_PACKETS_IN_A_ROW = 50  # then the rest of the file is garbage, not one damaged spot
_TRUNCATED_GAP_S = 1.0  # frames ending this long before the header's duration: truncated


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (and whether it has sound)."""

    duration: float  # seconds
    width: int  # as stored; a rotated (portrait phone) video shows height x width
    height: int
    fps: float  # average frame rate
    frames: int  # frame count when the container records it, else 0
    codec: str  # "h264", "hevc", "vp9", "av1", "mpeg4", ...
    container: str
    has_audio: bool
    variable_frame_rate: bool  # best effort, from the first packets' timestamps
    rotation: int = 0  # degrees counter-clockwise the display matrix turns the picture
    facts: dict[str, Any] = field(default_factory=dict)  # recorded when/with what/where


@dataclass(frozen=True)
class Frame:
    """One decoded picture: when it is shown, its number in the stream, and its pixels."""

    time: float  # seconds from the start, from the frame's pts
    index: int  # 0-based position among the decoded frames
    image: Image.Image  # RGB, upright, longest side <= max_side


# --- opening ----------------------------------------------------------------------------------


def _open(path: Path) -> tuple[Any, Any]:
    """The opened container and its first video stream, or a MediaError saying why not."""
    return open_stream(path, "video", _open_failure)


def _open_failure(path: Path, exc: Exception) -> str:
    why = reason(exc)
    if _mp4_without_index(path):
        return (
            f"{path}: truncated or unfinished mp4/mov: its index (moov atom) is missing, so "
            f"nothing can be decoded ({why})"
        )
    return f"{path}: not a readable video file ({why})"


def _mp4_without_index(path: Path) -> bool:
    """An ISO BMFF file (ftyp first) whose top-level boxes hold no moov: cut before its end.

    FFmpeg logs "moov atom not found" but raises only "Invalid data", so the boxes are walked
    here (their headers only) to tell the user what happened.
    """
    with open(path, "rb") as fp:
        size = fp.seek(0, 2)
        offset = 0
        while offset + 8 <= size:
            fp.seek(offset)
            head = fp.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if offset == 0 and kind != b"ftyp":
                return False
            if kind == b"moov":
                return False
            if length == 1 and len(head) == 16:  # 64-bit size follows the type
                length = int.from_bytes(head[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                length = size - offset
            if length < 8:
                break
            offset += length
    return True


def _codec_name(stream: Any) -> str:
    """The format's name ("av1"), not the decoder's ("libdav1d")."""
    codec = stream.codec_context.codec
    return str(getattr(codec, "canonical_name", None) or stream.codec_context.name)


# --- probing ----------------------------------------------------------------------------------


def probe_video(path: Path) -> VideoInfo:
    """Size, rate, duration and codec from the headers, checked by decoding the first frame.

    One frame is decoded so a file whose headers look fine but whose pictures do not decode is
    refused here, not halfway through indexing.
    """
    path = Path(path)
    container, stream = _open(path)
    with container:
        ctx = stream.codec_context
        pts, first, error = _first_frame_and_pts(container, stream)
        if first is None:
            why = f" ({reason(error)})" if error is not None else ""
            raise MediaError(f"{path}: no video frame decodes (truncated or corrupt){why}")
        duration = header_duration(container, stream)
        if duration is None:
            duration = _demuxed_duration(path)
        fps = _rate(stream) or _rate_from_pts(pts)
        return VideoInfo(
            duration=duration,
            width=int(ctx.width or first.width),
            height=int(ctx.height or first.height),
            fps=fps,
            frames=int(stream.frames or 0),
            codec=_codec_name(stream),
            container=container.format.name,
            has_audio=bool(container.streams.audio),
            variable_frame_rate=_looks_variable(pts),
            rotation=round(getattr(first, "rotation", 0) or 0) % 360,
            facts=recorded_facts(container),
        )


def _first_frame_and_pts(container: Any, stream: Any) -> tuple[list[float], Any, Exception | None]:
    """pts (seconds) of the first packets, the first decoded frame (or None), the last error."""
    import av

    pts: list[float] = []
    first = error = None
    packets = container.demux(stream)
    for n in range(_FIRST_FRAME_PACKETS):
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:
            error = exc
            break
        if packet.pts is not None and len(pts) < _PROBE_PACKETS:
            pts.append(float(packet.pts * packet.time_base))
        if first is None:
            try:
                frames = packet.decode()  # the flush packet at the end drains the decoder
            except av.error.FFmpegError as exc:
                error, frames = exc, []
            first = frames[0] if frames else None
        if first is not None and n >= _PROBE_PACKETS:
            break
    return pts, first, error


def _demuxed_duration(path: Path) -> float:
    """End of the last packet, for containers whose headers give no duration (raw streams)."""
    import av

    container, stream = _open(path)
    origin = time_origin(container)
    end = 0.0
    with container:
        try:
            for packet in container.demux(stream):
                if packet.pts is not None:
                    tail = (packet.pts + (packet.duration or 0)) * packet.time_base
                    end = max(end, float(tail) - origin)
        except av.error.FFmpegError:
            pass  # a damaged tail: the duration of what is there
    return end


def _rate(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _rate_from_pts(pts: list[float]) -> float:
    steps = _intervals(pts)
    return 1.0 / (sum(steps) / len(steps)) if steps else 0.0


def _intervals(pts: list[float]) -> list[float]:
    ordered = sorted(set(pts))  # packets come in decode order: B-frames reorder them
    return [b - a for a, b in itertools.pairwise(ordered) if b > a]


def _looks_variable(pts: list[float]) -> bool:
    """Frame intervals that differ by more than half: a phone's or a screen recorder's video."""
    steps = _intervals(pts)
    if len(steps) < 2:
        return False
    return max(steps) > _VFR_SPREAD * min(steps)


# --- decoding ---------------------------------------------------------------------------------


def sample_frames(path: Path, every_s: float = 1.0, max_side: int | None = 512) -> Iterator[Frame]:
    """The first frame at or after each multiple of `every_s` seconds, in order.

    Every frame is decoded (video cannot be decoded otherwise), but only the picked ones are
    converted and scaled, and only one is held at a time. A frame that is the first after several
    multiples (a gap in a variable-frame-rate video) is yielded once. Bad arguments raise at
    once; a bad file raises MediaError on the first `next()`.
    """
    if every_s <= 0:
        raise ValueError(f"every_s must be positive, got {every_s}")
    _check_side(max_side)
    return _picked(Path(path), every_s, max_side)


def _picked(path: Path, every_s: float, max_side: int | None) -> Iterator[Frame]:
    container, stream = _open(path)
    with container:
        yield from _picked_from(path, container, stream, every_s, max_side)


def _picked_from(
    path: Path, container: Any, stream: Any, every_s: float, max_side: int | None
) -> Iterator[Frame]:
    due = 0.0
    last = -math.inf
    for index, t, frame in _decoded(path, container, stream):
        if t >= due - _TIME_EPS:
            yield Frame(t, index, _to_image(frame, stream, max_side))
            due = (math.floor(t / every_s + _TIME_EPS) + 1) * every_s
        last = t
    duration = header_duration(container, stream)
    if duration is not None and last < duration - _TRUNCATED_GAP_S:
        log.warning(
            "%s: frames decode up to %.1f s of %.1f s (truncated?); keeping what decoded",
            path,
            last,
            duration,
        )


def _decoded(path: Path, container: Any, stream: Any) -> Iterator[tuple[int, float, Any]]:
    """(index, seconds, av.VideoFrame) for every frame that decodes.

    A packet that fails to decode is skipped (one damaged spot should not cost the rest of a
    film); many in a row, or a demuxing error (a cut-off file), end the stream.
    """
    import av

    stream.thread_type = "AUTO"
    origin = time_origin(container)
    index = bad = run = 0
    error: Exception | None = None
    packets = container.demux(stream)
    while run < _MAX_BAD_PACKETS_IN_A_ROW:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:  # the container is cut off or broken here
            error, bad = exc, bad + 1
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            error, bad, run = exc, bad + 1, run + 1
            continue
        run = 0
        for frame in frames:
            if frame.pts is not None:
                yield index, float(frame.pts * frame.time_base) - origin, frame
                index += 1
    if index == 0:
        why = f" ({reason(error)})" if error is not None else ""
        raise MediaError(f"{path}: no video frame decodes (truncated or corrupt){why}")
    if error is not None:
        log.warning(
            "%s: %d packets failed to decode (%s); keeping the %d frames that decoded",
            path,
            bad,
            reason(error),
            index,
        )


# --- conversion -------------------------------------------------------------------------------


def _check_side(max_side: int | None) -> None:
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, not {max_side}")


def _to_image(frame: Any, stream: Any, max_side: int | None) -> Image.Image:
    """An av.VideoFrame as an upright RGB PIL image, square pixels, longest side <= max_side.

    Scaling and colour conversion happen in one swscale call on the small size.
    """
    width, height = _display_size(frame.width, frame.height, stream.sample_aspect_ratio)
    if max_side is not None and max(width, height) > max_side:
        f = max_side / max(width, height)
        width, height = max(1, round(width * f)), max(1, round(height * f))
    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
    return _upright(rgb.to_image(), getattr(frame, "rotation", 0) or 0)


def _display_size(width: int, height: int, sar: Any) -> tuple[int, int]:
    """Stored size -> shown size: non-square pixels widen (or narrow) the picture."""
    if not sar or sar == 1:
        return width, height
    return max(1, round(width * float(sar))), height


_ROTATIONS = {
    90: Image.Transpose.ROTATE_90,  # counter-clockwise, like the display matrix
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def _upright(image: Image.Image, rotation: float) -> Image.Image:
    step = _ROTATIONS.get(round(rotation / 90) * 90 % 360)
    return image.transpose(step) if step is not None else image
