"""How results look: a table for people, JSON lines for programs."""

from __future__ import annotations

import json

from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from mmrag.kinds import Modality
from mmrag.search.query import Hit


def location(hit: Hit) -> str:
    """Where in the file: page and character range for documents (times for timed media)."""
    modality = Modality(hit.modality)
    if modality.picture:
        return f"image ({hit.modality})" + (f"  thumb {hit.thumbnail}" if hit.thumbnail else "")
    if modality == Modality.DOCUMENT:
        where = f"chars {int(hit.start)}-{int(hit.end)}"
        return f"p.{hit.page} {where}" if hit.page else where
    where = f"{_clock(hit.start)}-{_clock(hit.end)} ({hit.modality})"
    return where + (f"  thumb {hit.thumbnail}" if hit.thumbnail else "")


def recorded(hit: Hit) -> str:
    """When, with what and where the file was taken, as far as it says."""
    parts = [hit.taken_at[:16].replace("T", " ")] if hit.taken_at else []
    parts += [hit.camera] if hit.camera else []
    parts += [f"{hit.gps['lat']:.4f},{hit.gps['lon']:.4f}"] if hit.gps else []
    return "  taken " + ", ".join(parts) if parts else ""


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def print_hits(console: Console, query: str, hits: list[Hit], mode: str) -> None:
    """One block per hit: rank, score, file and place on a line, then the snippet."""
    console.print(Text.assemble(("query ", "dim"), (query, "bold"), (f"  [{mode}]", "dim")))
    if not hits:
        console.print("  (no results)\n")
        return
    for h in hits:
        console.print(
            Text.assemble(
                (f"{h.rank:>3}. ", "bold"),
                (f"{h.score:.4f}  ", "cyan"),
                (h.path, "green"),
                (f"  {location(h)}", "yellow"),
                (recorded(h), "dim"),
            ),
            overflow="fold",
        )
        console.print(Padding(Text(h.snippet), (0, 0, 0, 5)))
    console.print()


def hits_json(hits: list[Hit]) -> list[dict]:
    return [h.to_json() for h in hits]


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)
