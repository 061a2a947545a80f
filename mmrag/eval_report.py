"""`mmrag eval`'s output: a table of models x modes, and a plot of quality against memory."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mmrag.model_eval import EvalReport

PLOT_HINT = "pip install 'mmrag[eval]'"


def tables(report: EvalReport) -> list[Table]:
    """Quality per model and mode, then what each model costs."""
    return [quality_table(report), cost_table(report)]


def quality_table(report: EvalReport) -> Table:
    """One row per model and mode."""
    t = Table(
        "model",
        "mode",
        "nDCG@10",
        "R@10",
        "R@100",
        "MRR@10",
        "MAP",
        "p50 ms",
        title=f"retrieval quality: {report.queries} queries over {report.files} files",
        title_justify="left",
    )
    for run in report.runs:
        for n, (mode, s) in enumerate(run.scores.items()):
            t.add_row(
                escape(run.label) if n == 0 else "",
                mode,
                f"{s.ndcg:.3f}",
                f"{s.recall:.3f}",
                f"{s.recall_100:.3f}",
                f"{s.mrr:.3f}",
                f"{s.map:.3f}",
                f"{s.p50_ms:.0f}",
                end_section=n == len(run.scores) - 1,
            )
    return t


def cost_table(report: EvalReport) -> Table:
    """Dimension, max tokens, size, memory and index build time per model."""
    t = Table(
        "model",
        "dim",
        "max tok",
        "params",
        "model MB",
        "peak RSS MB",
        "segments",
        "ingest s",
        title="models",
        title_justify="left",
    )
    for run in report.runs:
        params = run.info.get("parameters")
        t.add_row(
            escape(run.label),
            str(run.info.get("dim", "")),
            str(run.info.get("max_tokens", "")),
            f"{params / 1e6:.1f} M" if params else "",
            f"{run.info.get('memory_mb') or 0:.0f}",
            f"{run.peak_rss_mb:.0f}" if run.peak_rss_mb else "-",
            str(run.segments),
            f"{run.ingest_s:.1f}",
        )
    return t


def plot_available() -> str | None:
    """None when matplotlib imports, else the one line saying how to get it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"--plot needs matplotlib: {PLOT_HINT}"
    return None


def plot(report: EvalReport, path: Path, mode: str = "hybrid") -> None:
    """A PNG: each model's nDCG@10 (in `mode`) against its measured memory."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    from matplotlib import pyplot as plt

    points = [
        (float(run.info.get("memory_mb") or 0), run.scores[mode].ndcg, run.label)
        for run in report.runs
    ]
    right = max(x for x, _, _ in points) * 1.15 or 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for n, (x, y, label) in enumerate(points):
            ax.scatter([x], [y], s=60)
            left_of = x > right / 2  # labels stay inside the axes
            ax.annotate(
                label,
                (x, y),
                textcoords="offset points",
                xytext=(-8 if left_of else 8, 8 - 18 * (n % 2)),
                ha="right" if left_of else "left",
                fontsize=8,
            )
        ax.set_xlabel("model memory (MB, parameters and buffers)")
        ax.set_ylabel(f"nDCG@10 ({mode})")
        ax.set_ylim(0, 1.05)
        ax.set_xlim(0, right)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"Retrieval quality against memory ({report.queries} queries)")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
