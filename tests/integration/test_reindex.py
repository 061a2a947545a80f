"""Model switch without downtime (issue 16): `mmrag reindex` fills the new model's collection
beside the old one while search answers from the old one, then cuts over; a kill -9 resumes.
Two tiny random text models (mechanics, not quality) give two collections; real Milvus Lite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from mmrag.app import Models
from mmrag.pipelines.text.onnx_query import export_folder
from mmrag.settings import Settings
from mmrag.store.catalog import Catalog
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import collection_name
from tests.integration.test_processes import cli_env, make_big_library, mmrag, wait_for
from tests.tiny_models import tiny_bert

QUERY = "harbour lantern copper meadow"


def _tiny(folder: Path, name: str, seed: int) -> str:
    """A tiny random sentence-transformers model named `name` (the collection is named after
    it), its weights shifted by `seed` so two of them give different vectors."""
    import torch
    from sentence_transformers import SentenceTransformer

    made = tiny_bert(folder / name, max_seq_length=64)
    model = SentenceTransformer(str(made), device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    out = folder / name / name
    model.save(str(out))
    return str(out)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("models")
    return _tiny(root, "tiny_a", 1), _tiny(root, "tiny_b", 2)


def _settings(root: Path, model: str) -> Settings:
    return Settings(
        milvus_uri=str(root / "milvus.db"),
        catalog=root / "catalog.sqlite",
        text_model=model,
        image_model="",
        clip_model="",
        audio_model="",
        speech_model="",
        chunk_tokens=64,
        chunk_overlap=8,
        device="cpu",
    )


def _ingest(models: Models, catalog: Catalog, store: MilvusStore, lib: Path) -> None:
    models.runner(catalog, store, read_workers=2, embed_batch=8).run([str(lib)])


def test_search_answers_throughout_a_switch_then_from_the_new_model(
    tmp_path: Path, two_models: tuple[str, str]
) -> None:
    a, b = two_models
    lib = make_big_library(tmp_path, files=30)
    old, new = (collection_name("mmrag", "text", m) for m in (a, b))
    store_dir = tmp_path / "store"
    catalog = Catalog(store_dir / "catalog.sqlite")
    store = MilvusStore(str(store_dir / "milvus.db"))
    try:
        _ingest(Models.build(_settings(store_dir, a)), catalog, store, lib)
        rows_before = store.count(old)
        models = Models.build(_settings(store_dir, b))  # the setting changed: b
        assert models.switches_wanted(catalog, store) == ["text"]

        answers: list[tuple[str, str, int]] = []  # (collection, model, hits) per query
        errors: list[BaseException] = []
        stop = threading.Event()

        def ask() -> None:
            while not stop.is_set():
                try:
                    searcher = models.searcher(catalog, store)
                    (text,) = [s for s in searcher.spaces if s.name == "text"]
                    hits = searcher.search(QUERY, limit=5)
                    answers.append((text.collection, text.encoder.model_name, len(hits)))
                except BaseException as exc:  # every failure is the finding
                    errors.append(exc)
                time.sleep(0.01)

        def slowly(event: str, n: int) -> None:  # a switch long enough to search during
            if event == "file":
                time.sleep(0.05)

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            report = models.switch(catalog, store, "text", progress=slowly, grace_s=0.5)
            time.sleep(0.3)  # a few answers after the cutover
        finally:
            stop.set()
            asker.join()

        assert not errors, errors[:3]
        assert report is not None and report.filled == 30 and not report.missing
        during = [x for x in answers if x[0] == old]
        after = [x for x in answers if x[0] == new]
        assert len(during) >= 10 and len(after) >= 3, (len(during), len(after))
        assert all(n == 5 for _, _, n in answers), "a query came back without hits"
        assert {m for _, m, _ in during} == {a} and {m for _, m, _ in after} == {b}
        assert answers.index(after[0]) > answers.index(during[-1]), "served old after new"

        assert old not in store.existing_collections()
        assert store.count(new) == rows_before
        assert catalog.served()["text"].model == b and catalog.served()["text"].retired is None
        assert not catalog.wrote_to(old) and models.switches_wanted(catalog, store) == []

        # the scores are the new model's: the same as a store built with it from scratch
        fresh_dir = tmp_path / "fresh"
        fresh_catalog = Catalog(fresh_dir / "catalog.sqlite")
        fresh_store = MilvusStore(str(fresh_dir / "milvus.db"))
        try:
            fresh = Models.build(_settings(fresh_dir, b))
            _ingest(fresh, fresh_catalog, fresh_store, lib)
            want = fresh.searcher(fresh_catalog, fresh_store).search(QUERY, "dense", limit=5)
        finally:
            fresh_store.close()
            fresh_catalog.close()
        got = models.searcher(catalog, store).search(QUERY, "dense", limit=5)
        assert [h.segment_id for h in got] == [h.segment_id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    finally:
        store.close()
        catalog.close()


def _done_in(catalog: Path, collection: str) -> int:
    try:
        with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT count(DISTINCT media_id) FROM segments WHERE collection = ?", (collection,)
            ).fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def _run(*args: str, env: dict[str, str]) -> str:
    proc = mmrag(*args, env=env)
    out, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return out


def test_a_killed_reindex_resumes_and_status_shows_its_progress(
    tmp_path: Path, two_models: tuple[str, str]
) -> None:
    a, b = two_models
    files = 60
    lib = make_big_library(tmp_path, files=files)
    old, new = (collection_name("mmrag", "text", m) for m in (a, b))
    env = cli_env(tmp_path) | {"MMRAG_TEXT_MODEL": a, "MMRAG_EMBED_BATCH_SIZE": "4"}
    _run("ingest", "-q", str(lib), env=env)
    rows = json.loads(_run("status", "--json", env=env))["spaces"][old]["rows"]
    catalog = tmp_path / "catalog.sqlite"

    proc = mmrag("reindex", "--space", "text", "--model", b, "-q", env=env)
    wait_for(lambda: _done_in(catalog, new) >= 5 or proc.poll() is not None)
    assert proc.poll() is None, "the reindex finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _done_in(catalog, new)
    assert 0 < done < files

    status = json.loads(_run("status", "--json", env=env))
    assert status["switches"] == [
        {"space": "text", "from": a, "to": b, "done": done, "total": files}
    ]
    wide = env | {"COLUMNS": "400"}  # one line each
    assert f"switching: text: {a} -> {b}: {done}/{files} contents" in _run("status", env=wide)
    hits = json.loads(_run("search", "--json", QUERY, env=env))  # still answered, from a
    assert hits and all(h["path"].startswith(str(lib)) for h in hits)

    # Run again (no --model: the switch in progress is resumed): only what was not done
    out = _run("reindex", "--space", "text", "--json", env=env)
    (summary,) = [json.loads(line) for line in out.splitlines()]
    assert summary["from"] == a and summary["to"] == b
    assert summary["filled"] == files - done and summary["already"] == done

    status = json.loads(_run("status", "--json", env=env))
    assert status["switches"] == []
    assert list(status["spaces"]) == [new]  # the old collection is dropped
    assert status["spaces"][new]["rows"] == rows  # nothing twice, nothing lost
    # the settings still say a: status says so, and an ingest switches back (the same switch)
    assert status["served"] == {"text": {"model": b, "configured": a}}
    _run("ingest", "-q", str(lib), env=env)
    status = json.loads(_run("status", "--json", env=env))
    assert status["served"] == {} and status["switches"] == [] and list(status["spaces"]) == [old]


def test_a_text_switch_embeds_the_photo_labels_again_under_their_ids(
    tmp_path: Path, make_env, two_models: tuple[str, str]
) -> None:
    """Labels are text rows the image model gave rise to: a text switch does not run the image
    model again, it embeds the stored label sets with the new text model, same ids."""
    from mmrag.pipelines.base import LabelSet
    from tests.image_samples import make_photos

    env = make_env().with_images()
    env.ingest(make_photos(tmp_path))
    old = env.collection
    before = {r["id"]: r for r in env.store.rows(old, 'modality == "label"')}
    assert len(before) == 7

    settings = env.settings.model_copy(update={"text_model": two_models[1]})
    models = Models.build(settings)
    report = models.switch(env.catalog, env.store, "text", grace_s=0)
    assert report is not None and report.filled == 7
    new = collection_name("mmrag", "text", two_models[1])
    after = {r["id"]: r for r in env.store.rows(new, 'modality == "label"')}
    assert {i: r["text"] for i, r in after.items()} == {i: r["text"] for i, r in before.items()}
    assert all(":text:image." in i for i in after)
    some = next(iter(after.values()))
    labels = LabelSet(tuple((d["label"], d["p"]) for d in some["meta"]["labels"]))
    want = models.spaces["text"].encode([labels]).vectors[0]
    (_, got), *_ = env.store.iter_vectors(new, expr=f'id == "{some["id"]}"')
    assert got[0] == pytest.approx(want, abs=1e-5)
    assert old not in env.store.existing_collections()


def test_a_running_server_searches_the_new_collection_after_a_cutover(
    tmp_path: Path, two_models: tuple[str, str]
) -> None:
    """`mmrag serve` holds one searcher: after another process's switch cuts over, it builds
    it again instead of searching the dropped collection."""
    from mmrag.api import Options, Service
    from mmrag.kinds import QueryKind
    from mmrag.search.query import Filters, Shape

    a, b = two_models
    lib = make_big_library(tmp_path, files=6)
    service = Service(_settings(tmp_path, a))
    service.start()
    try:
        _ingest(service.models, service.catalog, service.store, lib)
        options = Options("dense", 3, Filters(), Shape())
        assert len(service.find(QueryKind.TEXT, QUERY, options)) == 3
        other = Models.build(_settings(tmp_path, b))
        assert other.switch(service.catalog, service.store, "text", grace_s=0) is not None
        hits = service.find(QueryKind.TEXT, QUERY, options)
        assert len(hits) == 3
        (text,) = service.searcher.spaces
        assert text.collection == collection_name("mmrag", "text", b)
    finally:
        service.stop()


def test_an_ingest_job_of_the_api_switches_a_changed_model_first(
    tmp_path: Path, two_models: tuple[str, str]
) -> None:
    """`mmrag serve`'s ingest jobs do what `mmrag ingest` does: a space whose configured model
    changed is switched (filled beside the old one, cut over) before the new files go in, so
    search never answers from a half-filled collection."""
    from mmrag.jobs import Jobs

    a, b = two_models
    lib = make_big_library(tmp_path, files=12)
    old, new = (collection_name("mmrag", "text", m) for m in (a, b))
    store_dir = tmp_path / "store"
    catalog = Catalog(store_dir / "catalog.sqlite")
    store = MilvusStore(str(store_dir / "milvus.db"))
    try:
        _ingest(Models.build(_settings(store_dir, a)), catalog, store, lib)
        rows_before = store.count(old)
    finally:
        store.close()
        catalog.close()

    settings = _settings(store_dir, b)
    jobs = Jobs(settings, Models.build(settings))
    job = jobs.start([str(lib)])
    wait_for(lambda: job.state in ("done", "failed"), timeout=180)
    assert job.state == "done", job.message

    catalog = Catalog(store_dir / "catalog.sqlite")
    store = MilvusStore(str(store_dir / "milvus.db"))
    try:
        assert catalog.served()["text"].model == b
        assert old not in store.existing_collections()
        assert store.count(new) == rows_before
        assert job.summary is not None and job.summary["unchanged"] == 12  # nothing new to embed
        # and, as `mmrag ingest` does, it exported the new model's light query encoder, so a
        # new search process starts without torch
        assert (export_folder(settings.cache_dir, b) / "meta.json").is_file()
    finally:
        store.close()
        catalog.close()
