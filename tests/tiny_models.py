"""Tiny randomly initialised models built inside tests, for mechanics (never for quality)."""

from __future__ import annotations

from pathlib import Path

WORDS = "the a cat dog sat on mat ran fast slow red blue house car tree".split()


def tiny_bert(folder: Path, max_seq_length: int) -> Path:
    """A randomly initialised 32-d, 1-layer BERT saved as a sentence-transformers model."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    hf = folder / "hf"
    hf.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    # vocab= (the words themselves): transformers 5 ignores vocab_file= here, which would turn
    # every word into [UNK] and leave the chunking tests measuring nothing
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    assert tokenizer.convert_ids_to_tokens(tokenizer(WORDS[0])["input_ids"])[1] == WORDS[0]
    tokenizer.save_pretrained(hf)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
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
