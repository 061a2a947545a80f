"""`mmrag eval`: candidate text models compared on the user's own labelled queries.

Each candidate gets a temporary Milvus Lite store and catalog of its own (removed afterwards,
so the user's store is never touched), built through the composition root exactly as ingest
builds the real one; then every query runs in BM25, dense and hybrid modes and is scored by
`mmrag.search.evaluate`. Candidates run one after another in this process: a model that cannot
be loaded costs only its own row.
"""

from __future__ import annotations

import gc
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrag.search.evaluate import DEPTH, Scores, align_qrels, evaluate
from mmrag.settings import Settings

MODES = ("bm25", "dense", "hybrid")
SELF_QUERIES = 50  # documents `--self` turns into queries, at most
SELF_NOTE = (
    "--self: {n} queries built from the library itself (a document's title or first sentence "
    "finds the document); text only: photos and recordings gave no queries in this version"
)

Say = Callable[[str], None]


@dataclass(frozen=True)
class Candidate:
    """A model, and the chunk size its documents are cut to (None: the model's max length)."""

    model: str
    chunk_tokens: int | None = None

    def label(self, with_chunks: bool, short: bool = True) -> str:
        """The model's name (its last part: `org/name` -> `name`), and the chunk size."""
        name = (Path(self.model).name or self.model) if short else self.model
        return f"{name} (chunks {self.chunk_tokens or 'max'})" if with_chunks else name


@dataclass
class Labels:
    """Queries and judgements, judged paths relative to the library root."""

    queries: list[dict]
    qrels: dict[str, dict[str, int]]
    self_built: bool = False


@dataclass
class ModelRun:
    """One candidate's measurements."""

    candidate: Candidate
    label: str
    info: dict[str, Any]
    load_s: float
    ingest_s: float
    files: int
    segments: int
    failed: list[tuple[str, str]]
    peak_rss_mb: float | None
    scores: dict[str, Scores]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.candidate.model,
            "label": self.label,
            "chunk_tokens": self.candidate.chunk_tokens,
            "dim": self.info.get("dim"),
            "max_tokens": self.info.get("max_tokens"),
            "parameters": self.info.get("parameters"),
            "memory_mb": self.info.get("memory_mb"),
            "peak_rss_mb": self.peak_rss_mb,
            "source": self.info.get("source"),
            "device": self.info.get("device"),
            "load_seconds": round(self.load_s, 2),
            "ingest_seconds": round(self.ingest_s, 2),
            "files": self.files,
            "segments": self.segments,
            "failed_files": [{"path": p, "reason": why} for p, why in self.failed],
            "modes": {mode: s.to_json() for mode, s in self.scores.items()},
        }


@dataclass
class EvalReport:
    library: Path
    files: int  # ingested per candidate
    library_files: int
    queries: int
    self_built: bool
    notes: list[str] = field(default_factory=list)
    runs: list[ModelRun] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (candidate, why)

    def to_json(self) -> dict[str, Any]:
        return {
            "library": str(self.library),
            "library_files": self.library_files,
            "files": self.files,
            "queries": self.queries,
            "self": self.self_built,
            "notes": self.notes,
            "models": [r.to_json() for r in self.runs],
            "errors": [{"model": m, "reason": why} for m, why in self.errors],
        }


# -- what is ingested ---------------------------------------------------------------------------


def library_files(library: Path) -> list[str]:
    """Every file under the library (as ingest would scan it), relative and `/`-separated."""
    from mmrag.ingest.scan import FoundFile, scan

    root = os.path.abspath(library)
    return sorted(
        Path(os.path.relpath(f.path, root)).as_posix()
        for f in scan([root])
        if isinstance(f, FoundFile)
    )


def choose_files(
    files: list[str], judged: set[str], sample: int | None, seed: int = 0
) -> list[str]:
    """All files, or `sample` of them: every judged file, then others drawn at random (seeded,
    so two runs compare the same sample)."""
    if sample is None or sample >= len(files):
        return list(files)
    must = [f for f in files if f in judged]
    rest = [f for f in files if f not in judged]
    drawn = random.Random(seed).sample(rest, max(0, min(len(rest), sample - len(must))))
    return sorted(must + drawn)


# -- queries from the library itself (--self) ---------------------------------------------------

_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)", re.S)


def self_labels(library: Path, files: list[str], limit: int = SELF_QUERIES) -> Labels:
    """A query per document, its title (a short first line) or else its first sentence; the
    document is its answer (grade 2; documents with the same query text all are)."""
    from mmrag.ingest.detect import UnsupportedContent, detect_kind
    from mmrag.pipelines.text.extract import SUPPORTED_FORMATS, extract_text

    by_text: dict[str, list[str]] = {}
    for rel in files:
        path = library / rel
        try:
            kind = detect_kind(path)
            if kind.media != "text" or kind.format not in SUPPORTED_FORMATS:
                continue
            blocks = extract_text(path, kind.format, max_bytes=20_000_000)
        except (UnsupportedContent, OSError, ValueError):
            continue  # not a document, or not a readable one: no query from it
        query = query_from_text("\n".join(b.text for b in blocks[:3]))
        if query:
            by_text.setdefault(query, []).append(rel)
    chosen = sorted(by_text)
    if len(chosen) > limit:
        chosen = sorted(random.Random(0).sample(chosen, limit))
    queries, qrels = [], {}
    for n, text in enumerate(chosen, 1):
        qid = f"self-{n:03d}"
        queries.append({"id": qid, "text": text})
        qrels[qid] = dict.fromkeys(by_text[text], 2)
    return Labels(queries, qrels, self_built=True)


def query_from_text(text: str) -> str | None:
    """A document's title (its first line, when 2 to 15 words), else its first sentence (3 to
    40 words); None when it has neither."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    title = re.sub(r"^#+\s*", "", lines[0]).strip()
    if 2 <= len(title.split()) <= 15 and not title.endswith((".", ",", ";")):
        return title
    found = _SENTENCE.match(" ".join(lines))
    sentence = " ".join((found.group(1) if found else " ".join(lines)).split())
    words = sentence.split()
    return " ".join(words[:40]) if len(words) >= 3 else None


# -- running the candidates ---------------------------------------------------------------------


def run_eval(
    base: Settings,
    candidates: list[Candidate],
    library: Path,
    labels: Labels,
    files: list[str],
    library_count: int,
    say: Say,
) -> EvalReport:
    """Every candidate on the same files and queries; failures become `errors`."""
    with_chunks = len({c.chunk_tokens for c in candidates}) > 1 or any(
        c.chunk_tokens for c in candidates
    )
    short = [c.label(with_chunks) for c in candidates]
    labels_shown = (
        short
        if len(set(short)) == len(short)
        else [c.label(with_chunks, short=False) for c in candidates]
    )
    judged = [q for q in labels.queries if q["id"] in labels.qrels]
    report = EvalReport(library, len(files), library_count, len(judged), labels.self_built)
    for candidate, label in zip(candidates, labels_shown, strict=True):
        try:
            whole = len(files) == library_count
            run = run_candidate(base, candidate, label, library, labels, files, say, whole)
        except CandidateError as exc:
            full = candidate.label(with_chunks, short=False)
            say(f"model {full}: {exc}")
            report.errors.append((full, str(exc)))
            continue
        report.runs.append(run)
        gc.collect()  # the model goes before the next loads
    return report


class CandidateError(RuntimeError):
    """A candidate that could not be measured; str() is the one-line reason."""


def run_candidate(
    base: Settings,
    candidate: Candidate,
    label: str,
    library: Path,
    labels: Labels,
    files: list[str],
    say: Say,
    whole: bool = False,
) -> ModelRun:
    """Load, ingest into a temporary store, query, and remove the store. `whole`: `files` are
    the whole library (scanned again by ingest, not listed one by one)."""
    from mmrag.app import Models, open_store

    folder = Path(tempfile.mkdtemp(prefix="mmrag-eval-"))
    try:
        settings = candidate_settings(base, candidate, folder)
        with PeakRss() as rss:
            try:
                models = Models.build(settings)
                t0 = time.perf_counter()
                models.text.encoder  # noqa: B018 - loads the model, or says why it cannot
                load_s = time.perf_counter() - t0
                info = {**models.text.info(), "device": models.text.encoder.device}
            except Exception as exc:  # any failure to load is this candidate's alone
                raise CandidateError(_one_line(exc)) from exc
            say(f"model {label}: loaded in {load_s:.1f} s; ingesting {len(files)} files")
            try:
                catalog, store = open_store(settings, warn=lambda _: None)
            except Exception as exc:
                raise CandidateError(f"temporary store: {_one_line(exc)}") from exc
            try:
                runner = models.runner(catalog, store)
                models.text.encode_texts(["warm up"])  # one-time costs are not the index's
                t0 = time.perf_counter()
                ingested = runner.run(roots(library, files, whole), on_wait=say)
                ingest_s = time.perf_counter() - t0
                say(f"model {label}: {ingested.segments} segments in {ingest_s:.1f} s; querying")
                if ingested.failed:
                    path, why = ingested.failed[0]
                    say(f"model {label}: {len(ingested.failed)} files failed, e.g. {path}: {why}")
                searcher = models.searcher(catalog, store)
                scores = evaluate(
                    searcher, labels.queries, labels.qrels, library, MODES, DEPTH, timed=True
                )
            except (OSError, RuntimeError, ValueError) as exc:  # StoreError, a model's failure
                raise CandidateError(_one_line(exc)) from exc
            finally:
                store.close()
                catalog.close()
        return ModelRun(
            candidate,
            label,
            info,
            load_s,
            ingest_s,
            len(files),
            ingested.segments,
            ingested.failed,
            rss.peak_mb,
            scores,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def roots(library: Path, files: list[str], whole: bool) -> list[str]:
    """What ingest is given: the library folder, or each file of a sample."""
    return [str(library)] if whole else [str(library / f) for f in files]


def candidate_settings(base: Settings, candidate: Candidate, folder: Path) -> Settings:
    """The user's settings with a store, catalog and thumbnails in `folder`, only the text
    space on, and queries encoded by the model itself (no export into the user's cache)."""
    data = base.model_dump()
    data.update(
        home=folder,
        milvus_uri=str(folder / "milvus.db"),
        milvus_token="",
        catalog=folder / "catalog.sqlite",
        thumbnails=folder / "thumbs",
        cache_dir=folder / "cache",
        index_type=Settings.model_fields["index_type"].default,
        text_model=candidate.model,
        chunk_tokens=candidate.chunk_tokens,
        image_model="",
        clip_model="",
        audio_model="",
        speech_model="",
        models={},
        query_encoder="torch",
        rerank_model="",
    )
    return Settings(**data)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


class PeakRss:
    """This process's largest resident memory while the block runs, sampled every 20 ms
    (psutil, from the `eval` extra; without it `peak_mb` is None)."""

    def __init__(self) -> None:
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        try:
            import psutil
        except ImportError:
            return self
        process = psutil.Process()

        def sample() -> None:
            peak = 0
            while True:
                peak = max(peak, process.memory_info().rss)
                self.peak_mb = round(peak / 2**20, 1)
                if self._stop.wait(0.02):
                    return

        self._thread = threading.Thread(target=sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def judged_files(labels: Labels, files: list[str], library: Path) -> tuple[Labels, list[str]]:
    """Labels with judged paths named as the library's files, and a note naming the judged
    paths no file matches (they stay judged, so they count against recall)."""
    aligned, unmatched = align_qrels(labels.qrels, files)
    notes = []
    if unmatched:
        more = " ..." if len(unmatched) > 5 else ""
        notes.append(
            f"{len(unmatched)} judged paths are not files of {library}: "
            f"{', '.join(unmatched[:5])}{more}"
        )
    return Labels(labels.queries, aligned, labels.self_built), notes
