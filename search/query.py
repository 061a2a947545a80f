"""The query layer: encode a query, search Milvus, map every hit back to its file and place."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mmrag.kinds import Modality, QueryKind
from mmrag.search.fusion import (
    DENSE_WEIGHT,
    HYBRID_FUSION,
    MINMAX_DEPTH,
    fuse_ranked,
    join_sources,
    legs_of_rows,
    merge_moments,
    minmax_fused,
    place,
)
from mmrag.search.rerank import TEXT_MODALITIES, Reranker
from mmrag.store.catalog import Box, Catalog, MediaFacts, MediaWhere, PathRecord
from mmrag.store.schema import RankedLegs, quote
from mmrag.store.thumbnails import thumbnail_file

if TYPE_CHECKING:  # pymilvus is slow to import; the store is opened (and imports it) elsewhere
    from mmrag.store.milvus import MilvusStore

Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[str, ...] = ("hybrid", "dense", "bm25")
# The deepest a search goes to find `limit` rows it can show (see Searcher._shown): Milvus's
# top-k ceiling is 16384, and a hybrid search asks each of its two requests for 3 * limit.
MAX_DEPTH = 16384 // 3
SORTS: tuple[str, ...] = ("relevance", "date")
CUTOFFS: tuple[str, ...] = ("off", "auto")
MOMENTS_PER_FILE = 3  # a grouped hit's best moments
AUTO_DROP = 0.5  # the automatic cutoff's cliff: a score under half the one before it
RERANK_DEPTH = 30  # a reranked text query re-scores at least this many candidates
# Catalog filters matching more media than the store takes named (MilvusStore.names_at_most)
# are not named: the ranked rows are checked against the filter instead, from a search
# BROAD_WIDEN times deeper than asked (Searcher._shown).
# A filter whose sampled share puts its media past this many times what can be named goes to
# the ranked rows without listing them first (500 paths tell a 3% share within about a quarter)
LISTED_SLACK = 1.5
BROAD_WIDEN = 4
# A broad filter's share of the paths is sampled (Catalog.share_matching) to start its search as
# deep as needed: first a glance at SHARE_GLANCE paths, enough where it shows a share of at least
# SURE_SHARE (the first depth fills the cut with a share of 1 / BROAD_WIDEN; a glance shows 40
# of 100 for it about once in 3000), else the catalog's full sample.
SHARE_GLANCE = 100
SURE_SHARE = 0.4


@dataclass(frozen=True)
class Shape:
    """What is done with the ranked candidates after retrieval, in this order.

    1. `group`: one hit per file, ranked by its best row, carrying up to `MOMENTS_PER_FILE`
       of its best rows as `moments` (the file's best places).
    2. `min_score`: hits (and a group's moments) scoring below it are dropped; the score is
       the one the hit shows (fused, or the cross-encoder's when reranked).
    3. `cutoff="auto"`: the list stops at the first cliff (`auto_cutoff`).
    4. `page`, `limit` its size: the hits at ranks (page - 1) * limit + 1 to page * limit,
       found by retrieving limit * page and slicing, so page 2 continues page 1.
    5. `sort="date"`: the page's hits, newest first (the file's taken_at where it says, else
       its modification time). Pages are cut from the relevance order first, so no hit shows
       on two pages; a hit's `rank` stays its relevance rank.
    """

    group: bool = False
    min_score: float | None = None
    cutoff: str = "off"
    sort: str = "relevance"
    page: int = 1

    def check(self) -> None:
        """One line naming the option that is wrong."""
        if self.sort not in SORTS:
            raise ValueError(f"unknown sort {self.sort!r}; choose one of {', '.join(SORTS)}")
        if self.cutoff not in CUTOFFS:
            raise ValueError(f"unknown cutoff {self.cutoff!r}; choose one of {', '.join(CUTOFFS)}")
        if self.page < 1:
            raise ValueError(f"page must be 1 or more, got {self.page}")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise ValueError(f"min_score must be a finite number, got {self.min_score}")


def auto_cutoff(scores: list[float], drop: float = AUTO_DROP) -> int:
    """How many hits of a ranked list to keep: those above the first cliff, where a hit scores
    below (1 - drop) times the hit before it. The first hit always stays.

    The first cliff, not the largest gap: where the list is cut then depends only on the hits
    above the cut, so a deeper search (page 2, a larger limit) cuts in the same place and pages
    agree. A ratio means nothing at or below zero, so a list is never cut after such a score.
    With RRF fusion across spaces the scores fall gently (1/61, 1/62, ...) and it rarely cuts."""
    for i in range(1, len(scores)):
        before = scores[i - 1]
        if before > 0 and scores[i] < before * (1 - drop):
            return i
    return len(scores)


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

    def box(self) -> Box:
        """Lat/lon bounds holding every place within `km` (a little wider), for SQL to narrow
        by before `holds` decides: no longitude bound where the circle reaches a pole."""
        arc = self.km / 6371.0 * 1.001 + 1e-9  # radians
        dlat = math.degrees(arc)
        lat_lo, lat_hi = self.lat - dlat, self.lat + dlat
        if arc >= math.pi / 2 or math.sin(arc) >= math.cos(math.radians(self.lat)):
            return lat_lo, lat_hi, None
        dlon = math.degrees(math.asin(math.sin(arc) / math.cos(math.radians(self.lat))))
        lons = tuple((self.lon - dlon + turn, self.lon + dlon + turn) for turn in (-360, 0, 360))
        return lat_lo, lat_hi, (*lons, (-math.inf, -180.0), (180.0, math.inf))


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

    def where(self) -> MediaWhere:
        """The catalog filters as SQL; a place filter needs `near.holds` on what it leaves."""
        return MediaWhere(
            glob=self.path_glob or None,
            mtime_since=self.since.timestamp() if self.since else None,
            mtime_until=self.until.timestamp() if self.until else None,
            taken_since=self.taken_since,
            taken_until=self.taken_until,
            camera=self.camera or None,
            box=self.near.box() if self.near else None,
        )

    def check_ranges(self) -> None:
        """An empty date range matches nothing: raise EmptyRange so the caller says so rather
        than show no results. Taken dates compare as their filter does (the camera's wall
        clock: UTC offsets dropped), modification dates as instants."""
        for first, last, wall_clock in DATE_RANGES:
            start, end = getattr(self, first), getattr(self, last)
            if start is None or end is None:
                continue
            if wall_clock:
                empty = start.replace(tzinfo=None) >= end.replace(tzinfo=None)
            else:
                empty = start.timestamp() >= end.timestamp()
            if empty:
                raise EmptyRange(first, last, start, end)


# Filters' date ranges: (start field, end field, compared on the wall clock)
DATE_RANGES = (("since", "until", False), ("taken_since", "taken_until", True))


class EmptyRange(ValueError):
    """A date range of Filters whose start is not before its end; `first` and `last` are the
    fields, which the API and the CLI each word as their own names."""

    def __init__(self, first: str, last: str, start: datetime, end: datetime) -> None:
        super().__init__(f"{first} {start.isoformat()} is not before {last} {end.isoformat()}")
        self.first, self.last, self.start, self.end = first, last, start, end


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
    # provenance: the spaces that found it and its rank in each, [{"space", "rank"}, ...]
    sources: list[dict] | None = None
    # grouped by file (Shape.group): the file's best places, this hit's own first
    moments: list[dict] | None = None
    ocr: bool | None = None  # True: text read by OCR from a scanned page (its range is the page's)
    # The whole segment's text (a passage, a transcript line, a photo's labels or OCR words),
    # which `mmrag ask` gives the model; the snippet is its best 240 characters for a reader.
    passage: str = field(default="", repr=False, compare=False)

    def to_json(self) -> dict:
        return {
            k: v
            for k, v in asdict(self).items()
            if k != "passage" and (v is not None or k not in OPTIONAL)
        }


OPTIONAL = ("page", "thumbnail", "taken_at", "camera", "gps", "sources", "moments", "ocr")


@dataclass(frozen=True)
class SearchSpace:
    """A configured space as the searcher sees it (built from the registry by mmrag.app)."""

    name: str
    encoder: Any  # a SpaceEncoder: encode_query(kind, inputs) -> unit rows
    collection: str
    queries: frozenset[QueryKind]
    full_text: bool = False  # BM25 beside the dense vectors


# Which media a catalog filter keeps: of those given, or (None) of all
Matching = Callable[[Iterable[str] | None], set[str]]


@dataclass(frozen=True)
class Scope:
    """Where a search looks: a Milvus filter, the media a narrow catalog filter names (handed
    to the store as a set: a snapshot masks them without reading them back from a
    `media_id in [...]` string) and, for a broad catalog filter, the filter that its ranked
    rows are checked against instead (_shown)."""

    expr: str
    keep: Matching | None = None
    widen: int = 1  # how many times deeper than asked a checked search starts
    media: frozenset[str] | None = None  # None: any media

    def listed(self, media: Iterable[str]) -> Scope:
        """The scope with these media named, and no ranked rows to check."""
        return Scope(self.expr, media=frozenset(media))


# Query files decoded once for every space they reach: (path, encoders) -> inputs
Decoder = Callable[[Path, list[Any]], list[Any]]

# What a query file finds unless told otherwise: a clip of a video finds video moments, a
# sound clip finds moments of recordings (not whole recordings, `--modality recording`).
DEFAULT_MODALITY = {QueryKind.VIDEO: Modality.SHOT, QueryKind.AUDIO: Modality.AUDIO}


class Searcher:
    """Holds the encoders, so a batch of queries loads each model once.

    A query of a kind searches every configured space that the registry says it reaches and
    that holds anything: a text query the `text` space (passages, photo labels, OCR words;
    hybrid, dense or BM25) and, unless BM25 only, `clip` through CLIP's text tower; an image
    query the photo spaces, one hit per file; a video clip the photo spaces' video moments; a
    sound clip the `audio` space. Each space gives a ranked list, and the lists are fused by
    rank (search.fusion).
    """

    def __init__(
        self,
        store: MilvusStore,
        catalog: Catalog,
        spaces: list[SearchSpace],
        decoders: Mapping[QueryKind, Decoder] | None = None,
        fusion: str = HYBRID_FUSION,
        dense_weight: float = DENSE_WEIGHT,
        thumbnails: Path | None = None,
        reranker: Reranker | None = None,
        weights: Mapping[str, float] | None = None,
    ):
        self.store = store
        self.catalog = catalog
        self.spaces = spaces
        self.decoders = dict(decoders or {})
        self.fusion = fusion
        self.dense_weight = dense_weight
        self.thumbnails = thumbnails
        self.reranker = reranker  # re-scores a text query's text candidates (search.rerank)
        self.notes: list[str] = []  # what a search could not do as asked (said once each)
        self.weights = dict(weights or {})  # a space's weight in rank fusion (default 1; 0: off)

    def find(
        self,
        kind: QueryKind,
        query: str | Path,
        mode: Mode = "hybrid",
        limit: int = 10,
        filters: Filters | None = None,
        shape: Shape | None = None,
        text: str | None = None,
    ) -> list[Hit]:
        """Search with a text (`query` is the text) or an example file (`query` is its path),
        or both (an example with `text`: "like this photo, and a red car"), then group, cut,
        page and sort the ranked candidates as `shape` says. Both: the example's and the text's
        ranked lists are fused by rank, so a hit either one finds can come first and one both
        find comes higher.

        Grouping asks for deeper lists until `limit * page` files are found (or Milvus has no
        more): the rows of one file would otherwise take the places of other files. An image
        query's rows are already one per file (Milvus grouping search)."""
        shape = shape or Shape()
        shape.check()
        fetch = self._fetcher(kind, query, mode, filters or Filters())
        if text is not None and kind != QueryKind.TEXT:
            fetch = _both(fetch, self._fetcher(QueryKind.TEXT, text, mode, filters or Filters()))
        if fetch is None:
            return []
        text = str(query) if kind == QueryKind.TEXT else (text or "")
        want = limit * shape.page
        rerank = self.reranker is not None and kind == QueryKind.TEXT
        depth = max(want, RERANK_DEPTH) if rerank else want
        while True:
            rows, exhausted = fetch(depth)
            if rerank:
                rows = self._rerank(text, rows)
            groups = group_by_file(rows) if shape.group else [[row] for row in rows]
            if not shape.group or len(groups) >= want or exhausted or depth >= MAX_DEPTH:
                break
            depth = min(MAX_DEPTH, 4 * depth)
        hits = self._hits(groups, text, shape.group)[:want]
        if shape.min_score is not None:
            hits = _at_least(hits, shape.min_score)
        if shape.cutoff == "auto":
            hits = hits[: auto_cutoff([h.score for h in hits])]
        hits = [replace(h, rank=n) for n, h in enumerate(hits, 1)]
        page = hits[(shape.page - 1) * limit : shape.page * limit]
        return self._by_date(page) if shape.sort == "date" else page

    def search(
        self,
        query: str,
        mode: Mode = "hybrid",
        limit: int = 10,
        filters: Filters | None = None,
        shape: Shape | None = None,
    ) -> list[Hit]:
        return self.find(QueryKind.TEXT, query, mode, limit, filters, shape)

    def _fetcher(
        self, kind: QueryKind, query: str | Path, mode: Mode, filters: Filters
    ) -> Callable[[int], tuple[list[dict], bool]] | None:
        """The query checked, decoded once, and a function from a depth to the fused ranked
        rows and whether Milvus had no more; None when the filters leave nothing to search."""
        if kind == QueryKind.TEXT:
            return self._text_fetcher(str(query), mode, filters)
        path = Path(query)
        reached = [s for s in self.spaces if kind in s.queries]
        if not reached:
            raise ValueError(f"{kind} search needs a model for one of: {_reaching(kind)}")
        _readable(path)
        existing = self.store.present(s.collection for s in reached)
        spaces = [s for s in reached if s.collection in existing]
        if filters.modality is None and kind in DEFAULT_MODALITY:
            filters = replace(filters, modality=DEFAULT_MODALITY[kind])
        scope = self._scope(filters)
        if not spaces or scope is None:
            return None
        inputs = self.decoders[kind](path, [s.encoder for s in spaces])
        vectors = {s.name: s.encoder.encode_query(kind, inputs) for s in spaces}
        names = [s.name for s in spaces]

        def fetch(depth: int) -> tuple[list[dict], bool]:
            lists = [self._dense(kind, s, vectors[s.name], depth, scope) for s in spaces]
            if kind == QueryKind.VIDEO:
                return _ranked(lists, depth, names), _exhausted(lists, depth)
            fused = fuse_ranked(lists, depth, names=names, weights=self._weights(names))
            return fused, _exhausted(lists, depth)

        return fetch

    def _text_fetcher(
        self, query: str, mode: Mode, filters: Filters
    ) -> Callable[[int], tuple[list[dict], bool]] | None:
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if not query.strip():
            raise ValueError("empty query")
        existing = self.store.present(s.collection for s in self.spaces)
        scope = self._scope(filters)
        if scope is None:
            return None
        spaces = [
            s
            for s in self.spaces  # else nothing ingested yet with this model
            if QueryKind.TEXT in s.queries
            and s.collection in existing
            and (s.full_text or mode != "bm25")
        ]
        vectors: dict[str, Any] = {}
        # A full-text space on a server without BM25 is searched densely, and said so.
        lexical = {s.name: s.full_text and self.store.full_text(s.collection) for s in spaces}
        if mode != "dense" and any(s.full_text and not lexical[s.name] for s in spaces):
            self.notes += [n for n in self.store.notes() if n not in self.notes]

        def fetch(depth: int) -> tuple[list[dict], bool]:
            lists: list[list[dict]] = []
            for space in spaces:
                if space.name not in vectors and (mode != "bm25" or not lexical[space.name]):
                    vectors[space.name] = space.encoder.encode_query(QueryKind.TEXT, [query])
                if lexical[space.name]:
                    lists.append(
                        self._search_text(space, query, mode, depth, scope, vectors.get(space.name))
                    )
                else:
                    lists.append(
                        self._dense(QueryKind.TEXT, space, vectors[space.name], depth, scope)
                    )
            names = [s.name for s in spaces]
            fused = fuse_ranked(lists, depth, names=names, weights=self._weights(names))
            return fused, _exhausted(lists, depth)

        return fetch

    def _weights(self, names: list[str]) -> list[float]:
        return [self.weights.get(name, 1.0) for name in names]

    def _rerank(self, query: str, rows: list[dict]) -> list[dict]:
        """The text candidates re-scored by the cross-encoder and re-ordered among the places
        they held; the others (a photo found by CLIP alone) keep theirs. Each re-scored row
        adds {"space": "rerank", "rank": n} to its sources. Unchanged without a model."""
        assert self.reranker is not None
        slots = [i for i, r in enumerate(rows) if r["modality"] in TEXT_MODALITIES and r["text"]]
        scores = self.reranker.scores(query, [rows[i]["text"] for i in slots])
        if not scores:
            return rows
        ranked = sorted(zip(scores, slots, strict=True), key=lambda pair: pair[0], reverse=True)
        out = list(rows)
        for n, (slot, (score, i)) in enumerate(zip(slots, ranked, strict=True), 1):
            row = rows[i]
            sources = join_sources(row.get("sources", []), [{"space": "rerank", "rank": n}])
            out[slot] = {**row, "score": score, "sources": sources}
        return out

    def search_image(
        self, path: Path, limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """Photos, and video moments, that look like the one at `path`; one hit per file, a
        video's being its best moment."""
        return self.find(QueryKind.IMAGE, path, limit=limit, filters=filters)

    def search_video(
        self, path: Path, limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """Where a video clip comes from (its frames vote for moments; see `_dense`)."""
        return self.find(QueryKind.VIDEO, path, limit=limit, filters=filters)

    def search_audio(
        self, path: Path, limit: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        """Moments that sound like the clip at `path`: each hit is a window with its time
        range, so a clip cut from a long recording finds where it comes from. With the modality
        filter `recording`, whole recordings that sound alike instead."""
        return self.find(QueryKind.AUDIO, path, limit=limit, filters=filters)

    def _search_text(
        self, space: SearchSpace, query: str, mode: Mode, limit: int, scope: Scope, vectors: Any
    ) -> list[dict]:
        name = space.collection
        if mode == "bm25":
            return self._shown(
                lambda k, s: self.store.search_bm25(name, [query], k, s.expr, media=s.media),
                limit,
                scope,
            )[0]
        vector = vectors[0]
        if mode == "dense":
            return self._shown(
                lambda k, s: self.store.search_dense(name, vector[None], k, s.expr, media=s.media),
                limit,
                scope,
            )[0]
        if self.fusion == "minmax":  # fused here: each leg scaled over its own list

            def both(k: int, s: Scope, own: int = 0) -> list[list[dict]]:
                # The same scaling whatever k. A filter checked after ranking fuses its rows as
                # a search naming its files would: legs of its rows alone, as deep as the limit
                # asked or MINMAX_DEPTH (`own`). Its legs go deeper by its share to hold them,
                # 4 times deeper while they do not, and past MAX_DEPTH its files are named.
                w = self.dense_weight
                own = own or max(k // s.widen, MINMAX_DEPTH)
                deep = own if s.keep is None else max(k, min(MAX_DEPTH, own * s.widen))
                while True:
                    legs = self._minmax_legs(name, vector, query, deep, s)
                    kept = None if s.keep is None else _kept_keys(legs, s.keep)
                    if kept is not None and _short_of_kept(legs, kept, own, deep):
                        if deep < MAX_DEPTH:
                            deep = min(MAX_DEPTH, 4 * deep)
                            continue
                        return both(k, s.listed(s.keep(None)), own)
                    fused = minmax_fused([(legs.dense, w), (legs.bm25, 1.0 - w)], kept, own)
                    return [legs.hits(fused[:k])]  # rows built for the k kept only

            return self._shown(both, limit, scope)[0]
        return self._shown(
            lambda k, s: [
                self.store.search_hybrid(
                    name, vector, query, k, s.expr, self.fusion, self.dense_weight, s.media
                )
            ],
            limit,
            scope,
        )[0]

    def _minmax_legs(self, name: str, vector: Any, query: str, depth: int, s: Scope) -> RankedLegs:
        """A hybrid search's dense and BM25 legs as ranked (key, score) pairs, `depth` deep:
        the snapshot's row numbers where it answers, else Milvus's rows keyed by segment id."""
        if legs := self.store.snapshot_legs(name, vector, query, depth, s.expr, s.media):
            return legs
        dense = self.store.search_dense(name, vector[None], depth, s.expr, media=s.media)[0]
        return legs_of_rows(
            dense, self.store.search_bm25(name, [query], depth, s.expr, media=s.media)[0]
        )

    def _dense(
        self, kind: QueryKind, space: SearchSpace, vectors: Any, limit: int, scope: Scope
    ) -> list[dict]:
        """One space's ranked rows for a query's encoded inputs (`vectors`).

        An example picture finds each file's best row (Milvus grouping search: a video gives
        its best moment, its neighbours being other pictures). A video clip's frames (one a
        second) each vote for their best moment in each video; a moment's score adds up over
        the frames that chose it, and neighbouring chosen moments merge later, so an excerpt
        spanning two shots returns one range, and videos rank by their evidence."""
        group = "media_id" if kind in (QueryKind.IMAGE, QueryKind.VIDEO) else None

        def fetch(k: int, s: Scope) -> list[list[dict]]:
            return self.store.search_dense(
                space.collection, vectors, k, s.expr, group_by=group, media=s.media
            )

        if kind != QueryKind.VIDEO:
            return self._shown(fetch, limit, scope)[0]
        # each frame's best moment in each of `max(3 * limit, 20)` videos
        found = self._shown(fetch, max(3 * limit, 20), scope)
        votes: dict[tuple, dict] = {}
        for rows in found:
            for row in rows:
                key = place(row)
                if key in votes:
                    votes[key]["score"] += row["score"]
                else:
                    votes[key] = dict(row)
        return sorted(votes.values(), key=lambda r: r["score"], reverse=True)

    def _scope(self, f: Filters) -> Scope | None:
        """Where to search; None when the catalog filters leave nothing to search. The catalog
        answers in SQL; a filter matching more media than the store takes named
        (MilvusStore.names_at_most) is checked against the ranked rows rather than sent to the
        store, from a search as deep as its share of the paths says (_widen_for). The share is
        sampled first, so a filter that clearly keeps too many is not listed at all."""
        expr = f"modality == {quote(f.modality)}" if f.modality else ""
        if not f.by_catalog:
            return Scope(expr)
        near, where = f.near, f.where()
        accept = (lambda _rec, facts: near.holds(facts.lat, facts.lon)) if near else None

        def keep(among: Iterable[str] | None) -> set[str]:
            return self.catalog.media_matching(accept, where, among)

        paths = self.catalog.paths_at_most()
        most = self.store.names_at_most(paths)
        share = self.catalog.share_matching(accept, where, SHARE_GLANCE)
        if paths > most and (share is None or share < SURE_SHARE):
            share = self.catalog.share_matching(accept, where)  # a glance tells large shares
        if share is not None and share * paths > LISTED_SLACK * most:  # too many to name
            return Scope(expr, keep, _widen_for(share))
        media = self.catalog.media_matching(accept, where, limit=most + 1)
        if not media:
            return None
        if len(media) <= most:
            return Scope(expr).listed(media)
        return Scope(expr, keep, _widen_for(share))

    def _shown(
        self, fetch: Callable[[int, Scope], list[list[dict]]], want: int, scope: Scope
    ) -> list[list[dict]]:
        """Each of `fetch(depth, scope)`'s ranked lists cut to its first `want` rows that a hit
        can show (their media have a path) and that the scope keeps.

        Milvus can hold rows of media the catalog has no path for yet: an ingest writes a
        batch's rows before it links their files, and a crash leaves such rows until the next
        run. Dropping them from exactly `want` rows would return fewer hits than exist, so the
        search is asked again, deeper, until every list has `want` such rows or Milvus has no
        more. Filtering before fusion keeps the rank of every shown row what it would be
        without the others; with none of them, the first call is the only one.

        A broad catalog filter's scope checks the rows' media against the filter and starts
        `widen` times deeper; should its media rank too low to fill `want` rows by the deepest
        search, Milvus is asked again with every one of them named."""
        depth, keep = min(MAX_DEPTH, want * scope.widen), scope.keep
        while True:
            lists = fetch(depth, scope)
            ids = list(dict.fromkeys(r["media_id"] for rows in lists for r in rows))
            # media the filter keeps have a path: no need to look theirs up first
            ok = self.catalog.display_paths(ids).keys() if keep is None else keep(ids)
            kept = [[r for r in rows if r["media_id"] in ok][:want] for rows in lists]
            short = any(
                len(k) < want and len(rows) >= depth for k, rows in zip(kept, lists, strict=True)
            )
            if short and depth >= MAX_DEPTH and keep is not None:
                scope = scope.listed(keep(None))
                depth, keep = want, None
                continue
            if not short or depth >= MAX_DEPTH:
                return kept
            depth = min(MAX_DEPTH, 4 * depth)

    def _hits(self, groups: list[list[dict]], query: str, moments: bool) -> list[Hit]:
        """One hit per group (its first row; a group of one row unless grouped by file), with
        the group's first `MOMENTS_PER_FILE` rows as its moments when `moments`."""
        where = self.catalog.display_paths(r["media_id"] for rows in groups for r in rows)
        facts = self.catalog.facts_of(where)
        hits: list[Hit] = []
        for rows in groups:
            row = rows[0]
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
                    sources=row.get("sources"),
                    moments=[_moment(r, rec, query) for r in rows] if moments else None,
                    ocr=_ocr(row),
                    passage=row["text"],
                )
            )
        return hits

    def _by_date(self, hits: list[Hit]) -> list[Hit]:
        """Newest first: when the file was taken where it says (EXIF, video tags), else when it
        was last modified; ties keep their relevance order."""
        where = self.catalog.display_paths(h.media_id for h in hits)

        def when(hit: Hit) -> float:
            if hit.taken_at:
                try:
                    return datetime.fromisoformat(hit.taken_at).timestamp()
                except ValueError:
                    pass  # an odd date a camera wrote: the file's own date instead
            rec = where.get(hit.media_id)
            return rec.mtime_ns / 1e9 if rec else float("-inf")

        return sorted(hits, key=when, reverse=True)

    def _thumbnail(self, row: dict) -> str | None:
        """The file's thumbnail (as a file: written from the cache when first shown); a video
        moment or a page names its own (meta "thumb")."""
        if self.thumbnails is None:
            return None
        key = (row.get("meta") or {}).get("thumb") or row["media_id"]
        thumb = thumbnail_file(self.thumbnails, key)
        return str(thumb) if thumb else None


def _kept_keys(legs: RankedLegs, keep: Matching) -> set[Any]:
    """The keys of both legs whose media a filter checked after ranking keeps."""
    keys = list(dict.fromkeys(key for key, _ in (*legs.dense, *legs.bm25)))
    media = legs.media_ids(keys)
    ok = keep(dict.fromkeys(media))
    return {key for key, m in zip(keys, media, strict=True) if m in ok}


def _short_of_kept(legs: RankedLegs, kept: set[Any], own: int, deep: int) -> bool:
    """Whether a leg fetched `deep` (and not exhausted) holds fewer than `own` kept rows: too
    few to scale by as the filter's own search would."""
    return any(
        len(leg) >= deep and sum(key in kept for key, _ in leg) < own
        for leg in (legs.dense, legs.bm25)
    )


def _widen_for(share: float | None) -> int:
    """How many times deeper than asked a broad filter's search starts: the first depth of the
    rounds _shown would go through (BROAD_WIDEN, then 4 times deeper each) at which its share of
    the ranked rows is expected to fill the cut, so it is found at once; BROAD_WIDEN where the
    share is unknown."""
    widen = BROAD_WIDEN
    while share is not None and widen * share < 1 and widen < MAX_DEPTH:
        widen *= 4
    return widen


def _ranked(lists: list[list[dict]], limit: int, names: list[str]) -> list[dict]:
    """Fuse the spaces' lists, then merge the neighbouring moments an excerpt's frames chose
    (truncating first would let two halves of one scene take two of the `limit` places)."""
    return merge_moments(fuse_ranked(lists, 3 * limit, names=names))[:limit]


Fetch = Callable[[int], tuple[list[dict], bool]]


def _both(example: Fetch | None, text: Fetch | None) -> Fetch | None:
    """An example's and a text's ranked rows fused by rank (each row keeps its provenance)."""
    parts = [f for f in (example, text) if f is not None]
    if len(parts) <= 1:
        return parts[0] if parts else None

    def fetch(depth: int) -> tuple[list[dict], bool]:
        got = [part(depth) for part in parts]
        return fuse_ranked([rows for rows, _ in got], depth), all(done for _, done in got)

    return fetch


def _exhausted(lists: list[list[dict]], depth: int) -> bool:
    """No list was cut at `depth`: a deeper search would find nothing more."""
    return all(len(rows) < depth for rows in lists)


def group_by_file(rows: list[dict], per_file: int = MOMENTS_PER_FILE) -> list[list[dict]]:
    """Ranked rows as ranked files: each file's rows in rank order, at most `per_file`, the
    files ordered by their best row."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        group = groups.setdefault(row["media_id"], [])
        if len(group) < per_file:
            group.append(row)
    return list(groups.values())


def _at_least(hits: list[Hit], floor: float) -> list[Hit]:
    """Hits scoring `floor` or more; a grouped hit keeps its moments that do."""
    kept = []
    for hit in hits:
        if hit.score < floor:
            continue
        if hit.moments is not None:
            hit = replace(hit, moments=[m for m in hit.moments if m["score"] >= floor])
        kept.append(hit)
    return kept


def _moment(row: dict, rec: PathRecord, query: str) -> dict:
    """One place in a grouped file: score, where (page and characters, or seconds), snippet,
    link, and which spaces found it."""
    out: dict[str, Any] = {
        "score": round(float(row["score"]), 6),
        "modality": row["modality"],
        "start": row["start"],
        "end": row["end"],
    }
    if row.get("page"):
        out["page"] = row["page"]
    out |= {
        "snippet": snippet(row["text"], query),
        "segment_id": row["id"],
        "link": link(rec.path, row["modality"], row["start"], row["end"], row["page"]),
    }
    if row.get("sources"):
        out["sources"] = row["sources"]
    if _ocr(row):
        out["ocr"] = True
    return out


def _ocr(row: dict) -> bool | None:
    """True for text read by OCR from a scanned page (the segment's meta says so)."""
    return True if (row.get("meta") or {}).get("ocr") else None


def _reaching(kind: QueryKind) -> str:
    """The spaces (and their settings) that a query kind can search, for an error message."""
    from mmrag.registry import SPACES

    found = [f"{s.name} ({s.setting})" for s in SPACES.values() if kind in s.queries]
    return ", ".join(found) or "none registered"


def _readable(path: Path) -> None:
    """A query file is checked before anything else, so a typo is never "no results"."""
    if Path(path).is_dir():
        raise ValueError(f"{path}: is a folder, not a file")
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")


def link(path: str, modality: str, start: float, end: float, page: int | None) -> str:
    """A file URI that players and viewers open at the place: W3C media fragments (#t=) for
    recordings and video, the PDF open parameter (#page=) for pages."""
    uri = Path(path).as_uri()
    if Modality(modality).timed:
        return f"{uri}#t={start:.2f},{end:.2f}"
    return f"{uri}#page={page}" if page else uri


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
