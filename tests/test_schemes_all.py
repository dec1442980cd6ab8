"""Every registered scheme through every registered channel, by the public ``transmit`` then ``deliver``.

Both lists come from the registries (``list_schemes()``, ``list_channels()``), so a newly registered
scheme or channel is swept automatically. A scheme that needs build arguments, or whose delivery
has a known expectation, has a row in ``CASES``; a scheme without a row is built with its defaults
and gets the structural checks, and the sweep FAILS (never skips) when it cannot be built that way.

Expectations are independent of the code under test: channel uses counted by hand (5G LDPC
``k = 1024`` info bits per codeword, rate 1/2 on QPSK: 1024 channel uses per codeword), the
analog link's cosine from the SNR (see :func:`expected_analog_cosine`), Shannon's limit for the
digital links, and exact rebuilds for the knowledge-base hits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import integrate, special

from genscom.agents.agent import Agent
from genscom.agents.card import load_card
from genscom.agents.testing import StubEncoder, make_tiny_llm, tiny_card_dict
from genscom.channels import create_channel, list_channels
from genscom.channels.base import Channel
from genscom.data import SyntheticClips
from genscom.encoders import create_encoder
from genscom.memory import KnowledgeBase, build_knowledge_base
from genscom.schemes import Delivered, Payload, SourceBatch, create_scheme, list_schemes

REPO = Path(__file__).resolve().parents[1]
B, D = 4, 384             # items per batch; the mini profile's embedding size (the shipped adapters read 384-d)
SNRS = (0.0, 30.0)        # dB, Es/N0 per complex symbol
HIGH = 30.0
LDPC_K = 1024             # info bits per codeword of the digital links; qpsk-1/2 -> 1024 channel uses each
BUDGET = 120              # channel uses per item for adapted+mu (data + bitmap)
GROUP, BITMAP_USES = 16, 18  # mini-k192: 12 groups of 16 symbols; the 12-bit bitmap is one k = 12 codeword
                             # at qpsk-1/3: 36 coded bits = 18 channel uses
N_HITS = 2                # the first N_HITS items are in the memory scheme's knowledge base


@dataclass
class Kit:
    """What the cases are built from: one batch (frames + their mini embeddings), tiny agents, a base."""

    frames: torch.Tensor        # [B, T, H, W, 3] uint8
    embeddings: torch.Tensor    # [B, D] unit norm, mini-encoder embeddings of ``frames``
    agents: tuple[Agent, Agent]
    kb: KnowledgeBase

    @property
    def batch(self) -> SourceBatch:
        return SourceBatch(frames=self.frames, embeddings=self.embeddings)


def _digital_uses(n_bits: int) -> int:
    return math.ceil(n_bits / LDPC_K) * LDPC_K  # qpsk-1/2: 2 coded bits per info bit, 2 bits per symbol


@dataclass(frozen=True)
class Case:
    """How to build a scheme and what its delivery must show.

    kind: ``"exact"`` | ``"analog"`` | ``"memory"`` | ``"digital"`` | ``"pixels"`` | ``"adapter"`` |
        ``"agent"`` (see :func:`_check_kind`), or ``"generic"``: structural checks only.
    uses: hand-computed channel uses per item from the payload, or ``None``.
    out_dim: size of the delivered embeddings (default: that of the sent ones).
    max_uses: a budget instead (adapted+mu): at most this many per item, whole groups of ``GROUP``
        symbols plus the bitmap's ``BITMAP_USES``.
    cost_follows_snr: the scheme re-encodes for the sensed SNR in ``deliver`` (documented), so the
        delivered cost may differ from what ``transmit`` counted at its design SNR.
    """

    kind: str = "generic"
    kwargs: Callable[[Kit], dict[str, Any]] = field(default=lambda kit: {})
    uses: Callable[[Payload], list[int]] | None = None
    max_uses: int | None = None
    out_dim: int = D
    cost_follows_snr: bool = False


CASES: dict[str, Case] = {
    "noiseless": Case("exact", uses=lambda p: [0] * B),
    "semantic-analog": Case("analog", uses=lambda p: [D // 2] * B),        # two reals per complex symbol
    # int4 (the default): 4 bits a dim + a 16-bit scale; the link's CRC-24 per codeword is in side_bits
    "digital-embedding": Case("digital", uses=lambda p: [_digital_uses(int(n) + int(s))
                                                         for n, s in zip(p.source_bits, p.side_bits)]),
    "jpeg-ldpc": Case("pixels", uses=lambda p: [_digital_uses(int(n) + int(s))
                                                for n, s in zip(p.source_bits, p.side_bits)]),
    "h264-ldpc": Case("pixels", uses=lambda p: [_digital_uses(int(n) + int(s))
                                                for n, s in zip(p.source_bits, p.side_bits)]),
    "memory": Case("memory", kwargs=lambda kit: {"knowledge_base": kit.kb, "threshold": 0.99},  # hits: exact copies
                   # hit: a 12-bit frame (1 flag + ceil(log2 32) index bits, padded to LDPC k = 12) at qpsk-1/2
                   # = 12 channel uses; miss: the frame + D/2 analog symbols
                   uses=lambda p: [12] * N_HITS + [12 + D // 2] * (B - N_HITS)),
    "adapted": Case("adapter", uses=lambda p: [192] * B),                  # the shipped mini-k192: k = 192
    "adapted+mu": Case("adapter", kwargs=lambda kit: {"budget": BUDGET}, max_uses=BUDGET, cost_follows_snr=True),
    # the embedding crosses exactly as semantic-analog's; a tiny random decoder draws the pictures
    "regen": Case("analog", kwargs=lambda kit: {"decoder": _tiny_decoder(), "batch_size": B},
                  uses=lambda p: [D // 2] * B),
    # a tiny DeepJSCC for the kit's 32 x 32 frames: 2 stride-2 stages -> 8 x 8 cells x 1 channel = 64 reals
    "deepjscc": Case("generic", kwargs=lambda kit: {"model": _tiny_deepjscc()}, uses=lambda p: [32] * B),
    "agent": Case("agent", kwargs=lambda kit: {"agents": kit.agents, "perception": StubEncoder(), "batch_size": B},
                  uses=lambda p: [6] * B, out_dim=16),  # tiny cards: embedding_dim 12 -> 6 symbols, text_dim 16
}


def _tiny_decoder() -> Any:
    from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig

    torch.manual_seed(0)
    return DiffusionDecoder(DiffusionDecoderConfig(image_size=8, cond_dim=D, block_out_channels=(8, 16),
                                                   cross_attention_dim=8, attention_head_dim=4, sample_steps=2))


def _tiny_deepjscc() -> Any:
    from genscom.generation.deepjscc import DeepJSCC, DeepJSCCConfig

    torch.manual_seed(0)
    return DeepJSCC(DeepJSCCConfig(image_size=32, channel_uses=32, filters=8, n_down=2))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    frames = SyntheticClips("test", n_items=B, num_frames=2, size=32, cache=False).stacked_frames()
    with torch.no_grad():
        emb = create_encoder("mini").encode_clips(frames).float()
    llm = make_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))
    cards = {r: load_card(tiny_card_dict(llm, r, prompt=str(REPO / "prompts" / f"{r}.md")))
             for r in ("understanding", "generating")}
    u = Agent.from_card(cards["understanding"])
    agents = (u, Agent.from_card(cards["generating"], llm=u.llm, seed=1))
    others = torch.nn.functional.normalize(torch.randn(30, D, generator=torch.Generator().manual_seed(5)), dim=-1)
    kb = build_knowledge_base(torch.cat([emb[:N_HITS], others]))  # 32 entries: 5 index bits
    return Kit(frames=frames, embeddings=emb, agents=agents, kb=kb)


# ------------------------------------------------------------------------------------ theory
def expected_analog_cosine(channel: Channel, snr_db: float) -> float:
    r"""Mean cosine between a long unit embedding and its analog delivery with MMSE equalisation (true CSI).

    The ``d`` reals ride ``d/2`` complex symbols scaled to unit energy (amplitude ``a = sqrt(d/2)`` per
    real); after MMSE a symbol is ``g s + w`` with ``g = |h|^2 / (|h|^2 + N0)`` and
    ``E|w|^2 = |h|^2 N0 / (|h|^2 + N0)^2``. For large ``d``
    ``cos ~ a E[g] / sqrt(a^2 E[g^2] + (d/2) E|w|^2) = E[g] / sqrt(E[g^2 + |w|^2]) = sqrt(E[g])``,
    since ``g^2 + |w|^2 = g``. AWGN: ``1 / sqrt(1 + N0)``; Rayleigh (``|h|^2 ~ Exp(1)``):
    ``E[g] = 1 - N0 e^{N0} E1(N0)``; Rician (K): ``E[g]`` integrated over the noncentral chi-square law.
    """
    n0 = 10.0 ** (-snr_db / 10.0)
    if channel.name == "awgn":
        eg = 1.0 / (1.0 + n0)
    elif channel.name == "rayleigh":
        eg = 1.0 - n0 * math.exp(n0) * float(special.exp1(n0))
    elif channel.name == "rician":
        k = channel.k_factor

        def pdf(x: float) -> float:  # |h|^2 with E|h|^2 = 1: (K+1) e^{-K-(K+1)x} I0(2 sqrt(K(K+1)x))
            z = 2.0 * math.sqrt(k * (k + 1.0) * x)
            return (k + 1.0) * math.exp(-k - (k + 1.0) * x + z) * float(special.i0e(z))

        eg = integrate.quad(lambda x: x / (x + n0) * pdf(x), 0.0, np.inf, limit=200)[0]
    else:
        pytest.fail(f"channel {channel.name!r} is registered but expected_analog_cosine() does not know its "
                    f"|h|^2 law: add it there so the analog schemes are checked against theory on it")
    return math.sqrt(eg)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def _check_kind(case: Case, kit: Kit, scheme: Any, channel: Channel, snr: float, out: Delivered) -> None:
    """The scheme-specific expectations of one delivery."""
    sent, awgn, high = kit.embeddings, channel.name == "awgn", snr == HIGH
    theory = expected_analog_cosine(channel, snr)
    # Tolerance on a 4-item mean, >= 4 standard deviations over 200 seeds (fading: 12 coherence blocks
    # per item, so a deep fade moves the mean; std 0.027 at 0 dB, 0.002 with a long tail at 30 dB).
    tol = (0.001 if awgn else 0.02) if high else (0.05 if awgn else 0.12)
    if case.kind == "exact":
        torch.testing.assert_close(out.embeddings, sent, atol=1e-6, rtol=0)
    elif case.kind == "analog":
        cos = float(_cos(out.embeddings, sent).mean())
        assert abs(cos - theory) < tol, (cos, theory)
    elif case.kind == "memory" and high:
        hit_cos = _cos(out.embeddings[:N_HITS], sent[:N_HITS])
        torch.testing.assert_close(hit_cos, torch.ones(N_HITS), atol=1e-5, rtol=0)  # rebuilt from the base
        assert abs(float(_cos(out.embeddings[N_HITS:], sent[N_HITS:]).mean()) - theory) < 2 * tol  # 2 items
        if awgn:
            assert not out.failed.any()
    elif case.kind == "digital":
        if awgn and high:
            assert not out.failed.any()
            # int4 (the default): each dimension within s/16 of the truth (s = max |e_i|, a 16-bit scale), so the
            # error vector has norm r <= sqrt(d) s / 16, and the cosine to a unit vector is at least sqrt(1 - r^2)
            s_max = sent.abs().amax(dim=-1) / sent.norm(dim=-1)
            bound = (1 - (sent.shape[-1] ** 0.5 * s_max / 16).square()).clamp_min(0).sqrt()
            assert bool((_cos(out.embeddings, sent) >= bound - 1e-4).all())
        elif awgn:  # 0 dB: QPSK carries < 1 bit per use (capacity log2(1 + 1) = 1 even for Gaussian input)
            assert out.failed.all()
    elif case.kind == "pixels":
        if awgn and high:
            assert not out.failed.any()
            for i in range(B):
                assert out.frames[i].shape == kit.frames[i].shape and out.frames[i].dtype == torch.uint8
                err = (out.frames[i].float() - kit.frames[i].float()).abs().mean()
                assert err < 20.0, (i, float(err))  # lossy (measured 3-13) against a pixel std of ~80
        elif awgn:
            assert out.failed.all()  # below rate-1/2 QPSK capacity every codeword fails: no frame decodes
        for i in range(B):
            assert (out.frames[i] is None) == bool(out.failed[i])
    elif case.kind == "adapter" and high:
        cos = _cos(out.embeddings, sent)
        clean = _cos(scheme.deliver(scheme.transmit(kit.batch), None, None).embeddings, sent)
        assert float(cos.mean()) > 0.75, cos  # trained on mini embeddings; random directions give |cos| < 0.2
        assert float(cos.mean()) >= float(clean.mean()) - 0.02, (cos, clean)  # 30 dB is as good as no noise
        if awgn:
            assert not out.failed.any()
    elif case.kind == "agent":
        feats = StubEncoder().encode_clips(kit.frames)
        link = _cos(out.extras["understanding"], scheme.understand(feats, snr, channel.name))
        # 6 symbols in one fading block per item: cosine ~ 1/sqrt(1 + N0/|h|^2), under 0.97 at 30 dB only
        # when |h|^2 < 0.016 (1.6% of Rayleigh blocks); AWGN follows the closed form
        if high:
            assert float(link.mean()) >= (theory - 0.01 if awgn else 0.97), link


@pytest.mark.parametrize("channel_name", list_channels())
@pytest.mark.parametrize("scheme_name", list_schemes())
def test_every_scheme_over_every_channel(scheme_name: str, channel_name: str, kit: Kit) -> None:
    case = CASES.get(scheme_name, Case())
    try:
        scheme = create_scheme(scheme_name, **case.kwargs(kit))
    except Exception as exc:  # noqa: BLE001 - the point is to say what to do about any failure
        pytest.fail(f"scheme {scheme_name!r} cannot be built with {sorted(case.kwargs(kit))} ({exc!r}); "
                    f"add its build arguments to CASES in {Path(__file__).name}")
    channel = create_channel(channel_name)
    payload = scheme.transmit(kit.batch, generator=torch.Generator().manual_seed(1))
    cost_mismatch = []
    for snr in SNRS:
        out = scheme.deliver(payload, channel, snr, generator=torch.Generator().manual_seed(2))
        assert out.failed.dtype == torch.bool and out.failed.shape == (B,)
        assert out.channel_uses.dtype == torch.int64 and out.channel_uses.shape == (B,)
        if case.kind != "exact":
            assert bool((out.channel_uses > 0).all()), out.channel_uses  # a real link costs channel uses
        if case.uses is not None:
            assert out.channel_uses.tolist() == case.uses(payload), snr
        if case.max_uses is not None:
            assert int(out.channel_uses.max()) <= case.max_uses, out.channel_uses
            assert bool(((out.channel_uses - BITMAP_USES) % GROUP == 0).all()), out.channel_uses  # whole groups
        if out.embeddings is not None:
            assert out.embeddings.shape == (B, case.out_dim) and out.embeddings.dtype == torch.float32
            assert torch.isfinite(out.embeddings).all()
            if case.kind == "digital":  # an item whose every bit was erased carries nothing: a zero vector
                want = torch.where(out.extras["lost"], torch.zeros(B), torch.ones(B))
                torch.testing.assert_close(out.embeddings.norm(dim=-1), want, atol=1e-4, rtol=0)
            elif case.kind != "generic":
                torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(B), atol=1e-4, rtol=0)
        else:
            assert out.frames is not None and len(out.frames) == B, "a delivery carries embeddings or frames"
        _check_kind(case, kit, scheme, channel, snr, out)
        if not case.cost_follows_snr and not torch.equal(out.channel_uses, payload.channel_uses):
            cost_mismatch.append((snr, payload.channel_uses.tolist(), out.channel_uses.tolist()))
    # Checked last so that every other expectation has run: the cost transmit counts is what the delivery used.
    assert not cost_mismatch, (f"{scheme_name}: Payload.channel_uses (transmit) != Delivered.channel_uses "
                               f"[(snr, transmit, delivered)]: {cost_mismatch}")


def test_every_case_names_a_registered_scheme() -> None:
    assert set(CASES) <= set(list_schemes()), set(CASES) - set(list_schemes())
