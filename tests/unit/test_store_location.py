"""Where the store, its catalog and its thumbnails live: a per-user home, not the working
directory; the catalog and thumbnails are the store's own unless set; user paths made absolute."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mmrag.settings import Settings, default_home, load_settings, store_files
from mmrag.store.catalog import Catalog


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the test's own: nothing here may reach the real ~/.local/share/mmrag."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MMRAG_HOME", raising=False)  # conftest's; these tests find the home
    return tmp_path


def test_the_default_store_is_the_same_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    for here in ("a", "b/c"):
        (tmp_path / here).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / here)
        s = load_settings()
        seen.append((s.milvus_uri, s.catalog, s.thumbnails))
    home = tmp_path / "xdg" / "mmrag"
    store = home / "milvus.db"
    assert (
        seen[0]
        == seen[1]
        == (
            str(store),
            home / "milvus.db.catalog.sqlite",
            home / "milvus.db.thumbs",
        )
    )


def test_mmrag_home_moves_the_default_store_and_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMRAG_HOME", str(tmp_path / "elsewhere"))
    s = load_settings()
    assert s.home == tmp_path / "elsewhere"
    assert s.milvus_uri == str(tmp_path / "elsewhere" / "milvus.db")
    assert s.catalog == tmp_path / "elsewhere" / "milvus.db.catalog.sqlite"
    assert s.thumbnails == tmp_path / "elsewhere" / "milvus.db.thumbs"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMRAG_HOME", "rel/home")  # a relative home: against the working dir
    assert load_settings().milvus_uri == str(tmp_path / "rel" / "home" / "milvus.db")


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"XDG_DATA_HOME": "/data/u"}, "/data/u/mmrag"),
        ("linux", {"XDG_DATA_HOME": ""}, "{home}/.local/share/mmrag"),
        ("linux", {"XDG_DATA_HOME": "relative/xdg"}, "{home}/.local/share/mmrag"),  # spec: ignore
        ("darwin", {}, "{home}/Library/Application Support/mmrag"),
        ("win32", {"LOCALAPPDATA": "/c/Users/u/AppData/Local"}, "/c/Users/u/AppData/Local/mmrag"),
    ],
)
def test_default_home_is_the_platforms_per_user_data_folder(
    platform: str,
    env: dict[str, str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert default_home() == Path(expected.format(home=tmp_path / "user"))


def test_a_lite_stores_catalog_and_thumbnails_live_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(milvus_uri="lib/milvus.db")  # relative: made absolute at load
    assert s.milvus_uri == str(tmp_path / "lib" / "milvus.db")
    assert s.catalog == tmp_path / "lib" / "milvus.db.catalog.sqlite"
    assert s.thumbnails == tmp_path / "lib" / "milvus.db.thumbs"
    other = load_settings(milvus_uri="lib/milvus.db", collection_prefix="books")
    assert other.catalog == tmp_path / "lib" / "milvus.db.books.catalog.sqlite"
    assert other.thumbnails == tmp_path / "lib" / "milvus.db.books.thumbs"


def test_a_servers_catalog_lives_under_the_home_named_by_host_port_and_prefix(
    tmp_path: Path,
) -> None:
    home = tmp_path / "h"
    s = Settings(home=home, milvus_uri=" http://10.0.0.5:19530 ")
    assert s.milvus_uri == "http://10.0.0.5:19530" and not s.is_lite
    assert s.catalog == home / "servers" / "10.0.0.5-19530-mmrag" / "catalog.sqlite"
    assert s.thumbnails == home / "servers" / "10.0.0.5-19530-mmrag" / "thumbs"
    books, _ = store_files("http://10.0.0.5:19530", "books", home)
    cloud, _ = store_files("https://in01-abc.zillizcloud.com", "mmrag", home)
    assert books == home / "servers" / "10.0.0.5-19530-books" / "catalog.sqlite"
    assert cloud == home / "servers" / "in01-abc.zillizcloud.com-https-mmrag" / "catalog.sqlite"


@pytest.mark.parametrize("source", ["flag", "env", "toml"])
def test_a_catalog_and_thumbnails_set_by_the_user_win_and_are_made_absolute(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    flags: dict[str, object] = {}
    if source == "flag":
        flags = {"catalog": Path("mine/cat.sqlite"), "thumbnails": Path("mine/th")}
    elif source == "env":
        monkeypatch.setenv("MMRAG_CATALOG", "mine/cat.sqlite")
        monkeypatch.setenv("MMRAG_THUMBNAILS", "mine/th")
    else:
        (tmp_path / "m.toml").write_text('catalog = "mine/cat.sqlite"\nthumbnails = "mine/th"\n')
        monkeypatch.setenv("MMRAG_CONFIG", str(tmp_path / "m.toml"))
    s = load_settings(**flags)
    assert s.catalog == tmp_path / "mine" / "cat.sqlite"
    assert s.thumbnails == tmp_path / "mine" / "th"
    assert s.milvus_uri == str(tmp_path / "xdg" / "mmrag" / "milvus.db")  # the store: default


def test_an_empty_variable_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_CATALOG", "")
    monkeypatch.setenv("MMRAG_MILVUS_URI", "")
    s = load_settings()
    assert s.catalog == tmp_path / "xdg" / "mmrag" / "milvus.db.catalog.sqlite"


def test_a_catalog_is_paired_with_one_store_and_keeps_it(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    try:
        assert cat.store_id is None  # new: not paired yet
        assert cat.claim_store_id("first") == "first"
        assert cat.claim_store_id("second") == "first"  # another process came too late
    finally:
        cat.close()
    again = Catalog(tmp_path / "c.sqlite")
    try:
        assert again.store_id == "first"
    finally:
        again.close()
