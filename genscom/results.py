"""Results files (the shape of PROTOCOL.md) and the description of the machine that made them.

Low in the package so that trainers (which record the machine), benchmarks (which write
results) and the demo (which reads them) share one reader and writer. Tables and plots of
results are in :mod:`genscom.bench.results`.
"""

from __future__ import annotations

import datetime as _dt
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
    from genscom._version import __version__

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
    from genscom.errors import BadFileError
    from genscom.loading import read_json

    p = Path(path)
    expected = "a genscom results JSON (benchmark, meta, records; see PROTOCOL.md)"
    fix = "run a `genscom bench` command to write it"
    data = read_json(p, expected=expected, fix=fix)
    if not isinstance(data, dict):
        raise BadFileError(p, problem=f"holds a {type(data).__name__}, not a mapping", expected=expected, fix=fix)
    for key in ("benchmark", "meta", "records"):
        if key not in data:
            raise BadFileError(p, problem=f"lacks the key {key!r}", expected=expected, fix=fix)
    if not isinstance(data["records"], list):
        raise BadFileError(p, problem="'records' is not a list", expected=expected, fix=fix)
    for i, rec in enumerate(data["records"]):
        missing = [k for k in REQUIRED_RECORD if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise BadFileError(p, problem=f"record {i} lacks {missing}", expected=expected, fix=fix)
    return data


__all__ = [
    "REQUIRED_META", "REQUIRED_RECORD", "Record", "library_versions", "load_results", "machine_description",
    "make_meta", "results_dict", "write_results",
]
