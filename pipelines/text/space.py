"""The `text` space: sentence-transformers vectors plus BM25 over the same rows.

It holds every kind of text mmrag finds: document chunks, photo labels and OCR words, speech
transcripts and sound tags, which other modalities' pipelines send here by the space's name.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.kinds import QueryKind
from mmrag.pipelines.base import Encoded, LabelSet, LazySpace, unit
from mmrag.pipelines.text import onnx_query
from mmrag.pipelines.text.e5_pack import E5PackEncoder, is_pack_model
from mmrag.pipelines.text.encoder import TextEncoder, e5_prefixes, load_text_encoder
from mmrag.pipelines.text.onnx_query import OnnxTextEncoder
from mmrag.store.schema import Space


class TextSpace(LazySpace):
    """The SpaceEncoder of the `text` space; photo label sets are embedded here too."""

    name = "text"

    def __init__(
        self,
        model_name: str,
        device: str = "auto",
        batch_size: int = 64,
        encoder: TextEncoder | E5PackEncoder | None = None,
        query_cache: Path | None = None,
    ) -> None:
        super().__init__(model_name, device)
        self.batch_size = batch_size
        self._encoder = encoder  # an already loaded model (tests share one)
        self._label_vectors: dict[str, np.ndarray] = {}  # label name -> its vector
        # Where the light query encoder is exported (onnx_query); None: queries use the model.
        self.query_cache = query_cache
        self._light: OnnxTextEncoder | None = None
        self._light_tried = False
        self._export_tried = False

    def _load(self) -> TextEncoder | E5PackEncoder:
        encoder = load_text_encoder(self.model_name, self.requested_device)
        encoder.model  # noqa: B018 - load now, under the lock
        return encoder

    @cached_property
    def space(self) -> Space:
        light = self.light_encoder()
        dim = light.dim if light else self.encoder.dim
        return Space(self.name, self.model_name, dim, bm25=True)

    def light_encoder(self) -> OnnxTextEncoder | None:
        """The exported query encoder, used while the model itself is not loaded in this
        process (a search in a new process); None when there is none (yet) or it is off. An
        engine pack has none: it loads without torch in well under a second."""
        if self._encoder is not None or self.query_cache is None or is_pack_model(self.model_name):
            return None
        with self._lock:
            if not self._light_tried:
                self._light_tried = True
                self._light = OnnxTextEncoder.load(self.query_cache, self.model_name)
        return self._light

    def export_query_encoder(self) -> None:
        """Export the light query encoder once per model, where the cache has no current export
        of it (loading the model for that where this process has not: after a model switch,
        or an ingest that found nothing new), so the next new process searches without torch.
        An engine pack needs none."""
        if self.query_cache is None or self._export_tried or is_pack_model(self.model_name):
            return
        self._export_tried = True
        meta = onnx_query.read_meta(onnx_query.export_folder(self.query_cache, self.model_name))
        loaded = self._encoder
        same = loaded is None or (meta and meta.source_path == str(loaded.resolved.path))
        if meta and meta.current(self.model_name) and same:
            return
        encoder = self.encoder  # loads it where this process has not
        if isinstance(encoder, TextEncoder):
            onnx_query.export(
                encoder.model, self.model_name, encoder.resolved.path, self.query_cache
            )

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
        """Query rows: with the model's query prefix (E5), the light encoder's included."""
        light = self.light_encoder()
        if light is not None:
            prefix, _ = e5_prefixes(self.model_name)
            return light.encode([prefix + t for t in inputs])
        vectors = self.encoder.encode_query(list(inputs), batch_size=self.batch_size)
        self.export_query_encoder()
        return vectors

    def _encode_label_sets(self, sets: list[LabelSet]) -> np.ndarray:
        new = sorted({n for s in sets for n, _ in s.labels} - self._label_vectors.keys())
        if new:
            self._label_vectors.update(zip(new, self.encode_texts(new), strict=True))
        out = np.zeros((len(sets), self.encoder.dim), dtype=np.float32)
        for row, s in zip(out, sets, strict=True):
            for name, p in s.labels:
                row += p * self._label_vectors[name]
        return unit(out)
