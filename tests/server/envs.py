"""tests/conftest.py's Env on any store (a server, or Lite) under a collection prefix of the
test's own, for the tests in tests/server."""

from __future__ import annotations

from pathlib import Path

from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.settings import Settings
from mmrag.store.catalog import Catalog
from mmrag.store.milvus import MilvusStore
from tests.conftest import Env

MODELS_OFF = {"image_model": "", "clip_model": "", "audio_model": "", "speech_model": ""}


def prefixed_env(
    root: Path, minilm: TextEncoder, uri: str, token: str, prefix: str, **more: object
) -> Env:
    """An Env whose store, settings and CLI all use `prefix` (tests/conftest.py's build_env
    opens its store under the default one). Catalog and thumbnails default to the store's own
    (mmrag.settings.store_files) unless given in `more`."""
    fields: dict[str, object] = {"chunk_tokens": 64, "chunk_overlap": 8}
    settings = Settings(
        milvus_uri=uri,
        milvus_token=token,
        collection_prefix=prefix,
        **(fields | MODELS_OFF | more),
    )
    store = MilvusStore(settings.milvus_uri, token, prefix, settings.index_type)
    return Env(root, settings, Catalog(settings.catalog), store, minilm)


def cli_env(env: Env) -> dict[str, str]:
    """What a CLI run on `env` adds to Env.cli_with's variables."""
    more = {"MMRAG_COLLECTION_PREFIX": env.settings.collection_prefix, "COLUMNS": "300"}
    if env.settings.milvus_token:
        more["MMRAG_MILVUS_TOKEN"] = env.settings.milvus_token
    return more


def new_prefix() -> str:
    """A collection prefix no other test (or session) uses: `t<10 hex>`; mmrag's collections
    under it are `t…_<space>_<model>`."""
    import uuid

    return f"t{uuid.uuid4().hex[:10]}"


def drop_prefixed(uri: str, token: str, prefix: str) -> None:
    """Drop every collection named `<prefix>_…` on the server."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, token=token)
    try:
        for name in client.list_collections():
            if name.startswith(prefix + "_"):
                client.drop_collection(name)
    finally:
        client.close()
