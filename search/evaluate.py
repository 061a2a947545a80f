"""Retrieval quality on the user's own labelled queries: nDCG@k, recall@k and MRR per mode.

Judgements are per file (a passage anywhere in a relevant file counts), so chunk hits are
folded into a ranking of files, first hit wins, before scoring.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from mmrag.search.query import Searcher


@dataclass(frozen=True)
class Scores:
    ndcg: float
    recall: float
    mrr: float
    queries: int


def load_jsonl(path: Path) -> list[dict]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """{query id: {path relative to the library root: grade}}."""
    qrels: dict[str, dict[str, int]] = {}
    for row in load_jsonl(path):
        qrels.setdefault(str(row["id"]), {})[row["path"]] = int(row.get("grade", 1))
    return qrels


def ndcg_at_k(ranked: list[str], grades: dict[str, int], k: int) -> float:
    dcg = sum((2 ** grades.get(doc, 0) - 1) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def rank_files(searcher: Searcher, text: str, mode: str, k: int, root: Path) -> list[str]:
    """The first k distinct files, as paths relative to `root`."""
    hits = searcher.search(text, mode, limit=max(50, 5 * k))  # type: ignore[arg-type]
    base = os.path.abspath(root)
    files = [os.path.relpath(os.path.abspath(h.path), base) for h in hits]
    return list(dict.fromkeys(files))[:k]


def evaluate(
    searcher: Searcher,
    queries: list[dict],
    qrels: dict[str, dict[str, int]],
    root: Path,
    modes: tuple[str, ...] = ("bm25", "dense", "hybrid"),
    k: int = 10,
) -> dict[str, Scores]:
    results: dict[str, Scores] = {}
    judged = [q for q in queries if str(q["id"]) in qrels]
    for mode in modes:
        ndcg = recall = mrr = 0.0
        for q in judged:
            grades = qrels[str(q["id"])]
            ranked = rank_files(searcher, q["text"], mode, k, root)
            ndcg += ndcg_at_k(ranked, grades, k)
            relevant = {d for d, g in grades.items() if g > 0}
            recall += len(relevant & set(ranked)) / len(relevant)
            first = next((i for i, d in enumerate(ranked) if d in relevant), None)
            mrr += 1 / (first + 1) if first is not None else 0.0
        n = len(judged) or 1
        results[mode] = Scores(ndcg / n, recall / n, mrr / n, len(judged))
    return results
