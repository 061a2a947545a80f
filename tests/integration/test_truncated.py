"""Recordings that end early are indexed as far as they go and reported as warnings, with what
was kept, in the ingest summary and in `status`; whole files give no warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.audio_samples import SR, noise
from tests.conftest import Env


def _library(root: Path) -> Path:
    lib = root / "lib"
    lib.mkdir()
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(30 * SR) / SR).astype(np.float32)
    sound = (tone + noise(30.0, dbfs=-30)).astype(np.float32)
    for ext in ("wav", "ogg", "flac"):
        sf.write(lib / f"whole.{ext}", sound, SR)
        whole = (lib / f"whole.{ext}").read_bytes()
        (lib / f"cut.{ext}").write_bytes(whole[: int(len(whole) * 0.4)])  # a copy that stopped
    return lib


def test_recordings_that_end_early_are_reported_with_what_was_kept(env: Env) -> None:
    env.with_audio(speech_model="")
    lib = _library(env.root)
    report = env.ingest(lib)
    assert (report.new, report.failed) == (6, [])
    warned = {Path(path).name: why for path, why in report.warnings}
    assert set(warned) == {"cut.wav", "cut.ogg", "cut.flac"}  # whole files: no warning
    assert warned["cut.wav"].startswith("truncated WAV: ") and "kept 0:12.0" in warned["cut.wav"]
    assert warned["cut.ogg"].startswith("truncated Ogg: the stream has no end")
    assert warned["cut.flac"].startswith("damaged: decoding stopped at 0:11.")
    assert "of 0:30.0" in warned["cut.flac"]
    collection = env.models.spaces["audio"].collection(env.settings.collection_prefix)
    cut = env.catalog.path_record(str(lib / "cut.wav")).media_id
    ends = [r["end"] for r in env.store.client.query(
        collection, filter=f'media_id == "{cut}" and modality == "audio"',
        output_fields=["end"], limit=100,
    )]  # fmt: skip
    assert max(ends) <= 12.0 + 1e-6  # what was kept is indexed

    # `status` keeps saying it after the run, in text and JSON, until the file is whole
    status = json.loads(env.cli("status", "--json").stdout)
    assert {Path(w["path"]).name for w in status["warnings"]} == set(warned)
    text = env.cli("status").stdout
    assert "warning:" in text and "cut.wav: truncated WAV" in " ".join(text.split())
    assert env.ingest(lib).unchanged == 6
    assert len(json.loads(env.cli("status", "--json").stdout)["warnings"]) == 3
    for ext in ("wav", "ogg", "flac"):
        (lib / f"cut.{ext}").write_bytes((lib / f"whole.{ext}").read_bytes())
    again = env.ingest(lib)
    assert again.warnings == [] and again.reused == 3
    assert json.loads(env.cli("status", "--json").stdout)["warnings"] == []


def test_ingest_json_lists_the_warnings(env: Env) -> None:
    env.with_audio(speech_model="")
    lib = _library(env.root)
    for ext in ("ogg", "flac"):
        (lib / f"cut.{ext}").unlink()
    r = env.cli_with({"MMRAG_SPEECH_MODEL": ""}, "ingest", str(lib), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert [Path(w["path"]).name for w in summary["warnings"]] == ["cut.wav"]
    assert summary["warnings"][0]["reason"].startswith("truncated WAV: ")
