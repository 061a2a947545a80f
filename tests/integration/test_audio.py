"""Recordings end to end: espeak-ng speech and synthesized sound, real decoders, the offline
models (Whisper tiny.en transcripts, its encoder for the `audio` space), real Milvus Lite.

One library is built and ingested once per module; each test asks it something different."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmrag.pipelines.audio.decode import load_audio
from mmrag.pipelines.text.encoder import TextEncoder
from tests.audio_samples import (
    SR,
    TEXTS,
    music,
    noise,
    place,
    random_cnn14,
    read_wav_16k,
    speak,
    write_wav,
)
from tests.conftest import Env, build_env
from tests.video_samples import late_sound

# file -> (sentence, where it starts in the file, file length)
SPOKEN = {
    "memo one.wav": ("Remember to pack the blue umbrella for the trip to Scotland.", 4.0, 20.0),
    "memo two.flac": ("My guitar needs new strings before the concert.", 9.0, 20.0),
    "voicemail.ogg": ("Call the dentist tomorrow to book a new appointment.", 2.5, 15.0),
    # a sentence in the middle of a long, quietly hissing file
    "long recording.wav": ("The elephant at the zoo was eating fresh hay.", 31.0, 60.0),
}
COUNCIL_S = 60.0


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    assert shutil.which("espeak-ng"), "espeak-ng is needed: apt-get install espeak-ng"
    root = tmp_path_factory.mktemp("audio-lib")
    lib = root / "recordings"
    spans: dict[str, tuple[float, float]] = {}
    for name, (sentence, at, total) in SPOKEN.items():
        voice = read_wav_16k(speak(sentence, root / "tts" / f"{name}.wav"))
        bed = noise(total, dbfs=-55, seed=len(name)) if total > 30 else None
        lib.mkdir(exist_ok=True)
        sf.write(lib / name, place(voice, at, total, bed=bed), SR)  # wav, flac, ogg by name
        spans[name] = (at, at + len(voice) / SR)
    # a minute of one voice reading (the excerpt query comes from it) and a minute of music
    council = read_wav_16k(speak(TEXTS["a"], root / "tts" / "council.wav", "en-us", 130))
    sf.write(lib / "council meeting.flac", council[: int(COUNCIL_S * SR)], SR)
    sf.write(lib / "tune.flac", music(1, [1.0, 0.5, 0.3, 0.15], 3.0, 0.25, chords=False), SR)
    yield lib, spans


@pytest.fixture(scope="module")
def ingested(
    library: tuple[Path, dict], minilm: TextEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    env = build_env(tmp_path_factory.mktemp("audio-store"), minilm).with_audio()
    report = env.ingest(library[0])
    assert report.failed == [], report.failed
    assert report.new == len(SPOKEN) + 2
    yield env
    env.close()


def _hit_for(env: Env, query: str, name: str):
    hits = env.searcher().search(query, "hybrid", limit=5)
    assert hits, f"nothing found for {query!r}"
    assert Path(hits[0].path).name == name, [(h.path, h.snippet) for h in hits]
    return hits[0]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("umbrella", "memo one.wav"),
        ("guitar strings", "memo two.flac"),
        ("dentist appointment", "voicemail.ogg"),
        ("elephant", "long recording.wav"),
    ],
)
def test_spoken_words_return_the_file_and_when_they_were_said(
    ingested: Env, library: tuple[Path, dict], query: str, name: str
) -> None:
    hit = _hit_for(ingested, query, name)
    said_from, said_to = library[1][name]
    assert hit.modality == "transcript"
    assert hit.start <= said_from + 1.0 and hit.end >= said_to - 1.0, (hit, said_from, said_to)
    assert hit.start >= said_from - 1.0 and hit.end <= said_to + 1.0, (hit, said_from, said_to)


def test_a_sentence_in_the_middle_of_a_long_file_is_placed_in_time(ingested: Env) -> None:
    hit = _hit_for(ingested, "elephant eating hay", "long recording.wav")
    assert abs(hit.start - 31.0) <= 1.0, hit
    store = ingested.store
    rows = store.search_bm25(ingested.collection, ["elephant"], 1, "")[0]
    words = dict((w, s) for w, s, _ in _words(store, ingested.collection, rows[0]["id"]))
    assert any("elephant" in w.lower() and abs(s - 31.6) < 1.0 for w, s in words.items()), words


def _words(store, collection: str, segment_id: str) -> list:
    [row] = store.client.get(collection, ids=[segment_id], output_fields=["meta"])
    return row["meta"]["words"]


def test_an_excerpt_finds_its_recording_and_the_moment(
    ingested: Env, library: tuple[Path, dict], tmp_path: Path
) -> None:
    council = load_audio(library[0] / "council meeting.flac", SR)
    start = 22.4
    clip = tmp_path / "excerpt.wav"
    write_wav(clip, council[int(start * SR) : int((start + 3.0) * SR)])
    hits = ingested.searcher().search_audio(clip, limit=3)
    assert Path(hits[0].path).name == "council meeting.flac", hits
    assert hits[0].modality == "audio"
    assert hits[0].start < start + 3.0 and hits[0].end > start, hits[0]


def test_cli_audio_query_json_and_batch_lines(
    ingested: Env, library: tuple[Path, dict], tmp_path: Path
) -> None:
    council = load_audio(library[0] / "council meeting.flac", SR)
    clip = write_wav(tmp_path / "clip.wav", council[40 * SR : 43 * SR])
    r = ingested.cli("search", "--audio", str(clip), "--json", "-k", "2")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert Path(hits[0]["path"]).name == "council meeting.flac"
    assert hits[0]["start"] < 43 and hits[0]["end"] > 40
    assert hits[0]["link"].endswith(f"#t={hits[0]['start']:.2f},{hits[0]['end']:.2f}")
    assert hits[0]["link"].startswith("file:///")

    queries = tmp_path / "q.jsonl"
    lines = [{"id": "sound", "audio": str(clip)}, {"id": "words", "text": "umbrella"}]
    queries.write_text("\n".join(json.dumps(q) for q in lines) + "\n")
    r = ingested.cli("search", "--queries", str(queries), "-k", "1")
    assert r.exit_code == 0, r.output
    answers = {a["id"]: a["hits"] for a in map(json.loads, r.stdout.splitlines())}
    assert Path(answers["sound"][0]["path"]).name == "council meeting.flac"
    assert Path(answers["words"][0]["path"]).name == "memo one.wav"
    assert answers["words"][0]["modality"] == "transcript"

    r = ingested.cli("search", "--audio", str(clip), "--modality", "recording", "--json")
    assert r.exit_code == 0, r.output
    whole = json.loads(r.stdout)
    assert Path(whole[0]["path"]).name == "council meeting.flac"
    assert whole[0]["modality"] == "recording" and whole[0]["start"] == 0


def test_windows_cover_the_sound_at_every_hop(ingested: Env, library: tuple[Path, dict]) -> None:
    audio = ingested.audio.audio
    enc = audio.encoder
    tune = library[0] / "tune.flac"
    media_id = ingested.catalog.path_record(str(tune.resolve())).media_id
    rows = ingested.store.client.query(
        audio.collection(ingested.settings.collection_prefix),
        filter=f'media_id == "{media_id}"',
        output_fields=["start", "end", "modality"],
        limit=10000,
    )
    length = sf.info(tune).duration
    [whole] = [(r["start"], r["end"]) for r in rows if r["modality"] == "recording"]
    assert whole == (0.0, pytest.approx(length, abs=0.01))
    spans = sorted((r["start"], r["end"]) for r in rows if r["modality"] == "audio")
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(length, abs=0.05)
    assert np.allclose(np.diff([s for s, _ in spans]), enc.hop_s)
    assert all(e - s == pytest.approx(enc.window_s) for s, e in spans[:-1])


def test_bad_recordings_are_reported_and_the_rest_is_kept(env: Env, tmp_path: Path) -> None:
    env.settings.max_media_hours = 40 / 3600  # 40 s: the 60 s file is "very long" here
    env.with_audio()
    lib = tmp_path / "lib"
    voice = read_wav_16k(
        speak("The library closes early on Sunday afternoons.", tmp_path / "tts.wav")
    )
    write_wav(lib / "good.wav", place(voice, 1.0, 6.0))
    write_wav(lib / "silent.wav", np.zeros(10 * SR, dtype=np.float32))
    write_wav(lib / "too long.wav", noise(60.0, dbfs=-30))
    (lib / "empty.mp3").write_bytes(b"")
    whole = (lib / "good.wav").read_bytes()
    (lib / "truncated.wav").write_bytes(whole[:44])  # the header, no samples
    (lib / "garbage.ogg").write_bytes(b"OggS" + bytes(range(256)) * 8)
    report = env.ingest(lib)
    reasons = {Path(p).name: r for p, r in report.failed}
    assert set(reasons) == {
        "silent.wav",
        "too long.wav",
        "empty.mp3",
        "truncated.wav",
        "garbage.ogg",
    }
    assert "silent" in reasons["silent.wav"]
    assert "max_media_hours" in reasons["too long.wav"]
    assert "empty" in reasons["empty.mp3"]
    assert report.new == 1
    hits = env.searcher().search("library", "bm25")
    assert Path(hits[0].path).name == "good.wav" and hits[0].modality == "transcript"
    again = env.ingest(lib)
    assert again.unchanged == 1 and again.new == 0 and again.failed_before == 5


def test_panns_windows_and_tag_runs_through_the_real_loader(
    make_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A randomly initialised CNN14 saved in the official checkpoint layout, with a labels
    file: windows land in the `audio` space and runs of equal tags become text segments."""
    from mmrag.pipelines.audio import panns

    monkeypatch.setenv(panns.CHECKPOINT_ENV, str(random_cnn14(tmp_path / "models")))

    env = make_env().with_audio(audio_model="panns-cnn14", speech_model="")
    env.settings.label_top_k = 2
    env.settings.label_min_prob = 0.0  # random weights: every window gets its top 2
    env.rebuild()
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "hum.flac", noise(12.0, dbfs=-20), SR)
    report = env.ingest(lib)
    assert report.failed == [] and report.new == 1
    audio = env.audio.audio
    name = audio.collection(env.settings.collection_prefix)
    assert env.store.count(name, 'modality == "audio"') == 4  # 0-5, 2.5-7.5, 5-10, 7.5-12 s
    assert env.store.count(name, 'modality == "recording"') == 1
    tags = env.store.client.query(
        env.collection, filter='modality == "tags"', output_fields=["start", "end", "text"]
    )
    assert tags and all(t["text"].startswith("Sound ") for t in tags)
    spans = sorted((t["start"], t["end"]) for t in tags)
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(12.0)
    assert all(a[1] >= b[0] for a, b in itertools.pairwise(spans))  # runs meet


def test_chunks_without_speech_are_not_transcribed(env: Env, tmp_path: Path) -> None:
    from mmrag.pipelines.base import MediaError

    env.with_audio(audio_model="")  # transcripts only
    transcriber = env.audio.speech.encoder
    calls: list[float] = []
    real = transcriber.transcribe

    def counted(samples: np.ndarray, offset: float = 0.0):
        calls.append(len(samples) / SR)
        return real(samples, offset)

    transcriber.transcribe = counted
    sentence = "Call the dentist tomorrow to book a new appointment."
    voice = read_wav_16k(speak(sentence, tmp_path / "tts.wav"))
    spoken = write_wav(tmp_path / "spoken.wav", place(voice, 5.0, 15.0, bed=noise(15.0)))
    hiss = write_wav(tmp_path / "hiss.wav", noise(15.0, dbfs=-40))
    pieces = env.audio.prepare(str(spoken), "wav")
    assert calls == [pytest.approx(15.0, abs=0.05)]
    assert [p.modality for p in pieces] == ["transcript"] and "dentist" in pieces[0].text
    with pytest.raises(MediaError, match="no speech found"):
        env.audio.prepare(str(hiss), "wav")
    assert len(calls) == 1  # VAD found no voice in the hiss: Whisper never ran


def test_transcripts_keep_the_times_of_a_sound_track_that_starts_late(
    env: Env, tmp_path: Path
) -> None:
    """A track whose first sample plays at 1.5 s in a video whose picture starts at 0:
    words spoken 1 s into the samples are said 2.5 s into the file."""
    env.with_audio(audio_model="")
    sentence = "Call the dentist tomorrow to book a new appointment."
    samples = place(read_wav_16k(speak(sentence, tmp_path / "tts.wav")), 1.0, 6.0)
    path = late_sound(tmp_path / "late.mkv", samples, SR, 1.5)
    [piece] = env.audio.prepare(str(path), "mka")
    assert "dentist" in piece.text
    assert abs(piece.start - 2.5) <= 0.7, piece.start  # VAD pads a segment's start by ~0.4 s
