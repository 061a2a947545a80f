"""Photos and tiny random CLIP/SigLIP models shared by the image tests."""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from tests.video_samples import photo

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field", "coins"]


def make_photos(root: Path) -> Path:
    lib = root / "photos"
    lib.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(PHOTOS):
        ext = "jpg" if i % 2 == 0 else "png"
        photo(name).save(lib / f"{name}.{ext}")
    return lib


def altered(img: Image.Image) -> Image.Image:
    """Crop 10%, shrink, brighten 20%, re-encode as a poor JPEG."""
    w, h = img.size
    out = img.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((w * 3 // 5, h * 3 // 5))
    out = ImageEnhance.Brightness(out).enhance(1.2)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def noise_images(n: int, seed: int = 0, size: tuple[int, int] = (48, 40)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(n)
    ]


def write_clip_tokenizer(folder: Path):
    """A tiny byte-level BPE vocabulary (letters, digits, a few merges) as CLIP's files."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,!?'-":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges = ["c a", "ca t</w>", "d o", "do g</w>"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder))


def save_tiny(folder: Path, kind: str, projection_dim: int = 16) -> Path:
    """Save a randomly initialised CLIP or SigLIP model with a CLIP processor to `folder`."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        SiglipConfig,
        SiglipModel,
    )

    tok = write_clip_tokenizer(folder.parent / f"{folder.name}-tok")
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    if kind == "clip":
        model = CLIPModel(
            CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
        )
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tok,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
