"""When a photo's thumbnail is made (`photo_thumbnails`): at ingest where the photo models run on
the CPU, when first shown where they run on a GPU, or as set."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag.app import Models
from mmrag.pipelines.image.pipeline import ImageConfig, ImagePipeline
from mmrag.settings import Settings


class Toy:
    """A photo space whose model is never loaded: only its name and input size are asked."""

    def __init__(self, name: str) -> None:
        self.name, self.input_side = name, 224


@pytest.mark.parametrize(
    ("device", "at_ingest", "made"),
    [
        ("cpu", None, True),  # auto: the model dwarfs the encode
        ("cuda", None, False),  # auto: the CPU keeps the GPU fed
        ("cuda:1", None, False),
        ("mps", None, False),
        ("cuda", True, True),  # as set, wherever the models run
        ("cpu", False, False),
    ],
)
def test_a_photo_read_makes_its_thumbnail_where_the_setting_says(
    tmp_path: Path, device: str, at_ingest: bool | None, made: bool
) -> None:
    config = ImageConfig(
        tmp_path / "thumbs", ocr=False, device=device, thumbnails_at_ingest=at_ingest
    )
    photos = ImagePipeline([Toy("image")], Toy("text"), config)  # type: ignore[list-item, arg-type]
    assert photos.thumbnails_at_ingest() is made
    # what reading a photo is told: where its thumbnail goes, or None (made when shown)
    plan = photos._plan(photos.vision, "png", ocr=False)
    assert plan.thumbnails == (tmp_path / "thumbs" if made else None)


@pytest.mark.parametrize(("setting", "wired"), [("auto", None), ("ingest", True), ("shown", False)])
def test_the_setting_reaches_the_photo_pipeline(tmp_path: Path, setting: str, wired) -> None:
    settings = Settings(
        milvus_uri=str(tmp_path / "m.db"),
        catalog=tmp_path / "c.sqlite",
        photo_thumbnails=setting,
        clip_model="",
    )
    photos = Models.build(settings).photos
    assert photos is not None and photos.config.thumbnails_at_ingest is wired


def test_an_unknown_setting_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="photo_thumbnails"):
        Settings(photo_thumbnails="later")
