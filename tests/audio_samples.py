"""Audio with known content for tests: espeak-ng speech, silence, noise, speech placed in time,
synthesised music.

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

    from mmrag.pipelines.audio import panns

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "Cnn14_random.pth"
    torch.save({"model": panns.build_cnn14().state_dict()}, checkpoint)
    rows = ["index,mid,display_name"] + [f"{i},/m/{i},Sound {i}" for i in range(527)]
    (folder / panns.LABELS_NAME).write_text("\n".join(rows) + "\n")
    return checkpoint


# --- a minute of sound: texts that read for over LENGTH_S, synthesised music ----------------

LENGTH_S = 60.0

# Each text lasts over 60 s when read, so no recording repeats itself (a repeat would make
# "the right moment" ambiguous).
TEXTS = {
    "a": (
        "The committee met on Tuesday to review the quarterly budget. After a long debate, "
        "three new projects were approved, and the old warehouse will be sold next spring. "
        "Several members asked for better reports on energy use. The chair promised monthly "
        "figures, starting in April, and a public meeting in the town hall. Parking near the "
        "station will cost more from June, but buses will run every ten minutes. A new bridge "
        "across the river is planned for the autumn, although the engineers still disagree "
        "about its height. Local shops complained that the roadworks kept customers away for "
        "most of the winter. The library will open on Sundays, thanks to a gift from a retired "
        "teacher who lived in the village for sixty years. Finally, the council thanked the "
        "volunteers who cleaned the park after the storm, and the meeting closed at nine."
    ),
    "b": (
        "Take two cups of flour, a pinch of salt and a spoon of sugar. Mix them in a large "
        "bowl, then add warm milk slowly while you stir. Let the dough rest for an hour under "
        "a clean towel. Bake it at two hundred degrees until the crust is golden brown. Serve "
        "the bread with butter, honey, or a bowl of tomato soup on a cold winter evening. For "
        "a sweeter loaf, fold in a handful of raisins and some grated orange peel before the "
        "dough rests. If the kitchen is chilly, place the bowl near the oven so the yeast can "
        "work. Some bakers brush the top with beaten egg, which gives a shiny finish. Others "
        "sprinkle seeds, oats or coarse salt. Once baked, leave the bread on a wire rack for "
        "twenty minutes; cutting it too early makes the middle heavy and damp. Wrapped in "
        "paper, it keeps for three days, and stale slices make excellent toast."
    ),
    "c": (
        "Captain's log, day forty two. The wind turned north at dawn and the sea grew rough. "
        "We lowered the main sail and steered toward the rocky island on the horizon. Fresh "
        "water is running low, so the crew will fill the barrels at the waterfall. Two dolphins "
        "followed the ship all afternoon, jumping and whistling in the bright sunlight. The "
        "cook caught four large fish, which we grilled on deck while the sun went down. At "
        "midnight the lookout saw lights to the east, perhaps another vessel, perhaps a "
        "lighthouse on a coast missing from our charts. I have ordered a double watch until "
        "morning. The carpenter repaired the cracked mast with rope and tar, and the young "
        "sailors practised knots by lantern light, laughing at each other's mistakes."
    ),
}


def fit(x: np.ndarray) -> np.ndarray:
    """`x` tiled or cut to LENGTH_S seconds at SR, peaks scaled to 0.5."""
    n = int(LENGTH_S * SR)
    x = np.tile(x, -(-n // len(x)))[:n] if len(x) < n else x[:n]
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def _note(freq: float, dur: float, harmonics: list[float], decay: float) -> np.ndarray:
    t = np.arange(int(dur * SR)) / SR
    tone = sum(a * np.sin(2 * np.pi * freq * (k + 1) * t) for k, a in enumerate(harmonics))
    env = np.exp(-t * decay) * np.minimum(1.0, t * 200)
    return (tone * env).astype(np.float32)


def music(seed: int, harmonics: list[float], decay: float, beat: float, chords: bool) -> np.ndarray:
    """A random walk over a major scale (a new melody every bar), notes with harmonics."""
    rng = np.random.default_rng(seed)
    scale = [0, 2, 4, 5, 7, 9, 11, 12, 14, 16]
    out = np.zeros(int(LENGTH_S * SR) + SR, np.float32)
    pos, step = 0, 4
    while pos < int(LENGTH_S * SR):
        step = int(np.clip(step + rng.integers(-2, 3), 0, len(scale) - 1))
        base = 220.0 * 2 ** (scale[step] / 12)
        dur = beat * rng.choice([0.5, 1.0, 1.0, 2.0])
        note = _note(base, dur + 0.3, harmonics, decay)
        if chords:
            for interval in (4, 7):
                note = note + 0.6 * _note(base * 2 ** (interval / 12), dur + 0.3, harmonics, decay)
        end = min(len(out), pos + len(note))
        out[pos:end] += note[: end - pos]
        pos += int(dur * SR)
    return fit(out)
