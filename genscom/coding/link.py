r"""The digital link: 5G LDPC + Gray QAM over a genscom channel, at a fixed or ideal adaptive MCS.

Pipeline (full fidelity), per item::

    bits [n_bits] -> zero-pad to ceil(n_bits/k) codewords of k bits -> LDPC encode (n bits each)
    -> QAM map (n/m symbols each, unit energy) -> channel (y = h x + n, n ~ CN(0, N0), Es/N0 = snr_db)
    -> perfect-CSI equalisation (ZF: x_hat = y/h, N0_eff = N0/|h|^2) -> LLRs ln P(1)/P(0) -> BP decode

A codeword that fails keeps its wrong bits (PROTOCOL.md). Channel uses are counted
in :func:`genscom.coding.mcs.channel_uses_for_bits`. With ``fidelity="abstract"`` (or
``"auto"`` on long calls) the link draws codeword failures from calibrated tables
(:mod:`genscom.coding.calibration`, which also says where those tables are cached).

:meth:`DigitalLink.constellation` shows what goes on the air: the QAM symbols of a
payload's first codeword(s) and what the demapper receives.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from genscom.channels.base import Channel
from genscom.coding.calibration import CalibrationConfig, CalibrationTable, calibrate, channel_key, through_channel
from genscom.coding.ldpc import DEFAULT_K, DEFAULT_NUM_ITER, LDPCCode, check_k
from genscom.coding.mcs import MCS, MCS_TABLE, channel_uses_for_bits, check_repeat, get_mcs, is_adaptive, select_mcs
from genscom.coding.qam import QAM, DemapMethod, Precision, check_bits
from genscom.utils import check_snr_db

log = logging.getLogger(__name__)

Fidelity = Literal["full", "abstract", "auto"]
CSI = Literal["perfect"]


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
        mcs: the MCS used (the chosen one for ``"adaptive"``).
        fidelity: ``"full"`` (LDPC + QAM simulated) or ``"abstract"`` (calibrated table).
        snr_db: the SNR of the call.
        n_blocks: ``[B]`` int64 codewords per item.
        block_errors: ``[B]`` int64 failed codewords per item.
        bit_errors: ``[B]`` int64 wrong payload bits per item.
        channel_uses: ``[B]`` int64 complex channel uses per item.
        bits_hat: ``[B, n_bits]`` float 0/1 received bits (``send_bits``), else ``None``.
        received: received payloads, same lengths as sent (``send_bytes``), else ``None``.
    """

    mcs: MCS
    fidelity: Literal["full", "abstract"]
    snr_db: float
    n_blocks: torch.Tensor
    block_errors: torch.Tensor
    bit_errors: torch.Tensor
    channel_uses: torch.Tensor
    bits_hat: torch.Tensor | None = None
    received: list[bytes] | None = None

    @property
    def bler(self) -> float:
        n = int(self.n_blocks.sum())
        return float(self.block_errors.sum()) / n if n else 0.0


@dataclass
class Constellation:
    """What :meth:`DigitalLink.constellation` returns: the air view of one payload.

    Attributes:
        mcs: the MCS used (the adaptive choice at ``snr_db`` for an adaptive link).
        snr_db: Es/N0 of the pass, dB.
        bits: ``[n_codewords, k]`` float 0/1 info bits (the payload, zero-padded to whole codewords).
        sent: ``[n_sym]`` complex64 QAM symbols of those codewords (unit average energy),
            ``n_sym = n_codewords * ceil(n / bits_per_symbol)``, as one channel row.
        received: ``[n_sym]`` complex equalised symbols, as the demapper sees them (perfect-CSI
            zero-forcing; ``repeat`` copies MRC-combined).
        noise_var: ``[n_sym]`` float effective ``N0`` of each received symbol.
    """

    mcs: MCS
    snr_db: float
    bits: torch.Tensor
    sent: torch.Tensor
    received: torch.Tensor
    noise_var: torch.Tensor


class DigitalLink:
    """LDPC + QAM over ``channel`` at a fixed MCS or ideal adaptive MCS.

    Build a link once and reuse it: it keeps its LDPC codes, QAM mappers and calibrated
    tables (per MCS and channel) between calls.

    Args:
        mcs: an :class:`MCS`, its name (``"16qam-1/2"``) or ``"adaptive"`` (per call, the
            highest-efficiency MCS whose calibrated BLER at the SNR is <= ``bler_target``,
            else the most robust; calibrates all 9 MCS on first use, then cached).
        channel: a :class:`genscom.channels.base.Channel`, the default of every call; ``None``:
            each call passes ``channel=`` (a scheme's link serves whatever channel it is given).
        csi: ``"perfect"``: zero-forcing with the true ``h`` of fading channels
            (``N0_eff = N0/|h|^2`` per symbol, exact LLRs).
        fidelity: ``"full"`` simulation, ``"abstract"`` (calibrated table), or ``"auto"``:
            full when the call has at most ``max_full_codewords`` codewords in total.
        k: info bits per codeword (default 1024); ``num_iter``: BP iterations.
        bler_target: BLER target of the adaptive choice.
        calibration: :class:`CalibrationConfig` for abstraction / adaptive tables, including the
            folder they are cached in (``None``: ``CalibrationConfig()``, whose folder is
            :func:`genscom.coding.calibration.default_cache_dir`).
        repeat: send every QAM symbol ``repeat`` times (the item's whole row, back to back) and
            combine the copies by MRC at the receiver: ``repeat`` x the channel uses for
            ``10 log10(repeat)`` dB more SNR on AWGN, plus diversity across fading blocks. For
            short, critical payloads (side information such as a bitmap). The abstraction
            models it exactly on AWGN only, so on fading channels ``repeat > 1`` always simulates.

    Items are independent transmissions: each item's bits are cut into its own
    codewords (last one zero-padded); the symbols of one item go through the
    channel as one row. ``snr_db`` is one number for the call.

    Example:
        >>> link = DigitalLink("qpsk-1/2", AWGNChannel())
        >>> res = link.send_bytes([b"hello", b"world!"], 3.0, generator=torch.Generator().manual_seed(0))
        >>> res.received, res.channel_uses
    """

    def __init__(self, mcs: MCS | str, channel: Channel | None = None, *, csi: CSI = "perfect",
                 fidelity: Fidelity = "auto", k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER,
                 demapping: DemapMethod = "app", bler_target: float = 0.1, max_full_codewords: int = 256,
                 calibration: CalibrationConfig | None = None, precision: Precision = "single",
                 device: str | torch.device = "cpu", repeat: int = 1) -> None:
        self.adaptive = is_adaptive(mcs)
        self.mcs: MCS | None = None if self.adaptive else get_mcs(mcs)
        if channel is not None:
            _check_channel(channel)
        if csi != "perfect":
            raise ValueError(f"csi must be 'perfect' (equalise with the true channel), got {csi!r}")
        if fidelity not in ("full", "abstract", "auto"):
            raise ValueError(f"fidelity must be 'full', 'abstract' or 'auto', got {fidelity!r}")
        if not (isinstance(bler_target, (int, float)) and 0.0 < bler_target < 1.0):
            raise ValueError(f"bler_target must be in (0, 1), got {bler_target!r}")
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
        self.channel: Channel | None = channel
        self.csi = csi
        self.fidelity = fidelity
        self.k = check_k(k)
        self.num_iter = num_iter
        self.demapping: DemapMethod = demapping
        self.bler_target = float(bler_target)
        self.max_full_codewords = max_full_codewords
        self.calibration = calibration or CalibrationConfig()
        self.precision: Precision = precision
        self.device = device
        self._codes: dict[str, LDPCCode] = {}
        self._qams: dict[int, QAM] = {}
        self._tables: dict[tuple[str, str], CalibrationTable] = {}

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

    def _channel(self, channel: Channel | None) -> Channel:
        """The call's channel, else the link's; ``ValueError`` when neither is set."""
        if channel is not None:
            return _check_channel(channel)
        if self.channel is None:
            raise ValueError("this link has no default channel: pass channel= (a genscom Channel) to the call, "
                             "or build the link with one")
        return self.channel

    def table(self, mcs: MCS | str, channel: Channel | None = None) -> CalibrationTable:
        """The calibrated table of ``mcs`` on ``channel`` (default: the link's), computed once, then cached on
        disk in ``self.calibration.folder()``."""
        m = get_mcs(mcs)
        ch = self._channel(channel)
        key = (m.name, channel_key(ch))
        if key not in self._tables:
            self._tables[key] = calibrate(m, ch, config=self.calibration, k=self.k, num_iter=self.num_iter,
                                          demapping=self.demapping, device=self.device)
        return self._tables[key]

    def select(self, snr_db: float, channel: Channel | None = None) -> MCS:
        """The MCS used at ``snr_db`` (dB): the fixed one, or the adaptive choice on ``channel`` (default: the
        link's)."""
        if self.mcs is not None:
            return self.mcs
        ch = self._channel(channel)
        return select_mcs(snr_db, {name: self.table(name, ch) for name in MCS_TABLE}, bler_target=self.bler_target)

    def channel_uses_for_bits(self, n_bits: int, mcs: MCS | str | None = None) -> int:
        """:func:`channel_uses_for_bits` with this link's ``k`` (``mcs`` required for an adaptive link)."""
        m = mcs if mcs is not None else self.mcs
        if m is None:
            raise ValueError("this link is adaptive: pass mcs= (e.g. LinkResult.mcs) to count channel uses")
        return channel_uses_for_bits(n_bits, m, k=self.k, repeat=self.repeat)

    # -- sending -------------------------------------------------------------
    def send_bits(self, bits: torch.Tensor, snr_db: float, *, channel: Channel | None = None,
                  generator: torch.Generator | None = None) -> LinkResult:
        """Send ``bits`` ``[B, n_bits]`` (0/1) at ``snr_db`` (Es/N0, dB) -> :class:`LinkResult` with ``bits_hat``.

        ``channel``: this call's channel (default: the link's).
        """
        check_bits(bits)
        if bits.dim() != 2:
            raise ValueError(f"bits must be [B, n_bits], got shape {tuple(bits.shape)}")
        b = bits.detach().to("cpu", torch.uint8)
        res, hats = self._send(list(b), snr_db, generator, self._channel(channel))
        res.bits_hat = torch.stack(hats).to(torch.float32) if hats else torch.zeros(bits.shape, dtype=torch.float32)
        return res

    def send_bytes(self, payloads: Sequence[bytes], snr_db: float, *, channel: Channel | None = None,
                   generator: torch.Generator | None = None) -> LinkResult:
        """Send byte strings (MSB first) at ``snr_db`` -> :class:`LinkResult` with ``received`` (same lengths).

        ``channel``: this call's channel (default: the link's).
        """
        if isinstance(payloads, (bytes, bytearray)) or not all(isinstance(p, (bytes, bytearray)) for p in payloads):
            raise TypeError("payloads must be a list of bytes objects (one per item)")
        rows = [_bit_row(p) for p in payloads]
        res, hats = self._send(rows, snr_db, generator, self._channel(channel))
        res.received = [np.packbits(h.numpy()).tobytes() for h in hats]
        return res

    # -- what goes on the air ------------------------------------------------
    def modulate(self, payload: bytes | torch.Tensor, *, mcs: MCS | str | None = None,
                 max_codewords: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The QAM symbols the link sends for one item's ``payload``.

        Args:
            payload: bytes (MSB first) or 1-D 0/1 bits ``[n_bits]``.
            mcs: the MCS (default: the link's; required for an adaptive link).
            max_codewords: keep only the first this many codewords (``None``: all).

        Returns:
            ``(bits [n_codewords, k] float 0/1, symbols [n_codewords * n_sym_per_codeword] complex64)``:
            the payload zero-padded to whole codewords, LDPC-encoded and Gray-QAM mapped
            (unit average energy), in the order they go on the air.
        """
        m = get_mcs(mcs) if mcs is not None else self.mcs
        if m is None:
            raise ValueError("this link is adaptive: pass mcs= (e.g. link.select(snr_db, channel)) to modulate")
        if max_codewords is not None and (isinstance(max_codewords, bool) or not isinstance(max_codewords, int)
                                          or max_codewords < 1):
            raise ValueError(f"max_codewords must be a positive integer or None (all), got {max_codewords!r}")
        row = _bit_row(payload)
        n_cw = math.ceil(row.numel() / self.k)
        if max_codewords is not None:
            n_cw = min(n_cw, max_codewords)
            row = row[: n_cw * self.k]
        u = self._padded([row], [n_cw]).to(torch.float32)
        if n_cw == 0:
            return u, torch.zeros(0, dtype=torch.complex64)
        x = self.qam(m).map(self.code(m).encode(u.to(self.code(m).device)))  # [n_cw, n_sym_per_codeword]
        return u, x.reshape(-1)

    def constellation(self, payload: bytes | torch.Tensor, snr_db: float, *, channel: Channel | None = None,
                      max_codewords: int | None = 1, generator: torch.Generator | None = None) -> Constellation:
        """Sent and received QAM symbols of ``payload`` at ``snr_db`` (dB): the link's constellation.

        The first ``max_codewords`` codewords of the payload (:meth:`modulate`; ``None``: all)
        go through ``channel`` (default: the link's) as one row, with the link's receiver
        (:func:`genscom.coding.calibration.through_channel`: perfect-CSI zero-forcing,
        ``repeat`` copies combined). Nothing is decoded; use :meth:`qam` ``.demap`` and
        :meth:`code` ``.decode`` on the result to go back to bits.

        Example:
            >>> link = DigitalLink("16qam-1/2", AWGNChannel(), k=256)
            >>> c = link.constellation(b"hello", 20.0, generator=torch.Generator().manual_seed(0))
            >>> c.sent.shape, c.received.shape  # one codeword: 512 coded bits on 128 symbols
            (torch.Size([128]), torch.Size([128]))
        """
        snr = _one_snr(snr_db)
        ch = self._channel(channel)
        m = self.select(snr, ch)
        bits, x = self.modulate(payload, mcs=m, max_codewords=max_codewords)
        if x.numel() == 0:
            empty = torch.zeros(0, dtype=torch.float32)
            return Constellation(mcs=m, snr_db=snr, bits=bits, sent=x, received=x.clone(), noise_var=empty)
        x_hat, nv = through_channel(x[None], ch, snr, generator=generator, repeat=self.repeat)
        return Constellation(mcs=m, snr_db=snr, bits=bits, sent=x, received=x_hat[0], noise_var=nv[0])

    def _send(self, rows: list[torch.Tensor], snr_db: float, generator: torch.Generator | None,
              channel: Channel) -> tuple[LinkResult, list[torch.Tensor]]:
        """Per-item uint8 bit rows -> (result without bits, received uint8 bit rows)."""
        snr = _one_snr(snr_db)
        mcs = self.select(snr, channel)
        lengths = [int(r.numel()) for r in rows]
        n_cw = [math.ceil(n / self.k) for n in lengths]
        total = sum(n_cw)
        use_full = self.fidelity == "full" or (self.fidelity == "auto" and total <= self.max_full_codewords)
        if self.repeat > 1 and getattr(channel, "name", "") != "awgn":
            use_full = True  # repetition over fading: combining gains diversity the AWGN-SNR shift cannot model
        if use_full:
            hats, blk = self._full(rows, n_cw, mcs, snr, generator, channel)
        else:
            hats, blk = self._abstract(rows, n_cw, mcs, snr, generator, channel)
        bit_err = [int((h != r).sum()) for h, r in zip(hats, rows)]
        res = LinkResult(mcs=mcs, fidelity="full" if use_full else "abstract", snr_db=snr,
                         n_blocks=torch.tensor(n_cw, dtype=torch.int64),
                         block_errors=torch.tensor(blk, dtype=torch.int64),
                         bit_errors=torch.tensor(bit_err, dtype=torch.int64),
                         channel_uses=torch.tensor([channel_uses_for_bits(n, mcs, k=self.k, repeat=self.repeat)
                                                    for n in lengths], dtype=torch.int64))
        return res, hats

    def _padded(self, rows: list[torch.Tensor], n_cw: list[int]) -> torch.Tensor:
        """Per-item bits -> ``[total_codewords, k]`` uint8, each item zero-padded to whole codewords."""
        out = torch.zeros(sum(n_cw) * self.k, dtype=torch.uint8)
        pos = 0
        for r, c in zip(rows, n_cw):
            out[pos:pos + r.numel()] = r.to(torch.uint8)
            pos += c * self.k
        return out.view(-1, self.k)

    def _full(self, rows: list[torch.Tensor], n_cw: list[int], mcs: MCS, snr: float,
              generator: torch.Generator | None, channel: Channel) -> tuple[list[torch.Tensor], list[int]]:
        code, qam = self.code(mcs), self.qam(mcs)
        u = self._padded(rows, n_cw)
        if len(u) == 0:
            return [r.clone().to(torch.uint8) for r in rows], [0] * len(rows)
        x = qam.map(code.encode(u.to(torch.float32)))  # [total_cw, n/m]
        sym = x.shape[-1]
        starts = np.concatenate([[0], np.cumsum(n_cw)]).astype(int)
        x_hat = torch.empty_like(x)
        nv = torch.empty(x.shape, dtype=x.real.dtype, device=x.device)
        # items with the same number of codewords go through the channel together, one row each
        for c in sorted(set(c for c in n_cw if c)):
            idx = [i for i, ci in enumerate(n_cw) if ci == c]
            sel = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in idx])
            xi = x[sel].reshape(len(idx), c * sym)
            yi, nvi = through_channel(xi, channel, snr, generator=generator, repeat=self.repeat)
            x_hat[sel] = yi.reshape(len(idx) * c, sym)
            nv[sel] = nvi.reshape(len(idx) * c, sym).to(nv.dtype)
        u_hat = code.decode(qam.demap(x_hat, nv)).to("cpu", torch.uint8)
        cw_fail = (u_hat != u).any(dim=-1)
        hats, blk = [], []
        for i, r in enumerate(rows):
            hats.append(u_hat[starts[i]:starts[i + 1]].reshape(-1)[: r.numel()].clone())
            blk.append(int(cw_fail[starts[i]:starts[i + 1]].sum()))
        return hats, blk

    def _abstract(self, rows: list[torch.Tensor], n_cw: list[int], mcs: MCS, snr: float,
                  generator: torch.Generator | None, channel: Channel) -> tuple[list[torch.Tensor], list[int]]:
        table = self.table(mcs, channel)
        snr = snr + 10.0 * math.log10(self.repeat)  # AWGN only (fading with repeat > 1 is simulated)
        if not table.snr_db[0] <= snr <= table.snr_db[-1]:
            log.warning("snr_db %.2f is outside the calibrated grid [%.1f, %.1f] dB; using the nearest end",
                        snr, table.snr_db[0], table.snr_db[-1])
        p = table.bler_at(snr)
        pool = torch.tensor(table.error_count_pool(snr), dtype=torch.int64)
        rber = table.residual_ber_at(snr)
        if generator is not None and generator.device.type != "cpu":  # the draws below are made on the CPU
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            generator = torch.Generator().manual_seed(seed)
        u = self._padded(rows, n_cw)
        total = len(u)
        fail = torch.rand(total, generator=generator) < p
        failed_idx = torch.nonzero(fail).flatten()
        n_fail = len(failed_idx)
        if n_fail:
            if len(pool):
                counts = pool[torch.randint(len(pool), (n_fail,), generator=generator)]
            else:  # no failed codeword seen in calibration near this SNR: binomial at the residual rate, >= 1
                counts = torch.binomial(torch.full((n_fail,), float(self.k)), torch.full((n_fail,), float(rber)),
                                        generator=generator).to(torch.int64).clamp_min(1)
            counts = counts.clamp_max(self.k)
            cols = torch.arange(self.k)
            # exactly `count` distinct wrong positions per failed codeword: the first `count`
            # entries of a random permutation of the k positions (vectorised in chunks)
            for lo in range(0, n_fail, 4096):
                hi = min(lo + 4096, n_fail)
                perm = torch.rand(hi - lo, self.k, generator=generator).argsort(dim=1)
                flip = torch.zeros(hi - lo, self.k, dtype=torch.uint8)
                flip.scatter_(1, perm, (cols[None, :] < counts[lo:hi, None]).to(torch.uint8))
                u[failed_idx[lo:hi]] ^= flip
        starts = np.concatenate([[0], np.cumsum(n_cw)]).astype(int)
        hats = [u[starts[i]:starts[i + 1]].reshape(-1)[: r.numel()].clone() for i, r in enumerate(rows)]
        blk = [int(fail[starts[i]:starts[i + 1]].sum()) for i in range(len(rows))]
        return hats, blk



__all__ = ["CSI", "Constellation", "DigitalLink", "Fidelity", "LinkResult"]
