"""Ingest on a Ray cluster: `mmrag ingest --backend ray [--address ray://...]`.

The driver keeps every catalog decision and every write: it scans, decides what each file needs
(`IngestRunner._plan`: unchanged, link, fill, skip, fail) and sends only the files that need
their pipeline to Ray. Ray Data decodes and cuts them on the cluster's CPUs (the same
`prepare_planned` the local runner's reader threads call) and embeds their pieces in an actor
pool (a GPU each where the cluster has GPUs), and the driver hands each embedded file, as it
lands, to the local runner's own writer thread: the same Milvus upserts and catalog
pending -> done, so a crash mid-run loses at most what was in flight and a re-run embeds
nothing already done.

Workers build their models from the same Settings (`Models.build`), each loading what it uses;
no loaded model is pickled. They read the files at the driver's paths, so on a cluster of
several machines the library sits on a shared filesystem, and mmrag (with its models) is
installed on every node. The store's files stay on the driver's machine: the thumbnails a worker
makes come back with its file and the driver stores them (`held_thumbnails`).
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from mmrag.ingest.runner import (
    IngestReport,
    IngestRunner,
    Progress,
    _Fail,
    _Job,
    _Link,
    _Plan,
    _Skip,
    _Unchanged,
    prepare_planned,
)
from mmrag.ingest.scan import FoundFile
from mmrag.pipelines.base import Pipeline, SpaceEncoder
from mmrag.settings import Settings
from mmrag.store.catalog import Catalog
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import Space
from mmrag.store.thumbnails import held_thumbnails, thumbnail_store

INSTALL = 'the ray backend needs Ray: pip install "mmrag[ray]"'
# What workers need to find the same models as the driver (offline packs, caches, hub and
# transcription tokens); nothing else of this process's environment goes to the cluster.
_PASSED_ENV = (
    "HF_",
    "TRANSFORMERS_",
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "MMRAG_CACHE_DIR",
    "MMRAG_PANNS_CHECKPOINT",
    "OPENAI_",
)
# Settings the workers never use: the store's, the chat endpoint's and the API's keys stay here.
_KEPT_HERE = {"milvus_token": "", "llm_api_key": "", "api_key": ""}


class RayUnavailable(RuntimeError):
    """Ray is not installed here; str() is the one line that says how to get it."""


def require_ray() -> Any:
    """The ray module, or RayUnavailable naming the extra that brings it."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(INSTALL) from exc
    return ray


class RayIngestRunner(IngestRunner):
    """The local runner's scan, decisions and writer; Ray's workers in place of its reader
    threads and model. `address`: an existing cluster (`ray.init(address)`); None starts a
    local one for the run (unless this process has joined one already) and stops it after."""

    def __init__(
        self,
        catalog: Catalog,
        store: MilvusStore,
        pipelines: list[Pipeline],
        *,
        settings: Settings,
        address: str | None = None,
        **options: Any,
    ) -> None:
        require_ray()
        super().__init__(catalog, store, pipelines, **options)
        self.settings = settings
        self.address = address
        self._landed: dict[str, Space] = {}  # what the workers' models said of their spaces
        self._remote_notes: list[str] = []
        local = self.model_notes
        self.model_notes = lambda: _unique([*(local() if local else []), *self._remote_notes])

    def _space(self, space: str) -> Space:
        """Where a space's rows go, as the worker that embedded them said (no model here)."""
        return self._landed.get(space) or super()._space(space)

    def _read_and_encode(
        self,
        files: list[FoundFile],
        report: IngestReport,
        writes: queue.Queue,
        tick: Progress,
        writer_error: list[BaseException],
    ) -> None:
        """Decide every file here (threads: hashing), send what needs work to Ray, and queue
        each embedded file for the writer as it lands."""
        leaders: dict[str, _Plan] = {}
        followers: dict[str, list[_Plan]] = {}  # same content at other paths: embedded once
        with ThreadPoolExecutor(self.read_workers, thread_name_prefix="mmrag-plan") as pool:
            for outcome in pool.map(self._plan, files):
                if writer_error:
                    return
                if not isinstance(outcome, _Plan):
                    self._dispatch(outcome, report, writes, tick)
                elif outcome.media_id in leaders:
                    followers.setdefault(outcome.media_id, []).append(outcome)
                else:
                    leaders[outcome.media_id] = outcome
        if not leaders:
            return  # nothing to embed: no cluster needed
        with ray_session(self.address):
            for media_id, outcome, spaces, notes, thumbs in self._remote(list(leaders.values())):
                if writer_error:
                    return
                if thumbs:  # stored here before the writer can mark the file done
                    thumbnail_store(self.settings.thumbnails).put_many(thumbs)
                self._landed.update(spaces)
                self._remote_notes = _unique([*self._remote_notes, *notes])
                if isinstance(outcome, _Job):
                    outcome.followers = [p.file for p in followers.pop(outcome.media_id, [])]
                    report.reused += len(outcome.followers)
                    self._dispatch(outcome, report, writes, tick)
                    continue
                for other in [leaders[media_id], *followers.pop(media_id, [])]:
                    self._dispatch(_alike(outcome, other), report, writes, tick)

    def _remote(
        self, plans: list[_Plan]
    ) -> Iterator[tuple[str, Any, dict[str, Space], list[str], Any]]:
        """Ray Data over the plans: decode in one actor pool, embed in another. Yields, as each
        file lands (in no particular order), its content id, its outcome (a _Job with every
        vector, or a _Fail...), the spaces its models wrote to, what they said of themselves
        and the thumbnails made of it ({(key, size): JPEG}, for this machine's cache)."""
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False  # the CLI draws its own
        blob = pickle.dumps(self.settings.model_copy(update=_KEPT_HERE))
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        # One embedding actor per GPU where there are GPUs, else on half the CPUs; decoding
        # actors (one CPU each) on the CPUs left, scaled to the work waiting.
        embedders = gpus or max(1, cpus // 2)
        decoders = max(1, cpus - embedders)
        rows = [{"plan": pickle.dumps(p)} for p in plans]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * cpus))
        # Two actor pools, never fused into one: decoding runs on every CPU, not on the
        # embedding actors' alone, and each actor builds its models once.
        ds = ds.map_batches(
            _Preparer,
            fn_constructor_kwargs={"settings": blob},
            batch_size=1,  # a file per call: long ones do not hold up a batch of short ones
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=decoders),
            num_cpus=1,
        )
        ds = ds.map_batches(
            _Embedder,
            fn_constructor_kwargs={"settings": blob, "batch": self.embed_batch},
            batch_size=max(1, self.embed_batch // 4),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=embedders),
            num_cpus=1,
            num_gpus=1 if gpus else 0,
        )
        with _quiet("ray.data"):
            landed = iter(ds.iter_rows())
            try:
                for row in landed:
                    yield pickle.loads(row["out"])
            finally:  # a run stopped early (its writer failed) stops the cluster's work too
                if close := getattr(landed, "close", None):
                    close()


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray for one run: the cluster at `address`, or a local one (all this machine's CPUs)
    stopped afterwards; a process that has joined a cluster already keeps it."""
    ray = require_ray()
    if ray.is_initialized():
        yield
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(_PASSED_ENV)}
    # Ray's C++ side logs to this terminal through the progress bar (an actor's constructor
    # arguments in the object store, gRPC keepalives); its failures still raise. Set them to
    # `info` to see them.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    if address is None:
        # Ray Data's usage collector polls a Prometheus (localhost:9090) that this cluster,
        # started without its dashboard, lacks, from a thread that outlives the session and
        # then fails to log into its removed folder. Set it to 0 to collect anyway.
        os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
    ray.init(
        address=address,
        runtime_env={"env_vars": env} if env else None,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield
    finally:
        ray.shutdown()


# -- on the workers ---------------------------------------------------------------------------


def _models(settings: bytes) -> Any:
    """A worker's models for these settings (mmrag.app), each loading on first use."""
    from mmrag.app import Models

    return Models.build(pickle.loads(settings))


class _Preparer:
    """An actor that decodes and cuts files with their pipelines (CPU work)."""

    def __init__(self, settings: bytes) -> None:
        self.models = _models(settings)
        self.pipelines = {p.media: p for p in self.models.pipelines}

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for blob in rows["plan"]:
            plan: _Plan = pickle.loads(blob)
            pipeline = self.pipelines[plan.kind.media]
            with held_thumbnails() as thumbs:  # the store's cache is the driver's
                outcome = prepare_planned(pipeline, plan, lambda _message: None)
            out.append(pickle.dumps((plan.media_id, outcome, self.models.model_notes(), thumbs)))
        return {"out": np.array(out, dtype=object)}


class _Embedder:
    """An actor holding every space's model: embeds the pieces of the files it is given."""

    def __init__(self, settings: bytes, batch: int) -> None:
        self.models = _models(settings)
        self.encoders: dict[str, SpaceEncoder] = {
            name: enc for p in self.models.pipelines for name, enc in p.encoders().items()
        }
        self.batch = batch

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = [pickle.loads(b) for b in rows["out"]]
        jobs = [outcome for _, outcome, *_ in done if isinstance(outcome, _Job)]
        embed_jobs(jobs, self.encoders, self.batch)
        # every space the files' rows go to (a long recording's were embedded while decoded)
        used = {piece.space for job in jobs for piece in job.pieces}
        spaces = {name: self.encoders[name].space for name in used}
        notes = _unique([*(n for _, _, said, _ in done for n in said), *self.models.model_notes()])
        out = [pickle.dumps((m, outcome, spaces, notes, thumbs)) for m, outcome, _, thumbs in done]
        return {"out": np.array(out, dtype=object)}


def embed_jobs(jobs: list[_Job], encoders: dict[str, SpaceEncoder], batch: int) -> None:
    """Give every piece of these files its vector (`Piece.vector`), batched across files per
    space, as the local runner batches: what a model's output gives rise to (a photo's labels)
    is appended to its file's pieces, with its origin, and embedded in its own space in turn."""
    todo = [(job, piece) for job in jobs for piece in job.pieces if piece.vector is None]
    while todo:
        by_space: dict[str, list[tuple[_Job, Any]]] = {}
        for job, piece in todo:
            by_space.setdefault(piece.space, []).append((job, piece))
        todo = []
        for space, items in by_space.items():
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                out = encoders[space].encode([piece.payload for _, piece in chunk])
                for (job, piece), vec, extra in zip(chunk, out.vectors, out.derived, strict=True):
                    piece.vector = np.asarray(vec)
                    for more in extra:
                        more.origin = more.origin or space
                        job.pieces.append(more)
                        todo.append((job, more))


# -- helpers -----------------------------------------------------------------------------------


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Ray Data's own progress lines off while the CLI draws its bar (errors still shown)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _alike(outcome: Any, plan: _Plan) -> Any:
    """What a leader's outcome means for a file of the same content (its own path)."""
    f = plan.file
    if isinstance(outcome, _Fail):
        return _Fail(f, outcome.reason)
    if isinstance(outcome, _Skip):
        return _Skip(f, outcome.modality, outcome.reason)
    return _Unchanged(f) if plan.stored else _Link(f, plan.media_id)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
