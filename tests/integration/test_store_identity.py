"""One library whatever the working directory, and a catalog never read against another store's
rows: the real CLI (in-process) and `open_store` on real Milvus Lite stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mmrag.app import Models, open_store
from mmrag.cli import app
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.settings import Settings
from mmrag.store.catalog import Catalog
from mmrag.store.schema import STORE_PROPERTY, StoreError
from tests.conftest import Env, write

ROUTER = (
    "The TX-4410 router keeps its settings in flash memory. To reset it to the factory "
    "password, hold the recessed reset button for ten seconds with a paper clip."
)
BREAD = (
    "Feed the sourdough starter every morning with equal weights of rye flour and lukewarm "
    "water; a healthy starter doubles in four to six hours."
)
OFFLINE = {"MMRAG_PROFILE": "offline", "MMRAG_DEVICE": "cpu", "COLUMNS": "300"}


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-user data folder of the test's own: the real one is never touched."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MMRAG_HOME", raising=False)  # conftest's; these tests find the home


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    write(tmp_path / "lib" / "router.txt", ROUTER)
    write(tmp_path / "lib" / "bread.md", BREAD)
    return tmp_path / "lib"


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={**OFFLINE, **env})


def cd(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(path)
    return path


def status(env: dict[str, str]) -> dict:
    r = cli(env, "status", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def said(r: Result) -> str:
    return " ".join(r.stderr.split())


def ingest(minilm: TextEncoder, lib: Path, folder: Path) -> Settings:
    """The library ingested, in-process with the loaded MiniLM, into a store and a catalog
    in one folder (both named, so the setup is the same for mmrag before store ids)."""
    s = Settings(
        milvus_uri=str(folder / "milvus.db"),
        catalog=folder / "catalog.sqlite",
        profile="offline",
        device="cpu",
    )
    catalog, store = open_store(s)
    try:
        models = Models.build(s, text_encoder=minilm)
        report = models.runner(catalog, store, read_workers=2, embed_batch=16).run([str(lib)])
        assert report.new == 2 and not report.failed
    finally:
        store.close()
        catalog.close()
    return s


def test_search_and_status_from_another_working_directory_see_the_same_library(
    lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"MMRAG_MILVUS_URI": str(tmp_path / "store" / "milvus.db")}  # the catalog: not set
    cd(tmp_path / "a", monkeypatch)
    r = cli(env, "ingest", str(lib), "--quiet")
    assert r.exit_code == 0, r.output
    cd(tmp_path / "b" / "deeper", monkeypatch)
    data = status(env)
    assert data["files"]["paths"] == 2
    assert data["catalog"] == str(tmp_path / "store" / "milvus.db.catalog.sqlite")
    r = cli(env, "search", "how do I factory reset the router", "--json", "--limit", "1")
    assert r.exit_code == 0, r.output
    [hit] = json.loads(r.stdout)
    assert hit["path"] == str(lib / "router.txt")
    assert "warning" not in r.stderr
    assert (
        not (tmp_path / "a" / "data").exists() and not (tmp_path / "b" / "deeper" / "data").exists()
    )


def test_mmrag_home_moves_the_default_store(
    lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    cd(tmp_path / "a", monkeypatch)
    r = cli({"MMRAG_HOME": str(home)}, "ingest", str(lib), "--quiet")
    assert r.exit_code == 0, r.output
    cd(tmp_path / "b", monkeypatch)
    data = status({"MMRAG_HOME": str(home)})
    assert data["milvus"] == str(home / "milvus.db")
    assert data["catalog"] == str(home / "milvus.db.catalog.sqlite")
    assert data["files"]["paths"] == 2 and sum(s["rows"] for s in data["spaces"].values()) >= 2
    assert (home / "milvus.db.catalog.sqlite").is_file()
    assert not (tmp_path / "xdg" / "mmrag").exists()  # the default home was not used
    assert status({})["files"]["paths"] == 0  # ... and holds nothing of it


def test_a_catalog_from_another_store_is_refused_naming_both(
    lib: Path, minilm: TextEncoder, tmp_path: Path
) -> None:
    one = ingest(minilm, lib, tmp_path / "one")
    two = ingest(minilm, lib, tmp_path / "two")
    env = {"MMRAG_MILVUS_URI": two.milvus_uri, "MMRAG_CATALOG": str(one.catalog)}
    for command in (["status"], ["search", "router"]):
        r = cli(env, *command)
        assert r.exit_code == 2, r.output
        message = said(r)
        assert message.startswith(f"error: catalog {one.catalog} belongs to another store")
        assert f"not {two.milvus_uri}" in message and "--catalog" in message
    with pytest.raises(StoreError, match="belongs to another store"):
        open_store(Settings(milvus_uri=two.milvus_uri, catalog=one.catalog))
    own = {"MMRAG_MILVUS_URI": one.milvus_uri, "MMRAG_CATALOG": str(one.catalog)}
    assert status(own)["files"]["paths"] == 2  # the catalog is still its own store's


def test_an_empty_catalog_beside_a_non_empty_store_warns(
    lib: Path, minilm: TextEncoder, tmp_path: Path
) -> None:
    s = ingest(minilm, lib, tmp_path / "store")
    empty = tmp_path / "new" / "catalog.sqlite"
    r = cli({"MMRAG_MILVUS_URI": s.milvus_uri, "MMRAG_CATALOG": str(empty)}, "status")
    assert r.exit_code == 0, r.output
    [line] = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert f"store {s.milvus_uri} holds" in line and f"but catalog {empty} is empty" in line
    assert "--catalog" in line and "re-ingest" in line
    # the other way round: a catalog with files beside a store with no collections
    bare = tmp_path / "bare" / "milvus.db"
    r = cli({"MMRAG_MILVUS_URI": str(bare), "MMRAG_CATALOG": str(s.catalog)}, "status")
    assert r.exit_code == 0, r.output
    [line] = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert f"catalog {s.catalog} lists 2 files but store {bare} has no mmrag collections" in line
    r = cli({"MMRAG_MILVUS_URI": s.milvus_uri, "MMRAG_CATALOG": str(s.catalog)}, "status")
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output  # the pair as made


def test_a_store_and_catalog_made_before_store_ids_are_paired_on_open(env: Env, lib: Path) -> None:
    """The tests' Env opens both directly (as mmrag did before ids): collections without a
    store id, a catalog without one. `open_store` pairs them, silently."""
    env.ingest(lib)
    [name] = env.store.existing_collections()
    assert env.store.store_ids() == {name: None} and env.catalog.store_id is None
    warnings: list[str] = []
    catalog, store = open_store(env.settings, warnings.append)
    try:
        paired = catalog.store_id
        assert paired and store.store_ids() == {name: paired}
        props = store.client.describe_collection(name)["properties"]
        assert props[STORE_PROPERTY] == paired
    finally:
        store.close()
        catalog.close()
    assert warnings == []
    other = Settings(milvus_uri=env.settings.milvus_uri, catalog=env.root / "other.sqlite")
    ingest_elsewhere = Settings(milvus_uri=str(env.root / "else.db"), catalog=other.catalog)
    c, s = open_store(ingest_elsewhere)  # pairs other.sqlite with another (empty) store
    s.close()
    c.close()
    with pytest.raises(StoreError, match=f"catalog {other.catalog} belongs to another store"):
        open_store(other)
    stray = Catalog(env.root / "stray.sqlite")  # files, but never opened through open_store
    stray.begin_media("m1", "document", "txt", 1)
    stray.link_path("/x.txt", "x.txt", "/", "m1", 1, 1)
    stray.close()
    with pytest.raises(StoreError, match=r"\(1 files\) names no store yet, but .* another catalog"):
        open_store(Settings(milvus_uri=env.settings.milvus_uri, catalog=stray.file))
