"""A search during an ingest: Milvus already holds rows of media whose files the catalog has not
linked yet (the writer upserts a batch, then links its paths). Such rows cannot be shown, and
must not take the places of rows that can: a search returns `limit` hits whenever that many
exist. Real Milvus Lite, real catalog, real MiniLM and EfficientNet-Lite0 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmrag.kinds import Modality, QueryKind
from mmrag.search.query import Filters
from mmrag.store.catalog import MediaFacts
from mmrag.store.schema import Segment
from tests.conftest import Env, write
from tests.image_samples import PHOTOS, altered, make_photos
from tests.text_samples import QUERY, TOPICS
from tests.video_samples import photo

LIMIT = 5
MODES = ("hybrid", "dense", "bm25")


def make_library(root: Path) -> Path:
    for name, text in TOPICS.items():
        write(root / "lib" / name, text)
    return root / "lib"


Row = tuple[str, np.ndarray, str]  # text, vector, modality


def in_flight(env: Env, collection: str, rows: list[Row], n_media: int) -> set[str]:
    """`rows` for each of `n_media` media as an ingest leaves them between its Milvus upsert
    and its path links (pending in the catalog, no path yet), and for as many media the
    catalog has no record of at all. Returns their media ids."""
    pending = [f"pending{i:02d}" for i in range(n_media)]
    unknown = [f"unknown{i:02d}" for i in range(n_media)]
    env.catalog.begin_media_many([(m, "text", "txt", 100, MediaFacts(), None) for m in pending])
    segments = [
        Segment(f"{media}:{i}", media, modality, 0.0, float(len(text)), text, vector)
        for media in pending + unknown
        for i, (text, vector, modality) in enumerate(rows)
    ]
    env.store.upsert(collection, segments)
    return set(pending + unknown)


def text_rows(env: Env) -> list[Row]:
    texts = [
        "How do I factory reset the router? Hold the reset button of the router.",
        "Factory reset: the router restarts with its factory password after a reset.",
        "To factory reset the router, press reset; how do I do it? Reset the router.",
    ]
    vectors = env.minilm.encode(texts)
    return [(t, v, Modality.DOCUMENT) for t, v in zip(texts, vectors, strict=True)]


def test_rows_of_media_not_linked_yet_do_not_take_the_places_of_known_files(env: Env) -> None:
    lib = make_library(env.root)
    assert env.ingest(lib).new == len(TOPICS)
    before = env.searcher().search(QUERY, "dense", LIMIT)
    assert len(before) == LIMIT

    # 12 media x 3 rows, all closer to the query than any file: the first LIMIT rows of every
    # search (and the next 4 * LIMIT) are theirs
    hidden = in_flight(env, env.collection, text_rows(env), n_media=6)
    vector = env.minilm.encode([QUERY])
    raw = env.store.search_dense(env.collection, vector, 4 * LIMIT)[0]
    assert {r["media_id"] for r in raw} <= hidden, "the test's rows must outrank the files"
    raw = env.store.search_bm25(env.collection, [QUERY], LIMIT)[0]
    assert sum(r["media_id"] in hidden for r in raw) >= LIMIT - 1

    files = {str(lib / name) for name in TOPICS}
    for mode in MODES:
        for filters in (None, Filters(modality=Modality.DOCUMENT)):
            hits = env.searcher().search(QUERY, mode, LIMIT, filters)  # type: ignore[arg-type]
            assert len(hits) == LIMIT, (mode, filters, [h.path for h in hits])
            assert {h.path for h in hits} <= files
            assert [h.rank for h in hits] == list(range(1, LIMIT + 1))
            assert hits[0].path == str(lib / "router.txt"), mode
        if mode == "dense":  # the files' own ranking is what it was before
            assert [h.segment_id for h in hits] == [h.segment_id for h in before]


def test_fewer_known_rows_than_limit_returns_all_of_them(env: Env) -> None:
    lib = make_library(env.root)
    env.ingest(lib)
    in_flight(env, env.collection, text_rows(env), n_media=6)
    for mode in MODES:
        hits = env.searcher().search(QUERY, mode, 20)  # type: ignore[arg-type]
        # bm25 finds only the files that share a word with the query
        assert {h.path for h in hits} <= {str(lib / name) for name in TOPICS}
        if mode != "bm25":
            assert len(hits) == len(TOPICS), mode


def test_an_example_photo_fills_its_hits_with_known_photos(env: Env, tmp_path: Path) -> None:
    env.with_images()
    lib = make_photos(env.root)
    assert env.ingest(lib).new == len(PHOTOS)
    query = tmp_path / "query-rocket.jpg"
    altered(photo("rocket")).save(query)
    searcher = env.searcher()
    [space] = [s for s in searcher.spaces if QueryKind.IMAGE in s.queries]
    before = searcher.search_image(query, limit=LIMIT)
    assert len(before) == LIMIT

    # every photo again, as media not linked yet: the grouped search's first groups are theirs
    ids, vectors = next(env.store.iter_vectors(space.collection, expr='modality == "image"'))
    rows: list[Row] = [("", vectors[ids.index(before[0].media_id)], Modality.IMAGE)]
    hidden = in_flight(env, space.collection, rows, n_media=8)
    picture = searcher.decoders[QueryKind.IMAGE](query, [space.encoder])
    vector = space.encoder.encode_query(QueryKind.IMAGE, picture)
    raw = env.store.search_dense(space.collection, vector, LIMIT, group_by="media_id")[0]
    assert {r["media_id"] for r in raw} <= hidden

    hits = env.searcher().search_image(query, limit=LIMIT)
    assert [h.segment_id for h in hits] == [h.segment_id for h in before]
    assert Path(hits[0].path).stem == "rocket"
