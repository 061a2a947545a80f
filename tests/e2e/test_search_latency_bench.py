"""benchmarks/search_latency.py end to end at a tiny size: a real Milvus Lite store, the real
MiniLM weights and ONNX query encoder, and the JSON file issue 17 asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_search_latency_benchmark_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "search_latency.py"),
            "--sizes",
            "2000",
            "--queries",
            "5",
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(out.read_text())
    assert {"cpu", "cores"} <= found["machine"].keys()
    rows = found["results"]
    assert {r["mode"] for r in rows} == {"hybrid", "dense", "image", "numpy"}
    for row in rows:
        assert {"size", "mode", "p50_ms", "p95_ms", "recall_at_10"} <= row.keys()
        assert row["size"] == 2000
        assert 0.0 <= row["recall_at_10"] <= 1.0
        assert 0 < row["p50_ms"] <= row["p95_ms"]
    recall = {r["mode"]: r["recall_at_10"] for r in rows}
    assert recall["numpy"] == 1.0
    # the snapshot answers exactly: its truth is the fusion the settings name (minmax)
    assert recall["hybrid"] >= 0.95 and recall["dense"] >= 0.95, recall
    assert "| segments | mode |" in done.stdout  # the table


def test_search_latency_benchmark_refuses_bad_sizes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "search_latency.py"), "--sizes", "10k"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "--sizes" in done.stderr and "10k" in done.stderr
