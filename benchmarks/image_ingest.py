"""Image ingest throughput: the whole pipeline against the model alone, on the same images.

    python benchmarks/image_ingest.py [--images 960] [--model efficientnet-lite0] [--repeat 3]

Builds a library of distinct JPEGs from scikit-image's sample photos (each photo resized,
cropped and shifted in brightness a different way per copy), ingests it into a fresh Milvus Lite
store through the real runner (scan, hash, detect, decode, thumbnail, resize, normalise, embed +
labels, write, catalog), then runs the bare model (features + labels, one forward pass) on
exactly the model inputs of those files (the same normalised batches), and prints images/s of
both and their ratio. The model is loaded and warmed up before either is timed; the two sides run
alternately `--repeat` times (a shared machine is noisy) and the best of each is kept, with
each pipeline run's ratio to the model-only run right after it. A run has fixed costs (the first
batch decoded before the model can start, a last partial batch, the final Milvus flush), so the
default library (960) is large enough for the per-image rate a real library sees; `--images 240`
shows them. OCR is
off unless --ocr: it is a per-image CPU cost of its own (Tesseract), reported separately.
`--jpeg-decode torchvision` makes the pipeline hand JPEG bytes to the model's batch, decoded
there by torchvision (nvJPEG on CUDA, the default there: `auto`); the model-only side is
unchanged, so on a GPU the ratio shows what moving decoding off the CPU buys.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def build_library(dest: Path, count: int, megapixels: float = 0.0) -> int:
    import numpy as np
    from PIL import Image, ImageEnhance
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field", "coins"]
    names += ["moon", "page", "text", "clock", "horse", "immunohistochemistry", "motorcycle_left"]
    photos = []
    for n in names:
        try:
            arr = getattr(data, n)()
        except Exception:  # a sample that needs a download (pooch) is not available offline
            continue
        photos.append(
            Image.fromarray(arr if arr.dtype == np.uint8 else (arr * 255).astype("uint8"))
        )
    rng = np.random.default_rng(0)
    dest.mkdir(parents=True)
    for i in range(count):
        img = photos[i % len(photos)].convert("RGB")
        w, h = img.size
        scale = rng.uniform(0.8, 2.0)  # some larger than the source, as camera photos are
        if megapixels:  # camera-sized: about this many pixels, whatever the source's size
            scale *= (megapixels * 1e6 / (w * h)) ** 0.5 / 1.4
        img = img.resize((int(w * scale), int(h * scale)))
        dx, dy = (int(v) for v in rng.integers(0, 30, 2))
        img = img.crop((dx, dy, img.width - dx, img.height - dy))
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
        img.save(dest / f"photo_{i:04d}.jpg", quality=90)
    return count


def _pixels(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.width * im.height


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=960)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ocr", action="store_true")
    ap.add_argument(
        "--megapixels", type=float, default=0.0, help="photos of about this size (e.g. 12)"
    )
    ap.add_argument(
        "--jpeg-decode",
        choices=["auto", "pillow", "torchvision"],
        default="auto",
        help="auto: nvJPEG on the GPU when the model runs there (the pipeline's default)",
    )
    ap.add_argument("--text-model", help="the model that embeds the labels (default: configured)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side (best kept)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from text_ingest import machine  # this folder is on sys.path when run as a script

    from mmrag.app import Models, open_store
    from mmrag.ingest.detect import detect_kind
    from mmrag.pipelines.base import LabelSet
    from mmrag.pipelines.image.decode import decode_image
    from mmrag.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="mmrag-imgbench-"))
    try:
        n = build_library(work / "lib", args.images, args.megapixels)
        settings = Settings(
            milvus_uri=str(work / "milvus.db"),
            catalog=work / "catalog.sqlite",
            thumbnails=work / "thumbs",
            image_model=args.model,
            clip_model="",  # no CLIP weights offline; see docs/benchmarks.md
            audio_model="",  # photos only: the sound and speech models are off
            speech_model="",
            device=args.device,
            embed_batch_size=args.batch,
            read_workers=args.workers,
            ocr=args.ocr,
            jpeg_decode=args.jpeg_decode,
            **({"text_model": args.text_model} if args.text_model else {}),
        )
        models = Models.build(settings)
        photos, text, image = models.photos, models.text, models.spaces["image"]
        assert photos is not None
        enc = image.encoder
        warm = enc.preprocess([decode_image(next((work / "lib").iterdir())).image] * args.batch)
        enc.encode_and_label(warm)
        text.encode(["warm up"])
        files = sorted((work / "lib").iterdir())
        mpx = sum(_pixels(f) for f in files) / len(files) / 1e6
        t0 = time.perf_counter()
        pixels = [
            image.preprocess(decode_image(f, short_side=photos.decode_side()).image)
            for f in files
            if detect_kind(f).media == "image"
        ]
        batches = [image.batch(pixels[i : i + args.batch]) for i in range(0, n, args.batch)]
        decode_s = time.perf_counter() - t0

        def pipeline_run(r: int) -> float:
            """A whole ingest into a fresh store, catalog and thumbnail folder."""
            run_dir = work / f"run{r}"
            run_dir.mkdir()
            shutil.rmtree(settings.thumbnails, ignore_errors=True)  # the pipeline's cache
            catalog, store = open_store(
                settings.model_copy(
                    update={
                        "milvus_uri": str(run_dir / "milvus.db"),
                        "catalog": run_dir / "catalog.sqlite",
                    }
                )
            )
            store.ensure_space(image.space)
            store.ensure_space(text.space)
            runner = models.runner(catalog, store)
            t0 = time.perf_counter()
            report = runner.run([str(work / "lib")])
            seconds = time.perf_counter() - t0
            store.close()
            catalog.close()
            assert not report.failed and report.new == n, (report.failed, report.new)
            return seconds

        def model_run() -> tuple[float, list]:
            labels: list = []
            t0 = time.perf_counter()
            for batch in batches:
                labels += enc.encode_and_label(batch)[1]
            return time.perf_counter() - t0, labels

        # Alternate, so both sides see the same share of a noisy shared machine; best of each.
        pipeline_times, model_s = [], []
        for r in range(args.repeat):
            pipeline_times.append(pipeline_run(r))
            seconds, labels = model_run()
            model_s.append(seconds)
        pipeline_s = min(pipeline_times)
        # The other model work of the pipeline: the text model embeds the labels (each distinct
        # label once, as a run does; a fresh pipeline has none embedded yet).
        label_sets = [LabelSet(tuple(found)) for found in labels if found]
        distinct_labels = len({name for s in label_sets for name, _ in s.labels})
        fresh = Models.build(settings, text_encoder=text.encoder).text  # no label embedded yet
        t0 = time.perf_counter()
        fresh.encode(label_sets)
        labels_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = min(model_s)
    jpeg_on = photos.jpeg_device()
    result = {
        "images": n,
        "megapixels_mean": round(mpx, 2),
        "model": args.model,
        "device": enc.device,
        "batch": args.batch,
        "workers": args.workers,
        "ocr": args.ocr,
        "jpeg_decode": f"torchvision on {jpeg_on}" if jpeg_on else "pillow",
        "pipeline_s": [round(t, 2) for t in pipeline_times],
        "pipeline_images_per_s": round(n / pipeline_s, 1),
        "model_only_s": [round(s, 2) for s in model_s],
        "model_only_images_per_s": round(n / best, 1),
        "decode_preprocess_single_thread_images_per_s": round(n / decode_s, 1),
        "ratio": round(best / pipeline_s, 3),
        "ratio_median": round(
            sorted(model_s)[len(model_s) // 2] / sorted(pipeline_times)[len(model_s) // 2], 3
        ),
        # Each pipeline run against the model-only run right after it (the same minute of a
        # drifting VM): the median of those is the steadiest of the three
        "ratio_pairs": [round(m / p, 3) for p, m in zip(pipeline_times, model_s, strict=True)],
        "ratio_pairs_median": round(
            statistics.median(m / p for p, m in zip(pipeline_times, model_s, strict=True)), 3
        ),
        "distinct_labels": distinct_labels,
        "label_text_embedding_s": round(labels_s, 2),
        "ratio_all_model_work": round((best + labels_s) / pipeline_s, 3),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\npipeline {result['pipeline_images_per_s']} images/s, model only "
        f"{result['model_only_images_per_s']} images/s, ratio {result['ratio']} "
        f"(run by run {result['ratio_pairs']}, median {result['ratio_pairs_median']}) "
        f"({n} images, {args.model} on {enc.device}, JPEG decode: {result['jpeg_decode']}); "
        f"counting the label embedding as model "
        f"work too: ratio {result['ratio_all_model_work']}; decode+preprocess alone, one thread: "
        f"{result['decode_preprocess_single_thread_images_per_s']} images/s"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
