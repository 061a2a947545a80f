"""`mmrag ingest --bulk` against a real Milvus server (tests/server/conftest.py): the rows a
server imports from Parquet files are the rows a normal ingest upserts (same ids, same counts),
search finds them, a re-run embeds nothing, and an import that fails, or a run cut short after
its import but before its media were marked done, leaves pending media the next run finishes.

The server opens the files by their path (Milvus with local storage), so it must see this
machine's temporary folder: the server the fixture starts does; for a server of your own
(MMRAG_TEST_MILVUS_URI) name a folder it reads at the same path in MMRAG_TEST_BULK_FOLDER."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.store.bulk import BulkImport
from mmrag.store.schema import StoreError
from tests.conftest import REPO, Env
from tests.server.envs import bulk_cli_env, collection_ids, collections, env_maker

# Read before tests/conftest.py's _clean_env hides MMRAG_* variables from each test.
_GIVEN_URI = os.environ.get("MMRAG_TEST_MILVUS_URI", "")
_GIVEN_FOLDER = os.environ.get("MMRAG_TEST_BULK_FOLDER", "")
SAMPLES = REPO / "data" / "library"
PHOTOS = ("coffee.jpg", "coins.jpg")


def _library(root: Path) -> Path:
    lib = root / "library"
    shutil.copytree(SAMPLES / "docs" / "kitchen", lib / "kitchen")
    (lib / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy(SAMPLES / "photos" / name, lib / "photos" / name)
    return lib


@pytest.fixture
def library(tmp_path: Path) -> Path:
    return _library(tmp_path)


@dataclass(frozen=True)
class Normal:
    """What a normal ingest of the library wrote on the server: ids and rows per collection
    (keyed less the prefix; ids follow the content, so any copy of the library has them)."""

    ids: dict[str, list[str]]
    counts: dict[str, int]


@pytest.fixture(scope="module")
def normal(
    tmp_path_factory: pytest.TempPathFactory,
    minilm: TextEncoder,
    milvus_server_uri: str,
    milvus_server_token: str,
) -> Normal:
    """A normal ingest of the library on the server, once for the tests that compare with it
    (each new collection costs seconds on a server)."""
    root = tmp_path_factory.mktemp("normal")
    with env_maker(root, minilm, milvus_server_uri, milvus_server_token) as make:
        env = make("normal")
        report = env.ingest(_library(root))
        assert report.failed == [] and report.new == 8, report
        return Normal(collection_ids(env), _counts(env))


@pytest.fixture
def bulk_folder(tmp_path: Path) -> Path:
    if _GIVEN_URI and not _GIVEN_FOLDER:
        pytest.skip(
            "MMRAG_TEST_MILVUS_URI is a server of your own: set MMRAG_TEST_BULK_FOLDER to a "
            "folder it reads at the same path (bulk import opens files by path)"
        )
    return Path(_GIVEN_FOLDER) if _GIVEN_FOLDER else tmp_path / "parquet"


@pytest.fixture
def make_server_env(
    tmp_path: Path,
    minilm: TextEncoder,
    milvus_server_uri: str,
    milvus_server_token: str,
    bulk_folder: Path,
) -> Iterator:
    with env_maker(tmp_path, minilm, milvus_server_uri, milvus_server_token) as make:
        yield lambda name: make(name, bulk_folder=bulk_folder)


def _counts(env: Env) -> dict[str, int]:
    """Each of the env's collections' rows, keyed as `collection_ids` keys them."""
    prefix = env.settings.collection_prefix
    return {c[len(prefix) :]: env.store.count(c) for c in collections(env)}


def _cli(env: Env, *args: str) -> Any:
    """The real `mmrag` on the env's store, settings as the env's (chunks, bulk folder)."""
    result = env.cli_with(bulk_cli_env(env), *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _bulk_cli(env: Env, library: Path) -> dict:
    return _cli(env, "ingest", "--bulk", str(library))


def test_bulk_ingest_writes_what_a_normal_ingest_writes(
    make_server_env, library: Path, normal: Normal
) -> None:
    expected = normal.ids
    assert len(expected) == 2 and all(expected.values())

    bulk = make_server_env("bulk")
    summary = _bulk_cli(bulk, library)
    assert (summary["new"], summary["failed"]) == (8, [])
    assert summary["segments"] == sum(len(ids) for ids in expected.values())
    assert collection_ids(bulk) == expected  # the same ids, one row each
    assert _counts(bulk) == normal.counts
    assert bulk.catalog.counts()["pending"] == 0
    assert not any(Path(bulk.settings.bulk_folder).iterdir())  # imported files are removed

    hits = _cli(bulk, "search", "how long does the starter take")
    assert hits[0]["path"].endswith("kitchen/sourdough.md")
    hits = _cli(bulk, "search", "a cup of coffee")
    assert any(h["path"].endswith("photos/coffee.jpg") for h in hits[:3])

    again = _bulk_cli(bulk, library)  # nothing to embed, nothing imported
    assert (again["new"], again["unchanged"], again["segments"]) == (0, 8, 0)
    assert _counts(bulk) == normal.counts


class _LosesItsFiles(BulkImport):
    """The files are gone when the server comes to read them: a real failed import."""

    def _import(self, files: dict[str, list[Path]]) -> None:
        for paths in files.values():
            for p in paths:
                p.unlink()
        super()._import(files)


class _Killed(BaseException):
    """What a kill looks like to the run: nothing after it happens."""


class _CutShort(BulkImport):
    """The run dies right after its import completed, before any media is marked done."""

    def commit(self) -> int:
        super().commit()
        raise _Killed("killed after the import")


def _run_with(env: Env, library: Path, kind: type[BulkImport]) -> None:
    runner = env.models.runner(env.catalog, env.store, bulk=True)
    bulk = runner.bulk
    assert bulk is not None
    runner.bulk = kind(bulk.store, bulk.folder, bulk.uri, bulk.token, rows=bulk.limit)
    runner.run([str(library)])


def test_a_failed_or_cut_short_import_leaves_pending_media_the_next_run_finishes(
    make_server_env, library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_server_env("bulk")
    with pytest.raises(StoreError, match=r"bulk import of .*\.parquet into .* failed: .+"):
        _run_with(env, library, _LosesItsFiles)
    counts = env.catalog.counts()
    assert (counts["media"], counts["pending"], counts["paths"]) == (0, 8, 0)
    assert set(_counts(env).values()) == {0}  # nothing was imported

    refreshed: list[str] = []  # a refresh takes seconds on a server: only where rows can hide
    real = env.store.client.refresh_load
    monkeypatch.setattr(
        env.store.client,
        "refresh_load",
        lambda name, **kw: (refreshed.append(name), real(name, **kw)),
    )
    with pytest.raises(_Killed):
        _run_with(env, library, _CutShort)
    # only failed imports before it: no row to hide, so each collection is refreshed once,
    # after its own import
    assert sorted(refreshed) == sorted(collections(env))
    counts = env.catalog.counts()
    assert (counts["media"], counts["pending"]) == (0, 8)
    imported = _counts(env)
    assert sum(imported.values()) > 0  # the rows are in, their media still pending

    summary = _bulk_cli(env, library)  # the next run rewrites them: no row twice
    assert (summary["new"], summary["failed"]) == (8, [])
    counts = env.catalog.counts()
    assert (counts["media"], counts["pending"], counts["paths"]) == (8, 0, 8)
    assert _counts(env) == imported
    assert sum(imported.values()) == counts["segments"]


def test_a_killed_bulk_ingest_leaves_pending_media_the_next_run_finishes(
    make_server_env, library: Path
) -> None:
    """`kill -9` of `mmrag ingest --bulk` while its import runs: nothing is done, and the next
    run rewrites every media once (whatever the orphaned import brought in meanwhile)."""
    env = make_server_env("killed")
    s = env.settings
    variables = {k: v for k, v in os.environ.items() if not k.startswith("MMRAG_")}
    variables |= {
        "MMRAG_CACHE_DIR": os.environ["MMRAG_CACHE_DIR"],
        "MMRAG_CONFIG": str(env.root / "no-such-mmrag.toml"),
        "MMRAG_MILVUS_URI": s.milvus_uri,
        "MMRAG_MILVUS_TOKEN": s.milvus_token,
        "MMRAG_COLLECTION_PREFIX": s.collection_prefix,
        "MMRAG_CATALOG": str(s.catalog),
        "MMRAG_THUMBNAILS": str(s.thumbnails),
        "MMRAG_PROFILE": "offline",
        "MMRAG_DEVICE": "cpu",
        "MMRAG_CHUNK_TOKENS": str(s.chunk_tokens),
        "MMRAG_CHUNK_OVERLAP": str(s.chunk_overlap),
        "MMRAG_BULK_FOLDER": str(s.bulk_folder),
        "HF_HUB_OFFLINE": "1",
    }
    mmrag = Path(sys.executable).with_name("mmrag")
    log = env.root / "killed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(mmrag), "ingest", "--bulk", "-q", str(library)],
            env=variables,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    folder = Path(s.bulk_folder)
    try:
        deadline = time.monotonic() + 300
        while not (folder.is_dir() and any(folder.rglob("*.parquet"))):
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "no Parquet file was written in 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its files written, its import under way
        proc.wait()
    counts = env.catalog.counts()
    assert (counts["media"], counts["pending"], counts["paths"]) == (0, 8, 0)

    summary = _bulk_cli(env, library)
    assert (summary["new"], summary["failed"]) == (8, [])
    counts = env.catalog.counts()
    assert (counts["media"], counts["pending"], counts["paths"]) == (8, 0, 8)
    assert sum(_counts(env).values()) == counts["segments"]  # no row twice


def test_an_ingest_over_http_imports_in_bulk(
    make_server_env, library: Path, normal: Normal
) -> None:
    """POST /api/ingest {"bulk": true}: the job imports Parquet files as `ingest --bulk` does,
    and its rows are a normal ingest's."""
    from mmrag.api import create_app
    from tests.integration.test_api import Served

    env = make_server_env("http")
    env.settings.library = [library]
    with Served(create_app(env.settings, env.models)) as server:
        reply = server.call(
            "/api/ingest", "POST", b'{"bulk": true}', {"Content-Type": "application/json"}
        )
        assert reply.status == 202, reply.body
        job = reply.json()
        assert job["bulk"] is True
        deadline = time.monotonic() + 300
        while (state := server.json(f"/api/ingest/{job['id']}"))["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
    assert state["state"] == "done", state
    assert (state["summary"]["new"], state["failures"]) == (8, [])
    assert collection_ids(env) == normal.ids
    assert env.catalog.counts()["pending"] == 0
    assert not any(Path(env.settings.bulk_folder).iterdir())  # imported files are removed
