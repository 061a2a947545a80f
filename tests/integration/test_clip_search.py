"""The `clip` space end to end: a tiny random CLIP saved with `save_pretrained` and loaded like a
hub model, real photos, real Milvus Lite. Random weights say nothing about quality; what is
checked is that vectors reach the store and come back ranked exactly as the model ranks them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrag.pipelines.image.decode import decode_image
from mmrag.search.fusion import RRF_K
from tests.conftest import Env
from tests.image_samples import PHOTOS, make_photos, save_tiny
from tests.video_samples import photo, photo_video


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("clip") / "tiny-clip", "clip", projection_dim=24)


@pytest.fixture
def clip_env(env: Env, tiny_clip: Path) -> Env:
    env.settings.label_top_k = 0  # no labels or OCR: text reaches photos through CLIP alone
    env.settings.ocr = False
    return env.with_images(clip_model=str(tiny_clip))


def test_photos_go_to_both_image_spaces_with_dims_from_the_models(clip_env: Env) -> None:
    lib = make_photos(clip_env.root)
    report = clip_env.ingest(lib)
    assert report.failed == [] and report.new == len(PHOTOS)
    prefix = clip_env.settings.collection_prefix
    clip = clip_env.models.spaces["clip"]
    assert clip_env.store.count(clip.collection(prefix)) == len(PHOTOS)
    assert clip_env.store.count(clip_env.models.spaces["image"].collection(prefix)) == len(PHOTOS)
    assert clip.space.dim == 24  # the config's projection_dim, not a constant
    again = clip_env.ingest(lib)
    assert again.unchanged == len(PHOTOS) and again.new == 0  # done = in both spaces


def test_text_query_ranks_photos_as_the_clip_model_does(clip_env: Env) -> None:
    lib = make_photos(clip_env.root)
    clip_env.ingest(lib)
    searcher = clip_env.searcher()
    hits = searcher.search("a photo of a cat", mode="dense", limit=len(PHOTOS))

    clip = clip_env.models.spaces["clip"]
    files = sorted(lib.iterdir())
    side = clip_env.image.decode_side()
    vectors = clip.encode_images([decode_image(f, short_side=side).image for f in files])
    query = clip.encode_texts(["a photo of a cat"])[0]
    expected = [files[i].name for i in np.argsort(-(vectors @ query))]

    assert [Path(h.path).name for h in hits] == expected
    assert all(h.modality == "image" and h.thumbnail for h in hits)
    assert hits[0].score == pytest.approx(float(np.max(vectors @ query)), abs=1e-3)


def test_image_query_fuses_both_image_spaces(clip_env: Env, tmp_path: Path) -> None:
    lib = make_photos(clip_env.root)
    clip_env.ingest(lib)
    copy = tmp_path / "elsewhere" / "copy.png"
    copy.parent.mkdir()
    copy.write_bytes((lib / "coffee.jpg").read_bytes())
    hits = clip_env.searcher().search_image(copy, limit=3)
    assert Path(hits[0].path).name == "coffee.jpg"
    # Found in both spaces at rank 1: the fused score is the sum of two reciprocal ranks.
    assert hits[0].score == pytest.approx(2 / (RRF_K + 1), abs=1e-6)


def test_bm25_mode_leaves_clip_out(clip_env: Env) -> None:
    lib = make_photos(clip_env.root)
    clip_env.ingest(lib)
    assert clip_env.searcher().search("a photo of a cat", mode="bm25") == []


def test_video_moments_go_to_the_clip_space_too(clip_env: Env) -> None:
    lib = clip_env.root / "videos"
    lib.mkdir()
    spans = photo_video(lib / "two.mp4", [photo("astronaut"), photo("coffee")], 3.0)
    report = clip_env.ingest(lib)
    assert report.failed == [] and report.new == 1
    name = clip_env.models.spaces["clip"].collection(clip_env.settings.collection_prefix)
    rows = clip_env.store.client.query(
        name, filter='modality == "shot"', output_fields=["start", "end"], limit=10
    )
    got = sorted((r["start"], r["end"]) for r in rows)
    assert len(got) == 2
    for (start, end), (want_start, want_end) in zip(got, spans, strict=True):
        assert abs(start - want_start) <= 0.5 and abs(end - want_end) <= 0.5


def test_jpeg_bytes_through_the_clip_processor_steps_match_pillow(
    clip_env: Env, tmp_path: Path
) -> None:
    """JPEGs decoded as tensors take the processor's steps (resize shortest edge, centre crop,
    rescale, normalise) as Pillow-decoded photos do: same pixel values, within resampling."""
    import torch

    from mmrag.pipelines.image.spaces import JpegBytes

    path = tmp_path / "coffee.jpg"
    photo("coffee").save(path, quality=95)
    clip = clip_env.models.spaces["clip"]
    side = clip_env.image.decode_side()
    by_pillow = clip.batch([clip.preprocess(decode_image(path, short_side=side).image)])[0]
    by_tensor = clip.batch([JpegBytes(path.read_bytes())])[0]
    assert by_tensor.shape == by_pillow.shape == (3, 32, 32)
    assert float(torch.mean(torch.abs(by_tensor - by_pillow))) < 0.05  # normalised units
