"""CLIP ViT-B/32 and ResNet50 from 720p JPEGs: the whole pipeline against the two models alone.

    python benchmarks/gpu_image_pair.py [--device cuda] [--images 800] [--batch 128]
        [--workers 8] [--read-processes on|off] [--jpeg-decode auto|pillow|torchvision]
        [--photo-thumbnails auto|ingest|shown]

The command prepared for a machine with a GPU (issue 17), where the models are fast enough that
everything else (decoding, thumbnails, batching, Milvus, the catalog) is what is left to see.
Such a machine has no route to the model hub, so both models are random-weight copies of the
same architectures (the same compute; never use them for quality): torchvision's ResNet50 as
the `image` space (its labels embedded by the offline text model, as always) and a
transformers CLIPModel of ViT-B/32's configuration as the `clip` space; give `--clip-model` a
real CLIP folder to use that instead. The library is distinct 1280x720 JPEGs (the scikit-image
sample photos, resized and shifted per copy). The pipeline ingests it into a fresh Milvus Lite
store through the real runner; the model-only side runs both models' forward passes on exactly
the model inputs of those files (the same normalised batches). The two alternate `--repeat`
times; each pipeline run's ratio to the model-only run right after it is printed with the best
of each. Thumbnails follow `photo_thumbnails` (auto: none at ingest on a GPU, where they would
cost the CPU about 0.5 ms a photo; `--photo-thumbnails ingest` measures them).
`--device cpu --images 32 --batch 16 --repeat 1` is the smoke test this machine runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from image_ingest import build_library, ingest_once, warm_forkserver  # this folder: sys.path[0]


def library_720p(dest: Path, count: int) -> None:
    """`count` distinct 1280x720 JPEGs (the benchmark's photos, each cut to 16:9 at 720p)."""
    from PIL import Image

    build_library(dest, count)
    for f in sorted(dest.iterdir()):
        with Image.open(f) as im:
            w, h = im.size
            side = min(w, h * 16 // 9)
            crop = im.crop(((w - side) // 2, 0, (w - side) // 2 + side, side * 9 // 16))
            crop.resize((1280, 720), Image.Resampling.BICUBIC).save(f, quality=90)


def random_clip(folder: Path) -> Path:
    """A CLIPModel of ViT-B/32's configuration (transformers' CLIPConfig defaults: patch 32,
    12 layers of 768 in the vision tower) with random weights, a small byte-level tokenizer and
    CLIP's image processor: what load_clip reads from a local folder."""
    import string

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,!?'-":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer.from_pretrained(str(folder)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size=224).save_pretrained(folder)
    config = CLIPConfig()
    config.text_config.vocab_size = len(vocab)
    CLIPModel(config).save_pretrained(folder)
    return folder


def register_random_resnet50(state_file: Path) -> None:
    """The `image` space on torchvision's ResNet50 with random weights (a state-dict file), as
    the tests' toy spaces come in (mmrag.registry.register)."""
    import torch
    from torchvision import models

    from mmrag.pipelines.image.spaces import ImageSpace
    from mmrag.registry import SPACES, SpaceSpec, register

    torch.save(models.resnet50(weights=None).state_dict(), state_file)

    class RandomResNet50(ImageSpace):
        def _load(self) -> Any:
            from mmrag.pipelines.image.encoders import load_image_encoder

            return load_image_encoder("resnet50", self.requested_device, weights=str(state_file))

    real = SPACES["image"]

    def build(settings: Any, model: str) -> RandomResNet50:
        return RandomResNet50(model, settings.device, settings.label_top_k, settings.label_min_prob)

    register(SpaceSpec(real.name, build, real.writes, real.queries, real.extra))


def main() -> None:
    from mmrag.settings import choices

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--read-processes", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--jpeg-decode", choices=choices("jpeg_decode"), default="auto")
    ap.add_argument(
        "--photo-thumbnails",
        choices=choices("photo_thumbnails"),
        default="auto",
        help="the setting: auto makes none at ingest on a GPU (made when first shown)",
    )
    ap.add_argument("--clip-model", help="a CLIP folder (default: ViT-B/32, random weights)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from mmrag.app import Models
    from mmrag.ingest.workers import reads_in_processes
    from mmrag.pipelines.image.decode import decode_image
    from mmrag.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="mmrag-gpu-pair-"))
    try:
        library_720p(work / "lib", args.images)
        register_random_resnet50(work / "resnet50.pt")
        clip = args.clip_model or str(random_clip(work / "clip-vit-b-32"))
        settings = Settings(
            milvus_uri=str(work / "milvus.db"),
            catalog=work / "catalog.sqlite",
            thumbnails=work / "thumbs",
            profile="offline",  # the text model that embeds the labels: the offline pack
            image_model="resnet50",
            clip_model=clip,
            audio_model="",
            speech_model="",
            device=args.device,
            embed_batch_size=args.batch,
            read_workers=args.workers,
            read_processes=args.read_processes,
            ocr=False,
            jpeg_decode=args.jpeg_decode,
            photo_thumbnails=args.photo_thumbnails,
        )
        processes = reads_in_processes(args.read_processes, args.workers)
        models = Models.build(settings)
        photos, text = models.photos, models.text
        image, clip_space = models.spaces["image"], models.spaces["clip"]
        assert photos is not None
        files = sorted((work / "lib").iterdir())
        side = photos.decode_side()
        pixels = {s.name: [] for s in (image, clip_space)}
        for f in files:
            picture = decode_image(f, short_side=side).image
            for s in (image, clip_space):
                pixels[s.name].append(s.preprocess(picture))
        batches = {
            name: [s.batch(rows[i : i + args.batch]) for i in range(0, len(rows), args.batch)]
            for name, rows, s in ((n, pixels[n], models.spaces[n]) for n in pixels)
        }
        image.encoder.encode_and_label(batches["image"][0])  # loads and warms both models
        clip_space.encoder.encode_tensor(batches["clip"][0])
        text.encode(["warm up"])
        if processes:
            warm_forkserver(photos)

        def model_only() -> float:
            sync = torch.cuda.synchronize if args.device.startswith("cuda") else lambda: None
            sync()
            t0 = time.perf_counter()
            for batch in batches["image"]:
                image.encoder.encode_and_label(batch)
            for batch in batches["clip"]:
                clip_space.encoder.encode_tensor(batch)
            sync()
            return time.perf_counter() - t0

        spaces = [image.space, clip_space.space, text.space]
        pipeline_s, model_s = [], []
        for r in range(args.repeat):  # alternated: a shared machine drifts
            run = ingest_once(
                models, work / "lib", work / f"run{r}", spaces, len(files), read_processes=processes
            )
            pipeline_s.append(run.seconds)
            model_s.append(model_only())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = len(files)
    pairs = [m / p for p, m in zip(pipeline_s, model_s, strict=True)]
    result = {
        "images": n,
        "resolution": "1280x720",
        "models": [
            "resnet50 (random weights)",
            args.clip_model or "CLIP ViT-B/32 (random weights)",
        ],
        "device": image.device,
        "batch": args.batch,
        "workers": args.workers,
        "read_processes": processes,
        "jpeg_decode": f"torchvision on {photos.jpeg_device()}"
        if photos.jpeg_device()
        else "pillow",
        "pipeline_images_per_s": [round(n / s, 1) for s in pipeline_s],
        "model_only_images_per_s": [round(n / s, 1) for s in model_s],
        "ratio_best": round(min(model_s) / min(pipeline_s), 3),
        "ratio_pairs": [round(x, 3) for x in pairs],
        "ratio_pairs_median": round(statistics.median(pairs), 3),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\npipeline {max(result['pipeline_images_per_s'])} images/s, both models alone "
        f"{max(result['model_only_images_per_s'])} images/s, ratio {result['ratio_best']} "
        f"(run by run {result['ratio_pairs']}) ({n} 720p JPEGs, ResNet50 + CLIP ViT-B/32 on "
        f"{image.device}, readers: {args.workers} {'processes' if processes else 'threads'}, "
        f"JPEG decode: {result['jpeg_decode']})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
