"""`ingest --bulk`'s Parquet files, without a server: what a real ingest of a few documents
and photos writes for the server to import, read back with pyarrow and held against the
collection schema and against the rows a normal ingest writes.

Milvus Lite has no import, so here the import step keeps the files instead (the one part
replaced); tests/server/test_bulk.py runs the real import on a Milvus server."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmrag.store.bulk import LITE_REFUSAL, BulkImport
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import StoreError
from tests.conftest import Env

REPO = Path(__file__).resolve().parents[2]
SAMPLES = [
    "docs/kitchen/sourdough.md",
    "docs/home/composting.txt",
    "docs/notes/first-aid.pdf",
    "photos/coffee.jpg",
    "photos/coins.jpg",
]
ARROW_TYPES = {
    "id": pa.string(),
    "media_id": pa.string(),
    "modality": pa.string(),
    "start": pa.float64(),
    "end": pa.float64(),
    "page": pa.int64(),
    "text": pa.string(),
    "meta": pa.string(),  # JSON travels as its text
}


class KeptFiles(BulkImport):
    """The import step keeps each file (Milvus Lite cannot import it)."""

    def __init__(self, store: MilvusStore, folder: Path, kept: Path, **sizes: int) -> None:
        super().__init__(store, folder, "", **sizes)
        self.kept = kept
        self.imports = 0  # commits that had rows to import
        self.files = 0

    def prepare(self, collection: str) -> None:
        """No import runs on Lite that a run would wait for."""

    def commit(self) -> int:
        self.imports += self.rows > 0
        return super().commit()

    def _import(self, files: dict[str, list[Path]]) -> None:
        for collection, paths in files.items():
            for p in paths:
                self.files += 1
                target = self.kept / collection / f"{self.files}-{p.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(p, target)


class FailingImport(BulkImport):
    def prepare(self, collection: str) -> None:
        """No import runs on Lite that a run would wait for."""

    def _import(self, files: dict[str, list[Path]]) -> None:
        raise StoreError(f"bulk import into {', '.join(files)} failed: test")


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "library"
    for rel in SAMPLES:
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "data" / "library" / rel, lib / rel)
    return lib


def _env(make_env: Callable[..., Env], root: Path, name: str) -> Env:
    return make_env(
        milvus_uri=str(root / f"{name}.db"), catalog=root / f"{name}.catalog.sqlite"
    ).with_images()


def _bulk_run(env: Env, library: Path, bulk: BulkImport) -> None:
    runner = env.models.runner(
        env.catalog, env.store, read_workers=2, embed_batch=16, write_batch=8
    )
    runner.bulk = bulk
    runner.run([str(library)])


def test_parquet_files_hold_what_a_normal_ingest_writes(
    make_env: Callable[..., Env], library: Path, tmp_path: Path
) -> None:
    normal = _env(make_env, tmp_path, "normal")
    normal.ingest(library)
    collections = normal.store.existing_collections()
    assert len(collections) == 2  # text (chunks, labels, OCR) and image
    expected = {c: sorted(normal.store.ids(c)) for c in collections}

    bulk = _env(make_env, tmp_path, "bulk")
    kept = tmp_path / "kept"
    # a few rows per import and small files: several imports and files in one run
    importer = KeptFiles(bulk.store, tmp_path / "bulk-files", kept, rows=20, file_bytes=64_000)
    _bulk_run(bulk, library, importer)

    assert importer.imports >= 2
    assert sorted(p.name for p in kept.iterdir()) == sorted(collections)
    assert not any((tmp_path / "bulk-files").iterdir())  # imported files are removed
    for collection in collections:
        desc = normal.store.client.describe_collection(collection)
        fields = {f["name"]: f for f in desc["fields"]}
        outputs = {o for fn in desc.get("functions", []) for o in fn["output_field_names"]}
        dim = int(fields["vector"]["params"]["dim"])
        tables = [pq.read_table(p) for p in sorted((kept / collection).iterdir())]
        for table in tables:
            # every field the server expects, and not the BM25 output it derives itself
            assert set(table.column_names) == set(fields) - outputs
            for name, arrow_type in ARROW_TYPES.items():
                assert table.schema.field(name).type == arrow_type, (collection, name)
            vectors = table.column("vector").to_pylist()
            assert pa.types.is_list(table.schema.field("vector").type)
            assert pa.types.is_float32(table.schema.field("vector").type.value_type)
            assert {len(v) for v in vectors} == {dim}
        ids = sorted(i for t in tables for i in t.column("id").to_pylist())
        assert ids == expected[collection]  # one row per id, the ids a normal ingest writes
        rows = {r["id"]: r for r in normal.store.rows(collection, 'media_id != ""')}
        for table in tables:
            for row in table.to_pylist():
                want = rows[row["id"]]
                for name in ("media_id", "modality", "start", "end", "page", "text"):
                    assert row[name] == want[name], (row["id"], name)
                assert json.loads(row["meta"]) == want["meta"]

    # the media are done once their import returned: a second bulk run embeds nothing
    assert bulk.catalog.counts()["pending"] == 0
    again = bulk.models.runner(bulk.catalog, bulk.store)
    again.bulk = importer
    report = again.run([str(library)])
    assert (report.new, report.unchanged, importer.imports) == (0, len(SAMPLES), importer.imports)


def test_a_failed_import_leaves_the_media_pending(
    make_env: Callable[..., Env], library: Path, tmp_path: Path
) -> None:
    env = _env(make_env, tmp_path, "bulk")
    with pytest.raises(StoreError, match=r"bulk import into .* failed"):
        _bulk_run(env, library, FailingImport(env.store, tmp_path / "files", ""))
    counts = env.catalog.counts()
    assert (counts["media"], counts["pending"], counts["paths"]) == (0, len(SAMPLES), 0)
    assert not any((tmp_path / "files").iterdir())

    kept = KeptFiles(env.store, tmp_path / "files", tmp_path / "kept")
    _bulk_run(env, library, kept)  # the next run redoes them
    counts = env.catalog.counts()
    assert (counts["media"], counts["pending"], counts["paths"]) == (len(SAMPLES), 0, len(SAMPLES))


def test_bulk_refuses_milvus_lite_at_once(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmrag.cli import app

    lite = str(tmp_path / "lite.db")
    result = CliRunner().invoke(
        app, ["ingest", "--bulk", str(tmp_path)], env={"MMRAG_MILVUS_URI": lite}
    )
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == f"error: {LITE_REFUSAL}"
    assert not Path(lite).exists()  # refused before the store was opened
    with MilvusStore(lite) as store, pytest.raises(StoreError) as err:
        BulkImport.for_server(store, tmp_path / "files", lite)
    assert str(err.value) == LITE_REFUSAL
