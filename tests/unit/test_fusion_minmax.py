"""`minmax` hybrid fusion (search/fusion.py): each leg scaled over its own list, then a convex
combination; checked against values computed by hand."""

from __future__ import annotations

import pytest

from mmrag.search.fusion import MINMAX_DEPTH, legs_of_rows, minmax_fused


def _rows(scores: dict[str, float]) -> list[dict]:
    return [{"id": i, "media_id": i, "score": s} for i, s in scores.items()]


def fuse_minmax(
    dense: list[dict],
    bm25: list[dict],
    dense_weight: float,
    limit: int,
    kept_media: set[str] | None = None,
    kept_depth: int = MINMAX_DEPTH,
) -> list[dict]:
    """The searcher's min-max fusion of two legs of rows (as it fuses Milvus's), `limit` kept."""
    legs = legs_of_rows(dense, bm25)
    kept = None
    if kept_media is not None:
        kept = {r["id"] for r in (*dense, *bm25) if r["media_id"] in kept_media}
    pairs = [(legs.dense, dense_weight), (legs.bm25, 1.0 - dense_weight)]
    return legs.hits(minmax_fused(pairs, kept, kept_depth)[:limit])


def test_each_leg_is_scaled_over_its_own_list_then_weighted() -> None:
    # dense cosines crowd together (E5-like); BM25 spans a wide range
    dense = _rows({"a": 0.86, "b": 0.84, "c": 0.80})
    bm25 = _rows({"c": 9.0, "b": 3.0, "d": 1.0})
    fused = fuse_minmax(dense, bm25, 0.7, 10)
    # a: 0.7 * 1 + 0 = 0.7; b: 0.7 * (0.04 / 0.06) + 0.3 * (2 / 8) = 0.5417;
    # c: 0.7 * 0 + 0.3 * 1 = 0.3; d: 0.3 * 0 = 0
    assert [r["id"] for r in fused] == ["a", "b", "c", "d"]
    assert [r["score"] for r in fused] == pytest.approx([0.7, 0.7 * 2 / 3 + 0.3 / 4, 0.3, 0.0])


def test_a_weak_lexical_match_no_longer_outweighs_the_meaning() -> None:
    """A question in another language matches a stop word ("a") in the wrong passage: under
    Milvus's weighted normalisation that match wins, scaled it does not."""
    dense = _rows({"right": 0.88, "wrong": 0.84, "other": 0.80})
    bm25 = _rows({"wrong": 0.9, "other": 0.8})
    assert fuse_minmax(dense, bm25, 0.7, 3)[0]["id"] == "right"


def test_one_row_or_an_empty_leg_and_the_limit() -> None:
    assert fuse_minmax(_rows({"a": 0.5}), [], 0.6, 5) == [
        {"id": "a", "media_id": "a", "score": pytest.approx(0.6)}
    ]
    assert fuse_minmax([], [], 0.5, 5) == []
    assert len(fuse_minmax(_rows({"a": 1.0, "b": 0.5, "c": 0.1}), [], 0.5, 2)) == 2


def test_the_scaling_is_set_by_the_first_minmax_depth_rows_so_k_changes_no_score() -> None:
    """A search asked for more rows (a later page, candidates for a reranker) fetches deeper:
    the rows it shares with a shallower search keep their scores and order."""
    deep = _rows({f"r{i}": 1.0 - i / 1000 for i in range(MINMAX_DEPTH + 50)})
    shallow = fuse_minmax(deep[:MINMAX_DEPTH], [], 1.0, 10)
    deeper = fuse_minmax(deep, [], 1.0, 10)
    assert deeper == shallow
    last = fuse_minmax(deep, [], 1.0, MINMAX_DEPTH + 50)[-1]
    assert last["id"] == f"r{MINMAX_DEPTH + 49}" and last["score"] < 0  # below the scaled range


def test_a_filter_checked_after_ranking_scales_each_leg_over_the_rows_it_keeps() -> None:
    dense = _rows({"a": 0.9, "b": 0.8, "c": 0.6, "d": 0.5, "e": 0.2})
    bm25 = _rows({"e": 9.0, "c": 4.0, "a": 2.0, "b": 1.0})
    kept = {"b", "c", "d"}  # the media a filter keeps
    fused = fuse_minmax(dense, bm25, 0.7, 10, kept_media=kept)
    alone = fuse_minmax(
        [r for r in dense if r["media_id"] in kept],
        [r for r in bm25 if r["media_id"] in kept],
        0.7,
        10,
    )
    assert [(r["id"], r["score"]) for r in fused if r["media_id"] in kept] == [
        (r["id"], pytest.approx(r["score"])) for r in alone
    ]
    assert [r["id"] for r in alone] == ["b", "c", "d"]
    assert fuse_minmax(dense, bm25, 0.7, 10, kept_media=set()) == []  # nothing kept to scale by


def test_kept_rows_past_the_filters_own_depth_count_as_absent_from_that_leg() -> None:
    """A listed filter's legs are fetched `kept_depth` deep: a kept row further down in a
    deeper leg counts 0 there (absent), not below 0 (scaled)."""
    dense = _rows({"a": 0.9, "b": 0.8, "c": 0.6, "d": 0.5, "e": 0.2})
    bm25 = _rows({"e": 9.0, "d": 6.0, "c": 4.0, "a": 2.0, "b": 1.0})
    kept = {"b", "c", "d"}
    fused = fuse_minmax(dense, bm25, 0.7, 10, kept_media=kept, kept_depth=2)
    own = (
        [r for r in dense if r["media_id"] in kept][:2],
        [r for r in bm25 if r["media_id"] in kept][:2],
    )
    alone = fuse_minmax(*own, 0.7, 10)
    assert [(r["id"], r["score"]) for r in fused if r["media_id"] in kept] == [
        (r["id"], pytest.approx(r["score"])) for r in alone
    ]
    assert {r["id"]: r["score"] for r in alone}["b"] == pytest.approx(0.7)  # absent from BM25's
