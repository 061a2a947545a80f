"""Chunking with the real MiniLM tokenizer: size, exact character ranges, overlap, pages,
sentence-aware ends."""

from __future__ import annotations

import itertools
import random

import pytest

from mmrag.pipelines.text.chunking import Chunk, chunk_blocks
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.pipelines.text.extract import BLOCK_SEPARATOR, TextBlock

VOCAB = (
    "harbour lantern internationalisation meadow violin unbelievably saffron orbit tokenization "
    "canyon falcon ledger photosynthesis thistle comet walnut ember quartz electroencephalogram "
    "willow barley cobalt prism tunnel orchard beacon nickel fennel mosaic pylon tundra velvet "
    "TX-4410 3.14 e-mail naïve café Zürich 東京 emoji🙂 don't co-operate"
).split()


def blocks(*pages: tuple[int | None, str]) -> list[TextBlock]:
    """Blocks laid out as extract_text lays them out: joined by BLOCK_SEPARATOR."""
    out, offset = [], 0
    for page, text in pages:
        out.append(TextBlock(text, page, offset))
        offset += len(text) + len(BLOCK_SEPARATOR)
    return out


def full_text(bs: list[TextBlock]) -> str:
    return BLOCK_SEPARATOR.join(b.text for b in bs)


def prose(seed: int, sentences: int) -> str:
    rng = random.Random(seed)
    paras, para = [], []
    for i in range(sentences):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(6, 22))]
        para.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?", ","]))
        if i % 5 == 4:
            paras.append(" ".join(para))
            para = []
    paras.append(" ".join(para))
    return "\n\n".join(p for p in paras if p)


def n_tokens(enc: TextEncoder, text: str) -> int:
    return len(enc.tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize(("size", "overlap"), [(32, 8), (64, 16), (50, 0), (128, 32)])
def test_chunks_fit_the_size_and_are_exact_slices(minilm: TextEncoder, size, overlap) -> None:
    bs = blocks((None, prose(1, 40)), (None, prose(2, 25)))
    text = full_text(bs)
    chunks = chunk_blocks(bs, minilm.tokenizer, size, overlap)
    assert len(chunks) > 4
    for c in chunks:
        assert c.text == text[c.char_start : c.char_end]
        assert c.text == c.text.strip()
        assert 0 < n_tokens(minilm, c.text) <= size, c.text
    assert chunks[0].char_start == 0
    assert chunks[-1].char_end == len(text)


def test_nothing_is_lost_between_chunks(minilm: TextEncoder) -> None:
    bs = blocks((None, prose(3, 30)))
    text = full_text(bs)
    for overlap in (0, 8):
        chunks = chunk_blocks(bs, minilm.tokenizer, 40, overlap)
        for a, b in itertools.pairwise(chunks):
            gap = text[a.char_end : b.char_start]
            assert gap.strip() == "", (overlap, gap)


def test_neighbours_overlap_when_asked(minilm: TextEncoder) -> None:
    bs = blocks((None, prose(4, 30)))
    with_overlap = chunk_blocks(bs, minilm.tokenizer, 40, 10)
    for a, b in itertools.pairwise(with_overlap):
        assert a.char_start < b.char_start < a.char_end
    shared = with_overlap[0].text[with_overlap[1].char_start - with_overlap[0].char_start :]
    assert shared and with_overlap[1].text.startswith(shared)

    without = chunk_blocks(bs, minilm.tokenizer, 40, 0)
    for a, b in itertools.pairwise(without):
        assert b.char_start >= a.char_end
    assert len(without) < len(with_overlap)


def test_chunks_never_cross_pages(minilm: TextEncoder) -> None:
    pages = [(1, prose(5, 12)), (2, "A short page."), (3, prose(6, 9)), (4, prose(7, 1))]
    bs = blocks(*pages)
    chunks = chunk_blocks(bs, minilm.tokenizer, 48, 12)
    assert {c.page for c in chunks} == {1, 2, 3, 4}
    for c in chunks:
        block = next(b for b in bs if b.page == c.page)
        assert block.char_start <= c.char_start < c.char_end
        assert c.char_end <= block.char_start + len(block.text)
    assert [c.text for c in chunks if c.page == 2] == ["A short page."]
    # pages come out in order, and each page's chunks in order
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts)


ONE_TOKEN_WORDS = (
    "red blue green house tree river stone light water fire wind road city bird".split()
)


def test_a_chunk_ends_at_a_sentence_end_in_its_last_40_percent(minilm: TextEncoder) -> None:
    assert all(n_tokens(minilm, w) == 1 for w in ONE_TOKEN_WORDS)
    first = " ".join(ONE_TOKEN_WORDS) + "."  # 14 words and a full stop: tokens 1-15 of 20
    rest = " ".join(ONE_TOKEN_WORDS * 6)  # no punctuation at all
    assert n_tokens(minilm, first) == 15
    chunks = chunk_blocks(blocks((None, f"{first} {rest}")), minilm.tokenizer, 20, 0)
    assert chunks[0].text == first
    assert chunks[1].text.startswith("red blue green")
    # without a break, chunks use the whole window
    assert n_tokens(minilm, chunks[1].text) == 20


def test_an_early_sentence_end_does_not_shorten_the_chunk(minilm: TextEncoder) -> None:
    early = "Red blue green."  # ends at token 4 of 20: inside the first 60%
    rest = " ".join(ONE_TOKEN_WORDS * 5)
    chunks = chunk_blocks(blocks((None, f"{early} {rest}")), minilm.tokenizer, 20, 0)
    assert chunks[0].text.startswith(early + " red blue")
    assert n_tokens(minilm, chunks[0].text) == 20


def test_paragraph_break_counts_as_a_sentence_end(minilm: TextEncoder) -> None:
    first_para = " ".join(ONE_TOKEN_WORDS[:12]) + " " + " ".join(ONE_TOKEN_WORDS[:6])  # 18
    text = first_para + "\n\n" + " ".join(ONE_TOKEN_WORDS * 4)
    chunks = chunk_blocks(blocks((None, text)), minilm.tokenizer, 24, 0)
    assert n_tokens(minilm, first_para) == 18  # between 60% and 100% of the window
    assert chunks[0].text == first_para
    assert chunks[1].text.startswith("red blue")


def test_chunks_do_not_start_or_end_inside_a_word(minilm: TextEncoder) -> None:
    """A word of several word pieces is never split between chunks (unless longer than one)."""
    bs = blocks((None, prose(8, 40)))
    text = bs[0].text
    for size, overlap in [(24, 0), (24, 7), (40, 13)]:
        for c in chunk_blocks(bs, minilm.tokenizer, size, overlap):
            before = text[c.char_start - 1 : c.char_start]
            after = text[c.char_end : c.char_end + 1]
            assert not (before.isalnum() and c.text[0].isalnum()), (size, overlap, c.text)
            assert not (after.isalnum() and c.text[-1].isalnum()), (size, overlap, c.text)


@pytest.mark.parametrize(("size", "overlap"), [(32, 32), (32, 40), (16, 100)])
def test_overlap_not_smaller_than_size_is_refused(minilm, size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match=rf"overlap \({overlap}\).*size \({size}\)"):
        chunk_blocks(blocks((None, "Some text.")), minilm.tokenizer, size, overlap)


def test_empty_and_whitespace_blocks_give_no_chunks(minilm: TextEncoder) -> None:
    assert chunk_blocks([], minilm.tokenizer, 32, 8) == []
    assert chunk_blocks(blocks((1, ""), (2, "   \n\t ")), minilm.tokenizer, 32, 8) == []
    bs = blocks((1, " \n "), (2, "Only this page has words."), (3, ""))
    assert chunk_blocks(bs, minilm.tokenizer, 32, 8) == [
        Chunk("Only this page has words.", 2, bs[1].char_start, bs[1].char_start + 25)
    ]


def test_one_long_unbroken_token_run_still_terminates(minilm: TextEncoder) -> None:
    text = "x" * 3000  # one "word" of many word pieces, no spaces, no breaks
    chunks = chunk_blocks(blocks((None, text)), minilm.tokenizer, 32, 31)
    assert chunks
    assert chunks[-1].char_end == len(text)
    assert all(c.text == text[c.char_start : c.char_end] for c in chunks)
