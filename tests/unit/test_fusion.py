"""Rank fusion across spaces: same place merges, single lists keep their scores."""

from __future__ import annotations

import pytest

from mmrag.search.fusion import RRF_K, fuse_ranked, merge_moments


def row(media: str, score: float, start: float = 0, end: float = 0, text: str = "") -> dict:
    return {"media_id": media, "page": 0, "start": start, "end": end, "score": score, "text": text}


def test_one_list_is_returned_unchanged() -> None:
    rows = [row("a", 0.9), row("b", 0.5), row("c", 0.1)]
    assert fuse_ranked([rows, []], limit=2) == rows[:2]
    assert fuse_ranked([[], []], limit=5) == []


def test_agreement_between_spaces_ranks_first() -> None:
    text = [row("doc", 0.9, 0, 10, "passage"), row("cat", 0.8, text="tabby, tiger cat")]
    clip = [row("dog", 0.31), row("cat", 0.30)]
    fused = fuse_ranked([text, clip], limit=10)
    assert [r["media_id"] for r in fused] == ["cat", "doc", "dog"]
    assert fused[0]["score"] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 2))
    assert fused[0]["text"] == "tabby, tiger cat"  # the labels make the snippet


def test_weights_scale_each_lists_ranks_and_zero_leaves_a_list_out() -> None:
    text = [row("doc", 0.9), row("cat", 0.8)]
    clip = [row("dog", 0.31), row("cat", 0.30)]
    fused = fuse_ranked([text, clip], limit=10, weights=[3.0, 1.0])
    assert [r["media_id"] for r in fused] == ["cat", "doc", "dog"]
    assert fused[0]["score"] == pytest.approx(3 / (RRF_K + 2) + 1 / (RRF_K + 2))
    assert fused[1]["score"] == pytest.approx(3 / (RRF_K + 1))
    fused = fuse_ranked([text, clip], limit=10, weights=[1.0, 3.0])
    assert [r["media_id"] for r in fused] == ["cat", "dog", "doc"]  # the weight decides
    # weight 0: as if that space had found nothing (its own scores kept for the other)
    assert fuse_ranked([text, clip], limit=10, weights=[0.0, 1.0]) == clip
    named = fuse_ranked([text, clip], limit=10, names=["text", "clip"], weights=[1.0, 0.0])
    assert [r["sources"] for r in named] == [[{"space": "text", "rank": n}] for n in (1, 2)]


def test_different_places_in_one_file_stay_apart() -> None:
    a = [row("video", 0.9, 0, 5), row("video", 0.8, 30, 35)]
    b = [row("video", 0.5, 30, 35)]
    fused = fuse_ranked([a, b], limit=10)
    assert [(r["start"], r["end"]) for r in fused] == [(30, 35), (0, 5)]


def test_empty_text_is_filled_from_the_other_space() -> None:
    fused = fuse_ranked([[row("p", 0.3)], [row("p", 0.9, text="INVOICE 4471")]], limit=1)
    assert fused[0]["text"] == "INVOICE 4471"


def shot(media: str, start: float, end: float, score: float) -> dict:
    return row(media, score, start, end) | {"modality": "shot", "id": f"{media}@{start}"}


def test_neighbouring_moments_of_a_video_merge_into_one_range() -> None:
    rows = [
        shot("v1", 10, 15, 0.9),
        shot("v2", 0, 5, 0.8),
        shot("v1", 15, 20, 0.7),  # touches the first: one scene
        shot("v1", 40, 45, 0.6),  # far away: its own moment
        {**row("doc", 0.5, 0, 100), "modality": "document"},
    ]
    merged = merge_moments(rows)
    assert [(r["media_id"], r["start"], r["end"]) for r in merged] == [
        ("v1", 10, 20),
        ("v2", 0, 5),
        ("v1", 40, 45),
        ("doc", 0, 100),
    ]
    assert merged[0]["score"] == 0.9 and merged[0]["id"] == "v1@10"  # shown by its best shot
