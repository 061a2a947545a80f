"""Milvus, Lite or server: collections (schema in `store.schema`), indexes, writes, searches.

Everything mmrag asks of Milvus goes through `MilvusStore`, so the rest of the code never sees
pymilvus, and the same calls work on the embedded Lite store and on a server.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import AnnSearchRequest, MilvusClient, RRFRanker, WeightedRanker

from mmrag.store import lite_host
from mmrag.store.lite_index import (
    Replay,
    Snapshot,
    Snapshots,
    Touched,
    parse_filter,
    snapshots_folder,
)
from mmrag.store.lite_index import notes as lite_index_notes
from mmrag.store.schema import (
    MODEL_PROPERTY,
    OUTPUT_FIELDS,
    STORE_PROPERTY,
    RankedLegs,
    Segment,
    Space,
    StoreError,
    check_version,
    collection_properties,
    collection_schema,
    quote,
)


class _NoMvccNoise(logging.Filter):
    """Milvus Lite has no mvcc timestamp API; pymilvus warns on every iterator. Harmless."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


# A logger's filter sees only records logged on that logger, not its children's.
logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_NoMvccNoise())

# Index types each backend really builds. Milvus Lite accepts unknown names and silently falls
# back to brute force, so mmrag refuses anything outside these lists instead.
BUILDABLE_INDEXES = {
    "lite": {"FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"},
    "server": {"FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "HNSW_SQ", "DISKANN", "AUTOINDEX"},
}
_INDEX_PARAMS = {
    "HNSW": {"M": 16, "efConstruction": 200},
    "HNSW_SQ": {"M": 16, "efConstruction": 200, "sq_type": "SQ8"},
    "IVF_FLAT": {"nlist": 128},
    "IVF_SQ8": {"nlist": 128},
    "IVF_PQ": {"nlist": 128, "m": 16},
}
# HNSW's search breadth (ef), at least. Milvus Lite 3.2.2 spends under 1% of a dense search in
# the graph (the rest is per-row bookkeeping in Python), so a wide search costs it almost
# nothing and lifts recall@10 where 64 loses neighbours (benchmarks/search_latency.py, issue 17).
SEARCH_EF = 256
MAX_REQUEST_BYTES = 32 << 20  # one upsert's rows, well under gRPC's 64 MiB message limit
MAX_TOPK = 16384  # Milvus's ceiling on one search's limit
UNGROUPED_DEPTH = 8  # rows asked per group wanted where the server cannot group
# How many media a search may name (`media=`). Milvus parses them from an expression
# (`media_id in [...]`); a snapshot takes them as a set and reads only their vectors, so it
# takes 5000, or a 64th of a larger library's paths: at 100k segments naming 5000 costs less
# than searching 64 times deeper for a 3% share, and at 1M naming a 1% share less than
# searching 256 times deeper (benchmarks/filter_latency.py, docs/benchmarks.md).
LISTED_MAX = 2000
LISTED_MAX_SNAPSHOT = 5000
LISTED_SHARE = 1 / 64


@dataclass(frozen=True)
class Capabilities:
    """What a Milvus can do that mmrag uses, known from its version: BM25 functions (sparse
    full-text search, and the hybrid search fusing it with dense) came in 2.5; grouping search
    and INVERTED scalar indexes in 2.4. A server that says no version is taken to have all."""

    version: str
    bm25: bool = True
    grouping: bool = True
    inverted: bool = True

    @classmethod
    def of(cls, version: str) -> Capabilities:
        found = re.match(r"v?(\d+)\.(\d+)", version.strip())
        if not found:
            return cls(version)
        at = (int(found[1]), int(found[2]))
        return cls(version, bm25=at >= (2, 5), grouping=at >= (2, 4), inverted=at >= (2, 4))

    def bm25_note(self) -> str:
        """What mmrag says, once per search and in `status`, on a server without BM25."""
        return (
            f"this Milvus server ({self.version}) has no BM25 full-text search: text search is "
            "dense only (Milvus 2.5 or later has it)"
        )


# What a server without BM25 functions says when asked for one (104: a sparse vector field).
_NO_BM25 = re.compile(r"function|bm25|sparse|analyzer|\b104\b", re.IGNORECASE)
_NO_INVERTED = re.compile(r"INVERTED.*(not|expected)|expected=Trie", re.IGNORECASE)
LITE = Capabilities("lite")  # Milvus Lite 3.x has everything mmrag uses


class MilvusStore:
    """A connection to Milvus Lite (shared through `lite_host`) or a Milvus server."""

    def __init__(self, uri: str, token: str = "", prefix: str = "mmrag", index_type: str = "HNSW"):
        self.backend = "server" if "://" in uri else "lite"
        self.prefix = prefix
        self.index_type = index_type.upper()
        if self.index_type not in BUILDABLE_INDEXES[self.backend]:
            raise StoreError(
                f"index type {index_type!r} is not built by Milvus {self.backend}; "
                f"choose one of {sorted(BUILDABLE_INDEXES[self.backend])}"
            )
        self._lease: lite_host.LiteHost | None = None
        # Lite only: exact search snapshots beside the store, used while current (lite_index)
        self.snapshots: Snapshots | None = None
        if self.backend == "lite":
            path = Path(uri).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lease = lite_host.acquire(path)
            self.snapshots = Snapshots(snapshots_folder(path))
            uri = self._lease.uri
        try:
            self.client = MilvusClient(uri=uri, token=token)
        except Exception as exc:
            raise StoreError(f"cannot connect to Milvus at {uri}: {exc}") from exc
        self._loaded: set[str] = set()
        self._present: set[str] = set()  # collections seen to exist (see `present`)
        self._caps: Capabilities | None = LITE if self.backend == "lite" else None
        self._full_text: dict[str, bool] = {}  # collection -> has its BM25 sparse field
        # The id that pairs this store with its catalog, written into each collection made here
        # (set by mmrag.app.open_store; None: collections are made without one).
        self.store_id: str | None = None

    def close(self) -> None:
        self.client.close()
        if self.snapshots:
            self.snapshots.close()
        if self._lease:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- capabilities ------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        """What this Milvus can do (asked of a server once, by its version)."""
        if self._caps is None:
            try:
                version = str(self.client.get_server_version())
            except Exception:  # an old or proxied server may not say: assume it has all
                version = "unknown version"
            self._caps = Capabilities.of(version)
        return self._caps

    def full_text(self, collection: str) -> bool:
        """Whether a collection has BM25 beside its vectors (a full-text space's collection
        made where Milvus has BM25 functions); asked of a server once per collection."""
        if self.backend == "lite":
            return True
        if collection not in self._full_text:
            fields = self.client.describe_collection(collection).get("fields", [])
            self._full_text[collection] = any(f.get("name") == "sparse" for f in fields)
        return self._full_text[collection]

    def notes(self) -> list[str]:
        """What searching this store lacks (a server without BM25), said once per search."""
        return [] if self.capabilities.bm25 else [self.capabilities.bm25_note()]

    # -- collections -------------------------------------------------------------------------

    def ensure_space(self, space: Space) -> str:
        """Create the space's collection if missing (and load it); return its name."""
        return self.ensure_named(space.collection(self.prefix), space)

    def ensure_named(self, name: str, space: Space) -> str:
        """`ensure_space` under a given name (a collection copied from another store)."""
        if not self.client.has_collection(name):
            self._create(name, space)
        else:
            self._check_dim(name, space)
        self._load(name)
        return name

    def existing_collections(self) -> list[str]:
        found = sorted(c for c in self.client.list_collections() if c.startswith(self.prefix + "_"))
        self._present.update(found)
        return found

    def names_at_most(self, paths: int) -> int:
        """How many media a search of a library of `paths` files may name (LISTED_MAX)."""
        if self.snapshots is None:
            return LISTED_MAX
        return max(LISTED_MAX_SNAPSHOT, int(paths * LISTED_SHARE))

    def present(self, names: Iterable[str]) -> set[str]:
        """Which of `names` exist. One seen once is remembered (mmrag drops a collection only
        after a model switch has cut over from it, and no searcher is built on it since:
        ingest/reindex.py) and Milvus is listed only while a name is not known yet: a search
        whose spaces all exist saves that round trip (5-7 ms on Lite, issue 17); a collection
        made later (by another process's ingest) is found on the next search."""
        wanted = set(names)
        if not wanted <= self._present:
            self.existing_collections()
        return wanted & self._present

    def drop(self, name: str) -> None:
        """Drop a collection if it exists (a space's model switch has cut over from it)."""
        if self.client.has_collection(name):
            with self._writing(name, replay=Replay(empty=True)):  # its snapshot goes stale
                self.client.drop_collection(name)
        self._present.discard(name)
        self._loaded.discard(name)

    def collection_model(self, name: str) -> str | None:
        """The model a collection was made with (its property), None where it says none."""
        if not self.client.has_collection(name):
            return None
        return (self.client.describe_collection(name).get("properties") or {}).get(MODEL_PROPERTY)

    def store_ids(self) -> dict[str, str | None]:
        """Each mmrag collection's store id (None where made before ids or without one)."""
        return {
            name: (self.client.describe_collection(name).get("properties") or {}).get(
                STORE_PROPERTY
            )
            for name in self.existing_collections()
        }

    def mark_store(self, names: Iterable[str], store_id: str) -> None:
        """Write the store id into collections made before they carried one."""
        for name in names:
            self.client.alter_collection_properties(name, {STORE_PROPERTY: store_id})

    def row_count(self, collection: str) -> int:
        """Rows in a collection, from its statistics (no load; may still count deleted rows)."""
        return int(self.client.get_collection_stats(collection).get("row_count", 0))

    def _create(self, name: str, space: Space) -> None:
        """Make a space's collection as this Milvus can hold it: a full-text space without its
        BM25 function where the server has none (its text is then searched densely). A server
        whose version did not say what it lacks is told by its refusals: what it refused is
        left out and the collection made again."""
        while True:
            caps = self.capabilities
            try:
                self._create_as(name, replace(space, bm25=space.bm25 and caps.bm25))
                break
            except Exception as exc:
                lacks = self._lacks(exc, space.bm25 and caps.bm25)
                if lacks is None:
                    raise
                if self.client.has_collection(name):  # half made: fields, not all indexes
                    self.client.drop_collection(name)
                logging.getLogger(__name__).info("this Milvus has no %s: %s", lacks, exc)
                self._caps = replace(caps, **{lacks: False})
        self._full_text[name] = space.bm25 and self.capabilities.bm25

    def _lacks(self, exc: Exception, bm25: bool) -> str | None:
        """Which capability a server's refusal to make a collection names; None: another."""
        if self.backend == "lite":
            return None
        if self.capabilities.inverted and _NO_INVERTED.search(str(exc)):
            return "inverted"
        return "bm25" if bm25 and _NO_BM25.search(str(exc)) else None

    def _create_as(self, name: str, space: Space) -> None:
        index = self.client.prepare_index_params()
        index.add_index(
            "vector",
            index_type=self.index_type,
            metric_type="COSINE",
            params=_INDEX_PARAMS.get(self.index_type, {}),
        )
        if space.bm25:
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        # Milvus 2.3 indexes VARCHAR with a trie; INVERTED came in 2.4.
        index.add_index("media_id", index_type="INVERTED" if self.capabilities.inverted else "Trie")
        # a store remade at the same path outdates its snapshots; the new collection is empty
        with self._writing(name, replay=Replay(empty=True)):
            self.client.create_collection(
                name,
                schema=collection_schema(self.client, space),
                index_params=index,
                consistency_level="Strong",
                properties=collection_properties(space, self.store_id),
            )

    def _check_dim(self, name: str, space: Space) -> None:
        desc = self.client.describe_collection(name)
        check_version(name, desc.get("properties") or {})
        for f in desc.get("fields", []):
            if f.get("name") == "vector":
                dim = int(f.get("params", {}).get("dim", space.dim))
                if dim != space.dim:
                    raise StoreError(
                        f"collection {name} holds {dim}-d vectors but model {space.model} "
                        f"gives {space.dim}-d; re-ingest into a new collection"
                    )

    def _load(self, name: str) -> None:
        """Load a collection once per connection, after checking who made it."""
        if name not in self._loaded:
            check_version(name, self.client.describe_collection(name).get("properties") or {})
            self.client.load_collection(name)
            self._loaded.add(name)

    # -- writes ------------------------------------------------------------------------------

    @contextmanager
    def _writing(
        self, collection: str, touched: Touched | None = None, replay: Replay | None = None
    ) -> Iterator[None]:
        """A write (of what `touched` says; None: anything): the collection's snapshot
        generation is bumped before and after it, so no snapshot built meanwhile, or before,
        is taken for current (lite_index); after, with what it did (`replay`) where Milvus
        took it all, so the next snapshot build need not read it back."""
        began = self.snapshots.bump(collection, touched) if self.snapshots else 0
        done = False
        try:
            yield
            done = True
        finally:
            if self.snapshots:
                self.snapshots.wrote(collection, began, replay if done else None)

    def upsert(self, collection: str, segments: Sequence[Segment], batch: int = 512) -> int:
        touched = Touched(
            frozenset(s.media_id for s in segments), frozenset(s.id for s in segments)
        )
        rows = [s.row() for s in segments]
        with self._writing(collection, touched, Replay(rows=rows)):
            for i in range(0, len(rows), batch):
                self.client.upsert(collection, rows[i : i + batch])
        return len(segments)

    def upsert_rows(self, collection: str, rows: list[dict[str, Any]]) -> int:
        """Rows as another store's `rows_with_vectors` gave them (a migration), as they are,
        in requests under gRPC's 64 MiB limit whatever the batch (a row's text is 64 KiB at
        most)."""
        touched = Touched(frozenset(r["media_id"] for r in rows), frozenset(r["id"] for r in rows))
        with self._writing(collection, touched, Replay(rows=rows)):
            for part in _by_size(rows, MAX_REQUEST_BYTES):
                self.client.upsert(collection, part)
        return len(rows)

    def delete_media(self, collection: str, media_ids: Iterable[str]) -> None:
        ids = list(media_ids)
        with self._writing(collection, Touched(media=frozenset(ids)), Replay(media=ids)):
            for i in range(0, len(ids), 500):
                chunk = ", ".join(quote(m) for m in ids[i : i + 500])
                self.client.delete(collection, filter=f"media_id in [{chunk}]")

    def delete_ids(self, collection: str, ids: Iterable[str]) -> None:
        """Delete rows by segment id (what one space gave rise to in another, replaced)."""
        ids = list(ids)
        with self._writing(collection, Touched(ids=frozenset(ids)), Replay(ids=ids)):
            for i in range(0, len(ids), 500):
                self.client.delete(collection, ids=ids[i : i + 500])

    def flush(self, collection: str) -> None:
        self.client.flush(collection)

    # -- reads -------------------------------------------------------------------------------

    def count(self, collection: str, expr: str = "") -> int:
        self._load(collection)
        res = self.client.query(collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def count_by(self, collection: str, field_name: str) -> dict[str, int]:
        """Rows per value of a field (a full scan: for status pages, not hot paths)."""
        self._load(collection)
        counts: dict[str, int] = {}
        it = self.client.query_iterator(collection, batch_size=2000, output_fields=[field_name])
        try:
            while batch := it.next():
                for row in batch:
                    counts[row[field_name]] = counts.get(row[field_name], 0) + 1
        finally:
            it.close()
        return counts

    def ids(self, collection: str, expr: str = "") -> list[str]:
        """Every primary key matching `expr` (iterator: no result-size cap)."""
        self._load(collection)
        out: list[str] = []
        it = self.client.query_iterator(
            collection, batch_size=2000, filter=expr, output_fields=["id"]
        )
        try:
            while batch := it.next():
                out.extend(r["id"] for r in batch)
        finally:
            it.close()
        return out

    def rows(self, collection: str, expr: str) -> list[dict[str, Any]]:
        """The rows matching `expr`, without their vectors (a few: one content's)."""
        self._load(collection)
        return self.client.query(collection, filter=expr, output_fields=OUTPUT_FIELDS)

    def iter_vectors(
        self, collection: str, batch: int = 1000, expr: str = ""
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(media ids, vectors) of every row (matching `expr`), a batch at a time (for
        whole-store scans)."""
        for rows in self._batches(collection, ["media_id", "vector"], batch, expr):
            yield (
                [r["media_id"] for r in rows],
                np.asarray([r["vector"] for r in rows], dtype=np.float32),
            )

    def rows_with_vectors(self, collection: str, batch: int = 1000) -> Iterator[list[dict]]:
        """Every row with its stored vector, a batch at a time: what a migration copies (the
        BM25 sparse vector is not: the target computes its own from `text`, or has none)."""
        for rows in self._batches(collection, [*OUTPUT_FIELDS, "vector"], batch):
            yield [{f: r[f] for f in (*OUTPUT_FIELDS, "vector")} for r in rows]

    def describe(self, collection: str) -> tuple[Space, dict[str, str]]:
        """The space a collection holds (its model, dimension and whether it has BM25) and its
        properties, from the collection itself (the kind is not kept: "" here)."""
        desc = self.client.describe_collection(collection)
        fields = {f["name"]: f for f in desc.get("fields", [])}
        props = {str(k): str(v) for k, v in (desc.get("properties") or {}).items()}
        dim = int(fields["vector"].get("params", {}).get("dim", 0))
        return Space("", props.get(MODEL_PROPERTY, ""), dim, "sparse" in fields), props

    def _batches(
        self, collection: str, fields: list[str], batch: int, expr: str = ""
    ) -> Iterator[list[dict]]:
        """Every row's `fields` (matching `expr`), a batch at a time (iterator: no cap)."""
        self._load(collection)
        it = self.client.query_iterator(
            collection, batch_size=batch, filter=expr, output_fields=fields
        )
        try:
            while rows := it.next():
                yield rows
        finally:
            it.close()

    # -- search snapshots (Lite) -------------------------------------------------------------

    def refresh_snapshots(self, names: Iterable[str] | None = None) -> list[str]:
        """Build the search snapshot of each of these collections (default: all of mmrag's)
        that lacks a write; return those built. Nothing on a server (it searches fast)."""
        if self.snapshots is None:
            return []
        built = []
        for name in self.snapshots.stale(self.existing_collections() if names is None else names):
            fields = {f["name"]: f for f in self.client.describe_collection(name)["fields"]}
            dim = int(fields["vector"].get("params", {}).get("dim", 0))

            def read(name: str = name) -> Iterator[list[dict]]:
                return self._batches(name, [*OUTPUT_FIELDS, "vector"], 2000)

            def touched(media: list[str], ids: list[str], name: str = name) -> Iterator[list[dict]]:
                for field, keys in (("media_id", media), ("id", ids)):
                    for i in range(0, len(keys), 500):
                        expr = f"{field} in [{', '.join(quote(k) for k in keys[i : i + 500])}]"
                        yield from self._batches(name, [*OUTPUT_FIELDS, "vector"], 2000, expr)

            def count(name: str = name) -> int:
                return self.count(name)

            if self.snapshots.build(name, dim, read, "sparse" in fields, touched, count):
                built.append(name)
        return built

    def search_notes(self, rows: dict[str, int]) -> list[str]:
        """What `status` says about searching this store ({collection: rows}): stale snapshots,
        a store past embedded scale; on a server, what it lacks (BM25)."""
        if self.snapshots is None:
            return self.notes()
        return lite_index_notes(self.snapshots.stale(rows), rows)

    def _snapshot(
        self, collection: str, expr: str, media: frozenset[str] | None = None
    ) -> tuple[Snapshot, np.ndarray | None] | None:
        """The collection's current snapshot and the rows `expr` keeps (of `media`, where
        named); None where Milvus answers (a server, no current snapshot, or a filter the
        snapshot does not read)."""
        if self.snapshots is None or (found := parse_filter(expr)) is None:
            return None
        snap = self.snapshots.current(collection)
        return (snap, snap.mask(found.among(media))) if snap else None

    def search_dense(
        self,
        collection: str,
        vectors: np.ndarray,
        limit: int,
        expr: str = "",
        group_by: str | None = None,
        media: frozenset[str] | None = None,
    ) -> list[list[dict]]:
        """Nearest rows by cosine; with `group_by` ("media_id"), only the best row of each
        value (Milvus grouping search: one moment per video). `media`: only these media's rows
        (with `expr`)."""
        fast = group_by in (None, "media_id") and self._snapshot(collection, expr, media)
        if fast:
            snap, keep = fast
            return [snap.hits(r) for r in snap.dense(vectors, limit, keep, bool(group_by))]
        expr = _listed(expr, media)
        self._load(collection)
        grouping = {"group_by_field": group_by} if group_by else {}
        depth = limit
        if group_by and not self.capabilities.grouping:
            # Milvus before 2.4 ignores group_by_field: ask deeper, keep each value's best row.
            grouping, depth = {}, min(MAX_TOPK, limit * UNGROUPED_DEPTH)
        res = self.client.search(
            collection,
            data=[v.tolist() for v in vectors],
            anns_field="vector",
            limit=depth,
            filter=expr,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": "COSINE", "params": {"ef": max(SEARCH_EF, 2 * depth)}},
            **grouping,
        )
        found = [[_hit(h) for h in hits] for hits in res]
        if group_by:  # (a server that grouped returns one row per value: unchanged)
            found = [_best_per(hits, group_by)[:limit] for hits in found]
        return found

    def search_bm25(
        self,
        collection: str,
        texts: list[str],
        limit: int,
        expr: str = "",
        media: frozenset[str] | None = None,
    ) -> list[list[dict]]:
        if fast := self._snapshot(collection, expr, media):
            snap, keep = fast
            return [snap.hits(snap.bm25(text, limit, keep)) for text in texts]
        expr = _listed(expr, media)
        if not self.full_text(collection):  # the searcher searches such a space densely
            note = self.capabilities.bm25_note()
            raise StoreError(f"collection {collection} has no BM25: {note}")
        self._load(collection)
        res = self.client.search(
            collection,
            data=texts,
            anns_field="sparse",
            limit=limit,
            filter=expr,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": "BM25"},
        )
        # Milvus Lite returns BM25 scores negated; a relevance score is non-negative.
        return [[_hit(h, absolute=True) for h in hits] for hits in res]

    def snapshot_legs(
        self,
        collection: str,
        vector: np.ndarray,
        text: str,
        depth: int,
        expr: str = "",
        media: frozenset[str] | None = None,
    ) -> RankedLegs | None:
        """From the collection's search snapshot: its dense and BM25 (row, score) lists, each
        `depth` deep, for a fusion done by the caller. None where Milvus answers."""
        fast = self._snapshot(collection, expr, media)
        if not fast:
            return None
        snap, keep = fast
        dense, bm25 = snap.dense(vector[None], depth, keep)[0], snap.bm25(text, depth, keep)
        return RankedLegs(dense, bm25, snap.hits, snap.media_ids)

    def search_hybrid(
        self,
        collection: str,
        vector: np.ndarray,
        text: str,
        limit: int,
        expr: str = "",
        fusion: str = "weighted",
        dense_weight: float = 0.5,
        media: frozenset[str] | None = None,
    ) -> list[dict]:
        """Dense and BM25 candidates fused in Milvus.

        `weighted`: a convex combination of normalised scores (Milvus WeightedRanker with
        norm_score: cosine -> (1+cos)/2, BM25 -> 2/pi*atan(score)); `rrf`: reciprocal rank
        fusion with k=60, which ignores how far apart the scores are.
        """
        if fast := self._snapshot(collection, expr, media):
            snap, keep = fast
            return snap.hits(snap.hybrid(vector, text, limit, keep, fusion, dense_weight))
        expr = _listed(expr, media)
        if not self.full_text(collection):  # a server without BM25: its dense half alone
            return self.search_dense(collection, vector[None], limit, expr)[0]
        self._load(collection)
        depth = max(3 * limit, 50)
        reqs = [
            AnnSearchRequest(
                data=[vector.tolist()],
                anns_field="vector",
                param={"metric_type": "COSINE", "params": {"ef": max(SEARCH_EF, depth)}},
                limit=depth,
                expr=expr or None,
            ),
            AnnSearchRequest(
                data=[text],
                anns_field="sparse",
                param={"metric_type": "BM25"},
                limit=depth,
                expr=expr or None,
            ),
        ]
        if fusion == "rrf":
            ranker = RRFRanker(60)
        elif fusion == "weighted":
            ranker = WeightedRanker(dense_weight, 1.0 - dense_weight, norm_score=True)
        else:
            raise ValueError(f"unknown fusion {fusion!r}; use 'weighted' or 'rrf'")
        res = self.client.hybrid_search(
            collection, reqs, ranker=ranker, limit=limit, output_fields=OUTPUT_FIELDS
        )
        return [_hit(h) for h in res[0]]


def _by_size(rows: list[dict[str, Any]], limit: int) -> Iterator[list[dict[str, Any]]]:
    """The rows in runs of at most `limit` bytes (text and vector; a little for the rest)."""
    part: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        vector = row.get("vector")  # a list from Milvus, an array from a segment
        cost = 256 + 2 * len(row.get("text") or "") + 4 * (0 if vector is None else len(vector))
        if part and size + cost > limit:
            yield part
            part, size = [], 0
        part.append(row)
        size += cost
    if part:
        yield part


def _best_per(hits: list[dict], field_name: str) -> list[dict]:
    """The first (best) hit of each value of a field, in rank order."""
    seen: set[Any] = set()
    out = []
    for h in hits:
        if h.get(field_name) not in seen:
            seen.add(h.get(field_name))
            out.append(h)
    return out


def _listed(expr: str, media: frozenset[str] | None) -> str:
    """`expr` with these media named, as Milvus reads it (`media_id in [...]`)."""
    if media is None:
        return expr
    ids = f"media_id in [{', '.join(quote(m) for m in sorted(media))}]"
    return f"{expr} and {ids}" if expr else ids


def _hit(h: Any, absolute: bool = False) -> dict:
    entity = dict(h.get("entity", {}))
    score = float(h.get("distance", h.get("score", 0.0)))
    entity["score"] = abs(score) if absolute else score
    entity.setdefault("id", h.get("id"))
    return entity
