"""The parts of a search snapshot (store/lite_index.py) that need no store: the Milvus filters
it answers itself (any other goes to Milvus, so reading one wrongly would change results, and
not reading one only costs time), its tokens, and its top-k cut."""

from __future__ import annotations

import numpy as np

from mmrag.store.lite_index import Filter, _top, parse_filter, tokens
from mmrag.store.schema import quote


def test_the_filters_the_searcher_writes_are_read() -> None:
    assert parse_filter("") == Filter()
    assert parse_filter('modality == "image"') == Filter(modality="image")
    ids = ["a1", 'we"ird\\id', "x and modality"]
    expr = f"media_id in [{', '.join(quote(m) for m in ids)}]"
    assert parse_filter(expr) == Filter(media=frozenset(ids))
    both = f'modality == "document" and {expr}'
    assert parse_filter(both) == Filter(modality="document", media=frozenset(ids))
    assert parse_filter("media_id in []") == Filter(media=frozenset())


def test_any_other_filter_is_left_to_milvus() -> None:
    for expr in (
        'meta["ocr"] == true and meta["page_start"] == true',
        'modality != "image"',
        'modality == "a" or modality == "b"',
        'modality == "a" and modality == "b"',
        'modality in ["image", "shot"]',
        'media_id == "a"',
        'modality == "image" and start > 3',
        'modality == "image" extra',
    ):
        assert parse_filter(expr) is None, expr


def test_tokens_are_milvus_lites_standard_analyzer() -> None:
    assert tokens("Don't STOP: café-au-lait 3.14 x_y") == [
        "don", "t", "stop", "café", "au", "lait", "3", "14", "x_y",
    ]  # fmt: skip


def test_the_top_k_cut_keeps_the_first_rows_of_a_tie_every_time() -> None:
    """A tie across the k-th place keeps its first rows, so a hybrid search's candidates (each
    leg cut at its depth) are the same on every run."""
    scores = np.array([1.0, 3.0, 3.0, 3.0, 2.0, 3.0, -np.inf, 0.5, 3.0])
    assert _top(scores, 2) == [(1, 3.0), (2, 3.0)]
    assert [i for i, _ in _top(scores, 6)] == [1, 2, 3, 5, 8, 4]
    assert [i for i, _ in _top(scores, 20)] == [1, 2, 3, 5, 8, 4, 0, 7]  # -inf: filtered out
    ties = np.zeros(10_000)
    assert [i for i, _ in _top(ties, 50)] == list(range(50))
