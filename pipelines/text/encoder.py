"""The text space's encoder: a sentence-transformers model behind one typed `encode()`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mmrag.pipelines.base import pick_device, unit
from mmrag.pipelines.model_resolver import ResolvedModel, resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    path: str
    dim: int
    max_tokens: int
    parameters: int
    memory_mb: float  # parameters and buffers, in the loaded dtype


class TextEncoder:
    """Loads the model once; dimension and max tokens come from the model itself."""

    def __init__(self, name: str, device: str = "auto") -> None:
        self.resolved: ResolvedModel = resolve_model(name)
        self.device = pick_device(device)

    @cached_property
    def model(self):  # -> SentenceTransformer (import kept lazy: torch is slow to import)
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = SentenceTransformer(str(self.resolved.path), device=self.device)
        if self.device == "cuda":
            model.half()
        return model

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None)
        getter = getter or self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine = inner product)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return unit(vectors)

    def info(self) -> ModelInfo:
        params = sum(p.numel() for p in self.model.parameters())
        nbytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        nbytes += sum(b.numel() * b.element_size() for b in self.model.buffers())
        return ModelInfo(
            name=self.resolved.name,
            source=self.resolved.source,
            path=str(self.resolved.path),
            dim=self.dim,
            max_tokens=self.max_tokens,
            parameters=params,
            memory_mb=round(nbytes / 2**20, 1),
        )
