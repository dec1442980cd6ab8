"""Fine-tune the offline agent pair (LoRA / QLoRA) across a noisy channel.

A thin wrapper: it runs the very command ``genscom finetune agents`` with its arguments, so the
script and the CLI have one flag set (one per :class:`genscom.agents.finetune.FinetuneConfig` field,
``_`` -> ``-``, plus ``--config``, ``--resume`` and ``--overwrite``), the same help, defaults and
one-line errors (``--debug`` anywhere prints the traceback too):

    python apps/finetune_agents.py --card agents/smollm2-generating.yaml --steps 300
    python apps/finetune_agents.py --card agents/smollm2-generating-nf4.yaml ...   # QLoRA
    python apps/finetune_agents.py ... --resume                                    # continue exactly
    accelerate launch --multi_gpu --num_processes 2 apps/finetune_agents.py --device auto ...   # 2 GPUs
    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 apps/finetune_agents.py ...  # 2 CPU
                                                     # processes over gloo (`--cpu --num_processes 2` starts one)

is the same as ``genscom finetune agents ...`` (or ``accelerate launch ... -m genscom finetune agents ...``).
The run goes to --out-dir (alias --out; default runs/finetune-agents-<timestamp>/: checkpoint.pt,
finetune.json) and the trained adapters to --adapters-dir (default <out-dir>/adapters/); a folder that
already holds adapters (e.g. the shipped genscom/adapters/) is only written with --overwrite, keeping its
READMEs. ``none`` unsets a path flag (``--adapters-dir none``). ``python apps/finetune_agents.py --help``
lists every flag.
"""

from __future__ import annotations

import sys
from typing import Any

COMMAND = ("finetune", "agents")  # the genscom sub-command this script runs


def cli_args(argv: list[str] | None = None) -> list[str]:
    """The ``genscom`` argument list this script's ``argv`` stands for (``--debug`` moves to the root command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = [a for a in args if a == "--debug"]
    return [*debug, *COMMAND, *(a for a in args if a != "--debug")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``genscom finetune agents <argv>`` in this process; return its result (see ``finetune_agents``).

    Raises:
        SystemExit: after printing a one-line ``error:`` (status 2) or a usage error; with status 0 after
            ``--help``.
    """
    import click

    from genscom.cli import app

    try:
        rv = app(args=cli_args(argv), prog_name="genscom", standalone_mode=False)
    except click.ClickException as exc:  # a usage error: what the CLI prints for it
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        raise SystemExit(1) from None
    if isinstance(rv, dict):
        return rv
    raise SystemExit(rv or 0)  # an exit status: the error line is printed already (or --help was)


if __name__ == "__main__":
    main()
