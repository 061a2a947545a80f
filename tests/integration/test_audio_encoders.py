"""The `audio` space's encoders: the interface, the factory, and search quality on real sound.

The quality corpus is made here: eight 60 s recordings (espeak-ng speech in three voices, two
synthesised pieces of music, two noise textures, speech over music). A 3 s excerpt cut from one
of them must find that recording first among all windows of all eight (cosine, numpy), and the
best window must overlap the excerpt's time range.

Run as a script to compare the offline candidates (hit@1, window overlap, windows/s):
    /tmp/venv-img/bin/python -m tests.test_audio_encoders
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmrag.pipelines.audio.decode import iter_windows, load_audio
from mmrag.pipelines.audio.encoders import (
    OFFLINE_AUDIO_MODEL,
    AudioEncoder,
    load_audio_encoder,
)
from mmrag.pipelines.model_resolver import ModelNotAvailable
from tests.audio_samples import LENGTH_S, SR, TEXTS, fit, music, random_cnn14

EXCERPT_S = 3.0


@dataclass(frozen=True)
class Recording:
    name: str
    path: Path


# --- the corpus -------------------------------------------------------------------------------


def _speech(tmp: Path, text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng reading `text` (repeated as needed) for LENGTH_S seconds at SR."""
    wav = tmp / f"tts-{voice}-{speed}-{abs(hash(text)) % 10**8}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    x = load_audio(wav, SR)
    assert len(x) >= LENGTH_S * SR, f"{voice} reads the text in {len(x) / SR:.1f} s"
    return fit(x)


def _noise_texture(seed: int, kind: str) -> np.ndarray:
    """Time-varying noise: a wind-like band sweeping slowly, or rain-like drops whose density
    rises and falls (so different minutes of the texture differ)."""
    rng = np.random.default_rng(seed)
    n = int(LENGTH_S * SR)
    t = np.arange(n) / SR
    if kind == "wind":
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / SR)
        noise = np.zeros(n)
        walk = np.cumsum(rng.normal(0, 0.12, int(LENGTH_S) + 1))
        for i, start in enumerate(range(0, n, SR)):  # one second at a time, band wandering
            centre = 500 * np.exp(np.clip(walk[i], -1.2, 1.5))
            band = np.exp(-(((freqs - centre) / (0.4 * centre)) ** 2))
            seg = np.fft.irfft(spec * band, n)[start : start + SR]
            noise[start : start + SR] = seg * np.hanning(len(seg)) ** 0.2
        gust = 0.6 + 0.4 * np.sin(2 * np.pi * t / 7.0)
        return fit(noise * gust)
    walk = np.clip(np.cumsum(rng.normal(0, 0.15, int(LENGTH_S) + 1)), -1.5, 1.5)
    density = np.repeat(60 * np.exp(walk), SR)[:n]  # drops per second, drifting
    drops = (rng.random(n) < density / SR).astype(np.float32)
    kernel = np.exp(-np.arange(160) / 25.0) * np.sin(2 * np.pi * 2500 * np.arange(160) / SR)
    rain = np.convolve(drops * rng.uniform(0.2, 1.0, n), kernel, mode="same")
    hiss = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * 0.05
    return fit(rain + hiss)


def build_corpus(folder: Path) -> list[Recording]:
    """Eight 60 s recordings written as FLAC (decoded back through the real decoding path)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tts"
    tmp.mkdir(exist_ok=True)
    signals = {
        "speech-a-us-male": _speech(tmp, TEXTS["a"], "en-us", 130),
        "speech-b-gb-female": _speech(tmp, TEXTS["b"], "en-gb+f3", 125),
        "speech-a-scottish": _speech(tmp, TEXTS["a"], "en-gb-scotland", 125),  # same words as 1
        "music-plucked": music(1, [1.0, 0.5, 0.3, 0.15], 3.0, 0.25, chords=False),
        "music-organ-chords": music(2, [1.0, 0.0, 0.6, 0.0, 0.4], 0.3, 0.5, chords=True),
        "noise-wind": _noise_texture(3, "wind"),
        "noise-rain": _noise_texture(4, "rain"),
    }
    over = _speech(tmp, TEXTS["c"], "en-us+f2", 115)
    signals["speech-c-over-music"] = fit(over + 0.4 * music(5, [1.0, 0.4, 0.2], 2.0, 0.3, False))
    out = []
    for name, x in signals.items():
        path = folder / f"{name}.flac"
        sf.write(path, x, SR)
        out.append(Recording(name, path))
    return out


# --- the evaluation ---------------------------------------------------------------------------


@dataclass
class Score:
    name: str
    queries: int
    hit_at_1: float
    overlap: float
    windows: int
    windows_per_s: float
    misses: list[str]


def _excerpts(rec_index: int, audio: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """Five 3 s excerpts at spread offsets; some quieter (-6 dB), some with noise (30 dB SNR)."""
    rng = np.random.default_rng(100 + rec_index)
    out = []
    for j, start in enumerate([4.0, 15.3, 28.9, 41.6, 53.2]):
        start += rec_index * 0.37  # not on the window grid
        clip = audio[int(start * SR) : int((start + EXCERPT_S) * SR)].copy()
        if j % 3 == 1:
            clip *= 0.5
        elif j % 3 == 2:
            rms = np.sqrt(np.mean(clip**2))
            clip += (rms / 10 ** (30 / 20)) * rng.standard_normal(len(clip)).astype(np.float32)
        out.append((start, clip))
    return out


def evaluate(encoder: AudioEncoder, corpus: list[Recording]) -> Score:
    """Nearest window by cosine over every window of every recording, per excerpt."""
    rows, owners, spans = [], [], []
    started = time.perf_counter()
    count = 0
    for i, rec in enumerate(corpus):
        wins = list(iter_windows(rec.path, encoder.sample_rate, encoder.window_s, encoder.hop_s))
        rows.append(encoder.encode([w for _, _, w in wins]))
        owners += [i] * len(wins)
        spans += [(a, b) for a, b, _ in wins]
        count += len(wins)
    rate = count / (time.perf_counter() - started)
    index = np.concatenate(rows)
    hits = overlaps = total = 0
    misses = []
    for i, rec in enumerate(corpus):
        audio = load_audio(rec.path, encoder.sample_rate)
        for start, clip in _excerpts(i, audio):
            best = int(np.argmax(index @ encoder.encode([clip])[0]))
            a, b = spans[best]
            hit = owners[best] == i
            overlap = hit and a < start + EXCERPT_S and b > start
            hits += hit
            overlaps += overlap
            total += 1
            if not overlap:
                misses.append(f"{rec.name}@{start:.1f}s -> {corpus[owners[best]].name}@{a:.1f}s")
    return Score(encoder.name, total, hits / total, overlaps / total, count, rate, misses)


# --- tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Recording]:
    assert shutil.which("espeak-ng"), "espeak-ng is needed: apt-get install espeak-ng"
    return build_corpus(tmp_path_factory.mktemp("audio-corpus"))


# Measured here (hit@1, overlap): whisper-tiny-encoder 0.975, 0.90; logmel-stats 0.95, 0.90.
# Every miss is an excerpt with white noise added (30 dB SNR).
FLOORS = {OFFLINE_AUDIO_MODEL: (0.95, 0.85), "logmel-stats": (0.9, 0.85)}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_offline_encoder_finds_the_recording_and_the_moment(
    name: str, corpus: list[Recording], report_lines: list[str]
) -> None:
    score = evaluate(load_audio_encoder(name, device="cpu"), corpus)
    report_lines.append(
        f"audio {score.name}: hit@1 {score.hit_at_1:.3f}, window overlap {score.overlap:.3f} "
        f"over {score.queries} excerpts; {score.windows_per_s:.0f} windows/s incl. decoding"
    )
    assert score.queries == 40
    hit_floor, overlap_floor = FLOORS[name]
    assert score.hit_at_1 >= hit_floor, score.misses
    assert score.overlap >= overlap_floor, score.misses


def test_encoder_interface_and_unit_rows() -> None:
    encoder = load_audio_encoder(OFFLINE_AUDIO_MODEL, device="cpu")
    assert isinstance(encoder, AudioEncoder)
    rng = np.random.default_rng(0)
    windows = [
        0.1 * rng.standard_normal(int(encoder.window_s * encoder.sample_rate)).astype("f4"),
        0.1 * rng.standard_normal(int(1.5 * encoder.sample_rate)).astype("f4"),  # a tail
        0.1 * rng.standard_normal(int(encoder.window_s * encoder.sample_rate)).astype("f4"),
        np.zeros(int(0.2 * encoder.sample_rate), np.float32),  # shorter than any model wants
    ]
    vectors = encoder.encode(windows)
    assert vectors.shape == (4, encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(windows[2:3])[0], vectors[2], atol=1e-4)
    assert encoder.tags(windows) == [[], [], [], []]
    info = encoder.info()
    assert info["name"] == OFFLINE_AUDIO_MODEL and info["dim"] == encoder.dim


@pytest.mark.parametrize("name", ["logmel-stats", "whisper-tiny-encoder"])
def test_every_offline_encoder_separates_speech_frommusic(
    name: str, corpus: list[Recording]
) -> None:
    encoder = load_audio_encoder(name)
    clips = {
        r.name: load_audio(r.path, encoder.sample_rate)[: 4 * encoder.sample_rate] for r in corpus
    }
    v = encoder.encode(
        [clips["speech-a-us-male"], clips["speech-b-gb-female"], clips["music-plucked"]]
    )
    assert v[0] @ v[1] > v[0] @ v[2]  # two voices lie closer than a voice and a melody


def test_unknown_name_lists_the_known_encoders() -> None:
    with pytest.raises(ModelNotAvailable) as err:
        load_audio_encoder("wav2vec-huge")
    for known in ("panns-cnn14", "whisper-tiny-encoder", "logmel-stats"):
        assert known in str(err.value)


def test_panns_through_the_factory_with_a_random_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmrag.pipelines.audio import panns

    path = random_cnn14(tmp_path)
    monkeypatch.setenv(panns.CHECKPOINT_ENV, str(path))
    encoder = load_audio_encoder("panns-cnn14", device="cpu")
    assert (encoder.sample_rate, encoder.dim, encoder.window_s, encoder.hop_s) == (
        32000,
        2048,
        5.0,
        2.5,
    )
    rng = np.random.default_rng(1)
    windows = [
        0.1 * rng.standard_normal(32000 * 2).astype("f4"),
        0.1 * rng.standard_normal(32000).astype("f4"),
        0.1 * rng.standard_normal(3000).astype("f4"),  # under CNN14's minimum: tiled to 1 s
    ]
    vectors = encoder.encode(windows)
    assert vectors.shape == (3, 2048)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    tags = encoder.tags(windows[:1])
    assert len(tags) == 1 and all(label.startswith("Sound ") for label, _ in tags[0])
    assert encoder.info()["path"] == str(path) and encoder.info()["tags"] == 527


def test_panns_without_a_checkpoint_offline_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelNotAvailable, match="panns_data"):
        load_audio_encoder("panns-cnn14", device="cpu")


# --- the comparison, as a script --------------------------------------------------------------


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        corpus = build_corpus(Path(tmp))
        for name in ("logmel-stats", "whisper-tiny-encoder"):
            score = evaluate(load_audio_encoder(name, device="cpu"), corpus)
            print(
                f"{score.name:22s} hit@1 {score.hit_at_1:.3f}  window-overlap {score.overlap:.3f}"
                f"  ({score.queries} excerpts, {score.windows} windows, "
                f"{score.windows_per_s:.1f} windows/s incl. decoding)"
            )
            for miss in score.misses:
                print("   miss:", miss)


if __name__ == "__main__":
    main()
