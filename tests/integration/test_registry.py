"""A new space needs its registry entry and its encoder only.

The space is a toy photo space (a 4x4x4 colour histogram, no model: tests/toy_spaces.py)
registered from this test. Nothing else is edited: the composition root gives it to the photo
and video pipelines, ingest writes its collection, and search, fusion, rendering and the CLI
reach it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import ImageEnhance

from mmrag.kinds import Modality
from mmrag.registry import SPACES, SpaceSpec, register, unregister
from tests.conftest import Env
from tests.image_samples import photo
from tests.toy_spaces import PHOTOS, ColourHistogram, histogram_spec, photo_library

BINS = 4


@pytest.fixture
def colour_space() -> Iterator[SpaceSpec]:
    spec = register(histogram_spec("colour", BINS))
    yield spec
    unregister("colour")
    assert "colour" not in SPACES


@pytest.fixture
def library(tmp_path: Path) -> Path:
    return photo_library(tmp_path / "lib")


def test_a_space_registered_from_a_test_is_ingested_and_searched_by_example(
    make_env, colour_space: SpaceSpec, library: Path, tmp_path: Path
) -> None:
    env: Env = make_env(models={"colour": "rgb-4"}, ocr=False, thumbnails=tmp_path / "thumbs")
    assert env.image is not None and [s.name for s in env.image.vision] == ["colour"]
    assert colour_space.setting == "models.colour"
    report = env.ingest(library)
    assert (report.new, report.failed) == (len(PHOTOS), [])
    collection = "mmrag_colour_rgb_4"
    assert env.store.count(collection) == len(PHOTOS)
    assert env.store.count_by(collection, "modality") == {Modality.IMAGE: len(PHOTOS)}

    # a darker, smaller copy of the coffee photo finds the original through the new space
    query = tmp_path / "query.jpg"
    small = photo("coffee").resize((200, 150))
    ImageEnhance.Brightness(small).enhance(0.9).save(query, quality=80)
    hits = env.searcher().search_image(query, limit=3)
    assert Path(hits[0].path).name == "coffee.png" and hits[0].modality == "image"
    assert hits[0].thumbnail and Path(hits[0].thumbnail).is_file()
    assert len({h.media_id for h in hits}) == len(hits) == 3  # one hit per file


def test_the_cli_reaches_a_registered_space_without_an_edit(
    make_env, colour_space: SpaceSpec, library: Path, tmp_path: Path
) -> None:
    env: Env = make_env()
    query = tmp_path / "query.png"
    photo("rocket").resize((160, 120)).save(query)
    off = {"MMRAG_IMAGE_MODEL": "", "MMRAG_AUDIO_MODEL": "", "MMRAG_SPEECH_MODEL": ""}
    colour = {"MMRAG_MODELS": json.dumps({"colour": "rgb-4"}), "MMRAG_OCR": "false", **off}
    r = env.cli_with(colour, "ingest", str(library), "--quiet")
    assert r.exit_code == 0, r.output
    r = env.cli_with(colour, "search", "--image", str(query), "--json", "--limit", "2")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert Path(hits[0]["path"]).name == "rocket.png"
    r = env.cli_with(colour, "models", "--json")
    rows = {row["space"]: row for row in json.loads(r.stdout)}
    assert rows["colour"] == {"space": "colour", **ColourHistogram("colour", "rgb-4", BINS).info()}
    r = env.cli_with(colour, "status", "--json")
    assert json.loads(r.stdout)["spaces"]["mmrag_colour_rgb_4"]["rows"] == len(PHOTOS)
