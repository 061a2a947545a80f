"""The `mmrag` command line: ingest, search, status, models, demo."""

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

from mmrag.kinds import QueryKind
from mmrag.settings import Settings, load_settings

if TYPE_CHECKING:
    from mmrag.app import Models
    from mmrag.search.query import Near

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
    catalog: Annotated[Path | None, typer.Option("--catalog", help="SQLite catalog path")] = None,
    text_model: Annotated[
        str | None, typer.Option("--text-model", help="HF id or local path")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda")] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Model set: default (public models) or offline (packs)"),
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
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def _open(settings: Settings):
    """Catalog, store and models for one command; closed even on errors."""
    from mmrag.app import Models, open_store
    from mmrag.pipelines.model_resolver import ModelNotAvailable
    from mmrag.store.schema import StoreError

    try:
        models = Models.build(settings)  # loads nothing yet: each model on first use
    except ValueError as exc:
        _fail(f"invalid settings: {exc}")
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
) -> None:
    """Scan folders, embed what is new or changed, and write it to Milvus."""
    settings = _settings(ctx, read_workers=workers, embed_batch_size=batch_size)
    with _open(settings) as (catalog, store, models):
        report = _run_ingest(models, catalog, store, paths, prune, retry_failed, quiet)
    _print_report(report)


def _run_ingest(models: Models, catalog, store, paths, prune, retry_failed, quiet):
    """One ingest run with a progress bar, on an open catalog and store."""
    runner = models.runner(catalog, store, retry_failed=retry_failed)
    progress = Progress(
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )
    task = progress.add_task("ingest", total=None, segments=0)
    seg_total = 0

    def tick(event: str, n: int) -> None:
        nonlocal seg_total
        if event == "file":
            progress.advance(task, n)
        else:
            seg_total += n
            progress.update(task, segments=seg_total)

    with progress:
        return runner.run(
            paths,
            prune=prune,
            on_start=lambda total: progress.update(task, total=total),
            progress=tick,
        )


def _print_report(report) -> None:
    t = Table(title="ingest summary", title_justify="left", show_header=False)
    rate = report.segments / report.seconds if report.seconds else 0
    for label, value in [
        ("files scanned", report.scanned),
        ("new", report.new),
        ("changed (re-embedded)", report.changed),
        ("renamed/copied (vectors reused)", report.reused),
        ("unchanged (skipped)", report.unchanged),
        ("failed", len(report.failed)),
        ("failed earlier, unchanged", report.failed_before),
        *[(f"{m} files skipped (see below)", n) for m, n in sorted(report.skipped.items())],
        ("deleted files pruned", report.pruned),
        ("content removed from the store", report.removed_media),
        ("segments written", report.segments),
        ("time", f"{report.seconds:.1f} s ({rate:,.1f} segments/s)"),
    ]:
        t.add_row(label, str(value))
    err.print(t)
    for modality, reason in sorted(report.skip_reasons.items()):
        err.print(f"[yellow]{modality} files skipped:[/yellow] {reason}", highlight=False)
    for display, reason in report.failed:
        err.print(f"[yellow]failed:[/yellow] {display}: {reason}", highlight=False, markup=True)


def _parse_date(value: str | None, flag: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{flag} expects a date like 2024-05-31 or 2024-05-31T14:00, got {value!r}")


def _parse_near(value: str | None) -> Near | None:
    from mmrag.search.query import Near

    if not value:
        return None
    try:
        parts = [float(v) for v in value.split(",")]
        near = Near(*parts) if len(parts) in (2, 3) else None
    except ValueError:
        near = None
    if near is None or not (-90 <= near.lat <= 90 and -180 <= near.lon <= 180 and near.km > 0):
        _fail(f"--near expects LAT,LON or LAT,LON,KM (e.g. 48.8584,2.2945,2), got {value!r}")
    return near


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Argument(help="What to look for")] = None,
    mode: Annotated[
        str, typer.Option(help="hybrid (BM25 + dense fused), dense or bm25")
    ] = "hybrid",
    fusion: Annotated[str | None, typer.Option(help="hybrid fusion: weighted or rrf")] = None,
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, max=1000)] = 10,
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
) -> None:
    """Search by text, an example image or an audio clip; hits name the file and where in it."""
    from mmrag.pipelines.base import MediaError
    from mmrag.pipelines.model_resolver import ModelNotAvailable
    from mmrag.search.query import MODES, Filters
    from mmrag.search.render import dumps, hits_json, print_hits

    if mode not in MODES:
        _fail(f"--mode must be one of {', '.join(MODES)}")
    if sum(x is not None for x in (query, image, audio, video, queries)) != 1:
        _fail("give one of: a QUERY, --image PATH, --audio PATH, --video PATH, or --queries FILE")
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
    if queries:
        batch = _read_queries(queries)
    elif query is not None:
        batch = [{"id": None, "text": query}]
    else:
        kind, given = next(
            (k, v) for k, v in (("image", image), ("audio", audio), ("video", video)) if v
        )
        batch = [{"id": None, kind: str(given)}]
    settings = _settings(ctx, hybrid_fusion=fusion)
    with _open(settings) as (catalog, store, models):
        searcher = models.searcher(catalog, store)
        for item in batch:
            kind = next(k for k in QueryKind if isinstance(item.get(k), str))
            value = item[kind] if kind == QueryKind.TEXT else Path(item[kind])
            try:
                hits = searcher.find(kind, value, mode, limit, filters)  # type: ignore[arg-type]
            except (MediaError, ModelNotAvailable, ValueError, OSError) as exc:
                what = item[kind]
                if not queries:
                    _fail(f"{what}: {exc}")
                print(dumps({"id": item["id"], "error": f"{what}: {exc}", "hits": []}), flush=True)
                continue
            label = item["text"] if kind == "text" else f"{kind} {item[kind]}"
            if queries:
                print(dumps({"id": item["id"], "hits": hits_json(hits)}), flush=True)
            elif as_json:
                print(dumps(hits_json(hits)))
            else:
                print_hits(out, label, hits, mode if kind == "text" else kind)


def _read_queries(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
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
        items.append(item)
    return items


@app.command()
def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What is in the store: counts per space and modality, and every failure with its reason."""
    settings = _settings(ctx)
    with _open(settings) as (catalog, store, _):
        spaces = {}
        for name in store.existing_collections():
            spaces[name] = {
                "rows": store.count(name),
                "by_modality": store.count_by(name, "modality"),
            }
        data = {
            "milvus": settings.milvus_uri,
            "catalog": str(settings.catalog),
            "files": catalog.counts(),
            "media_by_modality": catalog.media_by_modality(),
            "facts_by_modality": catalog.facts_by_modality(),
            "spaces": spaces,
            "failures": [{"path": f.display, "reason": f.error} for f in catalog.failures()],
        }
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
    for modality, n in data["facts_by_modality"].items():
        if n["taken_at"] or n["camera"] or n["gps"]:
            out.print(
                f"{modality}: {n['media']} contents, {n['taken_at']} with a date taken, "
                f"{n['camera']} with a camera, {n['gps']} with GPS"
            )
    for f in data["failures"]:
        out.print(f"[yellow]failed:[/yellow] {f['path']}: {f['reason']}", highlight=False)


@app.command()
def models(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each space's model: where it came from, dimension, max tokens, parameters, memory."""
    from mmrag.registry import SPACES

    settings = _settings(ctx)
    rows = [_model_row(spec, settings) for spec in SPACES.values()]
    rows.append(_speech_row(settings))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    out.print(f"profile: {settings.profile}")
    t = Table("space", "model", "source", "dim", "max tokens", "parameters", "memory", "device")
    for r in rows:
        if "error" in r:
            t.add_row(r["space"], r["name"], f"[red]{r['error']}[/red]")
        elif "off" in r:
            t.add_row(r["space"], "-", r["off"])
        else:
            t.add_row(
                r["space"],
                r["name"],
                r["source"],
                str(r.get("dim") or "-"),
                str(r.get("max_tokens") or "-"),
                f"{r['parameters'] / 1e6:.1f} M" if r.get("parameters") else "-",
                f"{r['memory_mb']} MB" if r.get("memory_mb") else "-",
                str(r.get("device", "")),
            )
    out.print(t)


def _model_row(spec, settings: Settings) -> dict:
    """Load one space's model and describe it; a model that cannot be had says why."""
    from mmrag.pipelines.model_resolver import ModelNotAvailable

    name = spec.model(settings)
    if not name:
        return {"space": spec.name, "name": "", "off": f"off ({spec.setting} is empty)"}
    try:
        info = spec.build(settings, name).info()
    except ModelNotAvailable as exc:
        return {"space": spec.name, "name": name, "error": str(exc)}
    return {"space": spec.name, **info}


def _speech_row(settings: Settings) -> dict:
    """The transcriber (not a space: its segments go to `text`)."""
    from mmrag.pipelines.audio.spaces import Speech
    from mmrag.pipelines.model_resolver import ModelNotAvailable

    name = settings.speech_model
    if not name:
        return {"space": "speech", "name": "", "off": "off (speech_model is empty)"}
    try:
        transcriber = Speech(name, settings.device, settings.speech_language).encoder
    except ModelNotAvailable as exc:
        return {"space": "speech", "name": name, "error": str(exc)}
    resolved = getattr(transcriber, "resolved", None)
    return {
        "space": "speech",
        "name": transcriber.name,
        "source": resolved.source if resolved else "OpenAI API",
        "path": str(resolved.path) if resolved else "",
        "device": f"{getattr(transcriber, 'device', 'api')} "
        f"{getattr(transcriber, 'compute_type', '')}".strip(),
    }


@app.command()
def duplicates(
    ctx: typer.Context,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Least cosine similarity of near duplicates")
    ] = 0.8,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Groups of duplicate photos: exact (same bytes) and near (similar image vectors)."""
    from mmrag.registry import SPACES
    from mmrag.search.duplicates import exact_duplicates, near_duplicates

    settings = _settings(ctx)
    with _open(settings) as (catalog, store, _):
        image = SPACES["image"].build(settings, settings.model_for("image"))
        collection = image.collection(settings.collection_prefix)
        groups = exact_duplicates(catalog) + near_duplicates(store, catalog, collection, threshold)
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
    settings = _settings(ctx)
    texts = [q.strip() for q in queries.read_text(encoding="utf-8").splitlines() if q.strip()]
    with _open(settings) as (catalog, store, models):  # one store, one model load for both steps
        missing = models.unavailable() if settings.profile == "default" else []
        if missing:  # an air-gapped machine has none of the public models
            err.print(
                f"[yellow]{', '.join(missing)} not available here: using the offline profile "
                "(--profile offline: MiniLM, EfficientNet-Lite0, no CLIP, Whisper tiny.en's "
                "encoder for sounds, Whisper tiny.en for speech)[/yellow]"
            )
            settings = _settings(ctx, profile="offline")  # the text model is the same
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to continue where it stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
