"""The wheel, installed alone into a fresh venv outside the checkout: one top-level package,
`mmrag`, and the README's demo runs from it.

The wheel's dependencies (torch alone is several GB) are not installed a second time: the new
venv sees the project venv's site-packages through a .pth line, which adds that folder to
sys.path without running its .pth files, so the project's editable install (a path finder onto
this checkout) stays out. What is imported as `mmrag` comes from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.conftest import REPO

SOURCES = ("pyproject.toml", "README.md", "mmrag", "ingest", "pipelines", "search", "store")


def _run(args: list, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


def test_the_wheel_holds_only_mmrag_and_its_demo_runs_outside_the_checkout(tmp_path: Path) -> None:
    # 1. build from a copy of the sources (a build writes build/ and *.egg-info beside them)
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name)
    for junk in src.rglob("__pycache__"):
        shutil.rmtree(junk)
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("mmrag-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
    assert tops == {"mmrag", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    with zipfile.ZipFile(wheel) as zf:
        for sub in ("ingest", "pipelines/image", "pipelines/video", "search", "store"):
            assert f"mmrag/{sub}/__init__.py" in zf.namelist()

    # 2. a fresh venv outside the checkout, the wheel alone installed into it
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    installed = _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site.stdout.strip(), "_project_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    work = tmp_path / "elsewhere"  # neither the checkout nor anything of it on the path
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMRAG_", "PYTHON"))}
    probe = _run(
        [py, "-c",
         "import importlib.util as u, mmrag.app, mmrag.cli; "
         "print([u.find_spec(n) for n in ('search', 'ingest', 'pipelines', 'store')]); "
         "print(mmrag.app.__file__)"],
        cwd=work, env=env,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    specs, where = probe.stdout.splitlines()
    assert specs == "[None, None, None, None]"
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(REPO)

    # 3. the demo, from the wheel's `mmrag` command, on the sample library
    env |= {
        "MMRAG_MILVUS_URI": str(work / "milvus.db"),
        "MMRAG_CATALOG": str(work / "catalog.sqlite"),
        "MMRAG_THUMBNAILS": str(work / "thumbs"),
        "MMRAG_DEVICE": "cpu",
        "MMRAG_CONFIG": str(work / "no-such.toml"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }
    library, queries = REPO / "data" / "library", REPO / "data" / "eval" / "demo_queries.txt"
    demo = _run(
        [venv / "bin" / "mmrag", "demo", "--library", library, "--queries", queries],
        cwd=work, env=env, timeout=600,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "failed: " not in demo.stderr
    assert "lease-summary.pdf" in demo.stdout and "chelsea the cat.jpg" in demo.stdout
    assert "voice memo from Sam.ogg" in demo.stdout and "garden tour.mp4" in demo.stdout
