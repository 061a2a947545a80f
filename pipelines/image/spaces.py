"""The photo spaces: `image` (a classifier's pooled features, its labels as text) and `clip`
(CLIP or SigLIP, searched with the text tower too).

A photo space takes a decoded picture in a reader thread (`preprocess`: resized, cropped uint8
pixels) and a batch of those on the model's thread (`encode`). The same spaces embed video
keyframes, and query pictures through `encode_query`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mmrag.kinds import Modality, QueryKind
from mmrag.pipelines.base import Encoded, LabelSet, LazySpace, Piece, SpaceEncoder


@dataclass(frozen=True)
class JpegBytes:
    """A JPEG file's bytes, decoded only in the space's batch (nvJPEG on the GPU)."""

    data: bytes


class PhotoSpace(SpaceEncoder, Protocol):
    """What the photo and video pipelines need of a space that embeds pictures."""

    @property
    def input_side(self) -> int: ...  # the shorter side its input is cut from (loads the model)

    def preprocess(self, image: Any) -> Any: ...  # a PIL image -> its payload (reader thread)


class _TorchPhotoSpace(LazySpace):
    extra = "image"

    @property
    def input_side(self) -> int:
        return self.encoder.pixels.short_side

    @property
    def pixel_steps(self) -> Any:
        """Its PixelSpec: `preprocess` without the model, for a reader process to run."""
        return self.encoder.pixels

    def preprocess(self, image: Any) -> Any:
        """Reader side: resized, cropped uint8 pixels (normalised later, a batch at a time)."""
        return self.encoder.pixels.of_image(image)

    def batch(self, payloads: list[Any]) -> Any:
        """Pixels and JPEG bytes -> one model input: the JPEGs decoded together on the model's
        device and taken through the same steps, then the whole batch normalised at once."""
        import torch

        from mmrag.pipelines.image.encoders import decode_jpegs
        from mmrag.pipelines.image.pixels import ReusedBatch, one_torch_thread

        enc = self.encoder
        jpegs = [i for i, p in enumerate(payloads) if isinstance(p, JpegBytes)]
        rows = list(payloads)
        if jpegs:
            decoded = decode_jpegs([payloads[i].data for i in jpegs], enc.device)
            for i, chw in zip(jpegs, decoded, strict=True):
                rows[i] = enc.pixels.of_tensor(chw)
            rows = [r.to(enc.device) for r in rows]
        if enc.device == "cpu" and rows[0].device.type == "cpu":  # memory kept between batches
            floats = self.__dict__.setdefault("_reused", ReusedBatch()).take(rows)
            return enc.pixels.normalise_rows(rows, floats, enc.dtype)
        with one_torch_thread(rows[0].device.type == "cpu"):
            stacked = torch.stack(rows)
        return enc.pixels.normalise(stacked, enc.device, enc.dtype)

    def encode_images(self, images: list[Any]) -> np.ndarray:
        """PIL images -> vectors in this space."""
        return self.encoder.encode_images(images)

    def encode_query(self, kind: QueryKind, inputs: list[Any]) -> np.ndarray:
        return self.encode_images(inputs)


class ImageSpace(_TorchPhotoSpace):
    """The `image` space: a classifier's pooled features, and its top labels as text."""

    name = "image"

    def __init__(
        self, model_name: str, device: str = "auto", label_top_k: int = 5, label_min_prob=0.1
    ) -> None:
        super().__init__(model_name, device)
        self.label_top_k = label_top_k
        self.label_min_prob = label_min_prob

    def _load(self) -> Any:
        from mmrag.pipelines.image.encoders import load_image_encoder

        return load_image_encoder(self.model_name, self.requested_device)

    def encode(self, payloads: list[Any]) -> Encoded:
        vectors, labels = self.encoder.encode_and_label(
            self.batch(payloads), k=self.label_top_k, min_prob=self.label_min_prob
        )
        return Encoded(vectors, [[label_piece(found)] if found else [] for found in labels])


class ClipSpace(_TorchPhotoSpace):
    """The `clip` space: CLIP/SigLIP image vectors, searched with the text tower's vectors."""

    name = "clip"

    def _load(self) -> Any:
        from mmrag.pipelines.image.encoders import load_clip

        return load_clip(self.model_name, self.requested_device)

    def encode(self, payloads: list[Any]) -> Encoded:
        return Encoded(self.encoder.encode_tensor(self.batch(payloads)))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_texts(texts)

    def encode_query(self, kind: QueryKind, inputs: list[Any]) -> np.ndarray:
        if kind == QueryKind.TEXT:
            return self.encode_texts(inputs)
        return self.encode_images(inputs)


def label_piece(found: list[tuple[str, float]]) -> Piece:
    """A picture's labels as one piece for the `text` space."""
    labels = LabelSet(tuple(found))
    return Piece(
        payload=labels,
        modality=Modality.LABEL,
        start=0,
        end=0,
        text=labels.text,
        meta={"labels": [{"label": n, "p": p} for n, p in found]},
        space="text",
        origin=ImageSpace.name,  # the classifier's words: replaced when `image` is embedded again
    )
