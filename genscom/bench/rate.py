"""``genscom bench rate``: the scalable-extraction rate table (SE-SC style).

For one trained adapter, sweeps the importance threshold ``mu`` and the channel-use
``budget`` of the ``adapted+mu`` scheme (and the prefix rates of ``adapted``, which
need no side information), and reports for each setting: channel uses per item
(data symbols + bitmap, PROTOCOL.md counting), the channel uses saved relative to the
full-rate adapter, and text-to-video R@1 at a low, a mid and a high SNR on each
channel, with the accuracy cost relative to full rate. Every setting runs through
:meth:`Scheme.deliver`, like ``genscom bench retrieval``.

Output in ``out_dir``: ``rate.json`` (PROTOCOL.md results shape, one record per
setting x channel x SNR, with ``mode``/``mu``/``budget``/``saved`` keys), ``rate.md``
(the pivot table) and ``rate_r1.png`` (R@1 vs channel uses, one line per channel and SNR).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genscom.bench.results import format_value
from genscom.metrics.retrieval import retrieval_metrics
from genscom.results import Record, make_meta, write_results
from genscom.schemes.adapted import DEFAULT_ADAPTER

logger = logging.getLogger(__name__)


@dataclass
class RateBenchConfig:
    """Options of the rate benchmark (``None`` lists are derived from the adapter)."""

    adapter: str = DEFAULT_ADAPTER
    profile: str = "mini"
    dataset: str = "synthetic"
    n_items: int | None = None                    # test items (full 1000, quick 200)
    channels: tuple[str, ...] = ("awgn", "rayleigh")
    snrs: tuple[float, ...] = (-5.0, 5.0, 15.0)   # low / mid / high
    mus: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9)
    budgets: tuple[int, ...] | None = None        # default: bitmap + group_size x {G, 3G/4, G/2, 3G/8, G/4, G/8, 1}
    prefixes: tuple[int, ...] | None = None       # default: k, 3k/4, k/2, k/3, k/6
    side_mcs: str = "qpsk-1/3"
    side_link: str = "full"
    side_repeat: int = 1                          # bitmap symbols sent this many times (MRC), counted
    realisations: int | None = None               # full 3, quick 1
    seed: int = 0
    quick: bool = False
    out_dir: str = "results/rate"
    device: str = "cpu"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.n_items is None:
            self.n_items = 200 if self.quick else 1000
        if self.realisations is None:
            self.realisations = 1 if self.quick else 3
        if self.n_items < 2:
            raise ValueError(f"n_items must be >= 2 for retrieval, got {self.n_items}")
        if self.realisations < 1:
            raise ValueError(f"realisations must be >= 1, got {self.realisations}")
        self.snrs = tuple(float(s) for s in self.snrs)
        if not self.snrs or not all(math.isfinite(s) for s in self.snrs):
            raise ValueError(f"snrs must be finite dB values, got {self.snrs!r}")
        self.channels = tuple(self.channels)


@dataclass
class _Setting:
    mode: str                 # "prefix" | "mu" | "budget"
    value: float
    scheme: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def _settings(cfg: RateBenchConfig, k: int, group_size: int, side_uses: int) -> list[_Setting]:
    g = k // group_size
    prefixes = cfg.prefixes or tuple(sorted({k, 3 * k // 4, k // 2, k // 3, k // 6} - {0}, reverse=True))
    budgets = cfg.budgets or tuple(sorted({side_uses + group_size * m for m in
                                           {g, 3 * g // 4, g // 2, 3 * g // 8, g // 4, g // 8, 1} if m >= 1},
                                          reverse=True))
    common = {"adapter": cfg.adapter, "device": cfg.device}
    out = [_Setting("prefix", float(p), "adapted", {**common, "k": int(p)}) for p in prefixes]
    side = {"side_mcs": cfg.side_mcs, "side_link": cfg.side_link, "side_repeat": cfg.side_repeat}
    out += [_Setting("mu", float(m), "adapted+mu", {**common, **side, "mu": float(m)}) for m in cfg.mus]
    out += [_Setting("budget", float(b), "adapted+mu", {**common, **side, "budget": int(b)}) for b in budgets]
    return out


def _mean_ci(runs: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    from genscom.metrics.stats import mean_ci95

    means, cis = {}, {}
    for key in runs[0]:
        m, h = mean_ci95([r[key] for r in runs])
        means[key], cis[key] = float(m), float(h)
    return means, cis


def run_rate_bench(cfg: RateBenchConfig, *, command: str = "", console: Any = None, encoder: Any = None,
                   dataset: Any = None) -> dict[str, Any]:
    """Run the sweep; write ``rate.json``, ``rate.md``, ``rate_r1.png`` to ``cfg.out_dir``; return records and paths."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from genscom.adaptation import extraction as X
    from genscom.channels.registry import create_channel
    from genscom.channels.sensing import link_feedback
    from genscom.schemes.adapted import resolve_adapter
    from genscom.schemes.base import SourceBatch, create_scheme

    console = console or Console()
    out_dir = Path(cfg.out_dir)
    adapter = resolve_adapter(cfg.adapter, cfg.device)
    acfg = adapter.config
    side_uses = X.side_channel_uses(acfg.n_groups, cfg.side_mcs, repeat=cfg.side_repeat)
    if dataset is None:
        from genscom.data import create_dataset

        dataset = create_dataset(cfg.dataset, split="test", n_items=cfg.n_items, seed=cfg.seed)
    if encoder is None:
        from genscom.encoders import create_encoder

        encoder = create_encoder(cfg.profile, device=cfg.device)
    encoder.eval()
    captions, text_to_item = dataset.all_captions()
    with torch.no_grad():
        text_emb = encoder.encode_text(captions, batch_size=cfg.batch_size).float().cpu()
        clean = encoder.encode_clips(dataset.stacked_frames(), batch_size=cfg.batch_size).float().cpu()
    if clean.shape[1] != acfg.dim:
        raise ValueError(f"profile {cfg.profile!r} gives {clean.shape[1]}-d embeddings but adapter {cfg.adapter!r} "
                         f"expects {acfg.dim}-d; use the profile it was trained on")
    source_dim = int(dataset.stacked_frames([0])[0].numel())
    batch = SourceBatch(embeddings=clean)

    def metrics_of(gallery: torch.Tensor) -> dict[str, float]:
        return retrieval_metrics(text_emb @ torch.nn.functional.normalize(gallery.float(), dim=-1).T, text_to_item)

    upper = metrics_of(clean)
    records: list[Record] = [Record(scheme="noiseless", channel="none", snr_db=None, channel_uses=0, metrics=upper,
                                    extra={"mode": "upper bound"})]
    settings = _settings(cfg, acfg.k, acfg.group_size, side_uses)
    console.print(f"[bold]rate benchmark[/] adapter={cfg.adapter} (k={acfg.k}, {acfg.n_groups} groups of "
                  f"{acfg.group_size}, bitmap {side_uses} ch. uses at {cfg.side_mcs}) N={len(dataset)} "
                  f"channels={','.join(cfg.channels)} SNRs={list(cfg.snrs)} settings={len(settings)}")
    total = len(settings) * len(cfg.channels) * len(cfg.snrs) * cfg.realisations
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("rate sweep", total=total)
        for st in settings:
            scheme = create_scheme(st.scheme, **{**st.kwargs, "adapter": adapter})
            for ch_name in cfg.channels:
                channel = create_channel(ch_name)
                for snr in cfg.snrs:
                    r1s, uses, fails, mus = [], [], [], []
                    for r in range(cfg.realisations):
                        progress.update(task, description=f"{scheme.name:>24} {ch_name:>8} {snr:+5.1f} dB")
                        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r * 7919 + int(snr * 10) + 17)
                        # the adapter encodes for the receiver's fed-back SNR estimate (pilots + feedback counted)
                        payload = scheme.transmit(batch, sensing=link_feedback(channel, snr, generator=g))
                        d = scheme.deliver(payload, channel, snr, generator=g)
                        r1s.append(metrics_of(d.embeddings))
                        uses.append(float(d.channel_uses.float().mean()))
                        fails.append(float(d.failed.float().mean()))
                        if d.extras.get("mu") is not None:
                            mus.append(float(d.extras["mu"].clamp(max=1.0).mean()))
                        progress.advance(task)
                    means, cis = _mean_ci(r1s)
                    u = sum(uses) / len(uses)
                    records.append(Record(
                        scheme=scheme.name, channel=ch_name, snr_db=snr, channel_uses=u,
                        bits=float(acfg.n_groups) if st.scheme == "adapted+mu" else None, cbr=u / source_dim,
                        failure_rate=sum(fails) / len(fails), metrics=means, ci95=cis,
                        extra={"mode": st.mode, "setting": st.value, "saved": 1.0 - u / acfg.k,
                               "mean_mu": (sum(mus) / len(mus)) if mus else None,
                               "side_channel_uses": side_uses if st.scheme == "adapted+mu" else 0}))

    rows = pivot(records, cfg.snrs, cfg.channels)
    meta = make_meta(command=command, seed=cfg.seed, dataset=cfg.dataset, n_items=len(dataset), profile=cfg.profile,
                     quick=cfg.quick, adapter=cfg.adapter, adapter_k=acfg.k, group_size=acfg.group_size,
                     bitmap_channel_uses=side_uses, side_mcs=cfg.side_mcs, side_link=cfg.side_link,
                     side_repeat=cfg.side_repeat,
                     channels=list(cfg.channels), snrs=list(cfg.snrs), realisations=cfg.realisations,
                     source_dim=source_dim, noiseless_t2v_R1=upper["t2v_R@1"])
    json_path = write_results(out_dir / "rate.json", "rate", meta, records)
    cols = ["channel", "mode", "setting", "channel_uses", "saved"] + [f"R@1 {s:+g} dB" for s in cfg.snrs] + \
           [f"dR@1 {s:+g} dB" for s in cfg.snrs]
    table = Table(title=f"scalable extraction: rate vs accuracy (adapter {cfg.adapter}, noiseless R@1 "
                        f"{upper['t2v_R@1']:.3f})")
    for c in cols:
        table.add_column(c, justify="left" if c in ("channel", "mode") else "right")
    for row in rows:
        table.add_row(*[format_value(row[c]) for c in cols])
    console.print(table)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(format_value(row[c]) for c in cols) + " |" for row in rows]
    from genscom.utils import atomic_write_text

    atomic_write_text(out_dir / "rate.md", "\n".join(md) + "\n")
    png = _plot(records, out_dir / "rate_r1.png", upper["t2v_R@1"], title=f"{cfg.dataset} test N={len(dataset)}, "
                f"adapter {cfg.adapter}")
    console.print(f"wrote {json_path}, {png}")
    return {"records": records, "rows": rows, "json": json_path, "png": png, "md": out_dir / "rate.md"}


def pivot(records: list[Record], snrs: tuple[float, ...], channels: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per (channel, mode, setting): channel uses, saved, R@1 per SNR and its change vs full rate."""
    full: dict[tuple[str, float], float] = {}
    rows: dict[tuple[str, str, float], dict[str, Any]] = {}
    for r in records:
        if r.snr_db is None:
            continue
        mode, val = r.extra["mode"], r.extra["setting"]
        row = rows.setdefault((r.channel, mode, val), {"channel": r.channel, "mode": mode, "setting": val,
                                                       "scheme": r.scheme, "_uses": [], "_saved": []})
        row["_uses"].append(r.channel_uses)
        row["_saved"].append(r.extra["saved"])
        row[f"R@1 {r.snr_db:+g} dB"] = r.metrics["t2v_R@1"]
        if mode == "prefix" and r.extra["saved"] == 0.0:
            full[(r.channel, r.snr_db)] = r.metrics["t2v_R@1"]
    out = []
    for key in sorted(rows, key=lambda t: (channels.index(t[0]) if t[0] in channels else 99,
                                           ("prefix", "mu", "budget").index(t[1]),
                                           -t[2] if t[1] != "mu" else t[2])):
        row = rows[key]
        row["channel_uses"] = sum(row["_uses"]) / len(row["_uses"])
        row["saved"] = sum(row["_saved"]) / len(row["_saved"])
        for s in snrs:
            ref = full.get((row["channel"], s))
            v = row.get(f"R@1 {s:+g} dB")
            row[f"dR@1 {s:+g} dB"] = (v - ref) if (ref is not None and v is not None) else None
        del row["_uses"], row["_saved"]
        out.append(row)
    return out


def _plot(records: list[Record], path: Path, upper: float, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from genscom.utils import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    series: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.snr_db is None or r.extra["mode"] == "mu":
            continue
        label = f"{r.extra['mode']} {r.channel} {r.snr_db:+g} dB"
        series.setdefault(label, []).append((float(r.channel_uses), r.metrics["t2v_R@1"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label,
                ls="-" if label.startswith("budget") else ":")
    ax.axhline(upper, ls="--", color="k", lw=1, label="noiseless")
    ax.set_xlabel("channel uses per item (data + bitmap)")
    ax.set_ylabel("text-to-video R@1")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
