"""`mmrag ingest --bulk`: a run's rows as Parquet files, imported by a Milvus server.

Row upserts go through the server's write path (its log, growing segments, indexing later) a
batch at a time; an import turns whole files into sealed, indexed segments, Milvus's way for
large loads. `BulkImport` gathers the rows the runner would upsert, writes them with pymilvus's
`LocalBulkWriter` (Parquet, the collection's own schema: a BM25 output field is left to the
server), has the server import each file (`do_bulk_insert`, which Milvus 2.3 takes over gRPC, one
Parquet file per task), waits for every task to complete and for the imported segments to be
searchable (`refresh_load`), and only then returns. The runner marks a media done only after that
return, so a failed or cut-short import leaves it pending and the next run deletes and rewrites
its rows, as it does after a crash. (Measured on the PyPI Milvus 2.3.5 server, 2 shared cores,
50k rows of 384-d: indexed 85-105 s after the start by import, 106-115 s by upserts, whose calls
return sooner, at ~40 s: on par there.)

Where the server reads the files: Milvus with local storage (`common.storageType: local`, as
the PyPI `milvus` server runs) opens an import file by its path on the server's machine, so the
folder must be one the server sees at the same path (this machine, or a shared mount). A server
on MinIO/S3 reads object keys in its bucket instead, which this module does not write.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import Segment, StoreError

# pymilvus's bulk writer logs every file and flush at INFO on stderr: noise in a progress bar
logging.getLogger("pymilvus.bulk_writer").setLevel(logging.WARNING)

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
    ) -> None:
        if missing := bulk_writer_missing():
            raise StoreError(missing)
        self.store = store
        self.uri, self.token = uri, token  # the server's, for the import calls
        self.folder = Path(folder)
        self.limit = rows
        self.timeout_s = timeout_s
        self.file_bytes = file_bytes
        self.rows = 0  # gathered since the last commit
        self._writers: dict[str, Any] = {}  # collection -> LocalBulkWriter
        self._written: list[Path] = []  # their folders, removed once imported
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

    def write(self) -> dict[str, list[Path]]:
        """Write what is gathered to Parquet files, per collection, and start gathering anew."""
        files: dict[str, list[Path]] = {}
        writers, self._writers, self.rows = self._writers, {}, 0
        for collection, writer in writers.items():
            if writer.buffer_row_count:
                writer.commit()
            files[collection] = [Path(f) for batch in writer.batch_files for f in batch]
            self._written.append(Path(writer.data_path))
        return files

    def commit(self) -> int:
        """Import everything gathered and wait until it is searchable; the rows imported.
        Raises StoreError (saying which collection and why) if an import fails or times out;
        the files are removed either way."""
        rows = self.rows
        files = self.write()
        try:
            if any(files.values()):
                self._import(files)
        finally:
            self._remove_written()
        return rows

    def discard(self) -> None:
        """Drop what is gathered (a run that failed before its import)."""
        self._written += [Path(w.data_path) for w in self._writers.values()]
        self._writers, self.rows = {}, 0
        self._remove_written()

    def _sweep(self) -> None:
        """Remove what killed runs left: writers' folders (`<folder>/<uuid>/`) older than an
        import may take, so none still being imported is touched."""
        if not self.folder.is_dir():
            return
        too_old = time.time() - max(self.timeout_s, 3600.0)
        for path in self.folder.iterdir():
            try:
                uuid.UUID(path.name)
                if path.is_dir() and path.stat().st_mtime < too_old:
                    shutil.rmtree(path, ignore_errors=True)
            except (ValueError, OSError):
                continue

    def _remove_written(self) -> None:
        """Remove the writers' own folders (`<folder>/<uuid>/`), never the folder itself."""
        for path in self._written:
            shutil.rmtree(path, ignore_errors=True)
        self._written = []

    # -- internals ---------------------------------------------------------------------------

    def _open(self, collection: str) -> Any:
        """A Parquet writer for the collection's schema, as the server describes it."""
        from pymilvus import CollectionSchema
        from pymilvus.bulk_writer import BulkFileType, LocalBulkWriter

        schema = CollectionSchema.construct_from_dict(
            self.store.client.describe_collection(collection)
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        writer = LocalBulkWriter(
            schema=schema,
            local_path=str(self.folder.absolute()),
            chunk_size=self.file_bytes,
            file_type=BulkFileType.PARQUET,
        )
        self._writers[collection] = writer
        return writer

    def prepare(self, collection: str) -> None:
        """Before a run writes to a collection: wait for imports into it that are still
        running on the server. A killed run's import outlives its process; rows it brings in
        after this run deleted that run's pending media would stand beside their rewrite. And
        a completed import's rows reach a loaded collection only some seconds later (or on a
        refresh), so the collection is refreshed first: a delete finds its rows by a query."""
        with self._connection() as (alias, utility, states):
            deadline = time.monotonic() + self.timeout_s
            while True:
                tasks = utility.list_bulk_insert_tasks(collection_name=collection, using=alias)
                if not any(t.state in states.running for t in tasks):
                    if tasks:
                        self.store.client.refresh_load(collection)
                    return
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"an earlier bulk import into {collection} is still running after "
                        f"{self.timeout_s:g} s (bulk_timeout_s); run the ingest again later"
                    )
                time.sleep(_POLL_S)

    def _import(self, files: dict[str, list[Path]]) -> None:
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
                        raise StoreError(
                            f"bulk import of {path} into {collection} failed: "
                            f"{state.failed_reason or state.state_name}"
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
