"""The Milvus layer on a real Milvus Lite store (through the shared Lite server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrag.store.milvus import BUILDABLE_INDEXES, MilvusStore
from mmrag.store.schema import SCHEMA_VERSION, Segment, Space, StoreError, quote

DIM = 8
SPACE = Space("text", "org/tiny-model", DIM, bm25=True)
WEIRD = 'we"ird\\id'  # a media id that needs escaping inside a filter


def unit(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i % dim] = 1.0
    v[(i + 1) % dim] = 0.25
    return v / np.linalg.norm(v)


def segs(media_id: str, n: int, words: str = "lantern harbour") -> list[Segment]:
    return [
        Segment(
            id=f"{media_id}:text:{i}",
            media_id=media_id,
            modality="document",
            start=10.0 * i,
            end=10.0 * i + 9,
            text=f"{words} number {i}",
            vector=unit(i),
            page=i % 3,
            meta={"n": i},
        )
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path: Path):
    s = MilvusStore(str(tmp_path / "milvus.db"), index_type="FLAT")
    yield s
    s.close()


def test_unknown_index_type_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        MilvusStore(str(tmp_path / "m.db"), index_type="NOPE")
    msg = str(info.value)
    assert "'NOPE'" in msg and "lite" in msg
    for name in BUILDABLE_INDEXES["lite"]:
        assert name in msg
    assert not (tmp_path / "m.db.host").exists()  # refused before any server was started
    with pytest.raises(StoreError) as info:
        MilvusStore("http://127.0.0.1:1", index_type="NOPE")  # refused before connecting
    assert "DISKANN" in str(info.value) and "server" in str(info.value)


def test_ensure_space_is_idempotent(store: MilvusStore) -> None:
    name = store.ensure_space(SPACE)
    assert name == "mmrag_text_tiny_model"
    store.upsert(name, segs("m1", 3))
    assert store.ensure_space(SPACE) == name
    assert store.existing_collections() == [name]
    assert store.count(name) == 3


def test_search_right_after_upsert_sees_the_rows(store: MilvusStore) -> None:
    name = store.ensure_space(SPACE)
    store.upsert(name, segs("m1", 5))
    [hits] = store.search_dense(name, unit(2)[None], limit=3)
    assert hits[0]["id"] == "m1:text:2"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert set(hits[0]) >= {"id", "media_id", "modality", "start", "end", "page", "text", "meta"}
    assert "vector" not in hits[0]  # vectors are not shipped back
    assert (hits[0]["start"], hits[0]["end"], hits[0]["page"]) == (20.0, 29.0, 2)
    assert hits[0]["meta"] == {"n": 2}
    [bm25] = store.search_bm25(name, ["number 4"], limit=5)
    assert bm25 and all(h["score"] >= 0 for h in bm25)
    assert bm25[0]["id"] == "m1:text:4"
    fused = store.search_hybrid(name, unit(4), "number 4", limit=3)
    assert fused[0]["id"] == "m1:text:4"


def test_upsert_overwrites_instead_of_duplicating(store: MilvusStore) -> None:
    name = store.ensure_space(SPACE)
    store.upsert(name, segs("m1", 4))
    store.upsert(name, segs("m1", 4, words="copper meadow"))
    assert store.count(name) == 4
    [hits] = store.search_bm25(name, ["copper meadow"], limit=10)
    assert len(hits) == 4


def test_reopened_store_keeps_rows_and_searches_without_loading(tmp_path: Path) -> None:
    uri = str(tmp_path / "milvus.db")
    with MilvusStore(uri, index_type="FLAT") as first:
        name = first.ensure_space(SPACE)
        first.upsert(name, segs("m1", 4))
        first.flush(name)
    with MilvusStore(uri, index_type="FLAT") as again:
        assert again.existing_collections() == [name]
        [hits] = again.search_dense(name, unit(1)[None], limit=2)  # no ensure_space first
        assert hits[0]["id"] == "m1:text:1"
        assert again.count(name) == 4
        assert sorted(again.ids(name)) == [f"m1:text:{i}" for i in range(4)]


def test_a_different_dimension_on_an_existing_collection_is_refused(store: MilvusStore) -> None:
    store.ensure_space(SPACE)
    with pytest.raises(StoreError, match=r"holds 8-d vectors but model org/tiny-model gives 16-d"):
        store.ensure_space(Space("text", "org/tiny-model", 16, bm25=True))


def test_the_schema_version_is_written_and_a_newer_one_is_refused_on_open(tmp_path: Path) -> None:
    uri = str(tmp_path / "milvus.db")
    with MilvusStore(uri, index_type="FLAT") as first:
        name = first.ensure_space(SPACE)
        first.upsert(name, segs("m1", 2))
        props = first.client.describe_collection(name)["properties"]
        assert props["mmrag.schema"] == str(SCHEMA_VERSION) and props["mmrag.model"] == SPACE.model
        # what a later mmrag, with schema v(N+1), would leave behind
        first.client.alter_collection_properties(name, {"mmrag.schema": str(SCHEMA_VERSION + 1)})
    newer = rf"collection {name} was made by a newer mmrag \(schema v{SCHEMA_VERSION + 1}"
    with MilvusStore(uri, index_type="FLAT") as again:
        with pytest.raises(StoreError, match=newer):
            again.search_dense(name, unit(1)[None], limit=2)
        with pytest.raises(StoreError, match=newer):
            again.ensure_space(SPACE)
        with pytest.raises(StoreError, match=newer):
            again.count(name)


def test_quote_escapes_quotes_and_backslashes() -> None:
    assert quote("plain") == '"plain"'
    assert quote('a"b') == '"a\\"b"'
    assert quote("a\\b") == '"a\\\\b"'
    assert quote('\\"') == '"\\\\\\""'


def test_filters_and_deletes_work_with_a_quoted_media_id(store: MilvusStore) -> None:
    name = store.ensure_space(SPACE)
    store.upsert(name, segs(WEIRD, 3) + segs("other", 2) + segs("we", 2))
    assert store.count(name, f"media_id == {quote(WEIRD)}") == 3
    [hits] = store.search_dense(name, unit(0)[None], 10, f"media_id == {quote(WEIRD)}")
    assert {h["media_id"] for h in hits} == {WEIRD}

    store.delete_media(name, [WEIRD])
    assert store.count(name) == 4
    assert store.count_by(name, "media_id") == {"other": 2, "we": 2}
    store.delete_media(name, ["no-such-media"])
    assert store.count(name) == 4


def test_delete_media_removes_exactly_those_media(store: MilvusStore) -> None:
    name = store.ensure_space(SPACE)
    for m in ("a", "b", "c", "ab"):
        store.upsert(name, segs(m, 3))
    store.delete_media(name, ["a", "c"])
    assert sorted(store.ids(name)) == [f"{m}:text:{i}" for m in ("ab", "b") for i in range(3)]
    [hits] = store.search_dense(name, unit(0)[None], 20)
    assert {h["media_id"] for h in hits} == {"ab", "b"}


def test_two_stores_on_one_path_in_one_process(tmp_path: Path) -> None:
    """Closing one handle must not stop the shared Lite server under another (e.g. the CLI run
    in-process while a test, or a web server, holds the same store)."""
    uri = str(tmp_path / "milvus.db")
    a = MilvusStore(uri, index_type="FLAT")
    try:
        name = a.ensure_space(SPACE)
        b = MilvusStore(uri, index_type="FLAT")
        b.upsert(name, segs("m1", 2))
        b.close()
        assert a.count(name) == 2
        a.upsert(name, segs("m2", 1))
        assert a.count(name) == 3
    finally:
        a.close()
    from mmrag.store import lite_host

    assert lite_host.server_info(Path(uri)) is None  # the last close stopped the server
