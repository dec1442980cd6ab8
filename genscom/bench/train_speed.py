"""Training throughput of the channel adapter: samples/s and peak memory, CPU and (if present) GPU.

Times the real training step of :mod:`genscom.adaptation.train` (batch sampling, the
no-grad importance pass, encode -> AWGN/Rayleigh -> decode, InfoNCE + cosine loss,
backward, AdamW) on random unit embeddings (the step's cost does not depend on the
values), after ``warmup`` untimed steps. Memory: peak resident set size of the
process (CPU, ``ru_maxrss``, includes everything loaded so far) and
``torch.cuda.max_memory_allocated`` (GPU).

Output in ``out_dir``: ``train_speed.json`` (PROTOCOL.md results shape; ``scheme`` is
``adapter-train``, ``channel`` the device, metrics ``samples_per_s``, ``step_ms``,
``peak_mem_mb``) and ``train_speed.md``.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genscom.bench.results import markdown_table, render_table
from genscom.results import Record, make_meta, write_results

logger = logging.getLogger(__name__)


@dataclass
class TrainSpeedConfig:
    """Options: adapter shapes (``AdapterConfig`` overrides), batch sizes, steps, devices."""

    adapter: dict[str, Any] | None = None          # default: the shipped adapter's shape (k=192, hidden 512)
    dim: int = 384
    batch_sizes: tuple[int, ...] = (64, 256, 1024)
    steps: int = 20
    warmup: int = 3
    devices: tuple[str, ...] = ("cpu", "cuda")     # "cuda" is skipped when absent
    cpu_threads: tuple[int, ...] = (1, 2)          # torch intra-op threads tried on CPU
    n_items: int = 4096
    seed: int = 0
    out_dir: str = "results/train_speed"

    def __post_init__(self) -> None:
        for k in ("dim", "steps", "n_items"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive int, got {v!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {self.warmup!r}")
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        if not self.batch_sizes or min(self.batch_sizes) < 2 or max(self.batch_sizes) > self.n_items:
            raise ValueError(f"batch_sizes must be in 2..n_items={self.n_items}, got {self.batch_sizes!r}")
        self.cpu_threads = tuple(int(t) for t in self.cpu_threads)
        if not self.cpu_threads or min(self.cpu_threads) < 1:
            raise ValueError(f"cpu_threads must be positive thread counts, got {self.cpu_threads!r}")
        bad = [d for d in self.devices if d not in ("cpu", "cuda")]
        if bad:
            raise ValueError(f"devices must be 'cpu' and/or 'cuda', got {bad}")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure(device: str, batch_size: int, cfg: TrainSpeedConfig) -> dict[str, float]:
    """Time ``cfg.steps`` training steps at ``batch_size`` on ``device``; return the metrics dict."""
    from genscom.adaptation.adapter import build_adapter
    from genscom.adaptation.train import (AdapterData, AdapterTrainModule, TrainAdapterConfig, batch_loss,
                                          sample_batch)
    from genscom.channels.registry import create_channel

    dev = torch.device(device)
    g = torch.Generator().manual_seed(cfg.seed)
    clips = torch.nn.functional.normalize(torch.randn(cfg.n_items, cfg.dim, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(clips + 0.5 * torch.randn(cfg.n_items, cfg.dim, generator=g), dim=-1)
    data = AdapterData(clips=clips, texts=texts, offsets=torch.arange(cfg.n_items + 1),
                       caption_ids=torch.arange(cfg.n_items), source="random")
    tcfg = TrainAdapterConfig(n_items=cfg.n_items, val_items=0, batch_size=batch_size, adapter=dict(cfg.adapter or {}),
                              seed=cfg.seed)
    acfg = tcfg.adapter_config(dim=cfg.dim)
    module = AdapterTrainModule(build_adapter(acfg, seed=cfg.seed),
                                [create_channel("awgn"), create_channel("rayleigh", coherence=tcfg.coherence)]).to(dev)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    noise = torch.Generator(device=dev).manual_seed(cfg.seed)
    data_dev = AdapterData(clips=data.clips.to(dev), texts=data.texts.to(dev), offsets=data.offsets,
                           caption_ids=data.caption_ids, source=data.source)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def step() -> None:
        batch = sample_batch(data, cfg.n_items, tcfg, acfg, g)
        loss, _ = batch_loss(module, data_dev, batch, tcfg, acfg, device=dev, noise_gen=noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(cfg.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _peak_rss_mb()
    n_params = sum(p.numel() for p in module.parameters())
    return {"samples_per_s": batch_size * cfg.steps / dt, "step_ms": 1000.0 * dt / cfg.steps, "peak_mem_mb": mem,
            "model_state_mb": 16 * n_params / 2**20,  # fp32 weights + grads + two AdamW moments
            "n_parameters": float(n_params)}


def run_train_speed_bench(cfg: TrainSpeedConfig, *, command: str = "", console: Any = None) -> dict[str, Any]:
    """Measure every (device, batch size); print a table; write ``train_speed.json`` and ``train_speed.md``."""
    from rich.console import Console

    console = console or Console()
    devices = [d for d in cfg.devices if d == "cpu" or torch.cuda.is_available()]
    records: list[Record] = []
    for device in devices:
        for threads in (cfg.cpu_threads if device == "cpu" else (0,)):
            name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu, {threads} thread(s)"
            for bs in cfg.batch_sizes:
                before = torch.get_num_threads()
                if threads:
                    torch.set_num_threads(threads)
                try:
                    m = measure(device, bs, cfg)
                finally:
                    torch.set_num_threads(before)
                logger.info("%s batch %d: %s", name, bs, m)
                records.append(Record(scheme="adapter-train", channel=device, snr_db=None, channel_uses=None,
                                      metrics=m, extra={"batch_size": bs, "device_name": name, "threads": threads,
                                                        "adapter": cfg.adapter or "default"}))
    out = Path(cfg.out_dir)
    meta = make_meta(command=command, seed=cfg.seed, dataset="random embeddings", n_items=cfg.n_items,
                     profile=f"dim {cfg.dim}", quick=False, steps=cfg.steps, warmup=cfg.warmup)
    path = write_results(out / "train_speed.json", "train_speed", meta, records)
    cols = ["channel", "device_name", "batch_size", "samples_per_s", "step_ms", "peak_mem_mb", "model_state_mb"]
    console.print(render_table(records, cols, title="channel adapter training throughput"))
    from genscom.utils import atomic_write_text

    atomic_write_text(out / "train_speed.md", markdown_table(records, cols) + "\n")
    console.print(f"wrote {path}")
    return {"records": records, "json": path}
