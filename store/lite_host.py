"""Share one Milvus Lite store between processes.

Milvus Lite lets only one process open a `.db` store. So mmrag never opens it in-process: the
first mmrag process that needs the store starts `milvus-lite server` on a free loopback port,
detached, and every process (CLI search during an ingest, the web server, tests) connects to it
over gRPC and holds a lease (a file named by its pid). The last process to let go stops the
server; leases of processes that died (even by SIGKILL) are ignored, so a crash never strands the
store. State lives beside the store in `<store>.host/`.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0  # closing flushes and may wait for a background index build


class LiteHostError(RuntimeError):
    pass


@dataclass
class LiteHost:
    """A lease on the shared Lite server for one store; `uri` is what pymilvus connects to."""

    store: Path
    uri: str
    pid: int

    def release(self) -> None:
        release(self.store)


def _host_dir(store: Path) -> Path:
    return store.parent / f"{store.name}.host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _live_leases(leases: Path) -> list[int]:
    """Pids holding a lease; stale ones (dead processes) are removed on the way."""
    alive = []
    for f in leases.glob("*"):
        try:
            pid = int(f.name)
        except ValueError:
            continue
        if _alive(pid):
            alive.append(pid)
        else:
            f.unlink(missing_ok=True)
    return alive


def acquire(store: Path) -> LiteHost:
    """Connect to the store's server, starting it if no live one exists; take a lease."""
    store = store.resolve()
    host = _host_dir(store)
    (host / "leases").mkdir(parents=True, exist_ok=True)
    state_file = host / "server.json"
    with FileLock(host / "lock", timeout=START_TIMEOUT_S + 30):
        state = _read_state(state_file)
        if not (state and _alive(state["pid"]) and _port_open(state["port"])):
            state = _start(store, host)
            state_file.write_text(json.dumps(state))
        (host / "leases" / str(os.getpid())).touch()
        _held[store] = _held.get(store, 0) + 1
    if store not in _exit_hooks:
        _exit_hooks.add(store)
        atexit.register(release, store, every_handle=True)
    return LiteHost(store, f"http://127.0.0.1:{state['port']}", state["pid"])


def release(store: Path, *, every_handle: bool = False) -> None:
    """Drop one of this process's handles on the store; with the last one (or `every_handle`, at
    exit) drop its lease, and stop the server when no live process holds one."""
    store = store.resolve()
    host = _host_dir(store)
    if not host.exists():
        _held.pop(store, None)
        return
    with FileLock(host / "lock", timeout=60):
        left = 0 if every_handle else _held.get(store, 1) - 1
        if left > 0:  # another handle in this process still uses the server
            _held[store] = left
            return
        _held.pop(store, None)
        (host / "leases" / str(os.getpid())).unlink(missing_ok=True)
        if _live_leases(host / "leases"):
            return
        state = _read_state(host / "server.json")
        if state:
            _stop(state["pid"])
        (host / "server.json").unlink(missing_ok=True)


def server_info(store: Path) -> dict | None:
    """The running server's pid, port and lease holders, or None."""
    host = _host_dir(store.resolve())
    state = _read_state(host / "server.json")
    if not (state and _alive(state["pid"])):
        return None
    return {**state, "leases": _live_leases(host / "leases")}


_held: dict[Path, int] = {}  # open handles per store in this process (one lease file for all)
_exit_hooks: set[Path] = set()


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _start(store: Path, host: Path) -> dict:
    log_path = host / "server.log"
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = _free_port()
        cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(store)]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the starter being killed
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _port_open(port):
                return {"pid": proc.pid, "port": port, "store": str(store)}
            time.sleep(0.05)
        else:
            _stop(proc.pid)
            raise LiteHostError(
                f"Milvus Lite server for {store} did not start in time; see {log_path}"
            )
    tail = log_path.read_text(errors="replace")[-2000:]
    raise LiteHostError(f"Milvus Lite server for {store} failed to start:\n{tail}")


def _stop(pid: int) -> None:
    """Stop the server the way it shuts down cleanly: `milvus-lite server` drains requests and
    closes its store only on SIGINT (KeyboardInterrupt); SIGTERM would end it at once, possibly
    in the middle of writing a file (seen: "File is too small" on the next start)."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            if not _alive(pid):
                return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # a hung server; Lite's files survive SIGKILL between writes
