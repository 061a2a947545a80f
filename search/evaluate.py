"""Retrieval quality on labelled queries: nDCG@10, Recall@10/@100, MRR@10 and MAP per mode.

Judgements are per file (a passage anywhere in a relevant file counts), so chunk hits are
folded into a ranking of files, first hit wins, before scoring. Grades are graded relevance
(0 = not relevant, 1 = partly, 2 = the answer, ...); nDCG gains 2^grade - 1 per file, and the
binary metrics count every grade above 0 as relevant. A query with no relevant file judged is
left out of the averages (as trec_eval does), and counted.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mmrag.search.query import Searcher, Shape

DEPTH = 100  # files ranked per query: enough for Recall@100 and MAP


class EvalInputError(ValueError):
    """A queries or qrels file that cannot be read; str() is one line naming file and line."""


@dataclass(frozen=True)
class Scores:
    ndcg: float  # nDCG@10
    recall: float  # Recall@10
    mrr: float  # MRR@10
    queries: int  # judged queries with at least one relevant file
    recall_100: float = 0.0
    map: float = 0.0  # mean average precision over the top DEPTH files
    p50_ms: float = 0.0  # median time of a 10-hit search, query encoding included

    def to_json(self) -> dict[str, float | int]:
        return {
            "ndcg@10": round(self.ndcg, 4),
            "recall@10": round(self.recall, 4),
            "recall@100": round(self.recall_100, 4),
            "mrr@10": round(self.mrr, 4),
            "map": round(self.map, 4),
            "p50_ms": round(self.p50_ms, 1),
            "queries": self.queries,
        }


# -- reading queries and judgements -------------------------------------------------------------


def load_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-blank line; a bad line is one error naming file and line."""
    rows = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise EvalInputError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def load_queries(path: Path) -> list[dict]:
    """[{"id", "text"}] from JSONL; every query needs both, and ids are unique."""
    queries: list[dict] = []
    seen: set[str] = set()
    for n, row in enumerate(load_jsonl(path), 1):
        qid, text = row.get("id"), row.get("text")
        if qid is None or not isinstance(text, str) or not text.strip():
            raise EvalInputError(f'{path}: query {n} needs an "id" and a non-empty "text"')
        if str(qid) in seen:
            raise EvalInputError(f"{path}: query id {str(qid)!r} appears twice")
        seen.add(str(qid))
        queries.append({**row, "id": str(qid), "text": text})
    if not queries:
        raise EvalInputError(f"{path}: no queries")
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """{query id: {document path: grade}} from JSONL (`{"id", "path", "grade"}`, grade 1 when
    absent) or TREC qrels (`qid 0 docid grade`, whitespace-separated), told apart by content."""
    first = next((line for line in _lines(path) if line.strip()), "")
    rows = _jsonl_qrels(path) if first.lstrip().startswith("{") else _trec_qrels(path)
    qrels: dict[str, dict[str, int]] = {}
    for qid, doc, grade in rows:
        judged = qrels.setdefault(qid, {})
        judged[doc] = max(grade, judged.get(doc, grade))  # a pair judged twice keeps its best
    if not qrels:
        raise EvalInputError(f"{path}: no judgements")
    return qrels


def _jsonl_qrels(path: Path) -> Iterable[tuple[str, str, int]]:
    for n, row in enumerate(load_jsonl(path), 1):
        if row.get("id") is None or not isinstance(row.get("path"), str):
            raise EvalInputError(f'{path}: judgement {n} needs an "id" and a "path"')
        yield str(row["id"]), row["path"], _grade(row.get("grade", 1), path, n)


def _trec_qrels(path: Path) -> Iterable[tuple[str, str, int]]:
    for n, line in enumerate(_lines(path), 1):
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        if len(parts) != 4:
            raise EvalInputError(
                f"{path}:{n}: expected 4 fields `qid 0 docid grade` (TREC qrels) or a JSON "
                f"object, got {len(parts)}"
            )
        yield parts[0], parts[2], _grade(parts[3], path, n)


def _grade(value: object, path: Path, n: int) -> int:
    try:
        grade = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        grade = -1
    if grade < 0 or str(value).strip() not in (str(grade), f"{grade}.0"):
        raise EvalInputError(f"{path}:{n}: grade must be a whole number 0 or more, got {value!r}")
    return grade


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise EvalInputError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise EvalInputError(f"{path}: {exc.strerror or exc}") from None


def align_qrels(
    qrels: dict[str, dict[str, int]], files: Iterable[str]
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Judged paths named as the library's files are (relative to its root, `/`-separated).

    A judged path may be relative to the library or to a folder above it
    (`docs/home/a.md` for a library given as `.../docs`): it is the library file whose whole
    relative path ends it, the longest such. Returns the aligned qrels and the judged paths no
    file matches (still judged, so they count against recall)."""
    known = set(files)
    unmatched: list[str] = []
    aligned: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        out = aligned.setdefault(qid, {})
        for doc, grade in judged.items():
            found = _match(doc, known)
            if found is None:
                unmatched.append(doc)
                found = doc
            out[found] = max(grade, out.get(found, grade))
    return aligned, sorted(set(unmatched))


def _match(doc: str, files: set[str]) -> str | None:
    parts = [p for p in PurePosixPath(doc.replace("\\", "/")).parts if p not in ("/", ".", "..")]
    for i in range(len(parts)):  # longest tail first
        tail = "/".join(parts[i:])
        if tail in files:
            return tail
    return None


# -- the metrics (each folds repeated files: the first place counts) -----------------------------


def fold(ranked: Iterable[str]) -> list[str]:
    """Ranked files with repeats dropped, first place kept."""
    return list(dict.fromkeys(ranked))


def _relevant(grades: dict[str, int]) -> set[str]:
    return {d for d, g in grades.items() if g > 0}


def ndcg_at_k(ranked: list[str], grades: dict[str, int], k: int) -> float:
    """DCG of the top k (gain 2^grade - 1, discount log2(rank + 1)) over the ideal DCG."""
    ranked = fold(ranked)
    dcg = sum((2 ** grades.get(doc, 0) - 1) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], grades: dict[str, int], k: int) -> float:
    """The share of the relevant files found in the top k."""
    relevant = _relevant(grades)
    return len(relevant & set(fold(ranked)[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: list[str], grades: dict[str, int], k: int) -> float:
    """1 / the rank of the first relevant file within the top k, else 0."""
    relevant = _relevant(grades)
    first = next((i for i, d in enumerate(fold(ranked)[:k]) if d in relevant), None)
    return 1 / (first + 1) if first is not None else 0.0


def average_precision(ranked: list[str], grades: dict[str, int], k: int = DEPTH) -> float:
    """Mean of precision@rank at each relevant file's rank (top k), over all relevant files
    (those never found add 0)."""
    relevant = _relevant(grades)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, doc in enumerate(fold(ranked)[:k], 1):
        if doc in relevant:
            hits += 1
            total += hits / i
    return total / len(relevant)


def score(rankings: list[tuple[list[str], dict[str, int]]], times_ms: list[float]) -> Scores:
    """Averages over the queries that have a relevant file."""
    kept = [(r, g) for r, g in rankings if _relevant(g)]
    n = len(kept) or 1

    def mean(metric) -> float:  # type: ignore[no-untyped-def]
        return sum(metric(r, g) for r, g in kept) / n

    return Scores(
        ndcg=mean(lambda r, g: ndcg_at_k(r, g, 10)),
        recall=mean(lambda r, g: recall_at_k(r, g, 10)),
        mrr=mean(lambda r, g: mrr_at_k(r, g, 10)),
        queries=len(kept),
        recall_100=mean(lambda r, g: recall_at_k(r, g, 100)),
        map=mean(lambda r, g: average_precision(r, g, DEPTH)),
        p50_ms=statistics.median(times_ms) if times_ms else 0.0,
    )


# -- running the queries ------------------------------------------------------------------------


def rank_files(searcher: Searcher, text: str, mode: str, k: int, root: Path) -> list[str]:
    """The first k distinct files (grouped by file), as `/`-separated paths relative to root."""
    hits = searcher.search(text, mode, limit=k, shape=Shape(group=True))  # type: ignore[arg-type]
    base = os.path.abspath(root)
    files = [Path(os.path.relpath(os.path.abspath(h.path), base)).as_posix() for h in hits]
    return fold(files)[:k]


def evaluate(
    searcher: Searcher,
    queries: list[dict],
    qrels: dict[str, dict[str, int]],
    root: Path,
    modes: tuple[str, ...] = ("bm25", "dense", "hybrid"),
    k: int = DEPTH,
    timed: bool = False,
) -> dict[str, Scores]:
    """Scores per mode over the judged queries. `timed`: afterwards (the store and model warm),
    each query is run again as a plain 10-hit search, timed with its query encoding, for the
    p50 latency."""
    judged = [q for q in queries if str(q["id"]) in qrels]
    rankings = {
        mode: [
            (rank_files(searcher, q["text"], mode, k, root), qrels[str(q["id"])]) for q in judged
        ]
        for mode in modes
    }
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for mode in modes if timed else ():
        for q in judged:
            t0 = time.perf_counter()
            searcher.search(q["text"], mode, limit=10)  # type: ignore[arg-type]
            times[mode].append(1000 * (time.perf_counter() - t0))
    return {mode: score(rankings[mode], times[mode]) for mode in modes}
