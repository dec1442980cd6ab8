"""Results files of ``genscom bench`` (the shape of shared PROTOCOL.md), tables and plots."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from genscom.utils import atomic_write_json

REQUIRED_META = ("genscom_version", "command", "date", "machine", "seed", "dataset", "n_items", "profile", "quick")
REQUIRED_RECORD = ("scheme", "channel", "snr_db", "channel_uses", "bits", "cbr", "failure_rate", "metrics", "ci95")


@dataclass
class Record:
    """One row: a scheme on a channel at one SNR (``snr_db=None`` for noiseless)."""

    scheme: str
    channel: str
    snr_db: float | None
    channel_uses: float | None
    bits: float | None = None
    cbr: float | None = None
    failure_rate: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d


def machine_description() -> str:
    """``"<cpu model>, N cores, Linux x86_64"`` plus the GPU name when CUDA is present."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
    except Exception:  # pragma: no cover - torch always importable here
        pass
    return desc


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "transformers", "sionna-no-rt", "av", "pillow", "faiss-cpu", "sentence-transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def make_meta(*, command: str, seed: int, dataset: str, n_items: int, profile: str, quick: bool,
              **extra: Any) -> dict[str, Any]:
    from genscom import __version__

    meta: dict[str, Any] = {
        "genscom_version": __version__,
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "seed": seed,
        "dataset": dataset,
        "n_items": n_items,
        "profile": profile,
        "quick": quick,
        "versions": library_versions(),
    }
    meta.update(extra)
    return meta


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: map them to None (and say so in the table)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def results_dict(benchmark: str, meta: dict[str, Any], records: Iterable[Record]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"results meta is missing required keys {missing}; build it with make_meta()")
    return _clean({"benchmark": benchmark, "meta": meta, "records": [r.to_json() for r in records]})


def write_results(path: str | os.PathLike[str], benchmark: str, meta: dict[str, Any],
                  records: Iterable[Record]) -> Path:
    """Write the PROTOCOL.md results JSON atomically and return its path."""
    return atomic_write_json(path, results_dict(benchmark, meta, records))


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a results file (required keys present)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"results file {str(p)!r} not found; run a `genscom bench` command first") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"results file {str(p)!r} is not valid JSON: {exc}") from exc
    for key in ("benchmark", "meta", "records"):
        if key not in data:
            raise ValueError(f"results file {str(p)!r} lacks the key {key!r} (see PROTOCOL.md)")
    for i, rec in enumerate(data["records"]):
        missing = [k for k in REQUIRED_RECORD if k not in rec]
        if missing:
            raise ValueError(f"record {i} of {str(p)!r} lacks {missing}")
    return data


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
