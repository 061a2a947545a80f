"""How an image model takes its pixels, split where the work is cheapest.

Reader threads only resize and centre-crop (uint8, a quarter of float's bytes); the batch is
normalised in one vectorised step on the model's device, already in the channels-last layout the
convolutions want. Photos decoded by Pillow and JPEGs decoded on the GPU take the same steps, so
both give the same vectors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.pipelines.image.decode import to_rgb
from mmrag.pipelines.image.resample import resize_tensor

if TYPE_CHECKING:
    import torch
    from PIL import Image

_RGB = tuple[float, float, float]


@dataclass(frozen=True)
class PixelSpec:
    """One model's input steps (read from its torchvision weights or its Hugging Face image
    processor), so every path to the model takes the same ones."""

    resize: int | tuple[int, int]  # the shorter side, or (height, width) whatever the aspect
    crop: tuple[int, int] | None  # (height, width) taken from the centre after resizing
    mean: _RGB  # per channel, on the 0-1 scale
    std: _RGB
    bicubic: bool = True  # else bilinear

    @property
    def short_side(self) -> int:
        """Decode no smaller than this: the resize then only reduces."""
        return self.resize if isinstance(self.resize, int) else max(self.resize)

    def of_image(self, img: Image.Image) -> torch.Tensor:
        """A Pillow image -> resized, cropped uint8 pixels, height x width x 3, contiguous (the
        reader's copy: the model's thread then stacks a batch with one memcpy per picture)."""
        import torch

        hwc = torch.from_numpy(np.array(to_rgb(img), dtype=np.uint8))
        return self.of_tensor(hwc.permute(2, 0, 1)).contiguous()

    def of_tensor(self, chw: torch.Tensor) -> torch.Tensor:
        """A decoded uint8 channels x height x width tensor (any device) -> resized, cropped
        uint8 pixels, height x width x 3 on that device."""
        from torchvision.transforms import functional as F

        out = resize_tensor(chw, self._resized(*chw.shape[-2:]), self.bicubic)
        if self.crop:
            out = F.center_crop(out, list(self.crop))
        return out.permute(1, 2, 0)

    def normalise(self, pixels: torch.Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
        """uint8 batch x height x width x 3 -> the model's float input, NCHW in channels-last
        memory (a view of the batch: no transposing copy)."""
        import torch

        x = pixels.to(device, non_blocking=True)
        scale, shift = self._affine(x.device)
        with one_torch_thread(x.device.type == "cpu"):
            return torch.addcmul(shift, x.to(torch.float32), scale).permute(0, 3, 1, 2).to(dtype)

    def normalise_rows(
        self, rows: list[torch.Tensor], out: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        """uint8 pictures (height x width x 3, on the CPU) -> the model's float input, each
        normalised straight into its place in `out` (float32, channels-last, len(rows) long):
        no stacked uint8 copy, and each picture's floats are still in the cache when written,
        where stacking first and then normalising the whole batch went over 19 MB twice (0.15
        against 0.26 ms per picture on one thread)."""
        import torch

        scale, shift = self._affine(out.device)
        with one_torch_thread():
            for row, place in zip(rows, out, strict=True):
                # uint8 times float32 is float32: one pass, no float copy of the pixels first
                torch.addcmul(shift, row, scale, out=place)
        return out.permute(0, 3, 1, 2).to(dtype)

    def _affine(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(x / 255 - mean) / std as x * scale + shift, per channel (one multiply-add over the
        channels-last pixels: a third less CPU than three passes; equal to 1e-6)."""
        import torch

        mean = torch.tensor(self.mean, dtype=torch.float64)
        std = torch.tensor(self.std, dtype=torch.float64)
        scale = (1 / (255 * std)).to(torch.float32).to(device)
        shift = (-mean / std).to(torch.float32).to(device)
        return scale, shift

    def batch(self, images: list[Image.Image], device: str, dtype: torch.dtype) -> torch.Tensor:
        """Pillow images -> one model input (the query side: no reader threads)."""
        import torch

        if not images:
            return torch.zeros((0, 3, 1, 1), dtype=dtype)
        return self.normalise(torch.stack([self.of_image(i) for i in images]), device, dtype)

    def _resized(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) after the resize; the longer side rounds down, as torchvision's."""
        if not isinstance(self.resize, int):
            return self.resize
        short, long = sorted((h, w))
        side = (self.resize, int(self.resize * long / short))
        return side if h <= w else (side[1], side[0])


class ReusedBatch(threading.local):
    """A model thread's float batch memory on the CPU, kept from one batch to the next.

    A new float batch (19 MB for 32 pictures of 224 px) is fresh memory each time, and the
    kernel then faults in and zeroes it a 4 KB page at a time: in the pipeline that was most of
    the normalisation's CPU (88 page faults per picture; 0.45 ms where the same arithmetic on
    reused memory takes 0.14). A batch taken from here is valid until the same thread takes
    the next one, which the runner does only after the model has read it."""

    def __init__(self) -> None:
        self.floats: torch.Tensor | None = None

    def take(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """float32 memory for `rows` stacked."""
        import torch

        n, shape = len(rows), (len(rows), *rows[0].shape)
        if self.floats is None or self.floats.shape[1:] != shape[1:] or len(self.floats) < n:
            self.floats = torch.empty(shape, dtype=torch.float32)
        return self.floats[:n]


@contextmanager
def one_torch_thread(on: bool = True) -> Iterator[None]:
    """Torch on the calling thread alone for a few element-wise passes over a batch: its pool's
    other threads only contend with the readers for the cores (on 2 loaded cores a batch's
    normalisation took 7.4 ms with torch's default 2 threads, 0.28 ms with one)."""
    import torch

    threads = torch.get_num_threads()
    if not on or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def from_torchvision(preset: Any) -> PixelSpec:
    """A torchvision weights' `transforms()` (ImageClassification: resize, crop, normalise)."""
    from torchvision.transforms import InterpolationMode

    crop = int(preset.crop_size[0])
    return PixelSpec(
        resize=int(preset.resize_size[0]),
        crop=(crop, crop),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        bicubic=preset.interpolation == InterpolationMode.BICUBIC,
    )


def from_processor(processor: Any) -> PixelSpec:
    """A Hugging Face CLIP/SigLIP image processor: resize (shortest edge, or height x width),
    optional centre crop, rescale to 0-1, normalise."""
    size = dict(processor.size)
    if "shortest_edge" in size:
        resize: int | tuple[int, int] = int(size["shortest_edge"])
    else:
        resize = (int(size["height"]), int(size["width"]))
    crop = None
    if getattr(processor, "do_center_crop", False):
        c = dict(processor.crop_size)
        crop = (int(c["height"]), int(c["width"]))
    resample = getattr(processor, "resample", 3)  # PIL's numbering: 2 bilinear, 3 bicubic
    return PixelSpec(
        resize=resize,
        crop=crop,
        mean=tuple(float(m) for m in processor.image_mean),
        std=tuple(float(s) for s in processor.image_std),
        bicubic=int(getattr(resample, "value", resample) or 3) != 2,
    )
