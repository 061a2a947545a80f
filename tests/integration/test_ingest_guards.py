"""Ingest guards: size limits before any hashing, scan problems that reach `mmrag status`, and
one ingest of a store at a time (real files, real Milvus Lite, real `mmrag` processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

from mmrag.ingest.runner import IngestReport, ingest_lock_path
from tests.conftest import REPO, Env, write


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that costs no disk: `head`, then a hole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def wav(path: Path, seconds: float) -> Path:
    """Silence, 16-bit mono 16 kHz: 32 kB a second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * int(16000 * seconds))
    return path


# -- 1. size limits before work ------------------------------------------------------------------


def test_a_huge_file_is_refused_before_it_is_read(env: Env) -> None:
    lib = env.root / "lib"
    huge = sparse(lib / "disk.img", 5_000_000_000)  # 5 GB of hole
    t0 = time.perf_counter()
    report = env.ingest(lib)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"took {elapsed:.1f} s: the file was read"
    assert report.failed == [(str(huge), "too large: 5.0 GB, over the 200 MB limit (max_file_mb)")]
    (failure,) = env.catalog.failures()
    assert failure.display == str(huge) and failure.error.startswith("too large")
    # Unchanged, it is not looked at again.
    again = env.ingest(lib)
    assert (again.failed_before, again.failed) == (1, [])


def test_the_limit_is_for_documents_and_photos_not_recordings(make_env) -> None:
    """A recording or a video is bounded by its length (max_media_hours), not its bytes: an hour
    of sound is far over a document's size."""
    env = make_env(max_file_mb=1)
    lib = env.root / "lib"
    write(lib / "big.txt", "Tide tables for the harbour. " * 70_000)  # 2 MB of text
    wav(lib / "long.wav", 40)  # 1.3 MB
    write(lib / "small.txt", "A short note about moorings in the harbour.")
    report = env.ingest(lib)
    assert report.failed == [
        (str(lib / "big.txt"), "too large: 2.0 MB, over the 1 MB limit (max_file_mb)")
    ]
    assert report.new == 1
    # The recording is taken (here: no audio pipeline in this env), not refused for its size.
    assert report.skipped == {"audio": 1}


# -- 2. scan problems reach `mmrag status` ---------------------------------------------------------


def test_broken_symlinks_are_failures_in_status_until_fixed(env: Env) -> None:
    lib = env.root / "lib"
    write(lib / "notes.txt", "Harbour moorings are checked every spring.")
    os.symlink(lib / "target.txt", lib / "dangling.txt")
    os.symlink(lib / "loop", lib / "loop")
    report = env.ingest(lib)
    reasons = dict(report.failed)
    dangling, loop = str(lib / "dangling.txt"), str(lib / "loop")
    assert set(reasons) == {dangling, loop}
    assert "target.txt does not exist" in reasons[dangling]
    assert "symlink loop" in reasons[loop]

    assert {f.display: f.error for f in env.catalog.failures()} == reasons
    result = env.cli("status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert {f["path"]: f["reason"] for f in status["failures"]} == reasons
    assert status["files"]["failed"] == 2

    # Still broken: still failures, once each.
    again = env.ingest(lib)
    assert dict(again.failed) == reasons
    assert {f.display for f in env.catalog.failures()} == {dangling, loop}

    # Fixed: the link finds its file (and is ingested), the loop is gone.
    write(lib / "target.txt", "Lantern oil is stored in the copper cabinet.")
    os.remove(lib / "loop")
    fixed = env.ingest(lib)
    assert fixed.failed == []
    assert fixed.new == 1 and fixed.reused == 1  # target.txt, and the link to it
    assert env.catalog.failures() == []
    status = json.loads(env.cli("status", "--json").stdout)
    assert status["failures"] == [] and status["files"]["failed"] == 0


def test_a_file_turned_broken_link_keeps_its_content_until_it_reads_again(env: Env) -> None:
    """Like a deleted file (kept until --prune), a file whose link breaks (say its drive is
    unplugged) keeps its vectors; the failure shows in `status` until the link reads again."""
    lib, away = env.root / "lib", env.root / "drive"
    write(away / "memo.txt", "The copper lantern hangs in the harbour office.")
    lib.mkdir()
    os.symlink(away / "memo.txt", lib / "memo.txt")
    assert env.ingest(lib).new == 1
    os.rename(away, env.root / "unplugged")
    report = env.ingest(lib)
    (failure,) = env.catalog.failures()
    assert report.failed == [(failure.display, failure.error)]
    assert failure.error.startswith("broken symlink") and failure.media_id
    assert env.searcher().search("copper lantern", limit=1)[0].path == str(lib / "memo.txt")
    os.rename(env.root / "unplugged", away)
    again = env.ingest(lib)
    assert (again.unchanged, again.failed, again.new) == (1, [], 0)
    assert env.catalog.failures() == []


# -- 3. one ingest of a store at a time -----------------------------------------------------------


def summary_value(text: str, label: str) -> int:
    m = re.search(rf"[│|] {re.escape(label)}\s+[│|]\s+(\d+)", text)
    assert m, f"{label!r} not in:\n{text}"
    return int(m.group(1))


def test_two_ingests_of_one_store_embed_each_file_once(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for i in range(20):
        write(lib / f"note {i:02d}.txt", f"Note {i}: the harbour lantern number {i} is copper.")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MMRAG_") or k == "MMRAG_CACHE_DIR"
    }
    env |= {
        "MMRAG_MILVUS_URI": str(tmp_path / "store" / "milvus.db"),
        "MMRAG_CATALOG": str(tmp_path / "store" / "catalog.sqlite"),
        "MMRAG_THUMBNAILS": str(tmp_path / "thumbs"),
        "MMRAG_PROFILE": "offline",
        "MMRAG_DEVICE": "cpu",
        "MMRAG_CONFIG": str(tmp_path / "none.toml"),
        "HF_HUB_OFFLINE": "1",
    }
    procs = [
        subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "mmrag"), "ingest", "-q", str(lib)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for p in procs:
        _, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
        outputs.append(stderr)
    new = [summary_value(text, "new") for text in outputs]
    unchanged = [summary_value(text, "unchanged (skipped)") for text in outputs]
    assert sum(new) == 20, outputs
    assert sorted(new) == [0, 20] and sorted(unchanged) == [0, 20]
    waited = [t for t in outputs if "another ingest of this store is running (pid" in t]
    assert len(waited) == 1, outputs
    assert "waiting for it to finish" in waited[0]


HOLD = """
import os, sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
open(sys.argv[1] + ".pid", "w").write(str(os.getpid()))
print("held", flush=True)
time.sleep(600)
"""


def test_an_ingest_waits_for_the_holder_and_a_crashed_holder_frees_the_store(env: Env) -> None:
    lib = env.root / "lib"
    write(lib / "memo.txt", "The copper lantern hangs in the harbour office.")
    lock = ingest_lock_path(env.settings.milvus_uri, env.settings.catalog)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        runner = env.models.runner(env.catalog, env.store)
        said: list[str] = []
        done: list[IngestReport] = []
        worker = threading.Thread(
            target=lambda: done.append(runner.run([str(lib)], on_wait=said.append))
        )
        worker.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert worker.is_alive() and not done, "the ingest did not wait for the lock"
        assert said == [
            f"another ingest of this store is running (pid {holder.pid}); waiting for it to finish"
        ]
        os.kill(holder.pid, signal.SIGKILL)  # a crash: the OS lets go of its lock
        worker.join(120)
        assert done and done[0].new == 1
    finally:
        holder.kill()
        holder.wait()
