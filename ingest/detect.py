"""Tell what a file is from its first bytes, not its name.

Libraries are full of misnamed files (a PDF saved as `.txt`, a PNG called `.jpg`, a download with
no extension), so the extension is only used where content cannot decide: Markdown versus plain
text. Detection reads at most 64 KiB and imports nothing heavy, because the scanner calls it for
every file in the library; `charset_normalizer` and `filetype` are imported only when needed.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

from mmrag.kinds import MediaType
from mmrag.pipelines.text.extract import BOMS, is_readable

HEAD_BYTES = 64 * 1024
"""How much of a file detection looks at."""

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})

BINARY_REASON = "binary content (not a supported text, image, audio or video format)"


@dataclass(frozen=True)
class MediaKind:
    media: MediaType  # which pipeline takes it
    format: str  # "txt", "md", "html", "pdf", "jpeg", "png", "wav", "mp4", ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "media", MediaType(self.media))


class UnsupportedContent(Exception):
    """The file is not something mmrag can index; str() is the reason shown to the user."""


def detect_kind(path: Path, head: bytes | None = None) -> MediaKind:
    """Media kind of `path`, judged from its first 64 KiB (`head`, when the caller already read it).

    Raises UnsupportedContent with a plain reason for empty, binary or unknown content; OSError
    from reading the file propagates unchanged.
    """
    if head is None:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    else:
        head = head[:HEAD_BYTES]
    if not head:
        raise UnsupportedContent("empty file (0 bytes)")

    kind = _match_signature(head)
    if kind == MediaKind("image", "tiff") and _tiff_pages(Path(path), head) >= 2:
        return MediaKind("text", "tiff")  # a multi-page scan: a document read by OCR
    if kind is not None:
        return kind
    text = _as_text(head)
    if text is not None:
        return _text_kind(text, Path(path))
    # A PDF may carry a little junk before its header; only trusted once the head is not text,
    # so notes that merely mention "%PDF-" stay text.
    if b"%PDF-" in head[:1024]:
        return MediaKind("text", "pdf")
    return _fallback_filetype(head)


# --- binary signatures -----------------------------------------------------------------------

# Fixed magic numbers at offset 0: (prefix, media type, format). Container formats that need a
# closer look (RIFF, ISO-BMFF `ftyp`, Matroska, Ogg, MP3) are handled in `_match_signature`.
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"%PDF-", "text", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image", "png"),
    (b"\xff\xd8\xff", "image", "jpeg"),
    (b"GIF87a", "image", "gif"),
    (b"GIF89a", "image", "gif"),
    (b"II*\x00\x10\x00\x00\x00CR", "image", "cr2"),  # Canon raw, a TIFF variant
    (b"II*\x00", "image", "tiff"),
    (b"MM\x00*", "image", "tiff"),
    (b"II+\x00", "image", "tiff"),  # BigTIFF
    (b"MM\x00+", "image", "tiff"),
    (b"fLaC", "audio", "flac"),
    (b"#!AMR", "audio", "amr"),
    (b"\x00\x00\x01\xba", "video", "mpg"),  # MPEG program stream
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "video", "wmv"),  # ASF container
    (b"FLV\x01", "video", "flv"),
)

_RIFF_FORMS = {b"WAVE": ("audio", "wav"), b"AVI ": ("video", "avi"), b"WEBP": ("image", "webp")}

# ISO base media (`ftyp`) brands that are not plain MP4 video.
_HEIC_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
_3GP_BRANDS = frozenset({b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3gg6", b"3g2a", b"3g2b", b"3g2c"})
# Old QuickTime files start with a top-level atom instead of `ftyp`.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"pnot"})

_MP4_HANDLER = re.compile(rb"hdlr.{8}(vide|soun)", re.DOTALL)
_MKV_CODEC = re.compile(rb"\x86[\x81-\xfe]([VA])_")  # CodecID element, e.g. "V_VP9", "A_OPUS"
_BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


def _match_signature(head: bytes) -> MediaKind | None:
    for magic, media, fmt in _MAGIC:
        if head.startswith(magic):
            return MediaKind(media, fmt)
    tag = head[:4]
    if tag in (b"RIFF", b"RF64", b"BW64") and head[8:12] in _RIFF_FORMS:
        return MediaKind(*_RIFF_FORMS[head[8:12]])
    if tag == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return MediaKind("audio", "aiff")
    if head[4:8] == b"ftyp":
        return _iso_bmff_kind(head)
    if head[4:8] in _QUICKTIME_ATOMS:
        return MediaKind("video", "mov")
    if tag == b"\x1a\x45\xdf\xa3":
        return _matroska_kind(head)
    if tag == b"OggS":
        return MediaKind("video", "ogv") if b"theora" in head[:512] else MediaKind("audio", "ogg")
    if tag[:3] == b"ID3":
        return _id3_kind(head)
    if _is_bmp(head):
        return MediaKind("image", "bmp")
    return _mpeg_audio_frame(head)


_TIFF_SUBFILE = 254  # NewSubfileType: bit 0 marks a reduced-resolution copy (a preview)
_TIFF_JPEG_THUMB = 513  # JPEGInterchangeFormat: an EXIF thumbnail
_TIFF_SUB_IFDS = 330  # SubIFDs: camera raw files (DNG, NEF, ...) keep their images there
_TIFF_MAX_IFDS = 64
_TIFF_MAX_ENTRIES = 4096


def _tiff_pages(path: Path, head: bytes, want: int = 2) -> int:
    """Full-size pages of a TIFF, counted up to `want`, by walking the IFD chain (a few small
    reads, whatever the file's size). Previews, EXIF thumbnails and camera raws (SubIFDs) are
    not pages, so a photo stays a photo; an unreadable chain counts what it got to."""
    order = "little" if head[:2] == b"II" else "big"
    big = head[2:4] in (b"+\x00", b"\x00+")
    count_size, entry_size, offset_size = (8, 20, 8) if big else (2, 12, 4)
    pages = 0
    try:
        with open(path, "rb") as f:

            def read(at: int, n: int) -> bytes:
                if at + n <= len(head):
                    return head[at : at + n]
                f.seek(at)
                return f.read(n)

            at = int.from_bytes(read(8 if big else 4, offset_size), order)
            seen: set[int] = set()
            while at and at not in seen and len(seen) < _TIFF_MAX_IFDS and pages < want:
                seen.add(at)
                n = int.from_bytes(read(at, count_size), order)
                if not 0 < n <= _TIFF_MAX_ENTRIES:
                    break
                entries = read(at + count_size, n * entry_size)
                tags: dict[int, int] = {}
                for i in range(0, len(entries) - entry_size + 1, entry_size):
                    tag = int.from_bytes(entries[i : i + 2], order)
                    width = 2 if int.from_bytes(entries[i + 2 : i + 4], order) == 3 else 4
                    value = entries[i + entry_size - offset_size :][:width]  # SHORT or LONG
                    tags[tag] = int.from_bytes(value, order)
                if _TIFF_SUB_IFDS in tags:
                    return 1  # a camera's raw file: a photo
                if not tags.get(_TIFF_SUBFILE, 0) & 1 and _TIFF_JPEG_THUMB not in tags:
                    pages += 1
                at = int.from_bytes(read(at + count_size + n * entry_size, offset_size), order)
    except OSError:
        pass
    return pages


def _iso_bmff_kind(head: bytes) -> MediaKind:
    """MP4 family: the brands say HEIC/AVIF/M4A/MOV; the track handlers, when in the head, say
    whether a generic `isom` file is really audio only (e.g. a podcast saved as .mp4)."""
    size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    brands = {major} | compatible
    if brands & _AVIF_BRANDS:
        return MediaKind("image", "avif")
    if brands & _HEIC_BRANDS:
        return MediaKind("image", "heic")
    # Only the major brand: iTunes video lists "M4A " among its compatible brands.
    if major in _M4A_BRANDS:
        return MediaKind("audio", "m4a")
    handlers = {m.group(1) for m in _MP4_HANDLER.finditer(head)}
    if handlers == {b"soun"}:
        return MediaKind("audio", "m4a")
    if major == b"qt  ":
        return MediaKind("video", "mov")
    if major in _3GP_BRANDS:
        return MediaKind("video", "3gp")
    return MediaKind("video", "mp4")


def _matroska_kind(head: bytes) -> MediaKind:
    """Matroska/WebM; audio-only when the track codec ids in the head are all audio."""
    fmt = "webm" if b"webm" in head[:64] else "mkv"
    codecs_seen = {m.group(1) for m in _MKV_CODEC.finditer(head)}
    if codecs_seen == {b"A"}:
        return MediaKind("audio", "webm" if fmt == "webm" else "mka")
    return MediaKind("video", fmt)


def _id3_kind(head: bytes) -> MediaKind:
    """An ID3 tag usually fronts MP3, but sometimes FLAC or ADTS AAC: look past it if we can."""
    if len(head) >= 10:
        size = 0
        for b in head[6:10]:  # "syncsafe" integer: 7 bits per byte
            size = (size << 7) | (b & 0x7F)
        after = head[10 + size : 10 + size + 4]
        if after == b"fLaC":
            return MediaKind("audio", "flac")
        if len(after) >= 2 and after[0] == 0xFF and after[1] & 0xF6 == 0xF0:
            return MediaKind("audio", "aac")
    return MediaKind("audio", "mp3")


def _mpeg_audio_frame(head: bytes) -> MediaKind | None:
    """A bare MPEG audio frame header (MP3 without ID3, or ADTS AAC), checked field by field so
    that two stray 0xFF bytes do not make a file "audio"."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    if head.startswith(codecs.BOM_UTF16_LE):  # also reads as an MPEG-1 Layer I header
        return None
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    if layer == 0b00:  # ADTS: MPEG-2/4 AAC
        if head[1] & 0xF6 == 0xF0 and (head[2] >> 2) & 0x0F < 13:
            return MediaKind("audio", "aac")
        return None
    bitrate_index = head[2] >> 4
    rate_index = (head[2] >> 2) & 0b11
    if version == 0b01 or bitrate_index in (0, 0xF) or rate_index == 0b11:
        return None
    return MediaKind("audio", "mp3")


def _is_bmp(head: bytes) -> bool:
    """ "BM" alone is too weak (any text may start with it): also check the DIB header size."""
    return (
        len(head) >= 18
        and head[:2] == b"BM"
        and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES
    )


# --- text ----------------------------------------------------------------------------------

_HTML_MARKERS = ("<html", "<body", "<head")


def _as_text(head: bytes) -> str | None:
    """The head decoded, or None when it is not text: NUL bytes (without a UTF-16/32 BOM), no
    plausible encoding, or too many control characters once decoded."""
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return _readable(_decode_prefix(head[len(bom) :], encoding))
    if b"\x00" in head:
        return None
    text = _decode_prefix(head, "utf-8")
    if text is None:
        from charset_normalizer import from_bytes

        best = from_bytes(head).best()
        text = str(best) if best is not None else None
    return _readable(text)


def _decode_prefix(data: bytes, encoding: str) -> str | None:
    """Decode a head that may end mid-character (it was cut at 64 KiB)."""
    try:
        return codecs.getincrementaldecoder(encoding)("strict").decode(data, final=False)
    except UnicodeDecodeError:
        return None


def _readable(text: str | None) -> str | None:
    if text is None:
        return None
    return text if is_readable(text) else None


def _text_kind(text: str, path: Path) -> MediaKind:
    start = text.lstrip("\ufeff \t\r\n").lower()
    if start.startswith(("<!doctype html", "<html")):
        return MediaKind("text", "html")
    # Markup that opens with a comment, an XML declaration or <head> still counts; prose that
    # merely mentions "<html>" does not, because it does not start with a tag.
    if start.startswith("<") and any(m in start[:4096] for m in _HTML_MARKERS):
        return MediaKind("text", "html")
    if path.suffix.lower() in MARKDOWN_SUFFIXES:
        return MediaKind("text", "md")
    return MediaKind("text", "txt")


# --- fallback ------------------------------------------------------------------------------


def _fallback_filetype(head: bytes) -> MediaKind:
    """Rarer media formats via the `filetype` package, when installed; anything else is refused
    with a reason that names what it is when that is known."""
    try:
        import filetype
    except ImportError:
        raise UnsupportedContent(BINARY_REASON) from None
    guess = filetype.guess(head)
    if guess is None:
        raise UnsupportedContent(BINARY_REASON)
    media = guess.mime.split("/", 1)[0]
    if media in ("image", "audio", "video"):
        return MediaKind(media, guess.extension)
    raise UnsupportedContent(
        f"unsupported format: {guess.mime} (not a supported text, image, audio or video format)"
    )
