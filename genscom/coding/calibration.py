r"""Monte-Carlo simulation of LDPC + QAM over a channel, and the calibrated tables of the link abstraction.

* :func:`through_channel`: one pass of symbols over a genscom channel with zero-forcing
  (perfect CSI, or with ``pilots=`` the LMMSE estimate from pilots opening every coherence block)
  and maximum-ratio combining of repeated copies -> symbol estimates and their effective noise
  variance (what the demapper sees).
* :func:`simulate_uncoded_ber`, :func:`simulate_coded`: measured BER / BLER.
* :func:`run_to_errors`: simulate batches until ``target_block_errors`` block errors or a
  codeword cap (as Sionna's ``sim_ber``), with a Clopper-Pearson interval (:func:`bler_interval`).
* :func:`calibrate`: the block error rate (BLER), its 95 % interval and the number of wrong
  info bits of every failed codeword per SNR, for one MCS on one channel
  (:class:`CalibrationTable`); :func:`calibrate_all`: every MCS on several channels, written
  as one JSON file per channel (how the shipped tables are made).

**How the SNR points are chosen** (``CalibrationConfig(snr_grid=None)``, the default): the
waterfall is found by bisection on a coarse grid (``coarse_step_db`` over ``snr_range``) with
probes of ``pilot_codewords`` codewords (the first coarse point where not all of them fail),
then sampled densely upwards from the last all-fail coarse point, every ``fine_step_db``
(doubled, up to the coarse step, after a step where neither the BLER halved nor the success
rate ``1 - BLER`` doubled: the broad waterfalls of fading channels), each
point run to ``target_block_errors`` block errors or ``max_codewords`` codewords, until a point
has no block error in ``max_codewords`` codewords. Points below are BLER 1 and points above
BLER 0 by monotonicity (recorded as ``"bound"`` anchors at the ends of ``snr_range``).
``snr_grid=(...)`` simulates exactly those points instead (stopping after the first error-free one).

**Where tables are looked up** (:func:`calibrate`, and so every
:class:`~genscom.coding.link.DigitalLink`): first the tables shipped with genscom
(:data:`SHIPPED_DIR`, ``genscom/coding/tables/*.json``: the 5G NR and legacy MCS, k = 1024,
20 iterations, APP demapping, on AWGN, Rayleigh and Rician block fading with coherence 16 and
perfect CSI, and the 5G NR MCS on Rayleigh with pilot CSI, 2, 4 and 8 pilots per block; see its
README), matched on MCS, link key (:func:`link_key`: the channel, and the pilots per block with
pilot CSI), k, iterations, demapping and
:data:`CALIBRATION_VERSION` (``CalibrationConfig(use_shipped=False)`` skips them); then the user
cache: ``CalibrationConfig(cache_dir=...)`` -> ``<cache_dir>/link_calibration``, ``cache_dir=None``
-> :func:`default_cache_dir` (``$GENSCOM_CACHE/link_calibration``, else
``~/.cache/genscom/link_calibration``), keyed by the above and the calibration settings; then it
simulates and writes there (logged at INFO with its path). So a benchmark with the default link
settings reads the shipped tables and writes nothing. A table file that cannot be read (truncated,
not JSON, a missing or wrong-typed field) is a :class:`~genscom.errors.BadFileError` naming it and
the fix (a shipped file: reinstall or restore it; a cached one: delete it), never silently
simulated over.

**Pilot CSI** (``pilots=`` a :class:`~genscom.channels.sensing.PilotLayout` aligned with the
channel's coherence): every simulated codeword travels in a frame with ``P`` known pilots opening
each coherence block; the receiver estimates ``N0`` and ``h`` per block (LMMSE) from them and
zero-forces with the estimate, the estimate's error variance counted as noise
(:func:`genscom.channels.fading.equalize`). Such tables are keyed ``<channel key>+pilots=<P>``
(:func:`link_key`) and are a separate file per ``P``. The SNR axis stays ``Es/N0`` of the data
symbols; the pilots' channel uses are counted by the plan (:class:`~genscom.coding.mcs.LinkPlan`),
not here.

The abstract link (:class:`~genscom.coding.link.DigitalLink`) cuts the real bitstream
into codewords; each fails independently with the table's BLER (``log10`` BLER
interpolated linearly in SNR); a failed codeword gets a number of info-bit errors
resampled from the calibration (nearest grid point), at uniformly random positions,
flipped in the real bits. Independence across codewords is an approximation for slow
block fading whose coherence spans several codewords.

**Speed.** Sionna's BP decoder is slow on a shared 2-core CPU (k = 1024, 20 iterations,
one torch thread, a loaded machine: ~25 codewords/s at rate 1/2, ~3/s at rate 1/5);
the ``ldpc`` package's decoder (``decoder="ldpc"``, :mod:`genscom.coding.ldpc`) is 2x faster
in the waterfall and much faster above it (it stops when the syndrome is satisfied), so
``CalibrationConfig(decoder="auto")`` uses it when installed. Run calibrations with one torch
thread (``torch.set_num_threads(1)``): thread hand-offs dominate Sionna's many small ops.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import platform
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch

from genscom.channels.base import Channel
from genscom.channels.fading import equalize
from genscom.channels.sensing import PilotLayout, pass_with_pilots_csi
from genscom.coding.ldpc import DEFAULT_K, DEFAULT_NUM_ITER, Decoder, LDPCCode, check_k, resolve_decoder
from genscom.coding.mcs import MCS, NR_MCS, LEGACY_MCS, check_pilots, check_repeat, get_mcs
from genscom.coding.qam import QAM, DemapMethod
from genscom.utils import atomic_write_json, atomic_write_text, check_positive_ints

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 2  # 2: adaptive SNR points run to a target number of block errors, intervals, shipped tables
CACHE_SUBDIR = "link_calibration"
SHIPPED_DIR = Path(__file__).resolve().parent / "tables"
"""Folder of the calibration tables shipped as package data (one JSON file per channel)."""


def default_cache_dir() -> Path:
    """The calibration folder used when none is given: ``$GENSCOM_CACHE/link_calibration``,
    else ``~/.cache/genscom/link_calibration`` (read from the environment at call time)."""
    base = os.environ.get("GENSCOM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genscom")
    return Path(base) / CACHE_SUBDIR


# --------------------------------------------------------------------------- one pass over the channel


def through_channel(x: torch.Tensor, channel: Channel, snr_db: float, *,
                    generator: torch.Generator | None = None, repeat: int = 1,
                    pilots: PilotLayout | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbols ``[B, n]`` complex -> (equalised symbols ``[B, n]``, effective ``N0`` ``[B, n]``), as the link's receiver.

    ``y = h x + n``, ``n ~ CN(0, N0)`` with ``Es/N0 = snr_db`` (dB, unit-energy symbols).

    Perfect CSI (``pilots=None``), zero-forcing: ``x_hat = y / h``, ``N0_eff = N0 / |h|^2`` -- for one
    antenna this gives exact LLRs (MMSE un-biased is the same).

    Pilot CSI (``pilots`` a :class:`~genscom.channels.sensing.PilotLayout`): each row's data symbols
    (copies included) go in a frame of ``pilots.frame_length(r n)`` channel uses with ``P`` pilots
    opening every block (:func:`genscom.channels.sensing.pass_with_pilots_csi`); the receiver
    estimates ``N0_hat`` and the LMMSE ``h_hat`` per block with error variance ``s2`` and
    zero-forces with them: ``x_hat = y / h_hat``, ``N0_eff = (N0_hat + s2) / |h_hat|^2``.

    With ``repeat = r`` the row is sent ``r`` times back to back (``[x, x, ..., x]``, so copies
    fall in different fading blocks when the row is longer than the coherence) and the copies
    are combined by maximum-ratio combining: ``x_hat = sum_j x_hat_j / N0_j / sum_j 1 / N0_j``,
    ``N0_eff = 1 / sum_j 1 / N0_j`` (AWGN: an ``r``-fold, ``10 log10 r`` dB, SNR gain).
    """
    n = x.shape[-1]
    out, h_err = pass_with_pilots_csi(x.repeat(1, repeat) if repeat > 1 else x, channel, snr_db,
                                      check_pilots(pilots), generator=generator)
    nv = torch.broadcast_to(torch.as_tensor(out.noise_var, device=x.device), out.y.shape)
    if out.h is None:
        x_hat, nv_eff = out.y, nv
    else:  # the true h (perfect CSI) or the pilots' estimate, its error variance counted as noise
        x_hat, nv_eff = equalize(out.y, out.h, nv, method="zf", h_error_var=0.0 if h_err is None else h_err)
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
                   demapping: DemapMethod = "app", decoder: Decoder = "sionna",
                   code: LDPCCode | None = None, qam: QAM | None = None,
                   device: str | torch.device = "cpu", pilots: PilotLayout | None = None,
                   repeat: int = 1) -> CodedStats:
    """Full LDPC + QAM simulation of ``n_codewords`` random codewords (one per channel row).

    Returns :class:`CodedStats` (``ber``, ``bler``, counts). ``code`` (and ``qam``) may be
    passed to reuse built blocks (the code's ``k``/``num_iter``/decoder then win). ``pilots``: each
    codeword in its own pilot frame, equalised with the pilots' estimates (:func:`through_channel`);
    ``None``: perfect CSI. ``repeat``: every codeword's symbols sent ``repeat`` times and MRC-combined.
    """
    m = get_mcs(mcs)
    if isinstance(n_codewords, bool) or not isinstance(n_codewords, int) or n_codewords < 1:
        raise ValueError(f"n_codewords must be a positive integer, got {n_codewords!r}")
    if code is None:
        code = LDPCCode(k, m.code_rate, bits_per_symbol=m.bits_per_symbol, num_iter=num_iter, decoder=decoder,
                        device=device)
    elif code.rate != m.code_rate or code.bits_per_symbol != m.bits_per_symbol:
        raise ValueError(f"code {code!r} does not match MCS {m.name}; build it with "
                         f"LDPCCode(k, {m.code_rate}, bits_per_symbol={m.bits_per_symbol})")
    if qam is None:
        qam = QAM(m.order, method=demapping, precision=code.precision, device=code.device)
    u = torch.randint(0, 2, (n_codewords, code.k), generator=generator, device=code.device).to(torch.float32)
    x = qam.map(code.encode(u))
    x_hat, nv = through_channel(x, channel, snr_db, generator=generator, pilots=pilots, repeat=repeat)
    u_hat = code.decode(qam.demap(x_hat, nv))
    errs = (u_hat != u).sum(dim=-1)
    failed = errs[errs > 0]
    return CodedStats(ber=float(errs.sum()) / u.numel(), bler=float(len(failed)) / n_codewords,
                      n_codewords=n_codewords, block_errors=int(len(failed)), bit_errors=int(errs.sum()),
                      error_counts=[int(v) for v in failed.tolist()])


def _merge(a: CodedStats, b: CodedStats, k: int) -> CodedStats:
    n = a.n_codewords + b.n_codewords
    blk, bit = a.block_errors + b.block_errors, a.bit_errors + b.bit_errors
    return CodedStats(ber=bit / (n * k) if n else 0.0, bler=blk / n if n else 0.0, n_codewords=n, block_errors=blk,
                      bit_errors=bit, error_counts=a.error_counts + b.error_counts)


# --------------------------------------------------------------------------- counting to a target of errors


def bler_interval(block_errors: int, n_codewords: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of a BLER measured as ``block_errors / n_codewords``.

    ``(0, 1)`` for ``n_codewords = 0``. Under the stop-at-``target_block_errors`` rule of
    :func:`run_to_errors` it is slightly conservative.
    """
    from scipy.stats import beta

    e, n = int(block_errors), int(n_codewords)
    if n < 0 or not 0 <= e <= n:
        raise ValueError(f"need 0 <= block_errors <= n_codewords, got {block_errors!r} of {n_codewords!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n == 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    lo = 0.0 if e == 0 else float(beta.ppf(a / 2, e, n - e + 1))
    hi = 1.0 if e == n else float(beta.ppf(1 - a / 2, e + 1, n - e))
    return lo, hi


def run_to_errors(simulate: Callable[[int], CodedStats], *, target_block_errors: int, max_codewords: int,
                  batch_codewords: int = 128, first_batch: int = 32, k: int = DEFAULT_K,
                  initial: CodedStats | None = None) -> CodedStats:
    """Call ``simulate(n)`` (``n`` random codewords -> :class:`CodedStats`) in batches until at least
    ``target_block_errors`` block errors or ``max_codewords`` codewords.

    The first batch has ``first_batch`` codewords; later ones are sized to reach the target
    (``1.2 x`` the expected need at the BLER so far), between ``first_batch`` and
    ``batch_codewords``, never past the cap. ``initial`` stats (e.g. a probe at the same SNR)
    are counted in.
    """
    for name, v in (("target_block_errors", target_block_errors), ("max_codewords", max_codewords),
                    ("batch_codewords", batch_codewords), ("first_batch", first_batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    st = initial if initial is not None else CodedStats(0.0, 0.0, 0, 0, 0, [])
    while st.block_errors < target_block_errors and st.n_codewords < max_codewords:
        if st.n_codewords == 0:
            want = first_batch
        elif st.block_errors == 0:
            want = batch_codewords
        else:
            need = (target_block_errors - st.block_errors) * st.n_codewords / st.block_errors
            want = min(batch_codewords, max(first_batch, int(math.ceil(1.2 * need))))
        st = _merge(st, simulate(min(want, max_codewords - st.n_codewords)), k)
    return st


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationConfig:
    """How the link abstraction is calibrated (module docstring: how SNR points are chosen, where tables go).

    Attributes:
        snr_range: dB range (Es/N0) searched for the waterfall; its ends anchor the table.
        coarse_step_db: bisection grid step.
        fine_step_db: first step of the dense sampling of the waterfall.
        target_block_errors: each point is simulated until this many block errors ...
        max_codewords: ... or this many codewords (BLER resolution ``1 / max_codewords``).
        pilot_codewords: codewords of a bisection probe (and of the first batch of a point).
        batch_codewords: codewords per simulation call.
        max_points: most dense points per table.
        snr_grid: explicit SNR points (dB) instead of the search; ``None``: search.
        seed: seed of the calibration's own generator, so tables are reproducible.
        decoder: LDPC decoder used to calibrate, ``"auto"`` (the ``ldpc`` package if installed, else
            Sionna; :mod:`genscom.coding.ldpc`). Not part of the cache key: both decode the same code
            with the same rule (recorded in the table's ``decoder``).
        use_shipped: look in :data:`SHIPPED_DIR` first.
        cache_dir: root of the user cache: tables go to ``<cache_dir>/link_calibration``;
            ``None``: :func:`default_cache_dir`. See :meth:`folder`.
    """

    snr_range: tuple[float, float] = (-12.0, 32.0)
    coarse_step_db: float = 1.0
    fine_step_db: float = 0.25
    target_block_errors: int = 50
    max_codewords: int = 500  # 0 errors in 500: BLER < 0.6 % (95 %); a CPU budget of ~40 min for the shipped set
    pilot_codewords: int = 32
    batch_codewords: int = 128
    max_points: int = 32
    snr_grid: tuple[float, ...] | None = None  # None: bisection + dense sampling (module docstring)
    seed: int = 0
    decoder: Decoder = "auto"
    use_shipped: bool = True
    cache_dir: str | os.PathLike[str] | None = None  # None: default_cache_dir()

    def __post_init__(self) -> None:
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a folder path (str or os.PathLike) or None for the default "
                            f"({default_cache_dir()}), got {type(self.cache_dir).__name__}")
        lo, hi = (float(v) for v in self.snr_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"snr_range must be (low, high) finite dB with low < high, got {self.snr_range!r}")
        object.__setattr__(self, "snr_range", (lo, hi))
        for name in ("coarse_step_db", "fine_step_db"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= hi - lo:
                raise ValueError(f"{name} must be a positive number of dB within snr_range, got {v!r}")
        if self.fine_step_db > self.coarse_step_db:
            raise ValueError(f"fine_step_db ({self.fine_step_db}) must not exceed coarse_step_db ({self.coarse_step_db})")
        check_positive_ints(self, ("target_block_errors", "max_codewords", "pilot_codewords", "batch_codewords",
                                   "max_points"))
        if self.pilot_codewords > self.max_codewords:
            raise ValueError(f"pilot_codewords ({self.pilot_codewords}) must not exceed max_codewords "
                             f"({self.max_codewords})")
        if self.snr_grid is not None:
            grid = tuple(float(s) for s in self.snr_grid)
            if len(grid) < 2 or not all(math.isfinite(s) for s in grid) or len(set(grid)) != len(grid):
                raise ValueError(f"snr_grid must hold at least 2 distinct finite dB values (or be None), "
                                 f"got {self.snr_grid!r}")
            object.__setattr__(self, "snr_grid", tuple(sorted(grid)))
        if self.decoder not in ("sionna", "ldpc", "auto"):
            raise ValueError(f"decoder must be 'sionna', 'ldpc' or 'auto', got {self.decoder!r}")

    def folder(self) -> Path:
        """The user-cache folder the JSON tables are read from and written to (after :data:`SHIPPED_DIR`)."""
        if self.cache_dir:
            return Path(self.cache_dir) / CACHE_SUBDIR
        return default_cache_dir()

    def settings(self) -> dict[str, Any]:
        """The settings that shape a table (the cache key's part from this config)."""
        d = asdict(self)
        for name in ("decoder", "use_shipped", "cache_dir"):
            d.pop(name)
        d["snr_range"] = list(self.snr_range)
        d["snr_grid"] = None if self.snr_grid is None else list(self.snr_grid)
        return d


def channel_key(channel: Channel) -> str:
    """``"rayleigh(coherence=64,signal_power=1.0)"``: the channel's name and its simple public settings (cache key)."""
    params = {k: v for k, v in sorted(vars(channel).items())
              if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool))}
    return f"{channel.name}(" + ",".join(f"{k}={v!r}" for k, v in params.items()) + ")"


def link_key(channel: Channel, pilots: PilotLayout | None = None, repeat: int = 1) -> str:
    """The key of a table: :func:`channel_key` for perfect CSI, ``"<channel key>+pilots=<P>"`` with pilot CSI
    (``P`` pilots opening every coherence block: ``"rayleigh(coherence=16,signal_power=1.0)+pilots=2"``).

    The layout's blocks must be the channel's coherence blocks (``PilotLayout.for_channel``); ``ValueError``
    otherwise (a table for misaligned pilots would be another experiment). ``repeat > 1`` appends
    ``"+repeat=<r>"``: each codeword sent ``r`` times back to back and MRC-combined (its own table on fading,
    where the copies see other fades and other estimates; on AWGN it is the base table shifted by ``10 log10 r``).
    """
    layout = check_pilots(pilots)
    tail = "" if check_repeat(repeat) == 1 else f"+repeat={int(repeat)}"
    if layout is None:
        return channel_key(channel) + tail
    coherence = getattr(channel, "coherence", None)
    if layout.coherence != coherence:
        raise ValueError(f"pilots {layout} have blocks of {layout.coherence} channel uses but the channel "
                         f"{channel_key(channel)} has coherence {coherence}; calibrated tables assume pilots opening "
                         f"every coherence block: PilotLayout.for_channel(channel, {layout.pilots_per_block})")
    return f"{channel_key(channel)}+pilots={layout.pilots_per_block}{tail}"


_TABLE_FIELDS = ("mcs", "channel", "k", "n", "num_iter", "snr_db", "bler", "residual_ber", "n_codewords",
                 "error_counts", "source")
_TABLE_OPTIONAL = ("block_errors", "bler_low", "bler_high", "demapping", "decoder", "settings", "wall_s", "key",
                   "version")
_PER_POINT = ("bler", "residual_ber", "n_codewords", "error_counts", "source", "block_errors", "bler_low", "bler_high")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_FIELD_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{k: ("a string", lambda v: isinstance(v, str)) for k in ("mcs", "channel", "demapping", "decoder", "key")},
    **{k: ("an integer", _is_int) for k in ("k", "n", "num_iter", "version")},
    "wall_s": ("a number", _is_number),
    "settings": ("a mapping", lambda v: isinstance(v, dict)),
    **{k: ("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v))
       for k in ("snr_db", "bler", "residual_ber", "bler_low", "bler_high")},
    **{k: ("a list of integers", lambda v: isinstance(v, list) and all(_is_int(x) for x in v))
       for k in ("n_codewords", "block_errors")},
    "error_counts": ("a list of lists of integers",
                     lambda v: isinstance(v, list) and all(isinstance(c, list) and all(_is_int(x) for x in c)
                                                           for c in v)),
    "source": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
}


def _check_table_types(data: dict[str, Any]) -> None:
    """``TypeError`` naming the first field of a table mapping whose value has the wrong type (``None`` is
    allowed for the optional per-point lists). A dedicated check: the shipped tables hold ~10^5 numbers."""
    for name, value in data.items():
        what, ok = _FIELD_CHECKS[name]
        if value is None and name in ("block_errors", "bler_low", "bler_high"):
            continue
        if not ok(value):
            raise TypeError(f"field {name!r} must be {what}, got {value!r:.60} ({type(value).__name__})")


@dataclass
class CalibrationTable:
    """BLER (with a 95 % interval) and residual bit errors of failed codewords per SNR, one MCS on one channel.

    ``bler`` is ``block_errors / n_codewords`` made non-increasing in SNR (running minimum).
    ``source[i]`` says how point ``i`` was obtained: ``"simulated"`` (run to the target of
    errors or the cap) or ``"bound"`` (not simulated: BLER 1 below the waterfall, 0 above it,
    by monotonicity). ``bler_low``/``bler_high``: Clopper-Pearson 95 % interval per point.
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
    block_errors: list[int] | None = None
    bler_low: list[float] | None = None
    bler_high: list[float] | None = None
    demapping: str = "app"
    decoder: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
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
        n_hi = self.n_codewords[hi] or (self.n_codewords[lo] or 1)  # a bound anchor: as the point before it
        b_hi = b[hi] if b[hi] > 0 else min(0.5 / max(n_hi, 1), b[lo])
        t = (x - s[lo]) / (s[hi] - s[lo])
        return float(min(1.0, 10.0 ** ((1 - t) * math.log10(b[lo]) + t * math.log10(b_hi))))

    def snr_at_bler(self, bler: float = 0.1) -> float:
        """The lowest SNR (dB) at which :meth:`bler_at` reaches ``bler`` (bisection on the interpolation);
        ``nan`` if it never does within the table."""
        if not 0.0 < bler < 1.0:
            raise ValueError(f"bler must be in (0, 1), got {bler!r}")
        lo, hi = float(self.snr_db[0]), float(self.snr_db[-1])
        if self.bler_at(hi) > bler:
            return float("nan")
        if self.bler_at(lo) <= bler:
            return lo
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.bler_at(mid) > bler else (lo, mid)
        return hi

    def residual_ber_at(self, snr_db: float) -> float:
        return float(np.interp(float(snr_db), self.snr_db, self.residual_ber))

    def error_count_pool(self, snr_db: float) -> list[int]:
        """Failed-codeword error counts of the grid point nearest ``snr_db`` that has any."""
        order = np.argsort(np.abs(np.asarray(self.snr_db) - float(snr_db)), kind="stable")
        for i in order:
            if self.error_counts[i]:
                return self.error_counts[i]
        return []

    @property
    def total_codewords(self) -> int:
        """Codewords simulated for this table."""
        return int(sum(self.n_codewords))

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _TABLE_FIELDS + _TABLE_OPTIONAL}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CalibrationTable":
        """The table of a :meth:`to_json` mapping. Raises ``KeyError`` for a missing field, ``TypeError`` /
        ``ValueError`` naming a field of the wrong type or per-point lists of different lengths."""
        if not isinstance(d, dict):
            raise TypeError(f"a calibration table must be a mapping of fields, got {type(d).__name__}")
        missing = [k for k in _TABLE_FIELDS if k not in d]
        if missing:
            raise KeyError(f"missing field(s) {missing}")
        data = {k: d[k] for k in _TABLE_FIELDS + _TABLE_OPTIONAL if k in d}
        _check_table_types(data)
        n = len(data["snr_db"])
        per_point = [k for k in _PER_POINT if data.get(k) is not None and len(data[k]) != n]
        if n == 0 or per_point:
            raise ValueError(f"per-point fields {per_point or ['snr_db']} must hold one value per SNR point "
                             f"({n} in snr_db)" if n else "snr_db is empty")
        return cls(**data)


# --------------------------------------------------------------------------- lookup: shipped, then user cache


def _identity(mcs: MCS, chan: str, k: int, num_iter: int, demapping: str) -> dict[str, Any]:
    return {"mcs": mcs.name, "channel": chan, "k": k, "num_iter": num_iter, "demapping": demapping,
            "equalizer": "zf", "version": CALIBRATION_VERSION}


def _matches(table: CalibrationTable, ident: dict[str, Any]) -> bool:
    return (table.mcs == ident["mcs"] and table.channel == ident["channel"] and table.k == ident["k"]
            and table.num_iter == ident["num_iter"] and table.demapping == ident["demapping"]
            and table.version == ident["version"])


_TABLE_FILE = 'a calibration table file ({"meta": {...}, "tables": [...]}, written by calibrate_all)'
_SHIPPED_FIX = ("reinstall genscom (pip install --force-reinstall --no-deps genscom) or restore the file from the "
                "repository (git checkout -- genscom/coding/tables)")


def _table_fix(path: Path) -> str:
    """How to repair the table file ``path``: a shipped one is restored, never recomputed over."""
    try:
        shipped = path.resolve().parent == SHIPPED_DIR.resolve()
    except OSError:  # pragma: no cover - an unreadable folder
        shipped = False
    return _SHIPPED_FIX if shipped else "delete the file and run calibrate_all again (or point out_dir elsewhere)"


def read_table_file(path: str | os.PathLike[str], *, fix: str | None = None) -> tuple[dict[str, Any],
                                                                                     list[CalibrationTable]]:
    """A table file written by :func:`calibrate_all` -> ``(meta, tables)``.

    Raises:
        MissingFileError: no such file.
        BadFileError: truncated or not JSON, not ``{"meta": ..., "tables": [...]}``, or a table with a missing or
            wrong-typed field (naming the file, the table and ``fix``; by default how to restore a shipped
            table, or to delete the file and calibrate again).
    """
    from genscom.errors import BadFileError, first_line
    from genscom.loading import read_json

    p = Path(path)
    fix = fix or _table_fix(p)
    d = read_json(p, expected=_TABLE_FILE, fix=fix, max_bytes=64 * 2**20)
    if not isinstance(d, dict) or not isinstance(d.get("tables"), list) or not isinstance(d.get("meta", {}), dict):
        raise BadFileError(p, problem="not a calibration table file (no 'tables' list)", expected=_TABLE_FILE,
                           fix=fix)
    tables = []
    for i, t in enumerate(d["tables"]):
        try:
            tables.append(CalibrationTable.from_json(t))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadFileError(p, problem=f"table {i}: {first_line(exc, limit=240)}", expected=_TABLE_FILE,
                               fix=fix) from None
    return dict(d.get("meta", {})), tables


def write_table_file(path: str | os.PathLike[str], meta: dict[str, Any], tables: Sequence[CalibrationTable]) -> Path:
    """Write ``{"meta": ..., "tables": [...]}`` atomically, one line per table (small, diff-friendly)."""
    lines = ",\n".join("    " + json.dumps(t.to_json(), separators=(",", ":")) for t in tables)
    text = '{\n  "meta": ' + json.dumps(meta, sort_keys=True) + ',\n  "tables": [\n' + lines + "\n  ]\n}\n"
    return atomic_write_text(path, text)


def shipped_table(mcs: MCS | str, channel: Channel | str, *, k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER,
                  demapping: str = "app", folder: str | os.PathLike[str] | None = None,
                  pilots: PilotLayout | None = None) -> CalibrationTable | None:
    """The table shipped in ``folder`` (default :data:`SHIPPED_DIR`) for this MCS, channel (object, or a
    :func:`link_key` string), ``pilots`` (with a channel object; ``None``: perfect CSI), ``k``, iterations and
    demapping, or ``None``."""
    if isinstance(channel, str) and pilots is not None:
        raise ValueError("pass the channel object with pilots= (or the full link_key string without it)")
    ident = _identity(get_mcs(mcs), channel if isinstance(channel, str) else link_key(channel, pilots), k, num_iter,
                      demapping)
    root = Path(folder) if folder is not None else SHIPPED_DIR
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        _, tables = read_table_file(path)  # a broken file is an error: it is never silently simulated over
        for t in tables:
            if _matches(t, ident):
                return t
    return None


def _cache_path(mcs: MCS, chan: str, k: int, num_iter: int, cfg: CalibrationConfig,
                demapping: str) -> tuple[Path, str]:
    key = json.dumps({**_identity(mcs, chan, k, num_iter, demapping), **cfg.settings()}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() else "_" for c in f"{mcs.name}-{chan.split('(')[0]}")
    return cfg.folder() / f"{safe}-{digest}.json", key


# --------------------------------------------------------------------------- the simulation of one table


def _slow(prev: float, cur: float) -> bool:
    """Little progress in one step: the BLER did not halve and the success rate ``1 - BLER`` did not double
    (the broad waterfalls of fading channels: widen the step)."""
    if cur >= 1.0:  # still all failing: the waterfall has not started, keep the fine step
        return False
    return not (cur * 2 <= prev or (1.0 - prev) * 2 <= (1.0 - cur))


def _search_points(sim: Callable[[float, int], CodedStats], run: Callable[[float, CodedStats | None], CodedStats],
                   cfg: CalibrationConfig) -> list[tuple[float, CodedStats, str]]:
    """SNR points of one table: bisection for the waterfall, then dense sampling (module docstring)."""
    lo, hi = cfg.snr_range
    if cfg.snr_grid is not None:
        out: list[tuple[float, CodedStats, str]] = []
        for s in cfg.snr_grid:
            if out and out[-1][1].block_errors == 0:
                out.append((s, CodedStats(0.0, 0.0, 0, 0, 0, []), "bound"))
            else:
                out.append((s, run(s, None), "simulated"))
        return out
    grid = [round(lo + i * cfg.coarse_step_db, 9) for i in range(int(math.floor((hi - lo) / cfg.coarse_step_db + 1e-9)) + 1)]
    probes: dict[float, CodedStats] = {}

    def all_fail(i: int) -> bool:
        s = grid[i]
        if s not in probes:
            probes[s] = sim(s, cfg.pilot_codewords)
        return probes[s].block_errors == probes[s].n_codewords

    a, b = 0, len(grid)  # first coarse index where not every probe codeword fails
    while a < b:
        mid = (a + b) // 2
        a, b = (mid + 1, b) if all_fail(mid) else (a, mid)
    if a == len(grid):  # never decodes in the range
        s = grid[-1]
        return [(s, run(s, probes.get(s)), "simulated")]
    s = grid[a - 1] if a > 0 else grid[0]
    step = cfg.fine_step_db
    points: list[tuple[float, CodedStats, str]] = []
    while s <= hi + 1e-9 and len(points) < cfg.max_points:
        st = run(s, probes.get(s))
        points.append((s, st, "simulated"))
        if st.block_errors == 0:
            break
        if len(points) >= 2 and _slow(points[-2][1].bler, st.bler):
            step = min(2 * step, cfg.coarse_step_db)
        s = round(s + step, 9)
    if points[0][0] > lo and points[0][1].block_errors > 0:
        points.insert(0, (lo, CodedStats(1.0, 1.0, 0, 0, 0, []), "bound"))
    if points[-1][1].block_errors == 0 and points[-1][0] < hi:
        points.append((hi, CodedStats(0.0, 0.0, 0, 0, 0, []), "bound"))
    return points


def _simulate_table(m: MCS, channel: Channel, chan: str, cfg: CalibrationConfig, *, k: int, num_iter: int,
                    demapping: DemapMethod, key: str, device: str | torch.device,
                    pilots: PilotLayout | None = None, repeat: int = 1) -> CalibrationTable:
    t0 = time.perf_counter()
    code = LDPCCode(k, m.code_rate, bits_per_symbol=m.bits_per_symbol, num_iter=num_iter, decoder=cfg.decoder,
                    device=device)
    qam = QAM(m.order, method=demapping, precision=code.precision, device=code.device)
    gen = torch.Generator(device=code.device).manual_seed(cfg.seed)
    log.info("calibrating %s on %s (k=%d, %d iterations, %s decoder, to %d block errors or %d codewords)",
             m.name, chan, code.k, num_iter, code.decoder, cfg.target_block_errors, cfg.max_codewords)

    def sim(snr: float, n: int) -> CodedStats:
        return simulate_coded(m, channel, snr, n, generator=gen, code=code, qam=qam, pilots=pilots, repeat=repeat)

    def run(snr: float, initial: CodedStats | None) -> CodedStats:
        st = run_to_errors(lambda n: sim(snr, n), target_block_errors=cfg.target_block_errors,
                           max_codewords=cfg.max_codewords, batch_codewords=cfg.batch_codewords,
                           first_batch=cfg.pilot_codewords, k=code.k, initial=initial)
        log.debug("  %s %+.2f dB: %d / %d codewords failed", m.name, snr, st.block_errors, st.n_codewords)
        return st

    points = _search_points(sim, run, cfg)
    snr = [p[0] for p in points]
    raw = [p[1].bler for p in points]
    ci = [bler_interval(p[1].block_errors, p[1].n_codewords) for p in points]
    bler = np.minimum.accumulate(np.asarray(raw, dtype=float)).tolist()
    low = [c[0] for c in ci]
    high = [c[1] for c in ci]
    for i, (_, st, src) in enumerate(points):  # bound anchors: the interval monotonicity gives
        if src == "bound":
            if st.bler >= 1.0:
                low[i], high[i] = (low[i + 1] if i + 1 < len(points) else 0.0), 1.0
            else:
                low[i], high[i] = 0.0, (high[i - 1] if i > 0 else 1.0)
    return CalibrationTable(
        mcs=m.name, channel=chan, k=code.k, n=code.n, num_iter=num_iter, snr_db=snr, bler=bler,
        residual_ber=[float(np.mean(p[1].error_counts)) / code.k if p[1].error_counts else 0.0 for p in points],
        n_codewords=[p[1].n_codewords for p in points], error_counts=[p[1].error_counts for p in points],
        source=[p[2] for p in points], block_errors=[p[1].block_errors for p in points], bler_low=low,
        bler_high=high, demapping=demapping, decoder=code.decoder, settings=cfg.settings(),
        wall_s=round(time.perf_counter() - t0, 2), key=key)


def _lookup(m: MCS, chan: str, cfg: CalibrationConfig, *, k: int, num_iter: int,
            demapping: str) -> CalibrationTable | None:
    """The shipped table (if ``cfg.use_shipped``), else the cached one, else ``None``."""
    if cfg.use_shipped:
        shipped = shipped_table(m, chan, k=k, num_iter=num_iter, demapping=demapping)
        if shipped is not None:
            return shipped
    path, key = _cache_path(m, chan, k, num_iter, cfg, demapping)
    if path.is_file():
        table = read_cached_table(path)
        if table.key == key:
            return table
    return None


def read_cached_table(path: str | os.PathLike[str]) -> CalibrationTable:
    """One table of the user cache (a JSON file written by :func:`calibrate`).

    Raises:
        BadFileError: truncated, not JSON, or a missing or wrong-typed field; the fix is to delete the file
            (the table is simulated again on the next run).
    """
    from genscom.errors import BadFileError, first_line
    from genscom.loading import read_json

    p = Path(path)
    expected = "a cached calibration table (JSON written by calibrate)"
    fix = f"delete {str(p)!r}; the table is simulated and cached again on the next run"
    d = read_json(p, expected=expected, fix=fix, max_bytes=64 * 2**20)
    try:
        return CalibrationTable.from_json(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadFileError(p, problem=first_line(exc, limit=240), expected=expected, fix=fix) from None


def _check_args(channel: Channel | str, demapping: str) -> Channel:
    if isinstance(channel, str):
        from genscom.channels.registry import create_channel

        channel = create_channel(channel)
    if demapping not in ("app", "maxlog"):
        raise ValueError(f"demapping must be 'app' or 'maxlog', got {demapping!r}")
    return channel


def find_table(mcs: MCS | str, channel: Channel | str, *, pilots: PilotLayout | None = None,
               config: CalibrationConfig | None = None, k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER,
               demapping: DemapMethod = "app", repeat: int = 1) -> CalibrationTable | None:
    """The table :func:`calibrate` would return without simulating: shipped (unless ``config.use_shipped`` is
    False), else in the user cache ``config.folder()``; ``None`` when neither holds it. Writes nothing."""
    channel = _check_args(channel, demapping)
    cfg = repeat_config(config or CalibrationConfig(), repeat)
    return _lookup(get_mcs(mcs), link_key(channel, pilots, repeat), cfg, k=check_k(k), num_iter=num_iter,
                   demapping=demapping)


def repeat_config(config: CalibrationConfig, repeat: int) -> CalibrationConfig:
    """``config`` for a table of ``repeat`` copies: the search range's low end moved down by ``10 log10 r`` dB
    (the waterfall moves by about that much), so the table's key records where it was searched."""
    r = check_repeat(repeat)
    if r == 1 or config.snr_grid is not None:
        return config
    lo, hi = config.snr_range
    return dataclasses.replace(config, snr_range=(lo - math.ceil(10.0 * math.log10(r)), hi))


def calibrate(mcs: MCS | str, channel: Channel | str, *, config: CalibrationConfig | None = None,
              k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER, demapping: DemapMethod = "app",
              use_cache: bool = True, device: str | torch.device = "cpu",
              pilots: PilotLayout | None = None, repeat: int = 1) -> CalibrationTable:
    """BLER / residual-error table of ``mcs`` on ``channel``: shipped, cached, or simulated (then cached as JSON).

    Lookup order (module docstring): the shipped tables (unless ``config.use_shipped`` is False),
    the user cache ``config.folder()``, then full LDPC + QAM simulation with SNR points chosen
    by :class:`CalibrationConfig`. Randomness comes from ``torch.Generator().manual_seed(config.seed)``
    (not a caller's generator), so a table is a pure function of its key. ``channel`` may be a
    name, built with ``genscom.channels.registry.create_channel``. ``use_cache=False`` touches no
    disk (neither shipped tables nor the cache). ``pilots``: a table with pilot CSI (a
    :class:`~genscom.channels.sensing.PilotLayout` aligned with the channel's coherence, key
    :func:`link_key`); ``None``: perfect CSI. ``repeat``: the table of ``repeat`` MRC-combined copies
    (:func:`repeat_config` widens the search range).
    """
    m = get_mcs(mcs)
    cfg = repeat_config(config or CalibrationConfig(), repeat)
    channel = _check_args(channel, demapping)
    chan = link_key(channel, pilots, repeat)
    k = check_k(k)
    if use_cache:
        found = _lookup(m, chan, cfg, k=k, num_iter=num_iter, demapping=demapping)
        if found is not None:
            return found
    path, key = _cache_path(m, chan, k, num_iter, cfg, demapping)
    table = _simulate_table(m, channel, chan, cfg, k=k, num_iter=num_iter, demapping=demapping, key=key,
                            device=device, pilots=pilots, repeat=repeat)
    if use_cache:
        atomic_write_json(path, table.to_json())
        log.info("calibration table of %s on %s written to %s", m.name, chan, path)
    return table


def table_file_name(channel: Channel, pilots: PilotLayout | None = None, repeat: int = 1) -> str:
    """``"rayleigh-3f2a9c1d.json"``: the file :func:`calibrate_all` writes for ``channel`` (name + digest of its
    :func:`link_key`); with pilot CSI ``"rayleigh-p2-<digest>.json"`` (``P = 2`` pilots per block)."""
    tag = "" if pilots is None else f"-p{check_pilots(pilots).pilots_per_block}"
    tag += "" if check_repeat(repeat) == 1 else f"-r{int(repeat)}"
    return f"{channel.name}{tag}-{hashlib.sha1(link_key(channel, pilots, repeat).encode()).hexdigest()[:8]}.json"


def calibrate_all(channels: Sequence[Channel | str], mcs_names: Sequence[str] | None = None,
                  config: CalibrationConfig | None = None, progress: Callable[[str], None] | None = None, *,
                  out_dir: str | os.PathLike[str], k: int = DEFAULT_K, num_iter: int = DEFAULT_NUM_ITER,
                  demapping: DemapMethod = "app", meta: dict[str, Any] | None = None,
                  device: str | torch.device = "cpu",
                  pilots_per_block: int | Sequence[int] | None = None,
                  repeats: Sequence[int] = (1,)) -> dict[str, list[CalibrationTable]]:
    """Calibrate every MCS of ``mcs_names`` (default: :data:`~genscom.coding.mcs.NR_MCS` then
    :data:`~genscom.coding.mcs.LEGACY_MCS`) on every channel; write ``out_dir/<table_file_name>``
    per channel after each table (resumable: tables already in the file with the same key are kept).

    ``pilots_per_block``: ``None`` (perfect CSI), or one or several ``P``: pilot-CSI tables with ``P`` pilots
    opening every coherence block of each channel (``PilotLayout.for_channel(channel, P)``), one file per
    channel and ``P`` (:func:`link_key` ``"<channel key>+pilots=<P>"``).

    This is how ``genscom/coding/tables/`` is made: ``out_dir=SHIPPED_DIR`` with the default
    :class:`CalibrationConfig`. Shipped and cached tables are not read (every table is simulated
    unless already in the output file). ``progress`` receives one line per finished table.
    ``meta`` (e.g. ``{"command": ...}``) is stored in each file's ``meta`` with the machine,
    date, decoder, settings, codeword counts and wall time.

    ``repeats``: also tables of ``r`` MRC-combined copies (one file per channel, ``P`` and ``r``; the search
    range widened by :func:`repeat_config`), for the repetition an adaptive link uses below its lowest MCS.

    Returns ``{link key: [tables]}``.
    """
    from genscom.channels.registry import create_channel

    cfg = config or CalibrationConfig()
    names = [get_mcs(n).name for n in (mcs_names if mcs_names is not None else (*NR_MCS, *LEGACY_MCS))]
    chans = [create_channel(c) if isinstance(c, str) else c for c in channels]
    if pilots_per_block is None:
        per_block: list[int | None] = [None]
    else:
        per_block = [pilots_per_block] if isinstance(pilots_per_block, int) else list(pilots_per_block)
        for p in per_block:
            if isinstance(p, bool) or not isinstance(p, int) or p < 2:
                raise ValueError(f"pilots_per_block must be None (perfect CSI) or integers >= 2, got {pilots_per_block!r}")
    out = Path(out_dir)
    k = check_k(k)
    result: dict[str, list[CalibrationTable]] = {}
    for ch, p_block, r in [(ch, p, r) for ch in chans for p in per_block for r in repeats]:
        layout = None if p_block is None else PilotLayout.for_channel(ch, p_block)
        chan = link_key(ch, layout, r)
        cfg_r = repeat_config(cfg, r)
        path = out / table_file_name(ch, layout, r)
        have: dict[str, CalibrationTable] = {}
        file_meta: dict[str, Any] = {}
        if path.is_file():
            file_meta, old = read_table_file(path)
            have = {t.mcs: t for t in old}
        tables: list[CalibrationTable] = []
        for name in names:
            m = get_mcs(name)
            _, key = _cache_path(m, chan, k, num_iter, cfg_r, demapping)
            if name in have and have[name].key == key:
                tables.append(have[name])
                continue
            table = _simulate_table(m, ch, chan, cfg_r, k=k, num_iter=num_iter, demapping=demapping, key=key,
                                    device=device, pilots=layout, repeat=r)
            tables.append(table)
            done = {t.mcs: t for t in tables}
            kept = [have[n] for n in have if n not in done]  # other MCS already in the file stay
            file_meta = {
                **file_meta, **(meta or {}),
                "channel": chan, "csi": "perfect" if layout is None else "pilot",
                "pilots_per_block": None if layout is None else layout.pilots_per_block, "repeat": r,
                "k": k, "num_iter": num_iter, "demapping": demapping,
                "decoder": resolve_decoder(cfg.decoder), "settings": cfg_r.settings(),
                "version": CALIBRATION_VERSION, "machine": f"{platform.machine()} {platform.processor() or ''} "
                                                           f"{os.cpu_count()} cores".strip(),
                "torch_threads": torch.get_num_threads(),
                "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "codewords": int(sum(t.total_codewords for t in [*tables, *kept])),
                "wall_s": round(float(sum(t.wall_s for t in [*tables, *kept])), 1),
            }
            write_table_file(path, file_meta, [*tables, *kept])
            if progress is not None:
                progress(f"{chan.split('(')[0]}{'' if layout is None else f'+pilots={layout.pilots_per_block}'}"
                         f"{'' if r == 1 else f'+repeat={r}'} {name}: {len(table.snr_db)} points, {table.total_codewords} codewords, "
                         f"{table.wall_s:.0f} s, BLER 0.1 at {table.snr_at_bler(0.1):+.2f} dB")
        result[chan] = tables
    return result


__all__ = [
    "CACHE_SUBDIR", "CALIBRATION_VERSION", "SHIPPED_DIR", "CalibrationConfig", "CalibrationTable", "CodedStats",
    "bler_interval", "calibrate", "calibrate_all", "channel_key", "default_cache_dir", "find_table", "link_key",
    "read_cached_table", "read_table_file",
    "run_to_errors", "shipped_table", "simulate_coded", "simulate_uncoded_ber", "table_file_name", "through_channel",
    "write_table_file",
]
