"""The catalog's batched calls for ingests of many small files: the same rows as one call per
path, in one query or transaction for many."""

from __future__ import annotations

from pathlib import Path

from mmrag.store.catalog import Catalog


def _catalog(tmp_path: Path) -> Catalog:
    cat = Catalog(tmp_path / "catalog.sqlite")
    cat.begin_media("m1", "text", "txt", 10)
    cat.begin_media("m2", "text", "txt", 10)
    return cat


def test_path_records_match_one_lookup_per_path_across_query_chunks(tmp_path: Path) -> None:
    cat = _catalog(tmp_path)
    paths = [f"/lib/f{i:04d}.txt" for i in range(1203)]  # over two 500-path queries
    for i, p in enumerate(paths):
        if i % 3 == 0:
            cat.link_path(p, p, "/lib", "m1", i, i * 10)
        elif i % 3 == 1:
            cat.fail_path(p, p, "/lib", i, i * 10, "binary content")
    found = cat.path_records([*paths, "/lib/unknown.txt", paths[0]])
    assert found == {p: cat.path_record(p) for p in paths if cat.path_record(p) is not None}
    assert len(found) == 802
    assert found[paths[1]].error == "binary content"


def test_link_paths_writes_each_path_and_says_what_each_pointed_at(tmp_path: Path) -> None:
    cat = _catalog(tmp_path)
    cat.link_path("/lib/a.txt", "lib/a.txt", "/lib", "m1", 1, 1)
    cat.link_path("/lib/b.txt", "lib/b.txt", "/lib", "m2", 1, 1)
    cat.fail_path("/lib/c.txt", "lib/c.txt", "/lib", 1, 1, "empty file (0 bytes)")
    old = cat.link_paths(
        [
            ("/lib/a.txt", "lib/a.txt", "/lib", "m2", 5, 50),  # was m1
            ("/lib/b.txt", "lib/b.txt", "/lib", "m2", 5, 50),  # the same content
            ("/lib/c.txt", "lib/c.txt", "/lib", "m1", 5, 50),  # a failure, now content
            ("/lib/d.txt", "lib/d.txt", "/lib", "m1", 5, 50),  # new
        ]
    )
    assert old == ["m1", None, None, None]
    for path, media in (("/lib/a.txt", "m2"), ("/lib/c.txt", "m1"), ("/lib/d.txt", "m1")):
        rec = cat.path_record(path)
        assert rec is not None
        assert (rec.media_id, rec.size, rec.mtime_ns, rec.error) == (media, 5, 50, None)
    assert cat.is_orphan("m1") is False
    assert cat.paths_by_media()["m2"] == ["lib/a.txt", "lib/b.txt"]


def test_touch_paths_refreshes_names_and_forgets_errors(tmp_path: Path) -> None:
    cat = _catalog(tmp_path)
    cat.link_path("/lib/a.txt", "lib/a.txt", "/lib", "m1", 1, 1)
    cat.link_path("/lib/b.txt", "lib/b.txt", "/lib", "m2", 1, 1)
    cat.fail_unreadable("/lib/b.txt", "lib/b.txt", "/lib", "cannot stat: denied")
    before = cat.path_record("/lib/a.txt")
    cat.touch_paths([("/lib/a.txt", "./lib/a.txt", "/lib"), ("/lib/b.txt", "lib/b.txt", "/lib")])
    a, b = cat.path_record("/lib/a.txt"), cat.path_record("/lib/b.txt")
    assert a is not None and b is not None and before is not None
    assert a.display == "./lib/a.txt" and a.seen_at >= before.seen_at
    assert b.error is None and b.media_id == "m2"
