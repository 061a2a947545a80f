"""`mmrag ingest --backend ray` and `POST /api/ingest {"backend": "ray"}`: a real local Ray
cluster (2 CPUs, one for the module), real decoders, the offline models and real Milvus Lite.
The Ray-built store must hold what the local runner writes."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmrag.api import create_app
from mmrag.kinds import Modality
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.store.thumbnails import ThumbnailStore, thumbnail_store
from tests.conftest import REPO, Env, build_env
from tests.integration.test_api import Served

LIBRARY = REPO / "data" / "library"
DOCS = ["docs/kitchen", "docs/home/heat-pump-manual.pdf", "docs/home/dog-training.html"]
PHOTOS = ["chelsea the cat.jpg", "coffee.jpg", "rocket launch.jpg"]
FIELDS = ["id", "media_id", "modality", "start", "end", "page", "text", "vector"]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A Ray cluster of two nodes on this machine, one CPU each, for this module's tests (its
    files in a temp folder, removed after). The decoding actor and the embedding actor take a
    CPU each, so they run on different nodes: what they hand each other and the driver crosses
    object stores, as on several machines. The backend joins it rather than starting its own."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    node = {"num_cpus": 1, "object_store_memory": 150 * 1024 * 1024, "temp_dir": f"{temp}/ray"}
    try:
        with pytest.MonkeyPatch.context() as env:
            # the cluster's address file goes under RAY_TMPDIR, not the machine's /tmp/ray
            env.setenv("RAY_TMPDIR", temp)
            # as for the cluster the backend starts (ray_session): no usage poller, which
            # outlives the cluster and fails into a later test's warnings
            env.setenv("RAY_DATA_USAGE_DISABLED", "1")
            head = {**node, "include_dashboard": False}
            cluster = Cluster(initialize_head=True, head_node_args=head)
            try:
                cluster.add_node(**node)
                ray.init(address=cluster.address, log_to_driver=False)
                try:
                    nodes = [n for n in ray.nodes() if n["Alive"]]
                    assert [n["Resources"].get("CPU") for n in nodes] == [1.0, 1.0], nodes
                    yield ray
                finally:
                    ray.shutdown()
            finally:
                cluster.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def library(root: Path) -> Path:
    """A copy of part of data/library: documents (text, markdown, PDF, HTML) and photos."""
    lib = root / "library"
    for part in DOCS:
        src = LIBRARY / part
        if src.is_dir():
            shutil.copytree(src, lib / part)
        else:
            (lib / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, lib / part)
    (lib / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy2(LIBRARY / "photos" / name, lib / "photos" / name)
    shutil.copy2(LIBRARY / "photos" / PHOTOS[0], lib / "photos" / "copy.jpg")  # same content
    return lib


def with_photos(root: Path, minilm: TextEncoder) -> Env:
    """An Env with the test profile's photo model, and no OCR (no Tesseract needed)."""
    env = build_env(root, minilm, ocr=False)
    return env.with_images()


def rows(env: Env) -> dict[str, dict[str, dict[str, Any]]]:
    """Every row of every collection, by collection and segment id."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in env.store.existing_collections():
        out[name] = {r["id"]: r for batch in env.store._batches(name, FIELDS, 1000) for r in batch}
    return out


def thumbnails(env: Env) -> dict[tuple[str, int], bytes]:
    store = thumbnail_store(env.settings.thumbnails)
    return {(key, size): store.get(key, size) or b"" for key, size in store.entries()}


def test_ray_backend_writes_what_the_local_runner_writes(
    ray_cluster: Any, tmp_path: Path, minilm: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored: list[tuple[str, int]] = []  # the thumbnails the driver stores, from every run
    put_many = ThumbnailStore.put_many

    def spy(self: ThumbnailStore, held: dict[tuple[str, int], bytes]) -> None:
        stored.extend(held)
        put_many(self, held)

    monkeypatch.setattr(ThumbnailStore, "put_many", spy)
    lib = library(tmp_path)
    local, remote = with_photos(tmp_path / "local", minilm), with_photos(tmp_path / "ray", minilm)
    try:
        expected = local.ingest(lib)
        total = len([p for p in lib.rglob("*") if p.is_file()])
        assert (expected.new, expected.reused, expected.failed) == (total - 1, 1, [])

        # A crash mid-run: Milvus refuses the third write; what was written before it is done.
        upsert, calls = remote.store.upsert, []

        def crashing(*args: Any, **kw: Any) -> int:
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("killed mid-run")
            return upsert(*args, **kw)

        remote.store.upsert = crashing  # type: ignore[method-assign]
        runner = remote.models.runner(
            remote.catalog, remote.store, backend="ray", embed_batch=16, write_batch=8
        )
        with pytest.raises(RuntimeError, match="killed mid-run"):
            runner.run([str(lib)])
        del remote.store.upsert

        # The next run resumes: it embeds only what the crash left undone.
        ticks: dict[str, int] = {"file": 0, "segments": 0}
        runner = remote.models.runner(remote.catalog, remote.store, backend="ray", embed_batch=16)
        got = runner.run(
            [str(lib)], progress=lambda event, n: ticks.__setitem__(event, ticks[event] + n)
        )
        assert got.failed == []
        assert got.unchanged > 0 and got.new > 0
        assert got.new + got.reused + got.unchanged == total
        assert 0 < got.segments < expected.segments
        assert ticks == {"file": total, "segments": got.segments}
        # every thumbnail came back from the cluster and was stored here, as the local run's
        assert set(stored) == set(thumbnails(local)), "thumbnails come back to the driver"
        assert thumbnails(remote) == thumbnails(local)
        # decoded and embedded on the cluster: the driver loaded no photo model of its own
        assert remote.models.spaces["image"].unavailable is None
        assert remote.models.spaces["image"]._encoder is None
        # Ray Data's usage poller is off: its thread would outlive the cluster
        assert "data-usage-metrics-poller" not in {t.name for t in threading.enumerate()}

        mine, theirs = rows(local), rows(remote)
        assert sorted(theirs) == sorted(mine)  # the same collections (text and the photo space)
        assert len(mine) == 2
        for name, by_id in mine.items():
            assert sorted(theirs[name]) == sorted(by_id), name
            for seg_id, row in by_id.items():
                other = theirs[name][seg_id]
                for key in ("media_id", "modality", "start", "end", "page", "text"):
                    assert other[key] == row[key], (seg_id, key)
                assert np.allclose(other["vector"], row["vector"], atol=1e-4), seg_id
        labels = [
            r for by_id in theirs.values() for r in by_id.values() if r["modality"] == "label"
        ]
        assert labels, "a photo's labels reach the text space through the Ray actors"
        assert {r["modality"] for r in labels} == {str(Modality.LABEL)}

        hits = remote.searcher().search("how long to simmer red lentils", limit=3)
        assert Path(hits[0].path).name == "red-lentil-soup.txt", [h.path for h in hits]
        hits = remote.searcher().search_image(lib / "photos" / "coffee.jpg", limit=3)
        assert Path(hits[0].path).name == "coffee.jpg", [h.path for h in hits]

        again = remote.models.runner(remote.catalog, remote.store, backend="ray").run([str(lib)])
        assert (again.new, again.changed, again.filled, again.segments) == (0, 0, 0, 0)
        assert again.unchanged == total
        copies = [lib / "photos" / PHOTOS[0], lib / "photos" / "copy.jpg"]
        media = {remote.catalog.path_record(str(p)).media_id for p in copies}
        assert len(media) == 1 and None not in media, "one content, embedded once, two paths"
        assert rows(remote).keys() == theirs.keys()
        assert {n: len(r) for n, r in rows(remote).items()} == {
            n: len(r) for n, r in theirs.items()
        }
    finally:
        local.close()
        remote.close()


def test_an_ingest_over_http_runs_on_the_ray_backend(
    ray_cluster: Any, tmp_path: Path, minilm: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmrag.ingest.ray_backend import RayIngestRunner

    sent: list[int] = []  # files the Ray backend took (it sends those needing work to Ray)
    real = RayIngestRunner._read_and_encode

    def spy(self: RayIngestRunner, files: list, *args: Any) -> None:
        sent.append(len(files))
        return real(self, files, *args)

    monkeypatch.setattr(RayIngestRunner, "_read_and_encode", spy)
    lib = library(tmp_path)
    env = build_env(tmp_path / "api", minilm, ocr=False, library=[lib]).with_images()
    total = len([p for p in lib.rglob("*") if p.is_file()])
    json_body = {"Content-Type": "application/json"}
    try:
        with Served(create_app(env.settings, env.models)) as server:
            wrong = server.call("/api/ingest", "POST", b'{"backend": "spark"}', json_body)
            assert wrong.status == 422 and "backend" in wrong.body.decode(), wrong.body
            started = server.call("/api/ingest", "POST", b'{"backend": "ray"}', json_body)
            assert started.status == 202, started.body
            job = started.json()
            assert job["backend"] == "ray" and job["roots"] == [str(lib)]
            deadline = time.monotonic() + 300
            while (done := server.json(f"/api/ingest/{job['id']}"))["state"] not in (
                "done",
                "failed",
            ):
                assert time.monotonic() < deadline, done
                time.sleep(0.2)
            assert done["state"] == "done", done["message"]
            assert done["failures"] == [] and done["files_done"] == done["files_total"] == total
            assert (done["summary"]["new"], done["summary"]["reused"]) == (total - 1, 1)
            assert done["segments"] == done["summary"]["segments"] > 0
            assert sent == [total]  # read and embedded by the Ray backend
            found = json.loads(server.call("/api/search?q=simmer+red+lentils&limit=3").body)
            assert Path(found["hits"][0]["path"]).name == "red-lentil-soup.txt", found
    finally:
        env.close()


def test_without_ray_the_backend_says_how_to_install_it(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    from mmrag.ingest.ray_backend import RayUnavailable

    with pytest.raises(RayUnavailable, match=r'pip install "mmrag\[ray\]"'):
        env.models.runner(env.catalog, env.store, backend="ray")
    result = env.cli("ingest", "--backend", "ray", str(tmp_path))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ['error: the ray backend needs Ray: pip install "mmrag[ray]"'], result.output
    env.settings.library = [tmp_path]
    with Served(create_app(env.settings, env.models)) as server:
        body = b'{"backend": "ray"}'
        refused = server.call("/api/ingest", "POST", body, {"Content-Type": "application/json"})
        assert refused.status == 409, refused.body
        assert (
            refused.json()["error"]
            == 'backend ray: the ray backend needs Ray: pip install "mmrag[ray]"'
        )
        assert server.json("/api/ingest") == {"state": "idle"}  # no job started
