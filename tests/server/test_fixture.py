"""The server fixture itself: a real server answers, and a test's prefix is cleaned up."""

from __future__ import annotations

import pytest
from pymilvus import MilvusClient


def test_server_answers_and_a_prefix_of_its_own(milvus_server_uri: str, server_prefix: str) -> None:
    client = MilvusClient(uri=milvus_server_uri)
    try:
        assert client.get_server_version()
        name = f"{server_prefix}_probe"
        client.create_collection(name, dimension=4)
        client.insert(name, [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}])
        assert name in client.list_collections()
    finally:
        client.close()


def test_without_a_server_the_skip_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server import conftest

    monkeypatch.setattr(conftest, "_GIVEN_URI", "")
    monkeypatch.setattr(conftest.importlib.util, "find_spec", lambda name: None)
    reason = conftest.unavailable()
    assert reason is not None
    assert "MMRAG_TEST_MILVUS_URI=http://host:19530" in reason
    assert "pip install milvus==2.3.5" in reason
    monkeypatch.setattr(conftest, "_GIVEN_URI", "http://db:19530")
    assert conftest.unavailable() is None


def test_without_an_s3_server_the_skip_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server import conftest

    monkeypatch.setattr(conftest, "_GIVEN_URI", "")
    real = conftest.importlib.util.find_spec
    monkeypatch.setattr(
        conftest.importlib.util, "find_spec", lambda name: None if name == "moto" else real(name)
    )
    reason = conftest.s3_unavailable()
    assert reason is not None and "(missing: moto)" in reason
    assert "pip install milvus==2.3.5 'moto[server]'" in reason
    monkeypatch.setattr(conftest, "_GIVEN_URI", "http://db:19530")
    reason = conftest.s3_unavailable()
    assert reason is not None and "MMRAG_TEST_BULK_BUCKET" in reason  # a server, no bucket
    monkeypatch.setattr(conftest, "_GIVEN_BUCKET", "http://db:9000/a-bucket")
    assert conftest.s3_unavailable() is None
