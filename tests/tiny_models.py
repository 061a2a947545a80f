"""Tiny randomly initialised models built inside tests, for mechanics (never for quality)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORDS = "the a cat dog sat on mat ran fast slow red blue house car tree".split()


def tiny_bert(folder: Path, max_seq_length: int) -> Path:
    """A randomly initialised 32-d, 1-layer BERT saved as a sentence-transformers model."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    hf = folder / "hf"
    config = _bert(hf, WORDS)
    BertModel(config).save_pretrained(hf)
    try:  # sentence-transformers >= 6 moved the modules; older releases keep `models`
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # pragma: no cover
        from sentence_transformers.models import Pooling, Transformer

    word = Transformer(str(hf), max_seq_length=max_seq_length)
    pool = Pooling(config.hidden_size, pooling_mode="mean")
    out = folder / "st"
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(out))
    return out


def tiny_cross_encoder(folder: Path, words: Sequence[str]) -> Path:
    """A randomly initialised 1-layer BERT with one output (a cross-encoder's shape) that knows
    each of `words` as a whole token, saved as Hugging Face files."""
    from transformers import BertForSequenceClassification

    # larger random weights than BERT's: the scores of different texts stand clearly apart
    config = _bert(folder, words, num_labels=1, initializer_range=0.3)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def _bert(folder: Path, words: Sequence[str], **more: Any) -> Any:
    """The config of a 32-d, 1-layer BERT (seeded) whose tokenizer, saved in `folder`, knows
    each of `words` as a whole token."""
    import torch
    from transformers import BertConfig, BertTokenizerFast

    torch.manual_seed(0)
    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    # vocab= (the words themselves): transformers 5 ignores vocab_file= here, which would turn
    # every word into [UNK] and leave the tests measuring nothing
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    assert tokenizer.unk_token_id not in tokenizer(" ".join(words))["input_ids"]
    tokenizer.save_pretrained(folder)
    return BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
        **more,
    )
