"""Query side: a video clip -> the frames that search with it (one a second, two minutes at
most), decoded as ingest decodes keyframes and no further than the frames it uses."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

from mmrag.pipelines.video.decode import sample_frames
from mmrag.pipelines.video.pipeline import KEYFRAME_SIDE

QUERY_FRAMES = 120  # a query clip is read for at most two minutes


def query_frames(path: Path, spaces: list[Any]) -> list[Any]:
    sampled = sample_frames(Path(path), every_s=1.0, max_side=KEYFRAME_SIDE)
    frames = [f.image for f in islice(sampled, QUERY_FRAMES)]
    if not frames:
        raise ValueError(f"{path}: no frames could be decoded")
    return frames
