"""The MCS table, channel-use counting and the ideal adaptive choice (genscom.coding.mcs)."""

import pytest

from genscom.channels.awgn import AWGNChannel
from genscom.coding.calibration import CalibrationTable
from genscom.coding.link import DigitalLink
from genscom.coding.mcs import (
    MCS,
    MCS_TABLE,
    channel_uses_for_bits,
    check_repeat,
    get_mcs,
    is_adaptive,
    list_mcs,
    select_mcs,
)


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
    assert list_mcs() == list(MCS_TABLE) and is_adaptive(" Adaptive ") and not is_adaptive("qpsk-1/2")


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
