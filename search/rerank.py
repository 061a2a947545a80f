"""Re-scoring a text query's candidates with a cross-encoder (off unless `rerank_model` is set).

A bi-encoder (the `text` space) embeds query and passage apart; a cross-encoder reads them
together and judges their relevance better, at a cost per pair, so it only re-scores the few
candidates retrieval found. It is an optional improvement: when its model cannot be had, search
goes on without it and says so once (one line on stderr), never fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrag.kinds import Modality

# Segments whose row holds text a cross-encoder can read against the query.
TEXT_MODALITIES = frozenset(
    {
        Modality.DOCUMENT,
        Modality.TRANSCRIPT,
        Modality.LABEL,
        Modality.OCR,
        Modality.TAGS,
        Modality.SHOT_LABEL,
    }
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Reranker:
    """A sentence-transformers `CrossEncoder`, loaded on first use.

    `resolve` turns the configured id or path into a local folder (mmrag.app passes the model
    resolver, which search may not import); it raises when the model cannot be had. A failed
    load is remembered, so a batch of queries reports it once."""

    def __init__(
        self,
        model: str,
        resolve: Callable[[str], Path],
        device: str = "auto",
        warn: Callable[[str], None] = _stderr,
    ) -> None:
        self.name = model
        self.resolve = resolve
        self.device = device
        self.warn = warn
        self._model: Any = None
        self._failed = False

    def scores(self, query: str, texts: list[str]) -> list[float] | None:
        """The cross-encoder's score of each (query, text) pair; None without a model."""
        model = self._load()
        if model is None:
            return None
        if not texts:
            return []
        pairs = [(query, text) for text in texts]
        return [float(s) for s in model.predict(pairs, show_progress_bar=False)]

    def _load(self) -> Any:
        if self._model is not None or self._failed:
            return self._model
        try:
            path = self.resolve(self.name)
            from sentence_transformers import CrossEncoder
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._model = CrossEncoder(str(path), device=_device(self.device))
        except Exception as exc:  # any failure means "not here": search goes on without it
            self._failed = True
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if self.name not in reason:
                reason = f"rerank model {self.name!r}: {reason}"
            self.warn(f"note: results not reranked: {reason}")
        return self._model


def _device(device: str) -> str:
    """`auto` means CUDA when torch sees a GPU, else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
