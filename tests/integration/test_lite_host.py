"""The shared Lite server (store/lite_host.py) with real processes: a starter SIGKILLed while the
server comes up, a background job of a script (SIGINT ignored), a recorded pid reused by an
unrelated process. Linux only: the tests find servers through /proc."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mmrag.store import lite_host
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import Segment, Space
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")

SPACE = Space("text", "org/tiny-model", 4, bm25=False)
SLOW_STOP_S = 20.0  # well under STOP_TIMEOUT_S (60 s), the wait before a SIGKILL

# A starter that takes a lease and keeps it until it is killed.
ACQUIRE = """import sys, time
from pathlib import Path
from mmrag.store import lite_host
lite_host.acquire(Path(sys.argv[1]))
time.sleep(3600)
"""


def alive(pid: int) -> bool:
    """Running (a zombie left for its new parent to reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def servers_under(root: Path) -> list[int]:
    """Live `milvus-lite server` processes whose store lies under `root`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "server" in args and "--data-dir" in args[:-1]:
            data_dir = args[args.index("--data-dir") + 1]
            if data_dir.startswith(str(root.resolve())) and alive(int(d.name)):
                found.append(int(d.name))
    return found


def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def recorded_pid(store: Path) -> int | None:
    try:
        return json.loads((store.parent / f"{store.name}.host" / "server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def child_env(**more: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MMRAG_") or k == "MMRAG_CACHE_DIR"
    }
    return env | {"HF_HUB_OFFLINE": "1"} | more


def use_store(store: Path) -> list[dict]:
    """What a normal command does: open the store, create a collection, write, search."""
    with MilvusStore(str(store), index_type="FLAT") as s:
        name = s.ensure_space(SPACE)
        v = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
        seg = Segment("m:text:0", "m", "document", 0.0, 1.0, "lantern", v)
        s.upsert(name, [seg])
        [hits] = s.search_dense(name, v[None], limit=1)
    return hits


@pytest.fixture(autouse=True)
def no_servers_left(tmp_path: Path) -> Iterator[None]:
    """After each test no Lite server on its stores runs; any found is killed (by pid) and fails
    the test."""
    yield
    left = servers_under(tmp_path)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"Lite servers left running: {left}"


@pytest.mark.parametrize("pause", ["", "spawned", "recorded"])
def test_starter_killed_while_the_server_starts_does_not_lock_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pause: str
) -> None:
    """ "": killed as soon as the server process exists (the real race); "spawned": killed before
    the server is recorded (found by its command line); "recorded": killed after the record,
    with the /proc scan turned off here as on macOS, so the early record alone must do."""
    store = tmp_path / "milvus.db"
    env = child_env(MMRAG_LITE_HOST_TEST_PAUSE=pause) if pause else child_env()
    starter = subprocess.Popen([sys.executable, "-c", ACQUIRE, str(store)], cwd=REPO, env=env)
    try:
        wait_for(lambda: servers_under(tmp_path) or starter.poll() is not None)
        if pause == "recorded":
            wait_for(lambda: (pid := recorded_pid(store)) is not None and alive(pid))
            port = json.loads((tmp_path / "milvus.db.host" / "server.json").read_text())["port"]
            assert not port_open(port), "the server is recorded only once it answers"
    finally:
        starter.kill()
        starter.wait()
    [orphan] = servers_under(tmp_path)
    if pause == "recorded":
        monkeypatch.setattr(lite_host, "_orphans", lambda store: [], raising=False)

    t0 = time.monotonic()
    with MilvusStore(str(store), index_type="FLAT"):
        info = lite_host.server_info(store)
        assert info and info["pid"] == orphan  # the server left behind is reused
    hits = use_store(store)
    elapsed = time.monotonic() - t0
    assert hits and hits[0]["id"] == "m:text:0"
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert not alive(orphan) and lite_host.server_info(store) is None


def test_a_recorded_pid_now_an_unrelated_process_is_neither_used_nor_signalled(
    tmp_path: Path,
) -> None:
    """The recorded server died and its pid (and even its port) went to another process."""
    store = tmp_path / "milvus.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTEN, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout and listener.stdout.readline().strip() == "listening"
        host = tmp_path / "milvus.db.host"
        host.mkdir()
        record = {"pid": listener.pid, "port": port, "store": str(store.resolve())}
        (host / "server.json").write_text(json.dumps(record))
        hits = use_store(store)
        assert hits and hits[0]["id"] == "m:text:0"
        assert listener.poll() is None, "an unrelated process was signalled"
    finally:
        listener.kill()
        listener.wait()


# Listens on a port and ignores everything; SIGINT is reported (the test fails if it comes).
LISTEN = """import signal, socket, sys, time
def hit(*_):
    sys.exit(3)
signal.signal(signal.SIGINT, hit)
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
time.sleep(3600)
"""

# `mmrag status` in miniature: open the store, look, close. Prints whether SIGINT is ignored
# (the condition under test) and the server's pid.
STATUS = """import signal, sys
from pathlib import Path
from mmrag.store import lite_host
from mmrag.store.milvus import MilvusStore
print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
s = MilvusStore(sys.argv[1])
print(lite_host.server_info(Path(sys.argv[1]))["pid"])
s.existing_collections()
s.close()
"""


def background_job(command: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """`command &` in a non-interactive bash (the job starts with SIGINT ignored), waited for;
    bash exits with the job's status."""
    t0 = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", f"{command} & wait $!"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done, time.monotonic() - t0


def test_a_background_job_of_a_script_stops_the_server_at_once(tmp_path: Path) -> None:
    store = tmp_path / "milvus.db"
    cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(STATUS)} {shlex.quote(str(store))}"
    done, elapsed = background_job(cmd, child_env())
    assert done.returncode == 0, done.stderr
    ignored, pid = done.stdout.split()
    assert ignored == "True", "the job did not start with SIGINT ignored"
    assert elapsed < SLOW_STOP_S, f"took {elapsed:.1f} s"
    assert not alive(int(pid))
    log = (tmp_path / "milvus.db.host" / "server.log").read_text()
    assert "Shutting down" in log  # a clean close, not a SIGKILL


def test_mmrag_status_as_a_background_job(tmp_path: Path) -> None:
    mmrag = Path(sys.executable).with_name("mmrag")
    if not mmrag.exists():
        pytest.skip(f"{mmrag} is not installed")
    env = child_env(
        MMRAG_MILVUS_URI=str(tmp_path / "milvus.db"),
        MMRAG_CATALOG=str(tmp_path / "catalog.sqlite"),
        MMRAG_PROFILE="offline",
        MMRAG_CONFIG=str(tmp_path / "none.toml"),
    )
    done, elapsed = background_job(f"{shlex.quote(str(mmrag))} status", env)
    assert done.returncode == 0, done.stderr
    assert elapsed < SLOW_STOP_S, f"took {elapsed:.1f} s"
    assert "Shutting down" in (tmp_path / "milvus.db.host" / "server.log").read_text()


def quick_watch(grace_s: str) -> dict[str, str]:
    """A starter's environment in which its server looks every 0.1 s and waits `grace_s`."""
    return child_env(MMRAG_LITE_HOST_POLL_S="0.1", MMRAG_LITE_HOST_GRACE_S=grace_s)


def hold(store: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """A process holding a lease on the store (never closing it), and its server's pid."""
    holder = subprocess.Popen([sys.executable, "-c", ACQUIRE, str(store)], cwd=REPO, env=env)
    lease = store.parent / f"{store.name}.host" / "leases" / str(holder.pid)
    wait_for(lambda: lease.exists() or holder.poll() is not None)
    assert holder.poll() is None, "the holder could not take its lease"
    pid = recorded_pid(store)
    assert pid is not None and alive(pid)
    return holder, pid


def test_a_holder_killed_without_closing_does_not_keep_the_server(tmp_path: Path) -> None:
    store = tmp_path / "milvus.db"
    holder, server = hold(store, quick_watch("0.5"))
    holder.kill()  # SIGKILL: no release, no atexit
    holder.wait()
    t0 = time.monotonic()
    wait_for(lambda: not alive(server), timeout=30)
    assert time.monotonic() - t0 < 30
    log = (tmp_path / "milvus.db.host" / "server.log").read_text()
    assert "no live process has held a lease" in log and "Shutting down" in log
    assert recorded_pid(store) is None
    hits = use_store(store)  # the store opens again, on a new server
    assert hits and hits[0]["id"] == "m:text:0"


def test_two_holders_share_the_server_until_the_last_one_dies(tmp_path: Path) -> None:
    store = tmp_path / "milvus.db"
    first, server = hold(store, quick_watch("0.3"))
    second, shared = hold(store, quick_watch("0.3"))
    try:
        assert shared == server
        first.kill()
        first.wait()
        time.sleep(2.0)  # several grace periods
        assert alive(server), "the server stopped while a holder still runs"
        assert lite_host.server_info(store)["leases"] == [second.pid]
    finally:
        second.kill()
        second.wait()
    wait_for(lambda: not alive(server), timeout=30)


def test_a_removed_store_folder_stops_its_server(tmp_path: Path) -> None:
    """A script opens a store in a temporary folder and removes the folder without closing the
    store; its process still runs, so only the folder tells."""
    store = tmp_path / "scratch" / "milvus.db"
    holder, server = hold(store, quick_watch("3600"))
    try:
        shutil.rmtree(tmp_path / "scratch")  # at once: before the server has looked even once
        t0 = time.monotonic()
        wait_for(lambda: not alive(server), timeout=30)
        assert time.monotonic() - t0 < 30
        assert holder.poll() is None, "the holder still runs: the folder alone stopped the server"
    finally:
        holder.kill()
        holder.wait()


def test_a_lease_whose_pid_went_to_another_process_is_not_a_holder(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    leases.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (leases / str(other.pid)).write_text("1")  # taken by a process that started at tick 1
        (leases / str(os.getpid())).write_text(str(lite_host._start_time(os.getpid())))
        assert lite_host._live_leases(leases) == [os.getpid()]
        assert not (leases / str(other.pid)).exists()
    finally:
        other.kill()
        other.wait()
