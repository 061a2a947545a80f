"""The SQLite catalog: schema version, persistence, path/media bookkeeping, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from mmrag.store.catalog import _MIGRATIONS, SCHEMA_VERSION, Catalog, MediaFacts


@pytest.fixture
def cat(tmp_path: Path):
    c = Catalog(tmp_path / "sub" / "catalog.sqlite")  # parent folders are created
    yield c
    c.close()


def done(c: Catalog, media_id: str, collection: str = "col", n: int = 2) -> list[str]:
    c.begin_media(media_id, "text", "txt", 10)
    ids = [f"{media_id}:text:{i}" for i in range(n)]
    c.finish_media(media_id, collection, ids)
    return ids


def test_new_catalog_has_the_current_schema(cat: Catalog) -> None:
    assert cat.version == SCHEMA_VERSION >= 1
    with sqlite3.connect(cat.file) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"media", "paths", "segments"} <= tables
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    c = Catalog(path)
    ids = done(c, "m1", n=3)
    c.link_path("/lib/a.txt", "lib/a.txt", "lib", "m1", 10, 111)
    c.fail_path("/lib/bad.txt", "lib/bad.txt", "lib", 0, 222, "empty file (0 bytes)")
    c.close()

    again = Catalog(path)
    try:
        assert again.version == SCHEMA_VERSION
        assert again.media_done("m1", ["col"])
        assert not again.media_done("m1", ["another_model_col"])
        assert again.segment_ids("m1") == ids
        rec = again.path_record("/lib/a.txt")
        assert rec and (rec.display, rec.media_id, rec.size, rec.mtime_ns) == (
            "lib/a.txt",
            "m1",
            10,
            111,
        )
        assert [f.display for f in again.failures()] == ["lib/bad.txt"]
        assert again.counts() == {"paths": 1, "media": 1, "pending": 0, "failed": 1, "segments": 3}
    finally:
        again.close()


def test_newer_schema_is_refused_with_upgrade_advice(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    Catalog(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError) as info:
        Catalog(path)
    msg = str(info.value)
    assert "upgrade mmrag" in msg
    assert f"v{SCHEMA_VERSION + 1}" in msg
    assert str(path) in msg


def test_link_path_returns_the_previous_media_when_content_changes(cat: Catalog) -> None:
    done(cat, "old")
    done(cat, "new")
    assert cat.link_path("/a.txt", "a.txt", "/", "old", 5, 1) is None  # first sight
    assert cat.link_path("/a.txt", "a.txt", "/", "old", 5, 2) is None  # same content, touched
    assert cat.link_path("/a.txt", "a.txt", "/", "new", 6, 3) == "old"  # content changed
    rec = cat.path_record("/a.txt")
    assert rec and (rec.media_id, rec.size, rec.mtime_ns) == ("new", 6, 3)
    assert cat.is_orphan("old")
    assert not cat.is_orphan("new")


def test_link_after_failure_clears_the_error(cat: Catalog) -> None:
    done(cat, "m")
    cat.fail_path("/a.txt", "a.txt", "/", 0, 1, "no text content")
    assert cat.link_path("/a.txt", "a.txt", "/", "m", 9, 2) is None
    rec = cat.path_record("/a.txt")
    assert rec and rec.error is None and rec.media_id == "m"
    assert cat.failures() == []


def test_fail_path_records_the_reason_and_drops_the_media_link(cat: Catalog) -> None:
    done(cat, "m")
    cat.link_path("/doc.pdf", "lib/doc.pdf", "lib", "m", 100, 1)
    previous = cat.fail_path("/doc.pdf", "lib/doc.pdf", "lib", 120, 2, "PDF is encrypted")
    assert previous == "m"
    rec = cat.path_record("/doc.pdf")
    assert rec and rec.media_id is None and rec.error == "PDF is encrypted"
    assert (rec.size, rec.mtime_ns) == (120, 2)
    [failure] = cat.failures()
    assert (failure.display, failure.error) == ("lib/doc.pdf", "PDF is encrypted")
    assert cat.counts()["paths"] == 0  # a failed path is not counted as indexed
    assert cat.is_orphan("m")
    assert cat.fail_path("/never-seen", "never-seen", "/", 0, 0, "x") is None


def test_orphans_are_media_no_path_points_at(cat: Catalog) -> None:
    for m in ("keep", "renamed", "deleted", "shared"):
        done(cat, m)
    cat.link_path("/k", "k", "/", "keep", 1, 1)
    cat.link_path("/r-old", "r-old", "/", "renamed", 1, 1)
    cat.link_path("/d", "d", "/", "deleted", 1, 1)
    cat.link_path("/s1", "s1", "/", "shared", 1, 1)
    cat.link_path("/s2", "s2", "/", "shared", 1, 1)
    assert cat.orphan_media() == []

    cat.remove_paths(["/r-old"])
    cat.link_path("/r-new", "r-new", "/", "renamed", 1, 1)  # a rename keeps the media
    cat.remove_paths(["/d", "/s1"])
    assert cat.orphan_media() == ["deleted"]
    assert cat.is_orphan("deleted") and not cat.is_orphan("shared")

    cat.forget_media("deleted")
    assert cat.orphan_media() == []
    assert cat.media_modality("deleted") is None  # the row is gone
    assert cat.segment_ids("deleted") == []
    assert cat.counts()["segments"] == 6  # 3 media x 2 segments left


def test_finish_media_replaces_the_segments_of_that_collection_only(cat: Catalog) -> None:
    done(cat, "m", "col_a", n=3)
    done(cat, "m", "col_b", n=2)
    cat.finish_media("m", "col_a", ["m:text:9"])
    assert cat.segment_ids("m", "col_a") == ["m:text:9"]
    assert cat.segment_ids("m", "col_b") == ["m:text:0", "m:text:1"]
    assert sorted(cat.collections_of("m")) == ["col_a", "col_b"]


def test_a_failed_transaction_leaves_nothing_behind(cat: Catalog) -> None:
    with pytest.raises(ZeroDivisionError), cat.transaction() as db:
        db.execute(
            "INSERT INTO media(id, modality, format, size, status, updated_at) "
            "VALUES ('x', 'text', 'txt', 1, 'done', 0)"
        )
        1 / 0  # noqa: B018
    assert cat.media_modality("x") is None
    done(cat, "y")  # the connection is still usable
    assert cat.media_done("y", ["col"])


def test_two_threads_at_once(cat: Catalog) -> None:
    done(cat, "m0")
    done(cat, "m1")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(200):
                cat.link_path(f"/t{t}/f{i}", f"t{t}/f{i}", f"/t{t}", f"m{t}", i, i)
                if i % 50 == 0:
                    cat.counts()  # reads interleaved with the other thread's writes
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert cat.counts()["paths"] == 400
    for t in range(2):
        recs = cat.paths_under(f"/t{t}")
        assert len(recs) == 200
        assert {r.media_id for r in recs} == {f"m{t}"}
    with sqlite3.connect(cat.file) as raw:  # committed, visible to another connection
        assert raw.execute("SELECT count(*) FROM paths").fetchone()[0] == 400


def test_a_v1_catalog_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    with sqlite3.connect(path) as raw:  # what mmrag wrote before photos had facts
        raw.executescript(_MIGRATIONS[1])
        raw.execute("INSERT INTO media VALUES ('m1', 'image', 'jpeg', 10, 'done', 0)")
        raw.execute("INSERT INTO paths VALUES ('/a.jpg', 'a.jpg', '/', 'm1', 10, 1, NULL, 0)")
        raw.execute("PRAGMA user_version = 1")
    c = Catalog(path)
    try:
        assert c.version == SCHEMA_VERSION >= 5
        assert c.media_modality("m1") == "image"
        assert c.facts_of(["m1"]) == {"m1": MediaFacts()}  # unknown until embedded again
        facts = MediaFacts("2021-07-14T15:30:45+10:00", "Canon EOS R5", -33.8568, 151.2153)
        c.begin_media("m1", "image", "jpeg", 10, facts)
        assert c.facts_of(["m1", "unknown"]) == {"m1": facts}
        seen = []
        assert c.media_matching(lambda rec, f: seen.append((rec.path, f)) or True) == {"m1"}
        assert seen == [("/a.jpg", facts)]
    finally:
        c.close()


def _open_and_close(path: str) -> str | None:
    try:
        Catalog(Path(path)).close()
    except Exception as e:  # reported to the parent, which names it
        return repr(e)
    return None


def test_processes_opening_a_new_catalog_at_once_all_succeed(tmp_path: Path) -> None:
    """Two `mmrag` commands started together both create the catalog; before the WAL switch
    retried, about one opener in ten failed with "database is locked"."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for round_ in range(12):
            path = str(tmp_path / f"r{round_}" / "catalog.sqlite")
            errors = [e for e in pool.map(_open_and_close, [path] * 4) if e]
            assert errors == [], f"round {round_}: {errors}"
            assert Catalog(Path(path)).version == SCHEMA_VERSION
