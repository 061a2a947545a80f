"""Write the sample photos in ``data/library/photos/`` from scikit-image's bundled images.

scikit-image ships these photos inside its wheel (no download); their sources and licences are
listed in ``data/PHOTO_CREDITS.md``. Saved as JPEG (quality 88) so the library has real
camera-like files; re-running writes the same bytes.

Usage: ``python data/make_sample_photos.py`` (needs scikit-image, the `dev` extra)
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from skimage import data

PHOTOS_DIR = Path(__file__).resolve().parent / "library" / "photos"

# file name -> scikit-image sample
PHOTOS = {
    "chelsea the cat.jpg": "chelsea",
    "astronaut.jpg": "astronaut",
    "coffee.jpg": "coffee",
    "rocket launch.jpg": "rocket",
    "coins.jpg": "coins",
    "wall clock.jpg": "clock",
    "hubble deep field.jpg": "hubble_deep_field",
    "scanned page.png": "page",  # printed words: found through OCR where Tesseract is installed
}


def main() -> None:
    PHOTOS_DIR.mkdir(parents=True, exist_ok=True)
    for name, sample in PHOTOS.items():
        arr = getattr(data, sample)()
        img = Image.fromarray(arr)
        target = PHOTOS_DIR / name
        if target.suffix == ".jpg":
            img.convert("RGB").save(target, quality=88)
        else:
            img.save(target)
        print(f"{target.relative_to(PHOTOS_DIR.parent.parent)}: {img.size[0]}x{img.size[1]}")


if __name__ == "__main__":
    main()
