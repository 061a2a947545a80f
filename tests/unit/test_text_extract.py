"""Text extraction from real files written to tmp_path: encodings, HTML, PDF pages, damage."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pytest
from fpdf import FPDF
from fpdf.enums import EncryptionMethod

from mmrag.pipelines.text.extract import (
    BLOCK_SEPARATOR,
    ExtractionError,
    TextBlock,
    decode_text,
    extract_text,
)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_offsets_exact(blocks: list[TextBlock]) -> None:
    full = BLOCK_SEPARATOR.join(b.text for b in blocks)
    for b in blocks:
        assert full[b.char_start : b.char_start + len(b.text)] == b.text


def make_pdf(pages: list[str], **encryption: object) -> bytes:
    """A PDF with one page per entry; an empty entry makes a page with a drawing but no text."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
        else:
            pdf.rect(20, 20, 80, 60)
    if encryption:
        pdf.set_encryption(encryption_method=EncryptionMethod.RC4, **encryption)
    return bytes(pdf.output())


PAGES = [
    "Aardvarks dig burrows at night.\nThey eat termites.",
    "Bicycles need oiled chains and pumped tyres.",
    "",  # a drawing only: skipped, but later pages keep their numbers
    "Comets grow icy tails near the sun.",
]


# --- plain text ------------------------------------------------------------------------------


def test_utf8_text_one_block_with_normalised_newlines(tmp_path: Path) -> None:
    path = write(
        tmp_path, "soup.txt", "Red lentil soup\r\n\r\nSimmer 20 min.\rServe — hot.\n".encode()
    )
    assert extract_text(path, "txt") == [
        TextBlock("Red lentil soup\n\nSimmer 20 min.\nServe — hot.", None, 0)
    ]


@pytest.mark.parametrize(
    "data",
    [
        "Grüße aus Köln — 東京".encode("utf-16"),  # BOM + little-endian
        codecs.BOM_UTF16_BE + "Grüße aus Köln — 東京".encode("utf-16-be"),
        "Grüße aus Köln — 東京".encode("utf-32"),
        codecs.BOM_UTF8 + "Grüße aus Köln — 東京".encode(),
    ],
)
def test_byte_order_marks(tmp_path: Path, data: bytes) -> None:
    [block] = extract_text(write(tmp_path, "bom.md", data), "md")
    assert block.text == "Grüße aus Köln — 東京"  # no stray \ufeff either


@pytest.mark.parametrize(
    "text",
    [
        "Crème brûlée for señor Müller: the niño wants jalapeño on his résumé-café façade.",
        "Café über niño",  # short: a detector alone reads this as cp1250 "nińo"
    ],
)
def test_cp1252_accents_decode_right(tmp_path: Path, text: str) -> None:
    [block] = extract_text(write(tmp_path, "legacy.txt", text.encode("cp1252")), "txt")
    assert block.text == text


def test_cp1252_smart_quotes_and_euro(tmp_path: Path) -> None:
    text = "“Smart quotes” – cost: 5 € … naïve"
    [block] = extract_text(write(tmp_path, "q.txt", text.encode("cp1252")), "txt")
    assert block.text == text


def test_mostly_utf8_with_one_corrupt_byte_stays_utf8(tmp_path: Path) -> None:
    good = "Jalapeño señor niño über Grüße. " * 20
    data = good.encode() + b"\xff" + good.encode()
    [block] = extract_text(write(tmp_path, "log.txt", data), "txt")
    assert block.text.count("niño") == 40  # not re-read as cp1252 ("niÃ±o")
    assert "\ufffd" in block.text


def test_undecodable_bytes_raise_a_plain_reason(tmp_path: Path) -> None:
    data = bytes(b for b in os.urandom(6000) if b)[:4096]
    with pytest.raises(ExtractionError, match=r"^could not decode text \(tried utf-8"):
        extract_text(write(tmp_path, "noise.txt", data), "txt")


def test_nul_characters_are_dropped(tmp_path: Path) -> None:
    [block] = extract_text(write(tmp_path, "nul.txt", "ab\x00cd".encode("utf-16")), "txt")
    assert block.text == "abcd"


def test_whitespace_only_is_no_text_content(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match=r"^no text content$"):
        extract_text(write(tmp_path, "blank.txt", b" \r\n\t\n"), "txt")


def test_files_over_max_bytes_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "big.txt", b"word " * 400)  # 2,000 bytes
    with pytest.raises(ExtractionError, match="too large"):
        extract_text(path, "txt", max_bytes=1_000)
    assert extract_text(path, "txt", max_bytes=2_000)[0].text.startswith("word word")


def test_unknown_format_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jpeg"):
        extract_text(write(tmp_path, "x.txt", b"hello"), "jpeg")


def test_decode_text_prefers_bom_over_declared_charset() -> None:
    data = codecs.BOM_UTF8 + "naïve".encode()
    assert decode_text(data, declared="cp1252") == "naïve"


# --- HTML ------------------------------------------------------------------------------------

ARTICLE_PAGE = """<!DOCTYPE html>
<html><head><title>Red Lentil Soup &amp; More</title>
<script>var trackerSecret = "do-not-index";</script><style>.nav { color: red }</style></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/about">About our team</a></li>
<li><a href="/shop">Shop the store</a></li></ul></nav>
<article><h1>Red lentil soup</h1>
<p>Rinse the lentils twice and simmer them with cumin for twenty minutes until they collapse
into a thick, golden soup.</p>
<p>Finish with lemon juice and a spoon of yoghurt; it keeps for three days in the fridge.</p>
</article>
<footer><p>Copyright 2024 Example Kitchen. All rights reserved. Privacy policy.</p></footer>
<script>console.log("pixelTracking")</script>
</body></html>
"""


def test_html_main_text_with_title_and_no_boilerplate(tmp_path: Path) -> None:
    [block] = extract_text(write(tmp_path, "soup.html", ARTICLE_PAGE.encode()), "html")
    assert block.page is None
    assert block.text.split("\n")[0] == "Red Lentil Soup & More"  # title first, entity decoded
    assert "simmer them with cumin for twenty minutes" in block.text
    assert "spoon of yoghurt" in block.text
    for boilerplate in (
        "trackerSecret",
        "pixelTracking",
        "color: red",
        "Shop the store",
        "All rights reserved",
    ):
        assert boilerplate not in block.text


def test_html_meta_charset_is_respected(tmp_path: Path) -> None:
    page = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
        "<title>Menü</title></head><body><p>“Crème brûlée” for señor Müller, the niño’s "
        "favourite dessert, served every Sunday at the café.</p></body></html>"
    )
    # iso-8859-1 in a meta means windows-1252 to a browser: the curly quotes must survive.
    [block] = extract_text(write(tmp_path, "menu.html", page.encode("cp1252")), "html")
    assert block.text.startswith("Menü\n")
    assert "“Crème brûlée” for señor Müller, the niño’s" in block.text


def test_html_falls_back_to_tag_stripping_when_trafilatura_finds_nothing(tmp_path: Path) -> None:
    # trafilatura discards <aside> as boilerplate and returns nothing for this page
    page = (
        "<html><head><title>Sidebar</title><style>p{}</style></head><body>"
        "<aside><p>Opening hours: nine to five</p><p>Closed on Mondays</p></aside>"
        "<script>trackVisitor()</script></body></html>"
    )
    [block] = extract_text(write(tmp_path, "aside.html", page.encode()), "html")
    assert block.text == "Sidebar\nOpening hours: nine to five\nClosed on Mondays"


def test_html_fallback_copes_with_an_unclosed_head(tmp_path: Path) -> None:
    page = "<html><head><title>Hours</title><style>p{}</style><body><aside>Open at nine</aside>"
    [block] = extract_text(write(tmp_path, "sloppy.html", page.encode()), "html")
    assert block.text == "Hours\nOpen at nine"


def test_html_with_only_script_has_no_text(tmp_path: Path) -> None:
    page = b"<html><head><script>boot()</script></head><body><script>x()</script></body></html>"
    with pytest.raises(ExtractionError, match=r"^no text content$"):
        extract_text(write(tmp_path, "app.html", page), "html")


# --- PDF -------------------------------------------------------------------------------------


def test_pdf_one_block_per_page_with_exact_offsets(tmp_path: Path) -> None:
    blocks = extract_text(write(tmp_path, "doc.pdf", make_pdf(PAGES)), "pdf")
    assert [b.page for b in blocks] == [1, 2, 4]
    assert "Aardvarks dig burrows" in blocks[0].text and "termites" in blocks[0].text
    assert "Bicycles" in blocks[1].text and "Aardvarks" not in blocks[1].text
    assert "Comets grow icy tails" in blocks[2].text
    assert blocks[0].char_start == 0
    assert blocks[1].char_start == len(blocks[0].text) + 2
    assert_offsets_exact(blocks)


def test_truncated_pdf_is_refused_not_half_read(tmp_path: Path) -> None:
    data = make_pdf(PAGES)
    path = write(tmp_path, "cut.pdf", data[: int(len(data) * 0.4)])
    with pytest.raises(ExtractionError, match="truncated or damaged"):
        extract_text(path, "pdf")


def test_pdf_cut_after_an_earlier_end_marker_is_refused(tmp_path: Path) -> None:
    # Like an incremental update cut short: the old %%EOF lets a lenient reader return the old
    # revision's text as if it were the document.
    old = make_pdf(["Old revision text"])
    update = make_pdf([" ".join(f"word{i}" for i in range(n, n + 300)) for n in (0, 300, 600)])
    assert len(update) // 2 > 1024  # the old %%EOF is outside the end window readers search
    path = write(tmp_path, "updated.pdf", old + update[: len(update) // 2])
    with pytest.raises(ExtractionError, match="truncated or damaged"):
        extract_text(path, "pdf")


def test_pdf_with_zeroed_middle_blames_damage_not_ocr(tmp_path: Path) -> None:
    data = make_pdf(PAGES)
    third = len(data) // 3
    path = write(tmp_path, "holes.pdf", data[:third] + b"\x00" * third + data[2 * third :])
    with pytest.raises(ExtractionError, match="damaged") as err:
        extract_text(path, "pdf")
    assert "OCR" not in str(err.value)


def test_pdf_with_wrecked_structure_says_damaged(tmp_path: Path) -> None:
    data = b"%PDF-1.4\n" + b"this is not a pdf body\n" * 20 + b"%%EOF\n"
    with pytest.raises(ExtractionError, match="damaged"):
        extract_text(write(tmp_path, "wreck.pdf", data), "pdf")


def test_pdf_without_text_suggests_ocr(tmp_path: Path) -> None:
    path = write(tmp_path, "scan.pdf", make_pdf(["", ""]))
    with pytest.raises(
        ExtractionError, match=r"^no extractable text \(scanned PDF without OCR\?\)"
    ):
        extract_text(path, "pdf")


def test_pdf_needing_a_password_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.pdf", make_pdf(PAGES, owner_password="o", user_password="u"))
    with pytest.raises(ExtractionError, match=r"^PDF is encrypted"):
        extract_text(path, "pdf")


def test_pdf_encrypted_with_empty_user_password_opens(tmp_path: Path) -> None:
    path = write(tmp_path, "locked.pdf", make_pdf(PAGES, owner_password="o", user_password=""))
    blocks = extract_text(path, "pdf")
    assert [b.page for b in blocks] == [1, 2, 4]
    assert "Comets grow icy tails" in blocks[-1].text
