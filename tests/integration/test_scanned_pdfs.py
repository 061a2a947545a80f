"""Scanned documents (issue 15): PDFs with no text layer (or too little) and multi-page TIFF
scans are read by OCR page by page, their pages go to the photo spaces as pictures, and hits
open the page.

Every PDF is made here: printed text drawn by Pillow and saved as an image-only PDF, or a
text page (fpdf2) beside a scanned one. Real Tesseract, real PDFium, real Milvus Lite, the real
MiniLM and EfficientNet-Lite0 weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from mmrag.ingest.detect import MediaKind, detect_kind
from mmrag.pipelines.image import ocr
from mmrag.search.render import location
from mmrag.store.thumbnails import thumbnail_path
from tests.conftest import REPO, Env
from tests.image_samples import altered
from tests.video_samples import photo

INVOICE = "Invoice from the harbour bakery: twelve loaves of rye bread delivered on Monday."
STORM = "The lighthouse keeper logged a violent storm; waves broke over the northern pier."
SMUDGE = "An unreadable smudge of ink across the page."
GARDEN = "Tomatoes and runner beans were planted along the sunny garden wall in April."


def printed(text: str, size: tuple[int, int] = (1000, 560)) -> Image.Image:
    """A page of printed text as a scanner sees it (150 dpi: 28 px is about 13 pt)."""
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=28)
    for i, line in enumerate(textwrap.wrap(text, 52)):
        draw.text((60, 60 + 44 * i), line, fill="black", font=font)
    return page


def scanned_pdf(path: Path, pages: list[Image.Image], dpi: int = 150) -> Path:
    """An image-only PDF (no text layer), one picture per page, as a scanner writes one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pages[0].save(path, "PDF", save_all=True, append_images=pages[1:], resolution=dpi)
    return path


def mixed_pdf(path: Path, text: str, scan: Image.Image, stamped: Image.Image) -> Path:
    """Page 1 with a text layer, page 2 only a scanned picture, page 3 a scan whose only text
    layer is a scanner app's stamp (too little text for a page)."""
    pdf = FPDF(format=(170, 100))
    pdf.set_auto_page_break(False)
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 8, text)
    pdf.add_page()
    pdf.image(scan, x=0, y=0, w=170, h=100)
    pdf.add_page()
    pdf.image(stamped, x=0, y=0, w=170, h=90)
    pdf.set_xy(5, 92)
    pdf.set_font("helvetica", size=6)
    pdf.cell(0, 4, "Scanned with PhoneScan")
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def test_a_scanned_pdf_is_found_by_a_phrase_from_page_two(env: Env) -> None:
    pdf = scanned_pdf(env.root / "docs" / "scan.pdf", [printed(INVOICE), printed(STORM)])
    report = env.ingest(pdf.parent)
    assert (report.new, report.failed, report.warnings) == (1, [], [])

    hits = env.searcher().search("lighthouse keeper storm at the pier", limit=3)
    top = hits[0]
    assert (Path(top.path).name, top.page, top.modality, top.ocr) == (
        "scan.pdf",
        2,
        "document",
        True,
    )
    assert "lighthouse keeper" in top.snippet
    assert top.link.endswith("scan.pdf#page=2")
    assert top.start == 0 and 0 < top.end <= len(STORM) + 10  # a range in page 2's OCR text
    assert top.to_json()["ocr"] is True and "p.2" in location(top) and "(OCR)" in location(top)
    assert top.thumbnail and Path(top.thumbnail).is_file()  # the page's own thumbnail
    assert env.searcher().search("rye bread from the bakery", limit=1)[0].page == 1

    status = json.loads(env.cli("status", "--json").output)
    assert status["ocr_pages"] == 2
    assert status["failures"] == [] and status["warnings"] == []


def test_a_mixed_pdf_keeps_its_text_layer_and_reads_the_scanned_page(env: Env) -> None:
    scans = printed(STORM, (1000, 590)), printed(INVOICE, (1000, 530))
    pdf = mixed_pdf(env.root / "docs" / "mixed.pdf", GARDEN, *scans)
    report = env.ingest(pdf.parent)
    assert (report.new, report.failed) == (1, [])

    rows = env.store.client.query(
        env.collection, filter="page >= 0", output_fields=["page", "text", "meta"]
    )
    by_page = {r["page"]: r for r in rows}
    assert sorted(by_page) == [1, 2, 3]
    assert "runner beans" in by_page[1]["text"] and not by_page[1]["meta"].get("ocr")
    assert "lighthouse" in by_page[2]["text"] and by_page[2]["meta"]["ocr"] is True
    assert "rye bread" in by_page[3]["text"] and by_page[3]["meta"]["ocr"] is True

    garden = env.searcher().search("runner beans along the garden wall", limit=1)[0]
    storm = env.searcher().search("lighthouse keeper storm", limit=1)[0]
    bread = env.searcher().search("rye bread from the harbour bakery", limit=1)[0]
    assert (garden.page, garden.ocr, storm.page, storm.ocr) == (1, None, 2, True)
    assert (bread.page, bread.ocr) == (3, True)


def test_a_figure_page_is_found_by_an_altered_copy_of_the_figure(env: Env, tmp_path: Path) -> None:
    images = env.with_images()  # the real EfficientNet-Lite0 (offline pack)
    lib = images.root / "library"
    for name in ("rocket", "coffee", "astronaut"):
        pdf = FPDF(orientation="L", format=(120, 180))
        pdf.set_font("helvetica", size=12)
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Report on the {name}. " * 20)
        pdf.add_page()  # the figure page: a picture and no text layer
        pdf.image(photo(name), x=5, y=5, w=170)
        lib.mkdir(exist_ok=True)
        pdf.output(str(lib / f"report-{name}.pdf"))
    for name in ("chelsea", "camera", "coins"):
        photo(name).save(lib / f"{name}.jpg")
    report = images.ingest(lib)
    assert (report.new, report.failed) == (6, [])

    query = tmp_path / "query.jpg"
    altered(photo("rocket")).save(query)
    hits = images.searcher().search_image(query, limit=3)
    top = hits[0]
    assert (Path(top.path).name, top.page, top.modality) == ("report-rocket.pdf", 2, "image")
    assert top.link.endswith("report-rocket.pdf#page=2")
    assert top.thumbnail and Path(top.thumbnail).is_file() and "_p2_" in top.thumbnail
    assert top.score > hits[1].score
    assert "p.2" in location(top)


MEMORY_SCRIPT = """
import sys, threading, time
from pathlib import Path
import psutil
from mmrag.pipelines.image.decode import thumbnail
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.pipelines.text.pages import PageReading
from mmrag.pipelines.text.pipeline import TextConfig, TextPipeline
from mmrag.pipelines.text.space import TextSpace
from mmrag.store.thumbnails import ensure_thumbnail

small, big, thumbs = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
reading = PageReading(
    ocr=lambda image: "scanned words on a page of " + "x" * (image.width % 7),  # OCR's fast path
    thumbnail=lambda key, image: ensure_thumbnail(thumbs, key, lambda: thumbnail(image)),
)
space = TextSpace("sentence-transformers/all-MiniLM-L6-v2", "cpu")
pipeline = TextPipeline(space, TextConfig(chunk_tokens=64), reading)
pipeline.prepare(str(small), "pdf", "warm")  # the model, PDFium and the tokenizer copy loaded
me = psutil.Process()
base = me.memory_info().rss
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], me.memory_info().rss)
        time.sleep(0.002)
watcher = threading.Thread(target=sample)
watcher.start()
pieces = pipeline.prepare(str(big), "pdf", "big")
done.set()
watcher.join()
print(len({p.page for p in pieces}), (peak[0] - base) / 1e6)
"""


def test_a_200_page_scan_is_read_in_bounded_memory(tmp_path: Path) -> None:
    page = Image.new("RGB", (400, 300), "white")  # 4 x 3 in at 100 dpi: 1200 x 900 rendered
    ImageDraw.Draw(page).rectangle((40, 40, 360, 260), outline="black", width=6)
    big = scanned_pdf(tmp_path / "big.pdf", [page] * 200, dpi=100)
    small = scanned_pdf(tmp_path / "small.pdf", [page] * 2, dpi=100)
    one_page_mb = 1200 * 900 * 3 / 1e6  # 3.2 MB of pixels per rendered page
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(small), str(big), str(tmp_path / "thumbs")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=240,
        # glibc gives each busy thread an arena of its own; on a loaded machine more threads
        # overlap and keep freed pages (188 MB seen once): two arenas measure mmrag, not that
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    pages, growth_mb = run.stdout.split()
    assert int(pages) == 200
    # All 200 pages held at once grow it by 650 MB of pixels (880 MB measured); read a few at a
    # time it grows by 20-70 MB (pages in flight, the allocator), whatever the length. The bound
    # is a third of the whole file's pixels: far from holding it, with room for a busy machine.
    assert float(growth_mb) < 65 * one_page_mb, growth_mb


def test_without_ocr_the_failure_says_how_to_enable_it(
    make_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pdf = scanned_pdf(tmp_path / "docs" / "scan.pdf", [printed(INVOICE), printed(STORM)])
    off = make_env(ocr=False)
    [(path, why)] = off.ingest(pdf.parent).failed
    assert Path(path).name == "scan.pdf"
    assert why.startswith("no extractable text (scanned PDF without OCR?): 2 page(s)")
    assert "MMRAG_OCR=true" in why

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no tesseract on this PATH
    ocr.tesseract_available.cache_clear()
    try:
        off.settings.ocr = True
        off.rebuild()
        [(_, why)] = off.ingest(pdf.parent, retry_failed=True).failed
        assert "apt-get install tesseract-ocr" in why
    finally:
        ocr.tesseract_available.cache_clear()


def test_a_page_ocr_cannot_read_is_a_warning_with_its_page(make_env) -> None:
    env = make_env(max_ocr_pages=3)
    pdf = scanned_pdf(
        env.root / "docs" / "four.pdf",
        [printed(INVOICE), printed(SMUDGE, (1000, 700)), printed(STORM), printed(GARDEN)],
    )
    text = env.models.pipelines[0]

    def flaky(image: Image.Image) -> str:  # Tesseract fails on page 2 only (the taller one)
        if image.height > 0.65 * image.width:
            raise ocr.OcrError("Tesseract failed (exit 1): Error in pixReadMem: image too damaged")
        return ocr.read_page(image)

    text.pages = replace(text.pages, ocr=flaky)
    report = env.ingest(pdf.parent)
    assert (report.new, report.failed) == (1, [])
    [(path, why)] = report.warnings
    assert Path(path).name == "four.pdf"
    assert "4 scanned pages, only the first 3 read (max_ocr_pages)" in why
    assert "page 2 could not be read: OCR failed: " in why and "image too damaged" in why
    found = env.searcher().search("lighthouse keeper storm", limit=1)[0]
    assert (found.page, found.ocr) == (3, True)
    rows = env.store.client.query(env.collection, filter="page >= 0", output_fields=["page"])
    assert sorted({r["page"] for r in rows}) == [1, 3]
    status = json.loads(env.cli("status", "--json").output)
    assert (
        status["ocr_pages"] == 2 and "page 2 could not be read" in status["warnings"][0]["reason"]
    )


def test_a_multi_page_tiff_scan_is_read_page_by_page(env: Env) -> None:
    scans = env.root / "scans"
    scans.mkdir()
    tiff = scans / "letter.tif"
    first, second = printed(GARDEN).convert("1"), printed(STORM).convert("1")
    first.save(tiff, save_all=True, append_images=[second], compression="group4", dpi=(150, 150))
    single = env.root / "photo.tif"
    photo("coffee").save(single, compression="tiff_lzw")
    assert detect_kind(tiff) == MediaKind("text", "tiff")
    assert detect_kind(single) == MediaKind("image", "tiff")  # one page: still a photo

    report = env.ingest(scans)
    assert (report.new, report.failed) == (1, [])
    hit = env.searcher().search("lighthouse keeper storm", limit=1)[0]
    assert (Path(hit.path).name, hit.page, hit.ocr) == ("letter.tif", 2, True)
    assert hit.thumbnail == str(thumbnail_path(env.settings.thumbnails, f"{hit.media_id}_p2"))
    assert Path(hit.thumbnail).read_bytes()[:2] == b"\xff\xd8"


def test_a_long_scan_says_how_far_it_has_got(env: Env, tmp_path: Path) -> None:
    """The runner hears "<file>: n/total scanned pages read" while the file is read (the CLI's
    progress bar shows the latest), not only when the whole file is done."""
    page = Image.new("RGB", (400, 300), "white")  # blank: Tesseract is quick on them
    pdf = scanned_pdf(tmp_path / "lib" / "long scan.pdf", [printed(STORM)] + [page] * 10, dpi=100)
    notes: list[str] = []
    runner = env.models.runner(env.catalog, env.store)
    report = runner.run([str(pdf.parent)], on_note=notes.append)
    assert report.failed == []
    assert notes == [f"{pdf}: {n}/11 scanned pages read" for n in (5, 10, 11)]
