"""The ``genscom`` command: thin typer front end (parse, call the library, print with rich).

Errors are handled in ONE place, :class:`_ErrorsToOneLine` (the root command group): genscom's
own errors (:mod:`genscom.errors`) and ``ValueError``/``TypeError``/``OSError``/``ImportError``
print ``error: <message>`` on stderr and exit with status 2; anything else prints one
``error: unexpected ...`` line and exits with 1. ``genscom --debug <command>`` also prints
the traceback. Also runs as ``python -m genscom``.
"""

from __future__ import annotations

import shlex
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from genscom.errors import one_line

_DEBUG = "genscom.debug"  # key in click's context meta (shared by the whole command chain)
EXPECTED_ERRORS = (ValueError, TypeError, OSError, ImportError)  # genscom.errors.GenscomError is a ValueError


class _ErrorsToOneLine(TyperGroup):
    """The root group: turns an exception escaping any command into one ``error:`` line (exit 2; 1 for an
    unexpected type), preceded by the traceback with ``--debug``. It runs inside click's own handling, so
    an ``EOFError`` never becomes click's bare ``Aborted!``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors reach the user
            expected = isinstance(exc, EXPECTED_ERRORS)
            if ctx.meta.get(_DEBUG):
                traceback.print_exc(file=sys.stderr)
            msg = one_line(exc, limit=2000)
            if isinstance(exc, (KeyError, IndexError)) or not msg:  # their text alone ("'x'") says nothing
                msg = f"{type(exc).__name__}: {msg}".rstrip(": ")
            if not expected:
                msg = f"unexpected {type(exc).__name__}: {msg} (rerun with `genscom --debug ...` for the traceback)"
            click.echo(f"error: {msg}", err=True)
            raise click.exceptions.Exit(2 if expected else 1) from None


app = typer.Typer(help="genscom: generative semantic communication toolkit.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=_ErrorsToOneLine)
bench_app = typer.Typer(help="Benchmarks: print a table, write results JSON (PROTOCOL.md) and a PNG plot.",
                        no_args_is_help=True)
train_app = typer.Typer(help="Train genscom's own models.", no_args_is_help=True)
finetune_app = typer.Typer(help="PEFT fine-tuning of the LLM agents.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
app.add_typer(finetune_app, name="finetune")

# a pipe or CI log has no terminal width: give tables room rather than 80 columns
console = Console(width=None if sys.stdout.isatty() else 180)


def _command_line() -> str:
    return "genscom " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _parse_floats(text: Optional[str], name: str) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name} must be comma-separated numbers, e.g. -5,0,5 (got {text!r})") from None
    if not vals:
        raise typer.BadParameter(f"{name} is empty; give e.g. -5,0,5")
    return vals


def _split_names(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")`` (comma-separated names of a CLI flag)."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _check_card(card: str) -> None:
    """Read and validate an agent card, its partner and the headers of their adapter weights (no model is loaded)."""
    from genscom.agents.agent import check_agent_folder
    from genscom.agents.card import load_card

    first = load_card(card)
    for c in (first, first.partner_card()) if first.partner else (first,):
        c.prompt_path()
        folder = c.adapter_path()
        if folder is not None:
            check_agent_folder(folder, role=c.role)


def _check_profile(profile: str) -> None:
    from genscom.encoders.registry import check_profile

    check_profile(profile)


@app.callback()
def _root(ctx: typer.Context,
          debug: bool = typer.Option(False, "--debug", help="on an error, also print the full traceback (by "
                                                            "default: one `error:` line)")) -> None:
    """genscom: generative semantic communication toolkit."""
    ctx.meta[_DEBUG] = debug


@app.command()
def version() -> None:
    """Print the genscom version."""
    from genscom._version import __version__

    console.print(__version__)


@bench_app.command("channel")
def bench_channel(
    quick: bool = typer.Option(False, "--quick", help="fewer SNR points and bits (about a minute)"),
    out: Path = typer.Option(Path("results/channel"), "--out", help="output folder for JSON and PNG"),
    seed: int = typer.Option(0, "--seed"),
    channels: str = typer.Option("awgn,rayleigh", "--channels", help="comma-separated: awgn,rayleigh"),
) -> None:
    """BER/BLER vs SNR of uncoded QAM and LDPC+QAM beside closed forms, and PSNR of real JPEG/H.264 over LDPC."""
    from genscom.bench.channel import ChannelBenchConfig, run_channel_bench

    cfg = ChannelBenchConfig(quick=quick, out_dir=str(out), seed=seed,
                             channels=_split_names(channels))
    run_channel_bench(cfg, command=_command_line(), console=console)


@bench_app.command("retrieval")
def bench_retrieval(
    quick: bool = typer.Option(False, "--quick", help="200 items, 6 SNRs, 2 realisations, AWGN"),
    dataset: str = typer.Option("synthetic", "--dataset", help="dataset name (synthetic, digits, msrvtt, image-captions)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="folder of a local dataset (msrvtt, image-captions)"),
    profile: str = typer.Option("mini-attr", "--profile", help="encoder profile or a CLIP/SigLIP id/path"),
    n_items: Optional[int] = typer.Option(None, "--n-items", help="gallery size (default 1000, quick 200)"),
    channels: Optional[str] = typer.Option(None, "--channels", help="comma-separated: awgn,rayleigh,rician"),
    snrs: Optional[str] = typer.Option(None, "--snrs", help="comma-separated SNRs in dB (default -10..20 step 2.5)"),
    realisations: Optional[int] = typer.Option(None, "--realisations", help="channel realisations per point (default 5)"),
    seed: int = typer.Option(0, "--seed"),
    mcs: str = typer.Option("adaptive", "--mcs", help="MCS of the digital schemes: 'adaptive' (from the fed-back "
                                                      "SNR estimate) or a fixed one (labelled variant)"),
    csi: str = typer.Option("pilot", "--csi", help="pilot (estimated, counted) or perfect (labelled upper bound)"),
    pilots: int = typer.Option(2, "--pilots", help="pilots per coherence block on fading channels (>= 2)"),
    pilot_mse: float = typer.Option(1 / 3, "--pilot-mse",
                                    help="adapting schemes add pilots (2/4/8 per block) until the channel-estimate "
                                         "error at the fed-back SNR is at most this; 0: always --pilots"),
    pq: str = typer.Option("pq-48x8", "--pq", help="product quantiser of the PQ row (fitted on train clips); "
                                                  "'none' drops the row"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, or auto"),
    out: Path = typer.Option(Path("results/retrieval"), "--out", help="output folder"),
    index: str = typer.Option("exact", "--index", help="gallery scores: exact (matrix product) or faiss (IndexFlatIP)"),
    agents: Optional[Path] = typer.Option(None, "--agents", help="agent card (YAML): adds the LLM agent scheme"),
    schemes: Optional[str] = typer.Option(None, "--schemes",
                                          help="comma-separated subset of the default schemes to run "
                                               "(semantic-analog,digital-embedding,jpeg-ldpc,h264-ldpc)"),
) -> None:
    """Text-video retrieval accuracy vs SNR: semantic schemes against bit-exact JPEG/H.264 + LDPC baselines."""
    from genscom.bench.retrieval import (RetrievalBenchConfig, SchemeSpec, default_adapter, default_schemes,
                                         run_retrieval_bench)
    from genscom.utils import resolve_device

    _check_profile(profile)
    specs = default_schemes(mcs, adapter=default_adapter(profile), pq=None if pq == "none" else pq)
    if schemes:
        wanted = list(_split_names(schemes))
        known = sorted({s.name for s in specs})
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ValueError(f"--schemes: unknown {unknown}; choose from {known}")
        specs = [s for s in specs if s.name in wanted]
    if agents is not None:
        _check_card(str(agents))
        specs.append(SchemeSpec("agent", {"card": str(agents), "device": str(resolve_device(device))}))
    cfg = RetrievalBenchConfig(
        dataset=dataset, profile=profile, n_items=n_items,
        channels=_split_names(channels) if channels else None,
        snrs=tuple(_parse_floats(snrs, "--snrs")) if snrs else None,
        realisations=realisations, seed=seed, quick=quick, mcs=mcs, csi=csi, out_dir=str(out),  # type: ignore[arg-type]
        pilots_per_block=pilots, pilot_mse=float(pilot_mse) if pilot_mse > 0 else None,
        device=str(resolve_device(device)), index=index,
        dataset_kwargs={"root": str(data_root)} if data_root else {},
    )
    run_retrieval_bench(cfg, command=_command_line(), console=console, schemes=specs)


@bench_app.command("privacy")
def bench_privacy(
    quick: bool = typer.Option(False, "--quick", help="200 items, SNRs 0/10/20 dB, 2 realisations"),
    dataset: str = typer.Option("synthetic", "--dataset", help="dataset name (synthetic, digits, msrvtt, image-captions)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="folder of a local dataset (msrvtt, image-captions)"),
    profile: str = typer.Option("mini-attr", "--profile", help="encoder profile or a CLIP/SigLIP id/path"),
    n_items: Optional[int] = typer.Option(None, "--n-items", help="gallery size (default 1000, quick 200)"),
    channel: str = typer.Option("awgn", "--channel", help="awgn, rayleigh or rician"),
    snrs: Optional[str] = typer.Option(None, "--snrs", help="comma-separated SNRs in dB of the receiver and the "
                                                            "eavesdropper (default -5..20 step 5)"),
    legit_snr: float = typer.Option(10.0, "--legit-snr", help="the receiver's SNR (dB) of the transmission the "
                                                              "eavesdropper receives"),
    realisations: Optional[int] = typer.Option(None, "--realisations", help="channel realisations per point (default 5)"),
    seed: int = typer.Option(0, "--seed"),
    mcs: str = typer.Option("adaptive", "--mcs", help="MCS of the digital schemes ('adaptive' or a fixed one)"),
    codec: str = typer.Option("h264-ldpc", "--codec", help="classic row: h264-ldpc or jpeg-ldpc"),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="pre-shared key file (default: a fresh random "
                                                                     "key per run, never written)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, or auto"),
    out: Path = typer.Option(Path("results/privacy"), "--out", help="output folder"),
) -> None:
    """Receiver vs eavesdropper retrieval, plain and private (AEAD / keyed scrambling), overhead in channel uses."""
    from genscom.bench.privacy import PrivacyBenchConfig, privacy_schemes, run_privacy_bench
    from genscom.utils import resolve_device

    _check_profile(profile)
    if codec not in ("h264-ldpc", "jpeg-ldpc"):
        raise ValueError(f"--codec must be h264-ldpc or jpeg-ldpc, got {codec!r}")
    cfg = PrivacyBenchConfig(
        dataset=dataset, profile=profile, n_items=n_items, channel=channel,
        snrs=tuple(_parse_floats(snrs, "--snrs")) if snrs else None, legit_snr_db=legit_snr,
        realisations=realisations, seed=seed, quick=quick, mcs=mcs, out_dir=str(out),
        key_file=str(key_file) if key_file else None, device=str(resolve_device(device)),
        dataset_kwargs={"root": str(data_root)} if data_root else {},
    )
    specs = privacy_schemes(profile, mcs=mcs, fidelity=cfg.fidelity, codec=codec)  # type: ignore[arg-type]
    run_privacy_bench(cfg, command=_command_line(), console=console, schemes=specs)


_OVERWRITE = typer.Option(False, "--overwrite", help="allow writing into a folder that already holds trained weights "
                                                      "(e.g. shipped ones); a README there is kept")


@train_app.command("encoder")
def train_encoder_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of TrainEncoderConfig fields"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "--out",
                                              help="folder of the final weights (model.safetensors, config.json), "
                                                   "README.md, train_log.json and checkpoint.pt (default "
                                                   "runs/encoder-mini-<timestamp>/)"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    attribute_weight: Optional[float] = typer.Option(None, "--attribute-weight",
                                                     help="auxiliary attribute loss weight (synthetic data)"),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="fine-tune from this trained tower folder "
                                                                       "(model.safetensors + config.json)"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly from the checkpoint in --output-dir "
                                                        "(default: the newest runs/encoder-mini-*/ holding one)"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Train the offline `mini` image/video tower against the frozen MiniLM text tower (LiT)."""
    from genscom.encoders.train import TrainEncoderConfig, train_encoder
    from genscom.utils import load_config

    overrides = {"output_dir": str(output_dir) if output_dir else None, "steps": steps, "batch_size": batch_size,
                 "seed": seed, "lr": lr, "attribute_weight": attribute_weight,
                 "init_from": str(init_from) if init_from else None}
    cfg = load_config(TrainEncoderConfig, config, **overrides)
    path = train_encoder(cfg, resume=resume, progress=True, command=_command_line(), overwrite=overwrite)
    console.print(f"saved {path}")


@bench_app.command("caption")
def bench_caption(
    card: str = typer.Option("smollm2-generating", "--card", help="agent card: a path or a name on the card "
                                                                 "search path ($GENSCOM_CARDS, then the shipped genscom/cards/)"),
    n_items: int = typer.Option(100, "--n-items"),
    snrs: Optional[str] = typer.Option(None, "--snrs", help="comma-separated SNRs in dB"),
    channel: str = typer.Option("awgn", "--channel"),
    baselines: str = typer.Option("jpeg-ldpc", "--baselines", help="comma-separated: jpeg-ldpc,h264-ldpc"),
    mcs: str = typer.Option("adaptive", "--mcs", help="the baselines' MCS: 'adaptive' (chosen from the fed-back "
                                                      "SNR estimate) or a fixed one such as qpsk-1/2"),
    seed: int = typer.Option(0, "--seed"),
    repeat: str = typer.Option("1", "--repeat", help="the agent's repetitions of its embedding: an integer, or "
                                                     "'adaptive' (chosen from the fed-back SNR estimate)"),
    target_snr: float = typer.Option(0.0, "--target-snr", help="with --repeat adaptive: the effective SNR (dB) "
                                                               "the repetitions aim at"),
    max_repeat: int = typer.Option(8, "--max-repeat", help="with --repeat adaptive: the most repetitions"),
    fusion: Optional[float] = typer.Option(None, "--fusion", help="weight of the attributes head in caption "
                                                                  "decoding (default: the card's attribute_fusion; "
                                                                  "0: the LM alone)"),
    device: str = typer.Option("cpu", "--device"),
    out: Path = typer.Option(Path("results/caption"), "--out"),
) -> None:
    """Caption quality vs SNR: the agents against JPEG/H.264 + LDPC followed by the same captioner (at the
    baselines' own channel uses, and JPEG at the agent's)."""
    from genscom.bench.caption import CaptionBenchConfig, run_caption_bench
    from genscom.utils import resolve_device

    _check_card(card)
    rep: int | str = repeat.strip().lower()
    if rep != "adaptive":
        if not str(rep).isdigit() or int(rep) < 1:
            raise typer.BadParameter(f"--repeat must be an integer >= 1 or 'adaptive', got {repeat!r}")
        rep = int(rep)
    kw: dict = dict(card=card, n_items=n_items, channel=channel, seed=seed, out_dir=str(out),
                    baselines=_split_names(baselines), mcs=mcs, repeat=rep, target_snr_db=target_snr,
                    max_repeat=max_repeat, fusion=fusion,
                    device=str(resolve_device(device)))
    if snrs:
        kw["snrs"] = tuple(_parse_floats(snrs, "--snrs"))
    run_caption_bench(CaptionBenchConfig(**kw), command=_command_line(), console=console)


@bench_app.command("edge")
def bench_edge(
    card: str = typer.Option("smollm2-generating", "--card", help="agent card (a path or a name on the card "
                                                                 "search path)"),
    nf4_card: str = typer.Option("smollm2-generating-nf4", "--nf4-card", help="the NF4 variant's card"),
    variants: str = typer.Option("bf16,nf4", "--variants", help="comma-separated: fp32,bf16,nf4"),
    n_items: int = typer.Option(32, "--n-items"),
    device: str = typer.Option("cpu", "--device"),
    out: Path = typer.Option(Path("results/edge"), "--out"),
) -> None:
    """bf16/fp32 vs NF4 agents: parameter memory, peak memory, latency per item, metric drop."""
    from genscom.bench.edge import EdgeBenchConfig, run_edge_bench
    from genscom.utils import resolve_device

    for c in (card, nf4_card):
        _check_card(c)
    cfg = EdgeBenchConfig(card=card, nf4_card=nf4_card, n_items=n_items, out_dir=str(out),
                          variants=_split_names(variants),
                          device=str(resolve_device(device)))
    run_edge_bench(cfg, command=_command_line(), console=console)


@finetune_app.command("agents")
def finetune_agents_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of FinetuneConfig fields"),
    card: Optional[str] = typer.Option(None, "--card", help="agent card, a path or a name on the card search path "
                                                            "(either end; its partner is the other)"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="batches per optimiser step"),
    n_train: Optional[int] = typer.Option(None, "--n-train"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps"),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="constant or cosine (after warm-up)"),
    mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="no, bf16 or fp16"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="caption metrics on the val split every N "
                                                                        "steps (0: never)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="perception encoder profile or folder "
                                                                  "(default: the card's `perception`)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", "--out",
                                           help="run folder: checkpoint.pt, finetune.json and, unless --adapters-dir, "
                                                "the trained adapters in <out-dir>/adapters/ (default "
                                                "runs/finetune-agents-<timestamp>/)"),
    adapters_dir: Optional[Path] = typer.Option(None, "--adapters-dir",
                                                help="folder of the final trained adapters, one <card name>/ "
                                                     "subfolder per agent (default <out-dir>/adapters)"),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="start from trained adapters "
                                                                       "(<folder>/<card name>/)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="training dataset (synthetic, digits, msrvtt, "
                                                                  "image-captions)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="folder of a local dataset (msrvtt, "
                                                                       "image-captions)"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    snr_min: Optional[float] = typer.Option(None, "--snr-min", help="lowest training SNR in dB (drawn per batch)"),
    snr_max: Optional[float] = typer.Option(None, "--snr-max", help="highest training SNR in dB"),
    channel: Optional[str] = typer.Option(None, "--channel", help="training channel (e.g. awgn)"),
    caption_weight: Optional[float] = typer.Option(None, "--caption-weight", help="weight of the caption LM loss"),
    retrieval_weight: Optional[float] = typer.Option(None, "--retrieval-weight", help="weight of the retrieval "
                                                                                      "InfoNCE loss"),
    attribute_weight: Optional[float] = typer.Option(None, "--attribute-weight", help="weight of the cross-entropy "
                                                     "of the generating card's attributes head (if it has one)"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="InfoNCE temperature"),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="log the losses every N steps"),
    n_eval: Optional[int] = typer.Option(None, "--n-eval", help="val items per evaluation"),
    eval_snr: Optional[float] = typer.Option(None, "--eval-snr", help="evaluation SNR in dB"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly from the checkpoint in --out-dir "
                                                        "(default: the newest runs/finetune-agents-*/ holding one)"),
    overwrite: bool = _OVERWRITE,
) -> dict:
    """LoRA fine-tuning of both agents across the channel (caption LM loss + retrieval InfoNCE).

    Every FinetuneConfig field is a flag of the same name; apps/finetune_agents.py runs this same command.

    \f
    ``apps/finetune_agents.py`` calls this very command, so the script and the CLI share one flag set
    (``tests/test_finetune.py`` checks it against the dataclass fields). Returns the result of
    :func:`~genscom.agents.finetune.finetune_agents`.
    """
    import dataclasses

    from genscom.agents.finetune import FinetuneConfig, finetune_agents
    from genscom.utils import load_config

    given = locals()  # one flag per config field, by name: a field without its flag is a KeyError here
    overrides = {f.name: given[f.name] for f in dataclasses.fields(FinetuneConfig)}
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
    # `--adapters-dir none` (any field that may be None): explicitly unset, over a --config value too
    unset = [f.name for f in dataclasses.fields(FinetuneConfig) if f.default is None
             and isinstance(overrides[f.name], str) and overrides[f.name].lower() in ("none", "null")]
    cfg = load_config(FinetuneConfig, config, **{k: v for k, v in overrides.items() if k not in unset})
    cfg = dataclasses.replace(cfg, **{k: None for k in unset}) if unset else cfg
    result = finetune_agents(cfg, resume=resume, progress=True, overwrite=overwrite)
    if not result["main_process"]:  # under `accelerate launch`: the main process reports (and saved the adapters)
        return result
    last = next((h["eval"] for h in reversed(result["history"]) if "eval" in h), None)
    console.print(f"done: {result['steps']} steps in {result['seconds']:.0f} s, final loss "
                  f"{result['losses'][-1]:.4f}" + (f", val {last}" if last else "")
                  + f"; adapters: {result['adapters'] or 'not saved'}")
    return result


@finetune_app.command("attribute-head")
def finetune_attribute_head_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of HeadRefitConfig fields"),
    card: Optional[str] = typer.Option(None, "--card", help="generating card with an attributes head (or its "
                                                            "partner), a path or a name on the card search path"),
    n_train: Optional[int] = typer.Option(None, "--n-train", help="synthetic train clips"),
    n_val: Optional[int] = typer.Option(None, "--n-val", help="synthetic val clips read every epoch"),
    snrs: Optional[str] = typer.Option(None, "--snrs", help="comma-separated SNRs in dB; every clip is embedded "
                                                            "and sent at each (default -5,0,5,10,20)"),
    channel: Optional[str] = typer.Option(None, "--channel", help="training channel (e.g. awgn)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    init: Optional[str] = typer.Option(None, "--init", help="warm (the card's trained head) or fresh"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", "--out",
                                           help="run folder: checkpoint.pt, embeddings.pt and, unless "
                                                "--adapters-dir, the refitted agent in <out-dir>/adapters/ "
                                                "(default runs/attribute-head-<timestamp>/)"),
    adapters_dir: Optional[Path] = typer.Option(None, "--adapters-dir", help="folder of the refitted agent, one "
                                                "<card name>/ subfolder (default <out-dir>/adapters)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto"),
    resume: bool = typer.Option(False, "--resume", help="continue from the checkpoint in --out-dir (default: the "
                                                        "newest runs/attribute-head-*/ holding one)"),
    overwrite: bool = _OVERWRITE,
) -> dict:
    """Train the generating agent's attributes head alone, on received embeddings at several SNRs.

    Both agents' LoRA and other modules stay as loaded; the understanding agent runs once per clip and SNR.

    \f
    Every :class:`~genscom.agents.head_refit.HeadRefitConfig` field is a flag of the same name.
    """
    import dataclasses

    from genscom.agents.head_refit import HeadRefitConfig, refit_attribute_head
    from genscom.utils import load_config

    given = locals()
    overrides = {f.name: given[f.name] for f in dataclasses.fields(HeadRefitConfig)}
    overrides["snrs"] = _parse_floats(snrs, "--snrs")
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
    cfg = load_config(HeadRefitConfig, config, **overrides)
    res = refit_attribute_head(cfg, resume=resume, progress=True, overwrite=overwrite, command=_command_line())
    first, last = res["history"][0]["val"], res["val"]
    console.print("val shape+colour, loaded head -> refitted: " + ", ".join(
        f"{s} dB {first[s].get('shape_colour', float('nan')):.3f} -> {last[s].get('shape_colour', float('nan')):.3f}"
        for s in last) + f"; {res['seconds']:.0f} s; adapters: {res['adapters']}")
    return res


@train_app.command("adapter")
def train_adapter_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of TrainAdapterConfig fields"),
    name: Optional[str] = typer.Option(None, "--name", help="adapter name (default output folder "
                                                            "runs/adapter-<name>-<timestamp>/)"),
    k: Optional[int] = typer.Option(None, "--k", help="complex channel symbols per item"),
    hidden: Optional[int] = typer.Option(None, "--hidden", help="MLP width"),
    depth: Optional[int] = typer.Option(None, "--depth", help="MLP depth"),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="symbols per extraction group"),
    cpu_threads: Optional[int] = typer.Option(None, "--cpu-threads", help="torch intra-op threads on CPU"),
    text_cache_dir: Optional[Path] = typer.Option(None, "--text-cache-dir", help="caption-embedding cache folder"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir",
                                              help="folder of the final weights (model.safetensors, config.json), "
                                                   "README.md, train_log.json and checkpoint.pt (default "
                                                   "runs/adapter-<name>-<timestamp>/)"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly from the checkpoint in --output-dir "
                                                        "(default: the newest runs/adapter-<name>-*/ holding one)"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Train the SNR-conditioned channel adapter (+ scalable extraction) through differentiable channels."""
    from genscom.adaptation.train import load_train_config, train_adapter

    cfg = load_train_config(config, name=name, k=k, hidden=hidden, depth=depth, group_size=group_size,
                            steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                            cpu_threads=cpu_threads, text_cache_dir=str(text_cache_dir) if text_cache_dir else None,
                            output_dir=str(output_dir) if output_dir else None)
    path = train_adapter(cfg, resume=resume, progress=True, command=_command_line(), overwrite=overwrite)
    console.print(f"saved {path}")


@train_app.command("decoder")
def train_decoder_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of TrainDecoderConfig fields"),
    name: Optional[str] = typer.Option(None, "--name", help="decoder name (default output folder "
                                                            "runs/decoder-<name>-<timestamp>/)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="encoder profile of the conditioning embeddings"),
    n_items: Optional[int] = typer.Option(None, "--n-items", help="train-split clips (middle frame of each)"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    sample_every: Optional[int] = typer.Option(None, "--sample-every", help="write a PNG grid of samples every N steps"),
    cpu_threads: Optional[int] = typer.Option(None, "--cpu-threads", help="torch intra-op threads on CPU"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto"),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="fine-tune from this decoder folder or "
                                                                      "adapter name (e.g. regen-mini-attr)"),
    phase: Optional[str] = typer.Option(None, "--phase", help="diffusion (default: the whole decoder), reader "
                                                              "(only the semantic reader of --init-from) or unet "
                                                              "(all of --init-from but its reader)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="run folder (default "
                                                                         "runs/decoder-<name>-<timestamp>/)"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly from the checkpoint in --output-dir "
                                                        "(default: the newest runs/decoder-<name>-*/ holding one)"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Train the diffusion decoder that regenerates frames from received embeddings (needs diffusers)."""
    from genscom.generation.train import TrainDecoderConfig, train_decoder
    from genscom.loading import load_config

    cfg = load_config(TrainDecoderConfig, config, name=name, profile=profile, n_items=n_items, steps=steps,
                      batch_size=batch_size, lr=lr, seed=seed, sample_every=sample_every, cpu_threads=cpu_threads,
                      device=device, init_from=init_from, phase=phase,
                      output_dir=str(output_dir) if output_dir else None)
    _check_profile(cfg.profile)
    path = train_decoder(cfg, resume=resume, progress=True, command=_command_line(), overwrite=overwrite)
    console.print(f"saved {path}")


@train_app.command("deepjscc")
def train_deepjscc_cmd(
    steps: int = typer.Option(3000, "--steps"),
    batch_size: int = typer.Option(64, "--batch-size"),
    channel_uses: int = typer.Option(192, "--channel-uses", help="complex symbols per 64x64 frame (the budget)"),
    n_items: int = typer.Option(4000, "--n-items", help="train-split clips (middle frame of each)"),
    seed: int = typer.Option(0, "--seed"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="weights folder (default "
                                                                         "runs/deepjscc-<timestamp>/)"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Train the pixel DeepJSCC peer of `bench regen` (conv encoder -> channel symbols -> conv decoder)."""
    from genscom.generation.recipes import RecipeConfig, train_deepjscc_run

    cfg = RecipeConfig(steps=steps, batch_size=batch_size, channel_uses=channel_uses, n_items=n_items, seed=seed,
                       output_dir=str(output_dir) if output_dir else None)
    console.print(f"saved {train_deepjscc_run(cfg, overwrite=overwrite, command=_command_line())}")


@train_app.command("classifier")
def train_classifier_cmd(
    epochs: int = typer.Option(16, "--epochs"),
    n_items: int = typer.Option(4000, "--n-items", help="real train-split frames"),
    n_test: int = typer.Option(1000, "--n-test", help="real test-split frames it is scored on"),
    seed: int = typer.Option(0, "--seed"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="weights folder (default "
                                                                         "runs/attr-classifier-<timestamp>/)"),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Train the attribute classifier that scores regenerated frames (on real train frames only)."""
    from genscom.generation.recipes import RecipeConfig, train_classifier_run

    cfg = RecipeConfig(epochs=epochs, n_items=n_items, n_test=n_test, seed=seed,
                       output_dir=str(output_dir) if output_dir else None)
    console.print(f"saved {train_classifier_run(cfg, overwrite=overwrite, command=_command_line())}")


@bench_app.command("rate")
def bench_rate(
    adapter: str = typer.Option("mini-k192", "--adapter", help="adapter folder, or a name on the adapter search path ($GENSCOM_ADAPTERS, then the shipped ones)"),
    quick: bool = typer.Option(False, "--quick"),
    channels: str = typer.Option("awgn,rayleigh", "--channels"),
    snrs: Optional[str] = typer.Option(None, "--snrs", help="low,mid,high SNRs in dB (default -5,5,15)"),
    side_link: str = typer.Option("full", "--side-link", help="bitmap over the real LDPC link (full) or ideal"),
    side_repeat: int = typer.Option(1, "--side-repeat", help="send each bitmap symbol N times (MRC), counted"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("results/rate"), "--out"),
) -> None:
    """Rate control without retraining: mu / budget / prefix vs channel uses saved vs R@1 at low/mid/high SNR."""
    from genscom.bench.rate import RateBenchConfig, run_rate_bench

    kw: dict = dict(adapter=adapter, quick=quick, seed=seed, out_dir=str(out), side_link=side_link,
                    side_repeat=side_repeat,
                    channels=_split_names(channels))
    if snrs:
        kw["snrs"] = tuple(_parse_floats(snrs, "--snrs"))
    from genscom.adaptation.adapter import ChannelAdapter
    from genscom.assets import find_adapter

    ChannelAdapter.from_pretrained(find_adapter(adapter, train_command="genscom train adapter"))  # a broken folder fails here, before any data work
    run_rate_bench(RateBenchConfig(**kw), command=_command_line(), console=console)


def _seed_list(seeds: Optional[str], seed: Optional[int]) -> list[Optional[int]]:
    """``--seeds 0,1,2`` as integers (>= 2 distinct, not with ``--seed``); ``[seed]`` without ``--seeds``."""
    if seeds is None:
        return [seed]
    if seed is not None:
        raise typer.BadParameter("give --seed or --seeds, not both", param_hint="--seeds")
    try:
        out = [int(x) for x in _split_names(seeds)]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, e.g. 0,1,2; got {seeds!r}",
                                 param_hint="--seeds") from None
    if len(out) < 2 or len(set(out)) != len(out):
        raise typer.BadParameter(f"expected at least two distinct seeds, got {seeds!r}", param_hint="--seeds")
    return out


@bench_app.command("fed")
def bench_fed(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of FedConfig fields"),
    quick: bool = typer.Option(False, "--quick", help="channel: 4 rounds x 10 local steps, 300 + 100 items "
                               "per user; graph: 4 users, 8 rounds x 4 local epochs, 480 + 160 items"),
    users: Optional[str] = typer.Option(None, "--users", help="channel:snr_min:snr_max[:eval_snr] per user, "
                                                               "comma-separated, e.g. awgn:-10:0,rayleigh:0:20"),
    rounds: Optional[int] = typer.Option(None, "--rounds"),
    local_steps: Optional[int] = typer.Option(None, "--local-steps"),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="fedavg, fedprox or fedavgm (Flower)"),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="start from a trained adapter folder"),
    save_adapter: Optional[Path] = typer.Option(None, "--save-adapter", help="folder to write the final global "
                                                "adapter's weights into (refused if it holds weights, unless "
                                                "--overwrite)"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="checkpoint folder (default runs/fed)"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly after the last finished round"),
    out: Path = typer.Option(Path("results/fed"), "--out"),
    overwrite: bool = _OVERWRITE,
    task: str = typer.Option("channel", "--task", help="channel: the channel adapter (users = channels); graph: "
                             "the graph multimodal adapter across heterogeneous users, five methods x clean/mild/"
                             "severe label noise (Flower's Simulation Engine)"),
    clients: Optional[int] = typer.Option(None, "--clients", help="graph task: users (default 10, quick 4)"),
    local_epochs: Optional[int] = typer.Option(None, "--local-epochs", help="graph task: local epochs per round"),
    groups: Optional[str] = typer.Option(None, "--groups", help="graph task: noise groups, e.g. clean,mild,severe"),
    methods: Optional[str] = typer.Option(None, "--methods", help="graph task: comma-separated subset of "
                                          "graph-error-aware,graph-fedavg,homogeneous-fedavg,local-only,centralised"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="graph task: run each seed (e.g. 0,1,2) into "
                                        "<out>/seed-<s>/, then write the mean and 95% interval over seeds to <out>"),
) -> None:
    """Federated adapter updates (Flower): channel task (default) or graph task; per round, table, JSON, PNG."""
    if task == "graph":
        from genscom.bench.fed_graph import (GROUPS, METHODS, quick_graph_bench_config, run_graph_bench,
                                             summarise_seeds)
        from genscom.federated.engine import GraphFedConfig

        unused = [f for f, v in (("--config", config), ("--users", users), ("--local-steps", local_steps),
                                 ("--strategy", strategy), ("--init-from", init_from),
                                 ("--save-adapter", save_adapter), ("--run-dir", run_dir)) if v is not None]
        if unused or resume:
            raise typer.BadParameter(f"{', '.join(unused + (['--resume'] if resume else []))} apply to --task "
                                     "channel only", param_hint="--task")
        seed_list = _seed_list(seeds, seed)
        over = {k: v for k, v in dict(clients=clients, rounds=rounds, local_epochs=local_epochs).items()
                if v is not None}
        paths = []
        for s in seed_list:
            gcfg = (quick_graph_bench_config if quick else GraphFedConfig)(**over, **({} if s is None else {"seed": s}))
            res = run_graph_bench(gcfg, groups=_split_names(groups) if groups else GROUPS,
                                  methods=_split_names(methods) if methods else METHODS,
                                  out_dir=out if seeds is None else out / f"seed-{s}", quick=quick,
                                  command=_command_line(), console=console)
            paths.append(res["json"])
        if seeds is not None:
            summarise_seeds(paths, out, command=_command_line(), console=console)
        return
    if task != "channel":
        raise typer.BadParameter(f"expected channel or graph, got {task!r}", param_hint="--task")
    from genscom.bench.fed import quick_config, run_fed_bench
    from genscom.federated.adapter import FedConfig, parse_users
    from genscom.utils import load_config

    over = dict(users=parse_users(users) if users else None, rounds=rounds, local_steps=local_steps,
                strategy=strategy, init_from=init_from, seed=seed, run_dir=str(run_dir) if run_dir else None,
                output_dir=str(save_adapter) if save_adapter else None)
    if quick and config is None:
        cfg = quick_config(**{k: v for k, v in over.items() if v is not None})
    else:
        cfg = load_config(FedConfig, config, **over)
    run_fed_bench(cfg, out_dir=out, quick=quick, command=_command_line(), console=console, resume=resume,
                  overwrite=overwrite)


@bench_app.command("train-speed")
def bench_train_speed(
    batch_sizes: str = typer.Option("64,256,1024", "--batch-sizes"),
    steps: int = typer.Option(20, "--steps"),
    out: Path = typer.Option(Path("results/train_speed"), "--out"),
) -> None:
    """Adapter training throughput (samples/s) and memory on CPU (and CUDA when present)."""
    from genscom.bench.train_speed import TrainSpeedConfig, run_train_speed_bench

    sizes = tuple(int(v) for v in _parse_floats(batch_sizes, "--batch-sizes") or [])
    run_train_speed_bench(TrainSpeedConfig(batch_sizes=sizes, steps=steps, out_dir=str(out)),
                          command=_command_line(), console=console)


@bench_app.command("regen")
def bench_regen(
    quick: bool = typer.Option(False, "--quick", help="48 items, SNRs -5/5/15 dB, JPEG q10, 10 DDIM steps"),
    n_items: Optional[int] = typer.Option(None, "--n-items", help="test items (default 200, quick 48)"),
    snrs: Optional[str] = typer.Option(None, "--snrs", help="comma-separated SNRs in dB (default -5,0,5,10,15,20)"),
    channel: str = typer.Option("awgn", "--channel", help="awgn, rayleigh or rician (pilots counted on fading)"),
    source: str = typer.Option("frame", "--source", help="what the semantic sender embeds: the key frame "
                                                         "(frame) or the whole clip (clip)"),
    decoder: Optional[str] = typer.Option(None, "--decoder", help="diffusion decoder: a name on the adapter search "
                                                                   "path or a folder (default regen-mini-attr-v5)"),
    deepjscc: str = typer.Option("deepjscc-k192", "--deepjscc", help="DeepJSCC model (name or folder); 'none' "
                                                                     "drops the row"),
    steps: Optional[int] = typer.Option(None, "--steps", help="DDIM steps (default: the decoder's, quick 10)"),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="classifier-free guidance scale (>= 1)"),
    candidates: Optional[int] = typer.Option(None, "--candidates", help="N > 1 adds the best-of-N row: N pictures "
                                                                         "per item, the receiver keeps the one "
                                                                         "closest to what it received"),
    adapters_dir: Optional[Path] = typer.Option(None, "--adapters-dir", help="extra folder searched first for "
                                                                             "the decoder, classifier, DeepJSCC"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, or auto"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default results/regen, "
                                                           "quick results/regen-quick)"),
) -> None:
    """Image regeneration: diffusion decoder from the received embedding vs DeepJSCC and JPEG + LDPC."""
    from genscom.bench.regen import RegenBenchConfig, quick_regen_config, run_regen_bench
    from genscom.utils import resolve_device

    over: dict = {k: v for k, v in dict(
        n_items=n_items, snrs=tuple(_parse_floats(snrs, "--snrs")) if snrs else None, channel=channel,
        source=source, decoder=decoder, deepjscc=None if deepjscc.lower() == "none" else deepjscc, steps=steps,
        guidance_scale=guidance, candidates=candidates, seed=seed, device=str(resolve_device(device)),
        out_dir=str(out) if out else None, adapters_dir=(str(adapters_dir),) if adapters_dir else None,
    ).items() if v is not None or k == "deepjscc"}
    if snrs and "grid_snrs" not in over:
        over["grid_snrs"] = tuple(s for s in over["snrs"] if s in (-5.0, 5.0, 15.0)) or over["snrs"][:3]
    cfg = quick_regen_config(**over) if quick else RegenBenchConfig(**over)
    run_regen_bench(cfg, command=_command_line(), console=console)


demo_app = typer.Typer(help="Gradio demo: transmitter and receiver (offline, CPU).", invoke_without_command=True)
app.add_typer(demo_app, name="demo")


def _demo_config(profile: str, gallery_size: int, max_upload_mb: float, mcs: str, results: Path,
                 agent_card: Optional[str], seed: int, regen_decoder: str = "auto",
                 regen_candidates: int = 1):
    from genscom.demo.engine import DemoConfig

    return DemoConfig(profile=profile, gallery_size=gallery_size, max_upload_mb=max_upload_mb, mcs=mcs,
                      results_path=str(results), agent_card=agent_card, seed=seed,
                      regen_decoder=regen_decoder or None, regen_candidates=regen_candidates)


def _launch(mode: str, host: str, port: int, rx_url: Optional[str], key_file: Optional[Path] = None, **kw) -> None:
    from genscom.demo.app import launch_demo, load_or_create_key

    _check_profile(kw["profile"])  # files are checked before the server starts
    if kw.get("agent_card"):
        _check_card(kw["agent_card"])
    key = None  # combined: an in-memory key, no set-up
    if mode != "combined":
        try:
            key, note = load_or_create_key(key_file)
        except (ValueError, OSError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(note or f"Demo link key {key_file}: fingerprint {key.fingerprint} (the other end must show "
                              "the same).")
    launch_demo(mode, _demo_config(**kw), host=host, port=port, rx_url=rx_url, key=key)


_PROFILE = typer.Option("mini-attr", "--profile", help="encoder profile (mini-attr: the benchmarks' and the "
                                                       "image decoder's), or a tower/CLIP folder")
_GALLERY = typer.Option(24, "--gallery-size", help="clips of the offline gallery")
_UPLOAD = typer.Option(20.0, "--max-upload-mb", help="largest accepted upload")
_MCS = typer.Option("qpsk-1/2", "--mcs", help="MCS of the digital baseline")
_RESULTS = typer.Option(Path("results/retrieval/retrieval.json"), "--results", help="benchmark JSON for the R@1 plot")
_CARD = typer.Option(None, "--agent-card", help="agent card for the caption panel (a path or a card name)")
_SEED = typer.Option(0, "--seed")
_REGEN = typer.Option("auto", "--regen-decoder", help="image decoder of the image-regeneration task (a folder or a "
                      "name on the adapter search path, trained on --profile; default auto: the best shipped one for "
                      "--profile, regen-mini-attr-v5 for mini-attr-v2)")
_CANDIDATES = typer.Option(1, "--regen-candidates", help="pictures drawn per item by the receiver, keeping the one "
                          "its own image tower reads as what it received (best-of-N, 1..16; N x the drawing time)")
_KEY = typer.Option(None, "--key-file", help="shared link key file (mode 0600) that signs and checks the TX->RX "
                    "wire; without it one is made at ~/.genscom/demo-wire.key (copy it to the other end)")


@demo_app.callback()
def demo(ctx: typer.Context, host: str = typer.Option("127.0.0.1", "--host"),
         port: int = typer.Option(7860, "--port"), profile: str = _PROFILE, gallery_size: int = _GALLERY,
         max_upload_mb: float = _UPLOAD, mcs: str = _MCS, results: Path = _RESULTS,
         agent_card: Optional[str] = _CARD, seed: int = _SEED, regen_decoder: str = _REGEN,
         regen_candidates: int = _CANDIDATES) -> None:
    """One page with transmitter and receiver; `genscom demo tx|rx` runs them as two processes."""
    if ctx.invoked_subcommand is None:
        _launch("combined", host, port, None, profile=profile, gallery_size=gallery_size,
                max_upload_mb=max_upload_mb, mcs=mcs, results=results, agent_card=agent_card, seed=seed,
                regen_decoder=regen_decoder, regen_candidates=regen_candidates)


@demo_app.command("tx")
def demo_tx(rx_url: str = typer.Option(..., "--rx-url", help="receiver URL, e.g. http://127.0.0.1:7861"),
            host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(7860, "--port"),
            profile: str = _PROFILE, gallery_size: int = _GALLERY, max_upload_mb: float = _UPLOAD,
            mcs: str = _MCS, results: Path = _RESULTS, agent_card: Optional[str] = _CARD, seed: int = _SEED,
            key_file: Optional[Path] = _KEY, regen_decoder: str = _REGEN,
            regen_candidates: int = _CANDIDATES) -> None:
    """Transmitter process: sends signed symbols + side information to the receiver at --rx-url."""
    _launch("tx", host, port, rx_url, key_file, profile=profile, gallery_size=gallery_size, max_upload_mb=max_upload_mb,
            mcs=mcs, results=results, agent_card=agent_card, seed=seed, regen_decoder=regen_decoder,
            regen_candidates=regen_candidates)


@demo_app.command("rx")
def demo_rx(host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(7861, "--port"),
            profile: str = _PROFILE, gallery_size: int = _GALLERY, max_upload_mb: float = _UPLOAD,
            mcs: str = _MCS, results: Path = _RESULTS, agent_card: Optional[str] = _CARD, seed: int = _SEED,
            key_file: Optional[Path] = _KEY, regen_decoder: str = _REGEN,
            regen_candidates: int = _CANDIDATES) -> None:
    """Receiver process: its page plus POST /genscom/receive (signed posts only); it runs its own image decoder."""
    _launch("rx", host, port, None, key_file, profile=profile, gallery_size=gallery_size, max_upload_mb=max_upload_mb,
            mcs=mcs, results=results, agent_card=agent_card, seed=seed, regen_decoder=regen_decoder,
            regen_candidates=regen_candidates)


fed_app = typer.Typer(help="Federated learning on Flower's engines (graph multimodal adapter, heterogeneous users).",
                      no_args_is_help=True)
app.add_typer(fed_app, name="fed")


def _parse_failures(text: Optional[str]) -> dict[int, list[int]]:
    """``"1:1,2:3"`` -> ``{1: [1], 2: [3]}`` (client:round pairs in which that client raises)."""
    out: dict[int, list[int]] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        try:
            c, r = (int(v) for v in item.split(":"))
        except ValueError:
            raise typer.BadParameter(f"expected client:round pairs like 1:1,2:3, got {item!r}",
                                     param_hint="--fail") from None
        out.setdefault(c, []).append(r)
    return out


@fed_app.command("run")
def fed_run(
    clients: Optional[int] = typer.Option(None, "--clients", help="users (Flower SuperNodes); default 10, quick 4"),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="federated rounds; default 10, quick 6"),
    local_epochs: Optional[int] = typer.Option(None, "--local-epochs", help="local epochs per round (default 10)"),
    quick: bool = typer.Option(False, "--quick", help="4 users, 6 rounds, 800 train + 200 held-out items"),
    plain: bool = typer.Option(False, "--plain", help="plain FedAvg with the graph adapter (no error-aware labels)"),
    fail: Optional[str] = typer.Option(None, "--fail", help="inject client failures, client:round pairs, e.g. 1:1"),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/fed-<timestamp>)"),
    resume: bool = typer.Option(False, "--resume", help="continue after the last round saved in --out"),
) -> None:
    """Graph adapter across heterogeneous users on Flower's Simulation Engine: RSUM and noisy-pair detection
    per round, the global adapter saved each round, a JSON of the run."""
    import time as _time

    from genscom.federated.engine import RESULTS_NAME, STATE_NAME, GraphFedConfig, quick_graph_config

    folder = out if out is not None else Path("runs") / f"fed-{_time.strftime('%Y%m%d-%H%M%S')}"
    if resume and not (folder / STATE_NAME).is_file():
        raise ValueError(f"--resume: {folder / STATE_NAME} does not exist; pass the --out of an earlier run")
    if not resume and folder.exists() and any(folder.iterdir()):
        raise ValueError(f"--out {folder} is not empty; pass an empty or new folder, or --resume to continue it")
    over = {k: v for k, v in dict(clients=clients, rounds=rounds, local_epochs=local_epochs).items() if v is not None}
    over.update(error_aware=not plain, fail_rounds=_parse_failures(fail), seed=seed, out_dir=str(folder))
    cfg = quick_graph_config(**over) if quick else GraphFedConfig(**over)
    console.print(f"[bold]genscom fed run[/bold]: {cfg.clients} users, {cfg.rounds} rounds, "
                  f"{'error-aware' if cfg.error_aware else 'plain FedAvg'}, Flower Simulation Engine (ray) -> {folder}")

    def show(rec: dict) -> None:
        line = (f"round {rec['round']:>3}  RSUM {rec['RSUM']:7.2f}  i2t R@1 {rec['i2t_R@1']:.3f}  "
                f"t2i R@1 {rec['t2i_R@1']:.3f}")
        if rec["round"] > 0:
            if rec.get("aggregated"):
                if "noise_precision" in rec:
                    line += f"  noisy-pair precision {rec['noise_precision']:.3f} recall {rec['noise_recall']:.3f}"
                line += f"  loss {rec['loss']:.3f}  up {rec['bytes_up'] / 1e3:.0f} kB"
            else:
                line += "  (too few clients: global adapter unchanged)"
            line += f"  clients ok {len(rec['clients_ok'])}/{cfg.clients}"
        console.print(line)

    from genscom.federated.engine import run_graph_federated

    try:  # Flower's per-round INFO lines would bury ours
        from flwr.supercore.logger import update_console_handler

        update_console_handler(level="WARNING")
    except ImportError:  # the engine below names the missing extra
        pass
    res = run_graph_federated(cfg, resume=resume, on_round=show)
    console.print(f"done in {res.seconds:.1f} s; global adapter {folder / 'rounds'}, results {folder / RESULTS_NAME}")


@fed_app.command("serve")
def fed_serve(
    clients: Optional[int] = typer.Option(None, "--clients", help="users, one SuperNode each; default 10, quick 4"),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="federated rounds; default 10, quick 6"),
    local_epochs: Optional[int] = typer.Option(None, "--local-epochs", help="local epochs per round (default 10)"),
    quick: bool = typer.Option(False, "--quick", help="4 users, 6 rounds, 800 train + 200 held-out items"),
    plain: bool = typer.Option(False, "--plain", help="plain FedAvg with the graph adapter (no error-aware labels)"),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/fed-deploy-<timestamp>)"),
    port: int = typer.Option(9093, "--port", min=1, max=65535,
                             help="the SuperLink's one HTTPS port: SuperNodes and `flwr run` connect there"),
    host: str = typer.Option("127.0.0.1", "--host", help="address the SuperLink listens on; 0.0.0.0 lets "
                                                          "SuperNodes on other machines connect"),
    local_clients: int = typer.Option(0, "--local-clients", min=0,
                                      help="also start this many SuperNodes here (partitions 0..N-1)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1.0,
                                            help="give up after this many seconds (default: wait for the run)"),
    certs_dir: Optional[Path] = typer.Option(None, "--certs-dir", help="TLS CA + SuperLink certificate and the "
                                             "local SuperNodes' keys (default --out/deploy/certs); its ca.pem "
                                             "is what remote SuperNodes need; an existing CA there is reused"),
    cert_host: Optional[list[str]] = typer.Option(None, "--cert-host", help="another name (IP or DNS) remote "
                                                  "SuperNodes use for this machine, added to the certificate "
                                                  "(127.0.0.1, ::1, localhost and --host are); repeatable"),
    allow_key: Optional[list[Path]] = typer.Option(None, "--allow-key", help="public key file (.pub, from "
                                                   "`genscom fed client --auth-key`) of a remote SuperNode "
                                                   "allowed to join; repeatable; any other SuperNode is refused"),
    insecure: bool = typer.Option(False, "--insecure", help="DISABLE TLS and SuperNode authentication (plain "
                                  "HTTP, any SuperNode accepted): only for a trusted localhost (--host 127.0.0.1)"),
) -> None:
    """Start a Flower SuperLink here, submit the graph adapter run to it (`flwr run`), wait until it ends.

    Secure by default: TLS with a generated CA (--certs-dir) and SuperNode authentication (only the local
    SuperNodes' generated keys and the --allow-key public keys are registered; any other SuperNode is refused).
    --insecure turns both off (trusted localhost only).
    Users are SuperNodes: --local-clients N starts N here; every other user K runs `genscom fed client
    --superlink HOST:PORT --partition-id K --num-partitions CLIENTS --root-certificates ca.pem --auth-key KEY`,
    here or elsewhere, its KEY.pub given here with --allow-key.
    The run starts once CLIENTS SuperNodes are connected; the SuperLink stops when it ends.
    Saved: the global adapter every round (--out/rounds), --out/fed_run.json, process logs (--out/deploy/logs).
    """
    import time as _time

    from genscom.errors import first_line
    from genscom.federated.engine import RESULTS_NAME, GraphFedConfig, quick_graph_config

    folder = out if out is not None else Path("runs") / f"fed-deploy-{_time.strftime('%Y%m%d-%H%M%S')}"
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"--out {folder} is not empty; pass an empty or new folder")
    over = {k: v for k, v in dict(clients=clients, rounds=rounds, local_epochs=local_epochs).items() if v is not None}
    over.update(error_aware=not plain, seed=seed, out_dir=str(folder))
    cfg = quick_graph_config(**over) if quick else GraphFedConfig(**over)
    if local_clients > cfg.clients:
        raise typer.BadParameter(f"at most --clients ({cfg.clients}), got {local_clients}",
                                 param_hint="--local-clients")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if insecure and not loopback:
        raise typer.BadParameter(f"--insecure (no TLS, no SuperNode authentication) is only for --host 127.0.0.1, "
                                 f"got {host}", param_hint="--insecure")
    if insecure and allow_key:
        raise typer.BadParameter("--insecure authenticates no SuperNode; drop --allow-key or --insecure",
                                 param_hint="--allow-key")
    for key in allow_key or []:
        if not key.is_file():
            raise typer.BadParameter(f"no such public key file: {key}", param_hint="--allow-key")
    from genscom.federated.deploy import run_local_deployment

    if not insecure and not loopback:
        console.print("[yellow]note[/yellow]: flwr's Control API (`flwr run`, `flwr supernode register`) shares "
                      f"port {port} and authenticates no user in open-source Flower: whoever reaches {host}:{port} "
                      "can submit runs and register SuperNodes; firewall it to the SuperNodes' machines.")

    console.print(f"[bold]genscom fed serve[/bold]: {cfg.clients} users, {cfg.rounds} rounds, "
                  f"{'error-aware' if cfg.error_aware else 'plain FedAvg'}, Flower Deployment Engine "
                  f"(SuperLink {host}:{port}) -> {folder}")
    workdir = folder / "deploy"
    try:
        res = run_local_deployment(cfg, workdir=workdir, port=port, host=host, local_clients=local_clients,
                                   timeout_s=timeout, on_event=lambda msg: console.print(msg, markup=False),
                                   insecure=insecure, certs_dir=certs_dir, cert_hosts=cert_host or (),
                                   allowed_keys=allow_key or ())
    except (RuntimeError, TimeoutError) as exc:  # a process or the run failed or hung: first line, where the logs are
        raise OSError(f"{first_line(exc, limit=500)} (process logs: {workdir / 'logs'})") from None
    for rec in res.history:
        line = (f"round {rec['round']:>3}  RSUM {rec['RSUM']:7.2f}  i2t R@1 {rec['i2t_R@1']:.3f}  "
                f"t2i R@1 {rec['t2i_R@1']:.3f}")
        if rec["round"] > 0:
            line += (f"  clients ok {len(rec['clients_ok'])}/{cfg.clients}"
                     + ("" if rec.get("aggregated") else "  (too few clients: global adapter unchanged)"))
        console.print(line)
    console.print(f"run {res.run_id} {res.status} in {res.seconds:.1f} s; global adapter {folder / 'rounds'}, "
                  f"results {folder / RESULTS_NAME}")


@fed_app.command("client")
def fed_client(
    partition_id: int = typer.Option(..., "--partition-id", min=0, help="which user this node is: 0..N-1"),
    num_partitions: int = typer.Option(..., "--num-partitions", min=1, help="N, the run's users (fed serve --clients)"),
    superlink: str = typer.Option("127.0.0.1:9093", "--superlink", help="HOST:PORT of the SuperLink (fed serve)"),
    runtime_port: Optional[int] = typer.Option(None, "--runtime-port", min=1, max=65535,
                                               help="this SuperNode's local Runtime API port (default: a free one)"),
    flwr_home: Optional[Path] = typer.Option(None, "--flwr-home", help="FLWR_HOME: where received apps are "
                                                                       "installed (default: a temporary folder)"),
    max_wait: Optional[float] = typer.Option(None, "--max-wait", min=1.0, help="give up after this many seconds "
                                                                              "without reaching the SuperLink"),
    root_certificates: Optional[Path] = typer.Option(None, "--root-certificates", help="the SuperLink's CA "
                                                     "certificate (ca.pem of fed serve's --certs-dir): TLS is "
                                                     "verified against it"),
    auth_key: Optional[Path] = typer.Option(None, "--auth-key", help="this SuperNode's private key (OpenSSH EC); "
                                            "if missing it is made (with KEY.pub) and the command stops: pass "
                                            "KEY.pub to `genscom fed serve --allow-key`, then start again"),
    insecure: bool = typer.Option(False, "--insecure", help="DISABLE TLS and SuperNode authentication (plain "
                                  "HTTP): only for a trusted localhost SuperLink started with --insecure"),
) -> None:
    """Start a Flower SuperNode: user --partition-id of --num-partitions in a `genscom fed serve` run.

    It connects to the SuperLink at --superlink over TLS (verified against --root-certificates) and
    authenticates with --auth-key (its public key must have been given to fed serve with --allow-key);
    --insecure turns both off. It trains when sent work and runs until stopped (Ctrl-C).
    genscom, torch and flwr must be installed on this machine.
    """
    import subprocess
    import tempfile

    from genscom.federated.deploy import deploy_env, free_port, generate_node_key, supernode_command

    if ":" not in superlink or not superlink.rsplit(":", 1)[1].isdigit():
        raise typer.BadParameter(f"expected HOST:PORT, got {superlink!r}", param_hint="--superlink")
    if not 0 <= partition_id < num_partitions:
        raise typer.BadParameter(f"partition-id {partition_id} is not in 0..{num_partitions - 1}",
                                 param_hint="--partition-id")
    if insecure:
        if root_certificates is not None or auth_key is not None:
            raise typer.BadParameter("--insecure takes no --root-certificates / --auth-key", param_hint="--insecure")
    else:
        if root_certificates is None or auth_key is None:
            raise typer.BadParameter("a secure SuperNode needs --root-certificates (the SuperLink's ca.pem) and "
                                     "--auth-key (its private key); --insecure only for a trusted localhost",
                                     param_hint="--root-certificates/--auth-key")
        if not root_certificates.is_file():
            raise typer.BadParameter(f"no such file: {root_certificates}", param_hint="--root-certificates")
        if not auth_key.exists():
            _, pub = generate_node_key(auth_key)
            console.print(f"made SuperNode key {auth_key} (private, 0600) and {pub}: give {pub} to the SuperLink's "
                          f"operator (`genscom fed serve --allow-key {pub.name}`), then run this command again")
            return
    try:
        cmd = supernode_command(superlink, partition_id=partition_id, num_partitions=num_partitions,
                                runtime_port=runtime_port or free_port(), max_wait_time=max_wait,
                                root_certificates=None if insecure else root_certificates.resolve(),
                                auth_private_key=None if insecure else auth_key.resolve(), insecure=insecure)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--partition-id") from None
    with tempfile.TemporaryDirectory(prefix="genscom-flwr-") as tmp:
        env = deploy_env(flwr_home if flwr_home is not None else Path(tmp))
        console.print(f"[bold]genscom fed client[/bold]: SuperNode for user {partition_id} of {num_partitions} -> "
                      f"SuperLink {superlink}, {'INSECURE (plain HTTP)' if insecure else 'TLS + key ' + str(auth_key)}"
                      " (Ctrl-C stops it)")
        proc = subprocess.Popen(cmd, env=env)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            raise
    if rc != 0:
        raise OSError(f"flower-supernode exited with status {rc} (see its output above)")


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (also ``python -m genscom``); ``argv`` defaults to ``sys.argv[1:]``."""
    app(args=argv, prog_name="genscom")


if __name__ == "__main__":  # pragma: no cover
    main()
