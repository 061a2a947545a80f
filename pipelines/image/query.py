"""Query side: an example picture, decoded as ingest decodes photos, so both see the same
pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrag.pipelines.image.decode import decode_image
from mmrag.pipelines.image.spaces import PhotoSpace
from mmrag.store.thumbnails import THUMBNAIL_SIDE


def decode_side(spaces: list[PhotoSpace]) -> int:
    """The shorter side every consumer can work from: the models' inputs, the thumbnail."""
    return max([THUMBNAIL_SIDE, *(s.input_side for s in spaces)])


def query_pictures(path: Path, spaces: list[Any]) -> list[Any]:
    """The picture at `path` (ImageDecodeError says what is wrong with the file)."""
    return [decode_image(Path(path), short_side=decode_side(spaces)).image]
