"""PANNs CNN14 (Kong et al. 2020, AudioSet tagging) as our own torch module.

The official code (panns_inference) downloads its checkpoint with `wget` at import time and pulls
torchlibrosa and librosa in; this module rebuilds the same network instead, so that the official
checkpoint `Cnn14_mAP=0.431.pth` loads into it strictly (same parameter names and shapes):

- the STFT is a pair of conv1d layers whose kernels are the Hann-windowed DFT's real and
  imaginary parts (torchlibrosa's `STFT`, center=True, reflect padding);
- the mel filterbank is librosa's default (Slaney mel scale, Slaney area normalisation), built
  here in numpy; power is turned into dB with amin 1e-10 and no top_db, as in training;
- six conv blocks, mean over mel bins, max+mean over time, fc1 (the 2048-d embedding) and the
  527-way sigmoid AudioSet head.

`load_cnn14()` finds the checkpoint (argument, $MMRAG_PANNS_CHECKPOINT, ~/panns_data/), downloads
it from Zenodo only when downloads are allowed and only when called, and reads AudioSet class
names from `class_labels_indices.csv` beside it when present. torch is imported lazily.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.pipelines.model_resolver import ModelNotAvailable, hub_allowed

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SAMPLE_RATE = 32000
WINDOW = 1024
HOP = 320
MEL_BINS = 64
FMIN = 50.0
FMAX = 14000.0
CLASSES = 527
EMBEDDING_DIM = 2048

CHECKPOINT_NAME = "Cnn14_mAP=0.431.pth"
CHECKPOINT_URL = "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1"
LABELS_NAME = "class_labels_indices.csv"
LABELS_URL = (
    "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv"
)
CHECKPOINT_ENV = "MMRAG_PANNS_CHECKPOINT"


# --- the signal front end, in numpy -----------------------------------------------------------


# Slaney's mel scale: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4.
_F_SP = 200.0 / 3
_MIN_LOG_MEL = 1000.0 / _F_SP
_LOGSTEP = float(np.log(6.4) / 27.0)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    safe = np.maximum(hz, 1e-10)
    return np.where(hz >= 1000.0, _MIN_LOG_MEL + np.log(safe / 1000.0) / _LOGSTEP, hz / _F_SP)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    above = 1000.0 * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, above, _F_SP * mel)


def mel_filterbank(
    sr: int = SAMPLE_RATE,
    n_fft: int = WINDOW,
    n_mels: int = MEL_BINS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangles, each of unit area in Hz: librosa.filters.mel()."""
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def dft_kernels(n_fft: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary (n_fft // 2 + 1, 1, n_fft) conv1d kernels of the Hann-windowed DFT."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann (scipy fftbins=True)
    k = np.arange(n_fft // 2 + 1)
    angle = -2 * np.pi * np.outer(k, n) / n_fft
    real = (np.cos(angle) * window)[:, None, :]
    imag = (np.sin(angle) * window)[:, None, :]
    return real.astype(np.float32), imag.astype(np.float32)


# --- the network ------------------------------------------------------------------------------


def _build_modules() -> dict[str, type]:
    """The torch classes, defined on first use so that importing this module needs no torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class STFT(nn.Module):
        def __init__(self, n_fft: int, hop: int) -> None:
            super().__init__()
            self.n_fft, self.hop = n_fft, hop
            bins = n_fft // 2 + 1
            self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
            self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
            real, imag = dft_kernels(n_fft)
            self.conv_real.weight.data.copy_(torch.from_numpy(real))
            self.conv_imag.weight.data.copy_(torch.from_numpy(imag))
            for p in self.parameters():
                p.requires_grad_(False)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(batch, samples) -> real, imag, each (batch, 1, frames, bins)."""
            pad = self.n_fft // 2
            x = F.pad(x[:, None, :], (pad, pad), mode="reflect")
            return (
                self.conv_real(x)[:, None].transpose(2, 3),
                self.conv_imag(x)[:, None].transpose(2, 3),
            )

    class Spectrogram(nn.Module):
        def __init__(self, n_fft: int, hop: int) -> None:
            super().__init__()
            self.stft = STFT(n_fft, hop)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            real, imag = self.stft(x)
            return real**2 + imag**2

    class LogmelFilterBank(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.melW = nn.Parameter(torch.from_numpy(mel_filterbank().T.copy()))
            self.melW.requires_grad_(False)

        def forward(self, power: torch.Tensor) -> torch.Tensor:
            return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=1e-10))

    class ConvBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.bn2 = nn.BatchNorm2d(cout)

        def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
            x = F.relu_(self.bn1(self.conv1(x)))
            x = F.relu_(self.bn2(self.conv2(x)))
            return F.avg_pool2d(x, kernel_size=pool) if pool > 1 else x

    class Cnn14(nn.Module):
        """Waveforms at 32 kHz -> (2048-d embedding, 527 AudioSet probabilities)."""

        def __init__(self) -> None:
            super().__init__()
            self.spectrogram_extractor = Spectrogram(WINDOW, HOP)
            self.logmel_extractor = LogmelFilterBank()
            self.bn0 = nn.BatchNorm2d(MEL_BINS)
            widths = [1, 64, 128, 256, 512, 1024, 2048]
            for i in range(6):
                setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
            self.fc1 = nn.Linear(2048, EMBEDDING_DIM)
            self.fc_audioset = nn.Linear(2048, CLASSES)

        def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.logmel_extractor(self.spectrogram_extractor(waveform))  # (b, 1, t, mel)
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
            for i in range(6):
                x = getattr(self, f"conv_block{i + 1}")(x, pool=2 if i < 5 else 1)
                x = F.dropout(x, p=0.2, training=self.training)
            x = x.mean(dim=3)
            x = x.max(dim=2).values + x.mean(dim=2)
            x = F.dropout(x, p=0.5, training=self.training)
            embedding = F.relu_(self.fc1(x))
            clipwise = torch.sigmoid(self.fc_audioset(embedding))
            return embedding, clipwise

    return {"Cnn14": Cnn14, "STFT": STFT}


_MODULES: dict[str, type] = {}


def _modules() -> dict[str, type]:
    if not _MODULES:
        _MODULES.update(_build_modules())
    return _MODULES


def build_cnn14() -> torch.nn.Module:
    """A randomly initialised CNN14 with its fixed STFT and mel front end (for loading into)."""
    return _modules()["Cnn14"]()


def build_stft(n_fft: int = WINDOW, hop: int = HOP) -> torch.nn.Module:
    return _modules()["STFT"](n_fft, hop)


# A waveform shorter than this leaves no time step after five 2x poolings (32 frames -> 1).
MIN_SAMPLES = 32 * HOP


# --- loading ----------------------------------------------------------------------------------


@dataclass
class LoadedCnn14:
    """The network in eval mode, where its weights came from, and AudioSet names if known."""

    model: Any  # torch.nn.Module
    checkpoint: Path
    device: str
    labels: list[str] = field(default_factory=list)


def default_checkpoint() -> Path:
    return Path.home() / "panns_data" / CHECKPOINT_NAME


def load_cnn14(checkpoint: Path | None = None, device: str = "cpu") -> LoadedCnn14:
    """CNN14 with the official weights, strictly loaded (a mismatch lists the keys)."""

    path = find_checkpoint(checkpoint)
    try:
        blob = _torch_load(path)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a checkpoint"
        raise ModelNotAvailable(
            f"PANNs checkpoint {path} does not load ({type(exc).__name__}: {exc}); expected "
            f"the official {CHECKPOINT_NAME} from {CHECKPOINT_URL}"
        ) from exc
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ModelNotAvailable(f"PANNs checkpoint {path} holds no state dict")
    model = build_cnn14()
    _check_keys(path, model, state)
    model.load_state_dict(state, strict=True)
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedCnn14(model, path, device, read_labels(path.parent))


def _torch_load(path: Path) -> Any:
    """torch.load without running pickled code; numpy arrays are allowed as plain data.

    The official checkpoint also holds its training sampler's state (numpy arrays), which
    `weights_only=True` refuses by default; numpy's reconstructors build data, not code.
    """
    import importlib
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if not names or not all(n.split(".")[0] == "numpy" for n in names):
            raise
    # dtype instances are pickled by class; their classes are not listed among the globals.
    allowed: list[Any] = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    for name in names:
        module, _, attr = name.rpartition(".")
        allowed.append(getattr(importlib.import_module(module), attr))
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def find_checkpoint(checkpoint: Path | None = None) -> Path:
    """The argument, else $MMRAG_PANNS_CHECKPOINT, else ~/panns_data/ (downloaded if allowed)."""
    if checkpoint is not None or os.environ.get(CHECKPOINT_ENV):
        path = Path(checkpoint or os.environ[CHECKPOINT_ENV]).expanduser()
        if not path.is_file():
            origin = "given" if checkpoint is not None else f"from ${CHECKPOINT_ENV}"
            raise ModelNotAvailable(f"PANNs checkpoint {path} ({origin}) does not exist")
        return path
    path = default_checkpoint()
    if path.is_file():
        return path
    how = (
        f"Download {CHECKPOINT_URL} on a networked machine and put it at {path} (or anywhere, "
        f"with ${CHECKPOINT_ENV} naming the file); put {LABELS_NAME} ({LABELS_URL}) beside it "
        "for AudioSet tags."
    )
    if not hub_allowed():
        raise ModelNotAvailable(
            f"PANNs CNN14 is not available: {path} does not exist and downloads are off "
            f"(HF_HUB_OFFLINE is set).\n{how}"
        )
    _download(path, how)
    return path


def _download(path: Path, how: str) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(CHECKPOINT_URL, str(path), progress=False)
    except Exception as exc:  # URLError, HTTPError, timeouts: all mean "not from here"
        raise ModelNotAvailable(
            f"PANNs CNN14 is not available: the download from {CHECKPOINT_URL} failed "
            f"({type(exc).__name__}: {exc}).\n{how}"
        ) from exc
    log.info("downloaded the PANNs CNN14 checkpoint to %s", path)


def _check_keys(path: Path, model: Any, state: dict[str, Any]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k
        for k in set(expected) & set(state)
        if tuple(expected[k].shape) != tuple(getattr(state[k], "shape", ()))
    )
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for label, keys in [("missing", missing), ("unexpected", unexpected), ("shape", wrong)]
            if keys
        ]
        raise ModelNotAvailable(
            f"PANNs checkpoint {path} does not match CNN14 ({'; '.join(parts)}); expected the "
            f"official {CHECKPOINT_NAME}"
        )


def read_labels(folder: Path) -> list[str]:
    """AudioSet's 527 display names from class_labels_indices.csv (here or ~/panns_data/)."""
    for candidate in [folder / LABELS_NAME, default_checkpoint().parent / LABELS_NAME]:
        if candidate.is_file():
            with candidate.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            labels = [row["display_name"] for row in rows]
            if len(labels) == CLASSES:
                return labels
            log.warning("%s has %d classes, not %d; ignored", candidate, len(labels), CLASSES)
    log.info("no %s beside the PANNs checkpoint: embeddings only, no AudioSet tags", LABELS_NAME)
    return []
