"""Settings: defaults < mmrag.toml < MMRAG_* environment < CLI flags, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from mmrag.settings import DEFAULT_TEXT_MODEL, Settings, load_settings


def toml(path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("MMRAG_CONFIG", str(path))
    return path


def test_defaults_without_any_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MMRAG_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    s = load_settings()
    assert s.milvus_uri == str(tmp_path / "xdg" / "mmrag" / "milvus.db")  # the per-user home
    assert s.catalog == tmp_path / "xdg" / "mmrag" / "milvus.db.catalog.sqlite"  # the store's
    assert s.text_model == DEFAULT_TEXT_MODEL
    assert s.chunk_tokens is None  # the model's own max sequence length decides
    assert (s.chunk_overlap, s.embed_batch_size, s.device) == (32, 64, "auto")


def test_each_layer_overrides_the_one_below(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    toml(
        tmp_path / "mmrag.toml",
        'chunk_tokens = 100\nread_workers = 3\nindex_type = "FLAT"\ndense_weight = 0.3\n'
        'milvus_uri = "from-toml.db"\n',
        monkeypatch,
    )
    monkeypatch.setenv("MMRAG_CHUNK_TOKENS", "120")
    monkeypatch.setenv("MMRAG_READ_WORKERS", "4")
    monkeypatch.setenv("MMRAG_MILVUS_URI", "from-env.db")

    s = load_settings(chunk_tokens=200, read_workers=None, milvus_uri=None, device="cpu")

    assert s.chunk_tokens == 200  # flag beats env and toml
    assert s.read_workers == 4  # env beats toml; a flag left as None does not override
    assert s.milvus_uri == str(Path.cwd() / "from-env.db")  # env beats toml; None flag ignored
    assert s.index_type == "FLAT"  # toml beats the default
    assert s.dense_weight == 0.3
    assert s.device == "cpu"
    assert s.embed_batch_size == 64  # untouched default


def test_toml_alone_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml(tmp_path / "elsewhere.toml", 'hybrid_fusion = "rrf"\nchunk_overlap = 5\n', monkeypatch)
    s = load_settings()
    assert (s.hybrid_fusion, s.chunk_overlap) == ("rrf", 5)


def test_mmrag_toml_in_the_working_directory_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mmrag.toml").write_text("embed_batch_size = 7\n", encoding="utf-8")
    monkeypatch.delenv("MMRAG_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert load_settings().embed_batch_size == 7


@pytest.mark.parametrize(
    ("source", "field", "value"),
    [
        ("env", "device", "tpu"),
        ("flag", "device", "tpu"),
        ("env", "chunk_overlap", "-1"),
        ("flag", "chunk_overlap", -1),
        ("flag", "chunk_tokens", 8),  # below the minimum of 16
        ("toml", "hybrid_fusion", '"sum"'),
        ("toml", "dense_weight", "1.5"),
    ],
)
def test_invalid_values_name_the_field(
    source: str, field: str, value: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags: dict[str, object] = {}
    if source == "env":
        monkeypatch.setenv(f"MMRAG_{field.upper()}", str(value))
    elif source == "toml":
        toml(tmp_path / "bad.toml", f"{field} = {value}\n", monkeypatch)
    else:
        flags[field] = value
    with pytest.raises(ValidationError) as info:
        load_settings(**flags)
    assert field in str(info.value)
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_unknown_key_in_the_toml_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    toml(tmp_path / "typo.toml", "chunk_tokns = 100\n", monkeypatch)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert "chunk_tokns" in str(info.value)
    assert "extra" in str(info.value).lower()


@pytest.mark.parametrize(
    ("uri", "lite"),
    [
        ("data/milvus.db", True),
        ("/abs/path/store.db", True),
        ("  ./x.db  ", True),
        ("http://host:19530", False),
        ("  https://in01-abc.zillizcloud.com  ", False),
        ("tcp://10.0.0.5:19530", False),
    ],
)
def test_is_lite(uri: str, lite: bool) -> None:
    s = Settings(milvus_uri=uri)
    assert s.is_lite is lite
    # a store path is made absolute once (the catalog is found from it); a URI is kept
    assert s.milvus_uri == (os.path.abspath(uri.strip()) if lite else uri.strip())


def test_profile_fills_only_the_models_left_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = Settings()
    assert (default.image_model, default.clip_model) == (
        "resnet50",
        "openai/clip-vit-base-patch32",
    )
    offline = Settings(profile="offline")
    assert (offline.image_model, offline.clip_model) == ("efficientnet-lite0", "")
    assert offline.text_model == DEFAULT_TEXT_MODEL
    monkeypatch.setenv("MMRAG_PROFILE", "offline")
    monkeypatch.setenv("MMRAG_IMAGE_MODEL", "vit_b_16")
    assert (Settings().image_model, Settings().clip_model) == ("vit_b_16", "")
    assert load_settings(profile="default").clip_model == "openai/clip-vit-base-patch32"
    with pytest.raises(ValidationError, match="profile"):
        Settings(profile="tiny")
