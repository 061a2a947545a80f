"""The HTTP API (`mmrag serve`): search, ask, the files hits point at, thumbnails, status and
ingest, over one warm set of models built by the composition root (mmrag.app).

FastAPI runs each request's blocking work in a thread. The models are shared, so every encoder
call holds one lock (tokenizers and some models are not thread-safe), while Milvus searches and
catalog reads run side by side. Every error is one JSON line, `{"error": "..."}`, naming the
field at fault where there is one; never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import math
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, unquote

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from mmrag import http_files
from mmrag.jobs import Busy, Jobs
from mmrag.kinds import IngestBackend, MediaType, Modality, QueryKind
from mmrag.settings import Settings, absolute

if TYPE_CHECKING:
    from mmrag.app import Models
    from mmrag.search.answer import Source
    from mmrag.search.query import Hit

log = logging.getLogger("mmrag.api")

MAX_LIMIT = 1000  # as `mmrag search --limit`
GUARDED = ("/api", "/media/", "/thumbs/")  # what the API key protects
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DRAIN_BYTES = 64 * 1024 * 1024  # read (and drop) this much of an oversized upload, so the
DRAIN_S = 10.0  # client reads the 413 instead of a reset connection
QUERY_MEDIA = {
    MediaType.IMAGE: QueryKind.IMAGE,
    MediaType.AUDIO: QueryKind.AUDIO,
    MediaType.VIDEO: QueryKind.VIDEO,
}
KEY_COOKIE = "mmrag_key"  # lets <video>/<img> elements, which send no headers, fetch media


class BadField(Exception):
    """A request field is wrong: 422 with one line naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _TooLarge(Exception):
    pass


# -- the warm models, store and searcher ---------------------------------------------------------


class Service:
    """What the API serves from: one Models, one catalog and store, one searcher."""

    def __init__(self, settings: Settings, models: Models | None = None) -> None:
        self.settings = settings
        self.models = models
        self.catalog: Any = None
        self.store: Any = None
        self.searcher: Any = None
        self.jobs: Jobs | None = None
        self.unavailable: list[str] = []
        self.requests: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Open the store and load every model now (a model that cannot be had is listed in
        status), so the first request is as fast as the next."""
        with self._start_lock:
            if self.searcher is not None:
                return
            from mmrag.app import Models, open_store

            models = self.models or Models.build(self.settings)
            catalog, store = open_store(self.settings)
            try:
                lock = _guard(models)
                searcher = models.searcher(catalog, store)
                if searcher.reranker is not None:
                    searcher.reranker.scores = _locked(searcher.reranker.scores, lock)
                self.unavailable = models.unavailable()
                models.text.encode_query(QueryKind.TEXT, ["warm up"])
            except BaseException:
                store.close()
                catalog.close()
                raise
            self.models, self.catalog, self.store, self.searcher = models, catalog, store, searcher
            self.jobs = Jobs(self.settings, models)

    def stop(self) -> None:
        if self.store is not None:
            self.store.close()
            self.catalog.close()
            self.store = self.catalog = self.searcher = None

    def _searcher(self) -> Any:
        """The searcher, built again once a space's model switch has cut over (another
        process's `mmrag reindex` or ingest, ingest/reindex.py): the collection it searched
        is about to be dropped. The reranker is kept."""
        old, models, catalog, store = self.searcher, self.models, self.catalog, self.store
        if all(models.searched(s.name, catalog, store)[1] == s.collection for s in old.spaces):
            return old
        with self._start_lock:
            if self.searcher is old:
                self.searcher = self.models.searcher(self.catalog, self.store)
                self.searcher.reranker = old.reranker
            return self.searcher

    def count(self, what: str) -> None:
        with self._count_lock:
            self.requests[what] += 1

    def locations(self, media_id: str) -> list[tuple[str, str]]:
        """Where a content lives (path, the folder it was ingested from), newest first."""
        return self.catalog.locations(media_id)

    def photo_thumbnail(self, media_id: str) -> Path | None:
        """A photo's thumbnail made now, where none was made at ingest (`photo_thumbnails =
        "shown"`, or `auto` with the models on a GPU, or a store older than its thumbnail):
        only for a content the catalog knows as a photo, from a file still inside its library
        folder and unchanged since it was ingested (size and mtime), so a thumbnail is never
        stored under the wrong content."""
        from mmrag.pipelines.image.pipeline import shown_thumbnail

        if self.catalog.media_modality(media_id) != Modality.IMAGE:
            return None
        for path, root in self.locations(media_id):
            if (opened := http_files.open_inside(path, root)) is None:
                continue
            try:
                known = self.catalog.path_record(path)
                if known is None or (known.size, known.mtime_ns) != (opened.size, opened.mtime_ns):
                    continue
                with os.fdopen(os.dup(opened.fd), "rb") as fp:
                    limit = self.settings.max_image_mpx * 1_000_000
                    return shown_thumbnail(self.settings.thumbnails, media_id, fp, limit)
            finally:
                opened.close()
        return None

    def library(self) -> list[str]:
        """The folders an ingest over HTTP takes: the server's --library, else those ingested."""
        if self.settings.library:
            return [str(absolute(p)) for p in self.settings.library]
        return self.catalog.roots()

    def status(self) -> dict[str, Any]:
        """What `mmrag status --json` says, plus the store id, the models and this server."""
        from mmrag.app import library_status

        s = self.settings
        latest = self.jobs.latest() if self.jobs else None
        return library_status(s, self.catalog, self.store) | {
            "models": {name: space.model_name for name, space in self.models.spaces.items()}
            | ({"speech": s.speech_model} if s.speech_model else {}),
            "unavailable": self.unavailable,
            "server": {
                "requests": dict(self.requests),
                "ingest": latest.to_json() if latest else None,
                "key_required": bool(s.api_key),
            },
        }

    def search_notes(self) -> list[str]:
        """What a search could not do as asked (a server without BM25: searched densely) and
        what `status` says of the collections searched (a snapshot lacking the latest writes:
        searched slower until the next ingest), so a client sees why, as the CLI does."""
        store, searcher = self.store, self.searcher
        existing = sorted(store.present(s.collection for s in searcher.spaces))  # as searched
        stale = store.snapshots.stale(existing) if store.snapshots else []
        told = store.search_notes({name: store.count(name) for name in stale}) if stale else []
        return list(dict.fromkeys([*searcher.notes, *told]))

    def find(
        self,
        kind: QueryKind,
        query: str | Path,
        options: Options,
        text: str | None = None,
        field: str = "",
        shown: str = "",
    ) -> list[Hit]:
        """One search, its errors as BadField (the query's fault: `field`, default q or file;
        an upload's temporary path said as `shown`) or HTTP 503 (a model)."""
        from mmrag.pipelines.base import MediaError
        from mmrag.pipelines.model_resolver import ModelNotAvailable

        field = field or ("q" if kind == QueryKind.TEXT else "file")
        more = {"text": text} if text else {}  # an example and words, fused (Searcher.find)
        try:
            return self._searcher().find(
                kind, query, options.mode, options.limit, options.filters, options.shape, **more
            )
        except ModelNotAvailable as exc:
            raise HTTPException(503, str(exc)) from exc
        except (MediaError, ValueError, OSError) as exc:
            message = str(exc).replace(str(query), shown) if shown else str(exc)
            raise BadField(field, message) from exc


def _guard(models: Models) -> threading.RLock:
    """Every space's encode and encode_query hold one lock (one per Models, reentrant: an
    encoder may call another). Search and an ingest over HTTP share the models."""
    lock = getattr(models, "_api_lock", None)
    if lock is not None:
        return lock
    lock = threading.RLock()
    for space in models.spaces.values():
        for name in ("encode", "encode_query"):
            setattr(space, name, _locked(getattr(space, name), lock))
    models._api_lock = lock  # type: ignore[attr-defined]
    return lock


def _locked(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return call


# -- search options, checked as `mmrag search` checks them ---------------------------------------


@dataclass(frozen=True)
class Options:
    mode: str
    limit: int
    filters: Any  # search.query.Filters
    shape: Any  # search.query.Shape


def search_options(
    mode: Annotated[str, Query(description="hybrid (BM25 + dense), dense or bm25")] = "hybrid",
    limit: Annotated[int, Query(description=f"Hits per page, 1 to {MAX_LIMIT}")] = 10,
    page: Annotated[int, Query(description="Page of results (1-based)")] = 1,
    group: Annotated[bool, Query(description="One hit per file, with its best moments")] = False,
    min_score: Annotated[float | None, Query(description="Drop hits scoring below")] = None,
    cutoff: Annotated[str, Query(description="auto: stop at a score cliff; off")] = "off",
    sort: Annotated[str, Query(description="relevance, or date (newest first)")] = "relevance",
    modality: Annotated[str | None, Query(description="Only this modality")] = None,
    path: Annotated[str | None, Query(description="Only files matching this glob")] = None,
    since: Annotated[str | None, Query(description="Modified on/after (ISO date)")] = None,
    until: Annotated[str | None, Query(description="Modified before (ISO date)")] = None,
    taken_since: Annotated[str | None, Query(description="Taken on/after (EXIF)")] = None,
    taken_until: Annotated[str | None, Query(description="Taken before (EXIF)")] = None,
    camera: Annotated[str | None, Query(description="Camera name contains")] = None,
    near: Annotated[str | None, Query(description="LAT,LON[,KM]: taken near (GPS)")] = None,
) -> Options:
    """The query string's search options, each checked with a message naming it."""
    from mmrag.search.query import CUTOFFS, MAX_DEPTH, MODES, SORTS, EmptyRange, Filters, Shape

    _one_of("mode", mode, MODES)
    _one_of("cutoff", cutoff, CUTOFFS)
    _one_of("sort", sort, SORTS)
    if modality is not None:
        _one_of("modality", modality, tuple(Modality))
    if not 1 <= limit <= MAX_LIMIT:
        raise BadField("limit", f"must be from 1 to {MAX_LIMIT}, got {limit}")
    if page < 1:
        raise BadField("page", f"must be 1 or more, got {page}")
    if page * limit > MAX_DEPTH:
        raise BadField("page", f"{page} with limit {limit} goes past hit {MAX_DEPTH}, the deepest")
    if min_score is not None and not math.isfinite(min_score):
        raise BadField("min_score", f"must be a finite number, got {min_score}")
    for name, text in (("path", path), ("camera", camera)):
        if text is not None and not text.strip():
            raise BadField(name, "is empty: give some text, or leave it out")
    filters = Filters(
        modality,
        path,
        _date("since", since),
        _date("until", until),
        _date("taken_since", taken_since),
        _date("taken_until", taken_until),
        camera,
        _near(near),
    )
    try:
        filters.check_ranges()
    except EmptyRange as exc:
        said = f"{exc.start.isoformat()} is not before {exc.last} {exc.end.isoformat()}"
        raise BadField(exc.first, said) from None
    return Options(mode, limit, filters, Shape(group, min_score, cutoff, sort, page))


def _one_of(field: str, value: str, choices: tuple[str, ...]) -> None:
    allowed = [str(c) for c in choices]
    if value not in allowed:
        raise BadField(field, f"must be one of {', '.join(allowed)} (got {value!r})")


def _date(field: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise BadField(field, f"expects a date like 2024-05-31, got {value!r}") from None


def _near(value: str | None) -> Any:
    from mmrag.search.query import Near

    if value is None:
        return None
    usage = f"expects LAT,LON or LAT,LON,KM (e.g. 48.8584,2.2945,2), got {value!r}"
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise BadField("near", usage) from None
    if len(parts) not in (2, 3) or not all(math.isfinite(p) for p in parts):
        raise BadField("near", usage)
    near = Near(*parts)
    if not -90 <= near.lat <= 90 or not -180 <= near.lon <= 180:
        raise BadField("near", f"latitude -90..90 and longitude -180..180, got {value!r}")
    if near.km <= 0:
        raise BadField("near", f"KM must be above 0, got {value!r}")
    return near


# -- what a hit and a source look like to a page -------------------------------------------------


def media_url(media_id: str, modality: str, start: float, page: int | None) -> str:
    """The file over HTTP, at the place: `#t=start` for recordings and video (a player starts
    there), `#page=N` for a PDF page."""
    url = f"/media/{media_id}"
    if Modality(modality).timed:
        return f"{url}#t={start:.2f}"
    return f"{url}#page={page}" if page else url


# What a photo's rows are: its picture, its labels, its printed words
PHOTO_ROWS = frozenset({Modality.IMAGE, Modality.LABEL, Modality.OCR})


def hit_json(hit: Hit) -> dict[str, Any]:
    """`Hit.to_json()` (what `mmrag search --json` prints) plus the URLs a page renders."""
    data = hit.to_json()
    data["media_url"] = media_url(hit.media_id, hit.modality, hit.start, hit.page)
    if hit.thumbnail:
        key = Path(hit.thumbnail).name.rsplit("_", 1)[0]  # <key>_<size>.jpg
        data["thumbnail_url"] = f"/thumbs/{key}"
    elif hit.modality in PHOTO_ROWS:  # a photo's thumbnail, made when first asked for
        data["thumbnail_url"] = f"/thumbs/{hit.media_id}"
    if hit.moments:
        data["moments"] = [
            m | {"media_url": media_url(hit.media_id, m["modality"], m["start"], m.get("page"))}
            for m in hit.moments
        ]
    return data


def source_json(source: Source) -> dict[str, Any]:
    """A numbered source with everything needed to show it and to cite it."""
    return source.source_json() | {
        "start": source.start,
        "end": source.end,
        "page": source.page,
        "link": source.link,
        "media_url": media_url(source.media_id, source.modality, source.start, source.page),
    }


def sse(event: str, data: Any) -> str:
    import json

    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


# -- requests ------------------------------------------------------------------------------------


class AskBody(BaseModel):
    question: str = Field(description="What to ask about the library")
    sources: int | None = Field(None, ge=1, le=100, description="Passages to retrieve")
    extractive: bool = Field(False, description="Answer with the best passages, no LLM")


class IngestBody(BaseModel):
    prune: bool = Field(False, description="Forget files deleted from the library folders")
    bulk: bool = Field(
        False,
        description="A Milvus server imports the rows from Parquet files, as `mmrag ingest "
        "--bulk` (refused on Milvus Lite)",
    )
    backend: IngestBackend = Field(
        IngestBackend.LOCAL,
        description="ray: decode and embed on the Ray cluster of the server's settings "
        "(ray_address; else a local one for the run), as `mmrag ingest --backend ray`",
    )


def _error(
    status: int, line: str, headers: dict[str, str] | None = None, **fields: Any
) -> JSONResponse:
    return JSONResponse({"error": line, **fields}, status_code=status, headers=headers)


def create_app(
    settings: Settings,
    models: Models | None = None,
    on_ready: Callable[[Service], None] | None = None,
) -> FastAPI:
    """The API over the store `settings` names; `models` (already built) are used when given,
    else built at startup. `on_ready` runs once the models are loaded."""
    service = Service(settings, models)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        await run_in_threadpool(service.start)
        if on_ready is not None:
            on_ready(service)
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="mmrag",
        summary="Search, ask and play a media library indexed in Milvus",
        lifespan=lifespan,
    )
    app.state.service = service
    _handlers(app)
    if settings.api_key:
        app.add_middleware(_KeyCheck, key=settings.api_key)
    if settings.serve_host in LOOPBACK:  # no DNS-rebinding page reaches a local server
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK, "[::1]"])

    # the web page (mmrag/web/: plain HTML, CSS and JS modules) at /, its files at /static
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    web = Path(__file__).parent / "web"
    app.mount("/static", StaticFiles(directory=web), name="static")
    csp = (  # only its own scripts; only this server's media (and a dropped example, blob:)
        "default-src 'self'; img-src 'self' blob:; media-src 'self'; frame-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(web / "index.html", headers={"Content-Security-Policy": csp})

    @app.get("/api/health", summary="Alive, and which store")
    def health() -> dict[str, Any]:
        return {"ok": True, "store_id": service.catalog.store_id}

    @app.get("/api/status", summary="Counts, failures, warnings, models, this server")
    def status() -> dict[str, Any]:
        return service.status()

    @app.get("/api/search", summary="Search by text")
    def search_text(
        q: Annotated[str | None, Query(description="What to look for")] = None,
        options: Options = Depends(search_options),  # noqa: B008 - FastAPI's way
    ) -> dict[str, Any]:
        if q is None or not q.strip():
            raise BadField("q", "is empty: give some words to look for")
        service.count("search")
        t0 = time.perf_counter()
        hits = service.find(QueryKind.TEXT, q, options)
        return _found({"kind": "text", "q": q}, options, hits, t0, service.search_notes())

    @app.post("/api/search", summary="Search by an example photo, sound or clip (and words)")
    async def search_file(
        request: Request,
        q: Annotated[str | None, Query(description="Words to fuse with the example")] = None,
        kind: Annotated[
            str | None, Query(description="image, audio or video: refuse a file of another kind")
        ] = None,
        options: Options = Depends(search_options),  # noqa: B008 - FastAPI's way
    ) -> Any:
        """multipart/form-data with the example in `file` (its kind is read from its bytes)
        and optionally words in `q` (form field or query string)."""
        if kind is not None:
            _one_of("kind", kind, tuple(str(k) for k in QUERY_MEDIA.values()))
        service.count("search")
        t0 = time.perf_counter()
        upload = await _receive(request, settings.max_upload_mb)
        try:
            words = upload.q if upload.q is not None else q
            if words is not None and not words.strip():
                raise BadField("q", "is empty: give some words, or leave it out")
            found = upload.kind()
            if kind is not None and found != kind:
                raise BadField("file", f"{upload.name}: {_a(found)}, not {_a(kind)}")
            hits = await run_in_threadpool(
                service.find, found, upload.path, options, words, "file", upload.name
            )
            echo = {"kind": str(found), "file": upload.name} | ({"q": words} if words else {})
            notes = await run_in_threadpool(service.search_notes)
            return _found(echo, options, hits, t0, notes)
        finally:
            await run_in_threadpool(upload.close)

    @app.post("/api/ask", summary="Answer from the library (server-sent events)")
    def ask(body: AskBody) -> StreamingResponse:
        """Events: `sources` (the numbered passages), `delta`s (the answer as it comes),
        `citations`, `done` (the whole answer, as `mmrag ask --json`), or `error`."""
        from mmrag.app import answer_endpoint
        from mmrag.search import answer as qa

        if not body.question.strip():
            raise BadField("question", "is empty")
        service.count("ask")
        n = body.sources or settings.ask_sources
        options = Options("hybrid", n, None, None)
        hits = service.find(QueryKind.TEXT, body.question, options, field="question")
        endpoint: Any
        if body.extractive:
            endpoint = qa.LLMUnavailable("extractive answer asked for")
        else:
            endpoint = answer_endpoint(settings, os.environ)
        return StreamingResponse(
            _answer_events(body.question, hits, endpoint),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.head("/media/{media_id}", include_in_schema=False)
    @app.get("/media/{media_id}", summary="A file, by media id")
    def media(media_id: str, request: Request) -> Response:
        """The file a hit names (byte ranges for seeking); only files in the catalog, still
        inside the folder they were ingested from."""
        if not http_files.MEDIA_ID.fullmatch(media_id):
            raise HTTPException(404, "no such media")
        for path, root in service.locations(media_id):
            if (opened := http_files.open_inside(path, root)) is not None:
                return _send(opened, request, http_files.content_type(opened))
        raise HTTPException(404, "no such media")

    @app.head("/thumbs/{key}", include_in_schema=False)
    @app.get("/thumbs/{key}", summary="A thumbnail")
    def thumbs(key: str, request: Request) -> Response:
        from mmrag.store.thumbnails import thumbnail_file

        if not http_files.THUMB_KEY.fullmatch(key):
            raise HTTPException(404, "no such thumbnail")
        cache = str(settings.thumbnails)
        found = thumbnail_file(Path(cache), key)
        if found is None and http_files.MEDIA_ID.fullmatch(key):  # a photo's, not made yet
            found = service.photo_thumbnail(key)
        opened = http_files.open_inside(str(found), cache) if found else None
        if opened is None:
            raise HTTPException(404, "no such thumbnail")
        return _send(opened, request, "image/jpeg", {"Cache-Control": "max-age=86400"})

    @app.post("/api/ingest", status_code=202, summary="Ingest the server's library folders")
    def ingest(body: IngestBody | None = None) -> dict[str, Any]:
        roots = service.library()
        if not roots:
            raise HTTPException(
                409, "no library folders: start the server with `mmrag serve --library DIR`"
            )
        body = body or IngestBody()
        if body.bulk:
            from mmrag.store.bulk import LITE_REFUSAL, bulk_writer_missing

            if why := LITE_REFUSAL if settings.is_lite else bulk_writer_missing():
                raise HTTPException(409, why.replace("--bulk", "bulk", 1))
        if body.backend == IngestBackend.RAY:
            from mmrag.ingest.ray_backend import RayUnavailable, require_ray

            try:
                require_ray()
            except RayUnavailable as exc:
                raise HTTPException(409, f"backend ray: {exc}") from exc
        try:
            job = service.jobs.start(  # type: ignore[union-attr]
                roots, prune=body.prune, bulk=body.bulk, backend=body.backend
            )
        except Busy as exc:
            raise HTTPException(409, str(exc)) from exc
        return job.to_json()

    @app.get("/api/ingest", summary="The latest ingest's progress")
    def ingest_latest() -> dict[str, Any]:
        job = service.jobs.latest()  # type: ignore[union-attr]
        return job.to_json() if job else {"state": "idle"}

    @app.get("/api/ingest/{job_id}", summary="An ingest's progress")
    def ingest_job(job_id: int) -> dict[str, Any]:
        job = service.jobs.jobs.get(job_id)  # type: ignore[union-attr]
        if job is None:
            raise HTTPException(404, f"no ingest job {job_id}")
        return job.to_json()

    return app


def _a(kind: str) -> str:
    return {"image": "an image", "audio": "a sound clip", "video": "a video"}.get(kind, kind)


def _found(
    echo: dict, options: Options, hits: list[Hit], t0: float, notes: list[str]
) -> dict[str, Any]:
    return {
        "query": echo | {"mode": options.mode, "limit": options.limit, "page": options.shape.page},
        "hits": [hit_json(h) for h in hits],
        "notes": notes,
        "took_ms": round(1000 * (time.perf_counter() - t0), 1),
    }


def _answer_events(question: str, hits: list[Hit], endpoint: Any) -> Iterator[str]:
    """The answer as server-sent events; the LLM streams in a thread of its own."""
    from mmrag.search import answer as qa

    sources = qa.sources_of(hits)
    yield sse("sources", {"sources": [source_json(s) for s in sources]})
    pieces: queue.Queue[tuple[str, Any]] = queue.Queue()

    def work() -> None:
        try:
            done = qa.answer(question, sources, endpoint, lambda p: pieces.put(("delta", p)))
            pieces.put(("done", done))
        except Exception as exc:
            log.exception("ask failed")
            pieces.put(("error", exc))

    threading.Thread(target=work, name="ask", daemon=True).start()
    while True:
        kind, value = pieces.get()
        if kind == "delta":
            yield sse("delta", {"text": value, "mode": "llm"})
        elif kind == "error":
            yield sse("error", {"error": f"the answer failed: {type(value).__name__}: {value}"})
            return
        else:
            break
    result = value
    if result.mode != "llm":  # nothing was streamed: the extractive answer in one piece
        yield sse("delta", {"text": result.text, "mode": result.mode})
    cited = [
        s.citation_json() | {"media_url": media_url(s.media_id, s.modality, s.start, s.page)}
        for s in result.cited
    ]
    yield sse("citations", {"citations": cited, "dropped": result.dropped})
    yield sse("done", result.to_json())


def _send(
    opened: http_files.Opened, request: Request, kind: str, more: dict[str, str] | None = None
) -> Response:
    """The file, or the byte range asked for (206), or 416; closed once sent."""
    etag = f'"{opened.size:x}-{opened.mtime_ns:x}"'
    modified = formatdate(opened.mtime_ns / 1e9, usegmt=True)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": modified,
        "Content-Type": kind,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(opened.name)}",
        **(more or {}),
    }
    if kind != "application/pdf":  # browsers refuse to show a PDF in a sandbox
        headers["Content-Security-Policy"] = "sandbox"
    asked = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range and if_range not in (etag, modified):
        asked = None  # the file changed since the client's copy: all of it
    try:
        span = http_files.byte_range(asked, opened.size)
    except http_files.Unsatisfiable:
        opened.close()
        return _error(
            416,
            f"range {asked} is outside the file ({opened.size} bytes)",
            headers={"Content-Range": f"bytes */{opened.size}", "Accept-Ranges": "bytes"},
        )
    start, end = span or (0, opened.size)
    if span:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{opened.size}"
    headers["Content-Length"] = str(end - start)
    status = 206 if span else 200
    if request.method == "HEAD":
        opened.close()
        return Response(status_code=status, headers=headers)
    return StreamingResponse(opened.chunks(start, end), status_code=status, headers=headers)


# -- uploads -------------------------------------------------------------------------------------


@dataclass
class _Upload:
    path: Path  # the example, copied to a file of its own
    name: str  # the client's name for it (for messages only)
    q: str | None
    head: bytes

    def kind(self) -> QueryKind:
        """From its bytes, not its name."""
        from mmrag.ingest.detect import UnsupportedContent, detect_kind

        try:
            found = detect_kind(Path(self.name), head=self.head)
        except UnsupportedContent as exc:
            raise BadField("file", f"{self.name}: {exc}") from exc
        if found.media not in QUERY_MEDIA:
            raise BadField(
                "file",
                f"{self.name}: a {found.format} document, not a photo, a sound clip or a video "
                "clip (search words with q)",
            )
        return QUERY_MEDIA[found.media]

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


async def _receive(request: Request, max_mb: float) -> _Upload:
    """The multipart body, counted as it arrives (Content-Length is not trusted): past the
    limit, the rest is read and dropped (up to DRAIN_BYTES) and the answer is 413."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadField("file", "send the example as multipart/form-data, in a field named file")
    limit = int(max_mb * 1_000_000)
    seen = 0

    async def counted() -> Any:
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
        return message

    try:
        form = await Request(request.scope, counted).form(max_files=1, max_fields=8)
    except _TooLarge:
        await _drain(request)
        raise HTTPException(
            413, f"file: the upload is over the {max_mb:g} MB limit (max_upload_mb)"
        ) from None
    except MultiPartException as exc:
        raise BadField("file", f"unreadable multipart body: {exc.message}") from exc
    except ClientDisconnect:
        raise HTTPException(400, "the client went away during the upload") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise BadField("file", "missing: send the example in a multipart field named file")
        q = form.get("q")
        return await run_in_threadpool(_spool, file, q if isinstance(q, str) else None)
    finally:
        await form.close()


def _spool(file: UploadFile, q: str | None) -> _Upload:
    from mmrag.ingest.detect import HEAD_BYTES

    head = file.file.read(HEAD_BYTES)
    file.file.seek(0)
    fd, name = tempfile.mkstemp(prefix="mmrag-query-")
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(file.file, out)
    shown = (file.filename or "upload").replace("\n", " ").replace("\r", " ")[:300]
    return _Upload(Path(name), shown, q, head)


async def _drain(request: Request) -> None:
    """Read what is left of a refused body, so the client gets to read the 413."""
    drained, deadline = 0, time.monotonic() + DRAIN_S
    while drained < DRAIN_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            message = await asyncio.wait_for(request.receive(), timeout=left)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


# -- errors and the key --------------------------------------------------------------------------


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(BadField)
    async def bad_field(_request: Request, exc: BadField) -> JSONResponse:
        return _error(422, str(exc), field=exc.field, message=exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path")]
        field = ".".join(where) or "body"
        message = str(first.get("msg", "invalid"))
        return _error(422, f"{field}: {message}", field=field, message=message)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 413:
            headers["Connection"] = "close"
        return _error(exc.status_code, str(exc.detail), headers or None)

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")


class _KeyCheck:
    """With an API key set, /api, /media and /thumbs need it: `Authorization: Bearer <key>` or
    `X-API-Key: <key>`; a GET of media or a thumbnail may carry it in the `mmrag_key` cookie
    instead (a <video> or <img> sends no headers; SameSite keeps other sites' pages out)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        guarded = scope["type"] == "http" and scope["path"].startswith(GUARDED)
        if guarded and not self._allowed(scope):
            reply = _error(
                401,
                "missing or wrong API key: send Authorization: Bearer <key> or X-API-Key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await reply(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Any) -> bool:
        headers = Request(scope).headers
        given = [headers.get("x-api-key", "")]
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given.append(token.strip())
        if scope["method"] in ("GET", "HEAD") and not scope["path"].startswith("/api"):
            given.append(unquote(Request(scope).cookies.get(KEY_COOKIE, "")))  # URL-encoded
        return any(g and hmac.compare_digest(g.encode(), self.key) for g in given)


# -- `mmrag serve` -------------------------------------------------------------------------------


class ServeError(Exception):
    """`mmrag serve` cannot start; the message says why."""


def serve(settings: Settings, say: Callable[[str], None]) -> None:
    """Run the API until interrupted: the models load first, then the server listens and
    writes its discovery file (removed on exit) so the CLI's search and ask go through it."""
    import socket

    import uvicorn

    from mmrag import client

    found = client.discovery_path(settings.catalog)
    running = client.read_discovery(found)
    if running and client.pid_alive(running.get("pid")) and running.get("pid") != os.getpid():
        raise ServeError(
            f"a server for this store is running already at {running.get('url')} "
            f"(pid {running.get('pid')})"
        )
    host, port = settings.serve_host, settings.serve_port
    if host not in LOOPBACK and not settings.api_key:
        say(
            f"warning: listening on {host} without an API key: anyone who can reach it can read "
            "the library (set MMRAG_API_KEY)"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    url = f"http://{_url_host(host)}:{sock.getsockname()[1]}"

    def ready(service: Service) -> None:
        client.write_discovery(
            found,
            {
                "url": url,
                "pid": os.getpid(),
                "store_id": service.catalog.store_id,
                "catalog": str(settings.catalog),
                "key_required": bool(settings.api_key),
                "fingerprint": client.fingerprint(settings),
                "llm": client.llm_label(settings, os.environ),
                "started_at": time.time(),
            },
        )
        say(f"mmrag serve: {url} (API docs at {url}/docs); Ctrl+C stops it")

    app = create_app(settings, on_ready=ready)
    say("loading the models...")
    # uvicorn stops on SIGINT and SIGTERM, then raises the signal again under the handler it
    # found: a Python one, so this function's cleanup runs before the process ends
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        app.state.service.start()
        config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=3)
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        client.remove_discovery(found, os.getpid())
        sock.close()
        app.state.service.stop()


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
