"""Write the sample video ``data/library/videos/garden tour.mp4``.

A 24 s slideshow of four of scikit-image's photos (6 s each, so there are shots to find), H.264
at 10 fps, with an espeak-ng voice-over muxed in as AAC: each sentence is spoken while its
photo is shown. Made with the same helpers the tests use (tests/video_samples.py).

Usage: ``PYTHONPATH=. python data/make_sample_video.py`` (from the repository root; needs
espeak-ng and the `audio`, `video` and `dev` extras)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tests.audio_samples import SR, read_wav_16k, speak
from tests.video_samples import mux_audio, photo, photo_video

TARGET = Path(__file__).resolve().parent / "library" / "videos" / "garden tour.mp4"
SECONDS_EACH = 6.0
SCENES = [  # photo, what is said while it is shown
    ("chelsea", "This is our cat, who sleeps in the garden all afternoon."),
    ("coffee", "Coffee on the terrace is served at ten every morning."),
    ("coins", "We found these old coins when we dug the vegetable patch."),
    ("rocket", "The garden party starts at four o'clock on Saturday."),
]


def main() -> None:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    track = np.zeros(int(SR * SECONDS_EACH * len(SCENES)), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (_, sentence) in enumerate(SCENES):
            voice = read_wav_16k(speak(sentence, Path(tmp) / f"{i}.wav"))
            at = int(SR * (i * SECONDS_EACH + 0.5))
            track[at : at + len(voice)] = voice[: len(track) - at]
            print(f"{at / SR:5.1f}-{(at + len(voice)) / SR:5.1f} s  {sentence}")
        silent = Path(tmp) / "silent.mp4"
        photo_video(silent, [photo(name) for name, _ in SCENES], SECONDS_EACH)
        mux_audio(silent, track, SR, TARGET)
    print(f"{TARGET.relative_to(TARGET.parents[2])}: {TARGET.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
