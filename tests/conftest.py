"""Shared fixtures: a real Milvus Lite store and catalog per test, the real MiniLM weights once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result

from mmrag.app import Models
from mmrag.ingest.runner import IngestReport
from mmrag.pipelines.audio.pipeline import AudioPipeline
from mmrag.pipelines.image.pipeline import ImagePipeline
from mmrag.pipelines.text.encoder import TextEncoder
from mmrag.pipelines.text.space import TextSpace
from mmrag.search.query import Searcher
from mmrag.settings import Settings
from mmrag.store.catalog import Catalog
from mmrag.store.milvus import MilvusStore

REPO = Path(__file__).resolve().parent.parent
REPORT: list[str] = []  # measurements tests want shown after the run (search quality)


def pytest_configure(config: pytest.Config) -> None:
    """One query-encoder cache for the whole run (each model is exported once), never the
    user's own; kept through _clean_env and by the tests that clear MMRAG_* for a child."""
    import tempfile

    os.environ["MMRAG_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmrag-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    shutil.rmtree(os.environ.pop("MMRAG_CACHE_DIR", ""), ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("search quality on data/eval (file-level)")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture
def report_lines() -> list[str]:
    """Lines a test wants printed after the run (this module's list, as pytest loaded it)."""
    return REPORT


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see no user configuration: no MMRAG_* variables, no mmrag.toml."""
    for key in list(os.environ):
        if key.startswith("MMRAG_") and key != "MMRAG_CACHE_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MMRAG_CONFIG", str(tmp_path / "no-such-mmrag.toml"))
    monkeypatch.setenv("MMRAG_HOME", str(tmp_path / "mmrag-home"))  # never the user's own store
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm() -> TextEncoder:
    """The real all-MiniLM-L6-v2 (offline pack here; cache or hub elsewhere), loaded once."""
    encoder = TextEncoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    encoder.model  # noqa: B018
    return encoder


@dataclass
class Env:
    """A store, a catalog and the models (mmrag.app) over one temporary folder."""

    root: Path
    settings: Settings
    catalog: Catalog
    store: MilvusStore
    minilm: TextEncoder
    models: Models = None  # type: ignore[assignment]  # built in __post_init__

    def __post_init__(self) -> None:
        self.rebuild()

    def rebuild(self) -> Env:
        """The models again, from the settings as they are now (the loaded MiniLM is kept)."""
        self.models = Models.build(self.settings, text_encoder=self.minilm)
        return self

    @property
    def text(self) -> TextSpace:
        return self.models.text

    @property
    def image(self) -> ImagePipeline | None:
        return self.models.photos

    @property
    def audio(self) -> AudioPipeline | None:
        return self.models.sound

    def with_images(self, clip_model: str = "") -> Env:
        """Also ingest photos, with the real EfficientNet-Lite0 weights (offline pack) and,
        given a model folder, a CLIP space."""
        self.settings.image_model = "efficientnet-lite0"
        self.settings.clip_model = clip_model
        self.settings.thumbnails = self.root / "thumbs"
        return self.rebuild()

    def with_audio(
        self, audio_model: str = "whisper-tiny-encoder", speech_model: str = "tiny.en"
    ) -> Env:
        """Also ingest recordings, with the offline models (Whisper tiny.en pack)."""
        self.settings.audio_model = audio_model
        self.settings.speech_model = speech_model
        return self.rebuild()

    def ingest(self, *paths: Path | str, prune: bool = False, **kw: object) -> IngestReport:
        runner = self.models.runner(
            self.catalog, self.store, **{"read_workers": 2, "embed_batch": 16, **kw}
        )
        return runner.run([str(p) for p in paths], prune=prune)

    def searcher(self) -> Searcher:
        return self.models.searcher(self.catalog, self.store)

    def cli(self, *args: str) -> Result:
        """The real `mmrag` command, in-process, on this env's store, catalog and thumbnails
        with the offline models."""
        return self.cli_with({}, *args)

    def cli_with(self, more: dict[str, str], *args: str) -> Result:
        """`cli` with more MMRAG_* variables."""
        from typer.testing import CliRunner

        from mmrag.cli import app

        env = {
            "MMRAG_MILVUS_URI": self.settings.milvus_uri,
            "MMRAG_CATALOG": str(self.settings.catalog),
            "MMRAG_THUMBNAILS": str(self.settings.thumbnails),
            "MMRAG_PROFILE": "offline",
            "MMRAG_DEVICE": "cpu",
            **more,
        }
        return CliRunner().invoke(app, list(args), env=env)

    def close(self) -> None:
        self.store.close()
        self.catalog.close()

    @property
    def collection(self) -> str:
        return self.text.collection(self.settings.collection_prefix)

    def ids(self) -> list[str]:
        return self.store.ids(self.collection)


def build_env(root: Path, minilm: TextEncoder, **overrides: object) -> Env:
    """An Env over `root`; small chunks by default so short test files make several."""
    fields: dict[str, object] = {
        "milvus_uri": str(root / "milvus.db"),
        "catalog": root / "catalog.sqlite",
        "chunk_tokens": 64,
        "chunk_overlap": 8,
    }
    # The tests' Env starts with documents only; with_images()/with_audio() add the rest.
    models_off = {"image_model": "", "clip_model": "", "audio_model": "", "speech_model": ""}
    settings = Settings(**(fields | models_off | overrides))
    catalog = Catalog(settings.catalog)
    store = MilvusStore(settings.milvus_uri)
    return Env(root, settings, catalog, store, minilm)


@pytest.fixture
def make_env(tmp_path: Path, minilm: TextEncoder) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []

    def make(**overrides: object) -> Env:
        made.append(build_env(tmp_path, minilm, **overrides))
        return made[-1]

    yield make
    for e in made:
        e.close()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path
