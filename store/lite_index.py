"""Search snapshots of Milvus Lite collections: exact dense and BM25 search in numpy.

Milvus Lite 3.2.2 runs its searches in Python, row by row: a hybrid search takes ~270 ms at
100k rows on 2 cores, where a matrix product over the same vectors takes ~10 ms (issue 17).
So an embedded store keeps, beside it (`<store>.search/`), a snapshot of each collection it
searches: the unit vectors (a memory-mapped .npy), the fields a hit shows (SQLite), and an
inverted index that scores BM25 exactly as Milvus Lite does (its `\\w+` lowercase tokens,
k1 1.5, b 0.75, IDF log(1 + (N - df + 0.5) / (df + 0.5))), over the whole collection.

A snapshot is derived and disposable, and it never answers with rows Milvus would not hold:

- every write to a collection bumps its generation (a small SQLite file in that folder)
  before and after the write (`Snapshots.bump`, called by `MilvusStore`);
- a snapshot is built from Milvus's rows under a stamp read before and after reading them
  (a write in between discards it), in a temporary folder renamed into place when complete;
- a search uses the snapshot whose stamp is the collection's current one, else Milvus.

Each write also journals the media and segment ids it touches, and, once Milvus has taken it,
what it did (`Replay`: the rows upserted, vectors included; the media or ids deleted; the
collection made or dropped). So the next build replays those writes onto the previous snapshot
(or onto an empty collection) without reading Milvus back, which cost the Lite server more than
the writes themselves (issue 17); where a write's outcome is unknown (it failed, or writes
overlapped) it reads only the touched rows from Milvus instead. Either is checked against
Milvus's row count; a write that says nothing, or a count that differs, means reading every row.
BM25 statistics cover the whole collection, where Milvus Lite keeps them per segment, so
scores can differ from Lite's once it holds several segments (rows and order otherwise agree).

Searches whose filter is not one this module reads (`modality == "x"`, `media_id in [...]`,
joined by `and`) or that group by another field go to Milvus too.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import threading
import uuid
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1  # the snapshot layout; a snapshot of another layout is rebuilt, never read
BM25_K1, BM25_B = 1.5, 0.75  # Milvus Lite's defaults (mmrag sets no BM25 parameters)
RRF_K = 60
MAX_TOUCHED = 5000  # past this many media and ids written since, a build reads every row
JOURNAL_SLACK_BYTES = 256 << 20  # free space the journal keeps after a build, at most
SPARSE_KEEP = 8  # a filter keeping under 1/8 of the rows: a dense search reads only theirs
_TOKEN = re.compile(r"\w+", re.UNICODE)  # Milvus Lite's `standard` analyzer
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_CLAUSE = re.compile(
    rf"\s*(?:modality\s*==\s*(?P<modality>{_QUOTED})"
    rf"|media_id\s+in\s+\[(?P<media>\s*(?:{_QUOTED}\s*(?:,\s*{_QUOTED}\s*)*)?)\])\s*"
)
_AND = re.compile(r"and\s+")
_VECTOR_FILES = ("vectors", "media", "modality", "post_docs", "post_w")


# Past this many rows in one collection, `status` says a Milvus server would serve the store
# better: a snapshot search reads every vector, ~140 ms for a hybrid query over 1M 384-d rows
# on 2 cores (query encoding on top: issue 17's 150 ms ceiling), a full snapshot build takes
# minutes there, and Milvus Lite answers in seconds while a snapshot is stale
# (docs/benchmarks.md, search latency at scale).
EMBEDDED_ROWS = 1_000_000


def notes(stale: list[str], rows: dict[str, int]) -> list[str]:
    """What `status` says about how an embedded store searches."""
    out = [
        f"{name}: its search snapshot lacks the latest writes, so searches there use Milvus "
        "Lite (slower) until the next `mmrag ingest` rebuilds it"
        for name in stale
        if rows.get(name)
    ]
    big = {name: n for name, n in rows.items() if n > EMBEDDED_ROWS}
    if big:
        name, n = max(big.items(), key=lambda kv: kv[1])
        out.append(
            f"{name} holds {n:,} segments, past the {EMBEDDED_ROWS:,} an embedded store searches "
            "well: a Milvus server serves it faster (README: Milvus, a server for scale)"
        )
    return out


def tokens(text: str) -> list[str]:
    """The terms Milvus Lite's `standard` analyzer makes of a text."""
    return _TOKEN.findall(text.lower())


def snapshots_folder(store_path: Path) -> Path:
    """Where a Lite store's snapshots live: beside it, never inside Milvus's own folder."""
    return store_path.with_name(store_path.name + ".search")


@dataclass(frozen=True)
class Filter:
    """The part of a Milvus filter a snapshot answers: a modality and a set of media ids."""

    modality: str | None = None
    media: frozenset[str] | None = None

    def among(self, media: frozenset[str] | None) -> Filter:
        """The filter keeping only these of its media too (None: no more than it keeps)."""
        if media is None:
            return self
        return Filter(self.modality, media if self.media is None else self.media & media)


def parse_filter(expr: str) -> Filter | None:
    """`expr` as a Filter, or None where it says anything else (Milvus answers those)."""
    modality: str | None = None
    media: frozenset[str] | None = None
    at, text = 0, expr.strip()
    while at < len(text):
        m = _CLAUSE.match(text, at)
        if m is None:
            return None
        if m["modality"] is not None:
            if modality is not None:
                return None
            modality = _unquote(m["modality"])
        else:
            found = frozenset(_unquote(q) for q in re.findall(_QUOTED, m["media"]))
            media = found if media is None else media & found
        at = m.end()
        if at < len(text):
            joint = _AND.match(text, at)
            if joint is None:
                return None
            at = joint.end()
    return Filter(modality, media)


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


@dataclass(frozen=True)
class Touched:
    """What one write may change in a collection: these media's rows, these rows."""

    media: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Replay:
    """What one write that Milvus took did, in this order: the collection emptied (made or
    dropped), the rows of these media deleted, these rows deleted, these rows upserted (as
    sent to Milvus, `vector` included)."""

    empty: bool = False
    media: Sequence[str] = ()
    ids: Sequence[str] = ()
    rows: Sequence[dict[str, Any]] = ()

    def entries(self) -> Iterator[tuple[str, str | None, str | None, str | None, bytes | None]]:
        """(op, key, media, fields as JSON, vector as float32 bytes), in replay order."""
        if self.empty:
            yield "empty", None, None, None, None
        for m in self.media:
            yield "media", m, None, None, None
        for i in self.ids:
            yield "id", i, None, None, None
        for r in self.rows:
            fields = {k: v for k, v in r.items() if k != "vector"}
            vector = np.asarray(r["vector"], dtype=np.float32).tobytes()
            yield "row", r["id"], r["media_id"], json.dumps(fields), vector


def _journal(touched: Touched | None) -> list[tuple[str, str | None]]:
    if touched is None:
        return [("all", None)]
    found = [("media", m) for m in touched.media] + [("id", i) for i in touched.ids]
    return found or [("none", None)]


class Snapshots:
    """The snapshots of one Lite store, and the write generations that say which are current."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._state: sqlite3.Connection | None = None
        self._open: dict[str, Snapshot] = {}

    def close(self) -> None:
        with self._lock:
            for snap in self._open.values():
                snap.close()
            self._open.clear()
            if self._state is not None:
                self._state.close()
                self._state = None

    # -- generations -----------------------------------------------------------------------

    def _db(self, create: bool) -> sqlite3.Connection | None:
        if self._state is None:
            path = self.folder / "state.sqlite"
            if not create and not path.exists():
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(
                "CREATE TABLE IF NOT EXISTS generation (collection TEXT PRIMARY KEY, "
                "epoch TEXT NOT NULL, gen INTEGER NOT NULL);"
                # what each generation's write touched (kind: media, id, none, all), so the
                # next build reads only those rows from Milvus (see `build`)
                "CREATE TABLE IF NOT EXISTS changes (collection TEXT NOT NULL, "
                "gen INTEGER NOT NULL, kind TEXT NOT NULL, key TEXT);"
                "CREATE INDEX IF NOT EXISTS changes_gen ON changes(collection, gen);"
                # what each finished write did (see Replay), so a build needs no Milvus reads
                "CREATE TABLE IF NOT EXISTS replay (collection TEXT NOT NULL, "
                "gen INTEGER NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL, key TEXT, "
                "media TEXT, fields TEXT, vector BLOB);"
                "CREATE INDEX IF NOT EXISTS replay_gen ON replay(collection, gen, seq);"
            )
            self._state = db
        return self._state

    def bump(self, collection: str, touched: Touched | None = None) -> int:
        """A write to `collection` is about to happen (`touched`: the media and segment ids
        it may change; None: unknown): its snapshot is out of date. Returns the generation,
        for `wrote`. The epoch (random, set when the row is made) tells a recreated state file
        from the old one."""
        return self._next(collection, _journal(touched))

    def wrote(self, collection: str, began: int, replay: Replay | None) -> None:
        """The write `bump` began at generation `began` is over: what it did where Milvus
        took it (`replay`), None where it failed (its outcome is unknown)."""
        if replay is None:
            self._next(collection, [("none", None)])
        else:
            self._next(collection, [("done", str(began))], replay)

    def _next(
        self, collection: str, journal: list[tuple[str, str | None]], replay: Replay | None = None
    ) -> int:
        with self._lock:
            db = self._db(create=True)
            assert db is not None
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO generation(collection, epoch, gen) VALUES (?, ?, 1) "
                    "ON CONFLICT(collection) DO UPDATE SET gen = gen + 1",
                    (collection, uuid.uuid4().hex[:12]),
                )
                (gen,) = db.execute(
                    "SELECT gen FROM generation WHERE collection = ?", (collection,)
                ).fetchone()
                db.executemany(
                    "INSERT INTO changes VALUES (?, ?, ?, ?)",
                    [(collection, gen, kind, key) for kind, key in journal],
                )
                if replay is not None:
                    db.executemany(
                        "INSERT INTO replay VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        ((collection, gen, seq, *e) for seq, e in enumerate(replay.entries())),
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return int(gen)

    def stamp(self, collection: str) -> str | None:
        """The collection's current write stamp; None where no write was ever recorded (a
        store made before snapshots: it gets one with its next write)."""
        with self._lock:
            db = self._db(create=False)
            row = (
                db.execute(
                    "SELECT epoch, gen FROM generation WHERE collection = ?", (collection,)
                ).fetchone()
                if db
                else None
            )
        return f"{row[0]}-{row[1]}" if row else None

    # -- reading ---------------------------------------------------------------------------

    def current(self, collection: str) -> Snapshot | None:
        """The collection's snapshot if it was built from what Milvus holds now, else None."""
        stamp = self.stamp(collection)
        if stamp is None:
            return None
        with self._lock:
            snap = self._open.get(collection)
            if snap is not None and snap.stamp == stamp:
                return snap
            if snap is not None:
                snap.close()
                del self._open[collection]
            where = self._final(collection, stamp)
            if not (where / "done").is_file():
                return None
            try:
                snap = Snapshot(where, stamp)
            except (OSError, sqlite3.Error, KeyError, ValueError):
                return None  # swept by a newer build meanwhile, or unreadable: Milvus answers
            self._open[collection] = snap
            return snap

    def stale(self, collections: Iterable[str]) -> list[str]:
        """Which of these collections have writes their snapshot lacks (or no snapshot)."""
        out = []
        for name in collections:
            stamp = self.stamp(name)
            if stamp is None or not (self._final(name, stamp) / "done").is_file():
                out.append(name)
        return out

    def _final(self, collection: str, stamp: str) -> Path:
        return self.folder / f"{collection}@{stamp}.v{FORMAT}"

    # -- building --------------------------------------------------------------------------

    def build(
        self,
        collection: str,
        dim: int,
        read: Any,
        full_text: bool,
        read_touched: Any = None,
        count: Any = None,
    ) -> Path | None:
        """Build `collection`'s snapshot; None when a write came in meanwhile (built again
        next time).

        From the previous snapshot and `read_touched(media, ids)` (Milvus's rows of those media
        and ids, in batches) where every write since it says what it touched and the row count
        then matches `count()` (Milvus's); else from `read()`, every row (batches of Milvus's
        rows with `vector`). Written to a temporary folder and renamed into place when
        complete, so a crash leaves a folder no search reads (removed by the next build);
        older snapshots go after."""
        if self.stamp(collection) is None:
            self.bump(collection)  # a store made before snapshots: start its generations
        stamp = self.stamp(collection)
        assert stamp is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{collection}@{stamp}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            since = self._since(collection, stamp) if count else None
            batches: Iterator[list[dict]] | None = None
            if since is not None and since.replayed:
                batches = _replayed(since.base, self._replay_log(collection, since.old, stamp))
            elif since is not None and since.touched is not None and read_touched:
                assert since.base is not None
                batches = _merged(since.base, since.touched, read_touched)
            if batches is None or _write(tmp, batches, dim, full_text) != count():
                shutil.rmtree(tmp, ignore_errors=True)
                _write(tmp, read(), dim, full_text)
            if self.stamp(collection) != stamp:
                shutil.rmtree(tmp, ignore_errors=True)
                return None
            final = self._final(collection, stamp)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._sweep(collection, keep=final)
        with self._lock:
            db = self._state
            assert db is not None
            gen = int(stamp.rsplit("-", 1)[1])
            for table in ("changes", "replay"):
                sql = f"DELETE FROM {table} WHERE collection = ? AND gen <= ?"
                db.execute(sql, (collection, gen))
            (free,) = db.execute("PRAGMA freelist_count").fetchone()
            (size,) = db.execute("PRAGMA page_size").fetchone()
            if free * size > JOURNAL_SLACK_BYTES:  # a large ingest's replayed rows: give back
                db.execute("VACUUM")
        return final

    def _since(self, collection: str, stamp: str) -> Since | None:
        """What a build can start from: the latest complete snapshot of this epoch (None: an
        empty collection, where the writes since it was made are all journaled) and the
        journal since; None where a full build is needed."""
        epoch, gen = stamp.rsplit("-", 1)
        found = [(0, None)]
        for path in self.folder.glob(f"{collection}@{epoch}-*.v{FORMAT}"):
            old = path.name[len(collection) + 1 : -len(f".v{FORMAT}")].rsplit("-", 1)[1]
            if old.isdigit() and int(old) < int(gen) and (path / "done").is_file():
                found.append((int(old), path))
        old, path = max(found, key=lambda f: f[0])
        with self._lock:
            db = self._state
            assert db is not None
            rows = db.execute(
                "SELECT gen, kind, key FROM changes WHERE collection = ? AND gen > ? AND gen <= ?",
                (collection, old, int(gen)),
            ).fetchall()
            emptied = db.execute(
                "SELECT 1 FROM replay WHERE collection = ? AND gen > ? AND gen <= ? "
                "AND op = 'empty' LIMIT 1",
                (collection, old, int(gen)),
            ).fetchone()
        if len({g for g, _, _ in rows}) != int(gen) - old:
            return None  # a write journaled nothing (made before journals)
        kinds = {g: (k, key) for g, k, key in rows}
        first = kinds.get(old + 1)
        if first and first[0] == "done" and int(first[1] or 0) <= old:
            return None  # the snapshot was read while a write was under way
        replayed = _paired(kinds) and (path is not None or emptied is not None)
        touched = None
        if path is not None and not any(k == "all" for _, k, _ in rows):
            media = frozenset(key for _, kind, key in rows if kind == "media")
            ids = frozenset(key for _, kind, key in rows if kind == "id")
            if len(media) + len(ids) <= MAX_TOUCHED:  # Milvus scans all once per 500 keys
                touched = Touched(media, ids)
        if not replayed and touched is None:
            return None
        return Since(path, old, touched, replayed)

    def _replay_log(self, collection: str, old: int, stamp: str) -> Any:
        """A function of (ops, rows): the journal's replay entries after generation `old`,
        in order, without fields and vectors (`rows=False`), or only the upserted rows."""
        gen = int(stamp.rsplit("-", 1)[1])

        def entries(rows: bool) -> Iterator[tuple]:
            with self._lock:
                db = self._state
                assert db is not None
                cursor = db.execute(
                    "SELECT gen, seq, op, key, media"
                    + (", fields, vector" if rows else "")
                    + " FROM replay WHERE collection = ? AND gen > ? AND gen <= ?"
                    + (" AND op = 'row'" if rows else "")
                    + " ORDER BY gen, seq",
                    (collection, old, gen),
                )
                found = cursor.fetchall() if not rows else None
            if found is not None:
                yield from found
                return
            while batch := _fetch(self._lock, cursor, 2000):
                yield from batch

        return entries

    def _sweep(self, collection: str, keep: Path) -> None:
        """Remove the collection's other snapshots and the temporary folders of builds that
        died (their process is gone)."""
        for path in self.folder.iterdir():
            if path == keep:
                continue
            if path.name.startswith(f"{collection}@") or (
                path.name.startswith(f".{collection}@") and not _alive(path.name)
            ):
                shutil.rmtree(path, ignore_errors=True)


def _fetch(lock: threading.Lock, cursor: sqlite3.Cursor, n: int) -> list[tuple]:
    with lock:
        return cursor.fetchmany(n)


@dataclass(frozen=True)
class Since:
    """Where a build starts: a snapshot (None: empty) at generation `old`, what the writes
    since touched (None: not known), and whether their replay says all they did."""

    base: Path | None
    old: int
    touched: Touched | None
    replayed: bool


def _paired(kinds: dict[int, tuple[str, str | None]]) -> bool:
    """Whether the journal is a run of whole writes, one after the other: each generation
    that began a write followed at once by the one that says what it did."""
    gens = sorted(kinds)
    if len(gens) % 2:
        return False
    for began, done in zip(gens[::2], gens[1::2], strict=True):
        kind, key = kinds[done]
        if kinds[began][0] == "done" or kind != "done" or key != str(began):
            return False
    return True


def _replayed(base: Path | None, log: Any, batch: int = 5000) -> Iterator[list[dict]]:
    """The snapshot's rows (none: `base` None) with the journaled writes applied, as Milvus
    applied them: an upsert replaces a row by id, a delete by media or id removes rows."""
    latest: dict[str, tuple[int, int] | None] = {}  # id -> the upsert it holds, None: deleted
    of_media: dict[str, set[str]] = {}  # media -> journaled ids
    gone: set[str] = set()  # media whose snapshot rows were deleted
    keep_base = base is not None
    for gen, seq, op, key, media in log(False):
        if op == "empty":
            latest.clear()
            of_media.clear()
            gone.clear()
            keep_base = False
        elif op == "media":
            gone.add(key)
            for sid in of_media.pop(key, ()):
                latest[sid] = None
        elif op == "id":
            latest[key] = None
        else:
            latest[key] = (gen, seq)
            of_media.setdefault(media, set()).add(key)
    if keep_base:
        assert base is not None
        for rows in _snapshot_rows(base, batch):
            yield [r for r in rows if r["media_id"] not in gone and r["id"] not in latest]
    out: list[dict] = []
    for gen, seq, _, key, _, fields, vector in log(True):
        if latest.get(key) == (gen, seq):
            out.append({**json.loads(fields), "vector": np.frombuffer(vector, np.float32)})
            if len(out) >= batch:
                yield out
                out = []
    yield out


def _alive(tmp_name: str) -> bool:
    m = re.search(r"\.tmp-(\d+)-", tmp_name)
    if not m:
        return False
    try:
        os.kill(int(m[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(m[1]) != os.getpid()


def _merged(
    old: Path, touched: Touched, read_touched: Any, batch: int = 5000
) -> Iterator[list[dict]]:
    """The previous snapshot's rows, less those of the touched media and ids, then Milvus's
    rows of those (each id once)."""
    for rows in _snapshot_rows(old, batch):
        yield [r for r in rows if r["media_id"] not in touched.media and r["id"] not in touched.ids]
    seen: set[str] = set()
    for rows in read_touched(sorted(touched.media), sorted(touched.ids)):
        fresh = [r for r in rows if r["id"] not in seen]
        seen.update(r["id"] for r in fresh)
        yield fresh


def _snapshot_rows(folder: Path, batch: int) -> Iterator[list[dict]]:
    """A snapshot's rows, in its order, as Milvus gives them (`vector` included)."""
    db = sqlite3.connect(f"file:{folder / 'rows.sqlite'}?mode=ro", uri=True)
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    try:
        cursor = db.execute(
            'SELECT idx, id, media_id, modality, "start", "end", page, text, meta FROM rows '
            "ORDER BY idx"
        )
        while found := cursor.fetchmany(batch):
            # one read of the batch's vectors (rows are numbered 0..n-1 in order): a view of
            # the memory map per row cost more than the rest of the row
            first = found[0][0]
            block = np.array(vectors[first : found[-1][0] + 1])
            yield [
                {"id": sid, "media_id": m, "modality": mod, "start": start, "end": end,
                 "page": page, "text": text, "meta": json.loads(meta), "vector": block[i - first]}
                for i, sid, m, mod, start, end, page, text, meta in found
            ]  # fmt: skip
    finally:
        db.close()


def _write(folder: Path, batches: Iterator[list[dict]], dim: int, full_text: bool) -> int:
    """Write a snapshot's files into `folder` (rows, vectors, BM25 postings), "done" last;
    return how many rows."""
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "rows.sqlite", isolation_level=None)
    db.executescript(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;"
        "CREATE TABLE rows (idx INTEGER PRIMARY KEY, id TEXT, media_id TEXT, modality TEXT, "
        '"start" REAL, "end" REAL, page INTEGER, text TEXT, meta TEXT);'
        "CREATE TABLE media (code INTEGER PRIMARY KEY, id TEXT UNIQUE);"
        "CREATE TABLE modalities (code INTEGER PRIMARY KEY, name TEXT UNIQUE);"
        "CREATE TABLE terms (term TEXT PRIMARY KEY, start INTEGER, stop INTEGER, df INTEGER);"
        "CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT);"
    )
    vectors: list[np.ndarray] = []
    media_codes: dict[str, int] = {}
    modality_codes: dict[str, int] = {}
    media_col: list[int] = []
    modality_col: list[int] = []
    postings = _Postings()
    lengths: list[int] = []
    n = 0
    for batch in batches:
        rows = []
        for r in batch:
            media_col.append(media_codes.setdefault(r["media_id"], len(media_codes)))
            modality_col.append(modality_codes.setdefault(r["modality"], len(modality_codes)))
            text = r.get("text") or ""
            if full_text:
                counts = Counter(tokens(text))
                lengths.append(sum(counts.values()))
                postings.add(n, counts)
            rows.append(
                (n, r["id"], r["media_id"], r["modality"], r["start"], r["end"], r["page"],
                 text, json.dumps(r.get("meta") or {}))
            )  # fmt: skip
            n += 1
        if batch:  # a snapshot's rows carry arrays (stacked at once), Milvus's lists
            rows_vectors = [r["vector"] for r in batch]
            stack = np.stack if isinstance(rows_vectors[0], np.ndarray) else np.asarray
            vectors.append(stack(rows_vectors).astype(np.float32, copy=False))
        db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    del vectors
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.where(norms > 0, norms, 1.0)  # cosine: unit rows, as Milvus compares
    docs, weights = _bm25_postings(db, postings, lengths) if full_text else ([], [])
    db.executemany("INSERT INTO media VALUES (?, ?)", [(c, m) for m, c in media_codes.items()])
    db.executemany(
        "INSERT INTO modalities VALUES (?, ?)", [(c, m) for m, c in modality_codes.items()]
    )
    info = {"rows": n, "dim": dim, "full_text": int(full_text), "format": FORMAT}
    db.executemany("INSERT INTO info VALUES (?, ?)", [(k, str(v)) for k, v in info.items()])
    db.execute("COMMIT")
    db.close()
    arrays = {
        "vectors": matrix,
        "media": np.asarray(media_col, dtype=np.int32),
        "modality": np.asarray(modality_col, dtype=np.int16),
        "post_docs": np.asarray(docs, dtype=np.int32),
        "post_w": np.asarray(weights, dtype=np.float64),  # BM25 in double, as Lite sums it
    }
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", values)
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    (folder / "done").write_text(json.dumps(info))
    return n


class _Postings:
    """BM25 postings as they are gathered: flat arrays of (term number, row, tf), terms
    numbered as first seen; a list per term cost a Python tuple per posting."""

    def __init__(self) -> None:
        self.terms: dict[str, int] = {}
        self.term, self.row, self.tf = array("i"), array("i"), array("i")

    def add(self, row: int, counts: Counter) -> None:
        terms = self.terms
        self.term.extend([terms.setdefault(t, len(terms)) for t in counts])
        self.row.extend([row] * len(counts))
        self.tf.extend(counts.values())


def _bm25_postings(
    db: sqlite3.Connection, postings: _Postings, lengths: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Postings as one array of rows and one of each row's BM25 term weight (IDF aside, which
    depends on the term only): tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)). Grouped by term
    in the order terms were first seen, each term's rows in order."""
    dl = np.asarray(lengths, dtype=np.float64)
    n_docs = len(lengths)  # Milvus Lite counts empty texts too
    avgdl = float(dl.mean()) if n_docs and dl.sum() > 0 else 1.0
    term = np.asarray(postings.term, dtype=np.int32)
    order = np.argsort(term, kind="stable")
    docs = np.asarray(postings.row, dtype=np.int32)[order]
    tfs = np.asarray(postings.tf, dtype=np.float64)[order]
    ends = np.cumsum(np.bincount(term, minlength=len(postings.terms)))
    db.executemany(
        "INSERT INTO terms VALUES (?, ?, ?, ?)",
        (
            (name, int(end - df), int(end), int(df))
            for (name, df, end) in zip(postings.terms, np.diff(ends, prepend=0), ends, strict=True)
        ),
    )
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * dl[docs] / avgdl) if len(docs) else 0.0
    weights = tfs * (BM25_K1 + 1.0) / (tfs + norm)
    db.execute("INSERT INTO info VALUES ('docs', ?)", (str(n_docs),))
    return docs, weights


class Snapshot:
    """One collection's snapshot, opened read-only (arrays memory-mapped)."""

    def __init__(self, folder: Path, stamp: str) -> None:
        self.folder = folder
        self.stamp = stamp
        self._db = sqlite3.connect(
            f"file:{folder / 'rows.sqlite'}?mode=ro", uri=True, check_same_thread=False
        )
        self._lock = threading.Lock()
        a = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in _VECTOR_FILES}
        self.vectors, self.media, self.modality = a["vectors"], a["media"], a["modality"]
        self.post_docs, self.post_w = a["post_docs"], a["post_w"]
        info = dict(self._db.execute("SELECT key, value FROM info").fetchall())
        self.rows = int(info["rows"])
        self.docs = int(info.get("docs", self.rows))
        self.full_text = info["full_text"] == "1"

    def close(self) -> None:
        self._db.close()

    def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- filters ---------------------------------------------------------------------------

    def mask(self, f: Filter) -> np.ndarray | None:
        """Rows the filter keeps (None: all)."""
        keep: np.ndarray | None = None
        if f.modality is not None:
            code = self._all("SELECT code FROM modalities WHERE name = ?", (f.modality,))
            keep = self.modality == code[0][0] if code else np.zeros(self.rows, bool)
        if f.media is not None:
            codes = self._codes(sorted(f.media))
            found = np.isin(self.media, codes) if codes else np.zeros(self.rows, bool)
            keep = found if keep is None else keep & found
        return keep

    def _codes(self, media_ids: list[str]) -> list[int]:
        out: list[int] = []
        for i in range(0, len(media_ids), 500):
            part = media_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            out += [
                c
                for (c,) in self._all(f"SELECT code FROM media WHERE id IN ({marks})", tuple(part))
            ]
        return out

    # -- searches (each returns ranked (row index, score) pairs) ---------------------------

    def dense(
        self, vectors: np.ndarray, limit: int, keep: np.ndarray | None, group: bool = False
    ) -> list[list[tuple[int, float]]]:
        """Exact cosine top `limit` per query row; with `group`, each file's best row only.
        Scanning the vectors is bound by memory (160 MB for 100k 384-d rows), so a filter that
        keeps few rows reads only theirs."""
        q = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        kept = np.flatnonzero(keep) if keep is not None else None
        if kept is not None and len(kept) * SPARSE_KEEP < self.rows:
            scores = np.full((len(q), self.rows), -np.inf, np.float32)
            scores[:, kept] = q @ self.vectors[kept].T
        else:
            scores = q @ self.vectors.T if self.rows else np.zeros((len(q), 0), np.float32)
            if keep is not None:
                scores[:, ~keep] = -np.inf
        return [self._top_groups(s, limit) if group else _top(s, limit) for s in scores]

    def _top_groups(self, scores: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """The best row of each of the `limit` best files: deeper cuts until enough files."""
        depth = limit
        while True:
            ranked = _top(scores, depth)
            seen: set[int] = set()
            picked = []
            for i, s in ranked:
                m = int(self.media[i])
                if m not in seen:
                    seen.add(m)
                    picked.append((i, s))
            if len(picked) >= limit or len(ranked) < depth:
                return picked[:limit]
            depth *= 4

    def bm25(self, text: str, limit: int, keep: np.ndarray | None) -> list[tuple[int, float]]:
        """Exact BM25 over the whole collection (Milvus Lite's formula and tokens)."""
        counts = Counter(tokens(text))
        if not counts or not self.full_text:
            return []
        marks = ",".join("?" * len(counts))
        found = self._all(
            f"SELECT term, start, stop, df FROM terms WHERE term IN ({marks})", tuple(counts)
        )
        acc = np.zeros(self.rows, dtype=np.float64)
        for term, start, stop, df in found:
            idf = math.log((self.docs - df + 0.5) / (df + 0.5) + 1.0)
            acc[self.post_docs[start:stop]] += (idf * counts[term]) * self.post_w[start:stop]
        if keep is not None:
            acc[~keep] = 0.0
        hit = np.flatnonzero(acc > 0)
        return [(int(hit[i]), s) for i, s in _top(acc[hit], limit)]

    def hybrid(
        self,
        vector: np.ndarray,
        text: str,
        limit: int,
        keep: np.ndarray | None,
        fusion: str,
        dense_weight: float,
    ) -> list[tuple[int, float]]:
        """Dense and BM25 candidates (each max(3 limit, 50) deep) fused as Milvus's rankers
        do: weighted (cosine -> (1 + cos) / 2, BM25 -> 2 / pi atan(score)) or RRF (k 60)."""
        depth = max(3 * limit, 50)
        legs = [self.dense(vector[None], depth, keep)[0], self.bm25(text, depth, keep)]
        fused: dict[int, float] = {}
        if fusion == "rrf":
            for leg in legs:
                for rank, (i, _) in enumerate(leg):
                    fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
        elif fusion == "weighted":
            norms = (lambda s: (1.0 + s) * 0.5, lambda s: 2.0 * math.atan(s) / math.pi)
            for leg, w, norm in zip(legs, (dense_weight, 1.0 - dense_weight), norms, strict=True):
                for i, s in leg:
                    fused[i] = fused.get(i, 0.0) + w * norm(s)
        else:
            raise ValueError(f"unknown fusion {fusion!r}; use 'weighted' or 'rrf'")
        return sorted(fused.items(), key=lambda kv: kv[1], reverse=True)[:limit]

    def hits(self, ranked: list[tuple[int, float]]) -> list[dict]:
        """The rows (Milvus's output fields) of ranked (row index, score) pairs, with "score"."""
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        found = {
            r[0]: r
            for r in self._all(
                f'SELECT idx, id, media_id, modality, "start", "end", page, text, meta '
                f"FROM rows WHERE idx IN ({marks})",
                tuple(i for i, _ in ranked),
            )
        }
        out = []
        for i, score in ranked:
            _, sid, media_id, modality, start, end, page, text, meta = found[i]
            out.append(
                {"id": sid, "media_id": media_id, "modality": modality, "start": start,
                 "end": end, "page": page, "text": text, "meta": json.loads(meta),
                 "score": float(score)}
            )  # fmt: skip
        return out


def _top(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The `k` highest finite scores, best first (ties: lower row first)."""
    n = len(scores)
    if k <= 0 or n == 0:
        return []
    if k < n:  # rows tied with the k-th: the first rows, not any (argpartition's pick)
        kth = np.partition(-scores, k - 1)[k - 1]
        above = np.flatnonzero(-scores < kth)
        top = np.concatenate([above, np.flatnonzero(-scores == kth)[: k - len(above)]])
    else:
        top = np.arange(n)
    top = top[np.lexsort((top, -scores[top]))]
    return [(int(i), float(scores[i])) for i in top if np.isfinite(scores[i])]
