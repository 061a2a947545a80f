"""The HTTP API (mmrag/api.py) as a client sees it: a real uvicorn server on a free port, real
Milvus Lite, the offline models and a subset of the sample library (a PDF, the photos, the voice
memo). Requests go over real sockets (http.client), raw paths included."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import uvicorn
from filelock import FileLock
from PIL import Image

from mmrag.api import create_app
from mmrag.ingest.runner import ingest_lock_path
from mmrag.kinds import QueryKind
from mmrag.settings import Settings
from mmrag.store.schema import Segment
from mmrag.store.thumbnails import ensure_thumbnail, thumbnail_store
from tests.conftest import REPO, Env, build_env, write
from tests.image_samples import altered
from tests.llm_stand_in import SCRIPT, StandIn

SAMPLES = REPO / "data" / "library"
SECRET = "TOP SECRET: the launch codes are 0000"
KEY = "correct horse battery staple"


class Served:
    """An app under a real uvicorn, in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app: object) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()

    def call(
        self,
        path: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request with `path` sent exactly as written (no normalising, no quoting)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def json(self, path: str, **kw: object) -> dict:
        reply = self.call(path, **kw)  # type: ignore[arg-type]
        assert reply.status == 200, (reply.status, reply.body[:500])
        return json.loads(reply.body)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Lib:
    env: Env
    root: Path  # the library folder that was ingested
    server: Served
    llm: StandIn

    def media_id(self, name: str) -> str:
        rec = self.env.catalog.path_record(str(self.root / name))
        assert rec is not None and rec.media_id, name
        return rec.media_id


def multipart(fields: dict[str, tuple[str, bytes] | str], part_headers: str = "") -> tuple:
    """A multipart/form-data body: files as (filename, bytes), text fields as str."""
    boundary = "test-boundary-7MA4YWxkTrZu0gW"
    out = b""
    for name, value in fields.items():
        if isinstance(value, tuple):
            out += (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                    f'filename="{value[0]}"\r\nContent-Type: application/octet-stream\r\n'
                    f"{part_headers}\r\n"
                ).encode()
                + value[1]
                + b"\r\n"
            )
        else:
            out += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def events(body: bytes) -> list[tuple[str, dict]]:
    """Server-sent events as (event, data)."""
    found = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, minilm) -> Iterator[Lib]:
    root = tmp_path_factory.mktemp("api")
    library = root / "library"
    shutil.copytree(SAMPLES / "photos", library / "photos")
    shutil.copytree(SAMPLES / "recordings", library / "recordings")
    shutil.copy(SAMPLES / "docs" / "home" / "lease-summary.pdf", library / "lease-summary.pdf")
    write(root / "outside" / "secret.txt", SECRET + "\n" * 3 + "Nobody must read this file.")
    (library / "notes").mkdir()
    os.symlink(root / "outside" / "secret.txt", library / "notes" / "link.txt")
    for name in ("swapped", "gone", "fifo"):  # each becomes something else after the ingest
        write(library / "notes" / f"{name}.md", f"# The {name} note\n\nIt is about {name}.")
    write(root / "incoming" / "tide-tables.md", "# Tide tables\n\nHigh water at 06:40 and 19:05.")
    write(root / "incoming" / "boat.md", "# Boat\n\nThe dinghy needs new oars before June.")
    env = build_env(root, minilm, library=[root / "incoming"], max_upload_mb=1.0)
    env.with_images()
    env.with_audio()
    report = env.ingest(library)
    assert report.failed == [] and report.new == 14, report
    with StandIn() as llm:
        env.settings.llm_base_url, env.settings.llm_model = llm.url, "stand-in-model"
        with Served(create_app(env.settings, env.models)) as server:
            yield Lib(env, library, server, llm)
    env.close()


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OPENAI_"):
            monkeypatch.delenv(key)


def test_text_search_finds_the_page_and_the_moment(lib: Lib) -> None:
    q = urlencode({"q": "How much warning do we owe the owner before we leave the rental?"})
    found = lib.server.json(f"/api/search?{q}&limit=3")
    first = found["hits"][0]
    assert first["path"].endswith("lease-summary.pdf") and first["page"] == 2, first
    assert first["media_url"] == f"/media/{lib.media_id('lease-summary.pdf')}#page=2"
    assert found["query"]["kind"] == "text" and found["query"]["q"].endswith("the rental?")
    assert (found["query"]["limit"], found["query"]["page"]) == (3, 1)
    q = urlencode({"q": "which platform does the London train leave from"})
    first = lib.server.json(f"/api/search?{q}")["hits"][0]
    assert first["path"].endswith("voice memo from Sam.ogg") and first["modality"] == "transcript"
    assert 5.0 < first["start"] < 8.0 < first["end"] < 11.0, first
    assert first["media_url"].endswith(f"#t={first['start']:.2f}")
    # a photo found through its labels carries its thumbnail's URL, and the URL serves it
    cat = lib.server.json("/api/search?q=cat&limit=1")["hits"][0]
    assert cat["path"].endswith("chelsea the cat.jpg"), cat
    thumb = lib.server.call(cat["thumbnail_url"])
    assert thumb.status == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.body)).size[0] >= 200


def test_every_search_field_is_checked_with_one_line_naming_it(lib: Lib) -> None:
    for query, field in [
        ("q=", "q"),
        ("q=x&limit=0", "limit"),
        ("q=x&limit=many", "limit"),
        ("q=x&mode=fuzzy", "mode"),
        ("q=x&modality=smell", "modality"),
        ("q=x&since=yesterday", "since"),
        ("q=x&since=2024-02-01&until=2024-01-01", "since"),
        ("q=x&near=91,0", "near"),
        ("q=x&page=0", "page"),
        ("q=x&min_score=nan", "min_score"),
        ("q=x&sort=size", "sort"),
        ("q=x&camera=%20", "camera"),
    ]:
        reply = lib.server.call(f"/api/search?{query}")
        assert reply.status == 422, (query, reply.status, reply.body)
        data = reply.json()
        assert data["field"] == field and data["error"].startswith(f"{field}: "), (query, data)
        assert "\n" not in data["error"] and "Traceback" not in data["error"]


def test_an_example_photo_finds_its_original_first(lib: Lib) -> None:
    query = io.BytesIO()
    altered(Image.open(lib.root / "photos" / "coffee.jpg")).save(query, "JPEG")
    # the kind comes from the bytes: the name says text, the content says JPEG
    body, headers = multipart({"file": ("notes.txt", query.getvalue())})
    reply = lib.server.call("/api/search?limit=3", "POST", body, headers)
    assert reply.status == 200, reply.body
    found = reply.json()
    assert found["query"]["kind"] == "image" and found["query"]["file"] == "notes.txt"
    assert found["hits"][0]["path"].endswith("photos/coffee.jpg"), found["hits"]
    assert found["hits"][0]["thumbnail_url"].startswith("/thumbs/")
    thumb = lib.server.call(found["hits"][0]["thumbnail_url"])  # from the SQLite cache
    key = found["hits"][0]["thumbnail_url"].removeprefix("/thumbs/")
    stored = thumbnail_store(lib.env.settings.thumbnails)
    assert thumb.status == 200 and thumb.body == stored.get(key)
    # a page's and a video moment's own thumbnails are served by the same route
    page, moment = f"{key}_p2", f"{key}_t1500"
    for extra in (page, moment):
        ensure_thumbnail(lib.env.settings.thumbnails, extra, lambda: thumb.body)
        assert lib.server.call(f"/thumbs/{extra}").body == thumb.body, extra
    # an example and words together: fused as the searcher fuses them (find(text=...))
    body, headers = multipart({"file": ("q.jpg", query.getvalue()), "q": "cup of espresso"})
    both = lib.server.call("/api/search?limit=3", "POST", body, headers).json()
    assert both["query"]["q"] == "cup of espresso"
    example = lib.env.root / "query.jpg"
    example.write_bytes(query.getvalue())
    here = lib.env.searcher().find(QueryKind.IMAGE, example, limit=3, text="cup of espresso")
    assert [(h["path"], h["score"]) for h in both["hits"]] == [(h.path, h.score) for h in here]
    assert both["hits"][0]["path"].endswith("photos/coffee.jpg")
    # a document is no example, and a kind the client insists on is checked
    body, headers = multipart({"file": ("x.jpg", b"Just some words, not a picture.\n")})
    reply = lib.server.call("/api/search", "POST", body, headers)
    assert reply.status == 422 and reply.json()["field"] == "file", reply.body
    body, headers = multipart({"file": ("c.jpg", query.getvalue())})
    reply = lib.server.call("/api/search?kind=audio", "POST", body, headers)
    assert reply.status == 422 and "an image, not a sound clip" in reply.json()["error"]


def test_range_requests_return_exactly_the_bytes_asked_for(lib: Lib) -> None:
    path = lib.root / "recordings" / "voice memo from Sam.ogg"
    data = path.read_bytes()
    size = len(data)
    url = f"/media/{lib.media_id('recordings/voice memo from Sam.ogg')}"
    whole = lib.server.call(url)
    assert whole.status == 200 and whole.body == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "audio/ogg"
    for asked, start, end in [
        ("bytes=100-1099", 100, 1100),
        ("bytes=0-0", 0, 1),
        (f"bytes={size - 77}-", size - 77, size),  # open-ended
        ("bytes=-500", size - 500, size),  # the last 500
        (f"bytes=1000-{size * 2}", 1000, size),  # past the end: cut at it
    ]:
        part = lib.server.call(url, headers={"Range": asked})
        assert part.status == 206, (asked, part.status)
        assert part.body == data[start:end], asked
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{size}", asked
        assert part.headers["content-length"] == str(end - start)
    for asked in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        refused = lib.server.call(url, headers={"Range": asked})
        assert refused.status == 416, asked
        assert refused.headers["content-range"] == f"bytes */{size}"
        assert data[:64] not in refused.body
    head = lib.server.call(url, "HEAD", headers={"Range": "bytes=10-19"})
    assert head.status == 206 and head.body == b"" and head.headers["content-length"] == "10"
    pdf = lib.server.call(f"/media/{lib.media_id('lease-summary.pdf')}")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.body.startswith(b"%PDF")


def test_path_tricks_get_404_and_never_a_file(lib: Lib) -> None:
    notes = lib.root / "notes"
    real = lib.media_id("photos/coffee.jpg")
    link_out = lib.media_id("notes/link.txt")  # a symlink in the library leading out of it
    swapped = lib.media_id("notes/swapped.md")
    (notes / "swapped.md").unlink()
    os.symlink(lib.root.parent / "outside" / "secret.txt", notes / "swapped.md")
    gone = lib.media_id("notes/gone.md")
    (notes / "gone.md").unlink()
    fifo = lib.media_id("notes/fifo.md")
    (notes / "fifo.md").unlink()
    os.mkfifo(notes / "fifo.md")
    secret = str(lib.root.parent / "outside" / "secret.txt")
    tricks = [
        "/media/../../../../etc/passwd",
        "/media/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/media/%252e%252e%252f%252e%252e%252fetc%252fpasswd",  # double-encoded
        "/media/%2Fetc%2Fpasswd",
        "/media//etc/passwd",
        "/media/" + quote(secret, safe=""),  # an absolute path
        "/media/" + quote(str(lib.root / "photos" / "coffee.jpg"), safe=""),
        "/media/..\\..\\..\\etc\\passwd",
        "/media/..%5C..%5Cetc%5Cpasswd",
        f"/media/{real}%00",
        f"/media/{real}%00.jpg",
        f"/media/{real}%2F..%2F..%2Fetc%2Fpasswd",
        f"/media/{real}/../../etc/passwd",
        "/media/%E2%80%A5%2Fetc%2Fpasswd",  # the two-dot leader
        "/media/%EF%BC%8E%EF%BC%8E%EF%BC%8Fetc%EF%BC%8Fpasswd",  # fullwidth dots and slash
        "/media/..",
        "/media/%2e%2e",
        "/media/file:%2F%2F%2Fetc%2Fpasswd",
        f"/media/{real.upper()}",
        "/media/" + "0" * 32,  # a well-formed id the catalog does not have
        f"/media/{link_out}",
        f"/media/{swapped}",  # a library file replaced by a symlink out of it after ingest
        f"/media/{gone}",  # deleted since
        f"/media/{fifo}",  # now a pipe: never opened for reading
        "/thumbs/../../outside/secret.txt",
        "/thumbs/..%2F..%2Foutside%2Fsecret.txt",
        f"/thumbs/{real}_256.jpg",
        "/thumbs/" + quote(secret, safe=""),
        f"/thumbs/{real}%00",
    ]
    assert len(tricks) >= 20
    wrong = []
    for trick in tricks:
        reply = lib.server.call(trick)
        leaked = b"TOP SECRET" in reply.body or b"root:" in reply.body
        if reply.status != 404 or leaked or "error" not in reply.json():
            wrong.append((trick, reply.status, reply.body[:80]))
    assert wrong == []
    # the id that did not match a thing stays usable for what it is
    assert lib.server.call(f"/media/{real}").status == 200


def test_an_oversized_upload_gets_413_whatever_its_length_says(lib: Lib) -> None:
    big = os.urandom(1_500_000)  # over the 1 MB limit (max_upload_mb=1)
    body, headers = multipart({"file": ("big.jpg", big)})
    honest = lib.server.call("/api/search", "POST", body, headers)  # Content-Length: 1.5 MB
    assert honest.status == 413 and "max_upload_mb" in honest.json()["error"]

    def chunked(data: bytes, more: dict[str, str]) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", lib.server.port, timeout=60)
        try:
            parts = (data[i : i + 65536] for i in range(0, len(data), 65536))
            conn.request("POST", "/api/search", body=parts, headers=more, encode_chunked=True)
            r = conn.getresponse()
            return Reply(r.status, dict(r.getheaders()), r.read())
        finally:
            conn.close()

    unknown = chunked(body, headers)  # no Content-Length at all
    assert unknown.status == 413, unknown.body
    lying, headers = multipart({"file": ("big.jpg", big)}, part_headers="Content-Length: 10\r\n")
    assert chunked(lying, headers).status == 413
    small = multipart({"file": ("ok.jpg", (lib.root / "photos" / "coins.jpg").read_bytes())})
    assert lib.server.call("/api/search", "POST", *small).status == 200  # still serving


def test_ask_streams_sources_deltas_citations_and_done(lib: Lib) -> None:
    question = {"question": "How much notice do tenants give before moving out?", "sources": 3}
    headers = {"Content-Type": "application/json"}
    reply = lib.server.call("/api/ask", "POST", json.dumps(question).encode(), headers)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    got = events(reply.body)
    names = [name for name, _ in got]
    assert names[0] == "sources" and names[-2:] == ["citations", "done"]
    assert set(names[1:-2]) == {"delta"} and len(names) > 4
    sources = got[0][1]["sources"]
    assert len(sources) == 3 and sources[0]["path"].endswith("lease-summary.pdf")
    assert sources[0]["media_url"].endswith("#page=2")
    assert "".join(d["text"] for n, d in got if n == "delta") == SCRIPT
    citations = got[-2][1]
    assert [c["number"] for c in citations["citations"]] == [1] and citations["dropped"] == [9]
    assert citations["citations"][0]["media_url"] == sources[0]["media_url"]
    done = got[-1][1]
    assert done["mode"] == "llm" and done["answer"] == SCRIPT
    prompt = lib.llm.requests[-1]["body"]["messages"][-1]["content"]
    assert "two months before the day we intend to move out" in prompt
    # the passages themselves, when asked for
    extractive = question | {"extractive": True}
    got = events(lib.server.call("/api/ask", "POST", json.dumps(extractive).encode(), headers).body)
    deltas = [d for n, d in got if n == "delta"]
    assert len(deltas) == 1 and deltas[0]["mode"] == "extractive"
    assert deltas[0]["text"].splitlines()[0].endswith("[1]") and got[-1][1]["mode"] == "extractive"
    bad = lib.server.call("/api/ask", "POST", b'{"question": "  "}', headers)
    assert bad.status == 422 and bad.json()["field"] == "question"


def test_with_a_key_requests_without_it_get_401(lib: Lib) -> None:
    """A second server on the same store with a key and no LLM: ask answers extractively."""
    settings = Settings(**(lib.env.settings.model_dump() | {"api_key": KEY, "llm_base_url": ""}))
    media = f"/media/{lib.media_id('photos/coffee.jpg')}"
    with Served(create_app(settings, lib.env.models)) as keyed:
        for path in ("/api/status", "/api/search?q=cat", media, "/api/health"):
            assert keyed.call(path).status == 401, path
            assert keyed.call(path, headers={"X-API-Key": "wrong"}).status == 401, path
            assert keyed.call(path, headers={"Authorization": f"Bearer {KEY}"}).status == 200
            assert keyed.call(path, headers={"X-API-Key": KEY}).status == 200
        assert keyed.call(media, headers={"Cookie": f"mmrag_key={quote(KEY)}"}).status == 200
        cookie = {"Cookie": f"mmrag_key={quote(KEY)}"}
        assert keyed.call("/api/status", headers=cookie).status == 401  # not for the API itself
        assert keyed.call("/api/ask", "POST", b"{}").status == 401
        assert keyed.call("/docs").status == 200 and keyed.call("/openapi.json").status == 200
        body = json.dumps({"question": "Which platform does the London train leave from?"})
        auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        got = events(keyed.call("/api/ask", "POST", body.encode(), auth).body)
        done = got[-1][1]
        assert done["mode"] == "extractive" and "no LLM endpoint configured" in done["note"]
        assert "Platform 7" in done["answer"]


def test_ingest_over_http_reports_progress_and_takes_turns(lib: Lib) -> None:
    env = lib.env
    assert lib.server.json("/api/ingest") == {"state": "idle"}
    lock = FileLock(str(ingest_lock_path(env.settings.milvus_uri, env.settings.catalog)))
    with lock:  # another ingest of this store (say, `mmrag ingest`) holds the store's turn
        started = lib.server.call("/api/ingest", "POST")
        assert started.status == 202, started.body
        job = started.json()
        assert job["roots"] == [str(lib.root.parent / "incoming")]
        deadline = time.monotonic() + 30
        while lib.server.json(f"/api/ingest/{job['id']}")["state"] != "waiting":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        json_body = {"Content-Type": "application/json"}
        busy = lib.server.call("/api/ingest", "POST", b'{"prune": true}', json_body)
        assert busy.status == 409 and f"job {job['id']}" in busy.json()["error"]
    done = _finished(lib, job["id"])
    assert done["state"] == "done" and done["files_total"] == done["files_done"] == 2
    assert done["segments"] > 0 and done["summary"]["new"] == 2 and done["failures"] == []
    assert done["bulk"] is False
    # bulk import needs a server: refused on Lite with the reason, and no job starts
    refused = lib.server.call("/api/ingest", "POST", b'{"bulk": true}', json_body)
    assert refused.status == 409 and refused.json()["error"].startswith("bulk: bulk import needs")
    assert lib.server.json("/api/ingest")["id"] == job["id"]
    hit = lib.server.json("/api/search?q=tide+tables+high+water&limit=1")["hits"][0]
    assert hit["path"].endswith("incoming/tide-tables.md")
    again = _finished(lib, _start(lib))
    assert again["summary"]["new"] == 0 and again["summary"]["unchanged"] == 2
    assert again["segments"] == 0
    assert lib.server.call("/api/ingest/99").status == 404
    status = lib.server.json("/api/status")
    assert status["server"]["ingest"]["id"] == again["id"]
    assert status["files"]["paths"] == 16 and status["store_id"] == env.catalog.store_id


def _start(lib: Lib) -> int:
    reply = lib.server.call("/api/ingest", "POST")
    assert reply.status == 202, reply.body
    return reply.json()["id"]


def _finished(lib: Lib, job: int) -> dict:
    deadline = time.monotonic() + 120
    while (state := lib.server.json(f"/api/ingest/{job}"))["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    return state


def test_search_and_status_say_when_a_snapshot_lacks_the_latest_writes(
    make_env: Callable[..., Env],
) -> None:
    """A write after the last snapshot build (an upsert without refresh_snapshots) makes the
    snapshot stale: search results and status carry the note that `mmrag status` prints, and
    lose it once the snapshot is rebuilt."""
    env = make_env()
    write(env.root / "docs" / "tides.md", "# Tide tables\n\nHigh water at 06:40 and 19:05.")
    assert env.ingest(env.root / "docs").new == 1
    with Served(create_app(env.settings, env.models)) as server:
        assert server.json("/api/search?q=high+water")["notes"] == []
        assert server.json("/api/status")["search_notes"] == []

        vector = env.text.encode_query(QueryKind.TEXT, ["low water"])[0]
        row = Segment("extra:text:0", "extra", "document", 0.0, 9.0, "Low water", vector)
        env.store.upsert(env.collection, [row])  # no refresh_snapshots: the snapshot is stale
        [note] = server.json("/api/search?q=high+water")["notes"]
        assert note.startswith(f"{env.collection}: its search snapshot lacks the latest writes")
        assert server.json("/api/status")["search_notes"] == [note]

        assert env.store.refresh_snapshots() == [env.collection]
        assert server.json("/api/search?q=high+water")["notes"] == []
        assert server.json("/api/status")["search_notes"] == []


def test_photo_thumbnails_made_when_first_shown(tmp_path: Path, minilm) -> None:
    """photo_thumbnails = "shown": ingest makes none; the API makes a photo's when first asked,
    only from its unchanged file, and the searcher names it from then on."""
    library = tmp_path / "library"
    shutil.copytree(SAMPLES / "photos", library)
    env = build_env(tmp_path, minilm, photo_thumbnails="shown")
    env.with_images()
    try:
        report = env.ingest(library)
        assert report.failed == [] and report.new == 8, report
        store = thumbnail_store(env.settings.thumbnails)
        assert store.entries() == []  # none made while ingesting
        assert all(h.thumbnail is None for h in env.searcher().search("cat", limit=3))
        with Served(create_app(env.settings, env.models)) as server:
            hits = server.json("/api/search?q=cat&limit=3")["hits"]
            cat = hits[0]
            assert cat["path"].endswith("chelsea the cat.jpg"), hits
            assert cat["thumbnail_url"] == f"/thumbs/{cat['media_id']}"  # found by its labels
            first = server.call(cat["thumbnail_url"])
            assert first.status == 200 and first.headers["content-type"] == "image/jpeg"
            assert min(Image.open(io.BytesIO(first.body)).size) == 256
            assert store.entries() == [(cat["media_id"], 256)]
            assert server.call(cat["thumbnail_url"]).body == first.body  # made once
            # a photo changed since its ingest gets none: never stored under the old content
            coffee = env.catalog.path_record(str(library / "coffee.jpg"))
            assert coffee is not None and coffee.media_id
            os.utime(library / "coffee.jpg", ns=(coffee.mtime_ns + 10**9,) * 2)
            assert server.call(f"/thumbs/{coffee.media_id}").status == 404
            assert not store.has(coffee.media_id)
            assert server.call("/thumbs/" + "0" * 32).status == 404  # no such content
        # the CLI's searcher names it from now on
        shown = env.searcher().search("cat", limit=1)[0]
        assert shown.thumbnail and Path(shown.thumbnail).read_bytes() == first.body
    finally:
        env.close()
