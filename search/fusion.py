"""Merge ranked results from several vector spaces into one list.

Scores of different spaces are not comparable (a CLIP cosine of 0.3 is a strong match, a MiniLM
one is not), so lists are merged by rank: reciprocal rank fusion, the usual way to combine
heterogeneous retrievers. Rows that point at the same place in the same file (a photo found
through its labels and through CLIP; later a video moment through its frames and its speech)
become one result whose score adds up, so agreement between spaces ranks it higher.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from mmrag.kinds import Modality
from mmrag.store.schema import RankedLegs

RRF_K = 60  # the constant of Cormack et al.; dampens the weight of the very first ranks
MINMAX_DEPTH = 100  # rows of each leg that `minmax` fusion scales by
# How a hybrid search merges its dense and BM25 legs, unless told otherwise: measured on
# data/eval in English and Spanish (benchmarks/fusion_study.py), minmax 0.7 is the best or tied
# best for MiniLM and multilingual E5 in both languages. mmrag.settings takes these defaults.
HYBRID_FUSION = "minmax"
DENSE_WEIGHT = 0.7


def place(row: dict) -> tuple:
    """Where a row points: the file, and the page or time range in it."""
    return (row["media_id"], row.get("page") or 0, row["start"], row["end"])


def fuse_ranked(
    lists: list[list[dict]],
    limit: int,
    k: int = RRF_K,
    names: list[str] | None = None,
    weights: list[float] | None = None,
) -> list[dict]:
    """One ranked list from several; a single non-empty list is returned as it is (its own
    scores kept), so adding a space that found nothing changes no result.

    With `names` (one per list: the space each came from), every row returned carries
    `sources`, [{"space": name, "rank": rank in that list}, ...], best rank first per space,
    so a hit can say which spaces found it and where (its provenance). With `weights` (one per
    list, default 1), a list's rank counts `weight / (k + rank)`: weighted RRF."""
    if names is not None:
        lists = [_sourced(rows, name) for rows, name in zip(lists, names, strict=True)]
    weighted = list(zip(lists, weights or [1.0] * len(lists), strict=True))
    found = [(rows, w) for rows, w in weighted if rows and w > 0]
    if len(found) <= 1:
        return (found[0][0] if found else [])[:limit]
    merged: dict[tuple, dict] = {}
    for rows, weight in found:
        for rank, row in enumerate(rows, 1):
            key = place(row)
            gain = weight / (k + rank)
            if key not in merged:
                merged[key] = {**row, "score": gain}
                continue
            best = merged[key]
            best["score"] += gain
            if "sources" in row:
                best["sources"] = join_sources(best.get("sources", []), row["sources"])
            if not best.get("text") and row.get("text"):
                best["text"] = row["text"]  # a photo's labels or OCR words make a better snippet
    return sorted(merged.values(), key=lambda r: r["score"], reverse=True)[:limit]


def _sourced(rows: list[dict], name: str) -> list[dict]:
    """Copies of one space's rows, each naming the space and its rank there."""
    return [{**row, "sources": [{"space": name, "rank": n}]} for n, row in enumerate(rows, 1)]


def join_sources(a: list[dict], b: list[dict]) -> list[dict]:
    """Two provenance lists as one: each space once, at its best (lowest) rank, in the order
    the spaces were first seen."""
    best: dict[str, int] = {}
    for source in [*a, *b]:
        space, rank = source["space"], source["rank"]
        best[space] = min(rank, best.get(space, rank))
    return [{"space": space, "rank": rank} for space, rank in best.items()]


def merge_moments(rows: list[dict], gap: float = 0.5) -> list[dict]:
    """Hits on neighbouring moments of one video become one time range: a scene that spans
    several shots is one result, scored and shown by its best shot. Other rows pass through."""
    out: list[dict] = []
    by_media: dict[str, list[dict]] = {}
    for row in rows:
        if Modality(row["modality"]).moment:
            by_media.setdefault(row["media_id"], []).append(row)
        else:
            out.append(row)
    for group in by_media.values():
        group.sort(key=lambda r: r["start"])
        run = dict(group[0])
        for row in group[1:]:
            if row["start"] <= run["end"] + gap:
                start, end = run["start"], max(run["end"], row["end"])
                sources = join_sources(run.get("sources", []), row.get("sources", []))
                if row["score"] > run["score"]:
                    run = dict(row)
                run["start"], run["end"] = start, end
                if sources:
                    run["sources"] = sources
            else:
                out.append(run)
                run = dict(row)
        out.append(run)
    return sorted(out, key=lambda r: r["score"], reverse=True)


def legs_of_rows(dense: list[dict], lexical: list[dict]) -> RankedLegs:
    """A dense and a BM25 search's ranked rows (Milvus's) as legs for `minmax_fused`, keyed by
    segment id; a fused row takes the fields of its first appearance, dense first."""
    rows: dict[str, dict] = {}
    for row in (*dense, *lexical):
        rows.setdefault(row["id"], row)
    return RankedLegs(
        [(r["id"], r["score"]) for r in dense],
        [(r["id"], r["score"]) for r in lexical],
        lambda ranked: [{**rows[key], "score": score} for key, score in ranked],
        lambda keys: [rows[key]["media_id"] for key in keys],
    )


def minmax_fused(
    legs: list[tuple[list[tuple[Any, float]], float]],
    kept: Container[Any] | None = None,
    kept_depth: int = MINMAX_DEPTH,
) -> list[tuple[Any, float]]:
    """(key, score) lists, each with its weight, fused by `minmax`, best first: each leg's
    scores scaled by the best and the `MINMAX_DEPTH`-th of its list to [0, 1] (rows further
    down go below 0), then summed by weight (`dense_weight * dense + (1 - dense_weight) *
    bm25`), a key missing from a leg counting 0 there (Bruch et al.'s convex combination). Each
    leg is fetched at least that deep, so a hit's score is the same whatever the page size,
    page or reranking asked. Keys, not rows, so a store's snapshot fuses row numbers and builds
    only the rows kept.

    `kept`: the keys a filter checked after ranking keeps, in legs fetched deeper than the
    filter's own would be. Each leg then counts the first `kept_depth` of them (the depth a
    search of those rows alone is fetched at) and is scaled by their best and
    `MINMAX_DEPTH`-th, so they score as a search naming the filter's files gives; the other
    keys are scored on that scale, for the caller to drop.

    Milvus's weighted ranker maps a cosine through (1 + cos) / 2 and BM25 through atan: a model
    whose cosines crowd together (E5: 0.75-0.90) then barely separates its hits, and any BM25
    match, even of a stop word in a question asked in another language, outweighs it. Scaled,
    each leg spans the same range. Measured on data/eval (benchmarks/fusion_study.py)."""
    fused: dict[Any, float] = {}
    for pairs, weight in legs:
        counted, beyond = pairs, set()
        if kept is not None:
            mine = [pair for pair in pairs if pair[0] in kept]
            counted = mine[:kept_depth]
            beyond = {key for key, _ in mine[kept_depth:]}  # past the filter's own leg's depth
        if not counted:
            continue  # nothing kept in this leg: it adds nothing to a kept row
        top = [score for _, score in counted[:MINMAX_DEPTH]]
        low, high = min(top), max(top)
        for key, score in pairs:
            if key in beyond:
                continue
            scaled = (score - low) / (high - low) if high > low else 1.0
            fused[key] = fused.get(key, 0.0) + weight * scaled
    return sorted(fused.items(), key=lambda kv: kv[1], reverse=True)
