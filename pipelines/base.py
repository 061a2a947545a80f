"""The contracts every modality shares: pieces, the one encoder call, lazy models, errors.

A pipeline turns one file into `Piece`s (CPU work: decode, extract, cut; runs in reader
threads). Each piece names the space it goes to, and each space has one `SpaceEncoder` that
turns a batch of payloads into vectors (model work, batched across files by the runner). One
file may feed several spaces (a photo: `image`, `clip`, and its labels in `text`), and several
pipelines may share an encoder. The runner, not the pipeline, talks to the catalog and Milvus.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from mmrag.kinds import MediaType, Modality, QueryKind
from mmrag.pipelines.model_resolver import ModelNotAvailable
from mmrag.store.schema import Segment, Space, collection_name


class MediaError(Exception):
    """A file cannot be turned into pieces; str() says why, in plain words, for the user."""


class NoVideoStream(MediaError):
    """A video container with sound only (a podcast saved as .mp4): a recording, not a video."""


log = logging.getLogger(__name__)
_warnings: ContextVar[list[str] | None] = ContextVar("mmrag_media_warnings", default=None)


@contextmanager
def collecting_warnings() -> Iterator[list[str]]:
    """Gather what `media_warning` says while one file is prepared (in this thread)."""
    found: list[str] = []
    token = _warnings.set(found)
    try:
        yield found
    finally:
        _warnings.reset(token)


_progress: ContextVar[Callable[[str], None] | None] = ContextVar("mmrag_progress", default=None)


@contextmanager
def reporting_progress(report: Callable[[str], None]) -> Iterator[None]:
    """Send what `media_progress` says while one file is prepared (in this thread) to
    `report`: how far a long file has got (a 200-page scan reads for minutes)."""
    token = _progress.set(report)
    try:
        yield
    finally:
        _progress.reset(token)


def media_progress(message: str) -> None:
    """How far the file being prepared has got, e.g. "12/200 scanned pages read"; logged when
    no ingest is listening."""
    report = _progress.get()
    if report is None:
        log.info(message)
    else:
        report(message)


def media_warning(message: str) -> None:
    """Something the user should know about a file that was still indexed (it ends early, part
    of it could not be decoded): reported with the file in the ingest summary and in `status`.
    Said once per file however many passes decode it; logged when no ingest is listening."""
    found = _warnings.get()
    if found is None:
        log.warning(message)
    elif message not in found:
        found.append(message)


def one_line(exc: BaseException | str) -> str:
    """A message on one line (a model's how-to-get-it advice spans several)."""
    return " ".join(str(exc).split())


def space_skipped(space: str, exc: BaseException) -> str:
    """The file's warning when one of its spaces has no model here: the other spaces are
    written, and a later ingest adds this one once its model can be had. The same words name
    the space in `warning_about`."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"not in the {space} space yet: {first.replace('; ', ', ')}"


S = TypeVar("S", bound="SpaceEncoder")  # a kind of space (PhotoSpace, FrameSpace), kept


def usable_spaces(
    spaces: Iterable[S], only: frozenset[str] | None = None
) -> tuple[list[S], ModelNotAvailable | None]:
    """The spaces a file goes to (those in `only`, if given) whose model can be had, and the
    first reason one could not: each without is left out with a warning naming it
    (space_skipped), so the file's other spaces are still written."""
    found: list[S] = []
    missing: ModelNotAvailable | None = None
    for space in spaces:
        if only is not None and space.name not in only:
            continue
        try:
            space.space  # noqa: B018 - loads the model (the dimension comes from it)
        except ModelNotAvailable as exc:
            media_warning(space_skipped(space.name, exc))
            missing = missing or exc
            continue
        found.append(space)
    return found, missing


def warning_about(warning: str, space: str) -> bool:
    """Whether a part of a file's warning says the file is not in `space` (space_skipped, or a
    document's page pictures)."""
    return f"not in the {space} space" in warning


def unit(rows: Any) -> np.ndarray:
    """Rows scaled to unit length, as float32 (cosine = inner product); zero rows stay zero.
    Every space's vectors pass through here."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def camera_name(make: str | None, model: str | None) -> str | None:
    """ "Canon" + "Canon EOS R5" -> "Canon EOS R5", not "Canon Canon EOS R5"."""
    if make and model:
        return model if model.lower().startswith(make.split()[0].lower()) else f"{make} {model}"
    return make or model


def pick_device(device: str) -> str:
    """`auto` means CUDA when torch sees a GPU, else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Piece:
    """A segment waiting for its vector."""

    payload: Any  # what the space's encoder takes: text for the text space
    modality: Modality
    start: float
    end: float
    text: str
    page: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    space: str = "text"  # the SpaceEncoder (and so the collection) this piece goes to
    # The space whose model gave rise to it when that is another one (an image's labels come
    # from `image`, a recording's sound tags from `audio`); empty: its own space. When a space is
    # embedded again alone (its model was missing or ran on a fallback), what it gave rise to
    # elsewhere is replaced with it, and nothing else there.
    origin: str = ""
    # Set when the pipeline embedded the piece itself: a long recording's windows are embedded
    # as they are decoded, so its samples never sit in memory whole. Such pieces skip batching.
    vector: np.ndarray | None = None

    def segment(self, media_id: str, space: str, index: int, vector: np.ndarray) -> Segment:
        """Its segment, `index` counting the media's pieces of this space and origin. The id is
        deterministic (a redo overwrites, never duplicates) and says where a derived piece came
        from: `<media>:text:3` is the text's own, `<media>:text:image.0` the image model's."""
        own = not self.origin or self.origin == space
        return Segment(
            id=f"{media_id}:{space}:{index}"
            if own
            else f"{media_id}:{space}:{self.origin}.{index}",
            media_id=media_id,
            modality=str(self.modality),
            start=self.start,
            end=self.end,
            text=self.text,
            vector=vector,
            page=self.page,
            meta=self.meta,
        )


def segment_origin(segment_id: str, media_id: str, space: str) -> str:
    """The space whose model gave rise to a segment of `space` (see Piece.segment)."""
    rest = segment_id.removeprefix(f"{media_id}:{space}:")
    return rest.rpartition(".")[0] or space


@dataclass
class Encoded:
    """What every space's `encode` returns: unit vectors, one per payload, and the pieces the
    model's output gave rise to, per payload (an image's class labels become a text piece).
    Derived pieces are queued for their own space and written with the same media, so they are
    redone and deleted together with it."""

    vectors: np.ndarray
    derived: list[list[Piece]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.derived:
            self.derived = [[] for _ in range(len(self.vectors))]


@dataclass(frozen=True)
class LabelSet:
    """A classifier's labels with their probabilities, as one text-space vector: the
    probability-weighted mean of the labels' own vectors (ConSE, Norouzi et al. 2014). A label
    comes from a closed vocabulary (1000 ImageNet classes), so each is embedded once per run
    however many photos carry it, and the vector says how sure the classifier was."""

    labels: tuple[tuple[str, float], ...]

    @property
    def text(self) -> str:
        return ", ".join(name for name, _ in self.labels)


class SpaceEncoder(Protocol):
    """The model of one vector space: one typed `encode` for ingest, one for queries."""

    name: str  # the space, e.g. "text"

    @property
    def device(self) -> str: ...  # where its model runs ("cpu", "cuda", ...), without loading it

    @property
    def space(self) -> Space: ...  # loads the model (the dimension comes from it)

    def collection(self, prefix: str) -> str: ...  # known without loading the model

    def encode(self, payloads: list[Any]) -> Encoded: ...

    def encode_query(self, kind: QueryKind, inputs: list[Any]) -> np.ndarray:
        """Query side: decoded query inputs (texts, pictures, a clip's path) -> unit rows."""
        ...

    def info(self) -> dict[str, Any]: ...  # name, source, dim, ... for `mmrag models` (loads)


@dataclass
class ReadResult:
    """What a pipeline's reading step returns when the runner may run it in a reader process
    (ingest/workers.py): `arrays` (numpy arrays or CPU tensors: pixels) travel back through
    shared memory, `value` is pickled (small: metadata, flags, words)."""

    value: Any
    arrays: dict[str, Any] = field(default_factory=dict)


class Pipeline(Protocol):
    media: MediaType  # the kind of file it takes
    primary: tuple[str, ...]  # spaces every file it takes is written to (done = in all of them)

    def encoders(self) -> dict[str, SpaceEncoder]: ...  # every space its pieces go to

    # MediaError; ModelNotAvailable when no model for the file can be had. A space whose model
    # is missing is left out with a warning (space_skipped), the file's other spaces written.
    # `only` (a stored file that lacks some spaces): the pieces of those spaces, and of what
    # their models give rise to, are enough; the runner keeps no others. Passed only then.
    def prepare(
        self, path: str, fmt: str, media_id: str, only: frozenset[str] | None = None
    ) -> list[Piece]: ...


class LazyModel:
    """A model that loads once, on first use (in whichever thread gets there first). A model
    that cannot be had is tried once per run, so each file is skipped with the reason rather
    than retried."""

    name = ""
    extra = ""  # the pip extra that brings this space's libraries

    def __init__(self, model_name: str, device: str = "auto") -> None:
        self.model_name = model_name
        self.requested_device = device
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
        return pick_device(self.requested_device)

    @property
    def unavailable(self) -> ModelNotAvailable | None:
        """Why the model cannot be had, once it was tried; None otherwise."""
        return self._failed

    def _load(self) -> Any:
        raise NotImplementedError


class LazySpace(LazyModel):
    """A vector space's model, loaded lazily; its collection name is known without it."""

    @property
    def space(self) -> Space:
        return Space(self.name, self.model_name, self.encoder.dim)

    def collection(self, prefix: str) -> str:
        return collection_name(prefix, self.name, self.model_name)

    def collections(self, prefix: str) -> list[str]:
        """Every collection its vectors may be in, the configured model's first (a space with
        a fallback has two: pipelines/fallback.py)."""
        return [self.collection(prefix)]

    def info(self) -> dict[str, Any]:
        """What the loaded model says of itself (name, source, dim, memory, device...)."""
        found = self.encoder.info()
        return found if isinstance(found, dict) else asdict(found)
