import json

import numpy as np
import pytest
import torch

from genscom.channels.awgn import AWGNChannel
from genscom.coding.link import (
    MCS,
    MCS_TABLE,
    CalibrationConfig,
    DigitalLink,
    calibrate,
    channel_uses_for_bits,
    get_mcs,
    select_mcs,
    simulate_coded,
)




def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_mcs_table_and_errors():
    assert len(MCS_TABLE) == 9
    assert set(MCS_TABLE) == {f"{m}-{r}" for m in ("qpsk", "16qam", "64qam") for r in ("1/3", "1/2", "2/3")}
    eff = [m.spectral_efficiency for m in MCS_TABLE.values()]
    assert eff == sorted(eff)
    m = get_mcs("16QAM-2/3")
    assert m == MCS(4, "2/3") and m.order == 16 and m.name == "16qam-2/3" and abs(m.spectral_efficiency - 8 / 3) < 1e-12
    with pytest.raises(ValueError, match="qpsk-1/3.*64qam-2/3"):
        get_mcs("qpsk-3/4")
    with pytest.raises(ValueError, match="2 \\(QPSK\\), 4 \\(16-QAM\\) or 6"):
        MCS(3, "1/2")
    with pytest.raises(ValueError, match="1/3, 1/2, 2/3"):
        MCS(2, 0.75)
    with pytest.raises(ValueError, match="known MCS"):
        DigitalLink("8psk-1/2", AWGNChannel())


def test_channel_uses_hand_cases():
    assert channel_uses_for_bits(0, "qpsk-1/2") == 0
    assert channel_uses_for_bits(1, "qpsk-1/2") == 1024  # one codeword: 2048 bits / 2
    assert channel_uses_for_bits(1024, "qpsk-1/2") == 1024
    assert channel_uses_for_bits(1025, "qpsk-1/2") == 2048  # second codeword, zero padded
    assert channel_uses_for_bits(3000, "16qam-2/3") == 3 * 384  # 1536 / 4
    assert channel_uses_for_bits(2048, "64qam-1/3") == 2 * 512  # 3072 / 6
    assert channel_uses_for_bits(10, "64qam-1/2") == 342  # n rounded to 2052 = 342 * 6
    assert channel_uses_for_bits(300, MCS(2, "1/3"), k=128) == 3 * 192
    with pytest.raises(ValueError, match="n_bits"):
        channel_uses_for_bits(-1, "qpsk-1/2")


@pytest.mark.parametrize("mcs", ["qpsk-1/3", "16qam-1/2", "64qam-2/3"])
def test_round_trip_high_snr_fails_low_snr(mcs):
    link = DigitalLink(mcs, AWGNChannel(), fidelity="full")
    bits = torch.randint(0, 2, (2, 700), generator=_gen(1)).float()
    hi = link.send_bits(bits, 30.0, generator=_gen(2))
    assert hi.fidelity == "full" and hi.mcs.name == mcs
    assert torch.equal(hi.bits_hat, bits) and hi.block_errors.tolist() == [0, 0] and hi.bit_errors.sum() == 0
    assert hi.channel_uses.tolist() == [channel_uses_for_bits(700, mcs)] * 2
    lo = link.send_bits(bits, -8.0, generator=_gen(3))
    assert lo.block_errors.tolist() == [1, 1] and lo.bler == 1.0  # "a codeword that fails leaves its bits wrong"
    assert int(lo.bit_errors.sum()) == int((lo.bits_hat != bits).sum()) > 0


def test_rayleigh_link_round_trip_perfect_csi():
    fading = pytest.importorskip("genscom.channels.fading")
    link = DigitalLink("16qam-1/2", fading.RayleighBlockFading(coherence=8), k=256, fidelity="full")
    bits = torch.randint(0, 2, (3, 500), generator=_gen(4)).float()
    assert torch.equal(link.send_bits(bits, 35.0, generator=_gen(5)).bits_hat, bits)
    assert link.send_bits(bits, -5.0, generator=_gen(6)).block_errors.sum() > 0


def test_send_bytes_preserves_lengths_and_counts_uses():
    payloads = [b"", b"a", bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))]
    link = DigitalLink("qpsk-1/2", AWGNChannel(), k=256)
    hi = link.send_bytes(payloads, 25.0, generator=_gen(7))
    assert hi.received == payloads
    assert hi.channel_uses.dtype == torch.int64
    assert hi.channel_uses.tolist() == [channel_uses_for_bits(8 * len(p), "qpsk-1/2", k=256) for p in payloads]
    assert hi.n_blocks.tolist() == [0, 1, 10]
    lo = link.send_bytes(payloads, -10.0, generator=_gen(8))
    assert [len(r) for r in lo.received] == [len(p) for p in payloads]
    assert lo.received[2] != payloads[2] and lo.bit_errors[2] > 0 and lo.block_errors.tolist() == [0, 1, 10]
    with pytest.raises(TypeError, match="list of bytes"):
        link.send_bytes(b"abc", 5.0)


def test_abstraction_matches_full_simulation(tmp_path):
    """BLER of the calibrated abstraction within 0.12 of full simulation (each ~400 codewords, std ~0.025)."""
    cfg = CalibrationConfig(snr_grid=(-1.0, 1.0, 3.0), n_codewords=400, pilot_codewords=32, cache_dir=str(tmp_path))
    ch = AWGNChannel()
    full = DigitalLink("qpsk-1/2", ch, k=128, fidelity="full")
    abst = DigitalLink("qpsk-1/2", ch, k=128, fidelity="abstract", calibration=cfg)
    table = abst.table("qpsk-1/2")
    assert 0.2 < table.bler_at(1.0) < 0.8  # the waterfall, where the check means something
    bits = torch.randint(0, 2, (400, 128), generator=_gen(9)).float()  # a small stream of 400 codewords
    rf = full.send_bits(bits, 1.0, generator=_gen(10))
    ra = abst.send_bits(bits, 1.0, generator=_gen(11))
    assert rf.fidelity == "full" and ra.fidelity == "abstract"
    assert abs(rf.bler - ra.bler) < 0.12, (rf.bler, ra.bler)
    # failed codewords carry a similar number of wrong bits; clean ones none
    per_fail_f = float(rf.bit_errors.sum()) / max(1, int(rf.block_errors.sum()))
    per_fail_a = float(ra.bit_errors.sum()) / max(1, int(ra.block_errors.sum()))
    assert abs(per_fail_a / per_fail_f - 1) < 0.3, (per_fail_f, per_fail_a)
    assert bool((ra.bit_errors[ra.block_errors == 0] == 0).all()) and bool((ra.bit_errors[ra.block_errors > 0] > 0).all())
    # cached as JSON; a second call reads it back; a different k is another entry
    files = list((tmp_path / "link_calibration").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["k"] == 128
    again = calibrate("qpsk-1/2", ch, config=cfg, k=128)
    assert again.bler == table.bler and again.error_counts == table.error_counts
    # fidelity="auto" switches on the number of codewords
    auto = DigitalLink("qpsk-1/2", ch, k=128, fidelity="auto", max_full_codewords=4, calibration=cfg)
    assert auto.send_bits(bits[:4], 1.0, generator=_gen(12)).fidelity == "full"
    assert auto.send_bits(bits[:5], 1.0, generator=_gen(12)).fidelity == "abstract"


def test_adaptive_mcs_is_monotone_in_snr(tmp_path):
    cfg = CalibrationConfig(snr_grid=(-4.0, 0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0), n_codewords=24, pilot_codewords=8,
                            cache_dir=str(tmp_path))
    link = DigitalLink("adaptive", AWGNChannel(), k=128, calibration=cfg)
    chosen = [link.select(s) for s in np.arange(-6.0, 27.0, 1.0)]
    eff = [m.spectral_efficiency for m in chosen]
    assert eff == sorted(eff), [m.name for m in chosen]
    assert chosen[0].name == "qpsk-1/3" and chosen[-1].name == "64qam-2/3"
    assert len(set(eff)) >= 4
    bits = torch.randint(0, 2, (2, 256), generator=_gen(13)).float()
    res = link.send_bits(bits, 26.0, generator=_gen(14))
    assert res.mcs.name == "64qam-2/3" and torch.equal(res.bits_hat, bits)
    assert res.channel_uses.tolist() == [channel_uses_for_bits(256, "64qam-2/3", k=128)] * 2
    tables = {n: link.table(n) for n in MCS_TABLE}
    assert select_mcs(-30.0, tables).name == "qpsk-1/3"  # nothing meets the target: most robust


def test_simulate_coded_and_bad_arguments():
    st = simulate_coded("qpsk-1/3", AWGNChannel(), 10.0, 4, generator=_gen(15), k=128)
    assert st.bler == 0.0 and st.ber == 0.0 and st.n_codewords == 4
    link = DigitalLink("qpsk-1/2", AWGNChannel(), k=128)
    with pytest.raises(ValueError, match="fidelity"):
        DigitalLink("qpsk-1/2", AWGNChannel(), fidelity="fast")
    with pytest.raises(ValueError, match="csi"):
        DigitalLink("qpsk-1/2", AWGNChannel(), csi="estimated")
    with pytest.raises(TypeError, match="Channel"):
        DigitalLink("qpsk-1/2", "awgn")
    with pytest.raises(ValueError, match="one number"):
        link.send_bits(torch.zeros(2, 10), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\[B, n_bits\]"):
        link.send_bits(torch.zeros(10), 1.0)
    with pytest.raises(ValueError, match="finite"):
        link.send_bits(torch.zeros(1, 10), float("nan"))


def test_table_interpolation():
    from genscom.coding.link import CalibrationTable

    t = CalibrationTable(mcs="qpsk-1/2", channel="awgn()", k=128, n=256, num_iter=20, snr_db=[0.0, 1.0, 2.0, 3.0],
                         bler=[1.0, 0.1, 0.0, 0.0], residual_ber=[0.3, 0.1, 0.0, 0.0], n_codewords=[32, 100, 100, 0],
                         error_counts=[[40], [12], [], []], source=["pilot", "simulated", "simulated", "extrapolated"])
    assert t.bler_at(-5.0) == 1.0 and t.bler_at(0.0) == 1.0 and t.bler_at(1.0) == 0.1
    assert abs(t.bler_at(0.5) - 10 ** -0.5) < 1e-9  # log-linear
    assert 0.005 < t.bler_at(1.5) < 0.1 and t.bler_at(2.0) == 0.0 and t.bler_at(10.0) == 0.0
    assert t.error_count_pool(2.9) == [12] and abs(t.residual_ber_at(0.5) - 0.2) < 1e-9


# -- symbol repetition + maximum-ratio combining --------------------------------------------------
def test_repetition_mrc_gives_the_r_fold_snr_gain_on_awgn():
    from genscom.coding.link import _through_channel

    x = torch.polar(torch.ones(4, 25_000), 2 * torch.pi * torch.rand(4, 25_000, generator=_gen(0)))
    n0 = 10 ** (-3.0 / 10)  # 3 dB
    for r in (1, 2, 4):
        x_hat, nv = _through_channel(x, AWGNChannel(), 3.0, generator=_gen(r), repeat=r)
        assert x_hat.shape == x.shape == nv.shape
        assert torch.allclose(nv, torch.full_like(nv, n0 / r))
        measured = float((x_hat - x).abs().pow(2).mean())
        assert measured == pytest.approx(n0 / r, rel=0.03), r  # 1e5 symbols: ~0.5% std


def test_repetition_mrc_on_rayleigh_matches_its_effective_noise():
    fading = pytest.importorskip("genscom.channels.fading")
    from genscom.coding.link import _through_channel

    x = torch.polar(torch.ones(8, 4096), 2 * torch.pi * torch.rand(8, 4096, generator=_gen(1)))
    x_hat, nv = _through_channel(x, fading.RayleighBlockFading(coherence=16), 5.0, generator=_gen(2), repeat=3)
    ratio = float(((x_hat - x).abs().pow(2) / nv).mean())  # per-symbol error power over its predicted N0_eff
    assert ratio == pytest.approx(1.0, rel=0.05)
    assert float(nv.std()) > 0  # fading: per-symbol combined SNR varies


def test_link_repetition_counts_uses_lowers_bler_and_simulates_fading(tmp_path):
    bits = torch.randint(0, 2, (200, 12), generator=_gen(3)).float()
    one = DigitalLink("qpsk-1/3", AWGNChannel(), k=12, fidelity="full")
    four = DigitalLink("qpsk-1/3", AWGNChannel(), k=12, fidelity="full", repeat=4)
    r1, r4 = one.send_bits(bits, -4.0, generator=_gen(4)), four.send_bits(bits, -4.0, generator=_gen(4))
    assert r4.channel_uses.tolist() == [4 * u for u in r1.channel_uses.tolist()] == [4 * 18] * 200
    assert four.channel_uses_for_bits(12) == channel_uses_for_bits(12, "qpsk-1/3", k=12, repeat=4) == 72
    assert r1.bler > 0.3 and r4.bler < 0.5 * r1.bler, (r1.bler, r4.bler)
    fading = pytest.importorskip("genscom.channels.fading")
    link = DigitalLink("qpsk-1/3", fading.RayleighBlockFading(coherence=16), k=12, fidelity="abstract", repeat=2)
    assert link.send_bits(bits[:4], 10.0, generator=_gen(5)).fidelity == "full"
    with pytest.raises(ValueError, match="repeat"):
        DigitalLink("qpsk-1/3", AWGNChannel(), repeat=0)
    with pytest.raises(ValueError, match="repeat"):
        channel_uses_for_bits(12, "qpsk-1/3", repeat=1.5)
