"""Caption decoding: attribute fusion (genscom.agents.decoding) and the agent link's repetitions.

Tiny config-built LLM and word-level tokenizer; nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from genscom.agents.agent import Agent
from genscom.agents.card import load_card
from genscom.agents.decoding import AttributeFusion, class_token_ids, class_words
from genscom.agents.testing import make_tiny_llm, make_tiny_tokenizer, tiny_card_dict

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"shape": ["circle", "square", "star", "ring"], "colour": ["red", "blue", "green", "white"]}


# -- the processor on plain tensors ------------------------------------------------------------------
def _fusion(head: torch.Tensor, weight: float) -> AttributeFusion:
    """Vocabulary of 10 tokens; colour classes A = tokens {3}, B = tokens {4, 5} (a word and its plural)."""
    return AttributeFusion({"colour": [[3], [4, 5]]}, {"colour": head.log_softmax(-1)}, weight)


def test_fusion_moves_the_choice_to_the_head_and_keeps_the_class_mass() -> None:
    scores = torch.zeros(2, 10)
    scores[:, 3] = 4.0  # the LM prefers class A ...
    scores[:, 4] = 1.0
    head = torch.tensor([[-5.0, 5.0], [5.0, -5.0]])  # ... item 0's head says B, item 1's says A
    out = _fusion(head, 1.0)(torch.zeros(2, 0, dtype=torch.long), scores)
    lm = scores.log_softmax(-1)
    assert out.argmax(-1).tolist() == [4, 3]
    # P(some class word) unchanged, as is every other token's probability and B's split between its words
    torch.testing.assert_close(out[:, [3, 4, 5]].logsumexp(-1), lm[:, [3, 4, 5]].logsumexp(-1))
    torch.testing.assert_close(out[:, :3], lm[:, :3])
    torch.testing.assert_close(out[:, 4] - out[:, 5], lm[:, 4] - lm[:, 5])
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2))
    # the product of experts, by hand for item 0: p(A) ~ p_lm(A) p_head(A), p(B) ~ p_lm(B) p_head(B)
    p_lm = torch.stack([lm[0, 3].exp(), lm[0, 4:6].exp().sum()])
    p_head = head[0].softmax(-1)
    expect = p_lm * p_head / (p_lm * p_head).sum() * p_lm.sum()
    torch.testing.assert_close(torch.stack([out[0, 3].exp(), out[0, 4:6].exp().sum()]), expect)


def test_fusion_weight_zero_and_a_named_attribute_leave_the_lm_alone() -> None:
    scores = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    head = torch.tensor([[-5.0, 5.0], [-5.0, 5.0]])
    lm = scores.log_softmax(-1)
    torch.testing.assert_close(_fusion(head, 0.0)(torch.zeros(2, 0, dtype=torch.long), scores), lm)
    done = torch.tensor([[7, 5], [7, 8]])  # item 0 already said a class-B word; item 1 did not
    out = _fusion(head, 2.0)(done, scores)
    torch.testing.assert_close(out[0], lm[0])
    assert not torch.allclose(out[1], lm[1])


def test_fusion_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match=r"must be \[B, 2\]"):
        AttributeFusion({"colour": [[3], [4]]}, {"colour": torch.zeros(2, 3)}, 1.0)
    with pytest.raises(ValueError, match="same attributes"):
        AttributeFusion({"colour": [[3], [4]]}, {"shape": torch.zeros(2, 2)}, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        AttributeFusion({"colour": [[3], [4]]}, {"colour": torch.zeros(2, 2)}, -1.0)


def test_class_tokens_group_plurals_and_refuse_split_or_shared_words() -> None:
    tok = make_tiny_tokenizer()
    ids = class_token_ids(tok, "shape", ["circle", "cross"])
    one = lambda w: tok(" " + w, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ids == [sorted(one("circle") + one("circles")), sorted(one("cross") + one("crosses"))]
    assert class_words("shape", "cross") == ("cross", "crosses") and class_words("colour", "red") == ("red",)
    with pytest.raises(ValueError, match="splits"):
        class_token_ids(tok, "colour", ["red", "dark red"])
    with pytest.raises(ValueError, match="share"):  # both unknown to the word-level vocabulary: one <unk> token
        class_token_ids(tok, "colour", ["mauve", "teal"])


# -- cards and the agent ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


def _generating(tiny_llm: Path, **kw: object) -> dict[str, object]:
    return tiny_card_dict(tiny_llm, "generating", prompt=str(REPO / "prompts/generating.md"),
                          heads=["retrieval", "caption", "attributes"], attribute_classes=CLASSES, **kw)


def test_card_checks_the_fusion_fields(tiny_llm: Path) -> None:
    assert load_card(_generating(tiny_llm)).attribute_fusion == 0.0
    assert load_card(_generating(tiny_llm, attribute_fusion=1)).attribute_fusion == 1.0
    with pytest.raises(ValueError, match="attribute_fusion"):
        load_card(_generating(tiny_llm, attribute_fusion=-1))
    with pytest.raises(ValueError, match="fusion_attributes drawn from"):
        load_card(_generating(tiny_llm, attribute_fusion=1.0, fusion_attributes=["size"]))
    with pytest.raises(ValueError, match="'caption' and 'attributes' heads"):
        load_card(tiny_card_dict(tiny_llm, "generating", prompt="p.md", attribute_fusion=1.0))


def test_generate_captions_passes_the_heads_reading_to_generate(tiny_llm: Path, monkeypatch) -> None:
    from genscom.agents.prompts import ChannelSensing

    u = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "understanding", prompt=str(REPO / "prompts/understanding.md"))))
    g = Agent.from_card(load_card(_generating(tiny_llm, attribute_fusion=1.5)), llm=u.llm, seed=1)
    x = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    sensing = ChannelSensing(snr_db=5.0, channel="awgn")
    plain = g.generate_captions(x, sensing=sensing, fusion=0)
    seen: list = []
    real = g.llm.hf.generate

    def spy(*args: object, **kw: object) -> object:
        seen.append(list(kw["logits_processor"]))
        return real(*args, **kw)

    monkeypatch.setattr(g.llm.hf, "generate", spy)
    fused = g.generate_captions(x, sensing=sensing)  # the card's weight
    assert len(fused) == len(plain) == 3
    (proc,) = seen[-1]
    assert isinstance(proc, AttributeFusion) and proc.weight == 1.5
    want = {k: v.log_softmax(-1) for k, v in g.heads["attributes"](x[:, None]).items()}
    for k in CLASSES:
        torch.testing.assert_close(proc.log_probs[k], want[k])
    g.generate_captions(x, sensing=sensing, fusion=0)
    assert seen[-1] == []  # fusion=0: the LM alone
    plain_card = tiny_card_dict(tiny_llm, "generating", prompt=str(REPO / "prompts/generating.md"),
                                adapter_name="plain")
    g2 = Agent.from_card(load_card(plain_card), llm=u.llm)
    with pytest.raises(ValueError, match="no attributes head"):
        g2.generate_captions(x, sensing=sensing, fusion=1.0)


def test_fusion_inside_generate_follows_the_head_once_and_then_lets_the_lm_go_on(tiny_llm: Path) -> None:
    """In a real ``generate`` from ``inputs_embeds``: the processor sees the generated tokens ``[B, t]``; a
    confident head picks the colour word the LM would not, and after it the LM is left alone."""
    from transformers import LogitsProcessorList

    from genscom.agents.llm import load_llm

    hf, tok = load_llm(str(tiny_llm))
    red, blue, circle = (tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("red", "blue", "circle"))
    seen: list[tuple[int, ...]] = []

    def script(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """An LM that says a colour first (red, blue close behind), then red again, then the circle, then stops."""
        seen.append(tuple(input_ids.shape))
        out = torch.full_like(scores, -50.0)
        t = input_ids.shape[1]
        if t == 0:
            out[:, red], out[:, blue] = 5.0, 4.0
        elif t == 1:
            out[:, red], out[:, blue] = 5.0, 4.0  # a second colour word: no longer fused
        elif t == 2:
            out[:, circle] = 5.0
        else:
            out[:, tok.eos_token_id] = 5.0
        return out

    ids = class_token_ids(tok, "colour", ["red", "blue"])
    head = torch.tensor([[-9.0, 9.0], [9.0, -9.0]]).log_softmax(-1)  # item 0: blue, item 1: red
    embeds = hf.get_input_embeddings()(torch.tensor([[3, 4], [5, 6]]))
    outs = {}
    for w in (0.0, 1.0):
        procs = LogitsProcessorList([script, AttributeFusion({"colour": ids}, {"colour": head}, w)])
        gen = hf.generate(inputs_embeds=embeds, attention_mask=torch.ones(2, 2, dtype=torch.long), max_new_tokens=5,
                          do_sample=False, logits_processor=procs, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        outs[w] = [t.split() for t in tok.batch_decode(gen, skip_special_tokens=True)]
    assert seen[:4] == [(2, 0), (2, 1), (2, 2), (2, 3)]  # only the generated tokens, none of the prefix
    assert outs[0.0] == [["red", "red", "circle"], ["red", "red", "circle"]]
    assert outs[1.0] == [["blue", "red", "circle"], ["red", "red", "circle"]]


def test_fusion_repeats_the_head_for_beams() -> None:
    head = torch.tensor([[-9.0, 9.0], [9.0, -9.0]]).log_softmax(-1)
    fusion = AttributeFusion({"colour": [[3], [4]]}, {"colour": head}, 1.0)
    scores = torch.zeros(4, 10)  # 2 items x 2 beams, item-major
    assert fusion(torch.zeros(4, 0, dtype=torch.long), scores)[:, [3, 4]].argmax(-1).tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="multiple"):
        fusion(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 10))


# -- repetitions of the agent link ---------------------------------------------------------------------
def test_adaptive_repeat_follows_the_fed_back_snr_and_the_agents_are_told_the_effective_snr(tiny_llm: Path,
                                                                                         monkeypatch) -> None:
    from genscom.channels import AWGNChannel
    from genscom.channels.sensing import LinkFeedback
    from genscom.schemes.agent import AgentScheme
    from genscom.schemes.base import SourceBatch

    u = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "understanding", prompt=str(REPO / "prompts/understanding.md"))))
    g = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "generating", prompt=str(REPO / "prompts/generating.md"))),
                        llm=u.llm, seed=1)
    scheme = AgentScheme(agents=(u, g), repeat="adaptive", target_snr_db=5.0, max_repeat=8, batch_size=4)
    assert scheme.name.endswith("-adaptive")
    # the fewest r with snr + 10 log10 r >= 5 dB, at most 8; 1 without feedback
    assert [scheme.repeat_for(s) for s in (-5.0, 0.0, 2.0, 5.0, 20.0, None)] == [8, 4, 2, 1, 1, 1]
    told: dict[str, list] = {"u": [], "g": []}
    monkeypatch.setattr(scheme, "understand", lambda f, snr, ch: told["u"].append(snr) or torch.randn(len(f), 12))
    monkeypatch.setattr(scheme, "generate", lambda e, snr, ch: told["g"].append(snr) or (torch.zeros(len(e), 16), None))
    feats = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    for snr, r in ((0.0, 4), (20.0, 1)):
        fb = LinkFeedback(channel="awgn", snr_db=snr, bits=6)
        p = scheme.transmit(SourceBatch(embeddings=feats), sensing=fb)
        assert p.repeat == r and p.symbols.shape == (3, 6 * r)
        assert p.channel_uses.tolist() == [6 * r + fb.feedback_uses] * 3
        scheme.deliver(p, AWGNChannel(), snr, generator=torch.Generator().manual_seed(0))
        assert told["u"][-1] == pytest.approx(snr + 10 * math.log10(r))
        assert told["g"][-1] == pytest.approx(snr + 10 * math.log10(r))
    fixed = AgentScheme(agents=(u, g), repeat=2, batch_size=4)
    assert fixed.repeat_for(-5.0) == 2 and fixed.name.endswith("-x2")
    monkeypatch.setattr(fixed, "understand", lambda f, snr, ch: told["u"].append(snr) or torch.randn(len(f), 12))
    monkeypatch.setattr(fixed, "generate", lambda e, snr, ch: told["g"].append(snr) or (torch.zeros(len(e), 16), None))
    p = fixed.transmit(SourceBatch(embeddings=feats), sensing=LinkFeedback(channel="awgn", snr_db=-5.0, bits=6))
    fixed.deliver(p, AWGNChannel(), -5.0, generator=torch.Generator().manual_seed(0))
    assert told["u"][-1] == told["g"][-1] == pytest.approx(-5.0 + 10 * math.log10(2))  # two copies: +3 dB
    assert AgentScheme(agents=(u, g), repeat=3, max_repeat=0).repeat_for(0.0) == 3  # max_repeat: adaptive only
    with pytest.raises(ValueError, match="attributes head"):
        AgentScheme(agents=(u, g), fusion=2.0)
    with pytest.raises(ValueError, match="fusion must be"):
        AgentScheme(agents=(u, g), fusion=-2.0)
    for bad in (0, "twice", True):
        with pytest.raises(ValueError, match="repeat must be"):
            AgentScheme(agents=(u, g), repeat=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_repeat"):
        AgentScheme(agents=(u, g), repeat="adaptive", max_repeat=0)
    with pytest.raises(ValueError, match="target_snr_db"):
        AgentScheme(agents=(u, g), repeat="adaptive", target_snr_db=float("nan"))
