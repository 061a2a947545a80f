"""`mmrag migrate --to URI`: copy a store's collections to a Milvus server, vectors as stored.

Nothing is embedded again: every row is read with its vector (a query iterator) and upserted
under the same id into a collection of the same name, made with the same model, dimension and
store id. Upserts make a re-run after an interruption finish the job, and a re-run of a done one
change nothing; rows the target has and the source has not (deleted since an earlier run) are
removed, so each collection ends with the source's row count, which is checked. The BM25 sparse
vector is not copied: a server with BM25 functions computes it from the text, one without has
none (its text search is dense: store.milvus.Capabilities).

The catalog and thumbnails go where the target uri finds them by default (mmrag.settings
.store_files), so switching `milvus_uri` is all a user does: the catalog holds the same store id
as the copied collections (store.identity), and the next ingest finds every file done.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmrag.store.catalog import Catalog
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import STORE_PROPERTY, StoreError
from mmrag.store.thumbnails import DB_NAME, thumbnail_store


@dataclass
class Copied:
    """One collection's migration: rows in the source, rows copied, rows in the target after."""

    name: str
    source_rows: int
    copied: int
    target_rows: int
    removed: int  # rows only the target had (deleted from the source since an earlier run)
    full_text: bool  # whether the target has BM25 for it
    seconds: float

    @property
    def ok(self) -> bool:
        return self.target_rows == self.source_rows


# (collection, rows copied so far, rows in the source)
OnProgress = Callable[[str, int, int], None]


def check_target(source: MilvusStore, target: MilvusStore, store_id: str | None) -> None:
    """Refuse a target that holds another library's collections under the same prefix."""
    foreign = {n: i for n, i in target.store_ids().items() if i and i != store_id}
    if foreign:
        names = ", ".join(sorted(foreign))
        raise StoreError(
            f"the target already holds collections of another mmrag library ({names}, store id "
            f"{', '.join(sorted(set(foreign.values())))}): migrate under another collection "
            "prefix (MMRAG_COLLECTION_PREFIX) or drop them first"
        )


def copy_collections(
    source: MilvusStore,
    target: MilvusStore,
    store_id: str | None,
    batch: int = 1000,
    on_progress: OnProgress | None = None,
) -> list[Copied]:
    """Copy every mmrag collection of `source` into `target` (same names), then verify counts."""
    if source.prefix != target.prefix:
        raise StoreError(f"prefixes differ: {source.prefix!r} -> {target.prefix!r}")
    check_target(source, target, store_id)
    done = []
    for name in source.existing_collections():
        done.append(copy_one(source, target, name, store_id, batch, on_progress))
    return done


def copy_one(
    source: MilvusStore,
    target: MilvusStore,
    name: str,
    store_id: str | None,
    batch: int = 1000,
    on_progress: OnProgress | None = None,
) -> Copied:
    t0 = time.perf_counter()
    space, props = source.describe(name)
    target.store_id = props.get(STORE_PROPERTY) or store_id
    target.ensure_named(name, space)
    total = source.count(name)
    copied = 0
    if on_progress:
        on_progress(name, 0, total)
    for rows in source.rows_with_vectors(name, batch):
        copied += target.upsert_rows(name, rows)
        if on_progress:
            on_progress(name, copied, total)
    target.flush(name)
    removed = 0
    if target.count(name) != total:  # rows the source no longer has: an earlier run copied them
        extra = set(target.ids(name)) - set(source.ids(name))
        if extra:
            target.delete_ids(name, extra)
            target.flush(name)
            removed = len(extra)
    return Copied(
        name,
        total,
        copied,
        target.count(name),
        removed,
        target.full_text(name),
        time.perf_counter() - t0,
    )


def copy_catalog(catalog: Catalog, dest: Path) -> bool:
    """The catalog copied to `dest` (SQLite's online backup: consistent while others read);
    False where `dest` is the catalog itself. A catalog at `dest` of another library is
    refused; one of this library (an earlier run) is overwritten."""
    if dest.resolve() == catalog.file.resolve():
        return False
    if dest.exists():
        there = Catalog(dest)
        try:
            other, files = there.store_id, there.has_files()
        finally:
            there.close()
        if files and other != catalog.store_id:
            raise StoreError(
                f"{dest} is the catalog of another library (store id {other}): move it away, "
                "or give the server store its own with --catalog"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(catalog.file)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return True


def copy_thumbnails(source: Path, dest: Path) -> int:
    """The thumbnail cache copied (thumbnails already there are kept); how many it holds: the
    rows of its SQLite file, and the files of a cache made before it."""
    if not source.is_dir() or source.resolve() == dest.resolve():
        return 0
    files = [p for p in source.rglob("*.jpg") if p.is_file()]  # shown ones, and older caches'
    for path in files:
        target = dest / path.relative_to(source)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    if not files and not (source / DB_NAME).is_file():
        return 0
    store = thumbnail_store(dest)
    if (source / DB_NAME).is_file():
        thumbnail_store(source).copy_to(store)
    only_files = 0
    for path in files:  # <key>_<size>.jpg: a file the SQLite cache lacks (an older cache's)
        key, _, size = path.stem.rpartition("_")
        only_files += not (size.isdigit() and store.has(key, int(size)))
    return store.count() + only_files
