"""`mmrag eval --self` beyond documents: photos' altered copies as image queries, recordings
noted for their transcripts, and the per-kind table."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from rich.console import Console

from mmrag.eval_report import tables
from mmrag.model_eval import Candidate, EvalReport, ModelRun, kept_models, self_labels, text_only
from mmrag.search.evaluate import Scores
from tests.audio_samples import SR
from tests.video_samples import photo


def _library(root: Path) -> list[str]:
    import wave

    (root / "notes.md").write_text("# Sourdough starter care\n\nFeed it daily.", encoding="utf-8")
    photo("coffee").save(root / "coffee.png")
    photo("rocket").save(root / "rocket.jpg")
    with wave.open(str(root / "memo.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(b"\x01\x00" * SR)
    return ["coffee.png", "memo.wav", "notes.md", "rocket.jpg"]


def test_photos_become_altered_copies_outside_the_library(tmp_path: Path) -> None:
    library, first, second = (tmp_path / d for d in ("lib", "q1", "q2"))
    for folder in (library, first, second):
        folder.mkdir()
    files = _library(library)
    labels = self_labels(library, files, photo_dir=first, recordings=True)
    again = self_labels(library, files, photo_dir=second, recordings=True)
    photos = [q for q in labels.queries if q["kind"] == "photo"]
    assert [labels.qrels[q["id"]] for q in photos] == [{"coffee.png": 2}, {"rocket.jpg": 2}]
    for q, twin in zip(photos, [q for q in again.queries if q["kind"] == "photo"], strict=True):
        copy = Path(q["image"])
        assert copy.parent == first and Path(twin["image"]).parent == second
        assert copy.read_bytes() == Path(twin["image"]).read_bytes()  # the same on every run
        original = library / next(iter(labels.qrels[q["id"]]))
        with Image.open(copy) as altered, Image.open(original) as source:
            assert altered.format == "JPEG"
            assert altered.width < 0.85 * source.width and altered.height < 0.85 * source.height
    assert labels.recordings == ["memo.wav"]  # its queries come from its transcript
    assert [q["text"] for q in text_only(labels).queries] == ["Sourdough starter care"]
    assert kept_models(labels) == ("image_model", "speech_model")
    documents_only = self_labels(library, files)
    assert [q["kind"] for q in documents_only.queries] == ["document"]
    assert not documents_only.recordings and kept_models(documents_only) == ()


def test_the_table_shows_each_kind_of_query() -> None:
    def s(n: int) -> Scores:
        return Scores(ndcg=0.9, recall=1.0, mrr=0.875, queries=n, p50_ms=12)

    run = ModelRun(
        Candidate("all-MiniLM-L6-v2"),
        "all-MiniLM-L6-v2",
        {},
        1.0,
        2.0,
        9,
        40,
        [],
        None,
        {m: s(5) for m in ("bm25", "dense", "hybrid")},
        kinds={
            "document": {m: s(3) for m in ("bm25", "dense", "hybrid")},
            "photo": {"image": s(4)},
            "recording": {m: s(2) for m in ("bm25", "dense", "hybrid")},
        },
    )
    report = EvalReport(Path("lib"), 9, 9, 5, True, runs=[run])
    report.kinds = {"document": 3, "photo": 4, "recording": 2}
    console = Console(width=160, record=True)
    for table in tables(report):
        console.print(table)
    text = console.export_text()
    assert "per kind of query (--self)" in text
    for row in ("3 documents", "4 photos", "2 recordings", "│ image ", "0.875"):
        assert row in text
    report.kinds = {"document": 3, "photo": 0, "recording": 0}  # documents only: no such table
    assert all(t.title != "per kind of query (--self)" for t in tables(report))
