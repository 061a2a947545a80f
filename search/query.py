"""The query layer: encode a query, search Milvus, map every hit back to its file and place."""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ingest.catalog import Catalog, MediaFacts, PathRecord
from pipelines.image_decode import decode_image, thumbnail_path
from pipelines.image_pipeline import decode_side
from pipelines.milvus_store import MilvusStore, quote
from pipelines.text_pipeline import TextPipeline
from search.fusion import fuse_ranked, merge_moments, place

if TYPE_CHECKING:
    from pipelines.audio_pipeline import AudioSpace
    from pipelines.image_pipeline import ClipSpace, ImageSpace

Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[str, ...] = ("hybrid", "dense", "bm25")


@dataclass(frozen=True)
class Near:
    """Within `km` of a place (a photo's EXIF GPS)."""

    lat: float
    lon: float
    km: float = 5.0

    def holds(self, lat: float, lon: float) -> bool:
        """Great-circle (haversine) distance on a 6371 km sphere."""
        p1, p2 = math.radians(self.lat), math.radians(lat)
        dp, dl = p2 - p1, math.radians(lon - self.lon)
        a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a))) <= self.km


@dataclass(frozen=True)
class Filters:
    modality: str | None = None  # "document", "transcript", "image", "shot", ...
    path_glob: str | None = None  # matched against the path as given to ingest, and its name
    since: datetime | None = None  # file modified at or after
    until: datetime | None = None  # file modified before
    # What photos say about themselves (EXIF); media that do not say it are left out.
    taken_since: datetime | None = None  # taken at or after (the camera's wall clock)
    taken_until: datetime | None = None  # taken before
    camera: str | None = None  # part of the camera's make and model, any case
    near: Near | None = None

    @property
    def by_catalog(self) -> bool:
        """Filters the catalog answers (by media id), not Milvus."""
        dates = (self.since, self.until, self.taken_since, self.taken_until)
        return any((self.path_glob, *dates, self.camera, self.near))


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
    link: str = ""  # opens the file there: a media fragment (#t=start,end) or a PDF page
    # What the file says of itself (a photo's EXIF, a phone video's tags), where it does
    taken_at: str | None = None
    camera: str | None = None
    gps: dict[str, float] | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in OPTIONAL}


OPTIONAL = ("page", "thumbnail", "taken_at", "camera", "gps")


class Searcher:
    """Holds the encoders, so a batch of queries loads each model once.

    A text query searches the `text` space (passages, photo labels, OCR words; hybrid, dense or
    BM25) and, unless BM25 only, the `clip` space through CLIP's text tower; an image query
    searches the `image` and `clip` spaces. Each space that holds anything gives a ranked list,
    and the lists are fused by rank (search.fusion).
    """

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
        clip: ClipSpace | None = None,
        audio: AudioSpace | None = None,
    ):
        self.store = store
        self.catalog = catalog
        self.text = text
        self.collection = text.collection(prefix)
        self.fusion = fusion
        self.dense_weight = dense_weight
        self.image = image
        self.image_collection = image.collection(prefix) if image else None
        self.clip = clip
        self.clip_collection = clip.collection(prefix) if clip else None
        self.audio = audio
        self.audio_collection = audio.collection(prefix) if audio else None
        self.thumbnails = thumbnails

    def search(
        self, query: str, mode: Mode = "hybrid", limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if not query.strip():
            raise ValueError("empty query")
        existing = set(self.store.existing_collections())
        expr = self._filter_expr(filters or Filters())
        if expr is None:
            return []
        lists: list[list[dict]] = []
        if self.collection in existing:  # else nothing ingested yet with this model
            lists.append(self._search_text(query, mode, limit, expr))
        if mode != "bm25" and self.clip and self.clip_collection in existing:
            vector = self.clip.encode_texts([query])[0][None]
            lists.append(self.store.search_dense(self.clip_collection, vector, limit, expr)[0])
        return self._hits(fuse_ranked(lists, limit), query)

    def _search_text(self, query: str, mode: Mode, limit: int, expr: str) -> list[dict]:
        if mode == "bm25":
            return self.store.search_bm25(self.collection, [query], limit, expr)[0]
        vector = self.text.encode([query])[0]
        if mode == "dense":
            return self.store.search_dense(self.collection, vector[None], limit, expr)[0]
        return self.store.search_hybrid(
            self.collection, vector, query, limit, expr, self.fusion, self.dense_weight
        )

    def search_image(
        self, path: Path, limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """Photos, and video moments, that look like the one at `path`: the `image` and `clip`
        spaces, fused; one hit per file, a video's being its best moment."""
        spaces = self._vision_spaces("image", path)
        if not spaces:
            return []
        expr = self._filter_expr(filters or Filters())
        if expr is None:
            return []
        # Decoded as ingest decodes photos; ImageDecodeError says what is wrong with the file.
        # One hit per file: a video gives its best moment (its neighbours are other pictures).
        query = decode_image(path, short_side=decode_side([space for space, _ in spaces]))
        lists = []
        for space, name in spaces:  # the best moment of each video (grouping search)
            vector = space.encode_images([query.image])[0][None]
            found = self.store.search_dense(name, vector, limit, expr, group_by="media_id")
            lists.append(found[0])
        return self._hits(fuse_ranked(lists, limit), "")

    def search_video(
        self, path: Path, limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """Where a video clip comes from: each of its frames (one a second) searches the video
        moments of every vision space and votes for its best moment in each video; a moment's
        score adds up over the frames that chose it, and neighbouring chosen moments merge, so
        an excerpt spanning two shots returns one range, and videos rank by their evidence."""
        from pipelines.video_decode import sample_frames
        from pipelines.video_pipeline import KEYFRAME_SIDE

        spaces = self._vision_spaces("video", path)
        filters = filters or Filters()
        if filters.modality is None:
            filters = replace(filters, modality="shot")
        expr = self._filter_expr(filters)
        if not spaces or expr is None:
            return []
        sampled = sample_frames(path, every_s=1.0, max_side=KEYFRAME_SIDE)
        frames = [f.image for f in islice(sampled, VIDEO_QUERY_FRAMES)]  # decodes no further
        if not frames:
            raise ValueError(f"{path}: no frames could be decoded")
        lists = []
        for space, name in spaces:
            vectors = space.encode_images(frames)
            # Milvus grouping search: each frame's best moment in each of `depth` videos
            depth = max(3 * limit, 20)
            found = self.store.search_dense(name, vectors, depth, expr, group_by="media_id")
            votes: dict[tuple, dict] = {}
            for rows in found:
                for row in rows:
                    key = place(row)
                    if key in votes:
                        votes[key]["score"] += row["score"]
                    else:
                        votes[key] = dict(row)
            lists.append(sorted(votes.values(), key=lambda r: r["score"], reverse=True))
        return self._hits(_ranked(lists, limit), "")

    def _vision_spaces(self, kind: str, path: Path) -> list[tuple[Any, str]]:
        """(space, collection) of the photo spaces configured and holding anything; the query
        file is checked first, so a typo is an error, never "no results"."""
        pairs = [(self.image, self.image_collection), (self.clip, self.clip_collection)]
        spaces = [(space, name) for space, name in pairs if space is not None]
        if not spaces:
            raise ValueError(f"{kind} search needs an image or CLIP model (image_model/clip_model)")
        _readable(path)
        existing = set(self.store.existing_collections())
        return [(space, name) for space, name in spaces if name in existing]

    def search_audio(
        self, path: Path, limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """Moments that sound like the clip at `path` (the `audio` space): each hit is a window
        with its time range, so a clip cut from a long recording finds where it comes from.
        With the modality filter `recording`, whole recordings that sound alike instead."""
        if self.audio is None:
            raise ValueError("audio search needs an audio model (setting audio_model)")
        _readable(path)
        if self.audio_collection not in self.store.existing_collections():
            return []
        filters = filters or Filters()
        if filters.modality is None:
            filters = replace(filters, modality="audio")
        expr = self._filter_expr(filters)
        if expr is None:
            return []
        vector = self.audio.encode_clip(path)  # MediaError says what is wrong with the clip
        rows = self.store.search_dense(self.audio_collection, vector[None], limit, expr)[0]
        return self._hits(rows, "")

    def _filter_expr(self, f: Filters) -> str | None:
        """A Milvus filter; None when the catalog filters leave nothing to search."""
        parts: list[str] = []
        if f.modality:
            parts.append(f"modality == {quote(f.modality)}")
        if f.by_catalog:
            media = self.catalog.media_matching(lambda rec, facts: _accept(rec, facts, f))
            if not media:
                return None
            parts.append(f"media_id in [{', '.join(quote(m) for m in sorted(media))}]")
        return " and ".join(parts)

    def _hits(self, rows: list[dict], query: str) -> list[Hit]:
        where = self.catalog.display_paths(r["media_id"] for r in rows)
        facts = self.catalog.facts_of(where)
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
                    thumbnail=self._thumbnail(row),
                    link=link(rec.path, row["modality"], row["start"], row["end"], row["page"]),
                    **facts.get(row["media_id"], MediaFacts()).hit_fields(),
                )
            )
        return hits

    def _thumbnail(self, row: dict) -> str | None:
        """The file's thumbnail; a video moment names its own keyframe's (meta "thumb")."""
        if self.thumbnails is None:
            return None
        key = (row.get("meta") or {}).get("thumb") or row["media_id"]
        thumb = thumbnail_path(self.thumbnails, key)
        return str(thumb) if thumb.exists() else None


def _ranked(lists: list[list[dict]], limit: int) -> list[dict]:
    """Fuse the spaces' lists, then merge the neighbouring moments an excerpt's frames chose
    (truncating first would let two halves of one scene take two of the `limit` places)."""
    return merge_moments(fuse_ranked(lists, 3 * limit))[:limit]


def _readable(path: Path) -> None:
    """A query file is checked before anything else, so a typo is never "no results"."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")


VIDEO_QUERY_FRAMES = 120  # a query clip is read for at most two minutes

TIMED = {"audio", "transcript", "tags", "recording", "shot", "shot_label"}


def link(path: str, modality: str, start: float, end: float, page: int | None) -> str:
    """A file URI that players and viewers open at the place: W3C media fragments (#t=) for
    recordings and video, the PDF open parameter (#page=) for pages."""
    uri = Path(path).as_uri()
    if modality in TIMED:
        return f"{uri}#t={start:.2f},{end:.2f}"
    return f"{uri}#page={page}" if page else uri


def _accept(rec: PathRecord, facts: MediaFacts, f: Filters) -> bool:
    if not _taken(facts, f):
        return False
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


def _taken(facts: MediaFacts, f: Filters) -> bool:
    """The EXIF filters: when (compared as the camera's wall clock, as people remember it),
    with what, where."""
    if f.taken_since or f.taken_until:
        if not facts.taken_at:
            return False
        when = datetime.fromisoformat(facts.taken_at).replace(tzinfo=None)  # UTC offset dropped
        if f.taken_since and when < f.taken_since.replace(tzinfo=None):
            return False
        if f.taken_until and when >= f.taken_until.replace(tzinfo=None):
            return False
    if f.camera and f.camera.casefold() not in (facts.camera or "").casefold():
        return False
    if f.near and (facts.lat is None or facts.lon is None):
        return False
    return not f.near or f.near.holds(facts.lat, facts.lon)  # type: ignore[arg-type]


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
