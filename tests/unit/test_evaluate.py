"""The retrieval metrics against values worked out by hand, and the judgement files' formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag.search.evaluate import (
    EvalInputError,
    align_qrels,
    average_precision,
    load_qrels,
    load_queries,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    score,
)

LOG2_3 = 1.5849625007211562  # log2(3): the discount at rank 2 (log2(rank + 1))
# log2(2) = 1 at rank 1, log2(4) = 2 at rank 3

GRADES = {"a": 2, "b": 1, "c": 0}  # graded: a answers, b partly, c judged not relevant
RANKED = ["x", "b", "a", "a", "y"]  # "a" twice: folded to x, b, a, y


def test_ndcg_graded_with_a_repeat_folded() -> None:
    # gains 2^g - 1: a -> 3, b -> 1, c and unjudged -> 0
    # DCG@10  = 0/1 + 1/log2(3) + 3/log2(4) = 0.6309298 + 1.5 = 2.1309298
    # IDCG@10 = 3/1 + 1/log2(3)              = 3.6309298
    # nDCG@10 = 2.1309298 / 3.6309298        = 0.586883
    assert ndcg_at_k(RANKED, GRADES, 10) == pytest.approx((1 / LOG2_3 + 3 / 2) / (3 + 1 / LOG2_3))
    assert ndcg_at_k(RANKED, GRADES, 10) == pytest.approx(0.586883, abs=1e-6)
    # @2: DCG = 1/log2(3) = 0.6309298; the ideal keeps its top two: 3.6309298
    assert ndcg_at_k(RANKED, GRADES, 2) == pytest.approx(0.6309298 / 3.6309298)


def test_recall_mrr_and_average_precision_by_hand() -> None:
    # relevant (grade > 0): {a, b}; folded ranking x, b, a, y
    assert recall_at_k(RANKED, GRADES, 2) == pytest.approx(1 / 2)  # b only
    assert recall_at_k(RANKED, GRADES, 10) == pytest.approx(2 / 2)
    assert mrr_at_k(RANKED, GRADES, 10) == pytest.approx(1 / 2)  # first relevant at rank 2
    assert mrr_at_k(RANKED, GRADES, 1) == 0.0  # none within the top 1
    # AP: precision at each relevant file's rank, b at 2 -> 1/2, a at 3 -> 2/3; over |R| = 2
    assert average_precision(RANKED, GRADES) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_no_relevant_file_retrieved_scores_zero() -> None:
    ranked = ["x", "y", "z"]
    assert ndcg_at_k(ranked, GRADES, 10) == 0.0
    assert recall_at_k(ranked, GRADES, 10) == 0.0
    assert mrr_at_k(ranked, GRADES, 10) == 0.0
    assert average_precision(ranked, GRADES) == 0.0


def test_fewer_results_than_k_and_repeats_count_once() -> None:
    grades = {"a": 1, "b": 1}
    # only "a" comes back (three times): DCG = 1/1; IDCG = 1/1 + 1/log2(3) = 1.6309298
    for ranked in (["a"], ["a", "a", "a"]):
        assert ndcg_at_k(ranked, grades, 10) == pytest.approx(1 / (1 + 1 / LOG2_3))
        assert recall_at_k(ranked, grades, 10) == pytest.approx(1 / 2)  # not 3/2
        assert mrr_at_k(ranked, grades, 10) == 1.0
        assert average_precision(ranked, grades) == pytest.approx(1 / 2)  # (1/1) / 2


def test_scores_average_queries_with_a_relevant_file_and_take_the_median_time() -> None:
    perfect = (["a", "b"], {"a": 2, "b": 1})  # every metric 1
    missed = (["x"], {"a": 1})  # every metric 0
    unanswerable = (["a"], {"a": 0})  # nothing relevant judged: left out, as trec_eval does
    s = score([perfect, missed, unanswerable], [30.0, 10.0, 20.0])
    assert s.queries == 2
    assert (s.ndcg, s.recall, s.recall_100, s.mrr, s.map) == pytest.approx((0.5,) * 5)
    assert s.p50_ms == 20.0


def test_trec_and_jsonl_qrels_read_alike(tmp_path: Path) -> None:
    trec = tmp_path / "qrels.tsv"
    trec.write_text("q1 0 docs/a.md 2\nq1\t0\tb.md\t0\n\nq2 Q0 c.md 1\n", encoding="utf-8")
    jsonl = tmp_path / "qrels.jsonl"
    jsonl.write_text(
        '{"id": "q1", "path": "docs/a.md", "grade": 2}\n'
        '{"id": "q1", "path": "b.md", "grade": 0}\n'
        '{"id": "q2", "path": "c.md"}\n',  # no grade: relevant (1)
        encoding="utf-8",
    )
    expected = {"q1": {"docs/a.md": 2, "b.md": 0}, "q2": {"c.md": 1}}
    assert load_qrels(trec) == expected
    assert load_qrels(jsonl) == expected


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("q1 0 a.md 2\nq1 0 b.md\n", "qrels.txt:2: expected 4 fields"),
        ("q1 0 a.md high\n", "qrels.txt:1: grade must be a whole number"),
        ("q1 0 a.md -1\n", "qrels.txt:1: grade must be a whole number"),
        ('{"id": "q1", "path": "a.md"}\n{"id": "q2"\n', "qrels.txt:2: not JSON"),
        ('{"id": "q1"}\n', 'judgement 1 needs an "id" and a "path"'),
        ("\n\n", "qrels.txt: no judgements"),
    ],
)
def test_bad_qrels_are_one_line_naming_file_and_line(
    tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalInputError) as caught:
        load_qrels(path)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_queries_need_an_id_and_text(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": 1, "text": "heat pump"}\n', encoding="utf-8")
    assert load_queries(path) == [{"id": "1", "text": "heat pump"}]
    path.write_text('{"id": 1, "text": "heat pump"}\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(EvalInputError, match=r'q\.jsonl: query 2 needs an "id"'):
        load_queries(path)
    path.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', encoding="utf-8")
    with pytest.raises(EvalInputError, match="query id '1' appears twice"):
        load_queries(path)
    with pytest.raises(EvalInputError, match=r"missing\.jsonl: No such file"):
        load_queries(tmp_path / "missing.jsonl")


def test_judged_paths_are_matched_to_the_library_files() -> None:
    files = ["home/a.md", "a.md", "notes/b.md"]
    qrels = {"q": {"docs/home/a.md": 2, "./a.md": 1, "b.md": 1, "zzz.md": 1}}
    aligned, unmatched = align_qrels(qrels, files)
    # judged relative to a folder above the library (data/library for data/library/docs): the
    # longest file path that ends it; a judged path shorter than a file's is no match
    assert aligned == {"q": {"home/a.md": 2, "a.md": 1, "b.md": 1, "zzz.md": 1}}
    assert unmatched == ["b.md", "zzz.md"]
