"""The test suite's sample makers (espeak-ng speech, photo slideshows), for the benchmarks, and
short abstract-like documents (`short_abstracts`) made here.

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


_SUBJECTS = (
    "We study",
    "This paper examines",
    "Our survey of",
    "The authors measure",
    "A field trial compared",
    "Recent work on",
)
_VERBS = ("improves", "reduces", "predicts", "explains", "limits", "doubles", "stabilises")


def _vocabulary() -> list[str]:
    """English words of four letters or more from the sample library's notes and recipes."""
    import re

    docs = TESTS.parent / "data" / "library" / "docs"
    words: set[str] = set()
    for f in sorted(docs.rglob("*")):
        if f.suffix in {".md", ".txt"}:
            text = f.read_text("utf-8", "replace")
            words.update(w.lower() for w in re.findall(r"[A-Za-z]{4,}", text))
    if len(words) < 100:
        raise FileNotFoundError(f"too few words under {docs} for sample abstracts")
    return sorted(words)


def short_abstracts(dest: Path, n: int, seed: int = 17) -> list[Path]:
    """`n` short plain-text files like paper abstracts (2-5 sentences of 8-16 words each), the
    same for the same seed. Each file draws its own terms from a few thousand words, so no two
    chunks are alike and a content hash never links one file to another."""
    import random

    rng = random.Random(seed)
    vocabulary = _vocabulary()
    out: list[Path] = []
    for i in range(n):
        terms = rng.sample(vocabulary, 12)
        sentences = []
        for _ in range(rng.randint(2, 5)):
            words = rng.sample(terms, 3) + rng.choices(terms, k=rng.randint(5, 13))
            rng.shuffle(words)
            verb = rng.choice(_VERBS)
            sentences.append(
                f"{rng.choice(_SUBJECTS)} {words[0]} that {verb} {' '.join(words[1:])}."
            )
        path = dest / f"{i // 1000:03d}" / f"abstract{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"Abstract {i}. " + " ".join(sentences) + "\n", encoding="utf-8")
        out.append(path)
    return out
