"""Channel coding and digital links: Gray QAM, 5G NR LDPC, fixed/adaptive MCS links, BER theory.

Sign convention everywhere: ``LLR = ln P(b=1)/P(b=0)`` (positive favours 1).
SNR: ``Es/N0`` per complex symbol in dB, unit-energy symbols, noise ``CN(0, N0)``.
"""

from genscom.coding.ldpc import ALLOWED_RATES, DEFAULT_K, DEFAULT_NUM_ITER, LDPCCode, coded_length, parse_rate
from genscom.coding.link import (
    MCS,
    MCS_TABLE,
    CalibrationConfig,
    CalibrationTable,
    CodedStats,
    DigitalLink,
    LinkResult,
    calibrate,
    channel_key,
    channel_uses_for_bits,
    get_mcs,
    list_mcs,
    select_mcs,
    simulate_coded,
    simulate_uncoded_ber,
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
    "ALLOWED_ORDERS", "ALLOWED_RATES", "DEFAULT_K", "DEFAULT_NUM_ITER", "MCS", "MCS_TABLE", "QAM",
    "CalibrationConfig", "CalibrationTable", "CodedStats", "DigitalLink", "LDPCCode", "LinkResult",
    "ber_qam_awgn", "ber_qam_rayleigh", "ber_qam_rician", "ber_qpsk_awgn", "ber_qpsk_rayleigh",
    "calibrate", "channel_key", "channel_uses_for_bits", "coded_length", "get_mcs", "list_mcs", "llr_to_bits",
    "parse_rate", "qfunc", "select_mcs", "simulate_coded", "simulate_uncoded_ber",
]
