"""Recordings -> the `audio` space (windows of sound) and spoken words in the `text` space.

A recording may be hours long, so nothing here holds it whole: windows are decoded, embedded
and dropped in batches (their vectors travel as finished pieces, see `Piece.vector`), and speech
is transcribed in chunks of at most `SPEECH_CHUNK_S`, cut in a pause. Each window is a segment
with its start and end seconds; each Whisper segment is a `transcript` text segment with its
time range and word times, so "where was it said" returns the file and the moment.

Each recording also gets one vector over its whole length (the mean of its windows,
modality `recording`), for finding similar recordings rather than moments. Silent windows get
no vector (they would all match each other), chunks without speech (Silero
VAD) are not transcribed, and a recording with neither sound nor speech is reported as such.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.kinds import MediaType, Modality
from mmrag.pipelines.audio.decode import (
    SILENCE_DBFS,
    is_silent,
    iter_windows,
    probe_audio,
    timed_blocks,
)
from mmrag.pipelines.audio.encoders import SoundTagger
from mmrag.pipelines.audio.spaces import AudioSpace, Speech
from mmrag.pipelines.av_media import check_length
from mmrag.pipelines.base import (
    MediaError,
    Piece,
    SpaceEncoder,
    media_warning,
    one_line,
    space_skipped,
    unit,
)
from mmrag.pipelines.model_resolver import ModelNotAvailable

SPEECH_CHUNK_S = 600.0  # Whisper reads 30 s at a time anyway; this bounds memory per file


@dataclass(frozen=True)
class AudioConfig:
    embed_batch: int = 64  # windows embedded at a time as a recording is decoded
    label_top_k: int = 5  # sound tags kept per window (a model that tags: PANNs)
    label_min_prob: float = 0.1
    max_media_hours: float = 12.0


class AudioPipeline:
    """A Pipeline for recordings: sound windows in `audio`, transcripts in `text`."""

    media = MediaType.AUDIO

    def __init__(
        self,
        text: SpaceEncoder,
        audio: AudioSpace | None = None,
        speech: Speech | None = None,
        config: AudioConfig | None = None,
    ) -> None:
        self.config = config or AudioConfig()
        self.text = text
        self.audio = audio
        self.speech = speech
        if self.audio is None and self.speech is None:
            raise ValueError("recordings need an audio model or a speech model (both unset)")
        # A recording without speech has no transcript, so done = in the audio space where
        # there is one; with transcripts only, done = in text.
        self.primary = ("audio",) if self.audio else ("text",)

    def encoders(self) -> dict[str, SpaceEncoder]:
        return {**({self.audio.name: self.audio} if self.audio else {}), self.text.name: self.text}

    def prepare(
        self, path: str, fmt: str, media_id: str = "", only: frozenset[str] | None = None
    ) -> list[Piece]:
        """Sound windows and the transcript; `only`: the `audio` space, or the transcript
        (`text`), alone. A model that cannot be had costs its part only, with a warning."""
        p = Path(path)
        info = probe_audio(p)  # MediaError: empty, no audio stream, undecodable
        check_length(info.duration, self.config.max_media_hours)
        meta = {"duration": round(info.duration, 3), "codec": info.codec, **info.facts}
        sound, words, missing = self._parts(only)
        pieces = list(self._windows(p, meta)) if sound else []
        heard = any(p.space == "audio" for p in pieces)
        if words:
            pieces += self._transcript(p)
        if not pieces:
            if sound and not heard:
                raise MediaError(f"silent: no sound above {SILENCE_DBFS:g} dBFS")
            if missing is not None:  # what was not tried may find something: taken later
                raise missing
            raise MediaError("no speech found")
        return pieces

    def _parts(self, only: frozenset[str] | None) -> tuple[bool, bool, ModelNotAvailable | None]:
        """Whether sound windows and transcripts are made for this file, and why a part that
        would be is not (its model cannot be had)."""
        sound = words = False
        missing = None
        if self.audio is not None and (only is None or self.audio.name in only):
            try:
                self.audio.encoder  # noqa: B018 - loads it, or says why it cannot
                sound = True
            except ModelNotAvailable as exc:
                media_warning(space_skipped(self.audio.name, exc))
                missing = exc
        if self.speech is not None and (only is None or self.text.name in only):
            try:
                self.speech.encoder  # noqa: B018
                words = True
            except ModelNotAvailable as exc:
                media_warning(f"no transcript: {one_line(str(exc).splitlines()[0])}")
                missing = missing or exc
        return sound, words, missing

    def _windows(self, path: Path, meta: dict) -> Iterator[Piece]:
        """Embedded in batches as they are decoded: memory holds one batch of samples. Where
        the model tags sounds (PANNs with its AudioSet labels), runs of windows with the same
        tags become one `tags` text segment over their joint time range."""
        enc = self.audio.encoder  # type: ignore[union-attr]
        space = self.audio.name  # type: ignore[union-attr]
        tagging = isinstance(enc, SoundTagger) and self.config.label_top_k > 0
        batch: list[tuple[float, float, np.ndarray]] = []
        run: list[Any] = []  # [start, end, tag names] of the current run of equal tags
        total = np.zeros(enc.dim, dtype=np.float64)  # for the whole recording's vector

        def flush() -> Iterator[Piece]:
            samples = [w for _, _, w in batch]
            if tagging:
                k, least = self.config.label_top_k, self.config.label_min_prob
                vectors, tags = enc.encode_and_tag(samples, k, least)
            else:
                vectors, tags = enc.encode(samples), [[] for _ in batch]
            total[:] += vectors.sum(axis=0)
            for (start, end, _), vec, found in zip(batch, vectors, tags, strict=True):
                yield Piece(
                    None, Modality.AUDIO, start, end, "", meta=meta, space=space, vector=vec
                )
                names = sorted(name for name, _ in found)
                if run and names == run[2] and start <= run[1]:
                    run[1] = end
                    continue
                yield from close_run()
                if names:
                    run[:] = [start, end, names]
            batch.clear()

        def close_run() -> Iterator[Piece]:
            if run:
                text = ", ".join(run[2])
                yield Piece(
                    text, Modality.TAGS, run[0], run[1], text, space=self.text.name, origin=space
                )
                run.clear()

        for start, end, samples in iter_windows(path, enc.sample_rate, enc.window_s, enc.hop_s):
            if is_silent(samples):
                continue
            batch.append((start, end, samples))
            if len(batch) >= self.config.embed_batch:
                yield from flush()
        if batch:
            yield from flush()
        yield from close_run()
        if total.any():  # the mean of its windows: "recordings that sound like this one"
            end = meta["duration"]
            yield Piece(
                None, Modality.RECORDING, 0, end, "", meta=meta, space=space, vector=unit(total)
            )

    def _transcript(self, path: Path) -> list[Piece]:
        from mmrag.pipelines.audio.speech import SAMPLE_RATE, chunk_bounds, speech_spans

        transcriber = self.speech.encoder  # type: ignore[union-attr]
        pieces: list[Piece] = []
        limit = int(SPEECH_CHUNK_S * SAMPLE_RATE)
        buf = np.zeros(0, dtype=np.float32)
        base = 0  # sample index of buf[0]

        def run(chunk: np.ndarray, offset: float) -> None:
            if not speech_spans(chunk):
                return  # no voice: Whisper would only make something up
            found = transcriber.transcribe(chunk, offset=offset)
            for seg in found.segments:
                pieces.append(
                    Piece(
                        seg.text,
                        Modality.TRANSCRIPT,
                        round(seg.start, 3),
                        round(seg.end, 3),
                        seg.text,
                        meta={
                            "language": found.language,
                            "words": [
                                [w.text, round(w.start, 2), round(w.end, 2)] for w in seg.words
                            ],
                        },
                        space=self.text.name,
                    )
                )

        origin = 0.0  # where the sound starts in the file (a video's track may start late)
        for origin, block in timed_blocks(path, SAMPLE_RATE, block_s=30.0):
            buf = np.concatenate([buf, block]) if len(buf) else block
            if len(buf) > limit:
                start, cut = chunk_bounds(buf, limit)[0]
                run(buf[start:cut], origin + base / SAMPLE_RATE)
                buf, base = buf[cut:], base + cut
        if len(buf):
            run(buf, origin + base / SAMPLE_RATE)
        return pieces
