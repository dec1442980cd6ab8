"""Channel adapter module and the adapted / adapted+mu schemes (tiny random adapters)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genscom.adaptation import extraction as X
from genscom.adaptation.adapter import AdapterConfig, ChannelAdapter, build_adapter
from genscom.channels.awgn import AWGNChannel
from genscom.channels.fading import RayleighBlockFading
from genscom.schemes.adapted import AdaptedMuScheme, AdaptedScheme
from genscom.schemes.base import SourceBatch

TINY = dict(dim=16, k=12, hidden=32, depth=1, group_size=3, cond_dim=8)




@pytest.fixture()
def adapter() -> ChannelAdapter:
    return build_adapter(AdapterConfig(**TINY), seed=0).eval()


def _emb(b: int = 6, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("channel", [None, AWGNChannel(), RayleighBlockFading(coherence=4)])
@pytest.mark.parametrize("mode", ["full", "prefix", "extract"])
def test_shapes_and_unit_power_of_sent_symbols(adapter, channel, mode):
    emb = _emb()
    kw = {}
    if mode == "prefix":
        kw["prefix"] = torch.tensor([1, 3, 5, 7, 9, 12])
    elif mode == "extract":
        kw["keep_groups"] = torch.tensor([[True, False, True, False]] * 3 + [[False, False, False, True]] * 3)
    with torch.no_grad():
        out = adapter(emb, torch.linspace(-10, 20, 6), channel=channel, generator=torch.Generator().manual_seed(0), **kw)
    assert out.embeddings.shape == (6, 16) and out.embeddings.dtype == torch.float32
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(6), atol=1e-5)
    assert out.symbols.shape == (6, 12) and out.symbols.dtype == torch.complex64
    # importance is the transmitter's (embedding and SNR only): the same whatever the channel, its noise
    # or the rate mode, i.e. that of a noiseless full-rate pass
    with torch.no_grad():
        ref = adapter(emb, torch.linspace(-10, 20, 6), channel=None).importance
    assert out.importance.shape == (6, 4)
    torch.testing.assert_close(out.importance, ref, atol=0, rtol=0)
    n = out.keep.sum(dim=-1)
    assert torch.equal(out.channel_uses, n)
    energy = (out.symbols.abs() ** 2).sum(dim=-1) / n
    assert torch.allclose(energy, torch.ones(6), atol=1e-5)  # unit average energy over sent symbols
    assert torch.all(out.symbols[~out.keep] == 0)
    if mode == "prefix":
        assert n.tolist() == [1, 3, 5, 7, 9, 12]


def test_decoder_sees_channel_sensing(adapter):
    # FiLM conditioning: same received symbols, different SNR -> different output (after perturbing FiLM weights)
    with torch.no_grad():
        for blk in adapter.rx_blocks:
            blk.film.weight.normal_(0, 0.5)
        x = torch.complex(torch.randn(2, 12), torch.randn(2, 12))
        keep = torch.ones(2, 12, dtype=torch.bool)
        a = adapter.decode(x, snr_db=-5.0, keep=keep)
        b = adapter.decode(x, snr_db=15.0, keep=keep)
        c = adapter.decode(x, snr_db=15.0, keep=keep, gain=torch.full((2, 12), 0.2))
    assert not torch.allclose(a, b) and not torch.allclose(b, c)


def test_gradients_reach_every_part_through_the_fading_channel(adapter):
    adapter.train()
    emb = _emb()
    keep_g = torch.tensor([[True, True, False, True]] * 6)
    out = adapter(emb, 0.0, channel=RayleighBlockFading(coherence=4), keep_groups=keep_g, straight_through=True,
                  generator=torch.Generator().manual_seed(0))
    out.embeddings.sum().backward()
    for name in ("tx_in.weight", "tx_out.weight", "importance_head.weight", "rx_in.weight", "mask_token"):
        grad = dict(adapter.named_parameters())[name].grad
        assert grad is not None and bool(grad.abs().sum() > 0), name


@pytest.mark.parametrize("channel", [AWGNChannel(), RayleighBlockFading(coherence=4)])
def test_pilot_csi_forward_is_what_the_adapted_scheme_does(adapter, channel):
    """Training's csi="pilot" path (forward) = the scheme's transmit(sensing=link_feedback) + deliver:
    encoder at the fed-back SNR, pilots per coherence block, decoder on the receiver's estimates."""
    from genscom.channels.sensing import link_feedback

    emb = _emb(8)
    fb = link_feedback(channel, -2.0, generator=torch.Generator().manual_seed(3))
    s = AdaptedScheme(adapter=adapter)
    ref = s.deliver(s.transmit(SourceBatch(embeddings=emb), sensing=fb), channel, -2.0,
                    generator=torch.Generator().manual_seed(4)).embeddings
    with torch.no_grad():
        out = adapter(emb, -2.0, channel=channel, csi="pilot", tx_snr_db=fb.snr_db,
                      pilots_per_block=fb.pilots_per_block, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out.embeddings, ref)
    if channel.name == "rayleigh":  # the receiver's view: estimated SNR per item, not the set one
        assert out.received.snr_db.shape == (8,) and not bool((out.received.snr_db == -2.0).any())
        with torch.no_grad():
            perfect = adapter(emb, -2.0, channel=channel, csi="perfect", tx_snr_db=fb.snr_db,
                              generator=torch.Generator().manual_seed(4))
        assert not torch.allclose(perfect.embeddings, out.embeddings)


def test_pilot_path_is_differentiable_in_the_data_symbols():
    from genscom.adaptation.adapter import pilot_layout, through_channel

    ch = RayleighBlockFading(coherence=8)
    layout = pilot_layout(ch, 2)
    assert layout.coherence == 8 and pilot_layout(AWGNChannel(), 2) is None
    x = torch.complex(torch.randn(4, 12), torch.randn(4, 12)).requires_grad_(True)
    keep = torch.ones(4, 12, dtype=torch.bool)
    x_hat, gain, rx = through_channel(x, keep, ch, 3.0, pilots=layout, generator=torch.Generator().manual_seed(0))
    assert not rx.h.requires_grad and torch.equal(gain, rx.h.abs())  # estimates: from the pilots, detached
    (x_hat.real.sum() + x_hat.imag.square().sum()).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad.real).all()) and bool(x.grad.abs().sum() > 0)


def test_save_load_round_trip_gives_identical_outputs(adapter, tmp_path):
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.01 * torch.randn_like(p))
    adapter.save_pretrained(tmp_path / "ad", extra_config={"profile": "tiny"})
    meta = json.loads((tmp_path / "ad" / "config.json").read_text())
    assert meta["adapter"]["k"] == 12 and meta["profile"] == "tiny"
    loaded = ChannelAdapter.from_pretrained(tmp_path / "ad")
    emb = _emb()
    for ch in (None, AWGNChannel(), RayleighBlockFading(coherence=4)):
        with torch.no_grad():
            a = adapter(emb, 3.0, channel=ch, generator=torch.Generator().manual_seed(5))
            b = loaded(emb, 3.0, channel=ch, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a.embeddings, b.embeddings)
        assert torch.equal(a.symbols, b.symbols)


def test_from_pretrained_missing_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="genscom train adapter"):
        ChannelAdapter.from_pretrained(tmp_path)


@pytest.mark.parametrize("kw, match", [
    ({"k": 0}, "k must be a positive integer"),
    ({"k": -4}, "k must be a positive integer"),
    ({"k": 10, "group_size": 3}, "multiple of group_size"),
    ({"hidden": 0}, "hidden"),
    ({"snr_range_db": (5.0, -5.0)}, "snr_range_db"),
])
def test_bad_adapter_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        AdapterConfig(**{**TINY, **kw})


@pytest.mark.parametrize("snr", [float("nan"), float("inf"), torch.tensor([0.0, float("nan")] * 3)])
def test_nan_snr_raises(adapter, snr):
    with pytest.raises(ValueError, match="snr_db"):
        adapter(_emb(), snr, channel=AWGNChannel())


def test_wrong_embedding_dimension_raises(adapter):
    with pytest.raises(ValueError, match="dim=16"):
        adapter(torch.randn(2, 8), 0.0, channel=None)


# ------------------------------------------------------------------------ schemes


def test_adapted_scheme_counts_k_channel_uses(adapter):
    batch = SourceBatch(embeddings=_emb(8))
    s = AdaptedScheme(adapter=adapter, k=6)
    assert s.name == "adapted-k6"
    p = s.transmit(batch)
    assert p.channel_uses.tolist() == [6] * 8 and p.side_bits.tolist() == [0] * 8
    assert p.symbols.shape == (8, 6)
    assert torch.allclose((p.symbols.abs() ** 2).mean(dim=1), torch.ones(8), atol=1e-5)
    for ch in (None, AWGNChannel(), RayleighBlockFading(coherence=4)):
        d = s.deliver(p, ch, -5.0, generator=torch.Generator().manual_seed(0))
        assert d.embeddings.shape == (8, 16) and d.channel_uses.tolist() == [6] * 8
    with pytest.raises(ValueError, match="k must be an integer in 1..12"):
        AdaptedScheme(adapter=adapter, k=13)


def test_adapted_mu_budget_never_exceeded_and_bitmap_counted(adapter):
    batch = SourceBatch(embeddings=_emb(16))
    side = X.side_channel_uses(4, "qpsk-1/3")  # 4 groups -> one k=12 codeword -> 18 channel uses
    for budget in (side, side + 2, side + 3, side + 7, side + 12, side + 100):
        s = AdaptedMuScheme(adapter=adapter, budget=budget, side_link="ideal")
        p = s.transmit(batch)
        assert bool((p.channel_uses <= budget).all())
        assert p.side_bits.tolist() == [4] * 16
        d = s.deliver(p, AWGNChannel(), 0.0, generator=torch.Generator().manual_seed(0))
        assert bool((d.channel_uses <= budget).all())
        assert torch.equal(d.channel_uses, d.extras["n_sent"] + side)


def test_adapted_mu_threshold_is_monotone(adapter):
    batch = SourceBatch(embeddings=_emb(16))
    uses = [float(AdaptedMuScheme(adapter=adapter, mu=mu, side_link="ideal").transmit(batch).channel_uses.float().mean())
            for mu in (0.0, 0.3, 0.5, 0.7, 1.0)]
    assert uses == sorted(uses, reverse=True)
    assert uses[0] == 12 + X.side_channel_uses(4)


def test_adapted_mu_bitmap_through_the_digital_link(adapter):
    batch = SourceBatch(embeddings=_emb(4))
    s = AdaptedMuScheme(adapter=adapter, budget=30, side_link="full")
    p = s.transmit(batch)
    d = s.deliver(p, AWGNChannel(), 10.0, generator=torch.Generator().manual_seed(0))
    assert not bool(d.failed.any())  # the protected bitmap arrives intact at 10 dB
    ideal = AdaptedMuScheme(adapter=adapter, budget=30, side_link="ideal")
    d2 = ideal.deliver(ideal.transmit(batch), AWGNChannel(), 10.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(d.channel_uses, d2.channel_uses)


def test_adapted_mu_side_repetition_protects_the_bitmap(adapter):
    batch = SourceBatch(embeddings=_emb(64))
    side = X.side_channel_uses(4)
    plain = AdaptedMuScheme(adapter=adapter, mu=0.0)
    rep = AdaptedMuScheme(adapter=adapter, mu=0.0, side_repeat=4)
    assert rep.name == "adapted+mu-mu0-r4" and rep.side_uses == 4 * side
    assert float(rep.transmit(batch).channel_uses.float().mean()) == 12 + 4 * side  # the repetition is counted
    fail = [float(s.deliver(s.transmit(batch), AWGNChannel(), -5.0, generator=torch.Generator().manual_seed(1))
                  .failed.float().mean()) for s in (plain, rep)]
    assert fail[0] > 0.3 and fail[1] < 0.5 * fail[0], fail  # -5 dB: the bare 12-bit codeword mostly fails
    with pytest.raises(ValueError, match="repeat"):
        AdaptedMuScheme(adapter=adapter, mu=0.5, side_repeat=0)


def test_adapted_mu_bad_arguments(adapter):
    side = X.side_channel_uses(4)
    with pytest.raises(ValueError, match="smaller than the side information"):
        AdaptedMuScheme(adapter=adapter, budget=side - 1)
    with pytest.raises(ValueError, match="exactly one of mu"):
        AdaptedMuScheme(adapter=adapter)
    with pytest.raises(ValueError, match="exactly one of mu"):
        AdaptedMuScheme(adapter=adapter, mu=0.5, budget=40)
    with pytest.raises(ValueError, match="mu must be a number in"):
        AdaptedMuScheme(adapter=adapter, mu=math.nan)
    with pytest.raises(FileNotFoundError, match="genscom train adapter"):
        AdaptedScheme(adapter="no-such-adapter")
