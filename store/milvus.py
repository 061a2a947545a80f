"""Milvus, Lite or server: collections (schema in `store.schema`), indexes, writes, searches.

Everything mmrag asks of Milvus goes through `MilvusStore`, so the rest of the code never sees
pymilvus, and the same calls work on the embedded Lite store and on a server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import AnnSearchRequest, MilvusClient, RRFRanker, WeightedRanker

from mmrag.store import lite_host
from mmrag.store.lite_index import Snapshot, Snapshots, Touched, parse_filter, snapshots_folder
from mmrag.store.lite_index import notes as lite_index_notes
from mmrag.store.schema import (
    MODEL_PROPERTY,
    OUTPUT_FIELDS,
    STORE_PROPERTY,
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

    # -- collections -------------------------------------------------------------------------

    def ensure_space(self, space: Space) -> str:
        """Create the space's collection if missing (and load it); return its name."""
        name = space.collection(self.prefix)
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
            with self._writing(name):  # its search snapshot, if any, is current no more
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
        index = self.client.prepare_index_params()
        index.add_index(
            "vector",
            index_type=self.index_type,
            metric_type="COSINE",
            params=_INDEX_PARAMS.get(self.index_type, {}),
        )
        if space.bm25:
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        index.add_index("media_id", index_type="INVERTED")
        with self._writing(name):  # a store remade at the same path outdates its snapshots
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
    def _writing(self, collection: str, touched: Touched | None = None) -> Iterator[None]:
        """A write (of what `touched` says; None: anything): the collection's snapshot
        generation is bumped before and after it, so no snapshot built meanwhile, or before,
        is taken for current (lite_index)."""
        if self.snapshots:
            self.snapshots.bump(collection, touched)
        try:
            yield
        finally:
            if self.snapshots:
                self.snapshots.bump(collection, Touched())

    def upsert(self, collection: str, segments: Sequence[Segment], batch: int = 512) -> int:
        touched = Touched(
            frozenset(s.media_id for s in segments), frozenset(s.id for s in segments)
        )
        with self._writing(collection, touched):
            for i in range(0, len(segments), batch):
                rows = [s.row() for s in segments[i : i + batch]]
                self.client.upsert(collection, rows)
        return len(segments)

    def delete_media(self, collection: str, media_ids: Iterable[str]) -> None:
        ids = list(media_ids)
        with self._writing(collection, Touched(media=frozenset(ids))):
            for i in range(0, len(ids), 500):
                chunk = ", ".join(quote(m) for m in ids[i : i + 500])
                self.client.delete(collection, filter=f"media_id in [{chunk}]")

    def delete_ids(self, collection: str, ids: Iterable[str]) -> None:
        """Delete rows by segment id (what one space gave rise to in another, replaced)."""
        ids = list(ids)
        with self._writing(collection, Touched(ids=frozenset(ids))):
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
        a store past embedded scale; nothing on a server."""
        if self.snapshots is None:
            return []
        return lite_index_notes(self.snapshots.stale(rows), rows)

    def _snapshot(self, collection: str, expr: str) -> tuple[Snapshot, np.ndarray | None] | None:
        """The collection's current snapshot and the rows `expr` keeps; None where Milvus
        answers (a server, no current snapshot, or a filter the snapshot does not read)."""
        if self.snapshots is None or (found := parse_filter(expr)) is None:
            return None
        snap = self.snapshots.current(collection)
        return (snap, snap.mask(found)) if snap else None

    def search_dense(
        self,
        collection: str,
        vectors: np.ndarray,
        limit: int,
        expr: str = "",
        group_by: str | None = None,
    ) -> list[list[dict]]:
        """Nearest rows by cosine; with `group_by` ("media_id"), only the best row of each
        value (Milvus grouping search: one moment per video)."""
        if group_by in (None, "media_id") and (fast := self._snapshot(collection, expr)):
            snap, keep = fast
            return [snap.hits(r) for r in snap.dense(vectors, limit, keep, bool(group_by))]
        self._load(collection)
        grouping = {"group_by_field": group_by} if group_by else {}
        res = self.client.search(
            collection,
            data=[v.tolist() for v in vectors],
            anns_field="vector",
            limit=limit,
            filter=expr,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": "COSINE", "params": {"ef": max(SEARCH_EF, 2 * limit)}},
            **grouping,
        )
        return [[_hit(h) for h in hits] for hits in res]

    def search_bm25(
        self, collection: str, texts: list[str], limit: int, expr: str = ""
    ) -> list[list[dict]]:
        if fast := self._snapshot(collection, expr):
            snap, keep = fast
            return [snap.hits(snap.bm25(text, limit, keep)) for text in texts]
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

    def search_hybrid(
        self,
        collection: str,
        vector: np.ndarray,
        text: str,
        limit: int,
        expr: str = "",
        fusion: str = "weighted",
        dense_weight: float = 0.5,
    ) -> list[dict]:
        """Dense and BM25 candidates fused in Milvus.

        `weighted`: a convex combination of normalised scores (Milvus WeightedRanker with
        norm_score: cosine -> (1+cos)/2, BM25 -> 2/pi*atan(score)); `rrf`: reciprocal rank
        fusion with k=60, which ignores how far apart the scores are.
        """
        if fast := self._snapshot(collection, expr):
            snap, keep = fast
            return snap.hits(snap.hybrid(vector, text, limit, keep, fusion, dense_weight))
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


def _hit(h: Any, absolute: bool = False) -> dict:
    entity = dict(h.get("entity", {}))
    score = float(h.get("distance", h.get("score", 0.0)))
    entity["score"] = abs(score) if absolute else score
    entity.setdefault("id", h.get("id"))
    return entity
