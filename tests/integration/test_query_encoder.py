"""The light query encoder (pipelines/text/onnx_query.py): the text model exported once to ONNX,
checked against the model, used by a new process's search without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmrag.kinds import QueryKind
from mmrag.pipelines.text import onnx_query
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.pipelines.text.onnx_query import OnnxTextEncoder, export, export_folder
from mmrag.pipelines.text.space import TextSpace
from tests.conftest import REPO, write
from tests.tiny_models import tiny_bert

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def eval_queries() -> list[str]:
    lines = (REPO / "data" / "eval" / "text_queries.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def test_minilm_exported_gives_the_models_vectors(tmp_path: Path, minilm: TextEncoder) -> None:
    meta = export(minilm.model, MINILM, minilm.resolved.path, tmp_path)
    assert meta is not None and meta.min_cosine > 0.999
    assert (meta.dim, meta.max_tokens) == (384, 256)  # read from the model
    light = OnnxTextEncoder.load(tmp_path, MINILM)
    assert light is not None
    queries = [*eval_queries(), "Ünïcødé 東京", "word " * 600]  # the last one is truncated
    ours, theirs = light.encode(queries), minilm.encode(queries)
    assert ours.shape == theirs.shape == (len(queries), 384)
    cosine = np.sum(ours * theirs, axis=1)
    assert cosine.min() > 0.999, cosine.min()
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[TextEncoder, Path]:
    model = tiny_bert(tmp_path / "model", max_seq_length=40)
    encoder = TextEncoder(str(model), device="cpu")
    encoder.model  # noqa: B018
    return encoder, tmp_path / "cache"


def test_an_export_is_used_only_while_the_models_weights_are_unchanged(
    tiny: tuple[TextEncoder, Path],
) -> None:
    encoder, cache = tiny
    name = str(encoder.resolved.path)
    assert export(encoder.model, name, encoder.resolved.path, cache) is not None
    assert OnnxTextEncoder.load(cache, name) is not None
    assert OnnxTextEncoder.load(cache, name + "-other") is None  # one export per model name
    weights = next(encoder.resolved.path.rglob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the model changed
    assert OnnxTextEncoder.load(cache, name) is None


def test_an_export_whose_vectors_differ_from_the_model_is_not_kept(
    tiny: tuple[TextEncoder, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder, cache = tiny
    name = str(encoder.resolved.path)
    monkeypatch.setattr(onnx_query, "MIN_COSINE", 1.5)  # no export can pass this check
    assert export(encoder.model, name, encoder.resolved.path, cache) is None
    assert list((cache / "query-encoders").iterdir()) == []  # no export, no work folder left
    assert OnnxTextEncoder.load(cache, name) is None


def test_a_damaged_export_falls_back_to_the_model_and_is_made_again(
    tiny: tuple[TextEncoder, Path],
) -> None:
    encoder, cache = tiny
    name = str(encoder.resolved.path)
    export(encoder.model, name, encoder.resolved.path, cache)
    (export_folder(cache, name) / "model.onnx").write_bytes(b"not an onnx model")
    space = TextSpace(name, "cpu", query_cache=cache)
    vector = space.encode_query(QueryKind.TEXT, ["the cat sat on the mat"])
    assert np.allclose(vector, encoder.encode(["the cat sat on the mat"]), atol=1e-5)
    # the search loaded the model, so it exported again; a new process can use that
    assert OnnxTextEncoder.load(cache, name) is not None


def test_the_text_space_answers_queries_from_the_export_without_loading_the_model(
    tiny: tuple[TextEncoder, Path],
) -> None:
    encoder, cache = tiny
    name = str(encoder.resolved.path)
    export(encoder.model, name, encoder.resolved.path, cache)
    space = TextSpace(name, "cpu", query_cache=cache)
    texts = ["the cat sat on the mat", "a red car", "blue house tree"]
    vectors = space.encode_query(QueryKind.TEXT, texts)
    assert space._encoder is None  # the model itself was never loaded
    assert space.space.dim == 32
    assert np.sum(vectors * encoder.encode(texts), axis=1).min() > 0.999
    off = TextSpace(name, "cpu", query_cache=None)  # query_encoder = "torch"
    off.encode_query(QueryKind.TEXT, texts)
    assert off._encoder is not None


HEAVY = ("torch", "sentence_transformers", "transformers")
# The console script leaves through os._exit after the exit hooks: list the modules in one.
_SEARCH_AND_LIST_MODULES = f"""
import atexit, json, sys
def heavy():
    found = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
    print(json.dumps(found), file=sys.stderr, flush=True)
atexit.register(heavy)
from mmrag.cli import main
sys.argv = ["mmrag", "search", "how do I reset the router", "--json", "--limit", "3"]
main()
"""


def test_a_new_process_searches_without_torch_and_finds_what_the_model_finds(
    tmp_path: Path,
) -> None:
    write(tmp_path / "lib" / "router.txt", "To reset the TX-4410 router, hold the button.")
    write(tmp_path / "lib" / "bread.md", "Feed the sourdough starter with rye flour.")
    env = {**os.environ, "MMRAG_HOME": str(tmp_path / "home"), "MMRAG_DEVICE": "cpu"}
    env["MMRAG_CACHE_DIR"] = str(tmp_path / "cache")  # empty: this ingest must export
    mmrag = [str(Path(sys.executable).with_name("mmrag"))]
    done = subprocess.run(
        [*mmrag, "ingest", str(tmp_path / "lib"), "--json"], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    assert (export_folder(tmp_path / "cache", MINILM) / "meta.json").is_file()

    light = subprocess.run(
        [sys.executable, "-c", _SEARCH_AND_LIST_MODULES], env=env, capture_output=True, text=True
    )
    assert light.returncode == 0, light.stderr
    assert json.loads(light.stderr.strip().splitlines()[-1]) == []  # no torch was imported
    full = subprocess.run(
        [*mmrag, "search", "how do I reset the router", "--json", "--limit", "3"],
        env={**env, "MMRAG_QUERY_ENCODER": "torch"},
        capture_output=True,
        text=True,
    )
    assert full.returncode == 0, full.stderr
    ours, theirs = json.loads(light.stdout), json.loads(full.stdout)
    assert [h["path"] for h in ours] == [h["path"] for h in theirs]
    assert ours[0]["path"].endswith("router.txt")
    assert [h["score"] for h in ours] == pytest.approx([h["score"] for h in theirs], abs=1e-3)
