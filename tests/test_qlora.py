"""QLoRA correctness: gradients through an NF4 base equal those through a dequantised float copy of it.

The reference is a second, independent computation: the same tiny LLM with every 4-bit weight
replaced by ``bitsandbytes.functional.dequantize_4bit`` of it, held in ordinary float32
``nn.Linear``/``nn.Embedding`` layers (PyTorch's own autograd). With correct QLoRA the two
gradients differ only by float rounding (cosine ~1).

The regression guarded against: on CPUs with AVX512-BF16, bitsandbytes repacks a ``Linear4bit``
weight into an inference-only layout on an eval-mode forward without gradients, and later
forwards go through ``gemv_4bit``, which has no autograd kernel (measured cosines 0.31 and 0.04
for the projector). The tests pretend every CPU has AVX512-BF16 (``has_avx512bf16`` patched where
``Linear4bit`` reads it), so they fail on any CPU if genscom stops turning that repacking off.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genscom.agents.agent import Agent
from genscom.agents.card import load_card
from genscom.agents.prompts import ChannelSensing
from genscom.agents.quant import keep_trainable_through
from genscom.agents.testing import make_tiny_llm, tiny_card_dict

bnb = pytest.importorskip("bitsandbytes")

REPO = Path(__file__).resolve().parents[1]
PROMPT = str(REPO / "prompts" / "generating.md")
CAPTIONS = ["a red circle moving left", "two blue squares"]


@pytest.fixture(scope="module")
def tiny_llm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # hidden 64: one NF4 block per row; k/v projections have 32 rows (the CPU packing works in blocks of 32 rows)
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm_qlora"), hidden_size=64)


@pytest.fixture
def avx512bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every new ``Linear4bit`` believe the CPU has AVX512-BF16 (true on some machines already)."""
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)


def _agent(tiny_llm: Path, quantization: str) -> Agent:
    card = load_card(tiny_card_dict(tiny_llm, "generating", prompt=PROMPT, quantization=quantization,
                                    quantize_embeddings=True))
    return Agent.from_card(card, seed=3)


def _lora(agent: Agent) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in agent.llm.peft.named_parameters() if "lora_" in n}


def _dequantised_copy_into(nf4: Agent, dense: Agent) -> None:
    """Give ``dense`` (same LLM loaded in float32) the dequantised NF4 weights, the same agent modules and LoRA."""
    dense_modules = dict(dense.llm.hf.named_modules())
    n_linear = 0
    with torch.no_grad():
        for name, m in nf4.llm.hf.named_modules():
            if isinstance(m, bnb.nn.Linear4bit):
                w = bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state)  # [out, in]
                target = dense_modules[name]
                assert type(target) is torch.nn.Linear and target.weight.shape == w.shape, name
                target.weight.copy_(w)
                n_linear += 1
        emb = nf4.llm.hf.get_input_embeddings()
        assert isinstance(emb, bnb.nn.Embedding4bit)
        dense.llm.hf.get_input_embeddings().weight.copy_(
            bnb.functional.dequantize_4bit(emb.weight.data, emb.weight.quant_state))  # tied: also the LM head
        assert dense.llm.hf.get_output_embeddings().weight is dense.llm.hf.get_input_embeddings().weight
        dense.load_state_dict(nf4.state_dict())  # projector, queries, skip, heads
        a, b = _lora(nf4), _lora(dense)
        assert sorted(a) == sorted(b) and a
        gen = torch.Generator().manual_seed(7)
        for name in sorted(a):
            if "lora_B" in name:  # LoRA B starts at zero; make it non-zero so LoRA A gets a gradient
                a[name].copy_(0.2 * torch.randn(a[name].shape, generator=gen))
            b[name].copy_(a[name])
    head = dense.llm.hf.get_output_embeddings()  # tied to the embedding, copied above
    n_dense_linear = sum(type(m) is torch.nn.Linear and m is not head for n, m in dense.llm.hf.named_modules()
                         if "lora_" not in n)
    assert n_linear == n_dense_linear > 0


def _grads(agent: Agent, e: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    sensing = ChannelSensing(snr_db=5.0)
    agent.eval()
    with torch.no_grad():  # an evaluation first (as fine-tuning's periodic evaluation does): eval mode, no grad
        agent(e, sensing=sensing, captions=CAPTIONS)
    agent.train()
    agent.zero_grad(set_to_none=True)
    for p in _lora(agent).values():
        p.grad = None
    out = agent(e, sensing=sensing, captions=CAPTIONS)
    loss = out.caption_loss + (out.retrieval * weights).sum()
    loss.backward()
    proj = torch.cat([p.grad.flatten() for p in agent.projector.parameters()])
    lora = {n: p.grad.flatten() for n, p in sorted(_lora(agent).items())}
    assert all(g is not None for g in lora.values())
    return {"projector": proj, "lora": torch.cat(list(lora.values())),
            **{f"lora:{n}": g for n, g in lora.items() if "layers.0." in n}}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def test_nf4_gradients_match_dequantised_reference(tiny_llm64: Path, avx512bf16_cpu: None) -> None:
    nf4 = _agent(tiny_llm64, "nf4")
    dense = _agent(tiny_llm64, "none")
    _dequantised_copy_into(nf4, dense)
    gen = torch.Generator().manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(2, 12, generator=gen), dim=-1)
    weights = torch.randn(2, 16, generator=gen)
    g_nf4, g_ref = _grads(nf4, e, weights), _grads(dense, e, weights)
    cos = {k: _cosine(g_nf4[k], g_ref[k]) for k in g_ref}
    assert all(g.abs().sum() > 0 for g in g_ref.values()), "the reference gradients must not vanish"
    assert min(cos.values()) >= 0.99, cos
    packed = [n for n, m in nf4.llm.hf.named_modules() if isinstance(m, bnb.nn.Linear4bit)
              and getattr(m.weight.quant_state, "packing_format_for_cpu", False)]
    assert packed == []


def test_keep_trainable_through_unpacks_a_packed_layer(avx512bf16_cpu: None) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False))
    w = layer[0].weight.detach().clone()
    from genscom.agents.quant import quantize_model

    quantize_model(layer, "nf4")
    q = layer[0]
    assert isinstance(q, bnb.nn.Linear4bit) and q.support_avx512bf16_for_cpu is False
    reference = bnb.functional.dequantize_4bit(q.weight.data, q.weight.quant_state).clone()
    assert torch.nn.functional.cosine_similarity(reference.flatten(), w.flatten(), dim=0) > 0.99
    q.support_avx512bf16_for_cpu = True  # as bitsandbytes sets it on an AVX512-BF16 CPU
    q.eval()
    with torch.no_grad():
        q(torch.randn(3, 64))
    assert q.weight.quant_state.packing_format_for_cpu  # repacked for inference by bitsandbytes
    assert keep_trainable_through(layer) == 1
    assert q.support_avx512bf16_for_cpu is False
    assert not getattr(q.weight.quant_state, "packing_format_for_cpu", False)
    back = bnb.functional.dequantize_4bit(q.weight.data, q.weight.quant_state)
    torch.testing.assert_close(back, reference, atol=0, rtol=1e-2)  # block scales went through bfloat16
    x = torch.randn(3, 64, requires_grad=True)
    q(x).sum().backward()
    torch.testing.assert_close(x.grad, back.sum(dim=0).expand(3, -1), atol=1e-5, rtol=1e-4)  # dL/dx = 1 W
