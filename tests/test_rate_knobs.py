"""Rate knobs: every registered scheme's declared knobs build that scheme, and change its name or rate as declared."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from genscom.adaptation.adapter import AdapterConfig, build_adapter
from genscom.channels.awgn import AWGNChannel
from genscom.memory import build_knowledge_base
from genscom.schemes.base import RateKnob, Scheme, SourceBatch, get_scheme_class, list_schemes

TINY_ADAPTER = dict(dim=16, k=12, hidden=32, depth=1, group_size=3, cond_dim=8)
D = 16  # embedding size of every batch here


def _emb(b: int = 2, seed: int = 0, d: int = D) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _frames(t: int) -> torch.Tensor:
    y = torch.linspace(0, 255, 32).view(32, 1).expand(32, 32)
    x = torch.linspace(0, 255, 32).view(1, 32).expand(32, 32)
    clip = torch.stack([torch.stack([(x + 20 * j) % 256, y, 255 - x], -1) for j in range(t)])
    return clip.to(torch.uint8)[None]  # [1, t, 32, 32, 3]


def _base_kwargs(name: str) -> dict[str, Any]:
    """What each scheme needs besides its rate knobs (tiny, offline)."""
    if name in ("adapted", "adapted+mu"):
        return {"adapter": build_adapter(AdapterConfig(**TINY_ADAPTER), seed=0).eval()}
    if name == "memory":
        return {"knowledge_base": build_knowledge_base(_emb(8, seed=1))}
    if name == "agent":  # construction only needs the pair; nothing is run
        stub = SimpleNamespace(card=SimpleNamespace(name="stub"))
        return {"agents": (stub, stub)}
    if name in ("digital-embedding", "jpeg-ldpc", "h264-ldpc"):
        return {"fidelity": "full"}  # no calibration tables
    if name == "regen":  # a tiny random decoder for D-dimensional embeddings
        from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig

        return {"decoder": DiffusionDecoder(DiffusionDecoderConfig(
            image_size=8, cond_dim=D, block_out_channels=(8, 16), cross_attention_dim=8, attention_head_dim=4,
            sample_steps=1, guidance_scale=1.0))}
    if name == "deepjscc":
        from genscom.generation.deepjscc import DeepJSCC, DeepJSCCConfig

        return {"model": DeepJSCC(DeepJSCCConfig(image_size=32, channel_uses=32, filters=8, n_down=2))}
    return {}


def _batch(name: str) -> SourceBatch:
    if name == "jpeg-ldpc":
        return SourceBatch(frames=_frames(1))
    if name in ("h264-ldpc", "deepjscc"):
        return SourceBatch(frames=_frames(2))
    if name == "digital-embedding":  # 96-d: float16 needs 2 codewords of 1024 bits, int8 one
        return SourceBatch(embeddings=_emb(d=96))
    return SourceBatch(embeddings=_emb())


def _uses(scheme: Scheme, name: str) -> list[int]:
    """Channel uses per item of a delivery at 30 dB over AWGN."""
    out = scheme.send(_batch(name), AWGNChannel(), 30.0, generator=torch.Generator().manual_seed(0))
    return [int(u) for u in out.channel_uses]


# (scheme, knob, another value, what it changes: "name" and/or "uses")
CHANGES: list[tuple[str, str, Any, tuple[str, ...]]] = [
    ("semantic-analog", "repeat", 3, ("name", "uses")),
    ("regen", "repeat", 3, ("name", "uses")),
    ("digital-embedding", "quantizer", "int8", ("name",)),  # the test's small embeddings fit one codeword either way
    ("digital-embedding", "mcs", "16qam-1/2", ("uses",)),
    ("digital-embedding", "mcs", "adaptive", ("name",)),
    ("jpeg-ldpc", "quality", 90, ("uses",)),
    ("jpeg-ldpc", "mcs", "64qam-2/3", ("uses",)),
    ("jpeg-ldpc", "mcs", "adaptive", ("name",)),
    ("h264-ldpc", "crf", 5, ("uses",)),
    ("h264-ldpc", "mcs", "16qam-2/3", ("uses",)),
    ("h264-ldpc", "mcs", "adaptive", ("name",)),
    ("memory", "threshold", -1.0, ("uses",)),  # every item a hit: only the index frame is sent
    ("memory", "mcs", "16qam-1/2", ("uses",)),
    ("adapted", "k", 6, ("name", "uses")),
    ("adapted+mu", "mu", 0.0, ("name", "uses")),
    ("adapted+mu", "budget", 24, ("name", "uses")),
    ("adapted+mu", "side_repeat", 2, ("name", "uses")),
    ("agent", "repeat", 2, ("name",)),
]


def test_every_declared_knob_is_covered_and_is_a_constructor_keyword():
    declared = {(n, k.name) for n in list_schemes() for k in get_scheme_class(n).rate_knobs()}
    assert declared == {(n, k) for n, k, _, _ in CHANGES}, "add new rate knobs to CHANGES"
    for name in list_schemes():
        cls = get_scheme_class(name)
        params = inspect.signature(cls.__init__).parameters
        for knob in cls.rate_knobs():
            assert isinstance(knob, RateKnob) and knob.name in params, (name, knob.name)
            default = params[knob.name].default
            if (name, knob.name) == ("adapted+mu", "mu"):  # the constructor takes mu or budget; the knob picks mu
                assert default is None and knob.default == 0.5
                continue
            assert knob.default is None or knob.default == default, (name, knob.name, knob.default, default)
    assert get_scheme_class("noiseless").rate_knobs() == ()


@pytest.mark.parametrize("name", sorted(set(list_schemes())))
def test_default_knobs_build_the_default_scheme(name):
    cls = get_scheme_class(name)
    built = cls(**_base_kwargs(name), **cls.rate_kwargs())
    if name != "adapted+mu":  # it needs one of mu / budget: the knobs give mu its default
        assert built.name == cls(**_base_kwargs(name)).name
    else:
        assert built.name == "adapted+mu-mu0.5"


@pytest.mark.parametrize("name,knob,value,changes", CHANGES, ids=[f"{n}-{k}-{v}" for n, k, v, _ in CHANGES])
def test_knob_changes_name_or_rate_as_declared(name, knob, value, changes):
    cls = get_scheme_class(name)
    spec = {k.name: k for k in cls.rate_knobs()}[knob]
    assert spec.check(value) == value and value != spec.default
    ref = cls(**_base_kwargs(name), **cls.rate_kwargs())
    kw = cls.rate_kwargs({knob: value})
    assert kw[knob] == value
    changed = cls(**_base_kwargs(name), **kw)
    assert ("name" in changes) == (changed.name != ref.name), (ref.name, changed.name)
    if "uses" in changes:
        assert _uses(changed, name) != _uses(ref, name)


def test_budget_replaces_mu_and_bad_values_name_the_knob():
    cls = get_scheme_class("adapted+mu")
    assert cls.rate_kwargs({"budget": 30}) == {"budget": 30, "side_repeat": 1}
    assert cls.rate_kwargs({"budget": None, "mu": 0.25}) == {"mu": 0.25, "side_repeat": 1}
    assert get_scheme_class("adapted").rate_kwargs({"k": 64.0}) == {"k": 64}  # a UI's 64.0 is an integer
    with pytest.raises(ValueError, match=r"mu must be in \[0, 1\], got 1.5"):
        cls.rate_kwargs({"mu": 1.5})
    with pytest.raises(ValueError, match="no rate knob 'bogus'.*mu, budget, side_repeat"):
        cls.rate_kwargs({"bogus": 1})
    with pytest.raises(ValueError, match="repeat must be an integer"):
        get_scheme_class("semantic-analog").rate_kwargs({"repeat": 1.5})
    with pytest.raises(ValueError, match="mcs must be one of qpsk-120/1024"):
        get_scheme_class("digital-embedding").rate_kwargs({"mcs": "8psk"})


def test_rate_knob_spec_is_validated():
    with pytest.raises(ValueError, match="kind must be one of int, float, choice"):
        RateKnob("x", "bool")
    with pytest.raises(ValueError, match="needs choices"):
        RateKnob("x", "choice")
    with pytest.raises(ValueError, match="min=2 is above max=1"):
        RateKnob("x", "int", min=2, max=1)
    with pytest.raises(ValueError, match="x must be in"):
        RateKnob("x", "int", default=0, min=1)
    with pytest.raises(ValueError, match="Python identifier"):
        RateKnob("not a name", "int")
    with pytest.raises(ValueError, match="x must be a finite number"):
        RateKnob("x", "float").check(float("nan"))
    with pytest.raises(ValueError, match="unknown scheme|known"):
        get_scheme_class("no-such-scheme")
