"""The query layer: encode a query, search Milvus, map every hit back to its file and place."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ingest.catalog import Catalog, PathRecord
from pipelines.image_decode import decode_image, thumbnail_path
from pipelines.image_pipeline import MODEL_INPUT_SIDE
from pipelines.milvus_store import MilvusStore, quote
from pipelines.text_pipeline import TextPipeline

if TYPE_CHECKING:
    from pipelines.image_pipeline import ImageSpace

Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[str, ...] = ("hybrid", "dense", "bm25")


@dataclass(frozen=True)
class Filters:
    modality: str | None = None  # "document", later "transcript", "image", ...
    path_glob: str | None = None  # matched against the path as given to ingest, and its name
    since: datetime | None = None  # file modified at or after
    until: datetime | None = None  # file modified before


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str  # as given to `ingest`
    modality: str
    start: float
    end: float
    page: int | None
    snippet: str
    media_id: str
    segment_id: str
    thumbnail: str | None = None  # a JPEG of the image (or shot) this hit comes from

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in OPTIONAL}


OPTIONAL = ("page", "thumbnail")


class Searcher:
    """Holds the encoder, so a batch of queries loads the model once."""

    def __init__(
        self,
        store: MilvusStore,
        catalog: Catalog,
        text: TextPipeline,
        prefix: str,
        fusion: str = "weighted",
        dense_weight: float = 0.5,
        image: ImageSpace | None = None,
        thumbnails: Path | None = None,
    ):
        self.store = store
        self.catalog = catalog
        self.text = text
        self.collection = text.collection(prefix)
        self.fusion = fusion
        self.dense_weight = dense_weight
        self.image = image
        self.image_collection = image.collection(prefix) if image else None
        self.thumbnails = thumbnails

    def search(
        self, query: str, mode: Mode = "hybrid", limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if not query.strip():
            raise ValueError("empty query")
        if self.collection not in self.store.existing_collections():
            return []  # nothing ingested yet with this model
        expr = self._filter_expr(filters or Filters())
        if expr is None:
            return []
        if mode == "bm25":
            rows = self.store.search_bm25(self.collection, [query], limit, expr)[0]
        else:
            vector = self.text.encode([query])[0]
            if mode == "dense":
                rows = self.store.search_dense(self.collection, vector[None], limit, expr)[0]
            else:
                rows = self.store.search_hybrid(
                    self.collection, vector, query, limit, expr, self.fusion, self.dense_weight
                )
        return self._hits(rows, query)

    def search_image(
        self, path: Path, limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """Photos that look like the one at `path` (image-to-image, the `image` space)."""
        if self.image is None:
            raise ValueError("image search needs an image model (setting image_model)")
        if self.image_collection not in self.store.existing_collections():
            return []
        expr = self._filter_expr(filters or Filters())
        if expr is None:
            return []
        # Decoded as ingest decodes photos; ImageDecodeError says what is wrong with the file.
        query = decode_image(path, max_side=MODEL_INPUT_SIDE)
        vector = self.image.encode_images([query.image])[0]
        rows = self.store.search_dense(self.image_collection, vector[None], limit, expr)[0]
        return self._hits(rows, "")

    def _filter_expr(self, f: Filters) -> str | None:
        """A Milvus filter; None when the catalog filters leave nothing to search."""
        parts: list[str] = []
        if f.modality:
            parts.append(f"modality == {quote(f.modality)}")
        if f.path_glob or f.since or f.until:
            media = self.catalog.media_matching(lambda rec: _accept(rec, f))
            if not media:
                return None
            parts.append(f"media_id in [{', '.join(quote(m) for m in sorted(media))}]")
        return " and ".join(parts)

    def _hits(self, rows: list[dict], query: str) -> list[Hit]:
        where = self.catalog.display_paths(r["media_id"] for r in rows)
        hits: list[Hit] = []
        for row in rows:
            rec = where.get(row["media_id"])
            if rec is None:
                continue  # content removed from the catalog since the search began
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    score=round(float(row["score"]), 6),
                    path=rec.display,
                    modality=row["modality"],
                    start=row["start"],
                    end=row["end"],
                    page=row["page"] or None,
                    snippet=snippet(row["text"], query),
                    media_id=row["media_id"],
                    segment_id=row["id"],
                    thumbnail=self._thumbnail(row["media_id"]),
                )
            )
        return hits

    def _thumbnail(self, media_id: str) -> str | None:
        if self.thumbnails is None:
            return None
        thumb = thumbnail_path(self.thumbnails, media_id)
        return str(thumb) if thumb.exists() else None


def _accept(rec: PathRecord, f: Filters) -> bool:
    if f.path_glob and not (
        fnmatch.fnmatch(rec.display, f.path_glob)
        or fnmatch.fnmatch(rec.path, f.path_glob)
        or fnmatch.fnmatch(rec.display.rsplit("/", 1)[-1], f.path_glob)
    ):
        return False
    mtime = rec.mtime_ns / 1e9
    if f.since and mtime < f.since.timestamp():
        return False
    return not (f.until and mtime >= f.until.timestamp())


_WORD = re.compile(r"\w+", re.UNICODE)


def snippet(text: str, query: str, width: int = 240) -> str:
    """The chunk's text around the first query word it contains, whitespace collapsed."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    words = {w.lower() for w in _WORD.findall(query) if len(w) > 2}
    lowered = flat.lower()
    positions = [lowered.find(w) for w in words]
    at = min((p for p in positions if p >= 0), default=0)
    start = max(0, min(at - width // 3, len(flat) - width))
    piece = flat[start : start + width]
    return ("…" if start > 0 else "") + piece + ("…" if start + width < len(flat) else "")
