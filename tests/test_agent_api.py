"""The agent Python API: load_agent(card name or file) -> caption / embed / retrieve; the card search path;
the README example runs (with tiny cards named like the shipped ones, first on $GENSCOM_CARDS)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
import yaml

import genscom
from genscom.agents.card import ENV_CARDS, SHIPPED_CARDS, find_card, list_cards, load_card
from genscom.schemes.agent_link import AgentLink, Retrieved, as_clips, load_agent
from genscom.agents.testing import make_tiny_llm, tiny_card_dict

REPO = Path(__file__).resolve().parents[1]


def write_tiny_cards(folder: Path, llm: Path, *, prefix: str = "tiny") -> Path:
    """A tiny understanding + generating card pair (perception: the 16-d `tiny` profile, fresh LoRA) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, other in (("understanding", "generating"), ("generating", "understanding")):
        d = tiny_card_dict(llm, role, prompt=str(REPO / "prompts" / f"{role}.md"), name=f"{prefix}-{role}",
                           perception="tiny", partner=f"{prefix}-{other}.yaml", max_caption_tokens=4)
        (folder / f"{prefix}-{role}.yaml").write_text(yaml.safe_dump(d))
    return folder


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm_api"))


@pytest.fixture(scope="module")
def cards(tiny_llm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cards(tmp_path_factory.mktemp("cards"), tiny_llm)


@pytest.fixture(scope="module")
def agent(cards: Path) -> AgentLink:
    return load_agent("tiny-generating", search=[cards])


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, 2, 16, 16, 3), generator=g, dtype=torch.uint8)


def test_caption_embed_retrieve_shapes(agent: AgentLink, clips: torch.Tensor) -> None:
    caps = agent.caption(clips, channel="awgn", snr_db=5.0)
    assert len(caps) == 3 and all(isinstance(c, str) for c in caps)
    assert agent.caption(clips, channel="awgn", snr_db=5.0) == caps  # seeded: reproducible
    e = agent.embed(clips, channel="rayleigh", snr_db=0.0)
    assert e.shape == (3, agent.card.text_dim) and e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    noiseless = agent.embed(clips, snr_db=None)
    torch.testing.assert_close(noiseless, agent.embed(clips, channel=None))
    assert not torch.allclose(noiseless, agent.embed(clips, channel="awgn", snr_db=-10.0))  # the channel matters
    hits = agent.retrieve(["a red circle", "two blue stars"], clips, k=5, snr_db=None)
    assert isinstance(hits, Retrieved) and hits.indices.shape == (2, 3) and hits.scores.shape == (2, 3)
    assert bool((hits.scores[:, :-1] >= hits.scores[:, 1:]).all())  # best first
    q = agent.embed_text(["a red circle"])
    torch.testing.assert_close(hits.scores[0], (q @ noiseless.t())[0].sort(descending=True).values)


def test_an_adaptive_repeat_spends_more_channel_uses_only_below_its_target(cards: Path, clips: torch.Tensor) -> None:
    link = load_agent("tiny-generating", search=[cards], repeat="adaptive")
    assert link.scheme.name.endswith("-adaptive")
    uses = {snr: link._deliver(clips, "awgn", snr, 0, captions=False).channel_uses.float().mean().item()
            for snr in (-5.0, 20.0)}
    fixed = load_agent("tiny-generating", search=[cards])
    assert uses[20.0] == fixed._deliver(clips, "awgn", 20.0, 0, captions=False).channel_uses.float().mean().item()
    # 6 symbols per send (12-d embedding); about 4 sends at -5 dB for the 0 dB target (the fed-back estimate is
    # noisy and quantised: 3-5), one at 20 dB; the feedback and pilots are the same at both SNRs
    assert uses[-5.0] - uses[20.0] in {6.0 * (r - 1) for r in (3, 4, 5)}


def test_inputs_are_checked(agent: AgentLink, clips: torch.Tensor) -> None:
    assert as_clips(clips[:, 0]).shape == (3, 1, 16, 16, 3)            # images: T = 1
    assert as_clips([c.numpy() for c in clips]).shape == clips.shape   # a list of clips
    with pytest.raises(TypeError, match="uint8"):
        agent.embed(clips.float())
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        agent.embed(clips[0, 0, 0])
    with pytest.raises(ValueError, match="k must"):
        agent.retrieve(["x"], clips, k=0)
    with pytest.raises(genscom.errors.InputTooLargeError, match="query 0"):
        agent.retrieve(["word " * 1000], clips)
    with pytest.raises(TypeError, match="list of strings"):
        agent.retrieve("a red circle", clips)  # type: ignore[arg-type]


def test_card_search_path_from_any_folder(cards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing relative to the repository
    assert SHIPPED_CARDS == REPO / "genscom" / "cards"  # package data: the same in a wheel (tests/test_install.py)
    shipped = sorted(p.stem for p in (REPO / "agents").glob("*.yaml"))
    assert list_cards() == genscom.list_cards() == shipped
    assert find_card("smollm2-generating") == SHIPPED_CARDS / "smollm2-generating.yaml"
    assert load_card("smollm2-generating").prompt_path() == SHIPPED_CARDS / "prompts" / "generating.md"
    assert find_card("smollm2-generating.yaml") == find_card("smollm2-generating")
    monkeypatch.setenv(ENV_CARDS, os.pathsep.join([str(tmp_path / "missing"), str(cards)]))
    assert list_cards() == sorted([*shipped, "tiny-generating", "tiny-understanding"])
    assert find_card("tiny-understanding") == cards / "tiny-understanding.yaml"
    with pytest.raises(FileNotFoundError) as info:
        find_card("no-such-card")
    msg = str(info.value)
    assert "no-such-card" in msg and str(cards) in msg and ENV_CARDS in msg and "tiny-generating" in msg


def test_readme_example_runs(tiny_llm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's "Python API: agents" block, run as written; tiny cards named like the shipped ones come
    first on $GENSCOM_CARDS (no SmolLM2 download, a few seconds)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API: agents", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    assert 'genscom.load_agent("smollm2-generating")' in code and len(code.strip().splitlines()) <= 12
    write_tiny_cards(tmp_path / "cards", tiny_llm, prefix="smollm2")
    monkeypatch.setenv(ENV_CARDS, str(tmp_path / "cards"))
    monkeypatch.setenv("GENSCOM_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["agent"].card.name == "smollm2-generating" and scope["agent"].card.llm == str(tiny_llm)
    assert scope["emb"].shape == (4, 16) and scope["hits"].indices.shape == (1, 2)
