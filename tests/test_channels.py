"""Channel layer against theory: SNR, fading statistics, equalisers, power packing, errors."""

from __future__ import annotations

import math

import pytest
import torch

from genscom.channels import (
    AWGNChannel,
    RayleighBlockFading,
    RicianBlockFading,
    create_channel,
    equalize,
    list_channels,
)
from genscom.channels.power import channel_uses, complex_to_real, normalize_power, real_to_complex

DTYPES = [torch.complex64, torch.complex128]


def _qpsk(shape: tuple[int, ...], g: torch.Generator, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    b = torch.randint(0, 2, (2, *shape), generator=g).to(real)
    return torch.complex(1 - 2 * b[0], 1 - 2 * b[1]) / math.sqrt(2.0)


def _measured_snr_db(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor | None, dim=None) -> torch.Tensor:
    n = y - (x if h is None else h * x)
    es = x.abs().pow(2).mean() if dim is None else x.abs().pow(2).mean(dim)
    n0 = n.abs().pow(2).mean() if dim is None else n.abs().pow(2).mean(dim)
    return 10 * torch.log10(es / n0)


# --------------------------------------------------------------------------- registry


def test_registry_lists_and_builds():
    assert list_channels() == ["awgn", "rayleigh", "rician"]
    assert isinstance(create_channel("AWGN"), AWGNChannel)
    ch = create_channel("rayleigh", coherence=8)
    assert isinstance(ch, RayleighBlockFading) and ch.coherence == 8
    ch = create_channel("rician", k_factor_db=10.0, coherence=4)
    assert isinstance(ch, RicianBlockFading) and ch.k_factor == pytest.approx(10.0)


def test_registry_unknown_name_and_bad_kwarg():
    with pytest.raises(ValueError, match=r"unknown channel 'nakagami'.*awgn, rayleigh, rician"):
        create_channel("nakagami")
    with pytest.raises(TypeError, match=r"'rayleigh' accepts: coherence"):
        create_channel("rayleigh", k_factor=3.0)


# --------------------------------------------------------------------------- SNR on every channel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_awgn_measured_snr_scalar(snr_db, dtype):
    g = torch.Generator().manual_seed(1)
    x = _qpsk((10, 10_000), g, dtype)  # 1e5 symbols
    out = AWGNChannel()(x, snr_db, generator=g)
    assert out.y.dtype == dtype and out.h is None
    assert float(_measured_snr_db(x, out.y, None)) == pytest.approx(snr_db, abs=0.1)
    assert torch.allclose(torch.as_tensor(out.noise_var, dtype=torch.float64),
                          torch.tensor(10 ** (-snr_db / 10), dtype=torch.float64), rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_awgn_measured_snr_per_item(dtype):
    g = torch.Generator().manual_seed(2)
    snr = torch.tensor([-10.0, -2.5, 5.0, 17.5])
    x = _qpsk((4, 100_000), g, dtype)
    out = AWGNChannel()(x, snr, generator=g)
    meas = _measured_snr_db(x, out.y, None, dim=-1)
    assert torch.allclose(meas.double(), snr.double(), atol=0.1), meas
    assert out.noise_var.shape == (4, 1)


@pytest.mark.parametrize("name,kwargs", [("rayleigh", {"coherence": 16}), ("rician", {"k_factor": 3.0, "coherence": 4})])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fading_average_snr_and_noise(name, kwargs, dtype):
    """Noise power matches N0 and the average received SNR (E|h|^2 = 1) matches the set SNR."""
    g = torch.Generator().manual_seed(3)
    x = _qpsk((16, 8192), g, dtype)
    snr = torch.full((16,), 7.0)
    out = create_channel(name, **kwargs)(x, snr, generator=g)
    assert out.h is not None and out.h.dtype == dtype and out.h.shape == x.shape
    assert float(_measured_snr_db(x, out.y, out.h)) == pytest.approx(7.0, abs=0.1)
    rx_snr = 10 * torch.log10((out.h * x).abs().pow(2).mean() / (out.y - out.h * x).abs().pow(2).mean())
    assert float(rx_snr) == pytest.approx(7.0, abs=0.3)


def test_signal_power_measured_scales_noise():
    g = torch.Generator().manual_seed(4)
    x = 3.0 * _qpsk((2, 50_000), g)
    out = AWGNChannel(signal_power="measured")(x, 10.0, generator=g)
    assert float(_measured_snr_db(x, out.y, None)) == pytest.approx(10.0, abs=0.1)
    out = RayleighBlockFading(8, signal_power="measured")(x, 10.0, generator=g)
    assert float(_measured_snr_db(x, out.y, out.h)) == pytest.approx(10.0, abs=0.1)


# --------------------------------------------------------------------------- fading statistics


@pytest.mark.parametrize("dtype", DTYPES)
def test_rayleigh_block_structure_and_power(dtype):
    c = 16
    g = torch.Generator().manual_seed(5)
    x = torch.ones(64, 16 * 200 + 5, dtype=dtype)  # a short last block of 5 symbols
    out = RayleighBlockFading(coherence=c)(x, 20.0, generator=g)
    h = out.h
    assert float(h.abs().pow(2).mean()) == pytest.approx(1.0, abs=0.02)
    full = h[:, : 16 * 200].reshape(64, 200, c)
    assert torch.equal(full, full[..., :1].expand_as(full))  # constant in each block
    assert torch.equal(h[:, 16 * 200:], h[:, -1:].expand(64, 5))  # the short tail is one block
    # varies across blocks and items; consecutive blocks uncorrelated
    hb = full[..., 0]
    assert float((hb[:, 1:] - hb[:, :-1]).abs().min()) > 0
    corr = (hb[:, 1:] * hb[:, :-1].conj()).mean().abs()
    assert float(corr) < 0.03
    # Rayleigh: |h|^2 ~ Exp(1): P(|h|^2 < 0.1) = 1 - e^-0.1
    assert float((hb.abs().pow(2) < 0.1).double().mean()) == pytest.approx(1 - math.exp(-0.1), abs=0.01)


def test_coherence_one_is_iid():
    g = torch.Generator().manual_seed(6)
    h = RayleighBlockFading(coherence=1)(torch.ones(4, 1000, dtype=torch.complex64), 10.0, generator=g).h
    assert float((h[:, 1:] - h[:, :-1]).abs().min()) > 0


@pytest.mark.parametrize("k", [0.0, 1.0, 10.0])
def test_rician_k_factor_fixed_phase(k):
    """With a fixed LOS phase, K = |E h|^2 / Var h."""
    g = torch.Generator().manual_seed(7)
    ch = RicianBlockFading(k, coherence=1, los_phase=0.5)
    h = ch(torch.ones(8, 20_000, dtype=torch.complex128), 10.0, generator=g).h.flatten()
    assert float(h.abs().pow(2).mean()) == pytest.approx(1.0, abs=0.02)
    mean = h.mean()
    k_hat = float(mean.abs() ** 2 / (h - mean).abs().pow(2).mean())
    assert k_hat == pytest.approx(k, abs=0.02 + 0.05 * k)
    if k > 0:
        assert float(torch.angle(mean)) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("k", [1.0, 5.0])
def test_rician_k_factor_random_phase_moments(k):
    """Random LOS phase: E h = 0; K from moments, E|h|^4 = (2 + 4K + K^2)/(K+1)^2."""
    g = torch.Generator().manual_seed(8)
    h = RicianBlockFading(k, coherence=2)(torch.ones(8, 40_000, dtype=torch.complex64), 10.0, generator=g).h
    hb = h[:, ::2].flatten().to(torch.complex128)
    assert float(hb.mean().abs()) < 0.02
    m2 = float(hb.abs().pow(2).mean())
    m4 = float(hb.abs().pow(4).mean()) / m2**2
    ks = torch.linspace(0, 50, 50001, dtype=torch.float64)  # invert the moment formula on a grid
    k_hat = float(ks[((2 + 4 * ks + ks**2) / (ks + 1) ** 2 - m4).abs().argmin()])
    assert m2 == pytest.approx(1.0, abs=0.02)
    assert k_hat == pytest.approx(k, rel=0.1)


def test_rician_k_db_and_rayleigh_limit():
    assert RicianBlockFading(k_factor_db=3.0).k_factor == pytest.approx(10 ** 0.3)
    g = torch.Generator().manual_seed(9)
    h = RicianBlockFading(0.0, coherence=1)(torch.ones(4, 50_000, dtype=torch.complex64), 0.0, generator=g).h
    assert float((h.abs().pow(2) < 0.1).double().mean()) == pytest.approx(1 - math.exp(-0.1), abs=0.01)


def test_channels_reproducible_with_generator_and_device_dtype_follow_x():
    x = torch.ones(2, 32, dtype=torch.complex128)
    for name in list_channels():
        ch = create_channel(name)
        a = ch(x, 5.0, generator=torch.Generator().manual_seed(0))
        b = ch(x, 5.0, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a.y, b.y) and a.y.dtype == torch.complex128 and a.y.device == x.device
        assert a.channel == name


# --------------------------------------------------------------------------- equalisers


@pytest.mark.parametrize("dtype", DTYPES)
def test_zf_equalizer_perfect_csi_theory(dtype):
    """ZF with true h: x_hat = x + n/h, and nv_eff = N0/|h|^2 matches the residual's variance."""
    g = torch.Generator().manual_seed(10)
    x = _qpsk((32, 4096), g, dtype)
    out = RayleighBlockFading(coherence=16)(x, 10.0, generator=g)
    x_hat, nv = equalize(out.y, out.h, out.noise_var, "zf")
    assert x_hat.dtype == dtype and nv.shape == x.shape
    z = (x_hat - x) / nv.sqrt()  # standardised residual ~ CN(0, 1)
    assert float(z.abs().pow(2).mean()) == pytest.approx(1.0, abs=0.03)
    noiseless, _ = equalize(out.h * x, out.h, out.noise_var, "zf")
    assert torch.allclose(noiseless, x, atol=1e-4)


def test_mmse_equalizer_lower_mse_and_predicted_mse():
    g = torch.Generator().manual_seed(11)
    x = _qpsk((32, 4096), g)
    out = RayleighBlockFading(coherence=4)(x, 0.0, generator=g)
    zf, _ = equalize(out.y, out.h, out.noise_var, "zf")
    mm, nv = equalize(out.y, out.h, out.noise_var, "mmse")
    mse_zf = float((zf - x).abs().pow(2).mean())
    mse_mm = float((mm - x).abs().pow(2).mean())
    assert mse_mm < 0.6 and mse_mm < mse_zf / 3  # ZF blows up in deep fades
    assert float(nv.mean()) == pytest.approx(mse_mm, rel=0.05)  # nv_eff is the MMSE


def test_equalize_awgn_passthrough_and_errors():
    y = torch.ones(2, 4, dtype=torch.complex64)
    x_hat, nv = equalize(y, None, torch.full((2, 1), 0.1), "zf")
    assert x_hat is y and nv.shape == (2, 4) and torch.allclose(nv, torch.full((2, 4), 0.1))
    x_mm, nv_mm = equalize(y, None, 0.25, "mmse")  # h = 1: same as passing ones
    x_ref, nv_ref = equalize(y, torch.ones_like(y), 0.25, "mmse")
    assert torch.allclose(x_mm, x_ref) and torch.allclose(nv_mm, nv_ref) and torch.allclose(x_mm.real, torch.full((2, 4), 0.8))
    with pytest.raises(ValueError, match="method must be 'zf' or 'mmse'"):
        equalize(y, y, 0.1, "ml")
    with pytest.raises(TypeError, match="y must be complex"):
        equalize(y.real, y, 0.1)
    with pytest.raises(ValueError, match="noise_var"):
        equalize(y, y, -1.0)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", ["awgn", "rayleigh", "rician"])
@pytest.mark.parametrize("method", ["zf", "mmse"])
def test_gradients_flow_through_channel_equalizer_and_power(name, method):
    g = torch.Generator().manual_seed(12)
    feats = torch.randn(4, 64, generator=g, requires_grad=True)
    x = normalize_power(real_to_complex(feats))
    out = create_channel(name)(x, torch.tensor([0.0, 5.0, 10.0, 15.0]), generator=g)
    x_hat, _ = equalize(out.y, out.h, out.noise_var, method)
    loss = (complex_to_real(x_hat) - feats.detach()).pow(2).mean()
    loss.backward()
    assert feats.grad is not None and bool(torch.isfinite(feats.grad).all())
    assert float(feats.grad.abs().sum()) > 0


def test_gradient_through_channel_only():
    x = torch.randn(3, 20, dtype=torch.complex64, requires_grad=True)
    out = RayleighBlockFading(5)(x, 3.0, generator=torch.Generator().manual_seed(0))
    out.y.abs().pow(2).sum().backward()
    # d/dx |h x + n|^2 is nonzero wherever h != 0
    assert bool(torch.isfinite(torch.view_as_real(x.grad)).all()) and float(x.grad.abs().min()) > 0


# --------------------------------------------------------------------------- power / packing


@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_power_unit_energy(dtype):
    g = torch.Generator().manual_seed(13)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    x = torch.complex(torch.randn(5, 77, generator=g, dtype=real), torch.randn(5, 77, generator=g, dtype=real))
    x = x * torch.arange(1, 6, dtype=real)[:, None]
    y = normalize_power(x)
    assert y.dtype == dtype
    assert torch.allclose(y.abs().pow(2).mean(-1), torch.ones(5, dtype=real), atol=1e-5)
    assert torch.allclose(y / x, (y / x)[:, :1].expand_as(y), atol=1e-5)  # one scale per item
    z = normalize_power(torch.zeros(2, 3, dtype=dtype))
    assert bool(torch.isfinite(torch.view_as_real(z)).all())
    whole = normalize_power(x, dim=(-2, -1))
    assert float(whole.abs().pow(2).mean()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("packing", ["interleaved", "halves"])
@pytest.mark.parametrize("real_dtype", [torch.float32, torch.float64])
def test_real_complex_round_trip_exact(packing, real_dtype):
    g = torch.Generator().manual_seed(14)
    x = torch.randn(3, 2, 10, generator=g, dtype=real_dtype)
    z = real_to_complex(x, packing=packing)
    assert z.shape == (3, 2, 5) and z.dtype == (torch.complex64 if real_dtype == torch.float32 else torch.complex128)
    assert torch.equal(complex_to_real(z, packing=packing), x)
    if packing == "interleaved":
        assert z[0, 0, 1] == torch.complex(x[0, 0, 2], x[0, 0, 3])
    else:
        assert z[0, 0, 1] == torch.complex(x[0, 0, 1], x[0, 0, 6])
    odd = torch.randn(4, 7, generator=g, dtype=real_dtype)
    z = real_to_complex(odd, pad=True, packing=packing)
    assert z.shape == (4, 4) and torch.equal(complex_to_real(z, length=7, packing=packing), odd)


def test_channel_uses_and_packing_errors():
    assert channel_uses(torch.zeros(2, 9)) == 5
    assert channel_uses(torch.zeros(2, 9, dtype=torch.complex64)) == 9
    assert channel_uses(512) == 256
    with pytest.raises(ValueError, match="odd last dimension.*pad=True"):
        real_to_complex(torch.zeros(2, 7))
    with pytest.raises(TypeError, match=r"x must be float32 or float64.*x.float\(\)"):
        real_to_complex(torch.zeros(2, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="packing must be"):
        real_to_complex(torch.zeros(2, 8), packing="zigzag")
    with pytest.raises(ValueError, match="length must be 8 or 7"):
        complex_to_real(torch.zeros(2, 4, dtype=torch.complex64), length=5)
    with pytest.raises(TypeError, match="x must be complex.*real_to_complex"):
        normalize_power(torch.ones(2, 4))


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name", ["awgn", "rayleigh", "rician"])
def test_bad_inputs_every_channel(name):
    ch = create_channel(name)
    x = torch.ones(4, 8, dtype=torch.complex64)
    with pytest.raises(ValueError, match="snr_db must be a finite number of dB, got nan"):
        ch(x, float("nan"))
    with pytest.raises(ValueError, match="snr_db must be a finite"):
        ch(x, float("inf"))
    with pytest.raises(ValueError, match="snr_db must be finite"):
        ch(x, torch.tensor([1.0, float("inf"), 2.0, 3.0]))
    with pytest.raises(TypeError, match="x must be complex"):
        ch(torch.ones(4, 8), 10.0)
    with pytest.raises(ValueError, match=r"snr_db has shape \(3,\).*batch shape is \(4,\)"):
        ch(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"snr_db has shape \(4,\).*batch shape is \(\)"):
        ch(torch.ones(8, dtype=torch.complex64), torch.zeros(4))  # would silently create a batch


@pytest.mark.parametrize("coherence", [0, -3])
def test_bad_coherence(coherence):
    with pytest.raises(ValueError, match="coherence must be >= 1"):
        RayleighBlockFading(coherence=coherence)
    with pytest.raises(ValueError, match="coherence must be >= 1"):
        create_channel("rician", coherence=coherence)
    with pytest.raises(TypeError, match="coherence must be a positive int"):
        RayleighBlockFading(coherence=2.5)


def test_bad_k_factor_and_signal_power():
    with pytest.raises(ValueError, match=r"k_factor must be a finite number >= 0.*k_factor_db"):
        RicianBlockFading(-1.0)
    with pytest.raises(ValueError, match="k_factor must be"):
        RicianBlockFading(float("nan"))
    with pytest.raises(ValueError, match="not both"):
        RicianBlockFading(2.0, k_factor_db=3.0)
    with pytest.raises(ValueError, match="los_phase must be"):
        RicianBlockFading(2.0, los_phase="fixed")
    with pytest.raises(ValueError, match="signal_power must be a positive number"):
        AWGNChannel(signal_power=0.0)
    with pytest.raises(ValueError, match="signal_power must be a positive number"):
        RayleighBlockFading(4, signal_power=-1.0)
