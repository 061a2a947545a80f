"""`mmrag eval`'s choices made before any model loads: the sample, and queries from the
library itself (`--self`); and the fusion setting it names from the grid's scores."""

from __future__ import annotations

from pathlib import Path

from mmrag.model_eval import (
    Fusion,
    best_fusion,
    choose_files,
    fusion_grid,
    query_from_text,
    self_labels,
)


def test_a_sample_keeps_every_judged_file_and_is_the_same_each_run() -> None:
    files = [f"f{i:02d}.md" for i in range(30)]
    judged = {"f03.md", "f17.md", "f29.md"}
    sample = choose_files(files, judged, 8)
    assert len(sample) == 8 and judged <= set(sample)
    assert choose_files(files, judged, 8) == sample
    assert choose_files(files, judged, 2) == sorted(judged)  # never fewer than the judged
    assert choose_files(files, judged, None) == files


def test_a_query_is_the_title_else_the_first_sentence() -> None:
    assert query_from_text("# Heat pump manual\n\nThe E-2207 code means...") == "Heat pump manual"
    long_first_line = (
        "Our router is old and slow. It drops the connection every evening, so we replaced it."
    )
    assert query_from_text(long_first_line) == "Our router is old and slow."
    assert query_from_text("ok") is None
    assert query_from_text("") is None


def test_self_labels_make_each_document_find_itself(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Sourdough starter care\n\nFeed it daily.", encoding="utf-8")
    (tmp_path / "b.txt").write_text(
        "Bees swarm in spring when the colony outgrows its hive. More text.", encoding="utf-8"
    )
    (tmp_path / "c.md").write_text("# Sourdough starter care\n\nA copy.", encoding="utf-8")
    (tmp_path / "d.bin").write_bytes(bytes(range(256)))  # not a document: no query
    labels = self_labels(tmp_path, ["a.md", "b.txt", "c.md", "d.bin"])
    assert labels.self_built
    by_text = {q["text"]: labels.qrels[q["id"]] for q in labels.queries}
    assert by_text == {
        "Bees swarm in spring when the colony outgrows its hive.": {"b.txt": 2},
        "Sourdough starter care": {"a.md": 2, "c.md": 2},  # the same title: both answer
    }


NOW = Fusion("weighted", 0.5)


def scored(**ndcg: float) -> list[tuple[Fusion, float]]:
    """Grid points from `w03=0.9, rrf=0.8` (a weight's tenths after `w`)."""
    return [
        (Fusion("rrf") if k == "rrf" else Fusion("weighted", int(k[1:]) / 10), v)
        for k, v in ndcg.items()
    ]


def test_the_grid_holds_the_weights_the_configured_one_and_rrf() -> None:
    grid = fusion_grid(NOW)
    weights = [w / 10 for w in range(3, 10)]
    assert [f.label for f in grid] == [
        *(f"weighted {w:g}" for w in weights),
        *(f"minmax {w:g}" for w in weights),
        "rrf",
    ]
    assert Fusion("weighted", 0.75) in fusion_grid(Fusion("weighted", 0.75))  # not left out
    assert fusion_grid(Fusion("rrf", 0.7))[-1] == Fusion("rrf", 0.7)  # the configured one
    assert (
        Fusion.of("weighted", 0.5000001) == NOW and Fusion("rrf").to_json()["dense_weight"] is None
    )


def test_the_highest_ndcg_is_chosen_and_its_settings_lines_named() -> None:
    best = best_fusion(scored(w03=0.86, w05=0.90, w08=0.955, w09=0.95, rrf=0.91), NOW)
    assert best == Fusion("weighted", 0.8)
    assert best.env_lines(NOW) == ["MMRAG_DENSE_WEIGHT=0.8"]
    assert best.toml_lines(NOW) == ["dense_weight = 0.8"]
    rrf = best_fusion(scored(w05=0.90, w07=0.91, rrf=0.95), NOW)
    assert rrf.env_lines(NOW) == ["MMRAG_HYBRID_FUSION=rrf"]
    assert rrf.toml_lines(NOW) == ['hybrid_fusion = "rrf"']
    back = Fusion("weighted", 0.7)  # from rrf (dense_weight 0.5) to weighted 0.7: both change
    assert Fusion("weighted", 0.5).env_lines(Fusion("rrf")) == ["MMRAG_HYBRID_FUSION=weighted"]
    assert back.env_lines(Fusion("rrf")) == [
        "MMRAG_HYBRID_FUSION=weighted",
        "MMRAG_DENSE_WEIGHT=0.7",
    ]
    assert NOW.env_lines(NOW) == [] and NOW.toml_lines(NOW) == []
    scaled = Fusion("minmax", 0.7)  # min-max scaled legs: the method and the weight change
    assert scaled.label == "minmax 0.7" and scaled.to_json() == {
        "fusion": "minmax",
        "dense_weight": 0.7,
    }
    assert scaled.env_lines(NOW) == ["MMRAG_HYBRID_FUSION=minmax", "MMRAG_DENSE_WEIGHT=0.7"]


def test_ties_go_to_the_configured_setting_then_the_nearest_weight_then_rrf() -> None:
    # equal to 3 decimals (as shown) is a tie: the configured setting stays
    assert best_fusion(scored(w05=0.9881, w06=0.9884, rrf=0.9884), NOW) == NOW
    # the configured one lower: the weight nearest it wins, the lower of two as near
    assert best_fusion(scored(w05=0.9, w03=0.95, w07=0.95, w09=0.95), NOW).dense_weight == 0.3
    assert best_fusion(scored(w05=0.9, w06=0.95, w08=0.95), NOW).dense_weight == 0.6
    # RRF (it drops the scores' spread) after every weighted setting as good
    assert best_fusion(scored(w05=0.9, w09=0.95, rrf=0.95), NOW) == Fusion("weighted", 0.9)
    # configured RRF: kept on a tie; else the weight nearest the configured dense_weight
    assert best_fusion(scored(w05=0.95, rrf=0.95), Fusion("rrf")) == Fusion("rrf")
    rrf = Fusion("rrf", 0.7)
    assert best_fusion(scored(w03=0.97, w08=0.97, rrf=0.95), rrf) == Fusion("weighted", 0.8)
