"""Search latency with catalog filters (issue 17): path globs and date ranges, before and after.

    python benchmarks/filter_latency.py --sizes 10000,100000 [--queries 30] [--json FILE]
        [--keep DIR] [--baseline python|v6]

`--keep DIR` builds each size's store under DIR and keeps it, or reuses the one a run left
there (a 100k build takes minutes); without it, stores are temporary.

Each size builds the store of benchmarks/search_latency.py (`size` photos and `size / 20`
documents of 20 segments: 10.5k or 105k files; real MiniLM vectors, snapshots built as an
ingest ends), then gives the files paths and dates to filter on: the i-th photo (or document)
lies in folder `d{i % 100:02d}`, its name starts `a-` or `b-` by its parity, and it was
modified on day 997 * i % 1000 after 2020-01-01.

Timed through the whole `Searcher.find` for a hybrid text query (ONNX query encoding, the
snapshot or Milvus, catalog look-ups), the variants alternating query by query:

- `after`: the catalog answers in SQL (`Catalog.media_matching` with `MediaWhere`; a glob
  with a leading wildcard that names folders reads only the paths of the folders it can
  match), a filter matching at most `LISTED_MAX_SNAPSHOT` media or a `LISTED_SHARE` of the
  paths (store/milvus.py) names them to the store as a set (the snapshot reads only their
  vectors), and a broader one is checked against the ranked rows of a search as deep as its
  sampled share of the paths says (`Catalog.share_matching`; a share clearly too large to name
  skips listing);
- `before`, with `--baseline python` (the default): as mmrag did before catalog v6: every path
  row read and matched in Python (`fnmatch` three times a row, mtime compared), every matching
  id sent as `media_id in [...]`;
- `before`, with `--baseline v6`: as catalog v6 did, on a copy of the catalog with v6's
  indexes: SQL, but every path row scanned for a glob with a leading wildcard, the matches
  sent as a `media_id in [...]` string (the snapshot parses it back), and a broad filter's
  search starting `BROAD_WIDEN` deep and going 4 times deeper a round, its ranked rows' paths
  looked up before they are checked.

The catalog look-up alone is timed too (`catalog_ms`: the variant's `Searcher._scope`), and
`same_hits` counts the timed queries whose hits (segments, in order) both variants agree on.
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
V6_LISTED_MAX = 2000  # the most media catalog v6 named to the store


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


def build(settings, models, size: int, base, base_vectors) -> tuple[Any, Any]:
    """The size's store, filled and relabelled, or the one a `--keep` run left (its marker)."""
    from mmrag.app import open_store
    from mmrag.store.schema import Space

    ready = settings.home / "filter-latency-ready"
    catalog, store = open_store(settings)
    if ready.exists():
        return catalog, store
    text_coll = store.ensure_space(models.spaces["text"].space)
    photo_coll = store.ensure_space(Space("image", "synthetic", 512))
    fill(catalog, store, text_coll, photo_coll, size, base, base_vectors, PhotoModel())
    relabel(settings.catalog)
    wait_for_indexes(store, text_coll)
    wait_for_indexes(store, photo_coll)
    store.refresh_snapshots()
    ready.touch()
    return catalog, store


def v6_catalog(catalog_file: Path) -> Any:
    """A copy of the catalog with schema v6's filter indexes: no `folders`, the mtime index
    without the media ids (the version number stays, so it is not migrated again)."""
    from mmrag.store.catalog import Catalog

    copy = catalog_file.with_name(f"v6-{catalog_file.name}")
    src, dst = sqlite3.connect(catalog_file), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.executescript(
        "DROP TRIGGER paths_folders_new; DROP TRIGGER paths_folders_moved; DROP TABLE folders;"
        "DROP INDEX paths_mtime; CREATE INDEX paths_mtime ON paths(mtime_ns);"
    )
    dst.close()
    return Catalog(copy)


def v6_scope(catalog: Any) -> Any:
    """`Searcher._scope` as catalog v6 had it (for filters without a modality or a place), on
    `v6_catalog`'s copy: its ranked rows' paths looked up, then checked."""
    from mmrag.search.query import BROAD_WIDEN, Scope
    from mmrag.store.milvus import _listed

    def scope(f: Any) -> Scope | None:
        if not f.by_catalog:
            return Scope("")
        where = f.where()
        media = catalog._matching(None, *where.sql(), V6_LISTED_MAX + 1)  # no folder ranges
        if not media:
            return None
        if len(media) <= V6_LISTED_MAX:
            return Scope(_listed("", frozenset(media)))  # a string the snapshot parses

        def keep(among: Any) -> set[str]:
            return catalog.media_matching(None, where, catalog.display_paths(among).keys())

        return Scope("", keep, BROAD_WIDEN)

    return scope


def run_size(size: int, args, base, base_vectors, cache: Path) -> list[dict]:
    from mmrag.app import Models
    from mmrag.kinds import QueryKind
    from mmrag.search.query import Scope
    from mmrag.settings import Settings
    from mmrag.store.milvus import _listed

    if args.keep:
        home = args.keep / f"store-{size}"
        home.mkdir(parents=True, exist_ok=True)
    else:
        home = Path(tempfile.mkdtemp(prefix=f"mmrag-filter-latency-{size}-"))
    off = {"image_model": "", "clip_model": "", "audio_model": "", "speech_model": ""}
    settings = Settings(home=home, profile="offline", device="cpu", cache_dir=cache, **off)
    models = Models.build(settings)
    t0 = time.perf_counter()
    catalog, store = build(settings, models, size, base, base_vectors)
    media = catalog.counts()["paths"]
    print(f"# {size}: {media} files ready in {time.perf_counter() - t0:.0f} s", flush=True)

    searcher = models.searcher(catalog, store)
    after = searcher._scope

    def python(f: Any) -> Scope | None:
        if not f.by_catalog:
            return Scope("")
        found = catalog.media_matching(lambda rec, _facts: old_accept(rec, f))
        return Scope(_listed("", frozenset(found))) if found else None

    old = v6_catalog(settings.catalog) if args.baseline == "v6" else None
    before = v6_scope(old) if old else python

    qs = text_queries(base, args.queries + args.warmup, seed=size)
    results = []
    for label, f in filters().items():
        times: dict[str, list[float]] = {"before": [], "after": []}
        lookup: dict[str, list[float]] = {"before": [], "after": []}
        hits: dict[str, int] = {}
        same = 0  # queries whose hits (segments, in order) both variants agree on
        for i, q in enumerate(qs):
            ranked: dict[str, list[str]] = {}
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
                ranked[variant] = [h.segment_id for h in found]
            same += i >= args.warmup and ranked["before"] == ranked["after"]
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
                "same_hits": f"{same}/{args.queries}",
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    store.close()
    catalog.close()
    if old:
        old.close()
        old.file.unlink()
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    return results


def table(results: list[dict]) -> str:
    lines = [
        "| files | filter | matching | variant | p50 ms | p95 ms | catalog ms | same hits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['files']:,} | {r['filter']} | {r['matching']:,} | {r['variant']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['catalog_ms']} | {r['same_hits']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated photo counts")
    ap.add_argument("--queries", type=int, default=30, help="timed queries per filter")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write {machine, results} here")
    ap.add_argument("--keep", type=Path, help="build the stores here and keep them (or reuse)")
    ap.add_argument(
        "--baseline",
        choices=("python", "v6"),
        default="python",
        help="`before`: the Python filter of every path row, or catalog v6's SQL",
    )
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--sizes: not comma-separated integers: {args.sizes!r}") from None
    if not sizes or min(sizes) < 1000:
        raise SystemExit("--sizes: each size must be at least 1000")
    if args.keep:
        work = args.keep / "work"
        work.mkdir(parents=True, exist_ok=True)
    else:
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
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
