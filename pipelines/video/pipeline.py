"""Videos -> moments: shots (and pieces of long shots) in the `image` and `clip` spaces, the
sound track through the audio pipeline (windows and transcripts in video time).

A moment is a shot from PySceneDetect, cut into pieces of at most `video_moment_s` when the
camera holds still for long. Each moment's keyframe (its middle frame) is embedded in every
vision space the photos use, so an image query, a text query through CLIP or the ImageNet
labels, or a clip of another video lands on the moment, with its start and end seconds and its
own thumbnail. Keyframes are embedded in batches as the video is decoded, so a long video never
sits in memory as frames. A file with no picture (an audio-only mp4) is a recording.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmrag.kinds import MediaType, Modality
from mmrag.pipelines.av_media import check_length
from mmrag.pipelines.base import (
    MediaError,
    NoVideoStream,
    Piece,
    Pipeline,
    SpaceEncoder,
    usable_spaces,
)
from mmrag.pipelines.model_resolver import ModelNotAvailable

log = logging.getLogger(__name__)

KEYFRAME_SIDE = 512  # frames are reduced to this (longest side) as they are decoded


class FrameSpace(SpaceEncoder, Protocol):
    """A space that embeds pictures (the photo spaces): keyframes go through it as photos do."""

    def preprocess(self, image: Any) -> Any: ...


@dataclass(frozen=True)
class VideoConfig:
    sample_s: float = 0.5  # frames are sampled this often to pick each moment's keyframe
    moment_s: float = 10.0  # longest moment: longer shots are cut into pieces this long
    embed_batch: int = 64  # keyframes embedded at a time as a video is decoded
    max_media_hours: float = 12.0


@dataclass(frozen=True)
class Moment:
    start: float
    end: float
    shot: int

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


def moments_of(shots: list[Any], longest: float) -> list[Moment]:
    """Shots, each cut into equal pieces of at most `longest` seconds."""
    out = []
    for shot in shots:
        length = shot.end - shot.start
        parts = max(1, int(np.ceil(length / longest - 1e-9)))
        step = length / parts
        for k in range(parts):
            out.append(Moment(shot.start + k * step, shot.start + (k + 1) * step, shot.index))
    return out


def thumbnail_key(media_id: str, moment: Moment) -> str:
    """The moment's keyframe thumbnail in the cache (named in each segment's meta)."""
    return f"{media_id}_t{round(moment.start * 1000)}"


class VideoPipeline:
    """A Pipeline for videos; shares the photo spaces and the audio pipeline's models."""

    media = MediaType.VIDEO

    def __init__(
        self,
        text: SpaceEncoder,
        vision: list[FrameSpace],
        audio: Pipeline | None = None,
        config: VideoConfig | None = None,
        thumbnail: Callable[[str, Any], None] | None = None,
    ) -> None:
        if not vision and audio is None:
            raise ValueError("videos need an image, CLIP, audio or speech model")
        self.text = text
        self.vision = vision
        self.audio = audio
        self.config = config or VideoConfig()
        self.thumbnail = thumbnail  # saves a keyframe's thumbnail under a key
        # Moments are what a video always has; its sound may be missing or silent.
        self.primary = tuple(s.name for s in self.vision) or audio.primary  # type: ignore[union-attr]

    def encoders(self) -> dict[str, SpaceEncoder]:
        found: dict[str, SpaceEncoder] = {self.text.name: self.text}
        found |= {s.name: s for s in self.vision}
        return found | (self.audio.encoders() if self.audio else {})

    def prepare(
        self, path: str, fmt: str, media_id: str = "", only: frozenset[str] | None = None
    ) -> list[Piece]:
        """Moments in every frame space whose model can be had (those in `only`, if given),
        and the sound track through the audio pipeline (unless `only` leaves its spaces out)."""
        from mmrag.pipelines.video.decode import probe_video

        p = Path(path)
        more = {} if only is None else {"only": only}
        try:
            info = probe_video(p)
        except NoVideoStream:
            if self.audio is not None:  # a recording in a video box
                return self.audio.prepare(path, fmt, media_id, **more)
            raise
        check_length(info.duration, self.config.max_media_hours)
        vision, missing = usable_spaces(self.vision, only)  # one without: warned, left out
        pieces = list(self._moments(p, info.duration, media_id, vision)) if vision else []
        for piece in pieces[:1]:  # what the container says of the file (the runner's facts)
            piece.meta |= info.facts
        sound = self.audio
        if sound is not None and only is not None and not only & set(sound.encoders()):
            sound = None  # a fill of frame spaces only
        if sound is not None and info.has_audio:
            try:
                pieces += sound.prepare(path, fmt, media_id, **more)
            except MediaError as exc:  # silent, no speech, a damaged track: the picture counts
                log.info("%s: sound track not indexed: %s", path, exc)
            except ModelNotAvailable as exc:  # said by the audio pipeline, per part
                missing = missing or exc
        if not pieces:
            if missing is not None:
                raise missing  # taken when a model for it can be had
            raise MediaError("nothing to index: no frames decoded and no sound")
        return pieces

    def _moments(
        self, path: Path, duration: float, media_id: str, vision: list[FrameSpace]
    ) -> Iterator[Piece]:
        """Keyframes picked in one decoding pass, embedded a batch at a time."""
        from mmrag.pipelines.video.decode import sample_frames
        from mmrag.pipelines.video.shots import detect_shots

        shots = detect_shots(path, duration=duration)
        moments = moments_of(shots, self.config.moment_s)
        batch: list[tuple[Moment, Any]] = []
        todo = iter(moments)
        want = next(todo, None)
        every = min(self.config.sample_s, self.config.moment_s / 4)
        for frame in sample_frames(path, every_s=every, max_side=KEYFRAME_SIDE):
            while want is not None and frame.time >= want.middle - every / 2:
                batch.append((want, frame.image))
                if media_id and self.thumbnail:
                    self._thumbnails(media_id, want, frame.image)
                want = next(todo, None)
            if len(batch) >= self.config.embed_batch:
                yield from self._embed(batch, media_id, vision)
                batch = []
            if want is None:
                break
        if batch:
            yield from self._embed(batch, media_id, vision)

    def _thumbnails(self, media_id: str, moment: Moment, image: Any) -> None:
        self.thumbnail(thumbnail_key(media_id, moment), image)  # type: ignore[misc]
        if moment.start == 0:  # the video's own thumbnail (for its transcript hits): the opening
            self.thumbnail(media_id, image)  # type: ignore[misc]

    def _embed(
        self, batch: list[tuple[Moment, Any]], media_id: str, vision: list[FrameSpace]
    ) -> Iterator[Piece]:
        for space in vision:
            out = space.encode([space.preprocess(image) for _, image in batch])
            for k, (moment, _) in enumerate(batch):
                meta = {"thumb": thumbnail_key(media_id, moment)} if media_id else {}
                yield Piece(
                    None,
                    Modality.SHOT,
                    round(moment.start, 3),
                    round(moment.end, 3),
                    "",
                    meta=meta,
                    space=space.name,
                    vector=out.vectors[k],
                )
                for label in out.derived[k]:  # the keyframe's ImageNet labels
                    label.modality = Modality.SHOT_LABEL
                    label.meta |= meta
                    label.start, label.end = round(moment.start, 3), round(moment.end, 3)
                    yield label
