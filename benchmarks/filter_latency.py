"""Search latency with catalog filters (issue 17): path globs and date ranges, before and after.

    python benchmarks/filter_latency.py --sizes 10000,100000 [--queries 30] [--json FILE]

Each size builds the store of benchmarks/search_latency.py (`size` photos and `size / 20`
documents of 20 segments: 10.5k or 105k files; real MiniLM vectors, snapshots built as an
ingest ends), then gives the files paths and dates to filter on: the i-th photo (or document)
lies in folder `d{i % 100:02d}`, its name starts `a-` or `b-` by its parity, and it was
modified on day 997 * i % 1000 after 2020-01-01.

Timed through the whole `Searcher.find` for a hybrid text query (ONNX query encoding, the
snapshot or Milvus, catalog look-ups), the variants alternating query by query:

- `after`: the catalog answers in SQL (`Catalog.media_matching` with `MediaWhere`), and a
  filter matching more than `LISTED_MAX` media (search/query.py) is checked against the
  ranked rows instead of going to Milvus as `media_id in [...]`;
- `before`: as mmrag did before: every path row read and matched in Python (`fnmatch` three
  times a row, mtime compared), every matching id sent as `media_id in [...]`.

The catalog look-up alone is timed too (`catalog_ms`: before, every row in Python; after, SQL).
Filters: a glob matching 1% of files, one matching about half (`*.jpg`), the same half through
a `[set]` (SQL GLOB, then fnmatch on what it leaves), and modification-date ranges of 3% and
50%; `none` is the unfiltered search beside them.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import machine, wait_for_indexes  # sibling scripts
from search_latency import (
    PhotoModel,
    fill,
    percentiles,
    query_encoder_cache,
    sentences,
    text_queries,
)

DAY0 = datetime(2020, 1, 1, tzinfo=UTC)


def filters() -> dict[str, Any]:
    from mmrag.search.query import Filters

    return {
        "none": Filters(),
        "glob 1%": Filters(path_glob="*/d07/*"),
        "glob 50%": Filters(path_glob="*/a-*"),
        "glob 50% [set]": Filters(path_glob="*/d[0-4]?/*"),
        "date 3%": Filters(since=DAY0 + timedelta(100), until=DAY0 + timedelta(130)),
        "date 50%": Filters(since=DAY0 + timedelta(500)),
    }


def relabel(catalog_file: Path) -> None:
    """Folders, names and dates to filter on (the paths `fill` gave are all alike), spread
    evenly over the documents (what a text query finds) and the photos alike."""
    db = sqlite3.connect(catalog_file)
    rows = db.execute("SELECT rowid, path FROM paths ORDER BY rowid").fetchall()
    seen: dict[str, int] = {}
    updates = []
    for rowid, path in rows:
        ext = Path(path).suffix
        i = seen[ext] = seen.get(ext, -1) + 1  # the file's number among its kind
        new = f"/synthetic/d{i % 100:02d}/{'ab'[i % 2]}-{Path(path).stem}{ext}"
        mtime = int((DAY0 + timedelta(days=997 * i % 1000)).timestamp()) * 10**9
        updates.append((new, new, mtime, rowid))
    db.executemany("UPDATE paths SET path=?, display=?, mtime_ns=? WHERE rowid=?", updates)
    db.commit()
    db.close()


def old_accept(rec: Any, f: Any) -> bool:
    """The Python filter mmrag ran on every path row before (globs and modification dates)."""
    name = rec.display.rsplit("/", 1)[-1]
    globs = (fnmatch.fnmatch(p, f.path_glob) for p in (rec.display, rec.path, name))
    if f.path_glob and not any(globs):
        return False
    mtime = rec.mtime_ns / 1e9
    if f.since and mtime < f.since.timestamp():
        return False
    return not (f.until and mtime >= f.until.timestamp())


def run_size(size: int, args, base, base_vectors, cache: Path) -> list[dict]:
    from mmrag.app import Models, open_store
    from mmrag.kinds import QueryKind
    from mmrag.search.query import Scope
    from mmrag.settings import Settings
    from mmrag.store.schema import Space

    home = Path(tempfile.mkdtemp(prefix=f"mmrag-filter-latency-{size}-"))
    off = {"image_model": "", "clip_model": "", "audio_model": "", "speech_model": ""}
    settings = Settings(home=home, profile="offline", device="cpu", cache_dir=cache, **off)
    models = Models.build(settings)
    catalog, store = open_store(settings)
    text_coll = store.ensure_space(models.spaces["text"].space)
    photo_coll = store.ensure_space(Space("image", "synthetic", 512))
    t0 = time.perf_counter()
    fill(catalog, store, text_coll, photo_coll, size, base, base_vectors, PhotoModel())
    relabel(settings.catalog)
    wait_for_indexes(store, text_coll)
    wait_for_indexes(store, photo_coll)
    store.refresh_snapshots()
    media = catalog.counts()["paths"]
    print(f"# {size}: {media} files ready in {time.perf_counter() - t0:.0f} s", flush=True)

    searcher = models.searcher(catalog, store)
    after = searcher._scope

    def before(f: Any) -> Scope | None:
        if not f.by_catalog:
            return Scope("")
        found = catalog.media_matching(lambda rec, _facts: old_accept(rec, f))
        return Scope(Scope("").listed(found)) if found else None

    qs = text_queries(base, args.queries + args.warmup, seed=size)
    results = []
    for label, f in filters().items():
        times: dict[str, list[float]] = {"before": [], "after": []}
        lookup: dict[str, list[float]] = {"before": [], "after": []}
        hits: dict[str, int] = {}
        for i, q in enumerate(qs):
            for variant, scope in (("before", before), ("after", after)):
                searcher._scope = scope  # type: ignore[method-assign]
                t = time.perf_counter()
                found = searcher.find(QueryKind.TEXT, q, filters=f)
                elapsed = time.perf_counter() - t
                t = time.perf_counter()
                scope(f)
                alone = time.perf_counter() - t
                if i >= args.warmup:
                    times[variant].append(elapsed)
                    lookup[variant].append(alone)
                    hits[variant] = min(hits.get(variant, 10**9), len(found))
        matched = len(catalog.media_matching(None, f.where())) if f.by_catalog else media
        for variant in ("before", "after"):
            p50, p95 = percentiles(times[variant])
            row = {
                "files": media,
                "filter": label,
                "matching": matched,
                "variant": variant,
                "p50_ms": p50,
                "p95_ms": p95,
                "catalog_ms": percentiles(lookup[variant])[0],
                "fewest_hits": hits[variant],
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    store.close()
    catalog.close()
    shutil.rmtree(home, ignore_errors=True)
    return results


def table(results: list[dict]) -> str:
    lines = [
        "| files | filter | matching | variant | p50 ms | p95 ms | catalog look-up ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['files']:,} | {r['filter']} | {r['matching']:,} | {r['variant']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['catalog_ms']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated photo counts")
    ap.add_argument("--queries", type=int, default=30, help="timed queries per filter")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write {machine, results} here")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--sizes: not comma-separated integers: {args.sizes!r}") from None
    if not sizes or min(sizes) < 1000:
        raise SystemExit("--sizes: each size must be at least 1000")
    work = Path(tempfile.mkdtemp(prefix="mmrag-filter-latency-"))
    base = sentences()
    _, base_vectors, cache = query_encoder_cache(base, work)
    info = {**machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps({"machine": info}), flush=True)
    results = [row for size in sizes for row in run_size(size, args, base, base_vectors, cache)]
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
