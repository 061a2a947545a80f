"""Audio decoding through PyAV: real files of every common format, made here, decoded back."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from mmrag.pipelines.audio.decode import (
    is_silent,
    iter_windows,
    load_audio,
    probe_audio,
    rms_dbfs,
    stream_audio,
    timed_blocks,
)
from mmrag.pipelines.base import MediaError
from tests import audio_samples as aus
from tests import video_samples as vs

SR = 44100


def _tone(seconds: float, freq: float = 440.0, sr: int = SR, channels: int = 2) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def _encode(
    path: Path,
    x: np.ndarray,
    codec: str,
    fmt: str | None = None,
    rate: int = SR,
    options: dict[str, str] | None = None,
) -> Path:
    """Write stereo float samples at SR with PyAV's encoder `codec` (resampled to `rate`);
    `options` are the muxer's."""
    with av.open(str(path), "w", format=fmt, container_options=options) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        _mux_audio(out, stream, x)
    return path


def _mux_audio(out: av.container.OutputContainer, stream: av.AudioStream, x: np.ndarray) -> None:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout="stereo")
    frame.sample_rate = SR
    fmt = stream.codec_context.format.name
    resampler = av.AudioResampler(format=fmt, layout="stereo", rate=stream.codec_context.rate)
    for f in [*resampler.resample(frame), *resampler.resample(None)]:
        out.mux(stream.encode(f))
    out.mux(stream.encode(None))


def _has_encoder(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


FORMATS = [
    ("wav", None),
    ("flac", None),
    ("ogg", None),
    ("mp3", ("libmp3lame", None, SR)),
    ("m4a", ("aac", "mp4", SR)),
    ("opus", ("libopus", "ogg", 48000)),
]


def _make(tmp_path: Path, ext: str, enc: tuple[str, str | None, int] | None, x: np.ndarray) -> Path:
    path = tmp_path / f"clip.{ext}"
    if enc is None:
        sf.write(path, x, SR)
        return path
    codec, fmt, rate = enc
    assert _has_encoder(codec), f"this PyAV build has no {codec} encoder (the av wheel has)"
    return _encode(path, x, codec, fmt, rate)


@pytest.mark.parametrize(("ext", "enc"), FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_decodes_to_mono_at_the_asked_rate(
    tmp_path: Path, ext: str, enc: tuple[str, str | None, int] | None
) -> None:
    path = _make(tmp_path, ext, enc, _tone(4.0, freq=1000.0))
    info = probe_audio(path)
    assert info.duration == pytest.approx(4.0, abs=0.06)
    assert info.channels == 2
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) / 16000 == pytest.approx(4.0, abs=0.06)
    spectrum = np.abs(np.fft.rfft(y[4000:-4000]))
    peak_hz = np.argmax(spectrum) * 16000 / (len(y) - 8000)
    assert peak_hz == pytest.approx(1000.0, abs=5.0)  # lossy codecs keep the tone
    # FFmpeg's downmix adds the channels at -3 dB each (as faster-whisper's decoding does):
    # two equal channels of a 0.3 sine give a 0.3 * sqrt(2) sine.
    assert rms_dbfs(y) == pytest.approx(20 * np.log10(0.3), abs=1.0)


def test_resampling_44k_stereo_to_16k_mono_keeps_length_and_pitch(tmp_path: Path) -> None:
    x = _tone(3.0, freq=3000.0)
    x[:, 1] = 0.0  # only the left channel sounds: the mono downmix must still hold the tone
    path = tmp_path / "left.wav"
    sf.write(path, x, SR)
    y = load_audio(path, 16000)
    assert abs(len(y) - 48000) <= 16
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * 16000 / len(y) == pytest.approx(3000.0, abs=2.0)
    assert not is_silent(y)


def test_stream_audio_blocks_are_contiguous_and_in_order(tmp_path: Path) -> None:
    ramp = np.arange(16000 * 7, dtype=np.float32) / (16000 * 7)  # a ramp shows any reordering
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, 16000, subtype="FLOAT")
    blocks = list(stream_audio(path, 16000, block_s=2.0))
    assert [len(b) for b in blocks] == [32000, 32000, 32000, 16000]
    np.testing.assert_allclose(np.concatenate(blocks), ramp, atol=1e-6)


def test_a_20_minute_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    sr, minutes, rng = 16000, 20, np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, 1, format="FLAC") as out:  # written a minute at a time
        for _ in range(minutes):
            out.write((0.1 * rng.standard_normal(sr * 60)).astype(np.float32))
    block = 16000 * 30
    tracemalloc.start()
    total, longest = 0, 0
    for samples in stream_audio(path, sr, block_s=30.0):
        total += len(samples)
        longest = max(longest, len(samples))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == sr * 60 * minutes
    assert longest == block
    # 20 minutes would be 77 MB of float32; the stream holds about one 30 s block (1.9 MB).
    assert peak < 4 * block * 4, f"peak {peak / 2**20:.1f} MiB"


def test_windows_cover_the_file_with_true_times_and_keep_a_long_enough_tail(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ten.wav"
    sf.write(path, np.linspace(-0.5, 0.5, 16000 * 10 + 8000, dtype=np.float32), 16000)  # 10.5 s
    wins = list(iter_windows(path, 16000, window_s=4.0, hop_s=2.0))
    spans = [(round(a, 3), round(b, 3)) for a, b, _ in wins]
    assert spans == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0), (8.0, 10.5)]
    assert all(len(s) == round((b - a) * 16000) for a, b, s in wins)
    # A 0.5 s tail that earlier windows already cover is not repeated; one under 1 s is dropped.
    short_tail = list(iter_windows(path, 16000, window_s=5.0, hop_s=5.0, min_window_s=1.0))
    assert [(a, b) for a, b, _ in short_tail] == [(0.0, 5.0), (5.0, 10.0)]
    whole = list(iter_windows(path, 16000, window_s=30.0, hop_s=15.0))
    assert [(a, b) for a, b, _ in whole] == [(0.0, 10.5)]


def test_audio_track_of_a_video_file_decodes(tmp_path: Path) -> None:
    path = tmp_path / "movie.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("aac", rate=SR)
        audio.layout = "stereo"
        for i in range(20):
            img = np.full((64, 64, 3), i * 10, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(video.encode(None))
        _mux_audio(out, audio, _tone(2.0))
    assert probe_audio(path).codec == "aac"
    assert len(load_audio(path, 16000)) / 16000 == pytest.approx(2.0, abs=0.1)


def test_a_stream_that_starts_late_keeps_its_true_times(tmp_path: Path) -> None:
    path = vs.late_sound(tmp_path / "late.mkv", _tone(4.0, sr=16000, channels=1), 16000, 1.5)
    spans = [(a, b) for a, b, _ in iter_windows(path, 16000, window_s=2.0, hop_s=1.0)]
    assert spans == [(1.5, 3.5), (2.5, 4.5), (3.5, 5.5)]


@pytest.mark.parametrize("codec", ["mp2", "aac"])
def test_times_in_an_mpeg_ts_count_from_the_container_start(tmp_path: Path, codec: str) -> None:
    """ffmpeg's MPEG-TS files start at 1.4 s, which a player shows as 0:00 (and video frames
    count from): a tone after 2 s of silence is heard at 2 s, not at 3.4 s."""
    x = _tone(4.0)
    x[: 2 * SR] = 0.0
    path = _encode(tmp_path / "tone.ts", x, codec, "mpegts", options=vs.MPEG_TS_AS_FFMPEG)
    with av.open(str(path)) as container:
        assert container.start_time / av.time_base == pytest.approx(1.4, abs=0.05)
    blocks = list(timed_blocks(path, 16000, block_s=30.0))
    start = blocks[0][0]
    assert start == pytest.approx(0.0, abs=0.05)
    heard = start + aus.onset(np.concatenate([b for _, b in blocks]), 16000)
    assert heard == pytest.approx(2.0, abs=0.05)


def test_load_audio_refuses_clips_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 12, np.float32), 16000)
    assert len(load_audio(path, 8000, max_seconds=12)) == 8000 * 12
    with pytest.raises(MediaError, match=r"12\.0 s long, over the 5 s limit"):
        load_audio(path, 8000, max_seconds=5)


def test_silence_levels() -> None:
    assert rms_dbfs(np.zeros(100, np.float32)) == -200.0
    assert rms_dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert rms_dbfs(np.full(100, 0.001, np.float32)) == pytest.approx(-60.0)
    assert is_silent(np.full(100, 0.0005, np.float32))
    assert not is_silent(np.full(100, 0.002, np.float32))
    assert is_silent(np.full(100, 0.002, np.float32), threshold_dbfs=-40)


# --- failures ---------------------------------------------------------------------------------


def _wav_with_format_tag(path: Path, tag: int) -> Path:
    data = bytes(3200)
    fmt = struct.pack("<HHIIHH", tag, 1, 16000, 32000, 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + len(data)) + body + data)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(path)
    return path


def _video_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: _write(p / "empty.wav", b""), "empty file"),
        (lambda p: _png(p / "red.png"), "no audio stream"),
        (lambda p: _video_only(p / "silent.mp4"), "no audio stream"),
        (lambda p: _wav_with_format_tag(p / "odd.wav", 0x7777), "unsupported audio codec"),
        (lambda p: _write(p / "text.mp3", b"not audio\n" * 50), "not a readable audio or video"),
        (lambda p: p / "missing.wav", "no such file"),
    ],
    ids=["empty", "png", "video-only", "unknown-codec", "text", "missing"],
)
def test_unreadable_files_raise_media_error_with_the_reason(
    tmp_path: Path, make: object, reason: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(MediaError, match=reason) as err:
        probe_audio(path)
    assert str(path) in str(err.value)
    with pytest.raises(MediaError, match=reason):
        load_audio(path, 16000)


@pytest.mark.parametrize("ext", ["flac", "mp3", "wav"])
def test_a_truncated_file_yields_what_decodes(tmp_path: Path, ext: str) -> None:
    enc = dict(FORMATS)[ext]
    full = _make(tmp_path, ext, enc, _tone(6.0))
    data = full.read_bytes()
    half = tmp_path / f"half.{ext}"
    half.write_bytes(data[: len(data) // 2])
    y = load_audio(half, 16000)
    assert 2.5 < len(y) / 16000 < 3.5
    stub = tmp_path / f"stub.{ext}"
    stub.write_bytes(data[:200])  # a header and nothing after: nothing decodes
    with pytest.raises(MediaError, match=str(stub)):
        load_audio(stub, 16000)


def test_bad_window_arguments_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    with pytest.raises(ValueError, match="hop_s"):
        list(iter_windows(path, 16000, window_s=1.0, hop_s=2.0))
