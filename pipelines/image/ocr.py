"""Words printed in an image (signs, screenshots, scanned pages), read by Tesseract.

OCR text becomes a `text` piece of the image, so a text query finds the picture by its words.
Tesseract is a system program (`apt-get install tesseract-ocr`, `brew install tesseract`);
without it OCR is off and the run says so once, rather than failing every image. Scanned pages
are read here too (`read_page`, given to the text pipeline by the composition root), keeping
their lines and paragraphs so the page's text is chunked as a document's is.

Tesseract runs with one OpenMP thread (OMP_THREAD_LIMIT=1, for its process only): reader
threads already keep the cores busy, and its threads spin-wait for cores that others hold, so
on 2 busy cores one page took 9.2 s with its default threads and 2.3 s with one
(benchmarks/ocr_pages.py). The picture goes to it uncompressed on stdin, with no temporary file.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
from functools import cache

from PIL import Image

log = logging.getLogger(__name__)

_WORDISH = re.compile(r"[^\W_]{2,}")
MIN_WORDS = 2  # fewer recognised words than this is almost always noise read into a photo
PAGE_TIMEOUT_S = 120  # a page of noise can keep Tesseract busy for minutes: give up on it
_SPACES = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*")


class OcrError(RuntimeError):
    """Tesseract could not read a picture (its own message), or ran out of time."""


@cache
def tesseract_available() -> bool:
    found = shutil.which("tesseract") is not None
    if not found:
        log.warning("tesseract not found: images and scanned pages are indexed without OCR text")
    return found


def ocr_unavailable(enabled: bool) -> str | None:
    """Why OCR cannot run here and how to turn it on, or None when it can."""
    if not enabled:
        return "OCR is off: turn it on with ocr = true in mmrag.toml or MMRAG_OCR=true"
    if not tesseract_available():
        return (
            "OCR needs Tesseract: apt-get install tesseract-ocr (or brew install tesseract), "
            "then ingest again"
        )
    return None


def tesseract(
    image: Image.Image,
    lang: str = "eng",
    timeout_s: float = PAGE_TIMEOUT_S,
    threads: int | None = 1,
) -> str:
    """Tesseract's text for a picture (grey levels; its resolution from image.info["dpi"]
    where known), on `threads` OpenMP threads (None: Tesseract's default, every core).
    Raises OcrError with Tesseract's last words when it fails or times out."""
    buf = io.BytesIO()
    image.convert("L").save(buf, "PPM")  # PGM: no compression to spend time on
    args = [shutil.which("tesseract") or "tesseract", "stdin", "stdout", "-l", lang]
    dpi = image.info.get("dpi")
    if dpi and 70 <= float(dpi[0]) <= 2400:
        args += ["--dpi", str(round(float(dpi[0])))]
    env = dict(os.environ)
    if threads:
        env["OMP_THREAD_LIMIT"] = str(threads)
    try:
        run = subprocess.run(
            args, input=buf.getvalue(), capture_output=True, env=env, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise OcrError(f"Tesseract gave up after {timeout_s:g} s") from None
    if run.returncode != 0:
        said = [ln for ln in run.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        raise OcrError(f"Tesseract failed (exit {run.returncode}): {'; '.join(said[-3:])}")
    return run.stdout.decode("utf-8", "replace")


def read_page(image: Image.Image, lang: str = "eng", timeout_s: float = PAGE_TIMEOUT_S) -> str:
    """A scanned page's words as Tesseract lays them out: lines kept, paragraphs separated by
    one blank line; "" when it reads fewer than MIN_WORDS words. OcrError propagates: the
    caller reports the page."""
    lines = (
        _SPACES.sub(" ", line).strip() for line in tesseract(image, lang, timeout_s).splitlines()
    )
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    return text if len(_WORDISH.findall(text)) >= MIN_WORDS else ""


def read_text(image: Image.Image, lang: str = "eng") -> str:
    """The words Tesseract reads, whitespace tidied; "" when there are none (or no Tesseract)."""
    if not tesseract_available():
        return ""
    text = " ".join(tesseract(image, lang).split())
    return text if len(_WORDISH.findall(text)) >= MIN_WORDS else ""
