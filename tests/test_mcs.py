"""The MCS table, channel-use counting (CRC included) and the adaptive choices (genscom.coding.mcs)."""

import math
from fractions import Fraction

import pytest

from genscom.channels.awgn import AWGNChannel
from genscom.coding.calibration import CalibrationTable
from genscom.coding.ldpc import coded_length
from genscom.coding.link import DigitalLink
from genscom.coding.mcs import (
    LEGACY_MCS,
    MCS,
    MCS_TABLE,
    NR_MCS,
    LinkPlan,
    channel_uses_for_bits,
    check_mcs_set,
    check_repeat,
    choose_mcs,
    codewords_for_bits,
    get_mcs,
    is_adaptive,
    list_mcs,
    payload_bits_per_codeword,
    plan_fixed,
    select_mcs,
)


def test_mcs_table_spans_the_5g_nr_range():
    assert len(NR_MCS) == 14 and len(LEGACY_MCS) == 9 and set(MCS_TABLE) == set(NR_MCS) | set(LEGACY_MCS)
    assert set(LEGACY_MCS) == {f"{m}-{r}" for m in ("qpsk", "16qam", "64qam") for r in ("1/3", "1/2", "2/3")}
    nr = [get_mcs(n) for n in NR_MCS]
    lowest, highest = nr[0], nr[-1]
    assert lowest.name == "qpsk-120/1024" and lowest.bits_per_symbol == 2 and abs(float(lowest.code_rate) - 0.12) < 0.01
    assert highest.name == "64qam-948/1024" and highest.bits_per_symbol == 6 and float(highest.code_rate) >= 0.8
    assert {m.bits_per_symbol for m in nr} == {2, 4, 6}
    for names in (list_mcs(), list(NR_MCS), list(LEGACY_MCS)):  # sorted by spectral efficiency
        eff = [get_mcs(n).spectral_efficiency for n in names]
        assert eff == sorted(eff), names
    assert list_mcs() == list(MCS_TABLE)
    # every NR entry is a TS 38.214 table-1 (Qm, R x 1024) pair
    table1 = {(2, 120), (2, 157), (2, 193), (2, 251), (2, 308), (2, 379), (2, 449), (2, 526), (2, 602), (2, 679),
              (4, 340), (4, 378), (4, 434), (4, 490), (4, 553), (4, 616), (4, 658), (6, 438), (6, 466), (6, 517),
              (6, 567), (6, 616), (6, 666), (6, 719), (6, 772), (6, 822), (6, 873), (6, 910), (6, 948)}
    assert all((m.bits_per_symbol, int(m.code_rate * 1024)) in table1 for m in nr)


def test_names_and_errors():
    m = get_mcs("16QAM-2/3")
    assert m == MCS(4, "2/3") and m.order == 16 and m.name == "16qam-2/3" and abs(m.spectral_efficiency - 8 / 3) < 1e-12
    assert MCS(4, Fraction(378, 1024)).name == "16qam-378/1024" == get_mcs(" 16qam-378/1024 ").name
    assert MCS(2, "1/2").name == "qpsk-1/2"  # legacy names stay (512/1024 is the same rate)
    with pytest.raises(ValueError, match="qpsk-120/1024.*64qam-948/1024"):
        get_mcs("qpsk-3/4")
    with pytest.raises(ValueError, match="2 \\(QPSK\\), 4 \\(16-QAM\\) or 6"):
        MCS(3, "1/2")
    with pytest.raises(ValueError, match=r"\[1/16, 948/1024\]"):
        MCS(2, 0.97)
    with pytest.raises(ValueError, match="known MCS"):
        DigitalLink("8psk-1/2", AWGNChannel())
    assert is_adaptive(" Adaptive ") and not is_adaptive("qpsk-1/2")
    assert check_mcs_set(None) == NR_MCS and check_mcs_set(["16qam-1/2", "qpsk-1/3"]) == ("qpsk-1/3", "16qam-1/2")
    with pytest.raises(ValueError, match="mcs_set"):
        check_mcs_set([])


def test_channel_uses_hand_cases():
    # the legacy MCS keep their exact coded lengths (old numbers reproduce)
    assert channel_uses_for_bits(0, "qpsk-1/2") == 0
    assert channel_uses_for_bits(1, "qpsk-1/2") == 1024  # one codeword: 2048 bits / 2
    assert channel_uses_for_bits(1024, "qpsk-1/2") == 1024
    assert channel_uses_for_bits(1025, "qpsk-1/2") == 2048  # second codeword, zero padded
    assert channel_uses_for_bits(3000, "16qam-2/3") == 3 * 384  # 1536 / 4
    assert channel_uses_for_bits(2048, "64qam-1/3") == 2 * 512  # 3072 / 6
    assert channel_uses_for_bits(10, "64qam-1/2") == 342  # n rounded to 2052 = 342 * 6
    assert channel_uses_for_bits(300, MCS(2, "1/3"), k=128) == 3 * 192
    # the new 5G NR entries: n = ceil(k / R) rounded up to whole symbols
    assert channel_uses_for_bits(1024, "qpsk-120/1024") == 8740 // 2  # ceil(1024 * 1024 / 120) = 8739 -> 8740
    assert channel_uses_for_bits(1024, "16qam-378/1024") == 2776 // 4
    assert channel_uses_for_bits(2000, "64qam-948/1024") == 2 * (1110 // 6)
    for name in NR_MCS:
        m = get_mcs(name)
        n = coded_length(1024, m.code_rate, m.bits_per_symbol)
        assert n % m.bits_per_symbol == 0 and 0 <= n - 1024 / float(m.code_rate) < m.bits_per_symbol + 1
    with pytest.raises(ValueError, match="n_bits"):
        channel_uses_for_bits(-1, "qpsk-1/2")


def test_crc_bits_are_counted():
    assert payload_bits_per_codeword(1024, crc=True) == 1000 and payload_bits_per_codeword(1024) == 1024
    assert codewords_for_bits(1000, crc=True) == 1 and codewords_for_bits(1001, crc=True) == 2
    assert channel_uses_for_bits(1000, "qpsk-1/2", crc=True) == 1024
    assert channel_uses_for_bits(1001, "qpsk-1/2", crc=True) == 2048 == channel_uses_for_bits(2000, "qpsk-1/2", crc=True)
    assert channel_uses_for_bits(1024, "qpsk-1/2", crc=True) == 2048 > channel_uses_for_bits(1024, "qpsk-1/2")
    assert channel_uses_for_bits(100, "qpsk-1/3", k=64, crc=True, repeat=3) == 3 * 3 * 96  # 40 payload bits each
    with pytest.raises(ValueError, match="exceed the 24 CRC bits"):
        codewords_for_bits(10, k=24, crc=True)
    p = plan_fixed(1001, "qpsk-1/2", crc=True, repeat=2)
    assert p == LinkPlan(mcs=get_mcs("qpsk-1/2"), repeat=2, n_bits=1001, n_codewords=2, channel_uses=4096,
                         p_success=p.p_success, snr_db_estimate=p.snr_db_estimate) and math.isnan(p.p_success)


class Waterfall:
    """A hand-made BLER curve: ``BLER(s) = 1 / (1 + 10^(slope (s - s50)))`` (logistic in dB)."""

    def __init__(self, s50: float, slope: float = 2.0):
        self.s50, self.slope = s50, slope

    def bler_at(self, snr_db: float) -> float:
        return 1.0 / (1.0 + 10.0 ** (self.slope * (snr_db - self.s50)))


# thresholds increasing with spectral efficiency, ~2 dB apart
SYNTH = {"qpsk-120/1024": Waterfall(-6.0), "qpsk-449/1024": Waterfall(-1.0), "16qam-490/1024": Waterfall(4.0),
         "64qam-666/1024": Waterfall(10.0)}


def _p_all(name: str, snr: float, c: int) -> float:
    return (1.0 - SYNTH[name].bler_at(snr)) ** c


@pytest.mark.parametrize("snr", [-5.0, -0.5, 0.5, 4.7, 5.5, 11.0, 20.0])
@pytest.mark.parametrize("c", [1, 10, 100])
def test_choose_mcs_meets_the_per_payload_target_and_is_the_highest_that_does(snr, c):
    m, r, p = choose_mcs(snr, SYNTH, n_codewords=c, target=0.9)
    if r > 1:  # not even the lowest MCS meets the target: repetition
        assert m.name == "qpsk-120/1024" and _p_all(m.name, snr, c) < 0.9 <= p
        return
    assert p == pytest.approx(_p_all(m.name, snr, c)) and p >= 0.9
    faster = [n for n in SYNTH if get_mcs(n).spectral_efficiency > m.spectral_efficiency]
    assert all(_p_all(n, snr, c) < 0.9 for n in faster), (m.name, faster)


def test_more_codewords_need_a_more_robust_mcs():
    snr = 4.6  # 16QAM's BLER 0.06 here: fine for one codeword, not for 10 (0.94^10 = 0.54)
    assert choose_mcs(snr, SYNTH, n_codewords=1)[0].name == "16qam-490/1024"
    assert choose_mcs(snr, SYNTH, n_codewords=10)[0].name == "qpsk-449/1024"
    assert choose_mcs(snr, SYNTH, n_codewords=0)[0].name == "64qam-666/1024"  # nothing to send: anything decodes
    assert choose_mcs(snr, SYNTH, n_codewords=10, target=0.5)[0].name == "16qam-490/1024"


def test_below_the_lowest_mcs_the_smallest_repetition_that_meets_the_target():
    snr = -10.0  # 4 dB below the lowest MCS's 50 % point
    m, r, p = choose_mcs(snr, SYNTH, n_codewords=5)
    assert m.name == "qpsk-120/1024" and r > 1 and p >= 0.9
    assert _p_all(m.name, snr + 10 * math.log10(r), 5) == pytest.approx(p)
    assert _p_all(m.name, snr + 10 * math.log10(r - 1), 5) < 0.9  # r - 1 would not do
    m, r, p = choose_mcs(-40.0, SYNTH, n_codewords=5, max_repeat=8)  # hopeless: the cap, and p says so
    assert (m.name, r) == ("qpsk-120/1024", 8) and p < 0.9
    with pytest.raises(ValueError, match="tables is empty"):
        choose_mcs(0.0, {}, n_codewords=1)
    with pytest.raises(ValueError, match="target"):
        choose_mcs(0.0, SYNTH, n_codewords=1, target=1.0)


def test_on_fading_repetition_reads_the_tables_of_its_copies():
    """With ``repeat_table`` (block fading) each repetition is read from its own table at the SNR itself (no
    10 log10 r shift), over the given steps only; the largest step when none meets the target."""
    asked = []
    # hand-made copies tables: r copies gain 2 dB per doubling (less than the AWGN 3 dB)
    def copies(r):
        asked.append(r)
        return Waterfall(-6.0 - 2.0 * math.log2(r))

    m, r, p = choose_mcs(-11.0, SYNTH, n_codewords=5, repeat_table=copies, repeats=(2, 4, 8, 16))
    assert (m.name, r) == ("qpsk-120/1024", 8) and asked == [2, 4, 8]
    assert p == pytest.approx((1 - Waterfall(-12.0).bler_at(-11.0)) ** 5) and p >= 0.9
    # the AWGN rule would have taken r = 4 (-11 + 6.0 dB is past the single table's waterfall)
    assert choose_mcs(-11.0, SYNTH, n_codewords=5)[1] <= 5
    m, r, p = choose_mcs(-30.0, SYNTH, n_codewords=5, repeat_table=copies, repeats=(2, 4), max_repeat=64)
    assert r == 4 and p < 0.9
    assert choose_mcs(-30.0, SYNTH, n_codewords=5, repeat_table=copies, repeats=(2, 4), max_repeat=2)[1] == 2
    assert choose_mcs(0.0, SYNTH, n_codewords=5, repeat_table=copies)[1] == 1  # an MCS fits: no repetition


def _table(mcs: str, bler: list[float]) -> CalibrationTable:
    return CalibrationTable(mcs=mcs, channel="awgn()", k=128, n=256, num_iter=20, snr_db=[0.0, 10.0, 20.0], bler=bler,
                            residual_ber=[0.0] * 3, n_codewords=[100] * 3, error_counts=[[], [], []],
                            source=["simulated"] * 3)


def test_select_mcs_highest_efficiency_meeting_the_target():
    tables = {"qpsk-1/3": _table("qpsk-1/3", [0.5, 0.0, 0.0]), "16qam-1/2": _table("16qam-1/2", [1.0, 0.05, 0.0]),
              "64qam-2/3": _table("64qam-2/3", [1.0, 1.0, 0.01])}
    assert select_mcs(10.0, tables).name == "16qam-1/2"
    assert select_mcs(20.0, tables).name == "64qam-2/3"
    assert select_mcs(0.0, tables).name == "qpsk-1/3"  # nothing meets 10 %: the most robust
    assert select_mcs(10.0, tables, bler_target=0.01).name == "qpsk-1/3"
    with pytest.raises(ValueError, match="tables is empty"):
        select_mcs(0.0, {})
    assert check_repeat(3) == 3
    with pytest.raises(ValueError, match=r"repeat must be an integer in \[1, 64\]"):
        check_repeat(65)
