"""The bulk ingest driver: scan -> read (threads) -> encode (batched across files) -> write.

Reader threads decide what each file needs (skip, link, or process) and do the CPU work of
decoding and cutting it; the main thread batches pieces from many files through the model; one
writer thread owns every Milvus write and catalog update, in order. Crash safety comes from the
order of writes: a media is marked pending before its segments go to Milvus (with deterministic
ids), and done only after; a pending media is rewritten from scratch on the next run.

A stored file can lack a space: its model was missing when it was written (the pipeline left
that space out, with a warning), or the space ran on the offline fallback model
(pipelines/fallback.py). Where a model for it can be had now, the file is embedded again in that
space alone, a "fill": its other spaces are kept, and of what it gave rise to elsewhere (an
image's labels in `text`), the old rows are replaced (`_to_fill`, `_make_room`). A fill leaves
the content done: its rows are written before they are recorded, so a cut-short fill is redone.

While a model runs on the CPU (its threads on every core), readers start decoding no new file
and the writer sends Milvus nothing. Overlapped, they only time-share the cores, and a thread that
preempts one of the model's stalls the others at the next barrier: the model was slowed by all of
the readers' CPU time, so overlapping gained nothing. Between batches they have every core.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from mmrag.ingest.detect import HEAD_BYTES, MediaKind, UnsupportedContent, detect_kind
from mmrag.ingest.scan import FoundFile, ScanProblem, content_hash, scan
from mmrag.ingest.workers import DEPTH
from mmrag.kinds import MediaType
from mmrag.pipelines.base import (
    MediaError,
    Piece,
    Pipeline,
    SpaceEncoder,
    collecting_warnings,
    reporting_progress,
    segment_origin,
    warning_about,
)
from mmrag.pipelines.fallback import Fallback
from mmrag.pipelines.model_resolver import ModelNotAvailable
from mmrag.store.bulk import BulkImport
from mmrag.store.catalog import Catalog, MediaFacts
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import Space


@dataclass
class IngestReport:
    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    reused: int = 0  # renamed, moved or copied content: vectors reused, nothing re-embedded
    filled: int = 0  # stored files embedded in a space they lacked, their other spaces kept
    failed: list[tuple[str, str]] = field(default_factory=list)
    # indexed, with something the user should know (a recording that ends early): (path, why)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    failed_before: int = 0  # unchanged files that failed on an earlier run (see `mmrag status`)
    skipped: dict[str, int] = field(default_factory=dict)  # modality -> files not taken
    skip_reasons: dict[str, str] = field(default_factory=dict)  # modality -> why
    pruned: int = 0
    removed_media: int = 0
    segments: int = 0
    seconds: float = 0.0
    # what the run says once about its models: a space on its fallback model, one skipped
    models: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The summary for scripts, cron and the API's ingest jobs: the numbers, and every
        failure, skip and warning with its reason."""
        return {
            "scanned": self.scanned,
            "new": self.new,
            "changed": self.changed,
            "reused": self.reused,
            "unchanged": self.unchanged,
            "filled": self.filled,
            "models": self.models,
            "failed": [{"path": path, "reason": reason} for path, reason in self.failed],
            "failed_before": self.failed_before,
            "skipped": {
                modality: {"files": n, "reason": self.skip_reasons.get(modality, "")}
                for modality, n in sorted(self.skipped.items())
            },
            "pruned": self.pruned,
            "removed_media": self.removed_media,
            "segments": self.segments,
            "seconds": round(self.seconds, 3),
            "warnings": [{"path": path, "reason": why} for path, why in self.warnings],
        }


# -- what a reader thread decides about one file; the writer takes the same objects -------------


@dataclass
class _Unchanged:
    file: FoundFile


@dataclass
class _KnownFailure:
    file: FoundFile


@dataclass
class _Link:
    file: FoundFile
    media_id: str


@dataclass
class _Fail:
    file: FoundFile
    reason: str


@dataclass
class _Skip:
    """Not a failure of the file: no pipeline (or no model) for its kind here; not recorded,
    so the file is taken as soon as one is there."""

    file: FoundFile
    modality: str
    reason: str


@dataclass
class _Job:
    file: FoundFile
    media_id: str
    kind: MediaKind
    pieces: list[Piece]
    changed: bool
    vectors: list[np.ndarray | None] = field(default_factory=list)
    followers: list[FoundFile] = field(default_factory=list)  # same content, other paths
    missing: int = 0
    warning: str | None = None  # indexed, but the user should know (it ends early)
    fill: frozenset[str] | None = None  # a stored file: only these spaces are written anew


@dataclass
class _Plan:
    """A file that needs its pipeline, as the catalog decided before any decoding: what
    `prepare_planned` turns into a _Job (or a _Fail, a _Skip), in a reader thread or on a Ray
    worker (ingest/ray_backend.py), which never see the catalog."""

    file: FoundFile
    media_id: str
    kind: MediaKind
    stored: bool  # the path's record points at this content already
    changed: bool  # the path pointed at another content before
    fill: frozenset[str] | None  # a stored content: only these spaces are written anew


Progress = Callable[[str, int], None]  # event ("file" | "segments"), amount

# Bounded by what they hold, not by their bytes: photos by max_image_mpx (read from the header),
# recordings and videos by max_media_hours (read from the container). An hour of video is
# gigabytes; an uncompressed 16-bit scan within the pixel limit is hundreds of megabytes.
UNBOUNDED_BY_SIZE = frozenset({MediaType.IMAGE, MediaType.AUDIO, MediaType.VIDEO})

# How long a waiting ingest gives the lock's holder to write its pid file (it does so just after
# taking the lock) before saying it waits without naming it.
HOLDER_NAMED_S = 2.0


def ingest_lock_path(milvus_uri: str, catalog: Path) -> Path:
    """Where one store's ingests take turns: beside a Milvus Lite store (`<store>.ingest.lock`),
    or beside the catalog for a server, whose files are not on this machine."""
    if "://" in milvus_uri:
        return catalog.parent / f"{catalog.name}.ingest.lock"
    store = Path(milvus_uri).expanduser().absolute()
    return store.parent / f"{store.name}.ingest.lock"


def say_on_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class IngestRunner:
    def __init__(
        self,
        catalog: Catalog,
        store: MilvusStore,
        pipelines: list[Pipeline],
        *,
        prefix: str = "mmrag",
        read_workers: int = 2,
        read_processes: bool = False,
        embed_batch: int = 64,
        write_batch: int = 512,
        retry_failed: bool = False,
        max_file_bytes: int | None = None,
        lock_file: Path | None = None,
        model_notes: Callable[[], list[str]] | None = None,
        reindex: str | None = None,
        carry: Callable[[str], list[Piece]] | None = None,
        bulk: BulkImport | None = None,
    ) -> None:
        """`max_file_bytes`: larger documents (and files of no known kind) are refused before
        they are read; None: no limit. `lock_file`: where ingests of this store take turns
        (default: beside the catalog; see ingest_lock_path). `model_notes`: what to say once
        about the models after the run (spaces on a fallback, spaces skipped). `reindex`: a
        space whose model is being switched (ingest/reindex.py): stored contents are filled in
        it alone, nothing else; `carry`: the pieces other spaces gave rise to in it, for a
        content being filled (they are not made again: their model may not even be here)."""
        self.catalog = catalog
        self.store = store
        self.pipelines = {p.media: p for p in pipelines}
        self.encoders: dict[str, SpaceEncoder] = {
            name: enc for p in pipelines for name, enc in p.encoders().items()
        }
        self.prefix = prefix
        # Where each space's vectors may be, known without loading a model: the configured
        # model's collection first, then its fallback's (the one written is chosen on first use).
        self.candidates: dict[str, list[str]] = {
            name: e.collections(prefix) if hasattr(e, "collections") else [e.collection(prefix)]
            for name, e in self.encoders.items()
        }
        self.model_notes = model_notes
        self.reindex = reindex
        self.carry = carry
        # --bulk: rows go to Parquet files the server imports; media are done after the import
        self.bulk = bulk
        self._after_import: list[Callable[[], None]] = []
        self.read_workers = read_workers
        # Decoding in `read_workers` processes (ingest/workers.py) for pipelines that offer it
        self.read_processes = read_processes
        self.embed_batch = embed_batch
        self.write_batch = write_batch
        self.retry_failed = retry_failed
        self.max_file_bytes = max_file_bytes
        self.lock_file = lock_file or catalog.file.parent / f"{catalog.file.name}.ingest.lock"
        self._on_note: Callable[[str], None] | None = None  # set for each run
        self._ready: set[str] = set()  # collections created/loaded this run
        self._inflight: dict[str, _Job] = {}
        self._inflight_lock = threading.Lock()
        # The catalog's records of the files being read, fetched in one go; each taken once
        self._records: dict[str, Any] = {}
        self._records_lock = threading.Lock()
        self._cpu_model = _Gate()  # closed while a model runs on the CPU
        self.reader_processes: Any = None  # the ReadProcesses of a run that has them

    # -- entry point -----------------------------------------------------------------------

    def run(
        self,
        roots: list[str],
        *,
        prune: bool = False,
        on_start: Callable[[int], None] | None = None,
        progress: Progress | None = None,
        on_wait: Callable[[str], None] = say_on_stderr,
        on_note: Callable[[str], None] | None = None,
    ) -> IngestReport:
        """Ingest the roots. One ingest of a store at a time: a second one waits for the first
        (saying so through `on_wait`), then finds its work done, so nothing is embedded twice.
        `on_note` hears how far a long file has got ("<file>: 12/200 scanned pages read")."""
        self._on_note = on_note
        with self._turn(on_wait):
            return self._run(roots, prune, on_start, progress)

    def refill(self, files: list[FoundFile], *, progress: Progress | None = None) -> IngestReport:
        """Read these stored files again (no scan, no prune): what a reindex does with every
        stored content (each is filled, or found done already). Call it inside `turn()`."""
        t0 = time.perf_counter()
        report = IngestReport(scanned=len(files))
        self._process(files, report, progress or (lambda _event, _n: None))
        self._settle()
        report.seconds = time.perf_counter() - t0
        return report

    def turn(self, on_wait: Callable[[str], None] = say_on_stderr) -> Any:
        """The store's ingest turn, for work beside `run` (a reindex): a context manager."""
        return self._turn(on_wait)

    @contextmanager
    def _turn(self, on_wait: Callable[[str], None]) -> Iterator[None]:
        """Hold the store's ingest lock. The OS lock dies with its process, so a crashed
        holder never blocks the next run; the pid file only names the holder to a waiter."""
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_file))
        holder = self.lock_file.with_name(self.lock_file.name + ".pid")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            pid = _live_pid(holder)
            named_by = time.monotonic() + HOLDER_NAMED_S
            while not pid and time.monotonic() < named_by:  # it writes its pid just after
                time.sleep(0.05)
                pid = _live_pid(holder)
            who = f" (pid {pid})" if pid else ""
            on_wait(f"another ingest of this store is running{who}; waiting for it to finish")
            lock.acquire()
        try:
            holder.write_text(str(os.getpid()))
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()

    def _run(
        self,
        roots: list[str],
        prune: bool,
        on_start: Callable[[int], None] | None,
        progress: Progress | None,
    ) -> IngestReport:
        t0 = time.perf_counter()
        report = IngestReport()
        tick = progress or (lambda _event, _n: None)
        files: list[FoundFile] = []
        problems: list[ScanProblem] = []
        bad_roots: set[str] = set()
        for item in scan(roots):
            if isinstance(item, ScanProblem):
                report.failed.append((item.display, item.reason))
                bad_roots.update(r for r in roots if item.display.startswith(r))
                problems.append(item)
            else:
                files.append(item)
        report.scanned = len(files)
        self._record_unreadable(roots, files, problems)
        if on_start:
            on_start(len(files))
        self._process(files, report, tick)
        if prune:
            still = {p.path for p in problems}
            report.pruned = self._prune(roots, files, still, bad_roots, report)
        report.removed_media += self._collect(self.catalog.orphan_media())
        self._settle()
        report.models = self.model_notes() if self.model_notes else []
        report.seconds = time.perf_counter() - t0
        return report

    def _settle(self) -> None:
        """The end of a run's writes, in the ingest's turn: flush what it wrote, and on Lite
        rebuild the search snapshots its writes outdated (store/lite_index.py); a failure
        there leaves searches on Milvus, with a warning."""
        for name in self._ready:
            self.store.flush(name)
        try:
            self.store.refresh_snapshots()
        except (OSError, sqlite3.Error) as exc:
            say_on_stderr(f"search snapshot not rebuilt (searches use Milvus meanwhile): {exc}")

    def _process(self, files: list[FoundFile], report: IngestReport, tick: Progress) -> None:
        """Read, encode and write these files: readers and the model here, one writer thread."""
        writes: queue.Queue[Any] = queue.Queue(maxsize=64)
        writer_error: list[BaseException] = []
        writer = threading.Thread(
            target=self._writer, args=(writes, report, tick, writer_error), daemon=True
        )
        writer.start()
        try:
            records = self.catalog.path_records(f.path for f in files)
            with self._records_lock:
                self._records = {f.path: records.get(f.path) for f in files}
            self._read_and_encode(files, report, writes, tick, writer_error)
        finally:
            writes.put(None)
            writer.join()
            with self._records_lock:
                self._records = {}
        if writer_error:
            raise writer_error[0]

    # -- reading (reader threads) ----------------------------------------------------------

    def _decide(self, f: FoundFile) -> Any:
        plan = self._plan(f)
        if not isinstance(plan, _Plan):
            return plan
        self._cpu_model.wait_open()  # decode between batches of a model on the CPU
        pipeline = self.pipelines[plan.kind.media]
        return prepare_planned(pipeline, plan, self._noting(f), self.carry)

    def _plan(self, f: FoundFile) -> Any:
        """The catalog's part of what a file needs: unchanged, a known failure, a link, a skip
        or a failure found before decoding, else the _Plan of its pipeline work (which both
        backends share: `prepare_planned`)."""
        known = self._path_record(f.path)
        same_stat = known is not None and (known.size, known.mtime_ns) == (f.size, f.mtime_ns)
        stored = known.media_id if same_stat and known and known.media_id else None
        fill = self._to_fill(stored) if stored else None
        if stored and fill == frozenset():
            return _Unchanged(f)
        if same_stat and known.error and not known.media_id and not self.retry_failed:
            return _KnownFailure(f)
        changed = bool(known and known.media_id)
        try:
            with open(f.path, "rb") as fh:
                head = fh.read(HEAD_BYTES)
            if too_large := self._too_large(f, head):
                return _Fail(f, too_large)
            whole = head if len(head) < HEAD_BYTES else None  # the read met the end
            media_id = stored or content_hash(f.path, whole)
        except OSError as exc:
            return _Fail(f, f"cannot read: {exc.strerror or exc}")
        if not stored:
            fill = self._to_fill(media_id)
        if fill == frozenset():
            return _Link(f, media_id)
        try:
            kind = detect_kind(Path(f.path), head=head)
        except UnsupportedContent as exc:
            return _Fail(f, str(exc))
        pipeline = self.pipelines.get(kind.media)
        if pipeline is None:
            return _Skip(f, kind.media, f"no {kind.media} pipeline yet")
        return _Plan(f, media_id, kind, bool(stored), changed, fill)

    def _path_record(self, path: str) -> Any:
        """The path's catalog record as fetched before reading began (a path is decided once
        per run, and only after its decision is its record written), else from the catalog."""
        with self._records_lock:
            if path in self._records:
                return self._records.pop(path)
        return self.catalog.path_record(path)

    def _noting(self, f: FoundFile) -> Callable[[str], None]:
        note = self._on_note or (lambda message: None)
        return lambda message: note(f"{f.display}: {message}")

    def _too_large(self, f: FoundFile, head: bytes) -> str | None:
        """Why the file is refused for its size, before it is hashed or decoded (a 5 GB disk
        image took seconds just to hash); None if it is not. Photos, recordings and videos,
        told from the head, are bounded by their own limits instead (UNBOUNDED_BY_SIZE)."""
        limit = self.max_file_bytes
        if limit is None or f.size <= limit:
            return None
        try:
            media = detect_kind(Path(f.path), head=head).media
        except UnsupportedContent:
            media = None
        if media in UNBOUNDED_BY_SIZE:
            return None
        return f"too large: {_size(f.size)}, over the {limit / 1e6:g} MB limit (max_file_mb)"

    def _to_fill(self, media_id: str) -> frozenset[str] | None:
        """What a content needs now. None: it is not stored (or a write of it was cut short),
        or a space it is always written to has another model now (a model switch): embed it
        whole. Otherwise the spaces to embed it in alone (empty: nothing to do): one that ran
        on its fallback model, once the configured one can be had, and one it is always
        written to but never was (its model was missing), once a model for it can be had.
        Loads only the models of spaces the content lacks."""
        pipeline = self.pipelines.get(self.catalog.media_modality(media_id) or "")
        have = self.catalog.done_collections(media_id) if pipeline else None
        if pipeline is None or have is None:
            return None
        if self.reindex is not None:
            return self._switch_fill(pipeline, have)
        todo: set[str] = set()
        for space in pipeline.encoders():
            configured, *fallbacks = self.candidates[space]
            if configured in have:
                continue
            if have.intersection(fallbacks):
                if self._configured_available(space):
                    todo.add(space)
            elif space in pipeline.primary:
                if self._ever_written(space, have):
                    return None
                if self._usable(space):
                    todo.add(space)
        return frozenset(todo)

    def _switch_fill(self, pipeline: Pipeline, have: set[str]) -> frozenset[str]:
        """During a switch of one space's model: fill it alone where the content has it from
        another model (or always goes to it), unless it is in the new collection already."""
        space = self.reindex or ""
        if space not in pipeline.encoders() or self.candidates[space][0] in have:
            return frozenset()
        if self._ever_written(space, have) or space in pipeline.primary:
            return frozenset({space})
        return frozenset()

    def _ever_written(self, space: str, have: set[str]) -> bool:
        """Whether a content has rows in some model's collection of this space (the names are
        `<prefix>_<space>_<model>`: schema.collection_name)."""
        return any(c.startswith(f"{self.prefix}_{space}_") for c in have)

    def _configured_available(self, space: str) -> bool:
        encoder = self.encoders[space]
        return not isinstance(encoder, Fallback) or encoder.configured_available()

    def _usable(self, space: str) -> bool:
        """Whether a model for the space can be had here (loads it)."""
        try:
            self.encoders[space].space  # noqa: B018 - the dimension comes from the model
        except ModelNotAvailable:
            return False
        return True

    # -- encoding (main thread) ------------------------------------------------------------

    def _read_and_encode(
        self,
        files: list[FoundFile],
        report: IngestReport,
        writes: queue.Queue,
        tick: Progress,
        writer_error: list[BaseException],
    ) -> None:
        self._batches: dict[str, list[tuple[_Job, int]]] = {}
        # Files read ahead of the model: a whole batch, so it never waits for readers to fill one
        window = self.embed_batch + 4 * self.read_workers + 4
        with self._reader_processes() as procs:
            # with processes, a thread for each file a process holds, another hashes the next
            threads = self.read_workers * (DEPTH + 1 if procs else 1)
            self._read_in(files, window, threads, report, writes, tick, writer_error)

    @contextmanager
    def _reader_processes(self) -> Iterator[Any]:
        """While files are read: with read_processes, the pipelines that can decode in another
        process (an `offload` attribute: photos) decode in `read_workers` of them; if they
        cannot start, reader threads decode, with one line saying why."""
        offloading = [p for p in self.pipelines.values() if hasattr(p, "offload")]
        if not (self.read_processes and offloading):
            yield None
            return
        from mmrag.ingest.workers import ReadProcesses

        try:
            preload = tuple(m for p in offloading for m in getattr(p, "reader_modules", ()))
            procs = ReadProcesses(self.read_workers, preload=preload)
        except Exception as exc:  # no /dev/shm, no forkserver here: threads read instead
            say_on_stderr(f"reader processes could not start, reading in threads: {exc}")
            yield None
            return
        self.reader_processes = procs
        try:
            for p in offloading:
                p.offload = procs.call
            yield procs
        finally:
            for p in offloading:
                p.offload = None
            self.reader_processes = None
            procs.close()

    def _read_in(
        self,
        files: list[FoundFile],
        window: int,
        threads: int,
        report: IngestReport,
        writes: queue.Queue,
        tick: Progress,
        writer_error: list[BaseException],
    ) -> None:
        with ThreadPoolExecutor(threads, thread_name_prefix="mmrag-read") as pool:
            pending: deque[Future] = deque()
            todo = iter(files)
            for f in _take(todo, window):
                pending.append(pool.submit(self._decide, f))
            while pending:
                if writer_error:
                    pool.shutdown(cancel_futures=True)
                    return
                outcome = pending.popleft().result()
                for f in _take(todo, 1):
                    pending.append(pool.submit(self._decide, f))
                self._dispatch(outcome, report, writes, tick)
            while self._batches:  # what is left, and what encoding that derives
                self._flush(next(iter(self._batches)), writes)

    def _dispatch(
        self,
        outcome: Any,
        report: IngestReport,
        writes: queue.Queue,
        tick: Progress,
    ) -> None:
        if isinstance(outcome, _Unchanged):
            report.unchanged += 1
            writes.put(outcome)
        elif isinstance(outcome, _KnownFailure):
            report.failed_before += 1
            tick("file", 1)
        elif isinstance(outcome, _Skip):
            report.skipped[outcome.modality] = report.skipped.get(outcome.modality, 0) + 1
            report.skip_reasons.setdefault(outcome.modality, outcome.reason)
            tick("file", 1)
        elif isinstance(outcome, _Fail):
            report.failed.append((outcome.file.display, outcome.reason))
            writes.put(outcome)
        elif isinstance(outcome, _Link):
            report.reused += 1
            writes.put(outcome)
        elif isinstance(outcome, _Job):
            with self._inflight_lock:
                leader = self._inflight.get(outcome.media_id)
                if leader:  # same content read twice in one run: embed once, link both
                    leader.followers.append(outcome.file)
                    report.reused += 1
                    return
                self._inflight[outcome.media_id] = outcome
            if outcome.fill is not None:
                report.filled += 1
            elif outcome.changed:
                report.changed += 1
            else:
                report.new += 1
            job = outcome
            job.vectors = [piece.vector for piece in job.pieces]
            todo = [i for i, vec in enumerate(job.vectors) if vec is None]
            job.missing = len(todo)
            if not todo:  # the pipeline embedded everything itself
                writes.put(job)
            for i in todo:
                self._queue(job, i, writes)

    def _queue(self, job: _Job, i: int, writes: queue.Queue) -> None:
        """Add piece i of a job to its space's batch; run the model when the batch is full."""
        space = job.pieces[i].space
        batch = self._batches.setdefault(space, [])
        batch.append((job, i))
        if len(batch) >= self.embed_batch:
            self._flush(space, writes)

    def _flush(self, space: str, writes: queue.Queue) -> None:
        batch = self._batches.pop(space, [])
        if not batch:
            return
        encoder = self.encoders[space]
        if encoder.device == "cpu":
            self._cpu_model.close()
        try:
            out = encoder.encode([job.pieces[i].payload for job, i in batch])
        finally:
            self._cpu_model.open()
        for (job, i), vec, extra in zip(batch, out.vectors, out.derived, strict=True):
            job.vectors[i] = vec
            for piece in extra:  # counted before this piece is, so the job cannot complete early
                piece.origin = piece.origin or space
                job.pieces.append(piece)
                job.vectors.append(None)
                job.missing += 1
                self._queue(job, len(job.pieces) - 1, writes)
            job.missing -= 1
            if job.missing == 0:
                writes.put(job)

    # -- writing (writer thread) -----------------------------------------------------------

    def _writer(
        self, writes: queue.Queue, report: IngestReport, tick: Progress, errors: list[BaseException]
    ) -> None:
        """Take what is queued (up to about write_batch rows) and write it in one go: one
        Milvus upsert and two catalog transactions for many small files, not per file."""
        done = False
        while not done:
            ops = [writes.get()]
            rows = 0
            while ops[-1] is not None and rows < self.write_batch:
                if isinstance(ops[-1], _Job):
                    rows += len(ops[-1].pieces)
                try:
                    ops.append(writes.get_nowait())
                except queue.Empty:
                    break
            if ops[-1] is None:
                done = True
                ops.pop()
            if errors or not ops:
                continue  # after a failure, drain so the producer never blocks
            try:
                jobs = [op for op in ops if isinstance(op, _Job)]
                if jobs:
                    self._store_jobs(jobs, report, tick)
                seen = [op.file for op in ops if isinstance(op, _Unchanged)]
                if seen:  # unchanged files, the most common op of a re-run: one transaction
                    self.catalog.touch_paths([(f.path, f.display, f.root) for f in seen])
                    tick("file", len(seen))
                for op in ops:
                    if not isinstance(op, _Job | _Unchanged):
                        self._write(op)
                        tick("file", 1)
            except BaseException as exc:
                errors.append(exc)
        if self.bulk and errors:  # a failed run's gathered rows: never imported, media pending
            self._after_import = []
            self.bulk.discard()
        elif self.bulk:  # the rest of the run's rows, before the run ends
            try:
                self._import_bulk()
            except BaseException as exc:
                errors.append(exc)

    def _import_bulk(self) -> None:
        """Import the gathered rows and wait for them; only then are their media done. A
        failure leaves them pending (the next run rewrites them) and ends the run."""
        assert self.bulk is not None
        done, self._after_import = self._after_import, []
        try:
            self.bulk.commit()
        except BaseException:
            self.bulk.discard()
            raise
        for finish in done:
            finish()

    def _write(self, op: _Unchanged | _Fail | _Link) -> None:
        f = op.file
        if isinstance(op, _Unchanged):
            self.catalog.touch_path(f.path, f.display, f.root)
        elif isinstance(op, _Fail):
            old = self.catalog.fail_path(f.path, f.display, f.root, f.size, f.mtime_ns, op.reason)
            self._release(old)
        else:
            self._release(self._link(f, op.media_id))

    def _store_jobs(self, jobs: list[_Job], report: IngestReport, tick: Progress) -> None:
        whole = [j for j in jobs if j.fill is None]
        fills = {j.media_id: j.fill for j in jobs if j.fill is not None}
        # leftovers of an interrupted or older write
        redo = self.catalog.known_media([j.media_id for j in whole])
        self.catalog.begin_media_many(
            [
                (j.media_id, j.kind.media, j.kind.format, j.file.size, _facts(j), j.warning)
                for j in whole
            ]
        )
        if fills:  # before the rows: a fill cut short is done again, and says this again
            self.catalog.set_warnings([(j.media_id, self._fill_warning(j)) for j in jobs if j.fill])
        report.warnings += [(j.file.display, j.warning) for j in jobs if j.warning]
        written: dict[str, dict[str, list[str]]] = {}
        for space, per_media in _segments(jobs).items():
            target = self._space(space)
            name = target.collection(self.prefix)
            if name not in self._ready:
                self.store.ensure_space(target)
                if self.bulk:  # a killed run's import may still be running there
                    self.bulk.prepare(name)
                self._ready.add(name)
            if stale := sorted(redo & per_media.keys()):
                self._delete_media(name, stale)
            kept = self._make_room(name, space, per_media, fills)
            segments = [s for segs in per_media.values() for s in segs]
            self._cpu_model.wait_open()  # Milvus's work too waits for a model on the CPU
            if self.bulk:
                self.bulk.add(name, segments)
            else:
                self.store.upsert(name, segments, batch=self.write_batch)
            written[name] = {
                m: kept.get(m, []) + [s.id for s in segs] for m, segs in per_media.items()
            }
            report.segments += len(segments)
            tick("segments", len(segments))
        if self.bulk:  # done once the import that holds their rows has completed
            self._after_import.append(lambda: self._finish_jobs(jobs, written, tick))
            if self.bulk.full:
                self._import_bulk()
        else:
            self._finish_jobs(jobs, written, tick)

    def _finish_jobs(
        self, jobs: list[_Job], written: dict[str, dict[str, list[str]]], tick: Progress
    ) -> None:
        """The jobs' rows are in Milvus: record them, mark the media done, link the paths."""
        self.catalog.finish_media_many(written)
        links: list[tuple[str, str, str, str, int, int]] = []
        for job in jobs:
            with self._inflight_lock:
                self._inflight.pop(job.media_id, None)
                followers = list(job.followers)
            for f in [job.file, *followers]:
                links.append((f.path, f.display, f.root, job.media_id, f.size, f.mtime_ns))
        for old in self.catalog.link_paths(links):  # one transaction for the batch's paths
            self._release(old)
        tick("file", len(links))

    def _space(self, space: str) -> Space:
        """Where a space's rows go (its model is loaded by now: it embedded them). The Ray
        backend answers from what its workers' models said, so the driver loads none."""
        return self.encoders[space].space

    def _delete_media(self, collection: str, media_ids: list[str]) -> None:
        if self.bulk:  # rows an import brought in are found by a query once loaded
            self.bulk.before_delete(collection)
        self.store.delete_media(collection, media_ids)

    def _make_room(
        self, name: str, space: str, per_media: dict[str, list], fills: dict[str, frozenset[str]]
    ) -> dict[str, list[str]]:
        """Before a fill's rows go to a collection: a filled space's collection loses what it
        held of the content (rows of a fill cut short); another space's (labels in `text`)
        loses only what the filled spaces gave rise to there. Returns, per content, the
        recorded ids that stay."""
        kept: dict[str, list[str]] = {}
        for media_id in per_media.keys() & fills.keys():
            spaces = fills[media_id]
            if space in spaces:
                self._delete_media(name, [media_id])
                continue
            new = {s.id for s in per_media[media_id]}
            old = self.catalog.segment_ids(media_id, name)
            theirs = {i for i in old if segment_origin(i, media_id, space) in spaces}
            if gone := sorted(theirs - new):
                self.store.delete_ids(name, gone)
            kept[media_id] = [i for i in old if i not in theirs and i not in new]
        return kept

    def _fill_warning(self, job: _Job) -> str | None:
        """A filled content's warning: what it said before, less what it said about the spaces
        now written, and what this pass says."""
        spaces = job.fill or frozenset()
        before = (self.catalog.warning_of(job.media_id) or "").split("; ")
        parts = [w for w in before if w and not any(warning_about(w, s) for s in spaces)]
        parts += [w for w in (job.warning or "").split("; ") if w and w not in parts]
        return "; ".join(parts) or None

    def _link(self, f: FoundFile, media_id: str) -> str | None:
        return self.catalog.link_path(f.path, f.display, f.root, media_id, f.size, f.mtime_ns)

    def _release(self, old_media: str | None) -> None:
        """A path stopped pointing at `old_media`: drop it if no other path does."""
        if old_media and self.catalog.is_orphan(old_media):
            self._collect([old_media])

    def _collect(self, media_ids: Iterable[str]) -> int:
        """Delete media (no path points at them) from every collection, then from the catalog."""
        n = 0
        existing = set(self.store.existing_collections())
        for media_id in media_ids:
            # Recorded collections, and this run's: a pending media has rows but no record yet.
            here = {c for names in self.candidates.values() for c in names}
            names = set(self.catalog.collections_of(media_id)) | here
            for collection in names & existing:
                self._delete_media(collection, [media_id])
            self.catalog.forget_media(media_id)
            n += 1
        return n

    # -- what the scan could not read ------------------------------------------------------

    def _record_unreadable(
        self, roots: list[str], files: list[FoundFile], problems: list[ScanProblem]
    ) -> None:
        """Record this run's unreadable entries as failed paths (so `status` lists them), and
        forget earlier ones that this scan of their folder root no longer meets. Nothing is
        forgotten below a folder that could not be listed: there the scan saw nothing."""
        for p in problems:
            if p.path:
                self.catalog.fail_unreadable(p.path, p.display, p.root, p.reason)
        now = {p.path for p in problems} | {f.path for f in files}
        blind = [p.path.rstrip(os.sep) + os.sep for p in problems if p.unlisted and p.path]
        gone: list[str] = []
        for given in roots:
            root = os.path.abspath(given)
            if not os.path.isdir(root) or root + os.sep in blind:
                continue
            for path in self.catalog.unreadable_under(root):
                if path not in now and not any(path.startswith(b) for b in blind):
                    gone.append(path)
        self.catalog.forget_unreadable(gone)

    # -- pruning ---------------------------------------------------------------------------

    def _prune(
        self,
        roots: list[str],
        files: list[FoundFile],
        unreadable: set[str],
        bad_roots: set[str],
        report: IngestReport,
    ) -> int:
        """Forget catalogued paths under the roots that no longer exist on disk (a broken
        symlink still exists: it is a failure, not a deletion)."""
        seen = {f.path for f in files} | unreadable
        gone: list[str] = []
        for given in roots:
            if given in bad_roots:
                report.failed.append((given, "not pruned: part of the folder could not be read"))
                continue
            root = os.path.abspath(given)
            for rec in self.catalog.paths_under(root):
                if rec.path not in seen and not os.path.exists(rec.path):
                    gone.append(rec.path)
        self.catalog.remove_paths(gone)
        return len(gone)


class _Gate:
    """Closed while a model runs on the CPU. A waiter re-checks after waking, so one woken by
    an opening that a new batch has already closed again waits on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False

    def close(self) -> None:
        with self._cond:
            self._closed = True

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()

    def wait_open(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._closed)


def prepare_planned(
    pipeline: Pipeline,
    plan: _Plan,
    note: Callable[[str], None],
    carry: Callable[[str], list[Piece]] | None = None,
) -> Any:
    """The pipeline's part of a file's decision: its pieces (a _Job whose vectors are still to
    be made), or why not (_Fail, _Skip). Touches neither the catalog nor Milvus, so it runs in a
    reader thread or on a Ray worker alike. `note` hears how far a long file has got."""
    f, fill, media_id, kind = plan.file, plan.fill, plan.media_id, plan.kind
    more = {} if fill is None else {"only": fill}
    try:
        with collecting_warnings() as warnings, reporting_progress(note):
            pieces = pipeline.prepare(f.path, kind.format, media_id, **more)
    except MediaError as exc:
        return _Fail(f, str(exc))
    except ModelNotAvailable as exc:
        return _Skip(f, kind.media, f"its model is not available: {exc}")
    except Exception as exc:  # a decoder bug must not stop the run; say what it was
        return _Fail(f, f"{kind.format} could not be processed: {type(exc).__name__}: {exc}")
    if fill is not None:  # what the filled spaces make, and what their models give rise to
        pieces = [p for p in pieces if p.space in fill or p.origin in fill]
        if fill and carry:  # a switch: what other models gave rise to, re-embedded
            pieces += carry(media_id)
        if not pieces:
            return _Unchanged(f) if plan.stored else _Link(f, media_id)
    elif not pieces:
        return _Fail(f, "no content to index")
    warning = "; ".join(warnings) or None
    changed = plan.changed and fill is None
    return _Job(f, media_id, kind, pieces, changed, warning=warning, fill=fill)


def _live_pid(pid_file: Path) -> int | None:
    """The pid written in the file, if that process is alive (a crashed holder left it)."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except PermissionError:
        return pid
    except (OSError, ValueError):
        return None
    return pid


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _segments(jobs: list[_Job]) -> dict[str, dict[str, list]]:
    """The jobs' segments by space and media. A piece's index counts the media's pieces of its
    space and origin, so what one space gave rise to in another keeps its ids however many of
    that space's own there are (Piece.segment)."""
    by_space: dict[str, dict[str, list]] = {}
    for j in jobs:
        counts: dict[tuple[str, str], int] = {}
        for piece, vec in zip(j.pieces, j.vectors, strict=True):
            key = (piece.space, piece.origin if piece.origin != piece.space else "")
            counts[key] = n = counts.get(key, -1) + 1
            per_media = by_space.setdefault(piece.space, {}).setdefault(j.media_id, [])
            per_media.append(piece.segment(j.media_id, piece.space, n, vec))
    return by_space


def _facts(job: _Job) -> MediaFacts:
    """What the file says about itself (a photo's EXIF), from its first piece that says it."""
    for piece in job.pieces:
        facts = MediaFacts.from_meta(piece.meta)
        if facts != MediaFacts():
            return facts
    return MediaFacts()


def _take(it: Any, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out
