"""A real Milvus server for the tests in tests/server: MMRAG_TEST_MILVUS_URI, else a
`milvus-server` (PyPI `milvus==2.3.5`) started for the session on free ports, else a skip.
The tests of a server on MinIO/S3 (`milvus_s3_server`) get one more: the given server with its
bucket (MMRAG_TEST_BULK_BUCKET), else a `milvus-server` on moto's S3 server, else a skip."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.envs import drop_prefixed, new_prefix

# Read before tests/conftest.py's _clean_env hides MMRAG_* variables from each test.
TEST_URI_VAR = "MMRAG_TEST_MILVUS_URI"
TEST_TOKEN_VAR = "MMRAG_TEST_MILVUS_TOKEN"
_GIVEN_URI = os.environ.get(TEST_URI_VAR, "")
_GIVEN_TOKEN = os.environ.get(TEST_TOKEN_VAR, "")
TEST_BUCKET_VAR = "MMRAG_TEST_BULK_BUCKET"
_GIVEN_BUCKET = os.environ.get(TEST_BUCKET_VAR, "")
_GIVEN_BUCKET_KEYS = (
    os.environ.get("MMRAG_TEST_BULK_ACCESS_KEY", ""),
    os.environ.get("MMRAG_TEST_BULK_SECRET_KEY", ""),
)
START_TIMEOUT_S = 180.0

# Every port `milvus-server --help` lets us set: each gets a free one, so two sessions (or a
# developer's own server on 19530) never collide.
_PORT_FLAGS = (
    "--proxy-port",
    "--etcd-port",
    "--root-coord-port",
    "--proxy-internal-port",
    "--query-coord-port",
    "--query-node-port",
    "--index-coord-port",
    "--index-node-port",
    "--data-coord-port",
    "--data-node-port",
)


def _free_ports(n: int) -> list[int]:
    """n distinct ports free right now (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _embedded_etcd_config(data: Path) -> Path:
    """A config for the server's embedded etcd on free ports: left alone it listens on 2379
    and 2380 whatever --etcd-port says, so a second server on the machine cannot start.
    Milvus reads etcd.config.path from the ETCD_CONFIG_PATH variable."""
    client, peer = _free_ports(2)
    path = data / "embed-etcd.yaml"
    path.write_text(
        "name: default\n"
        f"listen-client-urls: http://127.0.0.1:{client}\n"
        f"advertise-client-urls: http://127.0.0.1:{client}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: default=http://127.0.0.1:{peer}\n",
        encoding="utf-8",
    )
    return path


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group (milvus-server leaves its `milvus run
    standalone` child running otherwise), then SIGKILL what is left after 3 s: its data is
    thrown away, and a graceful stop took over 20 s."""
    pgid = proc.pid  # started in a session of its own: its group outlives it if it dies first
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        proc.poll()
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _wait_ready(uri: str, proc: subprocess.Popen[bytes], log: Path) -> str:
    """Poll until the server answers get_server_version; its version string."""
    from pymilvus import MilvusClient

    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"milvus-server exited with {proc.returncode}:\n{tail}")
        try:
            client = MilvusClient(uri=uri, timeout=5)
            try:
                return str(client.get_server_version())
            finally:
                client.close()
        except Exception as exc:  # not up yet: any connection error
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(1.0)
    raise TimeoutError(f"milvus-server at {uri} did not answer in {START_TIMEOUT_S:.0f} s: {last}")


def unavailable() -> str | None:
    """Why no server can be had (neither a given uri nor the `milvus` package); None: one can."""
    if _GIVEN_URI or importlib.util.find_spec("milvus") is not None:
        return None
    return (
        f"no Milvus server: set {TEST_URI_VAR}=http://host:19530 (a running server) or "
        "`pip install milvus==2.3.5` so the tests start one"
    )


@contextlib.contextmanager
def _started_server(*extra_config: str) -> Iterator[str]:
    """A `milvus-server` on free ports, its data in a temporary folder (`--extra-config
    key=value` for each of `extra_config`); its uri while it runs."""
    data = Path(tempfile.mkdtemp(prefix="mmrag-milvus-server-"))
    ports = _free_ports(len(_PORT_FLAGS))
    args = [sys.executable, "-c", "import sys; from milvus import main; sys.exit(main())"]
    args += ["--data", str(data)]
    for flag, port in zip(_PORT_FLAGS, ports, strict=True):
        args += [flag, str(port)]
    for item in extra_config:
        args += ["--extra-config", item]
    log = data / "mmrag-server.log"
    env = {**os.environ, "ETCD_CONFIG_PATH": str(_embedded_etcd_config(data))}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=data, env=env
        )
    uri = f"http://127.0.0.1:{ports[0]}"
    try:
        _wait_ready(uri, proc, log)
        yield uri
    finally:
        _stop_group(proc)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def milvus_server_uri() -> Iterator[str]:
    """The uri of a real Milvus server for this session (see the module docstring)."""
    if _GIVEN_URI:
        yield _GIVEN_URI
        return
    if reason := unavailable():
        pytest.skip(reason)
    with _started_server() as uri:
        yield uri


@dataclass(frozen=True)
class S3Server:
    """A Milvus server that stores its data in a MinIO/S3 bucket, as docker-compose.yml's
    does: `bucket` is that bucket's URL (mmrag's `bulk_bucket`), with its keys."""

    uri: str
    token: str
    bucket: str
    access_key: str
    secret_key: str


def s3_unavailable() -> str | None:
    """Why no Milvus server on S3 can be had; None: one can."""
    if _GIVEN_URI:
        if _GIVEN_BUCKET:
            return None
        return (
            f"{TEST_URI_VAR} is a server of your own: set {TEST_BUCKET_VAR} to its MinIO/S3 "
            "bucket (http://host:9000/a-bucket) and MMRAG_TEST_BULK_ACCESS_KEY / "
            "MMRAG_TEST_BULK_SECRET_KEY to its keys, for the tests of a server on S3"
        )
    missing = [m for m in ("milvus", "moto") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"no Milvus server on S3: `pip install milvus==2.3.5 'moto[server]'` (missing: "
            f"{', '.join(missing)}) so the tests start one, or set {TEST_URI_VAR} and "
            f"{TEST_BUCKET_VAR}"
        )
    return None


@pytest.fixture(scope="module")
def milvus_s3_server() -> Iterator[S3Server]:
    """A Milvus server on S3: the given one (MMRAG_TEST_MILVUS_URI with
    MMRAG_TEST_BULK_BUCKET), or a `milvus-server` started with `common.storageType: minio`
    on moto's S3 server (an S3-protocol stand-in for MinIO, in this process), for the module
    (its polling of the bucket would otherwise load the rest of the session)."""
    if reason := s3_unavailable():
        pytest.skip(reason)
    if _GIVEN_URI:
        yield S3Server(_GIVEN_URI, _GIVEN_TOKEN, _GIVEN_BUCKET, *_GIVEN_BUCKET_KEYS)
        return
    import logging

    from minio import Minio
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    port = _free_ports(1)[0]
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    keys = ("mmrag-test-access", "mmrag-test-secret")
    try:
        Minio(f"127.0.0.1:{port}", *keys, secure=False).make_bucket("a-bucket")
        storage = (
            "common.storageType=minio",
            "minio.address=127.0.0.1",
            f"minio.port={port}",
            f"minio.accessKeyID={keys[0]}",
            f"minio.secretAccessKey={keys[1]}",
            "minio.bucketName=a-bucket",
        )
        with _started_server(*storage) as uri:
            yield S3Server(uri, "", f"http://127.0.0.1:{port}/a-bucket", *keys)
    finally:
        s3.stop()


@pytest.fixture(scope="session")
def milvus_server_token() -> str:
    """The token for the test server (MMRAG_TEST_MILVUS_TOKEN; empty for a local one)."""
    return _GIVEN_TOKEN


@pytest.fixture
def server_prefix(milvus_server_uri: str, milvus_server_token: str) -> Iterator[str]:
    """A collection prefix no other test uses (`collection_prefix`: collections are named
    `<prefix>_…`); every collection named so is dropped after the test."""
    prefix = new_prefix()
    yield prefix
    drop_prefixed(milvus_server_uri, milvus_server_token, prefix)
