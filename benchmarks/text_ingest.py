"""Text ingest throughput: the whole pipeline against the model alone, on the same chunks.

    python benchmarks/text_ingest.py [--copies 8] [--device auto] [--batch 64]
    python benchmarks/text_ingest.py --short 3000 [--repeat 2] [--breakdown]

Builds a library of `copies` distinct copies of data/library (each copy's files get a one-line
header so every file is new content), ingests it into a fresh Milvus Lite store through the real
runner (scan, hash, detect, extract, chunk, embed, write, catalog), then encodes exactly the
chunks that were written with the bare model, and prints chunks/s of both and their ratio.
The model is loaded and warmed up before either is timed.

`--short N` measures the other end: N abstract-like files of a few sentences each
(sample_makers.short_abstracts), where the per-file work (scan, hash, detect, catalog, upserts)
weighs most against the model. Ingest and model-only alternate `--repeat` times (a fresh store
each time); `--breakdown` adds one more ingest with time counters on every stage and prints
where the seconds went (summed over threads, so they overlap: per-file costs, not a timeline).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

from machine import torch_machine as machine  # a sibling; other scripts import it here

REPO = Path(__file__).resolve().parent.parent


def build_library(dest: Path, copies: int) -> int:
    src = REPO / "data" / "library"
    n = 0
    for c in range(copies):
        for f in sorted(src.rglob("*")):
            if not f.is_file() or f.suffix not in {".md", ".txt", ".html", ".pdf"}:
                continue  # the documents only (the library also holds photos and a recording)
            out = dest / f"copy{c:02d}" / f.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            if f.suffix in {".md", ".txt"}:
                out.write_bytes(f"Copy {c}.\n\n".encode() + f.read_bytes())
            else:  # html/pdf: appending keeps them valid and makes the bytes distinct
                data = f.read_bytes()
                out.write_bytes(
                    data
                    + (
                        f"\n<!-- copy {c} -->\n" if f.suffix == ".html" else f"\n%copy {c}\n"
                    ).encode()
                )
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--text-model", help="model id or folder (default: the configured one)")
    ap.add_argument(
        "--null-model",
        action="store_true",
        help="replace the model with random unit vectors: the pipeline's ceiling without a model",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--short", type=int, metavar="N", help="N short abstract-like files instead")
    ap.add_argument("--repeat", type=int, default=2, help="--short: ingest/model-only rounds")
    ap.add_argument(
        "--breakdown", action="store_true", help="--short: one more ingest, timed per stage"
    )
    args = ap.parse_args()
    if args.short:
        return short_main(args)

    from mmrag.app import Models, open_store
    from mmrag.pipelines.text.encoder import TextEncoder
    from mmrag.pipelines.text.pipeline import TextPipeline
    from mmrag.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="mmrag-bench-"))
    try:
        files = build_library(work / "lib", args.copies)
        settings = Settings(
            milvus_uri=str(work / "milvus.db"),
            catalog=work / "catalog.sqlite",
            device=args.device,
            embed_batch_size=args.batch,
            read_workers=args.workers,
            image_model="",  # documents only: every other space off
            clip_model="",
            audio_model="",
            speech_model="",
            **({"text_model": args.text_model} if args.text_model else {}),
        )
        encoder = TextEncoder(settings.text_model, settings.device)
        encoder.encode(["warm up the model"] * args.batch, batch_size=args.batch)
        if args.null_model:  # the registry's text space swapped for one without a model
            _register_null_text(encoder)
            models = Models.build(settings)
        else:
            models = Models.build(settings, text_encoder=encoder)
        text = next(p for p in models.pipelines if isinstance(p, TextPipeline))
        catalog, store = open_store(settings)
        # collection creation is one-off setup, not throughput
        store.ensure_space(models.text.space)
        runner = models.runner(catalog, store)

        t0 = time.perf_counter()
        report = runner.run([str(work / "lib")])
        pipeline_s = time.perf_counter() - t0
        assert not report.failed, report.failed
        chunks = report.segments

        # The very chunks that were written, in a file-by-file order like the runner's.
        texts = [
            p.payload
            for f in sorted((work / "lib").rglob("*"))
            if f.is_file()
            for p in text.prepare(str(f), _fmt(f))
        ]
        assert len(texts) == chunks, (len(texts), chunks)
        model_s = []
        for _ in range(2):  # two runs: the better one, so the model gets every benefit of doubt
            t0 = time.perf_counter()
            for i in range(0, len(texts), args.batch):
                encoder.encode(texts[i : i + args.batch], batch_size=args.batch)
            model_s.append(time.perf_counter() - t0)
        store.close()
        catalog.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best_model = min(model_s)
    result = {
        "files": files,
        "chunks": chunks,
        "chunk_tokens": text.chunk_tokens,
        "batch": args.batch,
        "device": encoder.device,
        "model": settings.text_model,
        "workers": args.workers,
        "pipeline_s": round(pipeline_s, 2),
        "pipeline_chunks_per_s": round(chunks / pipeline_s, 1),
        "model_only_s": [round(s, 2) for s in model_s],
        "model_only_chunks_per_s": round(chunks / best_model, 1),
        "ratio": round(best_model / pipeline_s, 3),
        "null_model": args.null_model,
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    what = "pipeline with a null model (its ceiling)" if args.null_model else "pipeline"
    print(
        f"\n{what} {result['pipeline_chunks_per_s']} chunks/s, model only "
        f"{result['model_only_chunks_per_s']} chunks/s, ratio {result['ratio']} "
        f"({chunks} chunks from {files} files on {encoder.device})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def short_main(args: argparse.Namespace) -> None:
    """Many short files: the ingest against the model alone on the same chunks, in turns."""
    from sample_makers import short_abstracts

    from mmrag.app import Models, open_store
    from mmrag.pipelines.text.encoder import TextEncoder
    from mmrag.pipelines.text.pipeline import TextPipeline

    work = Path(tempfile.mkdtemp(prefix="mmrag-bench-short-"))
    ingest_s: list[float] = []
    model_s: list[float] = []
    cpu: dict[str, list[float]] = {"ingest": [], "model": []}
    breakdown: dict[str, float] = {}
    try:
        lib = work / "lib"
        paths = short_abstracts(lib, args.short)
        t0 = time.perf_counter()
        settings = _settings(args, work / "0")
        encoder = TextEncoder(settings.text_model, settings.device)
        encoder.encode(["warm up the model"] * args.batch, batch_size=args.batch)
        load_s = time.perf_counter() - t0
        if args.null_model:  # the ingest's ceiling: every stage but the model
            _register_null_text(encoder)
        models = Models.build(settings, text_encoder=encoder)
        text = next(p for p in models.pipelines if isinstance(p, TextPipeline))
        texts = [p.payload for f in paths for p in text.prepare(str(f), "txt")]

        def ingest(n: int, timed: bool = False) -> float:
            s = _settings(args, work / str(n))
            catalog, store = open_store(s)
            store.ensure_space(models.text.space)  # one-off setup, not throughput
            built = Models.build(s) if args.null_model else Models.build(s, text_encoder=encoder)
            runner = built.runner(catalog, store)
            counters = _Counters(catalog, store) if timed else None
            try:
                t, c = time.perf_counter(), _cpu_seconds()
                report = runner.run([str(lib)])
                took = time.perf_counter() - t
                if not timed:
                    cpu["ingest"].append(_cpu_seconds() - c)
            finally:
                if counters:
                    breakdown.update(counters.stop(took))
                store.close()
                catalog.close()
                shutil.rmtree(work / str(n), ignore_errors=True)
            assert not report.failed, report.failed[:3]
            assert report.segments == len(texts), (report.segments, len(texts))
            return took

        def model_only() -> float:
            t, c = time.perf_counter(), _cpu_seconds()
            for i in range(0, len(texts), args.batch):
                encoder.encode(texts[i : i + args.batch], batch_size=args.batch)
            cpu["model"].append(_cpu_seconds() - c)
            return time.perf_counter() - t

        for r in range(args.repeat):  # alternating, so neither always runs on a warmer machine
            if r % 2:
                model_s.append(model_only())
                ingest_s.append(ingest(r))
            else:
                ingest_s.append(ingest(r))
                model_s.append(model_only())
        if args.breakdown:
            ingest(args.repeat, timed=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best_i, best_m = min(ingest_s), min(model_s)
    result = {
        "files": len(paths),
        "chunks": len(texts),
        "batch": args.batch,
        "device": encoder.device,
        "model": settings.text_model,
        "workers": args.workers,
        "model_load_s": round(load_s, 2),
        "ingest_s": [round(s, 2) for s in ingest_s],
        "ingest_chunks_per_s": round(len(texts) / best_i, 1),
        "model_only_s": [round(s, 2) for s in model_s],
        "model_only_chunks_per_s": round(len(texts) / best_m, 1),
        "ratio": round(best_m / best_i, 3),
        "ratios_per_round": [round(m / i, 3) for i, m in zip(ingest_s, model_s, strict=True)],
        # CPU seconds (this process and its children: the Milvus Lite server) hardly depend on
        # what else the machine runs, unlike the wall clock on a shared machine
        "ingest_cpu_s": [round(s, 2) for s in cpu["ingest"]],
        "model_only_cpu_s": [round(s, 2) for s in cpu["model"]],
        "cpu_ratio": round(min(cpu["model"]) / min(cpu["ingest"]), 3),
        "breakdown_ms_per_file": {k: round(v * 1000 / len(paths), 3) for k, v in breakdown.items()},
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\nshort documents: ingest {result['ingest_chunks_per_s']} chunks/s, model only "
        f"{result['model_only_chunks_per_s']} chunks/s, ratio {result['ratio']} "
        f"({len(texts)} chunks from {len(paths)} files on {encoder.device}; "
        f"model load {result['model_load_s']} s, not counted); CPU seconds ratio "
        f"{result['cpu_ratio']}"
    )
    if breakdown:
        print("where an ingest's time goes (ms per file, summed over threads):")
        for k, v in sorted(breakdown.items(), key=lambda kv: -kv[1]):
            print(f"  {k:<22} {v * 1000 / len(paths):8.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _cpu_seconds() -> float:
    """User and system CPU seconds of this process and its live children."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:  # a child that ended meanwhile
            continue
        total += t.user + t.system
    return total


def _settings(args: argparse.Namespace, folder: Path):
    from mmrag.settings import Settings

    folder.mkdir(parents=True, exist_ok=True)
    return Settings(
        milvus_uri=str(folder / "milvus.db"),
        catalog=folder / "catalog.sqlite",
        device=args.device,
        embed_batch_size=args.batch,
        read_workers=args.workers,
        image_model="",
        clip_model="",
        audio_model="",
        speech_model="",
        **({"text_model": args.text_model} if args.text_model else {}),
    )


class _Counters:
    """Time counters wrapped around each stage of one ingest (the runner's names for scan,
    hash and detect; the text pipeline's extract and chunk; every catalog call; Milvus writes;
    the snapshot rebuild; the model; the waits on the model gate). Seconds are summed over
    threads. Undone by stop()."""

    def __init__(self, catalog, store) -> None:
        import mmrag.ingest.runner as runner
        import mmrag.pipelines.text.pipeline as text
        import mmrag.pipelines.text.space as space

        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._depths: dict[str, threading.local] = {}  # a catalog call inside another: once
        self._undo: list[tuple[object, str, object]] = []
        self._wrap(runner, "scan", "scan", generator=True)
        self._wrap(runner, "content_hash", "hash")
        self._wrap(runner, "detect_kind", "detect")
        self._wrap(text, "extract_text", "extract")
        self._wrap(text, "chunk_blocks", "chunk")
        self._wrap(space.TextSpace, "encode", "model")
        self._wrap(runner._Gate, "wait_open", "wait for model gate")
        self._wrap(runner.IngestRunner, "_decide", "reader: whole _decide")
        self._wrap(runner.IngestRunner, "_store_jobs", "writer: _store_jobs")
        for name in dir(type(catalog)):
            if not name.startswith("_") and callable(getattr(type(catalog), name)):
                self._wrap(type(catalog), name, "catalog", inner_of="catalog")
        self._wrap(type(store), "upsert", "milvus upsert")
        self._wrap(type(store), "flush", "milvus flush")
        self._wrap(type(store), "refresh_snapshots", "snapshot rebuild")

    def _wrap(
        self, owner, attr: str, label: str, generator: bool = False, inner_of: str = ""
    ) -> None:
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr)
        if original is None or isinstance(original, (property, staticmethod, classmethod)):
            return
        depth = self._depths.setdefault(inner_of or f"{label}.{attr}", threading.local())
        add = self._add

        def timed(*a, **k):
            outer = inner_of and getattr(depth, "n", 0) == 0
            depth.n = getattr(depth, "n", 0) + 1
            t = time.perf_counter()
            try:
                return list(original(*a, **k)) if generator else original(*a, **k)
            finally:
                depth.n -= 1
                if outer or not inner_of:
                    add(label, time.perf_counter() - t)

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def _add(self, label: str, s: float) -> None:
        with self._lock:
            self.seconds[label] = self.seconds.get(label, 0.0) + s
            self.calls[label] = self.calls.get(label, 0) + 1

    def stop(self, wall: float) -> dict[str, float]:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        return {"ingest wall": wall, **self.seconds}


def _register_null_text(encoder) -> None:
    """Replace the `text` space in the registry by one whose model is random unit vectors:
    everything real but the model (chunking still uses the real tokenizer), which shows what
    the rest of the pipeline can sustain."""
    import dataclasses

    import numpy as np

    from mmrag.pipelines.base import Encoded
    from mmrag.pipelines.text.space import TextSpace
    from mmrag.registry import SPACES, register

    class NullModel(TextSpace):
        def encode(self, payloads: list) -> Encoded:
            v = np.random.default_rng(0).random((len(payloads), self.encoder.dim), np.float32)
            return Encoded(v / np.linalg.norm(v, axis=1, keepdims=True))

    def build(settings, model: str) -> NullModel:
        return NullModel(model, settings.device, settings.embed_batch_size, encoder)

    register(dataclasses.replace(SPACES["text"], build=build))


def _fmt(path: Path) -> str:
    from mmrag.ingest.detect import detect_kind

    return detect_kind(path).format


if __name__ == "__main__":
    main()
