"""`mmrag migrate --to URI`: a Milvus Lite store copied to a real server (tests/server/conftest.py)
through the real CLI; the same searches find the same files there, every collection has the
same rows, the copied catalog is accepted by the server store and the next ingest embeds
nothing, and a second migrate (also after rows were deleted from the source) ends equal."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmrag.app import open_store
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.settings import Settings
from mmrag.store.thumbnails import thumbnail_store
from tests.conftest import REPO, Env
from tests.server.envs import MODELS_OFF, cli_env, drop_prefixed, new_prefix, prefixed_env

SAMPLES = REPO / "data" / "library"
QUERIES = [
    "How much warning do we owe the owner before we leave the rental?",
    "how long to simmer red lentils",
    "feeding a sourdough starter",
    "a cup of coffee",
]


@dataclass
class Migrated:
    lite: Env
    library: Path
    uri: str
    token: str
    prefix: str
    first: object  # the CLI result of the first migrate
    before: dict[str, list[str]]  # query -> top files on Lite (dense)


def top_files(env: Env, query: str) -> list[str]:
    return [Path(h.path).name for h in env.searcher().search(query, "dense", limit=3)]


@pytest.fixture(scope="module")
def migrated(
    tmp_path_factory: pytest.TempPathFactory,
    minilm: TextEncoder,
    milvus_server_uri: str,
    milvus_server_token: str,
) -> Iterator[Migrated]:
    root = tmp_path_factory.mktemp("migrate")
    library = root / "library"
    shutil.copytree(SAMPLES / "docs" / "kitchen", library / "kitchen")
    shutil.copy(SAMPLES / "docs" / "home" / "lease-summary.pdf", library / "lease-summary.pdf")
    (library / "photos").mkdir()
    for name in ("coffee.jpg", "chelsea the cat.jpg"):
        shutil.copy(SAMPLES / "photos" / name, library / "photos" / name)
    prefix = new_prefix()
    # the Lite store's own catalog and thumbnails (their defaults), as a user's would be
    lite = prefixed_env(root, minilm, str(root / "lite" / "milvus.db"), "", prefix, home=root)
    lite.with_images()
    lite.settings.thumbnails = Settings(
        milvus_uri=lite.settings.milvus_uri, collection_prefix=prefix, home=root
    ).thumbnails
    lite.rebuild()
    try:
        report = lite.ingest(library)
        assert report.failed == [] and report.new == 9, report
        before = {q: top_files(lite, q) for q in QUERIES}
        first = migrate(lite, root, milvus_server_uri, milvus_server_token)
        yield Migrated(lite, library, milvus_server_uri, milvus_server_token, prefix, first, before)
    finally:
        lite.close()
        drop_prefixed(milvus_server_uri, milvus_server_token, prefix)


def migrate(lite: Env, home: Path, uri: str, token: str):
    """`mmrag migrate --to uri` on the Lite store with its default catalog and thumbnails."""
    from typer.testing import CliRunner

    from mmrag.cli import app

    env = {
        "MMRAG_MILVUS_URI": lite.settings.milvus_uri,
        "MMRAG_HOME": str(home),
        "MMRAG_PROFILE": "offline",
        "MMRAG_DEVICE": "cpu",
        **cli_env(lite),
    }
    args = ["migrate", "--to", uri, "--batch", "7"] + (["--token", token] if token else [])
    return CliRunner().invoke(app, args, env=env)


def server_settings(m: Migrated) -> Settings:
    """What a user has after switching: the server uri, everything else by default."""
    return Settings(
        milvus_uri=m.uri,
        milvus_token=m.token,
        collection_prefix=m.prefix,
        home=m.lite.settings.home,
        image_model="efficientnet-lite0",
        **{k: v for k, v in MODELS_OFF.items() if k != "image_model"},
        chunk_tokens=64,
        chunk_overlap=8,
    )


@pytest.fixture(scope="module")
def on_server(migrated: Migrated, minilm: TextEncoder) -> Iterator[Env]:
    """The server store opened as mmrag opens a store (its catalog checked against it)."""
    settings = server_settings(migrated)
    catalog, store = open_store(settings)  # refuses a catalog of another store
    env = Env(migrated.lite.root, settings, catalog, store, minilm)
    yield env
    env.close()


def counts(env: Env) -> dict[str, int]:
    return {c: env.store.count(c) for c in env.store.existing_collections()}


def test_migrate_copies_every_collection_and_says_how_to_switch(
    migrated: Migrated, on_server: Env
) -> None:
    r = migrated.first
    assert r.exit_code == 0, r.output
    said = " ".join(r.stdout.split())
    assert f"to use it: set MMRAG_MILVUS_URI={migrated.uri}" in said, said
    assert f"catalog copied to {on_server.settings.catalog}" in said, said
    lite = counts(migrated.lite)
    assert len(lite) == 2 and all(n > 0 for n in lite.values()), lite
    assert counts(on_server) == lite
    assert "/" in " ".join(r.stderr.split())  # progress: "<collection>: n/N rows"
    # the catalog went to where the server uri finds it, and pairs with the copied store
    assert on_server.catalog.store_id == migrated.lite.catalog.store_id
    assert set(on_server.store.store_ids().values()) == {migrated.lite.catalog.store_id}
    copied = thumbnail_store(on_server.settings.thumbnails).entries()
    assert copied and copied == thumbnail_store(migrated.lite.settings.thumbnails).entries()


def test_the_same_searches_find_the_same_files_on_the_server(
    migrated: Migrated, on_server: Env
) -> None:
    on_server.rebuild()
    after = {q: top_files(on_server, q) for q in QUERIES}
    assert after == migrated.before
    assert migrated.before[QUERIES[0]][0] == "lease-summary.pdf"
    assert migrated.before[QUERIES[3]][0] == "coffee.jpg"


def test_an_ingest_against_the_server_embeds_nothing(migrated: Migrated, on_server: Env) -> None:
    on_server.rebuild()
    before = counts(on_server)
    report = on_server.ingest(migrated.library)
    assert report.failed == [] and report.new == 0 and report.changed == 0, report
    assert report.segments == 0, report
    assert counts(on_server) == before
    # and the CLI, switched by the uri alone, sees the library
    env = {"MMRAG_MILVUS_URI": migrated.uri, "MMRAG_HOME": str(migrated.lite.settings.home)}
    r = on_server.cli_with({**env, **cli_env(on_server)}, "status", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["files"]["paths"] == 9 and data["store_id"] == migrated.lite.catalog.store_id


def test_migrate_again_is_idempotent_and_follows_deletions(
    migrated: Migrated, on_server: Env
) -> None:
    """Last: it changes the Lite store."""
    home = migrated.lite.settings.home
    again = migrate(migrated.lite, home, migrated.uri, migrated.token)
    assert again.exit_code == 0, again.output
    assert counts(on_server) == counts(migrated.lite)
    # a file deleted from the library and pruned from Lite: the next migrate drops its rows
    (migrated.library / "kitchen" / "sourdough.md").unlink()
    report = migrated.lite.ingest(migrated.library, prune=True)
    assert report.pruned == 1, report
    third = migrate(migrated.lite, home, migrated.uri, migrated.token)
    assert third.exit_code == 0, third.output
    assert counts(on_server) == counts(migrated.lite)


def test_migrate_refuses_a_server_holding_another_library(
    migrated: Migrated, on_server: Env
) -> None:
    from mmrag.store.milvus import MilvusStore
    from mmrag.store.schema import Space

    other = MilvusStore(migrated.uri, migrated.token, migrated.prefix)
    try:
        other.store_id = "0123456789abcdef"  # another catalog's library, same prefix
        other.ensure_named(f"{migrated.prefix}_image_other", Space("image", "other", 4))
    finally:
        other.close()
    r = migrate(migrated.lite, migrated.lite.settings.home, migrated.uri, migrated.token)
    assert r.exit_code == 2, r.output
    said = " ".join(r.stderr.split())
    assert "another mmrag library" in said and "0123456789abcdef" in said, said


def test_migrate_wants_a_server_uri(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmrag.cli import app

    r = CliRunner().invoke(app, ["migrate", "--to", str(tmp_path / "other.db")])
    assert r.exit_code == 2
    assert "--to must be a Milvus server URI such as http://host:19530" in " ".join(
        r.stderr.split()
    )
