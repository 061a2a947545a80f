"""The README's first command: `mmrag demo` on the sample library, in-process, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmrag.cli import app
from tests.conftest import REPO


def test_demo_falls_back_to_the_offline_models_and_answers_from_every_kind_of_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the demo reads data/library and data/eval as the README runs it
    env = {
        "MMRAG_MILVUS_URI": str(tmp_path / "milvus.db"),
        "MMRAG_CATALOG": str(tmp_path / "catalog.sqlite"),
        "MMRAG_THUMBNAILS": str(tmp_path / "thumbs"),
        "MMRAG_DEVICE": "cpu",
        "COLUMNS": "200",
    }
    r = CliRunner().invoke(app, ["demo"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    said = " ".join(r.stderr.split())
    assert "not available here: using the offline profile" in said
    files = sum(1 for p in (REPO / "data" / "library").rglob("*") if p.is_file())
    summary = dict(_table(r.stderr))
    assert summary["files scanned"] == summary["new"] == str(files)  # docs, photos, memo, video
    assert summary["failed"] == "0"
    assert summary["indexed with a warning (see below)"] == "0" and "warning:" not in said
    blocks = _blocks(r.stdout)
    cat = " ".join(blocks["a cat"][:2])  # the photo, and the video's moment showing it
    assert "photos/chelsea the cat.jpg" in cat and "videos/garden tour.mp4  0:00.0-0:06.0" in cat
    assert "data/library/photos/coffee.jpg" in " ".join(blocks["cup of espresso"][:2])
    memo = blocks["which platform does the London train leave from"][0]
    assert "recordings/voice memo from Sam.ogg" in memo and "0:06" in memo
    party = blocks["when does the garden party start"][0]
    assert "videos/garden tour.mp4" in party and "0:18" in party
    assert "lease-summary.pdf" in blocks["How much notice must tenants give before moving out?"][0]


def _table(text: str) -> list[tuple[str, str]]:
    """The rows of the ingest summary table: (label, value)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2:
            rows.append((cells[0], cells[1]))
    return rows


def _blocks(stdout: str) -> dict[str, list[str]]:
    """query -> its hit lines (rank, score, path, place), as printed."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("query "):
            current = blocks.setdefault(line.removeprefix("query ").split("  [")[0], [])
        elif line[:5].strip().rstrip(".").isdigit():
            current.append(line)
    return blocks
