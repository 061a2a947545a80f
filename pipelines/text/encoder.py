"""The text space's encoder: a sentence-transformers model behind one typed `encode()`, or
an engine pack chosen by its name (`load_text_encoder`)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from mmrag.pipelines.base import pick_device, unit
from mmrag.pipelines.model_resolver import ResolvedModel, resolve_model

if TYPE_CHECKING:
    from mmrag.pipelines.text.e5_pack import E5PackEncoder

log = logging.getLogger(__name__)


# E5 models were trained with "query: " before a question and "passage: " before a text; both
# sides without them score worse. The instruct variants want a task instruction instead.
_E5 = re.compile(r"(^|[/_-])e5([_-]|$)", re.IGNORECASE)


def e5_prefixes(name: str) -> tuple[str, str]:
    """(query prefix, passage prefix) for a model name or path: E5-style models need them."""
    base = name.rstrip("/").lower()
    if _E5.search(base) and "instruct" not in base:
        return "query: ", "passage: "
    return "", ""


def load_text_encoder(name: str, device: str = "auto") -> TextEncoder | E5PackEncoder:
    """The text space's encoder for `name`: an engine pack where the name is one
    (multilingual-e5-small), else a sentence-transformers model."""
    from mmrag.pipelines.text.e5_pack import E5PackEncoder, is_pack_model

    if is_pack_model(name):
        return E5PackEncoder(name, device)
    return TextEncoder(name, device)


def locate_text_model(name: str) -> str:
    """Where a text model would load from (local folder, cache, hub, offline pack), without
    loading it; raises ModelNotAvailable saying how to get it."""
    from mmrag.pipelines.text.e5_pack import is_pack_model, resolve_pack

    return (resolve_pack(name) if is_pack_model(name) else resolve_model(name)).source


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
        self.query_prefix, self.passage_prefix = e5_prefixes(name)

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
        """The model's max sequence length, less the passage prefix's tokens (E5 models), so
        a full chunk is not cut short by its prefix."""
        prefix = self.passage_prefix
        words = prefix.rstrip()  # its space joins the first word's piece
        taken = len(self.tokenizer(words, add_special_tokens=False)["input_ids"]) if words else 0
        return int(self.model.max_seq_length) - taken

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, one row per passage (cosine = inner product)."""
        return self._encode([self.passage_prefix + t for t in texts], batch_size)

    def encode_query(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self._encode([self.query_prefix + t for t in texts], batch_size)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
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
