"""The `mmrag` command line: ingest, search, ask, status, models, eval, duplicates, demo."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from mmrag.client import find_server, llm_label
from mmrag.kinds import IngestBackend, QueryKind
from mmrag.settings import Settings, choices, load_settings

if TYPE_CHECKING:
    from mmrag.app import Models
    from mmrag.client import Server
    from mmrag.search.query import Filters, Near

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn a media library into a searchable Milvus store.",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

DEMO_LIBRARY = Path("data/library")
DEMO_QUERIES = Path("data/eval/demo_queries.txt")


@app.callback()
def _global(
    ctx: typer.Context,
    uri: Annotated[
        str | None, typer.Option("--uri", help="Milvus Lite .db path or server URI")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="Milvus server token")] = None,
    catalog: Annotated[
        Path | None,
        typer.Option("--catalog", help="SQLite catalog path (default: the store's own)"),
    ] = None,
    text_model: Annotated[
        str | None, typer.Option("--text-model", help="HF id or local path")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda")] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", help="Model set: default (public models), offline or multilingual (packs)"
        ),
    ] = None,
) -> None:
    """Settings come from mmrag.toml, then MMRAG_* variables, then these flags."""
    ctx.obj = dict(
        milvus_uri=uri,
        milvus_token=token,
        catalog=catalog,
        text_model=text_model,
        device=device,
        profile=profile,
    )


def _settings(ctx: typer.Context, **more: object) -> Settings:
    try:
        return load_settings(**{**ctx.obj, **{k: v for k, v in more.items() if v is not None}})
    except Exception as exc:
        _fail(f"invalid settings: {exc}")


def _fail(message: str, code: int = 2) -> None:
    """Print `error: <message>` and exit. The message is shown as written: a path, a setting's
    form or an extra's name in brackets ([draft].pdf, [/prefix], [ray]) is not markup."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def _open(settings: Settings, warm_queries: bool = False):
    """Catalog, store and models for one command; closed even on errors."""
    from mmrag.app import Models, open_store
    from mmrag.pipelines.model_resolver import ModelNotAvailable
    from mmrag.store.schema import StoreError

    try:
        models = Models.build(settings)  # loads nothing yet: each model on first use
    except ValueError as exc:
        _fail(f"invalid settings: {exc}")
    if warm_queries:
        models.warm_queries()  # while Milvus Lite starts
    try:
        catalog, store = open_store(settings)
    except (StoreError, OSError, RuntimeError) as exc:
        _fail(str(exc))
    try:
        yield catalog, store, models
    except (ModelNotAvailable, StoreError) as exc:
        _fail(str(exc))
    finally:
        store.close()
        catalog.close()


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        segs = task.fields.get("segments", 0)
        rate = segs / task.elapsed if task.elapsed else 0.0
        return Text(f"{segs} segments {rate:,.1f}/s", style="cyan")


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="Folders or files to ingest")],
    prune: Annotated[
        bool, typer.Option(help="Forget files that were deleted from these folders")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="Retry files that failed before, even if unchanged")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Reader threads")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Embedding batch size")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="The summary as one JSON object on stdout; no progress bar, no table"
        ),
    ] = False,
    strict_models: Annotated[
        bool,
        typer.Option(
            "--strict-models",
            help="A space whose configured model cannot be had is skipped with the reason, "
            "not run on the offline model for it (strict_models)",
        ),
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help="local: reader threads and the models here; ray: decoding and the models on a "
            'Ray cluster, the catalog and writes here (pip install "mmrag\\[ray]")'
        ),
    ] = IngestBackend.LOCAL.value,
    address: Annotated[
        str | None,
        typer.Option(
            help="The Ray cluster to use (ray.init address; default: ray_address, else a local one)"
        ),
    ] = None,
    bulk: Annotated[
        bool,
        typer.Option(
            "--bulk",
            help="A Milvus server imports the rows from Parquet files (bulk_folder, or "
            "bulk_bucket for a server on MinIO/S3; bulk_rows) instead of taking them a batch "
            "at a time; files are done once imported",
        ),
    ] = False,
) -> None:
    """Scan folders, embed what is new or changed, and write it to Milvus.

    A space whose configured model differs from the one it is searched with is switched first,
    as `mmrag reindex` does: search answers from the old model until every stored file is in
    the new collection."""
    settings = _settings(
        ctx,
        read_workers=workers,
        embed_batch_size=batch_size,
        strict_models=strict_models or None,
    )
    _check_backend(backend, address)
    if bulk:
        _check_bulk(settings)
    with _open(settings) as (catalog, store, models):
        for space in models.before_ingest(catalog, store):
            _run_switch(models, catalog, store, space, None, False, quiet or as_json)
        report = _run_ingest(
            models,
            catalog,
            store,
            paths,
            prune,
            retry_failed,
            quiet or as_json,
            backend,
            address,
            bulk,
        )
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        _print_report(report)


def _check_backend(backend: str, address: str | None) -> None:
    """Refuse a backend that cannot run, before the store opens: one line saying why."""
    if backend not in tuple(IngestBackend):
        _fail(f"--backend {backend}: {' or '.join(IngestBackend)}")
    if address and backend != IngestBackend.RAY:
        _fail("--address is a Ray cluster's: use it with --backend ray")
    if backend == IngestBackend.RAY:
        from mmrag.ingest.ray_backend import RayUnavailable, require_ray

        try:
            require_ray()
        except RayUnavailable as exc:
            _fail(str(exc))


def _check_bulk(settings: Settings) -> None:
    """Refuse --bulk where it cannot run, before the store opens: one line saying why."""
    from mmrag.store.bulk import LITE_REFUSAL, bulk_writer_missing

    if settings.is_lite:
        _fail(LITE_REFUSAL)
    if missing := bulk_writer_missing():
        _fail(missing)
    if (bucket := settings.bulk_target()) is not None:
        try:
            bucket.check()
        except OSError as exc:
            _fail(str(exc))


def _run_ingest(
    models: Models,
    catalog,
    store,
    paths,
    prune,
    retry_failed,
    quiet,
    backend: IngestBackend | str = IngestBackend.LOCAL,
    address: str | None = None,
    bulk: bool = False,
):
    """One ingest run with a progress bar, on an open catalog and store."""
    runner = models.runner(
        catalog, store, backend=backend, address=address, bulk=bulk, retry_failed=retry_failed
    )
    progress = Progress(
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}", style="dim"),  # a long file: how far it has got
        console=err,
        disable=quiet,
    )
    task = progress.add_task("ingest", total=None, segments=0, note="")
    seg_total = 0

    def tick(event: str, n: int) -> None:
        nonlocal seg_total
        if event == "file":
            progress.advance(task, n)
        else:
            seg_total += n
            progress.update(task, segments=seg_total)

    with progress:
        report = runner.run(
            paths,
            prune=prune,
            on_start=lambda total: progress.update(task, total=total),
            progress=tick,
            on_wait=lambda message: err.print(f"[yellow]{message}[/yellow]", highlight=False),
            on_note=lambda message: progress.update(task, note=escape(message[-60:])),
        )
    models.after_ingest(catalog, store)
    return report


@app.command()
def reindex(
    ctx: typer.Context,
    space: Annotated[
        str | None,
        typer.Option(
            "--space", help="The space to switch (default: every space whose model changed)"
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The model to switch to (default: a switch in progress, else the configured "
            "one); the served model cancels a switch in progress",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per switch on stdout")
    ] = False,
) -> None:
    """Switch a space to another model without downtime: the new model's collection is filled
    with every stored file beside the old one while search keeps answering from the old one,
    then search cuts over and the old collection is dropped. Run it again after a crash: it
    resumes. `mmrag ingest` does the same for a space whose configured model changed."""
    from mmrag.registry import SPACES

    if model and not space:
        _fail("--model needs --space: which space's model it is")
    settings = _settings(ctx)
    with _open(settings) as (catalog, store, models):
        if space is not None and space not in models.spaces:
            _fail(f"--space {space}: not a configured space ({', '.join(models.spaces)} are)")
        wanted = models.before_ingest(catalog, store)
        todo = [space] if space else wanted
        if not space:  # switches in progress resume too
            todo += [n for n in catalog.served() if n in models.spaces and n not in todo]
        done = [_run_switch(models, catalog, store, n, model, True, quiet or as_json) for n in todo]
    for item in filter(None, done):
        if as_json:
            print(json.dumps(item, ensure_ascii=False))
        if item["to"] != models.settings.model_for(item["space"]):
            err.print(
                f"[yellow]note:[/yellow] {item['space']} serves {escape(item['to'])} now, but "
                f"{SPACES[item['space']].setting} is still "
                f"{escape(models.settings.model_for(item['space']))!r} in the settings: set it, "
                "or the next ingest switches back",
                highlight=False,
            )
    if not any(done) and not as_json:
        err.print("nothing to switch: every space serves its model", highlight=False)


def _run_switch(models, catalog, store, space, model, resume, quiet) -> dict | None:
    """One space's switch with a progress bar; its summary (None: nothing to switch)."""
    from mmrag.app import served_by
    from mmrag.ingest.reindex import cancel

    if model is not None and model == served_by(models.settings, catalog, store, space)[0]:
        if gone := cancel(catalog, store, space):
            err.print(f"{space}: the switch to {escape(gone)} is cancelled", highlight=False)
        return None
    progress = Progress(
        TextColumn(f"switch {escape(space)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    )
    task = progress.add_task("switch", total=None)

    def tick(event: str, n: int) -> None:
        if event == "file":
            progress.advance(task, n)

    try:
        with progress:
            report = models.switch(catalog, store, space, model, resume, tick)
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc))
    if report is None:
        return None
    models.after_ingest(catalog, store)
    if not quiet:
        err.print(
            f"{space}: {escape(report.source_model)} -> {escape(report.target_model)}: "
            f"{report.filled} file(s) embedded, {report.already} already done, "
            f"{report.seconds:.1f} s; search uses the new model",
            highlight=False,
        )
    for display in report.missing:
        err.print(f"[yellow]gone, left out:[/yellow] {escape(display)}", highlight=False)
    for display, reason in report.failed:
        err.print(f"[yellow]failed:[/yellow] {escape(display)}: {escape(reason)}", highlight=False)
    return report.to_json()


def _print_report(report) -> None:
    t = Table(title="ingest summary", title_justify="left", show_header=False)
    rate = report.segments / report.seconds if report.seconds else 0
    for label, value in [
        ("files scanned", report.scanned),
        ("new", report.new),
        ("changed (re-embedded)", report.changed),
        ("renamed/copied (vectors reused)", report.reused),
        ("unchanged (skipped)", report.unchanged),
        ("added to a space they lacked (others kept)", report.filled),
        ("failed", len(report.failed)),
        ("indexed with a warning (see below)", len(report.warnings)),
        ("failed earlier, unchanged", report.failed_before),
        *[(f"{m} files skipped (see below)", n) for m, n in sorted(report.skipped.items())],
        ("deleted files pruned", report.pruned),
        ("content removed from the store", report.removed_media),
        ("segments written", report.segments),
        ("time", f"{report.seconds:.1f} s ({rate:,.1f} segments/s)"),
    ]:
        t.add_row(label, str(value))
    err.print(t)
    for line in report.models:  # once per run: a space on its fallback model, or skipped
        err.print(f"[yellow]models:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    for modality, reason in sorted(report.skip_reasons.items()):
        err.print(f"[yellow]{modality} files skipped:[/yellow] {reason}", highlight=False)
    for display, reason in report.failed:
        err.print(f"[yellow]failed:[/yellow] {escape(display)}: {escape(reason)}", highlight=False)
    for display, reason in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(display)}: {escape(reason)}", highlight=False)


MAX_LIMIT = 1000


def _parse_date(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{flag} expects a date like 2024-05-31 or 2024-05-31T14:00, got {value!r}")


def _check_ranges(filters: Filters) -> None:
    """An empty date range matches nothing: say so, with the flags, rather than print no
    results."""
    from mmrag.search.query import EmptyRange

    try:
        filters.check_ranges()
    except EmptyRange as exc:
        first, last = (f"--{name.replace('_', '-')}" for name in (exc.first, exc.last))
        _fail(
            f"{first} {exc.start.isoformat()} is not before {last} {exc.end.isoformat()}: "
            "nothing can match"
        )


def _parse_near(value: str | None) -> Near | None:
    import math

    from mmrag.search.query import Near

    if value is None:
        return None
    usage = f"--near expects LAT,LON or LAT,LON,KM (e.g. 48.8584,2.2945,2), got {value!r}"
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        _fail(usage)
    if len(parts) not in (2, 3):
        _fail(usage)
    if not all(math.isfinite(p) for p in parts):
        _fail(f"--near takes finite numbers, got {value!r}")
    near = Near(*parts)
    if not -90 <= near.lat <= 90:
        _fail(f"--near: latitude must be from -90 to 90, got {value!r}")
    if not -180 <= near.lon <= 180:
        _fail(f"--near: longitude must be from -180 to 180, got {value!r}")
    if near.km <= 0:
        _fail(f"--near: KM must be above 0, got {value!r}")
    return near


def _choose(flag: str, value: str, choices: tuple[str, ...]) -> None:
    """An option with a fixed set of values: one line listing them, not a validation dump."""
    allowed = [str(c) for c in choices]
    if value not in allowed:
        _fail(f"{flag} must be one of {', '.join(allowed)} (got {value!r})")


def _query_file(flag: str, path: Path) -> None:
    """An example file is checked before the store opens or a model loads."""
    if path.is_dir():
        _fail(f"{flag} {path}: is a folder, not a file")
    if not path.is_file():
        _fail(f"{flag} {path}: no such file")


def _naming(what: str, exc: BaseException) -> str:
    """The error about a query file, naming the file once (most decoders already do)."""
    message = str(exc)
    if any(message.startswith(f"{name}: ") for name in (what, str(Path(what)))):
        return message
    return f"{what}: {message}"


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Argument(help="What to look for")] = None,
    mode: Annotated[
        str, typer.Option(help="hybrid (BM25 + dense fused), dense or bm25")
    ] = "hybrid",
    fusion: Annotated[
        str | None, typer.Option(help="hybrid fusion: weighted, minmax or rrf")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-k", help="Hits, 1 to 1000")] = 10,
    modality: Annotated[str | None, typer.Option(help="Only this modality, e.g. document")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Only files matching this glob")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only files modified on/after this date")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only files modified before this date")] = None,
    taken_since: Annotated[
        str | None, typer.Option(help="Only files taken on/after this date (EXIF, video tags)")
    ] = None,
    taken_until: Annotated[
        str | None, typer.Option(help="Only files taken before this date (EXIF, video tags)")
    ] = None,
    camera: Annotated[
        str | None, typer.Option(help="Only files from a camera whose name contains this (EXIF)")
    ] = None,
    near: Annotated[
        str | None,
        typer.Option(help="Only files taken within KM of a place (GPS): LAT,LON[,KM=5]"),
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Find photos like this one (image-to-image)")
    ] = None,
    audio: Annotated[
        Path | None,
        typer.Option("--audio", help="Find moments that sound like this clip (audio-to-audio)"),
    ] = None,
    video: Annotated[
        Path | None,
        typer.Option("--video", help="Find the video and moment this clip comes from"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
    queries: Annotated[
        Path | None,
        typer.Option(
            help='JSONL: one {"id", and "text", "image", "audio" or "video"} object per line',
        ),
    ] = None,
    group: Annotated[
        bool, typer.Option("--group", help="One hit per file, with its best 3 moments")
    ] = False,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Drop hits scoring below this")
    ] = None,
    cutoff: Annotated[
        str, typer.Option(help="auto: stop where scores fall off a cliff; off: no cut")
    ] = "off",
    sort: Annotated[
        str, typer.Option(help="relevance, or date (taken, else modified; newest first)")
    ] = "relevance",
    page: Annotated[int, typer.Option(help="Page of results (1-based), --limit per page")] = 1,
    rerank: Annotated[
        str | None,
        typer.Option("--rerank", help="Cross-encoder (HF id or path) re-scoring text hits"),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Do not go through a running `mmrag serve`")
    ] = False,
) -> None:
    """Search by text, an example image or an audio clip; hits name the file and where in it.
    A running `mmrag serve` for the same store answers it, models already loaded."""
    import math

    from mmrag.kinds import Modality
    from mmrag.pipelines.base import MediaError
    from mmrag.pipelines.model_resolver import ModelNotAvailable
    from mmrag.search.query import CUTOFFS, MAX_DEPTH, MODES, SORTS, Filters, Shape
    from mmrag.search.render import dumps, hits_json, print_hits

    _choose("--mode", mode, MODES)
    if fusion is not None:
        _choose("--fusion", fusion, choices("hybrid_fusion"))
    if modality is not None:
        _choose("--modality", modality, tuple(Modality))
    if not 1 <= limit <= MAX_LIMIT:
        _fail(f"--limit must be from 1 to {MAX_LIMIT}, got {limit}")
    _choose("--cutoff", cutoff, CUTOFFS)
    _choose("--sort", sort, SORTS)
    if page < 1:
        _fail(f"--page must be 1 or more, got {page}")
    if page * limit > MAX_DEPTH:
        _fail(f"--page {page} with --limit {limit} goes past hit {MAX_DEPTH}, the deepest")
    if min_score is not None and not math.isfinite(min_score):
        _fail(f"--min-score must be a finite number, got {min_score}")
    if rerank is not None and not rerank.strip():
        _fail("--rerank is empty: give a model id or path, or leave the option out")
    shape = Shape(group, min_score, cutoff, sort, page)
    examples = [x for x in (image, audio, video) if x is not None]
    if len(examples) > 1 or (queries is not None) == (query is not None or bool(examples)):
        _fail(
            "give a QUERY, one example (--image, --audio or --video PATH), a QUERY with one "
            "example, or --queries FILE"
        )
    if query is not None and not query.strip():
        _fail("QUERY is empty")
    for flag, text in (("--path", path), ("--camera", camera)):
        if text is not None and not text.strip():
            _fail(f"{flag} is empty: give some text, or leave the option out")
    for flag, given in (("--image", image), ("--audio", audio), ("--video", video)):
        if given is not None:
            _query_file(flag, given)
    filters = Filters(
        modality,
        path,
        _parse_date(since, "--since"),
        _parse_date(until, "--until"),
        _parse_date(taken_since, "--taken-since"),
        _parse_date(taken_until, "--taken-until"),
        camera,
        _parse_near(near),
    )
    _check_ranges(filters)
    if queries:
        batch = _read_queries(queries)
    else:
        batch = [{"id": None, "text": query}]
        for kind, given in (("image", image), ("audio", audio), ("video", video)):
            if given is not None:
                batch = [{"id": None, kind: str(given), "text": query}]
    settings = _settings(ctx, hybrid_fusion=fusion, rerank_model=rerank)
    if not queries and not local and (server := find_server(settings)) is not None:
        options = dict(mode=mode, limit=limit, page=page, group=group, min_score=min_score)
        options |= dict(cutoff=cutoff, sort=sort, modality=modality, path=path, since=since)
        options |= dict(until=until, taken_since=taken_since, taken_until=taken_until)
        _search_through(server, batch[0], options | dict(camera=camera, near=near), as_json)
        return
    with _open(settings, warm_queries=True) as (catalog, store, models):
        searcher = models.searcher(catalog, store)
        for item in batch:
            kind = _query_kind(item)
            value = item[kind] if kind == QueryKind.TEXT else Path(item[kind])
            try:
                hits = searcher.find(
                    kind,
                    value,
                    mode,  # type: ignore[arg-type]
                    limit,
                    filters,
                    shape,
                    text=item.get("text") if kind != QueryKind.TEXT else None,
                )
            except (MediaError, ModelNotAvailable, ValueError, OSError) as exc:
                # a text query is not named again (the line's id says which one it was)
                message = str(exc) if kind == QueryKind.TEXT else _naming(item[kind], exc)
                if not queries:
                    _fail(message)
                print(dumps({"id": item["id"], "error": message, "hits": []}), flush=True)
                continue
            label = item["text"] if kind == "text" else f"{kind} {item[kind]}"
            if kind != QueryKind.TEXT and item.get("text"):
                label += f" + {item['text']!r}"
            if queries:
                print(dumps({"id": item["id"], "hits": hits_json(hits)}), flush=True)
            elif as_json:
                print(dumps(hits_json(hits)))
            else:
                print_hits(out, label, hits, mode if kind == "text" else kind)
        for note in searcher.notes:  # e.g. a server without BM25: searched densely
            err.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)


def _search_through(server: Server, item: dict, options: dict, as_json: bool) -> None:
    """One search answered by `mmrag serve`, printed as a local one is."""
    from mmrag.client import ServerError, hits_from_json
    from mmrag.search.render import dumps, hits_json, print_hits

    kind, words = _query_kind(item), item.get("text")
    try:
        if kind == QueryKind.TEXT:
            data = server.search({"q": words, **options})
        else:  # an example, with its words if any (the server fuses them as find(text=) does)
            data = server.search({"kind": kind, "q": words, **options}, Path(item[kind]))
    except ServerError as exc:
        _fail(str(exc) if kind == QueryKind.TEXT else _naming(item[kind], exc))
    except OSError as exc:
        _fail(f"mmrag serve at {server.url} stopped answering ({exc}); --local searches here")
    hits = hits_from_json(data["hits"])
    if as_json:
        print(dumps(hits_json(hits)))
    else:
        label = words if kind == "text" else f"{kind} {item[kind]}"
        if kind != QueryKind.TEXT and words:
            label += f" + {words!r}"
        print_hits(out, label, hits, options["mode"] if kind == "text" else kind)
    for note in data.get("notes", []):  # as a local search says them (a stale snapshot...)
        err.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)


def _query_kind(item: dict) -> QueryKind:
    """An item's example kind when it has an example (its text, if any, goes with it), else
    text."""
    return next((k for k in QueryKind if k != QueryKind.TEXT and item.get(k)), QueryKind.TEXT)


def _read_queries(path: Path) -> list[dict]:
    """The JSONL queries file; a byte order mark (as some Windows editors write) is skipped."""
    if path.is_dir():
        _fail(f"--queries {path}: is a folder, not a file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError as exc:
        _fail(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)")
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            _fail(f"{path}:{n}: not JSON ({exc})")
        if (
            not isinstance(item, dict)
            or "id" not in item
            or not any(isinstance(item.get(k), str) for k in QueryKind)
        ):
            kinds = ", ".join(f'"{k}"' for k in QueryKind)
            _fail(f'{path}:{n}: each line needs "id" and one of {kinds} as a string')
        given = [f'"{k}"' for k in QueryKind if k != QueryKind.TEXT and item.get(k) is not None]
        if len(given) > 1:
            kinds = ", ".join(f'"{k}"' for k in QueryKind if k != QueryKind.TEXT)
            both = ", ".join(given[:-1]) + " and " + given[-1]
            _fail(f'{path}:{n}: give one example ({kinds}), not {both}; "text" may go with it')
        if item.get("text") is not None and not isinstance(item["text"], str):
            _fail(f'{path}:{n}: "text" must be a string')
        items.append(item)
    return items


@app.command()
def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What is in the store: counts per space and modality, and every failure with its reason."""
    from mmrag.app import library_status

    settings = _settings(ctx)
    with _open(settings) as (catalog, store, _):
        data = library_status(settings, catalog, store)
        spaces = data["spaces"]
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    c = data["files"]
    out.print(f"Milvus: {data['milvus']}   catalog: {data['catalog']}")
    out.print(
        f"files: {c['paths']} indexed, {c['failed']} failed; distinct contents: {c['media']} "
        f"({c['pending']} pending); segments: {c['segments']}"
    )
    t = Table("space (collection)", "rows", "by modality", title="spaces", title_justify="left")
    for name, s in spaces.items():
        t.add_row(name, str(s["rows"]), ", ".join(f"{k}: {v}" for k, v in s["by_modality"].items()))
    out.print(t)
    if data["ocr_pages"]:
        out.print(f"scanned pages read by OCR: {data['ocr_pages']}")
    for modality, n in data["facts_by_modality"].items():
        if n["taken_at"] or n["camera"] or n["gps"]:
            out.print(
                f"{modality}: {n['media']} contents, {n['taken_at']} with a date taken, "
                f"{n['camera']} with a camera, {n['gps']} with GPS"
            )
    for f in data["failures"]:
        out.print(
            f"[yellow]failed:[/yellow] {escape(f['path'])}: {escape(f['reason'])}", highlight=False
        )
    for w in data["warnings"]:
        out.print(
            f"[yellow]warning:[/yellow] {escape(w['path'])}: {escape(w['reason'])}", highlight=False
        )
    for w in data["switches"]:
        out.print(
            f"[yellow]switching:[/yellow] {w['space']}: {escape(w['from'])} -> "
            f"{escape(w['to'])}: {w['done']}/{w['total']} contents; search answers from "
            f"{escape(w['from'])} until done (`mmrag reindex` resumes it)",
            highlight=False,
        )
    for name, m in data["served"].items():
        if not any(w["space"] == name for w in data["switches"]):
            out.print(
                f"[yellow]model changed:[/yellow] {name}: searched with {escape(m['model'])}, "
                f"configured {escape(m['configured'])}: `mmrag reindex` or the next ingest "
                "switches it",
                highlight=False,
            )
    for note in data.get("search_notes", []):
        out.print(f"[yellow]search:[/yellow] {escape(note)}", highlight=False)
    for space, f in data.get("fallbacks", {}).items():
        out.print(
            f"[yellow]on a fallback:[/yellow] {space}: {f['contents']} file(s) embedded with "
            f"{escape(f['fallback'])}, not {escape(f['configured'])} (it could not be had); the "
            f"next ingest where it can be had embeds them with it",
            highlight=False,
        )


@app.command()
def migrate(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Milvus server URI, e.g. http://host:19530")],
    token: Annotated[
        str | None, typer.Option("--token", help="The server's token (user:password)")
    ] = None,
    batch: Annotated[int, typer.Option(help="Rows per read and upsert, 1 to 16384")] = 1000,
) -> None:
    """Copy this store to a Milvus server: every collection with its vectors (nothing is
    embedded again), the catalog and thumbnails. Re-run to finish an interrupted one."""
    from filelock import FileLock, Timeout

    from mmrag.ingest.runner import ingest_lock_path
    from mmrag.settings import is_server_uri
    from mmrag.store.migrate import copy_catalog, copy_collections, copy_thumbnails
    from mmrag.store.milvus import MilvusStore
    from mmrag.store.schema import StoreError

    if not is_server_uri(to):
        _fail(f"--to must be a Milvus server URI such as http://host:19530, got {to!r}")
    if not 1 <= batch <= 16384:
        _fail(f"--batch must be from 1 to 16384, got {batch}")
    settings = _settings(ctx)
    there = _settings(ctx, milvus_uri=to, milvus_token=token)
    if there.milvus_uri.rstrip("/") == settings.milvus_uri.rstrip("/"):
        _fail(f"--to {to} is the store in use already; nothing to migrate")
    lock = FileLock(str(ingest_lock_path(settings.milvus_uri, settings.catalog)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _fail("an ingest of this store is running: migrate when it has finished")

    def progress(name: str, copied: int, total: int) -> None:
        if copied == 0 or copied == total or copied % (20 * batch) == 0:
            err.print(f"{escape(name)}: {copied}/{total} rows", highlight=False)

    try:
        with _open(settings) as (catalog, source, _):
            try:
                target = MilvusStore(
                    there.milvus_uri, there.milvus_token, there.collection_prefix, there.index_type
                )
            except StoreError as exc:
                _fail(str(exc))
            try:
                copied = copy_collections(source, target, catalog.store_id, batch, progress)
                notes = target.notes()
            except StoreError as exc:
                _fail(str(exc))
            finally:
                target.close()
            # after the rows: a catalog never names rows its store lacks
            try:
                moved_catalog = copy_catalog(catalog, there.catalog)
            except StoreError as exc:
                _fail(str(exc))
            thumbs = copy_thumbnails(settings.thumbnails, there.thumbnails)
    finally:
        lock.release()
    t = Table("collection", "source rows", "copied", "server rows", "BM25", "seconds")
    for c in copied:
        rows = str(c.target_rows) if c.ok else f"[red]{c.target_rows}[/red]"
        bm25 = "yes" if c.full_text else "no (dense)"
        t.add_row(c.name, str(c.source_rows), str(c.copied), rows, bm25, f"{c.seconds:.1f}")
    out.print(t)
    for note in notes:
        out.print(f"[yellow]search:[/yellow] {escape(note)}", highlight=False)
    if bad := [c.name for c in copied if not c.ok]:
        _fail(f"row counts differ for {', '.join(bad)}: run `mmrag migrate` again", code=1)
    where = "copied to" if moved_catalog else "kept at"
    out.print(
        f"migrated {len(copied)} collections ({sum(c.copied for c in copied)} rows) to {to}; "
        f"catalog {where} {there.catalog}, {thumbs} thumbnails in {there.thumbnails}",
        highlight=False,
    )
    out.print(
        f"to use it: set MMRAG_MILVUS_URI={to}"
        + (" and MMRAG_MILVUS_TOKEN" if there.milvus_token else "")
        + f' (or milvus_uri = "{to}" in mmrag.toml); the catalog and thumbnails above go with '
        "it, so nothing is embedded again. The old store is left as it was.",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    candidates: Annotated[
        bool,
        typer.Option(
            "--candidates",
            help="List sensible models per space and language (public ones and offline packs), "
            "marking those that can be loaded here now (nothing is downloaded)",
        ),
    ] = False,
) -> None:
    """Each space's model: where it came from, languages, dimension, max tokens, parameters,
    memory."""
    from mmrag.pipelines.candidates import languages
    from mmrag.registry import SPACES

    settings = _settings(ctx)
    if candidates:
        _print_candidates(settings, as_json)
        return
    rows = [_model_row(spec, settings) for spec in SPACES.values()]
    rows.append(_speech_row(settings))
    for r in rows:  # where known
        if r.get("name") and (spoken := languages(r["space"], r["name"])):
            r["languages"] = spoken
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    out.print(f"profile: {settings.profile}")
    t = Table(
        "space", "model", "source", "languages", "dim", "max tokens", "parameters", "memory",
        "device",
    )  # fmt: skip
    for r in rows:
        if "error" in r:
            t.add_row(r["space"], r["name"], f"[red]{escape(r['error'])}[/red]")
        elif "off" in r:
            t.add_row(r["space"], "-", r["off"])
        else:
            t.add_row(
                r["space"],
                f"{r['name']} (fallback for {r['fallback_for']})"
                if r.get("fallback_for")
                else r["name"],
                r["source"],
                r.get("languages") or "-",
                str(r.get("dim") or "-"),
                str(r.get("max_tokens") or "-"),
                f"{r['parameters'] / 1e6:.1f} M" if r.get("parameters") else "-",
                f"{r['memory_mb']} MB" if r.get("memory_mb") else "-",
                str(r.get("device", "")),
            )
    out.print(t)
    for r in rows:
        if r.get("fallback_for"):
            out.print(
                f"[yellow]on a fallback:[/yellow] {r['space']} runs on {escape(r['name'])}: "
                f"{escape(r['reason'])}",
                highlight=False,
                soft_wrap=True,
            )


def _print_candidates(settings: Settings, as_json: bool) -> None:
    """`models --candidates`: the table in pipelines/candidates.py, per space, each row
    looked up here (downloads off) and marked when it is the configured model."""
    from mmrag.pipelines.candidates import candidates, locate
    from mmrag.registry import SPACES, locate_speech

    rows = []
    for space in [*SPACES, "speech"]:
        configured = settings.model_for(space)
        find = SPACES[space].locate if space in SPACES else locate_speech
        for c in candidates(space):
            here, where = locate(find, c.model)
            rows.append(
                {
                    "space": space,
                    "model": c.model,
                    "languages": c.languages,
                    "dim": c.dim,
                    "pack": c.pack,
                    "note": c.note,
                    "configured": c.model == configured,
                    "loadable": here,
                    "where": where,
                }
            )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table("space", "model (* configured)", "languages", "dim", "here now", "offline pack")
    for column in t.columns[1:]:
        column.overflow = "fold"  # whole names, wrapped, never cut
    for r in rows:
        t.add_row(
            r["space"],
            escape(r["model"]) + (" *" if r["configured"] else ""),
            r["languages"],
            str(r["dim"] or "-"),
            "[green]yes[/green]" if r["loadable"] else "no",
            escape(r["pack"]) or "-",
        )
    out.print(t)
    out.print("here now: loads without a download (from where: --json); a pack: pip install it")


def _model_row(spec, settings: Settings) -> dict:
    """Load one space's model and describe it; a model that cannot be had says why."""
    from mmrag.pipelines.model_resolver import ModelNotAvailable

    name = spec.model(settings)
    if not name:
        return {"space": spec.name, "name": "", "off": f"off ({spec.setting} is empty)"}
    try:
        info = spec.build(settings, name).info()
    except ModelNotAvailable as exc:
        return _fallback_row(
            spec.name, name, exc, settings, lambda m: spec.build(settings, m).info()
        )
    return {"space": spec.name, **info}


def _fallback_row(space: str, name: str, why: Exception, settings: Settings, describe) -> dict:
    """A model that cannot be had: its fallback's row where the space has one (and
    strict_models is off), saying for which and why; else the reason."""
    from mmrag.app import fallback_for
    from mmrag.pipelines.base import one_line
    from mmrag.pipelines.model_resolver import ModelNotAvailable

    instead = fallback_for(space, name)
    if instead and not settings.strict_models:
        try:
            info = describe(instead)
        except ModelNotAvailable:
            pass
        else:
            return {"space": space, **info, "fallback_for": name, "reason": one_line(why)}
    strict = " (strict_models: no fallback)" if instead and settings.strict_models else ""
    return {"space": space, "name": name, "error": f"{why}{strict}"}


def _speech_row(settings: Settings) -> dict:
    """The transcriber (not a space: its segments go to `text`)."""
    from mmrag.pipelines.audio.spaces import Speech
    from mmrag.pipelines.model_resolver import ModelNotAvailable

    name = settings.speech_model
    if not name:
        return {"space": "speech", "name": "", "off": "off (speech_model is empty)"}

    def describe(model: str) -> dict:
        transcriber = Speech(model, settings.device, settings.speech_language).encoder
        resolved = getattr(transcriber, "resolved", None)
        return {
            "name": transcriber.name,
            "source": resolved.source if resolved else "OpenAI API",
            "path": str(resolved.path) if resolved else "",
            "device": f"{getattr(transcriber, 'device', 'api')} "
            f"{getattr(transcriber, 'compute_type', '')}".strip(),
        }

    try:
        return {"space": "speech", **describe(name)}
    except ModelNotAvailable as exc:
        return _fallback_row("speech", name, exc, settings, describe)


@app.command("eval")
def eval_(
    ctx: typer.Context,
    library: Annotated[Path, typer.Option(help="The library folder to sample and ingest")],
    queries: Annotated[
        Path | None, typer.Option(help='JSONL: one {"id", "text"} object per line')
    ] = None,
    qrels: Annotated[
        Path | None,
        typer.Option(help='Judgements: TREC qrels (qid 0 path grade) or JSONL {"id", "path"}'),
    ] = None,
    models_: Annotated[
        str | None,
        typer.Option("--models", help="Text models, comma-separated (default: the configured one)"),
    ] = None,
    chunk_tokens: Annotated[
        str | None,
        typer.Option(help="Chunk sizes to compare, comma-separated (auto: the model's max)"),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Ingest N files of the library (every judged file among them)"),
    ] = None,
    self_queries: Annotated[
        bool,
        typer.Option(
            "--self",
            help="No labels: queries from the library (document titles, altered copies of "
            "photos, transcript lines of recordings)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The results as one JSON object")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of quality against memory per model")
    ] = None,
    tune_fusion: Annotated[
        bool,
        typer.Option(
            "--tune-fusion/--no-tune-fusion",
            help="Score hybrid under each fusion setting too (queries only) and name the best",
        ),
    ] = True,
) -> None:
    """Compare text models on your own labelled queries: each ingests the library into temporary
    collections (removed afterwards), then BM25, dense and hybrid search are scored, and hybrid
    again under each fusion setting (dense_weight 0.3-0.9, rrf) to name the best per model."""
    import shutil
    import tempfile

    from mmrag import eval_report, model_eval
    from mmrag.search.evaluate import EvalInputError, load_qrels, load_queries

    if not library.is_dir():
        _fail(f"--library {library}: not a folder")
    if self_queries and (queries or qrels):
        _fail("give --queries and --qrels, or --self, not both")
    if not self_queries and not (queries and qrels):
        _fail("--queries and --qrels are both needed (or --self to build queries from the library)")
    if plot is not None:
        if why := eval_report.plot_available():
            _fail(why)
        if not plot.parent.is_dir():
            _fail(f"--plot {plot}: folder {plot.parent} does not exist")
    settings = _settings(ctx)
    candidates = _eval_candidates(settings, models_, chunk_tokens)
    files = model_eval.library_files(library)
    if not files:
        _fail(f"--library {library}: no files")
    if self_queries:
        chosen = model_eval.choose_files(files, set(), sample)
        photo_dir = None  # the photos' altered copies, outside the library; gone afterwards
        if settings.image_model:
            photo_dir = Path(tempfile.mkdtemp(prefix="mmrag-eval-queries-"))
            ctx.call_on_close(lambda: shutil.rmtree(photo_dir, ignore_errors=True))
        speech = bool(settings.speech_model)
        labels = model_eval.self_labels(library, chosen, photo_dir=photo_dir, recordings=speech)
        if not labels.queries and not labels.recordings:
            _fail(f"--self: no document, photo or recording in {library} gave a query")
        notes: list[str] = []  # what --self built is said once the first model's store is ingested
    else:
        try:
            given = model_eval.Labels(load_queries(queries), load_qrels(qrels))  # type: ignore[arg-type]
        except EvalInputError as exc:
            _fail(str(exc))
        labels, notes = model_eval.judged_files(given, files, library)
        if not any(q["id"] in labels.qrels for q in labels.queries):
            _fail(f"{qrels}: judges none of the queries in {queries}")
        judged = {doc for grades in labels.qrels.values() for doc in grades}
        chosen = model_eval.choose_files(files, judged, sample)
        if sample is not None and len(chosen) > sample:
            notes.append(f"--sample {sample}: all {len(chosen)} judged files are ingested")
    for line in notes:
        err.print(f"[yellow]note:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    report = model_eval.run_eval(
        settings,
        candidates,
        library,
        labels,
        chosen,
        len(files),
        lambda line: err.print(escape(line), highlight=False, soft_wrap=True),
        tune_fusion,
    )
    report.notes = notes + report.notes
    if plot is not None and report.runs:
        eval_report.plot(report, plot)
        err.print(f"plot: {escape(str(plot))}", highlight=False)
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        wide = out if out.is_terminal else Console(width=160)  # piped: not cut to 80 columns
        for table in eval_report.tables(report):
            wide.print(table)
    for line in eval_report.fusion_lines(report):  # beside the JSON on stdout: on stderr
        (err if as_json else out).print(escape(line), highlight=False, soft_wrap=True)
    if not report.runs:
        _fail("no model could be evaluated", code=1)


def _eval_candidates(settings: Settings, models: str | None, chunks: str | None) -> list:
    """Every model with every chunk size, checked before anything loads."""
    from mmrag.model_eval import Candidate

    names = list(dict.fromkeys(m.strip() for m in (models or settings.text_model).split(",")))
    names = [n for n in names if n]
    if not names:
        _fail("--models: no model named")
    sizes: list[int | None] = []
    for value in chunks.split(",") if chunks else [str(settings.chunk_tokens or "auto")]:
        value = value.strip().lower()
        if value in ("auto", "max", "none", ""):
            sizes.append(None)
            continue
        if not value.isdigit() or int(value) < 16:
            _fail(f"--chunk-tokens: {value!r} is not a number of tokens of 16 or more (or auto)")
        if int(value) <= settings.chunk_overlap:
            _fail(
                f"--chunk-tokens {value}: must be more than chunk_overlap "
                f"({settings.chunk_overlap})"
            )
        sizes.append(int(value))
    return [Candidate(n, s) for n in names for s in dict.fromkeys(sizes)]


@app.command()
def duplicates(
    ctx: typer.Context,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Least cosine similarity of near duplicates")
    ] = 0.8,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Groups of duplicate photos: exact (same bytes) and near (similar image vectors)."""
    from mmrag.search.duplicates import exact_duplicates, near_duplicates

    settings = _settings(ctx)
    with _open(settings) as (catalog, store, models):
        groups = exact_duplicates(catalog)
        if image := models.spaces.get("image"):  # near duplicates need the image space
            collection = image.collection(settings.collection_prefix)
            groups += near_duplicates(store, catalog, collection, threshold)
    if as_json:
        print(json.dumps([g.__dict__ for g in groups], indent=2, ensure_ascii=False))
        return
    if not groups:
        out.print("no duplicates found")
    for g in groups:
        out.print(f"[bold]{g.kind}[/bold] ({g.similarity:.3f}):", highlight=False)
        for p in g.paths:
            out.print(f"  {p}", highlight=False)


@app.command()
def demo(
    ctx: typer.Context,
    library: Annotated[Path, typer.Option(help="Folder to ingest")] = DEMO_LIBRARY,
    queries: Annotated[Path, typer.Option(help="One query per line")] = DEMO_QUERIES,
    limit: Annotated[int, typer.Option("--limit", "-k")] = 3,
) -> None:
    """Ingest the sample library into the embedded store, then run a few real queries."""
    from mmrag.app import Models
    from mmrag.search.render import print_hits

    if not library.is_dir():
        _fail(f"{library} is not a folder: run from the repository root, or give --library")
    # The samples get a store of their own (<home>/demo), so they never mix with the user's
    # library; --uri or MMRAG_MILVUS_URI still choose another.
    settings = _settings(ctx, home=_settings(ctx).home / "demo")
    texts = [q.strip() for q in queries.read_text(encoding="utf-8").splitlines() if q.strip()]
    with _open(settings) as (catalog, store, models):  # one store, one model load for both steps
        missing = models.unavailable() if settings.profile == "default" else []
        if missing:  # an air-gapped machine has none of the public models
            err.print(
                f"[yellow]{', '.join(missing)} not available here: using the offline profile "
                "(--profile offline: MiniLM, EfficientNet-Lite0, no CLIP, Whisper tiny.en's "
                "encoder for sounds, Whisper tiny.en for speech)[/yellow]"
            )
            # the same store, and the same text model
            settings = _settings(ctx, profile="offline", home=settings.home)
            models = Models.build(settings, text_encoder=models.text.encoder)
        report = _run_ingest(models, catalog, store, [str(library)], True, False, False)
        _print_report(report)
        resolved = models.text.encoder.resolved
        out.print(f"text model: {resolved.name} (from {resolved.source})")
        searcher = models.searcher(catalog, store)
        for q in texts:
            t0 = time.perf_counter()
            hits = searcher.search(q, "hybrid", limit)
            print_hits(out, q, hits, f"hybrid, {1000 * (time.perf_counter() - t0):.0f} ms")


@app.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="What to ask about the library")],
    sources: Annotated[
        int | None, typer.Option("--sources", help="Passages to retrieve (ask_sources, 8)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="answer, citations, sources and mode as one object")
    ] = False,
    speak: Annotated[
        Path | None, typer.Option("--speak", help="Also write the answer as speech to FILE")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Do not go through a running `mmrag serve`")
    ] = False,
) -> None:
    """Answer a question from the library, citing files with page or time: an LLM's answer
    through any OpenAI-compatible endpoint (llm_base_url, llm_model), else the best passages."""
    import os

    from mmrag.app import answer_endpoint
    from mmrag.pipelines.model_resolver import ModelNotAvailable
    from mmrag.search import answer as qa

    if not question.strip():
        _fail("QUESTION is empty")
    if sources is not None and not 1 <= sources <= 100:
        _fail(f"--sources must be from 1 to 100, got {sources}")
    settings = _settings(ctx, ask_sources=sources)
    server = None if local else find_server(settings, llm_label(settings, os.environ))
    if server is None:
        with _open(settings) as (catalog, store, models):
            try:
                searcher = models.searcher(catalog, store)
                hits = searcher.search(question, "hybrid", settings.ask_sources)
            except (ModelNotAvailable, ValueError, OSError) as exc:
                _fail(str(exc))
    endpoint = answer_endpoint(settings, os.environ)

    def note(text: str) -> None:
        err.print(f"[yellow]note:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)

    def stream(piece: str) -> None:
        print(piece, end="", flush=True)

    if server is not None:  # `mmrag serve` searches and asks the same endpoint
        result = _ask_through(server, question, settings.ask_sources, None if as_json else stream)
    else:
        result = qa.answer(question, qa.sources_of(hits), endpoint, None if as_json else stream)
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    elif not result.sources:
        print(result.text)
    else:
        print("" if result.mode == "llm" else result.text)  # the streamed answer's line end
        if result.cited:
            print("\nSources:")
            for s in result.cited:
                print(f"{s.heading()}  {s.link}")
    if result.note and result.sources:
        note(f"{result.note}; extractive answer" if result.mode == "extractive" else result.note)
    if result.dropped:
        cites = ", ".join(f"[{n}]" for n in result.dropped)
        note(f"the answer cites {cites}, not among the {len(result.sources)} sources: dropped")
    if speak is not None:
        try:
            spoken_by, why = qa.speak(
                result.text, speak, endpoint if isinstance(endpoint, qa.Endpoint) else None
            )
        except qa.SpeechUnavailable as exc:
            _fail(str(exc))
        if why:
            note(why)
        err.print(f"spoke the answer to {escape(str(speak))} with {escape(spoken_by)}")


def _ask_through(server: Server, question: str, sources: int, stream):
    """The answer from `mmrag serve`, streamed as it comes."""
    from mmrag.client import ServerError, answer_from_events

    try:
        events = server.ask({"question": question, "sources": sources})
        return answer_from_events(events, question, stream)
    except ServerError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"mmrag serve at {server.url} stopped answering ({exc}); --local asks here")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (serve_host, 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (serve_port, 8765); 0: any")] = None,
    library: Annotated[
        list[Path] | None,
        typer.Option("--library", help="Folder POST /api/ingest ingests (repeatable)"),
    ] = None,
) -> None:
    """The HTTP API for this store, models loaded once (docs at /docs); while it runs, search
    and ask on this store go through it."""
    try:
        from mmrag import api
    except ImportError as exc:
        _fail(
            f"mmrag serve needs FastAPI and uvicorn ({exc.name} is missing): "
            "pip install 'mmrag[serve]'"
        )
    from mmrag.pipelines.model_resolver import ModelNotAvailable
    from mmrag.store.schema import StoreError

    for folder in library or []:
        if not folder.is_dir():
            _fail(f"--library {folder}: not a folder")
    settings = _settings(ctx, serve_host=host, serve_port=port, library=library or None)
    try:
        api.serve(settings, say=lambda line: err.print(escape(line), highlight=False))
    except (api.ServeError, StoreError, ModelNotAvailable, OSError, ValueError) as exc:
        _fail(str(exc))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to continue where it stopped")
        _leave(130)
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _leave(code: int | str | None) -> None:
    """Exit without the interpreter's teardown, which spends about 0.3 s freeing what pymilvus
    and pandas loaded (a third of a quick search). By now the command has closed its catalog
    and store; the exit hooks (the Lite server's lease, logging) still run, and output is
    flushed."""
    import atexit
    import os

    if isinstance(code, str):
        err.print(code, highlight=False)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`mmrag search ... | head`)
            code = code or 1
    os._exit(code or 0)


if __name__ == "__main__":
    main()
