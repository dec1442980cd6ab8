"""DigitalLink (LDPC + QAM over a channel): round trips, channel uses, abstraction, adaptive MCS, repetition."""

import json

import numpy as np
import pytest
import torch

from genscom.channels import fading
from genscom.channels.awgn import AWGNChannel
from genscom.channels.sensing import PilotLayout
from genscom.coding.calibration import CalibrationConfig, bler_interval, calibrate
from genscom.coding.link import DigitalLink
from genscom.coding.mcs import LinkPlan, channel_uses_for_bits, choose_mcs, get_mcs, plan_fixed


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)

@pytest.mark.parametrize("mcs", ["qpsk-1/3", "16qam-1/2", "64qam-2/3"])
def test_round_trip_high_snr_fails_low_snr(mcs):
    link = DigitalLink(mcs, AWGNChannel(), fidelity="full")
    bits = torch.randint(0, 2, (2, 700), generator=_gen(1)).float()
    hi = link.send_bits(bits, 30.0, generator=_gen(2))
    assert hi.fidelity == "full" and hi.mcs.name == mcs and not hi.crc  # a fixed MCS: the legacy link, no CRC
    assert torch.equal(hi.bits_hat, bits) and hi.block_errors.tolist() == [0, 0] and hi.bit_errors.sum() == 0
    assert hi.codeword_failed.shape == (2, 1) and not hi.codeword_failed.any()
    assert hi.channel_uses.tolist() == [channel_uses_for_bits(700, mcs)] * 2
    lo = link.send_bits(bits, -8.0, generator=_gen(3))
    assert lo.block_errors.tolist() == [1, 1] and lo.bler == 1.0  # "a codeword that fails leaves its bits wrong"
    assert lo.codeword_failed.tolist() == [[True], [True]]
    assert int(lo.bit_errors.sum()) == int((lo.bits_hat != bits).sum()) > 0


def test_rayleigh_link_round_trip_perfect_csi():
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
    cfg = CalibrationConfig(snr_grid=(-1.0, 1.0, 3.0), target_block_errors=400, max_codewords=400, pilot_codewords=32,
                            cache_dir=str(tmp_path))
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


SMALL_SET = ("qpsk-120/1024", "qpsk-449/1024", "16qam-490/1024", "64qam-666/1024")


def _adaptive(tmp_path, **kw) -> DigitalLink:
    cfg = CalibrationConfig(snr_grid=(-10.0, -6.0, -2.0, 2.0, 6.0, 10.0, 14.0, 18.0, 22.0), target_block_errors=8,
                            max_codewords=16, pilot_codewords=8, cache_dir=str(tmp_path))
    return DigitalLink("adaptive", AWGNChannel(), k=128, calibration=cfg, mcs_set=SMALL_SET, **kw)


def test_adaptive_plan_is_monotone_in_snr_and_counts_what_it_sends(tmp_path):
    link = _adaptive(tmp_path)
    assert link.crc and link.payload_bits == 104  # adaptive links carry a CRC24B per codeword by default
    plans = [link.plan(200, s) for s in np.arange(-14.0, 27.0, 2.0)]
    eff = [p.mcs.spectral_efficiency / p.repeat for p in plans]
    assert eff == sorted(eff), [(p.mcs.name, p.repeat) for p in plans]
    assert plans[0].mcs.name == "qpsk-120/1024" and plans[0].repeat > 1  # below the lowest MCS: repetition
    assert plans[-1].mcs.name == "64qam-666/1024" and plans[-1].repeat == 1
    for p in plans:
        assert p.n_codewords == 2 and p.channel_uses == channel_uses_for_bits(200, p.mcs, k=128, crc=True, repeat=p.repeat)
        tables = {n: link.table(n) for n in SMALL_SET}
        assert (p.mcs, p.repeat) == choose_mcs(p.snr_db_estimate, tables, n_codewords=2)[:2]
        assert p.p_success >= 0.9 or p.repeat == 64
    # deliver at the plan made at transmit time, whatever the true SNR
    bits = torch.randint(0, 2, (2, 200), generator=_gen(13)).float()
    hi = link.plan(200, 26.0)
    res = link.send_bits(bits, 26.0, plans=[hi, hi], generator=_gen(14))
    assert res.mcs.name == "64qam-666/1024" == res.mcs_used and torch.equal(res.bits_hat, bits)
    assert res.channel_uses.tolist() == [hi.channel_uses] * 2 and res.plans == [hi, hi] and res.crc
    low = link.send_bits(bits, 0.0, plans=hi, generator=_gen(15))  # the estimate was wrong: it fails, flagged
    assert low.block_errors.tolist() == [2, 2] and low.codeword_failed.all() and low.failed.all()
    # without plans, the call plans at snr_db_estimate (default: the true SNR)
    rob = link.send_bits(bits, 26.0, snr_db_estimate=-14.0, generator=_gen(16))
    assert rob.mcs.name == "qpsk-120/1024" and int(rob.repeat[0]) > 1 and torch.equal(rob.bits_hat, bits)
    with pytest.raises(ValueError, match="plans\\[0\\] was made for 100 bits"):
        link.send_bits(bits, 26.0, plans=[link.plan(100, 26.0)] * 2)
    with pytest.raises(ValueError, match="snr_db_estimate"):
        link.plan(200)


# -- pilot-estimated CSI ------------------------------------------------------------------------------
RAY16 = fading.RayleighBlockFading(coherence=16)


def test_pilots_are_counted_in_plan_channel_uses():
    two, four = PilotLayout(2, coherence=16), PilotLayout(4, coherence=16)
    # qpsk-1/2, k = 1024: one codeword is 2048 coded bits on 1024 symbols; 14 (12) data symbols per block
    assert plan_fixed(1000, "qpsk-1/2").channel_uses == 1024
    assert plan_fixed(1000, "qpsk-1/2", pilots=two).channel_uses == 1024 + 2 * 74  # ceil(1024 / 14) = 74 blocks
    assert plan_fixed(1000, "qpsk-1/2", pilots=four).channel_uses == 1024 + 4 * 86  # ceil(1024 / 12) = 86
    # repeated copies are data symbols of the frame; a CRC adds a codeword here (1001 > 1000 payload bits)
    assert plan_fixed(1000, "qpsk-1/2", pilots=two, repeat=3).channel_uses == 3072 + 2 * 220
    assert plan_fixed(1001, "qpsk-1/2", pilots=two, crc=True).channel_uses == 2048 + 2 * 147
    assert plan_fixed(0, "qpsk-1/2", pilots=two).channel_uses == 0
    assert channel_uses_for_bits(1000, "qpsk-1/2", pilots=two) == two.frame_length(1024)
    p = plan_fixed(1000, "qpsk-1/2", pilots=two)
    assert p.pilots == two and p.csi == "pilot" and plan_fixed(1000, "qpsk-1/2").csi == "perfect"
    # the link: pilots= per plan, or its csi="pilot" default (blocks aligned with the channel's coherence)
    link = DigitalLink("qpsk-1/2", RAY16, fidelity="full")
    assert link.plan(1000).pilots is None and link.plan(1000, pilots=two) == p
    pil = DigitalLink("qpsk-1/2", RAY16, csi="pilot", pilots_per_block=4, fidelity="full")
    assert pil.plan(1000) == plan_fixed(1000, "qpsk-1/2", pilots=four) and pil.plan(1000).channel_uses == 1368
    assert DigitalLink("qpsk-1/2", AWGNChannel(), csi="pilot").plan(1000).pilots is None  # AWGN: h = 1 is known
    # what is sent is what was planned
    bits = torch.randint(0, 2, (2, 1000), generator=_gen(50)).float()
    res = link.send_bits(bits, 30.0, plans=p, generator=_gen(51))
    assert res.channel_uses.tolist() == [1172, 1172] and res.plans == [p, p] and torch.equal(res.bits_hat, bits)
    forged = LinkPlan(mcs=p.mcs, repeat=1, n_bits=1000, n_codewords=1, channel_uses=1024, pilots=two)
    with pytest.raises(ValueError, match="plans\\[0\\]"):
        link.send_bits(bits, 30.0, plans=forged)
    with pytest.raises(TypeError, match="PilotLayout"):
        link.plan(1000, pilots=2)
    with pytest.raises(ValueError, match="pilots_per_block"):
        DigitalLink("qpsk-1/2", RAY16, csi="pilot", pilots_per_block=1)


def test_pilot_csi_loses_against_perfect_csi_at_the_waterfall():
    """Same codewords, same seed, 400 codewords each: with 2 pilots per block of 16 the LMMSE error
    (1 / (1 + 2 SNR) of E|h|^2) costs dB in the waterfall; the 95 % Clopper-Pearson intervals do not overlap."""
    bits = torch.randint(0, 2, (400, 128), generator=_gen(52)).float()
    perfect = DigitalLink("qpsk-1/2", RAY16, k=128, fidelity="full").send_bits(bits, 4.0, generator=_gen(53))
    pilot = DigitalLink("qpsk-1/2", RAY16, k=128, fidelity="full", csi="pilot").send_bits(bits, 4.0,
                                                                                          generator=_gen(53))
    assert perfect.channel_uses.tolist() == [128] * 400 and pilot.channel_uses.tolist() == [128 + 2 * 10] * 400
    _, hi_p = bler_interval(int(perfect.block_errors.sum()), 400)
    lo_e, _ = bler_interval(int(pilot.block_errors.sum()), 400)
    assert 0.05 < perfect.bler < 0.8 and pilot.bler > perfect.bler and lo_e > hi_p, (perfect.bler, pilot.bler)
    # more pilots: a better estimate, fewer failures (same draws otherwise)
    eight = DigitalLink("qpsk-1/2", RAY16, k=128, fidelity="full", csi="pilot", pilots_per_block=8)
    assert eight.send_bits(bits, 4.0, generator=_gen(53)).bler < pilot.bler


def test_abstraction_with_a_pilot_table_matches_full_simulation(tmp_path):
    """The pilot-CSI table (its own key) drives the abstraction; its BLER agrees with full simulation of the
    same link at one waterfall point within their 95 % Clopper-Pearson intervals (400 codewords each)."""
    two = PilotLayout(2, coherence=16)
    cfg = CalibrationConfig(snr_grid=(2.0, 5.0, 8.0), target_block_errors=400, max_codewords=400, pilot_codewords=32,
                            cache_dir=str(tmp_path))
    table = calibrate("qpsk-1/2", RAY16, config=cfg, k=128, pilots=two)
    assert table.channel == "rayleigh(coherence=16,signal_power=1.0)+pilots=2"
    assert 0.1 < table.bler_at(5.0) < 0.9  # the waterfall, where the check means something
    full = DigitalLink("qpsk-1/2", RAY16, k=128, fidelity="full")
    abst = DigitalLink("qpsk-1/2", RAY16, k=128, fidelity="abstract", calibration=cfg)
    assert abst.table("qpsk-1/2", pilots=two) == table
    bits = torch.randint(0, 2, (400, 128), generator=_gen(54)).float()
    rf = full.send_bits(bits, 5.0, plans=full.plan(128, pilots=two), generator=_gen(55))
    ra = abst.send_bits(bits, 5.0, plans=abst.plan(128, pilots=two), generator=_gen(56))
    assert rf.fidelity == "full" and ra.fidelity == "abstract"
    lo_f, hi_f = bler_interval(int(rf.block_errors.sum()), 400)
    lo_a, hi_a = bler_interval(int(ra.block_errors.sum()), 400)
    assert lo_f <= hi_a and lo_a <= hi_f and abs(rf.bler - ra.bler) < 0.12, (rf.bler, ra.bler)
    # the perfect-CSI table of the same link is another table (and does better)
    perfect = calibrate("qpsk-1/2", RAY16, config=cfg, k=128)
    assert perfect.channel == "rayleigh(coherence=16,signal_power=1.0)" and perfect.bler_at(5.0) < table.bler_at(5.0)


def test_a_missing_pilot_table_says_how_to_make_it(tmp_path):
    rician = fading.RicianBlockFading(coherence=16)
    cfg = CalibrationConfig(cache_dir=str(tmp_path), use_shipped=False)
    two = PilotLayout(2, coherence=16)
    abst = DigitalLink("qpsk-1/2", rician, k=128, fidelity="abstract", calibration=cfg)
    bits = torch.zeros(2, 128)
    with pytest.raises(ValueError, match=r"no calibrated table of qpsk-1/2 on rician\(.*\)\+pilots=2.*calibrate\("
                                         r".*csi='perfect'"):
        abst.send_bits(bits, 5.0, plans=abst.plan(128, pilots=two))
    adaptive = DigitalLink("adaptive", rician, k=128, calibration=cfg)
    with pytest.raises(ValueError, match="pilots_per_block=2.*csi='perfect'"):
        adaptive.plan(128, 5.0, pilots=two)
    assert not list(tmp_path.rglob("*.json"))  # nothing was simulated behind the user's back
    # full simulation needs no table; pilots whose blocks are not the channel's have no table key
    full = DigitalLink("qpsk-1/2", rician, k=128, fidelity="full")
    assert full.send_bits(bits, 30.0, plans=full.plan(128, pilots=two), generator=_gen(57)).bler == 0.0
    with pytest.raises(ValueError, match="coherence"):
        abst.table("qpsk-1/2", pilots=PilotLayout(2, coherence=8))


def test_fixed_link_plan_is_its_mcs_whatever_the_estimate():
    link = DigitalLink("16qam-1/2", AWGNChannel(), k=128, repeat=2)
    p = link.plan(300, -20.0)
    assert isinstance(p, LinkPlan) and p == plan_fixed(300, "16qam-1/2", k=128, repeat=2) and link.plan(300) == p
    assert p.channel_uses == link.channel_uses_for_bits(300) == 3 * 64 * 2


def test_per_item_mcs_depends_on_the_payload_length(tmp_path):
    link = _adaptive(tmp_path)
    snr = next(s for s in np.arange(-4.0, 20.0, 0.25) if link.plan(100, s).mcs != link.plan(50 * 104, s).mcs)
    short, long = link.plan(100, snr), link.plan(50 * 104, snr)  # 1 codeword vs 50: more robust for the long one
    assert long.mcs.spectral_efficiency < short.mcs.spectral_efficiency
    payloads = [bytes(13), bytes(50 * 13)]
    res = link.send_bytes(payloads, snr + 30.0, snr_db_estimate=snr, generator=_gen(17))
    assert [m.name for m in res.mcs_per_item] == [short.mcs.name, long.mcs.name]
    assert res.channel_uses.tolist() == [short.channel_uses, long.channel_uses] and res.received == payloads
    assert res.codeword_failed.shape == (2, 50)


def test_codeword_failed_agrees_with_block_errors_and_crc_is_counted(tmp_path):
    g = _gen(40)
    bits = torch.randint(0, 2, (6, 300), generator=g).float()
    bits[:3, 200:] = 0
    for crc in (True, False):
        link = DigitalLink("qpsk-1/2", AWGNChannel(), k=128, fidelity="full", crc=crc)
        kp = 104 if crc else 128
        res = link.send_bits(bits, 1.5, generator=g)  # the waterfall: some codewords fail, some do not
        n_cw = -(-300 // kp)
        assert res.codeword_failed.shape == (6, n_cw) and res.codeword_failed.dtype == torch.bool
        assert res.codeword_failed.sum(1).tolist() == res.block_errors.tolist()
        assert 0 < int(res.block_errors.sum()) < 6 * n_cw
        assert res.channel_uses.tolist() == [channel_uses_for_bits(300, "qpsk-1/2", k=128, crc=crc)] * 6
        assert link.channel_uses_for_bits(300) == n_cw * 128
        # a failed codeword's payload bits are wrong (they are not erased by the link), clean ones are right
        for i in range(6):
            for j in range(n_cw):
                sl = slice(j * kp, min((j + 1) * kp, 300))
                assert bool((res.bits_hat[i, sl] != bits[i, sl]).any()) == bool(res.codeword_failed[i, j]) or crc
    # items of different lengths: False beyond an item's codewords
    link = DigitalLink("qpsk-1/2", AWGNChannel(), k=128, fidelity="full", crc=True)
    res = link.send_bytes([b"", b"x" * 13, b"y" * 40], -8.0, generator=g)
    assert res.n_blocks.tolist() == [0, 1, 4] and res.codeword_failed.shape == (3, 4)
    assert res.codeword_failed.tolist() == [[False] * 4, [True, False, False, False], [True] * 4]
    # the abstraction flags its drawn failures the same way
    cfg = CalibrationConfig(snr_grid=(0.0, 1.5, 3.0), target_block_errors=20, max_codewords=64, cache_dir=str(tmp_path))
    abst = DigitalLink("qpsk-1/2", AWGNChannel(), k=128, fidelity="abstract", crc=True, calibration=cfg)
    res = abst.send_bits(bits, 1.0, generator=g)
    assert res.fidelity == "abstract" and res.codeword_failed.sum(1).tolist() == res.block_errors.tolist()
    assert res.codeword_failed.shape == (6, 3)


def test_bad_arguments():
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

def test_link_repetition_counts_uses_lowers_bler_and_simulates_fading(tmp_path):
    bits = torch.randint(0, 2, (200, 12), generator=_gen(3)).float()
    one = DigitalLink("qpsk-1/3", AWGNChannel(), k=12, fidelity="full")
    four = DigitalLink("qpsk-1/3", AWGNChannel(), k=12, fidelity="full", repeat=4)
    r1, r4 = one.send_bits(bits, -4.0, generator=_gen(4)), four.send_bits(bits, -4.0, generator=_gen(4))
    assert r4.channel_uses.tolist() == [4 * u for u in r1.channel_uses.tolist()] == [4 * 18] * 200
    assert four.channel_uses_for_bits(12) == channel_uses_for_bits(12, "qpsk-1/3", k=12, repeat=4) == 72
    assert r1.bler > 0.3 and r4.bler < 0.5 * r1.bler, (r1.bler, r4.bler)
    # on fading the copies see other fades: an abstract link reads the calibrated table of r copies (its own
    # simulation), which must show a real gain over one copy
    cfg = CalibrationConfig(cache_dir=str(tmp_path), max_codewords=200, target_block_errors=20)
    ray = fading.RayleighBlockFading(coherence=16)
    link = DigitalLink("qpsk-1/3", ray, k=12, fidelity="abstract", repeat=2, calibration=cfg)
    res = link.send_bits(bits[:4], 10.0, generator=_gen(5))
    assert res.fidelity == "abstract" and res.channel_uses.tolist() == [2 * 18] * 4
    t1, t2 = link.table("qpsk-1/3"), link.table("qpsk-1/3", repeat=2)
    assert t2.channel.endswith("+repeat=2") and not t1.channel.endswith("+repeat=2")
    assert t2.snr_at_bler(0.1) < t1.snr_at_bler(0.1) - 1.5  # at least half the 3 dB of the energy doubling
    with pytest.raises(ValueError, match="repeat"):
        DigitalLink("qpsk-1/3", AWGNChannel(), repeat=0)
    with pytest.raises(ValueError, match="repeat"):
        channel_uses_for_bits(12, "qpsk-1/3", repeat=1.5)


# -- one link, many channels --------------------------------------------------------------------------
def test_link_without_a_default_channel_takes_one_per_call():
    link = DigitalLink("qpsk-1/2", k=128, fidelity="full")
    bits = torch.randint(0, 2, (2, 100), generator=_gen(20)).float()
    awgn = link.send_bits(bits, 30.0, channel=AWGNChannel(), generator=_gen(21))
    ray = link.send_bits(bits, 40.0, channel=fading.RayleighBlockFading(coherence=8), generator=_gen(22))
    assert torch.equal(awgn.bits_hat, bits) and torch.equal(ray.bits_hat, bits)
    assert link.code(get_mcs("qpsk-1/2")) is link.code(get_mcs("qpsk-1/2"))  # pieces built once
    with pytest.raises(ValueError, match="pass channel="):
        link.send_bits(bits, 5.0)
    with pytest.raises(TypeError, match="channel must be a genscom"):
        link.send_bytes([b"x"], 5.0, channel="awgn")


# -- the constellation helper -------------------------------------------------------------------------
@pytest.mark.parametrize("mcs", ["qpsk-1/3", "16qam-1/2", "64qam-2/3"])
def test_constellation_shape_unit_energy_and_round_trip(mcs):
    link = DigitalLink(mcs, AWGNChannel(), k=512)
    m = get_mcs(mcs)
    payload = bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8))  # 4000 bits: 8 codewords
    n_sym = channel_uses_for_bits(512, mcs, k=512)
    one = link.constellation(payload, 40.0, generator=_gen(30))
    assert one.mcs == m and one.bits.shape == (1, 512) and one.sent.shape == one.received.shape == (n_sym,)
    assert one.sent.dtype == torch.complex64 and one.noise_var.shape == (n_sym,)
    every = link.constellation(payload, 40.0, max_codewords=None, generator=_gen(30))
    assert every.bits.shape == (8, 512) and every.sent.shape == (8 * n_sym,)
    energy = every.sent[: 7 * n_sym].abs().pow(2).mean()  # the 7 full codewords: random-looking coded bits
    assert float(energy) == pytest.approx(1.0, abs=0.08)  # unit average energy
    assert torch.equal(every.sent[:n_sym], one.sent)  # the first codeword is the same
    # the payload's bits are the codewords' info bits, zero-padded
    sent_bits = torch.from_numpy(np.unpackbits(np.frombuffer(payload, dtype=np.uint8))).float()
    assert torch.equal(every.bits.reshape(-1)[:4000], sent_bits) and every.bits.reshape(-1)[4000:].sum() == 0
    # round trip at high SNR: demap + decode the received symbols back to the payload bits
    llr = link.qam(m).demap(every.received.reshape(8, n_sym), every.noise_var.reshape(8, n_sym))
    assert torch.equal(link.code(m).decode(llr).cpu(), every.bits)
    # the same symbols as modulate(); bits given as a 0/1 tensor map the same way
    bits, x = link.modulate(sent_bits, max_codewords=1)
    assert torch.equal(x, one.sent) and torch.equal(bits, one.bits)
    low = link.constellation(payload, -5.0, generator=_gen(31))
    assert float((low.received - low.sent).abs().pow(2).mean()) == pytest.approx(10 ** 0.5, rel=0.2)


def test_constellation_arguments():
    link = DigitalLink("adaptive", AWGNChannel(), k=128)
    with pytest.raises(ValueError, match="adaptive: pass mcs="):
        link.modulate(b"abc")
    with pytest.raises(ValueError, match="repeat must be 1 for an adaptive link"):
        DigitalLink("adaptive", AWGNChannel(), repeat=2)
    assert link.crc and not DigitalLink("qpsk-1/2").crc and DigitalLink("qpsk-1/2", crc=True).crc
    fixed = DigitalLink("qpsk-1/2", k=128)
    with pytest.raises(ValueError, match="1-D bits"):
        fixed.modulate(torch.zeros(2, 8))
    with pytest.raises(TypeError, match="bytes or a 1-D 0/1"):
        fixed.modulate([0, 1])
    with pytest.raises(ValueError, match="max_codewords"):
        fixed.modulate(b"abc", max_codewords=0)
    empty = fixed.constellation(b"", 10.0, channel=AWGNChannel())
    assert empty.sent.numel() == empty.received.numel() == 0
