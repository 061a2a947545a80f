"""One typed settings object: defaults < mmrag.toml < MMRAG_* environment < CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def config_file() -> Path:
    """The TOML file to read: $MMRAG_CONFIG, else ./mmrag.toml (absent is fine)."""
    return Path(os.environ.get("MMRAG_CONFIG", "mmrag.toml"))


class Settings(BaseSettings):
    """Everything a run can be told; CLI flags are passed as keyword arguments."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", extra="forbid")

    milvus_uri: str = Field(
        "data/milvus.db",
        description="Milvus Lite store (a path ending in .db) or a server URI http://host:19530",
    )
    milvus_token: str = Field("", description="Token for a Milvus server (user:password)")
    catalog: Path = Field(Path("data/catalog.sqlite"), description="SQLite ingestion catalog")
    collection_prefix: str = "mmrag"
    index_type: str = Field("HNSW", description="Dense vector index (validated per backend)")

    text_model: str = Field(DEFAULT_TEXT_MODEL, description="Hugging Face id or local path")
    chunk_tokens: int | None = Field(
        None, ge=16, description="Tokens per chunk; default: the model's max sequence length"
    )
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by neighbouring chunks")

    image_model: str = Field(
        "resnet50",
        description="torchvision classifier name or an offline pack (efficientnet-lite0)",
    )
    thumbnails: Path = Field(Path("data/thumbs"), description="Thumbnail cache, one per content")
    max_image_mpx: int = Field(100, ge=1, description="Larger images are refused (bomb guard)")
    label_top_k: int = Field(5, ge=0, description="ImageNet labels kept per image, as text")
    ocr: bool = Field(True, description="Read printed words in images (needs Tesseract)")
    ocr_lang: str = Field("eng", description="Tesseract language(s), e.g. eng+deu")
    label_min_prob: float = Field(0.1, ge=0.0, le=1.0, description="Least probability of a label")

    hybrid_fusion: Literal["weighted", "rrf"] = Field(
        "weighted", description="How hybrid search merges dense and BM25 results"
    )
    dense_weight: float = Field(0.5, ge=0.0, le=1.0, description="Dense share in weighted fusion")

    embed_batch_size: int = Field(64, ge=1)
    write_batch_size: int = Field(512, ge=1)
    read_workers: int = Field(2, ge=1, description="Threads that read, extract and chunk files")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_file_mb: int = Field(200, ge=1, description="Files larger than this are reported, not read")

    @field_validator("milvus_uri")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @property
    def is_lite(self) -> bool:
        """A local path (not http/https/tcp/unix URI) means the embedded Milvus Lite store."""
        return "://" not in self.milvus_uri

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml)


def load_settings(**flags: object) -> Settings:
    """Settings with CLI flags on top; flags left as None do not override anything."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})
