"""Pilot-based sensing against theory: SNR estimate, LS/LMMSE channel estimates, pilot frames."""

from __future__ import annotations

import math

import pytest
import torch

from genscom.channels import AWGNChannel, RayleighBlockFading, RicianBlockFading, create_channel
from genscom.channels.power import normalize_power
from genscom.channels.sensing import (
    ChannelSensing,
    LinkFeedback,
    PilotLayout,
    estimate_channel,
    estimate_noise_var,
    link_feedback,
    pilot_sequence,
    pilots_for_snr,
    quantize_feedback_snr,
    send_with_pilots,
    sense,
    snr_margin_db,
)


def _qpsk(shape, g, dtype=torch.complex64):
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    b = torch.randint(0, 2, (2, *shape), generator=g).to(real)
    return torch.complex(1 - 2 * b[0], 1 - 2 * b[1]) / math.sqrt(2.0)


# --------------------------------------------------------------------------- pilots


@pytest.mark.parametrize("n", [1, 7, 16, 64])
def test_pilots_unit_modulus_and_zc_autocorrelation(n):
    zc = pilot_sequence(n, kind="zc")
    assert zc.shape == (n,) and torch.allclose(zc.abs(), torch.ones(n), atol=1e-6)
    # Zadoff-Chu: zero periodic autocorrelation at every nonzero lag
    for lag in range(1, n):
        assert float((zc * torch.roll(zc, lag).conj()).sum().abs()) < 1e-3 * n
    q = pilot_sequence(n, kind="qpsk", generator=torch.Generator().manual_seed(0), dtype=torch.complex128)
    assert q.dtype == torch.complex128 and torch.allclose(q.abs(), torch.ones(n, dtype=torch.float64))


# --------------------------------------------------------------------------- SNR estimation


@pytest.mark.parametrize("channel", [AWGNChannel(), RayleighBlockFading(coherence=16), RicianBlockFading(4.0, coherence=16)],
                         ids=["awgn", "rayleigh", "rician"])
def test_snr_estimator_error_64_pilots(channel):
    """2000 trials at 10 dB with 64 pilots: mean abs error < 0.5 dB, bias < 0.1 dB.

    Theory: N0_hat has 2*63 (AWGN) or 2*60 (4 blocks of 16) real degrees of freedom, so the
    estimate's std is about 4.34/sqrt(63) = 0.55 dB and its mean abs error about 0.44 dB.
    Without the (P-1) degree-of-freedom correction the Rayleigh bias would be 0.28 dB.
    """
    g = torch.Generator().manual_seed(20)
    s = sense(channel, 10.0, batch=2000, n_pilots=64, generator=g)
    err = s.snr_db - 10.0
    mae, bias = float(err.abs().mean()), float(err.mean())
    assert s.snr_db.shape == (2000,) and s.n_pilots == 64
    assert mae < 0.5, mae
    assert abs(bias) < 0.1, bias
    assert s.noise_var.shape == (2000,)
    assert float(s.noise_var.mean()) == pytest.approx(0.1, rel=0.02)  # unbiased N0


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_snr_estimate_per_item_and_feedback(dtype):
    """Per-item SNRs are tracked, and the estimate feeds straight back as the next snr_db."""
    g = torch.Generator().manual_seed(21)
    snr = torch.tensor([-5.0, 0.0, 10.0, 20.0]).repeat_interleave(250)
    ch = RayleighBlockFading(coherence=32)
    s = sense(ch, snr, batch=1000, n_pilots=128, estimator="lmmse", dtype=dtype, generator=g)
    assert s.snr_db.dtype == (torch.float64 if dtype == torch.complex128 else torch.float32)
    per_level = (s.snr_db - snr.to(s.snr_db.dtype)).reshape(4, 250).mean(-1)
    assert float(per_level.abs().max()) < 0.15, per_level
    x = normalize_power(_qpsk((1000, 64), g, dtype))
    out = AWGNChannel()(x, s.snr_db, generator=g)  # feedback: a plain [B] tensor
    assert out.y.shape == x.shape


def test_sensing_fields_awgn_vs_fading():
    g = torch.Generator().manual_seed(22)
    s = sense(AWGNChannel(), 5.0, batch=4, n_pilots=16, generator=g)
    assert isinstance(s, ChannelSensing) and s.channel == "awgn" and s.h_hat is None and s.fading_mag is None
    s = sense(RayleighBlockFading(coherence=8), 5.0, batch=4, n_pilots=20, generator=g)  # 3 blocks, last has 4
    assert s.channel == "rayleigh" and s.h_hat.shape == (4, 20) and s.fading_mag.shape == (4,)
    assert torch.equal(s.h_hat[:, :8], s.h_hat[:, :1].expand(4, 8))
    assert torch.equal(s.h_hat[:, 16:], s.h_hat[:, 16:17].expand(4, 4))


def test_effective_snr_tracks_realised_fade():
    g = torch.Generator().manual_seed(23)
    data = normalize_power(_qpsk((500, 240), g))
    rx = send_with_pilots(data, RayleighBlockFading(coherence=64), 15.0, pilots_per_block=8, generator=g)
    h_blocks = rx.layout.split(rx.output.h, 240)[0][..., 0]  # [500, 5] one h per block
    true_eff = 15.0 + 10 * torch.log10(h_blocks.abs().pow(2).mean(-1))
    est = rx.sensing.effective_snr_db
    err = est - true_eff
    # N0_hat has 2*35 real dof (0.73 dB std) while the fade itself spreads the true value by dB
    assert abs(float(err.median())) < 0.2 and float(err.abs().mean()) < 0.8, err
    assert float(torch.corrcoef(torch.stack([est, true_eff]))[0, 1]) > 0.9
    assert float(true_eff.std()) > 2.0  # the estimate tracks a genuinely varying quantity


# --------------------------------------------------------------------------- channel estimates


def _h_mse(method: str, snr_db: float, *, known_n0: bool, seed: int = 24) -> tuple[float, float]:
    """(measured MSE, predicted error variance) of per-block estimates, Rayleigh, 4 pilots per block."""
    g = torch.Generator().manual_seed(seed)
    p, nb, b = 4, 200, 50
    x_p = pilot_sequence(p)
    h = RayleighBlockFading(coherence=1).sample_h((b,), nb, generator=g)  # one h per block
    n0 = 10 ** (-snr_db / 10)
    noise = torch.complex(torch.randn(b, nb, p, generator=g), torch.randn(b, nb, p, generator=g)) * math.sqrt(n0 / 2)
    y_p = h[..., None] * x_p + noise
    h_hat, err = estimate_channel(y_p, x_p, method=method, noise_var=n0 if known_n0 else None, prior=(0j, 1.0))
    return float((h_hat - h).abs().pow(2).mean()), float(err.mean())


@pytest.mark.parametrize("known_n0", [True, False])
def test_ls_lmmse_mse_vs_snr(known_n0):
    snrs = [-10.0, -5.0, 0.0, 5.0, 10.0, 20.0]
    ls = [_h_mse("ls", s, known_n0=known_n0) for s in snrs]
    mm = [_h_mse("lmmse", s, known_n0=known_n0) for s in snrs]
    ls_mse, mm_mse = [m for m, _ in ls], [m for m, _ in mm]
    assert all(a > b for a, b in zip(ls_mse, ls_mse[1:])), ls_mse  # decreasing with SNR
    assert all(a > b for a, b in zip(mm_mse, mm_mse[1:])), mm_mse
    for s, m, m_mm in zip(snrs, ls_mse, mm_mse):
        n0p = 10 ** (-s / 10) / 4
        assert m == pytest.approx(n0p, rel=0.1)  # LS: N0 / P
        if known_n0:
            assert m_mm == pytest.approx(n0p / (1 + n0p), rel=0.1)  # LMMSE: s2 (N0/P) / (s2 + N0/P)
        assert m_mm <= m * 1.02
    assert mm_mse[0] < 0.5 * ls_mse[0] and mm_mse[1] < 0.8 * ls_mse[1]  # LMMSE wins clearly at low SNR
    for (m, pred) in ls + (mm if known_n0 else []):
        assert pred == pytest.approx(m, rel=0.1)  # reported error variance is right


def test_noise_var_estimator_unbiased_and_needs_two_pilots():
    g = torch.Generator().manual_seed(25)
    x_p = pilot_sequence(3, kind="qpsk", generator=g)
    y = torch.complex(torch.randn(4000, 5, 3, generator=g), torch.randn(4000, 5, 3, generator=g)) * math.sqrt(0.25 / 2)
    y = y + (0.7 - 0.2j) * x_p
    assert float(estimate_noise_var(y, x_p).mean()) == pytest.approx(0.25, rel=0.02)
    with pytest.raises(ValueError, match=">= 2 pilots in at least one coherence block"):
        estimate_noise_var(y[..., :1], x_p[:1])


# --------------------------------------------------------------------------- data + pilots


def test_layout_insert_split_round_trip_and_alignment():
    lay = PilotLayout(pilots_per_block=2, coherence=8)
    data = torch.arange(1, 11, dtype=torch.float32).to(torch.complex64).expand(3, 10)
    pil = torch.tensor([100, 200], dtype=torch.complex64)
    frame = lay.insert(data, pil)
    assert lay.frame_length(10) == 14 and frame.shape == (3, 14)
    assert frame[0].real.tolist() == [100, 200, 1, 2, 3, 4, 5, 6, 100, 200, 7, 8, 9, 10]
    y_p, y_d = lay.split(frame, 10)
    assert torch.equal(y_d, data) and torch.equal(y_p, pil.expand(3, 2, 2))
    one = PilotLayout(pilots_per_block=4)  # AWGN: one block
    assert one.frame_length(50) == 54 and torch.equal(one.split(one.insert(data, pil.repeat(2)), 10)[1], data)


@pytest.mark.parametrize("n_data", [56, 100])
def test_pilot_blocks_see_one_h(n_data):
    ch = RayleighBlockFading(coherence=16)
    g = torch.Generator().manual_seed(26)
    data = normalize_power(_qpsk((4, n_data), g))
    rx = send_with_pilots(data, ch, 30.0, pilots_per_block=4, csi="perfect", generator=g)
    lay = rx.layout
    assert rx.channel_uses == lay.frame_length(n_data) == n_data + 4 * math.ceil(n_data / 12)
    h_p, h_d = lay.split(rx.output.h, n_data)
    assert torch.equal(lay.expand(h_p[..., 0], n_data), h_d)  # pilots and data of a block share h


@pytest.mark.parametrize("channel", [AWGNChannel(), RayleighBlockFading(coherence=32), RicianBlockFading(2.0, coherence=32)],
                         ids=["awgn", "rayleigh", "rician"])
def test_pilot_csi_vs_perfect_csi(channel):
    """Pilot CSI costs a little MSE vs perfect CSI; LMMSE beats LS; the effective noise is calibrated."""
    snr = 5.0
    data = normalize_power(_qpsk((400, 224), torch.Generator().manual_seed(27)))

    def mse(csi, est, eq="zf"):
        rx = send_with_pilots(data, channel, snr, pilots_per_block=4, csi=csi, estimator=est, equalizer=eq,
                              generator=torch.Generator().manual_seed(28))
        return float((rx.x_hat - data).abs().pow(2).mean()), rx

    perfect, rx_p = mse("perfect", "ls", "mmse")
    ls, _ = mse("pilot", "ls", "mmse")
    mm, rx = mse("pilot", "lmmse", "mmse")
    assert perfect <= mm * 1.01 and mm < ls
    assert mm < perfect * 1.3  # 4 pilots per block: a modest CSI penalty
    assert rx.x_hat.shape == data.shape and rx.noise_var.shape == data.shape
    assert float(rx.noise_var.mean()) == pytest.approx(mm, rel=0.15)  # predicted MSE of the MMSE output
    if isinstance(channel, AWGNChannel):
        assert rx_p.sensing.h_hat is None and torch.equal(rx.sensing.h_hat, torch.ones_like(rx.sensing.h_hat))
    # same seed -> same channel and noise: perfect-CSI ZF is exact up to noise/h
    _, rx_zf = mse("perfect", "ls", "zf")
    h_d = rx_zf.layout.split(rx_zf.output.h, 224)[1] if rx_zf.output.h is not None else 1.0
    assert torch.allclose(rx_zf.x_hat * h_d, rx_zf.layout.split(rx_zf.output.y, 224)[1], atol=1e-4)


def test_send_with_pilots_gradient():
    g = torch.Generator().manual_seed(29)
    feats = torch.randn(2, 60, dtype=torch.complex64, generator=g, requires_grad=True)
    rx = send_with_pilots(normalize_power(feats), RayleighBlockFading(coherence=16), 10.0, csi="pilot", generator=g)
    rx.x_hat.abs().pow(2).sum().backward()
    assert bool(torch.isfinite(torch.view_as_real(feats.grad)).all()) and float(feats.grad.abs().sum()) > 0


# --------------------------------------------------------------------------- bad inputs


def test_sensing_bad_inputs():
    ch = create_channel("rayleigh", coherence=8)
    with pytest.raises(ValueError, match="n_pilots must be >= 2"):
        sense(ch, 10.0, batch=2, n_pilots=1)
    with pytest.raises(ValueError, match="estimator must be one of 'ls', 'lmmse'"):
        sense(ch, 10.0, batch=2, estimator="ml")
    with pytest.raises(ValueError, match="batch must be >= 1"):
        sense(ch, 10.0, batch=0)
    with pytest.raises(ValueError, match=r"snr_db has shape \(3,\)"):
        sense(ch, torch.zeros(3), batch=2)
    with pytest.raises(ValueError, match="snr_db must be finite"):
        sense(ch, torch.tensor([1.0, float("nan")]), batch=2)
    with pytest.raises(ValueError, match=">= 2 pilots in at least one coherence block"):
        sense(create_channel("rayleigh", coherence=1), 10.0, batch=2, n_pilots=8)
    with pytest.raises(TypeError, match="channel must be a genscom Channel"):
        sense("awgn", 10.0, batch=2)
    with pytest.raises(ValueError, match=r"coherence \(4\) must exceed pilots_per_block \(4\)"):
        send_with_pilots(torch.ones(2, 8, dtype=torch.complex64), create_channel("rayleigh", coherence=4), 10.0)
    with pytest.raises(ValueError, match="pilots_per_block must be >= 2"):
        PilotLayout(pilots_per_block=1)
    with pytest.raises(ValueError, match="csi must be one of 'perfect', 'pilot'"):
        send_with_pilots(torch.ones(2, 8, dtype=torch.complex64), ch, 10.0, csi="genie")
    with pytest.raises(TypeError, match="data must be complex"):
        send_with_pilots(torch.ones(2, 8), ch, 10.0)
    with pytest.raises(ValueError, match="kind must be one of 'zc', 'qpsk'"):
        pilot_sequence(8, kind="bpsk")
    with pytest.raises(ValueError, match="root must be coprime"):
        pilot_sequence(8, root=2)


@pytest.mark.parametrize("name", ["awgn", "rayleigh"])
def test_feedback_margin_bounds_the_overshoot(name):
    """The fed-back estimate (64 pilots, 6 bits) overshoots the true SNR by more than ``margin_db`` in at most
    about 5% of soundings (Monte Carlo, 4000 soundings), and by more than half the margin far more often."""
    channel = create_channel(name)
    fb = link_feedback(channel, 0.0, generator=torch.Generator().manual_seed(0))
    assert fb.margin_db == pytest.approx(snr_margin_db(64, coherence=getattr(channel, "coherence", None)))
    est = sense(channel, 0.0, batch=4000, n_pilots=64, generator=torch.Generator().manual_seed(1)).snr_db
    fed = torch.tensor([quantize_feedback_snr(float(e), 6) for e in est])
    over = (fed > fb.margin_db).double().mean().item()
    assert 0.01 < over < 0.07
    assert (fed > fb.margin_db / 2).double().mean().item() > 3 * over
    assert link_feedback(channel, 0.0, csi="perfect").margin_db == 0.0
    with pytest.raises(ValueError, match="margin_db"):
        LinkFeedback(channel=name, margin_db=-1.0)
    with pytest.raises(ValueError, match="confidence"):
        snr_margin_db(64, confidence=1.0)


def test_pilot_density_follows_the_fed_back_snr():
    """With ``pilot_mse`` the layout meets the LMMSE error target 1/(1 + P snr) at the fed-back SNR; the
    measured estimate error at that density is within the target (independent Monte Carlo)."""
    assert [pilots_for_snr(s, 16) for s in (-10.0, -5.0, -2.5, 0.0, 20.0)] == [8, 8, 4, 2, 2]
    assert pilots_for_snr(-5.0, 8) == 4  # capped at half a block
    for snr in (-2.5, 0.0, 3.0):
        fb = LinkFeedback(channel="rayleigh", snr_db=snr, bits=6, coherence=16, pilot_mse=1 / 3)
        p = fb.pilot_layout().pilots_per_block
        assert 1 / (1 + p * 10 ** (snr / 10)) <= 1 / 3 < 1 / (1 + p / 2 * 10 ** (snr / 10)) or p == 2
        g = torch.Generator().manual_seed(3)
        n, n0 = 20000, 10 ** (-snr / 10)
        h = torch.complex(torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)) / math.sqrt(2)
        x = pilot_sequence(p).expand(n, 1, p)
        noise = torch.complex(torch.randn(n, 1, p, generator=g), torch.randn(n, 1, p, generator=g)) * math.sqrt(n0 / 2)
        h_hat, _ = estimate_channel(h.unsqueeze(-1) * x + noise, x, method="lmmse", noise_var=n0)
        err = (h_hat - h).abs().square().mean().item()  # measured against the true h
        assert err == pytest.approx(1 / (1 + p * 10 ** (snr / 10)), rel=0.05)
        assert err <= 1 / 3 * 1.05
    fixed = LinkFeedback(channel="rayleigh", snr_db=-5.0, bits=6, coherence=16)
    assert fixed.pilot_layout().pilots_per_block == 2
    assert LinkFeedback(channel="awgn", snr_db=-5.0, pilot_mse=0.3).pilot_layout() is None
    with pytest.raises(ValueError, match="pilot_mse"):
        LinkFeedback(channel="rayleigh", coherence=16, pilot_mse=1.5)
