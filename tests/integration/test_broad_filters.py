"""Catalog filters through the real Searcher (issue 17): a broad path glob is applied to the ranked
rows rather than sent to Milvus as every matching id, and still fills `limit` hits; a narrow one
names its few media. Real Milvus Lite (and its search snapshot), real catalog, real MiniLM."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mmrag.search.query as query
from mmrag.search.query import Filters
from mmrag.store import milvus
from tests.conftest import Env, write

QUERY = "the lighthouse keeper lit the lamp above the harbour"
# `match/` files rank below every `other/` file for the query: a cut of the first rows of an
# unfiltered search holds none of them, so the filter must reach deeper.
OTHER = "The lighthouse keeper climbed the tower and lit the lamp over the harbour, night {n}."
MATCH = "A recipe for bread number {n} from the harbour bakery: flour, water, salt and yeast."


def library(env: Env) -> Path:
    lib = env.root / "lib"
    for n in range(8):
        write(lib / "other" / f"light{n}.txt", OTHER.format(n=n))
        write(lib / "match" / f"bread{n}.txt", MATCH.format(n=n))
    report = env.ingest(lib)
    assert report.failed == [] and report.new == 16
    return lib


def name_at_most(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The store takes at most `n` media named, a snapshot's or Milvus's."""
    monkeypatch.setattr(milvus, "LISTED_MAX", n)
    monkeypatch.setattr(milvus, "LISTED_MAX_SNAPSHOT", n)


def sent_ids(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each search the store is asked, whether its filter named media ids (as a set, or
    in a `media_id in [...]` string)."""
    seen: list[bool] = []
    for name in ("search_dense", "search_bm25", "search_hybrid", "snapshot_legs"):
        real: Callable[..., Any] = getattr(env.store, name)

        def spy(*args: Any, real: Callable[..., Any] = real, **kw: Any) -> Any:
            texts = [a for a in (*args, *kw.values()) if isinstance(a, str)]
            named = kw.get("media") is not None or any(isinstance(a, frozenset) for a in args)
            seen.append(named or any("media_id in [" in t for t in texts))
            return real(*args, **kw)

        monkeypatch.setattr(env.store, name, spy)
    return seen


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_broad_glob_filters_ranked_rows_and_fills_limit(
    env: Env, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    library(env)
    name_at_most(monkeypatch, 4)  # 8 of 16 media: broad here
    seen = sent_ids(env, monkeypatch)
    hits = env.searcher().search(QUERY, mode, 5, Filters(path_glob="*/match/*"))
    assert len(hits) == 5
    assert all("/match/bread" in h.path for h in hits)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert seen and not any(seen)  # no `media_id in [...]` went to the store


def test_broad_glob_names_its_media_when_the_cut_runs_dry(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deepest search allowed holds too few of the filter's media: Milvus is asked again
    with them named, so the hits are what the listed filter gives."""
    library(env)
    listed = env.searcher().search(QUERY, "dense", 3, Filters(path_glob="*/match/*"))
    name_at_most(monkeypatch, 4)
    monkeypatch.setattr(query, "MAX_DEPTH", 4)  # the other/ files fill the first 8 rows
    seen = sent_ids(env, monkeypatch)
    hits = env.searcher().search(QUERY, "dense", 3, Filters(path_glob="*/match/*"))
    assert [h.segment_id for h in hits] == [h.segment_id for h in listed]
    assert seen[0] is False and seen[-1] is True


def test_narrow_glob_returns_only_its_files(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    library(env)
    seen = sent_ids(env, monkeypatch)
    hits = env.searcher().search(QUERY, "hybrid", 5, Filters(path_glob="bread[13].txt"))
    assert sorted(Path(h.path).name for h in hits) == ["bread1.txt", "bread3.txt"]
    assert seen and all(seen)  # two media: named to Milvus
    assert env.searcher().search(QUERY, "hybrid", 5, Filters(path_glob="*.md")) == []


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "milvus"])
def test_a_broad_filter_fuses_its_hits_as_the_listed_filter_does(
    env: Env, monkeypatch: pytest.MonkeyPatch, snapshot: bool
) -> None:
    """Min-max fusion scales each leg by its own rows. A listed filter's legs hold only its
    media; a broad one's are checked after ranking, so each leg is scaled over the rows the
    filter keeps, not over every file's: the same hits with the same scores either way."""
    library(env)
    if not snapshot:
        monkeypatch.setattr(env.store, "snapshots", None)  # Milvus Lite answers
    assert env.settings.hybrid_fusion == "minmax"
    glob = Filters(path_glob="*/match/*")
    listed = env.searcher().search(QUERY, "hybrid", 5, glob)
    unfiltered = env.searcher().search(QUERY, "hybrid", 16)
    name_at_most(monkeypatch, 4)  # 8 of 16 media: broad here
    seen = sent_ids(env, monkeypatch)
    broad = env.searcher().search(QUERY, "hybrid", 5, glob)
    assert seen and not any(seen)  # checked after ranking, no media named
    assert [(h.segment_id, h.score) for h in broad] == [(h.segment_id, h.score) for h in listed]
    assert broad[0].score == 1.0  # the best kept row tops both legs' scale
    # scaled over every file's rows, as before, the kept rows would have scored lower
    whole = {h.segment_id: h.score for h in unfiltered}
    assert all(whole[h.segment_id] < h.score for h in broad), (whole, broad)


def test_legs_too_shallow_for_a_broad_filters_rows_name_its_files(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deepest legs allowed hold too few of the filter's rows to scale by: its files are
    named, and the hits and scores are the listed filter's."""
    library(env)
    glob = Filters(path_glob="*/match/*")
    listed = env.searcher().search(QUERY, "hybrid", 5, glob)
    name_at_most(monkeypatch, 4)
    monkeypatch.setattr(query, "MAX_DEPTH", 4)  # 4 rows a leg: the other/ files' at most
    seen = sent_ids(env, monkeypatch)
    broad = env.searcher().search(QUERY, "hybrid", 5, glob)
    assert [(h.segment_id, h.score) for h in broad] == [(h.segment_id, h.score) for h in listed]
    assert seen[0] is False and seen[-1] is True  # checked first, then named
