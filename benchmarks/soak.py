"""Soak test: one store through minutes of edits, renames, deletes, `kill -9` and searches.

    python benchmarks/soak.py [--minutes 30] [--seed 1] [--kill-rate 0.4] [--keep DIR]

Not part of CI (it runs for minutes). A library of documents and photos (copied from
data/library) lives in a temporary folder with its own Milvus Lite store and catalog. Each round
changes the library at random (edit, add, rename or move, delete), then runs the real
`mmrag ingest --prune` in a subprocess while another thread runs `mmrag search` queries against
the same store; in `--kill-rate` of the rounds the ingest is killed with SIGKILL after a random
delay and run again. After every completed ingest the store is checked:

- every file on disk has a path record with its content, no record is left for a deleted file,
  and no content is pending;
- in every collection, the ids in Milvus are exactly the segment ids the catalog recorded;
- a second `ingest --prune` changes nothing (no file new, changed or failed, no segment written);
- every search exited 0 with at most `limit` hits.

Any violation stops the run with exit code 1 and says what differed. The summary (rounds,
kills, searches, checks, seconds) is printed as JSON at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = "harbour lantern recipe garden router invoice sailing bread boiler lease cat".split()
LIMIT = 5


class SoakFailure(AssertionError):
    pass


def mmrag(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from mmrag.cli import main; main()", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def seed_library(lib: Path) -> None:
    src = REPO / "data" / "library"
    for f in sorted(src.rglob("*")):
        if f.is_file() and f.suffix in {".md", ".txt", ".html", ".pdf", ".jpg", ".png"}:
            out = lib / f.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out)


def change_library(lib: Path, rng: random.Random) -> str:
    """One random change; returns what it did."""
    files = sorted(p for p in lib.rglob("*") if p.is_file())
    texts = [p for p in files if p.suffix in {".md", ".txt"}]
    action = rng.choice(["edit", "add", "rename", "move", "delete", "copy"])
    if action == "edit" and texts:
        f = rng.choice(texts)
        with f.open("a", encoding="utf-8") as out:
            out.write(f"\n\nNote {rng.randrange(10**6)} about the {rng.choice(WORDS)}.\n")
        return f"edit {f.name}"
    if action == "add":
        f = lib / "added" / f"note {rng.randrange(10**6)}.txt"
        f.parent.mkdir(exist_ok=True)
        words = " ".join(rng.choice(WORDS) for _ in range(60))
        f.write_text(f"A new note.\n\n{words}.\n", encoding="utf-8")
        return f"add {f.name}"
    if not files:
        return "nothing to change"
    f = rng.choice(files)
    if action == "rename":
        target = f.with_name(f"renamed {rng.randrange(10**6)} {f.name}")
        f.rename(target)
        return f"rename {f.name}"
    if action == "move":
        target = lib / f"folder {rng.randrange(5)}" / f.name
        target.parent.mkdir(exist_ok=True)
        if not target.exists():
            f.rename(target)
        return f"move {f.name}"
    if action == "copy":
        shutil.copy2(f, f.with_name(f"copy {rng.randrange(10**6)} {f.name}"))
        return f"copy {f.name}"
    f.unlink()
    return f"delete {f.name}"


def summary(result: subprocess.CompletedProcess) -> dict:
    """`ingest --json`'s object (the last JSON line on stdout)."""
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SoakFailure(f"ingest printed no JSON summary: {result.stderr[-2000:]}")


def check_store(env: dict, lib: Path) -> None:
    """Catalog and Milvus agree, and the catalog matches the files on disk."""
    from mmrag.app import open_store
    from mmrag.settings import Settings

    on_disk = {str(p.resolve()) for p in lib.rglob("*") if p.is_file()}
    db = sqlite3.connect(f"file:{env['MMRAG_CATALOG']}?mode=ro", uri=True)
    try:
        paths = dict(db.execute("SELECT path, media_id FROM paths WHERE error IS NULL"))
        failed = db.execute("SELECT path, error FROM paths WHERE error IS NOT NULL").fetchall()
        pending = db.execute("SELECT count(*) FROM media WHERE status != 'done'").fetchone()[0]
        recorded: dict[str, set[str]] = {}
        for collection, seg in db.execute("SELECT collection, id FROM segments"):
            recorded.setdefault(collection, set()).add(seg)
    finally:
        db.close()
    if failed:
        raise SoakFailure(f"failed paths: {failed[:5]}")
    if set(paths) != on_disk:
        missing, stale = sorted(on_disk - set(paths))[:5], sorted(set(paths) - on_disk)[:5]
        raise SoakFailure(f"catalog and disk differ: missing {missing}, stale {stale}")
    if pending:
        raise SoakFailure(f"{pending} contents still pending after a completed ingest")
    settings = Settings(
        milvus_uri=env["MMRAG_MILVUS_URI"], catalog=Path(env["MMRAG_CATALOG"]), profile="offline"
    )
    catalog, store = open_store(settings)
    try:
        for collection in store.existing_collections():
            in_milvus = set(store.ids(collection))
            if in_milvus != recorded.get(collection, set()):
                extra = sorted(in_milvus - recorded.get(collection, set()))[:5]
                lost = sorted(recorded.get(collection, set()) - in_milvus)[:5]
                raise SoakFailure(f"{collection}: Milvus has extra {extra}, lacks {lost}")
    finally:
        store.close()
        catalog.close()


class Searches(threading.Thread):
    """`mmrag search` in a loop while an ingest runs; every run must succeed."""

    def __init__(self, env: dict, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.env, self.rng = env, rng
        self.stop = threading.Event()
        self.count = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            query = " ".join(self.rng.sample(WORDS, 2))
            r = mmrag(self.env, "search", query, "--json", "--limit", str(LIMIT), timeout=300)
            self.count += 1
            if r.returncode != 0:
                self.errors.append(f"search {query!r} exited {r.returncode}: {r.stderr[-500:]}")
            elif len(json.loads(r.stdout or "[]")) > LIMIT:
                self.errors.append(f"search {query!r} gave more than {LIMIT} hits")


def ingest(env: dict, lib: Path, rng: random.Random, kill_rate: float) -> bool:
    """One ingest to completion; maybe killed (SIGKILL) once on the way. True if killed."""
    killed = False
    if rng.random() < kill_rate:
        cmd = [sys.executable, "-c", "from mmrag.cli import main; main()", "ingest", str(lib)]
        proc = subprocess.Popen(
            [*cmd, "--prune", "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=rng.uniform(0.5, 12.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
    r = mmrag(env, "ingest", str(lib), "--prune", "--json")
    if r.returncode != 0:
        raise SoakFailure(f"ingest exited {r.returncode}: {r.stderr[-2000:]}")
    return killed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill-rate", type=float, default=0.4, help="share of rounds with kill -9")
    ap.add_argument("--changes", type=int, default=3, help="library changes per round")
    ap.add_argument("--keep", type=Path, help="work here and keep it (default: a temp folder)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="mmrag-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    lib = work / "lib"
    seed_library(lib)
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MMRAG_") or k == "MMRAG_CACHE_DIR"
        },
        "MMRAG_MILVUS_URI": str(work / "milvus.db"),
        "MMRAG_CATALOG": str(work / "catalog.sqlite"),
        "MMRAG_THUMBNAILS": str(work / "thumbs"),
        "MMRAG_CONFIG": str(work / "none.toml"),
        "MMRAG_PROFILE": "offline",
        "MMRAG_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    stats = {"rounds": 0, "kills": 0, "changes": 0, "searches": 0, "checks": 0}
    t0 = time.monotonic()
    deadline = t0 + 60 * args.minutes
    try:
        ingest(env, lib, rng, 0.0)  # the first ingest of the whole library
        while time.monotonic() < deadline:
            done = [change_library(lib, rng) for _ in range(args.changes)]
            stats["changes"] += len(done)
            searches = Searches(env, random.Random(rng.random()))
            searches.start()
            try:
                stats["kills"] += ingest(env, lib, rng, args.kill_rate)
            finally:
                searches.stop.set()
                searches.join()
            stats["searches"] += searches.count
            if searches.errors:
                raise SoakFailure("; ".join(searches.errors[:3]))
            check_store(env, lib)
            again = summary(mmrag(env, "ingest", str(lib), "--prune", "--json"))
            if again["new"] or again["changed"] or again["failed"] or again["segments"]:
                raise SoakFailure(f"a clean re-ingest changed something: {again}")
            stats["checks"] += 1
            stats["rounds"] += 1
            print(f"round {stats['rounds']}: {', '.join(done)}; ok", file=sys.stderr)
    except SoakFailure as exc:
        print(json.dumps({**stats, "failure": str(exc)}))
        sys.exit(1)
    finally:
        stats["seconds"] = round(time.monotonic() - t0, 1)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
