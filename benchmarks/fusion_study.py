"""How to fuse BM25 and dense scores, measured on the repository's labelled set, in English and
across languages (Spanish questions about English documents: data/eval/text_queries_es.jsonl).

    python benchmarks/fusion_study.py [--models multilingual-e5-small,...] [--depth 50]

Each model ingests data/library/docs into a temporary Milvus Lite store; every query is searched
once per leg (dense, BM25; one hit per file, `depth` files); the legs' file scores are then fused
in numpy under each rule and scored with nDCG@10 (search/evaluate.py). Rules:

- `weighted w`: Milvus's WeightedRanker (what `hybrid_fusion = weighted` runs): w (1 + cos) / 2
  + (1 - w) 2/pi atan(bm25).
- `rrf`: reciprocal rank fusion, k = 60.
- `minmax w`: each leg's scores min-max scaled over its own list, then w dense + (1 - w) bm25
  (the convex combination of Bruch et al., 2023).
- `dense`, `bm25`: one leg alone.
A file missing from a leg's list counts 0 in that leg. Queries only: the store is built once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import machine  # noqa: E402 - a sibling; other scripts import it here

from mmrag.app import Models, open_store  # noqa: E402
from mmrag.search.evaluate import load_qrels, load_queries, ndcg_at_k  # noqa: E402
from mmrag.search.query import Shape  # noqa: E402
from mmrag.settings import Settings  # noqa: E402

WEIGHTS = (0.3, 0.5, 0.7, 0.8, 0.9)
QUERY_SETS = {"en": "text_queries.jsonl", "es": "text_queries_es.jsonl"}


def legs(searcher, text: str, depth: int, root: Path) -> dict[str, dict[str, float]]:
    out = {}
    for mode in ("dense", "bm25"):
        hits = searcher.search(text, mode, limit=depth, shape=Shape(group=True))
        scores: dict[str, float] = {}
        for h in hits:
            rel = Path(h.path).resolve().relative_to(root.resolve()).as_posix()
            scores.setdefault(rel, float(h.score))
        out[mode] = scores
    return out


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    return {k: (v - lo) / (hi - lo) if hi > lo else 1.0 for k, v in scores.items()}


def fuse(rule: str, w: float, dense: dict[str, float], bm25: dict[str, float]) -> list[str]:
    files = set(dense) | set(bm25)
    if rule == "dense":
        fused = dense
    elif rule == "bm25":
        fused = bm25
    elif rule == "weighted":
        fused = {
            f: w * (1 + dense[f]) / 2 * (f in dense)
            + (1 - w) * 2 / math.pi * math.atan(bm25.get(f, 0.0))
            for f in files
        }
    elif rule == "rrf":
        rd = {f: r for r, f in enumerate(sorted(dense, key=dense.get, reverse=True), 1)}
        rb = {f: r for r, f in enumerate(sorted(bm25, key=bm25.get, reverse=True), 1)}
        fused = {
            f: (1 / (60 + rd[f]) if f in rd else 0) + (1 / (60 + rb[f]) if f in rb else 0)
            for f in files
        }
    elif rule == "minmax":
        d, b = _minmax(dense), _minmax(bm25)
        fused = {f: w * d.get(f, 0.0) + (1 - w) * b.get(f, 0.0) for f in files}
    else:
        raise ValueError(rule)
    return sorted(fused, key=fused.get, reverse=True)


def rules() -> list[tuple[str, float]]:
    out = [("dense", 1.0), ("bm25", 0.0), ("rrf", 0.5)]
    out += [("weighted", w) for w in WEIGHTS] + [("minmax", w) for w in WEIGHTS]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", default="multilingual-e5-small,sentence-transformers/all-MiniLM-L6-v2"
    )
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    library = REPO / "data" / "library"
    print(f"machine: {machine()}", flush=True)
    results = []
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="mmrag-fusion-") as tmp:
            settings = Settings(
                home=Path(tmp), text_model=model, image_model="", clip_model="",
                audio_model="", speech_model="", device="cpu",
            )  # fmt: skip
            models = Models.build(settings)
            catalog, store = open_store(settings)
            try:
                models.runner(catalog, store).run([str(library / "docs")])
                searcher = models.searcher(catalog, store)
                for lang, name in QUERY_SETS.items():
                    queries = load_queries(REPO / "data" / "eval" / name)
                    qrels = load_qrels(REPO / "data" / "eval" / "text_qrels.jsonl")
                    per_query = [
                        (legs(searcher, q["text"], args.depth, library), qrels[str(q["id"])])
                        for q in queries
                        if str(q["id"]) in qrels
                    ]
                    for rule, w in rules():
                        ndcg = sum(
                            ndcg_at_k(fuse(rule, w, lg["dense"], lg["bm25"]), grades, 10)
                            for lg, grades in per_query
                        ) / len(per_query)
                        results.append(
                            {
                                "model": model,
                                "queries": lang,
                                "rule": rule,
                                "w": w,
                                "ndcg@10": round(ndcg, 3),
                            }
                        )
                        print(f"{model:40s} {lang} {rule:8s} {w:.1f} {ndcg:.3f}", flush=True)
            finally:
                store.close()
                catalog.close()
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
