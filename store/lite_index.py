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

Past LAYER_MIN_ROWS, a build that replays writes does not rewrite the snapshot: it links the
previous snapshot's files (its base), marks the base rows deleted or replaced since as dead, and
writes only the rows written since as a small delta, until those changes pass LAYER_SHARE of the
base; then a rewrite folds them in. Searches over base and delta give the rows and scores a
rewrite would (BM25 weighs postings with the live rows' statistics at search time).

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
# A build below this many rows rewrites the snapshot whole (seconds at most); above it, writes
# since the last build become a delta over the snapshot's files, until what they changed passes
# LAYER_SHARE of its rows (then a rewrite folds them in). A 1M-row rewrite takes ~36 s.
LAYER_MIN_ROWS = 20_000
LAYER_SHARE = 0.1
_LAYER_FILES = ("rows.sqlite", *(f"{n}.npy" for n in (*_VECTOR_FILES, "dl", "post_key")))
WEIGHT_TABLE = 1 << 22  # (tf, dl) cells a layered snapshot tabulates BM25 weights for, at most


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
            written: int | None = None
            if since is not None and since.replayed:
                log = self._replay_log(collection, since.old, stamp)
                if since.base is not None:
                    written = _layered(tmp, since.base, log, dim, full_text)
                if written is None:
                    written = _write(tmp, _replayed(since.base, log), dim, full_text)
            elif since is not None and since.touched is not None and read_touched:
                assert since.base is not None
                merged = _merged(since.base, since.touched, read_touched)
                written = _write(tmp, merged, dim, full_text)
            if written is None or written != count():
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


@dataclass
class _Replay:
    """What the journaled writes did to a snapshot's rows: whether its rows still count
    (`keep_base`: no write emptied the collection), the media whose rows were deleted, and
    each id written since (the upsert it holds as (gen, seq), None: deleted)."""

    keep_base: bool
    gone: set[str]
    latest: dict[str, tuple[int, int] | None]

    def kept(self, rows: list[dict]) -> list[dict]:
        """Those of a snapshot's rows no write since replaced or deleted."""
        return [r for r in rows if r["media_id"] not in self.gone and r["id"] not in self.latest]


def _replay_plan(base: Path | None, log: Any) -> _Replay:
    """Apply the journal's deletes and upserts (as Milvus applied them: an upsert replaces a
    row by id, a delete by media or id removes rows) to what a snapshot holds."""
    latest: dict[str, tuple[int, int] | None] = {}
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
    return _Replay(keep_base, gone, latest)


def _upserted(plan: _Replay, log: Any, batch: int) -> Iterator[list[dict]]:
    """The journal's upserted rows that hold (no later write replaced or deleted them)."""
    out: list[dict] = []
    for gen, seq, _, key, _, fields, vector in log(True):
        if plan.latest.get(key) == (gen, seq):
            out.append({**json.loads(fields), "vector": np.frombuffer(vector, np.float32)})
            if len(out) >= batch:
                yield out
                out = []
    yield out


def _replayed(base: Path | None, log: Any, batch: int = 5000) -> Iterator[list[dict]]:
    """The snapshot's rows (none: `base` None) with the journaled writes applied."""
    plan = _replay_plan(base, log)
    if plan.keep_base:
        assert base is not None
        for rows in _snapshot_rows(base, batch):
            yield plan.kept(rows)
    yield from _upserted(plan, log, batch)


def _layered(tmp: Path, base: Path, log: Any, dim: int, full_text: bool) -> int | None:
    """The journaled writes as a delta over `base`'s rows, without rewriting them: its files
    linked (the same inodes), the rows deleted or replaced since marked dead (`dead.npy`), and
    a small snapshot of the rows written since (`delta/`). Returns the rows it holds; None,
    writing nothing, where a rewrite serves better: a small base, one older than deltas, a
    write that emptied the collection, or changes past LAYER_SHARE of the base (so searches
    never pay for a large delta and dead rows, and a delta's rewrite stays small)."""
    if not all((base / name).is_file() for name in _LAYER_FILES):
        return None
    plan = _replay_plan(base, log)
    layer = _Layer(base)
    try:
        if not plan.keep_base or layer.rows < LAYER_MIN_ROWS:
            return None
        was_dead = set(_dead_rows(base).tolist())
        dead = was_dead | layer.rows_of(sorted(plan.gone), sorted(plan.latest))
        fresh = sum(1 for v in plan.latest.values() if v is not None)
        old_delta = base / "delta"
        held = 0
        if old_delta.is_dir():  # its rows' ids alone: the rows themselves are read once, below
            delta = _Layer(old_delta)
            ids = delta.all("SELECT id, media_id FROM rows")
            delta.close()
            held = sum(1 for sid, m in ids if m not in plan.gone and sid not in plan.latest)
        if len(dead) + held + fresh > LAYER_SHARE * layer.rows:
            return None
        dead_terms = Counter(_dead_terms(base)) if full_text else Counter()
        for text in layer.texts(sorted(dead - was_dead)) if full_text else ():
            dead_terms.update(set(tokens(text)))
    finally:
        layer.close()
    tmp.mkdir(parents=True)
    try:
        for name in _LAYER_FILES:
            os.link(base / name, tmp / name)
    except OSError:  # a file system without hard links: rewrite it whole
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    np.save(tmp / "dead.npy", np.asarray(sorted(dead), dtype=np.int64))
    (tmp / "dead_terms.json").write_text(json.dumps(dead_terms))  # BM25's df of the dead rows
    kept = (plan.kept(r) for r in _layer_rows(old_delta, 5000, None)) if old_delta.is_dir() else ()
    n = _write(tmp / "delta", _chain(kept, _upserted(plan, log, 5000)), dim, full_text)
    info = {"rows": layer.rows - len(dead) + n, "dim": dim, "full_text": int(full_text),
            "format": FORMAT, "base": layer.rows, "dead": len(dead), "delta": n}  # fmt: skip
    for name in ("dead.npy", "dead_terms.json"):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    (tmp / "done").write_text(json.dumps(info))
    return info["rows"]


def _chain(*parts: Iterable[list[dict]]) -> Iterator[list[dict]]:
    for part in parts:
        yield from part


def _dead_terms(folder: Path) -> dict[str, int]:
    """term -> how many of a layered snapshot's dead rows hold it (its BM25 df among them)."""
    path = folder / "dead_terms.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _dead_rows(folder: Path) -> np.ndarray:
    """The base rows a layered snapshot no longer holds (none in a whole one)."""
    path = folder / "dead.npy"
    return np.load(path) if path.is_file() else np.zeros(0, np.int64)


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


def _snapshot_rows(folder: Path, batch: int, vectors: bool = True) -> Iterator[list[dict]]:
    """A snapshot's rows, in its order, as Milvus gives them (`vector` included unless not):
    a layered one's live base rows, then its delta's."""
    yield from _layer_rows(folder, batch, _dead_rows(folder), vectors)
    if (folder / "delta").is_dir():
        yield from _layer_rows(folder / "delta", batch, None, vectors)


def _layer_rows(
    folder: Path, batch: int, dead: np.ndarray | None, vectors: bool = True
) -> Iterator[list[dict]]:
    """One layer's rows in order, less the `dead` row numbers (with vectors unless not)."""
    db = sqlite3.connect(f"file:{folder / 'rows.sqlite'}?mode=ro", uri=True)
    matrix = np.load(folder / "vectors.npy", mmap_mode="r")
    skip = set(dead.tolist()) if dead is not None and len(dead) else None
    try:
        cursor = db.execute(
            'SELECT idx, id, media_id, modality, "start", "end", page, text, meta FROM rows '
            "ORDER BY idx"
        )
        while found := cursor.fetchmany(batch):
            # one read of the batch's vectors (rows are numbered 0..n-1 in order): a view of
            # the memory map per row cost more than the rest of the row
            first = found[0][0]
            block = np.array(matrix[first : found[-1][0] + 1]) if vectors else None
            yield [
                {"id": sid, "media_id": m, "modality": mod, "start": start, "end": end,
                 "page": page, "text": text, "meta": json.loads(meta),
                 "vector": block[i - first] if block is not None else None}
                for i, sid, m, mod, start, end, page, text, meta in found
                if skip is None or i not in skip
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
    docs, keys, weights = _bm25_postings(db, postings, lengths) if full_text else ([], [], [])
    db.executemany("INSERT INTO media VALUES (?, ?)", [(c, m) for m, c in media_codes.items()])
    db.executemany(
        "INSERT INTO modalities VALUES (?, ?)", [(c, m) for m, c in modality_codes.items()]
    )
    info = {"rows": n, "dim": dim, "full_text": int(full_text), "format": FORMAT}
    db.executemany("INSERT INTO info VALUES (?, ?)", [(k, str(v)) for k, v in info.items()])
    # a delta marks the rows it replaces by id; made once the rows are in (a sort, not an
    # insert per row)
    db.execute("CREATE INDEX rows_id ON rows(id)")
    db.execute("COMMIT")
    db.close()
    arrays = {
        "vectors": matrix,
        "media": np.asarray(media_col, dtype=np.int32),
        "modality": np.asarray(modality_col, dtype=np.int16),
        "post_docs": np.asarray(docs, dtype=np.int32),
        "post_w": np.asarray(weights, dtype=np.float64),  # BM25 in double, as Lite sums it
        # what the weights are made of, for a delta's statistics (`Snapshot.bm25`)
        "post_key": np.asarray(keys, dtype=np.int64),
        "dl": np.asarray(lengths if full_text else np.zeros(n), dtype=np.int32),
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Postings as one array of rows, one of keys and one of each row's BM25 term weight
    (`_bm25_weights`; IDF aside, which depends on the term only). Grouped by term in the order
    terms were first seen, each term's rows in order. A key is tf * span + dl: what a weight is
    made of, so a layered snapshot weighs postings by its own average length from a table of
    keys (`_Layer.weigher`) instead of reading each row's length."""
    dl = np.asarray(lengths, dtype=np.int64)
    n_docs = len(lengths)  # Milvus Lite counts empty texts too
    term = np.asarray(postings.term, dtype=np.int32)
    order = np.argsort(term, kind="stable")
    docs = np.asarray(postings.row, dtype=np.int32)[order]
    tfs = np.asarray(postings.tf, dtype=np.int64)[order]
    ends = np.cumsum(np.bincount(term, minlength=len(postings.terms)))
    db.executemany(
        "INSERT INTO terms VALUES (?, ?, ?, ?)",
        (
            (name, int(end - df), int(end), int(df))
            for (name, df, end) in zip(postings.terms, np.diff(ends, prepend=0), ends, strict=True)
        ),
    )
    span = int(dl.max()) + 1 if n_docs else 1
    keys = tfs * span + dl[docs]
    weights = _bm25_weights(tfs, dl[docs], _avgdl(float(dl.sum()), n_docs))
    found = {"docs": n_docs, "key_span": span, "keys": int(keys.max()) + 1 if len(keys) else 0}
    db.executemany("INSERT INTO info VALUES (?, ?)", [(k, str(v)) for k, v in found.items()])
    return docs, keys, weights


def _avgdl(total: float, docs: int) -> float:
    return total / docs if docs and total > 0 else 1.0


def _bm25_weights(tf: np.ndarray, dl: np.ndarray, avgdl: float) -> np.ndarray:
    """tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)) per posting: one formula at build and
    search time, so a delta's scores equal a rewrite's to the bit."""
    tf = np.asarray(tf, dtype=np.float64)
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * np.asarray(dl, np.float64) / avgdl)
    return tf * (BM25_K1 + 1.0) / (tf + norm)


class _Layer:
    """One written set of snapshot files (`_write`): rows in SQLite, the rest memory-mapped."""

    def __init__(self, folder: Path) -> None:
        self._db = sqlite3.connect(
            f"file:{folder / 'rows.sqlite'}?mode=ro", uri=True, check_same_thread=False
        )
        self._lock = threading.Lock()
        a = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in _VECTOR_FILES}
        self.vectors, self.media, self.modality = a["vectors"], a["media"], a["modality"]
        self.post_docs, self.post_w = a["post_docs"], a["post_w"]
        extra = {n: folder / f"{n}.npy" for n in ("post_key", "dl")}
        self.post_key, self.dl = (
            np.load(p, mmap_mode="r") if p.is_file() else None for p in extra.values()
        )
        info = dict(self.all("SELECT key, value FROM info"))
        self.rows = int(info["rows"])
        self.docs = int(info.get("docs", self.rows))
        self.full_text = info["full_text"] == "1"
        self._span, self._keys = int(info.get("key_span", 1)), int(info.get("keys", 0))

    def weigher(self, avgdl: float) -> Any:
        """A function of (start, stop): those postings' BM25 weights at this average length,
        from a table of every (tf, dl) key this layer holds where that is small (it is for
        texts of a few hundred words), else from the keys."""
        assert self.post_key is not None
        keys, span = self.post_key, self._span
        if self._keys <= WEIGHT_TABLE:
            k = np.arange(self._keys, dtype=np.int64)
            table = _bm25_weights(k // span, k % span, avgdl)
            return lambda start, stop: table[keys[start:stop]]
        return lambda start, stop: _bm25_weights(
            keys[start:stop] // span, keys[start:stop] % span, avgdl
        )

    def close(self) -> None:
        self._db.close()

    def all(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def keyed(self, sql: str, keys: Sequence[str | int]) -> list[tuple]:
        """`sql` (with `IN ({})`) for the keys, 500 at a time."""
        out: list[tuple] = []
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            out += self.all(sql.format(",".join("?" * len(part))), tuple(part))
        return out

    def rows_of(self, media_ids: list[str], ids: list[str]) -> set[int]:
        """The row numbers of these media's rows and of these rows."""
        codes = [c for (c,) in self.keyed("SELECT code FROM media WHERE id IN ({})", media_ids)]
        found = set(np.flatnonzero(np.isin(self.media, codes)).tolist()) if codes else set()
        found.update(i for (i,) in self.keyed("SELECT idx FROM rows WHERE id IN ({})", ids))
        return found

    def texts(self, idx: list[int]) -> list[str]:
        return [t for (t,) in self.keyed("SELECT text FROM rows WHERE idx IN ({})", idx)]

    def terms(self, names: list[str]) -> dict[str, tuple[int, int, int]]:
        """term -> (start, stop, df) in the postings, for the terms this layer holds."""
        found = self.keyed("SELECT term, start, stop, df FROM terms WHERE term IN ({})", names)
        return {t: (start, stop, df) for t, start, stop, df in found}

    def fields(self, idx: list[int]) -> dict[int, tuple]:
        return {
            r[0]: r
            for r in self.all(
                'SELECT idx, id, media_id, modality, "start", "end", page, text, meta '
                f"FROM rows WHERE idx IN ({','.join('?' * len(idx))})",
                tuple(idx),
            )
        }


class Snapshot:
    """One collection's snapshot, opened read-only (arrays memory-mapped).

    A layered one is a base (another snapshot's files, linked), the base rows dead since and a
    delta of the rows written since; its row numbers run through the base (dead rows masked),
    then the delta. BM25 statistics cover the live rows of both, as a rewrite's would."""

    def __init__(self, folder: Path, stamp: str) -> None:
        self.folder = folder
        self.stamp = stamp
        self.base = _Layer(folder)
        self.delta = _Layer(folder / "delta") if (folder / "delta").is_dir() else None
        dead = _dead_rows(folder)
        self._dead_df = _dead_terms(folder)
        layers = [self.base] if self.delta is None else [self.base, self.delta]
        self._layers = [(layer, sum(x.rows for x in layers[:i])) for i, layer in enumerate(layers)]
        self.size = sum(layer.rows for layer in layers)  # row numbers, dead ones included
        self.rows = self.size - len(dead)
        self.dead = dead  # base row numbers no longer held (a layered snapshot's)
        self.live: np.ndarray | None = None
        if len(dead):
            self.live = np.ones(self.size, bool)
            self.live[dead] = False
        self.full_text = self.base.full_text
        self.layered = self.delta is not None or self.live is not None
        self._modalities = {n: c for c, n in self.base.all("SELECT code, name FROM modalities")}
        self._delta_media: dict[str, int] = {}  # media the base lacks -> their codes here
        self._delta_names: dict[int, str] | None = None  # the other way, made when first asked
        self.media, self.modality = self.base.media, self.base.modality
        if self.delta is not None:
            self._join_codes(self.delta)
        self.docs, self.avgdl = self.base.docs, 0.0
        if self.layered and self.full_text:  # statistics of the live rows, as a rewrite's
            lengths = [layer.dl for layer, _ in self._layers]
            total = sum(float(np.sum(x, dtype=np.int64)) for x in lengths)
            total -= float(np.sum(self.base.dl[dead], dtype=np.int64)) if len(dead) else 0.0
            self.docs, self.avgdl = self.rows, _avgdl(total, self.rows)
        self._weighers = (
            {at: layer.weigher(self.avgdl) for layer, at in self._layers}
            if self.layered and self.full_text
            else {}
        )

    def _join_codes(self, delta: _Layer) -> None:
        """The delta's media and modality codes in the base's numbering (new ones after it)."""
        (n_media,) = self.base.all("SELECT COUNT(*) FROM media")[0]
        own = dict(delta.all("SELECT code, id FROM media"))
        sql = "SELECT id, code FROM media WHERE id IN ({})"
        known = dict(self.base.keyed(sql, [*own.values()]))
        media = np.zeros(max(own, default=-1) + 1, np.int32)
        for code, mid in own.items():
            if mid not in known:
                known[mid] = self._delta_media[mid] = n_media + len(self._delta_media)
            media[code] = known[mid]
        names = dict(delta.all("SELECT code, name FROM modalities"))
        modality = np.zeros(max(names, default=-1) + 1, np.int16)
        for code, name in names.items():
            modality[code] = self._modalities.setdefault(name, len(self._modalities))
        self.media = np.concatenate([self.base.media, media[delta.media]])
        self.modality = np.concatenate([self.base.modality, modality[delta.modality]])

    def close(self) -> None:
        for layer, _ in self._layers:
            layer.close()

    # -- filters ---------------------------------------------------------------------------

    def mask(self, f: Filter) -> np.ndarray | None:
        """Rows the filter keeps (None: all)."""
        keep: np.ndarray | None = None
        if f.modality is not None:
            code = self._modalities.get(f.modality)
            keep = self.modality == code if code is not None else np.zeros(self.size, bool)
        if f.media is not None:
            codes = self._codes(sorted(f.media))
            found = np.isin(self.media, codes) if codes else np.zeros(self.size, bool)
            keep = found if keep is None else keep & found
        if self.live is not None:
            keep = self.live if keep is None else keep & self.live
        return keep

    def media_ids(self, rows: Sequence[int]) -> list[str]:
        """Each row's media id, by row number (a caller checks ranked rows against a filter
        before it builds them)."""
        codes = self.media[np.asarray(rows, np.int64)].tolist()
        wanted = sorted(set(codes))
        names = dict(self.base.keyed("SELECT code, id FROM media WHERE code IN ({})", wanted))
        if len(names) < len(wanted):  # media new in the delta
            if self._delta_names is None:
                self._delta_names = {c: m for m, c in self._delta_media.items()}
            names.update((c, self._delta_names[c]) for c in wanted if c not in names)
        return [names[c] for c in codes]

    def _codes(self, media_ids: list[str]) -> list[int]:
        found = self.base.keyed("SELECT code FROM media WHERE id IN ({})", media_ids)
        return [c for (c,) in found] + [
            self._delta_media[m] for m in media_ids if m in self._delta_media
        ]

    # -- searches (each returns ranked (row index, score) pairs) ---------------------------

    def dense(
        self, vectors: np.ndarray, limit: int, keep: np.ndarray | None, group: bool = False
    ) -> list[list[tuple[int, float]]]:
        """Exact cosine top `limit` per query row; with `group`, each file's best row only.
        Scanning the vectors is bound by memory (160 MB for 100k 384-d rows), so a filter that
        keeps few rows reads only theirs."""
        q = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        kept = None if keep is None or keep is self.live else np.flatnonzero(keep)
        if kept is not None and len(kept) * SPARSE_KEEP < self.size:
            scores = np.full((len(q), self.size), -np.inf, np.float32)
            for layer, at in self._layers:
                part = kept[(kept >= at) & (kept < at + layer.rows)]
                scores[:, part] = q @ layer.vectors[part - at].T
        else:
            parts = [q @ layer.vectors.T for layer, _ in self._layers]
            scores = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
            if kept is not None:
                scores[:, ~keep] = -np.inf  # type: ignore[operator]
            elif len(self.dead):  # no filter: only the dead rows go
                scores[:, self.dead] = -np.inf
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
        """Exact BM25 over the whole collection (Milvus Lite's formula and tokens). A layered
        snapshot weighs its postings with the live rows' statistics at search time."""
        counts = Counter(tokens(text))
        if not counts or not self.full_text:
            return []
        names = sorted(counts)
        acc = np.zeros(self.size, dtype=np.float64)
        found = [(layer, at, layer.terms(names)) for layer, at in self._layers]
        for term in names:
            legs, df = [], 0
            for layer, at, terms in found:
                if term not in terms:
                    continue
                start, stop, n = terms[term]
                docs = layer.post_docs[start:stop]
                if not self.layered:
                    legs.append((docs, layer.post_w[start:stop]))
                    df += n
                    continue
                weights = self._weighers[at](start, stop)
                df += n - self._dead_df.get(term, 0) if at == 0 else n
                legs.append((docs + at if at else docs, weights))
            if not df:
                continue
            idf = math.log((self.docs - df + 0.5) / (df + 0.5) + 1.0)
            for docs, weights in legs:
                acc[docs] += (idf * counts[term]) * weights
        if keep is not None and keep is not self.live:
            acc[~keep] = 0.0
        elif len(self.dead):  # no filter: only the dead rows go
            acc[self.dead] = 0.0
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
        found: dict[int, tuple] = {}
        for layer, at in self._layers:
            idx = [i - at for i, _ in ranked if at <= i < at + layer.rows]
            if idx:
                found.update((i + at, r) for i, r in layer.fields(idx).items())
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
