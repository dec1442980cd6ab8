"""The channel seam: every channel maps complex symbols to received symbols.

Convention (as in Sionna): complex baseband, ``y = h * x + n`` with
``n ~ CN(0, N0)``, i.e. variance ``N0/2`` per real dimension. SNR in dB is
``Es/N0`` per complex symbol, with ``Es`` the average symbol energy, which is 1
after :func:`genscom.channels.power.normalize_power`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from genscom.utils import check_snr_db

ChannelName = Literal["awgn", "rayleigh", "rician"]


@dataclass
class ChannelOutput:
    """What the receiver gets from one pass through a channel.

    Attributes:
        y: ``[..., n]`` complex received symbols.
        h: ``[..., n]`` complex true channel coefficient per symbol, or ``None``
            for AWGN (``h = 1``). Perfect-CSI receivers may read it; realistic
            ones estimate it from pilots (:mod:`genscom.channels.sensing`).
        noise_var: real tensor broadcastable to ``y``: ``N0`` per complex symbol.
        snr_db: real tensor broadcastable to the batch dims: the SNR that was set.
        channel: the channel's registered name.
    """

    y: torch.Tensor
    h: torch.Tensor | None
    noise_var: torch.Tensor
    snr_db: torch.Tensor
    channel: str


def check_complex(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``TypeError`` unless ``x`` is a complex tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of complex symbols, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(
            f"{name} must be complex (complex64/complex128), got {x.dtype}; "
            "pack real features with genscom.channels.power.real_to_complex first"
        )


def snr_to_noise_var(snr_db: torch.Tensor | float, x: torch.Tensor, signal_power: float = 1.0) -> torch.Tensor:
    """``N0 = Es / 10^(snr_db/10)`` shaped to broadcast over ``x`` ``[..., n]``.

    ``snr_db`` may be a scalar or a tensor of the batch shape ``x.shape[:-1]``
    (one SNR per item). Raises ``ValueError`` for NaN/inf or a shape that does
    not broadcast.
    """
    snr = check_snr_db(snr_db).to(device=x.device, dtype=x.real.dtype)
    if snr.dim() > 0:
        batch = x.shape[:-1]
        if snr.shape != batch and snr.numel() != 1:
            try:
                ok = torch.broadcast_shapes(snr.shape, batch) == batch
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(
                    f"snr_db has shape {tuple(snr.shape)} but the symbols' batch shape is {tuple(batch)}; "
                    "pass a scalar or one SNR per item (shape x.shape[:-1])"
                )
        snr = snr.reshape(*snr.shape, 1) if snr.numel() != 1 else snr.reshape(())
    return signal_power * torch.pow(10.0, -snr / 10.0)


def check_signal_power(signal_power: float | str, name: str = "signal_power") -> float | str:
    """Validate a channel's ``signal_power`` argument: a positive finite number or ``"measured"``."""
    ok_num = (isinstance(signal_power, (int, float)) and not isinstance(signal_power, bool)
              and math.isfinite(signal_power) and signal_power > 0)
    if not (signal_power == "measured" or ok_num):
        raise ValueError(f"{name} must be a positive number or 'measured', got {signal_power!r}")
    return signal_power


def signal_energy(x: torch.Tensor, signal_power: float | str) -> torch.Tensor | float:
    """``Es`` used to set ``N0``: the given number, or the detached mean ``|x|^2`` per item
    (shape ``[..., 1]``) when ``signal_power == "measured"``."""
    if signal_power == "measured":
        return x.detach().abs().pow(2).mean(dim=-1, keepdim=True)
    return float(signal_power)


def complex_noise(shape: torch.Size | tuple[int, ...], noise_var: torch.Tensor, *, dtype: torch.dtype,
                  device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Circularly-symmetric complex Gaussian noise ``CN(0, noise_var)`` (``noise_var/2`` per real dim)."""
    real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    re = torch.randn(shape, generator=generator, dtype=real_dtype, device=device)
    im = torch.randn(shape, generator=generator, dtype=real_dtype, device=device)
    return torch.complex(re, im) * torch.sqrt(noise_var / 2.0)


class Channel(nn.Module):
    """Base class. Subclasses implement :meth:`forward`.

    Input:  ``x`` ``[..., n]`` complex symbols (unit average energy expected),
            ``snr_db`` scalar or ``[...]`` per item, optional ``generator``.
    Output: :class:`ChannelOutput`.
    Differentiable with respect to ``x``.
    """

    name: str = "channel"

    def forward(self, x: torch.Tensor, snr_db: torch.Tensor | float, *,
                generator: torch.Generator | None = None) -> ChannelOutput:  # pragma: no cover - abstract
        raise NotImplementedError
