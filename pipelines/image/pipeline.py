"""Photos -> every photo space (`image`, `clip`, ...), with labels and OCR words as text.

Reader threads decode (once, to the size the models need), make the thumbnail (once per content
hash) and preprocess to each space's input (`read_photo`: model-free, so the runner's reader
processes can run it too, ingest/workers.py); the runner batches those across files. One
classifier pass gives both the vector and the top labels, and the labels come back as derived
`text` pieces, so a text query ("cat") finds photos even without CLIP; with CLIP, text queries
also search the `clip` space directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from mmrag.kinds import MediaType, Modality
from mmrag.pipelines.base import Piece, ReadResult, SpaceEncoder, pick_device, usable_spaces
from mmrag.pipelines.image.decode import ImageDecodeError, decode_image, thumbnail
from mmrag.pipelines.image.ocr import read_text, tesseract_available
from mmrag.pipelines.image.pixels import PixelSpec
from mmrag.pipelines.image.query import decode_side
from mmrag.pipelines.image.spaces import JpegBytes, PhotoSpace
from mmrag.store.thumbnails import THUMBNAIL_SIDE, ensure_thumbnail, thumbnail_file

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
    # False: made when first shown (mmrag.api); None: at ingest unless the models run on a GPU
    thumbnails_at_ingest: bool | None = None


class ImagePipeline:
    """A Pipeline for photos: a vector in each photo space, labels and OCR words in `text`
    (shared with documents)."""

    media = MediaType.IMAGE
    # What a reader process imports for read_photo (its forkserver imports them once)
    reader_modules = ("torch", "torchvision.transforms.functional", __name__)

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
        # Runs read_photo elsewhere (the runner's reader processes, ingest/workers.py) while
        # set; None: in the calling thread.
        self.offload: Callable[..., ReadResult] | None = None

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

    @cached_property
    def device(self) -> str:
        """Where the photo models run (config.device, `auto` resolved once)."""
        return pick_device(self.config.device)

    def thumbnails_at_ingest(self) -> bool:
        """Whether reading a photo makes its thumbnail (config.thumbnails_at_ingest). Unset: yes
        where the models run on the CPU, whose 10-100 ms a photo dwarf the encode's 0.3-0.5;
        no on a GPU, which embeds thousands a second while the CPU feeds it."""
        at_ingest = self.config.thumbnails_at_ingest
        return self.device == "cpu" if at_ingest is None else at_ingest

    def jpeg_device(self) -> str | None:
        """Where JPEGs decode as tensors (config.jpeg_decode), or None for Pillow."""
        mode = self.config.jpeg_decode
        use = mode == "torchvision" or (mode == "auto" and self.device.startswith("cuda"))
        return self.device if use else None

    def prepare(
        self, path: str, fmt: str, media_id: str = "", only: frozenset[str] | None = None
    ) -> list[Piece]:
        vision = self.usable(only)
        ocr = self._ocr and (only is None or self.text.name in only)
        plan = self._plan(vision, fmt, ocr)
        if self.offload is not None and plan.portable:  # a reader process
            read = self.offload(read_photo, plan, path, media_id)
        else:
            read = read_photo(plan, path, media_id)
        photo: PhotoRead = read.value
        meta = {
            **photo.meta,
            "width": photo.width,
            "height": photo.height,
            "format": photo.format,
            "frames": photo.frames,
        }
        blob = JpegBytes(Path(path).read_bytes()) if photo.as_jpeg else None
        pieces = [
            Piece(
                payload=blob or read.arrays[space.name],
                modality=Modality.IMAGE,
                start=0,
                end=0,
                text="",
                meta=meta,
                space=space.name,
            )
            for space in vision
        ]
        if photo.words:
            pieces.append(Piece(photo.words, Modality.OCR, 0, 0, photo.words, space=self.text.name))
        return pieces

    def _plan(self, vision: list[PhotoSpace], fmt: str, ocr: bool) -> PhotoPlan:
        """What reading one photo takes, without the models: each space's pixel steps (a
        PixelSpec where the space has one: picklable, so a reader process can take them)."""
        steps = {s.name: getattr(s, "pixel_steps", None) or s for s in vision}
        return PhotoPlan(
            thumbnails=self.config.thumbnails if self.thumbnails_at_ingest() else None,
            max_pixels=self.config.max_image_mpx * 1_000_000,
            decode_side=self.decode_side(vision),
            steps=steps,
            ocr_lang=self.config.ocr_lang if ocr else None,
            jpeg=fmt == "jpeg" and not ocr and bool(self.jpeg_device()),
        )


@dataclass(frozen=True)
class PhotoPlan:
    """One photo's reading, model-free: where its thumbnail goes (None: made when first shown),
    how far it decodes, and each space's pixel steps (a PixelSpec, or the space itself: then it
    is read in this process)."""

    thumbnails: Path | None
    max_pixels: int
    decode_side: int
    steps: dict[str, Any]
    ocr_lang: str | None  # None: no OCR
    jpeg: bool  # the models decode the JPEG's bytes themselves (nvJPEG)

    @property
    def portable(self) -> bool:
        """Whether a reader process can do it: every space's steps are a PixelSpec."""
        return all(isinstance(step, PixelSpec) for step in self.steps.values())


@dataclass(frozen=True)
class PhotoRead:
    """What reading a photo gives besides its pixels (ReadResult.arrays, one per space)."""

    width: int
    height: int
    format: str
    frames: int
    meta: dict[str, Any]
    as_jpeg: bool = False  # the models take the file's bytes (decoded on their device)
    words: str = ""  # OCR


def read_photo(plan: PhotoPlan, path: str, media_id: str) -> ReadResult:
    """Decode once, write the thumbnail, cut each space's input: the CPU work of a photo, the
    same in a reader thread and in a reader process (ingest/workers.py), so both give the same
    pixels."""
    if plan.ocr_lang:  # Tesseract needs the small print's pixels; the models downsize again
        img = decode_image(Path(path), max_pixels=plan.max_pixels, max_side=OCR_INPUT_SIDE)
    elif plan.jpeg:
        # Pillow decodes only a thumbnail's worth (JPEG draft: a fraction of the work), for
        # the thumbnail, the metadata and to refuse a broken file here; the models get the
        # bytes, decoded in their batch on their device. CMYK JPEGs stay with Pillow.
        img = decode_image(Path(path), max_pixels=plan.max_pixels, short_side=THUMBNAIL_SIDE)
        if img.meta.get("mode") not in ("RGB", "L"):
            img = decode_image(Path(path), max_pixels=plan.max_pixels, short_side=plan.decode_side)
    else:  # one reduction, shared by the models and the thumbnail
        img = decode_image(Path(path), max_pixels=plan.max_pixels, short_side=plan.decode_side)
    if media_id and plan.thumbnails:
        ensure_thumbnail(plan.thumbnails, media_id, lambda: thumbnail(img))
    as_jpeg = plan.jpeg and img.meta.get("mode") in ("RGB", "L")
    arrays = {} if as_jpeg else {name: _cut(step, img.image) for name, step in plan.steps.items()}
    words = read_text(img.image, plan.ocr_lang) if plan.ocr_lang else ""
    value = PhotoRead(img.width, img.height, img.format, img.frames, img.meta, as_jpeg, words or "")
    return ReadResult(value, arrays)


def shown_thumbnail(cache: Path, media_id: str, fp: BinaryIO, max_pixels: int) -> Path | None:
    """A photo's thumbnail made from its open file when a hit first shows it (none was made at
    ingest: `photo_thumbnails = "shown"`), stored as ingest stores one; its file, or None where
    the file no longer decodes or the cache cannot be written."""
    try:
        img = decode_image(fp, max_pixels=max_pixels, short_side=THUMBNAIL_SIDE)
        ensure_thumbnail(cache, media_id, lambda: thumbnail(img))
    except (ImageDecodeError, ValueError):  # undecodable now, or an unreadable cache
        return None
    return thumbnail_file(cache, media_id)


def _cut(step: Any, image: Any) -> Any:
    """A space's input from the decoded picture: its PixelSpec's steps, or its own preprocess."""
    return step.of_image(image) if isinstance(step, PixelSpec) else step.preprocess(image)
