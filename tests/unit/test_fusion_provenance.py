"""Provenance through fusion (which spaces found a row, at what rank), and the pure parts of
result shaping: grouping rows by file and the automatic cutoff."""

from __future__ import annotations

from mmrag.search.fusion import fuse_ranked, join_sources, merge_moments
from mmrag.search.query import auto_cutoff, group_by_file


def row(media: str, score: float, start: float = 0, end: float = 0, modality: str = "document"):
    return {
        "media_id": media,
        "page": 0,
        "start": start,
        "end": end,
        "score": score,
        "text": "",
        "modality": modality,
        "id": f"{media}@{start}",
    }


def test_fused_rows_name_every_space_and_rank_that_found_them() -> None:
    text = [row("doc", 0.9, 0, 10), row("cat", 0.8), row("bird", 0.7)]
    clip = [row("cat", 0.31), row("dog", 0.30)]
    fused = fuse_ranked([text, clip], limit=10, names=["text", "clip"])
    sources = {r["media_id"]: r["sources"] for r in fused}
    assert sources["cat"] == [{"space": "text", "rank": 2}, {"space": "clip", "rank": 1}]
    assert sources["doc"] == [{"space": "text", "rank": 1}]
    assert sources["dog"] == [{"space": "clip", "rank": 2}]
    assert "sources" not in text[1]  # the callers' rows are not changed


def test_a_single_list_keeps_its_scores_and_gains_its_ranks() -> None:
    rows = [row("a", 0.9), row("b", 0.5)]
    fused = fuse_ranked([rows, []], limit=5, names=["text", "clip"])
    assert [r["score"] for r in fused] == [0.9, 0.5]
    assert [r["sources"] for r in fused] == [
        [{"space": "text", "rank": 1}],
        [{"space": "text", "rank": 2}],
    ]
    assert fuse_ranked([rows, []], limit=5) == rows  # without names, as before


def test_merged_moments_keep_each_space_at_its_best_rank() -> None:
    image = [row("v", 0.9, 10, 15, "shot"), row("v", 0.7, 15, 20, "shot")]
    clip = [row("v", 0.3, 15, 20, "shot")]
    merged = merge_moments(fuse_ranked([image, clip], 10, names=["image", "clip"]))
    assert len(merged) == 1 and (merged[0]["start"], merged[0]["end"]) == (10, 20)
    assert merged[0]["sources"] == [{"space": "image", "rank": 1}, {"space": "clip", "rank": 1}]
    assert join_sources([{"space": "a", "rank": 4}], [{"space": "a", "rank": 2}]) == [
        {"space": "a", "rank": 2}
    ]


def test_rows_group_by_file_in_order_of_each_files_best_row() -> None:
    rows = [row("a", 0.9, 0), row("b", 0.8), row("a", 0.7, 1), row("a", 0.6, 2), row("a", 0.5, 3)]
    groups = group_by_file(rows)
    assert [[r["id"] for r in g] for g in groups] == [["a@0", "a@1", "a@2"], ["b@0"]]


def test_auto_cutoff_stops_at_the_first_cliff_and_keeps_the_first_hit() -> None:
    assert auto_cutoff([0.9, 0.85, 0.8, 0.3, 0.29, 0.1]) == 3  # 0.3 < 0.8 / 2
    assert auto_cutoff([0.9, 0.1]) == 1
    assert auto_cutoff([0.9, 0.6, 0.4, 0.3]) == 4  # gentle falls: nothing cut
    assert auto_cutoff([0.5]) == 1 and auto_cutoff([]) == 0
    # prefix-stable: a longer list of the same hits cuts in the same place
    assert auto_cutoff([0.9, 0.8, 0.3]) == auto_cutoff([0.9, 0.8, 0.3, 0.29, 0.01]) == 2
    assert auto_cutoff([-0.5, -2.0, -9.0]) == 3  # no ratio below zero: never cut there
