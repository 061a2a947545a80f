"""Round trips a search makes to Milvus (issue 17): the collections are listed only while a
searched space's collection is not known to exist, and one made later is still found.
Real Milvus Lite, real catalog, real MiniLM."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmrag.kinds import QueryKind
from mmrag.search.query import SearchSpace
from mmrag.store.catalog import MediaFacts
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import Segment, Space
from tests.conftest import Env, write
from tests.text_samples import QUERY, TOPICS


def count_listings(store: MilvusStore) -> list[int]:
    """Counts the store's calls to Milvus's list_collections from now on."""
    calls = [0]
    inner = store.client.list_collections

    def counted(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        return inner(*args, **kw)

    store.client.list_collections = counted  # type: ignore[method-assign]
    return calls


def test_a_search_lists_the_collections_only_until_they_are_known(env: Env) -> None:
    lib = env.root / "lib"
    for name, text in TOPICS.items():
        write(lib / name, text)
    assert env.ingest(lib).failed == []
    searcher = env.searcher()
    first = {mode: searcher.search(QUERY, mode, 5) for mode in ("hybrid", "dense", "bm25")}
    assert all(first.values())

    calls = count_listings(env.store)
    again = {mode: searcher.search(QUERY, mode, 5) for mode in ("hybrid", "dense", "bm25")}
    assert calls[0] == 0  # was one listing per search
    assert again == first


class Toy:
    """A space's query encoder that always returns one fixed unit vector."""

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector

    def encode_query(self, kind: QueryKind, inputs: list[Any]) -> np.ndarray:
        return self.vector[None]


def test_a_collection_made_after_a_search_is_searched_next_time(env: Env) -> None:
    lib = env.root / "lib"
    for name, text in TOPICS.items():
        write(lib / name, text)
    assert env.ingest(lib).failed == []
    vector = np.zeros(8, dtype=np.float32)
    vector[0] = 1.0
    space = Space("toy", "x", 8)
    collection = space.collection(env.settings.collection_prefix)
    searcher = env.searcher()
    searcher.spaces.append(SearchSpace("toy", Toy(vector), collection, frozenset({QueryKind.TEXT})))
    before = searcher.search(QUERY, "dense", 50)
    assert before and all(h.modality != "image" for h in before)

    # another connection (as another process's ingest would) makes the collection and a row
    other = MilvusStore(env.settings.milvus_uri)
    try:
        other.ensure_space(space)
        media = "e" * 32
        env.catalog.begin_media_many([(media, "image", "jpeg", 10, MediaFacts(), None)])
        other.upsert(collection, [Segment(f"{media}:image:0", media, "image", 0, 0, "", vector)])
        other.flush(collection)
        env.catalog.link_path("/toy/a.jpg", "/toy/a.jpg", "/toy", media, 10, 0)
        env.catalog.finish_media_many({collection: {media: [f"{media}:image:0"]}})
    finally:
        other.close()

    after = searcher.search(QUERY, "dense", 50)
    assert any(h.media_id == media and h.path == "/toy/a.jpg" for h in after)
