"""Photos -> every photo space (`image`, `clip`, ...), with labels and OCR words as text.

Reader threads decode (once, to the size the models need), make the thumbnail (once per content
hash) and preprocess to each space's input; the runner batches those across files. One
classifier pass gives both the vector and the top labels, and the labels come back as derived
`text` pieces, so a text query ("cat") finds photos even without CLIP; with CLIP, text queries
also search the `clip` space directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrag.kinds import MediaType, Modality
from mmrag.pipelines.base import Piece, SpaceEncoder, pick_device, usable_spaces
from mmrag.pipelines.image.decode import decode_image, thumbnail
from mmrag.pipelines.image.ocr import read_text, tesseract_available
from mmrag.pipelines.image.query import decode_side
from mmrag.pipelines.image.spaces import JpegBytes, PhotoSpace
from mmrag.store.thumbnails import THUMBNAIL_SIDE, ensure_thumbnail

# Photos decode reduced (JPEG draft mode: 1/2, 1/4, 1/8 scale at a fraction of the cost) to the
# shorter side the models resize to (224-384 px) and the thumbnail needs, once; OCR needs more
# pixels to read small print. Query images decode as photos do, so both see the same pixels.
OCR_INPUT_SIDE = 1600


@dataclass(frozen=True)
class ImageConfig:
    thumbnails: Path = Path("data/thumbs")
    max_image_mpx: int = 100
    ocr: bool = True
    ocr_lang: str = "eng"
    device: str = "auto"  # where JPEGs decode as tensors when jpeg_decode says so
    jpeg_decode: str = "auto"  # auto | pillow | torchvision


class ImagePipeline:
    """A Pipeline for photos: a vector in each photo space, labels and OCR words in `text`
    (shared with documents)."""

    media = MediaType.IMAGE

    def __init__(
        self, vision: list[PhotoSpace], text: SpaceEncoder, config: ImageConfig | None = None
    ):
        if not vision:
            raise ValueError("photos need an image model or a CLIP model (both are unset)")
        self.vision = vision
        self.text = text
        self.config = config or ImageConfig()
        # Labels and OCR (text) are derived: a photo may have none, so done = in these spaces.
        self.primary = tuple(s.name for s in self.vision)
        self._ocr = self.config.ocr and tesseract_available()
        self._jpeg_device: str | None = ""  # "" = not decided yet

    def encoders(self) -> dict[str, SpaceEncoder]:
        return {**{s.name: s for s in self.vision}, self.text.name: self.text}

    def space(self, name: str) -> PhotoSpace | None:
        return next((s for s in self.vision if s.name == name), None)

    def decode_side(self, spaces: list[PhotoSpace] | None = None) -> int:
        return decode_side(self.vision if spaces is None else spaces)

    def usable(self, only: frozenset[str] | None = None) -> list[PhotoSpace]:
        """The photo spaces a file goes to (those in `only`, if given) whose model can be had.
        One without is left out with a warning naming it, so the file's other spaces (labels,
        OCR) are still written; with none at all the file waits for a model (raised)."""
        found, missing = usable_spaces(self.vision, only)
        if missing is not None and not found:
            raise missing
        return found

    def save_thumbnail(self, key: str, image: Any) -> None:
        """A picture's thumbnail in the cache, once per key (video keyframes use it too)."""
        ensure_thumbnail(self.config.thumbnails, key, lambda: thumbnail(image))

    def jpeg_device(self) -> str | None:
        """Where JPEGs decode as tensors (config.jpeg_decode), or None for Pillow."""
        if self._jpeg_device == "":
            device = pick_device(self.config.device)
            mode = self.config.jpeg_decode
            use = mode == "torchvision" or (mode == "auto" and device.startswith("cuda"))
            self._jpeg_device = device if use else None
        return self._jpeg_device

    def prepare(
        self, path: str, fmt: str, media_id: str = "", only: frozenset[str] | None = None
    ) -> list[Piece]:
        vision = self.usable(only)
        ocr = self._ocr and (only is None or self.text.name in only)
        limit = self.config.max_image_mpx * 1_000_000
        payloads: dict[str, Any] = {}
        if ocr:  # Tesseract needs the small print's pixels; the models downsize again
            img = decode_image(Path(path), max_pixels=limit, max_side=OCR_INPUT_SIDE)
        elif fmt == "jpeg" and self.jpeg_device():
            # Pillow decodes only a thumbnail's worth (JPEG draft: a fraction of the work), for
            # the thumbnail, the metadata and to refuse a broken file here; the models get the
            # bytes, decoded in their batch on their device. CMYK JPEGs stay with Pillow.
            img = decode_image(Path(path), max_pixels=limit, short_side=THUMBNAIL_SIDE)
            if img.meta.get("mode") in ("RGB", "L"):
                blob = JpegBytes(Path(path).read_bytes())
                payloads = {space.name: blob for space in vision}
            else:
                img = decode_image(
                    Path(path), max_pixels=limit, short_side=self.decode_side(vision)
                )
        else:  # one reduction, shared by the models and the thumbnail
            img = decode_image(Path(path), max_pixels=limit, short_side=self.decode_side(vision))
        if media_id:
            self.save_thumbnail(media_id, img)
        meta = {
            **img.meta,
            "width": img.width,
            "height": img.height,
            "format": img.format,
            "frames": img.frames,
        }
        pieces = [
            Piece(
                payload=payloads.get(space.name) or space.preprocess(img.image),
                modality=Modality.IMAGE,
                start=0,
                end=0,
                text="",
                meta=meta,
                space=space.name,
            )
            for space in vision
        ]
        if ocr and (words := read_text(img.image, self.config.ocr_lang)):
            pieces.append(Piece(words, Modality.OCR, 0, 0, words, space=self.text.name))
        return pieces
