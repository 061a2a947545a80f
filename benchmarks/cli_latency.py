"""Cold CLI text search against `python -c "import torch"`, in one run, alternating.

    python benchmarks/cli_latency.py [--rounds 3] [--query "how do I reset the router"]

Ingests the sample documents (data/library/docs) into a fresh Milvus Lite store with its own
query-encoder cache (the ingest exports the text model to ONNX once), then times, round by
round and in turn, three new processes: `python -c "import torch"`, `mmrag search QUERY`
(the default: queries encoded by ONNX Runtime) and the same search with
MMRAG_QUERY_ENCODER=torch (the model itself). Each is a cold start of its own: a new Python,
Milvus Lite started and stopped. Then, with `mmrag serve` running on the store (the `serve`
extra), the same search through it. Prints each one's median wall time and peak memory (RSS),
the spread (min-max), the ratio of search to `import torch`, and the ONNX query vectors' cosine
to the full model's on data/eval's queries (must be > 0.999).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine  # a sibling script

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one new process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def vector_check(cache: Path) -> float:
    """The least cosine between the ONNX query vectors and the full model's, on eval queries."""
    import numpy as np

    from mmrag.pipelines.text.encoder import TextEncoder
    from mmrag.pipelines.text.onnx_query import OnnxTextEncoder
    from mmrag.settings import DEFAULT_TEXT_MODEL

    lines = (REPO / "data" / "eval" / "text_queries.jsonl").read_text().splitlines()
    queries = [json.loads(line)["text"] for line in lines if line.strip()]
    light = OnnxTextEncoder.load(cache, DEFAULT_TEXT_MODEL)
    if light is None:
        raise SystemExit(f"no current export of {DEFAULT_TEXT_MODEL} in {cache}")
    full = TextEncoder(DEFAULT_TEXT_MODEL, device="cpu")
    return float(np.min(np.sum(light.encode(queries) * full.encode(queries), axis=1)))


def start_server(mmrag: str, env: dict[str, str]) -> subprocess.Popen | None:
    """`mmrag serve` on the benchmark's store, once it answers (searches then go through it);
    None where the `serve` extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("fastapi") is None:
        print("mmrag search (serve): skipped, the serve extra is not installed")
        return None
    proc = subprocess.Popen(
        [mmrag, "serve", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(Path(env["MMRAG_HOME"]).glob("*.serve.json")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("mmrag serve did not start")
        time.sleep(0.2)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--query", default="how do I reset the router")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mmrag-cli-latency-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMRAG_")}
        env |= {
            "MMRAG_HOME": str(work / "home"),
            "MMRAG_CACHE_DIR": str(work / "cache"),
            "MMRAG_CONFIG": str(work / "none.toml"),
            "MMRAG_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1",
        }
        mmrag = str(BIN / "mmrag")
        t0 = time.perf_counter()
        subprocess.run(
            [mmrag, "ingest", str(REPO / "data" / "library" / "docs"), "--json"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        took = time.perf_counter() - t0
        print(f"ingest of data/library/docs (and the ONNX export): {took:.1f} s")
        runs = {
            "import torch": ([sys.executable, "-c", "import torch"], env),
            "mmrag search (onnx)": ([mmrag, "search", args.query, "--limit", "5"], env),
            "mmrag search (torch)": (
                [mmrag, "search", args.query, "--limit", "5"],
                {**env, "MMRAG_QUERY_ENCODER": "torch"},
            ),
        }
        for cmd, e in runs.values():  # one untimed pass: the files are in the page cache
            timed(cmd, e)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        memory: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (cmd, e) in runs.items():
                s, mb = timed(cmd, e)
                seconds[name].append(s)
                memory[name].append(mb)
        server = start_server(mmrag, env)
        if server is not None:
            cmd = [mmrag, "search", args.query, "--limit", "5"]
            timed(cmd, env)  # the first request warms the server
            try:
                for s, mb in (timed(cmd, env) for _ in range(args.rounds)):
                    seconds.setdefault("mmrag search (serve)", []).append(s)
                    memory.setdefault("mmrag search (serve)", []).append(mb)
            finally:
                server.terminate()
                server.wait(60)
        print(json.dumps(machine()))
        base = statistics.median(seconds["import torch"])
        for name in seconds:
            med = statistics.median(seconds[name])
            print(
                f"{name:22s} median {med:5.2f} s  (min {min(seconds[name]):.2f}, "
                f"max {max(seconds[name]):.2f}; {args.rounds} runs)  "
                f"peak RSS {statistics.median(memory[name]):5.0f} MB  "
                f"ratio to import torch {med / base:4.2f}"
            )
        cosine = vector_check(work / "cache")
        print(f"ONNX query vectors vs the model on data/eval queries: least cosine {cosine:.6f}")
        if not cosine > 0.999:
            raise SystemExit("the exported query encoder differs from the model")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
