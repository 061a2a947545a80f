"""Catalog filters at scale (issue 17): a broad filter's search starts as deep as the filter's
share of the library says (one that matches few of the ranked rows is found in one search, not
in rounds 4 times deeper each), and a narrow filter's media reach the store as a set that finds
what the `media_id in [...]` expression finds. Real Milvus Lite (and its search snapshot), real
catalog, real MiniLM."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mmrag.search.query as query
from mmrag.kinds import QueryKind
from mmrag.search.query import Filters
from mmrag.store import lite_index, milvus
from mmrag.store.schema import quote
from tests.conftest import Env, write

# The library of test_broad_filters: `match/` files rank below every `other/` file for the
# query, so a search must reach past them all to fill its cut with them.
from tests.integration.test_broad_filters import MATCH, OTHER, QUERY, name_at_most, sent_ids


def library(env: Env) -> Path:
    """18 `other/` files and 2 `match/` files: the glob `*/match/*` keeps a tenth."""
    lib = env.root / "lib"
    for n in range(18):
        write(lib / "other" / f"light{n}.txt", OTHER.format(n=n))
    for n in range(2):
        write(lib / "match" / f"bread{n}.txt", MATCH.format(n=n))
    report = env.ingest(lib)
    assert report.failed == [] and report.new == 20
    return lib


def calls(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, note: Callable[..., Any]
) -> list[Any]:
    """What `note(*args, **kw)` says of each call of `owner.name` (calls it says SKIP of are
    left out); the calls go on to the real method."""
    seen: list[Any] = []
    real: Callable[..., Any] = getattr(owner, name)

    def spy(*args: Any, **kw: Any) -> Any:
        if (said := note(*args, **kw)) is not SKIP:
            seen.append(said)
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, spy)
    return seen


SKIP = object()


def depths(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The depth of each search the store is asked."""
    return calls(monkeypatch, env.store, "search_dense", lambda _c, _v, limit, *_a, **_k: limit)


def listings(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The `limit` of each listing of a filter's media (not the checks of ranked rows)."""

    def note(*args: Any, **kw: Any) -> Any:
        return kw.get("limit") if len(args) < 3 and kw.get("among") is None else SKIP

    return calls(monkeypatch, env.catalog, "media_matching", note)


def test_broad_filter_with_a_small_share_is_found_in_one_search(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    library(env)
    glob = Filters(path_glob="*/match/*")
    listed = env.searcher().search(QUERY, "dense", 2, glob)  # 2 media: named to the store
    name_at_most(monkeypatch, 1)  # broad now: checked against ranked rows
    seen = depths(env, monkeypatch)
    hits = env.searcher().search(QUERY, "dense", 2, glob)
    assert [h.segment_id for h in hits] == [h.segment_id for h in listed]
    assert sorted(Path(h.path).name for h in hits) == ["bread0.txt", "bread1.txt"]
    # a tenth of the paths match: 2 * 16 deep at once (at 2 * 4 the others fill the cut)
    assert seen == [32]


def test_broad_filter_with_a_large_share_starts_shallow(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    library(env)
    name_at_most(monkeypatch, 1)
    seen = depths(env, monkeypatch)
    hits = env.searcher().search(QUERY, "dense", 2, Filters(path_glob="*/other/*"))
    assert [Path(h.path).parent.name for h in hits] == ["other", "other"]
    assert seen == [2 * query.BROAD_WIDEN]  # 90% match: the first round's depth, as before


@pytest.mark.parametrize("sparse", [1, 10**6])
def test_media_named_as_a_set_find_what_the_expression_finds(
    env: Env, monkeypatch: pytest.MonkeyPatch, sparse: int
) -> None:
    """On the snapshot and on Milvus alike (a server, or a snapshot not current); the snapshot
    reading every vector, or only those of the rows kept (SPARSE_KEEP)."""
    monkeypatch.setattr(lite_index, "SPARSE_KEEP", sparse)
    library(env)
    store, name = env.store, env.searcher().spaces[0].collection
    assert store.snapshots is not None and store.snapshots.current(name) is not None
    media = frozenset(sorted(env.catalog.paths_by_media())[::3])
    listed = f"media_id in [{', '.join(quote(m) for m in sorted(media))}]"
    vector = env.searcher().spaces[0].encoder.encode_query(QueryKind.TEXT, [QUERY])
    searches = [
        (lambda e, m: store.search_dense(name, vector, 7, e, media=m)[0]),
        (lambda e, m: store.search_dense(name, vector, 7, e, "media_id", media=m)[0]),
        (lambda e, m: store.search_bm25(name, [QUERY], 7, e, media=m)[0]),
        (lambda e, m: store.search_hybrid(name, vector[0], QUERY, 7, e, media=m)),
    ]

    def agree() -> None:
        for expr in ("", 'modality == "document"', 'modality == "transcript"'):
            named = f"{expr} and {listed}" if expr else listed
            for search in searches:
                want = search(named, None)
                assert [r["id"] for r in search(expr, media)] == [r["id"] for r in want]
                assert {r["media_id"] for r in want} <= media

    agree()
    snapshots, store.snapshots = store.snapshots, None  # Milvus answers
    try:
        agree()
    finally:
        store.snapshots = snapshots


def test_a_sampled_share_skips_listing_a_filter_that_keeps_most_of_the_library(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    library(env)
    name_at_most(monkeypatch, 4)
    seen = listings(env, monkeypatch)
    hits = env.searcher().search(QUERY, "dense", 2, Filters(path_glob="*/other/*"))
    assert [Path(h.path).parent.name for h in hits] == ["other", "other"]
    assert seen == []  # 90% of 20 paths is past 1.5 times 4: checked against the ranked rows
    hits = env.searcher().search(QUERY, "dense", 2, Filters(path_glob="*/match/*"))
    assert sorted(Path(h.path).name for h in hits) == ["bread0.txt", "bread1.txt"]
    assert seen == [5]  # a tenth: its 2 media listed, and named


def test_a_snapshot_takes_more_media_named_than_milvus(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    library(env)
    monkeypatch.setattr(milvus, "LISTED_MAX", 1)
    monkeypatch.setattr(milvus, "LISTED_MAX_SNAPSHOT", 2)
    glob = Filters(path_glob="*/match/*")
    seen = sent_ids(env, monkeypatch)
    named = env.searcher().search(QUERY, "dense", 2, glob)
    assert seen == [True]  # the 2 media, as a set
    seen.clear()
    snapshots, env.store.snapshots = env.store.snapshots, None  # Milvus answers
    try:
        checked = env.searcher().search(QUERY, "dense", 2, glob)
    finally:
        env.store.snapshots = snapshots
    assert seen and seen[0] is False  # more than 1: the ranked rows are checked
    assert [h.segment_id for h in checked] == [h.segment_id for h in named]


def test_a_snapshot_takes_a_share_of_a_large_library_named(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    library(env)
    monkeypatch.setattr(milvus, "LISTED_MAX_SNAPSHOT", 1)
    glob = Filters(path_glob="*/match/*")  # 2 of 20 paths
    seen = sent_ids(env, monkeypatch)
    monkeypatch.setattr(milvus, "LISTED_SHARE", 0.05)  # 1 of 20 may be named: checked
    checked = env.searcher().search(QUERY, "dense", 2, glob)
    assert seen and seen[0] is False
    seen.clear()
    monkeypatch.setattr(milvus, "LISTED_SHARE", 0.1)  # 2 of 20: named
    named = env.searcher().search(QUERY, "dense", 2, glob)
    assert seen == [True]
    assert [h.segment_id for h in named] == [h.segment_id for h in checked]
