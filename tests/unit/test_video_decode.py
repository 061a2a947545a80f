"""Video decoding and shot boundaries on real photos shown at known times.

The videos are tiny (320x240, 10 fps) but real: H.264, VP9, AV1 and MPEG-4 written by PyAV,
truncated downloads, variable frame rate, a rotated phone-style video and a sound track with a
spoken word at a known time.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from mmrag.pipelines.audio.decode import load_audio, timed_blocks
from mmrag.pipelines.base import MediaError
from mmrag.pipelines.video.decode import probe_video, sample_frames
from mmrag.pipelines.video.shots import detect_shots, shots_from_cuts
from tests import audio_samples as aus
from tests import video_samples as vs

SECONDS_EACH = 2.5
CUTS = (2.5, 5.0, 7.5)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def pics() -> list[Image.Image]:
    return vs.photos()  # astronaut, chelsea, coffee, rocket


@pytest.fixture(scope="module")
def four(videos: Path, pics: list[Image.Image]) -> Path:
    """4 photos, 2.5 s each: cuts at 2.5, 5.0 and 7.5 s; 10 s in all."""
    path = videos / "four.mp4"
    spans = vs.photo_video(path, pics, SECONDS_EACH)
    assert spans == [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5), (7.5, 10.0)]
    return path


def mae(a: Image.Image, b: Image.Image, size: tuple[int, int] = (80, 60)) -> float:
    """Mean absolute pixel difference (0-255) of two pictures at a small common size."""
    x = np.asarray(a.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    y = np.asarray(b.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    return float(np.abs(x - y).mean())


def which_photo(image: Image.Image, pics: list[Image.Image]) -> tuple[int, float, float]:
    """(index of the closest photo, its error, the next-closest photo's error)."""
    errors = [mae(image, vs.letterbox(p, image.size)) for p in pics]
    order = np.argsort(errors)
    return int(order[0]), errors[order[0]], errors[order[1]]


# --- probe ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "suffix", "name", "container"),
    [
        ("libx264", ".mp4", "h264", "mp4"),
        ("libvpx-vp9", ".webm", "vp9", "webm"),
        ("libx264", ".mkv", "h264", "matroska"),
        ("libsvtav1", ".mkv", "av1", "matroska"),
        ("mpeg4", ".mp4", "mpeg4", "mp4"),
        ("libx265", ".mov", "hevc", "mov"),
        ("mpeg4", ".avi", "mpeg4", "avi"),
    ],
)
def test_probe_reads_size_rate_duration_and_codec(
    videos: Path, pics: list[Image.Image], codec: str, suffix: str, name: str, container: str
) -> None:
    path = videos / f"probe-{codec}{suffix}"
    vs.photo_video(path, pics[:2], 1.5, fps=10, size=(160, 120), codec=codec)
    info = probe_video(path)
    assert info.duration == pytest.approx(3.0, abs=0.11)
    assert (info.width, info.height) == (160, 120)
    assert info.fps == pytest.approx(10.0, abs=0.01)
    assert info.codec == name
    assert container in info.container
    assert info.has_audio is False
    assert info.variable_frame_rate is False
    assert info.rotation == 0
    assert info.frames in (0, 30)  # mp4 records the count, matroska does not


def test_the_container_says_when_where_and_with_what_it_was_recorded(
    videos: Path, pics: list[Image.Image]
) -> None:
    phone = {  # QuickTime tags as a phone writes them
        "creation_time": "2023-08-01T09:30:00.000000Z",
        "location": "+48.8584+002.2945+035.000/",
        "make": "Apple",
        "model": "iPhone 15 Pro",
    }
    path = videos / "phone.mov"
    vs.photo_video(path, pics[:1], 1.0, size=(160, 120), tags=phone)
    assert probe_video(path).facts == {
        "taken_at": "2023-08-01T09:30:00+00:00",
        "camera": "Apple iPhone 15 Pro",
        "gps": {"lat": 48.8584, "lon": 2.2945},
    }
    bogus = {"creation_time": "1970-01-01T00:00:00.000000Z", "location": "+0.0+0.0/"}
    path = videos / "bogus.mov"  # what muxers write for "unknown", and no fix
    vs.photo_video(path, pics[:1], 1.0, size=(160, 120), tags=bogus)
    assert probe_video(path).facts == {}
    path = videos / "untagged.mkv"
    vs.photo_video(path, pics[:1], 1.0, size=(160, 120))
    assert probe_video(path).facts == {}


def test_probe_a_video_written_by_opencv(videos: Path, pics: list[Image.Image]) -> None:
    path = videos / "cv2.mp4"
    vs.photo_video(path, pics[:2], 1.0, writer="cv2")
    info = probe_video(path)
    assert (info.codec, info.width, info.height) == ("mpeg4", 320, 240)
    assert info.duration == pytest.approx(2.0, abs=0.11)


def test_audio_only_mp4_has_no_video_stream(videos: Path) -> None:
    path = vs.audio_only_mp4(videos / "voice.mp4", aus.noise(2.0, dbfs=-20), aus.SR)
    with pytest.raises(MediaError, match=r"no video stream \(audio only\)") as err:
        probe_video(path)
    assert "voice.mp4" in str(err.value)
    with pytest.raises(MediaError, match="audio only"):
        next(sample_frames(path))
    with pytest.raises(MediaError, match="audio only"):
        detect_shots(path)


def test_empty_and_random_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: empty file"):
        probe_video(empty)
    noise = tmp_path / "noise.mkv"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    with pytest.raises(MediaError, match=r"noise\.mkv"):
        probe_video(noise)
    with pytest.raises(MediaError, match=r"noise\.mkv"):
        list(sample_frames(noise))
    with pytest.raises(MediaError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")


def test_truncated_mp4_says_its_index_is_missing(videos: Path, four: Path) -> None:
    cut = videos / "cut.mp4"
    cut.write_bytes(four.read_bytes())
    vs.truncate(cut, 0.6)  # the moov atom is written last: it is gone
    with pytest.raises(MediaError, match=r"cut\.mp4: truncated or unfinished mp4.*moov"):
        probe_video(cut)
    with pytest.raises(MediaError, match="moov"):
        list(sample_frames(cut))


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_truncated_matroska_yields_the_start_then_warns(
    videos: Path, pics: list[Image.Image], suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = videos / f"cut{suffix}"
    codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
    vs.photo_video(path, pics, SECONDS_EACH, codec=codec)
    vs.truncate(path, 0.5)
    assert probe_video(path).duration == pytest.approx(10.0, abs=0.11)  # the header's word
    with caplog.at_level(logging.WARNING, logger="mmrag.pipelines.video.decode"):
        frames = list(sample_frames(path, every_s=1.0))
    assert 2 <= len(frames) < 10
    assert [f.time for f in frames] == pytest.approx(list(range(len(frames))), abs=0.01)
    assert which_photo(frames[0].image, pics)[0] == 0
    assert any("truncated" in r.getMessage() for r in caplog.records)


# --- sampling ---------------------------------------------------------------------------------


def test_sample_frames_come_every_second_showing_the_right_photo(
    four: Path, pics: list[Image.Image]
) -> None:
    frames = list(sample_frames(four, every_s=1.0, max_side=None))
    assert [f.time for f in frames] == pytest.approx([float(s) for s in range(10)], abs=0.01)
    assert [f.index for f in frames] == [10 * s for s in range(10)]
    for f in frames:
        best, error, runner_up = which_photo(f.image, pics)
        assert best == int(f.time // SECONDS_EACH), f"frame at {f.time} s shows photo {best}"
        assert error < 12 and error < runner_up / 3, (f.time, error, runner_up)


def test_sample_frames_other_steps_pick_the_first_frame_at_or_after(four: Path) -> None:
    times = [f.time for f in sample_frames(four, every_s=0.75, max_side=64)]
    expected = [0.0, 0.8, 1.5, 2.3, 3.0, 3.8, 4.5, 5.3, 6.0, 6.8, 7.5, 8.3, 9.0, 9.8]
    assert times == pytest.approx(expected, abs=0.01)


def test_sample_frames_reduce_to_max_side_keeping_the_aspect(four: Path) -> None:
    frame = next(sample_frames(four, max_side=100))
    assert frame.image.size == (100, 75)
    assert frame.image.mode == "RGB"
    big = next(sample_frames(four, max_side=1000))
    assert big.image.size == (320, 240)  # never enlarged
    with pytest.raises(ValueError, match="every_s"):
        sample_frames(four, every_s=0)
    with pytest.raises(ValueError, match="max_side"):
        sample_frames(four, max_side=0)


def test_sampled_frames_show_the_photo_on_screen_then(four: Path, pics: list[Image.Image]) -> None:
    shown = {round(f.time, 1): f.image for f in sample_frames(four, every_s=0.1, max_side=None)}
    for t, photo in ((3.7, 1), (0.0, 0), (5.0, 2), (4.9, 1), (9.9, 3)):
        best, error, runner_up = which_photo(shown[t], pics)
        assert best == photo, f"at {t} s: photo {best}, expected {photo}"
        assert error < 12 and error < runner_up / 3


def test_damage_in_the_middle_skips_to_the_frames_after_it(
    videos: Path, pics: list[Image.Image]
) -> None:
    path = videos / "damaged.mp4"
    vs.photo_video(path, pics, SECONDS_EACH, keyframe_every=10)
    data = bytearray(path.read_bytes())
    at = int(len(data) * 0.4)
    data[at : at + 3000] = np.random.default_rng(1).integers(0, 256, 3000, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    frames = list(sample_frames(path, every_s=1.0))
    assert frames[-1].time == pytest.approx(9.0, abs=0.01)
    assert which_photo(frames[-1].image, pics)[0] == 3


def test_variable_frame_rate_times_are_the_written_pts(
    videos: Path, pics: list[Image.Image]
) -> None:
    path = videos / "vfr.mp4"
    written = vs.vfr_video(path, pics, [0.0, 0.1, 0.35, 1.0, 1.05, 2.5, 2.6, 4.0])
    info = probe_video(path)
    assert info.variable_frame_rate is True
    frames = list(sample_frames(path, every_s=0.05))
    assert [f.time for f in frames] == pytest.approx(written, abs=0.002)
    assert [which_photo(f.image, pics)[0] for f in frames] == [i % 4 for i in range(8)]
    # At 1 s steps the gap between 1.05 and 2.5 s yields 2.5 once, not for 2 s and for 2.5 s.
    assert [f.time for f in sample_frames(path, every_s=1.0)] == pytest.approx([0, 1, 2.5, 4])


def test_rotated_video_comes_out_upright(videos: Path, pics: list[Image.Image]) -> None:
    path = videos / "portrait.mp4"
    vs.photo_video(path, pics[:1], 0.5, rotation=90)
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (320, 240, 90)
    image = next(sample_frames(path, max_side=None)).image
    assert image.size == (240, 320)
    upright = vs.letterbox(pics[0]).transpose(Image.Transpose.ROTATE_90)
    assert mae(image, upright) < 12


# --- shots ------------------------------------------------------------------------------------


def assert_tiles(shots: list, duration: float) -> None:
    assert shots[0].start == 0.0
    assert shots[-1].end == pytest.approx(duration)
    for i, (a, b) in enumerate(itertools.pairwise(shots)):
        assert a.end == b.start, f"gap or overlap between shot {i} and {i + 1}"
    for i, s in enumerate(shots):
        assert s.index == i
        assert s.start < s.end


def test_detect_shots_finds_the_cuts_between_photos(four: Path, pics: list[Image.Image]) -> None:
    shots = detect_shots(four)
    assert len(shots) == 4, [(s.start, s.end) for s in shots]
    for shot, cut in zip(shots[1:], CUTS, strict=True):
        assert abs(shot.start - cut) <= 0.5
    assert_tiles(shots, probe_video(four).duration)
    shown = {round(f.time, 1): f.image for f in sample_frames(four, every_s=0.1)}
    for i, shot in enumerate(shots):  # each shot's middle frame shows that shot's photo
        assert which_photo(shown[round((shot.start + shot.end) / 2, 1)], pics)[0] == i


def test_detect_shots_one_photo_is_one_shot(videos: Path, pics: list[Image.Image]) -> None:
    path = videos / "one.mp4"
    vs.photo_video(path, pics[1:2], 4.0)
    shots = detect_shots(path)
    assert len(shots) == 1
    assert (shots[0].start, shots[0].end) == (0.0, pytest.approx(4.0, abs=0.11))


def test_detect_shots_finds_cuts_between_grey_photos(videos: Path) -> None:
    """Grey photos change no hue: a fixed content threshold misses these cuts."""
    path = videos / "grey.mp4"
    vs.photo_video(path, vs.photos(("coins", "moon", "camera", "page", "text")), 2.0)
    shots = detect_shots(path)
    assert [round(s.start, 1) for s in shots] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert_tiles(shots, 10.0)


def test_detect_shots_min_shot_s_merges_quick_cuts(four: Path) -> None:
    """No cut sooner than 3 s after the last: 2.5 is too soon, 5.0 is taken, 7.5 too soon."""
    shots = detect_shots(four, min_shot_s=3.0)
    assert [(s.start, round(s.end, 1)) for s in shots] == [(0.0, 5.0), (5.0, 10.0)]


def test_shots_from_cuts_tile_the_video() -> None:
    shots = shots_from_cuts([7.0, 3.0, 3.0, 0.0, -1.0, 10.0, 12.0], 10.0)
    assert [(s.start, s.end) for s in shots] == [(0.0, 3.0), (3.0, 7.0), (7.0, 10.0)]
    assert [(s.start, s.end) for s in shots_from_cuts([], 5.0)] == [(0.0, 5.0)]


# --- sound ------------------------------------------------------------------------------------


def test_mux_audio_puts_speech_at_its_time(videos: Path, four: Path) -> None:
    word = aus.read_wav_16k(aus.speak("lighthouse", videos / "word.wav"))
    at = 4.0
    track = aus.place(word, at, 10.0)
    expected = aus.onset(track, aus.SR)
    assert at <= expected < at + 0.3
    out = vs.mux_audio(four, track, aus.SR, videos / "talk.mp4")
    info = probe_video(out)
    assert info.has_audio is True
    assert info.duration == pytest.approx(10.0, abs=0.15)
    heard = load_audio(out, aus.SR)
    assert len(heard) / aus.SR == pytest.approx(10.0, abs=0.15)
    assert aus.onset(heard, aus.SR) == pytest.approx(expected, abs=0.1)
    # the picture is copied untouched: the same frames at the same times
    assert [f.time for f in sample_frames(out)] == [f.time for f in sample_frames(four)]
    assert os.path.getsize(out) > os.path.getsize(four)


def test_mpeg_ts_sound_and_picture_count_from_the_container_start(videos: Path, four: Path) -> None:
    """ffmpeg's MPEG-TS files start at 1.4 s, which a player shows as 0:00: frames and sound
    must both count from there, or a transcript lands 1.4 s after the picture it belongs to."""
    at = 4.0
    track = aus.place(aus.noise(0.5, dbfs=-10.0), at, 10.0)
    out = vs.mux_audio(four, track, aus.SR, videos / "talk.ts", options=vs.MPEG_TS_AS_FFMPEG)
    with av.open(str(out)) as container:
        assert container.format.name == "mpegts"
        assert container.start_time / av.time_base == pytest.approx(1.4, abs=0.05)
    times = [f.time for f in sample_frames(out)]
    assert times == pytest.approx([f.time for f in sample_frames(four)], abs=0.1)
    blocks = list(timed_blocks(out, aus.SR, block_s=30.0))
    start = blocks[0][0]
    assert start == pytest.approx(0.0, abs=0.1)
    heard = start + aus.onset(np.concatenate([b for _, b in blocks]), aus.SR)
    assert heard == pytest.approx(at, abs=0.1)
