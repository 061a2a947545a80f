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
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.settings import Settings
from pipelines.audio_decode import (
    SILENCE_DBFS,
    is_silent,
    iter_windows,
    load_audio,
    probe_audio,
    timed_blocks,
)
from pipelines.audio_encoders import SoundTagger
from pipelines.av_media import check_length
from pipelines.base import LazyModel, LazySpace, Piece, SpaceEncoder
from pipelines.media_error import MediaError

SPEECH_CHUNK_S = 600.0  # Whisper reads 30 s at a time anyway; this bounds memory per file
QUERY_MAX_S = 120.0  # an example clip is loaded whole


class AudioSpace(LazySpace):
    """The `audio` space: an AudioEncoder's vectors of fixed-length windows."""

    name = "audio"
    extra = "audio"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.audio_model)

    def _load(self) -> Any:
        from pipelines.audio_encoders import load_audio_encoder

        return load_audio_encoder(self.model_name, self.settings.device)

    def encode(self, payloads: list[np.ndarray]) -> np.ndarray:
        return self.encoder.encode(payloads)

    def encode_clip(self, path: Path) -> np.ndarray:
        """Query side: an example clip -> one vector (the mean of its windows when longer)."""
        enc = self.encoder
        clip = load_audio(Path(path), enc.sample_rate, max_seconds=QUERY_MAX_S)
        win, hop = round(enc.window_s * enc.sample_rate), round(enc.hop_s * enc.sample_rate)
        if is_silent(clip):
            raise MediaError(f"{path}: the clip is silent (below {SILENCE_DBFS:g} dBFS)")
        parts = [clip[i : i + win] for i in range(0, max(1, len(clip) - win + hop), hop)]
        parts = [p for p in parts if not is_silent(p)] or [clip]
        mean = enc.encode(parts).mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


class Speech(LazyModel):
    """The transcriber, loaded once on first use (like a space's model); its segments go to
    the `text` space."""

    name = "speech"
    extra = "audio"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.speech_model)

    def _load(self) -> Any:
        from pipelines.speech import load_transcriber

        return load_transcriber(
            self.model_name, self.settings.device, language=self.settings.speech_language
        )


class AudioPipeline:
    """A Pipeline for recordings: sound windows in `audio`, transcripts in `text`."""

    modalities = frozenset({"audio"})

    def __init__(
        self,
        settings: Settings,
        text: SpaceEncoder,
        audio: AudioSpace | None = None,
        speech: Speech | None = None,
    ) -> None:
        self.settings = settings
        self.text = text
        self.audio = audio or (AudioSpace(settings) if settings.audio_model else None)
        self.speech = speech or (Speech(settings) if settings.speech_model else None)
        if self.audio is None and self.speech is None:
            raise ValueError("recordings need an audio model or a speech model (both unset)")
        # A recording without speech has no transcript, so done = in the audio space where
        # there is one; with transcripts only, done = in text.
        self.primary = ("audio",) if self.audio else ("text",)

    def encoders(self) -> dict[str, SpaceEncoder]:
        return {**({"audio": self.audio} if self.audio else {}), "text": self.text}

    def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
        p = Path(path)
        info = probe_audio(p)  # MediaError: empty, no audio stream, undecodable
        check_length(info.duration, self.settings.max_media_hours)
        meta = {"duration": round(info.duration, 3), "codec": info.codec, **info.facts}
        pieces = list(self._windows(p, meta)) if self.audio else []
        heard = any(p.space == "audio" for p in pieces)
        if self.speech:
            pieces += self._transcript(p)
        if not pieces:
            raise MediaError(
                f"silent: no sound above {SILENCE_DBFS:g} dBFS"
                if self.audio and not heard
                else "no speech found"
            )
        return pieces

    def _windows(self, path: Path, meta: dict) -> Iterator[Piece]:
        """Embedded in batches as they are decoded: memory holds one batch of samples. Where
        the model tags sounds (PANNs with its AudioSet labels), runs of windows with the same
        tags become one `tags` text segment over their joint time range."""
        enc = self.audio.encoder  # type: ignore[union-attr]
        tagging = isinstance(enc, SoundTagger) and self.settings.label_top_k > 0
        batch: list[tuple[float, float, np.ndarray]] = []
        run: list[Any] = []  # [start, end, tag names] of the current run of equal tags
        total = np.zeros(enc.dim, dtype=np.float64)  # for the whole recording's vector

        def flush() -> Iterator[Piece]:
            samples = [w for _, _, w in batch]
            if tagging:
                k, least = self.settings.label_top_k, self.settings.label_min_prob
                vectors, tags = enc.encode_and_tag(samples, k, least)
            else:
                vectors, tags = enc.encode(samples), [[] for _ in batch]
            total[:] += vectors.sum(axis=0)
            for (start, end, _), vec, found in zip(batch, vectors, tags, strict=True):
                yield Piece(None, "audio", start, end, "", meta=meta, space="audio", vector=vec)
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
                yield Piece(text, "tags", run[0], run[1], text, space="text")
                run.clear()

        for start, end, samples in iter_windows(path, enc.sample_rate, enc.window_s, enc.hop_s):
            if is_silent(samples):
                continue
            batch.append((start, end, samples))
            if len(batch) >= self.settings.embed_batch_size:
                yield from flush()
        if batch:
            yield from flush()
        yield from close_run()
        if total.any():  # the mean of its windows: "recordings that sound like this one"
            whole = (total / np.linalg.norm(total)).astype(np.float32)
            end = meta["duration"]
            yield Piece(None, "recording", 0, end, "", meta=meta, space="audio", vector=whole)

    def _transcript(self, path: Path) -> list[Piece]:
        from pipelines.speech import SAMPLE_RATE, chunk_bounds, speech_spans

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
                        "transcript",
                        round(seg.start, 3),
                        round(seg.end, 3),
                        seg.text,
                        meta={
                            "language": found.language,
                            "words": [
                                [w.text, round(w.start, 2), round(w.end, 2)] for w in seg.words
                            ],
                        },
                        space="text",
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
