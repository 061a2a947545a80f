"""Toy spaces registered from tests: photo spaces with no model, so a test that adds a space,
or several that rank photos differently, costs seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmrag.kinds import QueryKind
from mmrag.pipelines.base import Encoded, unit
from mmrag.registry import PICTURES, SpaceSpec
from mmrag.store.schema import Space, collection_name
from tests.video_samples import photo

# Real photos whose colours differ enough for a colour histogram to tell them apart
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins")


class ColourHistogram:
    """A colour histogram of a 32 x 32 reduction of the picture, `bins` per channel (bins**3
    dimensions): fewer bins rank the same photos differently."""

    device = "cpu"
    input_side = 32

    def __init__(self, name: str, model: str, bins: int) -> None:
        self.name, self.model, self.bins = name, model, bins

    @property
    def space(self) -> Space:
        return Space(self.name, self.model, self.bins**3)

    def collection(self, prefix: str) -> str:
        return collection_name(prefix, self.name, self.model)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((32, 32)))

    def encode(self, payloads: list[np.ndarray]) -> Encoded:
        return Encoded(unit([self._histogram(p) for p in payloads]))

    def encode_query(self, kind: QueryKind, inputs: list[Any]) -> np.ndarray:
        return self.encode([self.preprocess(image) for image in inputs]).vectors

    def info(self) -> dict[str, Any]:
        return {"name": self.model, "source": "colour histogram (no model)", "dim": self.bins**3}

    def _histogram(self, pixels: np.ndarray) -> np.ndarray:
        cells = (pixels // (256 // self.bins)).reshape(-1, 3).astype(int)
        index = (cells[:, 0] * self.bins + cells[:, 1]) * self.bins + cells[:, 2]
        return np.bincount(index, minlength=self.bins**3).astype(np.float32)


def histogram_spec(name: str, bins: int) -> SpaceSpec:
    """The registry entry of a colour histogram space: photos and video moments go to it, image
    and video queries search it."""
    return SpaceSpec(
        name,
        lambda settings, model: ColourHistogram(name, model, bins),
        PICTURES,
        frozenset({QueryKind.IMAGE, QueryKind.VIDEO}),
    )


def photo_library(root: Path) -> Path:
    """A folder holding the PHOTOS as `<name>.png`."""
    root.mkdir()
    for name in PHOTOS:
        photo(name).save(root / f"{name}.png")
    return root
