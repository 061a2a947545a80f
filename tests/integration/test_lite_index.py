"""Search snapshots of Milvus Lite collections (store/lite_index.py) against Milvus itself, on a
real Milvus Lite store: same rows and scores, never used once stale or half written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mmrag.store import lite_index
from mmrag.store.milvus import MilvusStore
from mmrag.store.schema import Segment, Space, quote
from tests.conftest import Env, write

DIM = 16
SPACE = Space("text", "org/tiny", DIM, bm25=True)
WORDS = (
    "harbour lantern copper violin meadow glacier orbit pepper canyon quartz amber willow "
    "falcon cobalt saffron tundra marble ember lagoon thistle"
).split()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MilvusStore]:
    s = MilvusStore(str(tmp_path / "milvus.db"), index_type="FLAT")
    yield s
    s.close()


def rows(n: int = 240, per_media: int = 6, seed: int = 3) -> list[Segment]:
    """Segments with distinct random vectors and texts of varied words and lengths, two
    modalities, `per_media` a file."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(2, 12)))
        v = rng.standard_normal(DIM).astype(np.float32)
        out.append(
            Segment(
                id=f"m{i // per_media:03d}:text:{i % per_media}",
                media_id=f"m{i // per_media:03d}",
                modality="document" if i % 3 else "transcript",
                start=float(i),
                end=float(i) + 1,
                text=" ".join(words),
                vector=v / np.linalg.norm(v),
                page=i % 4,
                meta={"n": i},
            )
        )
    return out


@contextmanager
def milvus_only(store: MilvusStore) -> Iterator[None]:
    """Searches answered by Milvus, as without snapshots."""
    snaps, store.snapshots = store.snapshots, None
    try:
        yield
    finally:
        store.snapshots = snaps


def filled(store: MilvusStore) -> tuple[str, list[Segment]]:
    name = store.ensure_space(SPACE)
    segments = rows()
    store.upsert(name, segments)
    store.flush(name)
    return name, segments


def same(fast: list[dict], slow: list[dict]) -> None:
    """The same scores in the same order, and the same rows (all fields) for each score; rows
    of equal score may come in either order, and where a tie reaches the end of the list,
    either of the tied rows may make the cut (Milvus breaks ties as it happens to)."""
    assert [r["score"] for r in fast] == pytest.approx([r["score"] for r in slow], abs=1e-5)
    ends = [round(r["score"], 4) for r in slow]
    last = ends[-1] if ends else None
    for side in (fast, slow):
        side.sort(key=lambda r: (-round(r["score"], 4), r["id"]))
    for a, b in zip(fast, slow, strict=True):
        if round(b["score"], 4) != last:
            assert {k: a[k] for k in a if k != "score"} == {k: b[k] for k in b if k != "score"}


def test_snapshot_answers_as_milvus_does(store: MilvusStore) -> None:
    name, _ = filled(store)
    rng = np.random.default_rng(9)
    queries = [(v / np.linalg.norm(v)).astype(np.float32) for v in rng.standard_normal((4, DIM))]
    texts = ["harbour lantern", "violin violin quartz", "orbit", "nothing matches"]
    some_media = quote("m003") + ", " + quote("m007") + ", " + quote("m011")
    exprs = ["", 'modality == "transcript"', f"media_id in [{some_media}]",
             f'modality == "document" and media_id in [{some_media}]']  # fmt: skip

    def answers() -> list[list[dict]]:
        out: list[list[dict]] = []
        for expr in exprs:
            out += store.search_dense(name, np.stack(queries), 7, expr)
            out += store.search_dense(name, np.stack(queries), 5, expr, group_by="media_id")
            out += store.search_bm25(name, texts, 9, expr)
            for q, t in zip(queries, texts, strict=True):
                out.append(store.search_hybrid(name, q, t, 8, expr))
                out.append(store.search_hybrid(name, q, t, 8, expr, fusion="rrf"))
                out.append(store.search_hybrid(name, q, t, 8, expr, dense_weight=0.8))
        return out

    with milvus_only(store):
        slow = answers()
    assert store.snapshots is not None and store.snapshots.current(name) is None
    assert store.refresh_snapshots() == [name]
    assert store.snapshots.current(name) is not None
    fast = answers()
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        same(a, b)
    grouped = store.search_dense(name, queries[0][None], 5, group_by="media_id")[0]
    assert len({r["media_id"] for r in grouped}) == 5  # one row per file, five files
    assert store.refresh_snapshots() == []  # nothing written since: nothing rebuilt


def test_a_write_after_the_snapshot_sends_searches_to_milvus_until_rebuilt(
    store: MilvusStore,
) -> None:
    name, _ = filled(store)
    store.refresh_snapshots()
    assert store.snapshots is not None
    new = rows(1, seed=77)[0]
    new.id, new.media_id, new.text = "zz:text:0", "zz", "zeppelin"
    store.upsert(name, [new])
    assert store.snapshots.current(name) is None  # stale: Milvus answers
    assert store.search_bm25(name, ["zeppelin"], 3)[0][0]["id"] == "zz:text:0"
    assert store.search_dense(name, new.vector[None], 1)[0][0]["id"] == "zz:text:0"
    assert store.refresh_snapshots() == [name]
    assert store.snapshots.current(name) is not None
    assert store.search_bm25(name, ["zeppelin"], 3)[0][0]["id"] == "zz:text:0"
    store.delete_media(name, ["zz"])
    assert store.snapshots.current(name) is None
    assert store.search_bm25(name, ["zeppelin"], 3)[0] == []


def test_a_snapshot_another_process_outdated_is_not_used(tmp_path: Path) -> None:
    """Two connections to one store (as the CLI beside `mmrag serve`): a write through one
    makes the other's loaded snapshot stale."""
    a = MilvusStore(str(tmp_path / "milvus.db"), index_type="FLAT")
    b = MilvusStore(str(tmp_path / "milvus.db"), index_type="FLAT")
    try:
        name, _ = filled(a)
        a.refresh_snapshots()
        assert b.snapshots is not None and b.snapshots.current(name) is not None
        extra = rows(1, seed=5)[0]
        extra.id, extra.media_id = "new:text:0", "new"
        a.upsert(name, [extra])
        assert b.snapshots.current(name) is None
        assert b.search_dense(name, extra.vector[None], 1)[0][0]["id"] == "new:text:0"
    finally:
        b.close()
        a.close()


def test_a_half_written_snapshot_is_never_used(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _ = filled(store)
    assert store.snapshots is not None
    real_save = np.save

    def dies(path: Path, array: np.ndarray) -> None:
        if Path(path).name == "post_w.npy":
            raise OSError(28, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr(lite_index.np, "save", dies)
    with pytest.raises(OSError):
        store.refresh_snapshots()
    monkeypatch.undo()
    assert store.snapshots.current(name) is None
    assert list(store.snapshots.folder.glob(".*tmp*")) == []  # its temporary folder removed

    # A build killed before its rename leaves a temporary folder, a copy of a complete one:
    store.refresh_snapshots()
    stamp = store.snapshots.stamp(name)
    final = next(store.snapshots.folder.glob(f"{name}@*"))
    orphan = store.snapshots.folder / f".{name}@{stamp}.tmp-999999999-abcdef"
    orphan.mkdir()
    (orphan / "done").write_text("{}")
    store.upsert(name, rows(1, seed=8))  # stale now; the orphan is never looked at
    assert store.snapshots.current(name) is None
    # and a final folder without its "done" mark (files written out of order) is not read
    final.rename(store.snapshots.folder / f"{name}@{store.snapshots.stamp(name)}.v1")
    (store.snapshots.folder / f"{name}@{store.snapshots.stamp(name)}.v1" / "done").unlink()
    assert store.snapshots.current(name) is None
    store.refresh_snapshots()  # the next build sweeps both away
    assert store.snapshots.current(name) is not None
    assert not orphan.exists()
    assert len(list(store.snapshots.folder.glob(f"*{name}@*"))) == 1


def test_filters_the_snapshot_does_not_read_go_to_milvus(store: MilvusStore) -> None:
    name, segments = filled(store)
    store.refresh_snapshots()
    expr = 'meta["n"] == 4'
    assert lite_index.parse_filter(expr) is None
    found = store.search_dense(name, segments[0].vector[None], 5, expr)[0]
    assert [r["meta"]["n"] for r in found] == [4]


def test_ingest_builds_snapshots_and_search_answers_the_same(make_env) -> None:
    env: Env = make_env()
    for i, words in enumerate(["harbour lantern at dusk", "copper violin strings", "orbit"]):
        write(env.root / "docs" / f"d{i}.txt", f"{words}. " * 40)
    env.ingest(env.root / "docs")
    assert env.store.snapshots is not None
    assert env.store.snapshots.current(env.collection) is not None
    searcher = env.searcher()
    fast = [h.to_json() for h in searcher.search("violin harbour", limit=5)]
    with milvus_only(env.store):
        slow = [h.to_json() for h in searcher.search("violin harbour", limit=5)]
    assert [h["segment_id"] for h in fast] == [h["segment_id"] for h in slow]
    assert [h["score"] for h in fast] == pytest.approx([h["score"] for h in slow], abs=1e-5)


def test_status_says_when_searches_use_milvus_and_when_the_store_outgrew_it(
    make_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env: Env = make_env()
    write(env.root / "docs" / "a.txt", "harbour lantern at dusk. " * 40)
    env.ingest(env.root / "docs")
    shown = env.cli("status")
    assert shown.exit_code == 0, shown.output
    assert "search:" not in shown.output  # current snapshot, a small store
    env.store.delete_ids(env.collection, ["no-such-row"])  # any write outdates the snapshot
    flat = " ".join(env.cli("status").output.split())  # the terminal's line breaks aside
    assert f"search: {env.collection}: its search snapshot lacks the latest writes" in flat
    monkeypatch.setattr(lite_index, "EMBEDDED_ROWS", 1)
    data = env.cli("status", "--json")
    notes = json.loads(data.output)["search_notes"]
    assert any("Milvus server" in n and env.collection in n for n in notes), notes


def full_reads(store: MilvusStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Filters of the row reads a build makes from Milvus ("" reads every row)."""
    exprs: list[str] = []
    real = store._batches

    def spy(collection: str, fields: list[str], batch: int, expr: str = "") -> Iterator:
        exprs.append(expr)
        return real(collection, fields, batch, expr)

    monkeypatch.setattr(store, "_batches", spy)
    return exprs


def changed_files(store: MilvusStore, name: str) -> list[Segment]:
    """Two files' writes after a snapshot: one re-embedded (its old rows deleted first, then
    new texts and vectors), one new; then two rows of others deleted."""
    changed = rows(8, per_media=4, seed=21)
    for seg in changed:
        seg.id, seg.media_id = (
            seg.id.replace("m000", "m005").replace("m001", "new"),
            ("m005" if seg.media_id == "m000" else "new"),
        )
    store.delete_media(name, ["m005"])
    store.upsert(name, changed)
    store.delete_ids(name, ["m009:text:2", "m010:text:0"])
    return changed


def test_a_first_build_replays_the_writes_without_reading_milvus(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = full_reads(store, monkeypatch)
    name, segments = filled(store)  # a collection made here: its writes are all journaled
    assert store.refresh_snapshots() == [name]
    assert reads == []  # replayed from the journal: Milvus is asked only for its count
    fast = store.search_dense(name, np.stack([s.vector for s in segments[:3]]), 9)
    with milvus_only(store):
        slow = store.search_dense(name, np.stack([s.vector for s in segments[:3]]), 9)
    for a, b in zip(fast, slow, strict=True):
        same(a, b)
    snap = store.snapshots.current(name)  # type: ignore[union-attr]
    assert snap is not None and snap.rows == store.count(name) == 240


def test_a_failed_write_means_reading_what_it_touched(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, segments = filled(store)
    store.refresh_snapshots()
    reads = full_reads(store, monkeypatch)
    real = store.client.delete

    def delete_then_fail(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # Milvus took it, but the caller hears of a failure
        raise RuntimeError("connection lost")

    monkeypatch.setattr(store.client, "delete", delete_then_fail)
    with pytest.raises(RuntimeError):
        store.delete_media(name, ["m002"])
    monkeypatch.setattr(store.client, "delete", real)
    assert store.refresh_snapshots() == [name]
    assert reads and "" not in reads  # its outcome unknown: read by media, not whole
    snap = store.snapshots.current(name)  # type: ignore[union-attr]
    assert snap is not None and snap.rows == store.count(name) == 240 - 6
    assert not store.search_dense(name, segments[12].vector[None, :], 5, 'media_id in ["m002"]')[0]


def test_a_rebuild_replays_what_was_written_since(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, segments = filled(store)
    store.refresh_snapshots()
    assert store.snapshots is not None
    reads = full_reads(store, monkeypatch)
    changed = changed_files(store, name)
    assert store.refresh_snapshots() == [name]
    assert reads == []  # the writes replayed onto the snapshot: nothing read back
    q = np.stack([s.vector for s in changed[:2]] + [segments[0].vector])

    def answers() -> list[list[dict]]:
        found = store.search_dense(name, q, 12) + store.search_bm25(name, ["copper amber"], 20)
        return [*found, store.search_hybrid(name, q[0], "lantern orbit", 10)]

    merged = answers()
    with milvus_only(store):  # Milvus Lite keeps BM25 statistics per segment: dense only
        for a, b in zip(merged[:3], store.search_dense(name, q, 12), strict=True):
            same(a, b)
    store.snapshots.bump(name)  # says nothing of what it touched: a full rebuild
    store.refresh_snapshots()
    assert reads[-1] == ""
    for a, b in zip(merged, answers(), strict=True):
        same(a, b)
    snap = store.snapshots.current(name)
    assert snap is not None and snap.rows == store.count(name) == 240 - 6 + 8 - 2


def test_a_write_that_did_not_say_what_it_touched_means_a_full_rebuild(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _ = filled(store)
    store.refresh_snapshots()
    assert store.snapshots is not None and store.snapshots._state is not None
    reads = full_reads(store, monkeypatch)
    extra = rows(2, seed=31)
    for i, seg in enumerate(extra):
        seg.id, seg.media_id = f"x{i}:text:0", f"x{i}"
    store.upsert(name, extra)
    # its journal lost (as if written by a write that kept none): the count gives it away
    store.snapshots._state.execute("UPDATE changes SET kind = 'none', key = NULL")
    assert store.refresh_snapshots() == [name]
    assert "" in reads  # a full read after the merged one came out short
    snap = store.snapshots.current(name)
    assert snap is not None and snap.rows == 242
    reads.clear()
    store.snapshots.bump(name)  # a write that says nothing of what it touched
    store.refresh_snapshots()
    assert reads == [""]


def test_a_build_empties_the_journal_and_gives_its_space_back(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lite_index, "JOURNAL_SLACK_BYTES", 0)
    filled(store)
    assert store.snapshots is not None and store.snapshots._state is not None
    db = store.snapshots._state
    assert db.execute("SELECT COUNT(*) FROM replay WHERE op = 'row'").fetchone() == (240,)
    store.refresh_snapshots()
    assert db.execute("SELECT COUNT(*) FROM replay").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM changes").fetchone() == (0,)
    assert db.execute("PRAGMA freelist_count").fetchone() == (0,)  # vacuumed


def test_minmax_hybrid_builds_only_the_rows_it_keeps(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`minmax` fuses the snapshot's row numbers and builds the `limit` rows kept, with the
    same rows and scores as fusing the two legs' built rows (100 deep each)."""
    from mmrag.search.fusion import MINMAX_DEPTH, legs_of_rows, minmax_fused

    name, segments = filled(store)
    store.refresh_snapshots()
    vector, text = segments[7].vector, "harbour lantern amber"
    dense = store.search_dense(name, vector[None], MINMAX_DEPTH)[0]
    lexical = store.search_bm25(name, [text], MINMAX_DEPTH)[0]
    built_rows = legs_of_rows(dense, lexical)  # Milvus's rows, as the searcher fuses them
    slow = built_rows.hits(minmax_fused([(built_rows.dense, 0.7), (built_rows.bm25, 0.3)])[:10])
    snap = store.snapshots.current(name)  # type: ignore[union-attr]
    assert snap is not None
    built: list[int] = []
    real = snap.hits
    monkeypatch.setattr(snap, "hits", lambda ranked: built.append(len(ranked)) or real(ranked))
    legs = store.snapshot_legs(name, vector, text, MINMAX_DEPTH)
    assert legs is not None
    dense_rows, bm25_rows, build = legs.dense, legs.bm25, legs.hits
    assert len(dense_rows) == MINMAX_DEPTH and bm25_rows  # row numbers, no rows built yet
    assert built == []
    fast = build(minmax_fused([(dense_rows, 0.7), (bm25_rows, 0.3)])[:10])
    assert built == [10]
    assert [r["id"] for r in fast] == [r["id"] for r in slow]
    assert [r["score"] for r in fast] == pytest.approx([r["score"] for r in slow])
    assert fast == [{**r, "score": pytest.approx(r["score"])} for r in slow]
    with milvus_only(store):
        assert store.snapshot_legs(name, vector, text, MINMAX_DEPTH) is None  # Milvus answers


def test_writes_to_a_large_snapshot_become_a_delta_that_answers_as_a_rewrite(
    store: MilvusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past LAYER_MIN_ROWS a build links the snapshot's files and writes only the rows written
    since (and which old rows are dead): the same rows and scores as a rewrite, BM25's
    statistics included, layer upon layer, until the changes pass LAYER_SHARE."""
    monkeypatch.setattr(lite_index, "LAYER_MIN_ROWS", 100)
    name, segments = filled(store)
    store.refresh_snapshots()
    assert store.snapshots is not None
    first = store.snapshots.current(name)
    assert first is not None and not first.layered
    inode = (first.folder / "vectors.npy").stat().st_ino
    reads = full_reads(store, monkeypatch)
    changed = changed_files(store, name)
    some = quote("m003") + ", " + quote("new") + ", " + quote("m005")
    exprs = ["", 'modality == "transcript"', f"media_id in [{some}]", 'modality == "none"']
    q = np.stack([changed[0].vector, changed[5].vector, segments[40].vector])
    texts = ["copper amber", "harbour lantern violin", "glacier glacier orbit", "nothing"]

    def answers() -> list[list[dict]]:
        out: list[list[dict]] = []
        for expr in exprs:
            out += store.search_dense(name, q, 12, expr)
            out += store.search_dense(name, q, 6, expr, group_by="media_id")
            out += store.search_bm25(name, texts, 15, expr)
            for fusion in ("weighted", "rrf"):
                out.append(store.search_hybrid(name, q[1], texts[1], 10, expr, fusion))
        legs = store.snapshot_legs(name, changed[4].vector, texts[0], 30)  # a new file's row
        assert legs is not None
        dense, bm25, build, media_ids = legs
        ranked = build([*dense, *bm25])  # each row's media, base and delta, as built
        assert media_ids([r for r, _ in (*dense, *bm25)]) == [r["media_id"] for r in ranked]
        return [*out, build(dense), build(bm25)]

    def rewritten() -> list[list[dict]]:
        store.snapshots.bump(name)  # type: ignore[union-attr]  # says nothing: a full rewrite
        store.refresh_snapshots()
        snap = store.snapshots.current(name)  # type: ignore[union-attr]
        assert snap is not None and not snap.layered
        return answers()

    def exactly(a: list[list[dict]], b: list[list[dict]]) -> None:
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert [r["id"] for r in x] == [r["id"] for r in y]  # the same order, ties too
            # cosines are float32 sums, of another length per layer: equal to float32 precision
            assert x == [{**r, "score": pytest.approx(r["score"], abs=1e-6)} for r in y]

    assert store.refresh_snapshots() == [name]
    assert reads == []  # replayed: nothing read back from Milvus
    snap = store.snapshots.current(name)
    assert snap is not None and snap.layered
    assert (snap.folder / "vectors.npy").stat().st_ino == inode  # linked, not rewritten
    assert (snap.base.rows, snap.delta.rows) == (240, 8)  # type: ignore[union-attr]
    assert snap.rows == store.count(name) == 240 - 6 + 8 - 2
    layered = answers()
    assert layered[0] and any(r["media_id"] == "new" for hits in layered for r in hits)
    assert any(r["media_id"] == "new" for r in layered[-2])  # a media the delta alone holds
    with milvus_only(store):  # Milvus Lite keeps BM25 statistics per segment: dense only
        for a, b in zip(layered[:3], store.search_dense(name, q, 12), strict=True):
            same(a, b)
    exactly(layered, rewritten())

    # a layer on a layer: the delta written again, dead rows gathered, from a whole base
    base = store.snapshots.current(name)
    assert base is not None
    inode = (base.folder / "vectors.npy").stat().st_ino
    store.upsert(name, changed_files(store, name)[:2])  # the same writes again, and two more
    store.delete_media(name, ["m020"])
    store.refresh_snapshots()
    again = store.snapshots.current(name)
    assert again is not None and again.layered and again.rows == store.count(name)
    assert (again.folder / "vectors.npy").stat().st_ino == inode
    store.delete_media(name, ["new", "m021"])
    store.refresh_snapshots()
    third = store.snapshots.current(name)
    assert third is not None and third.layered and third.rows == store.count(name)
    dead = lite_index._dead_rows(third.folder)
    # m005's 4 rows and new's 4 (both written again), m020's 6, m021's 6; m005's 4 in the delta
    assert (third.delta.rows, len(dead)) == (4, 4 + 4 + 6 + 6)  # type: ignore[union-attr]
    exactly(answers(), rewritten())

    # changes past LAYER_SHARE of the base: folded into a rewrite
    monkeypatch.setattr(lite_index, "LAYER_SHARE", 0.01)
    store.delete_media(name, ["m022", "m023"])
    store.refresh_snapshots()
    whole = store.snapshots.current(name)
    assert whole is not None and not whole.layered and whole.rows == store.count(name)
    assert reads == [""] * 2  # the two rewrites asked for; every other build replayed
