"""Photos -> the `image` space (a classifier's pooled features) and the `clip` space (CLIP or
SigLIP); labels and OCR words as text.

Reader threads decode (once, to the size the models need), make the thumbnail (once per content
hash) and preprocess to each model's input tensor; the runner batches those tensors across
files. One classifier pass gives both the vector and the top labels, and the labels come back as
derived `text` pieces, so a text query ("cat") finds photos even without CLIP; with CLIP, text
queries also search the `clip` space directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrag.settings import Settings
from pipelines.base import Encoded, LazySpace, Piece, SpaceEncoder
from pipelines.image_decode import THUMBNAIL_SIDE, decode_image, ensure_thumbnail
from pipelines.ocr import read_text, tesseract_available
from pipelines.text_pipeline import LabelSet

# Photos decode reduced (JPEG draft mode: 1/2, 1/4, 1/8 scale at a fraction of the cost) to the
# shorter side the models resize to (224-384 px) and the thumbnail needs, once; OCR needs more
# pixels to read small print. Query images decode as photos do, so both see the same pixels.
OCR_INPUT_SIDE = 1600


@dataclass(frozen=True)
class JpegBytes:
    """A JPEG file's bytes, decoded only in the space's batch (nvJPEG on the GPU)."""

    data: bytes


class _PhotoSpace(LazySpace):
    extra = "image"

    def preprocess(self, image: Any) -> Any:
        """Reader side: resized, cropped uint8 pixels (normalised later, a batch at a time)."""
        return self.encoder.pixels.of_image(image)

    def batch(self, payloads: list[Any]) -> Any:
        """Pixels and JPEG bytes -> one model input: the JPEGs decoded together on the model's
        device and taken through the same steps, then the whole batch normalised at once."""
        import torch

        from pipelines.image_encoders import decode_jpegs

        enc = self.encoder
        jpegs = [i for i, p in enumerate(payloads) if isinstance(p, JpegBytes)]
        rows = list(payloads)
        if jpegs:
            decoded = decode_jpegs([payloads[i].data for i in jpegs], enc.device)
            for i, chw in zip(jpegs, decoded, strict=True):
                rows[i] = enc.pixels.of_tensor(chw)
            rows = [r.to(enc.device) for r in rows]
        return enc.pixels.normalise(torch.stack(rows), enc.device, enc.dtype)

    def encode_images(self, images: list[Any]) -> Any:
        """Query side: PIL images -> vectors in this space."""
        return self.encoder.encode_images(images)


class ImageSpace(_PhotoSpace):
    """The `image` space: a classifier's pooled features, and its top labels as text."""

    name = "image"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.image_model)

    def _load(self) -> Any:
        from pipelines.image_encoders import load_image_encoder

        return load_image_encoder(self.model_name, self.settings.device)

    def encode(self, payloads: list[Any]) -> Encoded:
        vectors, labels = self.encoder.encode_and_label(
            self.batch(payloads),
            k=self.settings.label_top_k,
            min_prob=self.settings.label_min_prob,
        )
        derived = [[_label_piece(found)] if found else [] for found in labels]
        return Encoded(vectors, derived)


class ClipSpace(_PhotoSpace):
    """The `clip` space: CLIP/SigLIP image vectors, searched with the text tower's vectors."""

    name = "clip"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.clip_model)

    def _load(self) -> Any:
        from pipelines.image_encoders import load_clip

        return load_clip(self.model_name, self.settings.device)

    def encode(self, payloads: list[Any]) -> Any:
        return self.encoder.encode_tensor(self.batch(payloads))

    def encode_texts(self, texts: list[str]) -> Any:
        return self.encoder.encode_texts(texts)


def _label_piece(found: list[tuple[str, float]]) -> Piece:
    labels = LabelSet(tuple(found))
    text = labels.text
    return Piece(
        payload=labels,
        modality="label",
        start=0,
        end=0,
        text=text,
        meta={"labels": [{"label": n, "p": p} for n, p in found]},
        space="text",
    )


def decode_side(spaces: list[Any]) -> int:
    """The shorter side every consumer can work from: the models' inputs, the thumbnail."""
    return max([THUMBNAIL_SIDE, *(s.encoder.pixels.short_side for s in spaces)])


class ImagePipeline:
    """A Pipeline for photos: `image` and `clip` vectors (each where configured), labels and
    OCR words in `text` (shared with documents)."""

    modalities = frozenset({"image"})

    def __init__(
        self,
        settings: Settings,
        text: SpaceEncoder,
        image: ImageSpace | None = None,
        clip: ClipSpace | None = None,
    ):
        self.settings = settings
        self.text = text
        self.image = image or (ImageSpace(settings) if settings.image_model else None)
        self.clip = clip or (ClipSpace(settings) if settings.clip_model else None)
        if self.image is None and self.clip is None:
            raise ValueError("photos need an image model or a CLIP model (both are unset)")
        self.vision: list[_PhotoSpace] = [s for s in (self.image, self.clip) if s is not None]
        # Labels and OCR (text) are derived: a photo may have none, so done = in these spaces.
        self.primary = tuple(s.name for s in self.vision)
        self._ocr = settings.ocr and tesseract_available()
        self._jpeg_device: str | None = ""  # "" = not decided yet

    def encoders(self) -> dict[str, SpaceEncoder]:
        return {**{s.name: s for s in self.vision}, "text": self.text}

    def decode_side(self) -> int:
        return decode_side(self.vision)

    def jpeg_device(self) -> str | None:
        """Where JPEGs decode as tensors (settings.jpeg_decode), or None for Pillow."""
        if self._jpeg_device == "":
            from pipelines.text_encoder import pick_device

            device = pick_device(self.settings.device)
            mode = self.settings.jpeg_decode
            use = mode == "torchvision" or (mode == "auto" and device.startswith("cuda"))
            self._jpeg_device = device if use else None
        return self._jpeg_device

    def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
        limit = self.settings.max_image_mpx * 1_000_000
        payloads: dict[str, Any] = {}
        if self._ocr:  # Tesseract needs the small print's pixels; the models downsize again
            img = decode_image(Path(path), max_pixels=limit, max_side=OCR_INPUT_SIDE)
        elif fmt == "jpeg" and self.jpeg_device():
            # Pillow decodes only a thumbnail's worth (JPEG draft: a fraction of the work), for
            # the thumbnail, the metadata and to refuse a broken file here; the models get the
            # bytes, decoded in their batch on their device. CMYK JPEGs stay with Pillow.
            img = decode_image(Path(path), max_pixels=limit, short_side=THUMBNAIL_SIDE)
            if img.meta.get("mode") in ("RGB", "L"):
                blob = JpegBytes(Path(path).read_bytes())
                payloads = {space.name: blob for space in self.vision}
            else:
                img = decode_image(Path(path), max_pixels=limit, short_side=self.decode_side())
        else:  # one reduction, shared by the models and the thumbnail
            img = decode_image(Path(path), max_pixels=limit, short_side=self.decode_side())
        if media_id:
            ensure_thumbnail(self.settings.thumbnails, media_id, img)
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
                modality="image",
                start=0,
                end=0,
                text="",
                meta=meta,
                space=space.name,
            )
            for space in self.vision
        ]
        if self._ocr and (words := read_text(img.image, self.settings.ocr_lang)):
            pieces.append(Piece(words, "ocr", 0, 0, words, space="text"))
        return pieces
