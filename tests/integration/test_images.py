"""Photos end to end: real decoders, the real EfficientNet-Lite0 weights, real Milvus Lite."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrag.pipelines.base import LabelSet
from mmrag.pipelines.image.decode import decode_image
from mmrag.search.query import Filters, Near
from mmrag.store.thumbnails import thumbnail_store
from tests.conftest import Env, write
from tests.image_samples import PHOTOS, altered, make_photos
from tests.video_samples import photo


@pytest.fixture
def images(env: Env) -> Env:
    return env.with_images()


def test_an_altered_copy_finds_its_original_first(images: Env, tmp_path: Path) -> None:
    lib = make_photos(images.root)
    report = images.ingest(lib)
    assert (report.new, report.failed) == (len(PHOTOS), [])
    for name in ("astronaut", "coffee", "rocket"):
        query = tmp_path / f"query-{name}.jpg"
        altered(photo(name)).save(query)
        hits = images.searcher().search_image(query, limit=3)
        assert Path(hits[0].path).stem == name, [h.path for h in hits]
        assert hits[0].modality == "image"
        assert hits[0].thumbnail and Path(hits[0].thumbnail).is_file()
        assert hits[0].score > hits[1].score


def test_cat_finds_the_cat_photo_through_its_labels(images: Env) -> None:
    lib = make_photos(images.root)
    images.ingest(lib)
    for mode in ("bm25", "hybrid"):
        hits = images.searcher().search("cat", mode=mode, limit=3)
        assert Path(hits[0].path).stem == "chelsea", (mode, [(h.path, h.snippet) for h in hits])
        assert hits[0].modality == "label" and "cat" in hits[0].snippet


def test_labels_are_embedded_once_each_and_weighted_by_probability(env: Env) -> None:
    calls: list[list[str]] = []
    embed = env.text.encode_texts
    env.text.encode_texts = lambda texts: calls.append(list(texts)) or embed(texts)  # type: ignore[method-assign]
    cat, sofa = embed(["tabby cat"])[0], embed(["studio couch"])[0]
    sets = [
        LabelSet((("tabby cat", 0.9), ("studio couch", 0.1))),
        LabelSet((("tabby cat", 1.0),)),
        LabelSet((("studio couch", 0.6), ("tabby cat", 0.3))),
    ]
    vectors = env.text.encode(["a passage", *sets, "another"]).vectors
    assert calls == [["a passage", "another"], ["studio couch", "tabby cat"]]
    env.text.encode([LabelSet((("tabby cat", 0.5),))])
    assert len(calls) == 2  # known labels are not embedded again
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors[2], cat, atol=1e-6)
    mixed = 0.9 * cat + 0.1 * sofa
    np.testing.assert_allclose(vectors[1], mixed / np.linalg.norm(mixed), atol=1e-6)
    assert vectors[1] @ cat > vectors[3] @ cat and vectors[3] @ sofa > vectors[1] @ sofa


def exif(make: str, model: str, taken: str, lat: float, lon: float) -> Image.Exif:
    """EXIF as cameras write it: make/model, DateTimeOriginal, GPS in degrees/minutes/seconds."""
    from PIL.TiffImagePlugin import IFDRational

    def dms(value: float) -> tuple:
        deg, rest = divmod(abs(value) * 3600, 3600)
        return (IFDRational(int(deg)), IFDRational(int(rest // 60)), IFDRational(rest % 60))

    out = Image.Exif()
    out[0x010F], out[0x0110] = make, model
    out.get_ifd(0x8769)[0x9003] = taken
    gps = out.get_ifd(0x8825)
    gps[1], gps[2] = ("N" if lat >= 0 else "S"), dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), dms(lon)
    return out


def test_photos_are_filtered_by_when_where_and_with_what_they_were_taken(images: Env) -> None:
    lib = images.root / "trips"
    lib.mkdir()
    photo("chelsea").save(
        lib / "sydney.jpg",
        exif=exif("Canon", "Canon EOS R5", "2021:07:14 15:30:45", -33.8568, 151.2153),
    )
    photo("coffee").save(
        lib / "paris.jpg", exif=exif("NIKON", "NIKON Z 6", "2019:03:02 09:00:00", 48.8584, 2.2945)
    )
    photo("astronaut").save(lib / "scan.jpg")  # no EXIF: unknown when, where and with what
    assert images.ingest(lib).new == 3
    search = images.searcher()
    query = images.root / "query.jpg"
    altered(photo("chelsea")).save(query)

    def found(**given: object) -> list[str]:
        hits = search.search_image(query, limit=5, filters=Filters(**given))  # type: ignore[arg-type]
        return sorted(Path(h.path).stem for h in hits)

    assert found() == ["paris", "scan", "sydney"]
    assert found(camera="canon") == ["sydney"]
    assert found(camera="nikon z") == ["paris"]
    assert found(taken_since=datetime(2020, 1, 1)) == ["sydney"]
    assert found(taken_until=datetime(2020, 1, 1)) == ["paris"]
    assert found(taken_since=datetime(2021, 7, 14, 15, 30, 46)) == []  # the camera's clock
    assert found(near=Near(-33.86, 151.21, 2)) == ["sydney"]  # the Opera House, 2 km
    assert found(near=Near(48.85, 2.35, 10)) == ["paris"]  # central Paris, 10 km
    assert found(near=Near(48.85, 2.35, 1)) == []
    hits = search.search("cat", filters=Filters(camera="canon"))  # labels filtered by EXIF too
    assert {Path(h.path).stem for h in hits} == {"sydney"}

    out = images.cli("search", "--image", str(query), "--near", "-33.86,151.21,2", "--json")
    assert out.exit_code == 0, out.output
    [hit] = json.loads(out.output)
    assert Path(hit["path"]).stem == "sydney"
    assert (hit["taken_at"], hit["camera"]) == ("2021-07-14T15:30:45", "Canon EOS R5")
    assert hit["gps"] == {"lat": pytest.approx(-33.8568), "lon": pytest.approx(151.2153)}
    table = images.cli("search", "--image", str(query), "--camera", "canon")
    flat = "".join(table.output.split())  # the table folds long lines anywhere
    assert "taken2021-07-1415:30,CanonEOSR5,-33.8568,151.2153" in flat
    unknown = search.search_image(query, filters=Filters(path_glob="*scan*"))
    assert [(h.taken_at, h.camera, h.gps) for h in unknown] == [(None, None, None)]
    assert "taken_at" not in unknown[0].to_json()
    status = json.loads(images.cli("status", "--json").output)
    assert status["facts_by_modality"] == {
        "image": {"media": 3, "taken_at": 2, "camera": 2, "gps": 2}
    }
    assert "image: 3 contents, 2 with a date taken, 2 with a camera, 2 with GPS" in "".join(
        images.cli("status").output
    )
    bad = images.cli("search", "cat", "--near", "north")
    assert bad.exit_code != 0 and "--near expects LAT,LON" in bad.output


def test_thumbnails_are_made_once_per_content(images: Env) -> None:
    lib = make_photos(images.root)
    (lib / "copy of coffee.jpg").write_bytes((lib / "coffee.jpg").read_bytes())
    report = images.ingest(lib)
    assert report.new == len(PHOTOS) and report.reused == 1
    stored = thumbnail_store(images.root / "thumbs")
    assert len(stored.entries()) == len(PHOTOS)
    assert all(min(Image.open(io.BytesIO(stored.get(k))).size) == 256 for k, _ in stored.entries())
    # a hit shows its thumbnail as a file, written from the cache
    hit = images.searcher().search("cat", limit=1)[0]
    assert hit.thumbnail and Path(hit.thumbnail).read_bytes() == stored.get(hit.media_id)


def test_awkward_images_are_handled_and_bad_ones_reported(images: Env) -> None:
    lib = make_photos(images.root)
    good = (lib / "astronaut.jpg").read_bytes()
    write(lib / "truncated.jpg", good[: len(good) * 3 // 5])
    write(lib / "zero.jpg", b"")
    buf = io.BytesIO()
    photo("page").save(buf, "PNG")  # content not in the library yet
    write(lib / "really a png.txt", buf.getvalue())
    Image.new("1", (20000, 20000)).save(lib / "bomb.png")
    photo("coffee").convert("CMYK").save(lib / "cmyk.jpg")
    gradient = np.linspace(0, 65535, 256, dtype=np.uint16)[None, :].repeat(64, 0)
    Image.fromarray(gradient).save(lib / "sixteen.png")
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    frames[0].save(lib / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    report = images.ingest(lib)
    reasons = dict(report.failed)
    assert set(reasons) == {str(lib / n) for n in ("truncated.jpg", "zero.jpg", "bomb.png")}
    assert "truncated" in reasons[str(lib / "truncated.jpg")]
    assert "empty" in reasons[str(lib / "zero.jpg")]
    assert "20000x20000" in reasons[str(lib / "bomb.png")]
    assert report.new == len(PHOTOS) + 4  # png-as-txt, cmyk, 16-bit, animated gif
    image_col = images.models.spaces["image"].collection(images.settings.collection_prefix)
    assert images.store.count(image_col) == len(PHOTOS) + 4


def test_without_the_image_model_photos_are_skipped_not_failed(env: Env) -> None:
    env.with_images()
    env.settings.image_model = "resnet50"  # default ImageNet weights: not downloadable here
    env.settings.strict_models = True  # else EfficientNet-Lite0 stands in (test_model_fallback)
    env.rebuild()
    lib = make_photos(env.root)
    write(lib / "notes.txt", "A note about the photos from the trip.")
    report = env.ingest(lib)
    assert report.failed == [] and report.new == 1
    assert report.skipped == {"image": len(PHOTOS)}
    assert "resnet50" in report.skip_reasons["image"]


def test_printed_words_are_found_through_ocr(images: Env) -> None:
    from PIL import ImageDraw, ImageFont

    lib = make_photos(images.root)
    scan = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(scan)
    font = ImageFont.load_default(size=56)
    draw.text((40, 60), "INVOICE 4471", fill="black", font=font)
    draw.text((40, 160), "Paid in full", fill="black", font=font)
    scan.save(lib / "scan.png")
    images.ingest(lib)
    for mode in ("bm25", "hybrid"):
        hit = images.searcher().search("invoice 4471 paid", mode=mode, limit=3)[0]
        assert (Path(hit.path).name, hit.modality) == ("scan.png", "ocr"), mode
        assert "INVOICE 4471" in hit.snippet


def test_duplicates_exact_and_near(images: Env, tmp_path: Path) -> None:
    from mmrag.search.duplicates import exact_duplicates, near_duplicates

    lib = make_photos(images.root)
    (lib / "coffee again.jpg").write_bytes((lib / "coffee.jpg").read_bytes())
    altered(photo("astronaut")).save(lib / "astronaut edited.jpg")
    images.ingest(lib)
    exact = exact_duplicates(images.catalog)
    assert [g.paths for g in exact] == [[str(lib / "coffee again.jpg"), str(lib / "coffee.jpg")]]
    collection = images.models.spaces["image"].collection(images.settings.collection_prefix)
    near = near_duplicates(images.store, images.catalog, collection, threshold=0.8)
    assert [g.paths for g in near] == [
        [str(lib / "astronaut edited.jpg"), str(lib / "astronaut.jpg")]
    ]
    assert 0.8 <= near[0].similarity < 1.0
    assert near_duplicates(images.store, images.catalog, collection, threshold=0.999) == []


def test_jpegs_decoded_as_tensors_match_pillow_and_find_their_originals(
    env: Env, tmp_path: Path
) -> None:
    """The GPU path (torchvision.io.decode_jpeg, nvJPEG on CUDA) run on the CPU: the same
    vectors as Pillow's path, EXIF orientation applied, CMYK left to Pillow."""
    import numpy as np

    from mmrag.pipelines.image.spaces import JpegBytes

    env.settings.ocr = False
    env.settings.jpeg_decode = "torchvision"
    env.with_images()
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        photo(name).save(lib / f"{name}.jpg", quality=92)
    sideways = photo("chelsea").transpose(Image.Transpose.ROTATE_90)  # stored turned...
    exif = Image.Exif()
    exif[0x0112] = 8  # ...with EXIF saying: turn 90 degrees clockwise to show it upright
    sideways.save(lib / "upright cat.jpg", exif=exif, quality=92)
    photo("coffee").convert("CMYK").save(lib / "cmyk.jpg")

    pipeline = env.image
    assert pipeline.jpeg_device() == "cpu"
    [piece] = pipeline.prepare(str(lib / "astronaut.jpg"), "jpeg")
    assert isinstance(piece.payload, JpegBytes)
    [cmyk] = pipeline.prepare(str(lib / "cmyk.jpg"), "jpeg")
    assert not isinstance(cmyk.payload, JpegBytes)  # Pillow converts CMYK properly

    space = pipeline.space("image")
    for name in ("astronaut", "upright cat"):
        as_tensor = space.encode([JpegBytes((lib / f"{name}.jpg").read_bytes())]).vectors[0]
        upright = decode_image(lib / f"{name}.jpg", short_side=pipeline.decode_side()).image
        by_pillow = space.encode([space.preprocess(upright)]).vectors[0]
        assert float(np.dot(as_tensor, by_pillow)) > 0.97, name

    report = env.ingest(lib)
    assert (report.new, report.failed) == (6, [])
    query = tmp_path / "query.jpg"
    altered(photo("rocket")).save(query)
    assert Path(env.searcher().search_image(query, limit=1)[0].path).name == "rocket.jpg"
