"""A protocol stand-in for an OpenAI-compatible chat endpoint, for tests.

It speaks the wire protocol that Ollama, vLLM, llama.cpp's server and hosted APIs share
(`POST /v1/chat/completions`, plain JSON or server-sent events with `"stream": true`) and
answers every request with one scripted text. It claims nothing about answer quality: it only
lets the tests check what `mmrag ask` sends (the request bodies are recorded) and how it
handles what comes back. Anything else (`/v1/audio/speech` included) gets a 404.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SCRIPT = "The lease needs two months' notice [1]. See also [9]."


class StandIn:
    """The server on 127.0.0.1 (a free port), in a thread: `with StandIn() as llm: llm.url`."""

    def __init__(self, reply: str = SCRIPT, status: int = 200, delay_s: float = 0.0) -> None:
        self.reply = reply
        self.status = status  # anything but 200: an error reply with that status
        self.delay_s = delay_s  # seconds before any reply (a slow or stuck server)
        self.requests: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                stand_in.requests.append({"path": self.path, "body": body})
                time.sleep(stand_in.delay_s)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                elif stand_in.status != 200:
                    self._json(stand_in.status, {"error": {"message": "stand-in error"}})
                elif body.get("stream"):
                    self._stream(body.get("model", ""))
                else:
                    self._json(200, _completion(body.get("model", ""), stand_in.reply))

            def _json(self, status: int, data: dict) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _stream(self, model: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = stand_in.reply.split(" ")
                pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
                for piece in pieces:
                    self._event(_chunk(model, {"content": piece}, None))
                self._event(_chunk(model, {}, "stop"))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, data: dict) -> None:
                self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

            def log_message(self, *args: object) -> None:  # quiet in test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL a client is given (`.../v1`)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _chunk(model: str, delta: dict, finish: str | None) -> dict:
    return {
        "id": "chatcmpl-stand-in",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(model: str, text: str) -> dict:
    return {
        "id": "chatcmpl-stand-in",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
