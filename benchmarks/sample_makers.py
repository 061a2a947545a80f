"""The test suite's sample makers (espeak-ng speech, photo slideshows), for the benchmarks.

tests/ is not an installed package, so the two modules are loaded from their files rather than
by putting the repository on sys.path, which would also make its source folders (`ingest`,
`pipelines`, `store`, ...) importable under names other than the installed `mmrag`'s. Neither
module imports from `tests` (tests/image_samples.py does, so it is not loaded here).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _load(name: str) -> ModuleType:
    key = f"_mmrag_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, TESTS / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {TESTS / name}.py (the benchmarks need tests/)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # before exec: dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[key]


def audio_samples() -> ModuleType:
    """tests/audio_samples.py: speak, silence, noise, read_wav_16k, write_wav, ..."""
    return _load("audio_samples")


def video_samples() -> ModuleType:
    """tests/video_samples.py: photo, letterbox, photo_video, mux_audio, ..."""
    return _load("video_samples")
