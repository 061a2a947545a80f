"""The composition root: the one place that turns Settings into spaces, pipelines, an ingest
runner and a searcher. The CLI, the tests and the benchmarks all build through `App`, so a space
added to the registry reaches every one of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmrag.kinds import IngestBackend, Modality
from mmrag.registry import QUERY_DECODERS, SPACES, SpaceSpec, spaces_writing
from mmrag.settings import Settings, fallback_model

if TYPE_CHECKING:
    from mmrag.ingest.reindex import SwitchReport
    from mmrag.ingest.runner import IngestRunner, Progress
    from mmrag.pipelines.audio.pipeline import AudioPipeline
    from mmrag.pipelines.audio.spaces import Speech
    from mmrag.pipelines.base import Pipeline, SpaceEncoder
    from mmrag.pipelines.image.pipeline import ImagePipeline
    from mmrag.pipelines.text.encoder import TextEncoder
    from mmrag.pipelines.text.pages import PageReading
    from mmrag.pipelines.text.space import TextSpace
    from mmrag.search.answer import Endpoint, LLMUnavailable
    from mmrag.search.query import Searcher
    from mmrag.store.bulk import BulkImport
    from mmrag.store.catalog import Catalog
    from mmrag.store.milvus import MilvusStore


def open_store(
    settings: Settings, warn: Callable[[str], None] | None = None
) -> tuple[Catalog, MilvusStore]:
    """The catalog and the Milvus store that settings name, checked to belong together (the
    caller closes both). A catalog paired with another store is refused (StoreError); a catalog
    with files beside a store with none, or the other way round, is worth a warning (`warn`,
    default: one line on stderr) but not a refusal: re-ingesting mends it."""
    from pathlib import Path

    from mmrag.settings import is_server_uri
    from mmrag.store import lite_host

    started = None
    if not is_server_uri(settings.milvus_uri):  # Milvus Lite comes up while pymilvus imports
        Path(settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
        started = lite_host.head_start(Path(settings.milvus_uri))

    from mmrag.store.catalog import Catalog
    from mmrag.store.identity import pair
    from mmrag.store.milvus import MilvusStore

    try:
        catalog = Catalog(settings.catalog)
        try:
            store = MilvusStore(
                settings.milvus_uri,
                settings.milvus_token,
                settings.collection_prefix,
                settings.index_type,
            )
        except BaseException:
            catalog.close()
            raise
    finally:
        if started:
            started()
    try:
        pair(catalog, store, str(settings.catalog), settings.milvus_uri, warn or _warn_stderr)
    except BaseException:
        store.close()
        catalog.close()
        raise
    return catalog, store


# The first chunk of each scanned page read by OCR is marked so (pipelines/text/pages.py).
OCR_PAGE_STARTS = 'meta["ocr"] == true and meta["page_start"] == true'


def library_status(settings: Settings, catalog: Catalog, store: MilvusStore) -> dict[str, Any]:
    """What is in the store: what `mmrag status --json` prints and the API's /api/status
    starts from. Counts per collection and modality, files, failures and warnings."""
    from mmrag.ingest.reindex import in_progress

    spaces = {
        name: {"rows": store.count(name), "by_modality": store.count_by(name, "modality")}
        for name in store.existing_collections()
    }
    _, text = served_by(settings, catalog, store, "text")
    return {
        "milvus": settings.milvus_uri,
        "catalog": str(settings.catalog),
        "store_id": catalog.store_id,
        "files": catalog.counts(),
        "media_by_modality": catalog.media_by_modality(),
        "facts_by_modality": catalog.facts_by_modality(),
        "ocr_pages": store.count(text, OCR_PAGE_STARTS) if text in spaces else 0,
        "spaces": spaces,
        "failures": [{"path": f.display, "reason": f.error} for f in catalog.failures()],
        "warnings": [{"path": p, "reason": why} for p, why in catalog.warnings()],
        "fallbacks": on_fallback(settings, catalog),
        "search_notes": store.search_notes({n: s["rows"] for n, s in spaces.items()}),
        "switches": in_progress(catalog),
        "served": {
            name: {"model": model, "configured": spec.model(settings)}
            for name, spec in SPACES.items()
            if spec.model(settings)
            and (model := served_by(settings, catalog, store, name)[0]) != spec.model(settings)
        },
    }


def served_by(
    settings: Settings, catalog: Catalog, store: MilvusStore, name: str
) -> tuple[str, str]:
    """The model and collection a space's search answers from (ingest/reindex.py): the
    configured one unless a switch to it has not cut over yet."""
    from mmrag.ingest.reindex import served

    prefix, model = settings.collection_prefix, settings.model_for(name)
    return served(catalog, store, prefix, name, model, _fallback_collection(settings, name))


def _fallback_collection(settings: Settings, name: str) -> list[str]:
    """The collection of the space's fallback model, if it has one (no switch's source)."""
    from mmrag.store.schema import collection_name

    model = settings.model_for(name)
    instead = fallback_for(name, model) if model else ""
    return [collection_name(settings.collection_prefix, name, instead)] if instead else []


def on_fallback(settings: Settings, catalog: Catalog) -> dict[str, dict[str, Any]]:
    """The spaces some of whose files are stored with their fallback model, not yet with the
    configured one: {space: {"configured", "fallback", "contents"}} (from the catalog alone)."""
    from mmrag.store.schema import collection_name

    prefix = settings.collection_prefix
    found: dict[str, dict[str, Any]] = {}
    for spec in SPACES.values():
        model = spec.model(settings)
        instead = fallback_for(spec.name, model) if model else ""
        if not instead:
            continue
        mine, theirs = (collection_name(prefix, spec.name, m) for m in (model, instead))
        if n := catalog.only_in(theirs, mine):
            found[spec.name] = {"configured": model, "fallback": instead, "contents": n}
    return found


def answer_endpoint(settings: Settings, environ: Mapping[str, str]) -> Endpoint | LLMUnavailable:
    """The chat endpoint `ask` uses (the CLI's, the server's), or why there is none."""
    from mmrag.search.answer import LLMUnavailable, resolve_endpoint

    try:
        return resolve_endpoint(
            settings.llm_base_url,
            settings.llm_model,
            settings.llm_api_key,
            environ,
            settings.llm_timeout_s,
            settings.llm_speech_model,
            settings.llm_voice,
        )
    except LLMUnavailable as exc:
        return exc


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class Models:
    """Every configured space and pipeline, built from Settings once per command, so each
    model loads once (lazily, on first use) however many pipelines share it."""

    settings: Settings
    spaces: dict[str, SpaceEncoder]  # configured spaces by name, in registry order
    specs: dict[str, SpaceSpec]
    speech: Speech | None
    # Built on first use: a search needs none of them, and their modules take time to import.
    _pipes: list[Pipeline] | None = field(default=None, repr=False)
    # Encoders of served models other than the configured ones (a switch not cut over yet)
    _served: dict[tuple[str, str], SpaceEncoder] = field(default_factory=dict, repr=False)
    _photos: ImagePipeline | None = field(default=None, repr=False)
    _sound: AudioPipeline | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings, text_encoder: TextEncoder | None = None) -> Models:
        from mmrag.pipelines.audio.spaces import Speech
        from mmrag.pipelines.text.space import TextSpace

        spaces: dict[str, SpaceEncoder] = {}
        specs: dict[str, SpaceSpec] = {}
        for spec in SPACES.values():
            model = spec.model(settings)
            if not model:
                continue  # the space is off
            if spec.name == "text" and text_encoder is not None:  # tests share one MiniLM
                light = settings.cache_dir if settings.query_encoder == "onnx" else None
                spaces[spec.name] = TextSpace(
                    model, settings.device, settings.embed_batch_size, text_encoder, light
                )
            else:
                spaces[spec.name] = _with_fallback(
                    settings, spec.name, model, lambda m, spec=spec: spec.build(settings, m)
                )
            specs[spec.name] = spec
        if "text" not in spaces:
            raise ValueError("text_model is empty: the text space is required")
        for name, weight in settings.fusion_weights.items():
            if name not in SPACES:
                raise ValueError(f"fusion_weights: no space {name!r}; spaces: {', '.join(SPACES)}")
            if not weight >= 0:
                raise ValueError(f"fusion_weights: {name} = {weight}; a weight is 0 or more")
        speech = (
            _with_fallback(
                settings,
                "speech",
                settings.speech_model,
                lambda m: Speech(m, settings.device, settings.speech_language),
            )
            if settings.speech_model
            else None
        )
        return cls(settings, spaces, specs, speech)

    @property
    def pipelines(self) -> list[Pipeline]:
        """Every ingest pipeline (built on first use, sharing this object's spaces)."""
        if self._pipes is None:
            self._pipes = []  # while building, `photos` and `sound` read what is set so far
            try:
                self._pipes = self._pipelines()
            except BaseException:
                self._pipes = None
                raise
        return self._pipes

    @property
    def photos(self) -> ImagePipeline | None:
        """The photo pipeline, when a photo space is configured."""
        self.pipelines  # noqa: B018 - builds them
        return self._photos

    @photos.setter
    def photos(self, pipeline: ImagePipeline | None) -> None:
        self._photos = pipeline

    @property
    def sound(self) -> AudioPipeline | None:
        """The audio pipeline, when a sound space or speech is configured."""
        self.pipelines  # noqa: B018 - builds them
        return self._sound

    @sound.setter
    def sound(self, pipeline: AudioPipeline | None) -> None:
        self._sound = pipeline

    @property
    def text(self) -> TextSpace:
        return self.spaces["text"]  # type: ignore[return-value]

    def warm_queries(self) -> None:
        """Load the light text-query encoder in a background thread, so it is ready when the
        store has opened (a new process spends that time starting Milvus Lite)."""
        import threading

        threading.Thread(target=self.text.light_encoder, name="warm-queries", daemon=True).start()

    def writing(self, modality: Modality) -> list[Any]:
        """The configured spaces whose collections hold this modality."""
        return [self.spaces[s.name] for s in spaces_writing(modality) if s.name in self.spaces]

    def _pipelines(self) -> list[Pipeline]:
        from mmrag.pipelines.audio.pipeline import AudioConfig, AudioPipeline
        from mmrag.pipelines.image.pipeline import ImageConfig, ImagePipeline
        from mmrag.pipelines.text.pipeline import TextConfig, TextPipeline
        from mmrag.pipelines.video.pipeline import VideoConfig, VideoPipeline

        s = self.settings
        found: list[Pipeline] = []
        if photo_spaces := self.writing(Modality.IMAGE):
            self.photos = ImagePipeline(
                photo_spaces,
                self.text,
                ImageConfig(
                    s.thumbnails,
                    s.max_image_mpx,
                    s.ocr,
                    s.ocr_lang,
                    s.device,
                    s.jpeg_decode,
                    thumbnails_at_ingest={"ingest": True, "shown": False}.get(s.photo_thumbnails),
                ),
            )
            found.append(self.photos)
        text = TextPipeline(
            self.text,
            TextConfig(s.chunk_tokens, s.chunk_overlap, s.max_file_mb * 1_000_000, s.max_ocr_pages),
            self._page_reading(photo_spaces),
        )
        found.insert(0, text)
        sound_spaces = self.writing(Modality.AUDIO)
        if sound_spaces or self.speech:
            self.sound = AudioPipeline(
                self.text,
                sound_spaces[0] if sound_spaces else None,
                self.speech,
                AudioConfig(s.embed_batch_size, s.label_top_k, s.label_min_prob, s.max_media_hours),
            )
            found.append(self.sound)
        frame_spaces = self.writing(Modality.SHOT)
        if frame_spaces or self.sound:
            found.append(
                VideoPipeline(
                    self.text,
                    frame_spaces,
                    self.sound,
                    VideoConfig(
                        s.video_sample_s, s.video_moment_s, s.embed_batch_size, s.max_media_hours
                    ),
                    thumbnail=self.photos.save_thumbnail if self.photos else None,
                )
            )
        return found

    def _page_reading(self, photo_spaces: list[Any]) -> PageReading:
        """What the text pipeline needs to read scanned pages: Tesseract with the configured
        languages (or why it cannot run), the photo spaces for page pictures, and a thumbnail
        writer (the photos' own, else one into the same cache)."""
        from functools import partial

        from mmrag.pipelines.image.ocr import ocr_unavailable, read_page
        from mmrag.pipelines.text.pages import PageReading, renderer_unavailable

        s = self.settings
        why = ocr_unavailable(s.ocr) or renderer_unavailable()
        if self.photos:
            save = self.photos.save_thumbnail
        else:
            from mmrag.pipelines.image.decode import thumbnail
            from mmrag.store.thumbnails import ensure_thumbnail

            def save(key: str, image: Any) -> None:
                ensure_thumbnail(s.thumbnails, key, lambda: thumbnail(image))

        return PageReading(
            ocr=None if why else partial(read_page, lang=s.ocr_lang),
            unavailable=why or "",
            pictures=photo_spaces,
            thumbnail=save,
        )

    def unavailable(self) -> list[str]:
        """The models that cannot be had here (the others are loaded now, for the run)."""
        from mmrag.pipelines.model_resolver import ModelNotAvailable

        lazy = [s for name, s in self.spaces.items() if name != "text"]
        missing = []
        for model in [*lazy, *([self.speech] if self.speech else [])]:
            try:
                model.encoder  # noqa: B018 - loads the model, or says why it cannot
            except ModelNotAvailable:
                missing.append(model.model_name)
        return missing

    def model_notes(self) -> list[str]:
        """What a run says once about its models, of those it tried: a space (or the
        transcriber) on its fallback model, and one skipped because no model for it can be
        had (its files are written without it; a later ingest adds it)."""
        from mmrag.pipelines.base import one_line
        from mmrag.pipelines.fallback import Fallback

        notes = []
        named = [*self.spaces.items(), *([("speech", self.speech)] if self.speech else [])]
        for name, model in named:
            if isinstance(model, Fallback) and model.note:
                notes.append(model.note)
            elif (why := getattr(model, "unavailable", None)) is not None:
                left = "no transcripts" if name == "speech" else "skipped"
                notes.append(
                    f"{name}: {left}, files are written without it and a later ingest adds it "
                    f"once its model can be had: {one_line(why)}"
                )
        return notes

    def runner(
        self,
        catalog: Catalog,
        store: MilvusStore,
        backend: IngestBackend | str = IngestBackend.LOCAL,
        address: str | None = None,
        bulk: bool = False,
        **options: Any,
    ) -> IngestRunner:
        """An ingest runner over every pipeline; options override the settings' sizes.
        `backend` ray: decoding and models on a Ray cluster (`address`, else the settings'
        ray_address, else a local one for the run; ingest/ray_backend.py), the catalog and the
        writes here. `bulk`: rows go to Parquet files a Milvus server imports (store/bulk.py;
        StoreError on Milvus Lite)."""
        from mmrag.ingest.runner import IngestRunner, ingest_lock_path
        from mmrag.ingest.workers import reads_in_processes

        s = self.settings
        sizes: dict[str, Any] = {
            "prefix": s.collection_prefix,
            "read_workers": s.read_workers,
            "read_processes": reads_in_processes(s.read_processes, s.read_workers),
            "embed_batch": s.embed_batch_size,
            "write_batch": s.write_batch_size,
            "max_file_bytes": s.max_file_mb * 1_000_000,
            "lock_file": ingest_lock_path(s.milvus_uri, catalog.file),
            "model_notes": self.model_notes,
        }
        if bulk:  # rows imported from Parquet files by the server (store/bulk.py)
            sizes["bulk"] = self.bulk_import(catalog, store)
        if backend == IngestBackend.RAY:
            from mmrag.ingest.ray_backend import RayIngestRunner

            cluster = address or s.ray_address or None
            return RayIngestRunner(
                catalog, store, self.pipelines, settings=s, address=cluster, **(sizes | options)
            )
        if backend != IngestBackend.LOCAL or address:
            raise ValueError(f"backend {backend!r}: local or ray (an address is for ray)")
        return IngestRunner(catalog, store, self.pipelines, **(sizes | options))

    def bulk_import(self, catalog: Catalog, store: MilvusStore) -> BulkImport:
        """`ingest --bulk`'s importer; StoreError on Milvus Lite (it has no import)."""
        from mmrag.store.bulk import BulkImport

        s = self.settings
        return BulkImport.for_server(
            store,
            s.bulk_folder or catalog.file.parent / "bulk",
            s.milvus_uri,
            s.milvus_token,
            rows=s.bulk_rows,
            timeout_s=s.bulk_timeout_s,
            bucket=s.bulk_target(),
        )

    def searcher(self, catalog: Catalog, store: MilvusStore) -> Searcher:
        from mmrag.search.query import Searcher, SearchSpace

        s = self.settings
        spaces = [
            SearchSpace(
                name,
                *self.searched(name, catalog, store),
                self.specs[name].queries,
                self.specs[name].full_text,
            )
            for name in self.spaces
        ]
        reranker = None
        if s.rerank_model:
            from pathlib import Path

            from mmrag.pipelines.model_resolver import resolve_model
            from mmrag.search.rerank import Reranker

            def resolve(name: str) -> Path:
                return resolve_model(name, kind="rerank model").path

            reranker = Reranker(s.rerank_model, resolve, s.device)
        return Searcher(
            store,
            catalog,
            spaces,
            QUERY_DECODERS,
            s.hybrid_fusion,
            s.dense_weight,
            s.thumbnails,
            reranker,
            s.fusion_weights,
        )

    def searched(self, name: str, catalog: Catalog, store: MilvusStore) -> tuple[Any, str]:
        """The model a space is searched with, and its collection: the served model's while
        a switch to the configured one has not cut over (ingest/reindex.py); else the
        configured model's once it holds anything, until then the fallback's where an ingest
        wrote there (the space ran on it). The next ingest where the configured model can be
        had moves the fallback's files over (ingest/runner.py), so search then uses it."""
        from mmrag.pipelines.fallback import Fallback

        model, collection = served_by(self.settings, catalog, store, name)
        if model != self.specs[name].model(self.settings):
            if (name, model) not in self._served:
                self._served[name, model] = self.specs[name].build(self.settings, model)
            return self._served[name, model], collection
        prefix, space = self.settings.collection_prefix, self.spaces[name]
        if isinstance(space, Fallback):
            mine, theirs = space.configured, space.fallback
            if not catalog.wrote_to(mine.collection(prefix)) and catalog.wrote_to(
                theirs.collection(prefix)
            ):
                return theirs, theirs.collection(prefix)
            return mine, mine.collection(prefix)
        return space, space.collection(prefix)

    def before_ingest(self, catalog: Catalog, store: MilvusStore) -> list[str]:
        """What `ingest` (CLI or API) and `reindex` do first: drop what an earlier switch cut
        over from and a kill kept it from dropping, and name the spaces to switch first."""
        from mmrag.ingest.reindex import drop_retired

        drop_retired(catalog, store)
        return self.switches_wanted(catalog, store)

    def after_ingest(self, catalog: Catalog, store: MilvusStore) -> None:
        """What `ingest` (CLI or API) and `reindex` do last: export the light query encoder of
        the text model search now answers from, once per model, so that later searches start
        without torch (pipelines/text/onnx_query.py). Not while a switch has yet to cut over,
        nor where it failed before for this model (not worth loading the model to fail again)."""
        from mmrag.pipelines.text.onnx_query import export_failure

        if served_by(self.settings, catalog, store, "text")[0] != self.settings.text_model:
            return
        # Read without choosing a model (pipelines/fallback.py loads one to choose).
        space = getattr(self.text, "configured", self.text)
        cache = space.query_cache
        if cache is None or export_failure(cache, space.model_name) is None:
            self.text.export_query_encoder()

    def switches_wanted(self, catalog: Catalog, store: MilvusStore) -> list[str]:
        """The configured spaces served from another model than their configured one: an
        ingest switches them first (`switch`), search answering from the old one meanwhile."""
        s = self.settings
        return [n for n in self.spaces if served_by(s, catalog, store, n)[0] != s.model_for(n)]

    def switch(
        self,
        catalog: Catalog,
        store: MilvusStore,
        name: str,
        model: str | None = None,
        resume: bool = True,
        progress: Progress | None = None,
        on_wait: Callable[[str], None] | None = None,
        grace_s: float | None = None,
    ) -> SwitchReport | None:
        """Switch a configured space to `model` (default: the target of a switch in progress
        when `resume`, else the configured model) without downtime (ingest/reindex.py); None
        where it serves that model already. Other spaces keep their served models."""
        from mmrag.ingest.reindex import DROP_GRACE_S, carry_from, plan, run_switch
        from mmrag.ingest.runner import say_on_stderr

        if name not in self.spaces:
            on = ", ".join(self.spaces)
            raise ValueError(f"--space {name}: not a configured space (configured: {on})")
        s, configured = self.settings, self.specs[name].model(self.settings)
        skip = _fallback_collection(s, name)

        def wanted() -> Any:
            return plan(catalog, store, s.collection_prefix, name, configured, model, resume, skip)

        if (planned := wanted()) is None:
            return None
        served = {n: served_by(s, catalog, store, n)[0] for n in self.spaces}
        built = Models.build(_with_models(s, served | {name: planned.target_model}))
        runner = built.runner(
            catalog, store, reindex=name, carry=carry_from(store, planned.source, name)
        )
        with runner.turn(on_wait or say_on_stderr):
            if (now := wanted()) != planned:  # another process moved it while this one waited
                if now is None:
                    return None
                raise RuntimeError(f"{name}: another process changed its model meanwhile; rerun")
            grace = DROP_GRACE_S if grace_s is None else grace_s
            return run_switch(catalog, store, runner, planned, progress, grace)


def _with_models(settings: Settings, models: dict[str, str]) -> Settings:
    """The settings with these spaces' models, and no fallback model standing in for one."""
    fields = {
        f"{name}_model": model
        for name, model in models.items()
        if name not in settings.models and f"{name}_model" in Settings.model_fields
    }
    named = {n: m for n, m in models.items() if f"{n}_model" not in fields}
    return settings.model_copy(
        update={**fields, "models": {**settings.models, **named}, "strict_models": True}
    )


def fallback_for(name: str, model: str) -> str:
    """The model a space (or `speech`) runs on where `model` cannot be had: the offline
    profile's for it; empty where there is none. The text space has none: every other
    modality's words are written to it, so it never changes model unasked."""
    instead = fallback_model(name)
    return "" if name == "text" or instead == model else instead


def _with_fallback(settings: Settings, name: str, model: str, build: Callable[[str], Any]) -> Any:
    """A space's (or the transcriber's) model, standing in front of its fallback where it has
    one (pipelines/fallback.py; strict_models: said, never used)."""
    from mmrag.pipelines.fallback import Fallback

    configured = build(model)
    instead = fallback_for(name, model)
    return Fallback(configured, build(instead), settings.strict_models) if instead else configured
