"""Ingests started over HTTP: one at a time, in a thread, with progress a client can poll.

The folders come from the server's settings (`mmrag serve --library DIR`, else the folders
already ingested), never from a request. The job opens its own catalog and store connection
and uses the server's models (already loaded), through the same runner as `mmrag ingest`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mmrag.kinds import IngestBackend

if TYPE_CHECKING:
    from mmrag.app import Models
    from mmrag.settings import Settings


class Busy(Exception):
    """An ingest is running already; the message names it."""


@dataclass
class IngestJob:
    id: int
    roots: list[str]
    prune: bool = False
    bulk: bool = False  # a server imports the rows from Parquet files (`mmrag ingest --bulk`)
    backend: IngestBackend = IngestBackend.LOCAL  # ray: decodes and embeds on ray_address
    state: str = (
        "starting"  # starting, waiting (for another ingest of the store), running, done, failed
    )
    files_total: int | None = None
    files_done: int = 0
    segments: int = 0
    current: str | None = None  # the file being read and embedded now
    failures: list[dict[str, str]] = field(default_factory=list)
    message: str = ""
    summary: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Watched:
    """A pipeline that notes which file it is given, so progress can name the current file."""

    def __init__(self, pipeline: Any, job: IngestJob) -> None:
        self._pipeline = pipeline
        self._job = job

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)

    def prepare(self, path: str, *args: Any, **kwargs: Any) -> Any:
        self._job.current = path
        return self._pipeline.prepare(path, *args, **kwargs)


class Jobs:
    """The server's ingests: at most one running; every one kept for GET /api/ingest/{id}."""

    def __init__(self, settings: Settings, models: Models) -> None:
        self.settings = settings
        self.models = models
        self.jobs: dict[int, IngestJob] = {}
        self._lock = threading.Lock()
        self._running: IngestJob | None = None

    def start(
        self,
        roots: list[str],
        prune: bool = False,
        bulk: bool = False,
        backend: IngestBackend = IngestBackend.LOCAL,
    ) -> IngestJob:
        with self._lock:
            if self._running is not None:
                raise Busy(f"an ingest is running already (job {self._running.id})")
            job = IngestJob(len(self.jobs) + 1, roots, prune, bulk, backend)
            self.jobs[job.id] = job
            self._running = job
        threading.Thread(
            target=self._run, args=(job,), name=f"ingest-{job.id}", daemon=True
        ).start()
        return job

    def latest(self) -> IngestJob | None:
        with self._lock:
            return self.jobs[max(self.jobs)] if self.jobs else None

    def _run(self, job: IngestJob) -> None:
        from mmrag.app import open_store

        try:
            catalog, store = open_store(self.settings, warn=lambda _message: None)
            try:
                # as `mmrag ingest`: a space whose configured model changed switches first,
                # search answering from the old model meanwhile (ingest/reindex.py)
                for space in self.models.before_ingest(catalog, store):
                    _set(job, state="running", message=f"switching {space} to its new model")
                    self.models.switch(catalog, store, space, resume=False)
                # the ray backend joins the settings' ray_address (never a client's)
                runner = self.models.runner(catalog, store, job.backend, bulk=job.bulk)
                runner.pipelines = {m: _Watched(p, job) for m, p in runner.pipelines.items()}
                report = runner.run(
                    job.roots,
                    prune=job.prune,
                    on_start=lambda total: _set(job, state="running", files_total=total),
                    progress=_progress(job),
                    on_wait=lambda message: _set(job, state="waiting", message=message),
                    on_note=lambda message: _set(job, message=message),  # a long file's pages
                )
                self.models.after_ingest(catalog, store)  # as `mmrag ingest`
            finally:
                store.close()
                catalog.close()
            job.summary = report.to_json()
            job.failures = job.summary["failed"]
            _set(job, state="done", current=None, message="")
        except Exception as exc:  # the job says why; the server goes on
            _set(job, state="failed", current=None, message=f"{type(exc).__name__}: {exc}")
        finally:
            job.finished_at = time.time()
            with self._lock:
                self._running = None


def _set(job: IngestJob, **values: Any) -> None:
    for name, value in values.items():
        setattr(job, name, value)


def _progress(job: IngestJob) -> Callable[[str, int], None]:
    def tick(event: str, n: int) -> None:
        if event == "file":
            job.files_done += n
        else:
            job.segments += n

    return tick
