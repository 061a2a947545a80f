"""Photos -> the `image` space (a classifier's pooled features); labels and OCR words as text.

Reader threads decode, make the thumbnail (once per content hash) and preprocess to the model's
input tensor; the runner batches those tensors across files. One forward pass gives both the
vector and the top labels, and the labels come back as derived `text` pieces, so a text query
("cat") finds photos even without a CLIP model.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mmrag.settings import Settings
from pipelines.base import Encoded, Piece, SpaceEncoder
from pipelines.image_decode import decode_image, ensure_thumbnail
from pipelines.milvus_store import Space, collection_name
from pipelines.model_resolver import ModelNotAvailable
from pipelines.ocr import read_text, tesseract_available

# Decode big JPEGs reduced (JPEG draft mode: 1/2, 1/4, 1/8 scale at a fraction of the cost):
# models look at 224-384 px and thumbnails at 256; OCR needs more pixels to read small print.
MODEL_INPUT_SIDE = 512
OCR_INPUT_SIDE = 1600


class ImageSpace:
    """The `image` space's SpaceEncoder; loads the classifier once, on first use."""

    name = "image"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_name = settings.image_model
        self._encoder = None
        self._failed: ModelNotAvailable | None = None
        self._lock = threading.Lock()

    @property
    def encoder(self):  # -> ClassifierEncoder (torch imported lazily)
        with self._lock:
            if self._failed:
                raise self._failed  # tried once this run: do not retry per image
            if self._encoder is None:
                try:
                    from pipelines.image_encoders import load_image_encoder

                    self._encoder = load_image_encoder(self.model_name, self.settings.device)
                except ModelNotAvailable as exc:
                    self._failed = exc
                    raise
                except ImportError as exc:  # torchvision comes with the `image` extra
                    self._failed = ModelNotAvailable(
                        f"the image space needs torchvision ({exc}); "
                        "install it with: pip install 'mmrag[image]'"
                    )
                    raise self._failed from exc
            return self._encoder

    @property
    def space(self) -> Space:
        return Space("image", self.model_name, self.encoder.dim)

    def collection(self, prefix: str) -> str:
        return collection_name(prefix, "image", self.model_name)

    def preprocess(self, image: Any) -> Any:
        return self.encoder.preprocess([image])[0]

    def encode(self, payloads: list[Any]) -> Encoded:
        import torch

        vectors, labels = self.encoder.encode_and_label(
            torch.stack(payloads),
            k=self.settings.label_top_k,
            min_prob=self.settings.label_min_prob,
        )
        derived = [[_label_piece(found)] if found else [] for found in labels]
        return Encoded(vectors, derived)

    def encode_images(self, images: list[Any]) -> Any:
        """Query side: PIL images -> vectors in this space."""
        return self.encoder.encode_images(images)


def _label_piece(found: list[tuple[str, float]]) -> Piece:
    text = ", ".join(name for name, _ in found)
    return Piece(
        payload=text,
        modality="label",
        start=0,
        end=0,
        text=text,
        meta={"labels": [{"label": n, "p": p} for n, p in found]},
        space="text",
    )


class ImagePipeline:
    """A Pipeline for photos: `image` vectors, labels in `text` (shared with documents)."""

    modalities = frozenset({"image"})
    primary = ("image",)  # labels (text) are derived, and a photo may have none

    def __init__(self, settings: Settings, text: SpaceEncoder, image: ImageSpace | None = None):
        self.settings = settings
        self.text = text
        self.image = image or ImageSpace(settings)
        self._ocr = settings.ocr and tesseract_available()

    def encoders(self) -> dict[str, SpaceEncoder]:
        return {"image": self.image, "text": self.text}

    def prepare(self, path: str, fmt: str, media_id: str = "") -> list[Piece]:
        img = decode_image(
            Path(path),
            max_pixels=self.settings.max_image_mpx * 1_000_000,
            max_side=OCR_INPUT_SIDE if self._ocr else MODEL_INPUT_SIDE,
        )
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
                payload=self.image.preprocess(img.image),
                modality="image",
                start=0,
                end=0,
                text="",
                meta=meta,
                space="image",
            )
        ]
        if self._ocr and (words := read_text(img.image, self.settings.ocr_lang)):
            pieces.append(Piece(words, "ocr", 0, 0, words, space="text"))
        return pieces
