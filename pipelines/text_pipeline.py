"""Documents -> text chunks -> sentence-transformers vectors in the `text` space (with BM25)."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mmrag.settings import Settings
from pipelines.base import Piece
from pipelines.chunking import chunk_blocks
from pipelines.milvus_store import Space, collection_name
from pipelines.text_encoder import TextEncoder, pick_device
from pipelines.text_extract import extract_text


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


class TextPipeline:
    """A Pipeline for documents and the SpaceEncoder of the `text` space (shared with other
    pipelines that write text, such as image labels and transcripts)."""

    name = "text"
    modalities = frozenset({"text"})
    primary = ("text",)

    def __init__(self, settings: Settings, encoder: TextEncoder | None = None) -> None:
        self.settings = settings
        self._encoder = encoder
        self._lock = threading.Lock()
        self._local = threading.local()
        self._label_vectors: dict[str, np.ndarray] = {}  # label name -> its vector

    @property
    def encoder(self) -> TextEncoder:
        """Created on first use, once, even when reader threads ask at the same moment."""
        with self._lock:
            if self._encoder is None:
                self._encoder = TextEncoder(self.settings.text_model, self.settings.device)
                self._encoder.model  # noqa: B018 - load now, under the lock
            return self._encoder

    def encoders(self) -> dict[str, TextPipeline]:
        return {self.name: self}

    @property
    def device(self) -> str:
        return pick_device(self.settings.device)

    def collection(self, prefix: str) -> str:
        return collection_name(prefix, self.name, self.settings.text_model)

    @cached_property
    def space(self) -> Space:
        return Space("text", self.settings.text_model, self.encoder.dim, bm25=True)

    @cached_property
    def chunk_tokens(self) -> int:
        """Configured size, never above what the model reads (its max minus [CLS]/[SEP])."""
        limit = self.encoder.max_tokens - 2
        return min(self.settings.chunk_tokens or limit, limit)

    def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
        blocks = extract_text(Path(path), fmt, max_bytes=self.settings.max_file_mb * 1_000_000)
        chunks = chunk_blocks(
            blocks,
            self._tokenizer(),
            self.chunk_tokens,
            min(self.settings.chunk_overlap, self.chunk_tokens // 2),
        )
        return [
            Piece(
                payload=c.text,
                modality="document",
                start=c.char_start,
                end=c.char_end,
                text=c.text,
                page=c.page or 0,
            )
            for c in chunks
        ]

    def _tokenizer(self):
        """A private copy per reader thread: a fast tokenizer's padding state is not thread-safe,
        and the encoder pads its own batches on the main thread at the same time."""
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            tok = self._local.tokenizer = copy.deepcopy(self.encoder.tokenizer)
        return tok

    def encode(self, payloads: list[str | LabelSet]) -> np.ndarray:
        """Unit vectors for texts and label sets alike (both are searched as text)."""
        texts = [p for p in payloads if isinstance(p, str)]
        sets = [p for p in payloads if isinstance(p, LabelSet)]
        if not sets:
            return self.encode_texts(texts)
        is_set = np.array([isinstance(p, LabelSet) for p in payloads])
        out = np.zeros((len(payloads), self.encoder.dim), dtype=np.float32)
        if texts:
            out[~is_set] = self.encode_texts(texts)
        out[is_set] = self._encode_label_sets(sets)
        return out

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=self.settings.embed_batch_size)

    def _encode_label_sets(self, sets: list[LabelSet]) -> np.ndarray:
        new = sorted({n for s in sets for n, _ in s.labels} - self._label_vectors.keys())
        if new:
            self._label_vectors.update(zip(new, self.encode_texts(new), strict=True))
        out = np.zeros((len(sets), self.encoder.dim), dtype=np.float32)
        for row, s in zip(out, sets, strict=True):
            for name, p in s.labels:
                row += p * self._label_vectors[name]
            row /= np.linalg.norm(row) or 1.0
        return out
