"""Audio and video files -> mono float32 samples at the rate a model wants, in bounded blocks.

Every audio model downstream wants the same thing: mono float samples at its own rate. A media
library holds wav, flac, ogg/opus, mp3, m4a/aac and the sound track of mp4/mkv/webm videos, some
hours long and some truncated. PyAV decodes all of them without the ffmpeg command, and its
resampler turns any layout and rate into mono float32 as frames arrive, so a two-hour file costs
one block of memory, not two hours of it.

Decisions:
- A truncated or partly corrupt file yields what decodes and ends, and says so
  (`media_warning`: the ingest summary and `status` list it with what was kept); a file of which
  nothing decodes raises `MediaError`. Losing the tail of a damaged recording beats losing it all.
- Times are seconds from the container's start (what a player shows as 0:00, the clock video
  frames are on too; an MPEG-TS starts at 1.4 s, not 0), then of decoded audio. A stream that
  starts late (a video whose sound begins after 0.1 s) has that start added; the 20-50 ms that
  mp3, aac and opus skip as encoder priming count as 0, and gaps inside a stream are not added.
- Mono is FFmpeg's downmix (what faster-whisper's decoding does too): channels are added at
  -3 dB each, so two equal channels come out 3 dB louder than either. Float samples cannot clip.
- Every failure is a `MediaError` whose str() is a plain reason naming the file.

av is imported lazily: modules that only want `rms_dbfs` or the types need not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.pipelines.av_media import (
    header_duration,
    open_stream,
    reason,
    recorded_facts,
    time_origin,
)
from mmrag.pipelines.base import MediaError, media_warning

SILENCE_DBFS = -60.0
_FLOOR_DBFS = -200.0  # rms_dbfs of digital silence: finite, so it can be stored and compared
# mp3/aac/opus streams start 20-50 ms late (encoder priming skipped): that is still time 0.
_PRIMING_S = 0.1


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about its first audio stream."""

    duration: float  # seconds
    sample_rate: int
    channels: int
    codec: str
    container: str
    facts: dict[str, Any] = field(default_factory=dict)  # recorded when/with what/where


# --- probing ----------------------------------------------------------------------------------


def probe_audio(path: Path) -> AudioInfo:
    """Duration, rate, channels and codec from the headers (decodes only when they lack one)."""
    container, stream = open_stream(path, "audio")
    with container:
        ctx = stream.codec_context
        duration = header_duration(container, stream)
        info = AudioInfo(
            duration=duration if duration is not None else -1.0,
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            codec=ctx.name,
            container=container.format.name,
            facts=recorded_facts(container),
        )
    if info.duration >= 0:
        return info
    samples = sum(len(b) for b in stream_audio(path, info.sample_rate or 16000))
    return replace(info, duration=samples / (info.sample_rate or 16000))


# --- decoding ---------------------------------------------------------------------------------


def stream_audio(path: Path, sample_rate: int, block_s: float = 30.0) -> Iterator[np.ndarray]:
    """Mono float32 blocks of `block_s` seconds at `sample_rate` (the last one shorter).

    Memory is bounded by one block plus one decoded frame, however long the file is.
    """
    for _, block in timed_blocks(path, sample_rate, block_s):
        yield block


def timed_blocks(
    path: Path, sample_rate: int, block_s: float
) -> Iterator[tuple[float, np.ndarray]]:
    """(when the stream starts, block) pairs: the start (the same in every pair) is where
    sample 0 plays in the file, so times of a sound track that begins late stay right."""
    if block_s <= 0 or sample_rate <= 0:
        raise ValueError(f"block_s and sample_rate must be positive, got {block_s}, {sample_rate}")
    size = max(1, round(block_s * sample_rate))
    pending: list[np.ndarray] = []
    held = 0
    offset: float | None = None
    for start, chunk in _decoded_chunks(Path(path), sample_rate):
        offset = start if offset is None else offset
        pending.append(chunk)
        held += len(chunk)
        while held >= size:
            joined = np.concatenate(pending)
            yield offset, joined[:size]
            rest = joined[size:]
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield offset or 0.0, np.concatenate(pending)


def _decoded_chunks(path: Path, sample_rate: int) -> Iterator[tuple[float, np.ndarray]]:
    """(start seconds, mono float32 samples) per decoded frame; truncation ends the stream."""
    import av

    container, stream = open_stream(path, "audio")
    resampler = _Resampler(sample_rate)
    decoded = 0
    start = 0.0
    stopped = ""  # why decoding stopped before the end, if it did
    origin = time_origin(container)
    with container:
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if decoded == 0 and frame.time is not None:
                        late = float(frame.time) - origin  # the container's start is 0:00
                        if late >= _PRIMING_S:
                            start = late
                    samples = resampler.push(frame)
                    decoded += len(samples)
                    if len(samples):
                        yield start, samples
        except av.error.FFmpegError as exc:
            if decoded == 0:
                why = reason(exc)
                raise MediaError(f"{path}: corrupt audio, nothing decodes ({why})") from exc
            stopped = reason(exc)
        tail = resampler.flush()
        decoded += len(tail)
        if len(tail):
            yield start, tail
        if decoded:
            end, promised = start + decoded / sample_rate, header_duration(container, stream)
            if stopped:
                of = f" of {_clock(promised)}" if promised and promised > end else ""
                media_warning(
                    f"damaged: decoding stopped at {_clock(end)}{of} ({stopped}); "
                    f"kept {_clock(end)}"
                )
            elif why := ends_early(path, end, promised):
                media_warning(why)
    if decoded == 0:
        raise MediaError(f"{path}: no audio decodes from the file (truncated or corrupt)")


# --- files that end early ---------------------------------------------------------------------

EARLY_S = 1.0  # a recording that ends this much (or 2%) before its header says ends early
_TAIL_BYTES = 1 << 16


def ends_early(path: Path, decoded_s: float, promised_s: float | None) -> str | None:
    """Why a decoded recording is shorter than the file says it is, or None.

    Containers that state their length (FLAC, MP4/M4A, MP3 with a Xing header) are compared
    with what decoded. Where FFmpeg takes the length from what is there instead, the file's own
    structure tells: a WAV's data chunk promises more bytes than the file holds, an Ogg stream's
    last page lacks its end-of-stream mark."""
    kept = f"kept {_clock(decoded_s)}"
    if promised_s and decoded_s < promised_s - max(EARLY_S, 0.02 * promised_s):
        return f"truncated: ends at {_clock(decoded_s)} of {_clock(promised_s)}; {kept}"
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            size = f.seek(0, 2)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        missing = _wav_missing_bytes(head, size)
        if missing:
            return f"truncated WAV: {missing:,} bytes of its sound data are missing; {kept}"
    elif head[:4] == b"OggS":
        last = tail.rfind(b"OggS")
        if last >= 0 and len(tail) > last + 5 and not tail[last + 5] & 0x04:
            return f"truncated Ogg: the stream has no end (its last page is cut); {kept}"
    return None


def _wav_missing_bytes(head: bytes, size: int) -> int:
    """Bytes a WAV's data chunk promises beyond the end of the file (0: none, or unknown)."""
    at = 12
    while at + 8 <= len(head):
        chunk, length = head[at : at + 4], int.from_bytes(head[at + 4 : at + 8], "little")
        if chunk == b"data":
            if length in (0, 0xFFFFFFFF):  # a stream written without knowing its length
                return 0
            return max(0, at + 8 + length - size)
        at += 8 + length + (length & 1)
    return 0


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{s:04.1f}"


class _Resampler:
    """av.AudioResampler to mono float32, rebuilt when a stream changes rate or layout midway."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.inner: Any = None
        self.source: tuple[Any, ...] | None = None

    def push(self, frame: Any) -> np.ndarray:
        import av

        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        out: list[np.ndarray] = []
        if self.inner is None or source != self.source:
            out.append(self.flush())
            self.inner = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
            self.source = source
        frame.pts = None  # the resampler wants monotonic pts; ours come from sample counts
        out.extend(_samples(f) for f in self.inner.resample(frame))
        return _join(out)

    def flush(self) -> np.ndarray:
        if self.inner is None:
            return np.zeros(0, dtype=np.float32)
        chunks = [_samples(f) for f in self.inner.resample(None)]
        self.inner = None
        return _join(chunks)


def _samples(frame: Any) -> np.ndarray:
    return frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)


def _join(chunks: list[np.ndarray]) -> np.ndarray:
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


# --- windows and short clips ------------------------------------------------------------------


def iter_windows(
    path: Path,
    sample_rate: int,
    window_s: float,
    hop_s: float,
    min_window_s: float = 1.0,
) -> Iterator[tuple[float, float, np.ndarray]]:
    """(start_s, end_s, samples) windows of `window_s` every `hop_s`, in order.

    The tail (audio after the last full window's hop) becomes one shorter window when it holds
    samples no earlier window covered and is at least `min_window_s` long. A whole file shorter
    than one window yields one window of its length when that is at least `min_window_s`.
    """
    if not 0 < hop_s <= window_s:
        raise ValueError(f"need 0 < hop_s <= window_s, got hop {hop_s}, window {window_s}")
    win = max(1, round(window_s * sample_rate))
    hop = max(1, round(hop_s * sample_rate))
    least = max(1, round(min_window_s * sample_rate))
    buf = np.zeros(0, dtype=np.float32)
    base = 0  # sample index of buf[0]
    covered = 0  # samples covered by windows yielded so far
    offset = 0.0
    for offset, block in timed_blocks(path, sample_rate, max(window_s, 10.0)):
        buf = np.concatenate([buf, block]) if len(buf) else block
        while len(buf) >= win:
            yield _window(offset, base, buf[:win], sample_rate)
            covered = base + win
            buf, base = buf[hop:], base + hop
    end = base + len(buf)
    if end > covered and len(buf) >= least:
        yield _window(offset, base, buf, sample_rate)


def _window(
    offset: float, first: int, samples: np.ndarray, rate: int
) -> tuple[float, float, np.ndarray]:
    return (
        offset + first / rate,
        offset + (first + len(samples)) / rate,
        np.ascontiguousarray(samples),
    )


def load_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """A short clip (a query) as one mono float32 array; refuses clips over `max_seconds`."""
    if max_seconds is not None:
        info = probe_audio(path)
        if info.duration > max_seconds + 0.5:  # headers round; decoding re-checks exactly
            raise MediaError(_too_long(path, info.duration, max_seconds))
    limit = math.inf if max_seconds is None else max_seconds * sample_rate + 0.5 * sample_rate
    blocks: list[np.ndarray] = []
    held = 0
    for block in stream_audio(path, sample_rate, block_s=10.0):
        held += len(block)
        if held > limit:
            raise MediaError(_too_long(path, held / sample_rate, max_seconds or 0.0, "at least "))
        blocks.append(block)
    return _join(blocks)


def _too_long(path: Path, seconds: float, limit: float, qualifier: str = "") -> str:
    return (
        f"{path}: audio is {qualifier}{seconds:.1f} s long, over the {limit:g} s limit for a "
        "clip loaded whole (index long recordings; they are read in windows)"
    )


# --- silence ----------------------------------------------------------------------------------


def rms_dbfs(samples: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (1.0); -200 for digital silence."""
    if len(samples) == 0:
        return _FLOOR_DBFS
    x = np.asarray(samples, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x * x)))
    return max(_FLOOR_DBFS, 20.0 * math.log10(rms)) if rms > 0 else _FLOOR_DBFS


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """Windows below the threshold carry nothing worth a vector (room tone, digital silence)."""
    return rms_dbfs(samples) < threshold_dbfs
