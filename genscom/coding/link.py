r"""The digital link: 5G LDPC + Gray QAM over a genscom channel, at a fixed MCS or the adaptive choice.

Pipeline (full fidelity), per item::

    bits [n_bits] -> cut into c = ceil(n_bits / k') codewords of k' payload bits (the last zero-padded),
    k' = k - 24 and a CRC24B appended with crc=True (k' = k without) -> LDPC encode (n bits each)
    -> QAM map (n/m symbols each, unit energy), every symbol sent `repeat` times
    [-> with pilot CSI: P known pilots opening every coherence block, LinkPlan.pilots]
    -> channel (y = h x + n, n ~ CN(0, N0), Es/N0 = snr_db)
    -> ZF equalisation: perfect CSI x_hat = y/h, N0_eff = N0/|h|^2; pilot CSI x_hat = y/h_hat with the
       LMMSE estimate per block, N0_eff = (N0_hat + s2)/|h_hat|^2 (s2: its error variance); MRC of the copies
    -> LLRs ln P(1)/P(0) -> BP decode -> CRC check per codeword

A codeword that fails keeps its wrong bits (PROTOCOL.md); :attr:`LinkResult.codeword_failed`
flags it, so a receiver can erase what it carried instead. With ``crc=True`` the flag is the
CRC24B check (TS 38.212 5.1; the 24 bits are paid for in channel uses; an undetected error has
probability about 2^-24 and is otherwise treated as detected); with ``crc=False`` (the legacy
fixed-MCS link, kept so that old numbers reproduce) no CRC is sent and the flag is the genie's
(decoded bits != sent bits). Channel uses are counted in
:func:`genscom.coding.mcs.channel_uses_for_bits`.

**Adaptive MCS** (``mcs="adaptive"``, the default of the baselines, PROTOCOL.md): per payload,
the highest-rate MCS of ``mcs_set`` (default :data:`~genscom.coding.mcs.NR_MCS`, 14 entries of
the 5G NR table) whose probability that all its ``c`` codewords decode, ``(1 - BLER)^c``, is
at least ``target`` (0.9) at the SNR *estimate*; below the most robust MCS, symbol repetition
``r`` with the smallest ``r`` that meets the target on the table at ``SNR + 10 log10 r``
(:func:`genscom.coding.mcs.choose_mcs`). The transmitter decides with :meth:`DigitalLink.plan`
from the fed-back estimate (the plan fixes the channel uses at transmit time); the delivery
then follows that plan whatever the true SNR (``send_bits(..., plans=...)``). Without plans,
each call plans from ``snr_db_estimate`` (default: the true ``snr_db``, an ideal estimate).

**CSI** (PROTOCOL.md "Channels"): a plan with ``pilots`` (a
:class:`~genscom.channels.sensing.PilotLayout`, e.g. ``LinkFeedback.pilot_layout()``) sends ``P``
known pilots at the start of every coherence block, counted in its channel uses
(``pilots.frame_length(data_symbols)``); the receiver estimates ``N0`` and ``h`` from them
(:func:`genscom.channels.sensing.pass_with_pilots_csi`) and never sees the true channel. A plan
without pilots is the perfect-CSI upper bound (or AWGN). The adaptive choice and the abstraction
read the tables of the plan's CSI (:func:`genscom.coding.calibration.link_key`: pilot tables are
keyed by the pilots per block); pilot tables are never simulated on the fly: a missing one raises
``ValueError`` saying how to make it.

With ``fidelity="abstract"`` (or ``"auto"`` on long calls) the link draws codeword failures
from calibrated tables (:mod:`genscom.coding.calibration`, which says where the tables come
from: shipped with genscom, else a user cache). Symbol repetition on a fading channel is always
simulated in full: combining copies that fall in different fading blocks adds diversity that
an SNR shift of the table cannot model (on AWGN the shift ``10 log10 r`` is exact).

:meth:`DigitalLink.constellation` shows what goes on the air: the QAM symbols of a
payload's first codeword(s) and what the demapper receives.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from genscom.channels.base import Channel
from genscom.channels.sensing import PilotLayout
from genscom.coding.calibration import (
    CalibrationConfig,
    CalibrationTable,
    calibrate,
    find_table,
    link_key,
    through_channel,
)
from genscom.coding.ldpc import DEFAULT_K, DEFAULT_NUM_ITER, LDPCCode, check_k
from genscom.coding.mcs import (
    CRC_BITS,
    DEFAULT_TARGET,
    MAX_REPEAT,
    MCS,
    LinkPlan,
    channel_uses_for_bits,
    check_mcs_set,
    check_pilots,
    check_repeat,
    choose_mcs,
    codewords_for_bits,
    get_mcs,
    is_adaptive,
    payload_bits_per_codeword,
    plan_fixed,
)
from genscom.coding.qam import QAM, DemapMethod, Precision, check_bits
from genscom.utils import check_snr_db

log = logging.getLogger(__name__)

Fidelity = Literal["full", "abstract", "auto"]
CSI = Literal["perfect", "pilot"]


def _check_channel(channel: object, name: str = "channel") -> Channel:
    if not isinstance(channel, Channel):
        raise TypeError(f"{name} must be a genscom.channels.base.Channel (e.g. create_channel('awgn')), "
                        f"got {type(channel).__name__}")
    return channel


def _bit_row(payload: bytes | bytearray | torch.Tensor, name: str = "payload") -> torch.Tensor:
    """Bytes (MSB first) or a 1-D 0/1 tensor -> uint8 bits ``[n_bits]`` on the CPU."""
    if isinstance(payload, (bytes, bytearray)):
        return torch.from_numpy(np.unpackbits(np.frombuffer(bytes(payload), dtype=np.uint8)))
    if isinstance(payload, torch.Tensor):
        check_bits(payload, name)
        if payload.dim() != 1:
            raise ValueError(f"{name} must be 1-D bits [n_bits] (one item), got shape {tuple(payload.shape)}")
        return payload.detach().to("cpu").round().to(torch.uint8)
    raise TypeError(f"{name} must be bytes or a 1-D 0/1 torch.Tensor of bits, got {type(payload).__name__}")


def _one_snr(snr_db: float) -> float:
    snr_t = check_snr_db(snr_db)
    if snr_t.numel() != 1:
        raise ValueError(f"snr_db must be one number for the whole call, got shape {tuple(snr_t.shape)}")
    return float(snr_t)


@dataclass
class LinkResult:
    """What came out of :meth:`DigitalLink.send_bits` / :meth:`DigitalLink.send_bytes`.

    Attributes:
        mcs: the MCS used by most items (all of them for a fixed MCS); per item: ``mcs_per_item``.
        fidelity: ``"full"`` (LDPC + QAM simulated), ``"abstract"`` (calibrated table) or
            ``"mixed"`` (some items each way: repetition on fading is always simulated).
        snr_db: the SNR of the call.
        n_blocks: ``[B]`` int64 codewords per item.
        block_errors: ``[B]`` int64 codewords per item whose decoded bits differ from the sent ones.
        bit_errors: ``[B]`` int64 wrong payload bits per item.
        channel_uses: ``[B]`` int64 complex channel uses per item (CRC, repetition and pilots included).
        codeword_failed: ``[B, max_codewords]`` bool, the receiver's failure flag per codeword (the CRC
            check with ``crc=True``, the genie's comparison without; drawn failures in the abstraction);
            False beyond an item's codewords. ``codeword_failed.sum(1) == block_errors`` up to
            undetected CRC errors (probability ~2^-24 per failed codeword).
        mcs_per_item: the MCS of each item.
        repeat: ``[B]`` int64 symbol repetitions per item.
        plans: the :class:`~genscom.coding.mcs.LinkPlan` of each item.
        crc: whether each codeword carried a CRC24B (``k - 24`` payload bits per codeword).
        bits_hat: ``[B, n_bits]`` float 0/1 received bits (``send_bits``), else ``None``.
        received: received payloads, same lengths as sent (``send_bytes``), else ``None``.
    """

    mcs: MCS
    fidelity: Literal["full", "abstract", "mixed"]
    snr_db: float
    n_blocks: torch.Tensor
    block_errors: torch.Tensor
    bit_errors: torch.Tensor
    channel_uses: torch.Tensor
    codeword_failed: torch.Tensor
    mcs_per_item: list[MCS] = field(default_factory=list)
    repeat: torch.Tensor | None = None
    plans: list[LinkPlan] = field(default_factory=list)
    crc: bool = False
    bits_hat: torch.Tensor | None = None
    received: list[bytes] | None = None

    @property
    def bler(self) -> float:
        n = int(self.n_blocks.sum())
        return float(self.block_errors.sum()) / n if n else 0.0

    @property
    def mcs_used(self) -> str:
        """The name of :attr:`mcs` (the record key ``"mcs_used"``)."""
        return self.mcs.name

    @property
    def failed(self) -> torch.Tensor:
        """``[B]`` bool: an item with at least one flagged codeword."""
        return self.codeword_failed.any(dim=1) if self.codeword_failed.numel() else \
            torch.zeros(len(self.n_blocks), dtype=torch.bool)


@dataclass
class Constellation:
    """What :meth:`DigitalLink.constellation` returns: the air view of one payload.

    Attributes:
        mcs: the MCS used (the adaptive choice at ``snr_db`` for an adaptive link).
        snr_db: Es/N0 of the pass, dB.
        bits: ``[n_codewords, k]`` float 0/1 info bits of the codewords (the payload, zero-padded to
            ``k - 24`` bits per codeword and followed by its CRC24B with ``crc=True``, or to ``k`` without).
        sent: ``[n_sym]`` complex64 QAM symbols of those codewords (unit average energy),
            ``n_sym = n_codewords * n / bits_per_symbol``, as one channel row.
        received: ``[n_sym]`` complex equalised symbols, as the demapper sees them (zero-forcing with the
            true or the pilot-estimated channel, as the plan says; ``repeat`` copies MRC-combined).
        noise_var: ``[n_sym]`` float effective ``N0`` of each received symbol.
        repeat: symbol repetitions of the pass.
        pilots: the pass's pilot layout (pilot CSI), or ``None`` (perfect CSI).
    """

    mcs: MCS
    snr_db: float
    bits: torch.Tensor
    sent: torch.Tensor
    received: torch.Tensor
    noise_var: torch.Tensor
    repeat: int = 1
    pilots: PilotLayout | None = None


class DigitalLink:
    """LDPC + QAM over ``channel`` at a fixed MCS or the adaptive per-payload choice.

    Build a link once and reuse it: it keeps its LDPC codes, QAM mappers and calibrated
    tables (per MCS and channel) between calls.

    Args:
        mcs: an :class:`MCS`, its name (``"16qam-1/2"``, ``"64qam-567/1024"``) or ``"adaptive"`` (module
            docstring; reads the calibrated tables of ``mcs_set``: shipped with genscom for the
            default settings, else calibrated once and cached).
        channel: a :class:`genscom.channels.base.Channel`, the default of every call; ``None``:
            each call passes ``channel=`` (a scheme's link serves whatever channel it is given).
        csi: the CSI of plans made without ``pilots=`` (:meth:`plan`; a plan's own ``pilots`` always win):
            ``"perfect"``: no pilots, zero-forcing with the true ``h`` of fading channels
            (``N0_eff = N0/|h|^2`` per symbol, exact LLRs), the labelled upper bound; ``"pilot"``:
            ``pilots_per_block`` pilots opening every coherence block of a fading channel
            (``PilotLayout.for_channel``), counted, and zero-forcing with their LMMSE estimate.
        pilots_per_block: pilots per coherence block with ``csi="pilot"`` (>= 2).
        fidelity: ``"full"`` simulation, ``"abstract"`` (calibrated table), or ``"auto"``:
            full when the call has at most ``max_full_codewords`` codewords in total.
        k: info bits per codeword (default 1024); ``num_iter``: BP iterations.
        crc: a CRC24B per codeword (``k - 24`` payload bits each, counted). ``None`` (default):
            True for ``"adaptive"``, False for a fixed MCS (the legacy link, whose numbers it
            reproduces); pass ``crc=True`` for a fixed-MCS row that counts its CRC.
        target: probability that all codewords of a payload decode, for the adaptive choice.
        mcs_set: MCS names the adaptive choice picks from (default :data:`~genscom.coding.mcs.NR_MCS`).
        max_repeat: most symbol repetitions the adaptive choice may use (1..64).
        calibration: :class:`CalibrationConfig` for abstraction / adaptive tables, including the
            cache folder (``None``: ``CalibrationConfig()``, shipped tables first).
        repeat: fixed MCS only: send every QAM symbol ``repeat`` times (the item's whole row, back
            to back) and combine the copies by MRC: ``repeat`` x the channel uses for
            ``10 log10(repeat)`` dB more SNR on AWGN, plus diversity across fading blocks. For
            short, critical payloads (side information such as a bitmap). An adaptive link
            chooses its repetition per payload (``repeat`` must stay 1).

    Items are independent transmissions: each item's bits are cut into its own
    codewords; the symbols of one item go through the channel as one row.
    ``snr_db`` is one number for the call.

    Example:
        >>> link = DigitalLink("adaptive", AWGNChannel())
        >>> plan = link.plan(8 * 5, snr_db_estimate=3.0)          # at the transmitter: MCS, repeat, channel uses
        >>> res = link.send_bytes([b"hello"], 2.0, plans=[plan], generator=torch.Generator().manual_seed(0))
        >>> res.received, res.channel_uses, res.codeword_failed
        >>> ray = RayleighBlockFading(coherence=16)               # pilot CSI: the frame's pilots are planned, counted
        >>> plan = link.plan(8 * 5, 10.0, channel=ray, pilots=PilotLayout(2, coherence=16))
        >>> res = link.send_bytes([b"hello"], 10.0, channel=ray, plans=[plan])
    """

    def __init__(self, mcs: MCS | str, channel: Channel | None = None, *, csi: CSI = "perfect",
                 pilots_per_block: int = 2, fidelity: Fidelity = "auto", k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER,
                 crc: bool | None = None, target: float = DEFAULT_TARGET, mcs_set: Sequence[str] | None = None,
                 max_repeat: int = MAX_REPEAT, demapping: DemapMethod = "app", max_full_codewords: int = 256,
                 calibration: CalibrationConfig | None = None, precision: Precision = "single",
                 device: str | torch.device = "cpu", repeat: int = 1) -> None:
        self.adaptive = is_adaptive(mcs)
        self.mcs: MCS | None = None if self.adaptive else get_mcs(mcs)
        if channel is not None:
            _check_channel(channel)
        if csi not in ("perfect", "pilot"):
            raise ValueError(f"csi must be 'perfect' (equalise with the true channel) or 'pilot' (pilots per "
                             f"coherence block, LMMSE estimates), got {csi!r}")
        if isinstance(pilots_per_block, bool) or not isinstance(pilots_per_block, int) or pilots_per_block < 2:
            raise ValueError(f"pilots_per_block must be an integer >= 2 (one pilot for h, one more for N0), "
                             f"got {pilots_per_block!r}")
        if fidelity not in ("full", "abstract", "auto"):
            raise ValueError(f"fidelity must be 'full', 'abstract' or 'auto', got {fidelity!r}")
        if not (isinstance(target, (int, float)) and not isinstance(target, bool) and 0.0 < target < 1.0):
            raise ValueError(f"target (probability that all codewords of a payload decode) must be in (0, 1), "
                             f"got {target!r}")
        if crc is not None and not isinstance(crc, bool):
            raise TypeError(f"crc must be True, False or None (True for 'adaptive', False for a fixed MCS), got {crc!r}")
        if isinstance(max_full_codewords, bool) or not isinstance(max_full_codewords, int) or max_full_codewords < 0:
            raise ValueError(f"max_full_codewords must be a non-negative integer, got {max_full_codewords!r}")
        if demapping not in ("app", "maxlog"):
            raise ValueError(f"demapping must be 'app' or 'maxlog', got {demapping!r}")
        if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 1:
            raise ValueError(f"num_iter must be a positive integer (BP iterations), got {num_iter!r}")
        if calibration is not None and not isinstance(calibration, CalibrationConfig):
            raise TypeError(f"calibration must be a CalibrationConfig (e.g. CalibrationConfig(cache_dir=...)) or None, "
                            f"got {type(calibration).__name__}")
        self.repeat = check_repeat(repeat)
        if self.adaptive and self.repeat != 1:
            raise ValueError(f"repeat must be 1 for an adaptive link (it chooses its repetition per payload, up to "
                             f"max_repeat), got {repeat!r}")
        self.max_repeat = check_repeat(max_repeat)
        self.channel: Channel | None = channel
        self.csi = csi
        self.pilots_per_block = pilots_per_block
        self.fidelity = fidelity
        self.k = check_k(k)
        self.crc = self.adaptive if crc is None else crc
        self.payload_bits = payload_bits_per_codeword(self.k, crc=self.crc)  # per codeword
        self.num_iter = num_iter
        self.target = float(target)
        self.mcs_set = check_mcs_set(mcs_set)
        self.demapping: DemapMethod = demapping
        self.max_full_codewords = max_full_codewords
        self.calibration = calibration or CalibrationConfig()
        self.precision: Precision = precision
        self.device = device
        self._codes: dict[str, LDPCCode] = {}
        self._qams: dict[int, QAM] = {}
        self._tables: dict[tuple[str, str], CalibrationTable] = {}
        self._choices: dict[tuple[str, float, int], tuple[MCS, int, float]] = {}  # plan(): (link key, snr, codewords)
        self._crc_blocks: tuple[object, object] | None = None

    # -- pieces, built lazily ------------------------------------------------
    def code(self, mcs: MCS) -> LDPCCode:
        """The link's LDPC code for ``mcs`` (``k`` info bits, rate and length of the MCS), built once."""
        if mcs.name not in self._codes:
            self._codes[mcs.name] = LDPCCode(self.k, mcs.code_rate, bits_per_symbol=mcs.bits_per_symbol,
                                             num_iter=self.num_iter, precision=self.precision, device=self.device)
        return self._codes[mcs.name]

    def qam(self, mcs: MCS) -> QAM:
        """The link's Gray QAM mapper/demapper for ``mcs``, built once."""
        if mcs.order not in self._qams:
            self._qams[mcs.order] = QAM(mcs.order, method=self.demapping, precision=self.precision, device=self.device)
        return self._qams[mcs.order]

    def _crc(self) -> tuple[object, object]:
        """Sionna's CRC24B encoder and decoder (built once)."""
        if self._crc_blocks is None:
            from sionna.phy.fec.crc import CRCDecoder, CRCEncoder

            enc = CRCEncoder("CRC24B")
            self._crc_blocks = (enc, CRCDecoder(enc))
        return self._crc_blocks

    def _channel(self, channel: Channel | None) -> Channel:
        """The call's channel, else the link's; ``ValueError`` when neither is set."""
        if channel is not None:
            return _check_channel(channel)
        if self.channel is None:
            raise ValueError("this link has no default channel: pass channel= (a genscom Channel) to the call, "
                             "or build the link with one")
        return self.channel

    def table(self, mcs: MCS | str, channel: Channel | None = None, *,
              pilots: PilotLayout | None = None, repeat: int = 1) -> CalibrationTable:
        """The calibrated table of ``mcs`` on ``channel`` (default: the link's) with the CSI of ``pilots``.

        Perfect CSI (``pilots=None``): shipped, cached or calibrated once. Pilot CSI: shipped or cached
        only (:func:`genscom.coding.calibration.find_table`); a missing table raises ``ValueError`` naming
        the command that makes it (a pilot table costs minutes of simulation per MCS: it is never made
        silently), or the perfect-CSI alternative. ``repeat``: the table of that many MRC-combined copies
        (used on block fading, where repetition is more than an SNR shift).
        """
        m = get_mcs(mcs)
        ch = self._channel(channel)
        layout = check_pilots(pilots)
        key = (m.name, link_key(ch, layout, repeat))
        if key not in self._tables:
            if layout is None:
                self._tables[key] = calibrate(m, ch, config=self.calibration, k=self.k, num_iter=self.num_iter,
                                              demapping=self.demapping, device=self.device, repeat=repeat)
            else:
                found = find_table(m, ch, pilots=layout, config=self.calibration, k=self.k, num_iter=self.num_iter,
                                   demapping=self.demapping, repeat=repeat)
                if found is None:
                    p = layout.pilots_per_block
                    raise ValueError(
                        f"no calibrated table of {m.name} on {key[1]} (pilot CSI, k={self.k}, {self.num_iter} "
                        f"iterations, {self.demapping} demapping) in the shipped tables or "
                        f"{self.calibration.folder()}; make it with calibrate({m.name!r}, channel, "
                        f"pilots=PilotLayout({p}, coherence={layout.coherence}), repeat={repeat}, config=..., "
                        f"k={self.k}) or calibrate_all([channel], pilots_per_block={p}, repeats=({repeat},), "
                        f"out_dir=...) (genscom/coding/tables/"
                        f"README.md), or send with csi='perfect' (the labelled upper bound: link_feedback(channel, "
                        f"snr_db, csi='perfect')); a fixed-MCS link may also simulate: fidelity='full'")
                self._tables[key] = found
        return self._tables[key]

    def default_pilots(self, channel: Channel | None = None) -> PilotLayout | None:
        """The pilots of a plan made without ``pilots=``: ``None`` with ``csi="perfect"`` or on a channel without
        coherence blocks (AWGN), else ``PilotLayout.for_channel(channel, pilots_per_block)``."""
        ch = self._channel(channel)
        if self.csi == "perfect" or getattr(ch, "coherence", None) is None:
            return None
        return PilotLayout.for_channel(ch, self.pilots_per_block)

    # -- planning (at the transmitter) ---------------------------------------
    def plan(self, n_bits: int, snr_db_estimate: float | None = None, *, channel: Channel | None = None,
             pilots: PilotLayout | None = None) -> LinkPlan:
        """How a payload of ``n_bits`` bits is sent: ``LinkPlan(mcs, repeat, n_codewords, channel_uses, p_success,
        pilots)``.

        ``pilots``: the frame's :class:`~genscom.channels.sensing.PilotLayout` (pilot CSI, e.g.
        ``LinkFeedback.pilot_layout()``), counted in ``channel_uses``; ``None``: the link's
        :meth:`default_pilots` (none with ``csi="perfect"``).
        Fixed MCS: the link's MCS and ``repeat`` (``snr_db_estimate`` unused, ``p_success`` nan).
        Adaptive: :func:`genscom.coding.mcs.choose_mcs` at ``snr_db_estimate`` (dB, required: the
        receiver's estimate fed back to the transmitter) on the tables of ``channel`` (default: the
        link's) with the plan's CSI (:meth:`table`), for the payload's ``ceil(n_bits / k')`` codewords.
        """
        layout = check_pilots(pilots)
        if layout is None and self.csi == "pilot":
            layout = self.default_pilots(channel)
        if self.mcs is not None:
            return plan_fixed(n_bits, self.mcs, k=self.k, repeat=self.repeat, crc=self.crc, pilots=layout)
        if snr_db_estimate is None:
            raise ValueError("this link is adaptive: pass snr_db_estimate= (dB, the fed-back SNR estimate) to plan")
        snr = _one_snr(snr_db_estimate)
        ch = self._channel(channel)
        c = codewords_for_bits(n_bits, k=self.k, crc=self.crc)
        key = (link_key(ch, layout), snr, c)
        if key not in self._choices:
            if len(self._choices) >= 4096:  # bounded: estimates are continuous in general
                self._choices.clear()
            tables = {name: self.table(name, ch, pilots=layout) for name in self.mcs_set}
            robust = min(self.mcs_set, key=lambda n: get_mcs(n).spectral_efficiency)
            fading = getattr(ch, "coherence", None) is not None
            self._choices[key] = choose_mcs(
                snr, tables, n_codewords=c, target=self.target, max_repeat=self.max_repeat,
                repeat_table=(lambda r: self.table(robust, ch, pilots=layout, repeat=r)) if fading else None)
        m, r, p = self._choices[key]
        fixed = plan_fixed(n_bits, m, k=self.k, repeat=r, crc=self.crc, pilots=layout)
        return LinkPlan(mcs=m, repeat=r, n_bits=fixed.n_bits, n_codewords=fixed.n_codewords,
                        channel_uses=fixed.channel_uses, p_success=p, snr_db_estimate=snr, pilots=layout)

    def channel_uses_for_bits(self, n_bits: int, mcs: MCS | str | None = None, *, repeat: int | None = None) -> int:
        """:func:`channel_uses_for_bits` with this link's ``k`` and ``crc`` (``mcs`` required for an adaptive link:
        or use :meth:`plan`); ``repeat`` defaults to the link's."""
        m = mcs if mcs is not None else self.mcs
        if m is None:
            raise ValueError("this link is adaptive: pass mcs= (e.g. LinkResult.mcs) or use plan(n_bits, snr_db_estimate)")
        return channel_uses_for_bits(n_bits, m, k=self.k, repeat=self.repeat if repeat is None else repeat,
                                     crc=self.crc)

    # -- sending -------------------------------------------------------------
    def send_bits(self, bits: torch.Tensor, snr_db: float, *, channel: Channel | None = None,
                  generator: torch.Generator | None = None, snr_db_estimate: float | None = None,
                  plans: LinkPlan | Sequence[LinkPlan] | None = None) -> LinkResult:
        """Send ``bits`` ``[B, n_bits]`` (0/1) at ``snr_db`` (Es/N0, dB) -> :class:`LinkResult` with ``bits_hat``.

        ``channel``: this call's channel (default: the link's). ``plans``: one
        :class:`~genscom.coding.mcs.LinkPlan` per item (or one for all), made at transmit time with
        :meth:`plan`; without, each item is planned here at ``snr_db_estimate`` (default ``snr_db``).
        An item whose plan has ``pilots`` is sent in a pilot frame and equalised with the pilots'
        estimates (module docstring); the others with the true channel.
        """
        check_bits(bits)
        if bits.dim() != 2:
            raise ValueError(f"bits must be [B, n_bits], got shape {tuple(bits.shape)}")
        b = bits.detach().to("cpu", torch.uint8)
        res, hats = self._send(list(b), snr_db, generator, self._channel(channel), snr_db_estimate, plans)
        res.bits_hat = torch.stack(hats).to(torch.float32) if hats else torch.zeros(bits.shape, dtype=torch.float32)
        return res

    def send_bytes(self, payloads: Sequence[bytes], snr_db: float, *, channel: Channel | None = None,
                   generator: torch.Generator | None = None, snr_db_estimate: float | None = None,
                   plans: LinkPlan | Sequence[LinkPlan] | None = None) -> LinkResult:
        """Send byte strings (MSB first) at ``snr_db`` -> :class:`LinkResult` with ``received`` (same lengths).

        ``channel``, ``snr_db_estimate``, ``plans``: as :meth:`send_bits`.
        """
        if isinstance(payloads, (bytes, bytearray)) or not all(isinstance(p, (bytes, bytearray)) for p in payloads):
            raise TypeError("payloads must be a list of bytes objects (one per item)")
        rows = [_bit_row(p) for p in payloads]
        res, hats = self._send(rows, snr_db, generator, self._channel(channel), snr_db_estimate, plans)
        res.received = [bytes(p) if int(e) == 0 else np.packbits(h.numpy()).tobytes()
                        for p, h, e in zip(payloads, hats, res.block_errors)]
        return res

    # -- what goes on the air ------------------------------------------------
    def modulate(self, payload: bytes | torch.Tensor, *, mcs: MCS | str | None = None,
                 max_codewords: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The QAM symbols the link sends for one item's ``payload`` (each symbol once; see ``repeat``).

        Args:
            payload: bytes (MSB first) or 1-D 0/1 bits ``[n_bits]``.
            mcs: the MCS (default: the link's; required for an adaptive link, e.g. ``plan(...).mcs``).
            max_codewords: keep only the first this many codewords (``None``: all).

        Returns:
            ``(bits [n_codewords, k] float 0/1, symbols [n_codewords * n_sym_per_codeword] complex64)``:
            the payload cut into codewords (with their CRC when ``crc``), LDPC-encoded and Gray-QAM
            mapped (unit average energy), in the order they go on the air.
        """
        m = get_mcs(mcs) if mcs is not None else self.mcs
        if m is None:
            raise ValueError("this link is adaptive: pass mcs= (e.g. link.plan(n_bits, snr_db_estimate).mcs) to modulate")
        if max_codewords is not None and (isinstance(max_codewords, bool) or not isinstance(max_codewords, int)
                                          or max_codewords < 1):
            raise ValueError(f"max_codewords must be a positive integer or None (all), got {max_codewords!r}")
        row = _bit_row(payload)
        n_cw = math.ceil(row.numel() / self.payload_bits)
        if max_codewords is not None:
            n_cw = min(n_cw, max_codewords)
            row = row[: n_cw * self.payload_bits]
        u = self._codewords([row], [n_cw]).to(torch.float32)
        if n_cw == 0:
            return u, torch.zeros(0, dtype=torch.complex64)
        x = self.qam(m).map(self.code(m).encode(u.to(self.code(m).device)))  # [n_cw, n_sym_per_codeword]
        return u, x.reshape(-1)

    def constellation(self, payload: bytes | torch.Tensor, snr_db: float, *, channel: Channel | None = None,
                      max_codewords: int | None = 1, generator: torch.Generator | None = None) -> Constellation:
        """Sent and received QAM symbols of ``payload`` at ``snr_db`` (dB): the link's constellation.

        The MCS and repetition are the link's plan for the whole payload at ``snr_db`` (an ideal
        estimate for an adaptive link). The first ``max_codewords`` codewords (:meth:`modulate`;
        ``None``: all) go through ``channel`` (default: the link's) as one row, with the link's
        receiver (:func:`genscom.coding.calibration.through_channel`: zero-forcing with the true channel,
        or with ``csi="pilot"`` on a fading channel the pilots' estimate; copies MRC-combined). Nothing is decoded; use :meth:`qam` ``.demap`` and :meth:`code`
        ``.decode`` on the result to go back to bits.

        Example:
            >>> link = DigitalLink("16qam-1/2", AWGNChannel(), k=256)
            >>> c = link.constellation(b"hello", 20.0, generator=torch.Generator().manual_seed(0))
            >>> c.sent.shape, c.received.shape  # one codeword: 512 coded bits on 128 symbols
            (torch.Size([128]), torch.Size([128]))
        """
        snr = _one_snr(snr_db)
        ch = self._channel(channel)
        plan = self.plan(int(_bit_row(payload).numel()), snr, channel=ch)
        bits, x = self.modulate(payload, mcs=plan.mcs, max_codewords=max_codewords)
        if x.numel() == 0:
            empty = torch.zeros(0, dtype=torch.float32)
            return Constellation(mcs=plan.mcs, snr_db=snr, bits=bits, sent=x, received=x.clone(), noise_var=empty,
                                 repeat=plan.repeat, pilots=plan.pilots)
        x_hat, nv = through_channel(x[None], ch, snr, generator=generator, repeat=plan.repeat, pilots=plan.pilots)
        return Constellation(mcs=plan.mcs, snr_db=snr, bits=bits, sent=x, received=x_hat[0], noise_var=nv[0],
                             repeat=plan.repeat, pilots=plan.pilots)

    # -- internals -----------------------------------------------------------
    def _plans(self, lengths: list[int], snr: float, snr_db_estimate: float | None, channel: Channel,
               plans: LinkPlan | Sequence[LinkPlan] | None) -> list[LinkPlan]:
        if plans is None:
            est = snr if snr_db_estimate is None else _one_snr(snr_db_estimate)
            cache: dict[int, LinkPlan] = {}
            for n in set(lengths):
                cache[n] = self.plan(n, est, channel=channel)
            return [cache[n] for n in lengths]
        out = [plans] * len(lengths) if isinstance(plans, LinkPlan) else list(plans)
        if len(out) != len(lengths) or not all(isinstance(p, LinkPlan) for p in out):
            raise ValueError(f"plans must be one LinkPlan or one per item ({len(lengths)}), got {plans!r}")
        for i, (p, n) in enumerate(zip(out, lengths)):
            expect = plan_fixed(n, p.mcs, k=self.k, repeat=p.repeat, crc=self.crc, pilots=p.pilots)
            if p.n_bits != n or p.n_codewords != expect.n_codewords or p.channel_uses != expect.channel_uses:
                raise ValueError(f"plans[{i}] was made for {p.n_bits} bits ({p.n_codewords} codewords, "
                                 f"{p.channel_uses} channel uses) but item {i} has {n} bits on this link "
                                 f"(k={self.k}, crc={self.crc}); plan it with this link's plan()")
        return out

    def _send(self, rows: list[torch.Tensor], snr_db: float, generator: torch.Generator | None, channel: Channel,
              snr_db_estimate: float | None, plans: LinkPlan | Sequence[LinkPlan] | None
              ) -> tuple[LinkResult, list[torch.Tensor]]:
        """Per-item uint8 bit rows -> (result without bits, received uint8 bit rows)."""
        snr = _one_snr(snr_db)
        lengths = [int(r.numel()) for r in rows]
        item_plans = self._plans(lengths, snr, snr_db_estimate, channel, plans)
        n_cw = [p.n_codewords for p in item_plans]
        total = sum(n_cw)
        full_call = self.fidelity == "full" or (self.fidelity == "auto" and total <= self.max_full_codewords)
        hats: list[torch.Tensor | None] = [None] * len(rows)
        blk = [0] * len(rows)
        flags: list[torch.Tensor] = [torch.zeros(0, dtype=torch.bool)] * len(rows)
        modes: set[str] = set()
        groups: dict[tuple[str, int, PilotLayout | None], list[int]] = {}
        for i, p in enumerate(item_plans):
            groups.setdefault((p.mcs.name, p.repeat, p.pilots), []).append(i)
        for (name, rep, pilots), idx in groups.items():
            m = get_mcs(name)
            # repetition on fading (other fades, other estimates per copy) reads its own calibrated table
            use_full = full_call
            sub_rows, sub_cw = [rows[i] for i in idx], [n_cw[i] for i in idx]
            if use_full:
                h, e, f = self._full(sub_rows, sub_cw, m, rep, snr, generator, channel, pilots)
            else:
                h, e, f = self._abstract(sub_rows, sub_cw, m, rep, snr, generator, channel, pilots)
            modes.add("full" if use_full else "abstract")
            for j, i in enumerate(idx):
                hats[i], blk[i], flags[i] = h[j], e[j], f[j]
        max_cw = max(n_cw, default=0)
        failed = torch.zeros(len(rows), max_cw, dtype=torch.bool)
        for i, f in enumerate(flags):
            failed[i, : len(f)] = f
        out_hats = [h if h is not None else torch.zeros(0, dtype=torch.uint8) for h in hats]
        # an item without a wrong codeword has no wrong bit: compare only the others
        bit_err = [int((h != r).sum()) if b else 0 for h, r, b in zip(out_hats, rows, blk)]
        per_item = [p.mcs for p in item_plans]
        common = Counter(m.name for m in per_item).most_common()
        mcs = get_mcs(min(common, key=lambda kv: (-kv[1], get_mcs(kv[0]).spectral_efficiency))[0]) if common else \
            (self.mcs or get_mcs(self.mcs_set[0]))
        res = LinkResult(mcs=mcs, fidelity=modes.pop() if len(modes) == 1 else ("mixed" if modes else "full"),
                         snr_db=snr, n_blocks=torch.tensor(n_cw, dtype=torch.int64),
                         block_errors=torch.tensor(blk, dtype=torch.int64),
                         bit_errors=torch.tensor(bit_err, dtype=torch.int64),
                         channel_uses=torch.tensor([p.channel_uses for p in item_plans], dtype=torch.int64),
                         codeword_failed=failed, mcs_per_item=per_item,
                         repeat=torch.tensor([p.repeat for p in item_plans], dtype=torch.int64), plans=item_plans,
                         crc=self.crc)
        return res, out_hats

    def _codewords(self, rows: list[torch.Tensor], n_cw: list[int], *, with_crc: bool = True) -> torch.Tensor:
        """Per-item bits -> ``[total_codewords, k]`` uint8: each item cut into ``k'``-bit pieces (the last
        zero-padded), each followed by its CRC24B when ``crc`` (zeros if not ``with_crc``)."""
        kp = self.payload_bits
        out = torch.zeros(sum(n_cw) * kp, dtype=torch.uint8)
        pos = 0
        for r, c in zip(rows, n_cw):
            out[pos:pos + r.numel()] = r.to(torch.uint8)
            pos += c * kp
        u = out.view(-1, kp)
        if not self.crc:
            return u
        if with_crc and len(u):
            enc, _ = self._crc()
            return enc(u.to(torch.float32)).round().to(torch.uint8)  # type: ignore[operator]
        return torch.cat([u, torch.zeros(len(u), CRC_BITS, dtype=torch.uint8)], dim=1)

    def _split(self, u_hat: torch.Tensor, rows: list[torch.Tensor], n_cw: list[int]) -> list[torch.Tensor]:
        """``[total_codewords, k]`` decoded bits -> per-item payload bits (CRC and padding dropped)."""
        starts = np.concatenate([[0], np.cumsum(n_cw)]).astype(int)
        kp = self.payload_bits
        return [u_hat[starts[i]:starts[i + 1], :kp].reshape(-1)[: r.numel()].clone() for i, r in enumerate(rows)]

    @staticmethod
    def _per_item(values: torch.Tensor, n_cw: list[int]) -> list[torch.Tensor]:
        starts = np.concatenate([[0], np.cumsum(n_cw)]).astype(int)
        return [values[starts[i]:starts[i + 1]].clone() for i in range(len(n_cw))]

    def _full(self, rows: list[torch.Tensor], n_cw: list[int], mcs: MCS, repeat: int, snr: float,
              generator: torch.Generator | None, channel: Channel, pilots: PilotLayout | None = None
              ) -> tuple[list[torch.Tensor], list[int], list[torch.Tensor]]:
        code, qam = self.code(mcs), self.qam(mcs)
        u = self._codewords(rows, n_cw)
        if len(u) == 0:
            return ([r.clone().to(torch.uint8) for r in rows], [0] * len(rows),
                    [torch.zeros(0, dtype=torch.bool) for _ in rows])
        x = qam.map(code.encode(u.to(torch.float32)))  # [total_cw, n/m]
        sym = x.shape[-1]
        starts = np.concatenate([[0], np.cumsum(n_cw)]).astype(int)
        x_hat = torch.empty_like(x)
        nv = torch.empty(x.shape, dtype=x.real.dtype, device=x.device)
        # items with the same number of codewords go through the channel together, one row (one frame) each
        for c in sorted(set(c for c in n_cw if c)):
            idx = [i for i, ci in enumerate(n_cw) if ci == c]
            sel = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in idx])
            xi = x[sel].reshape(len(idx), c * sym)
            yi, nvi = through_channel(xi, channel, snr, generator=generator, repeat=repeat, pilots=pilots)
            x_hat[sel] = yi.reshape(len(idx) * c, sym)
            nv[sel] = nvi.reshape(len(idx) * c, sym).to(nv.dtype)
        u_hat = code.decode(qam.demap(x_hat, nv)).to("cpu", torch.uint8)
        wrong = (u_hat != u).any(dim=-1)
        if self.crc:
            _, dec = self._crc()
            _, valid = dec(u_hat.to(torch.float32))  # type: ignore[operator]
            flag = ~valid.reshape(-1).to("cpu", torch.bool)
        else:
            flag = wrong  # no CRC sent: the genie's comparison
        return (self._split(u_hat, rows, n_cw), [int(w.sum()) for w in self._per_item(wrong, n_cw)],
                self._per_item(flag, n_cw))

    def _abstract(self, rows: list[torch.Tensor], n_cw: list[int], mcs: MCS, repeat: int, snr: float,
                  generator: torch.Generator | None, channel: Channel, pilots: PilotLayout | None = None
                  ) -> tuple[list[torch.Tensor], list[int], list[torch.Tensor]]:
        if repeat > 1 and (pilots is not None or getattr(channel, "coherence", None) is not None):
            table = self.table(mcs, channel, pilots=pilots, repeat=repeat)  # copies calibrated as sent
        else:
            table = self.table(mcs, channel, pilots=pilots)  # the table of the plan's CSI
            snr = snr + 10.0 * math.log10(repeat)  # AWGN: repetition is an r-fold SNR gain
        if not table.snr_db[0] <= snr <= table.snr_db[-1]:
            log.warning("snr_db %.2f is outside the calibrated grid [%.1f, %.1f] dB; using the nearest end",
                        snr, table.snr_db[0], table.snr_db[-1])
        p = table.bler_at(snr)
        pool = torch.tensor(table.error_count_pool(snr), dtype=torch.int64)
        rber = table.residual_ber_at(snr)
        if generator is not None and generator.device.type != "cpu":  # the draws below are made on the CPU
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            generator = torch.Generator().manual_seed(seed)
        total = sum(n_cw)
        fail = torch.rand(total, generator=generator) < p
        failed_idx = torch.nonzero(fail).flatten()
        n_fail = len(failed_idx)
        per_item = self._per_item(fail, n_cw)
        hit = [i for i, f in enumerate(per_item) if bool(f.any())]
        # only items with a failed codeword are cut into codewords and corrupted; the others arrive as sent
        # (CRC bits are not needed: failures are drawn)
        u = self._codewords([rows[i] for i in hit], [n_cw[i] for i in hit], with_crc=False)
        if n_fail:
            starts = np.concatenate([[0], np.cumsum(n_cw)]).astype(int)
            sel = torch.cat([torch.arange(int(starts[i]), int(starts[i + 1])) for i in hit])
            local = torch.searchsorted(sel, failed_idx)  # a failed codeword's row in u
            if len(pool):
                counts = pool[torch.randint(len(pool), (n_fail,), generator=generator)]
            else:  # no failed codeword seen in calibration near this SNR: binomial at the residual rate, >= 1
                counts = torch.binomial(torch.full((n_fail,), float(self.k)), torch.full((n_fail,), float(rber)),
                                        generator=generator).to(torch.int64).clamp_min(1)
            counts = counts.clamp_max(self.k)
            cols = torch.arange(self.k)
            # exactly `count` distinct wrong positions among the k info bits (payload and CRC) per failed
            # codeword: the first `count` entries of a random permutation (vectorised in chunks)
            for lo in range(0, n_fail, 4096):
                hi = min(lo + 4096, n_fail)
                perm = torch.rand(hi - lo, self.k, generator=generator).argsort(dim=1)
                flip = torch.zeros(hi - lo, self.k, dtype=torch.uint8)
                flip.scatter_(1, perm, (cols[None, :] < counts[lo:hi, None]).to(torch.uint8))
                u[local[lo:hi]] ^= flip
        hats = [r.to(torch.uint8) for r in rows]
        for i, h in zip(hit, self._split(u, [rows[i] for i in hit], [n_cw[i] for i in hit])):
            hats[i] = h
        return hats, [int(f.sum()) for f in per_item], per_item


__all__ = ["CSI", "Constellation", "DigitalLink", "Fidelity", "LinkResult"]
