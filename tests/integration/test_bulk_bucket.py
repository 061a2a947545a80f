"""`ingest --bulk` for a server on MinIO/S3 (`bulk_bucket`, store/bucket.py), without Milvus:
the files go to a real S3 server over HTTP (moto's, an S3-protocol stand-in for MinIO, started
by the test), and the import step reads them back from the bucket instead of importing them
(Milvus Lite has no import; tests/server/test_bulk_s3.py runs the real import on a Milvus
server that stores its data in such a bucket)."""

from __future__ import annotations

import io
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath, PurePosixPath

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from mmrag.settings import Settings
from mmrag.store.bucket import DEFAULT_PREFIX, URL_FORM, BulkBucket
from mmrag.store.bulk import BulkImport
from mmrag.store.schema import StoreError
from tests.conftest import REPO, Env

DOCS = ["kitchen/sourdough.md", "home/composting.txt", "notes/first-aid.pdf"]
KEYS = ("test-access", "test-secret")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free port, for this module: host:port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> BulkBucket:
    """A new, empty bucket of this test's own."""
    made = BulkBucket.parse(f"http://{s3_endpoint}/b-{uuid.uuid4().hex[:12]}", *KEYS)
    made.client().make_bucket(made.name)
    return made


def _keys(bucket: BulkBucket, prefix: str = "") -> list[str]:
    found = bucket.client().list_objects(bucket.name, prefix, recursive=True)
    return sorted(o.object_name for o in found)


class KeptKeys(BulkImport):
    """The import step reads each key back from the bucket (Milvus Lite cannot import it)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.imported: dict[str, list[PurePath]] = {}
        self.ids: dict[str, list[str]] = {}

    def prepare(self, collection: str) -> None:
        """No import runs on Lite that a run would wait for."""

    def _import(self, files: dict[str, list[PurePath]]) -> None:
        assert self.bucket is not None
        client = self.bucket.client()
        for collection, keys in files.items():
            self.imported.setdefault(collection, []).extend(keys)
            for key in keys:
                data = client.get_object(self.bucket.name, str(key)).read()
                table = pq.read_table(io.BytesIO(data))
                self.ids.setdefault(collection, []).extend(table.column("id").to_pylist())


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "library"
    for rel in DOCS:
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib / rel).write_bytes((REPO / "data" / "library" / "docs" / rel).read_bytes())
    return lib


def _run(env: Env, library: Path, bulk: BulkImport) -> None:
    runner = env.models.runner(env.catalog, env.store, read_workers=2, write_batch=8)
    runner.bulk = bulk
    runner.run([str(library)])


def test_a_bucket_url_is_parsed_or_refused_with_its_form() -> None:
    b = BulkBucket.parse("http://127.0.0.1:9000/a-bucket", "ak", "sk")
    assert (b.endpoint, b.name, b.prefix, b.secure) == (
        "127.0.0.1:9000",
        "a-bucket",
        DEFAULT_PREFIX,
        False,
    )
    assert (b.access_key, b.secret_key) == ("ak", "sk")
    assert "sk" not in repr(b)  # keys stay out of messages and logs
    b = BulkBucket.parse("https://s3.example.com/data/imports/mmrag/")
    assert (b.endpoint, b.name, b.prefix, b.secure) == (
        "s3.example.com",
        "data",
        "imports/mmrag",
        True,
    )
    assert b.url == "https://s3.example.com/data/imports/mmrag"
    for bad in ("127.0.0.1:9000/a-bucket", "s3://a-bucket", "http://127.0.0.1:9000", "http:///b"):
        with pytest.raises(ValueError) as err:
            BulkBucket.parse(bad)
        assert str(err.value) == f"{bad!r} is not {URL_FORM}"
    with pytest.raises(ValueError, match="give the keys as bulk_access_key and bulk_secret_key"):
        BulkBucket.parse("http://user:pw@127.0.0.1:9000/a-bucket")
    with pytest.raises(ValueError, match="out of range"):
        BulkBucket.parse("http://127.0.0.1:99999/a-bucket")
    with pytest.raises(ValidationError) as err:
        Settings(bulk_bucket="a-bucket")
    assert "bulk_bucket" in str(err.value) and URL_FORM in str(err.value)
    assert Settings(bulk_bucket="").bulk_target() is None
    target = Settings(bulk_bucket=" http://h:9/b ", bulk_access_key="k").bulk_target()
    assert target is not None and (target.endpoint, target.access_key) == ("h:9", "k")


def test_keys_default_to_the_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-sk")
    b = BulkBucket.parse("http://h:9/b")
    assert (b.access_key, b.secret_key) == ("env-ak", "env-sk")
    b = BulkBucket.parse("http://h:9/b", "given", "")
    assert (b.access_key, b.secret_key) == ("given", "env-sk")


def test_a_bucket_that_cannot_take_files_says_why(s3_endpoint: str) -> None:
    missing = BulkBucket.parse(f"http://{s3_endpoint}/no-such-bucket", *KEYS)
    with pytest.raises(OSError) as err:
        missing.check()
    assert str(err.value) == (
        f"bulk_bucket http://{s3_endpoint}/no-such-bucket/{DEFAULT_PREFIX}: the bucket "
        "'no-such-bucket' does not exist (it must be the one the Milvus server stores its data "
        "in: minio.bucketName)"
    )
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    unreachable = BulkBucket.parse(f"http://127.0.0.1:{closed}/bkt", *KEYS)
    with pytest.raises(OSError) as err:
        unreachable.check()
    line = str(err.value)
    assert line.startswith(f"bulk_bucket http://127.0.0.1:{closed}/bkt/{DEFAULT_PREFIX}: ")
    assert line.endswith("Connection refused")


def test_bulk_files_go_to_the_bucket_and_leave_it_once_imported(
    make_env: Callable[..., Env], library: Path, tmp_path: Path, bucket: BulkBucket
) -> None:
    normal = make_env(milvus_uri=str(tmp_path / "n.db"), catalog=tmp_path / "n.sqlite")
    normal.ingest(library)
    expected = {c: sorted(normal.store.ids(c)) for c in normal.store.existing_collections()}
    assert expected and all(expected.values())

    client = bucket.client()
    client.put_object(bucket.name, "files/insert_log/1", io.BytesIO(b"x"), 1)  # the server's
    env = make_env(milvus_uri=str(tmp_path / "b.db"), catalog=tmp_path / "b.sqlite")
    staging = tmp_path / "staging"
    # a few rows per import and small files: several imports and keys in one run
    importer = KeptKeys(env.store, staging, "", rows=20, file_bytes=16_000, bucket=bucket)
    _run(env, library, importer)

    assert {c: sorted(ids) for c, ids in importer.ids.items()} == expected  # each row once
    keys = [str(k) for ks in importer.imported.values() for k in ks]
    assert len(keys) > len(expected)  # several files per collection
    for key in keys:  # `<prefix>/<writer's uuid>/<n>.parquet`, as the server is to read them
        prefix, writer, name = key.split("/")
        assert prefix == DEFAULT_PREFIX and uuid.UUID(writer) and name.endswith(".parquet")
    assert all(isinstance(k, PurePosixPath) for ks in importer.imported.values() for k in ks)
    assert _keys(bucket) == ["files/insert_log/1"]  # imported keys removed, nothing else
    assert not any(staging.iterdir())  # nor is anything left where they were staged
    assert env.catalog.counts()["pending"] == 0


def test_a_failed_upload_fails_the_run_and_leaves_its_media_pending(
    make_env: Callable[..., Env], library: Path, tmp_path: Path, bucket: BulkBucket
) -> None:
    """pymilvus uploads in a thread of its own: its error must reach the run, not end the
    thread and let the import take the other files for the whole batch."""
    env = make_env()
    importer = KeptKeys(env.store, tmp_path / "staging", "", bucket=bucket)
    bucket.client().remove_bucket(bucket.name)  # gone between the check and the upload
    with pytest.raises(StoreError) as err:
        _run(env, library, importer)
    assert str(err.value).startswith(f"bulk files for {env.settings.collection_prefix}_text")
    assert f"could not be written to {bucket.url}: " in str(err.value)
    assert importer.imported == {}  # nothing was imported
    counts = env.catalog.counts()
    assert (counts["media"], counts["pending"]) == (0, len(DOCS))
    assert not any((tmp_path / "staging").iterdir())


def test_a_killed_runs_keys_are_swept_when_old(bucket: BulkBucket) -> None:
    client = bucket.client()
    left = [
        f"{DEFAULT_PREFIX}/{uuid.uuid4()}/1.parquet",
        f"{DEFAULT_PREFIX}/{uuid.uuid4()}/2.parquet",
    ]
    kept = [
        f"{DEFAULT_PREFIX}/notes/readme.txt",
        "files/insert_log/7",
        f"{DEFAULT_PREFIX}-x/{uuid.uuid4()}/1.parquet",
    ]
    for key in left + kept:
        client.put_object(bucket.name, key, io.BytesIO(b"x"), 1)
    assert bucket.sweep(older_than=time.time() - 3600) == 0  # too new: may be importing
    assert _keys(bucket) == sorted(left + kept)
    assert bucket.sweep(older_than=time.time() + 60) == 2
    assert _keys(bucket) == sorted(kept)
    assert bucket.remove(f"/{DEFAULT_PREFIX}/notes") == 1
    assert _keys(bucket) == sorted(kept[1:])


def test_the_cli_refuses_a_bucket_it_cannot_reach_before_the_store_opens(
    tmp_path: Path, s3_endpoint: str
) -> None:
    from typer.testing import CliRunner

    from mmrag.cli import app

    env = {
        "MMRAG_MILVUS_URI": "http://127.0.0.1:9",  # no server: the bucket is checked first
        "MMRAG_CATALOG": str(tmp_path / "catalog.sqlite"),
        "MMRAG_BULK_BUCKET": f"http://{s3_endpoint}/not-there",
    }
    result = CliRunner().invoke(app, ["ingest", "--bulk", str(tmp_path)], env=env)
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        f"error: bulk_bucket http://{s3_endpoint}/not-there/{DEFAULT_PREFIX}: the bucket "
        "'not-there' does not exist (it must be the one the Milvus server stores its data in: "
        "minio.bucketName)"
    )
    assert not (tmp_path / "catalog.sqlite").exists()  # refused before anything was opened
    bad = CliRunner().invoke(
        app, ["ingest", "--bulk", str(tmp_path)], env=env | {"MMRAG_BULK_BUCKET": "a-bucket"}
    )
    assert bad.exit_code == 2 and "bulk_bucket" in bad.output and URL_FORM in bad.output
