"""`mmrag eval`'s output: a table of models x modes, hybrid's nDCG@10 per fusion setting with
the settings lines to use, and a plot of quality against memory."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mmrag.model_eval import EvalReport, Fusion, ModelRun

PLOT_HINT = "pip install 'mmrag[eval]'"


def tables(report: EvalReport) -> list[Table]:
    """Quality per model and mode, hybrid per fusion setting (when tuned), then what each model
    costs."""
    tuned = [fusion_table(report)] if any(run.best for run in report.runs) else []
    kinds = [kind_table(report)] if sum(n > 0 for n in report.kinds.values()) > 1 else []
    return [quality_table(report), *kinds, *tuned, cost_table(report)]


def kind_table(report: EvalReport) -> Table:
    """--self: quality per model, kind of query (documents, photos, recordings) and mode; a
    photo's altered copy is an image query (one mode: image)."""
    t = Table(
        "model",
        "queries",
        "mode",
        "nDCG@10",
        "R@10",
        "MRR@10",
        "p50 ms",
        title="per kind of query (--self)",
        title_justify="left",
    )
    for run in report.runs:
        rows = [(kind, mode, s) for kind, modes in run.kinds.items() for mode, s in modes.items()]
        for n, (kind, mode, s) in enumerate(rows):
            first = n == 0 or rows[n - 1][0] != kind
            t.add_row(
                escape(run.label) if n == 0 else "",
                f"{s.queries} {kind}{'s' * (s.queries != 1)}" if first else "",
                mode,
                f"{s.ndcg:.3f}",
                f"{s.recall:.3f}",
                f"{s.mrr:.3f}",
                f"{s.p50_ms:.0f}",
                end_section=n == len(rows) - 1,
            )
    return t


def fusion_table(report: EvalReport) -> Table:
    """Hybrid nDCG@10 per model under each fusion setting: a row per model and method
    (`weighted`, `minmax`) with a column per dense_weight, and RRF (which has no weight) in its
    own column of the model's first row. The best cell marked `*`, the configured setting's
    method and weight marked `(now)`."""
    grid: list[Fusion] = list(dict.fromkeys(f for run in report.runs for f, _ in run.fusion))
    configured = {run.configured for run in report.runs if run.configured}
    now = {(f.method, f.dense_weight) for f in configured}
    weights = sorted({f.dense_weight for f in grid if f.method != "rrf"})
    methods = list(dict.fromkeys(f.method for f in grid if f.method != "rrf"))
    rrf = any(f.method == "rrf" for f in grid)
    heads = [
        f"{w:g} (now)" if any(m != "rrf" and cw == w for m, cw in now) else f"{w:g}"
        for w in weights
    ]
    rrf_head = "rrf (now)" if any(m == "rrf" for m, _ in now) else "rrf"
    t = Table(
        "model",
        "fusion",
        *heads,
        *([rrf_head] if rrf else []),
        title="hybrid nDCG@10 per fusion setting: weighted or minmax with dense_weight, or rrf "
        "(* best)",
        title_justify="left",
    )
    for run in report.runs:
        scores = {f: s.ndcg for f, s in run.fusion}

        def cell(f: Fusion, run: ModelRun = run, scores: dict = scores) -> str:
            return "" if f not in scores else f"{scores[f]:.3f}{'*' if f == run.best else ''}"

        rrf_cell = next((cell(f) for f in grid if f.method == "rrf"), "")
        for n, method in enumerate(methods):
            by_weight = {f.dense_weight: f for f in grid if f.method == method}
            shown = f"{method} (now)" if any(m == method for m, _ in now) else method
            cells = [cell(by_weight[w]) if w in by_weight else "" for w in weights]
            more = [rrf_cell if n == 0 else ""] if rrf else []
            t.add_row(
                escape(run.label) if n == 0 else "",
                shown,
                *cells,
                *more,
                end_section=n == len(methods) - 1,
            )
    return t


def fusion_lines(report: EvalReport) -> list[str]:
    """Per model, the best fusion setting against the configured one, and how to set it."""
    return [line for run in report.runs if (line := fusion_line(run))]


def fusion_line(run: ModelRun) -> str | None:
    best, now = run.best, run.configured
    if best is None or now is None:
        return None
    tuned, fixed = run.fusion_scores(best).ndcg, run.fusion_scores(now).ndcg
    if best == now:
        return (
            f"{run.label}: the configured fusion ({now.label}) is best: hybrid nDCG@10 "
            f"{fixed:.3f}; nothing to change"
        )
    return (
        f"{run.label}: hybrid fusion {best.label} gives nDCG@10 {tuned:.3f} against {fixed:.3f} "
        f"({now.label}, configured): set {' '.join(best.env_lines(now))}, or "
        f"{'; '.join(best.toml_lines(now))} in mmrag.toml"
    )


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
