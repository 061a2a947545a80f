"""Videos end to end: generated videos of real photos with espeak-ng speech muxed in, real
decoders and shot detection, the offline models, real Milvus Lite. One library is built and
ingested once per module; each test asks it something different."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.search.query import Filters, Near
from tests.audio_samples import SR, noise, place, read_wav_16k, speak
from tests.conftest import Env, build_env
from tests.video_samples import (
    audio_only_mp4,
    mux_audio,
    photo,
    photo_video,
    truncate,
    vfr_video,
)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SECONDS_EACH = 4.0
SENTENCE = "Remember to pack the blue umbrella for the trip to Scotland."
SAID_AT = 9.0
RECORDED = {"creation_time": "2023-08-01T09:30:00.000000Z", "location": "+56.4907-004.2026/"}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    assert shutil.which("espeak-ng"), "espeak-ng is needed: apt-get install espeak-ng"
    root = tmp_path_factory.mktemp("video-lib")
    lib = root / "videos"
    lib.mkdir()
    images = [photo(n) for n in PHOTOS]
    silent = root / "silent.mp4"
    spans = photo_video(silent, images, SECONDS_EACH, writer="cv2")  # OpenCV's VideoWriter
    voice = read_wav_16k(speak(SENTENCE, root / "tts.wav"))
    track = place(voice, SAID_AT, SECONDS_EACH * len(PHOTOS), bed=noise(16.0, dbfs=-60))
    mux_audio(silent, track, SR, lib / "holiday slideshow.mp4", tags=RECORDED)
    # other videos: other photos in VP9 without sound, and a variable-frame-rate clip
    others = [photo("hubble_deep_field"), photo("immunohistochemistry")]
    photo_video(lib / "space and cells.webm", others, 3.0, codec="libvpx-vp9")
    # irregular frame times; the picture changes at the 6th frame, 2.9 s in
    times = [0, 0.3, 1.1, 1.2, 2.0, 2.9, 3.0, 4.4, 4.5, 6.0]
    vfr_video(lib / "vfr.mp4", [photo("coins")] * 5 + [photo("camera")] * 5, times)
    yield {"lib": lib, "spans": spans, "said": (SAID_AT, SAID_AT + len(voice) / SR)}


@pytest.fixture(scope="module")
def ingested(
    library: dict, minilm: TextEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    env = build_env(tmp_path_factory.mktemp("video-store"), minilm)
    env.settings.ocr = False
    env = env.with_images().with_audio()  # videos come with both
    report = env.ingest(library["lib"])
    assert report.failed == [], report.failed
    assert report.new == 3
    yield env
    env.close()


@pytest.mark.parametrize("which", range(len(PHOTOS)))
def test_a_photo_finds_the_video_and_the_moment_it_is_shown(
    ingested: Env, library: dict, tmp_path: Path, which: int
) -> None:
    query = tmp_path / f"{PHOTOS[which]}.png"
    photo(PHOTOS[which]).save(query)
    hits = ingested.searcher().search_image(query, limit=5)
    assert len({h.path for h in hits}) == len(hits)  # one hit per file: a video's best moment
    top = hits[0]
    assert Path(top.path).name == "holiday slideshow.mp4", hits
    start, end = library["spans"][which]
    assert top.modality == "shot"
    assert abs(top.start - start) <= 0.5 and abs(top.end - end) <= 0.5, (top, start, end)
    assert top.thumbnail and Path(top.thumbnail).is_file()
    assert top.link.endswith(f"#t={top.start:.2f},{top.end:.2f}")


def test_a_spoken_keyword_finds_the_video_and_when_it_is_said(ingested: Env, library: dict) -> None:
    hits = ingested.searcher().search("umbrella", "hybrid", limit=3)
    top = hits[0]
    assert Path(top.path).name == "holiday slideshow.mp4" and top.modality == "transcript"
    said_from, said_to = library["said"]
    assert abs(top.start - said_from) <= 1.0 and abs(top.end - said_to) <= 1.0, top


def test_an_excerpt_finds_its_video_and_time_range(
    ingested: Env, library: dict, tmp_path: Path
) -> None:
    images = [photo(n) for n in PHOTOS]
    excerpt = tmp_path / "excerpt.mp4"
    photo_video(excerpt, images[1:3], 2.0, size=(256, 192))  # chelsea then coffee, resized
    hits = ingested.searcher().search_video(excerpt, limit=3)
    top = hits[0]
    assert Path(top.path).name == "holiday slideshow.mp4", hits
    # chelsea (4-8 s) and coffee (8-12 s) are neighbouring moments: one merged range
    assert abs(top.start - 4.0) <= 0.5 and abs(top.end - 12.0) <= 0.5, top


def test_shots_of_a_video_without_sound_and_of_variable_frame_rate(ingested: Env) -> None:
    searcher = ingested.searcher()
    [vfr] = searcher.search_image(_saved(photo("camera"), ingested.root / "q.png"), limit=1)
    assert Path(vfr.path).name == "vfr.mp4" and vfr.modality == "shot"
    assert abs(vfr.start - 2.9) <= 0.5 and abs(vfr.end - 6.0) <= 0.5  # the frames' own times
    query = _saved(photo("immunohistochemistry"), ingested.root / "q2.png")
    [webm] = searcher.search_image(query, limit=1)  # VP9, no sound track
    assert Path(webm.path).name == "space and cells.webm"
    assert abs(webm.start - 3.0) <= 0.5 and abs(webm.end - 6.0) <= 0.5


def test_videos_are_filtered_by_when_and_where_they_were_recorded(
    ingested: Env, tmp_path: Path
) -> None:
    query = tmp_path / "query.jpg"
    photo("coffee").save(query)
    search = ingested.searcher()

    def found(**given: object) -> set[str]:
        hits = search.search_image(query, limit=5, filters=Filters(**given))  # type: ignore[arg-type]
        return {Path(h.path).name for h in hits}

    assert len(found()) == 3
    tagged = {"holiday slideshow.mp4"}  # its container says 2023-08-01, near Loch Tay
    assert found(near=Near(56.49, -4.2, 5)) == tagged
    assert found(taken_since=datetime(2023, 1, 1)) == tagged
    assert found(taken_until=datetime(2023, 1, 1)) == set()
    hits = search.search("umbrella", filters=Filters(near=Near(56.49, -4.2, 5)))
    assert hits and {Path(h.path).name for h in hits} == tagged  # its spoken words too


def test_cli_video_and_image_queries_give_moments_as_json(ingested: Env, tmp_path: Path) -> None:
    images = [photo(n) for n in PHOTOS]
    excerpt = tmp_path / "excerpt.mkv"
    photo_video(excerpt, images[2:4], 1.5)  # coffee then rocket: 8-16 s of the slideshow
    still = _saved(photo("rocket"), tmp_path / "rocket.jpg")
    r = ingested.cli("search", "--video", str(excerpt), "--json", "-k", "1")
    assert r.exit_code == 0, r.output
    [hit] = json.loads(r.stdout)
    assert Path(hit["path"]).name == "holiday slideshow.mp4" and hit["modality"] == "shot"
    assert abs(hit["start"] - 8.0) <= 0.5 and abs(hit["end"] - 16.0) <= 0.5, hit
    assert hit["thumbnail"].endswith(".jpg") and "#t=" in hit["link"]
    queries = tmp_path / "q.jsonl"
    lines = [{"id": "v", "video": str(excerpt)}, {"id": "i", "image": str(still)}]
    queries.write_text("\n".join(json.dumps(q) for q in lines) + "\n")
    r = ingested.cli("search", "--queries", str(queries), "-k", "1")
    assert r.exit_code == 0, r.output
    answers = {a["id"]: a["hits"][0] for a in map(json.loads, r.stdout.splitlines())}
    assert answers["v"]["start"] == hit["start"] and answers["v"]["end"] == hit["end"]
    assert Path(answers["i"]["path"]).name == "holiday slideshow.mp4"
    assert abs(answers["i"]["start"] - 12.0) <= 0.5  # rocket is shown from 12 s


def _saved(image, path: Path) -> Path:
    image.save(path)
    return path


def test_bad_videos_are_reported_and_audio_only_is_a_recording(
    ingested: Env, library: dict, tmp_path: Path
) -> None:
    lib = tmp_path / "bad"
    lib.mkdir()
    shutil.copy(library["lib"] / "holiday slideshow.mp4", lib / "cut.mp4")
    truncate(lib / "cut.mp4", 0.5)
    (lib / "empty.mp4").write_bytes(b"")
    voice = read_wav_16k(speak("The library closes early on Sunday afternoons.", tmp_path / "s"))
    audio_only_mp4(lib / "podcast.mp4", place(voice, 1.0, 6.0), SR)
    report = ingested.ingest(lib)
    reasons = {Path(p).name: r for p, r in report.failed}
    assert set(reasons) == {"cut.mp4", "empty.mp4"}, reasons
    assert "empty" in reasons["empty.mp4"]
    assert report.new == 1
    hits = ingested.searcher().search("library closes early", "bm25", limit=1)
    assert Path(hits[0].path).name == "podcast.mp4" and hits[0].modality == "transcript"
    assert abs(hits[0].start - 1.0) <= 1.0  # the words are placed 1 s in
