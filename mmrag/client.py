"""The CLI's way to a running `mmrag serve` for the same store: the discovery file the server
writes beside its catalog, the checks that it really is this store's live server, and the HTTP
calls. Standard library only, so a command that goes through the server starts fast.

A discovery file is trusted only when its process is alive, its store id is the catalog's, the
models and search settings it was started with are this command's, and the server answers
`GET /api/health` within `PROBE_S`; a file left by a dead server is removed.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmrag.search.answer import Answer
    from mmrag.search.query import Hit
    from mmrag.settings import Settings

PROBE_S = 0.5  # how long a command waits for a server before searching locally
NO_SERVER_ENV = "MMRAG_NO_SERVER"  # set (to anything but 0/empty): never go through a server
# Settings that change what a search finds: a server started with other values is not used.
_SEARCH_FIELDS = (
    "milvus_uri",
    "collection_prefix",
    "profile",
    "text_model",
    "image_model",
    "clip_model",
    "audio_model",
    "hybrid_fusion",
    "dense_weight",
    "rerank_model",
)


class ServerError(Exception):
    """The server answered with an error; the message is its one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def discovery_path(catalog: Path) -> Path:
    """`<catalog>.serve.json`: beside the store's catalog, so one store has one server."""
    return catalog.with_name(catalog.name + ".serve.json")


def fingerprint(settings: Settings) -> dict[str, Any]:
    """What a server and a command must agree on for the server's answers to be the command's."""
    found = {name: getattr(settings, name) for name in _SEARCH_FIELDS}
    return found | {"models": dict(sorted(settings.models.items()))}


def llm_label(settings: Settings, environ: os._Environ[str] | dict[str, str]) -> str:
    """Which chat endpoint and model `ask` would use ("" for none): ask goes through a server
    only when the server would use the same one."""
    from mmrag.app import answer_endpoint
    from mmrag.search.answer import LLMUnavailable

    endpoint = answer_endpoint(settings, environ)
    return "" if isinstance(endpoint, LLMUnavailable) else f"{endpoint.label} {endpoint.model}"


def store_id(catalog: Path) -> str | None:
    """The catalog's store id, read without opening the store (None: no catalog yet)."""
    if not catalog.is_file():
        return None
    try:
        db = sqlite3.connect(f"{catalog.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def write_discovery(path: Path, data: dict[str, Any]) -> None:
    """Written whole (a reader never sees half a file), readable by this user only."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(tmp, path)


def read_discovery(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_discovery(path: Path, pid: int) -> None:
    """Remove the file if it is still this process's (a newer server may have replaced it)."""
    data = read_discovery(path)
    if data is not None and data.get("pid") == pid:
        path.unlink(missing_ok=True)


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    except OSError:
        return False
    return True


@dataclass
class Server:
    """A live `mmrag serve` for this command's store."""

    url: str
    key: str = ""

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> urllib.request.Request:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        return request

    def _open(self, request: urllib.request.Request, timeout: float | None) -> Any:
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise ServerError(exc.code, _error_line(exc)) from None

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        with self._open(self._request("GET", path), timeout) as reply:
            return json.loads(reply.read())

    def search(self, params: dict[str, Any], file: Path | None = None) -> dict[str, Any]:
        """GET /api/search with the options, or POST with the example file."""
        query = urllib.parse.urlencode(_query_params(params))
        if file is None:
            return self.get_json(f"/api/search?{query}")
        body, content_type = _multipart(file)
        request = self._request(
            "POST", f"/api/search?{query}", body, {"Content-Type": content_type}
        )
        with self._open(request, None) as reply:
            return json.loads(reply.read())

    def ask(self, body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """POST /api/ask: its server-sent events as (event, data), as they arrive."""
        request = self._request(
            "POST",
            "/api/ask",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        with self._open(request, None) as reply:
            yield from read_events(reply.readline)


def hits_from_json(items: list[dict[str, Any]]) -> list[Hit]:
    """The server's hits as the searcher's own (its extra URLs dropped), for the same output."""
    from dataclasses import MISSING, fields

    from mmrag.search.query import Hit

    # to_json() leaves out an optional field that is None (a page-less hit's `page` included)
    needed = {f.name for f in fields(Hit) if f.default is MISSING}
    names = [f.name for f in fields(Hit)]
    hits = []
    for item in items:
        given = {n: item.get(n) for n in names if n in item or n in needed}
        if given.get("moments"):  # each moment's media_url is the server's addition
            given["moments"] = [
                {k: v for k, v in m.items() if k != "media_url"} for m in given["moments"]
            ]
        hits.append(Hit(**given))
    return hits


def answer_from_events(
    events: Iterator[tuple[str, Any]], question: str, on_text: Callable[[str], None] | None
) -> Answer:
    """POST /api/ask's events as the Answer `mmrag ask` builds locally; the LLM's pieces go to
    `on_text` as they arrive. ServerError if the server reports a failure."""
    from mmrag.search.answer import Answer, Source

    sources: dict[int, Source] = {}
    for event, data in events:
        if event == "sources":
            for s in data["sources"]:
                sources[s["number"]] = Source(
                    s["number"],
                    s["path"],
                    s["modality"],
                    s.get("page"),
                    s["start"],
                    s["end"],
                    s["media_id"],
                    s["link"],
                    s["snippet"],
                )
        elif event == "delta" and data.get("mode") == "llm" and on_text is not None:
            on_text(data["text"])
        elif event == "error":
            raise ServerError(500, str(data.get("error")))
        elif event == "done":
            return Answer(
                question,
                data["answer"],
                data["mode"],
                list(sources.values()),
                [sources[c["number"]] for c in data["citations"]],
                data["dropped"],
                data.get("note", ""),
            )
    raise ServerError(502, "the server's answer ended early")


def read_events(readline: Callable[[], bytes]) -> Iterator[tuple[str, Any]]:
    """Server-sent events (`event:` and `data:` lines, a blank line after each) as (event,
    JSON data)."""
    event, data = "message", []
    while line := readline():
        text = line.decode("utf-8").rstrip("\r\n")
        if not text:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif text.startswith("event:"):
            event = text[6:].strip()
        elif text.startswith("data:"):
            data.append(text[5:].removeprefix(" "))


def find_server(settings: Settings, llm: str | None = None) -> Server | None:
    """This store's live server, if there is one and it would answer as this command would
    (`llm`: for ask, the endpoint label this command would use); else None."""
    if os.environ.get(NO_SERVER_ENV, "").strip() not in ("", "0"):
        return None
    path = discovery_path(settings.catalog)
    data = read_discovery(path)
    if data is None:
        return None
    if not pid_alive(data.get("pid")):
        path.unlink(missing_ok=True)  # left by a server that was killed
        return None
    mine = store_id(settings.catalog)
    if mine is None or data.get("store_id") != mine:
        return None
    if data.get("fingerprint") != json.loads(json.dumps(fingerprint(settings), default=str)):
        return None
    if llm is not None and data.get("llm") != llm:
        return None
    server = Server(str(data.get("url", "")), settings.api_key)
    try:
        health = server.get_json("/api/health", timeout=PROBE_S)
    except (OSError, ServerError, ValueError):
        return None
    return server if health.get("store_id") == mine else None


def _query_params(params: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name, value in params.items():
        if value is None or value is False:
            continue
        out.append((name, "true" if value is True else str(value)))
    return out


def _multipart(file: Path) -> tuple[bytes, str]:
    """One file part named `file` (the path as given is its filename: the server names it so in
    an error)."""
    boundary = "mmrag-" + secrets.token_hex(16)
    name = str(file).replace('"', "%22").replace("\r", "").replace("\n", "")
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + file.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def _error_line(exc: urllib.error.HTTPError) -> str:
    """The server's one line (without the field it names: the CLI names its own options)."""
    try:
        data = json.loads(exc.read())
        return str(data.get("message") or data.get("error") or data)
    except (OSError, ValueError, AttributeError):
        return f"HTTP {exc.code}: {exc.reason}"
