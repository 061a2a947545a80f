"""`mmrag eval --self` on a library of documents, photos and spoken recordings, with the real
offline models (MiniLM, EfficientNet-Lite0, Whisper tiny.en): a query of each kind is built from
the library, and each kind is scored."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mmrag.cli import app
from tests.audio_samples import speak
from tests.conftest import write
from tests.video_samples import photo

DOCS = {
    "docs/router.md": "# Resetting the router\n\nHold the recessed reset button for ten seconds "
    "with a paper clip; the router restarts with the factory password.",
    "docs/sourdough.md": "# Sourdough starter care\n\nFeed the starter every morning with equal "
    "weights of rye flour and lukewarm water.",
    "docs/bees.txt": "Keeping bees\n\nA colony swarms in late spring when it outgrows its hive.",
}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SPEECH = {
    "memos/boiler.wav": "The plumber will come on Thursday morning to repair the boiler.",
    "memos/holiday.wav": "Remember to book the train tickets to Barcelona for the summer holiday.",
}
METRICS = {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map", "p50_ms", "queries"}


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    for rel, text in DOCS.items():
        write(lib / rel, text)
    (lib / "photos").mkdir()
    for n, name in enumerate(PHOTOS):
        photo(name).save(lib / "photos" / f"{name}.{'jpg' if n % 2 else 'png'}")
    for rel, text in SPEECH.items():
        speak(text, lib / rel)
    return lib


def run(*args: str) -> Result:
    env = {"MMRAG_DEVICE": "cpu", "MMRAG_PROFILE": "offline"}
    return CliRunner().invoke(app, ["eval", *args], env=env, catch_exceptions=False)


def test_self_builds_photo_and_recording_queries_and_scores_each_kind(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recording(*args, **kwargs) -> str:  # type: ignore[no-untyped-def]
        made.append(Path(mkdtemp(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    before = sorted(library.rglob("*"))
    result = run("--library", str(library), "--self", "--json")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "--self: 3 document, 4 photo, 2 recording queries built from the library" in said
    assert "searched with the image model efficientnet-lite0" in said
    data = json.loads(result.stdout)
    assert data["self"] and data["kinds"] == {"document": 3, "photo": 4, "recording": 2}
    assert data["queries"] == 5  # the text queries every mode scores: documents and recordings
    (model,) = data["models"]
    kinds = model["kinds"]
    assert set(kinds) == {"document", "photo", "recording"}
    assert set(kinds["photo"]) == {"image"}  # an image query has one mode
    assert set(kinds["recording"]) == set(kinds["document"]) == {"bm25", "dense", "hybrid"}
    for kind, modes in kinds.items():
        for scores in modes.values():
            assert set(scores) == METRICS and scores["queries"] == data["kinds"][kind]
    # every photo's altered copy finds its photo first (EfficientNet-Lite0)
    assert kinds["photo"]["image"]["mrr@10"] == 1.0
    # a line of each recording's transcript (Whisper tiny.en) finds the recording first
    assert kinds["recording"]["hybrid"]["mrr@10"] == 1.0
    assert kinds["document"]["hybrid"]["mrr@10"] == 1.0
    # the altered copies were written outside the library and are gone, as are the stores
    copies = [f for f in made if f.name.startswith("mmrag-eval-queries-")]
    assert len(copies) == 1 and not copies[0].is_relative_to(library)
    assert made and not any(f.exists() for f in made if f.name.startswith("mmrag-eval-"))
    assert sorted(library.rglob("*")) == before


def test_photos_whose_image_model_cannot_be_had_are_left_out_not_every_candidate(
    tmp_path: Path,
) -> None:
    """strict_models and an image model that is not here (ResNet50's weights, offline): the
    photo queries are said to be unscored, once, and the documents are still scored (this
    failed every candidate)."""
    lib = tmp_path / "lib"
    for rel, text in DOCS.items():
        write(lib / rel, text)
    (lib / "photos").mkdir()
    for name in PHOTOS[:2]:
        photo(name).save(lib / "photos" / f"{name}.jpg")
    env = {
        "MMRAG_DEVICE": "cpu",
        "MMRAG_PROFILE": "offline",
        "MMRAG_IMAGE_MODEL": "resnet50",
        "MMRAG_STRICT_MODELS": "1",
    }
    args = ["eval", "--library", str(lib), "--self", "--json", "--no-tune-fusion"]
    result = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert said.count("photos not scored: the image model resnet50") == 1, said
    data = json.loads(result.stdout)
    assert data["errors"] == []
    (model,) = data["models"]
    assert set(model["kinds"]) == {"document"}
    assert model["kinds"]["document"]["hybrid"]["mrr@10"] == 1.0
    assert any("photos not scored" in note for note in data["notes"])
