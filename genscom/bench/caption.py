"""``genscom bench caption``: caption quality vs SNR for the agents and for bit-exact baselines + the same captioner.

Rows:

* ``agent-<card>``: clip -> perception (mini) -> understanding agent -> analog symbols
  -> channel(snr) -> generating agent -> caption (greedy).
* ``jpeg-ldpc`` / ``h264-ldpc`` (baselines): the real bitstream over LDPC + QAM;
  the decoded pixels then go through the SAME agents run noiselessly at the
  receiver (perception -> understanding -> generating -> caption).

Metrics (:func:`caption_scores`): ``object_colour_acc`` (the caption names the
first object group's colour directly before its shape: "... green cross ..."),
``object_acc``, ``colour_acc``, corpus ``bleu4`` (against all references,
lower-cased words, brevity penalty, no smoothing) and ``text_sim`` (mean
cosine between the caption's and the first reference's text embeddings, in the
perception encoder's text space) and, when ``pycocoevalcap`` is installed (the ``[eval]``
extra), corpus ``cider`` (CIDEr-D of Vedantam et al., the COCO caption toolkit's scorer, on the
same lower-cased word tokens; its IDF comes from the evaluated set's references). METEOR needs a
Java runtime and is not computed.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from genscom.bench.results import Record, make_meta, markdown_table, render_table, write_results

logger = logging.getLogger(__name__)
_WORD = re.compile(r"[a-z]+")


def _words(s: str) -> list[str]:
    return _WORD.findall(s.lower())


def bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (Papineni et al.): clipped 1-4-gram precisions, geometric mean, brevity penalty. In [0, 1]."""
    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses ({len(hypotheses)}) and references ({len(references)}) must align")
    match, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        h = _words(hyp)
        rs = [_words(r) for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1] if rs else 0
        for n in range(1, 5):
            hc = Counter(tuple(h[i: i + n]) for i in range(len(h) - n + 1))
            maxref: Counter = Counter()
            for r in rs:
                for g, c in Counter(tuple(r[i: i + n]) for i in range(len(r) - n + 1)).items():
                    maxref[g] = max(maxref[g], c)
            match[n - 1] += sum(min(c, maxref[g]) for g, c in hc.items())
            total[n - 1] += max(0, len(h) - n + 1)
    if min(total) == 0 or min(match) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return bp * math.exp(log_p)


def cider(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
    """Corpus CIDEr-D (``pycocoevalcap``'s scorer) on lower-cased word tokens; ``None`` if the package is missing.

    Scale as in the COCO toolkit (a perfect match of all references scores about 10 x the
    mean cosine, typically 1-3 for good captions).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses ({len(hypotheses)}) and references ({len(references)}) must align")
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return None
    if not hypotheses:
        return 0.0
    gts = {i: [" ".join(_words(r)) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(_words(h))] for i, h in enumerate(hypotheses)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def names_object_and_colour(caption: str, attributes: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(object named, colour named, colour directly before the shape) for the first object group."""
    grp = attributes["groups"][0]
    shape, colour = grp["shape"], grp["colour"]
    words = _words(caption)
    plural = {shape, shape + "s", shape + "es"}
    obj = any(w in plural for w in words)
    col = colour in words
    both = any(words[i] == colour and words[i + 1] in plural for i in range(len(words) - 1))
    return obj, col, both


def caption_scores(captions: Sequence[str], references: Sequence[Sequence[str]],
                   attributes: Sequence[dict[str, Any]] | None = None, *, encoder: Any = None) -> dict[str, float]:
    """Caption metrics of the module docstring (``object*``/``colour*`` need ``attributes``, ``text_sim`` an encoder)."""
    out: dict[str, float] = {"bleu4": bleu4(captions, references)}
    c = cider(captions, references)
    if c is not None:
        out["cider"] = c
    if attributes is not None:
        flags = [names_object_and_colour(c, a) for c, a in zip(captions, attributes)]
        n = max(1, len(flags))
        out["object_acc"] = sum(f[0] for f in flags) / n
        out["colour_acc"] = sum(f[1] for f in flags) / n
        out["object_colour_acc"] = sum(f[2] for f in flags) / n
    if encoder is not None:
        with torch.no_grad():
            a = torch.nn.functional.normalize(encoder.encode_text([c or "." for c in captions]).float(), dim=-1)
            b = torch.nn.functional.normalize(encoder.encode_text([r[0] for r in references]).float(), dim=-1)
        out["text_sim"] = float((a * b).sum(-1).mean())
    return out


def caption_scores_for_pair(understanding: Any, generating: Any, *, n_items: int = 64, snr_db: float | None = 20.0,
                            channel: str = "awgn", seed: int = 0, batch_size: int = 16, encoder: Any = None,
                            dataset: Any = None) -> dict[str, float]:
    """Caption metrics of an agent pair on the synthetic test split at one SNR (``None``: noiseless)."""
    from genscom.channels.registry import create_channel
    from genscom.data import create_dataset
    from genscom.encoders import create_encoder
    from genscom.schemes.agent import AgentScheme
    from genscom.schemes.base import SourceBatch

    ds = dataset if dataset is not None else create_dataset("synthetic", split="test", n_items=n_items, seed=seed)
    enc = encoder if encoder is not None else create_encoder(understanding.card.perception)
    with torch.no_grad():
        feats = enc.encode_clips(ds.stacked_frames()).float()
    scheme = AgentScheme(agents=(understanding, generating), captions=True, batch_size=batch_size)
    payload = scheme.transmit(SourceBatch(embeddings=feats))
    ch = None if snr_db is None else create_channel(channel)
    out = scheme.deliver(payload, ch, snr_db, generator=torch.Generator().manual_seed(seed + 1))
    refs = [ds.captions_of(i) for i in range(len(ds))]
    attrs = [ds.attributes_of(i) for i in range(len(ds))]
    return caption_scores(out.extras["captions"], refs, attrs, encoder=enc)


@dataclass
class CaptionBenchConfig:
    card: str = "agents/smollm2-generating.yaml"
    n_items: int = 100
    snrs: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 20.0)
    channel: str = "awgn"
    baselines: tuple[str, ...] = ("jpeg-ldpc",)
    mcs: str = "qpsk-1/2"
    seed: int = 0
    batch_size: int = 16
    out_dir: str = "results/caption"
    device: str = "cpu"
    baseline_kwargs: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "jpeg-ldpc": {"quality": 50}, "h264-ldpc": {"crf": 28}})

    def __post_init__(self) -> None:
        if isinstance(self.n_items, bool) or not isinstance(self.n_items, int) or self.n_items < 1:
            raise ValueError(f"n_items must be a positive integer, got {self.n_items!r}")
        if not self.snrs or any(not math.isfinite(float(s)) for s in self.snrs):
            raise ValueError(f"snrs must be a non-empty list of finite dB values, got {self.snrs!r}")


def run_caption_bench(cfg: CaptionBenchConfig, *, command: str = "", console: Any = None,
                      agents: tuple[Any, Any] | None = None, encoder: Any = None, dataset: Any = None) -> dict[str, Any]:
    """Run the caption benchmark; writes ``caption.json`` and ``caption.md`` to ``cfg.out_dir``."""
    from rich.console import Console

    from genscom.agents.agent import load_agent_pair
    from genscom.channels.registry import create_channel
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
    agent = AgentScheme(agents=(u, g), captions=True, batch_size=cfg.batch_size)
    records: list[Record] = []
    examples: dict[str, list[str]] = {}

    from rich.progress import Progress

    progress = Progress(console=console)
    task = progress.add_task("caption points", total=1 + len(cfg.snrs) * (1 + len(cfg.baselines)))

    def add(name: str, snr: float | None, caps: list[str], uses: float, failure: float = 0.0) -> None:
        m = caption_scores(caps, refs, attrs, encoder=enc)
        records.append(Record(scheme=name, channel=cfg.channel if snr is not None else "none", snr_db=snr,
                              channel_uses=uses, cbr=uses / source_dim, failure_rate=failure, metrics=m))
        examples[f"{name}@{snr}"] = caps[:3]
        progress.advance(task)
        progress.console.log(f"{name} @ {'noiseless' if snr is None else f'{snr:+g} dB'}: object+colour "
                             f"{m.get('object_colour_acc', float('nan')):.3f}, BLEU-4 {m['bleu4']:.3f}")

    progress.start()
    payload = agent.transmit(SourceBatch(embeddings=feats))
    uses = float(payload.channel_uses.float().mean())
    add(agent.name, None, agent.deliver(payload, None, None).extras["captions"], 0.0)
    channel = create_channel(cfg.channel)
    for snr in cfg.snrs:
        out = agent.deliver(payload, channel, float(snr), generator=torch.Generator().manual_seed(cfg.seed + int(snr * 10)))
        add(agent.name, float(snr), out.extras["captions"], uses)
    # baselines: real bitstreams, then the same agents run noiselessly on the decoded pixels
    for base in cfg.baselines:
        scheme = create_scheme(base, mcs=cfg.mcs, **cfg.baseline_kwargs.get(base, {}))
        bp = scheme.transmit(SourceBatch(frames=frames, embeddings=feats), generator=torch.Generator().manual_seed(cfg.seed))
        for snr in cfg.snrs:
            d = scheme.deliver(bp, channel, float(snr), generator=torch.Generator().manual_seed(cfg.seed + int(snr * 10)))
            from genscom.bench.retrieval import embed_delivered

            with torch.no_grad():
                dec = embed_delivered(d, lambda x: enc.encode_clips(x).float().cpu(), {}, feats.shape[1])
            caps = agent.deliver(agent.transmit(SourceBatch(embeddings=dec)), None, None).extras["captions"]
            add(base, float(snr), caps, float(d.channel_uses.float().mean()), float(d.failed.float().mean()))
    progress.stop()
    meta = make_meta(command=command, seed=cfg.seed, dataset="synthetic", n_items=len(ds), profile=u.card.perception,
                     quick=False, card=cfg.card, channel=cfg.channel, snrs=list(cfg.snrs), examples=examples)
    out_dir = Path(cfg.out_dir)
    path = write_results(out_dir / "caption.json", "caption", meta, records)
    cols = ["scheme", "channel", "snr_db", "channel_uses", "object_colour_acc", "object_acc", "colour_acc", "bleu4",
            "cider", "text_sim"]
    cols = [c for c in cols if any(c in r.metrics or c in ("scheme", "channel", "snr_db", "channel_uses")
                                   for r in records)]
    console.print(render_table(records, cols, title="captions over the channel"))
    from genscom.utils import atomic_write_text

    atomic_write_text(out_dir / "caption.md", markdown_table(records, cols) + "\n")
    return {"records": records, "json": path}
