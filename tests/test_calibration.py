"""Monte-Carlo simulation and the calibration cache (genscom.coding.calibration)."""

import os

import pytest
import torch

from genscom.channels import fading
from genscom.channels.awgn import AWGNChannel
from genscom.coding.calibration import (
    CalibrationConfig,
    CalibrationTable,
    calibrate,
    default_cache_dir,
    simulate_coded,
    through_channel,
)
from genscom.coding.link import DigitalLink


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_simulate_coded_counts():
    st = simulate_coded("qpsk-1/3", AWGNChannel(), 10.0, 4, generator=_gen(15), k=128)
    assert st.bler == 0.0 and st.ber == 0.0 and st.n_codewords == 4 and st.error_counts == []
    lo = simulate_coded("qpsk-1/2", AWGNChannel(), -8.0, 4, generator=_gen(16), k=128)
    assert lo.block_errors == 4 and lo.bler == 1.0 and len(lo.error_counts) == 4 and lo.bit_errors == sum(lo.error_counts)
    with pytest.raises(ValueError, match="n_codewords"):
        simulate_coded("qpsk-1/2", AWGNChannel(), 0.0, 0)


def test_calibration_cache_goes_to_the_folder_passed_and_nowhere_else(tmp_path, monkeypatch):
    home, env = tmp_path / "home", tmp_path / "env-cache"
    monkeypatch.setenv("HOME", str(home))  # the default location, if anything wrote there
    monkeypatch.setenv("GENSCOM_CACHE", str(env))
    assert default_cache_dir() == env / "link_calibration"
    mine = tmp_path / "mine"
    cfg = CalibrationConfig(snr_grid=(0.0, 30.0), n_codewords=4, pilot_codewords=4, zero_run=1, cache_dir=mine)
    assert cfg.folder() == mine / "link_calibration" and CalibrationConfig().folder() == default_cache_dir()
    table = calibrate("qpsk-1/2", AWGNChannel(), config=cfg, k=64)
    # a link with abstract fidelity calibrates the same way, into the same folder
    link = DigitalLink("16qam-1/2", fidelity="abstract", k=64, calibration=cfg)
    res = link.send_bits(torch.zeros(3, 64), 30.0, channel=AWGNChannel(), generator=_gen(1))
    assert res.fidelity == "abstract" and int(res.bit_errors.sum()) == 0
    files = _files(mine)
    assert len(files) == 2 and all(f.startswith("link_calibration" + os.sep) and f.endswith(".json") for f in files)
    assert not home.exists() and not env.exists()  # nothing written anywhere else
    again = calibrate("qpsk-1/2", AWGNChannel(), config=cfg, k=64)  # read back from the folder
    assert again.key == table.key and again.bler == table.bler and _files(mine) == files
    calibrate("qpsk-1/2", AWGNChannel(), config=CalibrationConfig(snr_grid=(0.0, 30.0), n_codewords=4,
                                                                   pilot_codewords=4), k=64, use_cache=False)
    assert not env.exists()  # use_cache=False touches no disk
    with pytest.raises(TypeError, match="cache_dir must be a folder path"):
        CalibrationConfig(cache_dir=3)


def test_table_interpolation():
    t = CalibrationTable(mcs="qpsk-1/2", channel="awgn()", k=128, n=256, num_iter=20, snr_db=[0.0, 1.0, 2.0, 3.0],
                         bler=[1.0, 0.1, 0.0, 0.0], residual_ber=[0.3, 0.1, 0.0, 0.0], n_codewords=[32, 100, 100, 0],
                         error_counts=[[40], [12], [], []], source=["pilot", "simulated", "simulated", "extrapolated"])
    assert t.bler_at(-5.0) == 1.0 and t.bler_at(0.0) == 1.0 and t.bler_at(1.0) == 0.1
    assert abs(t.bler_at(0.5) - 10 ** -0.5) < 1e-9  # log-linear
    assert 0.005 < t.bler_at(1.5) < 0.1 and t.bler_at(2.0) == 0.0 and t.bler_at(10.0) == 0.0
    assert t.error_count_pool(2.9) == [12] and abs(t.residual_ber_at(0.5) - 0.2) < 1e-9


# -- through_channel: symbol repetition + maximum-ratio combining ---------------------------------
def test_repetition_mrc_gives_the_r_fold_snr_gain_on_awgn():
    x = torch.polar(torch.ones(4, 25_000), 2 * torch.pi * torch.rand(4, 25_000, generator=_gen(0)))
    n0 = 10 ** (-3.0 / 10)  # 3 dB
    for r in (1, 2, 4):
        x_hat, nv = through_channel(x, AWGNChannel(), 3.0, generator=_gen(r), repeat=r)
        assert x_hat.shape == x.shape == nv.shape
        assert torch.allclose(nv, torch.full_like(nv, n0 / r))
        measured = float((x_hat - x).abs().pow(2).mean())
        assert measured == pytest.approx(n0 / r, rel=0.03), r  # 1e5 symbols: ~0.5% std


def test_repetition_mrc_on_rayleigh_matches_its_effective_noise():
    x = torch.polar(torch.ones(8, 4096), 2 * torch.pi * torch.rand(8, 4096, generator=_gen(1)))
    x_hat, nv = through_channel(x, fading.RayleighBlockFading(coherence=16), 5.0, generator=_gen(2), repeat=3)
    ratio = float(((x_hat - x).abs().pow(2) / nv).mean())  # per-symbol error power over its predicted N0_eff
    assert ratio == pytest.approx(1.0, rel=0.05)
    assert float(nv.std()) > 0  # fading: per-symbol combined SNR varies
