"""What mmrag asks of a Milvus server, by its version, and the fallback when the version does
not say: a real server (tests/server/conftest.py) for the second part."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mmrag.store.milvus import Capabilities, MilvusStore
from mmrag.store.schema import Segment, Space, StoreError


@pytest.mark.parametrize(
    ("version", "bm25", "grouping"),
    [
        ("v2.3.5-lite", False, False),
        ("2.4.13", False, True),
        ("v2.5.10", True, True),
        ("v2.6.0-rc1", True, True),
        ("3.0", True, True),
        ("unknown version", True, True),  # a server that does not say is taken at its word
    ],
)
def test_capabilities_follow_the_version(version: str, bm25: bool, grouping: bool) -> None:
    caps = Capabilities.of(version)
    assert (caps.bm25, caps.grouping, caps.inverted) == (bm25, grouping, grouping)
    assert caps.bm25_note().startswith(f"this Milvus server ({version}) has no BM25")


def test_a_server_that_fails_to_make_bm25_gets_dense_text_and_grouped_hits(
    milvus_server_uri: str, milvus_server_token: str, server_prefix: str
) -> None:
    store = MilvusStore(milvus_server_uri, milvus_server_token, server_prefix)
    try:
        real = store.capabilities
        if real.bm25:
            pytest.skip(f"this server ({real.version}) has BM25: nothing to fall back from")
        # as if its version said nothing of BM25 and INVERTED indexes: the create fails and is
        # made again without them
        store._caps = replace(Capabilities("unknown version"), grouping=real.grouping)
        name = store.ensure_space(Space("text", "toy-model", 4, bm25=True))
        assert not store.full_text(name) and not store.capabilities.bm25
        assert store.capabilities.inverted == real.inverted
        assert store.notes() == [store.capabilities.bm25_note()]
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((20, 4)).astype(np.float32)
        segs = [
            Segment(f"m{n // 5}:text:{n % 5}", f"m{n // 5}", "document", 0, 1, f"row {n}", v)
            for n, v in enumerate(vectors)
        ]
        store.upsert(name, segs)
        store.flush(name)
        query = segs[7].vector / np.linalg.norm(segs[7].vector)
        # hybrid answers with the dense half; BM25 alone is refused with the reason
        assert store.search_hybrid(name, query, "row", 3)[0]["id"] == "m1:text:2"
        with pytest.raises(StoreError, match="has no BM25"):
            store.search_bm25(name, ["row"], 3)
        # a server without grouping search still gives one row per media
        grouped = store.search_dense(name, query[None], 4, group_by="media_id")[0]
        assert sorted(h["media_id"] for h in grouped) == ["m0", "m1", "m2", "m3"]
        assert grouped[0]["id"] == "m1:text:2"
    finally:
        store.close()


def test_a_migrations_upserts_stay_under_the_grpc_limit_whatever_the_batch() -> None:
    from mmrag.store.milvus import MAX_REQUEST_BYTES, _by_size

    big = "x" * 65_000  # the longest text a row holds (TEXT_MAX_BYTES)
    rows = [{"id": str(i), "text": big, "vector": [0.0] * 1024} for i in range(1000)]
    parts = list(_by_size(rows, MAX_REQUEST_BYTES))
    assert [r["id"] for p in parts for r in p] == [str(i) for i in range(1000)]
    assert len(parts) > 1 and all(len(p) * (2 * 65_000 + 4096) <= 64 << 20 for p in parts)
    small = [{"id": str(i), "text": "short", "vector": [0.0] * 384} for i in range(1000)]
    assert len(list(_by_size(small, MAX_REQUEST_BYTES))) == 1
