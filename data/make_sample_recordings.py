"""Write the sample recordings in ``data/library/recordings/`` with espeak-ng.

A voice memo of short sentences with pauses between them (so each sentence lands at a known
time), mixed over quiet room noise and saved as Ogg Vorbis, like a phone recording. The
sentences were picked so that Whisper tiny.en (the offline speech model) hears them right.
Re-running writes the same audio (espeak-ng is deterministic; the noise is seeded).

Usage: ``python data/make_sample_recordings.py`` (needs espeak-ng and the `audio` extra)
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REC_DIR = Path(__file__).resolve().parent / "library" / "recordings"
SR = 16000

MEMO = [
    "Hi, it's Sam with a few reminders for next week.",
    "The train to London leaves from platform seven.",
    "Call the dentist tomorrow to book a new appointment.",
    "The library closes early on Sunday afternoons.",
    "And please bring your guitar to the music lesson on Friday.",
]
PAUSE_S = 1.5


def speak(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    from mmrag.pipelines.audio.decode import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text]
        subprocess.run(cmd, check=True)
        return load_audio(wav, SR)


def main() -> None:
    REC_DIR.mkdir(parents=True, exist_ok=True)
    parts, t = [np.zeros(int(SR * 0.8), dtype=np.float32)], 0.8
    for sentence in MEMO:
        voice = speak(sentence)
        print(f"{t:6.2f}-{t + len(voice) / SR:6.2f} s  {sentence}")
        parts += [voice, np.zeros(int(SR * PAUSE_S), dtype=np.float32)]
        t += len(voice) / SR + PAUSE_S
    memo = np.concatenate(parts)
    room = np.random.default_rng(7).standard_normal(len(memo)).astype(np.float32) * 0.002
    target = REC_DIR / "voice memo from Sam.ogg"
    sf.write(target, memo + room, SR, format="OGG", subtype="VORBIS")
    print(f"{target.relative_to(REC_DIR.parent.parent)}: {len(memo) / SR:.1f} s")


if __name__ == "__main__":
    main()
