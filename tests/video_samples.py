"""Videos with known content for tests: photos shown at known times, sound at known times.

Tests that check *which* picture is on screen *when* need videos whose cuts they control, so
every maker here returns (or takes) the times. They write with PyAV (libx264 and friends) rather
than cv2.VideoWriter, whose bundled FFmpeg may lack an H.264 encoder; `writer="cv2"` writes
MPEG-4 Part 2 ("mp4v") through OpenCV as the issue's alternative. Real photos come from
`skimage.data` so that shot detection and frame comparison see realistic pictures.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SIZE = (320, 240)

# Fast settings: tests care about content and timing, not compression.
_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast", "tune": "stillimage"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"},
    "libsvtav1": {"preset": "12"},
    "mpeg4": {"qscale": "3"},
}


def photo(name: str) -> Image.Image:
    """One of skimage.data's real photos as an RGB PIL image."""
    import skimage.data

    return Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")


def photos(names: tuple[str, ...] = PHOTOS) -> list[Image.Image]:
    return [photo(n) for n in names]


def letterbox(image: Image.Image, size: tuple[int, int] = SIZE) -> Image.Image:
    """`image` scaled to fit `size`, centred on black (what a player shows)."""
    w, h = size
    f = min(w / image.width, h / image.height)
    inner = image.convert("RGB").resize(
        (max(1, round(image.width * f)), max(1, round(image.height * f))),
        Image.Resampling.LANCZOS,
    )
    out = Image.new("RGB", size)
    out.paste(inner, ((w - inner.width) // 2, (h - inner.height) // 2))
    return out


def photo_video(
    path: Path,
    images: list[Image.Image],
    seconds_each: float,
    fps: int = 10,
    size: tuple[int, int] = SIZE,
    codec: str = "libx264",
    writer: str = "av",
    rotation: int = 0,
    keyframe_every: int = 0,
    tags: dict[str, str] | None = None,
) -> list[tuple[float, float]]:
    """A video showing each image for `seconds_each`; returns each image's (start, end) seconds.

    The container follows the suffix (.mp4, .mkv, .webm, .mov, .avi). Each image holds a whole
    number of frames, so the returned times are exact frame boundaries. `rotation` (degrees,
    counter-clockwise) is written as a display matrix, as phones do for portrait videos.
    `keyframe_every` (frames; 0: the encoder's choice): decoding recovers at each keyframe.
    `tags`: container metadata, as phones write it (creation_time, location, make, model).
    """
    path = Path(path)
    per = max(1, round(seconds_each * fps))
    boxed = [letterbox(im, size) for im in images]
    frames = [(im, per) for im in boxed]
    if writer == "cv2":
        _write_cv2(path, frames, fps, size)
    elif writer == "av":
        with _VideoWriter(path, codec, size, Fraction(1, fps), rate=fps) as out:
            out.container.metadata.update(tags or {})
            if rotation:
                out.stream.set_display_rotation(rotation)
            if keyframe_every:
                out.stream.codec_context.gop_size = keyframe_every
            n = 0
            for im, count in frames:
                for _ in range(count):
                    out.write(im, n)
                    n += 1
    else:
        raise ValueError(f"writer must be 'av' or 'cv2', not {writer!r}")
    return [(i * per / fps, (i + 1) * per / fps) for i in range(len(images))]


def vfr_video(
    path: Path,
    images: list[Image.Image],
    frame_times: list[float],
    size: tuple[int, int] = SIZE,
    codec: str = "libx264",
) -> list[float]:
    """Variable frame rate: frame i (showing images[i % len(images)]) at frame_times[i] seconds.

    Times are written as pts in a 1/1000 s time base, so they come back exactly (to the ms).
    Returns the times as written.
    """
    if sorted(frame_times) != list(frame_times) or len(set(frame_times)) != len(frame_times):
        raise ValueError("frame_times must be strictly increasing")
    boxed = [letterbox(im, size) for im in images]
    written = [round(t * 1000) / 1000 for t in frame_times]
    with _VideoWriter(Path(path), codec, size, Fraction(1, 1000), rate=30) as out:
        for i, t in enumerate(written):
            out.write(boxed[i % len(boxed)], round(t * 1000))
    return written


class _VideoWriter:
    """One video stream written with PyAV; frames carry explicit pts in `time_base`."""

    def __init__(
        self, path: Path, codec: str, size: tuple[int, int], time_base: Fraction, rate: int
    ) -> None:
        import av

        if codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # errors only: its banner floods test output
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=rate, options=_OPTIONS.get(codec, {}))
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = time_base
        self.stream.codec_context.time_base = time_base

    def write(self, image: Image.Image, pts: int) -> None:
        import av

        frame = av.VideoFrame.from_image(image).reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = self.stream.codec_context.time_base
        self.container.mux(self.stream.encode(frame))

    def __enter__(self) -> _VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.container.mux(self.stream.encode(None))
        finally:
            self.container.close()


def _write_cv2(
    path: Path, frames: list[tuple[Image.Image, int]], fps: int, size: tuple[int, int]
) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
    if not out.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write 'mp4v' to {path}")
    try:
        for im, count in frames:
            bgr = np.ascontiguousarray(np.asarray(im)[:, :, ::-1])
            for _ in range(count):
                out.write(bgr)
    finally:
        out.release()


# --- sound ----------------------------------------------------------------------------------


# The ffmpeg command's default -muxdelay 0.7 s: its MPEG-TS files start at 1.4 s, not 0.
MPEG_TS_AS_FFMPEG = {"max_delay": "700000"}


def _add_aac(container: Any, sr: int) -> Any:
    stream = container.add_stream("aac", rate=sr)
    stream.layout = "mono"
    return stream


def _aac_packets(stream: Any, audio: np.ndarray, sr: int) -> list[Any]:
    """All packets of `audio` (mono float) encoded by `stream`, flushed."""
    import av

    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    packets: list[Any] = []
    step = 1024
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = sr
        frame.pts = start
        frame.time_base = Fraction(1, sr)
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets


def mux_audio(
    video: Path,
    audio: np.ndarray,
    sr: int,
    out: Path,
    tags: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """`video`'s picture (copied, not re-encoded) with `audio` (mono float) as an AAC track.

    Sample 0 of `audio` plays at time 0 of the video, so speech placed at t s in the array
    (tests.audio_samples.place) is heard at t s in the video. The container follows the suffix
    (.mp4, .mkv, .ts); `options` are its muxer's (MPEG_TS_AS_FFMPEG for a .ts).
    """
    import av

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as src, av.open(str(out), "w", container_options=options) as dst:
        dst.metadata.update(tags or {})
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = _add_aac(dst, sr)
        for packet in src.demux(vin):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            packet.stream = vout
            dst.mux(packet)
        dst.mux(_aac_packets(aout, audio, sr))
    return out


def late_sound(path: Path, audio: np.ndarray, sr: int, start_s: float) -> Path:
    """An .mkv whose picture starts at 0 and whose sound (mono float `audio`, lossless FLAC)
    starts at `start_s`: sample 0 of `audio` is heard `start_s` into the file.

    The picture makes the lateness real: a file's time 0 is its earliest stream's start, so
    a sound track that is the only stream cannot start late."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
    with av.open(str(path), mode="w") as out:
        picture = out.add_stream("mpeg4", rate=1)
        picture.width, picture.height, picture.pix_fmt = 64, 64, "yuv420p"
        sound = out.add_stream("flac", rate=sr)
        sound.layout = "mono"
        for second in range(int(start_s + pcm.shape[1] / sr) + 1):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = second
            out.mux(picture.encode(frame))
        out.mux(picture.encode(None))
        for i in range(0, pcm.shape[1], 1600):
            frame = av.AudioFrame.from_ndarray(pcm[:, i : i + 1600], format="s16", layout="mono")
            frame.sample_rate = sr
            frame.pts, frame.time_base = round(start_s * sr) + i, Fraction(1, sr)
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return path


def audio_only_mp4(path: Path, audio: np.ndarray, sr: int) -> Path:
    """An .mp4 (or .m4a) holding only an AAC track: a 'video' file with no picture."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as dst:
        stream = _add_aac(dst, sr)
        dst.mux(_aac_packets(stream, audio, sr))
    return path


def truncate(path: Path, keep_fraction: float) -> Path:
    """Cut `path` in place to its first `keep_fraction` of bytes (a download that stopped)."""
    if not 0 <= keep_fraction < 1:
        raise ValueError(f"keep_fraction must be in [0, 1), not {keep_fraction}")
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path
