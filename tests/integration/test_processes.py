"""Real `mmrag` processes: SIGKILL mid-ingest and resume; search while an ingest runs."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO, Env, write

WORDS = (
    "harbour lantern copper meadow violin glacier saffron orbit pepper canyon falcon ledger "
    "marble thistle comet walnut ember quartz river signal willow barley cobalt prism tunnel "
    "orchard beacon nickel fennel mosaic pylon tundra velvet anchor basalt cedar delta "
    "kettle lagoon magnet nectar oyster pebble quiver ribbon spruce timber umber vessel"
).split()


def make_big_library(root: Path, files: int = 60, seed: int = 7) -> Path:
    """Files of a few chunks each, distinct content, so an ingest takes a few seconds."""
    rng = random.Random(seed)
    lib = root / "biglib"
    for i in range(files):
        paras = []
        for _ in range(4):
            sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "."  # noqa: E731
            paras.append(" ".join(sentence() for _ in range(5)))
        write(lib / f"part{i % 4}" / f"note {i:03d}.txt", f"Note {i}\n\n" + "\n\n".join(paras))
    return lib


def cli_env(root: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MMRAG_") or k == "MMRAG_CACHE_DIR"
    }
    env |= {
        "MMRAG_MILVUS_URI": str(root / "milvus.db"),
        "MMRAG_CATALOG": str(root / "catalog.sqlite"),
        "MMRAG_CHUNK_TOKENS": "64",
        "MMRAG_CHUNK_OVERLAP": "8",
        # Small model and write batches: files are marked done a few at a time, so a test sees
        # an ingest midway. With 64 chunks a model batch, 16 files were done at once; with 512
        # rows a write, every file embedded while the first write made the collection was done
        # in one transaction, and a loaded CI machine saw all 60 done at once.
        "MMRAG_EMBED_BATCH_SIZE": "8",
        "MMRAG_WRITE_BATCH_SIZE": "4",
        "MMRAG_DEVICE": "cpu",
        "MMRAG_CONFIG": str(root / "none.toml"),
        "HF_HUB_OFFLINE": "1",
    }
    return env


def mmrag(*args: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmrag.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def done_media(catalog: Path) -> int:
    try:
        with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM media WHERE status='done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for(cond, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.parametrize("kill_after_done", [1, 15])
def test_sigkill_mid_ingest_then_rerun_gives_exact_segments(
    tmp_path: Path, env: Env, kill_after_done: int
) -> None:
    lib = make_big_library(tmp_path)
    # Reference: the same library ingested cleanly (in-process) into another store.
    env.ingest(lib)
    expected = sorted(env.ids())
    assert len(expected) > 80

    crash = tmp_path / "crash"
    crash.mkdir()
    e = cli_env(crash)
    proc = mmrag("ingest", "-q", str(lib), env=e)
    wait_for(
        lambda: done_media(crash / "catalog.sqlite") >= kill_after_done or proc.poll() is not None
    )
    assert proc.poll() is None, "ingest finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = done_media(crash / "catalog.sqlite")
    assert 0 < partial < 60

    rerun = mmrag("ingest", "-q", str(lib), env=e)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr

    status = mmrag("status", "--json", env=e)
    out, stderr = status.communicate(timeout=120)
    assert status.returncode == 0, stderr
    data = json.loads(out)
    assert data["files"]["media"] == 60 and data["files"]["pending"] == 0
    (space,) = data["spaces"].values()
    assert space["rows"] == len(expected)

    from mmrag.store.milvus import MilvusStore

    with MilvusStore(str(crash / "milvus.db")) as store:
        ids = store.ids(env.collection)
    assert not [i for i, n in Counter(ids).items() if n > 1], "duplicate segment ids"
    assert sorted(ids) == expected


def test_search_works_while_an_ingest_runs(tmp_path: Path) -> None:
    lib = make_big_library(tmp_path, files=150)
    e = cli_env(tmp_path)
    ingest = mmrag("ingest", "-q", str(lib), env=e)
    wait_for(lambda: done_media(tmp_path / "catalog.sqlite") >= 2 or ingest.poll() is not None)
    assert ingest.poll() is None, "ingest finished too early for the test to mean anything"
    search = mmrag("search", "--json", "--mode", "bm25", "harbour lantern", env=e)
    out, stderr = search.communicate(timeout=300)
    assert search.returncode == 0, stderr
    assert ingest.poll() is None, "the ingest ended before the search answered"
    hits = json.loads(out)
    assert hits and all(h["path"].startswith(str(lib)) for h in hits)
    _, stderr = ingest.communicate(timeout=600)
    assert ingest.returncode == 0, stderr
    # The shared Lite server is stopped once the last process lets go.
    from mmrag.store.lite_host import server_info

    assert server_info(tmp_path / "milvus.db") is None
