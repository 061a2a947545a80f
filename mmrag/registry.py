"""The one table of vector spaces: what each is, which setting picks its model, what it holds
and which queries reach it. Adding a space is an entry here (or `register()` from a plugin or a
test) plus its encoder; the composition root (`mmrag.app`) builds pipelines and the searcher
from this table, so the CLI, search, fusion and rendering need no edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag.kinds import Modality, QueryKind

if TYPE_CHECKING:
    from mmrag.pipelines.base import SpaceEncoder
    from mmrag.settings import Settings


@dataclass(frozen=True)
class SpaceSpec:
    name: str
    build: Callable[[Settings, str], SpaceEncoder]  # (settings, model name) -> encoder (lazy)
    writes: frozenset[Modality]  # the segment modalities its collection holds
    queries: frozenset[QueryKind]  # the query kinds that search it
    extra: str = ""  # the pip extra its libraries come with
    full_text: bool = False  # BM25 beside the dense vectors (hybrid search)
    # (model name) -> where it would load from, without loading it (`mmrag models
    # --candidates`); raises ModelNotAvailable saying how to get it. None: not known.
    locate: Callable[[str], str] | None = None

    @property
    def setting(self) -> str:
        """Where its model is configured: `<name>_model`, or `models.<name>` for a space that
        has no field of its own in Settings."""
        from mmrag.settings import Settings

        own = f"{self.name}_model"
        return own if own in Settings.model_fields else f"models.{self.name}"

    def model(self, settings: Settings) -> str:
        """The configured model; empty means the space is off."""
        return settings.model_for(self.name)


SPACES: dict[str, SpaceSpec] = {}


def register(spec: SpaceSpec) -> SpaceSpec:
    SPACES[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    SPACES.pop(name, None)


def spaces_writing(modality: Modality) -> list[SpaceSpec]:
    return [spec for spec in SPACES.values() if modality in spec.writes]


# -- the built-in spaces -------------------------------------------------------------------------


def _text(settings: Settings, model: str) -> SpaceEncoder:
    from mmrag.pipelines.text.space import TextSpace

    light = settings.cache_dir if settings.query_encoder == "onnx" else None
    return TextSpace(model, settings.device, settings.embed_batch_size, query_cache=light)


def _image(settings: Settings, model: str) -> SpaceEncoder:
    from mmrag.pipelines.image.spaces import ImageSpace

    return ImageSpace(model, settings.device, settings.label_top_k, settings.label_min_prob)


def _clip(settings: Settings, model: str) -> SpaceEncoder:
    from mmrag.pipelines.image.spaces import ClipSpace

    return ClipSpace(model, settings.device)


def _audio(settings: Settings, model: str) -> SpaceEncoder:
    from mmrag.pipelines.audio.spaces import AudioSpace

    return AudioSpace(model, settings.device)


def _locate_text(model: str) -> str:
    from mmrag.pipelines.text.encoder import locate_text_model

    return locate_text_model(model)


def _locate_image(model: str) -> str:
    from mmrag.pipelines.image.encoders import locate_image_model

    return locate_image_model(model)


def _locate_clip(model: str) -> str:
    from mmrag.pipelines.model_resolver import resolve_model

    return resolve_model(model).source


def _locate_audio(model: str) -> str:
    from mmrag.pipelines.audio.encoders import locate_audio_model

    return locate_audio_model(model)


def locate_speech(model: str) -> str:
    """The transcriber is no space, but its model is located the same way."""
    from mmrag.pipelines.audio.speech import resolve_whisper

    return resolve_whisper(model).source


TEXTS = frozenset(
    {
        Modality.DOCUMENT,
        Modality.LABEL,
        Modality.OCR,
        Modality.TRANSCRIPT,
        Modality.TAGS,
        Modality.SHOT_LABEL,
    }
)
PICTURES = frozenset({Modality.IMAGE, Modality.SHOT})
SOUNDS = frozenset({Modality.AUDIO, Modality.RECORDING})

register(
    SpaceSpec(
        "text", _text, TEXTS, frozenset({QueryKind.TEXT}), full_text=True, locate=_locate_text
    )
)
register(
    SpaceSpec(
        "image",
        _image,
        PICTURES,
        frozenset({QueryKind.IMAGE, QueryKind.VIDEO}),
        "image",
        locate=_locate_image,
    )
)
register(
    SpaceSpec(
        "clip",
        _clip,
        PICTURES,
        frozenset({QueryKind.TEXT, QueryKind.IMAGE, QueryKind.VIDEO}),
        "image",
        locate=_locate_clip,
    )
)
register(
    SpaceSpec("audio", _audio, SOUNDS, frozenset({QueryKind.AUDIO}), "audio", locate=_locate_audio)
)


# -- query-side decoding, per query kind ---------------------------------------------------------


def _pictures(path: Path, spaces: list[Any]) -> list[Any]:
    from mmrag.pipelines.image.query import query_pictures

    return query_pictures(path, spaces)


def _frames(path: Path, spaces: list[Any]) -> list[Any]:
    from mmrag.pipelines.video.query import query_frames

    return query_frames(path, spaces)


# A query file -> the inputs every space it reaches encodes (decoded once for all of them). An
# audio clip goes to its space as a path: each audio model reads it at its own sample rate.
QUERY_DECODERS: dict[QueryKind, Callable[[Path, list[Any]], list[Any]]] = {
    QueryKind.IMAGE: _pictures,
    QueryKind.VIDEO: _frames,
    QueryKind.AUDIO: lambda path, spaces: [path],
}
