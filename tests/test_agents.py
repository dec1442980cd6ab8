"""Agents: cards, prompts, both roles' shapes, LoRA freezing, multi-adapter switch, save/load, nf4 on CPU.

Everything uses a tiny random LlamaConfig LLM with a locally built word-level tokenizer (no download).
"""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch

from genscom.agents.agent import Agent, load_agent_pair
from genscom.agents.card import AgentCard, load_card
from genscom.agents.prompts import ChannelSensing, TaskRequirement, render_prompt
from genscom.agents.testing import make_tiny_llm, tiny_card_dict

REPO = Path(__file__).resolve().parents[1]
PROMPTS = {r: str(REPO / "prompts" / f"{r}.md") for r in ("understanding", "generating")}


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


@pytest.fixture(scope="module")
def tiny_llm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hidden size 64 for the nf4 tests: bitsandbytes' packed CPU kernels need rows of at least one 64-block."""
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm64"), hidden_size=64)


def _card(tiny_llm: Path, role: str, **kw: object) -> AgentCard:
    return load_card(tiny_card_dict(tiny_llm, role, prompt=PROMPTS[role], **kw))


@pytest.fixture(scope="module")
def pair(tiny_llm: Path) -> tuple[Agent, Agent]:
    u = Agent.from_card(_card(tiny_llm, "understanding"))
    g = Agent.from_card(_card(tiny_llm, "generating"), llm=u.llm, seed=1)
    return u, g


# -- cards ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((REPO / "agents").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_cards_load(path: Path) -> None:
    card = load_card(path)
    assert card.name == path.stem
    assert card.prompt_path().is_file()
    if card.partner is not None:
        partner = card.partner_card()
        assert {partner.role, card.role} == {"understanding", "generating"}
        assert partner.embedding_dim == card.embedding_dim


SHAPE_FIELDS = ("role", "llm", "perception", "perception_dim", "lora", "adapter_name", "heads", "embedding_dim",
                "text_dim", "n_soft_tokens", "n_query_tokens", "image_cond_dim", "prompt")


@pytest.mark.parametrize("path", sorted((REPO / "agents").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_adapters_were_trained_for_their_cards(path: Path) -> None:
    """A card and the adapter folder it names agree on everything that shapes or feeds the weights."""
    card = load_card(path)
    folder = card.adapter_path()
    if folder is None:
        pytest.skip(f"{path.name} names no adapter")
    meta = json.loads((folder / "agent.json").read_text())
    trained = meta["card"]
    now = card.to_dict()
    diff = {k: (trained.get(k), now.get(k)) for k in SHAPE_FIELDS if trained.get(k) != now.get(k)}
    assert not diff, f"{path.name} and {folder} disagree (trained, card): {diff}; retrain or fix the card"
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "agent_modules.safetensors").is_file()


def test_adapter_folders_record_a_shipped_prompt_portably(tmp_path: Path) -> None:
    """An adapter's agent.json names a shipped prompt as prompts/<file> (any machine), another prompt as given."""
    shipped = (REPO / "genscom" / "cards" / "prompts" / "generating.md").resolve()
    card = load_card(REPO / "agents" / "smollm2-generating.yaml", prompt=str(shipped))
    assert card.to_dict()["prompt"] == str(shipped)
    assert card.to_dict(portable=True)["prompt"] == "prompts/generating.md"
    trained = load_card(REPO / "agents" / "smollm2-generating.yaml", adapter=str(tmp_path / "runs" / "g-final"))
    assert trained.to_dict(portable=True)["adapter"] == "g-final"
    own = tmp_path / "mine.md"
    own.write_text(shipped.read_text() + "Answer briefly.\n")
    mine = load_card(REPO / "agents" / "smollm2-generating.yaml", prompt=str(own))
    assert mine.to_dict(portable=True)["prompt"] == str(own)
    checkout = load_card(REPO / "agents" / "smollm2-generating.yaml", prompt=PROMPTS["generating"])
    assert checkout.to_dict(portable=True)["prompt"] == "prompts/generating.md"  # the checkout's copy


@pytest.mark.parametrize("field,value,match", [
    ("role", "talker", "role"),
    ("quantization", "int3", "quantization"),
    ("heads", ["caption"], "heads"),  # caption is a generating head
    ("embedding_dim", 0, "embedding_dim"),
    ("lora", {"r": 0}, "lora.r"),
    ("lora", {"rank": 4}, "lora"),
    ("colour", "red", "colour"),  # unknown field
])
def test_card_rejects_bad_fields(tiny_llm: Path, field: str, value: object, match: str) -> None:
    d = tiny_card_dict(tiny_llm, "understanding", prompt=PROMPTS["understanding"])
    d[field] = value
    with pytest.raises(ValueError, match=match):
        load_card(d)


def test_card_missing_prompt_file(tiny_llm: Path) -> None:
    card = load_card(tiny_card_dict(tiny_llm, "understanding", prompt="prompts/nope.md"))
    with pytest.raises(ValueError, match="prompt"):
        card.prompt_path()


# -- prompts ----------------------------------------------------------------------------------------
def test_prompt_renders_sensing_and_task() -> None:
    tpl = "SNR {{ snr_db }} dB ({{snr_level}}) on {{ channel }}; task {{ task }}; budget {{ budget }}{# gone #}"
    out = render_prompt(tpl, sensing=ChannelSensing(snr_db=-3.4, channel="rayleigh"),
                        task=TaskRequirement("caption", budget=128))
    assert out == "SNR -3 dB (very low) on rayleigh; task caption; budget 128"
    out = render_prompt(tpl, sensing=ChannelSensing(snr_db=None, channel="none"), task=TaskRequirement())
    assert "noiseless" in out and "unlimited" in out
    with pytest.raises(ValueError, match="unknown placeholder"):
        render_prompt("{{ colour }}", sensing=ChannelSensing(1.0), task=TaskRequirement())
    with pytest.raises(ValueError, match="snr_db"):
        ChannelSensing(snr_db=float("nan"))
    with pytest.raises(ValueError, match="task"):
        TaskRequirement("dance")  # type: ignore[arg-type]


# -- both roles -------------------------------------------------------------------------------------
def test_roles_forward_shapes(pair: tuple[Agent, Agent]) -> None:
    u, g = pair
    feats = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    e = u.understand(feats, sensing=ChannelSensing(5.0))
    assert e.shape == (3, 12)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    assert u(torch.randn(3, 4, 16), sensing=ChannelSensing(5.0)).embedding.shape == (3, 12)  # frame features
    out = g(e, sensing=ChannelSensing(5.0), captions=["a red circle", "two blue squares moving left", "a star"])
    assert out.retrieval.shape == (3, 16) and out.image_conditioning.shape == (3, 2, 8)
    assert out.caption_loss.dim() == 0 and torch.isfinite(out.caption_loss)
    caps = g.generate_captions(e, sensing=ChannelSensing(5.0), max_new_tokens=3)
    assert len(caps) == 3 and all(isinstance(c, str) for c in caps)
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        u(torch.randn(3, 7), sensing=ChannelSensing(5.0))
    with pytest.raises(ValueError, match="understand"):
        g.understand(e, sensing=ChannelSensing(5.0))


def test_shared_prompt_cache_matches_full_sequence(pair: tuple[Agent, Agent]) -> None:
    """The prompt runs once at batch 1 and its KV cache is repeated: same states and gradients as the full batch."""
    u, _ = pair
    llm = u.llm
    llm.activate(u.adapter_name)
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randn(1, 5, llm.hidden_size, generator=gen)
    rest = torch.randn(3, 4, llm.hidden_size, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])  # right padding, as for captions
    full_mask = torch.cat([torch.ones(3, 5, dtype=torch.long), mask], dim=1)
    lora = next(p for n, p in llm.peft.named_parameters() if "lora_B" in n and f".{u.adapter_name}." in n)

    def run(shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        lora.grad = None
        h = llm.hidden_states(rest, mask, shared_prefix=prompt) if shared else \
            llm.hidden_states(torch.cat([prompt.expand(3, -1, -1), rest], dim=1), full_mask)
        (h * full_mask[..., None]).pow(2).mean().backward()
        return h.detach(), lora.grad.clone()

    h_full, g_full = run(False)
    h_shared, g_shared = run(True)
    assert h_shared.shape == h_full.shape == (3, 9, llm.hidden_size)
    keep = full_mask.bool()
    torch.testing.assert_close(h_shared[keep], h_full[keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g_shared, g_full, atol=1e-4, rtol=1e-3)
    assert g_full.abs().sum() > 0
    with pytest.raises(ValueError, match="shared_prefix"):
        llm.hidden_states(rest, mask, shared_prefix=prompt.expand(2, -1, -1))


def test_prompt_conditions_output(pair: tuple[Agent, Agent]) -> None:
    u, _ = pair
    feats = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = u.understand(feats, sensing=ChannelSensing(-5.0))
        b = u.understand(feats, sensing=ChannelSensing(15.0))
    assert not torch.allclose(a, b)  # the rendered SNR reaches the LLM


def test_lora_only_adapters_train(pair: tuple[Agent, Agent]) -> None:
    u, g = pair
    llm = u.llm
    base = {n: p.detach().clone() for n, p in llm.hf.named_parameters() if "lora_" not in n}
    assert all(not p.requires_grad for n, p in llm.hf.named_parameters() if "lora_" not in n)
    params = g.trainable_parameters() + u.lora_parameters()
    opt = torch.optim.SGD(params, lr=0.5)
    e = u.understand(torch.randn(2, 16), sensing=ChannelSensing(5.0))
    g(e, sensing=ChannelSensing(5.0), captions=["a red circle", "a blue ring"]).caption_loss.backward()
    grads = [p.grad for p in g.lora_parameters()]
    assert grads and all(gr is not None for gr in grads)
    assert all(p.grad is not None for p in u.lora_parameters())  # joint training reaches the transmitter
    before = [p.detach().clone() for p in g.lora_parameters()]
    opt.step()
    opt.zero_grad()
    assert any(not torch.equal(a, b) for a, b in zip(before, g.lora_parameters()))
    for n, p in llm.hf.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base[n]), n


def test_multi_adapter_switch_changes_outputs(pair: tuple[Agent, Agent]) -> None:
    u, g = pair
    llm = u.llm
    assert llm.adapters == ["generating", "understanding"]
    with torch.no_grad():
        for p in g.lora_parameters():  # make the generating adapter differ from zero-init B
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    emb = llm.embed_ids(torch.tensor([[3, 4, 5, 6]]))
    with torch.no_grad():
        llm.activate("understanding")
        h_u = llm.hidden_states(emb)
        llm.activate("generating")
        h_g = llm.hidden_states(emb)
        llm.activate("understanding")
        h_u2 = llm.hidden_states(emb)
    assert not torch.allclose(h_u, h_g)
    torch.testing.assert_close(h_u, h_u2)
    with pytest.raises(ValueError, match="unknown adapter"):
        llm.activate("nope")


def test_save_load_roundtrip(tiny_llm: Path, tmp_path: Path) -> None:
    u, g = load_agent_pair(_write_pair(tiny_llm, tmp_path), load_adapter=False)
    with torch.no_grad():
        for p in g.trainable_parameters():
            p.add_(0.05)
    g.save_pretrained(tmp_path / "adapters" / "gen")
    assert (tmp_path / "adapters" / "gen" / "adapter_model.safetensors").is_file()
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "adapters" / "gen").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert (tmp_path / "adapters" / "gen" / "agent_modules.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    e = torch.nn.functional.normalize(torch.randn(2, 12), dim=-1)
    with torch.no_grad():
        ref = g(e, sensing=ChannelSensing(3.0)).retrieval
    card = load_card(tmp_path / "agents" / "gen.yaml", adapter=str(tmp_path / "adapters" / "gen"))
    g2 = Agent.from_card(card, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(g2(e, sensing=ChannelSensing(3.0)).retrieval, ref)
    with pytest.raises(ValueError, match="role"):
        Agent.from_card(_card(tiny_llm, "understanding", adapter=str(tmp_path / "adapters" / "gen")))
    # half-precision storage: about half the bytes, outputs within fp16 rounding
    g.save_pretrained(tmp_path / "adapters" / "gen16", dtype=torch.float16)
    sizes = [sum(f.stat().st_size for f in (tmp_path / "adapters" / d).glob("*.safetensors")) for d in ("gen", "gen16")]
    assert sizes[1] < 0.6 * sizes[0], sizes
    g3 = Agent.from_card(load_card(tmp_path / "agents" / "gen.yaml", adapter=str(tmp_path / "adapters" / "gen16")))
    assert g3.queries.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(g3(e, sensing=ChannelSensing(3.0)).retrieval, ref, atol=5e-3, rtol=0)
    with pytest.raises(ValueError, match="dtype"):
        g.save_pretrained(tmp_path / "adapters" / "bad", dtype=torch.int8)


def _write_pair(tiny_llm: Path, tmp_path: Path) -> Path:
    import yaml

    (tmp_path / "agents").mkdir(exist_ok=True)
    for role, name, partner in (("understanding", "und", "gen"), ("generating", "gen", "und")):
        d = tiny_card_dict(tiny_llm, role, prompt=PROMPTS[role], name=name, partner=f"{partner}.yaml")
        (tmp_path / "agents" / f"{name}.yaml").write_text(yaml.safe_dump(d))
    return tmp_path / "agents" / "und.yaml"


def test_nf4_load_path_on_cpu(tiny_llm64: Path) -> None:
    tiny_llm = tiny_llm64
    pytest.importorskip("bitsandbytes")
    from genscom.agents.quant import dense_parameter_bytes, parameter_memory_bytes

    card = _card(tiny_llm, "generating", quantization="nf4", dtype="float32")
    g = Agent.from_card(card)
    import bitsandbytes as bnb

    mods = list(g.llm.hf.modules())
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in mods)
    assert any(isinstance(m, bnb.nn.Embedding4bit) for m in mods)
    e = torch.nn.functional.normalize(torch.randn(2, 12), dim=-1)
    out = g(e, sensing=ChannelSensing(3.0), captions=["a red circle", "a ring"])
    assert out.retrieval.shape == (2, 16) and torch.isfinite(out.caption_loss)
    out.caption_loss.backward()  # QLoRA: gradients reach the adapters on top of 4-bit weights
    assert all(p.grad is not None for p in g.lora_parameters())
    from genscom.agents.quant import quantize_model

    dense = load_tiny_dense(tiny_llm)
    bf16 = dense_parameter_bytes(dense, torch.bfloat16)
    nf4 = parameter_memory_bytes(quantize_model(dense, "nf4", quantize_embeddings=True))
    assert nf4 < 0.8 * bf16, (nf4, bf16)  # tiny dims: norms and block statistics weigh more than in a real LLM
    assert parameter_memory_bytes(g.llm.hf) > nf4  # + the LoRA adapter


def load_tiny_dense(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


def test_agent_scheme_over_awgn(pair: tuple[Agent, Agent]) -> None:
    from genscom.channels import AWGNChannel
    from genscom.schemes.agent import AgentScheme
    from genscom.schemes.base import SourceBatch

    scheme = AgentScheme(agents=pair, captions=True, batch_size=2)
    feats = torch.randn(3, 16, generator=torch.Generator().manual_seed(3))
    payload = scheme.transmit(SourceBatch(embeddings=feats))
    assert payload.channel_uses.tolist() == [6, 6, 6]  # ceil(embedding_dim 12 / 2)
    out = scheme.deliver(payload, AWGNChannel(), 10.0, generator=torch.Generator().manual_seed(0))
    assert out.embeddings.shape == (3, 16) and len(out.extras["captions"]) == 3
    clean = scheme.deliver(payload, None, None)
    assert not torch.allclose(out.embeddings, clean.embeddings)
    with pytest.raises(ValueError, match="perception"):
        scheme.transmit(SourceBatch(embeddings=torch.randn(3, 5)))


def test_agent_scheme_perceives_frames_with_its_own_encoder(pair: tuple[Agent, Agent]) -> None:
    from genscom.schemes.agent import AgentScheme
    from genscom.schemes.base import SourceBatch

    class Perception:  # stands in for the card's encoder: 16-d features from the frames
        calls = 0

        def encode_clips(self, frames: torch.Tensor, **_: object) -> torch.Tensor:
            Perception.calls += 1
            return frames.float().mean(dim=(1, 2, 3))[:, :1].repeat(1, 16) / 255.0

    frames = torch.randint(0, 256, (3, 2, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    scheme = AgentScheme(agents=pair, batch_size=2, perception=Perception())
    wrong = torch.randn(3, 16)  # embeddings from some other encoder: ignored when frames are there
    p = scheme.transmit(SourceBatch(frames=frames, embeddings=wrong))
    assert Perception.calls == 1
    # the same symbols as sending the perception features themselves (the wrong embeddings were ignored)
    direct = scheme.transmit(SourceBatch(embeddings=Perception().encode_clips(frames)))
    torch.testing.assert_close(p.symbols, direct.symbols)


def test_lora_copy_fallback_matches_peft_load(tiny_llm: Path, tmp_path: Path) -> None:
    """The by-name LoRA copy (used where bitsandbytes' Embedding4bit cannot state_dict) loads what PEFT saved."""
    g = Agent.from_card(_card(tiny_llm, "generating"), seed=3)
    with torch.no_grad():
        for p in g.lora_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    saved = [p.detach().clone() for p in g.lora_parameters()]
    folder = g.save_pretrained(tmp_path / "g")
    with torch.no_grad():
        for p in g.lora_parameters():
            p.zero_()
    from safetensors.torch import load_file

    g.llm._copy_lora_state(g.adapter_name, load_file(str(folder / "adapter_model.safetensors")), folder)
    assert all(torch.equal(a, b) for a, b in zip(saved, g.lora_parameters()))
    with pytest.raises(ValueError, match="do not fit adapter"):
        g.llm._copy_lora_state(g.adapter_name, {"x.lora_A.weight": torch.zeros(2, 2)}, folder)


def test_input_skip_starts_at_zero_and_feeds_heads(pair: tuple[Agent, Agent]) -> None:
    """The residual input skip is zero at init (heads see only the LLM) and, once non-zero, changes the heads."""
    u, _ = pair
    assert torch.count_nonzero(u.skip.weight) == 0 and torch.count_nonzero(u.skip.bias) == 0
    x = torch.randn(3, u.d_in, generator=torch.Generator().manual_seed(0))
    s = ChannelSensing(snr_db=10.0, channel="awgn")
    with torch.no_grad():
        before = u(x, sensing=s).embedding
        u.skip.bias.fill_(1.0)
        after = u(x, sensing=s).embedding
        u.skip.bias.zero_()
    assert not torch.allclose(before, after)


def test_nf4_with_4bit_embedding_saves_and_reloads_adapter(tiny_llm64: Path, tmp_path: Path) -> None:
    tiny_llm = tiny_llm64
    """QLoRA path: bitsandbytes cannot state_dict() a 4-bit embedding, yet the adapter saves and reloads exactly."""
    pytest.importorskip("bitsandbytes")
    card = _card(tiny_llm, "generating", quantization="nf4", quantize_embeddings=True)
    g = Agent.from_card(card, seed=2)
    with torch.no_grad():
        for p in g.lora_parameters():
            p.add_(0.1)
    folder = g.save_pretrained(tmp_path / "g")
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_llm)
    g2 = Agent.from_card(card, load_adapter=False, seed=5)
    g2.load_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(g.lora_parameters(), g2.lora_parameters()))
    assert all(torch.equal(a, b) for a, b in zip(g.parameters(), g2.parameters()))


# -- PEFT configs: the base model is the card's llm, resolved by genscom --------------------------------------------
def test_peft_config_records_the_cards_llm_and_resolves(tiny_llm: Path, tmp_path: Path) -> None:
    """`adapter_config.json` names the card's `llm` (not a cache path, not null); `resolve_base_model` turns it into
    what `from_pretrained` loads, and peft's own loader then reproduces the agent's LoRA outputs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from genscom.agents.llm import base_model_of, resolve_base_model

    card = _card(tiny_llm, "generating")
    g = Agent.from_card(card, seed=3)
    with torch.no_grad():
        for p in g.lora_parameters():
            p.add_(0.05)
    folder = g.save_pretrained(tmp_path / "g", dtype=torch.float16)
    raw = json.loads((folder / "adapter_config.json").read_text())
    assert raw["base_model_name_or_path"] == card.llm == base_model_of(folder)
    assert resolve_base_model(folder) == str(tiny_llm)
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model(folder), dtype=torch.float32)
    lora = PeftModel.from_pretrained(base, str(folder)).eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    g.llm.activate(g.adapter_name)
    with torch.no_grad():
        ours = g.llm.peft(input_ids=ids).logits
        peft_out = lora(input_ids=ids).logits
    torch.testing.assert_close(peft_out, ours, atol=2e-3, rtol=0)  # float16 storage of the LoRA weights

    # loading warns when the folder was trained on another base model; a broken config is a BadFileError
    other = dict(raw, base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    (folder / "adapter_config.json").write_text(json.dumps(other))
    with pytest.warns(UserWarning, match="records base model 'HuggingFaceTB/SmolLM2-135M-Instruct'"):
        Agent.from_card(load_card(tiny_card_dict(tiny_llm, "generating", prompt=PROMPTS["generating"],
                                                 adapter=str(folder))))
    from genscom.errors import BadFileError

    (folder / "adapter_config.json").write_text('{"base_model_name_or_path": ')
    with pytest.raises(BadFileError, match="adapter_config.json"):
        Agent.from_card(load_card(tiny_card_dict(tiny_llm, "generating", prompt=PROMPTS["generating"],
                                                 adapter=str(folder))))


def test_shipped_peft_configs_name_the_offline_alias() -> None:
    from genscom.agents.llm import OFFLINE_LLM, base_model_of, same_llm
    from genscom.assets import find_adapter

    for name in ("smollm2-generating", "smollm2-understanding"):
        folder = find_adapter(name)
        assert base_model_of(folder) == OFFLINE_LLM  # resolve_base_model(folder): the fp32 copy of the GGUF
        assert same_llm(base_model_of(folder), load_card(name).llm)
    assert same_llm("offline", "smollm2")
    assert not same_llm(OFFLINE_LLM, "HuggingFaceTB/SmolLM2-135M-Instruct")
