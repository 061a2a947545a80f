"""Photos decoded in reader processes (ingest/workers.py): the same rows as reader threads, a
broken file failing alone, a reader process killed mid-file failing only that file."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmrag.ingest import workers
from mmrag.ingest.workers import ReaderDied, ReadProcesses
from mmrag.pipelines.base import MediaError, ReadResult
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.store.thumbnails import thumbnail_store
from tests.conftest import Env, build_env
from tests.image_samples import PHOTOS, make_photos

BROKEN = "broken.jpg"


def _library(root: Path) -> Path:
    """The sample photos (JPEG and PNG) and a JPEG cut off after its header."""
    lib = make_photos(root)
    whole = (lib / "astronaut.jpg").read_bytes()
    (lib / BROKEN).write_bytes(whole[:600])
    return lib


def _rows(env: Env) -> dict[str, Any]:
    """Every row of every collection: id -> (text, vector)."""
    out: dict[str, Any] = {}
    for name in env.store.existing_collections():
        for batch in env.store.rows_with_vectors(name):
            for r in batch:
                out[f"{name}/{r['id']}"] = (r["text"], np.asarray(r["vector"], np.float32))
    return out


def _ingest(root: Path, minilm: TextEncoder, lib: Path, processes: bool) -> tuple[Env, Any]:
    env = build_env(root, minilm).with_images()
    report = env.ingest(lib, read_processes=processes)
    return env, report


def test_processes_give_the_rows_threads_give_and_a_broken_jpeg_fails_alone(
    tmp_path: Path, minilm: TextEncoder
) -> None:
    lib = _library(tmp_path / "lib")
    threads, by_threads = _ingest(tmp_path / "threads", minilm, lib, processes=False)
    procs, by_procs = _ingest(tmp_path / "procs", minilm, lib, processes=True)
    try:
        for report in (by_threads, by_procs):
            assert report.new == len(PHOTOS), report.failed
            assert len(report.failed) == 1, report.failed
            path, reason = report.failed[0]
            assert path.endswith(BROKEN) and reason.startswith("truncated"), reason
            assert "\n" not in reason
        assert by_procs.failed == by_threads.failed
        a, b = _rows(threads), _rows(procs)
        assert a.keys() == b.keys() and len(a) >= 2 * len(PHOTOS)  # image rows and labels
        for key in a:
            assert a[key][0] == b[key][0], key
            np.testing.assert_array_equal(a[key][1], b[key][1], err_msg=key)
        thumbs = thumbnail_store(procs.root / "thumbs").entries()  # written by the processes
        assert thumbs == thumbnail_store(threads.root / "thumbs").entries()
        assert len(thumbs) == len(PHOTOS)
    finally:
        threads.close()
        procs.close()


def test_a_reader_process_killed_mid_file_fails_only_that_file(
    tmp_path: Path, minilm: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = make_photos(tmp_path / "lib")
    victim = "coffee.jpg"
    killed: list[int] = []
    call = workers._Worker.call

    def killing(self: Any, fn: Any, args: tuple) -> Any:
        if str(args[1]).endswith(victim):  # read_photo(plan, path, media_id)
            killed.append(self.process.pid)
            fn, args = _die_reading, (fn, *args)  # as a decoder's crash on this file would
        return call(self, fn, args)

    monkeypatch.setattr(workers._Worker, "call", killing)
    env = build_env(tmp_path / "store", minilm).with_images()
    try:
        report = env.ingest(lib, read_processes=True, read_workers=1)
        assert killed, "the victim never reached a reader process"
        assert report.failed == [
            (str(lib / victim), "the reader process decoding it died (killed by SIGKILL)")
        ]
        assert report.new == len(PHOTOS) - 1  # the files after it read in its replacement
        with pytest.raises(ProcessLookupError):
            os.kill(killed[0], 0)
        monkeypatch.setattr(workers._Worker, "call", call)
        again = env.ingest(lib, read_processes=True, retry_failed=True)
        assert (again.new, again.failed) == (1, [])
    finally:
        env.close()


def _die_reading(fn: Any, *args: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)
    return fn(*args)


def _sleep_then_read(fn: Any, *args: Any) -> Any:
    import time

    time.sleep(5)
    return fn(*args)


def big_pixels(shape: tuple[int, ...]) -> ReadResult:
    """Arrays larger than a slot come back pickled; smaller ones through it."""
    import torch

    rng = np.random.default_rng(1)
    return ReadResult(
        {"shape": shape},
        {
            "big": rng.integers(0, 256, shape, dtype=np.uint8),
            "small": torch.arange(12, dtype=torch.uint8).reshape(2, 2, 3),
        },
    )


def refuse(path: str) -> None:
    raise MediaError(f"{path}: not a photo")


def test_arrays_come_back_whole_through_the_slot_or_pickled() -> None:
    import torch

    with ReadProcesses(1, slot_bytes=4096) as procs:
        for shape in ((10, 10, 3), (100, 100, 3)):  # fits the slot; does not
            out = procs.call(big_pixels, shape)
            want = big_pixels(shape)
            np.testing.assert_array_equal(out.arrays["big"], want.arrays["big"])
            assert isinstance(out.arrays["small"], torch.Tensor)
            assert torch.equal(out.arrays["small"], want.arrays["small"])
            assert out.value == {"shape": shape}
        with pytest.raises(MediaError, match=r"x\.png: not a photo"):
            procs.call(refuse, "x.png")
        (pid,) = procs.pids()
        threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
        with pytest.raises(ReaderDied):  # killed while on it
            procs.call(_sleep_then_read, big_pixels, (1, 1, 3))
        assert procs.call(big_pixels, (2, 2, 3)).value == {"shape": (2, 2, 3)}  # replaced
        (other,) = procs.pids()
        assert other != pid
        os.kill(other, signal.SIGKILL)  # between files: the next file runs in its successor
        deadline = time.monotonic() + 10
        while other in procs.pids():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert procs.call(big_pixels, (2, 2, 3)).value == {"shape": (2, 2, 3)}
        assert procs.pids() and other not in procs.pids()


def test_a_file_queued_behind_one_that_kills_its_reader_runs_in_another() -> None:
    """A worker holds DEPTH files: the one it is on fails with it, the next is sent again."""
    assert workers.DEPTH >= 2
    with ReadProcesses(1) as procs:
        (pid,) = procs.pids()
        found: dict[str, Any] = {}

        def second() -> None:
            time.sleep(0.1)  # sent while the first is being read
            found["second"] = procs.call(big_pixels, (3, 3, 3))

        behind = threading.Thread(target=second)
        behind.start()
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        with pytest.raises(ReaderDied, match="killed by SIGKILL"):
            procs.call(_sleep_then_read, big_pixels, (1, 1, 3))
        behind.join(timeout=30)
        assert found["second"].value == {"shape": (3, 3, 3)}
        assert pid not in procs.pids()
