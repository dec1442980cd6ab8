"""Tables and plots of ``genscom bench`` results (the results files themselves: :mod:`genscom.results`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from genscom.results import Record


def format_value(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return str(v)


def render_table(records: list[Record] | list[dict[str, Any]], columns: list[str], *, title: str = "") -> "Any":
    """A ``rich.table.Table`` of the records; ``columns`` name record keys or metric names."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, justify="left" if c in ("scheme", "channel", "mcs", "modulation") else "right")
    for r in records:
        d = r.to_json() if isinstance(r, Record) else r
        row = []
        for c in columns:
            v = d.get(c, d.get("metrics", {}).get(c))
            row.append(format_value(v))
        table.add_row(*row)
    return table


def markdown_table(records: list[Record] | list[dict[str, Any]], columns: list[str]) -> str:
    """The same table as GitHub Markdown (for docs/benchmarks.md)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in records:
        d = r.to_json() if isinstance(r, Record) else r
        lines.append("| " + " | ".join(format_value(d.get(c, d.get("metrics", {}).get(c))) for c in columns) + " |")
    return "\n".join(lines)


def plot_metric_vs_snr(series: dict[str, tuple[list[float], list[float]]], path: str | os.PathLike[str], *,
                       ylabel: str, title: str = "", logy: bool = False,
                       styles: dict[str, dict[str, Any]] | None = None,
                       hlines: dict[str, float] | None = None) -> Path:
    """One line per series (label -> (snr_db list, values)), saved as PNG atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, (xs, ys) in series.items():
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and (not logy or y > 0)]
        if not pts:
            continue
        style = (styles or {}).get(label, {})
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **({"marker": "o", "ms": 3} | style))
    for i, (label, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls=(":", "--", "-.")[i % 3], color=("k", "0.5", "0.3")[i % 3], lw=1, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("SNR (dB), Es/N0 per complex symbol")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure as PNG atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
