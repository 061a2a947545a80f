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
    if modality.picture:  # a photo, or a page picture of a scanned PDF (with its page)
        page = f" p.{hit.page}" if hit.page else ""
        thumb = f"  thumb {hit.thumbnail}" if hit.thumbnail else ""
        return f"image ({hit.modality}){page}{thumb}"
    if modality == Modality.DOCUMENT:
        where = f"chars {int(hit.start)}-{int(hit.end)}" + (" (OCR)" if hit.ocr else "")
        return f"p.{hit.page} {where}" if hit.page else where
    where = f"{_clock(hit.start)}-{_clock(hit.end)} ({hit.modality})"
    return where + (f"  thumb {hit.thumbnail}" if hit.thumbnail else "")


def recorded(hit: Hit) -> str:
    """When, with what and where the file was taken, as far as it says."""
    parts = [hit.taken_at[:16].replace("T", " ")] if hit.taken_at else []
    parts += [hit.camera] if hit.camera else []
    parts += [f"{hit.gps['lat']:.4f},{hit.gps['lon']:.4f}"] if hit.gps else []
    return "  taken " + ", ".join(parts) if parts else ""


def via(hit: Hit) -> str:
    """Which spaces found the hit and at what rank there, e.g. "  via text#3, clip#1"."""
    if not hit.sources:
        return ""
    return "  via " + ", ".join(f"{s['space']}#{s['rank']}" for s in hit.sources)


def moment_place(moment: dict) -> str:
    """Where a grouped file's moment is, as `location` says it for a hit."""
    modality = Modality(moment["modality"])
    if modality.picture:
        page = f" p.{moment['page']}" if moment.get("page") else ""
        return f"image ({moment['modality']}){page}"
    if modality == Modality.DOCUMENT:
        where = f"chars {int(moment['start'])}-{int(moment['end'])}"
        where += " (OCR)" if moment.get("ocr") else ""
        return f"p.{moment['page']} {where}" if moment.get("page") else where
    return f"{_clock(moment['start'])}-{_clock(moment['end'])} ({moment['modality']})"


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
                (via(h), "dim"),
            ),
            overflow="fold",
        )
        console.print(Padding(Text(h.snippet), (0, 0, 0, 5)))
        for m in (h.moments or [])[1:]:  # the first is the hit itself
            console.print(
                Padding(
                    Text.assemble(
                        ("also ", "dim"),
                        (f"{m['score']:.4f}  ", "cyan"),
                        (moment_place(m), "yellow"),
                        (f"  {m['snippet'][:120]}", ""),
                    ),
                    (0, 0, 0, 5),
                ),
                overflow="fold",
            )
    console.print()


def hits_json(hits: list[Hit]) -> list[dict]:
    return [h.to_json() for h in hits]


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)
