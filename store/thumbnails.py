"""The thumbnail cache beside the store: one JPEG per content (or video moment, or page), by key.

Ingest puts each thumbnail's bytes in one SQLite file (`thumbnails.sqlite` in the cache folder,
as digiKam keeps its thumbnails): a row costs a fraction of a new file's inode, directory entry
and rename, and a million photos are one file to copy, not a million. A thumbnail becomes a file
(`<folder>/ab/<key>_256.jpg`) only when a hit shows it: the CLI prints that path, the HTTP API
sends it. Files from stores made before the SQLite cache are used as they are.

Keys are content hashes (or a hash and a moment's start), so a renamed file keeps its thumbnail,
and the path is built from the key alone: the HTTP API serves thumbnails without ever taking a
path from a request.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

# Thumbnails shown with hits fill a 256 px square cell (shorter side 256, as Immich's do): a
# photo decoded for the models already has that size, so a thumbnail is one JPEG encode.
THUMBNAIL_SIDE = 256
DB_NAME = "thumbnails.sqlite"
SCHEMA_VERSION = 1

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_INSERT = "INSERT OR IGNORE INTO thumbs (key, size, jpeg) VALUES (?, ?, ?)"  # the first one stays


def thumbnail_path(cache_dir: Path, media_id: str, size: int = THUMBNAIL_SIDE) -> Path:
    """cache_dir/ab/<media_id>_<size>.jpg, where a shown thumbnail's file goes: keyed by content
    hash, so a renamed file keeps it.

    The id is checked because the path is built from it and served over HTTP.
    """
    if not _SAFE_ID.fullmatch(media_id):
        raise ValueError(f"media id {media_id!r} is not a plain hash (letters, digits, _ and -)")
    return Path(cache_dir) / media_id[:2] / f"{media_id}_{int(size)}.jpg"


class ThumbnailStore:
    """The JPEG bytes of one cache folder's thumbnails, by (key, size), in one SQLite file.

    Safe across threads (one connection behind a lock) and processes (WAL: readers never wait,
    writers take turns). Each put is its own small transaction, committed before the file's
    catalog row says done, so a crash never leaves a done file without its thumbnail."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self._lock = threading.Lock()
        self.folder.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        try:
            _set_up(db, self.path)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise ValueError(
                f"thumbnail cache {self.path} is unreadable ({exc}): move it aside and ingest "
                "again with --retry-failed (files done before it show without a thumbnail)"
            ) from exc
        except BaseException:
            db.close()
            raise
        self._db = db

    def has(self, key: str, size: int = THUMBNAIL_SIDE) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM thumbs WHERE key = ? AND size = ?", (key, int(size))
            ).fetchone()
        return row is not None

    def get(self, key: str, size: int = THUMBNAIL_SIDE) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT jpeg FROM thumbs WHERE key = ? AND size = ?", (key, int(size))
            ).fetchone()
        return bytes(row[0]) if row else None

    def put(self, key: str, jpeg: bytes, size: int = THUMBNAIL_SIDE) -> None:
        """Store a thumbnail unless one is there (the first one made for a content stays)."""
        self.put_many({(key, size): jpeg})

    def put_many(self, thumbnails: Mapping[tuple[str, int], bytes]) -> None:
        """Store {(key, size): JPEG} in one transaction (those the cache has already stay)."""
        rows = []
        for (key, size), jpeg in thumbnails.items():
            if not jpeg:
                raise ValueError(f"thumbnail {key!r} is empty")
            thumbnail_path(self.folder, key, size)  # the key must make a safe file name
            rows.append((key, int(size), jpeg))
        with self._lock:
            self._insert([rows])

    def entries(self) -> list[tuple[str, int]]:
        """Every (key, size) held, in key order."""
        with self._lock:
            rows = self._db.execute("SELECT key, size FROM thumbs ORDER BY key, size")
            return [(k, int(n)) for k, n in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM thumbs").fetchone()[0])

    def copy_to(self, other: ThumbnailStore) -> int:
        """Every thumbnail into `other` (those it has already are kept); how many it holds."""
        with self._lock:
            rows = self._db.execute("SELECT key, size, jpeg FROM thumbs")
            with other._lock:
                other._insert(iter(lambda: rows.fetchmany(500), []))
        return other.count()

    def _insert(self, batches: Iterable[list[tuple[str, int, bytes]]]) -> None:
        """(key, size, JPEG) rows in one transaction, those held already kept (the caller
        holds the lock)."""
        self._db.execute("BEGIN")
        try:
            for batch in batches:
                self._db.executemany(_INSERT, batch)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _set_up(db: sqlite3.Connection, path: Path) -> None:
    """WAL and the table, in one write transaction that waits its turn: reader processes open
    a new cache at once, and a schema change outside one can fail at once with "database is
    locked" rather than wait (the likely cause of one CI failure, not reproduced here)."""
    for attempt in range(100):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: an application crash loses nothing
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"thumbnail cache {path} is version {version}, newer than this mmrag reads "
                f"({SCHEMA_VERSION}): upgrade mmrag"
            )
        db.execute(
            "CREATE TABLE IF NOT EXISTS thumbs (key TEXT NOT NULL, size INTEGER NOT NULL, "
            "jpeg BLOB NOT NULL, PRIMARY KEY (key, size))"
        )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


_OPEN: dict[tuple[int, str], ThumbnailStore] = {}
_OPEN_LOCK = threading.Lock()


def thumbnail_store(cache_dir: Path) -> ThumbnailStore:
    """The cache folder's store, opened once per process (reader threads and processes, the
    search and the API all go through here; called once per photo, so kept to a dict look-up
    and one stat)."""
    key = (os.getpid(), os.fspath(cache_dir))
    with _OPEN_LOCK:
        store = _OPEN.get(key)
        if store is not None and not os.path.exists(store.path):  # the folder was deleted
            store.close()
            store = None
        if store is None:
            store = _OPEN[key] = ThumbnailStore(Path(cache_dir))
        return store


_held: dict[tuple[str, int], bytes] | None = None
_held_lock = threading.Lock()


@contextmanager
def held_thumbnails() -> Iterator[dict[tuple[str, int], bytes]]:
    """Thumbnails this process makes meanwhile go into the dict yielded, {(key, size): JPEG},
    not into a cache: a Ray worker, maybe on another machine than the store (whose cache it
    cannot reach, and whose SQLite file must not sit on a network filesystem), hands them back
    with its file, and the driver stores them before the file is marked done. One holder at a
    time per process."""
    global _held
    held: dict[tuple[str, int], bytes] = {}
    with _held_lock:
        if _held is not None:
            raise RuntimeError("thumbnails are already held in this process")
        _held = held
    try:
        yield held
    finally:
        with _held_lock:
            _held = None


def ensure_thumbnail(
    cache_dir: Path, key: str, make: Callable[[], bytes], size: int = THUMBNAIL_SIDE
) -> None:
    """Store `make()`'s JPEG under `key` unless the cache has it (made once per content), or
    keep it where thumbnails are held (`held_thumbnails`)."""
    with _held_lock:
        held = _held
    if held is not None:
        if (key, int(size)) not in held:
            jpeg = make()
            with _held_lock:
                held.setdefault((key, int(size)), jpeg)
        return
    store = thumbnail_store(cache_dir)
    if not store.has(key, size):
        store.put(key, make(), size)


def thumbnail_file(cache_dir: Path, key: str, size: int = THUMBNAIL_SIDE) -> Path | None:
    """The thumbnail as a file, for a hit shown: written from the store the first time (to a
    temporary name, then renamed, so a reader never sees half a JPEG); None where the cache has
    none or the file cannot be written. An empty file (a crash before its data reached the
    disk) counts as missing."""
    target = thumbnail_path(cache_dir, key, size)
    try:
        if target.stat().st_size > 0:
            return target
    except FileNotFoundError:
        pass
    if not (Path(cache_dir) / DB_NAME).is_file():
        return None
    try:
        data = thumbnail_store(cache_dir).get(key, size)
    except (ValueError, sqlite3.Error):
        return None  # an unreadable cache: shown without thumbnails (ingest says why)
    if data is None:
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return None  # a read-only cache: the hit goes without its thumbnail
    return target
