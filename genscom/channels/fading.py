r"""Block-fading channels (Rayleigh, Rician) and single-tap equalisers.

Model (complex baseband, as in Sionna): ``y = h * x + n`` with ``n ~ CN(0, N0)``
(variance ``N0/2`` per real dimension), ``N0 = Es / 10^(SNR_dB/10)`` and
``E|h|^2 = 1``, so the *average* received SNR equals the set SNR ``Es/N0``.

Block fading: along the last dimension, symbols ``[b*c, (b+1)*c)`` share one
coefficient ``h_b`` (``c = coherence`` symbols per block, the coherence block
length in channel uses); blocks are independent, and so are the items of a
batch. A last block shorter than ``c`` (when ``n % c != 0``) is its own block.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> ch = RayleighBlockFading(coherence=16)
    >>> out = ch(torch.ones(4, 64, dtype=torch.complex64), 10.0, generator=g)
    >>> x_hat, nv = equalize(out.y, out.h, out.noise_var, "zf")
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from genscom.channels.base import (
    Channel,
    ChannelOutput,
    check_complex,
    check_signal_power,
    complex_noise,
    signal_energy,
    snr_to_noise_var,
)

Equalizer = Literal["zf", "mmse"]

DEFAULT_K_FACTOR = 4.0  # linear (6 dB): a moderate line-of-sight link, used when no K is given


def check_coherence(coherence: object, name: str = "coherence") -> int:
    """Return ``coherence`` as a positive int or raise ``ValueError``/``TypeError`` naming it."""
    if isinstance(coherence, bool) or not isinstance(coherence, int):
        raise TypeError(f"{name} must be a positive int (symbols per fading block), got {coherence!r}")
    if coherence <= 0:
        raise ValueError(f"{name} must be >= 1 symbol per fading block, got {coherence}; e.g. coherence=16")
    return coherence


def n_blocks(n: int, coherence: int) -> int:
    """Number of fading blocks covering ``n`` symbols: ``ceil(n / coherence)``."""
    return -(-int(n) // int(coherence))


def expand_blocks(h_blocks: torch.Tensor, coherence: int, n: int) -> torch.Tensor:
    """``[..., n_blocks]`` per-block values -> ``[..., n]`` per-symbol values (block ``b`` covers
    symbols ``[b*coherence, (b+1)*coherence)``; the tail is cut to ``n``)."""
    return h_blocks.repeat_interleave(coherence, dim=-1)[..., :n]


def _real_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.complex128 else torch.float32


def _check_x(x: torch.Tensor) -> None:
    check_complex(x)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have shape [..., n] with n >= 1 symbols, got shape {tuple(x.shape)}")


class _BlockFading(Channel):
    """Shared forward of block-fading channels: subclasses draw ``h`` per block."""

    def __init__(self, *, coherence: int, signal_power: float | str = 1.0) -> None:
        super().__init__()
        self.coherence = check_coherence(coherence)
        self.signal_power = check_signal_power(signal_power)

    def sample_blocks(self, shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device,
                      generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        """``shape`` = ``[..., n_blocks]`` complex coefficients with ``E|h|^2 = 1``."""
        raise NotImplementedError

    def prior(self) -> tuple[complex, float]:  # pragma: no cover - abstract
        """``(mean, variance)`` of ``h`` as a receiver without CSI sees it (used by LMMSE estimation)."""
        raise NotImplementedError

    def sample_h(self, batch_shape: tuple[int, ...] | torch.Size, n: int, *, dtype: torch.dtype = torch.complex64,
                 device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-symbol coefficients ``[*batch_shape, n]`` (constant over each coherence block)."""
        hb = self.sample_blocks(tuple(batch_shape) + (n_blocks(n, self.coherence),), dtype=dtype,
                                device=torch.device(device), generator=generator)
        return expand_blocks(hb, self.coherence, n)

    def forward(self, x: torch.Tensor, snr_db: torch.Tensor | float, *,
                generator: torch.Generator | None = None) -> ChannelOutput:
        """``x`` ``[..., n]`` complex64/complex128 -> :class:`ChannelOutput` with ``h`` ``[..., n]``.

        ``snr_db``: scalar or ``[...]`` (one per item). Differentiable with respect to ``x``.
        ``generator`` must live on ``x``'s device.
        """
        _check_x(x)
        n0 = snr_to_noise_var(snr_db, x) * signal_energy(x, self.signal_power)
        h = self.sample_h(x.shape[:-1], x.shape[-1], dtype=x.dtype, device=x.device, generator=generator)
        noise = complex_noise(x.shape, n0, dtype=x.dtype, device=x.device, generator=generator)
        snr_t = torch.as_tensor(snr_db, dtype=x.real.dtype, device=x.device)
        nv = torch.broadcast_to(n0, x.shape[:-1] + (1,)) if n0.dim() else n0
        return ChannelOutput(y=h * x + noise, h=h, noise_var=nv, snr_db=snr_t, channel=self.name)

    def extra_repr(self) -> str:
        return f"coherence={self.coherence}, signal_power={self.signal_power!r}"


class RayleighBlockFading(_BlockFading):
    r"""Rayleigh block fading: ``y = h x + n``, ``h ~ CN(0, 1)`` per block of ``coherence`` symbols.

    Args:
        coherence: coherence block length in symbols (channel uses) along the last
            dim; ``h`` is constant within a block and independent across blocks and items.
            ``coherence=1`` is fast (i.i.d.) fading.
        signal_power: ``Es`` assumed for the input (1.0 after power normalisation),
            or ``"measured"`` for the mean ``|x|^2`` of each item.

    Input: ``x`` ``[..., n]`` complex, ``snr_db`` scalar or ``[...]`` (dB, ``Es/N0``).
    Output: :class:`ChannelOutput` with ``h`` ``[..., n]`` of ``x``'s dtype and device.
    """

    name = "rayleigh"

    def __init__(self, coherence: int = 16, *, signal_power: float | str = 1.0) -> None:
        super().__init__(coherence=coherence, signal_power=signal_power)

    def prior(self) -> tuple[complex, float]:
        return 0j, 1.0

    def sample_blocks(self, shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        one = torch.ones((), dtype=torch.float64 if dtype == torch.complex128 else torch.float32, device=device)
        return complex_noise(shape, one, dtype=dtype, device=device, generator=generator)


class RicianBlockFading(_BlockFading):
    r"""Rician block fading: ``h = sqrt(K/(K+1)) e^{j theta} + sqrt(1/(K+1)) CN(0, 1)`` per block.

    ``E|h|^2 = 1``; ``K = 0`` is Rayleigh, ``K -> inf`` tends to AWGN (with phase ``theta``).

    Args:
        k_factor: Rician K factor, **linear** (LOS power / scattered power), ``>= 0``.
        k_factor_db: the K factor in dB instead (give at most one of the two; neither ->
            ``DEFAULT_K_FACTOR = 4`` i.e. 6 dB).
        coherence: coherence block length in symbols along the last dim.
        los_phase: ``"random"`` (default): ``theta ~ U[0, 2 pi)`` drawn independently per
            block and item, so a receiver without CSI sees ``E[h] = 0``; or a number (radians):
            a fixed LOS phase for every block (``E[h] = sqrt(K/(K+1)) e^{j theta}``).
        signal_power: as in :class:`RayleighBlockFading`.
    """

    name = "rician"

    def __init__(self, k_factor: float | None = None, *, k_factor_db: float | None = None, coherence: int = 16,
                 los_phase: float | Literal["random"] = "random", signal_power: float | str = 1.0) -> None:
        super().__init__(coherence=coherence, signal_power=signal_power)
        if k_factor is not None and k_factor_db is not None:
            raise ValueError(f"give k_factor (linear) or k_factor_db, not both (got {k_factor!r} and {k_factor_db!r})")
        if k_factor_db is not None:
            if isinstance(k_factor_db, bool) or not isinstance(k_factor_db, (int, float)) or not math.isfinite(k_factor_db):
                raise ValueError(f"k_factor_db must be a finite number of dB, got {k_factor_db!r}")
            k_factor = 10.0 ** (float(k_factor_db) / 10.0)
        if k_factor is None:
            k_factor = DEFAULT_K_FACTOR
        if isinstance(k_factor, bool) or not isinstance(k_factor, (int, float)):
            raise TypeError(f"k_factor must be a number (linear, >= 0), got {k_factor!r}")
        if not math.isfinite(k_factor) or k_factor < 0:
            raise ValueError(f"k_factor must be a finite number >= 0 (linear, not dB), got {k_factor!r}; "
                             "for a K factor in dB pass k_factor_db=")
        if not (los_phase == "random" or (isinstance(los_phase, (int, float)) and not isinstance(los_phase, bool)
                                          and math.isfinite(los_phase))):
            raise ValueError(f"los_phase must be 'random' or a finite number of radians, got {los_phase!r}")
        self.k_factor = float(k_factor)
        self.los_phase = los_phase if los_phase == "random" else float(los_phase)

    def prior(self) -> tuple[complex, float]:
        k = self.k_factor
        if self.los_phase == "random":
            return 0j, 1.0
        los = math.sqrt(k / (k + 1.0))
        return complex(los * math.cos(self.los_phase), los * math.sin(self.los_phase)), 1.0 / (k + 1.0)

    def sample_blocks(self, shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        k = self.k_factor
        one = torch.ones((), dtype=real, device=device)
        scatter = complex_noise(shape, one, dtype=dtype, device=device, generator=generator)
        if self.los_phase == "random":
            theta = torch.rand(shape, generator=generator, dtype=real, device=device) * (2.0 * math.pi)
        else:
            theta = torch.full(shape, float(self.los_phase), dtype=real, device=device)
        los = torch.polar(torch.full(shape, math.sqrt(k / (k + 1.0)), dtype=real, device=device), theta)
        return los + math.sqrt(1.0 / (k + 1.0)) * scatter

    def extra_repr(self) -> str:
        return f"k_factor={self.k_factor}, los_phase={self.los_phase!r}, " + super().extra_repr()


def equalize(y: torch.Tensor, h: torch.Tensor | None, noise_var: torch.Tensor | float,
             method: Equalizer = "zf", *, signal_power: float = 1.0,
             h_error_var: torch.Tensor | float = 0.0, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Single-tap equaliser per symbol: ``y = h x + n`` -> ``(x_hat, nv_eff)``.

    ``"zf"``:   ``x_hat = y / h``; ``nv_eff = (N0 + Es s2) / |h|^2`` (unbiased; exact LLR input).
    ``"mmse"``: ``x_hat = conj(h) y / (|h|^2 + (N0 + Es s2)/Es)``, the biased minimum-MSE estimate;
    ``nv_eff = E|x_hat - x|^2 = Es (N0 + Es s2) / (Es |h|^2 + N0 + Es s2)``. For a single antenna,
    un-biasing MMSE gives back ZF, so demappers should use ``"zf"``; ``"mmse"`` suits analog symbols.

    Args:
        y: ``[..., n]`` complex received symbols.
        h: ``[..., n]`` complex channel (true or estimated), or ``None`` for AWGN, treated as
            ``h = 1`` (ZF: ``x_hat = y``, ``nv_eff = N0``; MMSE shrinks by ``Es/(Es + N0)``).
        noise_var: ``N0`` per complex symbol, broadcastable to ``y`` (e.g. ``ChannelOutput.noise_var``).
        method: ``"zf"`` or ``"mmse"``.
        signal_power: ``Es`` of ``x`` (1 for power-normalised symbols), used by MMSE.
        h_error_var: ``s2``, variance of the CSI error ``h - h_hat`` (0 for perfect CSI; see
            :func:`genscom.channels.sensing.estimate_channel`), treated as extra noise.
        eps: floor on ``|h|^2`` for ZF (deep fades give huge but finite values).

    Returns:
        ``x_hat`` ``[..., n]`` complex and ``nv_eff`` ``[..., n]`` real (same precision as ``y``).
        Differentiable with respect to ``y`` (hence the transmitted ``x``).
    """
    check_complex(y, "y")
    if method not in ("zf", "mmse"):
        raise ValueError(f"method must be 'zf' or 'mmse', got {method!r}")
    if not (isinstance(signal_power, (int, float)) and signal_power > 0):
        raise ValueError(f"signal_power must be a positive number (Es), got {signal_power!r}")
    real = _real_dtype(y)
    n0 = torch.as_tensor(noise_var, device=y.device)
    if n0.is_complex():
        raise TypeError(f"noise_var must be real (N0 per complex symbol), got {n0.dtype}")
    n0 = n0.to(real)
    if not bool(torch.isfinite(n0).all()) or bool((n0 < 0).any()):
        raise ValueError("noise_var must be finite and >= 0 (N0 per complex symbol)")
    s2 = torch.as_tensor(h_error_var, device=y.device).to(real)
    try:
        nv = torch.broadcast_to(n0 + signal_power * s2, y.shape)
    except RuntimeError as exc:
        raise ValueError(f"noise_var/h_error_var of shapes {tuple(n0.shape)}/{tuple(s2.shape)} do not broadcast "
                         f"to y {tuple(y.shape)}; pass a scalar, [..., 1] or [..., n]") from exc
    if h is None:  # AWGN: h = 1
        if method == "zf":
            return y, nv
        return y * (signal_power / (signal_power + nv)), signal_power * nv / (signal_power + nv)
    check_complex(h, "h")
    if h.shape != y.shape:
        try:
            h = torch.broadcast_to(h, y.shape)
        except RuntimeError as exc:
            raise ValueError(f"h has shape {tuple(h.shape)} but y has {tuple(y.shape)}; they must match") from exc
    h = h.to(y.dtype)
    g = h.real.square() + h.imag.square()  # |h|^2
    if method == "zf":
        g = g.clamp_min(eps)
        x_hat = y * h.conj() / g
        return x_hat, nv / g
    denom = g + nv / signal_power
    denom = denom.clamp_min(eps)
    x_hat = y * h.conj() / denom
    nv_eff = signal_power * nv / (signal_power * g + nv).clamp_min(eps)
    return x_hat, nv_eff


def equalize_received(received: ChannelOutput, *, method: Equalizer = "mmse") -> torch.Tensor:
    """Equalise a :class:`ChannelOutput` with the CSI it carries (``h=None``: AWGN, nothing to undo).

    Returns ``[..., n]`` complex symbol estimates. Uses the output's true ``h`` (perfect CSI);
    pilot-estimated CSI lives in :mod:`genscom.channels.sensing`.
    """
    if received.h is None:
        return received.y
    x_hat, _ = equalize(received.y, received.h, received.noise_var, method)
    return x_hat
