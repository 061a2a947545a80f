"""Documents -> text chunks (page and character range) for the `text` space."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mmrag.kinds import MediaType, Modality
from mmrag.pipelines.base import Piece, SpaceEncoder
from mmrag.pipelines.text.chunking import chunk_blocks
from mmrag.pipelines.text.extract import extract_text
from mmrag.pipelines.text.space import TextSpace


@dataclass(frozen=True)
class TextConfig:
    chunk_tokens: int | None = None  # None: the model's own maximum
    chunk_overlap: int = 32  # tokens shared by neighbouring chunks
    max_file_bytes: int = 200_000_000


class TextPipeline:
    """A Pipeline for documents: extract, chunk with the model's own tokenizer, write to
    `text`."""

    media = MediaType.TEXT
    primary = ("text",)

    def __init__(self, space: TextSpace, config: TextConfig | None = None) -> None:
        self.space = space
        self.config = config or TextConfig()
        self._local = threading.local()

    def encoders(self) -> dict[str, SpaceEncoder]:
        return {self.space.name: self.space}

    @cached_property
    def chunk_tokens(self) -> int:
        """Configured size, never above what the model reads (its max minus [CLS]/[SEP])."""
        limit = self.space.encoder.max_tokens - 2
        return min(self.config.chunk_tokens or limit, limit)

    def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
        blocks = extract_text(Path(path), fmt, max_bytes=self.config.max_file_bytes)
        chunks = chunk_blocks(
            blocks,
            self._tokenizer(),
            self.chunk_tokens,
            min(self.config.chunk_overlap, self.chunk_tokens // 2),
        )
        return [
            Piece(
                payload=c.text,
                modality=Modality.DOCUMENT,
                start=c.char_start,
                end=c.char_end,
                text=c.text,
                page=c.page or 0,
                space=self.space.name,
            )
            for c in chunks
        ]

    def _tokenizer(self) -> Any:
        """A private copy per reader thread: a fast tokenizer's padding state is not thread-safe,
        and the encoder pads its own batches on the main thread at the same time."""
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            tok = self._local.tokenizer = copy.deepcopy(self.space.encoder.tokenizer)
        return tok
