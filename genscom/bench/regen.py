r"""``genscom bench regen``: does the regenerated picture carry the sender's meaning?

Test-split items of the procedural dataset; the *source* is each clip's middle frame (64 x 64). Rows, each on
``channel`` at every SNR of ``snrs``, from the same items:

* ``regen``: the ``mini-attr`` embedding of the source frame (``source="frame"``; ``"clip"``: of the whole
  clip, a video sender) as analog symbols (192 channel uses, plus pilots on fading channels), then the
  diffusion decoder draws a frame from the received embedding (:class:`~genscom.schemes.regen.RegenScheme`).
* ``regen`` best of N (``candidates`` > 1, label ``regen best-of-N``): the same link and the same received
  embeddings; the receiver draws N pictures per item and keeps the one its own image tower finds closest to
  what it received (:mod:`genscom.generation.rerank`), judged on the task's attributes (``rerank_on``, the
  shape and colour, as the decoder's reader reads them). Same channel uses, N x the sampling time.
* ``deepjscc``: the learned pixel peer at the same channel uses (:class:`~genscom.schemes.regen.DeepJSCCScheme`).
* ``jpeg-ldpc`` at its **own** channel uses: the source frame as a JPEG at each quality of ``jpeg_qualities``
  over LDPC + QAM with the adaptive MCS (chosen from the fed-back SNR estimate, feedback and pilots counted),
  really decoded. An item whose JPEG does not decode shows a mid-grey frame (the receiver has nothing).
* ``jpeg-ldpc`` at the **equal budget** (``budget`` uses, the semantic rows' cost): the smallest JPEG of any
  test frame (quality 1) is set against the densest MCS's information bits per channel use. When it does not
  fit (it does not: a 64 x 64 JPEG is about 700 bytes with its headers, about 1000 channel uses at 64-QAM rate
  0.93), nothing is decodable: every item shows the grey frame, ``failure_rate`` 1.

Metrics per row (means over items, 95 % bootstrap half-widths over items in ``ci95``):

* ``attr_acc``: the largest object's shape **and** colour both right, read by the attribute classifier
  (:mod:`genscom.generation.attributes`, trained on *real* train frames; its accuracy on the real test frames
  is ``meta.classifier_acc_real``, the ceiling); ``shape_acc``, ``colour_acc``, ``count_acc`` separately;
* ``emb_cos``: cosine between the ``mini-attr`` embeddings of the source frame and of the delivered frame;
* ``extra.read_attr_acc`` (``regen`` rows of a decoder with a semantic reader): how often the shape and colour
  the decoder *read* from the received embedding were right, before it drew anything; ``attr_acc`` below it
  is what the drawing lost;
* ``psnr_db`` and ``ssim`` against the source frame, for reference (MS-SSIM is not defined at 64 x 64 with
  its five standard scales: it needs 161 pixels a side).

Outputs in ``out_dir``: ``regen.json`` (PROTOCOL schema, ``"benchmark": "regen"``), ``regen.md`` (the table),
``regen.png`` (attribute accuracy vs SNR) and ``regen_grid.png`` (one row per item: the source, then each
scheme at ``grid_snrs``). ``meta.sampling`` holds the decoder's sampling speed (images/s, DDIM steps, guidance,
device).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from genscom.bench.results import markdown_table, plot_metric_vs_snr, render_table
from genscom.results import Record, make_meta, write_results

logger = logging.getLogger(__name__)

DEFAULT_CLASSIFIER = "attr-classifier"
DEFAULT_DECODER = "regen-mini-attr-v5"  # the CLI leaves --decoder unset to mean this
N_BOOT = 1000
GREY = 128  # what a receiver with nothing decodable shows (uint8)


@dataclass
class RegenBenchConfig:
    """Settings of ``genscom bench regen`` (the defaults are the full run; :func:`quick_regen_config`)."""

    n_items: int = 200
    snrs: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
    channel: str = "awgn"
    source: Literal["frame", "clip"] = "frame"
    decoder: str = DEFAULT_DECODER
    classifier: str = DEFAULT_CLASSIFIER
    deepjscc: str | None = "deepjscc-k192"
    jpeg_qualities: tuple[int, ...] = (10, 50)
    budget: int = 192
    steps: int | None = None              # DDIM steps (default: the decoder's config)
    guidance_scale: float | None = None   # classifier-free guidance (default: the decoder's config)
    candidates: int = 1                   # > 1: also the best-of-N row (pictures drawn per item at the receiver)
    rerank_on: tuple[str, ...] = ("shape", "colour")  # what the best-of-N choice looks at: the task's attributes
    grid_items: int = 6
    grid_snrs: tuple[float, ...] = (-5.0, 5.0, 15.0)
    seed: int = 0
    batch_size: int = 50
    quick: bool = False
    out_dir: str = "results/regen"
    device: str = "cpu"
    adapters_dir: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("n_items", "budget", "batch_size", "candidates"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RegenBenchConfig.{name} must be a positive integer, got {v!r}")
        if self.n_items < 2:
            raise ValueError(f"RegenBenchConfig.n_items must be >= 2 (intervals over items), got {self.n_items}")
        if not self.snrs or any(not math.isfinite(float(s)) for s in self.snrs):
            raise ValueError(f"snrs must be a non-empty list of finite dB values, got {self.snrs!r}")
        missing = [s for s in self.grid_snrs if float(s) not in {float(x) for x in self.snrs}]
        if missing:
            raise ValueError(f"grid_snrs {missing} are not among snrs {list(self.snrs)}: add them to --snrs")
        if self.source not in ("frame", "clip"):
            raise ValueError(f"source must be 'frame' or 'clip', got {self.source!r}")
        if any(isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 95 for q in self.jpeg_qualities):
            raise ValueError(f"jpeg_qualities must be integers in 1..95, got {self.jpeg_qualities!r}")


def quick_regen_config(**overrides: Any) -> RegenBenchConfig:
    """The ``--quick`` run: 48 items, 3 SNRs, JPEG at quality 10, 10 DDIM steps (a few minutes on 2 cores)."""
    base = dict(n_items=48, snrs=(-5.0, 5.0, 15.0), jpeg_qualities=(10,), steps=10, grid_items=4, quick=True,
                out_dir="results/regen-quick")
    return RegenBenchConfig(**{**base, **overrides})


# ----------------------------------------------------------------------------- scoring
@dataclass
class Scorer:
    """Per-item metrics of delivered frames against the source frames (all ``[N]`` tensors)."""

    source: torch.Tensor          # [N, 3, S, S] float in [0, 1]
    source_emb: torch.Tensor      # [N, d] unit-norm embeddings of the source frames
    labels: dict[str, torch.Tensor]
    classifier: Any
    encoder: Any
    source_u8: torch.Tensor = field(init=False)  # [N, S, S, 3] uint8, for PSNR / SSIM

    def __post_init__(self) -> None:
        self.source_u8 = (self.source * 255).round().to(torch.uint8).permute(0, 2, 3, 1)

    def __call__(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """``frames`` uint8 ``[N, 1, S, S, 3]`` -> ``{metric: [N] float}``."""
        from genscom.metrics.signal import psnr, ssim

        images = frames[:, 0].permute(0, 3, 1, 2).float().div(255.0)
        pred = self.classifier.predict(images)
        ok = {k: (pred[k] == self.labels[k]).float() for k in ("shape", "colour", "count")}
        with torch.no_grad():
            emb = self.encoder.encode_clips(frames).float()
        src_u8, out_u8 = self.source_u8, frames[:, 0]
        return {"attr_acc": ok["shape"] * ok["colour"], "shape_acc": ok["shape"], "colour_acc": ok["colour"],
                "count_acc": ok["count"],
                "emb_cos": torch.nn.functional.cosine_similarity(emb, self.source_emb, dim=-1),
                "psnr_db": psnr(out_u8, src_u8).float().clamp(max=100.0),
                "ssim": ssim(out_u8, src_u8).float()}


def summarise(per_item: dict[str, torch.Tensor], seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Means and 95 % bootstrap half-widths over items of every per-item metric."""
    from genscom.metrics.stats import bootstrap_ci, half_width

    metrics, ci = {}, {}
    for k, v in per_item.items():
        mean, lo, hi = bootstrap_ci(v.view(1, -1), n_boot=N_BOOT, generator=torch.Generator().manual_seed(seed))
        metrics[k] = round(mean, 4)
        ci[k] = round(half_width(mean, lo, hi), 4)
    return metrics, ci


def grey_frames(n: int, size: int) -> torch.Tensor:
    """What a receiver with nothing decodable shows: uint8 ``[n, 1, size, size, 3]`` mid-grey."""
    return torch.full((n, 1, size, size, 3), GREY, dtype=torch.uint8)


def jpeg_fits_budget(frames: torch.Tensor, budget: int) -> dict[str, Any]:
    """Whether the smallest JPEG of any key frame (quality 1) fits ``budget`` channel uses at the densest MCS.

    Generous to JPEG: no CRC, no length header, no pilots, no codeword granularity. Returns the numbers."""
    from genscom.coding import MCS_TABLE
    from genscom.coding.source import encode_jpeg

    best = max(MCS_TABLE.values(), key=lambda m: m.bits_per_symbol * m.code_rate)
    info_per_use = float(best.bits_per_symbol * best.code_rate)
    t = frames.shape[1] // 2
    smallest = min(len(encode_jpeg(f[t], quality=1)) for f in frames)
    needed = math.ceil(8 * smallest / info_per_use)
    return {"smallest_jpeg_bytes": smallest, "densest_mcs": best.name,
            "info_bits_per_use": round(info_per_use, 4), "uses_needed": needed, "budget": budget,
            "fits": needed <= budget}


# ----------------------------------------------------------------------------- the run
def run_regen_bench(cfg: RegenBenchConfig, *, command: str = "", console: Any = None, dataset: Any = None,
                    encoder: Any = None, classifier: Any = None, decoder: Any = None, deepjscc: Any = None
                    ) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns ``{"records", "json", "meta"}``.

    ``dataset``, ``encoder``, ``classifier``, ``decoder``, ``deepjscc``: prebuilt parts (tests), else built
    from ``cfg`` (the shipped weights, found on the adapter search path)."""
    from rich.console import Console
    from rich.progress import Progress

    from genscom.assets import find_adapter
    from genscom.channels.registry import create_channel
    from genscom.channels.sensing import link_feedback
    from genscom.data import create_dataset
    from genscom.encoders import create_encoder
    from genscom.generation.attributes import AttributeClassifier, largest_object_labels
    from genscom.schemes import SourceBatch, create_scheme
    from genscom.schemes.regen import DeepJSCCScheme, RegenScheme, key_frame

    console = console or Console()
    t_start = time.perf_counter()
    search = list(cfg.adapters_dir)
    regen = RegenScheme(decoder=decoder if decoder is not None else find_adapter(cfg.decoder, search=search, train_command="genscom train decoder"),
                        steps=cfg.steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed,
                        batch_size=cfg.batch_size, device=cfg.device)
    regen.name = "regen"
    profile = regen.profile or "mini-attr"
    ds = dataset if dataset is not None else create_dataset("synthetic", split="test", n_items=cfg.n_items,
                                                            seed=cfg.seed)
    frames = ds.stacked_frames()                                         # [N, T, S, S, 3] uint8
    n, size = frames.shape[0], frames.shape[2]
    t_mid = frames.shape[1] // 2
    src_frames = frames[:, t_mid:t_mid + 1].contiguous()                 # [N, 1, S, S, 3]
    labels = largest_object_labels(ds)
    enc = encoder if encoder is not None else create_encoder(profile, device=cfg.device).eval()
    clf = classifier if classifier is not None else AttributeClassifier.from_pretrained(
        find_adapter(cfg.classifier, search=search, train_command="genscom train classifier")).eval()
    with torch.no_grad():
        src_emb = enc.encode_clips(src_frames).float()
        sent_emb = src_emb if cfg.source == "frame" else enc.encode_clips(frames).float()
    score = Scorer(source=key_frame(frames), source_emb=src_emb, labels=labels, classifier=clf, encoder=enc)
    real = score(src_frames)
    classifier_acc_real = {k: round(float(real[k].mean()), 4) for k in ("attr_acc", "shape_acc", "colour_acc",
                                                                         "count_acc")}
    schemes: list[tuple[str, Any, dict[str, Any]]] = [("regen", regen, {"source": cfg.source})]
    if cfg.candidates > 1:
        best = RegenScheme(decoder=regen.decoder, steps=cfg.steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed,
                           batch_size=cfg.batch_size, candidates=cfg.candidates, encoder=enc,
                           rerank_on=_rerank_keys(regen.decoder, cfg.rerank_on), device=cfg.device)
        best.name = "regen"
        schemes.append(("regen", best, {"source": cfg.source, "candidates": cfg.candidates}))
    if cfg.deepjscc is not None or deepjscc is not None:
        djscc = DeepJSCCScheme(model=deepjscc if deepjscc is not None else find_adapter(cfg.deepjscc, search=search, train_command="genscom train deepjscc"),
                               device=cfg.device)
        schemes.append(("deepjscc", djscc, {}))
    for q in cfg.jpeg_qualities:
        schemes.append(("jpeg-ldpc", create_scheme("jpeg-ldpc", quality=q, mcs="adaptive"),
                        {"quality": q, "mcs": "adaptive", "uses": "own"}))
    fit = jpeg_fits_budget(frames, cfg.budget)
    channel = create_channel(cfg.channel)
    batch = SourceBatch(frames=src_frames, embeddings=sent_emb)
    records: list[Record] = []
    grid: dict[tuple[str, float], torch.Tensor] = {}
    sampling: dict[str, Any] = {}
    source_dim = int(src_frames[0].numel())

    def add(name: str, snr: float | None, delivered_frames: torch.Tensor, uses: float, failure: float,
            extra: dict[str, Any]) -> None:
        metrics, ci = summarise(score(delivered_frames), cfg.seed)
        records.append(Record(scheme=name, channel=cfg.channel if snr is not None else "none", snr_db=snr,
                              channel_uses=uses, bits=None, cbr=uses / source_dim, failure_rate=failure,
                              metrics=metrics, ci95=ci, extra=extra))
        progress.advance(task)
        progress.console.log(f"{name} {extra.get('quality', '')} @ "
                             f"{'noiseless' if snr is None else f'{snr:+g} dB'}: attr {metrics['attr_acc']:.3f}, "
                             f"emb_cos {metrics['emb_cos']:.3f}, PSNR {metrics['psnr_db']:.1f} dB, {uses:.0f} uses")

    progress = Progress(console=console)
    task = progress.add_task("regen points", total=2 + len(cfg.snrs) * (len(schemes) + 1))
    progress.start()
    try:
        d = regen.deliver(regen.transmit(batch), None, None)
        add("regen", None, d.frames, 0.0, 0.0, {"source": cfg.source, "noiseless": True})
        add("real", None, src_frames, 0.0, 0.0, {"note": "the source frames themselves (classifier ceiling)"})
        for snr in cfg.snrs:
            for name, scheme, extra in schemes:
                g = torch.Generator().manual_seed(cfg.seed * 1000 + int(round(float(snr) * 10)))
                sensing = link_feedback(channel, float(snr), generator=g)
                t0 = time.perf_counter()
                payload = scheme.transmit(batch, sensing=sensing, generator=g)
                out = scheme.deliver(payload, channel, float(snr), generator=g)
                dt = time.perf_counter() - t0
                if name == "regen" and "candidates" in extra:
                    sampling["best_of_n"] = {"candidates": cfg.candidates, "images_per_s": round(n / dt, 3),
                                             "seconds": round(dt, 2)}
                if name == "regen" and "images_per_s" not in sampling:
                    sampling = {**sampling, "images_per_s": round(n / dt, 3), "steps": regen.steps or
                                regen.decoder.config.sample_steps, "guidance_scale": regen.guidance_scale or
                                regen.decoder.config.guidance_scale, "device": str(cfg.device),
                                "batch_size": cfg.batch_size, "seconds": round(dt, 2), "items": n}
                got = out.frames
                if isinstance(got, list) or got is None:   # bitstream schemes: per-item clips, None = lost
                    items = got if got is not None else [None] * n
                    got = torch.stack([c[:1] if c is not None else grey_frames(1, size)[0] for c in items])
                failure = float(out.failed.float().mean())
                if name == "regen":
                    extra = {**extra, **read_accuracy(regen.decoder, out.embeddings, labels)}
                add(name, float(snr), got, float(out.channel_uses.float().mean()), failure, dict(extra))
                if float(snr) in {float(s) for s in cfg.grid_snrs}:
                    key = _row_label(name, extra).replace(" (own uses)", "")
                    grid[(key, float(snr))] = got[:cfg.grid_items]
            # JPEG at the semantic rows' budget: nothing decodable when even its smallest stream does not fit
            if not fit["fits"]:
                add("jpeg-ldpc", float(snr), grey_frames(n, size), float(cfg.budget), 1.0,
                    {"quality": 1, "uses": "equal budget", "budget": cfg.budget,
                     "note": f"smallest JPEG needs {fit['uses_needed']} uses"})
            else:  # pragma: no cover - not reachable with 64 x 64 frames; say so rather than guess
                raise NotImplementedError(f"a JPEG fits the {cfg.budget}-use budget ({fit}); run the link at it")
    finally:
        progress.stop()
    seconds = round(time.perf_counter() - t_start, 1)
    meta = make_meta(command=command, seed=cfg.seed, dataset="synthetic", n_items=n, profile=profile,
                     quick=cfg.quick, channel=cfg.channel, snrs=list(cfg.snrs), source=cfg.source,
                     classifier_acc_real=classifier_acc_real["attr_acc"], classifier_real=classifier_acc_real,
                     jpeg_budget=fit, budget=cfg.budget, sampling=sampling, seconds=seconds,
                     decoder=cfg.decoder if decoder is None else "given", grey_fallback=GREY,
                     ci_note=f"95% percentile bootstrap over items, n_boot={N_BOOT}; ci95 = max(mean - lo, hi - mean)")
    out_dir = Path(cfg.out_dir)
    path = write_results(out_dir / "regen.json", "regen", meta, records)
    cols = ["scheme", "channel", "snr_db", "channel_uses", "failure_rate", "attr_acc", "shape_acc", "colour_acc",
            "count_acc", "emb_cos", "psnr_db", "ssim"]
    table_rows = [replace(r, scheme=_label(r)) for r in records]
    console.print(render_table(table_rows, cols, title=f"regeneration over {cfg.channel} ({n} test items)"))
    from genscom.utils import atomic_write_text

    atomic_write_text(out_dir / "regen.md", markdown_table(table_rows, cols) + "\n")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in table_rows:
        if r.snr_db is not None:
            xs, ys = series.setdefault(r.scheme, ([], []))
            xs.append(float(r.snr_db))
            ys.append(r.metrics["attr_acc"])
    plot_metric_vs_snr(series, out_dir / "regen.png", ylabel="attribute accuracy (shape and colour)",
                       title=f"regeneration, {n} items, {cfg.channel}",
                       hlines={"real frames (classifier ceiling)": classifier_acc_real["attr_acc"]})
    save_grid(src_frames[:cfg.grid_items], grid, cfg.grid_snrs, out_dir / "regen_grid.png")
    console.print(f"classifier on real test frames: attr {classifier_acc_real['attr_acc']:.3f}; "
                  f"sampling {sampling.get('images_per_s')} images/s at {sampling.get('steps')} steps; "
                  f"{seconds} s; results {path}")
    return {"records": records, "json": path, "meta": meta}


def read_accuracy(decoder: Any, received: torch.Tensor | None, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """What a decoder with a semantic reader read from the received embeddings, before drawing:
    ``{"read_attr_acc", "read_shape_acc", "read_colour_acc"}`` against ``labels`` (``{}`` without a reader)."""
    classes = getattr(getattr(decoder, "config", None), "reader_classes", {}) or {}
    if received is None or not {"shape", "colour"} <= set(classes):
        return {}
    with torch.no_grad():
        logits = decoder.read(received.float().to(next(decoder.parameters()).device))
    right = {k: logits[k].argmax(-1).cpu() == labels[k] for k in ("shape", "colour")}
    return {"read_attr_acc": round(float((right["shape"] & right["colour"]).float().mean()), 4),
            "read_shape_acc": round(float(right["shape"].float().mean()), 4),
            "read_colour_acc": round(float(right["colour"].float().mean()), 4)}


def _rerank_keys(decoder: Any, wanted: tuple[str, ...]) -> tuple[str, ...] | None:
    """The task's attributes that the decoder's reader reads (``None``: a decoder without them, all it reads)."""
    reads = getattr(decoder.config, "reader_classes", None) or {}
    keys = tuple(k for k in wanted if k in reads)
    return keys or None


def _label(r: Record) -> str:
    return _row_label(r.scheme, r.extra)


def _row_label(scheme: str, e: dict[str, Any]) -> str:
    """A row's name in the table, the plot and the grid (the scheme, told apart by its settings)."""
    if scheme == "regen" and e.get("candidates"):
        return f"regen best-of-{e['candidates']}"
    if scheme == "jpeg-ldpc":
        own = e.get("uses") != "equal budget"
        return f"jpeg-ldpc q{e.get('quality')} " + ("(own uses)" if own else f"({e.get('budget')} uses)")
    return scheme


def save_grid(source: torch.Tensor, grid: dict[tuple[str, float], torch.Tensor], snrs: tuple[float, ...],
              path: str | Path) -> Path:
    """One row per item: the source frame, then each scheme at each of ``snrs`` (column titles say which)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from genscom.bench.results import save_figure

    names = list(dict.fromkeys(k[0] for k in grid))
    cols = [("source", None)] + [(nm, float(s)) for nm in names for s in snrs if (nm, float(s)) in grid]
    rows = source.shape[0]
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.2 * len(cols), 1.25 * rows + 0.4), dpi=110, squeeze=False)
    for j, (nm, snr) in enumerate(cols):
        imgs = source if snr is None else grid[(nm, snr)]
        for i in range(rows):
            ax = axes[i][j]
            ax.imshow(imgs[i, 0].numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(nm if snr is None else f"{nm}\n{snr:+g} dB", fontsize=6)
    fig.tight_layout(pad=0.2)
    return save_figure(fig, path)


__all__ = ["DEFAULT_DECODER", "RegenBenchConfig", "Scorer", "grey_frames", "jpeg_fits_budget", "quick_regen_config", "read_accuracy",
           "run_regen_bench", "save_grid"]
