"""Search latency at scale on the embedded store (issue 17): `Searcher.find` against numpy.

    python benchmarks/search_latency.py --sizes 10000,100000 [--queries 100] [--json FILE]
        [--keep DIR] [--no-milvus]

`--keep DIR` builds each size's store under DIR and keeps it, or reuses the one a run left
there (the rows are drawn again from the same seed, not written: 1M takes 30 min to fill).

For each size, a fresh Milvus Lite store (through mmrag.app, as the CLI opens it) holds:

- the `text` space's collection (384-d, HNSW, BM25 beside it): `size` synthetic segments, 20
  per file. Each segment's text is two real sentences drawn from data/library/docs (about 840
  distinct ones), and its vector is the unit mean of those two sentences' REAL all-MiniLM-L6-v2
  vectors (the torch model, as ingest embeds) plus a little Gaussian noise (sigma 0.01 a
  dimension), so the dense neighbourhoods look like real text rather than isotropic noise;
- a photo collection (`mmrag_image_synthetic`, 512-d, HNSW): `size` photos, one row per file,
  vectors drawn from a low-rank model (64 latent dimensions, plus noise: real image embeddings
  are far from isotropic, and isotropic vectors understate HNSW recall, see
  docs/milvus_lite_versions.md); image queries are new draws from the same model, encoded by a
  stand-in encoder that returns them (no image model is timed);
- a catalog with a media row and a path row for every file, so every hit maps back to a file
  through the real catalog look-ups.

After the indexes, the store's search snapshots are built (`MilvusStore.refresh_snapshots`, as
every ingest ends: store/lite_index.py), so the modes time the path the CLI takes on a Lite
store: exact dense and BM25 in numpy over the snapshot, Milvus only where it is stale.

Queries: 3-6 consecutive words cut from a library sentence. Each is timed through the whole
`Searcher.find` (text: query encoding by the ONNX query encoder, pipelines/text/onnx_query.py,
as the CLI uses; the snapshot (or Milvus); fusion; catalog look-ups and hit mapping), after a
warm-up. Modes:

- `hybrid`: mmrag's default text search (dense + BM25, the settings' fusion: minmax);
- `dense`: the text space's vectors alone;
- `image`: an image query on the photo collection (grouped by file, as mmrag searches photos);
- `numpy`: the exact baseline in the same run: the same ONNX query encoding, then a brute-force
  matrix product over the same text vectors held in memory, and its top 10.

recall@10, against exact search over the same vectors in numpy:

- `dense`, `image`: the ids found against the exact top 10 by cosine;
- `hybrid`: against exact hybrid: the EXACT dense top-k fused with an exact BM25 top-k (Milvus
  Lite's formula and tokens over the whole collection, scored here with plain dicts,
  `ExactBM25`) by the settings' fusion: minmax (each leg's top 100 scaled to [0, 1] by its
  best and its 100th score, then w * dense + (1 - w) * bm25) or the formula Milvus's weighted
  ranker applies (w * (1 + cos) / 2 + (1 - w) * 2 / pi * atan(bm25), each leg's top k =
  max(3 * limit, 50) candidates);
- `numpy`: 1.0 by construction.

`milvus_overlap_at_10`: how many of Milvus Lite's own top 10 (the same query with the snapshots
set aside) the timed path also returns. Milvus Lite's HNSW is approximate and its BM25 keeps
statistics per segment, so this is below 1 at scale even where recall against exact is 1.
With --compare, each mode is also timed as before issue 17 (no snapshots, ef 64, no cache).

Peak memory: the benchmark process (ru_maxrss) and the Milvus Lite server (VmHWM), per size.
With --breakdown, each text mode's time is split by where it goes (query encoding, each Milvus
call, catalog look-ups, the rest) by timing wrappers around those calls.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import machine, wait_for_indexes  # a sibling script

REPO = Path(__file__).resolve().parent.parent
PER_MEDIA = 20  # text segments per synthetic file (a long document's chunks)
PHOTO_DIM, PHOTO_RANK = 512, 64
NOISE = 0.01
LIMIT = 10
MODES = ("hybrid", "dense", "image", "numpy")


def sentences() -> list[str]:
    """The distinct sentences of the sample library's text documents."""
    found: set[str] = set()
    for path in sorted((REPO / "data" / "library" / "docs").rglob("*")):
        if path.suffix in {".md", ".txt"}:
            flat = " ".join(path.read_text(encoding="utf-8", errors="ignore").split())
            flat = re.sub(r"[#*_`>|]", " ", flat)
            for s in re.findall(r"[A-Z][^.!?]{20,200}[.!?]", flat):
                found.add(" ".join(s.split()))
    return sorted(found)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def text_queries(base: list[str], n: int, seed: int) -> list[str]:
    pick = random.Random(seed)
    out = []
    while len(out) < n:
        words = pick.choice(base).rstrip(".!?").split()
        k = pick.randint(3, 6)
        if len(words) >= k:
            i = pick.randint(0, len(words) - k)
            out.append(" ".join(words[i : i + k]))
    return out


class PhotoModel:
    """Low-rank unit vectors: a fixed random basis, Gaussian latents, a little noise."""

    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.basis = rng.standard_normal((PHOTO_RANK, PHOTO_DIM)).astype(np.float32)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n, PHOTO_RANK)).astype(np.float32)
        noise = 0.3 * rng.standard_normal((n, PHOTO_DIM)).astype(np.float32)
        return unit(z @ self.basis / math.sqrt(PHOTO_RANK) + noise)


class PhotoQueries:
    """A stand-in photo encoder: returns the vector set for the next query (`encode_query`)."""

    name = "image"
    device = "cpu"
    vector: np.ndarray | None = None

    def encode_query(self, kind: Any, inputs: list[Any]) -> np.ndarray:
        assert self.vector is not None
        return self.vector[None]


def fill(
    catalog,
    store,
    text_coll: str,
    photo_coll: str,
    size: int,
    base,
    base_vectors,
    photos,
    write: bool = True,
):
    """`size` text segments and `size` photos, with their catalog rows; returns the text ids,
    text vectors, photo ids and photo vectors (the exact baseline's copy). Drawn from a seeded
    generator: with `write` False, the same rows again without writing them (a kept store)."""
    from mmrag.store.catalog import MediaFacts
    from mmrag.store.schema import Segment

    rng = np.random.default_rng(size)
    text_ids: list[str] = []
    texts: list[str] = []
    text_vecs = np.empty((size, base_vectors.shape[1]), dtype=np.float32)
    photo_ids: list[str] = []
    photo_vecs = np.empty((size, PHOTO_DIM), dtype=np.float32)
    for first in range(0, size, 5000):
        n = min(5000, size - first)
        a = rng.integers(0, len(base), n)
        b = rng.integers(0, len(base), n)
        noise = NOISE * rng.standard_normal((n, base_vectors.shape[1])).astype(np.float32)
        vecs = unit(base_vectors[a] + base_vectors[b] + noise)
        text_vecs[first : first + n] = vecs
        segments, media = [], {}
        for i in range(n):
            k = first + i
            media_id = f"{k // PER_MEDIA:032x}"
            text = f"{base[a[i]]} {base[b[i]]}"
            seg_id = f"{media_id}:text:{k % PER_MEDIA}"
            segments.append(Segment(seg_id, media_id, "document", 0, len(text), text, vecs[i]))
            media.setdefault(media_id, []).append(seg_id)
            text_ids.append(seg_id)
            texts.append(text)
        pvecs = photos.draw(n, rng)
        photo_vecs[first : first + n] = pvecs
        shots, pmedia = [], {}
        for i in range(n):
            media_id = f"f{first + i:031x}"
            seg_id = f"{media_id}:image:0"
            shots.append(Segment(seg_id, media_id, "image", 0, 0, "", pvecs[i]))
            pmedia[media_id] = [seg_id]
            photo_ids.append(seg_id)
        if not write:
            continue
        catalog.begin_media_many(
            [(m, "text", "txt", 1000, MediaFacts(), None) for m in media]
            + [(m, "image", "jpeg", 1000, MediaFacts(), None) for m in pmedia]
        )
        store.upsert(text_coll, segments, batch=1000)
        store.upsert(photo_coll, shots, batch=1000)
        for m in media:
            path = f"/synthetic/docs/doc-{m[-8:]}.txt"
            catalog.link_path(path, path, "/synthetic/docs", m, 1000, 0)
        for m in pmedia:
            path = f"/synthetic/photos/img-{m[-8:]}.jpg"
            catalog.link_path(path, path, "/synthetic/photos", m, 1000, 0)
        catalog.finish_media_many({text_coll: media, photo_coll: pmedia})
    if write:
        store.flush(text_coll)
        store.flush(photo_coll)
    return text_ids, texts, text_vecs, photo_ids, photo_vecs


def fts5_leg(store, coll: str, texts: list[str], ids: list[str], qs: list[str]) -> dict:
    """The BM25 leg alone, Milvus Lite against SQLite FTS5 over the same texts (what moving
    BM25 out of Lite would buy): p50 of each for the top 50, FTS5's build time, and how many of
    Lite's top 10 FTS5 also ranks in its top 10 (tokenizers and statistics differ: Lite keeps
    BM25 statistics per segment)."""
    db = sqlite3.connect(":memory:")
    t0 = time.perf_counter()
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    db.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", enumerate(texts))
    db.commit()
    build_s = time.perf_counter() - t0
    lite, fts, overlap, snap = [], [], [], []
    for q in qs:
        terms = " OR ".join('"' + w + '"' for w in re.findall(r"\w+", q.lower()))
        t = time.perf_counter()
        rows = db.execute(
            "SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT 50", (terms,)
        ).fetchall()
        fts.append(time.perf_counter() - t)
        t = time.perf_counter()
        with milvus_only(store):
            found = store.search_bm25(coll, [q], 50)[0]
        lite.append(time.perf_counter() - t)
        overlap.append(recall([ids[r] for (r,) in rows], [r["id"] for r in found]))
        t = time.perf_counter()
        store.search_bm25(coll, [q], 50)
        snap.append(time.perf_counter() - t)
    db.close()
    return {
        "milvus_lite_bm25_p50_ms": percentiles(lite)[0],
        "snapshot_bm25_p50_ms": percentiles(snap)[0],
        "fts5_bm25_p50_ms": percentiles(fts)[0],
        "fts5_build_s": round(build_s, 1),
        "top10_overlap": round(statistics.mean(overlap), 3),
    }


def exact_top(matrix: np.ndarray, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosines of the exact top k (unit rows)."""
    scores = matrix @ vector
    top = np.argpartition(-scores, k)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top]


def exact_hybrid(
    bm25: ExactBM25, query: str, qvec: np.ndarray, matrix, ids, weight: float, fusion: str
) -> list[str]:
    """The hybrid formula mmrag is set to, over exact dense and exact BM25 candidates:
    Milvus's weighted ranker, each leg max(3 limit, 50) deep; or minmax, each leg 100 deep
    (MINMAX_DEPTH) and scaled to [0, 1] by its best and its 100th score."""
    depth = 100 if fusion == "minmax" else max(3 * LIMIT, 50)
    top, cos = exact_top(matrix, qvec, depth)
    dense = [(ids[i], float(c)) for i, c in zip(top, cos, strict=True)]
    lexical = bm25.top(query, depth)
    fused: dict[str, float] = defaultdict(float)
    if fusion == "minmax":
        for leg, w in ((dense, weight), (lexical, 1 - weight)):
            if leg:
                high, low = max(s for _, s in leg), min(s for _, s in leg)
                for seg_id, score in leg:
                    fused[seg_id] += w * ((score - low) / (high - low) if high > low else 1.0)
    else:
        for seg_id, c in dense:
            fused[seg_id] += weight * (1.0 + c) / 2
        for seg_id, score in lexical:
            fused[seg_id] += (1 - weight) * 2 / math.pi * math.atan(score)
    return [k for k, _ in sorted(fused.items(), key=lambda kv: -kv[1])[:LIMIT]]


def recall(found: list[str], truth: list[str]) -> float:
    return len(set(found[:LIMIT]) & set(truth[:LIMIT])) / max(1, min(LIMIT, len(truth)))


class Clock:
    """Adds up the seconds spent in wrapped calls, by label, for one query at a time."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kw)
            finally:
                self.spent[label] += time.perf_counter() - t0

        setattr(owner, attr, timed)


@contextmanager
def as_before(store: Any, before: bool) -> Iterator[None]:
    """The store as the code before issue 17's changes searched it: Milvus for every search
    (no snapshots), every search listing the collections (no `present` cache), HNSW with ef
    64."""
    from mmrag.store import milvus

    if not before:
        yield
        return
    store._present.clear()
    ef, milvus.SEARCH_EF = milvus.SEARCH_EF, 64
    try:
        with milvus_only(store):
            yield
    finally:
        milvus.SEARCH_EF = ef


@contextmanager
def milvus_only(store: Any) -> Iterator[None]:
    """Searches answered by Milvus Lite itself, the snapshots set aside."""
    snaps, store.snapshots = store.snapshots, None
    try:
        yield
    finally:
        store.snapshots = snaps


class ExactBM25:
    """BM25 as Milvus Lite scores it (`\\w+` lowercase tokens, k1 1.5, b 0.75, IDF log(1 + (N -
    df + 0.5) / (df + 0.5)), the query's term counts as weights) over the whole collection:
    the truth the snapshot's arrays are checked against, written apart from them (postings in
    flat arrays by term, a few hundred MB at 1M rows). Rows of equal score (texts made of the
    same sentences are common here) are ranked as `order` ranks them (the snapshot's row
    order: any order of tied rows is exact, and a tie at a leg's depth decides which row the
    fusion sees)."""

    def __init__(self, texts: list[str], ids: list[str], order: dict[str, int]) -> None:
        self.ids = ids
        self.rank = np.array([order[i] for i in ids], dtype=np.int64)
        vocab: dict[str, int] = {}
        terms, docs, tfs = array("i"), array("i"), array("i")
        lengths = np.empty(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            lengths[i] = len(words)
            for w, tf in Counter(words).items():
                terms.append(vocab.setdefault(w, len(vocab)))
                docs.append(i)
                tfs.append(tf)
        by_term = np.argsort(np.frombuffer(terms, dtype=np.int32), kind="stable")
        self.docs = np.frombuffer(docs, dtype=np.int32)[by_term]
        self.tfs = np.frombuffer(tfs, dtype=np.int32)[by_term].astype(np.float64)
        counts = np.bincount(np.frombuffer(terms, dtype=np.int32), minlength=len(vocab))
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.vocab = vocab
        avgdl = float(lengths.mean()) if len(lengths) else 1.0
        self.norm_len = 1.5 * (1 - 0.75 + 0.75 * lengths / (avgdl or 1.0))

    def top(self, query: str, k: int) -> list[tuple[str, float]]:
        n = len(self.ids)
        scores = np.zeros(n, dtype=np.float64)
        words = re.findall(r"\w+", query.lower())
        for term in set(words):
            t = self.vocab.get(term)
            lo, hi = (self.starts[t], self.starts[t + 1]) if t is not None else (0, 0)
            idf = math.log((n - (hi - lo) + 0.5) / ((hi - lo) + 0.5) + 1.0)
            docs, tf = self.docs[lo:hi], self.tfs[lo:hi]
            scores[docs] += idf * words.count(term) * tf * 2.5 / (tf + self.norm_len[docs])
        hit = np.flatnonzero(scores > 0)
        ranked = hit[np.lexsort((self.rank[hit], -scores[hit]))][:k]
        return [(self.ids[d], float(scores[d])) for d in ranked]


def wait_for_idle(pid: int | None, limit_s: float = 600, quiet: float = 0.05) -> float:
    """Seconds until the Milvus Lite server is idle: its CPU time grows by less than `quiet`
    of a core over 3 s. After "every row indexed", Lite 3.2.2 still merges segments and
    rebuilds their HNSW graphs in the background for minutes at 100k; queries timed then
    measure that work too (it took a fifth of the server's samples in a profile)."""
    if not pid:
        return 0.0

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < limit_s:
            before = cpu()
            time.sleep(3)
            if cpu() - before < 3 * quiet:
                break
    except OSError:
        pass
    return round(time.perf_counter() - t0, 1)


def snapshot_update(
    store: Any, coll: str, ids: list[str], keep: Path, rounds: int = 2
) -> dict[str, list]:
    """Seconds to bring the snapshots up to date after one file's rows are written again (what
    an ingest that adds or changes a file pays at its end): rows read back and written as
    they are. Alternately as a rewrite of the whole snapshot (LAYER_MIN_ROWS set past the
    size: the build before deltas) and as a delta over it (as a build makes past
    LAYER_MIN_ROWS; forced here at any size), `rounds` times; the store is left with a
    delta, and the last rewrite's snapshot is kept in `keep` (its files linked)."""
    from mmrag.store import lite_index
    from mmrag.store.schema import OUTPUT_FIELDS, Segment

    found = store.client.get(coll, ids=ids, output_fields=[*OUTPUT_FIELDS, "vector"])
    again = [
        Segment(**{k: r[k] for k in OUTPUT_FIELDS}, vector=np.asarray(r["vector"], np.float32))
        for r in found
    ]
    default = lite_index.LAYER_MIN_ROWS
    out: dict[str, list] = {"rewrite": [], "delta": []}
    try:
        for _ in range(rounds):
            for way, least in (("rewrite", 1 << 62), ("delta", 0)):
                lite_index.LAYER_MIN_ROWS = least
                store.upsert(coll, again)
                t0 = time.perf_counter()
                assert store.refresh_snapshots() == [coll]
                out[way].append(round(time.perf_counter() - t0, 2))
                snap = store.snapshots.current(coll)
                assert snap.layered == (way == "delta")
                if way == "rewrite":
                    shutil.rmtree(keep, ignore_errors=True)
                    shutil.copytree(snap.folder, keep, copy_function=os.link)
    finally:
        lite_index.LAYER_MIN_ROWS = default
    return out


def snapshot_order(folder: Path) -> dict[str, int]:
    """Each live row's place in a snapshot (a layered one: its base's live rows, then its
    delta's): how the snapshot ranks tied rows."""
    from mmrag.store import lite_index

    rows = lite_index._snapshot_rows(folder, 5000, vectors=False)
    return {r["id"]: i for i, r in enumerate(r for batch in rows for r in batch)}


def percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return (
        round(1000 * statistics.median(ordered), 1),
        round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
    )


def peak_rss_mib(server_pid: int | None) -> dict[str, float]:
    out = {"benchmark_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if server_pid:
        try:
            for line in Path(f"/proc/{server_pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out["milvus_lite_mib"] = round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
    return out


def run_size(size: int, args, base, base_vectors, cache: Path) -> tuple[list[dict], dict | None]:
    from mmrag.app import Models, open_store
    from mmrag.kinds import QueryKind
    from mmrag.search.query import SearchSpace
    from mmrag.settings import Settings
    from mmrag.store import lite_index
    from mmrag.store.schema import Space

    if args.keep:
        home = args.keep / f"store-{size}"
        home.mkdir(parents=True, exist_ok=True)
    else:
        home = Path(tempfile.mkdtemp(prefix=f"mmrag-search-latency-{size}-"))
    ready = home / "search-latency-ready"  # a kept store, filled and its snapshots built
    kept = ready.exists()
    off = {"image_model": "", "clip_model": "", "audio_model": "", "speech_model": ""}
    settings = Settings(home=home, profile="offline", device="cpu", cache_dir=cache, **off)
    models = Models.build(settings)  # a fresh text space: queries through the ONNX encoder
    catalog, store = open_store(settings)
    text_space = models.spaces["text"]
    assert text_space.light_encoder() is not None, "no ONNX query encoder in the cache"
    text_coll = store.ensure_space(text_space.space)
    photo_coll = store.ensure_space(Space("image", "synthetic", PHOTO_DIM))
    photos = PhotoModel()
    t0 = time.perf_counter()
    text_ids, texts, text_vecs, photo_ids, photo_vecs = fill(
        catalog, store, text_coll, photo_coll, size, base, base_vectors, photos, write=not kept
    )
    insert_s = index_s = snapshot_s = idle_s = None  # the kept store's: not timed here
    if kept:
        assert not store.snapshots.stale([text_coll, photo_coll]), "kept store is stale"
        print(f"# {size}: the store --keep left in {home}", flush=True)
    else:
        insert_s = round(time.perf_counter() - t0, 1)
        waited = wait_for_indexes(store, text_coll) + wait_for_indexes(store, photo_coll)
        index_s = round(waited, 1)
        t0 = time.perf_counter()
        built = store.refresh_snapshots()  # as every ingest ends (ingest/runner.py)
        snapshot_s = round(time.perf_counter() - t0, 1)
        assert set(built) == {text_coll, photo_coll}, built
        ready.touch()
        idle_s = wait_for_idle(store._lease.pid if store._lease else None)
        print(
            f"# {size}: inserted in {insert_s} s, indexes ready after {index_s} s more, "
            f"snapshots built in {snapshot_s} s, the server idle after {idle_s} s more",
            flush=True,
        )
    with sqlite3.connect(store.snapshots.current(text_coll).folder / "rows.sqlite") as db:
        bm25 = ExactBM25(texts, text_ids, dict(db.execute("SELECT id, idx FROM rows")))

    searcher = models.searcher(catalog, store)
    stand_in = PhotoQueries()
    searcher.spaces.append(SearchSpace("image", stand_in, photo_coll, frozenset({QueryKind.IMAGE})))
    searcher.decoders[QueryKind.IMAGE] = lambda path, encoders: [path]
    example = home / "query.jpg"
    example.write_bytes(b"\xff\xd8\xff")  # a query file must exist; its pixels are not read

    qs = text_queries(base, args.queries + args.warmup, seed=size)
    rng = np.random.default_rng(size + 1)
    pvs = photos.draw(len(qs), rng)
    light = text_space.light_encoder()
    qvecs = light.encode(qs)  # the vectors the searcher computes, for the exact answers

    clock = Clock()
    if args.breakdown:
        clock.wrap(light, "encode", "encode")
        calls = ("search_hybrid", "search_dense", "search_bm25", "snapshot_legs")
        for call in (*calls, "existing_collections"):
            clock.wrap(store, call, call)
        clock.wrap(catalog, "display_paths", "catalog")
        clock.wrap(catalog, "facts_of", "catalog")

    def numpy_find(q: str) -> list[str]:
        v = light.encode([q])[0]
        top, _ = exact_top(text_vecs, v, LIMIT)
        return [text_ids[i] for i in top]

    runs: dict[str, Callable[[int], list[str]]] = {
        "hybrid": lambda i: [h.segment_id for h in searcher.find(QueryKind.TEXT, qs[i])],
        "dense": lambda i: [
            h.segment_id for h in searcher.find(QueryKind.TEXT, qs[i], mode="dense")
        ],
        "image": lambda i: [h.segment_id for h in searcher.find(QueryKind.IMAGE, example)],
        "numpy": lambda i: numpy_find(qs[i]),
    }
    fusion = settings.hybrid_fusion
    if fusion not in ("weighted", "minmax"):
        raise SystemExit(f"hybrid recall needs weighted or minmax fusion, not {fusion}")
    truth: dict[str, Callable[[int], list[str]]] = {
        "hybrid": lambda i: exact_hybrid(
            bm25, qs[i], qvecs[i], text_vecs, text_ids, settings.dense_weight, fusion
        ),
        "dense": lambda i: [text_ids[j] for j in exact_top(text_vecs, qvecs[i], LIMIT)[0]],
        "image": lambda i: [photo_ids[j] for j in exact_top(photo_vecs, pvs[i], LIMIT)[0]],
        "numpy": lambda i: [text_ids[j] for j in exact_top(text_vecs, qvecs[i], LIMIT)[0]],
    }

    # --compare: each Milvus mode also as the code before issue 17's changes (`before`), the
    # two alternating query by query in the same run.
    variants = {(m, "after" if args.compare else ""): m for m in args.modes}
    if args.compare:
        for m in args.modes:
            if m != "numpy":
                variants[(m, "before")] = m
    timed: dict[tuple, list[float]] = {v: [] for v in variants}
    recalls: dict[tuple, list[float]] = {v: [] for v in variants}
    overlaps: dict[tuple, list[float]] = {v: [] for v in variants}
    parts: dict[tuple, dict[str, float]] = {v: defaultdict(float) for v in variants}
    # Modes alternate query by query, so load from other users of the machine hits all alike.
    for i in range(len(qs)):
        for variant, mode in variants.items():
            stand_in.vector = pvs[i]
            clock.spent.clear()
            with as_before(store, variant[1] == "before"):
                t = time.perf_counter()
                found = runs[mode](i)
                elapsed = time.perf_counter() - t
            if i < args.warmup:
                continue
            timed[variant].append(elapsed)
            for label, s in clock.spent.items():
                parts[variant][label] += s
            parts[variant]["total"] += elapsed
            recalls[variant].append(recall(found, truth[mode](i)))
            if mode != "numpy" and args.milvus:
                with milvus_only(store):
                    overlaps[variant].append(recall(found, runs[mode](i)))
    memory = peak_rss_mib(store._lease.pid if store._lease else None)
    whole_folder = home / "whole-snapshot"
    update_s = snapshot_update(store, text_coll, text_ids[:PER_MEDIA], whole_folder)
    # The text modes again, on the snapshot with a delta (one file's rows in it, their old
    # rows dead: BM25 weighs its postings at search time) and on the last rewrite's (the same
    # rows), query by query in turn; ties ranked in the new order (the same in both).
    delta_snap = store.snapshots.current(text_coll)
    whole = lite_index.Snapshot(whole_folder, delta_snap.stamp)
    order = snapshot_order(delta_snap.folder)
    assert order == snapshot_order(whole_folder)
    bm25.rank = np.array([order[i] for i in text_ids], dtype=np.int64)
    modes = [m for m in ("hybrid", "dense") if m in args.modes]
    again: dict[tuple[str, str], list[float]] = {(m, w): [] for m in modes for w in ("d", "w")}
    again_recall: dict[tuple[str, str], list[float]] = {k: [] for k in again}
    real_current = store.snapshots.current
    try:
        for i in range(len(qs)):
            for mode, way in again:
                chosen = whole if way == "w" else delta_snap
                store.snapshots.current = lambda name, s=chosen: (
                    s if name == text_coll else real_current(name)
                )
                t = time.perf_counter()
                found = runs[mode](i)
                if i >= args.warmup:
                    again[mode, way].append(time.perf_counter() - t)
                    again_recall[mode, way].append(recall(found, truth[mode](i)))
    finally:
        store.snapshots.current = real_current
        whole.close()
    results = []
    for variant, mode in variants.items():
        p50, p95 = percentiles(timed[variant])
        row = {
            "size": size,
            "mode": mode,
            **({"variant": variant[1]} if variant[1] else {}),
            "p50_ms": p50,
            "p95_ms": p95,
            "recall_at_10": round(statistics.mean(recalls[variant]), 3),
            **(
                {"milvus_overlap_at_10": round(statistics.mean(overlaps[variant]), 3)}
                if overlaps[variant]
                else {}
            ),
            "queries": len(timed[variant]),
            "insert_s": insert_s,
            "index_wait_s": index_s,
            "snapshot_build_s": snapshot_s,
            "snapshot_update_s": update_s,
            **(
                {
                    f"{label}_{k}": v
                    for way, label in (("d", "with_delta"), ("w", "whole_again"))
                    for k, v in zip(
                        ("p50_ms", "p95_ms", "recall_at_10"),
                        (
                            *percentiles(again[mode, way]),
                            round(statistics.mean(again_recall[mode, way]), 3),
                        ),
                        strict=True,
                    )
                }
                if (mode, "d") in again and again[mode, "d"] and variant[1] != "before"
                else {}
            ),
            "idle_wait_s": idle_s,
            "peak_rss": memory,
        }
        if args.breakdown and mode != "image":
            n = len(timed[variant])
            split = {k: round(1000 * v / n, 1) for k, v in parts[variant].items()}
            split["other"] = round(
                split["total"] - sum(v for k, v in split.items() if k != "total"), 1
            )
            row["mean_ms_by_part"] = split
        results.append(row)
        print(json.dumps(row), flush=True)
    leg = None
    if args.fts5:
        leg = {"size": size, **fts5_leg(store, text_coll, texts, text_ids, qs[args.warmup :])}
        print(json.dumps({"bm25_leg": leg}), flush=True)
    store.close()
    catalog.close()
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)  # the store, its snapshots: GBs at 100k
    return results, leg


def query_encoder_cache(base: list[str], work: Path) -> tuple[Any, np.ndarray, Path]:
    """The torch text model (for the corpus vectors, as ingest embeds) and a cache holding its
    ONNX query export (as the first ingest leaves it for later searches)."""
    from mmrag.app import Models
    from mmrag.pipelines.text import onnx_query
    from mmrag.settings import Settings

    off = {"image_model": "", "clip_model": "", "audio_model": "", "speech_model": ""}
    settings = Settings(home=work, profile="offline", device="cpu", query_encoder="torch", **off)
    text = Models.build(settings).spaces["text"]
    vectors = text.encode_texts(base)
    cache = settings.cache_dir
    if onnx_query.OnnxTextEncoder.load(cache, text.model_name) is None:
        cache = work / "cache"
        encoder = text.encoder
        onnx_query.export(encoder.model, text.model_name, encoder.resolved.path, cache)
    return text, np.asarray(vectors, dtype=np.float32), cache


def table(results: list[dict]) -> str:
    lines = [
        "| segments | mode | p50 ms | p95 ms | recall@10 |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']:,} | {r['mode']} {r.get('variant', '')} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['recall_at_10']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated segment counts")
    ap.add_argument("--queries", type=int, default=100, help="timed queries per mode and size")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json", type=Path, help="write {machine, results} here")
    ap.add_argument("--breakdown", action="store_true", help="split text modes' time by part")
    ap.add_argument("--fts5", action="store_true", help="time BM25 in Lite against SQLite FTS5")
    ap.add_argument(
        "--compare", action="store_true", help="also time each mode as before issue 17's changes"
    )
    ap.add_argument(
        "--keep", type=Path, help="build each size's store here and keep it (or reuse it)"
    )
    ap.add_argument(
        "--no-milvus",
        dest="milvus",
        action="store_false",
        help="skip Milvus Lite's own answers (milvus_overlap_at_10): at 1M, loading both "
        "collections into the Lite server takes more memory than 24 GB leave beside the rest",
    )
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(
            f"--sizes: not a comma-separated list of integers: {args.sizes!r}"
        ) from None
    if not sizes or min(sizes) < 2 * LIMIT:
        raise SystemExit(f"--sizes: each size must be at least {2 * LIMIT}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")

    work = Path(tempfile.mkdtemp(prefix="mmrag-search-latency-"))
    base = sentences()
    _, base_vectors, cache = query_encoder_cache(base, work)
    info = {**machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps({"machine": info, "sentences": len(base)}), flush=True)
    results: list[dict] = []
    legs: list[dict] = []
    for size in sizes:
        rows, leg = run_size(size, args, base, base_vectors, cache)
        results.extend(rows)
        legs.extend([leg] if leg else [])
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(table(results))
    print(json.dumps({"machine": info}))
    if args.json:
        found = {"machine": info, "results": results} | ({"bm25_legs": legs} if legs else {})
        args.json.write_text(json.dumps(found, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
