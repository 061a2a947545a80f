"""Shot boundaries: a video cut into the stretches a camera filmed without a cut.

A shot is the unit of a video moment: one keyframe (its middle) stands for it in the image space,
and its start and end are what a search hit plays. PySceneDetect finds the cuts; this module
turns them into shots that cover the whole video without gaps.

Decisions:
- AdaptiveDetector, not ContentDetector: both find cuts between dissimilar photos, but between
  grey photos (whose hue and saturation do not change) ContentDetector's fixed threshold missed
  three cuts of four, and AdaptiveDetector (a frame's change compared with its neighbours')
  found all four without extra cuts in a fast pan.
- PyAV backend: cut times come from each frame's pts, so variable-frame-rate phone videos are
  cut at the right time, and the codecs are the ones `video_decode` reads. OpenCV's backend was
  ~1.5-2x faster here but counts frames at a fixed rate. `suppress_output=True` keeps
  PySceneDetect from resetting PyAV's process-wide FFmpeg logging; without a threading mode
  that is safe.
- Frames are downscaled (SceneManager.auto_downscale, to ~256 px wide) before comparison.
- Every failure is a `MediaError` naming the file; `video_decode.probe_video` checks the file
  first, so unreadable files fail with the same reasons there and here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from mmrag.pipelines.base import MediaError
from mmrag.pipelines.video.decode import probe_video

THRESHOLD = 3.0  # AdaptiveDetector's: a frame changes 3x more than its neighbours
_MIN_SHOT_S = 0.05  # shorter slivers at the very start or end are folded into their neighbour


@dataclass(frozen=True)
class Shot:
    index: int
    start: float  # seconds
    end: float


def detect_shots(
    path: Path,
    min_shot_s: float = 1.0,
    duration: float | None = None,
) -> list[Shot]:
    """Shots covering [0, duration] without gaps; a video without a cut is one shot.

    No cut comes sooner than `min_shot_s` after the previous one. A caller that probed the
    video already passes its `duration`; otherwise it is probed here (and refused with why).
    """
    if min_shot_s < 0:
        raise ValueError(f"min_shot_s must be >= 0, got {min_shot_s}")
    path = Path(path)
    if duration is None:
        duration = probe_video(path).duration
    cuts = _cut_times(path, min_shot_s)
    return shots_from_cuts(cuts, duration)


def _cut_times(path: Path, min_shot_s: float) -> list[float]:
    """Seconds at which a new shot starts, as PySceneDetect finds them."""
    from scenedetect import AdaptiveDetector, SceneManager, open_video

    try:
        video = open_video(str(path), backend="pyav", suppress_output=True)
        manager = SceneManager()
        manager.auto_downscale = True
        manager.add_detector(
            AdaptiveDetector(adaptive_threshold=THRESHOLD, min_scene_len=float(min_shot_s))
        )
        manager.detect_scenes(video)
        scenes = manager.get_scene_list(start_in_scene=True)
    except Exception as exc:  # scenedetect raises its own types and FFmpeg's; report, never crash
        reason = str(exc) or type(exc).__name__
        raise MediaError(f"{path}: shot detection failed ({reason})") from exc
    return [float(start.seconds) for start, _ in scenes[1:]]


def shots_from_cuts(cuts: list[float], duration: float) -> list[Shot]:
    """Contiguous shots from cut times: [0, c1], [c1, c2], ..., [cn, duration].

    Cuts outside (0, duration), duplicates and slivers under 50 ms are dropped, so the shots
    always tile the video exactly.
    """
    duration = max(0.0, duration)
    bounds = [0.0]
    for cut in sorted(cuts):
        if bounds[-1] + _MIN_SHOT_S <= cut <= duration - _MIN_SHOT_S:
            bounds.append(cut)
    bounds.append(max(duration, bounds[-1]))
    return [Shot(i, start, end) for i, (start, end) in enumerate(itertools.pairwise(bounds))]
