"""What every modality pipeline provides to the ingest runner.

A pipeline turns one file into `Piece`s (CPU work: decode, extract, cut; runs in reader
threads). Each piece names the space it goes to, and each space has one `SpaceEncoder` that
turns a batch of payloads into vectors (model work, batched across files by the runner). One
file may feed several spaces (a photo: `image`, `clip`, and its labels in `text`), and several
pipelines may share an encoder. The runner, not the pipeline, talks to the catalog and Milvus.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipelines.milvus_store import Segment, Space, collection_name
from pipelines.model_resolver import ModelNotAvailable
from pipelines.text_encoder import pick_device


@dataclass
class Piece:
    """A segment waiting for its vector."""

    payload: Any  # what the space's encoder takes: text for the text space
    modality: str
    start: float
    end: float
    text: str
    page: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    space: str = "text"  # the SpaceEncoder (and so the collection) this piece goes to
    # Set when the pipeline embedded the piece itself: a long recording's windows are embedded
    # as they are decoded, so its samples never sit in memory whole. Such pieces skip batching.
    vector: np.ndarray | None = None

    def segment(self, media_id: str, space: str, index: int, vector: np.ndarray) -> Segment:
        return Segment(
            id=f"{media_id}:{space}:{index}",  # deterministic: a redo overwrites, never duplicates
            media_id=media_id,
            modality=self.modality,
            start=self.start,
            end=self.end,
            text=self.text,
            vector=vector,
            page=self.page,
            meta=self.meta,
        )


@dataclass
class Encoded:
    """Vectors, plus pieces that the model's output gave rise to, per input (an image's class
    labels become text pieces). Derived pieces are queued for their own space and written with
    the same media, so they are redone and deleted together with it."""

    vectors: np.ndarray
    derived: list[list[Piece]]


class SpaceEncoder(Protocol):
    """The model of one vector space."""

    name: str  # the space kind, e.g. "text"

    @property
    def device(self) -> str: ...  # where its model runs ("cpu", "cuda", ...), without loading it

    @property
    def space(self) -> Space: ...  # loads the model (the dimension comes from it)

    def collection(self, prefix: str) -> str: ...  # known without loading the model

    def encode(self, payloads: list[Any]) -> np.ndarray | Encoded: ...


class Pipeline(Protocol):
    modalities: frozenset[str]  # MediaKind.modality values it takes
    primary: tuple[str, ...]  # spaces every file it takes is written to (done = in all of them)

    def encoders(self) -> dict[str, SpaceEncoder]: ...  # every space its pieces go to

    def prepare(self, path: str, fmt: str, media_id: str) -> list[Piece]: ...  # MediaError


class LazyModel:
    """A model that loads once, on first use (in whichever thread gets there first). A model
    that cannot be had is tried once per run, so each file is skipped with the reason rather
    than retried."""

    name = ""
    extra = ""  # the pip extra that brings this space's libraries

    def __init__(self, settings: Any, model_name: str) -> None:
        self.settings = settings
        self.model_name = model_name
        self._encoder: Any = None
        self._failed: ModelNotAvailable | None = None
        self._lock = threading.Lock()

    @property
    def encoder(self) -> Any:
        with self._lock:
            if self._failed:
                raise self._failed
            if self._encoder is None:
                try:
                    self._encoder = self._load()
                except ModelNotAvailable as exc:
                    self._failed = exc
                    raise
                except ImportError as exc:
                    self._failed = ModelNotAvailable(
                        f"the {self.name} model needs {exc.name or exc}; "
                        f"install it with: pip install 'mmrag[{self.extra}]'"
                    )
                    raise self._failed from exc
            return self._encoder

    @property
    def device(self) -> str:
        return pick_device(self.settings.device)

    def _load(self) -> Any:
        raise NotImplementedError


class LazySpace(LazyModel):
    """A vector space's model, loaded lazily; its collection name is known without it."""

    @property
    def space(self) -> Space:
        return Space(self.name, self.model_name, self.encoder.dim)

    def collection(self, prefix: str) -> str:
        return collection_name(prefix, self.name, self.model_name)
