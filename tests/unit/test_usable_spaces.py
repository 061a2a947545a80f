"""A file goes to the spaces whose model can be had; each one without is left out with a
warning naming it (one helper for photos and video moments)."""

from __future__ import annotations

import pytest

from mmrag.pipelines.base import collecting_warnings, usable_spaces
from mmrag.pipelines.image.pipeline import ImageConfig, ImagePipeline
from mmrag.pipelines.model_resolver import ModelNotAvailable


class Toy:
    """A space whose model loads, or cannot be had (`missing`: the reason)."""

    def __init__(self, name: str, missing: str = "") -> None:
        self.name, self.missing = name, missing

    @property
    def space(self) -> str:
        if self.missing:
            raise ModelNotAvailable(self.missing)
        return self.name


def test_spaces_without_a_model_are_left_out_with_a_warning_each() -> None:
    spaces = [Toy("a"), Toy("b", "no b model; pip install b"), Toy("c"), Toy("d", "no d")]
    with collecting_warnings() as said:
        found, missing = usable_spaces(spaces)
    assert [s.name for s in found] == ["a", "c"]
    assert str(missing) == "no b model; pip install b"  # the first reason
    assert said == [
        "not in the b space yet: no b model, pip install b",
        "not in the d space yet: no d",
    ]


def test_only_the_asked_spaces_are_loaded() -> None:
    spaces = [Toy("a", "no a"), Toy("b")]
    with collecting_warnings() as said:
        assert usable_spaces(spaces, frozenset({"b"})) == ([spaces[1]], None)
    assert said == []  # "a" was not asked for, so not tried


def test_photos_wait_for_a_model_when_no_photo_space_has_one() -> None:
    photos = ImagePipeline([Toy("image", "no image model")], Toy("text"), ImageConfig(ocr=False))  # type: ignore[list-item]
    with collecting_warnings(), pytest.raises(ModelNotAvailable, match="no image model"):
        photos.usable()
    photos.vision.append(Toy("clip"))  # type: ignore[arg-type]
    with collecting_warnings() as said:
        assert [s.name for s in photos.usable()] == ["clip"]
    assert said == ["not in the image space yet: no image model"]
