"""``genscom bench edge``: full-precision vs 4-bit (NF4) agents: parameter memory, peak memory, latency, metric drop.

For each variant (``bf16`` = the card's LLM loaded in bfloat16, ``fp32``, ``nf4`` =
the ``-nf4`` card: bitsandbytes NF4 for every linear layer and the tied
embedding) it reports:

* ``param_bytes``: LLM parameter + buffer memory, 4-bit statistics included
  (:func:`genscom.agents.quant.parameter_memory_bytes`), and its ratio to bf16;
* ``peak_rss_mb`` (CPU: process peak RSS, coarse, monotone across variants — run
  one variant per process for clean numbers) or ``peak_cuda_mb`` on GPU;
* ``latency_ms_per_item``: generating-agent retrieval forward, and caption decoding;
* the caption metrics of :func:`genscom.metrics.text.caption_scores` at ``snr_db``
  (if the adapters exist), and the drop against bf16.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genscom.bench.results import render_table
from genscom.results import Record, make_meta, write_results

logger = logging.getLogger(__name__)


@dataclass
class EdgeBenchConfig:
    card: str = "smollm2-generating"  # a card name on the card search path, or a card file
    nf4_card: str = "smollm2-generating-nf4"
    variants: tuple[str, ...] = ("bf16", "nf4")  # bf16 first: ratios and metric drops are against it
    n_items: int = 32
    snr_db: float = 20.0
    channel: str = "awgn"
    seed: int = 0
    batch_size: int = 8
    with_metrics: bool = True
    out_dir: str = "results/edge"
    device: str = "cpu"

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in ("fp32", "bf16", "nf4")]
        if bad or not self.variants:
            raise ValueError(f"variants must be drawn from ('fp32', 'bf16', 'nf4'), got {self.variants!r}")
        if isinstance(self.n_items, bool) or not isinstance(self.n_items, int) or self.n_items < 1:
            raise ValueError(f"n_items must be a positive integer, got {self.n_items!r}")


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load_pair(cfg: EdgeBenchConfig, variant: str) -> tuple[Any, Any]:
    from genscom.agents.agent import load_agent_pair
    from genscom.agents.card import load_card

    card = load_card(cfg.nf4_card) if variant == "nf4" else load_card(cfg.card, dtype="bfloat16" if variant == "bf16" else "float32")
    if variant != "nf4":
        partner = card.partner_card()
        partner.dtype = card.dtype
        card.partner = None
        # rebuild the pair with the overridden dtype on both ends
        from genscom.agents.agent import Agent

        u_card, g_card = (card, partner) if card.role == "understanding" else (partner, card)
        has = g_card.adapter_path() is not None and g_card.adapter_path().is_dir()
        u = Agent.from_card(u_card, device=cfg.device, load_adapter=has)
        g = Agent.from_card(g_card, llm=u.llm, device=cfg.device, load_adapter=has, seed=1)
        return u, g
    has = card.adapter_path() is not None and card.adapter_path().is_dir()
    return load_agent_pair(card, device=cfg.device, load_adapter=has)


def run_edge_bench(cfg: EdgeBenchConfig, *, command: str = "", console: Any = None) -> dict[str, Any]:
    """Run the edge comparison; writes ``edge.json`` to ``cfg.out_dir`` and returns the records."""
    from rich.console import Console

    from genscom.agents.prompts import ChannelSensing
    from genscom.agents.quant import parameter_memory_bytes

    console = console or Console()
    device = torch.device(cfg.device)
    records: list[Record] = []
    bf16_bytes: float | None = None
    base_metrics: dict[str, float] | None = None
    for variant in cfg.variants:
        t0 = time.time()
        u, g = _load_pair(cfg, variant)
        load_s = time.time() - t0
        llm = g.llm
        lora = sum(p.numel() * p.element_size() for n, p in llm.hf.named_parameters() if "lora_" in n)
        pbytes = parameter_memory_bytes(llm.hf) - lora  # the base LLM only
        if variant == "bf16":
            bf16_bytes = float(pbytes)
        gen = torch.Generator().manual_seed(cfg.seed)
        e = torch.nn.functional.normalize(torch.randn(cfg.n_items, g.card.embedding_dim, generator=gen), dim=-1)
        sensing = ChannelSensing(cfg.snr_db, cfg.channel)
        with torch.no_grad():
            g(e[: min(2, cfg.n_items)], sensing=sensing)  # warm-up
            t = time.perf_counter()
            for i in range(0, cfg.n_items, cfg.batch_size):
                g(e[i: i + cfg.batch_size], sensing=sensing)
            fwd_ms = (time.perf_counter() - t) * 1000 / cfg.n_items
            n_cap = min(cfg.n_items, cfg.batch_size)
            t = time.perf_counter()
            g.generate_captions(e[:n_cap], sensing=sensing)
            cap_ms = (time.perf_counter() - t) * 1000 / n_cap
        heads = sum(p.numel() * p.element_size() for p in list(u.parameters()) + list(g.parameters()))
        metrics: dict[str, float] = {"param_mb": pbytes / 2**20, "lora_and_heads_mb": (lora + heads) / 2**20,
            "latency_ms_per_item": fwd_ms, "caption_ms_per_item": cap_ms, "load_s": load_s,
            ("peak_cuda_mb" if device.type == "cuda" else "peak_rss_mb"): _peak_mb(device)}
        if bf16_bytes:
            metrics["param_ratio_vs_bf16"] = pbytes / bf16_bytes
        if cfg.with_metrics and g.card.adapter_path() is not None and g.card.adapter_path().is_dir():
            from genscom.agents.pair import caption_scores_for_pair

            scores = caption_scores_for_pair(u, g, n_items=cfg.n_items, snr_db=cfg.snr_db, channel=cfg.channel,
                                             seed=cfg.seed, batch_size=cfg.batch_size)
            metrics.update(scores)
            if base_metrics is None:
                base_metrics = scores
            else:
                for k, v in scores.items():
                    metrics[f"drop_{k}"] = base_metrics[k] - v
        records.append(Record(scheme=f"agent-{variant}", channel=cfg.channel, snr_db=cfg.snr_db, channel_uses=None,
                              metrics=metrics, extra={"variant": variant, "llm": g.card.llm,
                                                      "quantization": g.card.quantization}))
        del u, g, llm
    meta = make_meta(command=command, seed=cfg.seed, dataset="synthetic", n_items=cfg.n_items, profile="mini",
                     quick=False, card=cfg.card, nf4_card=cfg.nf4_card, device=str(device))
    path = write_results(Path(cfg.out_dir) / "edge.json", "edge", meta, records)
    cols = ["scheme", "param_mb", "param_ratio_vs_bf16", "latency_ms_per_item", "caption_ms_per_item"]
    console.print(render_table(records, cols, title="edge agents: full precision vs NF4"))
    return {"records": records, "json": path}
