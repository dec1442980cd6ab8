"""Monte-Carlo simulation, counting to a target of block errors, and the calibration tables (genscom.coding.calibration)."""

import math
import os

import pytest
import torch

from genscom.channels import fading
from genscom.channels.awgn import AWGNChannel
from genscom.channels.sensing import PILOT_CHOICES, PilotLayout
from genscom.coding import theory
from genscom.coding.calibration import (
    SHIPPED_DIR,
    CalibrationConfig,
    CalibrationTable,
    CodedStats,
    bler_interval,
    calibrate,
    calibrate_all,
    default_cache_dir,
    find_table,
    link_key,
    read_table_file,
    run_to_errors,
    shipped_table,
    simulate_coded,
    table_file_name,
    through_channel,
)
from genscom.coding.ldpc import LDPCCode
from genscom.coding.link import DigitalLink
from genscom.coding.mcs import NR_MCS, get_mcs
from genscom.coding.qam import QAM


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


# -- counting to a target of block errors ---------------------------------------------------------
def test_bler_interval_hand_cases():
    lo, hi = bler_interval(0, 100)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100))  # Clopper-Pearson with no error
    lo, hi = bler_interval(100, 100)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 100))
    lo, hi = bler_interval(50, 1000)
    assert lo < 0.05 < hi and hi - lo < 0.03
    assert bler_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="block_errors"):
        bler_interval(5, 4)


def test_run_to_errors_stops_at_the_target_on_a_tiny_code():
    code = LDPCCode(32, "1/2", bits_per_symbol=2)
    qam, gen = QAM(4), _gen(1)
    calls = []

    def sim(snr):
        def f(n):
            calls.append(n)
            return simulate_coded("qpsk-1/2", AWGNChannel(), snr, n, generator=gen, code=code, qam=qam)
        return f

    st = run_to_errors(sim(2.0), target_block_errors=20, max_codewords=5000, batch_codewords=16, first_batch=8, k=32)
    assert 20 <= st.block_errors < 20 + 16  # stops within one batch of the target
    assert st.n_codewords == sum(calls) < 5000 and len(st.error_counts) == st.block_errors
    assert calls[0] == 8 and max(calls) <= 16
    calls.clear()
    clean = run_to_errors(sim(12.0), target_block_errors=20, max_codewords=100, batch_codewords=32, first_batch=8, k=32)
    assert clean.block_errors == 0 and clean.n_codewords == 100 == sum(calls)  # the cap, exactly


@pytest.mark.parametrize("snr_db", [4.0, 7.0])
def test_interval_contains_the_true_bler_of_uncoded_blocks(snr_db):
    """Uncoded QPSK blocks of 16 bits on AWGN: BLER = 1 - (1 - Q(sqrt(Es/N0)))^16 in closed form."""
    qam, gen, bits = QAM(4), _gen(int(snr_db)), 16

    def simulate(n: int) -> CodedStats:
        u = torch.randint(0, 2, (n, bits), generator=gen).float()
        x_hat, _ = through_channel(qam.map(u), AWGNChannel(), snr_db, generator=gen)
        errs = (qam.hard(x_hat) != u).sum(-1)
        failed = errs[errs > 0]
        return CodedStats(float(errs.sum()) / u.numel(), len(failed) / n, n, len(failed), int(errs.sum()),
                          failed.tolist())

    st = run_to_errors(simulate, target_block_errors=400, max_codewords=200_000, batch_codewords=4096, k=bits)
    true = 1 - (1 - theory.ber_qpsk_awgn(snr_db)) ** bits
    lo, hi = bler_interval(st.block_errors, st.n_codewords)
    assert lo <= true <= hi, (lo, true, hi)
    assert hi - lo < 0.25 * true  # 400 errors: about +-10 %


# -- the adaptive search of SNR points ---------------------------------------------------------------
def test_search_finds_the_waterfall_and_runs_points_to_the_target(tmp_path):
    cfg = CalibrationConfig(target_block_errors=20, max_codewords=120, pilot_codewords=16, batch_codewords=64,
                            fine_step_db=0.5, cache_dir=tmp_path)
    t = calibrate("qpsk-1/2", AWGNChannel(), config=cfg, k=32)
    sim = [i for i, s in enumerate(t.source) if s == "simulated"]
    assert t.source[0] == "bound" and t.bler[0] == 1.0 and t.snr_db[0] == -12.0  # below: BLER 1 by monotonicity
    assert t.source[-1] == "bound" and t.bler[-1] == 0.0 and t.snr_db[-1] == 32.0  # above: 0
    assert t.block_errors[sim[-1]] == 0 and t.n_codewords[sim[-1]] == 120  # stopped at the first error-free point
    assert t.block_errors[sim[0]] == t.n_codewords[sim[0]]  # starts at the last all-fail coarse point
    for i in sim:  # each point: to the target or the cap
        assert t.block_errors[i] >= 20 or t.n_codewords[i] == 120
        assert t.bler_low[i] <= t.block_errors[i] / t.n_codewords[i] <= t.bler_high[i]
    assert t.bler == sorted(t.bler, reverse=True) and len(sim) >= 3
    assert t.snr_db[sim[1]] - t.snr_db[sim[0]] == 0.5  # dense, not coarse, in the waterfall
    assert -2.0 < t.snr_at_bler(0.1) < 6.0  # a short rate-1/2 code on AWGN
    assert t.decoder in ("ldpc", "sionna") and t.total_codewords == sum(t.n_codewords)


def test_calibration_cache_goes_to_the_folder_passed_and_nowhere_else(tmp_path, monkeypatch):
    home, env = tmp_path / "home", tmp_path / "env-cache"
    monkeypatch.setenv("HOME", str(home))  # the default location, if anything wrote there
    monkeypatch.setenv("GENSCOM_CACHE", str(env))
    assert default_cache_dir() == env / "link_calibration"
    mine = tmp_path / "mine"
    cfg = CalibrationConfig(snr_grid=(0.0, 30.0), max_codewords=4, pilot_codewords=4, target_block_errors=4,
                            cache_dir=mine)
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
    calibrate("qpsk-1/2", AWGNChannel(), config=CalibrationConfig(snr_grid=(0.0, 30.0), max_codewords=4,
                                                                   pilot_codewords=4), k=64, use_cache=False)
    assert not env.exists()  # use_cache=False touches no disk
    with pytest.raises(TypeError, match="cache_dir must be a folder path"):
        CalibrationConfig(cache_dir=3)
    with pytest.raises(ValueError, match="max_codewords"):
        CalibrationConfig(max_codewords=0)
    with pytest.raises(ValueError, match="fine_step_db"):
        CalibrationConfig(fine_step_db=2.0, coarse_step_db=1.0)


def test_table_interpolation():
    t = CalibrationTable(mcs="qpsk-1/2", channel="awgn()", k=128, n=256, num_iter=20, snr_db=[0.0, 1.0, 2.0, 3.0],
                         bler=[1.0, 0.1, 0.0, 0.0], residual_ber=[0.3, 0.1, 0.0, 0.0], n_codewords=[32, 100, 100, 0],
                         error_counts=[[40], [12], [], []], source=["simulated", "simulated", "simulated", "bound"])
    assert t.bler_at(-5.0) == 1.0 and t.bler_at(0.0) == 1.0 and t.bler_at(1.0) == 0.1
    assert abs(t.bler_at(0.5) - 10 ** -0.5) < 1e-9  # log-linear
    assert 0.005 < t.bler_at(1.5) < 0.1 and t.bler_at(2.0) == 0.0 and t.bler_at(10.0) == 0.0
    assert t.error_count_pool(2.9) == [12] and abs(t.residual_ber_at(0.5) - 0.2) < 1e-9
    assert t.snr_at_bler(0.1) == pytest.approx(1.0, abs=1e-6) and 0.0 < t.snr_at_bler(0.5) < 0.5
    assert CalibrationTable.from_json(t.to_json()) == t


def test_calibrate_all_writes_one_resumable_file_per_channel(tmp_path):
    cfg = CalibrationConfig(snr_grid=(-2.0, 2.0, 12.0), target_block_errors=4, max_codewords=8, pilot_codewords=4)
    lines: list[str] = []
    out = calibrate_all([AWGNChannel()], ["qpsk-1/2", "16qam-1/2"], cfg, lines.append, out_dir=tmp_path, k=32,
                        meta={"command": "test"})
    path = tmp_path / table_file_name(AWGNChannel())
    meta, tables = read_table_file(path)
    assert [t.mcs for t in tables] == ["qpsk-1/2", "16qam-1/2"] and len(lines) == 2 and "qpsk-1/2" in lines[0]
    assert meta["command"] == "test" and meta["k"] == 32 and meta["codewords"] == sum(t.total_codewords for t in tables)
    assert out[tables[0].channel] == tables
    # resumed: tables already in the file are kept, not simulated again
    again = calibrate_all([AWGNChannel()], ["qpsk-1/2", "16qam-1/2"], cfg, lines.append, out_dir=tmp_path, k=32)
    assert len(lines) == 2 and again[tables[0].channel] == tables
    assert shipped_table("qpsk-1/2", AWGNChannel(), k=32, folder=tmp_path) == tables[0]
    assert shipped_table("qpsk-1/2", AWGNChannel(), k=64, folder=tmp_path) is None


# -- the shipped tables ----------------------------------------------------------------------------
SHIPPED = sorted(SHIPPED_DIR.glob("*.json"))


@pytest.mark.skipif(not SHIPPED, reason="no shipped calibration tables")
def test_shipped_tables_are_monotone_counted_and_used_without_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSCOM_CACHE", str(tmp_path / "cache"))
    awgn = [shipped_table(name, AWGNChannel()) for name in NR_MCS]
    assert all(t is not None for t in awgn), "every 5G NR MCS is shipped for AWGN"
    thresholds = [t.snr_at_bler(0.1) for t in awgn]
    assert thresholds[0] < -4.0 and thresholds[-1] > 15.0  # QPSK 120/1024 ~ -6 dB .. 64-QAM 948/1024 ~ +17 dB
    eff = [get_mcs(t.mcs).spectral_efficiency for t in awgn]
    assert all(b > a for a, b in zip(thresholds, thresholds[1:])), list(zip(eff, thresholds))
    for path in SHIPPED:
        meta, tables = read_table_file(path)
        assert meta["codewords"] == sum(t.total_codewords for t in tables) and meta["k"] == 1024
        for t in tables:
            assert t.bler == sorted(t.bler, reverse=True) and t.k == 1024 and t.num_iter == 20
            assert all(lo <= b <= hi or s == "simulated" for lo, b, hi, s in
                       zip(t.bler_low, t.bler, t.bler_high, t.source))
    # the default link reads them: nothing is calibrated or written
    t = calibrate("qpsk-120/1024", AWGNChannel())
    assert t is awgn[0] or t == awgn[0]
    assert not (tmp_path / "cache").exists()


def test_shipped_pilot_tables_cover_the_nr_set_and_cost_snr(tmp_path, monkeypatch):
    """Rayleigh (coherence 16) with pilot CSI for every pilot density the SNR-driven layout chooses: every
    5G NR MCS, each its own file and key; pilot CSI never beats perfect CSI, more pilots lose less."""
    monkeypatch.setenv("GENSCOM_CACHE", str(tmp_path / "cache"))
    ray = fading.RayleighBlockFading(coherence=16)
    perfect = [shipped_table(name, ray).snr_at_bler(0.1) for name in NR_MCS]
    by_p = {}
    for p in PILOT_CHOICES:
        layout = PilotLayout.for_channel(ray, p)
        assert (SHIPPED_DIR / table_file_name(ray, layout)).is_file()
        tables = [shipped_table(name, ray, pilots=layout) for name in NR_MCS]
        assert all(t is not None and t.channel == f"{link_key(ray)}+pilots={p}" for t in tables), p
        by_p[p] = [t.snr_at_bler(0.1) for t in tables]
        meta, _ = read_table_file(SHIPPED_DIR / table_file_name(ray, layout))
        assert meta["csi"] == "pilot" and meta["pilots_per_block"] == p and meta["channel"] == link_key(ray, layout)
        assert find_table(NR_MCS[0], ray, pilots=layout) == tables[0]
    # per MCS: the pilots take channel uses from every block of 16, so a codeword spans more fading blocks (P = 8:
    # twice as many) and gains diversity; on the flat, diversity-limited waterfalls of the high-rate 64-QAM MCS
    # that outweighs the small estimation loss at high SNR (64qam-873/1024 at 25 dB, 3000 codewords: BLER 0.053
    # with 8 pilots, 0.091 perfect), and the crossing of a flat waterfall is itself uncertain by ~0.5 dB
    for i, name in enumerate(NR_MCS):
        row = [by_p[p][i] for p in PILOT_CHOICES]
        assert all(v >= perfect[i] - 1.25 for v in row if not math.isnan(v)), (name, perfect[i], row)
    # on average over the set, pilot CSI costs SNR, less with more pilots (2: ~2 dB, 8: ~0.4 dB)
    loss = {p: [v - perfect[i] for i, v in enumerate(by_p[p][:10])] for p in PILOT_CHOICES}  # QPSK .. 64qam-666
    mean_loss = [sum(loss[p]) / len(loss[p]) for p in PILOT_CHOICES]
    assert mean_loss[0] > mean_loss[1] > mean_loss[2] > 0.0 and mean_loss[0] > 1.0, mean_loss
    # where waterfalls are steep (QPSK) every density loses, and 2 pilots at -5 dB (estimate error 60 % of
    # E|h|^2) lose dB
    for p in PILOT_CHOICES:
        assert all(v > perfect[i] + 0.2 for i, v in enumerate(by_p[p][:5])), (p, by_p[p][:5], perfect[:5])
    assert all(a > b for a, b in zip(by_p[2][:5], by_p[8][:5])) and by_p[2][0] > perfect[0] + 3.0
    assert not (tmp_path / "cache").exists()


# -- pilot CSI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, 8])
def test_pilot_csi_error_is_counted_as_noise(p):
    """ZF with the pilots' LMMSE estimate: the measured error power per symbol over its predicted
    N0_eff = (N0_hat + s2) / |h_hat|^2 is 1, and E[1 / N0_eff] = (1 - s2) / (N0 + s2) with
    s2 = (N0 / P) / (1 + N0 / P) (Rayleigh prior, P unit pilots per block); 32 x 4096 symbols."""
    g = _gen(p)
    x = torch.polar(torch.ones(32, 4096), 2 * torch.pi * torch.rand(32, 4096, generator=g))
    ray = fading.RayleighBlockFading(coherence=16)
    x_hat, nv = through_channel(x, ray, 5.0, generator=g, pilots=PilotLayout(p, coherence=16))
    assert x_hat.shape == nv.shape == x.shape
    assert float(((x_hat - x).abs().pow(2) / nv).mean()) == pytest.approx(1.0, rel=0.05)
    n0 = 10 ** (-5.0 / 10)
    s2 = (n0 / p) / (1 + n0 / p)
    assert float((1 / nv).mean()) == pytest.approx((1 - s2) / (n0 + s2), rel=0.05)
    # with repetition the copies' estimates are combined too (MRC): the prediction still holds
    x_hat, nv = through_channel(x[:8], ray, 5.0, generator=g, repeat=2, pilots=PilotLayout(p, coherence=16))
    assert float(((x_hat - x[:8]).abs().pow(2) / nv).mean()) == pytest.approx(1.0, rel=0.08)


def test_pilot_tables_have_their_own_key_file_and_resume(tmp_path):
    ray = fading.RayleighBlockFading(coherence=16)
    two = PilotLayout(2, coherence=16)
    assert link_key(ray) == "rayleigh(coherence=16,signal_power=1.0)" and link_key(ray, two) == link_key(ray) + "+pilots=2"
    assert table_file_name(ray, two).startswith("rayleigh-p2-") and table_file_name(ray, two) != table_file_name(ray)
    with pytest.raises(ValueError, match="coherence"):
        link_key(ray, PilotLayout(2, coherence=8))
    cfg = CalibrationConfig(snr_grid=(0.0, 10.0, 30.0), target_block_errors=4, max_codewords=8, pilot_codewords=4)
    lines: list[str] = []
    out = calibrate_all([ray], ["qpsk-1/2"], cfg, lines.append, out_dir=tmp_path, k=32, pilots_per_block=(2, 4))
    assert sorted(out) == [link_key(ray) + "+pilots=2", link_key(ray) + "+pilots=4"] and len(lines) == 2
    assert "rayleigh+pilots=2 qpsk-1/2" in lines[0]
    assert _files(tmp_path) == sorted([table_file_name(ray, two), table_file_name(ray, PilotLayout(4, coherence=16))])
    meta, tables = read_table_file(tmp_path / table_file_name(ray, two))
    assert meta["csi"] == "pilot" and meta["pilots_per_block"] == 2 and tables[0].channel == link_key(ray, two)
    assert shipped_table("qpsk-1/2", ray, k=32, folder=tmp_path, pilots=two) == tables[0]
    assert shipped_table("qpsk-1/2", ray, k=32, folder=tmp_path) is None  # no perfect-CSI table there
    again = calibrate_all([ray], ["qpsk-1/2"], cfg, lines.append, out_dir=tmp_path, k=32, pilots_per_block=2)
    assert len(lines) == 2 and again[link_key(ray, two)] == tables  # resumed, nothing simulated
    with pytest.raises(ValueError, match="pilots_per_block"):
        calibrate_all([ray], ["qpsk-1/2"], cfg, out_dir=tmp_path, k=32, pilots_per_block=1)


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
    assert math.isfinite(ratio)
