"""One typed settings object: defaults < mmrag.toml < MMRAG_* environment < CLI flags."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mmrag.search.fusion import DENSE_WEIGHT, HYBRID_FUSION
from mmrag.store.bucket import BulkBucket

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Named model sets. `default` names the strong public models (downloaded where online);
# `offline` uses only what installs from the package index (DESIGN.md §5): no CLIP there, so
# text finds photos through their labels and OCR. A profile fills only models left unset.
PROFILES: dict[str, dict[str, str]] = {
    "default": {
        "text_model": DEFAULT_TEXT_MODEL,
        "image_model": "resnet50",
        "clip_model": "openai/clip-vit-base-patch32",
        "audio_model": "panns-cnn14",
        "speech_model": "small",
    },
    "offline": {
        "text_model": DEFAULT_TEXT_MODEL,
        "image_model": "efficientnet-lite0",
        "clip_model": "",
        "audio_model": "whisper-tiny-encoder",
        "speech_model": "tiny.en",
    },
    # Offline too, across languages: a Spanish question finds an English passage (the 4-bit
    # multilingual-e5-small pack) and Spanish speech is transcribed in Spanish (Whisper base).
    "multilingual": {
        "text_model": "multilingual-e5-small",
        "image_model": "efficientnet-lite0",
        "clip_model": "",
        "audio_model": "whisper-tiny-encoder",
        "speech_model": "base",
    },
}
_DEFAULT = PROFILES["default"]  # the fields' defaults: one list of default models


def fallback_model(space: str) -> str:
    """The model a space (or `speech`) falls back to where its configured one cannot be had:
    the offline profile's, which installs from the package index; empty where it has none
    (CLIP). The text space never falls back (mmrag.app)."""
    return PROFILES["offline"].get(f"{space}_model", "")


def config_file() -> Path:
    """The TOML file to read: $MMRAG_CONFIG, else ./mmrag.toml (absent is fine)."""
    return Path(os.environ.get("MMRAG_CONFIG", "mmrag.toml"))


def default_home() -> Path:
    """The per-user data folder that holds the default store, so every working directory
    sees the same library: $XDG_DATA_HOME/mmrag or ~/.local/share/mmrag on Linux,
    ~/Library/Application Support/mmrag on macOS, %LOCALAPPDATA%\\mmrag on Windows."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "mmrag"


def default_cache() -> Path:
    """The per-user cache folder (exports of models for fast queries): $XDG_CACHE_HOME/mmrag
    or ~/.cache/mmrag on Linux, ~/Library/Caches/mmrag on macOS, %LOCALAPPDATA%\\mmrag\\cache
    on Windows."""
    if sys.platform == "win32":
        return default_home() / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mmrag"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "mmrag"


def absolute(path: str | os.PathLike[str]) -> Path:
    """A user's path made absolute against the working directory now (and ~ expanded), so a
    command's paths mean the same thing wherever it later runs."""
    return Path(os.path.abspath(Path(path).expanduser()))


def is_server_uri(uri: str) -> bool:
    """A URI (http/https/tcp/unix) names a Milvus server; anything else is a Lite store path."""
    return "://" in uri


def store_files(milvus_uri: str, prefix: str, home: Path) -> tuple[Path, Path]:
    """Where a store's own catalog and thumbnails live when not set: beside a Lite store
    (`<store>.catalog.sqlite`, `<store>.thumbs/`), or for a server in a folder under the home
    named after its host, port and collection prefix (`<home>/servers/<host>-<port>-<prefix>/`).
    A collection prefix other than `mmrag` is a separate library, so it gets files of its own."""
    if is_server_uri(milvus_uri):
        parts = urlsplit(milvus_uri)
        where = [parts.hostname or "localhost", str(parts.port or parts.scheme), prefix]
        db = parts.path.strip("/")
        name = re.sub(r"[^0-9A-Za-z._-]+", "_", "-".join([*where, db] if db else where))
        folder = home / "servers" / name
        return folder / "catalog.sqlite", folder / "thumbs"
    store = absolute(milvus_uri)
    tag = "" if prefix == "mmrag" else f".{prefix}"
    return (
        store.with_name(f"{store.name}{tag}.catalog.sqlite"),
        store.with_name(f"{store.name}{tag}.thumbs"),
    )


class Settings(BaseSettings):
    """Everything a run can be told; CLI flags are passed as keyword arguments."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", extra="forbid")

    # The paths below are filled in and made absolute by `_place_store`, before validation.
    home: Path = Field(
        None,  # type: ignore[arg-type]
        description="Folder of the default store (MMRAG_HOME); default: the per-user data "
        "folder (default_home)",
    )
    milvus_uri: str = Field(
        "",
        description="Milvus Lite store (a path ending in .db) or a server URI http://host:19530; "
        "default: <home>/milvus.db",
    )
    milvus_token: str = Field("", description="Token for a Milvus server (user:password)")
    catalog: Path = Field(
        None,  # type: ignore[arg-type]
        description="SQLite ingestion catalog; default: the store's own (store_files)",
    )
    collection_prefix: str = "mmrag"
    index_type: str = Field("HNSW", description="Dense vector index (validated per backend)")

    profile: Literal["default", "offline", "multilingual"] = Field(
        "default", description="Model set for models not configured one by one (PROFILES)"
    )
    text_model: str = Field(_DEFAULT["text_model"], description="Hugging Face id or local path")
    query_encoder: Literal["onnx", "torch"] = Field(
        "onnx",
        description="onnx: text queries are encoded by an ONNX Runtime copy of the text model, "
        "exported once into cache_dir and checked against it (a new process needs no torch); "
        "torch: by the model itself",
    )
    cache_dir: Path = Field(
        default_factory=default_cache,
        description="Exported query encoders (MMRAG_CACHE_DIR); default: the per-user cache",
    )
    chunk_tokens: int | None = Field(
        None, ge=16, description="Tokens per chunk; default: the model's max sequence length"
    )
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by neighbouring chunks")

    image_model: str = Field(
        _DEFAULT["image_model"],
        description="torchvision classifier name or an offline pack (efficientnet-lite0); "
        "empty: no `image` space",
    )
    clip_model: str = Field(
        _DEFAULT["clip_model"],
        description="CLIP/SigLIP Hugging Face id or local path; empty: no `clip` space",
    )
    jpeg_decode: Literal["auto", "pillow", "torchvision"] = Field(
        "auto",
        description="auto: JPEGs decode on the GPU (nvJPEG) when the image models run there",
    )
    thumbnails: Path = Field(
        None,  # type: ignore[arg-type]
        description="Thumbnail cache, one per content; default: the store's own (store_files)",
    )
    photo_thumbnails: Literal["auto", "ingest", "shown"] = Field(
        "auto",
        description="When a photo's thumbnail is made: as it is ingested, or when the HTTP API "
        "first shows it (ingest saves about 0.5 ms of CPU a photo; a hit shown first costs a "
        "decode, and the CLI names no thumbnail until then). auto: at ingest where the photo "
        "models run on the CPU (they take 10-100 ms a photo there), when shown where they run "
        "on a GPU (the CPU then keeps the GPU fed)",
    )
    max_image_mpx: int = Field(100, ge=1, description="Larger images are refused (bomb guard)")
    label_top_k: int = Field(5, ge=0, description="ImageNet labels kept per image, as text")
    ocr: bool = Field(True, description="Read printed words in images (needs Tesseract)")
    ocr_lang: str = Field("eng", description="Tesseract language(s), e.g. eng+deu")
    max_ocr_pages: int = Field(
        1000,
        ge=1,
        description="Scanned pages (PDF pages without text, multi-page TIFF) read by OCR per "
        "file; those beyond are reported, not read",
    )
    label_min_prob: float = Field(0.1, ge=0.0, le=1.0, description="Least probability of a label")

    audio_model: str = Field(
        _DEFAULT["audio_model"],
        description="Sound-similarity encoder: panns-cnn14, whisper-tiny-encoder, logmel-stats; "
        "empty: no `audio` space",
    )
    speech_model: str = Field(
        _DEFAULT["speech_model"],
        description="Whisper for transcripts: a faster-whisper size (tiny.en, small, large-v3), "
        "HF id, local CTranslate2 folder, or openai:whisper-1; empty: no transcripts",
    )
    speech_language: str | None = Field(None, description="Spoken language; None: detected")
    video_sample_s: float = Field(
        0.5, gt=0, description="Frames are sampled this often to pick each moment's keyframe"
    )
    video_moment_s: float = Field(
        10.0, gt=0, description="Longest moment: longer shots are cut into pieces this long"
    )
    max_media_hours: float = Field(
        12.0, gt=0, description="Longer recordings and videos are reported, not read"
    )

    hybrid_fusion: Literal["weighted", "minmax", "rrf"] = Field(
        HYBRID_FUSION,  # search/fusion.py: why
        description="How hybrid search merges dense and BM25 results: minmax (each leg scaled "
        "over its own results, then weighted; search/fusion.py), weighted (Milvus's "
        "WeightedRanker) or rrf",
    )
    dense_weight: float = Field(
        DENSE_WEIGHT, ge=0.0, le=1.0, description="Dense share in minmax and weighted fusion"
    )
    fusion_weights: dict[str, float] = Field(
        default_factory=dict,
        description="A space's weight when the spaces' ranked lists are fused (reciprocal rank "
        "fusion), e.g. {clip = 2.0, text = 1.0}; unset: 1; 0: the space is left out",
    )
    rerank_model: str = Field(
        "",
        description="Cross-encoder (HF id or local path) that re-scores a text query's text "
        "hits; empty: off",
    )

    # `mmrag ask`: any OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp, hosted APIs)
    ask_sources: int = Field(
        8, ge=1, le=100, description="Passages `mmrag ask` retrieves and gives the model"
    )
    llm_base_url: str = Field(
        "",
        description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1 (Ollama); "
        "empty: OPENAI_BASE_URL, else OpenAI's when an API key is set",
    )
    llm_model: str = Field("", description="Chat model name; empty: OPENAI_MODEL")
    llm_api_key: str = Field("", description="Endpoint key; empty: OPENAI_API_KEY (or none)")
    llm_timeout_s: float = Field(
        60.0, gt=0, description="Seconds to wait for the endpoint before the extractive answer"
    )
    llm_speech_model: str = Field("tts-1", description="`ask --speak`: the speech API's model")
    llm_voice: str = Field("alloy", description="`ask --speak`: the speech API's voice")

    # `mmrag serve`: the HTTP API (mmrag/api.py)
    serve_host: str = Field("127.0.0.1", description="Address `mmrag serve` listens on")
    serve_port: int = Field(8765, ge=0, le=65535, description="Port; 0: any free port")
    api_key: str = Field(
        "",
        description="When set, /api, /media and /thumbs need `Authorization: Bearer <key>` "
        "(or X-API-Key); empty: no key",
    )
    max_upload_mb: float = Field(
        100.0, gt=0, description="Largest query file POST /api/search takes (413 above)"
    )
    library: list[Path] = Field(
        default_factory=list,
        description="Folders POST /api/ingest ingests (`mmrag serve --library DIR`); empty: "
        "the folders already ingested",
    )

    strict_models: bool = Field(
        False,
        description="A space whose configured model cannot be had is skipped, with the reason, "
        "instead of running on the offline profile's model for it (the fallback)",
    )

    models: dict[str, str] = Field(
        default_factory=dict,
        description="Models of spaces registered without a field of their own: {space: model}",
    )

    ray_address: str = Field(
        "",
        description="The Ray cluster an ingest on the ray backend joins (ray.init address, "
        "e.g. ray://head:10001): `ingest --backend ray` without --address, and POST "
        "/api/ingest {backend: ray}; empty: a local cluster for the run",
    )

    # `mmrag ingest --bulk` (a Milvus server): rows go to Parquet files the server imports
    bulk_folder: Path | None = Field(
        None,
        description="Where `ingest --bulk` writes its Parquet files; the server opens them by "
        "this same path (Milvus with local storage: on the server's machine, or a shared "
        "mount); default: a `bulk` folder beside the catalog",
    )
    bulk_bucket: str = Field(
        "",
        description="A server on MinIO/S3 imports from its own bucket: `ingest --bulk` uploads "
        "its files there, as http(s)://host:port/bucket[/prefix] (docker-compose.yml: "
        "http://127.0.0.1:9000/a-bucket); empty: the server opens them in bulk_folder",
    )
    bulk_access_key: str = Field(
        "", description="bulk_bucket's access key; empty: AWS_ACCESS_KEY_ID (or none)"
    )
    bulk_secret_key: str = Field(
        "", description="bulk_bucket's secret key; empty: AWS_SECRET_ACCESS_KEY (or none)"
    )
    bulk_rows: int = Field(
        50_000, ge=1, description="Rows `ingest --bulk` gathers before it imports them"
    )
    bulk_timeout_s: float = Field(
        900.0, gt=0, description="Longest wait for one `ingest --bulk` import to complete"
    )

    embed_batch_size: int = Field(64, ge=1)
    write_batch_size: int = Field(512, ge=1)
    read_workers: int = Field(2, ge=1, description="Threads that read, extract and chunk files")
    read_processes: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Photos decode in read_workers processes (pixels back through shared "
        "memory) instead of reader threads; auto: with 2 or more read_workers on 4 or more "
        "cores (on 2 cores, on pays for a large photo library: about 10% faster, and 3 s to "
        "start)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_file_mb: int = Field(
        200,
        ge=1,
        description="Larger documents (and files of no known kind) are reported before they are "
        "read; photos, recordings and videos are bounded by max_image_mpx and max_media_hours",
    )

    @field_validator("bulk_bucket")
    @classmethod
    def _bucket_url(cls, url: str) -> str:
        """Refuse a bucket URL that cannot work now, not when an ingest reaches its import."""
        if url.strip():
            BulkBucket.parse(url)  # ValueError: what is wrong, and the form it takes
        return url.strip()

    def bulk_target(self) -> BulkBucket | None:
        """The bucket `ingest --bulk` uploads to, keys included; None: `bulk_folder`."""
        if not self.bulk_bucket:
            return None
        return BulkBucket.parse(self.bulk_bucket, self.bulk_access_key, self.bulk_secret_key)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_profile(cls, data: Any) -> Any:
        if isinstance(data, dict):
            models = PROFILES.get(str(data.get("profile", "default")), {})
            data = {**models, **data}
        return data

    @model_validator(mode="before")
    @classmethod
    def _place_store(cls, data: Any) -> Any:
        """Default the store to `<home>/milvus.db` and its catalog and thumbnails to the
        store's own (`store_files`); make every path the user gave absolute, now. An empty
        value counts as unset; a value of the wrong type is left for its field to refuse."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("home", "catalog", "thumbnails", "bulk_folder"):
            if data.get(key) in (None, ""):
                data.pop(key, None)
            elif isinstance(data[key], str | os.PathLike):
                data[key] = absolute(data[key])
        home = data.setdefault("home", absolute(default_home()))
        uri = data.get("milvus_uri")
        if isinstance(home, Path) and (uri is None or isinstance(uri, str)):
            uri = (uri or "").strip() or str(home / "milvus.db")
            data["milvus_uri"] = uri = uri if is_server_uri(uri) else str(absolute(uri))
            prefix = str(data.get("collection_prefix") or "mmrag")
            catalog, thumbnails = store_files(uri, prefix, home)
            data.setdefault("catalog", catalog)
            data.setdefault("thumbnails", thumbnails)
        return data

    def model_for(self, space: str) -> str:
        """The model configured for a space (mmrag.registry); empty means the space is off."""
        if space in self.models:
            return self.models[space]
        return str(getattr(self, f"{space}_model", "") or "")

    @property
    def is_lite(self) -> bool:
        """A local path (not http/https/tcp/unix URI) means the embedded Milvus Lite store."""
        return not is_server_uri(self.milvus_uri)

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


def choices(field: str) -> tuple[str, ...]:
    """The values a setting with a fixed vocabulary takes (its Literal), for flags that set it."""
    return get_args(Settings.model_fields[field].annotation)


def load_settings(**flags: object) -> Settings:
    """Settings with CLI flags on top; flags left as None do not override anything."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})
