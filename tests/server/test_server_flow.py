"""The whole flow against a real Milvus server (tests/server/conftest.py): ingest part of the
sample library (documents, photos, the recording), search it by text through the real CLI,
hybrid search on a server without BM25 (Milvus 2.3) answered densely and said so, a re-ingest
that writes nothing, `mmrag status`, and a prune that removes a deleted file's rows."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmrag.pipelines.text.encoder import TextEncoder
from tests.conftest import REPO, Env
from tests.server.envs import cli_env, drop_prefixed, new_prefix, prefixed_env

SAMPLES = REPO / "data" / "library"
LEASE_Q = "How much warning do we owe the owner before we leave the rental?"
TRAIN_Q = "which platform does the London train leave from"


@dataclass
class Flow:
    env: Env
    library: Path
    counts: dict[str, int]  # rows per collection after the first ingest

    def cli(self, *args: str):
        return self.env.cli_with(cli_env(self.env), *args)


def library_part(root: Path) -> Path:
    lib = root / "library"
    shutil.copytree(SAMPLES / "docs" / "kitchen", lib / "kitchen")
    shutil.copy(SAMPLES / "docs" / "home" / "lease-summary.pdf", lib / "lease-summary.pdf")
    shutil.copy(SAMPLES / "docs" / "home" / "composting.txt", lib / "composting.txt")
    (lib / "photos").mkdir()
    for name in ("chelsea the cat.jpg", "coffee.jpg", "rocket launch.jpg"):
        shutil.copy(SAMPLES / "photos" / name, lib / "photos" / name)
    shutil.copytree(SAMPLES / "recordings", lib / "recordings")
    return lib


@pytest.fixture(scope="module")
def flow(
    tmp_path_factory: pytest.TempPathFactory,
    minilm: TextEncoder,
    milvus_server_uri: str,
    milvus_server_token: str,
) -> Iterator[Flow]:
    root = tmp_path_factory.mktemp("server-flow")
    prefix = new_prefix()
    env = prefixed_env(
        root,
        minilm,
        milvus_server_uri,
        milvus_server_token,
        prefix,
        catalog=root / "catalog.sqlite",
        thumbnails=root / "thumbs",
    )
    env.with_images().with_audio()
    library = library_part(root)
    try:
        report = env.ingest(library)
        assert report.failed == [] and report.new == 12, report
        counts = {c: env.store.count(c) for c in env.store.existing_collections()}
        yield Flow(env, library, counts)
    finally:
        env.close()
        drop_prefixed(milvus_server_uri, milvus_server_token, prefix)


def test_the_collections_are_on_the_server_and_text_has_no_bm25_there(flow: Flow) -> None:
    store = flow.env.store
    names = set(flow.counts)
    text = flow.env.collection
    assert text in names and any("_image_" in n for n in names), names
    assert all(n > 0 for n in flow.counts.values()), flow.counts
    # Milvus Lite's search snapshots are never made or read for a server
    assert store.snapshots is None and store.refresh_snapshots() == []
    assert not list(flow.env.root.rglob("*.search"))
    if not store.capabilities.bm25:  # Milvus before 2.5: made without its BM25 function
        assert not store.full_text(text)
        assert store.notes() == [store.capabilities.bm25_note()]


def test_text_search_finds_the_file_and_the_place(flow: Flow) -> None:
    r = flow.cli("search", LEASE_Q, "--json", "-k", "3", "--mode", "dense", "--local")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)[0]
    assert first["path"].endswith("lease-summary.pdf") and first["page"] == 2, first
    r = flow.cli("search", TRAIN_Q, "--json", "-k", "3", "--mode", "dense", "--local")
    first = json.loads(r.stdout)[0]
    assert first["path"].endswith("voice memo from Sam.ogg"), first
    assert first["modality"] == "transcript" and 5.0 < first["start"] < 8.0, first
    hits = flow.env.searcher().search("cat", "dense", limit=1)
    assert hits[0].path.endswith("chelsea the cat.jpg"), hits


def test_hybrid_and_bm25_say_dense_only_and_still_answer(flow: Flow) -> None:
    dense = flow.cli("search", LEASE_Q, "--json", "-k", "3", "--mode", "dense", "--local")
    for mode in ("hybrid", "bm25"):
        r = flow.cli("search", LEASE_Q, "--json", "-k", "3", "--mode", mode, "--local")
        assert r.exit_code == 0, r.output
        hits = json.loads(r.stdout)
        assert hits[0]["path"].endswith("lease-summary.pdf") and hits[0]["page"] == 2, hits
        if not flow.env.store.capabilities.bm25:
            said = " ".join(r.stderr.split())
            assert "has no BM25 full-text search: text search is dense only" in said, said
            assert said.count("no BM25") == 1, said  # once, not per space or per query
            assert [h["path"] for h in hits] == [h["path"] for h in json.loads(dense.stdout)]
    # the same from the searcher: its notes say it once per searcher
    searcher = flow.env.searcher()
    searcher.search(LEASE_Q, "hybrid", limit=3)
    searcher.search(TRAIN_Q, "hybrid", limit=3)
    assert len(searcher.notes) == (0 if flow.env.store.capabilities.bm25 else 1)


def test_status_says_what_the_server_lacks(flow: Flow) -> None:
    r = flow.cli("status")
    assert r.exit_code == 0, r.output
    said = " ".join(r.stdout.split())
    assert flow.env.settings.milvus_uri in said
    assert "files: 12 indexed, 0 failed" in said, said
    if not flow.env.store.capabilities.bm25:
        version = flow.env.store.capabilities.version
        assert f"this Milvus server ({version}) has no BM25 full-text search" in said, said
    data = json.loads(flow.cli("status", "--json").stdout)
    assert {n: s["rows"] for n, s in data["spaces"].items()} == flow.counts


def test_reingest_writes_nothing(flow: Flow) -> None:
    report = flow.env.ingest(flow.library)
    assert report.new == 0 and report.changed == 0 and report.segments == 0, report
    assert {c: flow.env.store.count(c) for c in flow.counts} == flow.counts


def test_prune_removes_a_deleted_files_rows(flow: Flow) -> None:
    """Last: it changes the library."""
    gone = flow.library / "composting.txt"
    media = flow.env.catalog.path_record(str(gone))
    assert media is not None and media.media_id
    text = flow.env.collection
    assert flow.env.store.count(text, f'media_id == "{media.media_id}"') > 0
    gone.unlink()
    report = flow.env.ingest(flow.library, prune=True)
    assert report.pruned == 1 and report.removed_media == 1, report
    assert flow.env.store.count(text, f'media_id == "{media.media_id}"') == 0
    hits = flow.env.searcher().search("compost heap green and brown layers", "hybrid", limit=5)
    assert all(not h.path.endswith("composting.txt") for h in hits), hits
