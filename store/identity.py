"""A catalog and a Milvus store are one library: each holds the same store id (the catalog in
its `meta` table, the store as a property of every collection mmrag made in it), so a catalog is
never read against another store's rows."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from mmrag.store.catalog import Catalog
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import StoreError


def pair(
    catalog: Catalog, store: MilvusStore, cat: str, uri: str, warn: Callable[[str], None]
) -> None:
    """Check that the catalog and the store are one library, by the store id each holds (the
    catalog in its `meta` table, the store on each collection); pair them on first use."""
    marks = store.store_ids()  # {collection: its store id, None if made before ids}
    ids = sorted({i for i in marks.values() if i})
    files = catalog.has_files()
    mine = catalog.store_id
    if mine and any(i != mine for i in ids):
        raise StoreError(
            f"catalog {cat} belongs to another store (id {mine}), not {uri} (id "
            f"{', '.join(ids)}): point --catalog at that store's catalog, or --uri at this "
            "catalog's store"
        )
    if not mine and (len(ids) > 1 or (ids and files)):  # a catalog from before store ids
        raise StoreError(
            f"catalog {cat} ({catalog.counts()['paths']} files) names no store yet, but {uri} "
            f"belongs to another catalog (id {', '.join(ids)}): point --catalog at that "
            "store's catalog"
        )
    mine = mine or catalog.claim_store_id(ids[0] if ids else secrets.token_hex(8))
    store.store_id = mine  # collections made from now on carry it
    store.mark_store([n for n, i in marks.items() if not i and catalog.wrote_to(n)], mine)
    if files and not marks:
        warn(
            f"catalog {cat} lists {catalog.counts()['paths']} files but store {uri} has no "
            "mmrag collections: point --uri at the store they were ingested into, or re-ingest"
        )
    elif not files and (rows := sum(store.row_count(n) for n in marks)):
        warn(
            f"store {uri} holds {rows} rows but catalog {cat} is empty: point --catalog at "
            "that store's catalog, or re-ingest to rebuild this one"
        )
