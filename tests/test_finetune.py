"""Agent fine-tuning: a few steps lower the loss, and --resume continues exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genscom.agents.agent import Agent
from genscom.agents.card import load_card
from genscom.agents.finetune import CaptionData, FinetuneConfig, contrastive_loss, finetune_agents
from genscom.agents.testing import make_tiny_llm, tiny_card_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm_ft"))


def _pair(tiny_llm: Path) -> tuple[Agent, Agent]:
    u = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "understanding", prompt=str(REPO / "prompts/understanding.md"))))
    g = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "generating", prompt=str(REPO / "prompts/generating.md"))),
                        llm=u.llm, seed=1)
    return u, g


@pytest.fixture(scope="module")
def data() -> CaptionData:
    gen = torch.Generator().manual_seed(0)
    words = ["red circle", "blue square", "green star", "white ring"]
    classes = F.normalize(torch.randn(4, 16, generator=gen), dim=-1)  # one text embedding per caption class
    return CaptionData(features=torch.randn(8, 16, generator=gen),
                       captions=[[f"a {words[i % 4]}", f"one {words[i % 4]}"] for i in range(8)],
                       text_emb=classes[torch.tensor([i % 4 for i in range(8)]).repeat_interleave(2)])


def test_finetune_lowers_loss_and_saves(tiny_llm: Path, data: CaptionData, tmp_path: Path) -> None:
    cfg = FinetuneConfig(steps=20, batch_size=4, lr=3e-3, warmup_steps=1, snr_min=10, snr_max=20,
                         out_dir=str(tmp_path / "run"), adapters_dir=str(tmp_path / "adapters"), checkpoint_every=100)
    res = finetune_agents(cfg, data=data, agents=_pair(tiny_llm))
    losses = res["losses"]
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    for name in ("tiny-understanding", "tiny-generating"):
        assert (tmp_path / "adapters" / name / "adapter_model.safetensors").is_file()


def test_resume_continues_exactly(tiny_llm: Path, data: CaptionData, tmp_path: Path) -> None:
    kw = dict(batch_size=2, lr=3e-3, warmup_steps=2, grad_accum=2, adapters_dir=None, checkpoint_every=2)
    full = finetune_agents(FinetuneConfig(steps=3, out_dir=str(tmp_path / "a"), **kw), data=data, agents=_pair(tiny_llm))
    finetune_agents(FinetuneConfig(steps=2, out_dir=str(tmp_path / "b"), **kw), data=data, agents=_pair(tiny_llm))
    resumed = finetune_agents(FinetuneConfig(steps=3, out_dir=str(tmp_path / "b"), **kw), data=data,
                              agents=_pair(tiny_llm), resume=True)
    assert resumed["losses"] == full["losses"]
    with pytest.raises(ValueError, match="lr"):
        finetune_agents(FinetuneConfig(steps=5, out_dir=str(tmp_path / "b"), **{**kw, "lr": 1e-2}), data=data,
                        agents=_pair(tiny_llm), resume=True)


def test_config_and_loss_checks() -> None:
    with pytest.raises(ValueError, match="snr_min"):
        FinetuneConfig(snr_min=10, snr_max=0)
    with pytest.raises(ValueError, match="steps"):
        FinetuneConfig(steps=0)
    x = F.normalize(torch.randn(4, 8), dim=-1)
    assert contrastive_loss(x, x, 0.05) < contrastive_loss(x, x.roll(1, 0), 0.05)
