"""`mmrag models --candidates`: sensible models per space and language, which load here now (the
installed offline packs do, the hub models this machine lacks do not), without a download."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from mmrag.cli import app


def _run(*args: str) -> str:
    env = {"MMRAG_PROFILE": "multilingual", "MMRAG_DEVICE": "cpu", "HF_HUB_OFFLINE": "0"}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_candidates_mark_what_loads_here_and_download_nothing() -> None:
    rows = json.loads(_run("models", "--candidates", "--json"))
    by = {(r["space"], r["model"]): r for r in rows}
    assert {r["space"] for r in rows} == {"text", "image", "clip", "audio", "speech"}
    packs = [("text", "multilingual-e5-small"), ("speech", "base"), ("speech", "tiny.en")]
    for key in [*packs, ("text", "sentence-transformers/all-MiniLM-L6-v2")]:
        assert by[key]["loadable"], by[key]
        assert by[key]["where"].startswith("offline pack")
    assert by["text", "multilingual-e5-small"]["configured"]
    assert by["text", "multilingual-e5-small"]["languages"] == "~100"
    assert by["speech", "tiny.en"]["languages"] == "en"
    # Not here, and not fetched although the hub was allowed: each says why in one line
    for key in [("text", "BAAI/bge-m3"), ("clip", "openai/clip-vit-base-patch32")]:
        assert not by[key]["loadable"]
        assert "\n" not in by[key]["where"]
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # restored (conftest sets it)

    table = _run("models", "--candidates")
    assert table.count(" *") == sum(r["configured"] for r in rows) == 4  # clip is off
    assert table.count("yes") == sum(r["loadable"] for r in rows) >= 6


def test_plain_models_shows_languages() -> None:
    rows = json.loads(_run("models", "--json"))
    found = {r["space"]: r for r in rows}
    assert found["text"]["name"] == "multilingual-e5-small"
    assert found["text"]["languages"] == "~100"
    assert found["text"]["dim"] == 384
    assert found["speech"]["languages"] == "99"
