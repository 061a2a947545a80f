"""Audio with known content for tests: espeak-ng speech, silence, noise, speech placed in time.

Tests that check *when* something was said need audio whose timing they control, so every helper
here works on 16 kHz mono float32 arrays (what the speech and audio pipelines take).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

SR = 16000


def speak(text: str, path: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Synthesise `text` with espeak-ng into a wav file (22.05 kHz mono) and return its path."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(
            "espeak-ng is not installed; speech tests need it (`apt-get install -y espeak-ng`)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [exe, "-v", voice, "-s", str(speed), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    return path


def read_wav_16k(path: Path) -> np.ndarray:
    """Any audio file as 16 kHz mono float32, resampled by PyAV (libswresample)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
    parts: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)


def silence(seconds: float, sr: int = SR) -> np.ndarray:
    return np.zeros(round(seconds * sr), dtype=np.float32)


def noise(seconds: float, sr: int = SR, dbfs: float = -50.0, seed: int = 0) -> np.ndarray:
    """White noise whose RMS level is `dbfs` (0 dBFS = full-scale RMS of 1.0)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(round(seconds * sr)).astype(np.float32)
    return white * np.float32(10 ** (dbfs / 20))


def place(
    speech: np.ndarray, at_s: float, total_s: float, sr: int = SR, bed: np.ndarray | None = None
) -> np.ndarray:
    """`speech` starting at `at_s` inside `total_s` seconds of silence (or of `bed`, mixed)."""
    out = silence(total_s, sr) if bed is None else bed[: round(total_s * sr)].copy()
    start = round(at_s * sr)
    end = start + len(speech)
    if end > len(out):
        raise ValueError(f"speech of {len(speech) / sr:.2f} s does not fit at {at_s} s")
    out[start:end] += speech
    return out


def onset(samples: np.ndarray, sr: int, dbfs: float = -35.0) -> float:
    """Seconds of the first 20 ms block louder than `dbfs`."""
    block = sr // 50
    n = len(samples) // block
    rms = np.sqrt(np.mean(samples[: n * block].reshape(n, block) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms) > dbfs)
    assert len(loud), "no sound above the threshold"
    return float(loud[0] * block / sr)


def write_wav(path: Path, samples: np.ndarray, sr: int = SR) -> Path:
    """Write float samples as a 16-bit PCM wav."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples, dtype=np.float32), sr, subtype="PCM_16")
    return path


def random_cnn14(folder: Path) -> Path:
    """A randomly initialised CNN14 (seed 0) saved as the official checkpoint is laid out
    ({"model": state_dict}), with a 527-row AudioSet-style labels file beside it."""
    import torch

    from pipelines import panns

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "Cnn14_random.pth"
    torch.save({"model": panns.build_cnn14().state_dict()}, checkpoint)
    rows = ["index,mid,display_name"] + [f"{i},/m/{i},Sound {i}" for i in range(527)]
    (folder / panns.LABELS_NAME).write_text("\n".join(rows) + "\n")
    return checkpoint
