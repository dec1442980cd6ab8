r"""Modulation and coding schemes (MCS): the table, channel-use counting and the adaptive choice.

An MCS is Gray QAM (QPSK, 16-QAM, 64-QAM) with a 5G NR LDPC code at rate 1/3, 1/2
or 2/3; the 9 combinations form :data:`MCS_TABLE`, named ``"qpsk-1/2"``,
``"16qam-2/3"``... in increasing spectral efficiency. Channel uses are counted in
exactly one place, :func:`channel_uses_for_bits`; the ideal adaptive choice from
calibrated block-error tables is :func:`select_mcs`.

Example:
    >>> get_mcs("16qam-1/2").spectral_efficiency
    2.0
    >>> channel_uses_for_bits(1025, "qpsk-1/2")  # two codewords of 2048 coded bits, 2 bits per symbol
    2048
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping, Protocol

import numpy as np

from genscom.coding.ldpc import DEFAULT_K, check_k, coded_length, parse_rate


class BlerTable(Protocol):
    """What :func:`select_mcs` needs of a calibrated table (e.g. :class:`genscom.coding.calibration.CalibrationTable`)."""

    def bler_at(self, snr_db: float) -> float: ...


ADAPTIVE = "adaptive"
"""The MCS name a :class:`~genscom.coding.link.DigitalLink` accepts for the ideal adaptive choice."""

_MOD_NAMES = {2: "qpsk", 4: "16qam", 6: "64qam"}


@dataclass(frozen=True)
class MCS:
    """A modulation and coding scheme: Gray QAM with ``bits_per_symbol`` in {2, 4, 6} and 5G LDPC at ``code_rate``.

    ``code_rate`` accepts 1/3, 1/2, 2/3 as float, ``"1/2"`` string or ``Fraction`` and
    is stored as a ``Fraction``. Names: ``"qpsk-1/2"``, ``"16qam-2/3"``, ``"64qam-1/3"``...
    """

    bits_per_symbol: int
    code_rate: Fraction

    def __post_init__(self) -> None:
        if self.bits_per_symbol not in (2, 4, 6) or isinstance(self.bits_per_symbol, bool):
            raise ValueError(f"bits_per_symbol must be 2 (QPSK), 4 (16-QAM) or 6 (64-QAM), got {self.bits_per_symbol!r}")
        object.__setattr__(self, "code_rate", parse_rate(self.code_rate, "code_rate"))

    @property
    def name(self) -> str:
        return f"{_MOD_NAMES[self.bits_per_symbol]}-{self.code_rate.numerator}/{self.code_rate.denominator}"

    @property
    def order(self) -> int:
        """QAM order ``M = 2^bits_per_symbol``."""
        return 2 ** self.bits_per_symbol

    @property
    def spectral_efficiency(self) -> float:
        """Nominal info bits per channel use, ``bits_per_symbol * code_rate``."""
        return self.bits_per_symbol * float(self.code_rate)

    def __str__(self) -> str:
        return self.name


MCS_TABLE: dict[str, MCS] = {
    m.name: m
    for m in sorted((MCS(b, r) for b in (2, 4, 6) for r in (Fraction(1, 3), Fraction(1, 2), Fraction(2, 3))),
                    key=lambda m: (m.spectral_efficiency, -m.bits_per_symbol))
}
"""All 9 MCS by name, in increasing spectral efficiency."""


def list_mcs() -> list[str]:
    """MCS names in increasing spectral efficiency (a :class:`~genscom.coding.link.DigitalLink` also takes
    ``"adaptive"``)."""
    return list(MCS_TABLE)


def get_mcs(name: MCS | str) -> MCS:
    """``"qpsk-1/2"`` -> :class:`MCS`; unknown names raise ``ValueError`` listing the known ones."""
    if isinstance(name, MCS):
        return name
    key = str(name).strip().lower()
    if key not in MCS_TABLE:
        raise ValueError(f"unknown MCS {name!r}; known MCS: {', '.join(MCS_TABLE)} (or 'adaptive' for DigitalLink)")
    return MCS_TABLE[key]


def is_adaptive(mcs: Any) -> bool:
    """True for the name ``"adaptive"`` (any case, surrounding spaces ignored)."""
    return isinstance(mcs, str) and mcs.strip().lower() == ADAPTIVE


def check_repeat(repeat: Any) -> int:
    """``repeat`` (symbol repetitions, an integer in [1, 64]) as ``int``; ``ValueError`` otherwise."""
    if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or not 1 <= int(repeat) <= 64:
        raise ValueError(f"repeat must be an integer in [1, 64] (each symbol is sent that many times), got {repeat!r}")
    return int(repeat)


def channel_uses_for_bits(n_bits: int, mcs: MCS | str, *, k: int = DEFAULT_K, repeat: int = 1) -> int:
    """Exact complex channel uses to send ``n_bits`` at ``mcs``.

    ``ceil(n_bits / k)`` codewords (the last zero-padded), each of ``n`` coded bits
    (:func:`genscom.coding.ldpc.coded_length`, a multiple of ``bits_per_symbol``)
    on ``ceil(n / bits_per_symbol)`` symbols, each symbol sent ``repeat`` times.
    ``n_bits = 0`` costs 0.

    Example: ``channel_uses_for_bits(1025, "qpsk-1/2") == 2 * 1024``.
    """
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)) or n_bits < 0:
        raise ValueError(f"n_bits must be a non-negative integer, got {n_bits!r}")
    m = get_mcs(mcs)
    k = check_k(k)
    n = coded_length(k, m.code_rate, m.bits_per_symbol)
    return int(math.ceil(int(n_bits) / k)) * int(math.ceil(n / m.bits_per_symbol)) * check_repeat(repeat)


def select_mcs(snr_db: float, tables: Mapping[str, BlerTable], *, bler_target: float = 0.1) -> MCS:
    """Ideal adaptive MCS: the highest spectral efficiency whose BLER at ``snr_db`` is <= ``bler_target``.

    ``tables`` maps MCS names to calibrated tables
    (:func:`genscom.coding.calibration.calibrate`; only their ``bler_at(snr_db)`` is used).
    Ties in efficiency go to the lower BLER. If none qualifies, the most robust MCS
    (lowest efficiency, then lowest BLER) is returned.
    """
    if not tables:
        raise ValueError("tables is empty; calibrate at least one MCS first")
    rows = [(get_mcs(name), t.bler_at(snr_db)) for name, t in tables.items()]
    ok = [(mc, b) for mc, b in rows if b <= bler_target]
    if ok:
        return max(ok, key=lambda r: (r[0].spectral_efficiency, -r[1], -r[0].bits_per_symbol))[0]
    return min(rows, key=lambda r: (r[0].spectral_efficiency, r[1]))[0]


__all__ = ["ADAPTIVE", "MCS", "MCS_TABLE", "channel_uses_for_bits", "check_repeat", "get_mcs", "is_adaptive", "list_mcs",
           "select_mcs"]
