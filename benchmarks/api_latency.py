"""HTTP API search latency and throughput (`mmrag serve`) at 10k and 100k text segments.

    python benchmarks/api_latency.py [--sizes 10000 100000] [--requests 200] [--seconds 10]

Builds a fresh Milvus Lite store through mmrag.app: the text space's collection (dense vectors
plus BM25) filled with synthetic segments written directly through MilvusStore (random unit
vectors, and sentences of real English words from data/library for BM25), each content
recorded in the catalog as ingest records it, so hits map back to files. Then serves it with
the real API (mmrag.api.create_app under uvicorn, on 127.0.0.1) and times GET /api/search
(hybrid, limit 10) from HTTP clients: every query is new text, encoded by the real
all-MiniLM-L6-v2 inside the request. Waits until Milvus has indexed every row, then
prints p50/p95 of one client's requests (and the server's own time, encoding and search) and
requests/s with 1, 4 and 16 concurrent clients (keep-alive connections), for each size, and the
machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from machine import machine  # a sibling script; search_latency.py imports it from here

REPO = Path(__file__).resolve().parent.parent
PER_MEDIA = 20  # segments per synthetic file (a long document's chunks)


def vocabulary() -> list[str]:
    words: set[str] = set()
    for path in (REPO / "data" / "library" / "docs").rglob("*"):
        if path.suffix in {".md", ".txt"}:
            words.update(
                re.findall(r"[a-z]{3,}", path.read_text(encoding="utf-8", errors="ignore").lower())
            )
    return sorted(words)


def fill(store, catalog, collection: str, dim: int, start: int, count: int, words: list[str]):
    """`count` segments (PER_MEDIA per content) after the first `start`, with catalog records."""
    from mmrag.store.catalog import MediaFacts
    from mmrag.store.schema import Segment

    rng = np.random.default_rng(start)
    pick = random.Random(start)
    root = "/synthetic"
    for first in range(start, start + count, 5000):
        n = min(5000, start + count - first)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        segments, media = [], {}
        for i in range(n):
            k = first + i
            media_id = f"{k // PER_MEDIA:032x}"
            text = " ".join(pick.choices(words, k=pick.randint(30, 60))) + "."
            seg_id = f"{media_id}:text:{k % PER_MEDIA}"
            segments.append(Segment(seg_id, media_id, "document", 0, len(text), text, vectors[i]))
            media.setdefault(media_id, []).append(seg_id)
        catalog.begin_media_many([(m, "text", "txt", 1000, MediaFacts(), None) for m in media])
        store.upsert(collection, segments, batch=1000)
        for m in media:
            path = f"{root}/doc-{m[-8:]}.txt"
            catalog.link_path(path, path, root, m, 1000, 0)
        catalog.finish_media_many({collection: media})
    store.flush(collection)


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def search(self, query: str) -> tuple[float, float]:
        """Seconds for the whole request, and the server's own milliseconds (took_ms)."""
        t0 = time.perf_counter()
        self.conn.request("GET", "/api/search?" + urlencode({"q": query, "limit": 10}))
        reply = self.conn.getresponse()
        body = reply.read()
        found = json.loads(body) if reply.status == 200 else {}
        if not found.get("hits"):
            raise SystemExit(f"search failed: {reply.status} {body[:300]!r}")
        return time.perf_counter() - t0, found["took_ms"]


def wait_for_indexes(store, collection: str, limit_s: float = 600) -> float:
    """Seconds until Milvus has indexed every row (Lite builds HNSW in the background after a
    flush: searching before that measures brute force)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        found = [
            store.client.describe_index(collection, i)
            for i in store.client.list_indexes(collection)
        ]
        if all(
            d.get("pending_index_rows", 0) == 0 and d.get("indexed_rows") == d.get("total_rows")
            for d in found
        ):
            break
        time.sleep(1)
    return round(time.perf_counter() - t0, 1)


def queries(words: list[str], n: int, seed: int) -> list[str]:
    pick = random.Random(seed)
    return [" ".join(pick.choices(words, k=pick.randint(3, 8))) for _ in range(n)]


def latency(port: int, texts: list[str]) -> dict:
    client = Client(port)
    for q in texts[:10]:  # warm the connection and the caches
        client.search(q)
    timed = [client.search(q) for q in texts[10:]]
    times = sorted(t for t, _ in timed)
    return {
        "p50_ms": round(1000 * statistics.median(times), 1),
        "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 1),
        "server_p50_ms": round(statistics.median(ms for _, ms in timed), 1),  # encode + search
        "requests": len(times),
    }


def throughput(port: int, clients: int, seconds: float, texts: list[str]) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def run(n: int) -> None:
        client = Client(port)
        i = n
        while time.monotonic() < stop:
            client.search(texts[i % len(texts)])
            done[n] += 1
            i += clients

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return round(sum(done) / (time.perf_counter() - t0), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--requests", type=int, default=200, help="timed requests for p50/p95")
    ap.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import uvicorn

    from mmrag.api import create_app
    from mmrag.app import Models, open_store
    from mmrag.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="mmrag-api-latency-"))
    off = {"image_model": "", "clip_model": "", "audio_model": "", "speech_model": ""}
    torch_queries = {"query_encoder": "torch"} if "query_encoder" in Settings.model_fields else {}
    settings = Settings(home=work, profile="offline", device=args.device, **off, **torch_queries)
    models = Models.build(settings)
    catalog, store = open_store(settings)
    space = models.text.space
    collection = store.ensure_space(space)
    words = vocabulary()
    print(json.dumps({"machine": machine(), "store": str(work), "vocabulary": len(words)}))

    results = []
    have = 0
    for size in sorted(args.sizes):
        t0 = time.perf_counter()
        fill(store, catalog, collection, space.dim, have, size - have, words)
        loaded = time.perf_counter() - t0
        indexing = wait_for_indexes(store, collection)
        have = size
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(settings, models), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        texts = queries(words, args.requests + 10, seed=size)
        row = {
            "segments": size,
            "rows_in_store": store.count(collection),
            "load_s": round(loaded, 1),
            "index_wait_s": indexing,
            **latency(port, texts),
        }
        for clients in (1, 4, 16):
            row[f"rps_{clients}"] = throughput(port, clients, args.seconds, texts)
        results.append(row)
        print(json.dumps(row))
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    store.close()
    catalog.close()
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
