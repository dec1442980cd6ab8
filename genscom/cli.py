"""The ``genscom`` command: thin typer front end (parse, call the library, print with rich)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="genscom: generative semantic communication toolkit.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Benchmarks: print a table, write results JSON (PROTOCOL.md) and a PNG plot.",
                        no_args_is_help=True)
train_app = typer.Typer(help="Train genscom's own models.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")

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


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


@app.command()
def version() -> None:
    """Print the genscom version."""
    from genscom import __version__

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

    try:
        cfg = ChannelBenchConfig(quick=quick, out_dir=str(out), seed=seed,
                                 channels=tuple(c.strip() for c in channels.split(",") if c.strip()))
        run_channel_bench(cfg, command=_command_line(), console=console)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        _fail(exc)


@bench_app.command("retrieval")
def bench_retrieval(
    quick: bool = typer.Option(False, "--quick", help="200 items, 6 SNRs, 2 realisations, AWGN (about 3 minutes)"),
    dataset: str = typer.Option("synthetic", "--dataset", help="dataset name (synthetic, digits, msrvtt, image-captions)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="folder of a local dataset (msrvtt, image-captions)"),
    profile: str = typer.Option("mini", "--profile", help="encoder profile or a CLIP/SigLIP id/path"),
    n_items: Optional[int] = typer.Option(None, "--n-items", help="gallery size (default 1000, quick 200)"),
    channels: Optional[str] = typer.Option(None, "--channels", help="comma-separated: awgn,rayleigh,rician"),
    snrs: Optional[str] = typer.Option(None, "--snrs", help="comma-separated SNRs in dB (default -10..20 step 2.5)"),
    realisations: Optional[int] = typer.Option(None, "--realisations", help="channel realisations per point (default 5)"),
    seed: int = typer.Option(0, "--seed"),
    mcs: str = typer.Option("qpsk-1/2", "--mcs", help="MCS of the digital schemes, or 'adaptive'"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, or auto"),
    out: Path = typer.Option(Path("results/retrieval"), "--out", help="output folder"),
) -> None:
    """Text-video retrieval accuracy vs SNR: semantic schemes against bit-exact JPEG/H.264 + LDPC baselines."""
    from genscom.bench.retrieval import RetrievalBenchConfig, run_retrieval_bench
    from genscom.utils import resolve_device

    try:
        cfg = RetrievalBenchConfig(
            dataset=dataset, profile=profile, n_items=n_items,
            channels=tuple(c.strip() for c in channels.split(",") if c.strip()) if channels else None,
            snrs=tuple(_parse_floats(snrs, "--snrs")) if snrs else None,
            realisations=realisations, seed=seed, quick=quick, mcs=mcs, out_dir=str(out),
            device=str(resolve_device(device)),
            dataset_kwargs={"root": str(data_root)} if data_root else {},
        )
        run_retrieval_bench(cfg, command=_command_line(), console=console)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        _fail(exc)


@train_app.command("encoder")
def train_encoder_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of TrainEncoderConfig fields"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (save_pretrained)"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in the output folder"),
) -> None:
    """Train the offline `mini` image/video tower against the frozen MiniLM text tower (LiT)."""
    from genscom.encoders.train import TrainEncoderConfig, train_encoder
    from genscom.utils import load_config

    try:
        overrides = {"output_dir": str(out) if out else None, "steps": steps, "batch_size": batch_size, "seed": seed}
        cfg = load_config(TrainEncoderConfig, config, **overrides)
        path = train_encoder(cfg, resume=resume, progress=True)
        console.print(f"saved {path}")
    except (ValueError, TypeError, FileNotFoundError) as exc:
        _fail(exc)


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
