"""Cut text into chunks measured by the embedding model's own tokenizer.

Chunks never cross a page, overlap by a number of tokens, and prefer to end at a sentence or
paragraph break so a passage is not cut mid-thought. Each keeps its exact character range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from mmrag.pipelines.text.extract import TextBlock

_BREAK_CHARS = ".!?;:\n"


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    char_start: int  # in the document's full extracted text
    char_end: int


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs: object) -> dict: ...


def chunk_blocks(
    blocks: Iterable[TextBlock], tokenizer: Tokenizer, max_tokens: int, overlap: int
) -> list[Chunk]:
    """Chunks of at most `max_tokens` tokens (special tokens excluded) from each block."""
    if overlap >= max_tokens:
        raise ValueError(
            f"chunk overlap ({overlap}) must be smaller than chunk size ({max_tokens})"
        )
    chunks: list[Chunk] = []
    for block in blocks:
        chunks.extend(_chunk_one(block, tokenizer, max_tokens, overlap))
    return chunks


def _chunk_one(block: TextBlock, tokenizer: Tokenizer, size: int, overlap: int) -> list[Chunk]:
    enc = tokenizer(
        block.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    n = len(offsets)
    out: list[Chunk] = []
    start = 0
    while start < n:
        end = min(start + size, n)
        if end < n:
            end = _sentence_end(block.text, offsets, start, end, size)
            end = _word_start(block.text, offsets, end, start + 1)
        cs, ce = offsets[start][0], offsets[end - 1][1]
        text = block.text[cs:ce]
        if text.strip():
            out.append(Chunk(text, block.page, block.char_start + cs, block.char_start + ce))
        if end >= n:
            break
        start = _word_start(block.text, offsets, max(end - overlap, start + 1), start + 1)
    return out


def _word_start(text: str, offsets: list[tuple[int, int]], i: int, lo: int) -> int:
    """Move token index `i` back to the first word piece of its word, not below `lo`, so a chunk
    neither starts nor ends inside a word; a word longer than that is cut where `i` was."""
    j = i
    while j > lo and _continues_word(text, offsets, j):
        j -= 1
    return i if _continues_word(text, offsets, j) else j


def _continues_word(text: str, offsets: list[tuple[int, int]], i: int) -> bool:
    """Token `i` is a later piece of the word before it (e.g. "##yn" in "photosynthesis")."""
    if not 0 < i < len(offsets):
        return False
    s = offsets[i][0]
    return 0 < s == offsets[i - 1][1] and text[s - 1].isalnum() and text[s].isalnum()


def _sentence_end(
    text: str, offsets: list[tuple[int, int]], start: int, end: int, size: int
) -> int:
    """Move `end` back to just after a sentence break, if one lies in the chunk's last 40%."""
    floor = start + max(1, int(size * 0.6))
    for i in range(end - 1, floor - 1, -1):
        tok_end = offsets[i][1]
        if tok_end and text[tok_end - 1] in _BREAK_CHARS:
            return i + 1
        gap = text[tok_end : offsets[i + 1][0]] if i + 1 < len(offsets) else ""
        if "\n\n" in gap:
            return i + 1
    return end
