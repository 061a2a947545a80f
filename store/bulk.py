"""`mmrag ingest --bulk`: a run's rows as Parquet files, imported by a Milvus server.

Row upserts go through the server's write path (its log, growing segments, indexing later) a
batch at a time; an import turns whole files into sealed, indexed segments, Milvus's way for
large loads. `BulkImport` gathers the rows the runner would upsert, writes them with pymilvus's
bulk writer (Parquet, the collection's own schema: a BM25 output field is left to the server),
has the server import each file (`do_bulk_insert`, which Milvus 2.3 takes over gRPC, one
Parquet file per task), waits for every task to complete and for the imported segments to be
searchable (`refresh_load`), and only then returns. The runner marks a media done only after that
return, so a failed or cut-short import leaves it pending and the next run deletes and rewrites
its rows, as it does after a crash. (Measured on the PyPI Milvus 2.3.5 server, 2 shared cores,
50k rows of 384-d: indexed 85-105 s after the start by import, 106-115 s by upserts, whose calls
return sooner, at ~40 s: on par there.)

Where the server reads the files depends on its storage:
- local storage (`common.storageType: local`, as the PyPI `milvus` server runs): it opens an
  import file by its path on its own machine, so `bulk_folder` must be a folder the server sees
  at the same path (this machine, or a shared mount);
- MinIO/S3 (docker-compose.yml, any cluster): it reads object keys in its own bucket, so the
  files are staged in `bulk_folder` and uploaded to `bulk_bucket` (store/bucket.py), and the
  keys are imported, then removed.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path, PurePath, PurePosixPath
from types import SimpleNamespace
from typing import Any

import numpy as np

from mmrag.store.bucket import BulkBucket
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import Segment, StoreError

# pymilvus's bulk writer logs every file and flush at INFO on stderr: noise in a progress bar
logging.getLogger("pymilvus.bulk_writer").setLevel(logging.WARNING)
log = logging.getLogger(__name__)

LITE_REFUSAL = (
    "--bulk: bulk import needs a Milvus server (Milvus Lite has no import); use a normal ingest"
)
DEFAULT_ROWS = 50_000
# Bytes a Parquet file holds, by the writer's own estimate: its buffer keeps every value as a
# Python object (several times the estimate), so files are cut before a whole batch is held.
FILE_BYTES = 32 * 1024 * 1024
_POLL_S = 0.5


def bulk_writer_missing() -> str | None:
    """Why pymilvus's bulk writer cannot be used here (its extra is not installed), or None."""
    try:
        import pymilvus.bulk_writer  # noqa: F401 - it checks its extra's packages on import
    except ModuleNotFoundError as exc:
        return f'--bulk needs pymilvus\'s bulk writer: pip install "pymilvus[bulk-writer]" ({exc})'
    return None


class BulkImport:
    """Rows gathered per collection, imported in one go by `commit`. Build it for a server
    (`for_server`): on Milvus Lite, which has no import, only the files could be written."""

    def __init__(
        self,
        store: MilvusStore,
        folder: Path,
        uri: str,
        token: str = "",
        rows: int = DEFAULT_ROWS,
        timeout_s: float = 900.0,
        file_bytes: int = FILE_BYTES,
        bucket: BulkBucket | None = None,
    ) -> None:
        if missing := bulk_writer_missing():
            raise StoreError(missing)
        self.store = store
        self.uri, self.token = uri, token  # the server's, for the import calls
        self.folder = Path(folder)  # where files are written (staged, with a bucket)
        self.bucket = bucket  # a server on MinIO/S3: files are uploaded there
        self.limit = rows
        self.timeout_s = timeout_s
        self.file_bytes = file_bytes
        self.rows = 0  # gathered since the last commit
        self._writers: dict[str, Any] = {}  # collection -> its bulk writer
        self._written: list[Path] = []  # their local folders, removed once imported
        self._uploaded: list[str] = []  # their folders in the bucket, removed once imported
        self._prepared: set[str] = set()  # collections whose earlier imports have ended
        self._unseen: set[str] = set()  # of those, where imported rows may not be loaded yet
        if bucket is not None:
            try:
                bucket.check()
            except OSError as exc:
                raise StoreError(str(exc)) from None
        self._sweep()

    @classmethod
    def for_server(
        cls, store: MilvusStore, folder: Path, uri: str, token: str = "", **sizes: Any
    ) -> BulkImport:
        """The importer of a server store; StoreError at once on Milvus Lite."""
        if store.backend != "server":
            raise StoreError(LITE_REFUSAL)
        return cls(store, folder, uri, token, **sizes)

    @property
    def full(self) -> bool:
        """Whether enough rows are gathered to import them now (`rows` setting)."""
        return self.rows >= self.limit

    def add(self, collection: str, segments: Sequence[Segment]) -> None:
        """Gather these rows for `collection` (written to Parquet as they pile up)."""
        writer = self._writers.get(collection) or self._open(collection)
        for segment in segments:
            row = segment.row()
            # an array is checked by its dtype and shape; a list, float by float in Python
            row["vector"] = np.asarray(segment.vector, dtype=np.float32)
            writer.append_row(row)
        self.rows += len(segments)
        self._raise_failed(collection, writer)  # a file written as the rows piled up

    def write(self) -> dict[str, list[PurePath]]:
        """Write what is gathered to Parquet files (uploaded, with a bucket), per collection,
        and start gathering anew: each collection's files as the server is to read them (paths,
        or keys in the bucket). StoreError if a file could not be written or uploaded."""
        files: dict[str, list[PurePath]] = {}
        writers, self._writers, self.rows = self._writers, {}, 0
        for writer in writers.values():
            self._forget(writer)
        for collection, writer in writers.items():
            if writer.buffer_row_count:
                writer.commit()
            self._raise_failed(collection, writer)
            kind = PurePosixPath if self.bucket else Path
            files[collection] = [kind(f) for batch in writer.batch_files for f in batch]
        return files

    def commit(self) -> int:
        """Import everything gathered and wait until it is searchable; the rows imported.
        Raises StoreError (saying which collection and why) if writing the files or an import
        fails, or an import times out; the files are removed either way."""
        rows = self.rows
        try:
            files = self.write()
            if any(files.values()):
                self._import(files)
        finally:
            self._remove_written()
        return rows

    def discard(self) -> None:
        """Drop what is gathered (a run that failed before its import)."""
        for writer in self._writers.values():
            self._forget(writer)
        self._writers, self.rows = {}, 0
        self._remove_written()

    def _forget(self, writer: Any) -> None:
        """Note a writer's folders for removal: its local one and, with a bucket, its keys'."""
        self._written.append(self.folder / writer.uuid)
        if self.bucket is not None:
            self._uploaded.append(str(writer.data_path))

    def _raise_failed(self, collection: str, writer: Any) -> None:
        """StoreError if the writer could not write or upload a file: pymilvus writes in a
        thread of its own, where an error would only end that thread, and the import would
        then take the other files as the whole batch."""
        if (error := writer.error) is not None:
            where = self.bucket.url if self.bucket else str(self.folder)
            raise StoreError(
                f"bulk files for {collection} could not be written to {where}: {error}"
            )

    def _sweep(self) -> None:
        """Remove what killed runs left: writers' folders (`<folder>/<uuid>/`) older than an
        import may take, so none still being imported is touched."""
        too_old = time.time() - max(self.timeout_s, 3600.0)
        if self.bucket is not None:
            try:
                self.bucket.sweep(too_old)
            except Exception as exc:  # keys that may not list: the files only take room
                log.warning("bulk_bucket %s: could not remove old files: %s", self.bucket.url, exc)
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            try:
                uuid.UUID(path.name)
                if path.is_dir() and path.stat().st_mtime < too_old:
                    shutil.rmtree(path, ignore_errors=True)
            except (ValueError, OSError):
                continue

    def _remove_written(self) -> None:
        """Remove the writers' own folders (`<folder>/<uuid>/`, and `<prefix>/<uuid>/` in the
        bucket), never the folder itself. A bucket that fails here is left to a later sweep."""
        for path in self._written:
            shutil.rmtree(path, ignore_errors=True)
        self._written = []
        uploaded, self._uploaded = self._uploaded, []
        for folder in uploaded if self.bucket is not None else ():
            try:
                self.bucket.remove(folder)
            except Exception as exc:  # any S3 or connection error: the sweep retries later
                log.warning("bulk_bucket %s: could not remove %s: %s", self.bucket.url, folder, exc)

    # -- internals ---------------------------------------------------------------------------

    def _open(self, collection: str) -> Any:
        """A Parquet writer for the collection's schema, as the server describes it."""
        from pymilvus import CollectionSchema
        from pymilvus.bulk_writer import BulkFileType

        schema = CollectionSchema.construct_from_dict(
            self.store.client.describe_collection(collection)
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        local, remote = _writer_classes()
        common = {
            "schema": schema,
            "file_type": BulkFileType.PARQUET,
            "chunk_size": self.file_bytes,
        }
        if self.bucket is None:
            writer = local(local_path=str(self.folder.absolute()), **common)
        else:
            writer = remote(
                remote_path=self.bucket.prefix,
                connect_param=self.bucket.connect_param(),
                local_path=str(self.folder.absolute()),
                **common,
            )
        self._writers[collection] = writer
        return writer

    def prepare(self, collection: str) -> None:
        """Before a run writes to a collection: wait for imports into it that are still
        running on the server (once per run). A killed run's import outlives its process; rows
        it brings in after this run deleted that run's pending media would stand beside their
        rewrite."""
        if collection in self._prepared:
            return
        with self._connection() as (alias, utility, states):
            deadline = time.monotonic() + self.timeout_s
            while True:
                tasks = utility.list_bulk_insert_tasks(collection_name=collection, using=alias)
                if not any(t.state in states.running for t in tasks):
                    if any(t.state == states.ImportCompleted for t in tasks):
                        self._unseen.add(collection)
                    self._prepared.add(collection)
                    return
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"an earlier bulk import into {collection} is still running after "
                        f"{self.timeout_s:g} s (bulk_timeout_s); run the ingest again later"
                    )
                time.sleep(_POLL_S)

    def before_delete(self, collection: str) -> None:
        """Before rows are deleted by a query (a media's rows): an import's rows reach a loaded
        collection only some seconds after it completed, or on a refresh, which takes seconds
        on a server. So a collection an earlier import completed into is refreshed once, when
        a run first deletes there, not whenever it writes there."""
        self.prepare(collection)
        if collection in self._unseen:
            self.store.client.refresh_load(collection)
            self._unseen.discard(collection)

    def _import(self, files: dict[str, list[PurePath]]) -> None:
        """One import task per file (Milvus 2.3 takes one row-based file per task), all
        submitted before any is waited for (each has seconds of fixed cost: flush, index);
        then each collection loads its new segments, so a search sees them."""
        with self._connection() as (alias, utility, states):
            tasks = {
                utility.do_bulk_insert(collection, files=[str(p)], using=alias): (collection, p)
                for collection, paths in files.items()
                for p in paths
            }
            deadline = time.monotonic() + self.timeout_s
            while tasks:
                for task, (collection, path) in list(tasks.items()):
                    state = utility.get_bulk_insert_state(task, using=alias)
                    if state.state == states.ImportCompleted:
                        del tasks[task]
                    elif state.state in states.failed:
                        reason = state.failed_reason or state.state_name
                        raise StoreError(
                            f"bulk import of {path} into {collection} failed: {reason}"
                            + self._missing_hint(reason)
                        )
                if tasks and time.monotonic() > deadline:
                    left = sorted({c for c, _ in tasks.values()})
                    raise StoreError(
                        f"bulk import into {', '.join(left)} did not complete in "
                        f"{self.timeout_s:g} s (bulk_timeout_s)"
                    )
                if tasks:
                    time.sleep(_POLL_S)
        for collection, paths in files.items():
            if paths:
                self.store.client.refresh_load(collection)
                self._unseen.discard(collection)

    def _missing_hint(self, reason: str) -> str:
        """What to check when the server found no file where it was told to look."""
        if "not exist" not in reason and "no such file" not in reason.lower():
            return ""
        if self.bucket is not None:
            return (
                f" (the files were uploaded to bulk_bucket {self.bucket.url}: it must be the "
                "bucket the server stores its data in, minio.bucketName)"
            )
        return (
            f" (the files were written to bulk_folder {self.folder}: a server on MinIO/S3 "
            "reads its own bucket instead, so set bulk_bucket)"
        )

    @contextmanager
    def _connection(self) -> Iterator[tuple[str, Any, Any]]:
        """An ORM connection to the server (its import calls are the only import API Milvus
        2.3 has), the `utility` module and the import states, with their deprecation warnings
        silenced."""
        from pymilvus import connections, utility
        from pymilvus.client.types import BulkInsertState

        if self.store.backend != "server":
            raise StoreError(LITE_REFUSAL)
        states = SimpleNamespace(
            ImportCompleted=BulkInsertState.ImportCompleted,
            failed=(BulkInsertState.ImportFailed, BulkInsertState.ImportFailedAndCleaned),
            running=(
                BulkInsertState.ImportPending,
                BulkInsertState.ImportStarted,
                BulkInsertState.ImportPersisted,
            ),
        )
        alias = f"mmrag-bulk-{uuid.uuid4().hex[:8]}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            connections.connect(alias=alias, uri=self.uri, token=self.token)
            try:
                yield alias, utility, states
            finally:
                connections.disconnect(alias)


@cache
def _writer_classes() -> tuple[type, type]:
    """pymilvus's local and remote bulk writers, each keeping the error its flush thread met
    (`error`) instead of losing it with the thread. Made on first use: the bulk writer is an
    optional extra, and store/bulk.py is imported by every ingest."""
    from pymilvus.bulk_writer import LocalBulkWriter, RemoteBulkWriter

    class Kept:
        error: BaseException | None = None

        def _flush(self, call_back: Any = None) -> None:
            try:
                super()._flush(call_back)  # type: ignore[misc]
            except Exception as exc:  # pymilvus logs it and re-raises into the thread's end
                self.error = self.error or exc

    class Local(Kept, LocalBulkWriter):
        """A LocalBulkWriter that keeps its flush error."""

    class Remote(Kept, RemoteBulkWriter):
        """A RemoteBulkWriter that keeps its flush or upload error."""

    return Local, Remote
