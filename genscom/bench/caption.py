"""``genscom bench caption``: caption quality vs SNR for the agents and for bit-exact baselines + the same captioner.

Rows:

* ``agent-<card>``: clip -> perception (mini) -> understanding agent -> analog symbols
  -> channel(snr) -> generating agent -> caption (greedy).
* ``jpeg-ldpc`` / ``h264-ldpc`` (baselines) at their **own** channel uses: the real bitstream over
  LDPC + QAM (by default the adaptive MCS, chosen from the fed-back SNR estimate, its feedback
  counted); the decoded pixels then go through the SAME agents run noiselessly at the receiver
  (perception -> understanding -> generating -> caption).
* ``jpeg-ldpc`` at the agent's channel uses (``extra.uses == "equal budget"``): when even the
  smallest JPEG of any key frame does not fit that budget at the densest MCS
  (:func:`genscom.bench.regen.jpeg_fits_budget`), nothing is decodable; the receiver captions a
  grey clip and every item counts as a failure.

Metrics: :func:`genscom.metrics.text.caption_scores` (object+colour, object, colour, count, size and
motion accuracy of the first object group, BLEU-4, CIDEr-D with the ``[eval]`` extra, and ``text_sim`` in the perception encoder's text space).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genscom.bench.results import markdown_table, plot_metric_vs_snr, render_table
from genscom.metrics.text import caption_scores
from genscom.results import Record, make_meta, write_results

logger = logging.getLogger(__name__)


@dataclass
class CaptionBenchConfig:
    card: str = "smollm2-generating"  # a card name on the card search path, or a card file
    n_items: int = 100
    snrs: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 20.0)
    channel: str = "awgn"
    baselines: tuple[str, ...] = ("jpeg-ldpc",)
    mcs: str = "adaptive"  # of the baselines: an MCS name, or "adaptive" (from the fed-back SNR estimate)
    seed: int = 0
    batch_size: int = 16
    out_dir: str = "results/caption"
    device: str = "cpu"
    baseline_kwargs: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "jpeg-ldpc": {"quality": 50}, "h264-ldpc": {"crf": 28}})
    repeat: int | str = 1  # the agent's repetitions: an integer, or "adaptive" (from the fed-back SNR estimate)
    target_snr_db: float = 0.0  # with repeat="adaptive": the effective SNR the repetitions aim at
    max_repeat: int = 8  # with repeat="adaptive": the most repetitions
    fusion: float | None = None  # attribute-fusion weight of the caption decoding; None: the card's

    def __post_init__(self) -> None:
        if isinstance(self.n_items, bool) or not isinstance(self.n_items, int) or self.n_items < 1:
            raise ValueError(f"n_items must be a positive integer, got {self.n_items!r}")
        if not self.snrs or any(not math.isfinite(float(s)) for s in self.snrs):
            raise ValueError(f"snrs must be a non-empty list of finite dB values, got {self.snrs!r}")
        if self.repeat != "adaptive" and (isinstance(self.repeat, bool) or not isinstance(self.repeat, int)
                                          or self.repeat < 1):
            raise ValueError(f"repeat must be an integer >= 1 or 'adaptive', got {self.repeat!r}")
        if isinstance(self.max_repeat, bool) or not isinstance(self.max_repeat, int) or self.max_repeat < 1:
            raise ValueError(f"max_repeat must be an integer >= 1, got {self.max_repeat!r}")
        if isinstance(self.target_snr_db, bool) or not isinstance(self.target_snr_db, (int, float)) \
                or not math.isfinite(self.target_snr_db):
            raise ValueError(f"target_snr_db must be a finite number of dB, got {self.target_snr_db!r}")
        from genscom.agents.card import check_fusion_weight

        self.fusion = check_fusion_weight(self.fusion, none_ok=True)


def run_caption_bench(cfg: CaptionBenchConfig, *, command: str = "", console: Any = None,
                      agents: tuple[Any, Any] | None = None, encoder: Any = None, dataset: Any = None) -> dict[str, Any]:
    """Run the caption benchmark; writes ``caption.json`` and ``caption.md`` to ``cfg.out_dir``."""
    from rich.console import Console

    from genscom.agents.agent import load_agent_pair
    from genscom.channels.registry import create_channel
    from genscom.channels.sensing import LinkFeedback, link_feedback
    from genscom.data import create_dataset
    from genscom.encoders import create_encoder
    from genscom.schemes import create_scheme
    from genscom.schemes.agent import AgentScheme
    from genscom.schemes.base import SourceBatch

    console = console or Console()
    u, g = agents if agents is not None else load_agent_pair(cfg.card, device=cfg.device)
    ds = dataset if dataset is not None else create_dataset("synthetic", split="test", n_items=cfg.n_items, seed=cfg.seed)
    enc = encoder if encoder is not None else create_encoder(u.card.perception, device=cfg.device)
    frames = ds.stacked_frames()
    refs = [ds.captions_of(i) for i in range(len(ds))]
    attrs = [ds.attributes_of(i) for i in range(len(ds))]
    with torch.no_grad():
        feats = enc.encode_clips(frames).float()
    source_dim = int(frames[0].numel())
    agent = AgentScheme(agents=(u, g), captions=True, batch_size=cfg.batch_size, repeat=cfg.repeat,  # type: ignore[arg-type]
                        target_snr_db=cfg.target_snr_db, max_repeat=cfg.max_repeat, fusion=cfg.fusion)
    records: list[Record] = []
    examples: dict[str, list[str]] = {}

    from rich.progress import Progress

    progress = Progress(console=console)
    task = progress.add_task("caption points", total=1 + len(cfg.snrs) * (1 + len(cfg.baselines)
                                                                    + ("jpeg-ldpc" in cfg.baselines)))

    def add(name: str, snr: float | None, caps: list[str], uses: float, failure: float = 0.0,
            extra: dict[str, Any] | None = None) -> None:
        m = caption_scores(caps, refs, attrs, encoder=enc, vocabulary=getattr(ds, "caption_vocabulary", None))
        records.append(Record(scheme=name, channel=cfg.channel if snr is not None else "none", snr_db=snr,
                              channel_uses=uses, cbr=uses / source_dim, failure_rate=failure, metrics=m,
                              ci95=accuracy_intervals(caps, attrs, seed=cfg.seed), extra=extra or {}))
        examples[f"{name}@{snr}"] = caps[:3]
        progress.advance(task)
        progress.console.log(f"{name} @ {'noiseless' if snr is None else f'{snr:+g} dB'}: object+colour "
                             f"{m.get('object_colour_acc', float('nan')):.3f}, BLEU-4 {m['bleu4']:.3f}")

    progress.start()
    payload = agent.transmit(SourceBatch(embeddings=feats))
    add(agent.name, None, agent.deliver(payload, None, None).extras["captions"], 0.0)
    channel = create_channel(cfg.channel)
    for snr in cfg.snrs:
        g = torch.Generator().manual_seed(cfg.seed + int(snr * 10))
        # the agents render for the receiver's fed-back SNR estimate (its bits counted in the channel uses)
        payload = agent.transmit(SourceBatch(embeddings=feats), sensing=link_feedback(channel, float(snr), generator=g))
        out = agent.deliver(payload, channel, float(snr), generator=g)
        add(agent.name, float(snr), out.extras["captions"], float(payload.channel_uses.float().mean()))
    notes: list[str] = []
    # the agent's channel uses at each SNR (they vary with an adaptive repeat): the baselines' equal budget
    agent_uses = {r.snr_db: max(1, math.ceil(r.channel_uses)) for r in records if r.snr_db is not None}

    def caption_features(f: torch.Tensor) -> list[str]:
        """What the receiver's captioner says of perception features ``f`` (the agents run noiselessly)."""
        return agent.deliver(agent.transmit(SourceBatch(embeddings=f)), None, None).extras["captions"]

    # baselines: real bitstreams, then the same agents run noiselessly on the decoded pixels
    from genscom.bench.retrieval import embed_delivered

    for base in cfg.baselines:
        scheme = create_scheme(base, mcs=cfg.mcs, **cfg.baseline_kwargs.get(base, {}))
        batch = SourceBatch(frames=frames, embeddings=feats)
        bp = None if cfg.mcs == "adaptive" else scheme.transmit(
            batch, sensing=LinkFeedback(channel=channel.name), generator=torch.Generator().manual_seed(cfg.seed))
        for snr in cfg.snrs:
            g = torch.Generator().manual_seed(cfg.seed + int(snr * 10))
            if cfg.mcs == "adaptive":  # the MCS follows the fed-back SNR estimate (its bits counted)
                bp = scheme.transmit(batch, sensing=link_feedback(channel, float(snr), generator=g), generator=g)
            d = scheme.deliver(bp, channel, float(snr), generator=g)
            with torch.no_grad():
                dec = embed_delivered(d, lambda x: enc.encode_clips(x).float().cpu(), {}, feats.shape[1])
            add(base, float(snr), caption_features(dec), float(d.channel_uses.float().mean()),
                float(d.failed.float().mean()), {"mcs": cfg.mcs, "uses": "own"})
    if "jpeg-ldpc" in cfg.baselines:  # JPEG at the agent's budget: nothing decodable, a grey clip is captioned
        from genscom.bench.regen import GREY, jpeg_fits_budget

        grey_caps: list[str] | None = None
        for snr in cfg.snrs:
            budget = agent_uses[float(snr)]
            fit = jpeg_fits_budget(frames, budget)
            if fit["fits"]:  # a JPEG would fit: the row needs the link run at that budget, which is not built
                notes.append(f"no JPEG row at the agent's {budget} uses ({snr:+g} dB): a JPEG fits that budget "
                             f"({fit}), and running the link at a fixed budget is not implemented")
                console.print(f"[yellow]{notes[-1]}[/yellow]")
                progress.advance(task)
                continue
            if grey_caps is None:
                with torch.no_grad():
                    grey_caps = caption_features(enc.encode_clips(torch.full_like(frames, GREY)).float())
            add("jpeg-ldpc", float(snr), grey_caps, float(budget), 1.0,
                {"uses": "equal budget", "note": f"smallest JPEG needs {fit['uses_needed']} uses"})
    progress.stop()
    meta = make_meta(command=command, seed=cfg.seed, dataset="synthetic", n_items=len(ds), profile=u.card.perception,
                     quick=False, card=cfg.card, channel=cfg.channel, snrs=list(cfg.snrs), examples=examples,
                     repeat=cfg.repeat, target_snr_db=cfg.target_snr_db if cfg.repeat == "adaptive" else None,
                     max_repeat=cfg.max_repeat if cfg.repeat == "adaptive" else None,
                     fusion=agent.generating.card.attribute_fusion if cfg.fusion is None else cfg.fusion,
                     notes=notes,
                     ci_note=f"95% percentile bootstrap over items (n_boot={N_BOOT}) of object_colour_acc, object_acc "
                             "and colour_acc; ci95 = max(mean - lo, hi - mean)")
    out_dir = Path(cfg.out_dir)
    path = write_results(out_dir / "caption.json", "caption", meta, records)
    cols = ["scheme", "channel", "snr_db", "channel_uses", "uses", "failure_rate", "object_colour_acc", "object_acc",
            "colour_acc", "count_acc", "size_acc", "motion_acc", "bleu4", "cider", "text_sim"]
    cols = [c for c in cols if any(c in r.metrics or c in r.to_json() for r in records)]
    console.print(render_table(records, cols, title="captions over the channel"))
    from genscom.utils import atomic_write_text

    atomic_write_text(out_dir / "caption.md", markdown_table(records, cols) + "\n")
    png = plot_caption_accuracy(records, out_dir / "caption.png")
    return {"records": records, "json": path, "png": png}


N_BOOT = 1000


def accuracy_intervals(captions: list[str], attributes: list[dict[str, Any]], *, seed: int = 0) -> dict[str, float]:
    """95 % percentile-bootstrap half-widths over items of ``object_colour_acc``, ``object_acc`` and ``colour_acc``
    (the per-item flags of :func:`genscom.metrics.text.names_object_and_colour`); ``{}`` without attributes."""
    from genscom.metrics.stats import bootstrap_ci, half_width
    from genscom.metrics.text import names_object_and_colour

    if not attributes or "groups" not in attributes[0]:
        return {}
    flags = torch.tensor([names_object_and_colour(c, a) for c, a in zip(captions, attributes)], dtype=torch.float32)
    out = {}
    for j, name in enumerate(("object_acc", "colour_acc", "object_colour_acc")):
        mean, lo, hi = bootstrap_ci(flags[None, :, j], n_boot=N_BOOT, generator=torch.Generator().manual_seed(seed))
        out[name] = round(half_width(mean, lo, hi), 4)
    return out


def _series_label(r: Record) -> str:
    uses = r.extra.get("uses")
    if uses == "equal budget":
        return f"{r.scheme} at the agent's uses (nothing decodable)"
    return f"{r.scheme} + same captioner" + (f" ({r.extra['mcs']} MCS)" if "mcs" in r.extra else "") \
        if uses == "own" else r.scheme


def plot_caption_accuracy(records: list[Record], path: str | Path) -> Path:
    """Object+colour accuracy vs SNR, one line per scheme (and per channel-use regime of a baseline); the
    noiseless agent as a horizontal line. Saved as PNG."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    hlines: dict[str, float] = {}
    for r in records:
        acc = r.metrics.get("object_colour_acc")
        if acc is None:
            continue
        if r.snr_db is None:
            hlines[f"{r.scheme}, noiseless"] = float(acc)
            continue
        xs, ys = series.setdefault(_series_label(r), ([], []))
        xs.append(float(r.snr_db))
        ys.append(float(acc))
    return plot_metric_vs_snr(series, path, ylabel="object + colour accuracy (first object group)",
                              title="captions over the channel", hlines=hlines)
