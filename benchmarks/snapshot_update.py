"""Bringing a large search snapshot up to date: a rewrite against a delta (issue 17).

    python benchmarks/snapshot_update.py [--rows 1000000] [--rounds 2] [--queries 30]

An embedded store's search snapshot (store/lite_index.py) is brought up to date at the end of
every ingest. This times that step alone, without Milvus, on `--rows` synthetic rows in the real
snapshot format: 384-d unit vectors (random: the scan's cost does not depend on them) and texts
of two sentences from data/library/docs, 20 rows a file. The snapshot is first written whole
from those rows (as a first build reads every row). Then, `--rounds` times, one file's rows are
written again (its rows deleted, then upserted with the same ids, as an ingest of a changed file
journals it) and the snapshot brought up to date, alternately by a rewrite (LAYER_MIN_ROWS past
the size: how every build worked before deltas) and by a delta over the whole snapshot.

Then searches are timed on both snapshots (the last rewrite's and the last delta's, each query
on both in turn): dense (the exact top 100 of one vector), BM25 (the top 100 of a library
phrase) and both legs of a min-max hybrid search, as `Searcher.find` asks the snapshot for
them (no query encoding, no catalog: those are in search_latency.py). Their rows must agree.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # a sibling module
from search_latency import sentences, text_queries

from mmrag.store import lite_index
from mmrag.store.lite_index import Replay, Snapshots, Touched

DIM, PER_MEDIA, DEPTH = 384, 20, 100
COLLECTION = "mmrag_text_synthetic"


def row(i: int, texts: list[str], rng: np.random.Generator) -> dict:
    m = i // PER_MEDIA
    pick = rng.integers(0, len(texts), size=2)
    vector = rng.standard_normal(DIM).astype(np.float32)
    return {
        "id": f"f{m:07d}:text:{i % PER_MEDIA}",
        "media_id": f"f{m:07d}",
        "modality": "document",
        "start": 0.0,
        "end": 0.0,
        "page": i % PER_MEDIA,
        "text": f"{texts[pick[0]]} {texts[pick[1]]}",
        "meta": {},
        "vector": vector / np.linalg.norm(vector),
    }


def every_row(n: int, texts: list[str], batch: int = 5000) -> Iterator[list[dict]]:
    rng = np.random.default_rng(17)
    for start in range(0, n, batch):
        yield [row(i, texts, rng) for i in range(start, min(n, start + batch))]


def write_again(snaps: Snapshots, rows: list[dict]) -> None:
    """One file's rows written again as an ingest journals a changed file: its media deleted,
    then its rows upserted (two writes, each bumped and replayed)."""
    media = rows[0]["media_id"]
    began = snaps.bump(COLLECTION, Touched(media=frozenset({media})))
    snaps.wrote(COLLECTION, began, Replay(media=[media]))
    began = snaps.bump(COLLECTION, Touched(ids=frozenset(r["id"] for r in rows)))
    snaps.wrote(COLLECTION, began, Replay(rows=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    texts = sentences()
    work = Path(tempfile.mkdtemp(prefix="mmrag-snapshot-update-"))
    snaps = Snapshots(work / "store.search")
    n = args.rows

    def no_read() -> Iterator[list[dict]]:
        raise AssertionError("a replayed build read Milvus")

    try:
        t0 = time.perf_counter()
        snaps.bump(COLLECTION)  # a write that says nothing: the build reads every row
        assert snaps.build(COLLECTION, DIM, lambda: every_row(n, texts), True, None, lambda: n)
        first_s = time.perf_counter() - t0
        print(f"# {n:,} rows written whole in {first_s:.1f} s", flush=True)
        changed = next(every_row(PER_MEDIA, texts))  # file 0's rows, drawn again
        default = lite_index.LAYER_MIN_ROWS
        builds: dict[str, list[float]] = {"rewrite": [], "delta": []}
        kept: dict[str, Path] = {}
        for _ in range(args.rounds):
            for way, least in (("rewrite", 1 << 62), ("delta", default)):
                lite_index.LAYER_MIN_ROWS = least
                write_again(snaps, changed)
                t0 = time.perf_counter()
                built = snaps.build(COLLECTION, DIM, no_read, True, None, lambda: n)
                builds[way].append(round(time.perf_counter() - t0, 2))
                assert built is not None
                keep = work / f"kept-{way}"  # the build sweeps older snapshots: keep one
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(built, keep, copy_function=_link)
                kept[way] = keep
        lite_index.LAYER_MIN_ROWS = default
        print(f"# builds, s: {json.dumps(builds)}", flush=True)

        opened = {way: lite_index.Snapshot(path, way) for way, path in kept.items()}
        assert not opened["rewrite"].layered and opened["delta"].layered
        rng = np.random.default_rng(5)
        queries = text_queries(texts, args.queries + 3, seed=n)
        vectors = rng.standard_normal((len(queries), DIM)).astype(np.float32)
        searches = {
            "dense": lambda s, i: s.dense(vectors[i][None], DEPTH, s.mask(_ALL))[0],
            "bm25": lambda s, i: s.bm25(queries[i], DEPTH, s.mask(_ALL)),
            "hybrid legs": lambda s, i: (
                s.dense(vectors[i][None], DEPTH, keep := s.mask(_ALL))[0]
                + s.bm25(queries[i], DEPTH, keep)
            ),
        }
        times: dict[tuple[str, str], list[float]] = {}
        for i in range(len(queries)):
            for name, search in searches.items():
                found = {}
                for way, snap in opened.items():
                    t0 = time.perf_counter()
                    ranked = search(snap, i)
                    if i >= 3:  # warm-up
                        times.setdefault((name, way), []).append(time.perf_counter() - t0)
                    found[way] = snap.hits(ranked)
                a, b = found["rewrite"], found["delta"]
                assert [r["id"] for r in a] == [r["id"] for r in b], (name, queries[i])
                gaps = [abs(x["score"] - y["score"]) for x, y in zip(a, b, strict=True)]
                assert max(gaps, default=0.0) < 1e-5, (name, queries[i])
        for snap in opened.values():
            snap.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "machine": machine(),
        "rows": n,
        "first_build_s": round(first_s, 1),
        "update_s": builds,
        "search_p50_ms": {
            f"{name} / {way}": round(1000 * statistics.median(t), 1)
            for (name, way), t in times.items()
        },
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


_ALL = lite_index.Filter()


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)


if __name__ == "__main__":
    main()
