"""Switching a space's model without downtime (issue 16).

A collection's name carries its model, so a new model means a new collection. The catalog
records which collection each space is SERVED from (the `served` table), apart from the
configured model: while a switch is in progress, search keeps answering from the served
collection, and the runner fills the new one for every stored content (`IngestRunner` with
`reindex=<space>`: a fill in that space alone, so a `kill -9` loses at most the batch in flight
and the next run picks up where it stopped). Once every content is in, the switch cuts over in
one catalog transaction (the target is served from then on) and the old collection is dropped.

What other spaces gave rise to in the switched one (an image's labels, a recording's sound tags
in `text`) is not made again (their models may not even be here): those rows are read from the
old collection and embedded again with the new model (`carry_from`), under the same ids.

A store that predates the `served` table serves its configured model's collection once that
holds anything; before that, the collection of the same space that its rows are in (the model
is read from the collection's properties).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmrag.ingest.scan import FoundFile
from mmrag.kinds import Modality
from mmrag.pipelines.base import LabelSet, Piece, segment_origin
from mmrag.store.schema import collection_name, quote

if TYPE_CHECKING:
    from mmrag.ingest.runner import IngestRunner, Progress
    from mmrag.store.catalog import Catalog
    from mmrag.store.milvus import MilvusStore

# After a cutover, the old collection is dropped this much later: a search that chose it just
# before the cutover (a searcher is built per search from the catalog) still finds it.
DROP_GRACE_S = 2.0


@dataclass(frozen=True)
class Switch:
    """One space's switch: search answers from `source` until `target` is complete."""

    space: str
    source_model: str
    source: str
    target_model: str
    target: str


@dataclass
class SwitchReport:
    space: str
    source_model: str
    target_model: str
    filled: int = 0  # contents embedded with the new model by this run
    already: int = 0  # contents found in the new collection already (an earlier, cut-short run)
    missing: list[str] = field(default_factory=list)  # stored files that could not be read again
    left_out: int = 0  # contents that are not in the new collection (their files are gone)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "from": self.source_model,
            "to": self.target_model,
            "filled": self.filled,
            "already": self.already,
            "left_out": self.left_out,
            "missing": self.missing,
            "failed": [{"path": p, "reason": why} for p, why in self.failed],
            "seconds": round(self.seconds, 3),
        }


def served(
    catalog: Catalog,
    store: MilvusStore,
    prefix: str,
    space: str,
    configured: str,
    skip: Iterable[str] = (),
) -> tuple[str, str]:
    """(model, collection) that search answers from for a space: the recorded one, else the
    configured model's collection once it holds anything, else the collection of this space
    holding the most contents (`skip`: the fallback model's, which is no switch)."""
    record = catalog.served().get(space)
    if record is not None:
        return record.model, record.collection
    mine = collection_name(prefix, space, configured)
    if not configured or catalog.wrote_to(mine):
        return configured, mine
    left = {mine, *skip}
    others = [c for c in catalog.collections_named(f"{prefix}_{space}_") if c not in left]
    for name in (
        sorted(others, key=catalog.contents_in, reverse=True) if len(others) > 1 else others
    ):
        if model := store.collection_model(name):
            return model, name
    return configured, mine


def plan(
    catalog: Catalog,
    store: MilvusStore,
    prefix: str,
    space: str,
    configured: str,
    model: str | None = None,
    resume: bool = True,
    skip: Iterable[str] = (),
) -> Switch | None:
    """The switch wanted for a space, None where it serves the wanted model already. The
    wanted model: `model`, else (`resume`) the target of a switch in progress, else the
    configured one."""
    record = catalog.served().get(space)
    source_model, source = served(catalog, store, prefix, space, configured, skip)
    pending = record.target_model if record is not None and resume else None
    target_model = model or pending or configured
    if not target_model or target_model == source_model:
        return None
    target = collection_name(prefix, space, target_model)
    if target == source:
        raise ValueError(
            f"{space}: models '{source_model}' and '{target_model}' would share the collection "
            f"{target} (it is named after the model's last path part); give one another name"
        )
    return Switch(space, source_model, source, target_model, target)


def in_progress(catalog: Catalog) -> list[dict[str, Any]]:
    """Every switch in progress: {space, from, to, done, total} (contents; from the catalog)."""
    found = []
    for space, r in catalog.served().items():
        if r.target_model is None or r.target_collection is None:
            continue
        total = catalog.contents_in(r.collection)
        done = total - catalog.only_in(r.collection, r.target_collection)
        found.append(
            {"space": space, "from": r.model, "to": r.target_model, "done": done, "total": total}
        )
    return found


def carry_from(store: MilvusStore, collection: str, space: str) -> Callable[[str], list[Piece]]:
    """For a content being filled in `space`: the rows other spaces gave rise to in its old
    collection, as pieces to embed again (same ids: `<media>:text:image.0`)."""

    def carried(media_id: str) -> list[Piece]:
        if not store.present([collection]):
            return []
        found: list[tuple[str, int, Piece]] = []
        for row in store.rows(collection, f"media_id == {quote(media_id)}"):
            origin = segment_origin(row["id"], media_id, space)
            if origin == space:
                continue
            found.append((origin, int(row["id"].rpartition(".")[2]), _piece(row, space, origin)))
        return [piece for _, _, piece in sorted(found, key=lambda t: t[:2])]

    return carried


def _piece(row: dict[str, Any], space: str, origin: str) -> Piece:
    """A stored row as the piece that made it: a photo's labels embed as their label set (the
    probability-weighted mean of the labels' vectors), anything else as its text."""
    meta = row.get("meta") or {}
    labels = meta.get("labels") if row["modality"] == Modality.LABEL else None
    payload: Any = (
        LabelSet(tuple((d["label"], float(d["p"])) for d in labels)) if labels else row["text"]
    )
    return Piece(
        payload,
        Modality(row["modality"]),
        row["start"],
        row["end"],
        row["text"],
        page=int(row.get("page") or 0),
        meta=meta,
        space=space,
        origin=origin,
    )


def stored_files(catalog: Catalog) -> tuple[list[FoundFile], list[str]]:
    """One path of every stored content as it is on disk now, and the paths (as given to
    ingest) that are gone: those contents cannot be read again."""
    files, missing = [], []
    for path, display, root in catalog.one_path_each():
        try:
            st = os.stat(path)
        except OSError:
            missing.append(display)
            continue
        files.append(FoundFile(path, display, root, st.st_size, st.st_mtime_ns))
    return files, missing


def tidy(catalog: Catalog, store: MilvusStore, space: str, keep: str) -> None:
    """Before a switch: drop what an earlier one left (a collection cut over from whose drop
    was cut short; the partial target of a switch to another model, given up)."""
    record = catalog.served().get(space)
    if record is None:
        return
    if record.target_collection and record.target_collection != keep:
        catalog.cancel_switch(space)
        record = catalog.served()[space]
    if record.retired:
        store.drop(record.retired)
        catalog.dropped(space)


def drop_retired(catalog: Catalog, store: MilvusStore) -> None:
    """Drop the collections switches cut over from whose drop was cut short (a kill)."""
    for space, record in catalog.served().items():
        if record.retired:
            store.drop(record.retired)
            catalog.dropped(space)


def cancel(catalog: Catalog, store: MilvusStore, space: str) -> str | None:
    """Give up a switch in progress (search never left the served model); returns the model
    it was switching to."""
    record = catalog.served().get(space)
    if record is None or record.target_model is None:
        return None
    tidy(catalog, store, space, keep="")
    return record.target_model


def run_switch(
    catalog: Catalog,
    store: MilvusStore,
    runner: IngestRunner,
    switch: Switch,
    progress: Progress | None = None,
    grace_s: float = DROP_GRACE_S,
) -> SwitchReport:
    """Fill the new collection with every stored content, cut over, drop the old one. Run it
    inside `runner.turn()` (one writer at a time), the runner built with `reindex=<space>`,
    the new model for that space and `carry_from(store, switch.source, space)`."""
    t0 = time.perf_counter()
    tidy(catalog, store, switch.space, keep=switch.target)
    catalog.begin_switch(
        switch.space, switch.source_model, switch.source, switch.target_model, switch.target
    )
    files, missing = stored_files(catalog)
    store.ensure_space(runner.encoders[switch.space].space)  # loads the new model, or says why
    done = runner.refill(files, progress=progress)
    left_out = catalog.only_in(switch.source, switch.target)
    old = catalog.cut_over(switch.space)
    if grace_s > 0:
        time.sleep(grace_s)
    store.drop(old)
    catalog.dropped(switch.space)
    return SwitchReport(
        switch.space,
        switch.source_model,
        switch.target_model,
        filled=done.filled + done.new + done.changed,
        already=done.unchanged,
        missing=missing,
        left_out=left_out,
        failed=done.failed,
        seconds=time.perf_counter() - t0,
    )
