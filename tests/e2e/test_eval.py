"""`mmrag eval`, in-process, on a small labelled library: the real MiniLM weights beside a tiny
random BERT, each in temporary Milvus Lite collections that are gone afterwards."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from unittest.mock import ANY

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mmrag.cli import app
from tests.conftest import write
from tests.tiny_models import tiny_bert

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = {
    "home/router.md": "# Resetting the router\n\nWhen the status light blinks amber, hold the "
    "recessed reset button for ten seconds with a paper clip; the router restarts with the "
    "factory password printed on the label underneath.",
    "kitchen/sourdough.md": "# Sourdough starter care\n\nFeed the starter every morning with "
    "equal weights of rye flour and lukewarm water. A healthy starter doubles in four to six "
    "hours and smells pleasantly sour.",
    "home/plants.md": "# Watering houseplants\n\nFerns want evenly moist soil, while succulents "
    "and cacti should dry out completely between waterings. Yellow lower leaves usually mean "
    "too much water.",
    "hobbies/bees.txt": "Keeping bees\n\nA colony swarms in late spring when it outgrows its "
    "hive: the old queen leaves with half of the workers to find a new home.",
    "hobbies/cycling.txt": "Bicycle tyres\n\nRoad bike tyres run at six to eight bar; check the "
    "pressure weekly with a floor pump, because a soft tyre wears fast and punctures easily.",
    "work/taxes.md": "# Filing the tax return\n\nKeep every receipt for deductible work "
    "expenses in one folder and file the return before the end of July to avoid a late fee.",
}
QUERIES = [
    ("q1", "my internet box light is orange, how do I get back to the original settings?"),
    ("q2", "how often should I feed a bread culture made with rye"),
    ("q3", "why are the leaves of my indoor plants turning yellow"),
    ("q4", "why do honeybee colonies leave their hive"),
]
# TREC qrels (qid 0 docid grade), paths relative to a folder above the library: "lib/..."
QRELS = "q1 0 lib/home/router.md 2\nq2 0 lib/kitchen/sourdough.md 2\nq3 0 lib/home/plants.md 2\n"
QRELS += "q3 0 lib/kitchen/sourdough.md 0\nq4 0 lib/hobbies/bees.txt 2\n"
METRICS = {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map", "p50_ms", "queries"}


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Path, Path, Path]:
    library = tmp_path / "lib"
    for rel, text in DOCS.items():
        write(library / rel, text)
    queries = write(
        tmp_path / "queries.jsonl",
        "".join(json.dumps({"id": q, "text": t}) + "\n" for q, t in QUERIES),
    )
    return library, queries, write(tmp_path / "qrels.tsv", QRELS)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The temporary folders the command makes (to see that none is left)."""
    folders: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recording(*args, **kwargs) -> str:  # type: ignore[no-untyped-def]
        folders.append(Path(mkdtemp(*args, **kwargs)))
        return str(folders[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    return folders


def run(*args: str, **env: str) -> Result:
    env = {"MMRAG_DEVICE": "cpu", **env}
    return CliRunner().invoke(app, ["eval", *args], env=env, catch_exceptions=False)


def test_two_models_side_by_side_in_temporary_collections(
    labelled: tuple[Path, Path, Path], tmp_path: Path, made: list[Path]
) -> None:
    library, queries, qrels = labelled
    tiny = tiny_bert(tmp_path / "tiny", max_seq_length=64)  # random weights: no quality
    plot = tmp_path / "quality.png"
    models = f"{MINILM},{tiny},no-such-org/no-such-model"
    result = run(
        *("--queries", str(queries), "--qrels", str(qrels), "--library", str(library)),
        *("--models", models, "--json", "--plot", str(plot)),
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["queries"] == 4 and data["files"] == len(DOCS) and not data["self"]
    assert [m["model"] for m in data["models"]] == [MINILM, str(tiny)]
    for m in data["models"]:
        assert set(m["modes"]) == {"bm25", "dense", "hybrid"}
        for scores in m["modes"].values():
            assert set(scores) == METRICS and scores["queries"] == 4
            assert 0 <= scores["ndcg@10"] <= 1 and scores["p50_ms"] > 0
        assert m["segments"] >= len(DOCS) and m["ingest_seconds"] > 0
        assert m["memory_mb"] > 0 and m["peak_rss_mb"] > 0 and m["failed_files"] == []
    minilm, random_bert = data["models"]
    assert (minilm["dim"], minilm["max_tokens"]) == (384, 256)
    assert (random_bert["dim"], random_bert["max_tokens"]) == (32, 64)
    assert minilm["modes"]["dense"]["ndcg@10"] >= 0.9  # every answer first, or nearly
    assert minilm["modes"]["dense"]["ndcg@10"] > random_bert["modes"]["dense"]["ndcg@10"]
    # the model that cannot be had: one line naming it, and the others ran
    assert [e["model"] for e in data["errors"]] == ["no-such-org/no-such-model"]
    named = [line for line in result.stderr.splitlines() if "no-such-org/no-such-model" in line]
    assert len(named) == 1 and "not available" in named[0]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a store per model, each removed; the user's own store never made
    stores = [f for f in made if f.name.startswith("mmrag-eval-")]
    assert len(stores) == 3 and not any(f.exists() for f in stores)
    home = tmp_path / "mmrag-home"  # MMRAG_HOME (tests/conftest.py)
    assert not (home / "milvus.db").exists()
    assert not home.exists() or list(home.iterdir()) == []


def test_self_builds_queries_from_the_library_and_says_so(
    labelled: tuple[Path, Path, Path], made: list[Path]
) -> None:
    library, _, _ = labelled
    result = run("--library", str(library), "--models", MINILM, "--self", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["self"] and data["queries"] == len(DOCS)
    assert "--self: 6 document, 0 photo, 0 recording queries" in " ".join(result.stderr.split())
    assert data["models"][0]["modes"]["hybrid"]["ndcg@10"] >= 0.9  # a title finds its document
    assert made and not any(f.exists() for f in made if f.name.startswith("mmrag-eval-"))


def test_the_table_names_models_and_modes(
    labelled: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    library, queries, qrels = labelled
    tiny = tiny_bert(tmp_path / "tiny", max_seq_length=64)  # quick to load: the table is tested
    result = run(
        *("--queries", str(queries), "--qrels", str(qrels), "--library", str(library)),
        *("--models", str(tiny), "--chunk-tokens", "auto,48", "--sample", "5"),
    )
    assert result.exit_code == 0, result.output
    table = result.stdout
    assert "st (chunks max)" in table and "st (chunks 48)" in table  # the model folder's name
    for column in ("nDCG@10", "R@100", "MRR@10", "MAP", "p50 ms", "model MB", "ingest s"):
        assert column in table
    assert "4 queries over 5 files" in table  # the 4 judged files, and one more
    for mode in ("bm25", "dense", "hybrid"):
        assert len(re.findall(rf"│ {mode} +│", table)) == 2  # a row per chunk size
    # hybrid per fusion setting, the configured one marked, and a verdict per row
    assert "hybrid nDCG@10 per fusion setting" in table
    assert re.search(r"┃ 0\.7 \(now\) +┃", table) and re.search(r"│ minmax \(now\) +│", table)
    assert len(re.findall(r"│ weighted +│", table)) == 2  # each chunk size: both methods
    assert len(re.findall(r"\d\.\d{3}\*", table)) == 2  # one best per row
    assert len(re.findall(r"^st \(chunks (max|48)\): .*nDCG@10", table, re.M)) == 2


def test_the_fusion_grid_is_scored_on_the_same_store_and_the_best_named(
    labelled: tuple[Path, Path, Path], tmp_path: Path, made: list[Path]
) -> None:
    library, queries, qrels = labelled
    # random weights: the dense cosines lie close together, so in a weighted sum BM25 decides
    # (every answer first), while RRF lets the random dense ranks count as much: RRF, set
    # here, is not the best setting
    tiny = tiny_bert(tmp_path / "tiny", max_seq_length=64)
    result = run(
        *("--queries", str(queries), "--qrels", str(qrels), "--library", str(library)),
        *("--models", str(tiny), "--json"),
        MMRAG_HYBRID_FUSION="rrf",
        MMRAG_DENSE_WEIGHT="0.5",
    )
    assert result.exit_code == 0, result.output
    (model,) = json.loads(result.stdout)["models"]
    fusion = model["fusion"]
    grid = {(p["fusion"], p["dense_weight"]): p for p in fusion["grid"]}
    weights = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    methods = ("weighted", "minmax")
    assert list(grid) == [(m, w) for m in methods for w in weights] + [("rrf", None)]
    for point in grid.values():
        assert set(point) >= {"ndcg@10", "recall@10", "mrr@10", "map", "best", "configured"}
        assert 0 <= point["ndcg@10"] <= 1
    # the configured setting is the hybrid mode's: the same store, only queries again
    assert [k for k, p in grid.items() if p["configured"]] == [("rrf", None)]
    assert grid["rrf", None]["ndcg@10"] == model["modes"]["hybrid"]["ndcg@10"] < 1.0
    # the best: the highest nDCG@10, ties to the weight nearest the configured 0.5
    assert [k for k, p in grid.items() if p["best"]] == [("weighted", 0.5)]
    assert grid["weighted", 0.5]["ndcg@10"] == max(p["ndcg@10"] for p in grid.values())
    assert fusion["best"]["env"] == ["MMRAG_HYBRID_FUSION=weighted"]
    assert fusion["best"]["toml"] == ['hybrid_fusion = "weighted"']
    assert fusion["configured"] == {"fusion": "rrf", "dense_weight": None, "ndcg@10": ANY}
    said = " ".join(result.stderr.split())  # beside the JSON: on stderr
    assert "st: hybrid fusion weighted 0.5 gives nDCG@10 1.000 against " in said
    assert 'set MMRAG_HYBRID_FUSION=weighted, or hybrid_fusion = "weighted" in mmrag.toml' in said
    stores = [f for f in made if f.name.startswith("mmrag-eval-")]
    assert len(stores) == 1 and not stores[0].exists()  # one store for every grid point


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--qrels", "{qrels}"), "--queries and --qrels are both needed"),
        (("--queries", "{queries}", "--qrels", "{bad}"), "bad.tsv:1: expected 4 fields"),
        (("--queries", "{queries}", "--qrels", "{qrels}", "--chunk-tokens", "8"), "16 or more"),
        (("--queries", "{queries}", "--qrels", "{qrels}", "--plot", "{plot}"), "mmrag[eval]"),
    ],
)
def test_bad_input_is_one_line_before_any_model_loads(
    labelled: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    says: str,
) -> None:
    library, queries, qrels = labelled
    bad = write(tmp_path / "bad.tsv", "q1 lib/home/router.md 2\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the eval extra were missing
    paths = {"queries": queries, "qrels": qrels, "bad": bad, "plot": tmp_path / "p.png"}
    result = run("--library", str(library), *(a.format(**paths) for a in args))
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())  # one line, however the console wraps it
    assert said.startswith("error: ") and said.count("error") == 1 and says in said
    assert "all-MiniLM" not in result.stderr  # nothing loaded
