"""Text ingest throughput: the whole pipeline against the model alone, on the same chunks.

    python benchmarks/text_ingest.py [--copies 8] [--device auto] [--batch 64]

Builds a library of `copies` distinct copies of data/library (each copy's files get a one-line
header so every file is new content), ingests it into a fresh Milvus Lite store through the real
runner (scan, hash, detect, extract, chunk, embed, write, catalog), then encodes exactly the
chunks that were written with the bare model, and prints chunks/s of both and their ratio.
The model is loaded and warmed up before either is timed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
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
    args = ap.parse_args()

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
