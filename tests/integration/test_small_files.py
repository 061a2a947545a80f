"""Many small files: the catalog work of an ingest grows with its write batches, not with its
files (one lookup of the scanned paths, one transaction to link a batch's paths, one to touch
a re-run's unchanged files), and every file still ends up done and searchable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mmrag.store.catalog import Catalog
from tests.conftest import Env, write

N = 40


def _library(root: Path) -> Path:
    lib = root / "small"
    for i in range(N):
        write(lib / f"{i // 10}" / f"note{i:02d}.txt", f"Note {i}: the harbour lantern {i} glows.")
    return lib


@pytest.fixture
def counted(env: Env, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many catalog transactions and single-path lookups the test's ingests make."""
    calls = {"transactions": 0, "path_record": 0}
    transaction, path_record = Catalog.transaction, Catalog.path_record

    @contextmanager
    def counting(self: Catalog) -> Iterator[object]:
        calls["transactions"] += 1
        with transaction(self) as db:
            yield db

    def lookup(self: Catalog, path: str) -> object:
        calls["path_record"] += 1
        return path_record(self, path)

    monkeypatch.setattr(Catalog, "transaction", counting)
    monkeypatch.setattr(Catalog, "path_record", lookup)
    return calls


def test_small_files_cost_transactions_per_batch_not_per_file(
    env: Env, counted: dict[str, int]
) -> None:
    lib = _library(env.root)
    report = env.ingest(lib, write_batch=512)
    assert (report.new, report.failed, report.segments) == (N, [], N)
    assert counted["path_record"] == 0  # the scan's paths were looked up together
    # fewer than one per file (the old code linked each path in its own); how many writer
    # batches the files fill depends on timing, so no tighter bound
    assert counted["transactions"] < N, counted
    counts = env.catalog.counts()
    assert (counts["paths"], counts["media"], counts["pending"]) == (N, N, 0)
    hits = env.searcher().search("harbour lantern 17 glows", limit=3)
    assert hits and hits[0].path.endswith("note17.txt")

    counted["transactions"] = 0
    again = env.ingest(lib)
    assert (again.unchanged, again.new, again.segments) == (N, 0, 0)
    assert counted["transactions"] < N, counted


def test_a_batch_that_moves_content_between_paths_releases_what_it_replaced(env: Env) -> None:
    lib = _library(env.root)
    env.ingest(lib)
    old = env.catalog.path_record(str(lib / "0" / "note00.txt"))
    assert old is not None and old.media_id
    write(lib / "0" / "note00.txt", "A different note: the meadow violin.")
    report = env.ingest(lib)
    assert (report.changed, report.unchanged) == (1, N - 1)
    assert env.catalog.is_orphan(old.media_id) and old.media_id not in env.catalog.paths_by_media()
    assert not [i for i in env.ids() if i.startswith(old.media_id)]
