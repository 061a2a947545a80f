"""Shaping search results (issue 13): one hit per file with its best moments, score floors and
the automatic cutoff, newest-first sorting, pages, provenance, and cross-encoder reranking.
Real Milvus Lite, real catalog, real MiniLM; the cross-encoder is a tiny random BERT saved here."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from mmrag.search.query import Hit, Shape, auto_cutoff
from tests.conftest import Env, write
from tests.text_samples import QUERY, TOPICS
from tests.tiny_models import tiny_cross_encoder

# A long manual about the same thing: many chunks (64 tokens each here) that all match.
MANUAL = " ".join(
    f"Section {n}: to factory reset the router, hold its reset button; the router then "
    f"restarts with the factory settings and its default password. Step {n} of the reset."
    for n in range(1, 9)
)
WIDE = {"COLUMNS": "1000"}


def library(env: Env, manual: bool = True) -> Path:
    """The topics (and the manual), each file a day newer than the one before in an order
    unrelated to relevance, ingested."""
    lib = env.root / "lib"
    files = dict(TOPICS) | ({"router-manual.md": MANUAL} if manual else {})
    for day, (name, text) in enumerate(sorted(files.items(), key=lambda kv: kv[0][::-1])):
        path = write(lib / name, text)
        os.utime(path, (1_700_000_000 + day * 86_400,) * 2)
    report = env.ingest(lib)
    assert report.failed == [] and report.new == len(files)
    return lib


def ids(hits: list[Hit]) -> list[str]:
    return [h.segment_id for h in hits]


def test_grouped_hits_are_one_per_file_with_its_best_moments(env: Env) -> None:
    library(env)
    searcher = env.searcher()
    plain = searcher.search(QUERY, "dense", 5)
    assert len({h.media_id for h in plain}) < 5  # the manual's chunks take several places

    grouped = searcher.search(QUERY, "dense", 5, shape=Shape(group=True))
    assert len({h.media_id for h in grouped}) == len(grouped) == 5
    # ranked by each file's best row: the files in order of first appearance in a deep search
    best: dict[str, float] = {}
    for h in searcher.search(QUERY, "dense", 100):
        best.setdefault(h.media_id, h.score)
    assert [(h.media_id, h.score) for h in grouped] == list(best.items())[:5]
    assert [h.rank for h in grouped] == [1, 2, 3, 4, 5]

    manual = next(h for h in grouped if h.path.endswith("router-manual.md"))
    assert manual.moments is not None and len(manual.moments) == 3  # more chunks than 3
    first = manual.moments[0]
    assert (first["segment_id"], first["score"]) == (manual.segment_id, manual.score)
    scores = [m["score"] for m in manual.moments]
    assert scores == sorted(scores, reverse=True)
    for m in manual.moments:
        assert m["modality"] == "document" and m["end"] > m["start"] >= 0 and m["snippet"]
        assert m["link"].startswith("file://")
    assert len({m["segment_id"] for m in manual.moments}) == 3


def test_group_in_json_and_table(env: Env) -> None:
    library(env)
    r = env.cli_with(WIDE, "search", QUERY, "--group", "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert len({h["media_id"] for h in hits}) == 3
    assert all(isinstance(h["moments"], list) and 1 <= len(h["moments"]) <= 3 for h in hits)
    assert any(len(h["moments"]) > 1 for h in hits)
    table = env.cli_with(WIDE, "search", QUERY, "--group", "-k", "3")
    assert table.exit_code == 0, table.output
    assert "also " in table.stdout and "chars " in table.stdout  # the other moments, placed


def test_min_score_drops_hits_below_it(env: Env) -> None:
    library(env)
    searcher = env.searcher()
    full = searcher.search(QUERY, "dense", 9)
    floor = full[3].score
    kept = searcher.search(QUERY, "dense", 9, shape=Shape(min_score=floor))
    assert kept == [h for h in full if h.score >= floor] and len(kept) < len(full)
    grouped = searcher.search(QUERY, "dense", 9, shape=Shape(group=True, min_score=floor))
    assert grouped and all(h.score >= floor for h in grouped)
    assert all(m["score"] >= floor for h in grouped for m in h.moments or [])
    r = env.cli_with(WIDE, "search", QUERY, "--mode", "dense", "--min-score", str(floor), "--json")
    assert [h["segment_id"] for h in json.loads(r.stdout)] == ids(kept)


def test_auto_cutoff_stops_at_the_cliff(env: Env) -> None:
    library(env, manual=False)
    searcher = env.searcher()
    full = searcher.search(QUERY, "dense", 8)
    n = auto_cutoff([h.score for h in full])
    assert 1 <= n < len(full)  # the router stands out; the rest do not
    cut = searcher.search(QUERY, "dense", 8, shape=Shape(cutoff="auto"))
    assert cut == full[:n]
    assert searcher.search(QUERY, "dense", 8, shape=Shape(cutoff="off")) == full
    r = env.cli_with(WIDE, "search", QUERY, "--mode", "dense", "--cutoff", "auto", "--json")
    assert [h["segment_id"] for h in json.loads(r.stdout)] == ids(cut)
    bad = env.cli_with(WIDE, "search", QUERY, "--cutoff", "sometimes")
    assert bad.exit_code == 2 and bad.stderr == (
        "error: --cutoff must be one of off, auto (got 'sometimes')\n"
    )


def test_sort_by_date_puts_the_newest_first_and_keeps_relevance_ranks(env: Env) -> None:
    lib = library(env)
    searcher = env.searcher()
    relevant = searcher.search(QUERY, "dense", 6)
    newest = searcher.search(QUERY, "dense", 6, shape=Shape(sort="date"))
    assert sorted(ids(newest)) == sorted(ids(relevant))
    mtime = [(lib / Path(h.path).name).stat().st_mtime for h in newest]
    assert mtime == sorted(mtime, reverse=True) and mtime != [
        (lib / Path(h.path).name).stat().st_mtime for h in relevant
    ]
    assert {h.segment_id: h.rank for h in newest} == {h.segment_id: h.rank for h in relevant}


@pytest.mark.parametrize("group", [False, True])
def test_pages_continue_without_repeats(env: Env, group: bool) -> None:
    library(env)
    searcher = env.searcher()
    pages = [
        searcher.search(QUERY, "dense", 3, shape=Shape(group=group, page=p)) for p in (1, 2, 3)
    ]
    whole = searcher.search(QUERY, "dense", 9, shape=Shape(group=group))
    assert [ids(p) for p in pages] == [ids(whole[0:3]), ids(whole[3:6]), ids(whole[6:9])]
    assert [h.rank for p in pages for h in p] == list(range(1, 10))
    if group:
        files = [h.media_id for p in pages for h in p]
        assert len(set(files)) == len(files) == 9
    r = env.cli_with(WIDE, "search", QUERY, "--mode", "dense", "-k", "3", "--page", "2", "--json")
    assert [h["rank"] for h in json.loads(r.stdout)] == [4, 5, 6]
    bad = env.cli_with(WIDE, "search", QUERY, "--page", "0")
    assert bad.exit_code == 2 and bad.stderr == "error: --page must be 1 or more, got 0\n"


def test_every_hit_says_which_space_found_it_at_what_rank(env: Env) -> None:
    library(env)
    for mode in ("hybrid", "dense", "bm25"):
        hits = env.searcher().search(QUERY, mode, 5)  # type: ignore[arg-type]
        assert [h.sources for h in hits] == [[{"space": "text", "rank": n}] for n in range(1, 6)]
    r = env.cli_with(WIDE, "search", QUERY, "-k", "2", "--json")
    assert [h["sources"] for h in json.loads(r.stdout)] == [
        [{"space": "text", "rank": 1}],
        [{"space": "text", "rank": 2}],
    ]
    table = env.cli_with(WIDE, "search", QUERY, "-k", "2")
    assert "via text#1" in table.stdout and "via text#2" in table.stdout


# every word of the query and the topics, so the texts differ token by token
WORDS = sorted(
    {w for t in [QUERY, *TOPICS.values()] for w in re.findall(r"\w+|[^\w\s]", t.lower())}
)


def test_rerank_orders_text_hits_by_the_cross_encoders_scores(env: Env) -> None:
    from sentence_transformers import CrossEncoder

    library(env, manual=False)
    plain = env.searcher().search(QUERY, "hybrid", 30)  # the candidates the reranker reads
    model = tiny_cross_encoder(env.root / "ce", WORDS)
    expected = CrossEncoder(str(model), device="cpu").predict(
        [(QUERY, h.snippet) for h in plain], show_progress_bar=False
    )
    order = sorted(zip(expected, ids(plain), strict=True), reverse=True)

    env.settings.rerank_model = str(model)
    reranked = env.rebuild().searcher().search(QUERY, "hybrid", 5)
    assert ids(reranked) == [seg for _, seg in order[:5]]
    assert ids(reranked) != ids(plain[:5])  # the cross-encoder, not retrieval, ordered them
    assert [h.score for h in reranked] == pytest.approx([float(s) for s, _ in order[:5]])
    for n, h in enumerate(reranked, 1):
        assert h.sources is not None and {"space": "rerank", "rank": n} in h.sources
        assert h.sources[0]["space"] == "text"

    r = env.cli_with(WIDE, "search", QUERY, "-k", "5", "--json", "--rerank", str(model))
    assert r.exit_code == 0, r.output
    assert [h["segment_id"] for h in json.loads(r.stdout)] == ids(reranked)


def test_a_rerank_model_that_cannot_load_is_one_note_and_unreranked_results(env: Env) -> None:
    library(env, manual=False)
    plain = env.cli_with(WIDE, "search", QUERY, "-k", "5", "--json")
    missing = str(env.root / "no-such-cross-encoder")
    r = env.cli_with(WIDE, "search", QUERY, "-k", "5", "--json", "--rerank", missing)
    assert r.exit_code == 0, r.output
    assert r.stdout == plain.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: results not reranked: ")
    assert "no-such-cross-encoder" in lines[0]
    # a batch of queries says it once
    queries = env.root / "q.jsonl"
    queries.write_text('{"id": 1, "text": "router"}\n{"id": 2, "text": "modem"}\n')
    batch = env.cli_with(WIDE, "search", "--queries", str(queries), "--rerank", missing)
    assert batch.exit_code == 0 and len(batch.stdout.splitlines()) == 2
    assert len(batch.stderr.splitlines()) == 1
