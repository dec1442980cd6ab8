r"""Channel sensing from known pilots: SNR, noise and channel (CSI) estimates.

Model per coherence block ``b`` with ``P_b`` known pilots ``x_p`` (``|x_p| = 1``):
``y_p = h_b x_p + n_p``, ``n_p ~ CN(0, N0)``. With ``E_b = sum |x_p|^2``:

* LS:    ``h_ls = sum conj(x_p) y_p / E_b``, error variance ``N0 / E_b``.
* LMMSE: ``h = mu + s2 / (s2 + N0/E_b) (h_ls - mu)`` with the channel prior ``h ~ (mu, s2)``
  (Rayleigh ``(0, 1)``; Rician with random LOS phase ``(0, 1)``; fixed phase
  ``(sqrt(K/(K+1)) e^{j theta}, 1/(K+1))``; AWGN ``(1, 0)``), error variance
  ``s2 (N0/E_b) / (s2 + N0/E_b)``.
* Noise:  ``N0_hat = sum_b sum_p |y_p - h_ls x_p|^2 / sum_b (P_b - 1)`` (one complex degree
  of freedom per block is spent on ``h_ls``; unbiased). Needs 2 pilots in some block.
* SNR:   ``Es / N0_hat`` in dB with ``Es = mean |x_p|^2`` of the known pilots (1), i.e. the
  *average* SNR ``Es/N0`` that the transmitter sets, whatever the fade. The received SNR
  of this realisation, ``mean_b |h_b|^2 Es / N0``, is ``effective_snr_db``.

Pilots cost channel uses: :class:`ChannelSensing` carries ``n_pilots``, and
:func:`send_with_pilots` returns the frame length. The SNR estimate is a plain
``[B]`` tensor, ready to feed back to an SNR-adaptive transmitter.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> s = sense(RayleighBlockFading(coherence=16), 10.0, batch=8, n_pilots=64, generator=g)
    >>> s.snr_db.shape
    torch.Size([8])
    >>> data = normalize_power(torch.randn(8, 120, dtype=torch.complex64, generator=g))
    >>> rx = send_with_pilots(data, RayleighBlockFading(coherence=16), 10.0, pilots_per_block=4,
    ...                       csi="pilot", estimator="lmmse", generator=g)
    >>> rx.x_hat.shape == data.shape
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from genscom.channels.base import Channel, ChannelOutput, check_complex
from genscom.channels.fading import Equalizer, check_coherence, equalize, expand_blocks

PilotKind = Literal["zc", "qpsk"]
Estimator = Literal["ls", "lmmse"]
CSI = Literal["perfect", "pilot"]


def _real(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.complex128 else torch.float32


def _check_choice(value: object, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")


def _check_pos_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


# --------------------------------------------------------------------------- pilots


def pilot_sequence(n: int, *, kind: PilotKind = "zc", root: int = 1, dtype: torch.dtype = torch.complex64,
                   device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
    r"""``n`` known unit-modulus pilots ``[n]`` (``|x_p| = 1``, so ``Es = 1``).

    ``"zc"``: Zadoff-Chu ``x_u(m) = exp(-j pi u m (m + n mod 2) / n)``, ``m = 0..n-1``, with root
    ``u = root`` coprime with ``n`` (constant amplitude, deterministic).
    ``"qpsk"``: ``(+-1 +-j)/sqrt(2)`` drawn with ``generator``.
    """
    n = _check_pos_int(n, "n")
    _check_choice(kind, "kind", ("zc", "qpsk"))
    if dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")
    real = _real(dtype)
    if kind == "zc":
        root = _check_pos_int(root, "root")
        if n > 1 and math.gcd(root, n) != 1:
            raise ValueError(f"root must be coprime with the sequence length n={n}, got root={root}; e.g. root=1")
        m = torch.arange(n, dtype=torch.float64, device=device)
        phase = -math.pi * root * m * (m + (n % 2)) / n
        return torch.polar(torch.ones(n, dtype=torch.float64, device=device), phase).to(dtype)
    bits = torch.randint(0, 2, (2, n), generator=generator, device=device).to(real)
    return torch.complex(1 - 2 * bits[0], 1 - 2 * bits[1]) / math.sqrt(2.0)


def channel_prior(channel: Channel) -> tuple[complex, float]:
    """``(mean, variance)`` of the channel coefficient as seen without CSI (LMMSE prior).

    Fading channels expose ``prior()``; a channel without one (AWGN) has ``h = 1`` exactly: ``(1, 0)``.
    """
    prior = getattr(channel, "prior", None)
    if callable(prior):
        mu, var = prior()
        return complex(mu), float(var)
    return 1 + 0j, 0.0


# --------------------------------------------------------------------------- estimators


def _per_item(v: torch.Tensor, batch_shape: torch.Size, name: str) -> torch.Tensor:
    """A scalar, ``[...]`` or ``[..., 1]`` (ChannelOutput style) value -> shape ``batch_shape``."""
    if v.dim() == len(batch_shape) + 1 and v.shape[-1] == 1:
        v = v.squeeze(-1)
    try:
        return torch.broadcast_to(v, batch_shape)
    except RuntimeError as exc:
        raise ValueError(f"{name} of shape {tuple(v.shape)} must be a scalar or one value per item "
                         f"(shape {tuple(batch_shape)})") from exc


def _blocks_args(y_p: torch.Tensor, x_p: torch.Tensor) -> torch.Tensor:
    check_complex(y_p, "y_p")
    check_complex(x_p, "x_p")
    if y_p.dim() < 2:
        raise ValueError(f"y_p must be [..., n_blocks, P] pilot observations, got shape {tuple(y_p.shape)}")
    try:
        x_p = torch.broadcast_to(x_p.to(y_p.dtype), y_p.shape)
    except RuntimeError as exc:
        raise ValueError(f"x_p of shape {tuple(x_p.shape)} does not broadcast to y_p {tuple(y_p.shape)}") from exc
    return x_p


def ls_estimate(y_p: torch.Tensor, x_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``h`` per block.

    Args:
        y_p: ``[..., n_blocks, P]`` received pilots; positions with ``x_p = 0`` are ignored
            (use zero padding for a short last block).
        x_p: known pilots, broadcastable to ``y_p``.

    Returns ``(h_ls [..., n_blocks], energy [..., n_blocks])`` with ``energy = sum |x_p|^2``
    (the LS error variance is ``N0 / energy``).
    """
    x_p = _blocks_args(y_p, x_p)
    energy = (x_p.real.square() + x_p.imag.square()).sum(-1)
    if bool((energy <= 0).any()):
        raise ValueError("every block needs at least one nonzero pilot (x_p has an all-zero block)")
    return (x_p.conj() * y_p).sum(-1) / energy, energy


def estimate_noise_var(y_p: torch.Tensor, x_p: torch.Tensor) -> torch.Tensor:
    """Unbiased ``N0`` per item from LS residuals: ``sum |y_p - h_ls x_p|^2 / sum_b (P_b - 1)``.

    ``y_p``/``x_p`` as in :func:`ls_estimate`; returns ``[...]`` real. Raises ``ValueError``
    when no block holds 2 pilots (the residual is then identically zero).
    """
    x_p = _blocks_args(y_p, x_p)
    h_ls, _ = ls_estimate(y_p, x_p)
    resid = y_p - h_ls.unsqueeze(-1) * x_p
    sq = (resid.real.square() + resid.imag.square()).sum(dim=(-2, -1))
    count = (x_p != 0).sum(-1)  # P_b, [..., n_blocks]
    dof = (count - 1).clamp_min(0).sum(-1)
    if bool((dof == 0).any()):
        raise ValueError("the noise variance needs >= 2 pilots in at least one coherence block "
                         "(increase n_pilots / pilots_per_block, or pass the known noise_var)")
    return sq / dof.to(sq.dtype)


def estimate_snr_db(y_p: torch.Tensor, x_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(snr_db, N0_hat)`` per item: ``10 log10(Es / N0_hat)`` with ``Es = mean |x_p|^2`` over pilots."""
    x_p = _blocks_args(y_p, x_p)
    n0 = estimate_noise_var(y_p, x_p)
    e = x_p.real.square() + x_p.imag.square()
    es = e.sum(dim=(-2, -1)) / (x_p != 0).sum(dim=(-2, -1)).to(e.dtype)
    tiny = torch.finfo(n0.dtype).tiny
    return 10.0 * torch.log10(es / n0.clamp_min(tiny)), n0


def estimate_channel(y_p: torch.Tensor, x_p: torch.Tensor, *, method: Estimator = "ls",
                     noise_var: torch.Tensor | float | None = None,
                     prior: tuple[complex, float] = (0j, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block channel estimate and its error variance.

    Args:
        y_p, x_p: as in :func:`ls_estimate` (``[..., n_blocks, P]``).
        method: ``"ls"`` or ``"lmmse"``.
        noise_var: ``N0``: scalar or ``[...]`` per item; ``None`` estimates it from the pilots.
        prior: ``(mean, variance)`` of ``h`` (:func:`channel_prior`), used by LMMSE.

    Returns ``(h_hat [..., n_blocks] complex, err_var [..., n_blocks] real)``.
    """
    _check_choice(method, "method", ("ls", "lmmse"))
    h_ls, energy = ls_estimate(y_p, x_p)
    if noise_var is None:
        n0 = estimate_noise_var(y_p, x_p)
    else:
        n0 = torch.as_tensor(noise_var, device=y_p.device)
        if n0.is_complex() or not bool(torch.isfinite(n0).all()) or bool((n0 < 0).any()):
            raise ValueError("noise_var must be real, finite and >= 0 (N0 per complex symbol)")
        n0 = n0.to(energy.dtype)
    n0 = _per_item(n0, h_ls.shape[:-1], "noise_var")
    ls_var = n0.unsqueeze(-1) / energy  # [..., n_blocks]
    if method == "ls":
        return h_ls, ls_var
    mu, s2 = prior
    if not (isinstance(s2, (int, float)) and math.isfinite(s2) and s2 >= 0):
        raise ValueError(f"prior variance must be a finite number >= 0, got {s2!r}")
    gain = s2 / (s2 + ls_var).clamp_min(torch.finfo(energy.dtype).tiny)
    h = mu + gain * (h_ls - mu)
    return h, gain * ls_var if s2 > 0 else torch.zeros_like(ls_var)


# --------------------------------------------------------------------------- results


@dataclass
class ChannelSensing:
    """What a receiver learned about the channel from pilots (feed ``snr_db`` back to the transmitter).

    Attributes:
        snr_db: ``[B]`` estimated average SNR ``Es/N0`` (dB), the quantity the transmitter sets.
        channel: the channel's registered name.
        h_hat: ``[B, n]`` complex per-symbol channel estimate (at the pilot symbols in :func:`sense`,
            at the data symbols in :func:`send_with_pilots`), or ``None`` for AWGN (``h = 1`` known).
        fading_mag: ``[B]`` mean ``|h_hat|`` over coherence blocks, or ``None`` for AWGN.
        n_pilots: pilot channel uses per item (their cost).
        noise_var: ``[B]`` estimated ``N0`` per complex symbol.
        effective_snr_db: ``[B]`` received SNR of this realisation, ``mean_b |h_b|^2 Es/N0`` (dB).
        h_error_var: variance of ``h - h_hat``, same shape as ``h_hat`` (``None`` with it).
        estimator: ``"ls"`` or ``"lmmse"``.
    """

    snr_db: torch.Tensor
    channel: str
    h_hat: torch.Tensor | None
    fading_mag: torch.Tensor | None
    n_pilots: int
    noise_var: torch.Tensor | None = None
    effective_snr_db: torch.Tensor | None = None
    h_error_var: torch.Tensor | None = None
    estimator: str = "ls"

    def __post_init__(self) -> None:
        if not isinstance(self.snr_db, torch.Tensor):
            raise TypeError(f"snr_db must be a tensor [B] of dB, got {type(self.snr_db).__name__}")
        if isinstance(self.n_pilots, bool) or not isinstance(self.n_pilots, int) or self.n_pilots < 0:
            raise ValueError(f"n_pilots must be an int >= 0 (channel uses), got {self.n_pilots!r}")
        _check_choice(self.estimator, "estimator", ("ls", "lmmse"))


def _sensing_from_blocks(y_b: torch.Tensor, x_b: torch.Tensor, *, channel: Channel, estimator: Estimator,
                         n_pilots: int) -> tuple[ChannelSensing, torch.Tensor, torch.Tensor]:
    """Estimates from pilot blocks ``[..., nb, P]`` -> (sensing without per-symbol h, h per block, error var per block)."""
    snr_db, n0 = estimate_snr_db(y_b, x_b)
    h_b, err_b = estimate_channel(y_b, x_b, method=estimator, noise_var=n0, prior=channel_prior(channel))
    h_ls, energy = ls_estimate(y_b, x_b)
    # received-SNR estimate: E|h_ls|^2 = |h|^2 + N0/E_b, so subtract the estimation noise
    gain2 = (h_ls.real.square() + h_ls.imag.square() - n0.unsqueeze(-1) / energy).mean(-1)
    eff = snr_db + 10.0 * torch.log10(gain2.clamp_min(torch.finfo(gain2.dtype).tiny))
    fading = getattr(channel, "coherence", None) is not None
    sensing = ChannelSensing(snr_db=snr_db, channel=channel.name, h_hat=None,
                             fading_mag=h_b.abs().mean(-1) if fading else None, n_pilots=n_pilots,
                             noise_var=n0, effective_snr_db=eff, h_error_var=None, estimator=estimator)
    return sensing, h_b, err_b


def sense(channel: Channel, snr_db: torch.Tensor | float, *, batch: int, n_pilots: int = 64,
          estimator: Estimator = "ls", pilots: PilotKind = "zc", dtype: torch.dtype = torch.complex64,
          device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> ChannelSensing:
    """Send ``n_pilots`` known unit-energy pilots per item through ``channel`` and estimate it.

    The pilots fill ``ceil(n_pilots / coherence)`` coherence blocks of a fading channel (one
    block for AWGN); ``h`` is estimated per block (``estimator``), ``N0`` and the SNR from all
    LS residuals. Cost: ``n_pilots`` channel uses per item.

    Args:
        channel: any :class:`Channel` (one with a ``coherence`` attribute is block fading).
        snr_db: the true SNR, scalar or ``[batch]``.
        batch: number of items ``B``.
        n_pilots: pilots per item (>= 2, and >= 2 in some coherence block).
        estimator: ``"ls"`` or ``"lmmse"`` (with the estimated ``N0`` and :func:`channel_prior`).
        pilots: ``"zc"`` (Zadoff-Chu) or ``"qpsk"`` (random, from ``generator``).

    Returns :class:`ChannelSensing`: ``snr_db``, ``noise_var``, ``effective_snr_db``, ``fading_mag``
    ``[B]``; ``h_hat``/``h_error_var`` ``[B, n_pilots]`` (``None`` for AWGN).
    """
    if not isinstance(channel, Channel):
        raise TypeError(f"channel must be a genscom Channel, got {type(channel).__name__}")
    batch = _check_pos_int(batch, "batch")
    n_pilots = _check_pos_int(n_pilots, "n_pilots", 2)
    _check_choice(estimator, "estimator", ("ls", "lmmse"))
    x = pilot_sequence(n_pilots, kind=pilots, dtype=dtype, device=device, generator=generator).expand(batch, n_pilots)
    out = channel(x, snr_db, generator=generator)
    coherence = getattr(channel, "coherence", None) or n_pilots
    nb = -(-n_pilots // coherence)
    pad = nb * coherence - n_pilots  # zero pilots in a short last block are ignored by the estimators
    y_b = torch.nn.functional.pad(out.y, (0, pad)).reshape(batch, nb, coherence)
    x_b = torch.nn.functional.pad(x, (0, pad)).reshape(batch, nb, coherence)
    sensing, h_b, err_b = _sensing_from_blocks(y_b, x_b, channel=channel, estimator=estimator, n_pilots=n_pilots)
    if sensing.fading_mag is not None:
        sensing.h_hat = expand_blocks(h_b, coherence, n_pilots)
        sensing.h_error_var = expand_blocks(err_b, coherence, n_pilots)
    return sensing


# --------------------------------------------------------------------------- data + pilots in one frame


@dataclass(frozen=True)
class PilotLayout:
    """Where pilots sit in a frame: each block starts with ``pilots_per_block`` pilots, then data.

    Attributes:
        pilots_per_block: ``P`` pilots at the start of every block (>= 2: one complex degree of
            freedom for ``h``, at least one more for ``N0``).
        coherence: block length in channel uses, equal to the fading channel's coherence so that
            each block sees one ``h`` (``P`` pilots + ``coherence - P`` data symbols; the last
            block may carry fewer data symbols). ``None``: a single block, ``P`` pilots then all
            the data (AWGN).

    Example: ``P = 2, coherence = 8``, 10 data symbols -> ``pp dddddd pp dddd`` (14 channel uses).
    """

    pilots_per_block: int = 4
    coherence: int | None = None

    def __post_init__(self) -> None:
        _check_pos_int(self.pilots_per_block, "pilots_per_block", 2)
        if self.coherence is not None:
            check_coherence(self.coherence)
            if self.coherence <= self.pilots_per_block:
                raise ValueError(f"coherence ({self.coherence}) must exceed pilots_per_block "
                                 f"({self.pilots_per_block}) to leave room for data in each block")

    @classmethod
    def for_channel(cls, channel: Channel, pilots_per_block: int = 4) -> "PilotLayout":
        """Blocks aligned with ``channel.coherence`` (one block for channels without one)."""
        return cls(pilots_per_block=pilots_per_block, coherence=getattr(channel, "coherence", None))

    def data_per_block(self, n_data: int) -> int:
        return n_data if self.coherence is None else self.coherence - self.pilots_per_block

    def n_blocks(self, n_data: int) -> int:
        _check_pos_int(n_data, "n_data")
        return -(-n_data // self.data_per_block(n_data))

    def frame_length(self, n_data: int) -> int:
        """Channel uses for ``n_data`` data symbols plus their pilots."""
        return self.n_blocks(n_data) * self.pilots_per_block + n_data

    def insert(self, data: torch.Tensor, pilots: torch.Tensor) -> torch.Tensor:
        """``data`` ``[..., n_data]`` + ``pilots`` ``[P]`` -> frame ``[..., frame_length(n_data)]`` (differentiable)."""
        check_complex(data, "data")
        check_complex(pilots, "pilots")
        p = self.pilots_per_block
        if pilots.shape != (p,):
            raise ValueError(f"pilots must have shape [{p}] (pilots_per_block), got {tuple(pilots.shape)}")
        n = data.shape[-1]
        nb, d = self.n_blocks(n), self.data_per_block(n)
        blocks = torch.nn.functional.pad(data, (0, nb * d - n)).reshape(*data.shape[:-1], nb, d)
        pil = pilots.to(data.dtype).expand(*data.shape[:-1], nb, p)
        return torch.cat([pil, blocks], dim=-1).flatten(-2)[..., : self.frame_length(n)]

    def split(self, frame: torch.Tensor, n_data: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame ``[..., frame_length(n_data)]`` -> (pilot part ``[..., n_blocks, P]``, data ``[..., n_data]``)."""
        length = self.frame_length(n_data)
        if frame.shape[-1] != length:
            raise ValueError(f"frame has {frame.shape[-1]} symbols but {n_data} data symbols need {length}")
        nb, d, p = self.n_blocks(n_data), self.data_per_block(n_data), self.pilots_per_block
        blocks = torch.nn.functional.pad(frame, (0, nb * (p + d) - length)).reshape(*frame.shape[:-1], nb, p + d)
        return blocks[..., :p], blocks[..., p:].flatten(-2)[..., :n_data]

    def expand(self, per_block: torch.Tensor, n_data: int) -> torch.Tensor:
        """Per-block values ``[..., n_blocks]`` -> per-data-symbol values ``[..., n_data]``."""
        return expand_blocks(per_block, self.data_per_block(n_data), n_data)


@dataclass
class PilotReception:
    """Result of :func:`send_with_pilots` / :func:`receive_with_pilots`.

    Attributes:
        x_hat: ``[..., n_data]`` equalised data symbols.
        noise_var: ``[..., n_data]`` effective noise variance per equalised symbol (for demappers).
        sensing: :class:`ChannelSensing`; its ``h_hat`` is the CSI used at the data symbols
            (true ``h`` for ``csi="perfect"``, ``None`` on AWGN with perfect CSI).
        output: the raw :class:`ChannelOutput` of the whole frame (pilots included).
        layout: the :class:`PilotLayout`.
        channel_uses: frame length per item (data + pilots).
    """

    x_hat: torch.Tensor
    noise_var: torch.Tensor
    sensing: ChannelSensing
    output: ChannelOutput
    layout: PilotLayout
    channel_uses: int


def receive_with_pilots(out: ChannelOutput, layout: PilotLayout, pilots: torch.Tensor, *, n_data: int,
                        channel: Channel, csi: CSI = "pilot", estimator: Estimator = "lmmse",
                        equalizer: Equalizer = "zf") -> PilotReception:
    """Receiver half of :func:`send_with_pilots`: estimate from the pilots, equalise the data.

    ``csi="perfect"`` equalises with the true ``out.h`` and ``out.noise_var`` (the SNR is
    still estimated from the pilots); ``csi="pilot"`` with the per-block ``estimator`` output,
    the estimated ``N0`` and the CSI error variance treated as extra noise.
    """
    _check_choice(csi, "csi", ("perfect", "pilot"))
    _check_choice(estimator, "estimator", ("ls", "lmmse"))
    _check_choice(equalizer, "equalizer", ("zf", "mmse"))
    y_p, y_d = layout.split(out.y, n_data)
    sensing, h_b, err_b = _sensing_from_blocks(y_p, pilots.to(y_p.dtype), channel=channel, estimator=estimator,
                                               n_pilots=layout.n_blocks(n_data) * layout.pilots_per_block)
    if csi == "perfect":
        h = None if out.h is None else layout.split(out.h, n_data)[1]
        nv = torch.as_tensor(out.noise_var, device=y_d.device)
        x_hat, nv_eff = equalize(y_d, h, nv, equalizer)
        sensing.h_hat, sensing.h_error_var = h, None if h is None else torch.zeros_like(h.real)
    else:
        h = layout.expand(h_b, n_data)
        err = layout.expand(err_b, n_data)
        x_hat, nv_eff = equalize(y_d, h, sensing.noise_var.unsqueeze(-1), equalizer, h_error_var=err)
        sensing.h_hat, sensing.h_error_var = h, err
    return PilotReception(x_hat=x_hat, noise_var=nv_eff, sensing=sensing, output=out, layout=layout,
                          channel_uses=layout.frame_length(n_data))


def send_with_pilots(data: torch.Tensor, channel: Channel, snr_db: torch.Tensor | float, *,
                     pilots_per_block: int = 4, csi: CSI = "pilot", estimator: Estimator = "lmmse",
                     equalizer: Equalizer = "zf", pilots: PilotKind = "zc",
                     generator: torch.Generator | None = None) -> PilotReception:
    """Send ``data`` ``[..., n_data]`` (complex, unit energy) with pilots in every coherence block.

    Builds a :class:`PilotLayout` aligned with ``channel.coherence``, inserts ``pilots_per_block``
    known pilots per block, passes the frame through ``channel`` and equalises the data with
    perfect or pilot-estimated CSI (:func:`receive_with_pilots`). Cost:
    ``PilotReception.channel_uses`` channel uses per item. Differentiable with respect to ``data``.
    """
    if not isinstance(channel, Channel):
        raise TypeError(f"channel must be a genscom Channel, got {type(channel).__name__}")
    check_complex(data, "data")
    if data.dim() < 1 or data.shape[-1] == 0:
        raise ValueError(f"data must have shape [..., n_data] with n_data >= 1, got {tuple(data.shape)}")
    _check_choice(csi, "csi", ("perfect", "pilot"))
    _check_choice(estimator, "estimator", ("ls", "lmmse"))
    _check_choice(equalizer, "equalizer", ("zf", "mmse"))
    layout = PilotLayout.for_channel(channel, pilots_per_block)
    p = pilot_sequence(layout.pilots_per_block, kind=pilots, dtype=data.dtype, device=data.device, generator=generator)
    out = channel(layout.insert(data, p), snr_db, generator=generator)
    return receive_with_pilots(out, layout, p, n_data=data.shape[-1], channel=channel, csi=csi,
                               estimator=estimator, equalizer=equalizer)


# --------------------------------------------------------------------------- what the transmitter knows


FEEDBACK_SNR_LO_DB = -10.0
"""Lowest SNR (dB) the feedback word can say; the step is 0.5 dB (``2**bits`` levels)."""
FEEDBACK_BITS_PER_USE = 0.5
"""Side information (feedback) is counted at 0.5 bit per channel use: QPSK with rate-1/4 repetition, robust
far below the lowest data MCS; ``feedback_uses(6) == 12``."""


def feedback_uses(bits: int) -> int:
    """Channel uses that ``bits`` of feedback cost at :data:`FEEDBACK_BITS_PER_USE`."""
    return int(math.ceil(bits / FEEDBACK_BITS_PER_USE))


@dataclass(frozen=True)
class LinkFeedback:
    """What a transmitter knows about the link when it transmits: the receiver's estimate, fed back.

    PROTOCOL.md: a transmitter that adapts to the SNR uses the receiver's *estimate*, fed back with a
    stated number of bits (counted as side information); on fading channels every scheme sends
    pilots per coherence block (counted) and the receiver equalises with their estimates.

    Attributes:
        channel: the channel's registered name (``"awgn"``, ``"rayleigh"``, ``"rician"``).
        snr_db: the fed-back SNR estimate Es/N0 (dB), already quantised to ``bits`` (0.5 dB steps from
            :data:`FEEDBACK_SNR_LO_DB`); ``None``: the transmitter was told nothing.
        bits: feedback bits per item (0 when nothing is fed back), counted by every scheme that reads ``snr_db``.
        csi: ``"pilot"`` (estimated, the default and the headline) or ``"perfect"`` (labelled upper bound: no
            pilots sent, the receiver uses the true channel).
        coherence: the channel's coherence block in channel uses (``None``: AWGN, no pilots needed).
        pilots_per_block: pilots at the start of every coherence block when ``csi="pilot"``.
        pilot_mse: when set (with ``snr_db`` known), the pilot density follows the fed-back SNR: the fewest
            pilots per block in :data:`PILOT_CHOICES` (at least ``pilots_per_block``, at most half a block)
            whose LMMSE estimate of ``h`` has error variance ``1 / (1 + P snr) <= pilot_mse`` (relative to
            ``E|h|^2``; :func:`pilots_for_snr`), as 5G adds DMRS symbols on hard links. The receiver fed the
            SNR back itself, so it knows the layout: no extra bits. ``None``: always ``pilots_per_block``.
        margin_db: back-off (dB) a transmitter with a cliff (an MCS choice) takes off ``snr_db``: the
            estimate exceeds the true SNR by more than this with probability at most 5%
            (:func:`snr_margin_db`; 0 with ``csi="perfect"``). Known to both ends, so it costs no bits.

    Example:
        >>> fb = LinkFeedback(channel="rayleigh", snr_db=5.0, bits=6, coherence=16)
        >>> fb.pilot_layout().frame_length(192)  # 192 data symbols + 2 pilots in each of 14 blocks
        220
    """

    channel: str
    snr_db: float | None = None
    bits: int = 0
    csi: CSI = "pilot"
    coherence: int | None = None
    pilots_per_block: int = 2
    pilot_mse: float | None = None
    margin_db: float = 0.0

    def __post_init__(self) -> None:
        _check_choice(self.csi, "csi", ("perfect", "pilot"))
        if not (isinstance(self.margin_db, (int, float)) and math.isfinite(self.margin_db) and self.margin_db >= 0):
            raise ValueError(f"margin_db must be a finite back-off >= 0 dB, got {self.margin_db!r}")
        if self.snr_db is not None and not math.isfinite(float(self.snr_db)):
            raise ValueError(f"snr_db must be a finite estimate in dB or None, got {self.snr_db!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits < 0:
            raise ValueError(f"bits must be an int >= 0 (feedback bits per item), got {self.bits!r}")
        if self.coherence is not None:
            check_coherence(self.coherence)
        _check_pos_int(self.pilots_per_block, "pilots_per_block", 2)
        if self.pilot_mse is not None and not (isinstance(self.pilot_mse, float) and 0.0 < self.pilot_mse < 1.0):
            raise ValueError(f"pilot_mse must be None (fixed pilots) or a float in (0, 1), the target channel-estimate "
                             f"error variance, got {self.pilot_mse!r}")

    def pilot_layout(self) -> PilotLayout | None:
        """Where pilots go in a frame on this link (``None``: none are needed: AWGN, or ``csi="perfect"``)."""
        if self.csi == "perfect" or self.coherence is None:
            return None
        p = self.pilots_per_block
        if self.pilot_mse is not None and self.snr_db is not None:
            p = pilots_for_snr(self.snr_db, self.coherence, mse=self.pilot_mse, minimum=p)
        return PilotLayout(pilots_per_block=p, coherence=self.coherence)

    @property
    def feedback_uses(self) -> int:
        """Channel uses of the feedback bits (:func:`feedback_uses`)."""
        return feedback_uses(self.bits)


#: Pilots per coherence block the SNR-driven density (:func:`pilots_for_snr`) chooses from.
PILOT_CHOICES = (2, 4, 8)


def pilots_for_snr(snr_db: float, coherence: int, *, mse: float = 1.0 / 3.0, minimum: int = 2) -> int:
    """Pilots per block for an SNR estimate: the fewest ``P`` in :data:`PILOT_CHOICES` (``P >= minimum``)
    with LMMSE channel-estimate error ``1 / (1 + P 10^(snr/10)) <= mse``, at most ``coherence // 2``
    (then that cap, or ``minimum`` if larger).

    Example:
        >>> [pilots_for_snr(s, 16) for s in (-5.0, -2.5, 0.0, 10.0)]
        [8, 4, 2, 2]
    """
    check_coherence(coherence)
    snr = 10.0 ** (float(snr_db) / 10.0)
    cap = max(minimum, coherence // 2)
    for p in PILOT_CHOICES:
        if minimum <= p <= cap and 1.0 / (1.0 + p * snr) <= mse:
            return p
    return max([minimum, *(p for p in PILOT_CHOICES if p <= cap)])


def quantize_feedback_snr(snr_db: float, bits: int) -> float:
    """``snr_db`` on the feedback grid: 0.5 dB steps from :data:`FEEDBACK_SNR_LO_DB`, ``2**bits`` levels, clipped."""
    levels = 2 ** _check_pos_int(bits, "bits")
    idx = min(levels - 1, max(0, round((float(snr_db) - FEEDBACK_SNR_LO_DB) / 0.5)))
    return FEEDBACK_SNR_LO_DB + 0.5 * idx


def snr_margin_db(n_pilots: int, *, coherence: int | None = None, bits: int | None = 6,
                  confidence: float = 0.95) -> float:
    """How far (dB) a fed-back pilot SNR estimate can overshoot the true SNR, at ``confidence``.

    The estimate is ``1 / N0_hat`` (:func:`estimate_noise_var`): with ``n_pilots`` pilots in
    ``ceil(n_pilots / coherence)`` blocks (one block without ``coherence``), ``N0_hat / N0`` is a
    Gamma(``dof``, 1/``dof``) variable, ``dof = n_pilots - blocks``, so the estimate exceeds the truth by
    more than ``-10 log10(q)`` dB with probability ``1 - confidence``, ``q`` its ``1 - confidence``
    quantile; quantising to the 0.5 dB feedback grid (``bits``; ``None``: not quantised) adds up to 0.25 dB.

    Example:
        >>> round(snr_margin_db(64), 2)  # 64 pilots on AWGN, 6 feedback bits
        1.21
    """
    from scipy.stats import gamma

    n = _check_pos_int(n_pilots, "n_pilots", 2)
    if not (isinstance(confidence, float) and 0.5 <= confidence < 1.0):
        raise ValueError(f"confidence must be a probability in [0.5, 1), got {confidence!r}")
    blocks = 1 if coherence is None else -(-n // check_coherence(coherence))
    dof = n - blocks
    if dof < 1:
        raise ValueError(f"{n} pilots in {blocks} blocks leave no residual to estimate N0 from; send more pilots")
    q = float(gamma.ppf(1.0 - confidence, a=dof, scale=1.0 / dof))
    return -10.0 * math.log10(q) + (0.0 if bits is None else 0.25)


def link_feedback(channel: Channel, snr_db: float, *, csi: CSI = "pilot", n_pilots: int = 64, bits: int = 6,
                  pilots_per_block: int = 2, pilot_mse: float | None = None,
                  generator: torch.Generator | None = None) -> LinkFeedback:
    """The feedback a transmitter gets before sending on ``channel`` at the true ``snr_db``.

    ``csi="pilot"``: the receiver estimates the average SNR from ``n_pilots`` pilots of an earlier
    frame (:func:`sense`, noise-variance estimate), quantises it to ``bits`` and feeds it back.
    ``csi="perfect"`` (upper bound): the true SNR, no feedback cost, no pilots, no margin.
    The feedback carries :func:`snr_margin_db` of the sounding as ``margin_db``; ``pilot_mse`` sets the
    SNR-driven pilot density of the data frames (:class:`LinkFeedback`).
    """
    if not isinstance(channel, Channel):
        raise TypeError(f"channel must be a genscom Channel, got {type(channel).__name__}")
    coherence = getattr(channel, "coherence", None)
    if csi == "perfect":
        return LinkFeedback(channel=channel.name, snr_db=float(snr_db), bits=0, csi="perfect", coherence=coherence,
                            pilots_per_block=pilots_per_block)
    est = sense(channel, snr_db, batch=1, n_pilots=n_pilots, generator=generator).snr_db
    return LinkFeedback(channel=channel.name, snr_db=quantize_feedback_snr(float(est[0]), bits), bits=bits,
                        csi="pilot", coherence=coherence, pilots_per_block=pilots_per_block, pilot_mse=pilot_mse,
                        margin_db=snr_margin_db(n_pilots, coherence=coherence, bits=bits))


def pass_with_pilots(x: torch.Tensor, channel: Channel, snr_db: torch.Tensor | float, layout: PilotLayout | None, *,
                     estimator: Estimator = "lmmse", generator: torch.Generator | None = None) -> ChannelOutput:
    """Send data symbols ``x`` ``[B, n]`` through ``channel``, with pilots when ``layout`` is given.

    ``layout=None``: the plain :class:`ChannelOutput` (true ``h``: perfect CSI). Otherwise pilots are
    inserted per ``layout``, the frame goes through the channel, and the receiver's view of the data
    part is returned: ``y`` ``[B, n]``, ``h`` the per-block *estimate* at each data symbol
    (``estimator``), ``noise_var`` the estimated ``N0`` ``[B, 1]`` and ``snr_db`` the estimated SNR
    ``[B]`` — what a receiver that never sees the true channel works with.
    The variance of the CSI error comes with :func:`pass_with_pilots_csi`.
    """
    return pass_with_pilots_csi(x, channel, snr_db, layout, estimator=estimator, generator=generator)[0]


def pass_with_pilots_csi(x: torch.Tensor, channel: Channel, snr_db: torch.Tensor | float, layout: PilotLayout | None,
                         *, estimator: Estimator = "lmmse", generator: torch.Generator | None = None
                         ) -> tuple[ChannelOutput, torch.Tensor | None]:
    r""":func:`pass_with_pilots` plus the variance of the receiver's CSI error at each data symbol.

    Returns ``(received, h_error_var)``: ``received`` exactly as :func:`pass_with_pilots` (same draws
    from ``generator``), and ``h_error_var`` ``[B, n]`` real, the variance of ``h - h_hat`` of the
    ``estimator`` per block (LMMSE: ``s2 (N0_hat/E) / (s2 + N0_hat/E)``, ``E = P`` unit pilots, with
    the estimated ``N0``), or ``None`` with ``layout=None`` (the true ``h``: no error). A demapper
    treats it as extra noise: :func:`genscom.channels.fading.equalize` ``(y, h, noise_var, "zf",
    h_error_var=h_error_var)``, ``N0_eff = (N0_hat + s2) / |h_hat|^2``.

    Example:
        >>> layout = PilotLayout(pilots_per_block=2, coherence=16)
        >>> out, err = pass_with_pilots_csi(x, RayleighBlockFading(coherence=16), 5.0, layout, generator=g)
        >>> x_hat, nv = equalize(out.y, out.h, out.noise_var, "zf", h_error_var=err)
    """
    if layout is None:
        return channel(x, snr_db, generator=generator), None
    n = x.shape[-1]
    p = pilot_sequence(layout.pilots_per_block, dtype=x.dtype, device=x.device)
    out = channel(layout.insert(x, p), snr_db, generator=generator)
    rx = receive_with_pilots(out, layout, p, n_data=n, channel=channel, csi="pilot", estimator=estimator)
    _, y_d = layout.split(out.y, n)
    return (ChannelOutput(y=y_d, h=rx.sensing.h_hat, noise_var=rx.sensing.noise_var.unsqueeze(-1),
                          snr_db=rx.sensing.snr_db, channel=out.channel), rx.sensing.h_error_var)
