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

`--null-model` (issue 17) measures everything but the model: the `image` space's forward pass
is replaced by a no-op of the same contract (register_null_image), and the same library is
ingested with 1, 2 and all cores' readers, as threads and as processes (`--read-processes
both|on|off`: ingest/workers.py), alternately, each `--repeat` times, printing images/s and CPU
ms per image (this process, its reader processes and the Lite server), and the pipeline's steps
timed alone on the same files (decode, resize, thumbnail, hash, batch), so what lies outside
decoding and the model shows: decode + resize are timed again on a sample before each round,
and each run is measured against its own round's. OCR is off and JPEGs decode with Pillow there
(--workers, --ocr, --jpeg-decode and --text-model are not used); `--torch-threads` sets torch's
intra-op threads. Without --null-model, `--read-processes on|off` sets the pipeline's readers.

`--null-model --parts` splits that CPU by part instead: one reader thread, each step's thread
CPU time (time.thread_time around the runner's and pipeline's own functions: plan, decode,
cut, thumbnail, batch, writer, settle) and the Lite server's CPU while writing and while
settling (flush + snapshot), per image, each of `--repeat` runs. Its last row is the process's
CPU as a GPU host spends it: without the batch's normalisation (the device does it there), with
what the CPU does instead (stacking the uint8 pictures, timed alone). `--photo-thumbnails
shown` is what `auto` does there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def photo_settings(work: Path, args: argparse.Namespace, **more: Any) -> Any:
    """A store in `work` with the image space alone on (no CLIP weights offline, the sound
    and speech models off), as both measurements run it."""
    from mmrag.settings import Settings

    server = getattr(args, "milvus_uri", None)
    return Settings(
        milvus_uri=server or str(work / "milvus.db"),
        collection_prefix=f"imgbench_{os.getpid()}" if server else "mmrag",
        photo_thumbnails=getattr(args, "photo_thumbnails", "auto"),
        catalog=work / "catalog.sqlite",
        thumbnails=work / "thumbs",
        image_model=args.model,
        clip_model="",
        audio_model="",
        speech_model="",
        device=args.device,
        embed_batch_size=args.batch,
        **more,
    )


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


@dataclass
class IngestRun:
    """One whole ingest: its wall time and the CPU seconds it took, of this process (every
    thread, and children it waited for) and of the Milvus Lite server (None: not found)."""

    seconds: float
    cpu_s: float
    server_cpu_s: float | None
    main_cpu_s: float = 0.0  # this process alone (its threads: what one GIL serialises)


def run_store(settings: Any, run_dir: Path) -> dict[str, Any]:
    """Settings for one run's fresh store: a Lite file in run_dir, or (--milvus-uri) the
    server's collections of this process's prefix, dropped after each run (`drop_run_store`)."""
    if settings.milvus_uri.startswith(("http://", "https://")):
        return {"catalog": run_dir / "catalog.sqlite"}
    return {"milvus_uri": str(run_dir / "milvus.db"), "catalog": run_dir / "catalog.sqlite"}


def drop_run_store(store: Any) -> None:
    """A server run's collections dropped (a Lite run's file goes with its folder)."""
    if store.backend == "server":
        for name in store.existing_collections():
            store.drop(name)


def ingest_once(
    models: Any, root: Path, run_dir: Path, spaces: list, expected: int, **options: Any
) -> IngestRun:
    """A whole ingest of `root` into a fresh store, catalog and thumbnail folder (`options`
    override the runner's sizes, e.g. read_workers); every file must come in new."""
    from mmrag.app import open_store
    from mmrag.store import lite_host

    run_dir.mkdir()
    settings = models.settings
    shutil.rmtree(settings.thumbnails, ignore_errors=True)  # the pipeline's cache
    here = settings.model_copy(update=run_store(settings, run_dir))
    catalog, store = open_store(here)
    for space in spaces:
        store.ensure_space(space)
    runner = models.runner(catalog, store, **options)
    server = lite_host.server_info(Path(here.milvus_uri))
    pid = server["pid"] if server else None
    main0 = _main_cpu_s()
    server0, cpu0, t0 = _tree_cpu_s(pid), _own_cpu_s(pid), time.perf_counter()
    report = runner.run([str(root)])
    seconds, cpu1, server1 = time.perf_counter() - t0, _own_cpu_s(pid), _tree_cpu_s(pid)
    main1 = _main_cpu_s()
    drop_run_store(store)
    store.close()
    catalog.close()
    assert not report.failed and report.new == expected, (report.failed, report.new)
    served = server1 - server0 if server0 is not None and server1 is not None else None
    return IngestRun(seconds, cpu1 - cpu0, served, main1 - main0)


def _main_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _own_cpu_s(server: int | None = None) -> float:
    """User + system seconds of this process, of its waited-for children, and of its live
    descendants and what they waited for (the reader processes fork from a forkserver, which
    reaps them), less the Lite server's tree (`server`, counted on its own)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    stats = _proc_stats()
    skip = _tree(stats, server) if server in stats else set()
    return total + sum(stats[p][2] for p in _tree(stats, os.getpid()) - skip - {os.getpid()})


def _proc_stats() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent, own cpu seconds, own + waited-for children's cpu seconds), from /proc."""
    stats: dict[int, tuple[int, float, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the name: state ppid ... utime(12th) stime(13th) cutime(14th) cstime(15th)
        own = (int(fields[11]) + int(fields[12])) / tick
        waited = (int(fields[13]) + int(fields[14])) / tick
        stats[int(entry.name)] = (int(fields[1]), own, own + waited)
    return stats


def _tree(stats: dict[int, tuple[int, float, float]], pid: int) -> set[int]:
    tree, grew = {pid}, True
    while grew:
        more = {p for p, row in stats.items() if row[0] in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def _tree_cpu_s(pid: int | None) -> float | None:
    """User + system seconds of a process and its live descendants, from /proc (None where
    there is no such process or no /proc): the Lite server runs detached, so getrusage of
    this process never sees it."""
    if pid is None:
        return None
    stats = _proc_stats()
    if pid not in stats:
        return None
    return sum(stats[p][1] for p in _tree(stats, pid))


def register_null_image() -> None:
    """Put a no-op model in the `image` space's registry entry, as the tests' toy spaces come
    in (mmrag.registry.register), so mmrag.app builds everything else as it always does."""
    import numpy as np

    from mmrag.pipelines.base import Encoded, unit
    from mmrag.pipelines.image.spaces import ImageSpace
    from mmrag.registry import SPACES, SpaceSpec, register

    class NullImageSpace(ImageSpace):
        """The image space with its forward pass replaced by a no-op of the same contract:
        the real model is loaded (its pixel steps and dimension), payloads are batched as
        always (stacked and normalised), and unit vectors of its dimension come back with no
        labels, so the text model never runs."""

        _bank: np.ndarray | None = None

        def encode(self, payloads: list[Any]) -> Encoded:
            self.batch(payloads)
            if self._bank is None or len(self._bank) < len(payloads):
                rows = np.random.default_rng(0).standard_normal((len(payloads), self.space.dim))
                self._bank = unit(rows)
            return Encoded(self._bank[: len(payloads)])

    real = SPACES["image"]

    def build(settings: Any, model: str) -> NullImageSpace:
        return NullImageSpace(model, settings.device, settings.label_top_k, settings.label_min_prob)

    register(SpaceSpec(real.name, build, real.writes, real.queries, real.extra))


def _cpu_ms(step: Callable[[], Any]) -> tuple[Any, float]:
    """What `step` returns, and the process CPU milliseconds it took."""
    t0 = time.process_time()
    out = step()
    return out, (time.process_time() - t0) * 1000


def step_costs(photos: Any, image: Any, files: list[Path], batch: int) -> dict[str, float]:
    """CPU ms per image of the pipeline's own steps run alone, one file at a time, on the same
    files: decode (to the models' side), resize + crop, thumbnail, content hash, and the batch
    (stack + normalise, on the model's thread)."""
    from mmrag.ingest.scan import content_hash
    from mmrag.pipelines.image.decode import decode_image, thumbnail

    limit = photos.config.max_image_mpx * 1_000_000
    side = photos.decode_side()
    ms = dict.fromkeys(("decode", "resize", "thumbnail", "hash", "batch"), 0.0)
    pixels = []
    for f in files:
        img, t = _cpu_ms(lambda f=f: decode_image(f, max_pixels=limit, short_side=side))
        ms["decode"] += t
        px, t = _cpu_ms(lambda img=img: image.preprocess(img.image))
        ms["resize"] += t
        pixels.append(px)
        ms["thumbnail"] += _cpu_ms(lambda img=img: thumbnail(img))[1]
        ms["hash"] += _cpu_ms(lambda f=f: content_hash(str(f)))[1]
    for i in range(0, len(pixels), batch):
        ms["batch"] += _cpu_ms(lambda i=i: image.batch(pixels[i : i + batch]))[1]
    return {k: round(v / len(files), 3) for k, v in ms.items()}


def _mode_key(workers: int, processes: bool) -> str:
    return f"{workers} {'processes' if processes else 'threads'}"


def warm_forkserver(photos: Any) -> None:
    """Start the reader processes' forkserver (it imports torch once per process), as a
    model is loaded before it is timed."""
    from mmrag.ingest.workers import ReadProcesses

    ReadProcesses(1, preload=photos.reader_modules).close()


def _joined(values: list) -> str:
    return ", ".join(str(v) for v in values)


def null_model_main(args: argparse.Namespace) -> None:
    """--null-model: the whole ingest path with no model time, for 1, 2 and all cores."""
    from machine import torch_machine  # this folder is on sys.path when run as a script

    from mmrag.app import Models
    from mmrag.pipelines.image.decode import decode_image

    register_null_image()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    cores = os.cpu_count() or 1
    worker_counts = sorted({1, min(2, cores), cores})
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mmrag-imgbench-null-"))
    try:
        n = build_library(work / "lib", args.images, args.megapixels)
        settings = photo_settings(
            work,
            args,
            ocr=False,  # Tesseract is a cost of its own (--ocr without --null-model)
            jpeg_decode="pillow",  # decoding on the CPU, where this measures it
        )
        models = Models.build(settings)
        photos, image = models.photos, models.spaces["image"]
        assert photos is not None
        files = sorted((work / "lib").iterdir())
        mpx = sum(_pixels(f) for f in files) / len(files) / 1e6
        image.encode([image.preprocess(decode_image(files[0]).image)] * 2)  # loads the model
        steps = step_costs(photos, image, files, args.batch)
        modes = {"both": [False, True], "on": [True], "off": [False]}[args.read_processes]
        if True in modes:  # the forkserver's one start (imports torch): once per process
            t0 = time.perf_counter()
            warm_forkserver(photos)
            forkserver_s = round(time.perf_counter() - t0, 2)
        runs: dict[str, list[IngestRun]] = {
            _mode_key(w, p): [] for w in worker_counts for p in modes
        }
        # decode + resize alone, again before each round (the load of a shared machine drifts),
        # on a sample of the files: what each round's runs are measured against
        sample = files[:: max(1, len(files) // 96)]
        rounds: list[float] = []
        for r in range(args.repeat):  # alternated, so each sees the same share of the noise
            alone = step_costs(photos, image, sample, args.batch)
            rounds.append(alone["decode"] + alone["resize"])
            for w in worker_counts:
                for p in modes:
                    run_dir = work / f"run{r}-w{w}-p{int(p)}"
                    runs[_mode_key(w, p)].append(
                        ingest_once(
                            models,
                            work / "lib",
                            run_dir,
                            [image.space],
                            n,
                            read_workers=w,
                            read_processes=p,
                        )
                    )
                    shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    decode_resize = steps["decode"] + steps["resize"]
    per_round = [round(x, 2) for x in rounds]
    per_workers = {}
    for key, done in runs.items():
        w = int(key.split()[0])
        rates = [n / run.seconds for run in done]
        cpu = [run.cpu_s * 1000 / n for run in done]
        server = [run.server_cpu_s * 1000 / n for run in done if run.server_cpu_s is not None]
        total = [c + s for c, s in zip(cpu, server, strict=False)] if server else cpu
        outside = [t - d for t, d in zip(total, rounds, strict=True)]
        per_workers[key] = {
            "wall_s": [round(run.seconds, 2) for run in done],
            "images_per_s": [round(x, 1) for x in rates],
            "images_per_s_best": round(max(rates), 1),
            "images_per_s_per_worker": round(max(rates) / w, 1),
            "cpu_ms_per_image": [round(x, 2) for x in total],
            "process_cpu_ms_per_image": [round(x, 2) for x in cpu],
            "main_process_cpu_ms_per_image": [round(r.main_cpu_s * 1000 / n, 2) for r in done],
            "lite_server_cpu_ms_per_image": [round(x, 2) for x in server],
            "outside_decode_resize_ms_per_image": round(statistics.median(outside), 2),
            "outside_decode_resize_ms_per_image_runs": [round(x, 2) for x in outside],
        }
    result = {
        "null_model": True,
        "images": n,
        "megapixels_mean": round(mpx, 2),
        "model": args.model,
        "device": image.device,
        "batch": args.batch,
        "repeat": args.repeat,
        "steps_alone_cpu_ms_per_image": steps,
        "decode_resize_cpu_ms_per_image": round(decode_resize, 3),
        "decode_resize_cpu_ms_per_image_rounds": [round(x, 3) for x in rounds],
        "workers": per_workers,
        "forkserver_start_s": forkserver_s if True in modes else None,
        "load_average_before_after": [
            [round(x, 2) for x in load_before],
            [round(x, 2) for x in os.getloadavg()],
        ],
        "machine": torch_machine(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{n} images ({mpx:.2f} MP), {args.model} replaced by a no-op; decode + resize alone: "
        f"{decode_resize:.2f} CPU ms/image (before each round: {_joined(per_round)})"
    )
    print(
        "| readers | images/s, best (runs) | per reader | CPU ms/image (runs) | of it Lite server "
        "| outside decode+resize, median (runs) | main process alone |\n"
        "|---|---|---|---|---|---|---|"
    )
    for w, row in per_workers.items():
        cells = [
            w,
            f"{row['images_per_s_best']} ({_joined(row['images_per_s'])})",
            row["images_per_s_per_worker"],
            _joined(row["cpu_ms_per_image"]),
            _joined(row["lite_server_cpu_ms_per_image"]) or "n/a",
            f"{row['outside_decode_resize_ms_per_image']} ms "
            f"({_joined(row['outside_decode_resize_ms_per_image_runs'])})",
            _joined(row["main_process_cpu_ms_per_image"]),
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _timed(owner: Any, name: str, label: str, spent: dict[str, float]) -> None:
    """Wrap `owner.name` so each call adds its thread's CPU seconds to `spent[label]`."""
    import functools
    import threading

    real = getattr(owner, name)
    lock = threading.Lock()

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                spent[label] = spent.get(label, 0.0) + time.thread_time() - t0

    setattr(owner, name, wrapper)


NORMALISE = "of it: normalise (a GPU's own work there)"
STACK = "uint8 stack + staging copy, alone (a GPU host's CPU part of the batch)"
OUTSIDE = "process, outside decode and cut"
OUTSIDE_ON_GPU = "process as on a GPU: outside decode, cut and normalise, + the stack"
PARTS = [  # (module, owner, function, label): the steps --parts times, in pipeline order
    ("mmrag.ingest.runner", "IngestRunner", "_plan", "plan (head read, hash, detect, catalog)"),
    ("mmrag.pipelines.image.pipeline", None, "decode_image", "decode"),
    ("mmrag.pipelines.image.pipeline", None, "_cut", "cut (resize + crop)"),
    ("mmrag.pipelines.image.pipeline", None, "thumbnail", "thumbnail encode"),
    ("mmrag.pipelines.image.pipeline", None, "ensure_thumbnail", "thumbnail encode + store"),
    ("mmrag.ingest.runner", "IngestRunner", "_flush", "batch (stack + normalise)"),
    ("mmrag.pipelines.image.pixels", "PixelSpec", "normalise_rows", NORMALISE),
    ("mmrag.pipelines.image.pixels", "PixelSpec", "normalise", NORMALISE),
    ("mmrag.ingest.runner", "IngestRunner", "_store_jobs", "writer (upserts, catalog)"),
    ("mmrag.store.milvus", "MilvusStore", "upsert", "of it: upsert (client side)"),
    ("mmrag.ingest.runner", "IngestRunner", "_settle", "settle (flush, snapshot; client)"),
]


def stack_ms(side: int, batch: int) -> float:
    """CPU ms per picture of what a GPU host's CPU does with a batch instead of normalising
    it: stack the uint8 pictures and copy them once more (the staging copy a transfer from
    pageable memory makes); best of 5."""
    import torch

    rows = [torch.randint(0, 255, (side, side, 3), dtype=torch.uint8) for _ in range(batch)]
    best = float("inf")
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(20):
            torch.stack(rows).clone()
        best = min(best, (time.thread_time() - t0) * 1000 / (20 * batch))
    return best


def parts_main(args: argparse.Namespace) -> None:
    """--null-model --parts: where the CPU outside the model goes, part by part."""
    import importlib

    from machine import torch_machine  # this folder is on sys.path when run as a script

    from mmrag.app import Models, open_store
    from mmrag.ingest.runner import IngestRunner
    from mmrag.store import lite_host

    register_null_image()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    spent: dict[str, float] = {}
    for module, owner, name, label in PARTS:
        mod = importlib.import_module(module)
        _timed(getattr(mod, owner) if owner else mod, name, label, spent)
    server_at: dict[str, float | None] = {}
    settle = IngestRunner._settle

    def settle_marked(self: Any) -> None:
        server_at["settle"] = _tree_cpu_s(server_at["pid"])  # type: ignore[arg-type]
        settle(self)

    IngestRunner._settle = settle_marked  # type: ignore[method-assign]
    work = Path(tempfile.mkdtemp(prefix="mmrag-imgbench-parts-"))
    runs = []
    try:
        n = build_library(work / "lib", args.images, args.megapixels)
        settings = photo_settings(work, args, ocr=False, jpeg_decode="pillow")
        models = Models.build(settings)
        image = models.spaces["image"]
        for r in range(args.repeat):
            shutil.rmtree(settings.thumbnails, ignore_errors=True)
            run_dir = work / f"run{r}"
            run_dir.mkdir()
            here = settings.model_copy(update=run_store(settings, run_dir))
            catalog, store = open_store(here)
            store.ensure_space(image.space)
            runner = models.runner(catalog, store, read_workers=1, read_processes=False)
            info = lite_host.server_info(Path(here.milvus_uri))
            server_at["pid"] = info["pid"] if info else None
            spent.clear()
            s0, cpu0, t0 = _tree_cpu_s(server_at["pid"]), time.process_time(), time.perf_counter()
            report = runner.run([str(work / "lib")])
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            s1 = _tree_cpu_s(server_at["pid"])
            drop_run_store(store)
            store.close()
            catalog.close()
            shutil.rmtree(run_dir, ignore_errors=True)
            assert not report.failed and report.new == n, (report.failed, report.new)
            row = {k: round(v * 1000 / n, 3) for k, v in spent.items()}
            row["process total"] = round(cpu * 1000 / n, 3)
            outside = cpu * 1000 / n - row.get("decode", 0) - row.get("cut (resize + crop)", 0)
            row[OUTSIDE] = round(outside, 3)
            row[STACK] = round(stack_ms(image.input_side, args.batch), 3)
            row[OUTSIDE_ON_GPU] = round(outside - row.get(NORMALISE, 0) + row[STACK], 3)
            row["images/s"] = round(n / wall, 1)
            if None not in (s0, s1, server_at.get("settle")):
                row["Lite server while writing"] = round((server_at["settle"] - s0) * 1000 / n, 3)
                row["Lite server while settling"] = round((s1 - server_at["settle"]) * 1000 / n, 3)
            runs.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = [
        *dict.fromkeys(label for *_, label in PARTS),
        "Lite server while writing", "Lite server while settling", "process total", OUTSIDE,
        STACK, OUTSIDE_ON_GPU, "images/s",
    ]  # fmt: skip
    print(json.dumps({"images": n, "runs": runs, "machine": torch_machine()}, indent=2))
    print(f"\n{n} images, one reader thread, {args.model} replaced by a no-op; CPU ms per image")
    print("| part | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |")
    print("|---|" + "---|" * len(runs))
    for label in labels:
        print(f"| {label} | " + " | ".join(str(run.get(label, "-")) for run in runs) + " |")
    if args.json:
        args.json.write_text(json.dumps({"images": n, "runs": runs}, indent=2))


def main() -> None:
    from mmrag.settings import choices

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
        choices=choices("jpeg_decode"),
        default="auto",
        help="auto: nvJPEG on the GPU when the model runs there (the pipeline's default)",
    )
    ap.add_argument("--text-model", help="the model that embeds the labels (default: configured)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side (best kept)")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--null-model",
        action="store_true",
        help="the image model replaced by a no-op: images/s and CPU ms per image of everything "
        "else, for 1, 2 and all reader workers (issue 17)",
    )
    ap.add_argument(
        "--read-processes",
        choices=["both", "on", "off"],
        default="both",
        help="with --null-model: readers as processes, threads, or both alternately; "
        "without: on/off (off: threads; both: the settings' default)",
    )
    ap.add_argument(
        "--torch-threads",
        type=int,
        help="torch's intra-op threads (default: torch's own, one per core); with --null-model",
    )
    ap.add_argument(
        "--milvus-uri",
        help="with --null-model: write to this Milvus server (collections of a prefix of their "
        "own, dropped after each run) instead of a Lite file: the pipeline's CPU without Lite's",
    )
    ap.add_argument(
        "--photo-thumbnails",
        choices=choices("photo_thumbnails"),
        default="auto",
        help="when photos' thumbnails are made (the setting photo_thumbnails; auto: at ingest on "
        "the CPU, when shown on a GPU)",
    )
    ap.add_argument(
        "--parts",
        action="store_true",
        help="with --null-model: CPU ms per image split by part (one reader thread)",
    )
    args = ap.parse_args()
    if args.null_model and args.parts:
        parts_main(args)
        return
    if args.null_model:
        null_model_main(args)
        return

    from text_ingest import machine  # this folder is on sys.path when run as a script

    from mmrag.app import Models
    from mmrag.ingest.detect import detect_kind
    from mmrag.pipelines.base import LabelSet
    from mmrag.pipelines.image.decode import decode_image

    work = Path(tempfile.mkdtemp(prefix="mmrag-imgbench-"))
    try:
        n = build_library(work / "lib", args.images, args.megapixels)
        settings = photo_settings(
            work,
            args,
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

        # both: the settings' default (mmrag.ingest.workers.reads_in_processes)
        chosen = {"on": {"read_processes": True}, "off": {"read_processes": False}}
        options = chosen.get(args.read_processes, {})
        if options.get("read_processes"):
            warm_forkserver(photos)

        def pipeline_run(r: int) -> float:
            spaces = [image.space, text.space]
            run_dir = work / f"run{r}"
            return ingest_once(models, work / "lib", run_dir, spaces, n, **options).seconds

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
        "read_processes": args.read_processes,
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
