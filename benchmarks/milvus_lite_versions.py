"""Benchmark the installed milvus-lite version on the workload mmrag puts on it.

Run once per milvus-lite version, each in its own virtual environment (see
docs/milvus_lite_versions.md for how to build them):

    python benchmarks/milvus_lite_versions.py --rows 100000 --dim 384 --out results.json

It measures, on a collection with mmrag's segment schema (VARCHAR pk, scalar fields, JSON,
a dense 384-d COSINE vector and a BM25 sparse vector fed by a text analyzer):

- insert rate (batches of 1000 rows) and how long until a search sees every inserted row;
- for each vector index type: build time, search latency p50/p95 (top-10, sequential), with and
  without a scalar filter, and recall@10 against exact numpy brute force (an index type the
  engine does not really build shows up as a silent fallback: same latency/recall as FLAT);
- BM25 and hybrid (dense + BM25, RRF) search latency;
- resident memory of this process and of any engine child process;
- a PASS/FAIL feature checklist (with the error text) on a small second database, including
  reopening the store from a fresh process and two processes opening the same store.

It prints the JSON result and writes it to --out. All databases live in a temporary directory
under /tmp that is deleted at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psutil
from pymilvus import (
    AnnSearchRequest,
    DataType,
    Function,
    FunctionType,
    MilvusClient,
    RRFRanker,
)

# mmrag's own collection schema wherever mmrag is importable (its environment, milvus-lite 3.x).
# mmrag requires milvus-lite>=3.2.2, so it cannot be installed beside milvus-lite 2.x, and the
# per-version environments of docs/milvus_lite_versions.md hold only pymilvus, milvus-lite,
# numpy and psutil: there `_private_schema` below stands in, a copy checked against mmrag's
# (`schema_drift`) on every run where mmrag is importable.
try:
    from mmrag.store import schema as mmrag_schema
except ImportError:
    mmrag_schema = None

COLLECTION = "segments"
MODALITIES = ("text", "image", "video", "audio")
SEGMENTS_PER_MEDIA = 20
# mmrag.store.schema's field sizes, copied for `_private_schema`
COPIED_SIZES = {
    "ID_MAX_LENGTH": 160,
    "MEDIA_ID_MAX_LENGTH": 64,
    "MODALITY_MAX_LENGTH": 16,
    "TEXT_MAX_BYTES": 65_535,
}
TEXT_MAX = mmrag_schema.TEXT_MAX_BYTES if mmrag_schema else COPIED_SIZES["TEXT_MAX_BYTES"]
BATCH = 1000
TOP_K = 10
OUTPUT_FIELDS = ["media_id"]  # always ask for fields explicitly, or vectors come back
LATENT_DIM = 24  # intrinsic dimension of the "lowrank" vectors
LOWRANK_NOISE = 0.06  # per-coordinate noise: ~25% of the latent signal's norm at 384-d
CHILD_ROW_ID = "written-by-second-process"
FILTER_EXPR = 'modality == "text"'  # 1 row in 4 passes

# index type -> (build params, list of search-param variants to measure)
INDEX_SPECS: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "FLAT": ({}, [{}]),
    "HNSW": ({"M": 16, "efConstruction": 200}, [{"ef": 64}, {"ef": 256}]),
    "AUTOINDEX": ({}, [{}]),
    # nprobe=128 of nlist=128 scans every list: recall must reach 1.0 if the params are honoured
    "IVF_FLAT": ({"nlist": 128}, [{"nprobe": 16}, {"nprobe": 128}]),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def err_text(exc: BaseException, limit: int = 400) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- machine / versions


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str | None]:
    return {
        name: package_version(name)
        for name in ("milvus-lite", "pymilvus", "numpy", "faiss-cpu", "grpcio", "psutil")
    }


# ---------------------------------------------------------------------------- memory


class RssSampler(threading.Thread):
    """Samples the RSS of this process and of its child processes (the 2.x engine)."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.proc = psutil.Process()
        self.peak_self = 0
        self.peak_children = 0
        self._stop_event = threading.Event()

    def current(self) -> tuple[int, int]:
        own = self.proc.memory_info().rss
        children = 0
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                children += child.memory_info().rss
        return own, children

    def run(self) -> None:
        while not self._stop_event.is_set():
            own, children = self.current()
            self.peak_self = max(self.peak_self, own)
            self.peak_children = max(self.peak_children, children)
            self._stop_event.wait(self.interval)

    def snapshot(self) -> dict[str, float]:
        own, children = self.current()
        return {"self_mib": mib(own), "children_mib": mib(children)}

    def stop(self) -> None:
        self._stop_event.set()


def mib(n: int) -> float:
    return round(n / 2**20, 1)


# ---------------------------------------------------------------------------- synthetic data


class Corpus:
    """Deterministic synthetic segments: random unit vectors, Zipf-distributed word text."""

    def __init__(
        self,
        dim: int,
        seed: int,
        data: str = "uniform",
        vocab_size: int = 5000,
        words_per_text: int = 60,
    ):
        self.dim = dim
        self.data = data
        self.words_per_text = words_per_text
        rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        vocab: set[str] = set()
        while len(vocab) < vocab_size:
            vocab.add("".join(rng.choice(letters, size=int(rng.integers(3, 11)))))
        self.vocab = sorted(vocab)
        weights = 1.0 / np.arange(1, vocab_size + 1)
        self.word_p = weights / weights.sum()
        self.seed = seed

    def vectors(self, start: int, n: int) -> np.ndarray:
        """Unit vectors. "uniform": isotropic (worst case for ANN recall). "lowrank": a
        LATENT_DIM-d latent space mapped into dim plus small isotropic noise, closer to the
        low intrinsic dimension of real text embeddings."""
        rng = np.random.default_rng((self.seed, 1, start))
        if self.data == "lowrank":
            basis = np.random.default_rng((self.seed, 4)).standard_normal((LATENT_DIM, self.dim))
            basis, _ = np.linalg.qr(basis.T)  # dim x LATENT_DIM, orthonormal columns
            latent = rng.standard_normal((n, LATENT_DIM))
            noise = rng.standard_normal((n, self.dim)) * LOWRANK_NOISE
            vecs = (latent @ basis.T + noise).astype(np.float32)
        else:
            vecs = rng.standard_normal((n, self.dim), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs

    def texts(self, start: int, n: int) -> list[str]:
        rng = np.random.default_rng((self.seed, 2, start))
        lengths = rng.integers(self.words_per_text - 20, self.words_per_text + 21, size=n)
        idx = rng.choice(len(self.vocab), size=int(lengths.sum()), p=self.word_p)
        words = [self.vocab[i] for i in idx]
        out: list[str] = []
        pos = 0
        for length in lengths:
            out.append(" ".join(words[pos : pos + int(length)]))
            pos += int(length)
        return out

    def rows(self, start: int, vecs: np.ndarray, texts: Sequence[str]) -> list[dict[str, Any]]:
        rows = []
        for j, (vec, text) in enumerate(zip(vecs, texts, strict=True)):
            i = start + j
            rows.append(
                {
                    "id": seg_id(i),
                    "media_id": media_id(i),
                    "modality": MODALITIES[i % len(MODALITIES)],
                    "start": float(i % SEGMENTS_PER_MEDIA) * 5.0,
                    "end": float(i % SEGMENTS_PER_MEDIA) * 5.0 + 5.0,
                    "page": i % SEGMENTS_PER_MEDIA,
                    "text": text[:TEXT_MAX],
                    "meta": {"lang": "de" if i % 10 == 0 else "en", "n": i % 100, "tags": ["a"]},
                    "vector": vec.tolist(),
                }
            )
        return rows

    def query_vectors(self, n: int) -> np.ndarray:
        return self.vectors(10**9, n)  # a stream disjoint from the data

    def query_texts(self, n: int, words: int = 3) -> list[str]:
        rng = np.random.default_rng((self.seed, 3))
        return [" ".join(rng.choice(self.vocab[:2000], size=words)) for _ in range(n)]


def seg_id(i: int) -> str:
    return f"seg-{i:09d}"


def media_id(i: int) -> str:
    return f"m{i // SEGMENTS_PER_MEDIA:07d}"


def id_index(pk: str) -> int:
    return int(pk[4:])


# ---------------------------------------------------------------------------- milvus helpers


def connect(db_path: str, attempts: int = 10) -> tuple[MilvusClient, int, list[str]]:
    """Open a Lite store; retries cover 2.5.1's startup race (engine gets 0.5 s to come up)."""
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            client = MilvusClient(db_path)
            client.list_collections()
            return client, attempt, errors
        except Exception as exc:
            errors.append(err_text(exc, 200))
            if attempt == attempts:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def release_store(db_path: str) -> None:
    """Stop the in-process server (3.x) or the engine child process (2.x) for db_path."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(db_path)


def drain_background(db_path: str) -> float | None:
    """Wait for milvus-lite 3.x's background compaction/index-build queue; None on 2.x.

    Uses an internal hook (the 3.x engine runs in this process); measurement only.
    """
    try:
        from milvus_lite.server_manager import server_manager_instance

        entry = server_manager_instance._servers.get(os.path.abspath(db_path))
        collection = entry[1].get_collection(COLLECTION)
        wait = collection._wait_for_bg
    except (AttributeError, ImportError, TypeError, KeyError, IndexError):
        return None
    t0 = time.perf_counter()
    wait(timeout=1800)
    return time.perf_counter() - t0


def schema_source() -> str:
    if mmrag_schema is not None:
        return f"mmrag.store.schema v{mmrag_schema.SCHEMA_VERSION}"
    return "private copy (mmrag not importable here)"


def build_schema(client: Any, dim: int, with_bm25: bool = True) -> Any:
    """mmrag's segment collection schema: a `text` space's (BM25 on) or, without BM25, a
    dense-only one's."""
    if mmrag_schema is not None:
        space = mmrag_schema.Space("text", "benchmark", dim, bm25=with_bm25)
        return mmrag_schema.collection_schema(client, space)
    return _private_schema(client, dim, with_bm25)


def schema_drift(dim: int) -> list[str]:
    """Where `_private_schema` differs from mmrag's schema (empty where mmrag is not here)."""
    if mmrag_schema is None:
        return []
    drift = [
        f"{name} {size} (mmrag: {getattr(mmrag_schema, name)})"
        for name, size in COPIED_SIZES.items()
        if getattr(mmrag_schema, name) != size
    ]
    for bm25 in (True, False):  # create_schema is a classmethod: no store needed
        ours = _private_schema(MilvusClient, dim, bm25).to_dict()
        if ours != build_schema(MilvusClient, dim, bm25).to_dict():
            drift.append(f"the fields {'with' if bm25 else 'without'} BM25")
    return drift


def _private_schema(client: Any, dim: int, with_bm25: bool) -> Any:
    """A copy of mmrag.store.schema.collection_schema for environments without mmrag (see the
    import at the top); `schema_drift` checks it field for field against the original."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    sizes = COPIED_SIZES
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=sizes["ID_MAX_LENGTH"])
    schema.add_field("media_id", DataType.VARCHAR, max_length=sizes["MEDIA_ID_MAX_LENGTH"])
    schema.add_field("modality", DataType.VARCHAR, max_length=sizes["MODALITY_MAX_LENGTH"])
    schema.add_field("start", DataType.DOUBLE)
    schema.add_field("end", DataType.DOUBLE)
    schema.add_field("page", DataType.INT64)
    text_kwargs: dict[str, Any] = {"max_length": sizes["TEXT_MAX_BYTES"]}
    if with_bm25:
        text_kwargs |= {"enable_analyzer": True, "analyzer_params": {"type": "standard"}}
    schema.add_field("text", DataType.VARCHAR, **text_kwargs)
    schema.add_field("meta", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    if with_bm25:
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
    return schema


def vector_index(client: MilvusClient, index_type: str, with_bm25: bool = True) -> Any:
    params = client.prepare_index_params()
    params.add_index(
        field_name="vector",
        index_name="vector_idx",
        index_type=index_type,
        metric_type="COSINE",
        params=INDEX_SPECS[index_type][0],
    )
    if with_bm25:
        params.add_index(
            field_name="sparse",
            index_name="sparse_idx",
            index_type="SPARSE_INVERTED_INDEX",
            metric_type="BM25",
        )
    return params


def create_collection(client: MilvusClient, dim: int, index_type: str) -> bool:
    """Create the segments collection; returns whether the BM25 function could be used."""
    try:
        client.create_collection(
            COLLECTION,
            schema=build_schema(client, dim),
            index_params=vector_index(client, index_type),
        )
        return True
    except Exception as exc:
        log(f"BM25 schema rejected ({err_text(exc, 200)}); falling back to dense-only schema")
        with contextlib.suppress(Exception):
            client.drop_collection(COLLECTION)
        client.create_collection(
            COLLECTION,
            schema=build_schema(client, dim, with_bm25=False),
            index_params=vector_index(client, index_type, with_bm25=False),
        )
        return False


def count_rows(client: MilvusClient, expr: str = "") -> int:
    res = client.query(COLLECTION, filter=expr, output_fields=["count(*)"])
    return int(res[0]["count(*)"])


def dense_search(
    client: MilvusClient,
    vec: np.ndarray,
    params: dict[str, Any],
    expr: str = "",
    limit: int = TOP_K,
) -> list[dict[str, Any]]:
    res = client.search(
        COLLECTION,
        data=[vec.tolist()],
        anns_field="vector",
        filter=expr,
        limit=limit,
        output_fields=OUTPUT_FIELDS,
        search_params={"metric_type": "COSINE", "params": params},
    )
    return list(res[0])


def hybrid_requests(vector: np.ndarray, text: str, limit: int) -> list[AnnSearchRequest]:
    """A dense and a BM25 request for one query, for hybrid_search."""
    return [
        AnnSearchRequest(
            data=[vector.tolist()],
            anns_field="vector",
            param={"metric_type": "COSINE"},
            limit=limit,
        ),
        AnnSearchRequest(
            data=[text], anns_field="sparse", param={"metric_type": "BM25"}, limit=limit
        ),
    ]


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "mean_ms": round(float(arr.mean()), 2),
        "n": len(arr),
    }


def timed(fn: Callable[[int], Any], n: int, warmup: int = 3) -> tuple[list[float], list[Any]]:
    """Call fn(i) for i in range(n), sequentially, after a few warm-up calls."""
    for i in range(warmup):
        fn(i)
    times: list[float] = []
    results: list[Any] = []
    for i in range(n):
        t0 = time.perf_counter()
        results.append(fn(i))
        times.append(time.perf_counter() - t0)
    return times, results


def exact_top_k(data: np.ndarray, queries: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    scores = queries @ data.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    top = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]
    return top


def recall_at_k(hits: Sequence[list[dict[str, Any]]], truth: np.ndarray) -> float:
    found = 0
    for row_hits, row_truth in zip(hits, truth, strict=True):
        got = {id_index(h["id"]) for h in row_hits}
        found += len(got & set(row_truth.tolist()))
    return round(found / (len(hits) * TOP_K), 4)


def measure_dense(
    client: MilvusClient,
    queries: np.ndarray,
    params: dict[str, Any],
    truth: np.ndarray,
    truth_filtered: np.ndarray,
) -> dict[str, Any]:
    """Latency over all queries and recall@10 over the first len(truth), unfiltered and filtered."""
    n_recall = len(truth)
    times, hits = timed(lambda i: dense_search(client, queries[i], params), len(queries))
    out: dict[str, Any] = {
        **percentiles(times),
        f"recall@{TOP_K}": recall_at_k(hits[:n_recall], truth),
    }
    times, hits = timed(
        lambda i: dense_search(client, queries[i], params, FILTER_EXPR), len(queries)
    )
    out["filtered"] = {
        "filter": FILTER_EXPR,
        **percentiles(times),
        f"recall@{TOP_K}": recall_at_k(hits[:n_recall], truth_filtered),
    }
    return out


def wait_index_finished(client: MilvusClient, timeout: float = 900.0) -> dict[str, Any]:
    """Poll describe_index until the server says the vector index is finished."""
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        info = dict(client.describe_index(COLLECTION, index_name="vector_idx"))
        state = str(info.get("state", "Finished"))
        if "Finished" in state and not info.get("pending_index_rows"):
            break
        time.sleep(0.5)
    keep = ("index_type", "state", "indexed_rows", "total_rows", "pending_index_rows")
    return {k: info[k] for k in keep if k in info}


# ---------------------------------------------------------------------------- performance


def bench_performance(
    args: argparse.Namespace, workdir: str, sampler: RssSampler
) -> dict[str, Any]:
    corpus = Corpus(args.dim, args.seed, args.data)
    db_path = os.path.join(workdir, "perf.db")
    out: dict[str, Any] = {"rows": args.rows, "dim": args.dim}

    t0 = time.perf_counter()
    client, attempts, errors = connect(db_path)
    out["connect"] = {"seconds": round(time.perf_counter() - t0, 3), "attempts": attempts}
    if errors:
        out["connect"]["errors"] = errors
    index_types: list[str] = args.index_types
    bm25 = create_collection(client, args.dim, index_types[0])
    out["bm25_schema"] = bm25
    out["index_during_insert"] = index_types[0]

    # -- insert
    data = np.empty((args.rows, args.dim), dtype=np.float32)
    insert_s = 0.0
    wall0 = time.perf_counter()
    for start in range(0, args.rows, BATCH):
        n = min(BATCH, args.rows - start)
        vecs = corpus.vectors(start, n)
        data[start : start + n] = vecs
        rows = corpus.rows(start, vecs, corpus.texts(start, n))
        t0 = time.perf_counter()
        client.insert(COLLECTION, rows)
        insert_s += time.perf_counter() - t0
        if (start // BATCH) % 20 == 0:
            log(f"inserted {start + n}/{args.rows} ({(start + n) / insert_s:.0f} rows/s)")
    out["insert"] = {
        "seconds_in_insert_calls": round(insert_s, 2),
        "vectors_per_s": round(args.rows / insert_s, 1),
        "wall_seconds_incl_data_generation": round(time.perf_counter() - wall0, 2),
        "rss_after_insert": sampler.snapshot(),
    }

    # -- visibility: count(*) == rows and the last inserted vector is its own top hit
    t0 = time.perf_counter()
    last = args.rows - 1
    polls = 0
    visible = False
    while time.perf_counter() - t0 < 300:
        polls += 1
        try:
            seen = count_rows(client)
            top = dense_search(client, data[last], {}, limit=1)
            visible = seen == args.rows and bool(top) and top[0]["id"] == seg_id(last)
        except Exception as exc:
            log(f"visibility poll: {err_text(exc, 150)}")
        if visible:
            break
        time.sleep(0.05)
    out["visibility"] = {
        "seconds_until_search_sees_all_rows": round(time.perf_counter() - t0, 3),
        "polls": polls,
        "visible": visible,
    }

    t0 = time.perf_counter()
    client.flush(COLLECTION)
    out["flush_seconds"] = round(time.perf_counter() - t0, 2)
    drained = drain_background(db_path)
    out["background_after_flush_seconds"] = None if drained is None else round(drained, 2)
    log(f"flush {out['flush_seconds']} s, background drain {drained}")

    # -- ground truth (exact cosine on unit vectors = dot product)
    queries = corpus.query_vectors(args.queries)
    recall_q = queries[: args.recall_queries]
    truth = exact_top_k(data, recall_q, None)
    text_mask = np.arange(args.rows) % len(MODALITIES) == 0
    truth_filtered = exact_top_k(data, recall_q, text_mask)

    # -- per index type
    results: dict[str, Any] = {}
    current = index_types[0]
    for index_type in index_types:
        entry: dict[str, Any] = {}
        results[index_type] = entry
        try:
            if index_type != current:
                client.release_collection(COLLECTION)
                client.drop_index(COLLECTION, index_name="vector_idx")
                params = client.prepare_index_params()
                params.add_index(
                    field_name="vector",
                    index_name="vector_idx",
                    index_type=index_type,
                    metric_type="COSINE",
                    params=INDEX_SPECS[index_type][0],
                )
                t0 = time.perf_counter()
                client.create_index(COLLECTION, params)
                entry["create_index_seconds"] = round(time.perf_counter() - t0, 2)
                t0 = time.perf_counter()
                client.load_collection(COLLECTION, timeout=1800)
                entry["load_seconds"] = round(time.perf_counter() - t0, 2)
                current = index_type
            t0 = time.perf_counter()
            entry["describe_index"] = wait_index_finished(client)
            drained = drain_background(db_path)
            entry["wait_index_seconds"] = round(time.perf_counter() - t0, 2)
            entry["build_seconds_total"] = round(
                entry.get("create_index_seconds", 0.0)
                + entry.get("load_seconds", 0.0)
                + entry["wait_index_seconds"],
                2,
            )
            log(f"{index_type}: built/loaded in {entry['build_seconds_total']} s")
            for sp in INDEX_SPECS[index_type][1]:
                key = "params=" + json.dumps(sp, sort_keys=True)
                try:
                    entry[key] = measure_dense(client, queries, sp, truth, truth_filtered)
                except Exception as exc:
                    entry[key] = {"error": err_text(exc)}
                log(f"{index_type} {key}: {entry[key]}")
            entry["rss"] = sampler.snapshot()
        except Exception as exc:
            entry["error"] = err_text(exc)
            log(f"{index_type}: FAILED {entry['error']}")
            with contextlib.suppress(Exception):
                client.load_collection(COLLECTION, timeout=1800)

    out["index_types"] = results

    # -- BM25 text search and hybrid search at this scale
    if bm25:
        texts = corpus.query_texts(len(queries))

        def bm25_one(i: int) -> list[dict[str, Any]]:
            res = client.search(
                COLLECTION,
                data=[texts[i]],
                anns_field="sparse",
                limit=TOP_K,
                output_fields=OUTPUT_FIELDS,
                search_params={"metric_type": "BM25"},
            )
            return list(res[0])

        try:
            times, _ = timed(bm25_one, len(queries))
            out["bm25_search"] = percentiles(times)
        except Exception as exc:
            out["bm25_search"] = {"error": err_text(exc)}

        def hybrid_one(i: int) -> list[Any]:
            reqs = hybrid_requests(queries[i], texts[i], 50)
            res = client.hybrid_search(
                COLLECTION, reqs, RRFRanker(60), limit=TOP_K, output_fields=OUTPUT_FIELDS
            )
            return list(res[0])

        try:
            times, _ = timed(hybrid_one, len(queries))
            out["hybrid_search"] = {"index": current, **percentiles(times)}
        except Exception as exc:
            out["hybrid_search"] = {"error": err_text(exc)}
        log(f"bm25 {out['bm25_search']} hybrid {out['hybrid_search']}")

    out["rss_end"] = sampler.snapshot()
    out["rss_peak"] = {
        "self_mib": mib(sampler.peak_self),
        "children_mib": mib(sampler.peak_children),
    }
    out["disk_mib"] = mib(disk_usage(workdir))
    client.close()
    release_store(db_path)
    return out


def disk_usage(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


# ---------------------------------------------------------------------------- feature checklist


def run_child(mode: str, db_path: str, timeout: float = 180.0) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--db", db_path]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    result["child_exit_code"] = proc.returncode
    result["child_wall_seconds"] = round(time.perf_counter() - t0, 2)
    if not lines:
        result["stderr_tail"] = proc.stderr[-600:]
    return result


def child_main(mode: str, db_path: str) -> None:
    """Entry point of the helper subprocesses used by the feature checklist."""
    out: dict[str, Any] = {"mode": mode}
    t0 = time.perf_counter()
    try:
        client, attempts, errors = connect(db_path, attempts=3 if mode == "open" else 10)
        out |= {"open": "ok", "attempts": attempts, "errors": errors}
    except Exception as exc:
        out |= {"open": "failed", "error": err_text(exc)}
        out["seconds"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(out), flush=True)
        return
    out["open_seconds"] = round(time.perf_counter() - t0, 2)
    env = os.environ
    corpus = Corpus(
        int(env.get("BENCH_DIM", "384")),
        int(env.get("BENCH_SEED", "7")),
        env.get("BENCH_DATA", "uniform"),
    )
    probe = corpus.vectors(0, 6)[5]  # row 5 of the feature collection
    try:
        out["load_state_before"] = str(client.get_load_state(COLLECTION).get("state"))
    except Exception as exc:
        out["load_state_before"] = err_text(exc)
    try:
        hits = dense_search(client, probe, {}, limit=1)
        out["search_without_load"] = f"ok, top1={hits[0]['id'] if hits else None}"
    except Exception as exc:
        out["search_without_load"] = err_text(exc)
    try:
        client.load_collection(COLLECTION)
        hits = dense_search(client, probe, {}, limit=1)
        out["search_after_load"] = f"ok, top1={hits[0]['id'] if hits else None}"
        out["rows"] = count_rows(client)
    except Exception as exc:
        out["search_after_load"] = err_text(exc)
    if mode == "open":  # the store is held by another process: does a write get through?
        try:
            row = corpus.rows(0, corpus.vectors(0, 1), ["written by the second process"])[0]
            row["id"] = CHILD_ROW_ID
            client.insert(COLLECTION, [row])
            client.flush(COLLECTION)
            out["insert"] = f"ok, rows now {count_rows(client)}"
        except Exception as exc:
            out["insert"] = err_text(exc)
    client.close()
    release_store(db_path)
    print(json.dumps(out), flush=True)


def bench_features(args: argparse.Namespace, workdir: str) -> list[dict[str, Any]]:
    corpus = Corpus(args.dim, args.seed, args.data)
    db_path = os.path.join(workdir, "feat.db")
    n = 2000
    checks: list[dict[str, Any]] = []

    def check(name: str, fn: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = fn()
        except Exception as exc:
            ok, detail = False, err_text(exc)
        checks.append({"feature": name, "result": "PASS" if ok else "FAIL", "detail": detail})
        log(f"feature {name}: {'PASS' if ok else 'FAIL'} {detail}")

    client, _, _ = connect(db_path)
    vecs = corpus.vectors(0, n)
    texts = corpus.texts(0, n)
    state: dict[str, Any] = {}

    def setup_varchar_pk() -> tuple[bool, str]:
        client.create_collection(
            COLLECTION,
            schema=build_schema(client, args.dim),
            index_params=vector_index(client, "FLAT"),
        )
        for start in range(0, n, BATCH):
            client.insert(
                COLLECTION,
                corpus.rows(start, vecs[start : start + BATCH], texts[start : start + BATCH]),
            )
        client.flush(COLLECTION)
        got = client.get(COLLECTION, ids=[seg_id(5)], output_fields=["id", "media_id"])
        ok = len(got) == 1 and got[0]["id"] == seg_id(5) and count_rows(client) == n
        state["ready"] = True
        return ok, f"get(ids=[{seg_id(5)!r}]) -> {list(got)}; count={count_rows(client)}"

    check("VARCHAR primary key (+ BM25 schema, insert, get)", setup_varchar_pk)
    if not state.get("ready"):
        # The BM25 schema may be what failed: retry the remaining checks without it.
        with contextlib.suppress(Exception):
            client.drop_collection(COLLECTION)
        client.create_collection(
            COLLECTION,
            schema=build_schema(client, args.dim, with_bm25=False),
            index_params=vector_index(client, "FLAT", with_bm25=False),
        )
        for start in range(0, n, BATCH):
            client.insert(
                COLLECTION,
                corpus.rows(start, vecs[start : start + BATCH], texts[start : start + BATCH]),
            )

    def json_filter() -> tuple[bool, str]:
        expected = sum(1 for i in range(n) if i % 10 == 0)
        got = count_rows(client, 'meta["lang"] == "de"')
        hits = dense_search(client, vecs[10], {}, 'meta["lang"] == "de" and meta["n"] < 50')
        bad = [h["id"] for h in hits if id_index(h["id"]) % 10 or id_index(h["id"]) % 100 >= 50]
        ok = got == expected and not bad and bool(hits) and hits[0]["id"] == seg_id(10)
        return (
            ok,
            f'count(meta["lang"]=="de")={got} (expected {expected}); search hits outside={bad}',
        )

    check("JSON field filter", json_filter)

    def in_filter() -> tuple[bool, str]:
        wanted = [media_id(20), media_id(40), media_id(60)]
        expr = f"media_id in {json.dumps(wanted)}"
        hits = dense_search(client, vecs[41], {}, expr)
        bad = [h["id"] for h in hits if h["entity"]["media_id"] not in wanted]
        got = count_rows(client, expr)
        ok = not bad and len(hits) == TOP_K and got == 3 * SEGMENTS_PER_MEDIA
        return ok, f"{expr}: count={got}, hits={len(hits)}, top1={hits[0]['id']}, outside={bad}"

    check("media_id in [...] filter", in_filter)

    def upsert() -> tuple[bool, str]:
        before = count_rows(client)
        row = corpus.rows(7, vecs[7:8], ["zzupserted marker text"])[0]
        row["meta"] = {"lang": "xx", "n": 7, "tags": []}
        client.upsert(COLLECTION, [row])
        got = client.get(COLLECTION, ids=[seg_id(7)], output_fields=["text", "meta"])
        after = count_rows(client)
        ok = after == before and got[0]["text"] == row["text"] and got[0]["meta"]["lang"] == "xx"
        return ok, f"count {before}->{after}; row now {dict(got[0])}"

    check("upsert", upsert)

    def delete_filter() -> tuple[bool, str]:
        before = count_rows(client)
        res = client.delete(COLLECTION, filter=f'media_id == "{media_id(60)}"')
        left = count_rows(client, f'media_id == "{media_id(60)}"')
        after = count_rows(client)
        ok = left == 0 and after == before - SEGMENTS_PER_MEDIA
        return ok, f"delete returned {res}; rows left for media={left}; count {before}->{after}"

    check("delete by filter expression", delete_filter)

    # a query made of the rarest words of one document: BM25 should rank it first
    target = 123
    rank = {w: r for r, w in enumerate(corpus.vocab)}
    words = sorted(set(texts[target].split()), key=lambda w: -rank[w])[:3]
    query_text = " ".join(words)

    def bm25_search() -> tuple[bool, str]:
        res = client.search(
            COLLECTION,
            data=[query_text],
            anns_field="sparse",
            limit=5,
            output_fields=["media_id"],
            search_params={"metric_type": "BM25"},
        )
        hits = list(res[0])
        scores = [round(float(h["distance"]), 3) for h in hits]
        sign = "negative" if scores and max(scores) < 0 else "positive"
        ok = bool(hits) and hits[0]["id"] == seg_id(target)
        top1 = hits[0]["id"] if hits else None
        return (
            ok,
            f"query {query_text!r}: top1={top1} (want {seg_id(target)}), scores={scores} ({sign})",
        )

    check("BM25 Function (standard analyzer) text search", bm25_search)

    def hybrid() -> tuple[bool, str]:
        reqs = hybrid_requests(vecs[target], query_text, 20)
        res = client.hybrid_search(
            COLLECTION, reqs, RRFRanker(60), limit=TOP_K, output_fields=["media_id"]
        )
        hits = list(res[0])
        scores = [round(float(h["distance"]), 4) for h in hits[:3]]
        ok = bool(hits) and hits[0]["id"] == seg_id(target)
        return ok, f"top1={hits[0]['id']} (want {seg_id(target)}), top3 RRF scores={scores}"

    check("hybrid_search dense + BM25 with RRFRanker(60)", hybrid)

    def reopen_in_process() -> tuple[bool, str]:
        nonlocal client
        client.close()
        release_store(db_path)
        client, _, _ = connect(db_path)
        try:
            hits = dense_search(client, vecs[5], {}, limit=1)
            before = f"search without load_collection: ok top1={hits[0]['id']}"
        except Exception as exc:
            before = f"search without load_collection: {err_text(exc, 200)}"
        client.load_collection(COLLECTION)
        hits = dense_search(client, vecs[5], {}, limit=1)
        ok = hits[0]["id"] == seg_id(5)
        return ok, f"{before}; after load_collection: top1={hits[0]['id']}"

    check("close + reopen in the same process, then search", reopen_in_process)

    def reopen_fresh_process() -> tuple[bool, str]:
        client.close()
        release_store(db_path)
        child = run_child("reopen", db_path)
        ok = str(child.get("search_after_load", "")).startswith(f"ok, top1={seg_id(5)}")
        return ok, json.dumps(child)

    check("reopen from a fresh process (app restart), then search", reopen_fresh_process)

    def two_processes() -> tuple[bool, str]:
        nonlocal client
        client, _, _ = connect(db_path)
        client.load_collection(COLLECTION)
        before = count_rows(client)
        child = run_child("open", db_path)
        try:
            after = count_rows(client)
            seen = len(client.get(COLLECTION, ids=[CHILD_ROW_ID], output_fields=["id"]))
            first = f"first process afterwards: count {before}->{after}, sees child's row: {seen}"
        except Exception as exc:
            first = f"first process afterwards: {err_text(exc, 200)}"
        try:  # after both have closed: whose writes survived?
            client.close()
            release_store(db_path)
            client, _, _ = connect(db_path)
            client.load_collection(COLLECTION)
            kept = len(client.get(COLLECTION, ids=[CHILD_ROW_ID], output_fields=["id"]))
            first += f"; after reopen: count={count_rows(client)}, child's row kept: {kept}"
        except Exception as exc:
            first += f"; after reopen: {err_text(exc, 200)}"
        ok = child.get("open") == "failed"
        verdict = "refused (safe)" if ok else "second process got in"
        return ok, f"{verdict}; {first}; child: {json.dumps(child)}"

    check(
        "two processes on one .db: the second is refused while the first holds it",
        two_processes,
    )
    return checks


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100, help="queries per latency measure")
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument(
        "--index-types",
        nargs="+",
        choices=sorted(INDEX_SPECS),
        help="first one is the index present during insert (default: per engine version)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--data",
        choices=["uniform", "lowrank"],
        default="uniform",
        help="vector distribution (see Corpus.vectors)",
    )
    parser.add_argument("--out", default="milvus_lite_results.json")
    parser.add_argument("--workdir", help="parent for the temporary db directory (default /tmp)")
    parser.add_argument("--no-features", action="store_true", help="skip the feature checklist")
    parser.add_argument("--keep", action="store_true", help="keep the db files")
    parser.add_argument("--child", choices=["open", "reopen"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # expected RPC errors are reported
    os.environ.setdefault("HOME", tempfile.gettempdir())  # milvus-lite 2.5.1 needs $HOME
    if args.child:
        child_main(args.child, args.db)
        return
    os.environ |= {
        "BENCH_DIM": str(args.dim),
        "BENCH_SEED": str(args.seed),
        "BENCH_DATA": args.data,
    }
    lite = package_version("milvus-lite") or "?"
    if not args.index_types:
        major = lite.split(".")[0]
        args.index_types = (
            ["FLAT", "HNSW", "AUTOINDEX"]
            if major.isdigit() and int(major) >= 3
            else ["FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"]
        )
    args.queries = max(args.queries, args.recall_queries)
    workdir = tempfile.mkdtemp(prefix="bench_", dir=args.workdir or "/tmp")
    log(
        f"milvus-lite {lite}; workdir {workdir}; index types {args.index_types}; "
        f"schema: {schema_source()}"
    )
    if drift := schema_drift(args.dim):
        log(f"WARNING: _private_schema differs from mmrag's in {drift}: update the copy")
    sampler = RssSampler()
    sampler.start()
    result: dict[str, Any] = {
        "milvus_lite": lite,
        "versions": versions(),
        "machine": machine_info(),
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "db")},
    }
    t_start = time.perf_counter()
    try:
        result["performance"] = bench_performance(args, workdir, sampler)
        if not args.no_features:
            result["features"] = bench_features(args, workdir)
    finally:
        sampler.stop()
        result["total_seconds"] = round(time.perf_counter() - t_start, 1)
        result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        text = json.dumps(result, indent=2, default=str)
        print(text)
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
