r"""Digital links: 5G LDPC + Gray QAM over a genscom channel, fixed or ideal adaptive MCS.

Pipeline (full fidelity), per item::

    bits [n_bits] -> zero-pad to ceil(n_bits/k) codewords of k bits -> LDPC encode (n bits each)
    -> QAM map (n/m symbols each, unit energy) -> channel (y = h x + n, n ~ CN(0, N0), Es/N0 = snr_db)
    -> perfect-CSI equalisation (ZF: x_hat = y/h, N0_eff = N0/|h|^2) -> LLRs ln P(1)/P(0) -> BP decode

A codeword that fails keeps its wrong bits (PROTOCOL.md). Channel uses are
counted in exactly one place, :func:`channel_uses_for_bits`.

**Calibrated link abstraction** (PROTOCOL.md): :func:`calibrate` runs the full
link per MCS and SNR and stores the block error rate (BLER) and the number of
wrong info bits of every failed codeword, as JSON in the user cache
(``$GENSCOM_CACHE`` or ``~/.cache/genscom``, sub-folder ``link_calibration``),
keyed by MCS, channel (name and parameters), k, iterations, SNR grid, sizes,
seed and :data:`CALIBRATION_VERSION`. The abstract link cuts the real
bitstream into codewords; each fails independently with the table's BLER
(``log10`` BLER interpolated linearly in SNR); a failed codeword gets a number of
info-bit errors resampled from the calibration (nearest grid point), at
uniformly random positions, flipped in the real bits. Independence across
codewords is an approximation for slow block fading whose coherence spans
several codewords.

Speeds measured on the 2-core CPU (k = 1024, 20 iterations, float32, codewords/s
for rates 1/3, 1/2, 2/3): ~110 / 250 / 450 with 2 idle cores; ~50 / 170 / 300 with
``torch.set_num_threads(1)`` while other jobs load the machine; only ~5-10 with 2
threads on a loaded machine (Sionna's BP decoder is many small ops, and thread
hand-offs dominate). On a shared CPU, run with one torch thread. Calibrating the
9 MCS on AWGN with the default :class:`CalibrationConfig` took ~150 s (loaded
machine); a Rayleigh (coherence 16) table ~10 s per MCS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NamedTuple, Sequence

import numpy as np
import torch

from genscom.channels.base import Channel
from genscom.coding.ldpc import DEFAULT_K, DEFAULT_NUM_ITER, LDPCCode, check_k, coded_length, parse_rate
from genscom.coding.qam import QAM, DemapMethod, Precision, check_bits
from genscom.utils import atomic_write_json, check_snr_db

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1
Fidelity = Literal["full", "abstract", "auto"]
CSI = Literal["perfect"]

_MOD_NAMES = {2: "qpsk", 4: "16qam", 6: "64qam"}


# --------------------------------------------------------------------------- MCS


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
    """MCS names in increasing spectral efficiency (plus ``"adaptive"`` for :class:`DigitalLink`)."""
    return list(MCS_TABLE)


def get_mcs(name: MCS | str) -> MCS:
    """``"qpsk-1/2"`` -> :class:`MCS`; unknown names raise ``ValueError`` listing the known ones."""
    if isinstance(name, MCS):
        return name
    key = str(name).strip().lower()
    if key not in MCS_TABLE:
        raise ValueError(f"unknown MCS {name!r}; known MCS: {', '.join(MCS_TABLE)} (or 'adaptive' for DigitalLink)")
    return MCS_TABLE[key]


def check_repeat(repeat: Any) -> int:
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


# --------------------------------------------------------------------------- one pass over the channel


def _through_channel(x: torch.Tensor, channel: Channel, snr_db: float, *,
                     generator: torch.Generator | None, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbols ``[B, n]`` -> (equalised symbols ``[B, n]``, effective ``N0`` ``[B, n]``).

    Perfect CSI, zero-forcing: ``x_hat = y / h``, ``N0_eff = N0 / |h|^2`` -- for one
    antenna this gives exact LLRs (MMSE un-biased is the same). With ``repeat = r`` the
    row is sent ``r`` times back to back (``[x, x, ..., x]``, so copies fall in different
    fading blocks when the row is longer than the coherence) and the copies are combined
    by maximum-ratio combining: ``x_hat = sum_j x_hat_j / N0_j / sum_j 1 / N0_j``,
    ``N0_eff = 1 / sum_j 1 / N0_j`` (AWGN: an ``r``-fold, ``10 log10 r`` dB, SNR gain).
    """
    n = x.shape[-1]
    out = channel(x.repeat(1, repeat) if repeat > 1 else x, snr_db, generator=generator)
    nv = torch.broadcast_to(torch.as_tensor(out.noise_var, device=x.device), out.y.shape)
    if out.h is None:
        x_hat, nv_eff = out.y, nv
    else:
        from genscom.channels.fading import equalize  # perfect CSI: the true h

        x_hat, nv_eff = equalize(out.y, out.h, nv, method="zf")
        nv_eff = torch.broadcast_to(torch.as_tensor(nv_eff, device=x.device), x_hat.shape)
    if repeat == 1:
        return x_hat, nv_eff
    w = 1.0 / nv_eff.reshape(*x.shape[:-1], repeat, n)  # MRC weights per copy
    combined = (x_hat.reshape(*x.shape[:-1], repeat, n) * w).sum(dim=-2) / w.sum(dim=-2)
    return combined, 1.0 / w.sum(dim=-2)


def _build_qam(mcs: MCS, demapping: DemapMethod, precision: Precision, device: str | torch.device) -> QAM:
    return QAM(mcs.order, method=demapping, precision=precision, device=device)


def simulate_uncoded_ber(order: int, channel: Channel, snr_db: float, n_bits: int, *,
                         generator: torch.Generator | None = None,
                         row_symbols: int = 4096, device: str | torch.device = "cpu") -> float:
    """Measured BER of uncoded Gray ``order``-QAM over ``channel`` at ``snr_db`` (hard decisions, perfect CSI).

    ``n_bits`` random bits are sent as rows of ``row_symbols`` symbols (one channel
    realisation pattern per row, e.g. fading blocks along the row).
    Compare with :mod:`genscom.coding.theory`.
    """
    qam = QAM(order, device=device)
    m = qam.bits_per_symbol
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or n_bits < m:
        raise ValueError(f"n_bits must be an integer >= {m}, got {n_bits!r}")
    n_sym = n_bits // m
    rows = max(1, math.ceil(n_sym / row_symbols))
    cols = math.ceil(n_sym / rows)
    bits = torch.randint(0, 2, (rows, cols * m), generator=generator, device=qam.device).to(torch.float32)
    x_hat, _ = _through_channel(qam.map(bits), channel, snr_db, generator=generator)
    errors = (qam.hard(x_hat) != bits).sum().item()
    return float(errors) / bits.numel()


class CodedStats(NamedTuple):
    """Result of :func:`simulate_coded`: info-bit error rate, block error rate and raw counts."""

    ber: float
    bler: float
    n_codewords: int
    block_errors: int
    bit_errors: int
    error_counts: list[int]  # wrong info bits of each failed codeword


def simulate_coded(mcs: MCS | str, channel: Channel, snr_db: float, n_codewords: int, *,
                   generator: torch.Generator | None = None, k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER,
                   demapping: DemapMethod = "app",
                   code: LDPCCode | None = None, device: str | torch.device = "cpu") -> CodedStats:
    """Full LDPC + QAM simulation of ``n_codewords`` random codewords (one per channel row).

    Returns :class:`CodedStats` (``ber``, ``bler``, counts). ``code`` may be passed
    to reuse a built :class:`LDPCCode` (its ``k``/``num_iter`` then win).
    """
    m = get_mcs(mcs)
    if isinstance(n_codewords, bool) or not isinstance(n_codewords, int) or n_codewords < 1:
        raise ValueError(f"n_codewords must be a positive integer, got {n_codewords!r}")
    if code is None:
        code = LDPCCode(k, m.code_rate, bits_per_symbol=m.bits_per_symbol, num_iter=num_iter, device=device)
    elif code.rate != m.code_rate or code.bits_per_symbol != m.bits_per_symbol:
        raise ValueError(f"code {code!r} does not match MCS {m.name}; build it with "
                         f"LDPCCode(k, {m.code_rate}, bits_per_symbol={m.bits_per_symbol})")
    qam = _build_qam(m, demapping, code.precision, code.device)
    u = torch.randint(0, 2, (n_codewords, code.k), generator=generator, device=code.device).to(torch.float32)
    x = qam.map(code.encode(u))
    x_hat, nv = _through_channel(x, channel, snr_db, generator=generator)
    u_hat = code.decode(qam.demap(x_hat, nv))
    errs = (u_hat != u).sum(dim=-1)
    failed = errs[errs > 0]
    return CodedStats(ber=float(errs.sum()) / u.numel(), bler=float(len(failed)) / n_codewords,
                      n_codewords=n_codewords, block_errors=int(len(failed)), bit_errors=int(errs.sum()),
                      error_counts=[int(v) for v in failed.tolist()])


def _merge(a: CodedStats, b: CodedStats, k: int) -> CodedStats:
    n = a.n_codewords + b.n_codewords
    blk, bit = a.block_errors + b.block_errors, a.bit_errors + b.bit_errors
    return CodedStats(ber=bit / (n * k), bler=blk / n, n_codewords=n, block_errors=blk, bit_errors=bit,
                      error_counts=a.error_counts + b.error_counts)


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationConfig:
    """How the link abstraction is calibrated.

    Attributes:
        snr_grid: SNR points in dB (Es/N0), sorted ascending on use.
        n_codewords: codewords simulated per SNR point (BLER resolution ``1/n_codewords``).
        pilot_codewords: a first batch this size; if every codeword fails the point is
            recorded as BLER 1 without simulating the rest (saves time far below threshold).
        zero_run: after this many consecutive points with no failure, higher points are
            recorded as BLER 0 without simulation (BLER is non-increasing in SNR).
        seed: seed of the calibration's own generator, so cached tables are reproducible.
        cache_dir: folder of the JSON tables; ``None``: ``$GENSCOM_CACHE`` or ``~/.cache/genscom``,
            plus ``link_calibration``.
    """

    snr_grid: tuple[float, ...] = tuple(float(s) for s in range(-10, 31))  # -10..30 dB, 1 dB steps
    n_codewords: int = 100
    pilot_codewords: int = 32
    zero_run: int = 2
    seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        grid = tuple(float(s) for s in self.snr_grid)
        if len(grid) < 2 or not all(math.isfinite(s) for s in grid) or len(set(grid)) != len(grid):
            raise ValueError(f"snr_grid must hold at least 2 distinct finite dB values, got {self.snr_grid!r}")
        object.__setattr__(self, "snr_grid", tuple(sorted(grid)))
        for name in ("n_codewords", "pilot_codewords", "zero_run"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.pilot_codewords > self.n_codewords:
            object.__setattr__(self, "pilot_codewords", self.n_codewords)

    def folder(self) -> Path:
        base = self.cache_dir or os.environ.get("GENSCOM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genscom")
        return Path(base) / "link_calibration"


def channel_key(channel: Channel) -> str:
    """``"rayleigh(coherence=64)"``: the channel's name and its simple public settings (cache key)."""
    params = {k: v for k, v in sorted(vars(channel).items())
              if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool))}
    return f"{channel.name}(" + ",".join(f"{k}={v!r}" for k, v in params.items()) + ")"


@dataclass
class CalibrationTable:
    """BLER and residual bit errors of failed codewords per SNR for one MCS on one channel.

    ``bler`` is made non-increasing in SNR (running minimum) after simulation.
    ``source[i]`` says how point ``i`` was obtained: ``"simulated"``, ``"pilot"``
    (all pilot codewords failed) or ``"extrapolated"`` (beyond ``zero_run`` zeros).
    """

    mcs: str
    channel: str
    k: int
    n: int
    num_iter: int
    snr_db: list[float]
    bler: list[float]
    residual_ber: list[float]  # mean wrong-bit fraction of failed codewords' k info bits (0 if none failed)
    n_codewords: list[int]
    error_counts: list[list[int]]
    source: list[str]
    key: str = ""
    version: int = CALIBRATION_VERSION

    def bler_at(self, snr_db: float) -> float:
        """BLER at ``snr_db``: ``log10`` BLER interpolated linearly between grid points, clamped at the ends.

        A grid point with no failure stands for ``0.5 / n_codewords`` when interpolating
        towards it from a point with failures (zero failures in ``n`` only says BLER is
        below about ``1/n``); at and beyond such a point the BLER is 0.
        """
        s, b = self.snr_db, self.bler
        x = float(snr_db)
        if x <= s[0]:
            return float(b[0])
        if x >= s[-1]:
            return float(b[-1])
        lo = int(np.searchsorted(s, x, side="right")) - 1
        hi = lo + 1
        if b[lo] <= 0.0:
            return 0.0
        if x == s[lo]:
            return float(b[lo])
        b_hi = b[hi] if b[hi] > 0 else min(0.5 / max(self.n_codewords[hi], 1), b[lo])
        t = (x - s[lo]) / (s[hi] - s[lo])
        return float(min(1.0, 10.0 ** ((1 - t) * math.log10(b[lo]) + t * math.log10(b_hi))))

    def residual_ber_at(self, snr_db: float) -> float:
        return float(np.interp(float(snr_db), self.snr_db, self.residual_ber))

    def error_count_pool(self, snr_db: float) -> list[int]:
        """Failed-codeword error counts of the grid point nearest ``snr_db`` that has any."""
        order = np.argsort(np.abs(np.asarray(self.snr_db) - float(snr_db)), kind="stable")
        for i in order:
            if self.error_counts[i]:
                return self.error_counts[i]
        return []

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in ("mcs", "channel", "k", "n", "num_iter", "snr_db", "bler", "residual_ber",
                                              "n_codewords", "error_counts", "source", "key", "version")}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CalibrationTable":
        return cls(**{k: d[k] for k in ("mcs", "channel", "k", "n", "num_iter", "snr_db", "bler", "residual_ber",
                                        "n_codewords", "error_counts", "source", "key", "version")})


def _cache_path(mcs: MCS, chan: str, k: int, num_iter: int, cfg: CalibrationConfig,
                demapping: str) -> tuple[Path, str]:
    key = json.dumps({"mcs": mcs.name, "channel": chan, "k": k, "num_iter": num_iter, "grid": list(cfg.snr_grid),
                      "n_codewords": cfg.n_codewords, "pilot": cfg.pilot_codewords, "zero_run": cfg.zero_run,
                      "seed": cfg.seed, "demapping": demapping, "equalizer": "zf",
                      "version": CALIBRATION_VERSION}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() else "_" for c in f"{mcs.name}-{chan.split('(')[0]}")
    return cfg.folder() / f"{safe}-{digest}.json", key


def calibrate(mcs: MCS | str, channel: Channel | str, *, config: CalibrationConfig | None = None,
              k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER, demapping: DemapMethod = "app",
              use_cache: bool = True,
              device: str | torch.device = "cpu") -> CalibrationTable:
    """BLER / residual-error table of ``mcs`` on ``channel`` by full LDPC + QAM simulation, cached as JSON.

    Randomness comes from ``torch.Generator().manual_seed(config.seed)`` (not a caller's
    generator) so that a cached table is a pure function of its key. ``channel``
    may be a name, built with ``genscom.channels.registry.create_channel``.
    Cost: roughly ``n_codewords`` x (points in the waterfall) decodes, see the module
    docstring for speeds; the pilot and zero-run rules skip hopeless and error-free points.
    """
    m = get_mcs(mcs)
    cfg = config or CalibrationConfig()
    if isinstance(channel, str):
        from genscom.channels.registry import create_channel

        channel = create_channel(channel)
    chan = channel_key(channel)
    path, key = _cache_path(m, chan, check_k(k), num_iter, cfg, demapping)
    if use_cache and path.is_file():
        try:
            table = CalibrationTable.from_json(json.loads(path.read_text(encoding="utf-8")))
            if table.key == key:
                return table
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable calibration %s (%s); recomputing", path, exc)
    code = LDPCCode(k, m.code_rate, bits_per_symbol=m.bits_per_symbol, num_iter=num_iter, device=device)
    log.info("calibrating %s on %s (k=%d, %d iterations, %d SNR points, %d codewords each)",
             m.name, chan, code.k, num_iter, len(cfg.snr_grid), cfg.n_codewords)
    gen = torch.Generator(device=code.device).manual_seed(cfg.seed)
    bler, rber, ncw, counts, source = [], [], [], [], []
    zeros = 0
    for snr in cfg.snr_grid:
        if zeros >= cfg.zero_run:  # BLER is non-increasing in SNR: no need to simulate
            st, src = CodedStats(0.0, 0.0, 0, 0, 0, []), "extrapolated"
        else:
            st = simulate_coded(m, channel, snr, cfg.pilot_codewords, generator=gen, code=code, demapping=demapping)
            src = "pilot" if st.block_errors == st.n_codewords else "simulated"
            if src == "simulated" and cfg.n_codewords > cfg.pilot_codewords:
                rest = simulate_coded(m, channel, snr, cfg.n_codewords - cfg.pilot_codewords, generator=gen,
                                      code=code, demapping=demapping)
                st = _merge(st, rest, code.k)
        if src != "extrapolated":
            zeros = zeros + 1 if st.block_errors == 0 else 0
        bler.append(st.bler)
        rber.append(float(np.mean(st.error_counts)) / code.k if st.error_counts else 0.0)
        ncw.append(st.n_codewords)
        counts.append(st.error_counts)
        source.append(src)
        log.debug("  %s %.1f dB: BLER %.3f (%s)", m.name, snr, st.bler, src)
    bler = np.minimum.accumulate(np.asarray(bler)).tolist()
    table = CalibrationTable(mcs=m.name, channel=chan, k=code.k, n=code.n, num_iter=num_iter,
                             snr_db=list(cfg.snr_grid), bler=bler, residual_ber=rber, n_codewords=ncw,
                             error_counts=counts, source=source, key=key)
    if use_cache:
        atomic_write_json(path, table.to_json())
    return table


def select_mcs(snr_db: float, tables: dict[str, CalibrationTable], *, bler_target: float = 0.1) -> MCS:
    """Ideal adaptive MCS: the highest spectral efficiency whose BLER at ``snr_db`` is <= ``bler_target``.

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


# --------------------------------------------------------------------------- the link


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


class DigitalLink:
    """LDPC + QAM over ``channel`` at a fixed MCS or ideal adaptive MCS.

    Args:
        mcs: an :class:`MCS`, its name (``"16qam-1/2"``) or ``"adaptive"`` (per call, the
            highest-efficiency MCS whose calibrated BLER at the SNR is <= ``bler_target``,
            else the most robust; calibrates all 9 MCS on first use, then cached).
        channel: a :class:`genscom.channels.base.Channel`.
        csi: ``"perfect"``: zero-forcing with the true ``h`` of fading channels
            (``N0_eff = N0/|h|^2`` per symbol, exact LLRs).
        fidelity: ``"full"`` simulation, ``"abstract"`` (calibrated table), or ``"auto"``:
            full when the call has at most ``max_full_codewords`` codewords in total.
        k: info bits per codeword (default 1024); ``num_iter``: BP iterations.
        bler_target: BLER target of the adaptive choice.
        calibration: :class:`CalibrationConfig` for abstraction / adaptive tables.
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

    def __init__(self, mcs: MCS | str, channel: Channel, *, csi: CSI = "perfect",
                 fidelity: Fidelity = "auto", k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER,
                 demapping: DemapMethod = "app", bler_target: float = 0.1, max_full_codewords: int = 256,
                 calibration: CalibrationConfig | None = None, precision: Precision = "single",
                 device: str | torch.device = "cpu", repeat: int = 1) -> None:
        self.adaptive = isinstance(mcs, str) and mcs.strip().lower() == "adaptive"
        self.mcs: MCS | None = None if self.adaptive else get_mcs(mcs)
        if not isinstance(channel, Channel):
            raise TypeError(f"channel must be a genscom.channels.base.Channel, got {type(channel).__name__}")
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
        self.repeat = check_repeat(repeat)
        self.channel = channel
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
        self._tables: dict[str, CalibrationTable] = {}

    # -- pieces, built lazily ------------------------------------------------
    def code(self, mcs: MCS) -> LDPCCode:
        if mcs.name not in self._codes:
            self._codes[mcs.name] = LDPCCode(self.k, mcs.code_rate, bits_per_symbol=mcs.bits_per_symbol,
                                             num_iter=self.num_iter, precision=self.precision, device=self.device)
        return self._codes[mcs.name]

    def qam(self, mcs: MCS) -> QAM:
        if mcs.order not in self._qams:
            self._qams[mcs.order] = _build_qam(mcs, self.demapping, self.precision, self.device)
        return self._qams[mcs.order]

    def table(self, mcs: MCS | str) -> CalibrationTable:
        """The calibrated table of ``mcs`` on this link's channel (computed once, then cached on disk)."""
        m = get_mcs(mcs)
        if m.name not in self._tables:
            self._tables[m.name] = calibrate(m, self.channel, config=self.calibration, k=self.k,
                                             num_iter=self.num_iter, demapping=self.demapping, device=self.device)
        return self._tables[m.name]

    def select(self, snr_db: float) -> MCS:
        """The MCS used at ``snr_db``: the fixed one, or the adaptive choice."""
        if self.mcs is not None:
            return self.mcs
        return select_mcs(snr_db, {name: self.table(name) for name in MCS_TABLE}, bler_target=self.bler_target)

    def channel_uses_for_bits(self, n_bits: int, mcs: MCS | str | None = None) -> int:
        """:func:`channel_uses_for_bits` with this link's ``k`` (``mcs`` required for an adaptive link)."""
        m = mcs if mcs is not None else self.mcs
        if m is None:
            raise ValueError("this link is adaptive: pass mcs= (e.g. LinkResult.mcs) to count channel uses")
        return channel_uses_for_bits(n_bits, m, k=self.k, repeat=self.repeat)

    # -- sending -------------------------------------------------------------
    def send_bits(self, bits: torch.Tensor, snr_db: float, *, generator: torch.Generator | None = None) -> LinkResult:
        """Send ``bits`` ``[B, n_bits]`` (0/1) at ``snr_db`` (Es/N0, dB) -> :class:`LinkResult` with ``bits_hat``."""
        check_bits(bits)
        if bits.dim() != 2:
            raise ValueError(f"bits must be [B, n_bits], got shape {tuple(bits.shape)}")
        b = bits.detach().to("cpu", torch.uint8)
        res, hats = self._send(list(b), snr_db, generator)
        res.bits_hat = torch.stack(hats).to(torch.float32) if hats else torch.zeros(bits.shape, dtype=torch.float32)
        return res

    def send_bytes(self, payloads: Sequence[bytes], snr_db: float, *,
                   generator: torch.Generator | None = None) -> LinkResult:
        """Send byte strings (MSB first) at ``snr_db`` -> :class:`LinkResult` with ``received`` (same lengths)."""
        if isinstance(payloads, (bytes, bytearray)) or not all(isinstance(p, (bytes, bytearray)) for p in payloads):
            raise TypeError("payloads must be a list of bytes objects (one per item)")
        rows = [torch.from_numpy(np.unpackbits(np.frombuffer(bytes(p), dtype=np.uint8))) for p in payloads]
        res, hats = self._send(rows, snr_db, generator)
        res.received = [np.packbits(h.numpy()).tobytes() for h in hats]
        return res

    def _send(self, rows: list[torch.Tensor], snr_db: float,
              generator: torch.Generator | None) -> tuple[LinkResult, list[torch.Tensor]]:
        """Per-item uint8 bit rows -> (result without bits, received uint8 bit rows)."""
        snr_t = check_snr_db(snr_db)
        if snr_t.numel() != 1:
            raise ValueError(f"snr_db must be one number for the whole call, got shape {tuple(snr_t.shape)}")
        snr = float(snr_t)
        mcs = self.select(snr)
        lengths = [int(r.numel()) for r in rows]
        n_cw = [math.ceil(n / self.k) for n in lengths]
        total = sum(n_cw)
        use_full = self.fidelity == "full" or (self.fidelity == "auto" and total <= self.max_full_codewords)
        if self.repeat > 1 and getattr(self.channel, "name", "") != "awgn":
            use_full = True  # repetition over fading: combining gains diversity the AWGN-SNR shift cannot model
        if use_full:
            hats, blk = self._full(rows, n_cw, mcs, snr, generator)
        else:
            hats, blk = self._abstract(rows, n_cw, mcs, snr, generator)
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
              generator: torch.Generator | None) -> tuple[list[torch.Tensor], list[int]]:
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
            yi, nvi = _through_channel(xi, self.channel, snr, generator=generator, repeat=self.repeat)
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
                  generator: torch.Generator | None) -> tuple[list[torch.Tensor], list[int]]:
        table = self.table(mcs)
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


__all__ = [
    "CALIBRATION_VERSION", "CalibrationConfig", "CalibrationTable", "CodedStats", "DigitalLink", "LinkResult", "MCS",
    "MCS_TABLE", "calibrate", "channel_key", "channel_uses_for_bits", "get_mcs", "list_mcs", "select_mcs",
    "simulate_coded", "simulate_uncoded_ber",
]
