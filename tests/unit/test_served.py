"""The catalog's record of the model each space is searched with, and of a switch in progress
(ingest/reindex.py): begun, cut over in one transaction, or given up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mmrag.store.catalog import _MIGRATIONS, Catalog, Served


@pytest.fixture
def cat(tmp_path: Path):
    c = Catalog(tmp_path / "catalog.sqlite")
    yield c
    c.close()


def _done(c: Catalog, media_id: str, collection: str) -> None:
    c.begin_media(media_id, "text", "txt", 10)
    c.finish_media(media_id, collection, [f"{media_id}:text:0"])


def test_a_v4_catalog_gains_the_table_and_serves_nothing_recorded(tmp_path: Path) -> None:
    path = tmp_path / "v4.sqlite"
    with sqlite3.connect(path) as raw:
        for v in range(1, 5):
            raw.executescript(_MIGRATIONS[v])
        raw.execute("PRAGMA user_version = 4")
    c = Catalog(path)
    try:
        assert c.version >= 5 and c.served() == {}
    finally:
        c.close()


def test_a_switch_is_recorded_then_cut_over_at_once(cat: Catalog) -> None:
    for m in ("m1", "m2"):
        _done(cat, m, "mmrag_text_a")
    cat.begin_switch("text", "a", "mmrag_text_a", "b", "mmrag_text_b")
    _done(cat, "m1", "mmrag_text_b")
    assert cat.served()["text"] == Served("text", "a", "mmrag_text_a", "b", "mmrag_text_b")
    assert cat.contents_in("mmrag_text_a") == 2 and cat.only_in("mmrag_text_a", "mmrag_text_b") == 1

    assert cat.cut_over("text") == "mmrag_text_a"
    assert cat.served()["text"] == Served("text", "b", "mmrag_text_b", retired="mmrag_text_a")
    assert not cat.wrote_to("mmrag_text_a") and cat.collections_of("m1") == ["mmrag_text_b"]
    cat.dropped("text")
    assert cat.served()["text"].retired is None
    with pytest.raises(RuntimeError, match="no switch of text in progress"):
        cat.cut_over("text")


def test_a_switch_given_up_forgets_its_partial_collection(cat: Catalog) -> None:
    _done(cat, "m1", "mmrag_text_a")
    cat.begin_switch("text", "a", "mmrag_text_a", "b", "mmrag_text_b")
    _done(cat, "m1", "mmrag_text_b")
    assert cat.cancel_switch("text") == "mmrag_text_b"
    assert cat.served()["text"] == Served("text", "a", "mmrag_text_a", retired="mmrag_text_b")
    assert cat.collections_of("m1") == ["mmrag_text_a"]
    assert cat.cancel_switch("text") is None


def test_one_path_each_is_the_newest_readable_path_of_each_done_content(cat: Catalog) -> None:
    _done(cat, "m1", "c")
    cat.link_path("/x/old.txt", "old.txt", "/x", "m1", 1, 1)
    cat.link_path("/x/new.txt", "new.txt", "/x", "m1", 1, 1)
    cat.begin_media("m2", "text", "txt", 10)  # pending: not read again by a reindex
    cat.link_path("/x/pending.txt", "pending.txt", "/x", "m2", 1, 1)
    assert cat.one_path_each() == [("/x/new.txt", "new.txt", "/x")]


def test_collections_named_finds_each_recorded_collection_of_a_space(cat: Catalog) -> None:
    for m, c in [("m1", "mmrag_text_a"), ("m2", "mmrag_text_a"), ("m1", "mmrag_text_b")]:
        _done(cat, m, c)
    _done(cat, "m3", "mmrag_textual_x")
    _done(cat, "m4", "mmrag_image_r")
    assert cat.collections_named("mmrag_text_") == ["mmrag_text_a", "mmrag_text_b"]
    assert cat.collections_named("mmrag_clip_") == []
