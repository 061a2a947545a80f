"""Documents (txt, md, html, pdf) -> text blocks that remember where they came from.

Each block carries its PDF page and its offset in the document's full extracted text, so a search
hit can point back at "page 3" or a character range. Failures raise ExtractionError with a reason a
person can act on ("PDF is encrypted", "no extractable text (scanned PDF without OCR?)"), because
the catalog stores that string as the file's last error. pypdf and trafilatura are imported only
when a PDF or HTML file is extracted. A PDF's pages are also read one by one (`pdf_text`), with
their size, so the text pipeline can tell which pages are scans to be read by OCR.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from mmrag.pipelines.base import MediaError

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = frozenset({"txt", "md", "html", "pdf"})
BLOCK_SEPARATOR = "\n\n"
"""Blocks are joined with this to form the document's full text, which `char_start` indexes."""


@dataclass(frozen=True)
class TextBlock:
    text: str
    page: int | None  # 1-based PDF page; None for non-paginated formats
    char_start: int  # offset in BLOCK_SEPARATOR.join(block.text for block in blocks)


class ExtractionError(MediaError):
    """The document yields no usable text; str() says why in plain words."""


def extract_text(path: Path, fmt: str, *, max_bytes: int = 50_000_000) -> list[TextBlock]:
    """Text blocks of `path`, whose content detection found to be `fmt` (txt, md, html or pdf).

    Files over `max_bytes` are refused before they are read. Raises ExtractionError when no text
    can be had, ValueError for a format this module does not handle; OSError propagates.
    """
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"text extraction handles {sorted(SUPPORTED_FORMATS)}, not {fmt!r}")
    if fmt == "pdf":
        return pdf_text(path, max_bytes=max_bytes).blocks()
    data = _read(path, max_bytes)
    if fmt == "html":
        pieces: list[tuple[int | None, str]] = [(None, _html_text(data))]
    else:
        pieces = [(None, decode_text(data))]
    return to_blocks(pieces)


def _read(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, its size checked on the open file (one open, no second stat: most
    files of a library of notes are a few hundred bytes)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ExtractionError(
                f"file too large for text extraction ({_mb(size)}; the limit is {_mb(max_bytes)})"
            )
        return f.read()


def to_blocks(pieces: list[tuple[int | None, str]], empty_ok: bool = False) -> list[TextBlock]:
    """(page, text) pairs as blocks with their offsets; empty texts are left out. None left is
    an ExtractionError unless `empty_ok` (the caller has text from elsewhere: OCR)."""
    blocks: list[TextBlock] = []
    offset = 0
    for page, raw in pieces:
        text = _normalise(raw)
        if not text:
            continue
        blocks.append(TextBlock(text, page, offset))
        offset += len(text) + len(BLOCK_SEPARATOR)
    if not blocks and not empty_ok:
        raise ExtractionError("no text content")
    return blocks


def _normalise(text: str) -> str:
    # NULs come from unmapped PDF glyphs and break downstream string fields.
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


# --- decoding --------------------------------------------------------------------------------

BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# C0/C1 control characters other than tab, newlines, form feed and ESC (ANSI-coloured logs).
_CONTROL_CHARS = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_MAX_CONTROL_RATIO = 0.02


def is_readable(text: str) -> bool:
    """Binary data decoded as some code page shows up as control characters."""
    return len(_CONTROL_CHARS.findall(text)) <= _MAX_CONTROL_RATIO * max(len(text), 1)


# Detectors rank Western single-byte code pages almost at random on short text (cp1252 French
# comes back as cp1250 "nińo"); among equally plausible guesses, prefer the most common one.
_PREFERRED_ON_TIE = "cp1252"
_TIE_CHAOS = 0.02


def decode_text(data: bytes, declared: str | None = None) -> str:
    """Bytes -> str: byte-order mark, then the `declared` charset, then UTF-8, then the best guess
    of charset-normalizer. Raises ExtractionError when nothing gives readable text."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as e:
                raise ExtractionError(
                    f"could not decode text (it starts with a {encoding} byte-order mark "
                    f"but byte {e.start + len(bom)} is not valid {encoding})"
                ) from None
    if declared:
        try:
            return data.decode(declared)
        except (UnicodeDecodeError, LookupError):
            log.debug("declared charset %r does not decode the content", declared)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Mostly valid UTF-8 with a few corrupt bytes (a bad copy, concatenated logs) is UTF-8;
    # a legacy code page instead fails on nearly every non-ASCII byte.
    lenient = data.decode("utf-8", errors="replace")
    bad = lenient.count("\ufffd")
    valid_non_ascii = len(lenient) - len(lenient.encode("ascii", "ignore")) - bad
    if valid_non_ascii >= 20 * bad:
        return lenient

    tried = "tried " + ", ".join(dict.fromkeys(e for e in (declared, "utf-8") if e))
    if b"\x00" in data:
        raise ExtractionError(f"could not decode text ({tried}; it contains NUL bytes)")
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise ExtractionError(f"could not decode text ({tried}; no plausible encoding detected)")
    least_chaos = min(m.chaos for m in matches)
    ties = [m for m in matches if m.chaos <= least_chaos + _TIE_CHAOS]
    best = next((m for m in ties if m.encoding == _PREFERRED_ON_TIE), ties[0])
    text = str(best)
    if not is_readable(text):
        raise ExtractionError(
            f"could not decode text ({tried}, detected {best.encoding} "
            "but the result is not readable text)"
        )
    return text


# --- HTML ------------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.\-]+)""", re.I)


def _declared_charset(data: bytes) -> str | None:
    """The `<meta charset>` (or http-equiv Content-Type) near the top, as browsers read it."""
    m = _META_CHARSET.search(data[:4096])
    if not m:
        return None
    try:
        name = codecs.lookup(m.group(1).decode("ascii")).name
    except LookupError:
        return None
    # WHATWG: these labels mean windows-1252, and a UTF-16 declaration found by an ASCII scan
    # must be wrong (the bytes we just read were ASCII-compatible), so it means UTF-8.
    if name in ("iso8859-1", "ascii"):
        return "cp1252"
    if name.startswith("utf-16"):
        return "utf-8"
    return name


def _html_text(data: bytes) -> str:
    """Main text via trafilatura (drops navigation, footers, ads), with the page title first;
    a plain tag-stripper when trafilatura finds nothing."""
    html = decode_text(data, declared=_declared_charset(data))
    parsed = _PlainText.parse(html)
    try:
        # Imported here, not at the top: it drags in lxml and friends. A broken install (e.g.
        # lxml without lxml_html_clean) raises ImportError on every call, so that is caught too.
        import trafilatura

        main = trafilatura.extract(
            html, include_comments=False, include_tables=True, favor_recall=True
        )
    except Exception as e:  # a parser bug on odd markup should not lose the document
        log.warning("trafilatura failed (%s); falling back to plain tag stripping", e)
        main = None
    body = (main or "").strip() or parsed.text
    title = parsed.title
    if title and body.split("\n", 1)[0].strip() != title:
        body = f"{title}\n{body}" if body else title
    return body


class _PlainText(HTMLParser):
    """Visible text of an HTML page, one line per block element; script/style are dropped."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
    _BLOCK = frozenset(
        {
            "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
            "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
            "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
            "td", "th", "tr", "ul",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._title: list[str] = []
        self._skip_depth = 0
        self._in_title = False
        self._in_head = False  # closed by </head> or, as browsers do, by <body>

    @classmethod
    def parse(cls, html: str) -> _PlainText:
        parser = cls()
        parser.feed(html)
        parser.close()
        return parser

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in ("head", "body"):
            self._in_head = tag == "head"
        elif tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BLOCK:
            self._parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "head":
            self._in_head = False
        elif tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self._BLOCK:
            self._parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title.append(data)
        elif not self._skip_depth and not self._in_head:
            self._parts.append(data)

    @property
    def title(self) -> str:
        return " ".join("".join(self._title).split())

    @property
    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self._parts).split("\n"))
        return "\n".join(line for line in lines if line)


# --- PDF -------------------------------------------------------------------------------------

_EOF_WINDOW = 1024  # readers accept %%EOF anywhere in the last KiB


@dataclass(frozen=True)
class PdfPage:
    number: int  # 1-based
    text: str  # its text layer, normalised; "" when it has none (a scan) or it could not be read
    area: float  # square inches (72 points each), so a page's text can be judged for its size


@dataclass
class PdfText:
    """A PDF's text layer, page by page, and what went wrong reading it."""

    pages: list[PdfPage]
    failed: list[int]  # pages pypdf could not read
    first_error: Exception | None
    repairs: list[str]  # what lenient pypdf patched over in a broken structure

    def blocks(self, hint: str = "") -> list[TextBlock]:
        """The pages with text as blocks; when none has any, ExtractionError says why (damage,
        or no text layer at all: a scan, with `hint` on how to have it read by OCR)."""
        blocks = to_blocks([(p.number, p.text) for p in self.pages], empty_ok=True)
        if not blocks:
            raise self.no_text(hint)
        return blocks

    def no_text(self, hint: str = "") -> ExtractionError:
        n = len(self.pages)
        if self.failed:
            return ExtractionError(
                f"PDF is damaged: {len(self.failed)} of {n} pages could not be read "
                f"({self.first_error}) and the rest have no text"
            )
        if self.repairs:  # pypdf patched over broken structure: blame that, not missing OCR
            return ExtractionError(
                f"PDF is damaged and has no readable text ({len(self.repairs)} repair "
                f"warning(s) from pypdf, the first: {self.repairs[0]})"
            )
        why = f"no extractable text (scanned PDF without OCR?): {n} page(s), none with text"
        return ExtractionError(f"{why}; {hint}" if hint else why)


def pdf_text(path: Path, *, max_bytes: int = 50_000_000) -> PdfText:
    """Every page's text layer and size. A file cut short is refused up front: pypdf in lenient
    mode would otherwise rebuild what it can and hand back a silently partial document."""
    data = _read(path, max_bytes)
    if b"%%EOF" not in data[-_EOF_WINDOW:]:
        raise ExtractionError(
            "PDF is truncated or damaged: it has no %%EOF end marker "
            "(the file was probably cut short while downloading or copying)"
        )
    with _pypdf_warnings() as warnings:
        return _read_pdf(data, warnings)


def _read_pdf(data: bytes, warnings: list[str]) -> PdfText:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                unlocked = reader.decrypt("")
            except DependencyError as e:
                raise ExtractionError(f"PDF is encrypted and cannot be opened here: {e}") from e
            if unlocked == PasswordType.NOT_DECRYPTED:
                raise ExtractionError("PDF is encrypted (it needs a password)")
        pages = list(reader.pages)
    except ExtractionError:
        raise
    except Exception as e:  # pypdf raises many types on malformed input
        raise ExtractionError(f"PDF is truncated or damaged: {e}") from e

    out = PdfText([], [], None, warnings)
    for number, page in enumerate(pages, start=1):
        try:
            text = _normalise(page.extract_text() or "")
        except Exception as e:  # one broken page should not lose the others
            out.failed.append(number)
            out.first_error = out.first_error or e
            log.warning("PDF page %d could not be read: %s", number, e)
            text = ""
        out.pages.append(PdfPage(number, text, _area(page)))
    return out


def _area(page: object) -> float:
    """The page's area in square inches (0 when its box is unreadable)."""
    try:
        box = page.mediabox  # type: ignore[attr-defined]
        unit = float(page.get("/UserUnit", 1) or 1)  # type: ignore[attr-defined]
        return abs(float(box.width) * float(box.height)) * unit * unit / 72**2
    except Exception:
        return 0.0


@contextmanager
def _pypdf_warnings() -> Iterator[list[str]]:
    """Collect what lenient pypdf logs about broken structure, for this thread only (several
    reader threads extract at once)."""
    messages: list[str] = []
    thread = threading.get_ident()

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:
                messages.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    logger = logging.getLogger("pypdf")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
