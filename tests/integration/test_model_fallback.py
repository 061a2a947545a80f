"""One missing model costs its space alone (issue 16): on a machine without network or cached
weights, a space whose configured model cannot be had runs on the offline pack's model for it
(said once per run, in its own collection), a space with no model at all is left out of each file
while the file's other spaces are written, and a later run where the model can be had embeds
those files again in that space alone. `--strict-models` allows no substitute.

Real Milvus Lite, real decoders, the real offline packs (MiniLM, EfficientNet-Lite0, Whisper
tiny.en); the configured models that "appear" later are tiny random ones built here (a CNN14 at
PANNs' own checkpoint path, a tiny CLIP in the configured folder): mechanics, not quality.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mmrag.app import Models
from mmrag.kinds import QueryKind
from mmrag.settings import Settings
from mmrag.store.schema import collection_name
from tests.audio_samples import random_cnn14, speak
from tests.conftest import Env
from tests.image_samples import save_tiny
from tests.video_samples import photo

SAID = "The quarterly budget meeting moved to Thursday afternoon."


@pytest.fixture
def offline_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network (HF_HUB_OFFLINE, set by conftest) and nothing cached: empty home (PANNs looks
    in ~/panns_data), torch hub and Hugging Face cache."""
    import huggingface_hub.constants

    machine = tmp_path / "machine"
    for var, sub in [("HOME", "home"), ("TORCH_HOME", "torch"), ("HF_HOME", "hf")]:
        (machine / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(machine / sub))
    (machine / "hf" / "hub").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(machine / "hf" / "hub"))
    # read when huggingface_hub was imported (by the shared MiniLM): point it here too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(machine / "hf" / "hub"))
    return machine


def _library(root: Path, recording: bool = True) -> Path:
    lib = root / "lib"
    lib.mkdir()
    if recording:
        speak(SAID, lib / "memo.wav")
    photo("chelsea").save(lib / "cat.jpg")
    photo("coffee").save(lib / "coffee.png")
    return lib


def _default(env: Env, *args: str, **more: str) -> Any:
    """The real `mmrag` command with the default profile (the public models)."""
    return env.cli_with({"MMRAG_PROFILE": "default", "MMRAG_QUERY_ENCODER": "torch", **more}, *args)


def _ingest(env: Env, lib: Path, *flags: str) -> dict:
    """`mmrag ingest --json`: the summary."""
    result = _default(env, "ingest", str(lib), "--json", *flags)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def _default_models(env: Env) -> Models:
    s = env.settings
    settings = Settings(
        milvus_uri=s.milvus_uri, catalog=s.catalog, thumbnails=s.thumbnails, device="cpu"
    )
    return Models.build(settings, text_encoder=env.minilm)


def _rows(env: Env, collection: str, expr: str = "") -> list[str]:
    return sorted(env.store.ids(collection, expr))


def _count_calls(monkeypatch: pytest.MonkeyPatch, calls: Counter, **methods: tuple) -> None:
    """Count calls of model methods: name=(class, method name)."""
    for name, (cls, attr) in methods.items():
        original = getattr(cls, attr)

        def counted(
            self: Any, *args: Any, _name: str = name, _original: Any = original, **kw: Any
        ) -> Any:
            calls[_name] += 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(cls, attr, counted)


def test_default_profile_offline_indexes_what_it_can_and_moves_a_space_when_its_model_comes(
    env: Env, offline_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmrag.pipelines.audio import panns
    from mmrag.pipelines.audio.encoders import PannsEncoder, WhisperEncoder
    from mmrag.pipelines.audio.speech import WhisperTranscriber
    from mmrag.pipelines.image.spaces import ImageSpace

    lib = _library(env.root)
    result = _default(env, "ingest", str(lib), "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    said = result.stderr
    # Nothing skipped: every file is indexed, the photos with a warning naming the CLIP space
    status = json.loads(_default(env, "status", "--json").stdout)
    assert (status["files"]["paths"], status["files"]["failed"]) == (3, 0)
    assert "files skipped" not in said
    assert sorted(w["path"] for w in status["warnings"]) == [
        str(lib / "cat.jpg"),
        str(lib / "coffee.png"),
    ]
    assert all(w["reason"].startswith("not in the clip space yet: ") for w in status["warnings"])
    # The fallbacks, and the space without a model, each named once, on one line
    lines = [line for line in said.splitlines() if line.startswith("models: ")]
    assert len(lines) == 4, said
    for space, instead, configured in [
        ("image", "efficientnet-lite0", "resnet50"),
        ("audio", "whisper-tiny-encoder", "panns-cnn14"),
        ("speech", "tiny.en", "small"),
    ]:
        named = [line for line in lines if line.startswith(f"models: {space}: ")]
        assert len(named) == 1
        assert f"using the offline model '{instead}' in place of '{configured}'" in named[0]
    assert "To get them: on a networked machine" in said  # how to get resnet50
    clip = [line for line in lines if line.startswith("models: clip: skipped")]
    assert len(clip) == 1 and "openai/clip-vit-base-patch32" in clip[0]

    # Each fallback's vectors are in that model's own collection
    prefix = env.settings.collection_prefix
    names = set(env.store.existing_collections())
    assert collection_name(prefix, "image", "efficientnet-lite0") in names
    assert collection_name(prefix, "audio", "whisper-tiny-encoder") in names
    assert not any("_clip_" in n or "resnet50" in n or "panns" in n for n in names)

    # Transcripts and labels are searchable by text
    models = _default_models(env)
    searcher = models.searcher(env.catalog, env.store)
    hits = searcher.search("when is the budget meeting", limit=3)
    assert (Path(hits[0].path).name, hits[0].modality) == ("memo.wav", "transcript")
    assert "budget meeting" in hits[0].snippet
    hits = searcher.search("tabby cat", limit=3)
    assert (Path(hits[0].path).name, hits[0].modality) == ("cat.jpg", "label")
    audio = {s.name: s for s in searcher.spaces}["audio"]
    assert audio.collection == collection_name(prefix, "audio", "whisper-tiny-encoder")
    assert Path(searcher.find(QueryKind.AUDIO, lib / "memo.wav", limit=1)[0].path).name == (
        "memo.wav"
    )

    # Status says which spaces run on a fallback
    assert status["fallbacks"] == {
        "image": {"configured": "resnet50", "fallback": "efficientnet-lite0", "contents": 2},
        "audio": {"configured": "panns-cnn14", "fallback": "whisper-tiny-encoder", "contents": 1},
    }
    shown = " ".join(_default(env, "status").stdout.split())
    assert "on a fallback: image: 2 file(s) embedded with efficientnet-lite0, not resnet50" in shown
    assert "on a fallback: audio: 1 file(s) embedded with whisper-tiny-encoder" in shown

    # The configured sound model appears where PANNs looks for it (a random CNN14 here)
    checkpoint = random_cnn14(offline_machine / "home" / "panns_data")
    checkpoint.rename(checkpoint.with_name(panns.CHECKPOINT_NAME))
    text = env.collection
    memo = env.catalog.path_record(str(lib / "memo.wav")).media_id
    transcript = _rows(env, text, 'modality == "transcript"')
    images = _rows(env, collection_name(prefix, "image", "efficientnet-lite0"))
    labels = _rows(env, text, 'modality == "label"')
    before = {m: env.catalog.segment_ids(memo, m) for m in env.catalog.collections_of(memo)}
    calls: Counter = Counter()
    _count_calls(
        monkeypatch,
        calls,
        transcribe=(WhisperTranscriber, "transcribe"),
        whisper_encoder=(WhisperEncoder, "encode"),
        image=(ImageSpace, "encode"),
        panns=(PannsEncoder, "encode_and_tag"),
    )
    report = _ingest(env, lib)
    # Only the recording's sound windows are embedded again, with PANNs: no transcription, no
    # other model; its transcript and the photos' rows are the same rows
    assert (report["filled"], report["unchanged"], report["new"], report["changed"]) == (
        1,
        2,
        0,
        0,
    )
    assert calls["panns"] >= 1
    assert (calls["transcribe"], calls["whisper_encoder"], calls["image"]) == (0, 0, 0)
    assert _rows(env, text, 'modality == "transcript"') == transcript
    assert _rows(env, collection_name(prefix, "image", "efficientnet-lite0")) == images
    assert _rows(env, text, 'modality == "label"') == labels
    panns_col = collection_name(prefix, "audio", "panns-cnn14")
    assert env.store.count(panns_col, f'media_id == "{memo}"') >= 2  # its windows and its whole
    after = {m: env.catalog.segment_ids(memo, m) for m in env.catalog.collections_of(memo)}
    assert after[panns_col] and panns_col not in before
    old_audio = collection_name(prefix, "audio", "whisper-tiny-encoder")
    assert after[old_audio] == before[old_audio]  # kept (and deleted with the file)
    # PANNs' sound tags join the text space as the audio model's own rows; the rest is kept
    tags = [i for i in after[text] if i not in before[text]]
    assert tags and all(i.startswith(f"{memo}:text:audio.") for i in tags)
    assert set(before[text]) <= set(after[text])
    assert [m.split(":")[0] for m in report["models"]] == ["image", "clip"]  # audio: its own

    # Search uses the configured model's collection now; status no longer lists audio
    searcher = _default_models(env).searcher(env.catalog, env.store)
    audio = {s.name: s for s in searcher.spaces}["audio"]
    assert audio.collection == panns_col
    hit = searcher.find(QueryKind.AUDIO, lib / "memo.wav", limit=1)[0]
    assert Path(hit.path).name == "memo.wav"
    status = json.loads(_default(env, "status", "--json").stdout)
    assert set(status["fallbacks"]) == {"image"}

    report = _ingest(env, lib)  # nothing left to do
    assert (report["unchanged"], report["filled"], report["segments"]) == (3, 0, 0)


def test_a_space_without_any_model_is_skipped_alone_and_filled_once_its_model_exists(
    make_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmrag.pipelines.image.spaces import ClipSpace, ImageSpace
    from mmrag.pipelines.text.space import TextSpace

    env = make_env()
    clip_folder = env.root / "tiny-clip"  # configured, not there yet
    env.with_images(clip_model=str(clip_folder))
    lib = _library(env.root, recording=False)
    report = env.ingest(lib)
    assert (report.new, report.skipped, report.failed) == (2, {}, [])
    assert len(report.warnings) == 2
    assert all(w.startswith("not in the clip space yet: ") for _, w in report.warnings)
    assert all(str(clip_folder) in w for _, w in report.warnings)
    assert any(line.startswith("clip: skipped") for line in report.models)
    assert [w for _, w in env.catalog.warnings() if "clip space" in w] != []
    prefix = env.settings.collection_prefix
    image_col = env.image.space("image").collection(prefix)  # type: ignore[union-attr]
    assert env.store.count(image_col) == 2
    before = {c: _rows(env, c) for c in (image_col, env.collection)}
    assert any("tabby" in h.snippet for h in env.searcher().search("tabby cat", limit=2))

    save_tiny(clip_folder, "clip")  # the model appears
    env.rebuild()

    # A fill cut short after its rows went to Milvus, before they were recorded (a kill -9
    # there): the files stay indexed, and the next run fills them again, without duplicates
    def killed(written: Any) -> None:
        raise RuntimeError("killed")

    with monkeypatch.context() as cut, pytest.raises(RuntimeError, match="killed"):
        cut.setattr(env.catalog, "finish_media_many", killed)
        env.ingest(lib)
    assert env.catalog.counts()["media"] == 2
    calls: Counter = Counter()
    _count_calls(
        monkeypatch,
        calls,
        image=(ImageSpace, "encode"),
        text=(TextSpace, "encode"),
        clip=(ClipSpace, "encode"),
    )
    report = env.ingest(lib)
    assert (report.filled, report.new, report.changed, report.unchanged) == (2, 0, 0, 0)
    assert (calls["image"], calls["text"], calls["clip"] >= 1) == (0, 0, True)
    clip_col = collection_name(prefix, "clip", str(clip_folder))
    assert env.store.count(clip_col) == 2
    assert {c: _rows(env, c) for c in (image_col, env.collection)} == before
    assert env.catalog.warnings() == []  # what it said about CLIP no longer holds
    hits = env.searcher().search("tabby cat", limit=4)
    assert any(s["space"] == "clip" for h in hits for s in h.sources or [])

    assert env.ingest(lib).unchanged == 2


def test_strict_models_use_no_fallback_and_say_why(env: Env, offline_machine: Path) -> None:
    lib = _library(env.root)
    report = _ingest(env, lib, "--strict-models")
    assert (report["new"], report["failed"]) == (0, [])
    assert report["skipped"]["image"]["files"] == 2
    assert report["skipped"]["audio"]["files"] == 1
    for modality, instead in [("image", "efficientnet-lite0"), ("audio", "whisper-tiny-encoder")]:
        reason = report["skipped"][modality]["reason"]
        assert f"strict_models: the offline '{instead}' is not used instead" in reason
    assert not any("using the offline model" in line for line in report["models"])
    assert any(
        line.startswith("image: skipped") and "strict_models" in line for line in report["models"]
    )
    assert not any("efficientnet" in n or "whisper" in n for n in env.store.existing_collections())

    # The setting does the same; `mmrag models` says which model a space runs on, and why
    rows = {r["space"]: r for r in json.loads(_default(env, "models", "--json").stdout)}
    assert (rows["image"]["name"], rows["image"]["fallback_for"]) == (
        "efficientnet-lite0",
        "resnet50",
    )
    assert "resnet50" in rows["image"]["reason"]
    assert rows["clip"]["error"].startswith("model 'openai/clip-vit-base-patch32'")
    strict = _default(env, "models", "--json", MMRAG_STRICT_MODELS="true")
    rows = {r["space"]: r for r in json.loads(strict.stdout)}
    assert "fallback_for" not in rows["image"] and "strict_models" in rows["image"]["error"]
