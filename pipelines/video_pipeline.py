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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.settings import Settings
from pipelines.audio_pipeline import AudioPipeline
from pipelines.av_media import check_length
from pipelines.base import Encoded, Piece, SpaceEncoder
from pipelines.image_decode import DecodedImage, ensure_thumbnail
from pipelines.image_pipeline import ImagePipeline
from pipelines.media_error import MediaError, NoVideoStream

log = logging.getLogger(__name__)

KEYFRAME_SIDE = 512  # frames are reduced to this (longest side) as they are decoded


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

    modalities = frozenset({"video"})

    def __init__(
        self,
        settings: Settings,
        text: SpaceEncoder,
        photos: ImagePipeline | None = None,
        audio: AudioPipeline | None = None,
    ) -> None:
        if photos is None and audio is None:
            raise ValueError("videos need an image, CLIP, audio or speech model")
        self.settings = settings
        self.text = text
        self.photos = photos
        self.audio = audio
        self.vision = photos.vision if photos else []
        # Moments are what a video always has; its sound may be missing or silent.
        self.primary = tuple(s.name for s in self.vision) or audio.primary  # type: ignore[union-attr]

    def encoders(self) -> dict[str, SpaceEncoder]:
        found: dict[str, SpaceEncoder] = {"text": self.text}
        for part in (self.photos, self.audio):
            if part is not None:
                found |= part.encoders()
        return found

    def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
        from pipelines.video_decode import probe_video

        p = Path(path)
        try:
            info = probe_video(p)
        except NoVideoStream:
            if self.audio is not None:
                return self.audio.prepare(path, fmt, media_id)  # a recording in a video box
            raise
        check_length(info.duration, self.settings.max_media_hours)
        pieces = list(self._moments(p, info.duration, media_id)) if self.vision else []
        for piece in pieces[:1]:  # what the container says of the file (the runner's facts)
            piece.meta |= info.facts
        if self.audio is not None and info.has_audio:
            try:
                pieces += self.audio.prepare(path, fmt, media_id)
            except MediaError as exc:  # silent, no speech, a damaged track: the picture counts
                log.info("%s: sound track not indexed: %s", path, exc)
        if not pieces:
            raise MediaError("nothing to index: no frames decoded and no sound")
        return pieces

    def _moments(self, path: Path, duration: float, media_id: str) -> Iterator[Piece]:
        """Keyframes picked in one decoding pass, embedded a batch at a time."""
        from pipelines.shots import detect_shots
        from pipelines.video_decode import sample_frames

        shots = detect_shots(path, duration=duration)
        moments = moments_of(shots, self.settings.video_moment_s)
        batch: list[tuple[Moment, Any]] = []
        todo = iter(moments)
        want = next(todo, None)
        every = min(self.settings.video_sample_s, self.settings.video_moment_s / 4)
        for frame in sample_frames(path, every_s=every, max_side=KEYFRAME_SIDE):
            while want is not None and frame.time >= want.middle - every / 2:
                batch.append((want, frame.image))
                if media_id:
                    self._thumbnail(media_id, want, frame.image)
                want = next(todo, None)
            if len(batch) >= self.settings.embed_batch_size:
                yield from self._embed(batch, media_id)
                batch = []
            if want is None:
                break
        if batch:
            yield from self._embed(batch, media_id)

    def _thumbnail(self, media_id: str, moment: Moment, image: Any) -> None:
        frame = DecodedImage(image, image.width, image.height, "video", 1, {})
        thumbs = self.settings.thumbnails
        ensure_thumbnail(thumbs, thumbnail_key(media_id, moment), frame)
        if moment.start == 0:  # the video's own thumbnail (for its transcript hits): the opening
            ensure_thumbnail(thumbs, media_id, frame)

    def _embed(self, batch: list[tuple[Moment, Any]], media_id: str) -> Iterator[Piece]:
        for space in self.vision:
            out = space.encode([space.preprocess(image) for _, image in batch])
            vectors, derived = (
                (out.vectors, out.derived) if isinstance(out, Encoded) else (out, None)
            )
            for k, (moment, _) in enumerate(batch):
                meta = {"thumb": thumbnail_key(media_id, moment)} if media_id else {}
                yield Piece(
                    None,
                    "shot",
                    round(moment.start, 3),
                    round(moment.end, 3),
                    "",
                    meta=meta,
                    space=space.name,
                    vector=vectors[k],
                )
                for label in derived[k] if derived else []:  # the keyframe's ImageNet labels
                    label.modality = "shot_label"
                    label.meta |= meta
                    label.start, label.end = round(moment.start, 3), round(moment.end, 3)
                    yield label
