"""Agent fine-tuning: a few steps lower the loss, and --resume continues exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genscom.agents.agent import Agent
from genscom.agents.card import load_card
from genscom.agents.finetune import CaptionData, FinetuneConfig, finetune_agents
from genscom.agents.testing import StubEncoder, make_tiny_llm, tiny_card_dict

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
    # adapters_dir=None: the adapters go under the run folder, never into the shipped ones
    for name in ("tiny-understanding", "tiny-generating"):
        assert (tmp_path / "a" / "adapters" / name / "adapter_model.safetensors").is_file()
    with pytest.raises(ValueError, match="lr"):
        finetune_agents(FinetuneConfig(steps=5, out_dir=str(tmp_path / "b"), **{**kw, "lr": 1e-2}), data=data,
                        agents=_pair(tiny_llm), resume=True)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="snr_min"):
        FinetuneConfig(snr_min=10, snr_max=0)
    with pytest.raises(ValueError, match="steps"):
        FinetuneConfig(steps=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        FinetuneConfig(lr_schedule="linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval_every"):
        FinetuneConfig(eval_every=-1)


def test_periodic_evaluation_is_recorded(tiny_llm: Path, data: CaptionData, tmp_path: Path) -> None:
    calls: list[bool] = []

    def evaluator(pair) -> dict[str, float]:
        calls.append(pair.training)
        return {"score": float(len(calls))}

    cfg = FinetuneConfig(steps=5, batch_size=2, warmup_steps=1, eval_every=2, out_dir=str(tmp_path / "run"),
                         adapters_dir=None, checkpoint_every=100)
    res = finetune_agents(cfg, data=data, agents=_pair(tiny_llm), evaluator=evaluator)
    evals = {h["step"]: h["eval"] for h in res["history"] if "eval" in h}
    assert evals == {2: {"score": 1.0}, 4: {"score": 2.0}, 5: {"score": 3.0}}  # every 2 steps and the last one
    assert calls == [False, False, False]  # evaluated in eval mode


def test_caption_evaluator_scores_val_split(tiny_llm: Path) -> None:
    from genscom.agents.finetune import AgentPairModule, CaptionEvaluator
    from genscom.data import create_dataset

    u, g = _pair(tiny_llm)
    ds = create_dataset("synthetic", split="val", n_items=3, seed=0, cache=False)
    ev = CaptionEvaluator(FinetuneConfig(n_eval=3, eval_snr=10.0), u, encoder=StubEncoder(), dataset=ds)
    pair = AgentPairModule(u, g)
    pair.train()
    scores = ev(pair)
    assert set(scores) >= {"object_colour_acc", "object_acc", "colour_acc", "bleu4", "text_sim"}
    assert all(0.0 <= scores[k] <= 1.0 for k in ("object_colour_acc", "object_acc", "colour_acc", "bleu4"))
    assert pair.training  # restored
    with pytest.raises(ValueError, match="synthetic"):
        CaptionEvaluator(FinetuneConfig(dataset="msrvtt"), u, encoder=StubEncoder())


def test_init_from_trained_adapters(tiny_llm: Path, data: CaptionData, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    kw = dict(batch_size=2, warmup_steps=1, checkpoint_every=100, snr_min=10, snr_max=20)
    finetune_agents(FinetuneConfig(steps=4, lr=3e-3, out_dir=str(tmp_path / "a"), adapters_dir=str(tmp_path / "ad"),
                                   **kw), data=data, agents=_pair(tiny_llm))
    saved = load_file(str(tmp_path / "ad" / "tiny-generating" / "agent_modules.safetensors"))
    pair = _pair(tiny_llm)
    assert not torch.allclose(pair[1].queries, saved["queries"])  # fresh agents differ from the trained ones
    finetune_agents(FinetuneConfig(steps=1, lr=1e-12, out_dir=str(tmp_path / "b"), adapters_dir=None,
                                   init_from=str(tmp_path / "ad"), **kw), data=data, agents=pair)
    torch.testing.assert_close(pair[1].queries.detach(), saved["queries"], atol=1e-6, rtol=0)  # continued from them
    with pytest.raises(FileNotFoundError, match="init_from"):
        finetune_agents(FinetuneConfig(steps=1, out_dir=str(tmp_path / "d"), init_from=str(tmp_path / "none"), **kw),
                        data=data, agents=_pair(tiny_llm))
    # the checkpoint of run "a" holds the same adapters as its saved folders
    from genscom.agents.finetune import export_checkpoint

    out = export_checkpoint(tmp_path / "a" / "checkpoint.pt", tmp_path / "exported", agents=_pair(tiny_llm))
    assert sorted(out) == ["tiny-generating", "tiny-understanding"]
    again = load_file(str(tmp_path / "exported" / "tiny-generating" / "agent_modules.safetensors"))
    assert all(torch.equal(again[k], saved[k]) for k in saved)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        export_checkpoint(tmp_path / "nope.pt", tmp_path / "x")
