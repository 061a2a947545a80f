"""tests/conftest.py's Env on any store (a server, or Lite) under a collection prefix of the
test's own, for the tests in tests/server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def bulk_cli_env(env: Env) -> dict[str, str]:
    """`cli_env` plus the env's chunking and `ingest --bulk` settings (its bucket's, when it
    has one), so a CLI run writes the rows the env's own ingest would."""
    s = env.settings
    more = {
        "MMRAG_CHUNK_TOKENS": str(s.chunk_tokens),
        "MMRAG_CHUNK_OVERLAP": str(s.chunk_overlap),
        "MMRAG_BULK_FOLDER": str(s.bulk_folder),
    }
    if s.bulk_bucket:
        more |= {
            "MMRAG_BULK_BUCKET": s.bulk_bucket,
            "MMRAG_BULK_ACCESS_KEY": s.bulk_access_key,
            "MMRAG_BULK_SECRET_KEY": s.bulk_secret_key,
        }
    return cli_env(env) | more


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


@contextmanager
def env_maker(
    tmp_path: Path, minilm: TextEncoder, uri: str, token: str
) -> Iterator[Callable[..., Env]]:
    """`make(name, **settings)`: an Env with photos on (`with_images`) in `tmp_path/name`,
    its catalog and thumbnails there, under a collection prefix of its own; every collection
    it made is dropped afterwards."""
    made: list[tuple[Env, str]] = []

    def make(name: str, **more: object) -> Env:
        prefix = new_prefix()
        root = tmp_path / name
        root.mkdir()
        files = {"catalog": root / "catalog.sqlite", "thumbnails": root / "thumbs"}
        env = prefixed_env(root, minilm, uri, token, prefix, **(files | more)).with_images()
        made.append((env, prefix))
        return env

    try:
        yield make
    finally:
        for env, prefix in made:
            env.close()
            drop_prefixed(uri, token, prefix)


def collections(env: Env) -> list[str]:
    """The server's collections under the env's prefix, by their full names."""
    prefix = env.settings.collection_prefix
    return [c for c in env.store.client.list_collections() if c.startswith(prefix + "_")]


def collection_ids(env: Env) -> dict[str, list[str]]:
    """Each of the env's collections' ids, keyed by the collection's name less its prefix."""
    prefix = env.settings.collection_prefix
    return {c[len(prefix) :]: sorted(env.store.ids(c)) for c in collections(env)}
