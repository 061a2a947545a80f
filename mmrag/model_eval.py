"""`mmrag eval`: candidate text models compared on the user's own labelled queries.

Each candidate gets a temporary Milvus Lite store and catalog of its own (removed afterwards,
so the user's store is never touched), built through the composition root exactly as ingest
builds the real one; then every query runs in BM25, dense and hybrid modes and is scored by
`mmrag.search.evaluate`. Hybrid is then scored again under a small grid of fusion settings on
the same store (only queries: nothing is ingested again), and the best is named as the settings
to use. Candidates run one after another in this process: a model that cannot
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmrag.search.evaluate import DEPTH, Scores, align_qrels, evaluate
from mmrag.settings import Settings

MODES = ("bm25", "dense", "hybrid")
FUSION_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # dense shares tried in weighted fusion
SELF_QUERIES = 50  # documents, photos and recordings `--self` turns into queries, each at most
KINDS = ("document", "photo", "recording")  # the kinds of query `--self` builds
SELF_NOTE = (
    "--self: {document} document, {photo} photo, {recording} recording queries built from the "
    "library (a document's title or first sentence finds the document, an altered copy of a "
    "photo the photo, a line of a recording's transcript the recording)"
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


@dataclass(frozen=True)
class Fusion:
    """A hybrid fusion setting: a weighted sum of normalised scores with the dense share
    (Milvus's normalisation, or each leg min-max scaled), or reciprocal rank fusion (which
    keeps the dense_weight setting but does not use it)."""

    method: str  # "weighted" | "minmax" | "rrf"
    dense_weight: float = 0.5

    @classmethod
    def of(cls, method: str, dense_weight: float) -> Fusion:
        return cls(method, round(dense_weight, 4))

    @property
    def label(self) -> str:
        return "rrf" if self.method == "rrf" else f"{self.method} {self.dense_weight:g}"

    def to_json(self) -> dict[str, Any]:
        weight = None if self.method == "rrf" else self.dense_weight
        return {"fusion": self.method, "dense_weight": weight}

    def changes(self, configured: Fusion) -> list[tuple[str, str]]:
        """The settings (name, value) that turn `configured` into this setting."""
        out = []
        if self.method != configured.method:
            out.append(("hybrid_fusion", self.method))
        if self.method != "rrf" and self.dense_weight != configured.dense_weight:
            out.append(("dense_weight", f"{self.dense_weight:g}"))
        return out

    def env_lines(self, configured: Fusion) -> list[str]:
        """`MMRAG_DENSE_WEIGHT=0.8`: the environment variables to set (mmrag/settings.py)."""
        return [f"MMRAG_{name.upper()}={value}" for name, value in self.changes(configured)]

    def toml_lines(self, configured: Fusion) -> list[str]:
        """`dense_weight = 0.8`: the lines for mmrag.toml."""
        return [
            f'{name} = "{value}"' if name == "hybrid_fusion" else f"{name} = {value}"
            for name, value in self.changes(configured)
        ]


def fusion_grid(configured: Fusion) -> list[Fusion]:
    """Weighted and min-max fusion at each of FUSION_WEIGHTS (and the configured weight),
    then RRF."""
    weights = sorted({*FUSION_WEIGHTS, configured.dense_weight})
    scaled = [Fusion(method, w) for method in ("weighted", "minmax") for w in weights]
    return [*scaled, Fusion("rrf", configured.dense_weight)]


def best_fusion(points: list[tuple[Fusion, float]], configured: Fusion) -> Fusion:
    """The setting with the highest nDCG@10, compared to 3 decimals (as the table shows them,
    so a difference of one query's rounding is no reason to change). Ties go to the configured
    setting, then to the fewest changed settings, then to the weight nearest the configured
    dense_weight (RRF, which drops the scores' spread, last), then to the lower weight."""

    def key(point: tuple[Fusion, float]) -> tuple:
        fusion, ndcg = point
        rrf = fusion.method == "rrf"
        far = 2.0 if rrf else round(abs(fusion.dense_weight - configured.dense_weight), 4)
        return (
            -round(ndcg, 3),
            fusion != configured,
            len(fusion.changes(configured)),
            far,
            fusion.dense_weight,
        )

    return min(points, key=key)[0]


@dataclass
class Labels:
    """Queries and judgements, judged paths relative to the library root."""

    queries: list[dict]
    qrels: dict[str, dict[str, int]]
    self_built: bool = False
    # --self: sampled recordings, whose transcript lines become queries once ingested
    recordings: list[str] = field(default_factory=list)


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
    configured: Fusion | None = None  # hybrid's fusion in `scores`
    fusion: list[tuple[Fusion, Scores]] = field(default_factory=list)  # hybrid per grid point
    kinds: dict[str, dict[str, Scores]] = field(default_factory=dict)  # --self: per query kind

    @property
    def best(self) -> Fusion | None:
        """The grid's best fusion setting (None when the grid was not run)."""
        if not self.fusion or self.configured is None:
            return None
        return best_fusion([(f, s.ndcg) for f, s in self.fusion], self.configured)

    def fusion_scores(self, fusion: Fusion) -> Scores:
        return next(s for f, s in self.fusion if f == fusion)

    def fusion_json(self) -> dict[str, Any] | None:
        """Every grid point's scores with the best and the configured marked, and the best's
        settings lines (empty when the configured setting is best)."""
        best, configured = self.best, self.configured
        if best is None or configured is None:
            return None
        return {
            "configured": {
                **configured.to_json(),
                "ndcg@10": _ndcg(self.fusion_scores(configured)),
            },
            "best": {
                **best.to_json(),
                "ndcg@10": _ndcg(self.fusion_scores(best)),
                "env": best.env_lines(configured),
                "toml": best.toml_lines(configured),
            },
            "grid": [
                {
                    **f.to_json(),
                    "best": f == best,
                    "configured": f == configured,
                    **{k: v for k, v in s.to_json().items() if k != "p50_ms"},  # not timed
                }
                for f, s in self.fusion
            ],
        }

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
            "fusion": self.fusion_json(),
            "kinds": {
                kind: {mode: s.to_json() for mode, s in modes.items()}
                for kind, modes in self.kinds.items()
            },
        }


def _ndcg(scores: Scores) -> float:
    return round(scores.ndcg, 4)


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
    kinds: dict[str, int] = field(default_factory=dict)  # --self: queries of each kind

    def to_json(self) -> dict[str, Any]:
        return {
            "library": str(self.library),
            "library_files": self.library_files,
            "files": self.files,
            "queries": self.queries,
            "self": self.self_built,
            "kinds": self.kinds,
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


def self_labels(
    library: Path,
    files: list[str],
    limit: int = SELF_QUERIES,
    photo_dir: Path | None = None,
    recordings: bool = False,
    seed: int = 0,
) -> Labels:
    """A query per document, its title (a short first line) or else its first sentence; the
    document is its answer (grade 2; documents with the same query text all are). With
    `photo_dir`, an altered copy of each sampled photo, written there, finds the photo; with
    `recordings`, the sampled recordings are noted (their queries come from their transcripts,
    after ingest: `with_transcript_queries`)."""
    from mmrag.ingest.detect import UnsupportedContent, detect_kind
    from mmrag.pipelines.text.extract import SUPPORTED_FORMATS, extract_text

    by_text: dict[str, list[str]] = {}
    photos: list[str] = []
    sounds: list[str] = []
    for rel in files:
        path = library / rel
        try:
            kind = detect_kind(path)
            if kind.media in ("image", "audio"):
                (photos if kind.media == "image" else sounds).append(rel)
                continue
            if kind.media != "text" or kind.format not in SUPPORTED_FORMATS:
                continue
            blocks = extract_text(path, kind.format, max_bytes=20_000_000)
        except (UnsupportedContent, OSError, ValueError):
            continue  # not a document, or not a readable one: no query from it
        query = query_from_text("\n".join(b.text for b in blocks[:3]))
        if query:
            by_text.setdefault(query, []).append(rel)
    queries, qrels = [], {}
    for n, text in enumerate(_drawn(sorted(by_text), limit, seed), 1):
        qid = f"self-{n:03d}"
        queries.append({"id": qid, "kind": "document", "text": text})
        qrels[qid] = dict.fromkeys(by_text[text], 2)
    labels = Labels(queries, qrels, self_built=True)
    if photo_dir is not None:
        add_photo_queries(labels, library, _drawn(photos, limit, seed), photo_dir, seed)
    if recordings:
        labels.recordings = _drawn(sounds, limit, seed)
    return labels


def _drawn(items: list[str], limit: int, seed: int) -> list[str]:
    """All of `items`, or `limit` of them drawn at random (seeded), in their order."""
    return sorted(random.Random(seed).sample(items, limit)) if len(items) > limit else items


def add_photo_queries(
    labels: Labels, library: Path, photos: list[str], folder: Path, seed: int = 0
) -> None:
    """An altered copy of each photo, written to `folder` (outside the library), is an image
    query whose answer is the photo. A photo that cannot be decoded gives none."""
    from PIL import Image

    for n, rel in enumerate(photos, 1):
        qid = f"photo-{n:03d}"
        copy = folder / f"{qid}.jpg"
        try:
            altered_copy(library / rel, copy, random.Random(f"{seed}:{rel}"))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        labels.queries.append({"id": qid, "kind": "photo", "image": str(copy)})
        labels.qrels[qid] = {rel: 2}


def altered_copy(source: Path, target: Path, rng: random.Random) -> None:
    """The photo as it comes back after being shared: cropped by 4-10% a side, shrunk to 50-80%,
    brightness and colour moved by up to 10%, re-encoded as a JPEG of quality 60-80. `rng`
    makes it the same copy on every run."""
    from PIL import Image, ImageEnhance, ImageOps

    with Image.open(source) as opened:
        opened.draft("RGB", (1600, 1600))  # a big JPEG decodes at a smaller scale
        img = ImageOps.exif_transpose(opened).convert("RGB")
    w, h = img.size
    left, top, right, bottom = (rng.uniform(0.04, 0.1) for _ in range(4))
    img = img.crop(
        (round(left * w), round(top * h), round((1 - right) * w), round((1 - bottom) * h))
    )
    scale = rng.uniform(0.5, 0.8)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.9, 1.1))
    img.save(target, "JPEG", quality=rng.randint(60, 80))


def with_transcript_queries(
    labels: Labels, library: Path, models: Any, catalog: Any, store: Any
) -> Labels:
    """`labels` and, for each sampled recording that was transcribed in this store, a query:
    its longest transcript line (3 words or more, at most 40), whose answer is the recording."""
    from mmrag.store.schema import quote

    root = os.path.abspath(library)
    media: dict[str, list[str]] = {}
    for rel in labels.recordings:
        record = catalog.path_record(os.path.join(root, *rel.split("/")))
        if record is not None and record.media_id:
            media.setdefault(record.media_id, []).append(rel)
    _, collection = models.searched("text", catalog, store)
    if not media or collection not in store.present([collection]):
        return labels
    ids = ", ".join(quote(m) for m in sorted(media))
    lines: dict[str, list[str]] = {}
    for row in store.rows(collection, f'modality == "transcript" and media_id in [{ids}]'):
        lines.setdefault(row["media_id"], []).append(" ".join(str(row["text"]).split()))
    queries, qrels = list(labels.queries), dict(labels.qrels)
    for n, media_id in enumerate(sorted(media, key=lambda m: media[m][0]), 1):
        said = [line for line in lines.get(media_id, []) if len(line.split()) >= 3]
        if not said:
            continue
        qid = f"recording-{n:03d}"
        line = max(said, key=lambda t: (len(t.split()), t))
        queries.append({"id": qid, "kind": "recording", "text": " ".join(line.split()[:40])})
        qrels[qid] = dict.fromkeys(media[media_id], 2)
    return replace(labels, queries=queries, qrels=qrels)


def kind_scores(searcher: Any, labels: Labels, library: Path) -> dict[str, dict[str, Scores]]:
    """Scores per kind of query --self built: documents and recordings in each mode, photos
    as image queries (`Searcher.find`, one mode: "image")."""
    out: dict[str, dict[str, Scores]] = {}
    for kind in KINDS:
        queries = [q for q in labels.queries if q.get("kind") == kind]
        if queries and kind == "photo":
            out[kind] = {"image": image_scores(searcher, queries, labels.qrels, library)}
        elif queries:
            out[kind] = evaluate(searcher, queries, labels.qrels, library, MODES, DEPTH, timed=True)
    return out


def image_scores(
    searcher: Any, queries: list[dict], qrels: dict[str, dict[str, int]], library: Path
) -> Scores:
    """Each photo query's file ranking (as `rank_files` does for text) and, timed afterwards,
    its plain 10-hit search."""
    from mmrag.kinds import QueryKind
    from mmrag.search.evaluate import fold, score
    from mmrag.search.query import Shape

    base = os.path.abspath(library)
    rankings = []
    for q in queries:
        hits = searcher.find(
            QueryKind.IMAGE, Path(q["image"]), limit=DEPTH, shape=Shape(group=True)
        )
        found = [Path(os.path.relpath(os.path.abspath(h.path), base)).as_posix() for h in hits]
        rankings.append((fold(found), qrels[q["id"]]))
    times = []
    for q in queries:
        t0 = time.perf_counter()
        searcher.find(QueryKind.IMAGE, Path(q["image"]), limit=10)
        times.append(1000 * (time.perf_counter() - t0))
    return score(rankings, times)


def text_only(labels: Labels) -> Labels:
    """The text queries (documents, recordings, or the user's), which every mode scores."""
    return replace(labels, queries=[q for q in labels.queries if q.get("kind") != "photo"])


def kept_models(labels: Labels) -> tuple[str, ...]:
    """The user's models a candidate's store keeps beside the text model: the image model for
    photo queries, the speech model for recordings' transcripts."""
    photos = any(q.get("kind") == "photo" for q in labels.queries)
    return (("image_model",) if photos else ()) + (("speech_model",) if labels.recordings else ())


def self_note(counts: dict[str, int], image_model: str) -> str:
    """What --self built; photos are searched with the one image model, whatever the text
    candidate."""
    photos = f"; photos are searched with the image model {image_model}" if counts["photo"] else ""
    return SELF_NOTE.format(**counts) + photos


def self_counts(run: ModelRun) -> dict[str, int]:
    """How many queries of each kind a run scored."""
    return {k: next(iter(run.kinds[k].values())).queries if k in run.kinds else 0 for k in KINDS}


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
    tune: bool = True,
) -> EvalReport:
    """Every candidate on the same files and queries; failures become `errors`. `tune`: hybrid
    is scored under every fusion setting of `fusion_grid` too."""
    with_chunks = len({c.chunk_tokens for c in candidates}) > 1 or any(
        c.chunk_tokens for c in candidates
    )
    short = [c.label(with_chunks) for c in candidates]
    labels_shown = (
        short
        if len(set(short)) == len(short)
        else [c.label(with_chunks, short=False) for c in candidates]
    )
    unscored = photos_unscored(base, labels)
    if unscored:  # the image model is the user's, the same for every candidate: said once
        labels = text_only(labels)
    judged = [q for q in text_only(labels).queries if q["id"] in labels.qrels]
    report = EvalReport(library, len(files), library_count, len(judged), labels.self_built)
    if unscored:
        report.notes.append(unscored)
        say(f"note: {unscored}")
    for candidate, label in zip(candidates, labels_shown, strict=True):
        try:
            whole = len(files) == library_count
            run = run_candidate(base, candidate, label, library, labels, files, say, whole, tune)
        except CandidateError as exc:
            full = candidate.label(with_chunks, short=False)
            say(f"model {full}: {exc}")
            report.errors.append((full, str(exc)))
            continue
        report.runs.append(run)
        if labels.self_built and not report.kinds:  # recordings' queries are known by now
            report.kinds = self_counts(run)
            report.queries = report.kinds["document"] + report.kinds["recording"]
            report.notes.append(self_note(report.kinds, base.image_model))
            say(f"note: {report.notes[-1]}")
        gc.collect()  # the model goes before the next loads
    return report


def photos_unscored(base: Settings, labels: Labels) -> str | None:
    """Why the photo queries --self built cannot be scored here (their image model cannot be
    had: not installed, or strict_models and only its fallback here), or None. Without this
    every candidate failed on the photos alone."""
    if not any(q.get("kind") == "photo" for q in labels.queries):
        return None
    from mmrag.app import Models

    try:
        space = Models.build(base).spaces.get("image")
        if space is None:
            return "photos not scored: no image model is configured (image_model)"
        space.space  # noqa: B018 - loads the model, or says why it cannot
    except Exception as exc:
        return f"photos not scored: the image model {base.image_model}: {_one_line(exc)}"
    return None


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
    tune: bool = True,
) -> ModelRun:
    """Load, ingest into a temporary store, query, and remove the store. `whole`: `files` are
    the whole library (scanned again by ingest, not listed one by one); `tune`: hybrid under
    each fusion setting too (queries only, on the same store)."""
    from mmrag.app import Models, open_store

    folder = Path(tempfile.mkdtemp(prefix="mmrag-eval-"))
    try:
        settings = candidate_settings(base, candidate, folder, kept_models(labels))
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
                labels = with_transcript_queries(labels, library, models, catalog, store)
                kinds = kind_scores(searcher, labels, library) if labels.self_built else {}
                labels = text_only(labels)  # every mode, and the fusion grid, score text
                scores = evaluate(
                    searcher, labels.queries, labels.qrels, library, MODES, DEPTH, timed=True
                )
                configured = Fusion.of(searcher.fusion, searcher.dense_weight)
                t0, grid = time.perf_counter(), fusion_grid(configured) if tune else []
                fusion = tune_fusion(searcher, labels, library, grid) if grid else []
                if grid:
                    took = time.perf_counter() - t0
                    say(f"model {label}: hybrid under {len(grid)} fusion settings in {took:.1f} s")
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
            configured,
            fusion,
            kinds,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tune_fusion(
    searcher: Any, labels: Labels, library: Path, grid: list[Fusion]
) -> list[tuple[Fusion, Scores]]:
    """Hybrid scores under each fusion setting on the searcher's store: only the searcher's
    fusion changes between runs (restored afterwards), so nothing is ingested again."""
    kept = (searcher.fusion, searcher.dense_weight)
    out = []
    try:
        for fusion in grid:
            searcher.fusion = fusion.method
            searcher.dense_weight = fusion.dense_weight
            hybrid = evaluate(searcher, labels.queries, labels.qrels, library, ("hybrid",), DEPTH)
            out.append((fusion, hybrid["hybrid"]))
    finally:
        searcher.fusion, searcher.dense_weight = kept
    return out


def roots(library: Path, files: list[str], whole: bool) -> list[str]:
    """What ingest is given: the library folder, or each file of a sample."""
    return [str(library)] if whole else [str(library / f) for f in files]


def candidate_settings(
    base: Settings, candidate: Candidate, folder: Path, keep: tuple[str, ...] = ()
) -> Settings:
    """The user's settings with a store, catalog and thumbnails in `folder`, only the text
    space on (and the models named in `keep`, such as `image_model`), and queries encoded by
    the model itself (no export into the user's cache)."""
    data = base.model_dump()
    kept = {name: data[name] for name in keep}
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
    data.update(kept)
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
