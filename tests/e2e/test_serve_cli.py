"""`mmrag serve` as a user runs it (a real process on a free port), and `mmrag search` / `mmrag
ask` going through it for the same store: the same output as a local run, the server's request
counter showing they came over HTTP, and a stale discovery file ignored and removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mmrag.cli import app
from mmrag.client import discovery_path
from tests.conftest import write
from tests.text_samples import QUERY, TOPICS

MMRAG = Path(sys.executable).with_name("mmrag")


@dataclass
class Lib:
    root: Path
    env: dict[str, str | None]
    server: subprocess.Popen
    log: Path

    @property
    def discovery(self) -> Path:
        return discovery_path(Path(str(self.env["MMRAG_CATALOG"])))

    def cli(self, *args: str, **more: str) -> Result:
        """The CLI in this process (it finds the server through the discovery file)."""
        return CliRunner().invoke(app, list(args), env=self.env | more, catch_exceptions=False)

    def requests(self) -> dict[str, int]:
        import urllib.request

        url = json.loads(self.discovery.read_text())["url"] + "/api/status"
        with urllib.request.urlopen(url, timeout=30) as reply:
            return json.loads(reply.read())["server"]["requests"]


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lib]:
    root = tmp_path_factory.mktemp("serve")
    for name, text in TOPICS.items():
        write(root / "lib" / name, text)
    ours = ("MMRAG_", "OPENAI_")  # none of the user's settings or endpoints
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(ours)}
    env |= {
        "MMRAG_MILVUS_URI": str(root / "store" / "milvus.db"),
        "MMRAG_CATALOG": str(root / "store" / "catalog.sqlite"),
        "MMRAG_CONFIG": str(root / "no-such.toml"),
        "MMRAG_PROFILE": "offline",
        "MMRAG_DEVICE": "cpu",
        "MMRAG_IMAGE_MODEL": "",  # documents only: the server starts with one model
        "MMRAG_AUDIO_MODEL": "",
        "MMRAG_SPEECH_MODEL": "",
        "MMRAG_SERVE_PORT": "0",
        "HF_HUB_OFFLINE": "1",
    }
    runner = CliRunner()
    ingest = runner.invoke(app, ["ingest", str(root / "lib"), "--quiet"], env=env)
    assert ingest.exit_code == 0, ingest.output
    log = root / "serve.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    child_env |= {k: v for k, v in env.items() if v is not None}
    with open(log, "wb") as out:
        server = subprocess.Popen([str(MMRAG), "serve"], env=child_env, stderr=out, stdout=out)
    lib = Lib(root, env, server, log)
    deadline = time.monotonic() + 180
    while not lib.discovery.exists():
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    try:
        yield lib
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


def test_search_through_the_server_prints_what_a_local_search_prints(lib: Lib) -> None:
    before = lib.requests().get("search", 0)
    through = lib.cli("search", QUERY, "--json", "--limit", "3")
    assert through.exit_code == 0, through.output
    assert lib.requests().get("search", 0) == before + 1  # it came over HTTP
    local = lib.cli("search", QUERY, "--json", "--limit", "3", "--local")
    assert local.exit_code == 0, local.output
    assert lib.requests().get("search", 0) == before + 1
    assert json.loads(through.stdout)[0]["path"].endswith("router.txt")
    assert through.stdout == local.stdout
    table = lib.cli("search", QUERY, "--limit", "2")
    assert table.stdout == lib.cli("search", QUERY, "--limit", "2", "--local").stdout
    assert lib.requests().get("search", 0) == before + 2
    bypass = lib.cli("search", QUERY, "--json", MMRAG_NO_SERVER="1")
    assert bypass.exit_code == 0 and lib.requests().get("search", 0) == before + 2
    # the server's own message for a query file it cannot use, as the CLI names files
    notes = lib.root / "lib" / "tea.txt"
    refused = lib.cli("search", "--image", str(notes))
    assert refused.exit_code == 2 and lib.requests().get("search", 0) == before + 3
    assert f"{notes}: a txt document, not a photo" in " ".join(refused.stderr.split())
    assert "GET /api/search?q=how+do+I+factory+reset" in lib.log.read_text()


def test_ask_through_the_server_gives_the_local_answer(lib: Lib) -> None:
    before = lib.requests().get("ask", 0)
    through = lib.cli("ask", "How do I restore the router's factory settings?", "--json")
    assert through.exit_code == 0, through.output
    assert lib.requests().get("ask", 0) == before + 1
    local = lib.cli("ask", "How do I restore the router's factory settings?", "--json", "--local")
    assert through.stdout == local.stdout
    answer = json.loads(through.stdout)
    assert answer["mode"] == "extractive" and answer["citations"][0]["path"].endswith("router.txt")
    question = "How do I restore the router's factory settings?"
    assert lib.cli("ask", question).stdout == lib.cli("ask", question, "--local").stdout


def test_a_second_server_for_the_store_is_refused(lib: Lib) -> None:
    second = lib.cli("serve")
    assert second.exit_code == 2
    url = json.loads(lib.discovery.read_text())["url"]
    assert f"running already at {url}" in " ".join(second.stderr.split())


def test_without_fastapi_serve_says_what_to_install(
    lib: Lib, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmrag

    monkeypatch.delitem(sys.modules, "mmrag.api", raising=False)
    monkeypatch.delattr(mmrag, "api", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi raises ImportError
    missing = lib.cli("serve")
    assert missing.exit_code == 2
    assert "pip install 'mmrag[serve]'" in " ".join(missing.stderr.split())


def test_a_stopped_server_leaves_nothing_and_a_stale_file_is_ignored(lib: Lib) -> None:
    recorded = lib.discovery.read_text()
    lib.server.send_signal(signal.SIGTERM)
    assert lib.server.wait(timeout=30) == 0
    assert not lib.discovery.exists()  # removed on the way out
    lib.discovery.write_text(recorded)  # as a server killed with SIGKILL would leave it
    stale = lib.cli("search", QUERY, "--json", "--limit", "3")
    assert stale.exit_code == 0, stale.output
    assert json.loads(stale.stdout)[0]["path"].endswith("router.txt")
    assert not lib.discovery.exists()  # its process is gone: the file is removed
    # a live process that is not this store's server (another store id) is left alone
    other = json.loads(recorded) | {"pid": os.getpid(), "store_id": "not-this-store"}
    lib.discovery.write_text(json.dumps(other))
    assert lib.cli("search", QUERY, "--json").exit_code == 0
    assert lib.discovery.exists()
    lib.discovery.unlink()
