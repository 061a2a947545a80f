"""`mmrag ask`: retrieval, the prompt, the streamed answer and its citations, the extractive
answer when no model answers, and the answer as speech. The model is a protocol stand-in
(tests/llm_stand_in.py) over real HTTP; the store is a real Milvus Lite one."""

from __future__ import annotations

import json
import os
import socket
import wave
from pathlib import Path

import pytest
from fpdf import FPDF

from mmrag.search.answer import Source, build_prompt, citations, clock
from tests.conftest import Env, write
from tests.llm_stand_in import SCRIPT, StandIn

QUESTION = "How much notice does the lease need before moving out?"
LEASE_PAGES = [
    "Apartment lease for Flat 4, 12 Mill Road. The monthly rent is paid on the first day.",
    "Ending the lease: the tenant must give two months' written notice before moving out. "
    "The deposit is returned within thirty days after the keys are handed back.",
]
RECIPE = (
    "Lemon pancakes\n\n"
    "Whisk two eggs with milk and flour, add lemon zest, and rest the batter for ten minutes. "
    "Fry small pancakes in butter until golden on both sides."
)


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's OPENAI_* variables must not reach these tests."""
    for key in list(os.environ):
        if key.startswith("OPENAI_"):
            monkeypatch.delenv(key)


def pdf_bytes(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


@pytest.fixture
def library(env: Env) -> Env:
    lib = env.root / "lib"
    write(lib / "lease.pdf", pdf_bytes(LEASE_PAGES))
    write(lib / "kitchen" / "pancakes.md", RECIPE)
    report = env.ingest(lib)
    assert (report.new, report.failed) == (2, [])
    return env


def lease(env: Env) -> str:
    return str(env.root / "lib" / "lease.pdf")


def llm(url: str) -> dict[str, str]:
    return {"MMRAG_LLM_BASE_URL": url, "MMRAG_LLM_MODEL": "stand-in-model"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prompt_carries_sources_and_the_streamed_answer_cites_files_and_pages(
    library: Env,
) -> None:
    with StandIn() as stand_in:
        r = library.cli_with(llm(stand_in.url), "ask", QUESTION)
    assert r.exit_code == 0, r.output
    (request,) = stand_in.requests
    body = request["body"]
    assert request["path"] == "/v1/chat/completions"
    assert body["model"] == "stand-in-model" and body["stream"] is True
    prompt = body["messages"][-1]["content"]
    assert f"[1] {lease(library)}, page 2, document\n" in prompt  # the best source first
    assert "two months' written notice" in prompt
    assert "kitchen/pancakes.md, document\n" in prompt  # every retrieved source, numbered
    assert f"Question: {QUESTION}" in prompt
    assert r.stdout.startswith(SCRIPT + "\n")  # the streamed answer, as it came
    listed = r.stdout.split("\nSources:\n", 1)[1].splitlines()
    link = Path(lease(library)).as_uri() + "#page=2"
    assert listed == [f"[1] {lease(library)}, page 2, document  {link}"]  # [9] is not listed
    assert "cites [9], not among the" in r.stderr and "dropped" in r.stderr
    assert len([line for line in r.stderr.splitlines() if "[9]" in line]) == 1


HOUSE_NOTES = (
    "House notes for the sitter. The heating comes on at six in the morning and goes off at ten "
    "at night; the thermostat in the hall overrides it for an hour. Bins go out on Tuesday "
    "evening, the green one for garden waste. The spare key is kept under the blue flowerpot."
)


def test_the_prompt_carries_whole_passages_not_just_their_snippets(make_env) -> None:
    env: Env = make_env(chunk_tokens=128)  # the notes are one passage
    write(env.root / "lib" / "house.txt", HOUSE_NOTES)
    env.ingest(env.root / "lib")
    [hit] = env.searcher().search("when does the heating come on", limit=1)
    assert len(hit.snippet) < len(HOUSE_NOTES)  # the reader's snippet is cut...
    with StandIn() as stand_in:
        r = env.cli_with(llm(stand_in.url), "ask", "when does the heating come on?")
    assert r.exit_code == 0, r.output
    prompt = stand_in.requests[0]["body"]["messages"][-1]["content"]
    assert " ".join(HOUSE_NOTES.split()) in prompt  # ...the model reads the whole passage
    r = env.cli("ask", "when does the heating come on?", "--json")
    [source] = json.loads(r.stdout)["sources"]
    assert source["snippet"] == hit.snippet


def test_json_gives_answer_citations_sources_and_mode(library: Env) -> None:
    with StandIn() as stand_in:
        r = library.cli_with(llm(stand_in.url), "ask", QUESTION, "--json", "--sources", "2")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["answer"] == SCRIPT and data["mode"] == "llm" and "note" not in data
    assert data["citations"] == [
        {
            "number": 1,
            "path": lease(library),
            "page": 2,
            "media_id": data["sources"][0]["media_id"],
            "link": Path(lease(library)).as_uri() + "#page=2",
        }
    ]
    assert data["dropped"] == [9]
    assert len(data["sources"]) == 2  # --sources
    first = data["sources"][0]
    assert {k: first[k] for k in ("number", "path", "page", "modality")} == {
        "number": 1,
        "path": lease(library),
        "page": 2,
        "modality": "document",
    }
    assert "two months' written notice" in first["snippet"] and first["media_id"]
    # the whole prompt held the two sources only
    assert "[3]" not in stand_in.requests[0]["body"]["messages"][-1]["content"]


def test_openai_variables_are_the_fallback_endpoint(
    library: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StandIn() as stand_in:
        monkeypatch.setenv("OPENAI_BASE_URL", stand_in.url)
        monkeypatch.setenv("OPENAI_MODEL", "from-openai-model")
        r = library.cli_with({}, "ask", QUESTION, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mode"] == "llm"
    assert stand_in.requests[0]["body"]["model"] == "from-openai-model"


def test_without_an_endpoint_the_best_passages_come_back_cited(library: Env) -> None:
    r = library.cli_with({}, "ask", QUESTION)
    assert r.exit_code == 0, r.output
    answer, listed = r.stdout.split("\nSources:\n", 1)
    lines = answer.splitlines()
    assert 1 <= len(lines) <= 3
    assert "two months' written notice" in lines[0] and lines[0].endswith(" [1]")
    assert listed.splitlines()[0].startswith(f"[1] {lease(library)}, page 2, document  file://")
    (note,) = r.stderr.splitlines()
    assert "no LLM endpoint configured" in note and "MMRAG_LLM_BASE_URL" in note


@pytest.mark.parametrize("fault", ["closed port", "HTTP 500", "timeout"])
def test_an_unreachable_endpoint_gives_the_extractive_answer_and_says_why(
    library: Env, fault: str
) -> None:
    if fault == "closed port":
        url = f"http://127.0.0.1:{closed_port()}/v1"
        r = library.cli_with(llm(url), "ask", QUESTION, "--json")
        expected = "refused"
    elif fault == "HTTP 500":
        with StandIn(status=500) as stand_in:
            url = stand_in.url
            r = library.cli_with(llm(url), "ask", QUESTION, "--json")
        expected = "HTTP 500"
    else:
        with StandIn(delay_s=3) as stand_in:
            url = stand_in.url
            slow = {**llm(url), "MMRAG_LLM_TIMEOUT_S": "0.5"}
            r = library.cli_with(slow, "ask", QUESTION, "--json")
        expected = "no reply within 0.5 s"
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["mode"] == "extractive"
    assert f"LLM endpoint {url} unreachable" in data["note"] and expected in data["note"]
    assert data["answer"].splitlines()[0].endswith("[1]")
    assert data["citations"][0]["path"] == lease(library)
    assert data["citations"][0]["page"] == 2
    (note,) = r.stderr.splitlines()
    assert "unreachable" in note and expected in note


def test_nothing_found_says_so_in_one_line(env: Env) -> None:
    r = env.cli_with({}, "ask", QUESTION)
    assert r.exit_code == 0, r.output
    assert r.stdout == "Nothing in the library matches this question.\n"


def test_speak_writes_a_wav_with_espeak_ng(library: Env, tmp_path: Path) -> None:
    speech = tmp_path / "answer.wav"
    with StandIn() as stand_in:  # the stand-in has no speech API: espeak-ng speaks instead
        r = library.cli_with(llm(stand_in.url), "ask", QUESTION, "--speak", str(speech))
    assert r.exit_code == 0, r.output
    assert stand_in.requests[-1]["path"] == "/v1/audio/speech"
    assert "espeak-ng" in r.stderr and "speech failed" in r.stderr
    with wave.open(str(speech)) as w:
        assert w.getnframes() > w.getframerate() // 2  # at least half a second of speech
        assert len(w.readframes(w.getnframes())) > 0


def test_speak_without_any_speaker_fails_in_one_line(
    library: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no espeak-ng on PATH
    speech = tmp_path / "answer.wav"
    r = library.cli_with({}, "ask", QUESTION, "--speak", str(speech))
    assert r.exit_code == 2
    assert "two months' written notice" in r.stdout  # the answer is still printed
    assert "espeak-ng is not installed" in r.stderr and not speech.exists()


def test_citation_numbers_and_prompt_lines() -> None:
    memo = Source(1, "memo.ogg", "transcript", None, 65.4, 70.0, "m", "file:///memo.ogg", "hi")
    note = Source(2, "note.txt", "document", None, 0, 10, "n", "file:///note.txt", "text")
    cited, dropped = citations("A [2]. B [1, 2][7]. C [1].", [memo, note])
    assert [s.number for s in cited] == [2, 1] and dropped == [7]
    prompt = build_prompt("q?", [memo, note])[-1]["content"]
    assert "[1] memo.ogg, 65.4-70.0 s (01:05-01:10), transcript\nhi" in prompt
    assert "[2] note.txt, document\ntext" in prompt
    assert clock(3725) == "1:02:05"
