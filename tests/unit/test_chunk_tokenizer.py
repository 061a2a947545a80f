"""The chunker's shared tokenizer (pipelines/text/pipeline.py `Offsets`): the real MiniLM
tokenizer's Rust core, copied once, gives exactly the offsets and chunks that calling the
transformers tokenizer gives, and reader threads share it."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import pytest

from mmrag.pipelines.text.chunking import chunk_blocks
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.pipelines.text.extract import TextBlock
from mmrag.pipelines.text.pipeline import Offsets, TextPipeline
from mmrag.pipelines.text.space import TextSpace

TEXTS = [
    "Hello  world.\n\nNaïve café in Zürich, 東京 and emoji🙂; don't co-operate! ",
    "  \t leading blanks and a trailing tab\t",
    "zero\u200bwidth joiners\u200d and soft\u00adhyphens, ligatures ﬁ and Ⅻ ½",
    "control\x01chars\x7f and NUL-free text " * 3,
    "photosynthesis electroencephalogram internationalisation " * 60,  # several chunks
]


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return TextEncoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu").tokenizer


@pytest.mark.parametrize("text", TEXTS)
def test_offsets_and_chunks_are_the_transformers_tokenizers(tokenizer: object, text: str) -> None:
    fast = Offsets.of(tokenizer)
    assert fast is not None
    slow = copy.deepcopy(tokenizer)
    want = slow(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    got = fast(text)
    assert [tuple(o) for o in got["offset_mapping"]] == [tuple(o) for o in want["offset_mapping"]]
    assert list(got["input_ids"]) == list(want["input_ids"])
    block = [TextBlock(text, 3, 17)]
    for size, overlap in ((254, 32), (16, 4)):
        assert chunk_blocks(block, fast, size, overlap) == chunk_blocks(block, slow, size, overlap)


def test_the_encoders_padding_does_not_reach_the_copy(tokenizer: object) -> None:
    fast = Offsets.of(tokenizer)
    assert fast is not None
    tokenizer(["a", "a much longer text"], padding="max_length", max_length=40, truncation=True)
    assert len(fast("a")["offset_mapping"]) == 1
    assert len(fast("word " * 300)["offset_mapping"]) == 300


def test_readers_share_one_copy_and_another_kind_gets_its_own(tokenizer: object) -> None:
    space = TextSpace("sentence-transformers/all-MiniLM-L6-v2", "cpu", 8)
    pipeline = TextPipeline(space)
    with ThreadPoolExecutor(4) as pool:
        seen = set(map(id, pool.map(lambda _: pipeline._tokenizer(), range(8))))
    assert len(seen) == 1 and isinstance(pipeline._tokenizer(), Offsets)
    assert Offsets.of(object()) is None
