"""An example with text ("like this picture, and these words"), and per-space fusion weights,
against real Milvus Lite, real MiniLM and Tesseract. The photo spaces are toy colour
histograms registered from the test (no model: tests/toy_spaces.py), so the test runs in seconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from mmrag.kinds import QueryKind
from mmrag.registry import register, unregister
from tests.conftest import Env, write
from tests.image_samples import altered
from tests.text_samples import TOPICS
from tests.toy_spaces import PHOTOS, histogram_spec, photo_library
from tests.video_samples import photo


@pytest.fixture
def histograms() -> Iterator[None]:
    register(histogram_spec("fine", 4))
    register(histogram_spec("coarse", 2))
    yield
    unregister("fine")
    unregister("coarse")


def sign(words: str) -> Image.Image:
    """Black printed words on white: Tesseract reads them, and its colours are its own."""
    img = Image.new("RGB", (900, 240), "white")
    ImageDraw.Draw(img).text((40, 80), words, fill="black", font=ImageFont.load_default(size=60))
    return img


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = photo_library(tmp_path / "lib")
    sign("SOURDOUGH STARTER").save(root / "sign.png")
    for name in ("router.txt", "bread.md", "tea.txt"):
        write(root / name, TOPICS[name])
    return root


def names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


def spaces_of(hit) -> set[str]:
    return {source["space"] for source in hit.sources}


def test_an_example_with_text_finds_what_each_finds_and_ranks_what_both_find_first(
    make_env, histograms: None, library: Path, tmp_path: Path
) -> None:
    env: Env = make_env(models={"fine": "rgb-4"}, ocr=True, thumbnails=tmp_path / "thumbs")
    report = env.ingest(library)
    assert (report.new, report.failed) == (len(PHOTOS) + 4, [])
    searcher = env.searcher()
    coffee = tmp_path / "coffee query.jpg"
    altered(photo("coffee")).save(coffee)

    # each alone: the example finds the photo, the text the document
    assert names(searcher.find(QueryKind.IMAGE, coffee, limit=1)) == ["coffee.png"]
    assert names(searcher.search("reset the router", limit=1)) == ["router.txt"]
    # together: both in the first two places, each with the space that found it
    both = searcher.find(QueryKind.IMAGE, coffee, limit=2, text="reset the router")
    assert sorted(names(both)) == ["coffee.png", "router.txt"]
    by_name = {Path(h.path).name: h for h in both}
    assert spaces_of(by_name["coffee.png"]) == {"fine"}
    assert spaces_of(by_name["router.txt"]) == {"text"}

    # the sign is found by its picture and by its printed words: first, ahead of the
    # documents the words find, with both spaces in its provenance
    query = tmp_path / "sign query.jpg"
    altered(sign("SOURDOUGH STARTER")).save(query)
    words = searcher.search("sourdough starter", limit=3)
    assert "bread.md" in names(words)
    top = searcher.find(QueryKind.IMAGE, query, limit=3, text="sourdough starter")
    assert names(top)[0] == "sign.png"
    assert spaces_of(top[0]) == {"fine", "text"}
    assert top[0].score > top[1].score

    # the CLI: a QUERY with --image is that same search
    off = {"MMRAG_IMAGE_MODEL": "", "MMRAG_AUDIO_MODEL": "", "MMRAG_SPEECH_MODEL": ""}
    cli = {"MMRAG_MODELS": json.dumps({"fine": "rgb-4"}), **off}
    r = env.cli_with(cli, "search", "reset the router", "--image", str(coffee), "--json", "-k", "2")
    assert r.exit_code == 0, r.output
    assert sorted(Path(h["path"]).name for h in json.loads(r.stdout)) == sorted(names(both))
    r = env.cli_with(cli, "search", "--image", str(coffee), "--audio", str(coffee))
    assert r.exit_code == 2 and "one example" in r.stderr


def test_fusion_weights_set_how_much_each_space_counts(
    make_env, histograms: None, library: Path, tmp_path: Path
) -> None:
    both = {"fine": "rgb-4", "coarse": "rgb-2"}
    env: Env = make_env(models=both, ocr=False)
    env.ingest(library)
    query = tmp_path / "rocket query.jpg"
    altered(photo("rocket")).save(query)

    def ranked(weights: dict[str, float]) -> list:
        env.settings = env.settings.model_copy(update={"fusion_weights": weights})
        env.rebuild()
        return env.searcher().find(QueryKind.IMAGE, query, limit=len(PHOTOS) + 1)

    fused = ranked({})
    assert names(fused)[0] == "rocket.png"
    assert any(spaces_of(h) == {"fine", "coarse"} for h in fused)
    fine_only = ranked({"coarse": 0})
    assert all(spaces_of(h) == {"fine"} for h in fine_only)
    coarse_only = ranked({"fine": 0})
    assert all(spaces_of(h) == {"coarse"} for h in coarse_only)
    assert names(fine_only) != names(coarse_only)  # the two spaces rank the photos differently
    # a heavy weight makes that space's order the fused order
    assert names(ranked({"fine": 100.0})) == names(fine_only)
    assert names(ranked({"coarse": 100.0})) == names(coarse_only)
