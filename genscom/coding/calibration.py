r"""Monte-Carlo simulation of LDPC + QAM over a channel, and the calibrated tables of the link abstraction.

* :func:`through_channel`: one pass of symbols over a genscom channel with perfect-CSI
  zero-forcing (and maximum-ratio combining of repeated copies) -> symbol estimates
  and their effective noise variance (what the demapper sees).
* :func:`simulate_uncoded_ber`, :func:`simulate_coded`: measured BER / BLER.
* :func:`calibrate`: the block error rate (BLER) and the number of wrong info bits of
  every failed codeword per MCS and SNR, by full simulation, stored as JSON
  (:class:`CalibrationTable`), keyed by MCS, channel (name and parameters), k,
  iterations, SNR grid, sizes, seed and :data:`CALIBRATION_VERSION`.

**Where the tables go.** The folder is explicit: ``CalibrationConfig(cache_dir=...)``
puts them in ``<cache_dir>/link_calibration``. Where nothing is passed
(``cache_dir=None``) they go to :func:`default_cache_dir`:
``$GENSCOM_CACHE/link_calibration``, else ``~/.cache/genscom/link_calibration``. Every
table written is logged (INFO) with its path. A :class:`~genscom.coding.link.DigitalLink`
with ``fidelity="abstract"``/``"auto"`` or ``mcs="adaptive"`` calibrates on first use, so
a delivery can write there: pass ``calibration=CalibrationConfig(cache_dir=...)`` to
keep it elsewhere.

The abstract link (:class:`~genscom.coding.link.DigitalLink`) cuts the real bitstream
into codewords; each fails independently with the table's BLER (``log10`` BLER
interpolated linearly in SNR); a failed codeword gets a number of info-bit errors
resampled from the calibration (nearest grid point), at uniformly random positions,
flipped in the real bits. Independence across codewords is an approximation for slow
block fading whose coherence spans several codewords.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from genscom.channels.base import Channel
from genscom.coding.ldpc import DEFAULT_K, DEFAULT_NUM_ITER, LDPCCode, check_k
from genscom.coding.mcs import MCS, get_mcs
from genscom.coding.qam import QAM, DemapMethod
from genscom.utils import atomic_write_json

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1
CACHE_SUBDIR = "link_calibration"


def default_cache_dir() -> Path:
    """The calibration folder used when none is given: ``$GENSCOM_CACHE/link_calibration``,
    else ``~/.cache/genscom/link_calibration`` (read from the environment at call time)."""
    base = os.environ.get("GENSCOM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genscom")
    return Path(base) / CACHE_SUBDIR


# --------------------------------------------------------------------------- one pass over the channel


def through_channel(x: torch.Tensor, channel: Channel, snr_db: float, *,
                    generator: torch.Generator | None = None, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbols ``[B, n]`` complex -> (equalised symbols ``[B, n]``, effective ``N0`` ``[B, n]``), as the link's receiver.

    ``y = h x + n``, ``n ~ CN(0, N0)`` with ``Es/N0 = snr_db`` (dB, unit-energy symbols).

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
    x_hat, _ = through_channel(qam.map(bits), channel, snr_db, generator=generator)
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
    qam = QAM(m.order, method=demapping, precision=code.precision, device=code.device)
    u = torch.randint(0, 2, (n_codewords, code.k), generator=generator, device=code.device).to(torch.float32)
    x = qam.map(code.encode(u))
    x_hat, nv = through_channel(x, channel, snr_db, generator=generator)
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
        cache_dir: root of the table cache: tables go to ``<cache_dir>/link_calibration``;
            ``None``: :func:`default_cache_dir` (``$GENSCOM_CACHE`` or ``~/.cache/genscom``, plus
            ``link_calibration``). See :meth:`folder`.
    """

    snr_grid: tuple[float, ...] = tuple(float(s) for s in range(-10, 31))  # -10..30 dB, 1 dB steps
    n_codewords: int = 100
    pilot_codewords: int = 32
    zero_run: int = 2
    seed: int = 0
    cache_dir: str | os.PathLike[str] | None = None  # None: default_cache_dir()

    def __post_init__(self) -> None:
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a folder path (str or os.PathLike) or None for the default "
                            f"({default_cache_dir()}), got {type(self.cache_dir).__name__}")
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
        """The folder the JSON tables are read from and written to."""
        if self.cache_dir:
            return Path(self.cache_dir) / CACHE_SUBDIR
        return default_cache_dir()


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
    The table is read from / written to ``config.folder()`` (``<config.cache_dir>/link_calibration``,
    or :func:`default_cache_dir` when ``cache_dir`` is ``None``); ``use_cache=False`` touches no disk.
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
        log.info("calibration table of %s on %s written to %s", m.name, chan, path)
    return table



__all__ = [
    "CACHE_SUBDIR", "CALIBRATION_VERSION", "CalibrationConfig", "CalibrationTable", "CodedStats", "calibrate",
    "channel_key", "default_cache_dir", "simulate_coded", "simulate_uncoded_ber", "through_channel",
]
