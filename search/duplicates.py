"""Duplicate photos: exact (same content hash, several paths) and near (vectors this similar).

Near duplicates are found through the `image` space's index, each photo's nearest neighbours
a batch at a time, so the scan grows with N log N rather than N squared.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmrag.kinds import Modality
from mmrag.store.catalog import Catalog
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import quote


@dataclass(frozen=True)
class DuplicateGroup:
    kind: str  # "exact" | "near"
    paths: list[str]  # as given to ingest
    similarity: float  # 1.0 for exact; the lowest linking similarity for near


def exact_duplicates(catalog: Catalog) -> list[DuplicateGroup]:
    groups = [
        DuplicateGroup("exact", sorted(paths), 1.0)
        for paths in catalog.paths_by_media().values()
        if len(paths) > 1
    ]
    return sorted(groups, key=lambda g: g.paths)


def near_duplicates(
    store: MilvusStore, catalog: Catalog, collection: str, threshold: float, neighbours: int = 8
) -> list[DuplicateGroup]:
    """Groups of different contents whose vectors reach `threshold` cosine, linked transitively."""
    if collection not in store.existing_collections():
        return []
    parent: dict[str, str] = {}
    weakest: dict[str, float] = {}

    def root(m: str) -> str:
        while parent.setdefault(m, m) != m:
            parent[m] = parent[parent[m]]
            m = parent[m]
        return m

    photos = f"modality == {quote(Modality.IMAGE)}"  # not video moments, which share the space
    for media_ids, vectors in store.iter_vectors(collection, expr=photos):
        found = store.search_dense(collection, vectors, neighbours + 1, photos)
        for media_id, hits in zip(media_ids, found, strict=True):
            for hit in hits:
                other = hit["media_id"]
                if other != media_id and hit["score"] >= threshold:
                    a, b = root(media_id), root(other)
                    if a != b:
                        parent[b] = a
                        weakest[a] = min(weakest.get(a, 1.0), weakest.get(b, 1.0), hit["score"])
    members: dict[str, list[str]] = {}
    for m in list(parent):
        members.setdefault(root(m), []).append(m)
    where = catalog.display_paths(m for group in members.values() for m in group)
    groups = [
        DuplicateGroup("near", sorted(where[m].display for m in group if m in where), weakest[r])
        for r, group in members.items()
        if len(group) > 1
    ]
    return sorted((g for g in groups if len(g.paths) > 1), key=lambda g: g.paths)
