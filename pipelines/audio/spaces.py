"""The `audio` space (windows of sound) and the transcriber whose segments go to `text`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmrag.kinds import QueryKind
from mmrag.pipelines.audio.decode import SILENCE_DBFS, is_silent, load_audio
from mmrag.pipelines.base import Encoded, LazyModel, LazySpace, MediaError, unit

QUERY_MAX_S = 120.0  # an example clip is loaded whole


class AudioSpace(LazySpace):
    """The `audio` space: an AudioEncoder's vectors of fixed-length windows."""

    name = "audio"
    extra = "audio"

    def _load(self) -> Any:
        from mmrag.pipelines.audio.encoders import load_audio_encoder

        return load_audio_encoder(self.model_name, self.requested_device)

    def encode(self, payloads: list[np.ndarray]) -> Encoded:
        return Encoded(self.encoder.encode(payloads))

    def encode_query(self, kind: QueryKind, inputs: list[Any]) -> np.ndarray:
        """Example clips (paths) -> one row each."""
        return np.stack([self.encode_clip(Path(p)) for p in inputs])

    def encode_clip(self, path: Path) -> np.ndarray:
        """Query side: an example clip -> one vector (the mean of its windows when longer)."""
        enc = self.encoder
        clip = load_audio(Path(path), enc.sample_rate, max_seconds=QUERY_MAX_S)
        win, hop = round(enc.window_s * enc.sample_rate), round(enc.hop_s * enc.sample_rate)
        if is_silent(clip):
            raise MediaError(f"{path}: the clip is silent (below {SILENCE_DBFS:g} dBFS)")
        parts = [clip[i : i + win] for i in range(0, max(1, len(clip) - win + hop), hop)]
        parts = [p for p in parts if not is_silent(p)] or [clip]
        return unit(enc.encode(parts).mean(axis=0))


class Speech(LazyModel):
    """The transcriber, loaded once on first use (like a space's model); its segments go to
    the `text` space."""

    name = "speech"
    extra = "audio"

    def __init__(self, model_name: str, device: str = "auto", language: str | None = None):
        super().__init__(model_name, device)
        self.language = language

    def _load(self) -> Any:
        from mmrag.pipelines.audio.speech import load_transcriber

        return load_transcriber(self.model_name, self.requested_device, language=self.language)
