"""Ingest end to end on real files, real MiniLM weights and a real Milvus Lite store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fpdf import FPDF

from mmrag.pipelines.base import Encoded, Piece
from tests.conftest import Env, write

ROUTER = (
    "Resetting the router\n\n"
    "The TX-4410 router keeps its settings in flash memory. When the status light blinks amber "
    "for more than a minute, hold the recessed reset button for ten seconds with a paper clip. "
    "The router restarts with the factory password printed on the label underneath."
)
BREAD = (
    "Sourdough starter care\n\n"
    "Feed the starter every morning with equal weights of rye flour and lukewarm water. "
    "A healthy starter doubles in four to six hours and smells pleasantly sour, like yoghurt."
)
PLANTS = (
    "Watering houseplants\n\n"
    "Most ferns want evenly moist soil, while succulents and cacti should dry out completely "
    "between waterings. Yellow lower leaves usually mean too much water rather than too little."
)


def make_library(root: Path) -> Path:
    lib = root / "lib"
    write(lib / "router.txt", ROUTER)
    write(lib / "kitchen" / "bread.md", BREAD)
    write(lib / "plants.txt", PLANTS)
    return lib


def pdf_bytes(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def test_known_query_finds_its_passage_first(env: Env) -> None:
    lib = make_library(env.root)
    report = env.ingest(lib)
    assert (report.new, report.failed) == (3, [])
    for mode in ("hybrid", "dense", "bm25"):
        hits = env.searcher().search("how do I factory reset my TX-4410", mode=mode, limit=3)
        assert hits[0].path == str(lib / "router.txt"), mode
        assert "reset button" in hits[0].snippet
    hits = env.searcher().search("my bread culture is not rising", mode="dense", limit=3)
    assert hits[0].path.endswith("kitchen/bread.md")


def test_hit_maps_back_to_pdf_page_and_char_range(env: Env) -> None:
    lib = env.root / "lib"
    pages = [
        "Chapter one is about the harbour town and its fishing boats.",
        "Chapter two explains how to replace a bicycle inner tube with tyre levers.",
        "Chapter three lists the opening hours of the public library.",
    ]
    write(lib / "guide.pdf", pdf_bytes(pages))
    env.ingest(lib)
    hit = env.searcher().search("fix a flat bicycle tyre", mode="dense", limit=1)[0]
    assert hit.path.endswith("guide.pdf")
    assert hit.page == 2
    assert "inner tube" in hit.snippet
    assert hit.end > hit.start >= 0


def test_reingesting_an_unchanged_tree_writes_nothing(env: Env) -> None:
    lib = make_library(env.root)
    first = env.ingest(lib)
    ids = sorted(env.ids())
    assert first.segments == len(ids) > 0
    again = env.ingest(lib)
    assert (again.new, again.changed, again.reused, again.segments) == (0, 0, 0, 0)
    assert again.unchanged == 3
    assert sorted(env.ids()) == ids


def test_changed_file_loses_its_old_chunks(env: Env) -> None:
    lib = make_library(env.root)
    env.ingest(lib)
    old_media = env.catalog.path_record(str(lib / "router.txt")).media_id
    write(lib / "router.txt", "The garden shed roof leaks after heavy rain; patch it with felt.")
    report = env.ingest(lib)
    assert (report.changed, report.new, report.unchanged) == (1, 0, 2)
    assert env.store.count(env.collection, f'media_id == "{old_media}"') == 0
    assert env.catalog.segment_ids(old_media) == []
    hits = env.searcher().search("TX-4410 reset button", mode="bm25", limit=5)
    assert all("TX-4410" not in h.snippet for h in hits)
    assert env.searcher().search("shed roof leak", limit=1)[0].path.endswith("router.txt")


def test_renamed_file_is_not_re_embedded(env: Env) -> None:
    lib = make_library(env.root)
    env.ingest(lib)
    ids = sorted(env.ids())
    os.rename(lib / "plants.txt", lib / "kitchen" / "houseplants.txt")
    report = env.ingest(lib, prune=True)
    assert (report.reused, report.new, report.segments, report.pruned) == (1, 0, 0, 1)
    assert sorted(env.ids()) == ids  # the very same segments
    hit = env.searcher().search("succulents watering", limit=1)[0]
    assert hit.path == str(lib / "kitchen" / "houseplants.txt")


def test_copies_share_content_and_prune_removes_deleted_files(env: Env) -> None:
    lib = make_library(env.root)
    write(lib / "copy of bread.md", BREAD)
    report = env.ingest(lib)
    assert report.new == 3 and report.reused == 1  # one content, two paths: embedded once
    (lib / "kitchen" / "bread.md").unlink()
    report = env.ingest(lib, prune=True)
    assert report.pruned == 1 and report.removed_media == 0  # the copy still holds the content
    assert (
        env.searcher().search("starter", mode="bm25", limit=1)[0].path.endswith("copy of bread.md")
    )
    (lib / "copy of bread.md").unlink()
    report = env.ingest(lib, prune=True)
    assert report.pruned == 1 and report.removed_media == 1
    assert all("starter" not in h.snippet for h in env.searcher().search("starter", mode="bm25"))
    assert env.catalog.counts()["media"] == 2


def test_bad_files_are_reported_and_the_rest_is_ingested(env: Env) -> None:
    lib = make_library(env.root)
    good_pdf = pdf_bytes(["A page about tide tables for the harbour.", "Second page on moorings."])
    write(lib / "empty.txt", b"")
    write(lib / "binary.txt", os.urandom(4096))
    write(lib / "truncated.pdf", good_pdf[: len(good_pdf) * 2 // 5])
    write(lib / "undecodable.md", b"Caf\xe9 " + bytes(range(0x80, 0x100)) * 40 + b"\x00\x01" * 10)
    write(lib / "fine.pdf", good_pdf)
    report = env.ingest(lib)
    reasons = dict(report.failed)
    assert set(reasons) == {
        str(lib / n) for n in ("empty.txt", "binary.txt", "truncated.pdf", "undecodable.md")
    }
    assert "empty" in reasons[str(lib / "empty.txt")]
    assert "binary" in reasons[str(lib / "binary.txt")]
    assert "PDF" in reasons[str(lib / "truncated.pdf")]
    assert report.new == 4  # three texts and the good PDF
    assert {f.display for f in env.catalog.failures()} == set(reasons)
    assert env.searcher().search("tide tables harbour", limit=1)[0].path.endswith("fine.pdf")
    # Known failures are not retried while unchanged, and nothing stored is touched.
    again = env.ingest(lib)
    assert (again.failed_before, again.failed, again.unchanged) == (4, [], 4)


def test_hidden_files_and_symlink_loops_are_safe(env: Env) -> None:
    lib = make_library(env.root)
    write(lib / ".secret.txt", "hidden notes about the TX-4410")
    write(lib / ".git" / "config.txt", "not library content")
    os.symlink(lib, lib / "kitchen" / "loop")
    report = env.ingest(lib)
    assert report.scanned == 3
    assert report.new == 3


def test_filters_by_path_glob_modality_and_date(env: Env) -> None:
    from datetime import datetime

    from mmrag.search.query import Filters

    lib = make_library(env.root)
    os.utime(lib / "plants.txt", (1_600_000_000, 1_600_000_000))  # 2020-09-13
    env.ingest(lib)
    s = env.searcher()
    hits = s.search("water", filters=Filters(path_glob="*/kitchen/*"), limit=10)
    assert {h.path for h in hits} == {str(lib / "kitchen" / "bread.md")}
    hits = s.search("water", filters=Filters(until=datetime(2021, 1, 1)), limit=10)
    assert {h.path for h in hits} == {str(lib / "plants.txt")}
    hits = s.search("water", filters=Filters(since=datetime(2021, 1, 1)), limit=10)
    assert str(lib / "plants.txt") not in {h.path for h in hits} and hits
    assert s.search("water", filters=Filters(modality="transcript")) == []
    assert s.search("water", filters=Filters(path_glob="*.nothing")) == []


class _SketchEncoder:
    """A second, tiny vector space (character-trigram hashing, 16-d) for the runner's mechanics."""

    name = "sketch"
    model = "test/char-trigrams"
    device = "cpu"

    @property
    def space(self):
        from mmrag.store.schema import Space

        return Space("sketch", self.model, 16)

    def collection(self, prefix: str) -> str:
        from mmrag.store.schema import collection_name

        return collection_name(prefix, "sketch", self.model)

    def encode(self, payloads: list) -> Encoded:
        out = np.zeros((len(payloads), 16), np.float32)
        for row, text in zip(out, payloads, strict=True):
            for i in range(len(text) - 2):
                row[hash(text[i : i + 3]) % 16] += 1
        vectors = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        # Like an image's class labels: text that the model's output gives rise to.
        labels = [
            [Piece(f"sketch label {len(t)}", "label", 0, 0, f"sketch label {len(t)}", space="text")]
            for t in payloads
        ]
        return Encoded(vectors, labels)


def test_one_file_feeding_two_spaces_is_written_and_replaced_in_both(env: Env) -> None:
    from mmrag.pipelines.text.pipeline import TextPipeline

    sketch = _SketchEncoder()

    class TwoSpaces(TextPipeline):
        def encoders(self):
            return {"text": self.space, "sketch": sketch}

        def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
            pieces = super().prepare(path, fmt, media_id)
            whole = " ".join(p.text for p in pieces)
            return [
                *pieces,
                Piece(whole[:200], "summary", 0, len(whole), whole[:200], space="sketch"),
            ]

    env.models.pipelines[0] = TwoSpaces(env.text)
    lib = make_library(env.root)
    report = env.ingest(lib)
    assert report.failed == []
    text_col, sketch_col = env.collection, sketch.collection(env.settings.collection_prefix)
    assert env.store.count(sketch_col) == 3
    assert env.store.count(text_col, 'modality == "label"') == 3  # derived from the sketch space
    assert report.segments == env.store.count(text_col) + 3
    media = env.catalog.path_record(str(lib / "router.txt")).media_id
    assert env.catalog.segment_ids(media, sketch_col) == [f"{media}:sketch:0"]
    assert env.ingest(lib).segments == 0  # unchanged: nothing rewritten in either space
    write(lib / "router.txt", "Completely different words about a garden shed.")
    env.ingest(lib)
    for col in (text_col, sketch_col):
        assert env.store.count(col, f'media_id == "{media}"') == 0
    assert env.store.count(sketch_col) == 3


def test_a_new_model_in_a_primary_space_embeds_everything_again(env: Env) -> None:
    from mmrag.pipelines.text.pipeline import TextPipeline

    sketch = _SketchEncoder()

    class Both(TextPipeline):
        primary = ("text", "sketch")

        def encoders(self):
            return {"text": self.space, "sketch": sketch}

        def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
            pieces = super().prepare(path, fmt, media_id)
            return [*pieces, Piece(pieces[0].text, "summary", 0, 1, pieces[0].text, space="sketch")]

    env.models.pipelines[0] = Both(env.text)
    lib = make_library(env.root)
    assert env.ingest(lib).new == 3
    assert env.ingest(lib).unchanged == 3
    sketch.model = "test/char-trigrams-v2"  # a model switch: a new collection beside the old
    report = env.ingest(lib)
    assert (report.unchanged, report.changed, report.failed) == (0, 3, [])
    assert env.store.count(sketch.collection(env.settings.collection_prefix)) == 3
    assert env.ingest(lib).unchanged == 3


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_readers_decode_between_the_batches_of_a_model_on_the_cpu(env: Env, device: str) -> None:
    """A model on the CPU has every core while it runs: no file starts decoding and nothing is
    written to Milvus then. A model elsewhere (a GPU) leaves the cores to the readers, which keep
    decoding meanwhile."""
    import threading
    import time

    from mmrag.pipelines.text.pipeline import TextPipeline

    sketch = _SketchEncoder()
    sketch.device = device
    runs: list[tuple[float, float]] = []  # the sketch model's batches, start and end
    starts: list[float] = []  # when each file began decoding
    lock = threading.Lock()
    encode = sketch.encode

    def slow_encode(payloads: list) -> Encoded:
        t0 = time.perf_counter()
        time.sleep(0.15)
        out = encode(payloads)
        runs.append((t0, time.perf_counter()))
        return out

    sketch.encode = slow_encode  # type: ignore[method-assign]
    writes: list[float] = []  # when each Milvus upsert began
    upsert = env.store.upsert

    def timed_upsert(*args: object, **kw: object) -> None:
        writes.append(time.perf_counter())
        upsert(*args, **kw)  # type: ignore[arg-type]

    env.store.upsert = timed_upsert  # type: ignore[method-assign]

    class Sketched(TextPipeline):
        def encoders(self):
            return {"text": self.space, "sketch": sketch}

        def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
            with lock:
                starts.append(time.perf_counter())
            time.sleep(0.03)  # decoding takes a while: files read ahead are still being read
            return [Piece(Path(path).name, "summary", 0, 1, Path(path).name, space="sketch")]

    env.models.pipelines[0] = Sketched(env.text)
    for i in range(24):
        write(env.root / "lib" / f"note {i:02d}.txt", f"note number {i}")
    report = env.ingest(env.root / "lib", embed_batch=4)
    assert (report.new, report.failed) == (24, [])
    assert len(runs) >= 6
    # A reader past the gate just before a batch began may take a moment to reach prepare().
    during = [t for t in starts for a, b in runs if a + 0.02 < t < b]
    assert len(writes) >= 2
    if device == "cpu":
        assert during == []
        assert [t for t in writes for a, b in runs if a + 0.02 < t < b] == []
    else:
        assert len(during) >= 3
