"""Share one Milvus Lite store between processes.

Milvus Lite lets only one process open a `.db` store. So mmrag never opens it in-process: the
first mmrag process that needs the store starts `milvus-lite server` on a free loopback port,
detached, and every process (CLI search during an ingest, the web server, tests) connects to it
over gRPC and holds a lease (a file named by its pid). The last process to let go stops the
server; leases of processes that died (even by SIGKILL) are ignored, so a crash never strands the
store. State lives beside the store in `<store>.host/`.

A starter killed while the server comes up (SIGKILL between the launch and the server answering)
leaves a server that holds the store's lock: the server's pid, port and start time are recorded
(atomically) right after the launch, and a process that finds no usable record looks for such a
server by its command line (`/proc`, where it exists) and reuses it, or stops it if it never
comes up. A server is only ever signalled once its command line names this store (or, without
`/proc`, once its pid was recorded by a starter), so an unrelated process with a reused pid is
never touched.

The server runs with SIGINT and SIGTERM both meaning "shut down cleanly" (`_SERVE`), whatever
the starter inherited: a background job of a non-interactive shell starts with SIGINT ignored,
and a server inheriting that would only stop on SIGKILL after STOP_TIMEOUT_S.

The server also watches over itself (`supervise`, a thread in the server process), because a
holder that dies without letting go never stops it, and a script that removes a temporary store
without closing it leaves it running for good (about 150 MB each): it stops itself once its data
folder is gone (or replaced), and once no live process has held a lease for GRACE_S seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0  # closing flushes and may wait for a background index build
# How long a server runs on with no live lease holder (one that died without letting go), and how
# often it looks; the server reads these variables from the environment it is started with.
GRACE_S = 30.0
POLL_S = 2.0
GRACE_ENV = "MMRAG_LITE_HOST_GRACE_S"
POLL_ENV = "MMRAG_LITE_HOST_POLL_S"
# This file's path, for the server to load `supervise` from whatever way mmrag was imported
# (named again in `_SERVE`).
_MODULE_ENV = "MMRAG_LITE_HOST_MODULE"

# `milvus-lite server`, with SIGINT and SIGTERM set to raise KeyboardInterrupt once (the server's
# clean shutdown: drain requests, close the store) and ignored after that, so a second signal
# cannot cut the close short. Explicit handlers, because an ignored SIGINT is inherited through
# exec and Python then leaves it ignored. `supervise` comes from this file, loaded by its path.
_SERVE = """import signal, sys
def _stop(*_):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt
signal.signal(signal.SIGINT, _stop)
signal.signal(signal.SIGTERM, _stop)
import importlib.util, os
path = os.environ["MMRAG_LITE_HOST_MODULE"]
spec = importlib.util.spec_from_file_location("_mmrag_lite_host", path)
host = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = host
spec.loader.exec_module(host)
host.supervise(sys.argv[sys.argv.index("--data-dir") + 1])
from milvus_lite.cmdline import main
sys.exit(main(sys.argv[1:]))
"""
# What every `_SERVE`, this one and earlier versions', runs: a server left by an earlier mmrag is
# still found, reused and stopped.
_SERVE_MARK = "from milvus_lite.cmdline import main"

# Test hook (tests/integration/test_lite_host.py): with this variable set to "spawned" (after the
# launch, before the record) or "recorded" (after the record, before the server answers), the
# starting process sleeps there so a test can SIGKILL it at that point.
_TEST_PAUSE_ENV = "MMRAG_LITE_HOST_TEST_PAUSE"


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
        if _holds(pid, f):
            alive.append(pid)
        else:
            f.unlink(missing_ok=True)
    return alive


def _holds(pid: int, lease: Path) -> bool:
    """Whether the process that took the lease still runs: alive, and (where the lease records
    its start time) not a later process given the same pid, which would keep a server forever."""
    if not _alive(pid):
        return False
    try:
        started = int(lease.read_text())
    except (OSError, ValueError):  # an earlier version's empty lease, or one being written
        return True
    return _start_time(pid) in (None, started)


def acquire(store: Path) -> LiteHost:
    """Connect to the store's server, starting it if no live one exists; take a lease."""
    store = store.resolve()
    host = _host_dir(store)
    (host / "leases").mkdir(parents=True, exist_ok=True)
    state_file = host / "server.json"
    # The holder may wait for an orphan to come up, stop it, then start a server of its own.
    with FileLock(host / "lock", timeout=2 * START_TIMEOUT_S + STOP_TIMEOUT_S + 30):
        state = _reuse(store, _read_state(state_file))
        if state is None:
            state = _start(store, host)
        _write_state(state_file, state)
        started = _start_time(os.getpid())
        (host / "leases" / str(os.getpid())).write_text("" if started is None else str(started))
        _held[store] = _held.get(store, 0) + 1
    if store not in _exit_hooks:
        _exit_hooks.add(store)
        atexit.register(release, store, every_handle=True)
    return LiteHost(store, f"http://127.0.0.1:{state['port']}", state["pid"])


def head_start(store: Path) -> Callable[[], None]:
    """Start acquiring the store's server in a thread now, so it comes up while the caller
    imports pymilvus (each takes about half a second on a cold start). Call the returned
    function once the store is open (or failed to): it waits for the thread and drops the
    thread's handle, the caller's own `acquire` holding the server from then on."""
    got: list[LiteHost] = []

    def run() -> None:
        with contextlib.suppress(Exception):  # the caller's own acquire meets it, and says so
            got.append(acquire(store))

    thread = threading.Thread(target=run, name="lite-head-start", daemon=True)
    thread.start()

    def done() -> None:
        thread.join()
        for lease in got:
            lease.release()

    return done


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
        if state and _is_server(state["pid"], store, state.get("started")):
            _stop(state["pid"])
        (host / "server.json").unlink(missing_ok=True)


def server_info(store: Path) -> dict | None:
    """The running server's pid, port and lease holders, or None."""
    store = store.resolve()
    host = _host_dir(store)
    state = _read_state(host / "server.json")
    if not (state and _is_server(state["pid"], store, state.get("started"))):
        return None
    return {**state, "leases": _live_leases(host / "leases")}


_held: dict[Path, int] = {}  # open handles per store in this process (one lease file for all)
_exit_hooks: set[Path] = set()


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
        return state if isinstance(state.get("pid"), int) else None
    except (OSError, ValueError, AttributeError):
        return None


def _write_state(path: Path, state: dict) -> None:
    """Replace the record in one step, so a reader (or a starter killed mid-write) never leaves
    half a file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _proc_args(pid: int) -> list[str] | None:
    """The process's command line, or None where it cannot be read (no /proc, gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else None


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _serves(args: list[str], store: Path) -> bool:
    """Whether a command line is a Lite server on this store as mmrag starts one (a `_SERVE` of
    this version or an earlier one, or `-m milvus_lite server` as earlier versions did). A
    `milvus-lite server` someone runs by hand is not ours to reuse or stop."""
    if "--data-dir" not in args[:-1] or args[args.index("--data-dir") + 1] != str(store):
        return False
    if len(args) <= 3 or args[3] != "server":
        return False
    return (args[1] == "-c" and _SERVE_MARK in args[2]) or args[1:3] == ["-m", "milvus_lite"]


def _is_server(pid: int, store: Path, started: int | None = None) -> bool:
    """Whether `pid` is a live Lite server on this store. Where /proc exists, its command line
    must name the store and (when recorded) its start time must match, so a reused pid is never
    mistaken for the server; without /proc, a live recorded pid is all there is to go on."""
    if not _alive(pid):
        return False
    args = _proc_args(pid)
    if args is None:
        return not Path("/proc/self").exists()
    if not _serves(args, store):
        return False
    return started is None or _start_time(pid) in (None, started)


def _port_arg(pid: int) -> int | None:
    args = _proc_args(pid) or []
    try:
        return int(args[args.index("--port") + 1])
    except (ValueError, IndexError):
        return None


def _orphans(store: Path) -> list[int]:
    """Live Lite servers on this store found by their command line (none without /proc), the one
    holding the store's LOCK first: a server left behind by a starter that died before it could
    record it."""
    try:
        pids = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]
    except OSError:
        return []
    found = [pid for pid in pids if pid != os.getpid() and _serves(_proc_args(pid) or [], store)]
    holder = _lock_holder(store / "LOCK")
    return sorted((pid for pid in found if _alive(pid)), key=lambda pid: pid != holder)


def _lock_holder(lock: Path) -> int | None:
    """The pid holding an flock on `lock`, from /proc/locks (matched by inode)."""
    try:
        inode = lock.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            return int(parts[4]) if parts[4].isdigit() else None
    return None


def _reuse(store: Path, state: dict | None) -> dict | None:
    """A running server for the store to connect to: the recorded one, else one left by a dead
    starter; each waited for while it comes up, and stopped if it never does. None: start one."""
    candidates: list[tuple[int, int | None, int | None]] = []
    if state and _is_server(state["pid"], store, state.get("started")):
        candidates.append((state["pid"], state.get("port"), state.get("started")))
    if not (candidates and _port_open(candidates[0][1] or 0)):  # the usual case stops here
        candidates += [(p, _port_arg(p), _start_time(p)) for p in _orphans(store)]
    seen: set[int] = set()
    for pid, port, started in candidates:
        if pid in seen:
            continue
        seen.add(pid)
        if port and _wait_up(pid, port, time.monotonic() + START_TIMEOUT_S):
            return {"pid": pid, "port": port, "store": str(store), "started": started}
        if _is_server(pid, store, started):
            _stop(pid)  # hung while starting, or not listening where its command line says
    return None


def _wait_up(pid: int, port: int, deadline: float, proc: subprocess.Popen | None = None) -> bool:
    """Wait until the server answers on `port`; False if it exits first or the deadline passes."""
    while time.monotonic() < deadline:
        exited = proc.poll() is not None if proc else not _alive(pid)
        if exited:
            return False
        if _port_open(port):
            return True
        time.sleep(0.05)
    return False


def _test_pause(point: str) -> None:
    if os.environ.get(_TEST_PAUSE_ENV) == point:
        time.sleep(3600)


def _start(store: Path, host: Path) -> dict:
    log_path = host / "server.log"
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = _free_port()
        cmd = [sys.executable, "-c", _SERVE, "server", "--data-dir", str(store)]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                env={**os.environ, _MODULE_ENV: str(Path(__file__).resolve())},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the starter being killed
            )
        state = {"pid": proc.pid, "port": port, "store": str(store)}
        state["started"] = _start_time(proc.pid)
        _test_pause("spawned")
        # Recorded before it answers: if this process dies now, the next one finds the server.
        _write_state(host / "server.json", state)
        _test_pause("recorded")
        if _wait_up(proc.pid, port, time.monotonic() + START_TIMEOUT_S, proc):
            return state
        if proc.poll() is None:
            _stop(proc.pid)
            raise LiteHostError(
                f"Milvus Lite server for {store} did not start in {START_TIMEOUT_S:.0f} s; "
                f"see {log_path}"
            )
        # It exited: the port was taken, or a server no record names holds the store's lock.
        adopted = _reuse(store, None)
        if adopted:
            return adopted
    holder = _lock_holder(store / "LOCK")
    why = f"; process {holder} holds {store / 'LOCK'}" if holder else ""
    tail = log_path.read_text(errors="replace")[-2000:]
    raise LiteHostError(f"Milvus Lite server for {store} failed to start{why}:\n{tail}")


def _stop(pid: int) -> None:
    """Stop the server the way it shuts down cleanly: `milvus-lite server` drains requests and
    closes its store only on KeyboardInterrupt. SIGINT raises it in every server mmrag starts
    (`_SERVE` also maps SIGTERM to it) and in those earlier versions started from a shell that
    did not ignore SIGINT; a plain SIGTERM to `milvus-lite server` would end it at once, possibly
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


def supervise(data_dir: str) -> None:
    """Run in the server process before it serves: watch over it in a daemon thread, so a store
    removed without being closed, or left by holders that all died, does not keep its server."""
    store = Path(data_dir).resolve()
    # Made here (the server would make it a moment later), so the folder watched is known from
    # the start even where it is removed at once.
    with contextlib.suppress(OSError):
        store.mkdir(exist_ok=True)
    grace, poll = _seconds(GRACE_ENV, GRACE_S), _seconds(POLL_ENV, POLL_S)
    watch = threading.Thread(
        target=_watch,
        args=(store, _folder_id(store), grace, poll),
        name="lite-host-watch",
        daemon=True,
    )
    watch.start()


def _seconds(env: str, default: float) -> float:
    try:
        return max(0.05, float(os.environ[env]))
    except (KeyError, ValueError):
        return default


def _folder_id(path: Path) -> tuple[int, int] | None:
    """Names the folder itself: a folder removed and made again under the same name differs."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _watch(store: Path, seen: tuple[int, int] | None, grace: float, poll: float) -> None:
    """Stop this server once its data folder (`seen` when it started) is gone or replaced, or
    once no live process has held a lease for `grace` seconds."""
    idle_since: float | None = None
    while seen is not None and _folder_id(store) == seen:
        if _live_leases(_host_dir(store) / "leases"):
            idle_since = None
        else:
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= grace and _retire(store):
                return
        time.sleep(poll)
    _shut_down(f"its data folder {store} is gone")


_retiring: list[FileLock] = []  # the host lock, held by a retiring server until it exits


def _retire(store: Path) -> bool:
    """Stop this server if, under the host lock, still no live process holds a lease. The lock
    stays held until the process exits, so no one connects to a server that is closing; a busy
    lock (someone taking or dropping a lease right now) means: look again later."""
    host = _host_dir(store)
    lock = FileLock(host / "lock", timeout=0)
    try:
        lock.acquire()
    except (Timeout, OSError):
        return False
    if _live_leases(host / "leases"):
        lock.release()
        return False
    state = _read_state(host / "server.json")
    if state and state["pid"] == os.getpid():
        (host / "server.json").unlink(missing_ok=True)
    _retiring.append(lock)
    _shut_down(f"no live process has held a lease on {store} for a while")
    return True


def _shut_down(why: str) -> None:
    """The server's clean shutdown (`_SERVE` turns SIGINT into it), and SIGKILL if that hangs."""
    print(f"mmrag lite host: stopping, {why}", flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(STOP_TIMEOUT_S)
    os.kill(os.getpid(), signal.SIGKILL)
