"""How results look: a table for people, JSON lines for programs."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from search.query import Hit


def location(hit: Hit) -> str:
    """Where in the file: page and character range for documents (times for timed media)."""
    if hit.modality == "document":
        where = f"chars {int(hit.start)}-{int(hit.end)}"
        return f"p.{hit.page} {where}" if hit.page else where
    return f"{_clock(hit.start)}-{_clock(hit.end)}"


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def print_hits(console: Console, query: str, hits: list[Hit], mode: str) -> None:
    table = Table(title=f"{query!r}  ({mode})", title_justify="left", show_lines=True, expand=True)
    table.add_column("#", justify="right", width=3)
    table.add_column("score", justify="right", width=7)
    table.add_column("file", overflow="fold", ratio=2)
    table.add_column("where", ratio=1)
    table.add_column("snippet", ratio=5)
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.4f}", h.path, location(h), h.snippet)
    if not hits:
        table.add_row("", "", "(no results)", "", "")
    console.print(table)


def hits_json(hits: list[Hit]) -> list[dict]:
    return [h.to_json() for h in hits]


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)
