"""Channel coding and digital links: Gray QAM, 5G NR LDPC, MCS, calibrated link abstraction, BER theory.

* :mod:`~genscom.coding.qam`, :mod:`~genscom.coding.ldpc`: the modulation and the code;
* :mod:`~genscom.coding.mcs`: the 9 MCS, channel-use counting, the adaptive choice;
* :mod:`~genscom.coding.calibration`: Monte-Carlo simulation and the cached BLER tables;
* :mod:`~genscom.coding.link`: :class:`DigitalLink`, LDPC + QAM over a channel;
* :mod:`~genscom.coding.theory`, :mod:`~genscom.coding.source`: closed forms; JPEG/H.264 bitstreams.

Sign convention everywhere: ``LLR = ln P(b=1)/P(b=0)`` (positive favours 1).
SNR: ``Es/N0`` per complex symbol in dB, unit-energy symbols, noise ``CN(0, N0)``.
"""

from genscom.coding.calibration import (
    CALIBRATION_VERSION,
    CalibrationConfig,
    CalibrationTable,
    CodedStats,
    calibrate,
    channel_key,
    default_cache_dir,
    simulate_coded,
    simulate_uncoded_ber,
    through_channel,
)
from genscom.coding.ldpc import MAX_RATE, MIN_RATE, DEFAULT_K, DEFAULT_NUM_ITER, LDPCCode, coded_length, parse_rate
from genscom.coding.link import Constellation, DigitalLink, LinkResult
from genscom.coding.mcs import MCS, MCS_TABLE, channel_uses_for_bits, check_repeat, get_mcs, list_mcs, select_mcs
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
    "ALLOWED_ORDERS", "CALIBRATION_VERSION", "MAX_RATE", "MIN_RATE", "DEFAULT_K", "DEFAULT_NUM_ITER", "MCS", "MCS_TABLE", "QAM",
    "CalibrationConfig", "CalibrationTable", "CodedStats", "Constellation", "DigitalLink", "LDPCCode", "LinkResult",
    "ber_qam_awgn", "ber_qam_rayleigh", "ber_qam_rician", "ber_qpsk_awgn", "ber_qpsk_rayleigh",
    "calibrate", "channel_key", "channel_uses_for_bits", "check_repeat", "coded_length", "default_cache_dir", "get_mcs",
    "list_mcs", "llr_to_bits", "parse_rate", "qfunc", "select_mcs", "simulate_coded", "simulate_uncoded_ber",
    "through_channel",
]
