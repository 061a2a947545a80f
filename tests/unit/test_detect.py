"""Content-based detection: real files written to tmp_path, misnamed on purpose."""

from __future__ import annotations

import io
import os
import struct
import wave
import zipfile
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image

from mmrag.ingest.detect import HEAD_BYTES, MediaKind, UnsupportedContent, detect_kind


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def pdf_bytes() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(0, 10, "A real PDF")
    return bytes(pdf.output())


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def wav_bytes() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    return buf.getvalue()


def box(kind: bytes, payload: bytes) -> bytes:
    """One ISO-BMFF box (size, type, payload)."""
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    return box(b"ftyp", major + b"\x00\x00\x02\x00" + b"".join(compatible))


def hdlr(handler: bytes) -> bytes:
    return box(b"hdlr", b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00" + handler + b"\x00" * 13)


def ebml(doctype: bytes, *codec_ids: bytes) -> bytes:
    """Matroska/WebM: EBML header with DocType, then CodecID elements as a Tracks list has."""
    header = b"\x42\x82" + bytes([0x80 | len(doctype)]) + doctype
    tracks = b"".join(b"\x86" + bytes([0x80 | len(c)]) + c for c in codec_ids)
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(header)]) + header + b"\x18\x53\x80\x67" + tracks


# --- text ----------------------------------------------------------------------------------


def test_utf8_text_is_txt_and_markdown_only_by_extension(tmp_path: Path) -> None:
    body = "# Sourdough\n\nFeed the starter — twice a day.\n".encode()
    assert detect_kind(write(tmp_path, "notes.txt", body)) == MediaKind("text", "txt")
    assert detect_kind(write(tmp_path, "notes.md", body)) == MediaKind("text", "md")
    assert detect_kind(write(tmp_path, "notes.MARKDOWN", body)) == MediaKind("text", "md")
    assert detect_kind(write(tmp_path, "notes", body)) == MediaKind("text", "txt")


def test_utf16_with_bom_is_text_despite_nul_bytes(tmp_path: Path) -> None:
    data = "Grüße aus Köln\r\nZweite Zeile\r\n".encode("utf-16")  # BOM + NUL-laden LE
    assert b"\x00" in data
    assert detect_kind(write(tmp_path, "win.txt", data)) == MediaKind("text", "txt")


def test_cp1252_text_is_text(tmp_path: Path) -> None:
    data = "Crème brûlée, jalapeño, Müller, façade, résumé.\n".encode("cp1252") * 5
    assert detect_kind(write(tmp_path, "legacy.txt", data)) == MediaKind("text", "txt")


def test_multibyte_char_cut_at_the_64k_boundary_is_still_text(tmp_path: Path) -> None:
    # "é" is two bytes in UTF-8; place one so the head ends between them.
    data = b"a" * (HEAD_BYTES - 1) + "é and more".encode()
    assert detect_kind(write(tmp_path, "big.txt", data)) == MediaKind("text", "txt")


def test_utf16_surrogate_pair_cut_at_the_64k_boundary_is_still_text(tmp_path: Path) -> None:
    # BOM (2 bytes) + 32,766 UTF-16 units = 65,534 bytes: the emoji's 4 bytes straddle 64 KiB.
    data = ("a" * 32766 + "😀 tail").encode("utf-16")
    assert detect_kind(write(tmp_path, "wide.txt", data)) == MediaKind("text", "txt")


def test_control_characters_are_not_text_even_when_valid_utf8(tmp_path: Path) -> None:
    data = bytes(range(1, 32)) * 100  # valid UTF-8, no NUL, but nothing a person wrote
    with pytest.raises(UnsupportedContent, match="binary content"):
        detect_kind(write(tmp_path, "table.txt", data))


@pytest.mark.parametrize(
    "content",
    [
        "<!DOCTYPE html><html><body><p>x</p></body></html>",
        "\ufeff\n  <HTML lang='en'><body>x</body></HTML>",
        "<?xml version='1.0'?>\n<!-- saved page -->\n<html><body>x</body></html>",
        "<div>fragment</div>\n<body>loose markup</body>",
    ],
)
def test_html_by_content_whatever_the_name(tmp_path: Path, content: str) -> None:
    assert detect_kind(write(tmp_path, "page.txt", content.encode())) == MediaKind("text", "html")


def test_prose_that_mentions_html_tags_stays_text(tmp_path: Path) -> None:
    data = b"How to write a page: open with <html> and put content in <body>.\n"
    assert detect_kind(write(tmp_path, "howto.md", data)) == MediaKind("text", "md")


def test_html_file_with_plain_text_is_txt(tmp_path: Path) -> None:
    assert detect_kind(write(tmp_path, "x.html", b"just words\n")) == MediaKind("text", "txt")


def test_text_starting_with_bm_is_not_a_bitmap(tmp_path: Path) -> None:
    data = b"BMW and Audi both make estate cars with room for dogs.\n"
    assert detect_kind(write(tmp_path, "cars.txt", data)) == MediaKind("text", "txt")


# --- documents and media by signature --------------------------------------------------------


def test_pdf_named_txt_is_pdf(tmp_path: Path) -> None:
    assert detect_kind(write(tmp_path, "report.txt", pdf_bytes())) == MediaKind("text", "pdf")


def test_pdf_with_junk_before_the_header_is_pdf(tmp_path: Path) -> None:
    data = b"\x00\x00junk from a mail gateway\n" + pdf_bytes()
    assert detect_kind(write(tmp_path, "mail.bin", data)) == MediaKind("text", "pdf")


def test_png_named_pdf_is_png(tmp_path: Path) -> None:
    assert detect_kind(write(tmp_path, "scan.pdf", image_bytes("PNG"))) == MediaKind("image", "png")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "jpeg"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff"), ("WEBP", "webp")],
)
def test_real_images(tmp_path: Path, fmt: str, expected: str) -> None:
    path = write(tmp_path, "picture.dat", image_bytes(fmt))
    assert detect_kind(path) == MediaKind("image", expected)


def test_wav_named_mp3_is_wav(tmp_path: Path) -> None:
    assert detect_kind(write(tmp_path, "song.mp3", wav_bytes())) == MediaKind("audio", "wav")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (ftyp(b"isom", b"isom", b"avc1") + box(b"mdat", b"\x00" * 64), MediaKind("video", "mp4")),
        (ftyp(b"M4A ", b"M4A ", b"mp42") + box(b"mdat", b"\x00" * 64), MediaKind("audio", "m4a")),
        # iTunes video lists "M4A " as compatible: still video
        (ftyp(b"M4V ", b"M4V ", b"M4A ", b"mp42"), MediaKind("video", "mp4")),
        (ftyp(b"qt  ", b"qt  "), MediaKind("video", "mov")),
        (ftyp(b"heic", b"mif1", b"heic"), MediaKind("image", "heic")),
        (ftyp(b"mif1", b"mif1", b"avif"), MediaKind("image", "avif")),
        # generic brand, but the only track handler in the head is sound: a podcast
        (ftyp(b"isom", b"isom") + box(b"moov", hdlr(b"soun")), MediaKind("audio", "m4a")),
        (
            ftyp(b"isom", b"isom") + box(b"moov", hdlr(b"vide") + hdlr(b"soun")),
            MediaKind("video", "mp4"),
        ),
        (box(b"moov", hdlr(b"vide")), MediaKind("video", "mov")),  # pre-ftyp QuickTime
    ],
)
def test_iso_media_family(tmp_path: Path, data: bytes, expected: MediaKind) -> None:
    assert detect_kind(write(tmp_path, "clip.bin", data)) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (ebml(b"webm", b"V_VP9", b"A_OPUS"), MediaKind("video", "webm")),
        (ebml(b"webm", b"A_OPUS"), MediaKind("audio", "webm")),
        (ebml(b"matroska", b"V_MPEG4/ISO/AVC"), MediaKind("video", "mkv")),
        (b"RIFF\x00\x10\x00\x00AVI LIST" + b"\x00" * 32, MediaKind("video", "avi")),
        (b"fLaC\x00\x00\x00\x22" + b"\x00" * 34, MediaKind("audio", "flac")),
        (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01vorbis" + b"\x00" * 20, MediaKind("audio", "ogg")),
        (b"OggS\x00\x02" + b"\x00" * 22 + b"\x80theora" + b"\x00" * 20, MediaKind("video", "ogv")),
        (
            b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 64,
            MediaKind("audio", "mp3"),
        ),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00fLaC" + b"\x00" * 64, MediaKind("audio", "flac")),
        (b"\xff\xfb\x90\x64" + b"\x00" * 413, MediaKind("audio", "mp3")),  # MPEG-1 layer III
        (b"\xff\xf1\x50\x80" + b"\x00" * 64, MediaKind("audio", "aac")),  # ADTS
    ],
)
def test_audio_and_video_signatures(tmp_path: Path, data: bytes, expected: MediaKind) -> None:
    assert detect_kind(write(tmp_path, "media.txt", data)) == expected


def test_rarer_image_formats_come_from_the_filetype_fallback(tmp_path: Path) -> None:
    assert detect_kind(write(tmp_path, "favicon", image_bytes("ICO"))) == MediaKind("image", "ico")


# --- refusals --------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedContent, match=r"^empty file \(0 bytes\)$"):
        detect_kind(write(tmp_path, "empty.txt", b""))


def test_random_bytes_named_txt_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", os.urandom(4096))
    with pytest.raises(UnsupportedContent, match="binary content"):
        detect_kind(path)


def test_random_bytes_without_nul_are_refused(tmp_path: Path) -> None:
    # No NUL byte to give it away: decoding plausibility has to reject it.
    data = bytes(b for b in os.urandom(6000) if b)[:4096]
    with pytest.raises(UnsupportedContent, match="binary content"):
        detect_kind(write(tmp_path, "notes.txt", data))


def test_known_non_media_binary_is_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "zipped words")
    with pytest.raises(UnsupportedContent, match="unsupported format: application/zip"):
        detect_kind(write(tmp_path, "notes.txt", buf.getvalue()))


# --- head argument ---------------------------------------------------------------------------


def test_given_head_is_used_instead_of_reading(tmp_path: Path) -> None:
    missing = tmp_path / "not-written.bin"  # would raise FileNotFoundError if opened
    assert detect_kind(missing, head=image_bytes("PNG")) == MediaKind("image", "png")
    with pytest.raises(UnsupportedContent, match="empty file"):
        detect_kind(missing, head=b"")


def test_unreadable_path_raises_oserror_not_unsupported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        detect_kind(tmp_path / "gone.txt")
