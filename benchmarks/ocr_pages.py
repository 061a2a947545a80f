"""Scanned pages per second: rendering and OCR timed apart, then the whole ingest.

    python benchmarks/ocr_pages.py [--pages 24] [--dpi 300] [--skip-ingest]

Builds an image-only PDF of A4 pages of printed prose (drawn by Pillow at 150 dpi, as a scanner
would store them; about 30 lines and 350 words a page), then on this machine:

- rendering: every page rendered by PDFium at `--dpi` (the pipeline's own `pdf_page_images`,
  capped at 25 Mpx), pages/s;
- OCR: Tesseract on each rendered page (language eng, the pipeline's call): one page at a time
  with Tesseract's default OpenMP threads, one page at a time on one thread, and two pages at
  once on one thread each (what the pipeline does: `ocr_workers` 2, OMP_THREAD_LIMIT=1), pages/s
  and the share of the printed words read back;
- ingest: the PDF through the real runner (detect, text layer, render, OCR, thumbnails, chunk,
  MiniLM, Milvus Lite), pages/s, with the offline text model and no photo spaces.

Prints the machine, each number, and a JSON line with all of them.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORDS = (
    "the harbour council met on tuesday to review the accounts of the fishing cooperative "
    "whose boats landed less cod this spring than in any year since the old pier was rebuilt "
    "members asked whether the new ice plant could be paid for from the mooring fees or "
    "whether a loan from the regional bank would be needed before the summer season began "
    "the treasurer read letters from three suppliers and a note from the lighthouse keeper "
    "about storm damage to the northern breakwater which must be repaired before october"
).split()


def page_text(seed: int, words: int = 350) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def scanned_page(text: str) -> object:
    """A4 at 150 dpi (1240 x 1754), 11 pt text, as a flatbed scan stores it."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=24)
    for i, line in enumerate(textwrap.wrap(text, 80)):
        draw.text((110, 120 + 40 * i), line, fill=0, font=font)
    return page.convert("RGB")


def build_pdf(path: Path, pages: int) -> list[str]:
    texts = [page_text(i) for i in range(pages)]
    images = [scanned_page(t) for t in texts]
    images[0].save(path, "PDF", save_all=True, append_images=images[1:], resolution=150)
    return texts


def word_recall(read: str, truth: str) -> float:
    """The share of the printed words OCR gave back (as a multiset, in any order)."""
    from collections import Counter

    want = Counter(re.findall(r"[a-z]+", truth.lower()))
    got = Counter(re.findall(r"[a-z]+", read.lower()))
    return sum((want & got).values()) / max(1, sum(want.values()))


def time_render(pdf: Path, pages: int, dpi: int) -> tuple[float, list[object]]:
    from mmrag.pipelines.text.pages import pdf_page_images

    rendered = []
    t0 = time.perf_counter()
    for _, image in pdf_page_images(pdf, range(1, pages + 1), dpi=dpi):
        assert not isinstance(image, Exception), image
        rendered.append(image)
    return time.perf_counter() - t0, rendered


def time_ocr(
    images: list[object], texts: list[str], workers: int, threads: int | None
) -> tuple[float, float]:
    from mmrag.pipelines.image.ocr import tesseract

    def read(image: object) -> str:
        return tesseract(image, "eng", threads=threads)  # type: ignore[arg-type]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        read_back = list(pool.map(read, images))
    seconds = time.perf_counter() - t0
    recall = statistics.mean(word_recall(r, t) for r, t in zip(read_back, texts, strict=True))
    return seconds, recall


def time_ingest(pdf: Path, work: Path) -> tuple[float, int, list]:
    from mmrag.app import Models, open_store
    from mmrag.settings import Settings

    settings = Settings(
        milvus_uri=str(work / "milvus.db"),
        profile="offline",
        image_model="",
        clip_model="",
        audio_model="",
        speech_model="",
        device="cpu",
    )
    models = Models.build(settings)
    models.text.encoder  # noqa: B018 - loaded before the clock starts
    catalog, store = open_store(settings)
    try:
        lib = work / "lib"
        lib.mkdir()
        shutil.copy(pdf, lib / pdf.name)
        t0 = time.perf_counter()
        report = models.runner(catalog, store).run([str(lib)])
        return time.perf_counter() - t0, report.segments, report.failed + report.warnings
    finally:
        store.close()
        catalog.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=24)
    ap.add_argument("--dpi", type=int, default=300)
    ap.add_argument("--skip-ingest", action="store_true")
    args = ap.parse_args()

    from text_ingest import machine

    info = machine()
    print("machine:", json.dumps(info))
    out: dict = {"machine": info, "pages": args.pages, "dpi": args.dpi}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pdf = work / "scan.pdf"
        texts = build_pdf(pdf, args.pages)
        print(f"{args.pages} A4 pages, {pdf.stat().st_size / 1e6:.1f} MB image-only PDF")

        seconds, images = time_render(pdf, args.pages, args.dpi)
        size = images[0].size
        out["render_pages_s"] = round(args.pages / seconds, 2)
        print(f"render at {args.dpi} dpi ({size[0]}x{size[1]}): {out['render_pages_s']} pages/s")

        for key, workers, threads, what in (
            ("ocr_default_threads_pages_s", 1, None, "one page at a time, default threads"),
            ("ocr_1x1_pages_s", 1, 1, "one page at a time, one thread"),
            ("ocr_2x1_pages_s", 2, 1, "two pages at once, one thread each (the pipeline)"),
        ):
            seconds, recall = time_ocr(images, texts, workers, threads)
            out[key] = round(args.pages / seconds, 3)
            out["ocr_word_recall"] = round(recall, 4)
            print(f"OCR {what}: {out[key]} pages/s, words read back {recall:.1%}")
        del images

        if not args.skip_ingest:
            seconds, segments, problems = time_ingest(pdf, work)
            out["ingest_pages_s"] = round(args.pages / seconds, 3)
            out["ingest_segments"] = segments
            print(
                f"ingest (render, OCR, chunk, MiniLM, Milvus Lite): {out['ingest_pages_s']} "
                f"pages/s, {segments} segments, problems: {problems or 'none'}"
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
