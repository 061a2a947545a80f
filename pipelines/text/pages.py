"""Pages with no text layer (scanned PDFs, multi-page TIFF scans): rendered one at a time, read
by OCR, and shown to the photo spaces as page pictures.

A scanned page is only pixels: it is rendered (pypdfium2, no external program) at a resolution
OCR reads well, read by the OCR function the composition root gives (Tesseract, with the
configured languages), and its picture, reduced, goes to every photo space (`image`, `clip`, its
labels as text) with a thumbnail of its own, so an example image or a text query finds a figure
page. Only a few pages' pixels are held at once (the one being rendered and those OCR is
reading), plus a small batch of reduced pictures waiting for the model, so a 500-page scan reads
in the memory of a few pages. This module knows no other modality: the OCR function, the photo
spaces and the thumbnail writer come from `mmrag.app`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from mmrag.kinds import Modality
from mmrag.pipelines.base import Encoded, MediaError, Piece, media_progress, media_warning
from mmrag.pipelines.model_resolver import ModelNotAvailable

log = logging.getLogger(__name__)

OCR_DPI = 300  # Tesseract reads body text best at 300 dpi
PAGE_MAX_PIXELS = 25_000_000  # a poster-sized page renders smaller (A3 at 300 dpi is 17 Mpx)
MAX_SIDE = 32_000  # Tesseract refuses an image with a side over 32767 pixels
TIFF_MAX_PIXELS = 200_000_000  # a TIFF page larger than this is refused before it is decoded
PICTURE_SIDE = 512  # page pictures are reduced to this shorter side for the models and thumbnail
# A page whose text layer has fewer characters than this per square inch is read as a scan (an
# A4 page under ~100 characters: no layer, or only a scanner's stamp such as "Scanned by ...").
MIN_LAYER_CHARS_PER_SQ_IN = 1.0
PROGRESS_EVERY = 5  # pages between progress notes (the CLI's bar shows the latest)

_PDFIUM = threading.Lock()  # PDFium is not thread-safe, and reader threads render at once


def needs_ocr(text: str, area_sq_in: float) -> bool:
    """A page with no text layer, or too little text for its size, is read as a scan."""
    return len(text.strip()) < max(1.0, MIN_LAYER_CHARS_PER_SQ_IN * area_sq_in)


def page_key(media_id: str, number: int) -> str:
    """A page's own thumbnail in the cache (named in its segments' meta "thumb")."""
    return f"{media_id}_p{number}"


def renderer_unavailable() -> str | None:
    """Why PDF pages cannot be rendered here (and how to fix it), or None when they can."""
    if importlib.util.find_spec("pypdfium2") is None:
        return "rendering scanned pages needs pypdfium2: pip install 'mmrag[image]'"
    return None


class PictureSpace(Protocol):
    """A space that embeds pictures (the photo spaces): page pictures go through it as photos
    do."""

    name: str

    def preprocess(self, image: Any) -> Any: ...

    def encode(self, payloads: list[Any]) -> Encoded: ...


@dataclass(frozen=True)
class PageReading:
    """What the composition root gives the text pipeline to read scanned pages."""

    ocr: Callable[[Image.Image], str] | None = None  # None: OCR cannot run here
    unavailable: str = "OCR is not set up"  # why `ocr` is None, and how to turn it on
    pictures: Sequence[PictureSpace] = ()  # the photo spaces page pictures go to
    thumbnail: Callable[[str, Any], None] | None = None  # saves a picture's thumbnail by key


# --- rendering ----------------------------------------------------------------------------------


def render_scale(width_pt: float, height_pt: float, dpi: int, max_pixels: int) -> float:
    """Pixels per point: `dpi`, unless the page would exceed `max_pixels` or MAX_SIDE."""
    scale = dpi / 72
    area = max(width_pt * height_pt, 1e-6)
    scale = min(scale, math.sqrt(max_pixels / area), MAX_SIDE / max(width_pt, height_pt, 1e-6))
    return max(scale, 1e-3)


def pdf_page_images(
    path: Path, numbers: Iterable[int], dpi: int = OCR_DPI, max_pixels: int = PAGE_MAX_PIXELS
) -> Iterator[tuple[int, Image.Image | Exception]]:
    """(page number, RGB image) for each page in `numbers`, rendered one at a time: the caller
    drops each before asking for the next. A page that cannot be rendered comes as
    (number, the error). A file PDFium cannot open at all raises MediaError."""
    import pypdfium2 as pdfium

    with _PDFIUM:
        try:
            doc = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            raise MediaError(f"PDF cannot be rendered for OCR: {exc}") from exc
        count = len(doc)
    try:
        for number in numbers:
            if number > count:
                yield number, MediaError(f"the renderer sees only {count} page(s)")
                continue
            try:
                with _PDFIUM:
                    image = _render(doc, number, dpi, max_pixels)
            except Exception as exc:  # one broken page should not lose the others
                yield number, exc
                continue
            yield number, image
            del image
    finally:
        with _PDFIUM:
            doc.close()


def _render(doc: Any, number: int, dpi: int, max_pixels: int) -> Image.Image:
    page = doc[number - 1]
    try:
        width, height = page.get_size()
        scale = render_scale(width, height, dpi, max_pixels)
        bitmap = page.render(scale=scale)
        try:
            image = bitmap.to_pil().convert("RGB")  # a copy: the bitmap's buffer is freed now
        finally:
            bitmap.close()
    finally:
        page.close()
    image.info["dpi"] = (scale * 72, scale * 72)  # OCR judges letter sizes by it
    return image


def tiff_page_count(path: Path) -> int:
    with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1))


def tiff_page_images(
    path: Path, limit: int, max_pixels: int = PAGE_MAX_PIXELS
) -> Iterator[tuple[int, Image.Image | Exception]]:
    """(page number, RGB image) for the first `limit` pages of a multi-page TIFF, decoded one
    at a time; a page too large or undecodable comes as (number, the error)."""
    with Image.open(path) as im:
        pages = min(int(getattr(im, "n_frames", 1)), limit)
        for index in range(pages):
            number = index + 1
            try:
                im.seek(index)
                w, h = im.size
                if w * h > TIFF_MAX_PIXELS:
                    raise MediaError(
                        f"{w}x{h} pixels, over the {TIFF_MAX_PIXELS // 1_000_000} Mpx page limit"
                    )
                frame = im.convert("L") if im.mode in ("1", "I;16", "I", "F") else im
                image = _fit(frame.convert("RGB"), max_pixels)
            except Exception as exc:
                yield number, exc
                continue
            yield number, image
            del image, frame


def _fit(image: Image.Image, max_pixels: int) -> Image.Image:
    """Within `max_pixels` and MAX_SIDE, by an integer box reduction (fast, sharp enough); its
    resolution (info "dpi") follows."""
    w, h = image.size
    k = max(math.ceil(math.sqrt(w * h / max_pixels)), math.ceil(max(w, h) / MAX_SIDE), 1)
    if k == 1:
        return image
    out = image.reduce(k)
    if dpi := image.info.get("dpi"):
        out.info["dpi"] = (float(dpi[0]) / k, float(dpi[1]) / k)
    return out


# --- reading --------------------------------------------------------------------------------


@dataclass
class ReadPages:
    """What OCR read and what the photo spaces were given, for the pages of one file."""

    texts: dict[int, str] = field(default_factory=dict)  # page -> its OCR text (pages with words)
    pictures: list[Piece] = field(default_factory=list)  # embedded page pictures and their labels
    failed: dict[int, str] = field(default_factory=dict)  # page -> why it could not be read
    thumbnails: set[int] = field(default_factory=set)  # pages with a thumbnail of their own


class PageReader:
    """Reads rendered pages: OCR for their text (`ocr_workers` pages at once, each Tesseract on
    one core), page pictures embedded a batch at a time."""

    def __init__(self, reading: PageReading, batch: int = 16, ocr_workers: int = 2) -> None:
        self.reading = reading
        self.batch = max(1, batch)
        self.ocr_workers = max(1, ocr_workers)

    def read(
        self,
        pages: Iterable[tuple[int, Image.Image | Exception]],
        media_id: str,
        total: int,
        name: str = "",
    ) -> ReadPages:
        """Each page in turn: OCR (in a small pool), a reduced picture for the photo spaces and
        the thumbnail. At most `ocr_workers` pages wait for OCR, so memory holds a few pages
        whatever the file's length. A page that cannot be rendered or read is noted in
        `failed`, not fatal."""
        out = ReadPages()
        name = name or media_id
        waiting: list[tuple[int, Image.Image]] = []
        pictures = list(self.reading.pictures)
        with ThreadPoolExecutor(self.ocr_workers, thread_name_prefix="mmrag-ocr") as pool:
            reading: deque[tuple[int, Future[str]]] = deque()
            for done, (number, image) in enumerate(pages, start=1):
                if isinstance(image, Exception):
                    out.failed[number] = f"not rendered: {_short(image)}"
                    log.warning("%s: page %d not rendered: %s", name, number, image)
                    continue
                reading.append((number, pool.submit(self._ocr, image)))
                small = _reduce(image, PICTURE_SIDE)
                del image
                if media_id and self.reading.thumbnail:
                    self.reading.thumbnail(page_key(media_id, number), small)
                    out.thumbnails.add(number)
                if pictures:
                    waiting.append((number, small))
                    if len(waiting) >= self.batch:
                        pictures = self._embed(waiting, pictures, media_id, out)
                        waiting = []
                while len(reading) >= self.ocr_workers:
                    self._text(*reading.popleft(), out, name)
                if done % PROGRESS_EVERY == 0 or done == total:
                    media_progress(f"{done}/{total} scanned pages read")
            while reading:
                self._text(*reading.popleft(), out, name)
        if waiting and pictures:
            self._embed(waiting, pictures, media_id, out)
        return out

    def _ocr(self, image: Image.Image) -> str:
        return self.reading.ocr(image) if self.reading.ocr else ""

    @staticmethod
    def _text(number: int, reading: Future[str], out: ReadPages, name: str) -> None:
        try:
            if text := reading.result():
                out.texts[number] = text
        except Exception as exc:  # Tesseract's error or timeout: this page only
            out.failed[number] = f"OCR failed: {_short(exc)}"
            log.warning("%s: page %d: OCR failed: %s", name, number, exc)

    def _embed(
        self,
        batch: list[tuple[int, Image.Image]],
        spaces: list[PictureSpace],
        media_id: str,
        out: ReadPages,
    ) -> list[PictureSpace]:
        """The batch's pictures in every photo space; a space whose model cannot be had is
        dropped for the rest of the file (its text still counts), and said once."""
        kept = []
        for space in spaces:
            try:
                encoded = space.encode([space.preprocess(image) for _, image in batch])
            except ModelNotAvailable as exc:
                media_warning(f"page pictures not in the {space.name} space: {exc}")
                continue
            kept.append(space)
            for k, (number, _) in enumerate(batch):
                meta = {"thumb": page_key(media_id, number)} if number in out.thumbnails else {}
                out.pictures.append(
                    Piece(
                        None,
                        Modality.IMAGE,
                        0,
                        0,
                        "",
                        page=number,
                        meta=dict(meta),
                        space=space.name,
                        vector=encoded.vectors[k],
                    )
                )
                for label in encoded.derived[k]:  # the picture's ImageNet labels, as text
                    label.page = number
                    label.meta |= meta
                    out.pictures.append(label)
        return kept


def _reduce(image: Image.Image, side: int) -> Image.Image:
    """The page with its shorter side brought near `side` (box reduction; never enlarged)."""
    k = min(image.size) // side
    return image.reduce(k) if k > 1 else image


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def failed_warning(failed: dict[int, str]) -> str:
    """One line naming the pages that could not be read, with the first one's reason."""
    numbers = sorted(failed)
    if len(numbers) == 1:
        return f"page {numbers[0]} could not be read: {failed[numbers[0]]}"
    shown = ", ".join(str(n) for n in numbers[:20]) + (", …" if len(numbers) > 20 else "")
    return (
        f"{len(numbers)} pages could not be read (pages {shown}); "
        f"page {numbers[0]}: {failed[numbers[0]]}"
    )
