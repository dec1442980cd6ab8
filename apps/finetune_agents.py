"""Fine-tune the offline agent pair (LoRA / QLoRA) across a noisy channel.

Plain script over the library (the CLI's `genscom finetune agents` calls the same function):

    python apps/finetune_agents.py --card agents/smollm2-generating.yaml --steps 300
    python apps/finetune_agents.py --card agents/smollm2-generating-nf4.yaml ...   # QLoRA
    python apps/finetune_agents.py ... --resume                                    # continue exactly
    accelerate launch --multi_gpu --num_processes 2 apps/finetune_agents.py --device auto ...   # 2 GPUs
    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 apps/finetune_agents.py ...  # 2 CPU
                                                     # processes over gloo (`--cpu --num_processes 2` starts one)

Any FinetuneConfig field is a flag (--n-train, --batch-size, --grad-accum, --lr, --snr-min, ...).
The run goes to --out-dir (default runs/finetune-agents-<timestamp>/: checkpoint.pt, finetune.json)
and the trained adapters to --adapters-dir (default <out-dir>/adapters/); a folder that already
holds adapters (e.g. the shipped genscom/adapters/) is only written with --overwrite, keeping its READMEs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing

from genscom.agents.finetune import FinetuneConfig, finetune_agents


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(FinetuneConfig)
    for f in dataclasses.fields(FinetuneConfig):
        t = hints[f.name]
        base = next((a for a in typing.get_args(t) if a is not type(None)), t) if typing.get_args(t) else t
        kind = base if base in (int, float) else str
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None)
    parser.add_argument("--resume", action="store_true", help="continue from <out_dir>/checkpoint.pt (default: the "
                                                              "newest runs/finetune-agents-*/ holding one)")
    parser.add_argument("--overwrite", action="store_true", help="allow an --adapters-dir that already holds trained "
                                                                 "adapters (their READMEs are kept)")
    args = vars(parser.parse_args(argv))
    raw = list(argv) if argv is not None else sys.argv[1:]

    def argv_has(name: str) -> bool:  # an explicit `--adapters-dir none` means None, not the default
        flag = "--" + name.replace("_", "-")
        return any(a == flag or a.startswith(flag + "=") for a in raw)

    resume = args.pop("resume")
    overwrite = args.pop("overwrite")
    optional = {f.name for f in dataclasses.fields(FinetuneConfig) if type(None) in typing.get_args(hints[f.name])}
    args = {k: (None if k in optional and isinstance(v, str) and v.lower() in ("none", "null") else v)
            for k, v in args.items()}
    given = {k: v for k, v in args.items() if v is not None or (k in optional and argv_has(k))}
    cfg = FinetuneConfig(**given)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    res = finetune_agents(cfg, resume=resume, progress=True, overwrite=overwrite)
    if res["main_process"]:
        logging.getLogger("finetune_agents").info("done: %d steps in %.0f s, adapters %s", res["steps"],
                                                  res["seconds"], res["adapters"])
    return res


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, OSError) as exc:  # genscom's errors are ValueErrors: one line, no traceback
        from genscom.errors import one_line

        sys.exit(f"error: {one_line(exc, limit=2000)}")
