"""Uncoded QAM over the genscom channels against the closed forms (PROTOCOL.md channel checks)."""

import numpy as np
import pytest
import torch
from scipy import integrate, special

from genscom.channels import fading
from genscom.channels.awgn import AWGNChannel
from genscom.coding import theory
from genscom.coding.calibration import simulate_uncoded_ber

N_BITS = 1_000_000  # >= 5000 errors at every point below: 5% is > 3.5 standard errors


@pytest.mark.parametrize("order,snrs", [(4, (5.0, 7.0, 8.0)), (16, (12.0, 13.0, 14.0))])
def test_uncoded_ber_awgn_matches_closed_form(order, snrs):
    g = torch.Generator().manual_seed(order)
    for snr in snrs:
        ber = simulate_uncoded_ber(order, AWGNChannel(), snr, N_BITS, generator=g)
        th = float(theory.ber_qam_awgn(snr, order))
        assert 5e-3 < th < 5e-2
        assert abs(ber / th - 1) < 0.05, (order, snr, ber, th)


def test_uncoded_qpsk_rayleigh_zf_matches_closed_form():
    ch = fading.RayleighBlockFading(coherence=4)
    g = torch.Generator().manual_seed(7)
    for snr in (10.0, 13.0, 16.0):
        ber = simulate_uncoded_ber(4, ch, snr, 2_000_000, generator=g)
        th = float(theory.ber_qpsk_rayleigh(snr))
        assert abs(ber / th - 1) < 0.05, (snr, ber, th)


def test_closed_forms_agree_with_each_other():
    s = np.array([0.0, 6.0, 12.0, 20.0])
    g = 10 ** (s / 10)
    np.testing.assert_allclose(theory.ber_qam_awgn(s, 4), 0.5 * special.erfc(np.sqrt(g / 2)), rtol=1e-12)
    np.testing.assert_allclose(theory.ber_qpsk_awgn(s), theory.ber_qam_awgn(s, 4), rtol=1e-12)
    np.testing.assert_allclose(theory.ber_qpsk_rayleigh(s), theory.ber_qam_rayleigh(s, 4), rtol=1e-12)
    # high-SNR standard approximations: 16-QAM 3/8 erfc(sqrt(g/10)), 64-QAM 7/24 erfc(sqrt(g/42))
    np.testing.assert_allclose(theory.ber_qam_awgn(20.0, 16), 3 / 8 * special.erfc(np.sqrt(100 / 10)), rtol=1e-3)
    np.testing.assert_allclose(theory.ber_qam_awgn(26.0, 64), 7 / 24 * special.erfc(np.sqrt(10 ** 2.6 / 42)), rtol=2e-2)
    # Rayleigh closed form == numeric average of the AWGN BER over exponential |h|^2
    for order in (16, 64):
        num = integrate.quad(lambda x: np.exp(-x) * float(theory.ber_qam_awgn(10 * np.log10(10 * x + 1e-300), order)),
                             0, 60, limit=200)[0]
        assert abs(num / float(theory.ber_qam_rayleigh(10.0, order)) - 1) < 1e-4
    # Rician: K = 0 is Rayleigh, large K tends to AWGN
    np.testing.assert_allclose(theory.ber_qam_rician(s, 16, k_factor=0.0), theory.ber_qam_rayleigh(s, 16), rtol=1e-5)
    np.testing.assert_allclose(theory.ber_qam_rician(8.0, 4, k_factor=1e4), theory.ber_qam_awgn(8.0, 4), rtol=2e-2)
    # monotone decreasing, shapes kept
    assert theory.ber_qam_awgn(3.0, 64).shape == ()
    assert np.all(np.diff(theory.ber_qam_rayleigh(s, 64)) < 0)


def test_theory_bad_inputs():
    with pytest.raises(ValueError, match=r"\{4, 16, 64\}"):
        theory.ber_qam_awgn(10.0, 8)
    with pytest.raises(ValueError, match="finite"):
        theory.ber_qam_rayleigh(float("nan"), 16)
    with pytest.raises(ValueError, match="k_factor"):
        theory.ber_qam_rician(10.0, 4, k_factor=-1.0)
