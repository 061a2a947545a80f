"""Reader processes: a file's decoding off the main process's GIL, its pixels back through
shared memory.

Reader threads spend most of a photo's CPU time in Python and in C code that holds the GIL for
part of the way (Pillow's decoder, EXIF, the thumbnail's JPEG encode), so two threads did not
make two readers (1 -> 2 threads: 1.1x). Here each reader thread hands the decoding step of a
file to a process of its own: `ReadProcesses.call(fn, *args)` runs `fn(*args)` in an idle
worker and returns what it returned, with the arrays it names (`ReadResult.arrays`) copied
through that worker's shared-memory slot rather than pickled through the pipe.

- Bounded: each worker holds at most DEPTH files (its slot split in as many parts,
  `slot_bytes`), and a caller waits for a free place, so at most DEPTH x `processes` files are
  in flight here (backpressure on the reader threads); a result whose arrays do not fit its
  part comes back pickled instead. With the next file already in its pipe when it finishes one,
  a worker does not sleep and wake between files (a wake-up cost ~0.15 ms of kernel time a
  photo on a VM: docs/benchmarks.md).
- A worker that dies (killed, a decoder's segfault) fails the file it was on, with one line
  (`ReaderDied`, a MediaError), and is replaced; a file queued behind it runs in another
  worker; the run goes on.
- Workers start from a forkserver that has imported the decoders and torch once, so a worker
  costs a fork, not seconds of imports; the model never loads there (one instance per device,
  in the main process). Each worker runs torch on one thread.
"""

from __future__ import annotations

import math
import os
import pickle
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing import connection, get_context
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from mmrag.pipelines.base import MediaError, ReadResult, collecting_warnings, media_warning

# What a forkserver imports once, so every worker forked from it starts warm (the pipelines
# name theirs: `reader_modules`).
PRELOAD = ["mmrag.pipelines.base", "numpy"]
SLOT_BYTES = 8 << 20  # DEPTH photos' model inputs: 224-384 px squares, a few spaces
DEPTH = 2  # files a worker holds at once: the one it is on, and the next


# auto: processes from this many cores. On 2 cores they now measure about 10% faster on a
# large photo library, but start in about 3 s, a quarter of a small library's ingest; on 16,
# reader threads stopped scaling at the GIL (docs/benchmarks.md).
PROCESSES_FROM_CORES = 4


def reads_in_processes(mode: str, read_workers: int) -> bool:
    """The `read_processes` setting: on, off, or auto (on with 2 or more readers on
    PROCESSES_FROM_CORES or more cores)."""
    if mode in ("on", "off"):
        return mode == "on"
    return read_workers >= 2 and (os.cpu_count() or 1) >= PROCESSES_FROM_CORES


class ReaderDied(MediaError):
    """The reader process decoding a file ended without an answer (killed, crashed)."""


class _NotRun(Exception):
    """A file sent to a worker that died before it began it: it runs in another."""


@dataclass(frozen=True)
class _Placed:
    """Where one array lies in a slot: its offset, shape, dtype, and whether it was a tensor."""

    offset: int
    shape: tuple[int, ...]
    dtype: str
    tensor: bool


def _worker_main(conn: Any, slot_name: str, part_bytes: int) -> None:
    """A worker: take (part, fn, args) from the pipe, run it, put the arrays in that part of
    the slot, answer; in order."""
    import torch

    torch.set_num_threads(1)  # one core per worker; the model's threads are the main process's
    slot = SharedMemory(name=slot_name)
    try:
        while True:
            try:
                task = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
            if task is None:
                return
            part, fn, args = task
            try:
                with collecting_warnings() as warnings:
                    out = fn(*args)
                placed: dict[str, _Placed] = {}
                if isinstance(out, ReadResult):
                    placed, spilled = _place(out.arrays, slot.buf, part * part_bytes, part_bytes)
                    out = ReadResult(out.value, spilled)
                answer: tuple = ("ok", out, placed, warnings)
            except BaseException as exc:  # reported to the caller, who fails the file
                answer = ("error", _portable(exc), {}, [])
            conn.send_bytes(_dumps(answer))
    finally:
        slot.close()


def _dumps(obj: Any) -> bytes:
    """A message for the pipe: plain pickle, where Connection.send's ForkingPickler copies
    copyreg's dispatch table for every message (a tenth of a photo's handoff; nothing here
    needs its reducers for sockets and file descriptors)."""
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


def _place(
    arrays: dict[str, Any], buf: memoryview, base: int, size: int
) -> tuple[dict[str, _Placed], dict[str, Any]]:
    """Copy arrays into buf[base : base + size] while they fit; those that do not are
    returned to be pickled."""
    placed: dict[str, _Placed] = {}
    spilled: dict[str, Any] = {}
    offset = base
    for key, value in arrays.items():
        tensor = not isinstance(value, np.ndarray)
        a = np.ascontiguousarray(value.numpy() if tensor else value)
        end = offset + a.nbytes
        if end > base + size:
            spilled[key] = value
            continue
        np.frombuffer(buf, np.uint8, a.nbytes, offset)[:] = a.reshape(-1).view(np.uint8)
        placed[key] = _Placed(offset, a.shape, a.dtype.str, tensor)
        offset = (end + 63) // 64 * 64
    return placed, spilled


def _take(placed: dict[str, _Placed], buf: memoryview) -> dict[str, Any]:
    """The arrays out of a slot, copied (the slot is reused by the worker's next file)."""
    out: dict[str, Any] = {}
    for key, p in placed.items():
        dtype = np.dtype(p.dtype)
        count = math.prod(p.shape)  # np.prod of a tuple costs a conversion to an array
        a = np.frombuffer(buf, dtype, count, p.offset).reshape(p.shape).copy()
        if p.tensor:
            import torch

            out[key] = torch.from_numpy(a)
        else:
            out[key] = a
    return out


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it pickles (an ImageDecodeError keeps its type and reason),
    else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class _Worker:
    """One reader process, the files sent to it (in order) and a thread taking its answers."""

    def __init__(self, ctx: Any, slot_bytes: int) -> None:
        self.part_bytes = slot_bytes // DEPTH // 64 * 64
        self.slot = SharedMemory(create=True, size=slot_bytes)
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main,
            args=(child, self.slot.name, self.part_bytes),
            daemon=True,
            name="mmrag-reader",
        )
        try:
            self.process.start()
        except BaseException:
            self.conn.close()
            self.slot.close()
            self.slot.unlink()
            raise
        finally:
            child.close()
        self.dead = False  # set by the answers' thread once the process is gone
        self.retired = False  # replaced (ReadProcesses)
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, Future]] = deque()  # (slot part, its caller's answer)
        self._sent = 0
        self._answers = threading.Thread(
            target=self._receive, daemon=True, name="mmrag-reader-answers"
        )
        self._answers.start()

    def call(self, fn: Callable[..., Any], args: tuple) -> Any:
        """fn(*args) in this worker, after the files sent before it. _NotRun where the process
        was gone before it was asked."""
        future: Future = Future()
        with self._lock:
            part = self._sent % DEPTH
            entry = (part, future)
            self._pending.append(entry)
            try:
                self.conn.send_bytes(_dumps((part, fn, args)))
            except (OSError, ValueError):  # it died before it was asked (a broken pipe)
                self._pending.remove(entry)
                self.dead = True
                raise _NotRun() from None
            self._sent += 1
        status, out, warnings = future.result()
        for message in warnings:
            media_warning(message)
        if status == "error":
            raise out
        return out

    def _receive(self) -> None:
        """Hand each answer to its caller, in order, the arrays taken out of their part before
        that part can be sent again; when the process ends, fail the file it was on and send
        back those queued behind it."""
        while True:
            try:
                ready = connection.wait([self.conn, self.process.sentinel])
                answer = pickle.loads(self.conn.recv_bytes()) if self.conn in ready else None
            except (EOFError, OSError, ValueError):
                answer = None
            if answer is None:
                break
            status, out, placed, warnings = answer
            with self._lock:
                _, future = self._pending.popleft()
            if isinstance(out, ReadResult) and placed:
                out = ReadResult(out.value, {**_take(placed, self.slot.buf), **out.arrays})
            future.set_result((status, out, warnings))
        self.dead = True
        with self._lock:
            pending, self._pending = list(self._pending), deque()
        if pending:
            died = ReaderDied(f"the reader process decoding it died ({self._death()})")
            pending[0][1].set_exception(died)
            for _, future in pending[1:]:
                future.set_exception(_NotRun())

    def _death(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self) -> None:
        try:
            if self.process.is_alive():
                with self._lock:
                    self.conn.send_bytes(_dumps(None))
                self.process.join(timeout=5)
        except (OSError, ValueError):
            pass
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self._answers.join(timeout=5)
        self.conn.close()
        self.slot.close()
        self.slot.unlink()


class ReadProcesses:
    """`processes` reader processes; `call` runs a picklable function in one with room."""

    def __init__(
        self, processes: int, slot_bytes: int = SLOT_BYTES, preload: tuple[str, ...] = ()
    ) -> None:
        """`preload`: modules the forkserver imports once (it is started by the first pool of
        this process; later pools reuse it)."""
        if processes < 1:
            raise ValueError(f"read processes must be >= 1, not {processes}")
        self._ctx = get_context("forkserver")
        self._ctx.set_forkserver_preload([*PRELOAD, *preload])
        self._slot_bytes = slot_bytes
        self._room: queue.Queue[_Worker] = queue.Queue()  # a worker once per free place
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            for _ in range(processes):
                self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        worker = _Worker(self._ctx, self._slot_bytes)
        with self._lock:
            self._all.append(worker)
        for _ in range(DEPTH):
            self._room.put(worker)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in a worker (waits for room in one). ReaderDied if the worker dies with
        it; the worker is then replaced, and a file queued behind it runs in another. fn's own
        exceptions are raised here."""
        while True:
            if self._closed:
                raise RuntimeError("the reader processes are closed")
            worker = self._room.get()
            if worker.retired:
                continue  # a place in a worker that was replaced
            if worker.dead:
                self._replace(worker)
                continue
            try:
                return worker.call(fn, args)
            except _NotRun:
                continue
            finally:
                if worker.dead:
                    self._replace(worker)
                elif not worker.retired:
                    self._room.put(worker)

    def _replace(self, worker: _Worker) -> None:
        """A dead worker's successor (once, whoever notices first)."""
        with self._lock:
            if worker.retired:
                return
            worker.retired = True
            if worker in self._all:
                self._all.remove(worker)
        worker.close()
        if not self._closed:
            self._start()

    def pids(self) -> list[int]:
        """The live workers' process ids (tests kill one; benchmarks count their CPU time)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.alive and w.process.pid]

    def close(self) -> None:
        """Stop every worker and free its slot."""
        self._closed = True
        with self._lock:
            workers, self._all = list(self._all), []
        for worker in workers:
            worker.close()

    def __enter__(self) -> ReadProcesses:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
