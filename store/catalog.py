"""The ingestion catalog: what was seen, what is done, what failed (SQLite, versioned schema).

Media are keyed by content hash, so a rename or a copy points a new path at vectors that already
exist. Paths carry what the filesystem said (size, mtime) so an unchanged file is skipped without
reading it. Each write to Milvus is recorded per collection, segment id by segment id.
"""

from __future__ import annotations

import fnmatch
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 7

_BUSY_TIMEOUT_S = 30.0
# A glob's folders are read by index up to this many (the ranges go into one OR of index terms)
FOLDERS_MAX = 200
# Paths sampled to tell a filter's share (Catalog.share_matching): a share of 1/16 is told within
# about a fifth, in one query of at most 500 arguments
SHARE_SAMPLE = 500


def _name_of(display: str) -> str:
    """SQL for a path's file name: what follows its last "/" (rsplit("/", 1)[-1])."""
    return f"substr({display}, length({_folder_of(display)}) + 1)"


def _folder_of(path: str) -> str:
    """SQL for a path's folder: up to and with its last "/" ("" for none)."""
    return f"rtrim({path}, replace({path}, '/', ''))"


def _folders_kept(new: str) -> str:
    """SQL that records the folders of a path row (`new`: NEW in a trigger). Those already
    there are left out by the query, not by OR IGNORE: an outer upsert's conflict handling
    overrides a trigger's (`ON CONFLICT(path) DO UPDATE` made the duplicate an error)."""
    return (
        f"INSERT INTO folders SELECT f FROM (SELECT {_folder_of(new + '.display')} AS f "
        f"UNION SELECT {_folder_of(new + '.path')}) WHERE f NOT IN (SELECT folder FROM folders)"
    )


_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE media (
        id TEXT PRIMARY KEY,            -- content hash (xxh3-128, hex)
        modality TEXT NOT NULL,
        format TEXT NOT NULL,
        size INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done')),
        updated_at REAL NOT NULL
    );
    CREATE TABLE paths (
        path TEXT PRIMARY KEY,          -- absolute path
        display TEXT NOT NULL,          -- the path as the user gave it to `ingest`
        root TEXT NOT NULL,             -- the ingest root it was found under (for --prune)
        media_id TEXT REFERENCES media(id),
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        error TEXT,                     -- why the file could not be ingested, if it could not
        seen_at REAL NOT NULL
    );
    CREATE INDEX paths_media ON paths(media_id);
    CREATE INDEX paths_root ON paths(root);
    CREATE TABLE segments (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        media_id TEXT NOT NULL REFERENCES media(id),
        PRIMARY KEY (collection, id)
    );
    CREATE INDEX segments_media ON segments(media_id);
    """,
    # What a photo says about itself (EXIF), for search filters; NULL where it says nothing.
    # Media catalogued under v1 get theirs when they are next embedded.
    2: """
    ALTER TABLE media ADD COLUMN taken_at TEXT;  -- ISO-8601, the camera's wall clock
    ALTER TABLE media ADD COLUMN camera TEXT;
    ALTER TABLE media ADD COLUMN lat REAL;
    ALTER TABLE media ADD COLUMN lon REAL;
    """,
    # Facts about the catalog itself; `store_id` names the Milvus store it belongs to (the same
    # id is a property of that store's collections), so a catalog is never read against another
    # store's rows. Set on first open by mmrag.app.open_store.
    3: """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # Content indexed with something the user should know (a recording that ends early, with
    # what was kept); NULL for most. Rewritten each time the content is embedded.
    4: """
    ALTER TABLE media ADD COLUMN warning TEXT;
    """,
    # Which model (collection) each space's search answers from, apart from the configured
    # model: a switch fills `target` while search keeps using `model`, then cuts over in one
    # transaction (ingest/reindex.py). `retired`: cut over from, still to be dropped in Milvus.
    5: """
    CREATE TABLE served (
        space TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        collection TEXT NOT NULL,
        target_model TEXT,
        target_collection TEXT,
        retired TEXT,
        updated_at REAL NOT NULL
    );
    """,
    # Search filters answered in SQL (Catalog.media_matching): a path glob with a fixed start
    # and a modification-date range read an index range, not every path row. `name`: what
    # follows the last "/" of `display`, kept by triggers (SQL has no cheap way to cut it).
    6: f"""
    ALTER TABLE paths ADD COLUMN name TEXT;
    UPDATE paths SET name = {_name_of("display")};
    CREATE TRIGGER paths_name_new AFTER INSERT ON paths BEGIN
        UPDATE paths SET name = {_name_of("NEW.display")} WHERE rowid = NEW.rowid;
    END;
    CREATE TRIGGER paths_name_renamed AFTER UPDATE OF display ON paths BEGIN
        UPDATE paths SET name = {_name_of("NEW.display")} WHERE rowid = NEW.rowid;
    END;
    CREATE INDEX paths_display ON paths(display);
    CREATE INDEX paths_name ON paths(name);
    CREATE INDEX paths_mtime ON paths(mtime_ns);
    """,
    # A path glob that starts with a wildcard and names folders (`*/2024/*`) reads the paths of
    # the folders it can match (MediaWhere.folder_glob) rather than every path row. `folders`:
    # the folder of every path, as given and absolute, kept by triggers (never pruned: a folder
    # with no paths left only costs an index look-up). A date range reads its media from the
    # mtime index alone (a table look-up a path cost 5 times as much at 105k paths).
    7: f"""
    DROP INDEX paths_mtime;
    CREATE INDEX paths_mtime ON paths(mtime_ns, media_id);
    CREATE TABLE folders (folder TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT OR IGNORE INTO folders SELECT {_folder_of("display")} FROM paths;
    INSERT OR IGNORE INTO folders SELECT {_folder_of("path")} FROM paths;
    CREATE TRIGGER paths_folders_new AFTER INSERT ON paths BEGIN
        {_folders_kept("NEW")};
    END;
    CREATE TRIGGER paths_folders_moved AFTER UPDATE OF display, path ON paths BEGIN
        {_folders_kept("NEW")};
    END;
    """,
}


@dataclass(frozen=True)
class MediaFacts:
    """When, with what and where a file was taken, as its EXIF or container tags say (each may
    be unknown)."""

    taken_at: str | None = None
    camera: str | None = None
    lat: float | None = None
    lon: float | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> MediaFacts:
        gps = meta.get("gps") or {}
        return cls(meta.get("taken_at"), meta.get("camera"), gps.get("lat"), gps.get("lon"))

    @classmethod
    def of_row(cls, row: sqlite3.Row) -> MediaFacts:
        return cls(row["taken_at"], row["camera"], row["lat"], row["lon"])

    def row(self) -> tuple[str | None, str | None, float | None, float | None]:
        return (self.taken_at, self.camera, self.lat, self.lon)

    def hit_fields(self) -> dict[str, Any]:
        gps = {"lat": self.lat, "lon": self.lon} if self.lat is not None else None
        return {"taken_at": self.taken_at, "camera": self.camera, "gps": gps}


@dataclass(frozen=True)
class Served:
    """A space's served model and collection, and the switch in progress, if any."""

    space: str
    model: str
    collection: str
    target_model: str | None = None
    target_collection: str | None = None
    retired: str | None = None  # a collection cut over from, not yet dropped


@dataclass(frozen=True)
class PathRecord:
    path: str
    display: str
    media_id: str | None
    size: int
    mtime_ns: int
    error: str | None
    seen_at: float


# Lat/lon bounds of a place filter: (lat low, lat high, lon ranges or None for any longitude)
Box = tuple[float, float, tuple[tuple[float, float], ...] | None]


@dataclass(frozen=True)
class MediaWhere:
    """Search filters the catalog answers in SQL (`Catalog.media_matching`); None is no filter.

    Each is exact but `box`, a superset that the caller narrows (a distance is checked in
    Python on the few rows inside the box)."""

    glob: str | None = None  # fnmatch-style, on the path as given, the absolute path, the name
    mtime_since: float | None = None  # modified at or after (seconds since the epoch)
    mtime_until: float | None = None  # modified before
    taken_since: datetime | None = None  # taken at or after, on the camera's wall clock
    taken_until: datetime | None = None  # taken before
    camera: str | None = None  # part of the camera's make and model, any case
    box: Box | None = None

    def sql(self) -> tuple[list[str], list[Any]]:
        """WHERE clauses on `paths p JOIN media m`, and their arguments."""
        where: list[str] = []
        args: list[Any] = []
        if self.glob:
            where.append(_glob_clause(self.glob, args))
        # mtime_ns / 1e9 as Python divides it (the same IEEE double), behind an index range
        # one second wider
        if self.mtime_since is not None:
            where.append("p.mtime_ns >= ? AND p.mtime_ns / 1e9 >= ?")
            args += [_ns(self.mtime_since - 1), self.mtime_since]
        if self.mtime_until is not None:
            where.append("p.mtime_ns < ? AND p.mtime_ns / 1e9 < ?")
            args += [_ns(self.mtime_until + 1), self.mtime_until]
        for bound, op in ((self.taken_since, ">="), (self.taken_until, "<")):
            if bound is not None:
                where.append(f"mmrag_wall_clock(m.taken_at) {op} ?")
                args.append(_wall_clock(bound))
        if self.camera:
            where.append("instr(mmrag_casefold(m.camera), ?) > 0")
            args.append(self.camera.casefold())
        if self.box is not None:
            where.append(_box_clause(self.box, args))
        return where, args

    def folder_glob(self) -> str | None:
        """A GLOB that the folder of every path the glob keeps matches, where the glob starts
        with a wildcard (no index serves it) and names a folder; else None.

        The glob (as SQL GLOB, a superset) is A/B with no "/" in B. A path it keeps is x/y with
        x matching A: that "/" ends the path's folder, or lies inside it, so the folder (with
        its last "/") matches A/*."""
        glob = glob_sql(self.glob)[0] if self.glob else ""
        if glob[:1] not in ("*", "?") or "/" not in glob or os.path.normcase("A") != "A":
            return None
        return glob[: glob.rindex("/")] + "/*"


class Catalog:
    """Thread-safe: the ingest runner's reader and writer threads share one connection."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path
        self._db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT_S
        )
        self._db.row_factory = sqlite3.Row
        for name, arity, fn in _SQL_FUNCTIONS:
            self._db.create_function(name, arity, fn, deterministic=True)
        self._lock = threading.RLock()
        self._wal()
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _wal(self) -> None:
        """Switch to WAL, retrying: two processes opening a new catalog at once race here, and
        SQLite answers "locked" at once instead of waiting (it skips the busy handler where
        waiting could deadlock)."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self._db.close()

    # -- schema ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self.transaction():
            current = self.version
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"catalog {self.file} has schema v{current}, newer than this mmrag "
                    f"(v{SCHEMA_VERSION}); upgrade mmrag"
                )
            for v in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _statements(_MIGRATIONS[v]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {v}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- which store -------------------------------------------------------------------------

    @property
    def store_id(self) -> str | None:
        """The id of the store this catalog belongs to; None until it is first paired."""
        row = self._one("SELECT value FROM meta WHERE key = 'store_id'")
        return row["value"] if row else None

    def claim_store_id(self, store_id: str) -> str:
        """Pair the catalog with a store unless it already is (another process may have been
        first); return the id it belongs to now."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('store_id', ?) ON CONFLICT(key) DO NOTHING",
                (store_id,),
            )
        return str(self.store_id)

    def has_files(self) -> bool:
        """Whether any path points at content (cheap, unlike counts(): checked on every open)."""
        return self._one("SELECT 1 FROM paths WHERE media_id IS NOT NULL LIMIT 1") is not None

    def wrote_to(self, collection: str) -> bool:
        """Whether this catalog has recorded rows in a Milvus collection (its evidence that the
        collection is its store's)."""
        return (
            self._one("SELECT 1 FROM segments WHERE collection = ? LIMIT 1", (collection,))
            is not None
        )

    # -- which model each space is searched with (ingest/reindex.py) -------------------------

    def served(self) -> dict[str, Served]:
        """The spaces with a recorded served model (a space without one serves its configured
        model, or what its rows say: ingest/reindex.py)."""
        rows = self._all("SELECT * FROM served ORDER BY space")
        return {
            r["space"]: Served(
                r["space"],
                r["model"],
                r["collection"],
                r["target_model"],
                r["target_collection"],
                r["retired"],
            )
            for r in rows
        }

    def begin_switch(
        self, space: str, model: str, collection: str, target_model: str, target_collection: str
    ) -> None:
        """Record a switch: search keeps answering from `model` while `target` is filled."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO served(space, model, collection, target_model, target_collection, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(space) DO UPDATE SET "
                "model=excluded.model, collection=excluded.collection, "
                "target_model=excluded.target_model, "
                "target_collection=excluded.target_collection, updated_at=excluded.updated_at",
                (space, model, collection, target_model, target_collection, time.time()),
            )

    def cut_over(self, space: str) -> str:
        """Serve the switch's target from now on, in one transaction: the old collection is
        retired (to be dropped) and its segments forgotten. Returns the old collection."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM served WHERE space = ?", (space,)).fetchone()
            if row is None or row["target_model"] is None:
                raise RuntimeError(f"catalog {self.file}: no switch of {space} in progress")
            db.execute(  # every right-hand side is the row as it was
                "UPDATE served SET model=target_model, collection=target_collection, "
                "target_model=NULL, target_collection=NULL, retired=collection, updated_at=? "
                "WHERE space = ?",
                (time.time(), space),
            )
            db.execute("DELETE FROM segments WHERE collection = ?", (row["collection"],))
        return str(row["collection"])

    def cancel_switch(self, space: str) -> str | None:
        """Give up a switch (search never left the served model): its target's segments are
        forgotten. Returns the target collection, to be dropped."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM served WHERE space = ?", (space,)).fetchone()
            if row is None or row["target_collection"] is None:
                return None
            db.execute(
                "UPDATE served SET target_model=NULL, target_collection=NULL, retired=?, "
                "updated_at=? WHERE space = ?",
                (row["target_collection"], time.time(), space),
            )
            db.execute("DELETE FROM segments WHERE collection = ?", (row["target_collection"],))
        return str(row["target_collection"])

    def dropped(self, space: str) -> None:
        """The space's retired collection is gone from Milvus."""
        with self.transaction() as db:
            db.execute("UPDATE served SET retired=NULL WHERE space = ?", (space,))

    def contents_in(self, collection: str) -> int:
        """How many contents have segments in a collection."""
        row = self._one(
            "SELECT count(DISTINCT media_id) FROM segments WHERE collection = ?", (collection,)
        )
        return int(row[0])

    def collections_named(self, start: str) -> list[str]:
        """The collections whose names start so that the catalog has recorded rows in, one
        index probe each (searches ask this: no scan of the segments)."""
        found: list[str] = []
        after, stop = start, start + "\U0010ffff"
        while row := self._one(
            "SELECT collection FROM segments WHERE collection >= ? AND collection < ? "
            "ORDER BY collection LIMIT 1",
            (after, stop),
        ):
            found.append(row["collection"])
            after = row["collection"] + "\x00"
        return found

    def one_path_each(self) -> list[tuple[str, str, str]]:
        """(path, display, root) of every content that is done: its most recently seen path
        that did not fail. What a reindex reads again."""
        rows = self._all(
            "SELECT p.path, p.display, p.root, p.media_id FROM paths p "
            "JOIN media m ON m.id = p.media_id WHERE m.status = 'done' AND p.error IS NULL "
            "ORDER BY p.seen_at ASC"
        )
        newest = {r["media_id"]: (r["path"], r["display"], r["root"]) for r in rows}
        return sorted(newest.values())

    # -- reads -------------------------------------------------------------------------------

    def path_record(self, path: str) -> PathRecord | None:
        row = self._one("SELECT * FROM paths WHERE path = ?", (path,))
        return _path_record(row) if row else None

    def path_records(self, paths: Iterable[str]) -> dict[str, PathRecord]:
        """The records of those of these paths the catalog knows, 500 to a query: what an
        ingest reads for a whole scan at once, rather than one query per file."""
        wanted = list(dict.fromkeys(paths))
        out: dict[str, PathRecord] = {}
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            rows = self._all(
                f"SELECT * FROM paths WHERE path IN ({','.join('?' * len(part))})", tuple(part)
            )
            out.update((r["path"], _path_record(r)) for r in rows)
        return out

    def media_done(self, media_id: str, collections: Iterable[str]) -> bool:
        """Done, with segments in every one of the given collections: a new model in any of
        them (a new collection) means the content is embedded again."""
        names = sorted(set(collections))
        marks = ",".join("?" * len(names))
        row = self._one(
            "SELECT count(DISTINCT s.collection) FROM media m JOIN segments s ON s.media_id = m.id "
            f"WHERE m.id = ? AND m.status = 'done' AND s.collection IN ({marks})",
            (media_id, *names),
        )
        return bool(names) and row[0] == len(names)

    def done_collections(self, media_id: str) -> set[str] | None:
        """The collections holding segments of a content that is done; None when it is not
        (unknown, or a write of it was cut short: pending)."""
        row = self._one("SELECT status FROM media WHERE id = ?", (media_id,))
        if row is None or row["status"] != "done":
            return None
        return set(self.collections_of(media_id))

    def only_in(self, collection: str, not_in: str) -> int:
        """How many contents have segments in `collection` and none in `not_in` (files on a
        space's fallback model, not yet on its configured one)."""
        row = self._one(
            "SELECT count(DISTINCT s.media_id) FROM segments s WHERE s.collection = ? AND NOT "
            "EXISTS (SELECT 1 FROM segments t WHERE t.media_id = s.media_id AND t.collection = ?)",
            (collection, not_in),
        )
        return int(row[0])

    def warning_of(self, media_id: str) -> str | None:
        row = self._one("SELECT warning FROM media WHERE id = ?", (media_id,))
        return row["warning"] if row else None

    def set_warnings(self, items: list[tuple[str, str | None]]) -> None:
        """Replace contents' warnings ((media id, warning or None)), their status kept: a
        stored file embedded again in one space says what still holds."""
        with self.transaction() as db:
            db.executemany("UPDATE media SET warning=? WHERE id=?", [(w, m) for m, w in items])

    def media_modality(self, media_id: str) -> str | None:
        row = self._one("SELECT modality FROM media WHERE id = ?", (media_id,))
        return row["modality"] if row else None

    def known_media(self, media_ids: list[str]) -> set[str]:
        """Which of these contents the catalog has any record of (pending or done)."""
        found: set[str] = set()
        for i in range(0, len(media_ids), 500):
            part = media_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._all(f"SELECT id FROM media WHERE id IN ({marks})", tuple(part))
            found.update(r["id"] for r in rows)
        return found

    def is_orphan(self, media_id: str) -> bool:
        return self._one("SELECT 1 FROM paths WHERE media_id = ?", (media_id,)) is None

    def collections_of(self, media_id: str) -> list[str]:
        rows = self._all("SELECT DISTINCT collection FROM segments WHERE media_id = ?", (media_id,))
        return [r["collection"] for r in rows]

    def segment_ids(self, media_id: str, collection: str | None = None) -> list[str]:
        sql, args = "SELECT id FROM segments WHERE media_id = ?", (media_id,)
        if collection:
            sql, args = sql + " AND collection = ?", (media_id, collection)
        return [r["id"] for r in self._all(sql + " ORDER BY rowid", args)]

    def locations(self, media_id: str) -> list[tuple[str, str]]:
        """Where a content lives: (path, the folder it was ingested from), newest first; paths
        that failed are left out. What a server may serve for a media id, and nothing else."""
        rows = self._all(
            "SELECT path, root FROM paths WHERE media_id = ? AND error IS NULL "
            "ORDER BY seen_at DESC",
            (media_id,),
        )
        return [(r["path"], r["root"]) for r in rows]

    def roots(self) -> list[str]:
        """The folders that were ingested (those holding at least one indexed file)."""
        rows = self._all("SELECT DISTINCT root FROM paths WHERE media_id IS NOT NULL")
        return sorted(r["root"] for r in rows)

    def display_paths(self, media_ids: Iterable[str]) -> dict[str, PathRecord]:
        """For each media, its most recently seen path: where a hit is shown to live."""
        ids = list(dict.fromkeys(media_ids))
        out: dict[str, PathRecord] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._all(
                f"SELECT * FROM paths WHERE media_id IN ({marks}) ORDER BY seen_at ASC", tuple(part)
            )
            for row in rows:  # later rows (newer) win
                out[row["media_id"]] = _path_record(row)
        return out

    def paths_by_media(self) -> dict[str, list[str]]:
        """Every indexed content and the paths (as given to ingest) that hold it."""
        out: dict[str, list[str]] = {}
        for r in self._all("SELECT media_id, display FROM paths WHERE media_id IS NOT NULL"):
            out.setdefault(r["media_id"], []).append(r["display"])
        return out

    def media_matching(
        self,
        accept: Callable[[PathRecord, MediaFacts], bool] | None = None,
        where: MediaWhere | None = None,
        among: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> set[str]:
        """Media ids with at least one path that `where` keeps (in SQL, through the indexes)
        and, where given, that `accept`s (in Python: only the rows SQL left are read whole).
        `among`: only these media are looked at; `limit`: stop once this many are found."""
        where = where or MediaWhere()
        clauses, args = where.sql()
        if among is None:
            folders = self._glob_folders(where)
            if folders is not None:  # the paths of the folders the glob can match, by index
                clauses.append(_within_clause(folders, args))
            return self._matching(accept, clauses, args, limit)
        ids, out = list(among), set()
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            chunk = [*clauses, f"p.media_id IN ({','.join('?' * len(part))})"]
            out |= self._matching(accept, chunk, [*args, *part], None)
        return out

    def share_matching(
        self,
        accept: Callable[[PathRecord, MediaFacts], bool] | None = None,
        where: MediaWhere | None = None,
        sample: int = SHARE_SAMPLE,
    ) -> float | None:
        """About what share of the paths `where` (and `accept`) keeps, from `sample` paths
        drawn at random (seeded: the same answer each time) by rowid: a fixed cost, where
        counting a broad filter's matches reads most rows. None: no path to look at."""
        lo, hi = self._rowid_ends()
        if lo is None or hi is None:
            return None
        rowids = random.Random(hi).sample(range(lo, hi + 1), min(sample, hi - lo + 1))
        clauses, args = (where or MediaWhere()).sql()
        cols = "p.media_id" if accept is None else "p.*, " + _FACTS
        test = " AND ".join(f"({c})" for c in clauses) or "1"
        rows = self._all(
            f"SELECT {cols}, ({test}) AS mmrag_kept FROM paths p JOIN media m "
            f"ON m.id = p.media_id WHERE p.rowid IN ({','.join('?' * len(rowids))})",
            (*args, *rowids),
        )
        seen = {r["media_id"] for r in rows}
        kept = {
            r["media_id"]
            for r in rows
            if r["mmrag_kept"] and (accept is None or accept(_path_record(r), MediaFacts.of_row(r)))
        }
        return len(kept) / len(seen) if seen else None

    def paths_at_most(self) -> int:
        """How many paths there are at most (the span of their rowids, rows deleted counted
        in): read from the rowid's two ends, where a count reads a whole index."""
        lo, hi = self._rowid_ends()
        return 0 if lo is None or hi is None else hi - lo + 1

    def _rowid_ends(self) -> tuple[int | None, int | None]:
        # one min() or max() a query: SQLite reads the rowid's two ends only then
        ends = "SELECT (SELECT min(rowid) FROM paths), (SELECT max(rowid) FROM paths)"
        row = self._one(ends)
        return (row[0], row[1]) if row else (None, None)

    def _glob_folders(self, where: MediaWhere) -> list[str] | None:
        """The outermost folders whose paths the glob can match (MediaWhere.folder_glob); None
        where that is not a few of them (reading the paths row by row costs about as much)."""
        pattern = where.folder_glob()
        if pattern is None:
            return None
        found = self._all("SELECT folder FROM folders WHERE folder GLOB ?", (pattern,))
        total = self._one("SELECT count(*) FROM folders")[0]
        if len(found) > min(FOLDERS_MAX, total // 2):
            return None
        return _outermost([r[0] for r in found])

    def _matching(
        self,
        accept: Callable[[PathRecord, MediaFacts], bool] | None,
        clauses: list[str],
        args: list[Any],
        limit: int | None,
    ) -> set[str]:
        cols = "DISTINCT p.media_id" if accept is None else "p.*, " + _FACTS
        sql = f"SELECT {cols} FROM paths p JOIN media m ON m.id = p.media_id"
        if clauses:
            sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
        if accept is None:
            if limit is not None:
                sql, args = sql + " LIMIT ?", [*args, limit]
            return {r[0] for r in self._all(sql, tuple(args))}
        out: set[str] = set()
        for r in self._all(sql, tuple(args)):
            if accept(_path_record(r), MediaFacts.of_row(r)):
                out.add(r["media_id"])
                if limit is not None and len(out) >= limit:
                    break
        return out

    def facts_of(self, media_ids: Iterable[str]) -> dict[str, MediaFacts]:
        ids = list(dict.fromkeys(media_ids))
        out: dict[str, MediaFacts] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            rows = self._all(
                "SELECT id, taken_at, camera, lat, lon FROM media "
                f"WHERE id IN ({','.join('?' * len(part))})",
                tuple(part),
            )
            out.update((r["id"], MediaFacts.of_row(r)) for r in rows)
        return out

    def paths_under(self, root: str) -> list[PathRecord]:
        rows = self._all("SELECT * FROM paths WHERE root = ?", (root,))
        return [_path_record(r) for r in rows]

    def unreadable_under(self, root: str) -> list[str]:
        """Paths found under this root that fail_unreadable recorded (a failure with no size
        and mtime, or a failure that still holds content)."""
        rows = self._all(
            "SELECT path FROM paths WHERE root = ? AND error IS NOT NULL "
            "AND (media_id IS NOT NULL OR (size = 0 AND mtime_ns = 0))",
            (root,),
        )
        return [r["path"] for r in rows]

    def warnings(self) -> list[tuple[str, str]]:
        """(path as given, why) of indexed files whose content came with a warning."""
        rows = self._all(
            "SELECT p.display, m.warning FROM paths p JOIN media m ON m.id = p.media_id "
            "WHERE m.warning IS NOT NULL AND p.error IS NULL ORDER BY p.display"
        )
        return [(r["display"], r["warning"]) for r in rows]

    def failures(self) -> list[PathRecord]:
        rows = self._all("SELECT * FROM paths WHERE error IS NOT NULL ORDER BY display")
        return [_path_record(r) for r in rows]

    def orphan_media(self) -> list[str]:
        rows = self._all(
            "SELECT id FROM media WHERE NOT EXISTS (SELECT 1 FROM paths WHERE media_id = media.id)"
        )
        return [r["id"] for r in rows]

    def counts(self) -> dict[str, int]:
        q = {
            "paths": "SELECT count(*) FROM paths WHERE media_id IS NOT NULL",
            "media": "SELECT count(*) FROM media WHERE status = 'done'",
            "pending": "SELECT count(*) FROM media WHERE status = 'pending'",
            "failed": "SELECT count(*) FROM paths WHERE error IS NOT NULL",
            "segments": "SELECT count(*) FROM segments",
        }
        return {k: int(self._one(sql)[0]) for k, sql in q.items()}

    def facts_by_modality(self) -> dict[str, dict[str, int]]:
        """Per modality, how many contents say when, with what and where they were taken: what
        the --taken-*, --camera and --near filters can find."""
        rows = self._all(
            "SELECT modality, count(*) media, count(taken_at) taken_at, count(camera) camera, "
            "count(lat) gps FROM media WHERE status='done' GROUP BY 1"
        )
        return {
            r["modality"]: {k: r[k] for k in ("media", "taken_at", "camera", "gps")} for r in rows
        }

    def media_by_modality(self) -> dict[str, int]:
        rows = self._all("SELECT modality, count(*) n FROM media WHERE status='done' GROUP BY 1")
        return {r["modality"]: r["n"] for r in rows}

    # -- writes ------------------------------------------------------------------------------

    def begin_media(
        self, media_id: str, modality: str, fmt: str, size: int, facts: MediaFacts | None = None
    ) -> None:
        self.begin_media_many([(media_id, modality, fmt, size, facts or MediaFacts(), None)])

    def begin_media_many(
        self, items: list[tuple[str, str, str, int, MediaFacts, str | None]]
    ) -> None:
        """Mark contents (id, modality, format, size, facts, warning) as being written: a crash
        now leaves them 'pending', and pending content is rewritten from scratch on the next
        run."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO media(id, modality, format, size, status, updated_at, "
                "taken_at, camera, lat, lon, warning) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET status='pending', updated_at=excluded.updated_at, "
                "taken_at=excluded.taken_at, camera=excluded.camera, lat=excluded.lat, "
                "lon=excluded.lon, warning=excluded.warning",
                [(*item[:4], now, *item[4].row(), item[5]) for item in items],
            )

    def finish_media(self, media_id: str, collection: str, segment_ids: list[str]) -> None:
        self.finish_media_many({collection: {media_id: segment_ids}})

    def finish_media_many(self, written: dict[str, dict[str, list[str]]]) -> None:
        """Record the segments now in Milvus ({collection: {media: ids}}) and mark those
        media done, in one transaction: done means written to every space it feeds."""
        now = time.time()
        with self.transaction() as db:
            for collection, per_media in written.items():
                for media_id, segment_ids in per_media.items():
                    db.execute(
                        "DELETE FROM segments WHERE media_id = ? AND collection = ?",
                        (media_id, collection),
                    )
                    db.executemany(
                        "INSERT INTO segments(collection, id, media_id) VALUES (?, ?, ?)",
                        [(collection, sid, media_id) for sid in segment_ids],
                    )
            media = {m for per_media in written.values() for m in per_media}
            db.executemany(
                "UPDATE media SET status='done', updated_at=? WHERE id=?", [(now, m) for m in media]
            )

    def link_path(
        self, path: str, display: str, root: str, media_id: str, size: int, mtime_ns: int
    ) -> str | None:
        """Point a path at content; return the media it pointed at before, if different."""
        old = self._set_path(path, display, root, media_id, size, mtime_ns, None)
        return old if old != media_id else None

    def link_paths(self, items: list[tuple[str, str, str, str, int, int]]) -> list[str | None]:
        """link_path for many (path, display, root, media id, size, mtime_ns), in one
        transaction; for each, the media it pointed at before if different (else None)."""
        now = time.time()
        old: list[str | None] = []
        with self.transaction() as db:
            for path, display, root, media_id, size, mtime_ns in items:
                row = db.execute("SELECT media_id FROM paths WHERE path=?", (path,)).fetchone()
                before = row["media_id"] if row else None
                old.append(before if before != media_id else None)
                db.execute(
                    "INSERT OR REPLACE INTO paths"
                    "(path, display, root, media_id, size, mtime_ns, error, seen_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                    (path, display, root, media_id, size, mtime_ns, now),
                )
        return old

    def touch_path(self, path: str, display: str, root: str) -> None:
        """An unchanged file was seen again: refresh when and how it was named (and forget that
        it could not be read for a while: see fail_unreadable)."""
        self.touch_paths([(path, display, root)])

    def touch_paths(self, items: list[tuple[str, str, str]]) -> None:
        """touch_path for many (path, display, root), in one transaction."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "UPDATE paths SET seen_at=?, display=?, root=?, error=NULL WHERE path=?",
                [(now, display, root, path) for path, display, root in items],
            )

    def fail_path(
        self, path: str, display: str, root: str, size: int, mtime_ns: int, error: str
    ) -> str | None:
        """Record why a file could not be ingested; return the media it pointed at before."""
        return self._set_path(path, display, root, None, size, mtime_ns, error)

    def fail_unreadable(self, path: str, display: str, root: str, error: str) -> None:
        """Record a path the scan could not read (a broken symlink, a symlink loop, a folder it
        cannot list), so `status` shows it. It has no size or mtime (0). A path that held
        content keeps it, with its size and mtime, as a deleted file does until --prune."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO paths(path, display, root, media_id, size, mtime_ns, error, seen_at) "
                "VALUES (?, ?, ?, NULL, 0, 0, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "display=excluded.display, root=excluded.root, error=excluded.error, "
                "seen_at=excluded.seen_at",
                (path, display, root, error, time.time()),
            )

    def forget_unreadable(self, paths: Iterable[str]) -> None:
        """These paths no longer fail to read (gone, or no longer a problem): drop the record of
        one that held nothing; one that held content keeps it (until --prune), without the
        error."""
        items = [(p,) for p in paths]
        with self.transaction() as db:
            db.executemany("DELETE FROM paths WHERE path=? AND media_id IS NULL", items)
            db.executemany("UPDATE paths SET error=NULL WHERE path=?", items)

    def _set_path(
        self,
        path: str,
        display: str,
        root: str,
        media_id: str | None,
        size: int,
        mtime_ns: int,
        error: str | None,
    ) -> str | None:
        """Write a path's row whole; return the media it pointed at before (or None)."""
        with self.transaction() as db:
            row = db.execute("SELECT media_id FROM paths WHERE path=?", (path,)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO paths"
                "(path, display, root, media_id, size, mtime_ns, error, seen_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (path, display, root, media_id, size, mtime_ns, error, time.time()),
            )
        return row["media_id"] if row else None

    def remove_paths(self, paths: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM paths WHERE path=?", [(p,) for p in paths])

    def forget_media(self, media_id: str) -> None:
        """Drop content whose segments have been deleted from Milvus."""
        with self.transaction() as db:
            db.execute("DELETE FROM segments WHERE media_id=?", (media_id,))
            db.execute("UPDATE paths SET media_id=NULL WHERE media_id=?", (media_id,))
            db.execute("DELETE FROM media WHERE id=?", (media_id,))


_FACTS = "m.taken_at, m.camera, m.lat, m.lon"


def _path_record(row: sqlite3.Row) -> PathRecord:
    return PathRecord(
        path=row["path"],
        display=row["display"],
        media_id=row["media_id"],
        size=row["size"],
        mtime_ns=row["mtime_ns"],
        error=row["error"],
        seen_at=row["seen_at"],
    )


def _statements(script: str) -> Iterator[str]:
    """A migration's statements, one by one (a trigger's body holds `;` of its own)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


_GLOB_LITERAL = {"*": "[*]", "?": "[?]", "[": "[[]"}


def _outermost(folders: list[str]) -> list[str]:
    """The folders not inside another of them (whose paths' ranges hold theirs)."""
    out: list[str] = []
    for folder in sorted(folders):
        if not (out and folder.startswith(out[-1])):
            out.append(folder)
    return out


def _within_clause(folders: list[str], args: list[Any]) -> str:
    """The path as given or the absolute path lies in one of these folders (each ends in "/"):
    an index range per folder and column, [folder, folder with its last "/" as "0")."""
    if not folders:
        return "0"
    terms = []
    for folder in folders:
        bound = folder[:-1] + "0"  # "0" follows "/": the range holds what starts with folder
        terms += ["(p.display >= ? AND p.display < ?)", "(p.path >= ? AND p.path < ?)"]
        args += [folder, bound, folder, bound]
    return " OR ".join(terms)


def glob_sql(pattern: str) -> tuple[str, bool]:
    """An fnmatch pattern as an SQLite GLOB pattern, and whether it is exact: a `[set]` becomes
    `?` (any one character), a superset that fnmatch then checks."""
    out: list[str] = []
    exact, i = True, 0
    while i < len(pattern):
        c = pattern[i]
        i += 1
        end = _set_end(pattern, i) if c == "[" else None
        if end is not None:
            out.append("?")
            exact, i = False, end + 1
        else:
            out.append(c if c in "*?" else _GLOB_LITERAL.get(c, c))
    return "".join(out), exact


def _set_end(pattern: str, i: int) -> int | None:
    """Where the `[set]` opened just before `i` closes, as fnmatch reads it; None: a literal."""
    j = i + 1 if pattern[i : i + 1] == "!" else i
    j = j + 1 if pattern[j : j + 1] == "]" else j
    j = pattern.find("]", j)
    return j if j >= 0 else None


def _glob_clause(pattern: str, args: list[Any]) -> str:
    """The path as given, the absolute path or the name matches (fnmatch.fnmatch's rules). A
    pattern with a literal "/" cannot match a name: without it, the paths' indexes serve a
    pattern with a fixed start."""
    glob, exact = glob_sql(pattern)
    cols: tuple[str, ...] = ("p.display", "p.path") + (() if "/" in glob else ("p.name",))
    if os.path.normcase("A") != "A":  # fnmatch ignores case here (Windows): GLOB would not
        args += [pattern] * len(cols)
        terms = [f"mmrag_fnmatch({c}, ?)" for c in cols]
    elif exact:
        args += [glob] * len(cols)
        terms = [f"{c} GLOB ?" for c in cols]
    else:
        args += [glob, pattern] * len(cols)
        terms = [f"({c} GLOB ? AND mmrag_fnmatch({c}, ?))" for c in cols]
    # an absolute path given as such is matched once (a scan costs a match a row)
    terms[1] = f"(p.path != p.display AND {terms[1]})"
    return " OR ".join(terms)


def _box_clause(box: Box, args: list[Any]) -> str:
    lat_lo, lat_hi, lons = box
    args += [lat_lo, lat_hi]
    clause = "m.lat BETWEEN ? AND ? AND m.lon IS NOT NULL"
    if lons is None:
        return clause
    for lo, hi in lons:
        args += [lo, hi]
    return clause + " AND (" + " OR ".join(["m.lon BETWEEN ? AND ?"] * len(lons)) + ")"


def _wall_clock(when: datetime | str | None) -> str | None:
    """A time as the camera's wall clock (UTC offset dropped), as text that sorts as it does;
    None for no time or one that is not ISO-8601."""
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            return None
    return None if when is None else when.replace(tzinfo=None).isoformat(timespec="microseconds")


def _ns(seconds: float) -> int:
    """Seconds as an index bound in nanoseconds, held to SQLite's 64-bit integers."""
    return max(-(2**63), min(2**63 - 1, int(seconds * 1e9)))


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


_SQL_FUNCTIONS: tuple[tuple[str, int, Callable[..., Any]], ...] = (
    ("mmrag_fnmatch", 2, fnmatch.fnmatch),
    ("mmrag_casefold", 1, _casefold),
    ("mmrag_wall_clock", 1, _wall_clock),
)
