"""The layout's rules, checked on the source: imports point down the flow, modalities keep to
themselves, and docs/ARCHITECTURE.md names files that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

MODALITIES = ("text", "image", "audio", "video")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at the top or inside functions), as dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / folder).rglob("*.py"))
        for name in sorted(_imports(path))
        if name.startswith(forbidden)
    ]


@pytest.mark.parametrize("modality", MODALITIES)
def test_no_modality_imports_another(modality: str) -> None:
    others = tuple(f"mmrag.pipelines.{m}" for m in MODALITIES if m != modality)
    assert _offending(f"pipelines/{modality}", others) == []


def test_pipelines_take_their_own_configuration_and_know_nothing_above_them() -> None:
    above = ("mmrag.settings", "mmrag.app", "mmrag.cli", "mmrag.registry")
    assert _offending("pipelines", (*above, "mmrag.ingest", "mmrag.search")) == []


def test_the_store_depends_on_nothing_else_in_mmrag() -> None:
    above = ("mmrag.pipelines", "mmrag.ingest", "mmrag.search", "mmrag.app", "mmrag.settings")
    assert _offending("store", above) == []


def test_search_reaches_models_only_through_the_spaces_it_is_given() -> None:
    assert _offending("search", ("mmrag.pipelines", "mmrag.ingest", "mmrag.app")) == []


def test_no_generic_top_level_imports_remain() -> None:
    generic = ("ingest", "search", "pipelines", "store")
    bad = [
        f"{path.relative_to(REPO)} imports {name}"
        for folder in ("mmrag", "ingest", "pipelines", "search", "store", "tests", "benchmarks")
        for path in sorted((REPO / folder).rglob("*.py"))
        for name in sorted(_imports(path))
        if name.split(".")[0] in generic
    ]
    assert bad == []


def test_the_architecture_doc_names_real_files() -> None:
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:[\w-]+/)+[\w.-]*)`", text))  # `store/`, `pipelines/base.py`
    named |= {f"{d}/{f}" for d, files in _table_rows(text) for f in files}
    assert len(named) > 30
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert missing == []


def _table_rows(text: str) -> list[tuple[str, list[str]]]:
    """(`pipelines/<modality>`, its files) from the table of modality packages."""
    rows = []
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and re.fullmatch(r"\s*`pipelines/\w+/`\s*", cells[1]):
            folder = cells[1].strip(" `/")
            rows.append((folder, re.findall(r"`(\w+\.py)`", line)))
    return rows
