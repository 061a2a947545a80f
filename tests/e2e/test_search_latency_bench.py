"""benchmarks/search_latency.py end to end at a tiny size: a real Milvus Lite store, the real
MiniLM weights and ONNX query encoder, and the JSON file issue 17 asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def script(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/<name> run as a user runs it; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def bench(tmp_path: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    sizes = ("--sizes", "2000", "--queries", "5", "--warmup", "1")
    return script(tmp_path, "search_latency.py", *sizes, "--json", str(out), *more)


def test_search_latency_benchmark_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = bench(tmp_path, out, "--keep", str(tmp_path / "kept"))
    assert (tmp_path / "kept" / "store-2000" / "search-latency-ready").is_file()
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
    # one file written again: brought up to date by a rewrite and by a delta, alternately; the
    # text modes timed again over the delta, as exact as over the whole snapshot
    by_mode = {r["mode"]: r for r in rows}
    assert {k: len(v) for k, v in by_mode["hybrid"]["snapshot_update_s"].items()} == {
        "rewrite": 2,
        "delta": 2,
    }
    for mode in ("hybrid", "dense"):
        for way in ("with_delta", "whole_again"):
            assert by_mode[mode][f"{way}_recall_at_10"] == recall[mode], by_mode[mode]
            assert 0 < by_mode[mode][f"{way}_p50_ms"] <= by_mode[mode][f"{way}_p95_ms"]

    # the kept store again: the same rows drawn, not written; the same exact answers
    again = bench(tmp_path, out, "--keep", str(tmp_path / "kept"), "--no-milvus")
    assert "the store --keep left" in again.stdout
    rows = json.loads(out.read_text())["results"]
    assert {r["mode"]: r["recall_at_10"] for r in rows} == recall
    assert all(r["insert_s"] is None and "milvus_overlap_at_10" not in r for r in rows)


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


def test_snapshot_update_benchmark_brings_a_snapshot_up_to_date_both_ways(tmp_path: Path) -> None:
    """benchmarks/snapshot_update.py past LAYER_MIN_ROWS: a rewrite and a delta each time,
    and the two snapshots' answers checked equal by the script itself (it exits 1 if not)."""
    out = tmp_path / "update.json"
    small = ("--rows", "25000", "--rounds", "1", "--queries", "4")
    script(tmp_path, "snapshot_update.py", *small, "--json", str(out))
    found = json.loads(out.read_text())
    assert found["rows"] == 25000 and {"cpu", "cores"} <= found["machine"].keys()
    assert {k: len(v) for k, v in found["update_s"].items()} == {"rewrite": 1, "delta": 1}
    assert set(found["search_p50_ms"]) == {
        f"{search} / {way}"
        for search in ("dense", "bm25", "hybrid legs")
        for way in ("rewrite", "delta")
    }
