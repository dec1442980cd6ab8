"""Channel coding and digital links: Gray QAM, 5G NR LDPC, MCS, calibrated link abstraction, BER theory.

* :mod:`~genscom.coding.qam`, :mod:`~genscom.coding.ldpc`: the modulation and the code (rates 1/16 .. 948/1024);
* :mod:`~genscom.coding.mcs`: the MCS (14 of the 5G NR table plus the 9 legacy ones), channel-use counting
  (CRC included), the adaptive per-payload choice (:func:`choose_mcs`, :class:`LinkPlan`);
* :mod:`~genscom.coding.calibration`: Monte-Carlo simulation to a target of block errors and the BLER tables
  (shipped in ``genscom/coding/tables``, else cached), per channel and CSI (perfect, or ``P`` pilots per block);
* :mod:`~genscom.coding.link`: :class:`DigitalLink`, LDPC + QAM over a channel, fixed or adaptive MCS, perfect or
  pilot-estimated CSI (the plan's pilots, counted in its channel uses);
* :mod:`~genscom.coding.theory`, :mod:`~genscom.coding.source`: closed forms; JPEG/H.264 bitstreams.

Sign convention everywhere: ``LLR = ln P(b=1)/P(b=0)`` (positive favours 1).
SNR: ``Es/N0`` per complex symbol in dB, unit-energy symbols, noise ``CN(0, N0)``.
"""

from genscom.coding.calibration import (
    CALIBRATION_VERSION,
    SHIPPED_DIR,
    CalibrationConfig,
    CalibrationTable,
    CodedStats,
    bler_interval,
    calibrate,
    calibrate_all,
    channel_key,
    default_cache_dir,
    find_table,
    link_key,
    run_to_errors,
    shipped_table,
    simulate_coded,
    simulate_uncoded_ber,
    through_channel,
)
from genscom.coding.ldpc import DEFAULT_K, DEFAULT_NUM_ITER, MAX_RATE, MIN_RATE, LDPCCode, coded_length, parse_rate
from genscom.coding.link import Constellation, DigitalLink, LinkResult
from genscom.coding.mcs import (
    ADAPTIVE,
    CRC_BITS,
    LEGACY_MCS,
    MCS,
    MCS_TABLE,
    NR_MCS,
    LinkPlan,
    channel_uses_for_bits,
    check_pilots,
    check_repeat,
    choose_mcs,
    codewords_for_bits,
    get_mcs,
    list_mcs,
    payload_bits_per_codeword,
    select_mcs,
)
from genscom.coding.qam import ALLOWED_ORDERS, QAM, llr_to_bits
from genscom.coding.theory import (
    ber_qam_awgn,
    ber_qam_rayleigh,
    ber_qam_rician,
    ber_qpsk_awgn,
    ber_qpsk_rayleigh,
    qfunc,
)

__all__ = [
    "ADAPTIVE", "ALLOWED_ORDERS", "CALIBRATION_VERSION", "CRC_BITS", "DEFAULT_K", "DEFAULT_NUM_ITER", "LEGACY_MCS",
    "MAX_RATE", "MCS", "MCS_TABLE", "MIN_RATE", "NR_MCS", "QAM", "SHIPPED_DIR",
    "CalibrationConfig", "CalibrationTable", "CodedStats", "Constellation", "DigitalLink", "LDPCCode", "LinkPlan",
    "LinkResult", "ber_qam_awgn", "ber_qam_rayleigh", "ber_qam_rician", "ber_qpsk_awgn", "ber_qpsk_rayleigh",
    "bler_interval", "calibrate", "calibrate_all", "channel_key", "channel_uses_for_bits", "check_pilots", "check_repeat",
    "choose_mcs", "coded_length", "codewords_for_bits", "default_cache_dir", "find_table", "get_mcs", "link_key",
    "list_mcs", "llr_to_bits", "parse_rate",
    "payload_bits_per_codeword", "qfunc", "run_to_errors", "select_mcs", "shipped_table", "simulate_coded",
    "simulate_uncoded_ber", "through_channel",
]
