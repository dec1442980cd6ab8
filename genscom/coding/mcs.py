r"""Modulation and coding schemes (MCS): the table, channel-use counting and the adaptive choice.

An MCS is Gray QAM (QPSK, 16-QAM, 64-QAM) with a 5G NR LDPC code at a code rate
(:mod:`genscom.coding.ldpc`). :data:`MCS_TABLE` holds two families, by name, in
increasing spectral efficiency:

* **the 5G NR set** (:data:`NR_MCS`, the default set of the adaptive choice): 14 entries of
  3GPP TS 38.214 Table 5.1.3.1-1 (MCS index table 1, 64-QAM), named by their code rate
  ``R x 1024``, from ``"qpsk-120/1024"`` (I_MCS 0, 0.23 bit per channel use) to
  ``"64qam-948/1024"`` (I_MCS 28, 5.55 bit per channel use);
* **the 9 legacy MCS** (:data:`LEGACY_MCS`): QPSK / 16-QAM / 64-QAM at rate 1/3, 1/2, 2/3
  (``"qpsk-1/2"``...), kept with their exact coded lengths so that fixed-MCS numbers
  obtained with them reproduce.

Channel uses are counted in exactly one place, :func:`channel_uses_for_bits`. With
``crc=True`` every codeword carries ``k - 24`` payload bits and a 24-bit CRC (5G CRC24B
per code block, TS 38.212 5.1), so the CRC is paid for in channel uses. With pilot-estimated
CSI on a fading channel (``pilots=`` a :class:`~genscom.channels.sensing.PilotLayout`), the
frame's pilots are paid for too: ``pilots.frame_length(data_symbols)`` channel uses, the
repeated copies of a symbol counting as data.

The adaptive choice per payload (:func:`choose_mcs`, PROTOCOL.md "Bit-exact baselines"):
from calibrated block-error tables and an SNR estimate, the highest-rate MCS whose
probability that **all** ``c`` codewords of the payload decode, ``(1 - BLER)^c``, is at
least ``target`` (0.9); below the most robust MCS, symbol repetition ``r`` (MRC-combined,
``r`` times the channel uses) with the smallest ``r`` that meets the target, judged on the
table at ``SNR + 10 log10 r`` (exact on AWGN; on fading channels repetition also adds
diversity, so this is conservative: the link then simulates it, see
:class:`~genscom.coding.link.DigitalLink`).

Example:
    >>> get_mcs("16qam-1/2").spectral_efficiency
    2.0
    >>> channel_uses_for_bits(1025, "qpsk-1/2")  # two codewords of 2048 coded bits, 2 bits per symbol
    2048
    >>> channel_uses_for_bits(1001, "qpsk-1/2", crc=True)  # 1000 payload bits per codeword with a CRC
    2048
    >>> channel_uses_for_bits(1000, "qpsk-1/2", pilots=PilotLayout(2, coherence=16))  # + 2 pilots per 14 data
    1172
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from genscom.channels.sensing import PilotLayout
from genscom.coding.ldpc import DEFAULT_K, check_k, coded_length, parse_rate


class BlerTable(Protocol):
    """What :func:`select_mcs` / :func:`choose_mcs` need of a calibrated table (e.g.
    :class:`genscom.coding.calibration.CalibrationTable`)."""

    def bler_at(self, snr_db: float) -> float: ...


ADAPTIVE = "adaptive"
"""The MCS name a :class:`~genscom.coding.link.DigitalLink` accepts for the adaptive choice."""

CRC_BITS = 24  # 5G NR CRC24B per LDPC code block (TS 38.212 5.1): detection treated as ideal (miss 2^-24)
MAX_REPEAT = 64  # the most symbol repetitions a link may use
DEFAULT_TARGET = 0.9  # probability that all codewords of a payload decode (PROTOCOL.md)

_MOD_NAMES = {2: "qpsk", 4: "16qam", 6: "64qam"}
_LEGACY_RATES = (Fraction(1, 3), Fraction(1, 2), Fraction(2, 3))


@dataclass(frozen=True)
class MCS:
    """A modulation and coding scheme: Gray QAM with ``bits_per_symbol`` in {2, 4, 6} and 5G LDPC at ``code_rate``.

    ``code_rate`` accepts a float, a ``"1/2"`` / ``"378/1024"`` string or a ``Fraction`` in
    [1/16, 948/1024] and is stored as a ``Fraction``. Names: ``"qpsk-1/2"`` for the legacy
    rates 1/3, 1/2, 2/3, else the 3GPP form ``"16qam-378/1024"``.
    """

    bits_per_symbol: int
    code_rate: Fraction

    def __post_init__(self) -> None:
        if self.bits_per_symbol not in (2, 4, 6) or isinstance(self.bits_per_symbol, bool):
            raise ValueError(f"bits_per_symbol must be 2 (QPSK), 4 (16-QAM) or 6 (64-QAM), got {self.bits_per_symbol!r}")
        object.__setattr__(self, "code_rate", parse_rate(self.code_rate, "code_rate"))

    @property
    def name(self) -> str:
        r = self.code_rate
        if r in _LEGACY_RATES or (r * 1024).denominator != 1:
            rate = f"{r.numerator}/{r.denominator}"
        else:
            rate = f"{int(r * 1024)}/1024"
        return f"{_MOD_NAMES[self.bits_per_symbol]}-{rate}"

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


def _sort_key(m: MCS) -> tuple[float, int]:
    return (m.spectral_efficiency, -m.bits_per_symbol)


# (bits per symbol, R x 1024): a subset of 3GPP TS 38.214 Table 5.1.3.1-1, I_MCS 0, 2, 4, 6, 8 (QPSK),
# 11, 13, 15 (16-QAM), 18, 20, 22, 24, 26, 28 (64-QAM): steps of ~0.4-0.6 bit per channel use, ~1-2 dB apart
_NR_ENTRIES = ((2, 120), (2, 193), (2, 308), (2, 449), (2, 602), (4, 378), (4, 490), (4, 616),
               (6, 466), (6, 567), (6, 666), (6, 772), (6, 873), (6, 948))

NR_MCS: tuple[str, ...] = tuple(m.name for m in sorted((MCS(b, Fraction(r, 1024)) for b, r in _NR_ENTRIES),
                                                        key=_sort_key))
"""The 14 MCS of the 5G NR subset (TS 38.214 table 1), in increasing spectral efficiency: the adaptive set."""

LEGACY_MCS: tuple[str, ...] = tuple(m.name for m in sorted((MCS(b, r) for b in (2, 4, 6) for r in _LEGACY_RATES),
                                                            key=_sort_key))
"""The 9 original MCS (QPSK/16-QAM/64-QAM at rate 1/3, 1/2, 2/3), in increasing spectral efficiency."""

MCS_TABLE: dict[str, MCS] = {
    m.name: m for m in sorted([MCS(b, Fraction(r, 1024)) for b, r in _NR_ENTRIES]
                              + [MCS(b, r) for b in (2, 4, 6) for r in _LEGACY_RATES], key=_sort_key)
}
"""All 23 MCS by name (:data:`NR_MCS` and :data:`LEGACY_MCS`), in increasing spectral efficiency."""


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
    if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or not 1 <= int(repeat) <= MAX_REPEAT:
        raise ValueError(f"repeat must be an integer in [1, {MAX_REPEAT}] (each symbol is sent that many times), "
                         f"got {repeat!r}")
    return int(repeat)


def payload_bits_per_codeword(k: int = DEFAULT_K, *, crc: bool = False) -> int:
    """Payload bits one codeword of ``k`` info bits carries: ``k``, or ``k - 24`` with a CRC24B."""
    k = check_k(k)
    if not isinstance(crc, bool):
        raise TypeError(f"crc must be True or False, got {crc!r}")
    if crc and k <= CRC_BITS:
        raise ValueError(f"k must exceed the {CRC_BITS} CRC bits when crc=True, got k={k}")
    return k - CRC_BITS if crc else k


def codewords_for_bits(n_bits: int, *, k: int = DEFAULT_K, crc: bool = False) -> int:
    """``ceil(n_bits / payload_bits_per_codeword(k, crc))`` codewords (the last one zero-padded); 0 for 0 bits."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)) or n_bits < 0:
        raise ValueError(f"n_bits must be a non-negative integer, got {n_bits!r}")
    return int(math.ceil(int(n_bits) / payload_bits_per_codeword(k, crc=crc)))


def check_pilots(pilots: object, name: str = "pilots") -> PilotLayout | None:
    """``pilots`` if it is a :class:`~genscom.channels.sensing.PilotLayout` or ``None`` (no pilots: perfect CSI);
    ``TypeError`` otherwise."""
    if pilots is not None and not isinstance(pilots, PilotLayout):
        raise TypeError(f"{name} must be a PilotLayout (e.g. LinkFeedback.pilot_layout(), "
                        f"PilotLayout(pilots_per_block=2, coherence=16)) or None (perfect CSI, no pilots), "
                        f"got {type(pilots).__name__}")
    return pilots


def channel_uses_for_bits(n_bits: int, mcs: MCS | str, *, k: int = DEFAULT_K, repeat: int = 1,
                          crc: bool = False, pilots: PilotLayout | None = None) -> int:
    """Exact complex channel uses to send ``n_bits`` at ``mcs``.

    ``c = ceil(n_bits / k')`` codewords (the last zero-padded), ``k' = k`` or ``k - 24`` with
    ``crc=True`` (a CRC24B per codeword), each of ``n`` coded bits
    (:func:`genscom.coding.ldpc.coded_length`, a multiple of ``bits_per_symbol``)
    on ``n / bits_per_symbol`` symbols, each symbol sent ``repeat`` times: ``d = c (n / m) repeat``
    data symbols. With ``pilots`` (pilot-estimated CSI), the frame of those ``d`` data symbols:
    ``pilots.frame_length(d)`` (``P`` pilots opening every coherence block). ``n_bits = 0`` costs 0.

    Example: ``channel_uses_for_bits(1025, "qpsk-1/2") == 2 * 1024``.
    """
    m = get_mcs(mcs)
    c = codewords_for_bits(n_bits, k=k, crc=crc)
    n = coded_length(k, m.code_rate, m.bits_per_symbol)
    data = c * int(math.ceil(n / m.bits_per_symbol)) * check_repeat(repeat)
    layout = check_pilots(pilots)
    return layout.frame_length(data) if (layout is not None and data > 0) else data


def select_mcs(snr_db: float, tables: Mapping[str, BlerTable], *, bler_target: float = 0.1) -> MCS:
    """Per-codeword adaptive MCS: the highest spectral efficiency whose BLER at ``snr_db`` is <= ``bler_target``.

    ``tables`` maps MCS names to calibrated tables
    (:func:`genscom.coding.calibration.calibrate`; only their ``bler_at(snr_db)`` is used).
    Ties in efficiency go to the lower BLER. If none qualifies, the most robust MCS
    (lowest efficiency, then lowest BLER) is returned. The per-payload rule of PROTOCOL.md
    is :func:`choose_mcs`.
    """
    if not tables:
        raise ValueError("tables is empty; calibrate at least one MCS first")
    rows = [(get_mcs(name), t.bler_at(snr_db)) for name, t in tables.items()]
    ok = [(mc, b) for mc, b in rows if b <= bler_target]
    if ok:
        return max(ok, key=lambda r: (r[0].spectral_efficiency, -r[1], -r[0].bits_per_symbol))[0]
    return min(rows, key=lambda r: (r[0].spectral_efficiency, r[1]))[0]


@dataclass(frozen=True)
class LinkPlan:
    """How one payload goes on the air: chosen at transmit time from an SNR estimate (:func:`choose_mcs`,
    :meth:`genscom.coding.link.DigitalLink.plan`).

    Attributes:
        mcs: the MCS.
        repeat: symbol repetitions (MRC-combined at the receiver), 1 if none.
        n_bits: payload bits.
        n_codewords: LDPC codewords (``ceil(n_bits / k')``, ``k' = k - 24`` with a CRC).
        channel_uses: complex channel uses, repetition and CRC included.
        p_success: predicted probability that all codewords decode, ``(1 - BLER)^c`` from the table
            (``nan`` for a fixed-MCS plan made without tables).
        snr_db_estimate: the SNR estimate the plan was made for (dB; ``nan`` for a fixed plan).
        pilots: the frame's :class:`~genscom.channels.sensing.PilotLayout` (``P`` known pilots opening every
            coherence block; the receiver equalises with their LMMSE estimate), counted in ``channel_uses``;
            ``None``: no pilots, the receiver knows the channel (perfect CSI, or AWGN).
    """

    mcs: MCS
    repeat: int
    n_bits: int
    n_codewords: int
    channel_uses: int
    p_success: float = float("nan")
    snr_db_estimate: float = float("nan")
    pilots: PilotLayout | None = None

    @property
    def csi(self) -> str:
        """``"pilot"`` (the plan sends pilots) or ``"perfect"`` (it does not)."""
        return "perfect" if self.pilots is None else "pilot"


#: Repetitions an adaptive link tries on block fading, where each needs its own calibrated table.
FADING_REPEATS = (2, 4, 8, 16)


def choose_mcs(snr_db: float, tables: Mapping[str, BlerTable], *, n_codewords: int,
               target: float = DEFAULT_TARGET, max_repeat: int = MAX_REPEAT,
               repeat_table: Callable[[int], BlerTable] | None = None,
               repeats: Sequence[int] = FADING_REPEATS) -> tuple[MCS, int, float]:
    """The adaptive choice for a payload of ``n_codewords`` codewords at an SNR estimate ``snr_db`` (dB).

    Returns ``(mcs, repeat, p_success)``: the highest-efficiency MCS of ``tables`` with
    ``(1 - BLER(snr_db))^n_codewords >= target`` (ties: lower BLER); if none, the most robust
    MCS (lowest efficiency) with the smallest repetition ``r`` in ``2..max_repeat`` such that
    ``(1 - BLER(snr_db + 10 log10 r))^n_codewords >= target``; if even ``max_repeat`` does not
    meet it, ``max_repeat`` (``p_success`` then says how far it falls short).

    That ``10 log10 r`` shift is exact on AWGN only. On block fading pass ``repeat_table(r)``: the
    calibrated table of ``r`` MRC-combined copies of the most robust MCS (the copies see other fades
    and, with pilots, other estimates); then ``r`` runs over ``repeats`` (those ``<= max_repeat``), read at
    ``snr_db`` itself, and the largest is returned when none meets the target.

    ``tables`` maps MCS names to calibrated tables (only ``bler_at`` is used).
    """
    if not tables:
        raise ValueError("tables is empty; calibrate at least one MCS first")
    if isinstance(n_codewords, bool) or not isinstance(n_codewords, (int, np.integer)) or n_codewords < 0:
        raise ValueError(f"n_codewords must be a non-negative integer, got {n_codewords!r}")
    if not (isinstance(target, (int, float)) and 0.0 < target < 1.0):
        raise ValueError(f"target (probability that all codewords decode) must be in (0, 1), got {target!r}")
    max_repeat = check_repeat(max_repeat)
    c = int(n_codewords)

    def p_all(table: BlerTable, snr: float) -> float:
        return float((1.0 - min(1.0, max(0.0, table.bler_at(snr)))) ** c)

    rows = [(get_mcs(name), t, p_all(t, snr_db)) for name, t in tables.items()]
    ok = [r for r in rows if r[2] >= target]
    if ok:
        m, _, p = max(ok, key=lambda r: (r[0].spectral_efficiency, r[2], -r[0].bits_per_symbol))
        return m, 1, p
    m, table, p = min(rows, key=lambda r: (r[0].spectral_efficiency, -r[2]))
    if repeat_table is not None:
        steps = [check_repeat(r) for r in repeats if r <= max_repeat]
        if not steps:
            return m, 1, p
        for r in steps:
            p = p_all(repeat_table(r), snr_db)
            if p >= target:
                return m, r, p
        return m, steps[-1], p
    for r in range(2, max_repeat + 1):
        p = p_all(table, snr_db + 10.0 * math.log10(r))
        if p >= target:
            return m, r, p
    return m, max_repeat, p


def plan_fixed(n_bits: int, mcs: MCS | str, *, k: int = DEFAULT_K, repeat: int = 1, crc: bool = False,
               pilots: PilotLayout | None = None) -> LinkPlan:
    """The :class:`LinkPlan` of a fixed MCS (no table, ``p_success`` is ``nan``); ``pilots``: the frame's
    pilot layout (counted in ``channel_uses``), ``None`` for perfect CSI."""
    m = get_mcs(mcs)
    return LinkPlan(mcs=m, repeat=check_repeat(repeat), n_bits=int(n_bits),
                    n_codewords=codewords_for_bits(n_bits, k=k, crc=crc),
                    channel_uses=channel_uses_for_bits(n_bits, m, k=k, repeat=repeat, crc=crc, pilots=pilots),
                    pilots=check_pilots(pilots))


def check_mcs_set(names: Sequence[str] | None) -> tuple[str, ...]:
    """A set of MCS names (``None``: :data:`NR_MCS`) as a tuple sorted by spectral efficiency; unknown names raise."""
    if names is None:
        return NR_MCS
    if isinstance(names, str) or not len(names):
        raise ValueError(f"mcs_set must be a non-empty list of MCS names (e.g. NR_MCS), got {names!r}")
    ms = sorted({get_mcs(n).name: get_mcs(n) for n in names}.values(), key=_sort_key)
    return tuple(m.name for m in ms)


__all__ = ["ADAPTIVE", "CRC_BITS", "DEFAULT_TARGET", "FADING_REPEATS", "LEGACY_MCS", "LinkPlan", "MAX_REPEAT", "MCS", "MCS_TABLE",
           "NR_MCS", "channel_uses_for_bits", "check_mcs_set", "check_pilots", "check_repeat", "choose_mcs", "codewords_for_bits",
           "get_mcs", "is_adaptive", "list_mcs", "payload_bits_per_codeword", "plan_fixed", "select_mcs"]
