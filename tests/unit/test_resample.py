"""torch's uint8 resampling stands in for Pillow's: the same pixels, to within rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmrag.pipelines.image.resample import resize_image, resize_tensor
from tests.video_samples import photo


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_resize_image_gives_pillows_bicubic_pixels(mode: str) -> None:
    img = photo("coffee").convert(mode)  # 600 x 400
    for size in ((384, 256), (300, 123), (97, 65)):
        ours = resize_image(img, size)
        assert (ours.size, ours.mode) == (size, mode)
        theirs = img.resize(size, Image.Resampling.BICUBIC)
        diff = np.abs(np.asarray(ours, np.int16) - np.asarray(theirs, np.int16))
        assert diff.mean() < 0.05 and diff.max() <= 2, (size, diff.mean(), diff.max())


def test_same_size_is_left_alone_and_other_modes_go_to_pillow() -> None:
    img = photo("coffee")
    assert resize_image(img, img.size) is img
    chw = torch.zeros((3, 8, 6), dtype=torch.uint8)
    assert resize_tensor(chw, (8, 6)) is chw
    rgba = img.convert("RGBA")
    assert resize_image(rgba, (60, 40)).mode == "RGBA"


def test_resize_tensor_keeps_uint8_and_the_requested_shape() -> None:
    chw = torch.from_numpy(np.asarray(photo("coffee")).copy()).permute(2, 0, 1)
    out = resize_tensor(chw, (100, 150), bicubic=False)
    assert out.dtype == torch.uint8 and out.shape == (3, 100, 150)
    theirs = np.asarray(photo("coffee").resize((150, 100), Image.Resampling.BILINEAR), np.int16)
    assert np.abs(out.permute(1, 2, 0).numpy().astype(np.int16) - theirs).mean() < 0.1
