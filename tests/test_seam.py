"""The honest Scheme seam: the transmitter knows only the fed-back estimate, pilots and feedback are
counted at transmit, the receiver equalises with estimates, and deliver never re-runs the transmitter."""

from __future__ import annotations

import math

import pytest
import torch

from genscom.channels import create_channel
from genscom.channels.sensing import (
    FEEDBACK_SNR_LO_DB,
    LinkFeedback,
    feedback_uses,
    link_feedback,
    pass_with_pilots,
    quantize_feedback_snr,
)
from genscom.schemes import SourceBatch, create_scheme
from genscom.schemes.base import frame_uses, payload_types


def _emb(b: int = 6, d: int = 384, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_feedback_word_and_its_cost() -> None:
    assert quantize_feedback_snr(3.26, 6) == 3.5 and quantize_feedback_snr(-40.0, 6) == FEEDBACK_SNR_LO_DB
    assert quantize_feedback_snr(99.0, 6) == FEEDBACK_SNR_LO_DB + 0.5 * 63  # 64 levels, clipped at the top
    assert feedback_uses(6) == 12  # 0.5 bit per channel use
    with pytest.raises(ValueError, match="csi"):
        LinkFeedback(channel="awgn", csi="genie")  # type: ignore[arg-type]


def test_pilot_layout_cost_matches_a_hand_count() -> None:
    fb = LinkFeedback(channel="rayleigh", snr_db=0.0, bits=6, coherence=16, pilots_per_block=2)
    # 192 data symbols, 14 data per block -> 14 blocks (13 full + 10 data), 2 pilots each
    assert fb.pilot_layout().frame_length(192) == 192 + 2 * math.ceil(192 / 14)
    n = torch.tensor([192, 14, 0])
    assert frame_uses(n, fb, feedback=False).tolist() == [220, 16, 0]
    assert frame_uses(n, fb, feedback=True).tolist() == [232, 28, 12]
    assert LinkFeedback(channel="awgn").pilot_layout() is None  # AWGN: h = 1 is known
    assert LinkFeedback(channel="rayleigh", coherence=16, csi="perfect").pilot_layout() is None


def test_link_feedback_estimates_the_snr_or_is_exact_when_perfect() -> None:
    ch = create_channel("rayleigh", coherence=16)
    est = [link_feedback(ch, 10.0, generator=torch.Generator().manual_seed(s)).snr_db for s in range(40)]
    assert abs(sum(est) / len(est) - 10.0) < 0.6 and len(set(est)) > 1  # noisy, unbiased to within the grid
    perfect = link_feedback(ch, 10.0, csi="perfect")
    assert perfect.snr_db == 10.0 and perfect.bits == 0 and perfect.pilot_layout() is None


def test_receiver_sees_estimates_not_the_true_channel() -> None:
    ch = create_channel("rayleigh", coherence=16)
    fb = LinkFeedback(channel="rayleigh", coherence=16, pilots_per_block=4)
    x = torch.polar(torch.ones(64, 120), 2 * math.pi * torch.rand(64, 120, generator=torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(2)
    out = pass_with_pilots(x, ch, 10.0, fb.pilot_layout(), generator=g)
    # the same draw without pilots gives the true h; with pilots the receiver holds an estimate of it
    g2 = torch.Generator().manual_seed(2)
    true = ch(fb.pilot_layout().insert(x, torch.ones(4, dtype=x.dtype)), 10.0, generator=g2)
    h_true = fb.pilot_layout().split(true.h, 120)[1]
    err = (out.h - h_true).abs().square().mean().item()
    # LMMSE error per block with 4 unit pilots at N0 = 0.1: s2 N0/E / (s2 + N0/E) = 0.025/1.025
    assert 0.012 < err < 0.045 and not torch.equal(out.h, h_true)
    assert out.y.shape == x.shape and out.snr_db.shape == (64,)


def test_semantic_analog_counts_its_pilots_and_no_feedback() -> None:
    s = create_scheme("semantic-analog")
    ray = LinkFeedback(channel="rayleigh", snr_db=3.0, bits=6, coherence=16)
    p = s.transmit(SourceBatch(embeddings=_emb()), sensing=ray)
    assert p.channel_uses.tolist() == [220] * 6 and p.side_bits.tolist() == [0] * 6  # it does not read the SNR
    assert s.transmit(SourceBatch(embeddings=_emb()), sensing=LinkFeedback(channel="awgn")).channel_uses[0] == 192


def test_adapted_counts_feedback_and_deliver_never_re_encodes() -> None:
    s = create_scheme("adapted")
    ch = create_channel("rayleigh", coherence=16)
    fb = LinkFeedback(channel="rayleigh", snr_db=20.0, bits=6, coherence=16)
    p = s.transmit(SourceBatch(embeddings=_emb()), sensing=fb)
    assert p.snr_db == 20.0 and p.side_bits.tolist() == [6] * 6
    assert p.channel_uses.tolist() == [192 + 2 * math.ceil(192 / 14) + 12] * 6
    encode = s.adapter.encode

    def forbidden(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("deliver re-ran the transmitter")

    s.adapter.encode = forbidden  # type: ignore[method-assign]
    try:
        out = s.deliver(p, ch, -5.0, generator=torch.Generator().manual_seed(0))  # the SNR fell after feedback
    finally:
        s.adapter.encode = encode  # type: ignore[method-assign]
    assert out.embeddings.shape == (6, 384) and torch.equal(out.channel_uses, p.channel_uses)
    # what it sent was encoded for 20 dB: different symbols from an encoding for -5 dB
    low = s.transmit(SourceBatch(embeddings=_emb()), sensing=LinkFeedback(channel="rayleigh", snr_db=-5.0, bits=6,
                                                                       coherence=16))
    assert not torch.allclose(low.symbols, p.symbols)


def test_every_payload_class_is_known_to_the_wire() -> None:
    names = set(payload_types())
    assert {"Payload", "AnalogPayload", "NoiselessPayload", "AdaptedPayload", "AgentPayload", "MemoryPayload"} <= names


def test_typed_payload_with_pilots_crosses_the_wire() -> None:
    from genscom.demo.wire import Transmission, WireMessage, decode_message, encode_message

    s = create_scheme("adapted", k=64)
    p = s.transmit(SourceBatch(embeddings=_emb(2)), sensing=LinkFeedback(channel="rayleigh", snr_db=5.0, bits=6,
                                                                         coherence=16))
    back = decode_message(encode_message(WireMessage([Transmission("adapted", {"k": 64}, p)], "rayleigh", 5.0)))
    q = back.transmissions[0].payload
    assert type(q) is type(p) and q.pilots == p.pilots and q.snr_db == 5.0 and torch.equal(q.keep, p.keep)
    ch = create_channel("rayleigh", coherence=16)
    a = s.deliver(p, ch, 5.0, generator=torch.Generator().manual_seed(3)).embeddings
    b = s.deliver(q, ch, 5.0, generator=torch.Generator().manual_seed(3)).embeddings
    torch.testing.assert_close(a, b)


def test_digital_plans_with_pilots_cross_the_wire() -> None:
    """A digital payload's plans carry the frame's pilots (chosen from the feedback: SNR-driven density);
    the receiver process gets them back and delivers exactly as the transmitter's process would."""
    from genscom.channels.sensing import PILOT_CHOICES, link_feedback
    from genscom.demo.wire import Transmission, WireMessage, decode_message, encode_message

    ch = create_channel("rayleigh", coherence=16)
    s = create_scheme("digital-embedding", mcs="adaptive")
    fb = link_feedback(ch, 0.0, csi="pilot", pilot_mse=0.2, generator=torch.Generator().manual_seed(0))
    layout = fb.pilot_layout()
    p = s.transmit(SourceBatch(embeddings=_emb(2)), sensing=fb)
    assert layout.pilots_per_block in PILOT_CHOICES and p.pilots == layout
    assert all(plan.pilots == layout for plan in p.plans)
    back = decode_message(encode_message(WireMessage([Transmission(s.name, {"mcs": "adaptive"}, p)], "rayleigh", 0.0)))
    q = back.transmissions[0].payload
    assert q.pilots == p.pilots and q.plans == p.plans  # adaptive plans: no nan fields
    assert torch.equal(q.channel_uses, p.channel_uses)
    a = s.deliver(p, ch, 3.0, generator=torch.Generator().manual_seed(3))
    b = s.deliver(q, ch, 3.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.embeddings, b.embeddings)
    assert torch.equal(a.failed, b.failed)
