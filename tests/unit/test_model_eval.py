"""`mmrag eval`'s choices made before any model loads: the sample, and queries from the
library itself (`--self`)."""

from __future__ import annotations

from pathlib import Path

from mmrag.model_eval import choose_files, query_from_text, self_labels


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
