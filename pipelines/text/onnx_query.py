"""A light query encoder: the text model exported once to ONNX and run by ONNX Runtime.

A text search in a new process should not wait for torch and sentence-transformers to import
(about 9 s on 2 cores) to encode a few words. The first process that loads the full model
exports it (transformer, pooling and any dense layers: the whole sentence-embedding forward) with
its tokenizer into the cache, and keeps the export only if its vectors match the model's
(cosine > MIN_COSINE on probe sentences, long ones truncated included). Later processes encode
queries with `onnxruntime` and `tokenizers` alone. Nothing here imports torch unless exporting.

An export that fails is remembered (`ExportFailure`, a small JSON file per model beside the
exports, naming the model and the error), so every later ingest does not load the model and try
again; it is tried again once the model's weights, mmrag or the exporting packages change.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.pipelines.base import unit

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the files or meta.json change: older exports are then made again
MIN_COSINE = 0.999
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a tokenizer may feed
PROBES = [
    "a cat",
    "How do I reset the router?",
    "Ünïcødé façade, 東京 and 🐱 emoji",
    "",
    "TX-4410 invoice, due 2024-03-01; total EUR 1,234.56",
    "The quick brown Fox jumps over the lazy dog. " * 80,  # longer than any max length: truncated
]


def export_folder(cache: Path, model_name: str) -> Path:
    """Where the export of `model_name` lives: one folder per configured name."""
    slug = re.sub(r"[^0-9A-Za-z._-]+", "_", model_name)[-60:]
    digest = hashlib.sha1(model_name.encode()).hexdigest()[:10]
    return cache / "query-encoders" / f"{slug}-{digest}"


def failure_file(cache: Path, model_name: str) -> Path:
    """Where a failed export of `model_name` is remembered: beside the exports' folder, so the
    folder holds nothing but exports (and their work folders while they are made)."""
    folder = export_folder(cache, model_name)
    return folder.parent.with_name(f"{folder.parent.name}.failed") / f"{folder.name}.json"


@functools.cache
def _toolchain() -> dict[str, str]:
    """The versions an export depends on besides the model: a new one may export it. Read
    once a process (the packages a process runs cannot change under it)."""
    from importlib import metadata

    found = {}
    for name in ("mmrag", "torch", "onnx", "onnxruntime", "sentence-transformers"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = ""
    return found


def _same_model(model: str, source_path: str, weights: dict, model_name: str) -> bool:
    """Whether a record made for (`model`, its weights at `source_path`) still holds for the
    configured `model_name` (checked without loading the model)."""
    path = Path(source_path)
    return model == model_name and path.is_dir() and _weights_stamp(path) == weights


def _weights_stamp(model_path: Path) -> dict[str, list[int]]:
    """Size and mtime of the model's weight files: an export is stale once they change."""
    found: dict[str, list[int]] = {}
    for pattern in _WEIGHTS:
        for f in sorted(model_path.rglob(pattern)):
            st = f.stat()
            found[str(f.relative_to(model_path))] = [st.st_size, st.st_mtime_ns]
    return found


@dataclass(frozen=True)
class ExportMeta:
    model: str  # the configured name
    source_path: str  # the folder the export was made from
    weights: dict[str, list[int]]
    inputs: list[str]
    dim: int
    max_tokens: int
    min_cosine: float
    format: int = FORMAT

    def current(self, model_name: str) -> bool:
        """Made by this format from the model's present weights (checked without loading)."""
        if self.format != FORMAT:
            return False
        return _same_model(self.model, self.source_path, self.weights, model_name)


def read_meta(folder: Path) -> ExportMeta | None:
    try:
        return ExportMeta(**json.loads((folder / "meta.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


class ExportFailed(Exception):
    """The model cannot be exported for queries here (the reason is remembered)."""


@dataclass(frozen=True)
class ExportFailure:
    """A failed export of a model, remembered so it is not tried on every ingest."""

    model: str  # the configured name
    source_path: str
    weights: dict[str, list[int]]
    toolchain: dict[str, str]
    error: str
    format: int = FORMAT

    def current(self, model_name: str) -> bool:
        """Made for this model's present weights by this mmrag and these exporting packages:
        trying again would fail the same way."""
        if self.format != FORMAT or self.toolchain != _toolchain():
            return False
        return _same_model(self.model, self.source_path, self.weights, model_name)


def export_failure(cache: Path, model_name: str) -> ExportFailure | None:
    """The remembered failure to export `model_name`, while it still holds; else None."""
    try:
        failure = ExportFailure(**json.loads(failure_file(cache, model_name).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return failure if failure.current(model_name) else None


def _remember_failure(cache: Path, model_name: str, source_path: Path, error: str) -> None:
    """Write the failure in one step (a concurrent reader never sees half a file)."""
    path = failure_file(cache, model_name)
    failure = ExportFailure(
        model_name, str(source_path), _weights_stamp(source_path), _toolchain(), error[:1000]
    )
    with contextlib.suppress(OSError):  # only an optimisation: the next ingest tries again
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(failure.__dict__, indent=1))
        os.replace(tmp, path)


class OnnxTextEncoder:
    """Unit query vectors from the exported model; same rows as TextEncoder.encode."""

    def __init__(self, folder: Path, meta: ExportMeta, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = folder
        self.meta = meta
        self.dim = meta.dim
        self.max_tokens = meta.max_tokens
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(meta.max_tokens)
        self.tokenizer.no_padding()  # one text per run: padding would only cost time
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def load(cls, cache: Path, model_name: str) -> OnnxTextEncoder | None:
        """The export of `model_name`, or None when there is none yet, it is stale, or
        ONNX Runtime is not installed (the caller then loads the model itself)."""
        folder = export_folder(cache, model_name)
        meta = read_meta(folder)
        if meta is None or not meta.current(model_name):
            return None
        try:
            return cls(folder, meta)
        except ImportError as exc:
            log.info("query encoder: %s not installed; using the full model", exc.name)
        except Exception as exc:  # a damaged export: forgotten, so the next full load redoes it
            log.warning("query encoder export %s unusable (%s); using the full model", folder, exc)
            (folder / "meta.json").unlink(missing_ok=True)
        return None

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = []
        for text in texts:  # one at a time: no padding, so nothing depends on the pad token
            enc = self.tokenizer.encode(text)
            feeds = {
                "input_ids": enc.ids,
                "attention_mask": enc.attention_mask,
                "token_type_ids": enc.type_ids,
            }
            inputs = {k: np.array([feeds[k]], dtype=np.int64) for k in self.meta.inputs}
            rows.append(self.session.run(None, inputs)[0][0])
        return unit(np.asarray(rows, dtype=np.float32))


def export(model: Any, model_name: str, source_path: Path, cache: Path) -> ExportMeta | None:
    """Export a loaded SentenceTransformer for queries; None (and nothing kept) when it cannot
    be exported here or its vectors differ from the model's, which is remembered so the next
    ingest does not try again (`export_failure`). Safe against a concurrent export: each writes
    a folder of its own and renames it into place."""
    if failed := export_failure(cache, model_name):
        log.info("query encoder for %s not exported (tried before): %s", model_name, failed.error)
        return None
    folder = export_folder(cache, model_name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    started = time.perf_counter()
    try:
        meta = _export_into(model, model_name, source_path, work)
        encoder = OnnxTextEncoder(work, meta, threads=1)
        ours = encoder.encode(PROBES)
        theirs = unit(model.encode(PROBES, convert_to_numpy=True, show_progress_bar=False))
        cosine = float(np.min(np.sum(ours * theirs, axis=1)))
        if not cosine > MIN_COSINE:
            raise ExportFailed(f"ONNX vectors differ (cosine {cosine:.5f} <= {MIN_COSINE})")
        meta = ExportMeta(**{**meta.__dict__, "min_cosine": round(cosine, 6)})
        (work / "meta.json").write_text(json.dumps(meta.__dict__, indent=1))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        failure_file(cache, model_name).unlink(missing_ok=True)
        try:
            os.replace(work, folder)
        except OSError:
            return read_meta(folder)  # another process put its export there first
        log.info(
            "query encoder for %s exported in %.1f s (cosine %.5f)",
            model_name, time.perf_counter() - started, cosine,
        )  # fmt: skip
        return meta
    except Exception as exc:  # export is an optimisation: the full model still works
        log.warning("query encoder for %s not exported: %s", model_name, exc)
        if not isinstance(exc, OSError | MemoryError):  # those may pass: try again next time
            _remember_failure(cache, model_name, source_path, f"{type(exc).__name__}: {exc}")
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_into(model: Any, model_name: str, source_path: Path, work: Path) -> ExportMeta:
    import copy

    import torch

    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportFailed("no fast tokenizer to export")
    backend.save(str(work / "tokenizer.json"))
    names = [n for n in model.tokenizer.model_input_names if n in _INPUTS]
    if "input_ids" not in names or "attention_mask" not in names:
        raise ExportFailed(f"the tokenizer feeds {names}, not input_ids and attention_mask")
    sample = model.tokenizer(
        ["a query", "another, longer query"], padding=True, return_tensors="pt"
    )
    args = tuple(sample[n] for n in names)
    # exported on the CPU in float32; a model in use on a GPU (in half) is left as it is
    net = model if model.device.type == "cpu" else copy.deepcopy(model).float().cpu()

    class Forward(torch.nn.Module):
        """The sentence-embedding forward as positional tensors (what ONNX export takes)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = net

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    # The tracer warns about branches it fixes; the probe check below is what decides.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Forward().eval(),
            args,
            str(work / "model.onnx"),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return ExportMeta(
        model=model_name,
        source_path=str(source_path),
        weights=_weights_stamp(source_path),
        inputs=names,
        dim=int(dim()),
        max_tokens=int(model.max_seq_length),
        min_cosine=0.0,
    )
