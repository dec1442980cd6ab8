"""``genscom bench retrieval``: text-video retrieval over a channel (shared PROTOCOL.md).

The transmitter sends each gallery clip with a scheme; the receiver builds its
gallery from what it received (embeddings, or decoded pixels re-encoded by the
same perception encoder); queries are captions encoded cleanly at the
receiver. Metrics: t2v / v2t R@1/5/10, MdR, MnR and RSUM (mid-rank ties), mean
over channel realisations and 95% percentile bootstrap interval over items x
channel realisations. Every scheme runs through the same
:meth:`genscom.schemes.base.Scheme.deliver` loop; none is special-cased.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from genscom.bench.headline import (equal_budget, family_of, family_references, overhead_at_semantic_accuracy,
                                    overhead_reduction_per_snr, plot_frontier, rate_frontier)
from genscom.bench.results import markdown_table, plot_metric_vs_snr, render_table
from genscom.channels.sensing import LinkFeedback, link_feedback
from genscom.results import Record, make_meta, write_results

logger = logging.getLogger(__name__)

FULL_SNRS = tuple(-10.0 + 2.5 * i for i in range(13))  # -10 .. 20 dB, step 2.5
QUICK_SNRS = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
SEEDED_DATASETS = ("synthetic", "digits")  # datasets whose content is drawn from a seed


@dataclass
class SchemeSpec:
    """A scheme to benchmark: registered ``name`` plus constructor ``kwargs``."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


#: Product quantiser of the benchmark's PQ row: 48 sub-vectors x 8 bits = 384 bits per item (FAISS, train split).
DEFAULT_PQ = "pq-48x8"


def default_schemes(mcs: str = "adaptive", *, adapter: str | None = "mini-attr-k192",
                    pq: str | None = DEFAULT_PQ, fidelity: str = "abstract") -> list[SchemeSpec]:
    """The benchmark's rows: semantic (analog; the learned ``adapter`` at four prefix rates, for the rate
    frontier) and the strongest classic links (quantised embeddings int8 / int4 / int2, product-quantised
    ``pq`` (fitted on train-split embeddings by :func:`fit_spec_quantizers`) and float16 as a labelled
    reference, JPEG and H.264 bitstreams), all digital rows at ``mcs`` (adaptive by default).

    ``fidelity`` of the digital links: ``"abstract"`` (default) draws codeword failures and their wrong
    bits from the shipped calibration tables (full LDPC + QAM simulation run to 50 block errors per
    point), so every row and item count uses the same link model; ``"auto"`` decodes calls of at most
    256 codewords bit-exactly instead.
    """
    rows = [SchemeSpec("semantic-analog")]
    if adapter is not None:
        rows += [SchemeSpec("adapted", {"adapter": adapter, "k": k}) for k in (192, 128, 64, 32)]
    quantizers = ["int8", "int4", "int2", *([pq] if pq else []), "float16"]
    rows += [SchemeSpec("digital-embedding", {"quantizer": q, "mcs": mcs, "fidelity": fidelity}) for q in quantizers]
    rows += [SchemeSpec("jpeg-ldpc", {"quality": 50, "mcs": mcs, "fidelity": fidelity}),
             SchemeSpec("h264-ldpc", {"crf": 28, "mcs": mcs, "fidelity": fidelity})]
    return rows


def fit_spec_quantizers(specs: list[SchemeSpec], train_embeddings: Callable[[], torch.Tensor], *,
                        seed: int = 0) -> list[SchemeSpec]:
    """Specs whose ``quantizer`` names a trained quantiser (``pq-<m>x<nbits>``) get it fitted on
    ``train_embeddings()`` (``[N, d]``, TRAIN split; called once, only if needed); others are returned as given."""
    from genscom.coding.quantize import PQ_PATTERN, fit_quantizer

    emb: torch.Tensor | None = None
    out = []
    for spec in specs:
        q = spec.kwargs.get("quantizer")
        if isinstance(q, str) and PQ_PATTERN.match(q):
            emb = train_embeddings() if emb is None else emb
            spec = SchemeSpec(spec.name, {**spec.kwargs, "quantizer": fit_quantizer(q, emb, seed=seed)})
        out.append(spec)
    return out


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Scheme kwargs as JSON values: objects (a fitted quantiser, an adapter) by their ``name``, else ``str``."""
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else getattr(v, "name", str(v))
            for k, v in kwargs.items()}


def best_digital(records: list[Record]) -> list[Record]:
    """The envelope of the classic rows: per channel and SNR, the digital record (H.264, JPEG or a quantised
    embedding, at its MCS) with the highest t2v R@1 (ties: fewer channel uses), as a ``best-digital`` record
    whose ``extra["from"]`` names it. Its metrics and intervals are that row's."""
    from genscom.bench.headline import CLASSIC_FAMILIES, METRIC, family_of

    best: dict[tuple[str, float], Record] = {}
    for r in records:
        if r.snr_db is None or r.channel == "none" or family_of(r.scheme) not in CLASSIC_FAMILIES:
            continue
        key = (r.channel, float(r.snr_db))
        cur = best.get(key)
        if cur is None or (r.metrics[METRIC], -r.channel_uses) > (cur.metrics[METRIC], -cur.channel_uses):
            best[key] = r
    return [dataclasses.replace(r, scheme="best-digital", extra={**r.extra, "from": r.scheme})
            for (_, _), r in sorted(best.items())]


def default_adapter(profile: str) -> str | None:
    """The shipped adapter trained for ``profile`` (``<profile>-k192``), or ``None`` when there is none."""
    from genscom.assets import list_adapters

    name = f"{profile}-k192"
    return name if name in list_adapters() else None


@dataclass
class RetrievalBenchConfig:
    """Options of the retrieval benchmark.

    ``n_items``/``snrs``/``realisations`` of ``None`` take the full or quick
    defaults (full: 1000 items, -10..20 dB step 2.5, 5 realisations; quick: 200
    items, 6 SNRs, 2 realisations, AWGN only unless ``channels`` is given).
    """

    dataset: str = "synthetic"
    profile: str = "mini-attr"  # the best offline tower genscom ships (t2v R@1 0.928 noiseless)
    n_items: int | None = None
    channels: tuple[str, ...] | None = None
    snrs: tuple[float, ...] | None = None
    realisations: int | None = None
    seed: int = 0
    quick: bool = False
    mcs: str = "adaptive"  # digital rows: adaptive MCS from the fed-back SNR; a fixed name gives labelled variants
    equal_uses: bool = True  # add a semantic row at the channel uses of the `equal_uses_family` rows
    equal_uses_family: str = "h264"  # headline.family_of name whose channel uses (per SNR) the analog row repeats to
    equal_uses_max_repeat: int = 64  # cap on that row's copies (memory: n_items x ceil(d/2) x repeat symbols)
    csi: Literal["pilot", "perfect"] = "pilot"  # "perfect": labelled upper bound (no pilots, true channel)
    feedback_bits: int = 6  # the SNR estimate fed back to adapting schemes (0.5 dB steps), counted
    pilots_per_block: int = 2  # pilots per coherence block on fading channels, counted
    pilot_mse: float | None = 1 / 3  # adapting schemes: more pilots at low fed-back SNR (LinkFeedback); None: fixed
    frontier_target: float = 0.95  # frontier: fewest channel uses reaching this x the family's noiseless R@1
    budget: float = 192  # equal-budget accuracy: channel uses per item every scheme may spend
    out_dir: str = "results/retrieval"
    device: str = "cpu"
    batch_size: int = 64
    index: str = "exact"  # "exact" (matrix product) or "faiss" (IndexFlatIP): identical scores
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    train_items: int | None = None  # train-split clips the PQ row is fitted on (None: 1000 quick, 4000 full)

    def __post_init__(self) -> None:
        if self.n_items is None:
            self.n_items = 200 if self.quick else 1000
        if self.train_items is None:
            self.train_items = 1000 if self.quick else 4000
        if self.channels is None:
            self.channels = ("awgn",) if self.quick else ("awgn", "rayleigh")
        if self.snrs is None:
            self.snrs = QUICK_SNRS if self.quick else FULL_SNRS
        if self.realisations is None:
            self.realisations = 2 if self.quick else 5
        if self.n_items < 2:
            raise ValueError(f"n_items must be >= 2 for retrieval, got {self.n_items}")
        if self.csi not in ("pilot", "perfect"):
            raise ValueError(f"csi must be 'pilot' (estimated, the default) or 'perfect' (upper bound), got {self.csi!r}")
        if self.pilot_mse is not None and not 0.0 < float(self.pilot_mse) < 1.0:
            raise ValueError(f"pilot_mse must be in (0, 1) (target channel-estimate error) or None (fixed pilots), "
                             f"got {self.pilot_mse!r}")
        if isinstance(self.pilots_per_block, bool) or not isinstance(self.pilots_per_block, int) \
                or self.pilots_per_block < 2:
            raise ValueError(f"pilots_per_block must be an int >= 2 (one for h, one more for N0), "
                             f"got {self.pilots_per_block!r}")
        if self.realisations < 1:
            raise ValueError(f"realisations must be >= 1, got {self.realisations}")
        if isinstance(self.equal_uses_max_repeat, bool) or not isinstance(self.equal_uses_max_repeat, int) \
                or self.equal_uses_max_repeat < 1:
            raise ValueError(f"equal_uses_max_repeat must be an int >= 1, got {self.equal_uses_max_repeat!r}")
        for s in self.snrs:
            if not math.isfinite(float(s)):
                raise ValueError(f"snrs must be finite dB values, got {s!r}")


def gallery_similarity(queries: torch.Tensor, gallery: torch.Tensor, *, index: str = "exact") -> torch.Tensor:
    """Scores ``[n_text, n_items]`` of L2-normalised queries against the received gallery.

    ``index="exact"``: one float32 matrix product (the scores of a FAISS ``IndexFlatIP``,
    without its per-query sort, which costs ~1 s per 2000 x 1000 search on a 2-core CPU);
    ``index="faiss"``: through a FAISS flat inner-product index.
    """
    if index == "faiss":
        return _similarity_faiss(queries, gallery)
    if index != "exact":
        raise ValueError(f"index must be 'exact' or 'faiss', got {index!r}")
    return queries.float() @ gallery.float().T


def _similarity_faiss(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Inner-product scores of every query against every gallery item through a FAISS flat index.

    ``queries [n_text, d]``, ``gallery [n_items, d]`` (both L2-normalised) -> ``[n_text, n_items]``.
    """
    import faiss
    import numpy as np

    g = np.ascontiguousarray(gallery.detach().float().cpu().numpy())
    q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    scores, ids = index.search(q, g.shape[0])
    sim = np.empty_like(scores)
    np.put_along_axis(sim, ids, scores, axis=1)
    return torch.from_numpy(sim)


def embed_delivered(delivered: Any, encode_clips: Callable[[torch.Tensor], torch.Tensor],
                    clean_cache: dict[int, torch.Tensor], dim: int) -> torch.Tensor:
    """Turn a :class:`Delivered` into gallery embeddings ``[B, d]``.

    Pixels are re-encoded by the receiver's encoder (clean decodes cached by
    item); failed items get the mean of the successfully received embeddings
    (PROTOCOL.md's failure rule), or zeros if nothing was received.
    """
    if delivered.embeddings is not None:
        return delivered.embeddings.float()
    frames = delivered.frames
    clean = delivered.extras.get("clean") or [False] * len(frames)
    out = torch.zeros(len(frames), dim)
    ok = torch.zeros(len(frames), dtype=torch.bool)
    todo = []
    for i, f in enumerate(frames):
        if f is None:
            continue
        ok[i] = True
        if clean[i] and i in clean_cache:
            out[i] = clean_cache[i]
        else:
            todo.append(i)
    # group by frame count so clips of equal length encode in one batch
    by_len: dict[int, list[int]] = {}
    for i in todo:
        by_len.setdefault(int(frames[i].shape[0]), []).append(i)
    for idx in by_len.values():
        emb = encode_clips(torch.stack([frames[i] for i in idx])).float().cpu()
        for j, i in enumerate(idx):
            out[i] = emb[j]
            if clean[i]:
                clean_cache[i] = emb[j]
    if ok.any() and (~ok).any():
        mean = out[ok].mean(dim=0)
        out[~ok] = mean / mean.norm().clamp_min(1e-12)
    return out


N_BOOT = 1000       # bootstrap replicates of every interval
BOOT_SEED = 12345   # fixed: every record draws the same resampling indices (reproducible, paired across schemes)
CI_NOTE = (f"95% percentile bootstrap over items x channel realisations, n_boot={N_BOOT}; "
           "ci95 = max(mean - lo, hi - mean) of the interval [lo, hi]")


def _aggregate(runs: list[dict[str, torch.Tensor]]) -> tuple[dict[str, float], dict[str, float]]:
    """Metrics (means over realisations) and ``ci95`` half-widths from per-query values of ``R`` realisations.

    ``runs[r]`` is :func:`~genscom.metrics.retrieval.retrieval_per_query` of realisation ``r``.
    Metrics: the mean over realisations of :func:`~genscom.metrics.retrieval.retrieval_summary`.
    ``ci95[k]`` for the recalls and MnR (per-query ``*_rank``) is
    :func:`~genscom.metrics.stats.half_width` of the 95% percentile bootstrap over the
    ``[R, n_queries]`` table (:func:`~genscom.metrics.stats.bootstrap_means`, ``N_BOOT`` replicates, generator
    seeded with ``BOOT_SEED``; one resampling shared by the metrics of a direction). ``RSUM``'s is that of
    ``100 x`` the sum of its six recalls (the same realisation draws for t2v and v2t, their queries resampled
    separately). MdR gets none (a median of discrete ranks).
    """
    from genscom.metrics.retrieval import RECALL_KS, retrieval_summary
    from genscom.metrics.stats import bootstrap_means, half_width

    summaries = [retrieval_summary(r) for r in runs]
    means = {k: sum(s[k] for s in summaries) / len(summaries) for k in summaries[0]}
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    cis: dict[str, float] = {}
    rsum_boot = torch.zeros(N_BOOT, dtype=torch.float64)
    for tag in ("t2v", "v2t"):
        names = [*(f"R@{k}" for k in RECALL_KS), "MnR"]
        cols = [f"{tag}_rank" if k == "MnR" else f"{tag}_{k}" for k in names]
        table = torch.stack([torch.stack([r[c] for r in runs]) for c in cols])        # (metrics, R, n_queries)
        boot = bootstrap_means(table, n_boot=N_BOOT, generator=torch.Generator().manual_seed(BOOT_SEED))
        bounds = torch.quantile(boot, q, dim=1)                                          # (2, metrics)
        for j, k in enumerate(names):
            cis[f"{tag}_{k}"] = half_width(means[f"{tag}_{k}"], float(bounds[0, j]), float(bounds[1, j]))
        rsum_boot += 100.0 * boot[:len(RECALL_KS)].sum(dim=0)
    lo, hi = torch.quantile(rsum_boot, q).tolist()
    cis["RSUM"] = half_width(means["RSUM"], lo, hi)
    return means, cis


@dataclass
class Gallery:
    """The test gallery a retrieval-style benchmark sends, encoded once.

    ``frames [N, T, H, W, 3]`` uint8; ``captions`` with ``text_to_item [n_text]``; ``text_emb [n_text, d]`` and
    ``clean_emb [N, d]`` from the receiver's encoder; ``batch`` the :class:`~genscom.schemes.base.SourceBatch`
    every scheme transmits; ``encode_clips`` re-encodes decoded pixels with the same encoder.
    """

    dataset: Any
    frames: torch.Tensor
    captions: list[str]
    text_to_item: torch.Tensor
    text_emb: torch.Tensor
    clean_emb: torch.Tensor
    batch: Any
    encode_clips: Callable[[torch.Tensor], torch.Tensor]

    @property
    def dim(self) -> int:
        return int(self.clean_emb.shape[1])

    @property
    def source_dim(self) -> int:
        """Values per clip (T x H x W x 3): the denominator of the channel bandwidth ratio."""
        return int(self.frames[0].numel())


def load_gallery(*, dataset_name: str, n_items: int, seed: int, dataset_kwargs: dict[str, Any], profile: str,
                 device: torch.device, batch_size: int, encoder: Any = None, dataset: Any = None) -> Gallery:
    """The test split of ``dataset_name`` (or ``dataset``) encoded by ``profile`` (or ``encoder``), as a :class:`Gallery`.

    Raises ``ValueError`` for a gallery of fewer than 2 items (retrieval needs a choice).
    """
    from genscom.data import create_dataset
    from genscom.encoders import create_encoder
    from genscom.schemes import SourceBatch

    if dataset is None:
        kw: dict[str, Any] = {"n_items": n_items, **dataset_kwargs}
        if dataset_name in SEEDED_DATASETS:
            kw["seed"] = seed
        dataset = create_dataset(dataset_name, split="test", **kw)
    if len(dataset) < 2:
        raise ValueError(f"dataset {dataset_name!r} has {len(dataset)} test items; retrieval needs at least 2")
    frames = dataset.stacked_frames()
    captions, text_to_item = dataset.all_captions()
    if encoder is None:
        encoder = create_encoder(profile, device=device)
    encoder.eval()

    def encode_clips(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return encoder.encode_clips(x.to(device), batch_size=batch_size).cpu()

    with torch.no_grad():
        text_emb = encoder.encode_text(captions, batch_size=batch_size).float().cpu()
    clean_emb = encode_clips(frames).float()
    return Gallery(dataset=dataset, frames=frames, captions=captions, text_to_item=text_to_item, text_emb=text_emb,
                   clean_emb=clean_emb, batch=SourceBatch(frames=frames, embeddings=clean_emb),
                   encode_clips=encode_clips)


def run_retrieval_bench(cfg: RetrievalBenchConfig, *, command: str = "", console: Any = None,
                        schemes: list[SchemeSpec] | None = None, encoder: Any = None,
                        dataset: Any = None, train_dataset: Any = None) -> dict[str, Any]:
    """Run the benchmark; write ``retrieval.json``, ``retrieval_r1.png`` and ``retrieval.md`` to ``cfg.out_dir``.

    ``encoder`` / ``dataset`` default to ``create_encoder(cfg.profile)`` and the
    test split of ``create_dataset(cfg.dataset)``; pass objects with the same
    methods to benchmark your own; ``train_dataset`` (default: the train split of ``cfg.dataset``,
    ``cfg.train_items`` clips) is where trained quantisers (PQ rows) are fitted. Returns a dict with the records, the output
    paths and the overhead reduction.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from genscom.channels.registry import create_channel
    from genscom.coding.calibration import default_cache_dir
    from genscom.data import create_dataset
    from genscom.metrics.retrieval import retrieval_per_query
    from genscom.schemes import DigitalPayload, create_scheme

    console = console or Console()
    schemes = schemes if schemes is not None else default_schemes(cfg.mcs, adapter=default_adapter(cfg.profile))
    out_dir = Path(cfg.out_dir)
    device = torch.device(cfg.device)

    console.print(f"[bold]retrieval benchmark[/] dataset={cfg.dataset} profile={cfg.profile} "
                  f"N={cfg.n_items} channels={','.join(cfg.channels)} SNRs={list(cfg.snrs)} "
                  f"realisations={cfg.realisations}")
    gal = load_gallery(dataset_name=cfg.dataset, n_items=cfg.n_items, seed=cfg.seed,
                       dataset_kwargs=cfg.dataset_kwargs, profile=cfg.profile, device=device,
                       batch_size=cfg.batch_size, encoder=encoder, dataset=dataset)
    ds, captions, text_to_item = gal.dataset, gal.captions, gal.text_to_item
    text_emb, clean_emb, encode_clips, batch = gal.text_emb, gal.clean_emb, gal.encode_clips, gal.batch
    dim, source_dim = gal.dim, gal.source_dim

    def metrics_of(gallery: torch.Tensor) -> dict[str, torch.Tensor]:  # per-query values, reduced by _aggregate
        return retrieval_per_query(gallery_similarity(text_emb, gallery, index=cfg.index), text_to_item)

    records: list[Record] = []
    upper, upper_ci = _aggregate([metrics_of(clean_emb)])  # interval over items only
    records.append(Record(scheme="noiseless", channel="none", snr_db=None, channel_uses=0, bits=None,
                          cbr=0.0, failure_rate=0.0, metrics=upper, ci95=upper_ci,
                          extra={"note": f"clean {cfg.profile} embeddings (upper bound)"}))
    chance_r1 = 1.0 / len(ds)

    def train_embeddings() -> torch.Tensor:
        """``[train_items, d]`` clip embeddings of the train split, for quantisers trained on it (PQ)."""
        train = train_dataset
        if train is None:
            kw: dict[str, Any] = {"n_items": cfg.train_items, **cfg.dataset_kwargs}
            if cfg.dataset in SEEDED_DATASETS:
                kw["seed"] = cfg.seed
            train = create_dataset(cfg.dataset, split="train", **kw)
        console.print(f"fitting trained quantisers on {len(train)} {cfg.dataset} train clips")
        return encode_clips(train.stacked_frames()).float()

    schemes = fit_spec_quantizers(schemes, train_embeddings, seed=cfg.seed)
    instances = [(spec, create_scheme(spec.name, **spec.kwargs)) for spec in schemes]

    def sensing_for(channel: Any, snr: float, scheme: Any, g: torch.Generator) -> LinkFeedback:
        """What the transmitter knows: the receiver's fed-back estimate for schemes that adapt, else only the
        link's pilot layout (the SNR is not read, so no feedback is sent or counted)."""
        if scheme.adapts:
            return link_feedback(channel, snr, csi=cfg.csi, bits=cfg.feedback_bits,
                                 pilots_per_block=cfg.pilots_per_block, pilot_mse=cfg.pilot_mse, generator=g)
        return LinkFeedback(channel=channel.name, csi=cfg.csi, coherence=getattr(channel, "coherence", None),
                            pilots_per_block=cfg.pilots_per_block)

    def csi_label(ch_name: str, payload: Any) -> dict[str, str]:
        """What the receiver knew: on AWGN the configured estimate (a fed-back SNR, or the truth); on fading
        whether the frame carried pilots."""
        if ch_name == "awgn":
            return {"csi": cfg.csi}
        return {"csi": "pilot" if payload.pilots is not None else "perfect"}

    def mcs_label(spec: SchemeSpec, used: dict[str, int]) -> dict[str, Any]:
        """Records over a digital link carry the MCS mode and the MCS chosen (the most frequent one)."""
        if not used:
            return {}
        return {"mcs": str(spec.kwargs.get("mcs", "qpsk-1/2")), "mcs_used": max(used, key=used.get)}

    total = len(instances) * len(cfg.channels) * len(cfg.snrs) * cfg.realisations
    baseline_uses: dict[tuple[str, float], float] = {}  # (channel, SNR) -> uses
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("sending", total=total)
        for spec, scheme in instances:
            clean_cache: dict[int, torch.Tensor] = {}
            # the scheme's own noiseless row: its reference for the frontier (a quantiser or codec loses some)
            ideal = LinkFeedback(channel="awgn", snr_db=30.0, csi="perfect")  # a noiseless link, known to be one
            payload = scheme.transmit(batch, sensing=ideal, generator=torch.Generator().manual_seed(cfg.seed))
            delivered = scheme.deliver(payload, None, None)
            means, cis = _aggregate([metrics_of(embed_delivered(delivered, encode_clips, clean_cache, dim))])
            records.append(Record(scheme=scheme.name, channel="none", snr_db=None,
                                  channel_uses=float(delivered.channel_uses.float().mean()), bits=None,
                                  cbr=float(delivered.channel_uses.float().mean()) / source_dim,
                                  failure_rate=float(delivered.failed.float().mean()), metrics=means, ci95=cis,
                                  extra={"scheme_kwargs": _plain(spec.kwargs), "note": "noiseless link (own reference)"}))
            for ch_name in cfg.channels:
                channel = create_channel(ch_name)
                fixed = None  # a scheme that does not adapt is transmitted once per channel
                if not scheme.adapts:
                    fixed = scheme.transmit(batch, sensing=sensing_for(channel, 0.0, scheme, torch.Generator()),
                                            generator=torch.Generator().manual_seed(cfg.seed))
                for snr in cfg.snrs:
                    runs, uses, fails, bits = [], [], [], []
                    mcs_used: dict[str, int] = {}
                    payload = fixed
                    for r in range(cfg.realisations):
                        progress.update(task, description=f"{scheme.name:>28} {ch_name:>8} {snr:+6.1f} dB")
                        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r * 7919 + int(snr * 10) + 17)
                        if scheme.adapts:
                            payload = scheme.transmit(batch, sensing=sensing_for(channel, float(snr), scheme, g),
                                                      generator=g)
                        delivered = scheme.deliver(payload, channel, float(snr), generator=g)
                        gallery = embed_delivered(delivered, encode_clips, clean_cache, dim)
                        runs.append(metrics_of(gallery))
                        uses.append(float(delivered.channel_uses.float().mean()))
                        fails.append(float(delivered.failed.float().mean()))
                        if isinstance(payload, DigitalPayload):  # bits on the link: source + CRC, headers, feedback
                            bits.append(float(payload.source_bits.float().mean() + payload.side_bits.float().mean()))
                            for plan in payload.plans:
                                mcs_used[plan.mcs.name] = mcs_used.get(plan.mcs.name, 0) + 1
                        progress.advance(task)
                    means, cis = _aggregate(runs)
                    mean_uses = sum(uses) / len(uses)
                    records.append(Record(scheme=scheme.name, channel=ch_name, snr_db=float(snr),
                                          channel_uses=mean_uses, bits=(sum(bits) / len(bits)) if bits else None,
                                          cbr=mean_uses / source_dim, failure_rate=sum(fails) / len(fails),
                                          metrics=means, ci95=cis,
                                          extra={"scheme_kwargs": _plain(spec.kwargs), **csi_label(ch_name, payload),
                                                 **mcs_label(spec, mcs_used)}))
                    if not console.is_terminal:  # no live bar in a log: one line per point instead
                        console.print(f"[{progress.tasks[0].completed}/{total}] {scheme.name} {ch_name} {snr:+.1f} dB: "
                                      f"t2v R@1 {means['t2v_R@1']:.3f}, {mean_uses:.0f} channel uses")
                    if family_of(scheme.name) == cfg.equal_uses_family:
                        key = (ch_name, float(snr))
                        baseline_uses[key] = max(baseline_uses.get(key, 0.0), mean_uses)

        # equal channel uses: per channel and SNR, the semantic embedding repeated to that point's channel uses
        # of the `equal_uses_family` row (capped at `equal_uses_max_repeat` copies: a capped row spends fewer
        # uses than the classic row, which only handicaps the semantic side)
        if cfg.equal_uses and baseline_uses:
            analog_uses = int(math.ceil(dim / 2))
            task2 = progress.add_task("equal channel uses", total=len(baseline_uses) * cfg.realisations)
            schemes_by_repeat: dict[int, Any] = {}
            for (ch_name, snr), target in sorted(baseline_uses.items()):
                channel = create_channel(ch_name)
                wanted = max(1, int(round(target / analog_uses)))
                repeat = min(wanted, cfg.equal_uses_max_repeat)
                scheme = schemes_by_repeat.setdefault(repeat, create_scheme("semantic-analog", repeat=repeat))
                payload = scheme.transmit(batch, sensing=sensing_for(channel, 0.0, scheme, torch.Generator()))
                runs = []
                for r in range(cfg.realisations):
                    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + r * 7919 + int(snr * 10) + 29)
                    delivered = scheme.deliver(payload, channel, float(snr), generator=g)
                    runs.append(metrics_of(delivered.embeddings))
                    progress.advance(task2)
                uses_i = float(payload.channel_uses.float().mean())
                csi = csi_label(ch_name, payload)
                del payload, delivered
                means, cis = _aggregate(runs)
                records.append(Record(
                    scheme=f"semantic-analog-equal-{cfg.equal_uses_family}", channel=ch_name, snr_db=float(snr),
                    channel_uses=uses_i, bits=None, cbr=uses_i / source_dim, failure_rate=0.0, metrics=means,
                    ci95=cis, extra={"repeat": repeat, "target_uses": target, "capped": repeat < wanted,
                                     "note": f"semantic-analog repeated to the channel uses of the "
                                             f"{cfg.equal_uses_family} row at this SNR"
                                             + (f" (capped at {repeat} copies)" if repeat < wanted else ""),
                                     **csi}))

    records += best_digital(records)
    reference = family_references(records, encoder_r1=upper["t2v_R@1"])
    frontier = rate_frontier(records, reference=reference, target=cfg.frontier_target)
    overhead = overhead_reduction_per_snr(records, reference=reference, target=cfg.frontier_target)
    overhead_sem = overhead_at_semantic_accuracy(records, reference=reference, target=cfg.frontier_target)
    budget = equal_budget(records, budget=cfg.budget, chance=chance_r1)
    meta = make_meta(command=command, seed=cfg.seed, dataset=cfg.dataset, n_items=len(ds), profile=cfg.profile,
                     quick=cfg.quick, channels=list(cfg.channels), snrs=list(cfg.snrs),
                     realisations=cfg.realisations, mcs=cfg.mcs, csi=cfg.csi,
                     feedback_bits=cfg.feedback_bits, pilots_per_block=cfg.pilots_per_block,
                     pilot_mse=cfg.pilot_mse, source_dim=source_dim,
                     n_queries=len(captions), chance_t2v_R1=chance_r1, ci=CI_NOTE,
                     family_reference_R1=reference, frontier_target=cfg.frontier_target, frontier=frontier,
                     overhead_reduction=overhead,
                     overhead_at_semantic_accuracy=overhead_sem, equal_budget_uses=cfg.budget, equal_budget=budget,
                     calibration_cache=str(default_cache_dir()))
    json_path = write_results(out_dir / "retrieval.json", "retrieval", meta, records)

    png = plot_retrieval(records, out_dir / "retrieval_r1.png",
                         title=f"{cfg.dataset} test N={len(ds)}, profile {cfg.profile}",
                         hlines={"noiseless": upper["t2v_R@1"], "chance": chance_r1})
    frontier_png = plot_frontier(frontier, out_dir / "retrieval_frontier.png", n_items=len(ds),
                                 title=f"rate-accuracy frontier, {cfg.dataset} N={len(ds)}, csi {cfg.csi}")
    columns = ["scheme", "channel", "snr_db", "channel_uses", "cbr", "failure_rate", "t2v_R@1", "t2v_R@5",
               "t2v_R@10", "t2v_MdR", "v2t_R@1", "RSUM"]
    console.print(render_table(records, columns, title="text-video retrieval over the channel"))
    for ch, by_snr in overhead.items():
        console.print(f"overhead reduction vs the best classic scheme on {ch} (classic accuracy, semantic at least "
                      f"as good): " + "; ".join(_overhead_text(snr, row) for snr, row in by_snr.items()))
    for ch, by_snr in overhead_sem.items():
        console.print(f"overhead reduction at the semantic frontier's accuracy on {ch} (classic at least as good): "
                      + "; ".join(_overhead_text(snr, row, semantic_sets=True) for snr, row in by_snr.items()))
    for ch, row in budget.items():
        console.print(f"equal budget ({cfg.budget:g} channel uses) mean t2v R@1 on {ch}: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    md = markdown_table(records, columns)
    from genscom.utils import atomic_write_text

    atomic_write_text(out_dir / "retrieval.md", md + "\n")
    console.print(f"wrote {json_path}, {png}")
    return {"records": records, "json": json_path, "png": png, "frontier_png": frontier_png, "frontier": frontier,
            "overhead_reduction": overhead, "overhead_at_semantic_accuracy": overhead_sem, "equal_budget": budget}


def _overhead_text(snr: str, row: dict[str, Any] | None, *, semantic_sets: bool = False) -> str:
    """One SNR's entry of an overhead analysis as printed (``semantic_sets``: the semantic row sets the accuracy)."""
    if row is None:
        return f"{snr} dB: no {'semantic' if semantic_sets else 'classic'} scheme reaches its target"
    if row["reduction"] is None:
        return (f"{snr} dB: no classic row is as good as {row['semantic']}" if semantic_sets else
                f"{snr} dB: no semantic row matches {row['classic']} (semantic loses)")
    if row["reduction"] < 0:
        return (f"{snr} dB: semantic loses, {row['semantic']} needs "
                f"{row['semantic_uses'] / row['classic_uses']:.1f}x the channel uses of {row['classic']}")
    return f"{snr} dB: {100 * row['reduction']:.1f}% ({row['semantic']} vs {row['classic']})"


def plot_retrieval(records: list[Record] | list[dict[str, Any]], path: str | Path, *, title: str = "",
                   metric: str = "t2v_R@1", hlines: dict[str, float] | None = None) -> Path:
    """R@1 vs SNR: one colour per scheme, solid for AWGN, dashed for Rayleigh, dotted for Rician."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r.to_json() if isinstance(r, Record) else r for r in records]
    schemes = list(dict.fromkeys(r["scheme"] for r in rows if r["snr_db"] is not None))
    cmap = plt.get_cmap("tab10" if len(schemes) <= 10 else "tab20")
    series: dict[str, tuple[list[float], list[float]]] = {}
    styles: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["snr_db"] is None:
            continue
        label = f"{r['scheme']} ({r['channel']}, {r['channel_uses']:.0f} ch. uses)"
        xs, ys = series.setdefault(label, ([], []))
        xs.append(r["snr_db"])
        ys.append(r["metrics"][metric])
        styles[label] = {"color": cmap(schemes.index(r["scheme"]) % cmap.N),
                         "ls": {"awgn": "-", "rayleigh": "--"}.get(r["channel"], ":")}
    return plot_metric_vs_snr(series, path, ylabel=metric.replace("t2v_", "text-to-video "), title=title,
                              styles=styles, hlines=hlines)
