"""Answers with citations over search hits (`mmrag ask`).

The hits become numbered sources; a prompt carries them to any OpenAI-compatible chat endpoint
(Ollama, vLLM, llama.cpp's server, hosted APIs), whose streamed answer cites them as `[n]`.
Citations map back to files, pages and times; a number the sources do not have is dropped.
With no endpoint, or one that cannot be reached, the answer is extractive: the best passages,
each cited, and a note says why. No typer or rich here: the CLI prints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mmrag.kinds import Modality

if TYPE_CHECKING:
    from mmrag.search.query import Hit

EXTRACTIVE_PASSAGES = 3
NOTHING = "Nothing in the library matches this question."
NO_KEY = "not-needed"  # local servers take any key; the client insists on one

SYSTEM = (
    "You answer questions about the user's own files. Use only the numbered sources given. "
    "Cite every claim with its source number in square brackets, like [1] or [2][3]. "
    "If the sources do not hold the answer, say so briefly. Answer in the question's language."
)


class LLMUnavailable(Exception):
    """No answer came from a language model; the message is the one-line reason."""


class SpeechUnavailable(Exception):
    """The answer could not be spoken; the message is the one-line reason."""


@dataclass(frozen=True)
class Source:
    """One numbered passage given to the model, and where it comes from."""

    number: int
    path: str
    modality: str
    page: int | None
    start: float
    end: float
    media_id: str
    link: str
    text: str  # what the model reads: the whole passage, transcript line, labels or OCR words
    snippet: str = ""  # what a reader sees of it (the hit's snippet)

    @classmethod
    def from_hit(cls, number: int, hit: Hit) -> Source:
        return cls(
            number,
            hit.path,
            hit.modality,
            hit.page,
            hit.start,
            hit.end,
            hit.media_id,
            hit.link,
            hit.passage or hit.snippet,
            hit.snippet,
        )

    @property
    def timed(self) -> bool:
        return Modality(self.modality).timed

    def place(self) -> str:
        """`page 2`, `6.4-9.9 s (00:06-00:10)`, or empty for a page-less document or a photo."""
        if self.timed:
            return f"{self.start:.1f}-{self.end:.1f} s ({clock(self.start)}-{clock(self.end)})"
        return f"page {self.page}" if self.page else ""

    def heading(self) -> str:
        """`[n] path, place, modality`: how the prompt and the citation list name a source."""
        return ", ".join(
            p for p in (f"[{self.number}] {self.path}", self.place(), self.modality) if p
        )

    def where(self) -> dict:
        """Page, or start and end seconds, as JSON gives them (only what applies)."""
        if self.timed:
            return {"start": self.start, "end": self.end}
        return {"page": self.page} if self.page else {}

    def _ref(self) -> dict:
        """Which source and where in its file: what a citation and a source both say first."""
        return {"number": self.number, "path": self.path, **self.where(), "media_id": self.media_id}

    def citation_json(self) -> dict:
        return {**self._ref(), "link": self.link}

    def source_json(self) -> dict:
        return {**self._ref(), "modality": self.modality, "snippet": self.snippet or self.text}


def clock(seconds: float) -> str:
    """mm:ss, or h:mm:ss past an hour."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def sources_of(hits: Sequence[Hit]) -> list[Source]:
    return [Source.from_hit(n, hit) for n, hit in enumerate(hits, 1)]


def build_prompt(question: str, sources: Sequence[Source]) -> list[dict[str, str]]:
    """The chat messages: the rules, then the numbered sources and the question."""
    blocks = [f"{s.heading()}\n{' '.join(s.text.split())}" for s in sources]
    user = "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def cited_numbers(text: str) -> list[int]:
    """Numbers cited as [n], [n, m] or [n][m], in order of first mention."""
    seen: dict[int, None] = {}
    for group in _CITE.findall(text):
        for part in group.split(","):
            seen.setdefault(int(part), None)
    return list(seen)


def citations(text: str, sources: Sequence[Source]) -> tuple[list[Source], list[int]]:
    """The sources an answer cites, and the numbers it cites that are no source."""
    by_number = {s.number: s for s in sources}
    numbers = cited_numbers(text)
    return [by_number[n] for n in numbers if n in by_number], [
        n for n in numbers if n not in by_number
    ]


def extractive(sources: Sequence[Source], passages: int = EXTRACTIVE_PASSAGES) -> str:
    """The best passages (or transcript lines), each cited: an answer with no model."""
    return "\n".join(f"{' '.join(s.text.split())} [{s.number}]" for s in sources[:passages])


def strip_citations(text: str) -> str:
    """The answer as it should be read aloud: without the [n] marks."""
    return re.sub(r"\s*" + _CITE.pattern, "", text)


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint; base_url None means the client's default (OpenAI)."""

    base_url: str | None
    model: str
    api_key: str
    timeout_s: float = 60.0
    speech_model: str = "tts-1"
    voice: str = "alloy"

    @property
    def label(self) -> str:
        return self.base_url or "the OpenAI API"


def resolve_endpoint(
    base_url: str,
    model: str,
    api_key: str,
    environ: Mapping[str, str],
    timeout_s: float = 60.0,
    speech_model: str = "tts-1",
    voice: str = "alloy",
) -> Endpoint:
    """The endpoint the settings name, else OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL.
    Raises LLMUnavailable when there is none: no URL and no key, or no model name."""
    url = base_url.strip() or environ.get("OPENAI_BASE_URL", "").strip()
    key = api_key.strip() or environ.get("OPENAI_API_KEY", "").strip()
    name = model.strip() or environ.get("OPENAI_MODEL", "").strip()
    if not url and not key:
        raise LLMUnavailable(
            "no LLM endpoint configured (set MMRAG_LLM_BASE_URL and MMRAG_LLM_MODEL, "
            "or OPENAI_BASE_URL/OPENAI_API_KEY and OPENAI_MODEL)"
        )
    if not name:
        raise LLMUnavailable(
            f"no LLM endpoint configured: no model named for {url or 'the OpenAI API'} "
            "(set MMRAG_LLM_MODEL or OPENAI_MODEL)"
        )
    return Endpoint(url or None, name, key or NO_KEY, timeout_s, speech_model, voice)


def _client(endpoint: Endpoint):
    try:
        from openai import OpenAI
    except ImportError as exc:
        raise LLMUnavailable(
            f"LLM endpoint {endpoint.label} unreachable: the openai package is not installed "
            "(pip install 'mmrag[openai]')"
        ) from exc

    # no retries: an unreachable endpoint falls back to the extractive answer at once
    return OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        timeout=endpoint.timeout_s,
        max_retries=0,
    )


def _reason(exc: BaseException, endpoint: Endpoint) -> str:
    """One line on why the endpoint gave no answer."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        why = f"no reply within {endpoint.timeout_s:g} s (llm_timeout_s)"
    elif isinstance(exc, openai.APIStatusError):
        why = f"HTTP {exc.status_code}: {exc.message}"
    elif isinstance(exc, openai.APIConnectionError) and exc.__cause__ is not None:
        why = str(exc.__cause__) or type(exc.__cause__).__name__
    else:
        why = str(exc) or type(exc).__name__
    why = " ".join(why.split())
    return f"LLM endpoint {endpoint.label} unreachable: {why[:300]}"


def stream_chat(endpoint: Endpoint, messages: list[dict[str, str]]) -> Iterator[str]:
    """The answer's text as it arrives; LLMUnavailable (with the reason) on any failure."""
    client = _client(endpoint)  # LLMUnavailable without the openai package
    import openai

    try:
        stream = client.chat.completions.create(
            model=endpoint.model, messages=messages, stream=True
        )
        for chunk in stream:
            for choice in chunk.choices or []:
                if choice.delta and choice.delta.content:
                    yield choice.delta.content
    except (openai.OpenAIError, OSError, ValueError) as exc:
        raise LLMUnavailable(_reason(exc, endpoint)) from exc


@dataclass
class Answer:
    """What `mmrag ask` gives: the text, the sources it cites and how it was made."""

    question: str
    text: str
    mode: str  # "llm" or "extractive"
    sources: list[Source]
    cited: list[Source] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    note: str = ""  # why the answer is extractive, or cut short

    def to_json(self) -> dict:
        data = {
            "question": self.question,
            "answer": self.text,
            "mode": self.mode,
            "citations": [s.citation_json() for s in self.cited],
            "dropped": self.dropped,
            "sources": [s.source_json() for s in self.sources],
        }
        if self.note:
            data["note"] = self.note
        return data


def answer(
    question: str,
    sources: Sequence[Source],
    endpoint: Endpoint | LLMUnavailable,
    on_text: Callable[[str], None] | None = None,
) -> Answer:
    """Ask the endpoint (streaming each piece to `on_text`), else answer extractively.

    `endpoint` is what `resolve_endpoint` gave, or the LLMUnavailable it raised. A failure
    before any text, or an empty reply, falls back to the extractive answer with the reason
    as the note; a failure after some text keeps that text and says it was cut short."""
    sources = list(sources)
    if not sources:
        return Answer(question, NOTHING, "extractive", [], note="no sources found")
    note = ""
    if isinstance(endpoint, Endpoint):
        pieces: list[str] = []
        try:
            for piece in stream_chat(endpoint, build_prompt(question, sources)):
                pieces.append(piece)
                if on_text is not None:
                    on_text(piece)
        except LLMUnavailable as exc:
            note = str(exc)
        text = "".join(pieces)
        if text.strip():
            cited, dropped = citations(text, sources)
            cut = f"answer cut short: {note}" if note else ""
            return Answer(question, text, "llm", sources, cited, dropped, cut)
        note = note or f"LLM endpoint {endpoint.label} returned an empty answer"
    else:
        note = str(endpoint)
    text = extractive(sources)
    cited, dropped = citations(text, sources)
    return Answer(question, text, "extractive", sources, cited, dropped, note)


SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def speak(text: str, path: Path, endpoint: Endpoint | None) -> tuple[str, str]:
    """Write `text` as speech to `path`: the endpoint's speech API where there is one, else
    espeak-ng. Returns (what spoke it, a note on a fallback or ""); SpeechUnavailable when
    neither can."""
    spoken = strip_citations(text).strip()
    if not spoken:
        raise SpeechUnavailable("nothing to speak: the answer is empty")
    note = ""
    if endpoint is not None:
        try:
            _speech_api(spoken, path, endpoint)
            return f"{endpoint.label} ({endpoint.speech_model})", ""
        except SpeechUnavailable as exc:
            note = str(exc)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        why = "no speech: no LLM endpoint configured and espeak-ng is not installed"
        raise SpeechUnavailable(f"{note}; espeak-ng is not installed" if note else why)
    try:
        done = subprocess.run(
            [espeak, "-w", str(path), "--stdin"],
            input=spoken,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpeechUnavailable(f"espeak-ng failed: {exc}") from exc
    if done.returncode != 0 or not path.is_file() or path.stat().st_size == 0:
        why = " ".join((done.stderr or "").split()) or f"exit status {done.returncode}"
        raise SpeechUnavailable(f"espeak-ng could not write {path}: {why}")
    return "espeak-ng (WAV)", note


def _speech_api(text: str, path: Path, endpoint: Endpoint) -> None:
    """The endpoint's speech API (OpenAI's `audio.speech`); SpeechUnavailable with the reason."""
    try:
        client = _client(endpoint)
    except LLMUnavailable as exc:
        raise SpeechUnavailable(str(exc).replace("unreachable", "speech failed", 1)) from exc
    import openai

    fmt = path.suffix.lower().lstrip(".")
    try:
        reply = client.audio.speech.create(
            model=endpoint.speech_model,
            voice=endpoint.voice,
            input=text,
            response_format=fmt if fmt in SPEECH_FORMATS else "wav",  # type: ignore[arg-type]
        )
        path.write_bytes(reply.content)
    except (openai.OpenAIError, OSError) as exc:
        why = _reason(exc, endpoint).replace("unreachable", "speech failed", 1)
        raise SpeechUnavailable(why) from exc
