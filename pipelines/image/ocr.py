"""Words printed in an image (signs, screenshots, scanned pages), read by Tesseract.

OCR text becomes a `text` piece of the image, so a text query finds the picture by its words.
Tesseract is a system program (`apt-get install tesseract-ocr`, `brew install tesseract`);
without it OCR is off and the run says so once, rather than failing every image.
"""

from __future__ import annotations

import logging
import re
import shutil
from functools import cache

from PIL import Image

log = logging.getLogger(__name__)

_WORDISH = re.compile(r"[^\W_]{2,}")
MIN_WORDS = 2  # fewer recognised words than this is almost always noise read into a photo


@cache
def tesseract_available() -> bool:
    found = shutil.which("tesseract") is not None
    if not found:
        log.warning("tesseract not found: images are indexed without OCR text")
    return found


def read_text(image: Image.Image, lang: str = "eng") -> str:
    """The words Tesseract reads, whitespace tidied; "" when there are none (or no Tesseract)."""
    if not tesseract_available():
        return ""
    import pytesseract

    raw = pytesseract.image_to_string(image.convert("L"), lang=lang)
    text = " ".join(raw.split())
    return text if len(_WORDISH.findall(text)) >= MIN_WORDS else ""
