r"""The retrieval benchmark's headline analyses (PROTOCOL.md "Cost accounting"), computed from its records.

Every record is one scheme on one channel at one SNR with its mean channel uses per item and its
t2v R@1. Schemes are grouped in **families** (``family_of``): the semantic ones (``semantic``:
semantic-analog and its repetitions; ``adapted``: the learned adapter at any prefix ``k``) and the
classic ones (``h264``, ``jpeg``, ``digital-embedding`` at any quantiser and MCS). A family's
**reference** is its own noiseless R@1 (a row with ``channel == "none"``), else the encoder's.

* :func:`rate_frontier`: per channel, family and SNR, the fewest channel uses per item among the
  family's rows with R@1 >= ``target`` x its reference (0.95 by default), or ``None``.
* :func:`shannon_floor`: ``log2(N) / log2(1 + SNR)`` channel uses, the fewest that can carry an index
  into a gallery of ``N`` items at capacity.
* :func:`overhead_reduction_per_snr`: ``1 - semantic uses / best classic uses`` at equal-or-better R@1:
  the best classic row is the cheapest classic row that reaches its frontier target at that SNR;
  the semantic cost is the cheapest semantic row at least as good as that row (its R@1 above the
  classic row's, or inside its 95% interval: :func:`at_least_as_good`). ``None`` where no classic row
  reaches its target; ``reduction`` ``None`` where no semantic row matches it: then the comparison says so.
* :func:`overhead_at_semantic_accuracy`: the converse (the semantic frontier row sets the accuracy, the
  cheapest classic row at least as good as it is the cost), reported beside the headline.
* :func:`equal_budget`: mean R@1 over the SNR grid per family when every item gets at most
  ``budget`` channel uses; a family with no row within the budget at an SNR scores chance (1/N)
  there (the receiver can only guess).

Example:
    >>> frontier = rate_frontier(records, reference={"adapted": 0.93})  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genscom.results import Record

METRIC = "t2v_R@1"
SEMANTIC_FAMILIES = ("semantic", "adapted", "agent")
CLASSIC_FAMILIES = ("h264", "jpeg", "digital-embedding")


def family_of(scheme: str) -> str | None:
    """The family of a scheme name (``"adapted-k64"`` -> ``"adapted"``), ``None`` for reference rows."""
    if scheme == "noiseless":
        return None
    for prefix, fam in (("semantic-analog", "semantic"), ("adapted", "adapted"), ("agent", "agent"),
                        ("h264-ldpc", "h264"), ("jpeg-ldpc", "jpeg"), ("digital-embedding", "digital-embedding"),
                        ("best-digital", None)):
        if scheme.startswith(prefix):
            return fam
    return scheme


def _rows(records: Iterable[Record | dict[str, Any]]) -> list[dict[str, Any]]:
    return [r.to_json() if isinstance(r, Record) else r for r in records]


def family_references(records: Iterable[Record | dict[str, Any]], *, encoder_r1: float) -> dict[str, float]:
    """Each family's reference R@1: the best of its own noiseless rows (``channel == "none"``), else ``encoder_r1``."""
    ref: dict[str, float] = {}
    rows = _rows(records)
    for r in rows:
        fam = family_of(r["scheme"])
        if fam is not None and r["channel"] == "none":
            ref[fam] = max(ref.get(fam, 0.0), float(r["metrics"][METRIC]))
    for r in rows:
        fam = family_of(r["scheme"])
        if fam is not None:
            ref.setdefault(fam, encoder_r1)
    return ref


def _points(rows: list[dict[str, Any]]) -> dict[tuple[str, str, float], list[dict[str, Any]]]:
    """``(channel, family, snr) -> rows`` over the channel rows."""
    out: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        fam = family_of(r["scheme"])
        if fam is None or r["snr_db"] is None or r["channel"] == "none" or not r.get("channel_uses"):
            continue
        out.setdefault((r["channel"], fam, float(r["snr_db"])), []).append(r)
    return out


def rate_frontier(records: Iterable[Record | dict[str, Any]], *, reference: dict[str, float],
                  target: float = 0.95) -> dict[str, dict[str, dict[str, Any]]]:
    """``{channel: {family: {snr: {"channel_uses", "scheme", "R@1"} or None}}}`` (SNR keys as ``"%+g"``)."""
    if not 0 < target <= 1:
        raise ValueError(f"target must be a fraction in (0, 1] of the reference R@1, got {target!r}")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (ch, fam, snr), rows in sorted(_points(_rows(records)).items()):
        need = target * reference.get(fam, 0.0)
        ok = [r for r in rows if r["metrics"][METRIC] >= need]
        best = min(ok, key=lambda r: r["channel_uses"]) if ok else None
        out.setdefault(ch, {}).setdefault(fam, {})[f"{snr:+g}"] = None if best is None else {
            "channel_uses": float(best["channel_uses"]), "scheme": best["scheme"], "R@1": float(best["metrics"][METRIC])}
    return out


def shannon_floor(n_items: int, snr_db: float) -> float:
    """``log2(N) / log2(1 + 10^(snr/10))``: channel uses to name one of ``N`` items at AWGN capacity."""
    if n_items < 2:
        raise ValueError(f"n_items must be >= 2, got {n_items}")
    return math.log2(n_items) / math.log2(1.0 + 10.0 ** (snr_db / 10.0))


def _ci(row: dict[str, Any]) -> float:
    """The row's 95% half-width of R@1 (0 when it has none)."""
    return float((row.get("ci95") or {}).get(METRIC, 0.0) or 0.0)


def at_least_as_good(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Row ``a``'s R@1 is at least as good as row ``b``'s: above ``b``'s mean, or inside ``b``'s 95% interval
    (``R@1(a) >= R@1(b) - ci95(b)``; PROTOCOL.md: "at least as good" means within the intervals)."""
    return float(a["metrics"][METRIC]) >= float(b["metrics"][METRIC]) - _ci(b) - 1e-12


def overhead_reduction_per_snr(records: Iterable[Record | dict[str, Any]], *, reference: dict[str, float],
                               target: float = 0.95) -> dict[str, dict[str, Any]]:
    """``{channel: {snr: {"reduction", "semantic", "classic", "semantic_uses", "classic_uses"} or None}}``.

    The classic side sets the accuracy: the cheapest classic row reaching its frontier target; the semantic
    cost is the cheapest semantic row :func:`at_least_as_good` as it.
    """
    rows = _rows(records)
    pts = _points(rows)
    out: dict[str, dict[str, Any]] = {}
    for ch in sorted({k[0] for k in pts}):
        for snr in sorted({k[2] for k in pts if k[0] == ch}):
            classic = [r for fam in CLASSIC_FAMILIES for r in pts.get((ch, fam, snr), [])
                       if r["metrics"][METRIC] >= target * reference.get(fam, 0.0)]
            entry = None
            if classic:
                c = min(classic, key=lambda r: r["channel_uses"])
                sem = [r for fam in SEMANTIC_FAMILIES for r in pts.get((ch, fam, snr), []) if at_least_as_good(r, c)]
                entry = _pair(min(sem, key=lambda r: r["channel_uses"]) if sem else None, c)
            out.setdefault(ch, {})[f"{snr:+g}"] = entry
    return out


def _pair(s: dict[str, Any] | None, c: dict[str, Any] | None) -> dict[str, Any]:
    return {"reduction": None if s is None or c is None else 1.0 - s["channel_uses"] / c["channel_uses"],
            "semantic": None if s is None else s["scheme"], "classic": None if c is None else c["scheme"],
            "semantic_uses": None if s is None else float(s["channel_uses"]),
            "classic_uses": None if c is None else float(c["channel_uses"]),
            "semantic_R@1": None if s is None else float(s["metrics"][METRIC]),
            "classic_R@1": None if c is None else float(c["metrics"][METRIC])}


def overhead_at_semantic_accuracy(records: Iterable[Record | dict[str, Any]], *, reference: dict[str, float],
                                  target: float = 0.95) -> dict[str, dict[str, Any]]:
    """The converse view: the semantic side sets the accuracy. Per channel and SNR, the cheapest semantic row
    reaching its family's frontier target, against the cheapest classic row :func:`at_least_as_good` as it.
    Same entry shape as :func:`overhead_reduction_per_snr`; ``None`` where no semantic row reaches its
    target; ``reduction`` ``None`` where no classic row is as good."""
    rows = _rows(records)
    pts = _points(rows)
    out: dict[str, dict[str, Any]] = {}
    for ch in sorted({k[0] for k in pts}):
        for snr in sorted({k[2] for k in pts if k[0] == ch}):
            sem = [r for fam in SEMANTIC_FAMILIES for r in pts.get((ch, fam, snr), [])
                   if r["metrics"][METRIC] >= target * reference.get(fam, 0.0)]
            entry = None
            if sem:
                s = min(sem, key=lambda r: r["channel_uses"])
                classic = [r for fam in CLASSIC_FAMILIES for r in pts.get((ch, fam, snr), []) if at_least_as_good(r, s)]
                entry = _pair(s, min(classic, key=lambda r: r["channel_uses"]) if classic else None)
            out.setdefault(ch, {})[f"{snr:+g}"] = entry
    return out


def equal_budget(records: Iterable[Record | dict[str, Any]], *, budget: float = 192,
                 chance: float) -> dict[str, dict[str, float]]:
    """``{channel: {family: mean R@1 over the SNRs}}`` with at most ``budget`` channel uses per item."""
    pts = _points(_rows(records))
    acc: dict[str, dict[str, list[float]]] = {}
    for ch, fam in sorted({(k[0], k[1]) for k in pts}):
        for snr in sorted({k[2] for k in pts if k[0] == ch}):
            fit = [r["metrics"][METRIC] for r in pts.get((ch, fam, snr), []) if r["channel_uses"] <= budget]
            acc.setdefault(ch, {}).setdefault(fam, []).append(max(fit) if fit else chance)
    return {ch: {fam: sum(v) / len(v) for fam, v in rows.items()} for ch, rows in acc.items()}


def plot_frontier(frontier: dict[str, dict[str, dict[str, Any]]], path: str | os.PathLike[str], *, n_items: int,
                  title: str = "") -> Path:
    """Channel uses (log scale) vs SNR per family and channel, with the Shannon floor ``log2(N)/log2(1+SNR)``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from genscom.bench.results import save_figure

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    fams = sorted({f for ch in frontier.values() for f in ch})
    cmap = plt.get_cmap("tab10")
    snrs_all: set[float] = set()
    for ch, by_fam in frontier.items():
        for fam, pts in by_fam.items():
            xs = [float(s) for s, v in pts.items() if v is not None]
            ys = [v["channel_uses"] for v in pts.values() if v is not None]
            snrs_all.update(float(s) for s in pts)
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, color=cmap(fams.index(fam) % 10),
                        ls={"awgn": "-", "rayleigh": "--"}.get(ch, ":"), label=f"{fam} ({ch})")
    if snrs_all:
        grid = sorted(snrs_all)
        ax.plot(grid, [shannon_floor(n_items, s) for s in grid], color="k", lw=1, ls="-.",
                label=f"Shannon floor log2({n_items})/log2(1+SNR)")
    ax.set_yscale("log")
    ax.set_xlabel("SNR (dB), Es/N0 per complex symbol")
    ax.set_ylabel("channel uses per item to reach 0.95 x own noiseless R@1")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # off the curves
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["at_least_as_good", "equal_budget", "family_of", "family_references", "overhead_at_semantic_accuracy",
           "overhead_reduction_per_snr", "plot_frontier", "rate_frontier", "shannon_floor"]
