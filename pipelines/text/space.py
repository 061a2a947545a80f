"""The `text` space: sentence-transformers vectors plus BM25 over the same rows.

It holds every kind of text mmrag finds: document chunks, photo labels and OCR words, speech
transcripts and sound tags, which other modalities' pipelines send here by the space's name.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from mmrag.kinds import QueryKind
from mmrag.pipelines.base import Encoded, LabelSet, LazySpace, unit
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.store.schema import Space


class TextSpace(LazySpace):
    """The SpaceEncoder of the `text` space; photo label sets are embedded here too."""

    name = "text"

    def __init__(
        self,
        model_name: str,
        device: str = "auto",
        batch_size: int = 64,
        encoder: TextEncoder | None = None,
    ) -> None:
        super().__init__(model_name, device)
        self.batch_size = batch_size
        self._encoder = encoder  # an already loaded model (tests share one)
        self._label_vectors: dict[str, np.ndarray] = {}  # label name -> its vector

    def _load(self) -> TextEncoder:
        encoder = TextEncoder(self.model_name, self.requested_device)
        encoder.model  # noqa: B018 - load now, under the lock
        return encoder

    @cached_property
    def space(self) -> Space:
        return Space(self.name, self.model_name, self.encoder.dim, bm25=True)

    def encode(self, payloads: list[str | LabelSet]) -> Encoded:
        """Unit vectors for texts and label sets alike (both are searched as text)."""
        texts = [p for p in payloads if isinstance(p, str)]
        sets = [p for p in payloads if isinstance(p, LabelSet)]
        if not sets:
            return Encoded(self.encode_texts(texts))
        is_set = np.array([isinstance(p, LabelSet) for p in payloads])
        out = np.zeros((len(payloads), self.encoder.dim), dtype=np.float32)
        if texts:
            out[~is_set] = self.encode_texts(texts)
        out[is_set] = self._encode_label_sets(sets)
        return Encoded(out)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=self.batch_size)

    def encode_query(self, kind: QueryKind, inputs: list[Any]) -> np.ndarray:
        return self.encode_texts(inputs)

    def _encode_label_sets(self, sets: list[LabelSet]) -> np.ndarray:
        new = sorted({n for s in sets for n, _ in s.labels} - self._label_vectors.keys())
        if new:
            self._label_vectors.update(zip(new, self.encode_texts(new), strict=True))
        out = np.zeros((len(sets), self.encoder.dim), dtype=np.float32)
        for row, s in zip(out, sets, strict=True):
            for name, p in s.labels:
                row += p * self._label_vectors[name]
        return unit(out)
