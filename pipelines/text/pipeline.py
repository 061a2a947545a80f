"""Documents -> text chunks (page and character range) for the `text` space.

Scanned pages (a PDF page with no text layer, a page of a multi-page TIFF scan) are read by OCR
(pipelines/text/pages.py): their text is chunked as any page's, its character range counted in
that page's OCR text and marked `{"ocr": true}` in the segment's meta; their pictures go to the
photo spaces, found with the PDF's page number.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mmrag.kinds import MediaType, Modality
from mmrag.pipelines.base import MediaError, Piece, SpaceEncoder, media_warning
from mmrag.pipelines.text.chunking import chunk_blocks
from mmrag.pipelines.text.extract import (
    ExtractionError,
    PdfText,
    TextBlock,
    extract_text,
    pdf_text,
    to_blocks,
)
from mmrag.pipelines.text.pages import (
    PageReader,
    PageReading,
    ReadPages,
    failed_warning,
    needs_ocr,
    page_key,
    pdf_page_images,
    tiff_page_count,
    tiff_page_images,
)
from mmrag.pipelines.text.space import TextSpace


@dataclass(frozen=True)
class TextConfig:
    chunk_tokens: int | None = None  # None: the model's own maximum
    chunk_overlap: int = 32  # tokens shared by neighbouring chunks
    max_file_bytes: int = 200_000_000
    max_ocr_pages: int = 1000  # scanned pages read per file; those beyond are reported
    picture_batch: int = 16  # page pictures embedded at a time as a scan is read
    ocr_workers: int = 2  # pages of one file read by OCR at once (one core each)


class TextPipeline:
    """A Pipeline for documents: extract, chunk with the model's own tokenizer, write to
    `text`; scanned pages read by OCR when the composition root gives a `PageReading`."""

    media = MediaType.TEXT
    primary = ("text",)

    def __init__(
        self,
        space: TextSpace,
        config: TextConfig | None = None,
        pages: PageReading | None = None,
    ) -> None:
        self.space = space
        self.config = config or TextConfig()
        self.pages = pages or PageReading()
        self._local = threading.local()
        self._shared_tokenizer: Offsets | bool | None = None  # made on first use
        self._tokenizer_lock = threading.Lock()

    def encoders(self) -> dict[str, SpaceEncoder]:
        found: dict[str, SpaceEncoder] = {self.space.name: self.space}
        if self.pages.ocr is not None:
            found |= {s.name: s for s in self.pages.pictures}  # type: ignore[misc]
        return found

    @cached_property
    def chunk_tokens(self) -> int:
        """Configured size, never above what the model reads (its max minus [CLS]/[SEP])."""
        limit = self.space.encoder.max_tokens - 2
        return min(self.config.chunk_tokens or limit, limit)

    def prepare(
        self, path: str, fmt: str, media_id: str = "", only: frozenset[str] | None = None
    ) -> list[Piece]:
        """A document's pieces, all of them whatever `only` says (the runner keeps those it
        wants): its chunks are cut once, and a page picture's place comes from reading it."""
        if fmt == "pdf":
            return self._pdf(Path(path), media_id)
        if fmt == "tiff":
            return self._tiff(Path(path), media_id)
        return self._pieces(extract_text(Path(path), fmt, max_bytes=self.config.max_file_bytes))

    # -- PDFs and scans ---------------------------------------------------------------------

    def _pdf(self, path: Path, media_id: str) -> list[Piece]:
        """The text layer where a page has one; the other pages rendered and read by OCR."""
        doc = pdf_text(path, max_bytes=self.config.max_file_bytes)
        scans = [p.number for p in doc.pages if needs_ocr(p.text, p.area)]
        if not scans:
            return self._pieces(doc.blocks())
        if self.pages.ocr is None:  # as before: the text layer alone, and how to read the rest
            return self._layer_only(doc, len(scans), self.pages.unavailable)
        scans = self._limit(scans)
        try:
            read = self._reader().read(
                pdf_page_images(path, scans), media_id, len(scans), path.name
            )
        except MediaError as exc:  # PDFium cannot open the file: what pypdf read still counts
            return self._layer_only(doc, len(scans), str(exc))
        layer = {p.number: p.text for p in doc.pages}
        # A sparse text layer (a caption, a scanner's stamp) gives way to more words from OCR.
        ocr = {n: t for n, t in read.texts.items() if len(t.split()) > len(layer[n].split())}
        kept = [(p.number, p.text) for p in doc.pages if p.number not in ocr]
        pieces = self._pieces(to_blocks(kept, empty_ok=True))
        pieces += self._ocr_pieces(ocr, read, media_id)
        return self._finish(pieces, read, lambda: _no_words(doc, len(scans)))

    def _layer_only(self, doc: PdfText, scans: int, why: str) -> list[Piece]:
        """The text layer alone, the scanned pages reported with why they were not read (a
        document with no text layer at all fails, saying so)."""
        blocks = doc.blocks(hint=why)
        media_warning(f"{scans} page(s) without a text layer not read: {why}")
        return self._pieces(blocks)

    def _tiff(self, path: Path, media_id: str) -> list[Piece]:
        """A multi-page TIFF scan: every page read by OCR (ingest.detect routes only those with
        two or more full-size pages here; a single-page TIFF is a photo)."""
        if self.pages.ocr is None:
            raise ExtractionError(
                f"a multi-page TIFF scan has no text layer; {self.pages.unavailable}"
            )
        total = tiff_page_count(path)
        limit = len(self._limit(list(range(1, total + 1))))
        read = self._reader().read(tiff_page_images(path, limit), media_id, limit, path.name)
        pieces = self._ocr_pieces(read.texts, read, media_id)
        return self._finish(
            pieces,
            read,
            lambda: ExtractionError(f"no text: OCR read no words on any of its {limit} page(s)"),
        )

    def _reader(self) -> PageReader:
        return PageReader(self.pages, self.config.picture_batch, self.config.ocr_workers)

    def _limit(self, scans: list[int]) -> list[int]:
        most = self.config.max_ocr_pages
        if len(scans) > most:
            media_warning(f"{len(scans)} scanned pages, only the first {most} read (max_ocr_pages)")
        return scans[:most]

    def _finish(
        self, pieces: list[Piece], read: ReadPages, no_text: Callable[[], Exception]
    ) -> list[Piece]:
        """Text and page pictures in page order; the pages that could not be read as one
        warning. With no text at all (not even a picture's labels) the file fails: a document
        is done when it is in the text space."""
        if read.failed:
            media_warning(failed_warning(read.failed))
        pieces = sorted(pieces + read.pictures, key=lambda p: p.page)
        if not any(p.space == self.space.name for p in pieces):
            if read.failed and not read.texts:
                raise ExtractionError(f"no text: {failed_warning(read.failed)}")
            raise no_text()
        return pieces

    def _ocr_pieces(self, texts: dict[int, str], read: ReadPages, media_id: str) -> list[Piece]:
        """Chunks of each page's OCR text, their ranges in that page's text, marked as OCR (the
        first of a page also as its start, so `status` counts pages)."""
        pieces: list[Piece] = []
        for number in sorted(texts):
            chunks = self._pieces([TextBlock(texts[number], number, 0)])
            for k, piece in enumerate(chunks):
                piece.meta = {"ocr": True}
                if k == 0:
                    piece.meta["page_start"] = True
                if number in read.thumbnails:
                    piece.meta["thumb"] = page_key(media_id, number)
            pieces += chunks
        return pieces

    # -- chunks -----------------------------------------------------------------------------

    def _pieces(self, blocks: list[TextBlock]) -> list[Piece]:
        if not blocks:
            return []
        chunks = chunk_blocks(
            blocks,
            self._tokenizer(),
            self.chunk_tokens,
            min(self.config.chunk_overlap, self.chunk_tokens // 2),
        )
        return [
            Piece(
                payload=c.text,
                modality=Modality.DOCUMENT,
                start=c.char_start,
                end=c.char_end,
                text=c.text,
                page=c.page or 0,
                space=self.space.name,
            )
            for c in chunks
        ]

    def _tokenizer(self) -> Any:
        """The chunker's tokenizer, never the encoder's own: a fast tokenizer's padding state
        is not thread-safe, and the encoder pads its own batches on the main thread at the same
        time. A fast tokenizer's Rust core is copied once for every reader (`Offsets`: a
        deepcopy per reader thread cost a second per run, and each call through transformers
        more than the tokenizing); any other is deep-copied per reader thread."""
        if self._shared_tokenizer is None:
            with self._tokenizer_lock:
                if self._shared_tokenizer is None:
                    self._shared_tokenizer = Offsets.of(self.space.encoder.tokenizer) or False
        if self._shared_tokenizer:
            return self._shared_tokenizer
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            tok = self._local.tokenizer = copy.deepcopy(self.space.encoder.tokenizer)
        return tok


class Offsets:
    """Token offsets from a private copy of a fast tokenizer's Rust core, with no padding and
    no truncation: what `tokenizer(text, add_special_tokens=False,
    return_offsets_mapping=True)` gives, without transformers' per-call work. Its state is
    never changed after it is made, so reader threads share it."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @classmethod
    def of(cls, tokenizer: Any) -> Offsets | None:
        """The copy, for a transformers fast tokenizer; None for any other kind."""
        from transformers import PreTrainedTokenizerFast

        if not isinstance(tokenizer, PreTrainedTokenizerFast):
            return None
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        return cls(backend)

    def __call__(self, text: str, **_: object) -> dict[str, list]:
        enc = self.backend.encode(text, add_special_tokens=False)
        return {"input_ids": enc.ids, "offset_mapping": enc.offsets}


def _no_words(doc: PdfText, scanned: int) -> Exception:
    """A PDF with no text anywhere even after OCR: damage if pypdf saw any, else no words."""
    if doc.failed or doc.repairs:
        return doc.no_text()
    return ExtractionError(
        f"no text: {len(doc.pages)} page(s), {scanned} without a text layer, "
        "and OCR read no words on them"
    )
