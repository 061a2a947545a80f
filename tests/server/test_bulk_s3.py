"""`mmrag ingest --bulk` against a Milvus server that stores its data in a MinIO/S3 bucket, as
docker-compose.yml's does (tests/server/conftest.py, `milvus_s3_server`: a real Milvus 2.3.5 on
moto's S3 server). Such a server imports object keys of its own bucket, never paths on a disk:
the files are uploaded to `bulk_bucket`, imported, and their keys removed; the rows are the rows
a normal ingest upserts; a bucket that is not the server's fails the import with the reason,
and leaves the media pending for the next run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.store.bucket import DEFAULT_PREFIX, BulkBucket
from tests.conftest import REPO, Env
from tests.server.conftest import S3Server
from tests.server.envs import bulk_cli_env, collection_ids, env_maker

SAMPLES = REPO / "data" / "library"


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A document and a photo: rows for both collections, text and image."""
    lib = tmp_path / "library"
    for rel in ("docs/kitchen/sourdough.md", "photos/coffee.jpg"):
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / rel, lib / rel)
    return lib


def _files(library: Path) -> int:
    return sum(1 for p in library.rglob("*") if p.is_file())


@pytest.fixture
def make_s3_env(tmp_path: Path, minilm: TextEncoder, milvus_s3_server: S3Server) -> Iterator:
    server = milvus_s3_server
    with env_maker(tmp_path, minilm, server.uri, server.token) as make:

        def make_s3(name: str, bucket: str = server.bucket) -> Env:
            return make(
                name,
                bulk_folder=tmp_path / name / "staging",
                bulk_bucket=bucket,
                bulk_access_key=server.access_key,
                bulk_secret_key=server.secret_key,
            )

        yield make_s3


def _cli(env: Env, *args: str) -> Any:
    """The real `mmrag` with the env's settings, the bucket's included."""
    return env.cli_with(bulk_cli_env(env), *args, "--json")


def _mmrag_keys(bucket: BulkBucket) -> list[str]:
    found = bucket.client().list_objects(bucket.name, bucket.prefix + "/", recursive=True)
    return [o.object_name for o in found]


def test_bulk_ingest_through_the_servers_bucket(make_s3_env, library: Path) -> None:
    normal = make_s3_env("normal")
    report = normal.ingest(library)
    assert report.failed == [] and report.new == _files(library), report
    expected = collection_ids(normal)
    assert len(expected) == 2 and all(expected.values())

    bulk = make_s3_env("bulk")
    result = _cli(bulk, "ingest", "--bulk", str(library))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["new"], summary["failed"]) == (_files(library), [])
    assert collection_ids(bulk) == expected  # the same ids, one row each
    assert bulk.catalog.counts()["pending"] == 0
    target = bulk.settings.bulk_target()
    assert target is not None and _mmrag_keys(target) == []  # imported keys are removed
    assert not any(Path(bulk.settings.bulk_folder).iterdir())  # and the staged files

    hits = json.loads(_cli(bulk, "search", "how long does the starter take").stdout)
    assert hits[0]["path"].endswith("kitchen/sourdough.md")
    hits = json.loads(_cli(bulk, "search", "a cup of coffee").stdout)
    assert any(h["path"].endswith("photos/coffee.jpg") for h in hits[:3])


def test_a_bucket_that_is_not_the_servers_fails_the_import_and_the_next_run_finishes(
    make_s3_env, milvus_s3_server: S3Server, library: Path
) -> None:
    server = BulkBucket.parse(milvus_s3_server.bucket, "", "")
    other = f"{milvus_s3_server.bucket.rsplit('/', 1)[0]}/not-the-servers"
    wrong = make_s3_env("wrong", bucket=other)
    target = wrong.settings.bulk_target()
    assert target is not None and target.name != server.name
    target.client().make_bucket(target.name)
    try:
        result = _cli(wrong, "ingest", "--bulk", str(library))
        assert result.exit_code == 2, result.output
        line = " ".join(result.output.split())
        assert "bulk import of " in line and f"{DEFAULT_PREFIX}/" in line
        assert "The specified key does not exist" in line  # the server's own reason
        assert f"uploaded to bulk_bucket {target.url}: it must be the bucket the server" in line
        counts = wrong.catalog.counts()
        assert (counts["media"], counts["pending"]) == (0, _files(library))
        assert _mmrag_keys(target) == []  # its uploads are removed all the same
    finally:
        target.client().remove_bucket(target.name)

    # the same library, the server's bucket named: everything pending is imported
    wrong.settings.bulk_bucket = milvus_s3_server.bucket
    result = _cli(wrong, "ingest", "--bulk", str(library))
    assert result.exit_code == 0, result.output
    done = (json.loads(result.stdout)["new"], wrong.catalog.counts()["pending"])
    assert done == (_files(library), 0)
