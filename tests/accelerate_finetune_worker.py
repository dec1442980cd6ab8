"""Worker for ``tests/test_accelerate_launch.py`` (not a test): agent fine-tuning under ``accelerate launch``.

    accelerate launch --multi_gpu --num_processes 2 tests/accelerate_finetune_worker.py LLM_FOLDER OUT_DIR STEPS

Fine-tunes a tiny random agent pair (``genscom.agents.finetune.finetune_agents``) on 16 items. After
every step each rank appends one JSON line to ``OUT_DIR/rank<r>.jsonl``: the step, the logged loss,
the items this rank trained on and a SHA-256 of its trainable weights (projectors, queries, heads
and both LoRA adapters), for the test to compare across ranks.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from genscom.agents.agent import Agent
from genscom.agents.card import load_card
from genscom.agents.finetune import CaptionData, FinetuneConfig, finetune_agents
from genscom.agents.testing import tiny_card_dict

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 16


def tiny_data() -> CaptionData:
    gen = torch.Generator().manual_seed(0)
    words = ["red circle", "blue square", "green star", "white ring"]
    classes = F.normalize(torch.randn(4, 16, generator=gen), dim=-1)  # one text embedding per caption class
    features = torch.randn(N_ITEMS, 16, generator=gen)
    features[:, 0] = torch.arange(N_ITEMS, dtype=torch.float32)  # the item index, read back by the recorder
    return CaptionData(features=features, captions=[[f"a {words[i % 4]}", f"one {words[i % 4]}"] for i in range(N_ITEMS)],
                       text_emb=classes[torch.tensor([i % 4 for i in range(N_ITEMS)]).repeat_interleave(2)])


def main(llm: str, out: str, steps: int) -> None:
    prompts = {r: str(REPO / "prompts" / f"{r}.md") for r in ("understanding", "generating")}
    u = Agent.from_card(load_card(tiny_card_dict(llm, "understanding", prompt=prompts["understanding"])))
    g = Agent.from_card(load_card(tiny_card_dict(llm, "generating", prompt=prompts["generating"])), llm=u.llm, seed=1)
    seen: list[int] = []
    forward = u.forward

    def recording_forward(inputs: torch.Tensor, **kw: object):  # noqa: ANN202
        seen.extend(int(round(float(v))) for v in inputs[:, 0])
        return forward(inputs, **kw)

    u.forward = recording_forward  # type: ignore[method-assign]
    out_dir = Path(out)
    state: dict[str, object] = {}

    def progress(step: int, total: int, metrics: dict[str, float]) -> None:  # noqa: ARG001
        import torch.distributed as dist

        h = hashlib.sha256()
        for p in u.trainable_parameters() + g.trainable_parameters():
            h.update(p.detach().cpu().float().contiguous().numpy().tobytes())
        rank = dist.get_rank() if dist.is_initialized() else 0
        rec = {"step": step, "loss": metrics["loss"], "items": list(seen), "hash": h.hexdigest(), "rank": rank,
               "world": dist.get_world_size() if dist.is_initialized() else 1,
               "backend": dist.get_backend() if dist.is_initialized() else None}
        seen.clear()
        with open(out_dir / f"rank{rank}.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        state["rank"] = rank

    cfg = FinetuneConfig(steps=steps, batch_size=4, lr=5e-3, warmup_steps=1, snr_min=10, snr_max=20,
                         out_dir=str(out_dir / "run"), adapters_dir=str(out_dir / "adapters"), checkpoint_every=1000)
    res = finetune_agents(cfg, data=tiny_data(), agents=(u, g), progress=progress)
    with open(out_dir / f"result{state.get('rank', 0)}.json", "w") as f:
        json.dump({"adapters": res["adapters"], "steps": res["steps"]}, f)
    from accelerate import PartialState

    PartialState().destroy_process_group()  # leave gloo cleanly, all ranks together


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
