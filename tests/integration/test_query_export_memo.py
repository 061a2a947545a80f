"""A text model whose light query encoder cannot be exported (pipelines/text/onnx_query.py): the
failure is remembered beside the exports, so the next ingest neither exports again nor loads the
model for it; a change of the model's weights or of mmrag tries again."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mmrag.app import Models
from mmrag.pipelines.text import onnx_query, space
from mmrag.settings import Settings
from mmrag.store.catalog import Catalog
from mmrag.store.milvus import MilvusStore
from tests.conftest import write
from tests.tiny_models import tiny_bert


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the model is loaded and an export is attempted (the real functions run)."""
    calls = {"loads": 0, "exports": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(space, "load_text_encoder", counting("loads", space.load_text_encoder))
    monkeypatch.setattr(onnx_query, "_export_into", counting("exports", onnx_query._export_into))
    return calls


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """`mmrag ingest` of tmp_path/docs as a new process runs it: new models, then after_ingest."""
    model = tiny_bert(tmp_path / "model", max_seq_length=40)
    settings = Settings(
        milvus_uri=str(tmp_path / "milvus.db"),
        catalog=tmp_path / "catalog.sqlite",
        cache_dir=tmp_path / "cache",
        text_model=str(model),
        query_encoder="onnx",
        **{"image_model": "", "clip_model": "", "audio_model": "", "speech_model": ""},
    )
    catalog, store = Catalog(settings.catalog), MilvusStore(settings.milvus_uri)

    def run() -> None:
        models = Models.build(settings)
        report = models.runner(catalog, store, read_workers=1).run([str(tmp_path / "docs")])
        assert report.failed == []
        models.after_ingest(catalog, store)

    yield run
    store.close()
    catalog.close()


def test_a_failed_export_is_not_tried_again_until_the_model_or_mmrag_changes(
    tmp_path: Path,
    ingest: Callable[[], None],
    counted: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write(tmp_path / "docs" / "cat.md", "# The cat\n\nThe cat sat on the red mat.")
    monkeypatch.setattr(onnx_query, "MIN_COSINE", 1.5)  # no export can pass its check
    ingest()
    assert counted["exports"] == 1
    model = str(tmp_path / "model" / "st")
    marker = onnx_query.failure_file(tmp_path / "cache", model)
    failure = json.loads(marker.read_text())
    assert failure["model"] == model
    assert failure["error"].startswith("ExportFailed: ONNX vectors differ (cosine")
    assert failure["toolchain"]["mmrag"]

    loads = counted["loads"]
    ingest()  # nothing new: the model is not loaded for the export either
    write(tmp_path / "docs" / "dog.md", "# The dog\n\nThe dog ran fast past the blue car.")
    ingest()  # something new: the model is loaded to embed it, still no export
    assert counted["exports"] == 1
    assert counted["loads"] == loads + 1

    real = onnx_query._toolchain
    monkeypatch.setattr(onnx_query, "_toolchain", lambda: real() | {"mmrag": "99.0"})
    ingest()  # another mmrag: tried again (and failed again)
    assert counted["exports"] == 2
    assert json.loads(marker.read_text())["toolchain"]["mmrag"] == "99.0"

    monkeypatch.setattr(onnx_query, "MIN_COSINE", 0.999)
    weights = next((tmp_path / "model" / "st").rglob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the model changed
    ingest()  # tried again, exported now: the failure is forgotten
    assert counted["exports"] == 3
    assert not marker.exists()
    assert onnx_query.OnnxTextEncoder.load(tmp_path / "cache", model) is not None
