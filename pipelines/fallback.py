"""A space's configured model, or where it cannot be had, the offline pack's model for the same
space: one missing model must not cost a whole modality.

An air-gapped machine has none of the default public models (resnet50, PANNs CNN14, Whisper
small) but may have the offline packs (EfficientNet-Lite0, Whisper tiny.en's encoder, Whisper
tiny.en). `Fallback` stands where the space's model stands (pipelines and the runner use it as
they use a `LazySpace` or the transcriber): on first use it loads the configured model, and
only if that cannot be had, the fallback, whose vectors go to the fallback model's own
collection (the collection name carries the model), so a later run with the configured model
embeds those files again in that space alone (ingest/runner.py). `strict` (the `strict_models`
setting) means no substitute: the configured model's reason is raised.

It is chosen once per run and said once (`note`), not per file.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from mmrag.kinds import QueryKind
from mmrag.pipelines.base import Encoded, LazyModel, LazySpace, one_line
from mmrag.pipelines.model_resolver import ModelNotAvailable


class Fallback:
    """The configured model of a space (or the transcriber), else `fallback`."""

    def __init__(self, configured: Any, fallback: Any, strict: bool = False) -> None:
        self.configured: LazyModel = configured
        self.fallback: LazyModel = fallback
        self.strict = strict
        self.name = configured.name
        self.extra = configured.extra
        self._chosen: LazyModel | None = None
        self._failed: ModelNotAvailable | None = None
        self._lock = threading.Lock()

    # -- known without loading --------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The configured model: what the user asked for."""
        return self.configured.model_name

    @property
    def requested_device(self) -> str:
        return self.configured.requested_device

    @property
    def device(self) -> str:
        return self.configured.device

    def collections(self, prefix: str) -> list[str]:
        """The configured model's collection, then the fallback's."""
        return [self.configured.collection(prefix), self.fallback.collection(prefix)]

    # -- the choice (loads) -----------------------------------------------------------------

    @property
    def chosen(self) -> Any:
        """The model in use this run: the configured one where it can be had."""
        with self._lock:
            if self._chosen is None and self._failed is None:
                self._choose()
            if self._failed is not None:
                raise self._failed
            return self._chosen

    def _choose(self) -> None:
        try:
            self.configured.encoder  # noqa: B018 - loads it, or says why it cannot
            self._chosen = self.configured
            return
        except ModelNotAvailable as exc:
            why = exc
        first, _, rest = str(why).partition("\n")
        if self.strict:
            self._failed = ModelNotAvailable(
                f"{first} (strict_models: the offline '{self.fallback.model_name}' is not used "
                f"instead){chr(10) + rest if rest else ''}"
            )
            return
        try:
            self.fallback.encoder  # noqa: B018
        except ModelNotAvailable as exc:
            self._failed = ModelNotAvailable(
                f"{first}; its offline replacement '{self.fallback.model_name}' cannot be had "
                f"either: {one_line(exc)}{chr(10) + rest if rest else ''}"
            )
            return
        self._chosen = self.fallback

    def configured_available(self) -> bool:
        """Whether the configured model can be had here (loads it if so)."""
        try:
            self.configured.encoder  # noqa: B018
        except ModelNotAvailable:
            return False
        return True

    @property
    def on_fallback(self) -> bool:
        """Chosen, and the fallback was."""
        return self._chosen is self.fallback and self._chosen is not None

    @property
    def unavailable(self) -> ModelNotAvailable | None:
        """Why neither model can be had (or strict_models refused the fallback), once tried."""
        return self._failed

    @property
    def note(self) -> str | None:
        """The run's one line about this space when the configured model was tried and could
        not be had, and the fallback stands in (or the files it embedded stay): which model
        instead of which, and how to get the configured one."""
        if self.strict or self._failed is not None or self.configured.unavailable is None:
            return None
        if isinstance(self.configured, LazySpace):
            later = (
                f"its own collection; a later ingest where '{self.model_name}' can be had "
                "embeds those files with it"
            )
        else:  # the transcriber: its words go to `text`, and stay
            later = "the transcripts made with it stay"
        return (
            f"{self.name}: using the offline model '{self.fallback.model_name}' in place of "
            f"'{self.model_name}' ({later}): {one_line(self.configured.unavailable or '')}"
        )

    @property
    def encoder(self) -> Any:
        return self.chosen.encoder

    def collection(self, prefix: str) -> str:
        """The chosen model's collection (loads)."""
        return self.chosen.collection(prefix)

    def encode(self, payloads: list[Any]) -> Encoded:
        return self.chosen.encode(payloads)

    def encode_query(self, kind: QueryKind, inputs: list[Any]) -> np.ndarray:
        return self.chosen.encode_query(kind, inputs)

    def __getattr__(self, attr: str) -> Any:
        """Everything else a space or the transcriber has (space, preprocess, input_side, info,
        language...) is the chosen model's."""
        if attr.startswith("_") or attr in {"configured", "fallback", "strict"}:
            raise AttributeError(attr)
        return getattr(self.chosen, attr)
