"""Additive white Gaussian noise channel."""

from __future__ import annotations

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


class AWGNChannel(Channel):
    r"""``y = x + n``, ``n ~ CN(0, N0)``, ``N0 = Es / 10^{SNR_dB/10}``.

    Input: ``x`` ``[..., n]`` complex64/complex128, ``snr_db`` scalar or ``[...]`` (one per item).
    Output: :class:`ChannelOutput` with ``h=None``; differentiable with respect to ``x``.

    Args:
        signal_power: ``Es`` assumed for the input, 1.0 for power-normalised
            symbols. Use ``"measured"`` to take the mean ``|x|^2`` of each item.

    Example:
        >>> ch = AWGNChannel()
        >>> out = ch(torch.ones(4, 128, dtype=torch.complex64), 10.0,
        ...          generator=torch.Generator().manual_seed(0))
        >>> out.y.shape
        torch.Size([4, 128])
    """

    name = "awgn"

    def __init__(self, signal_power: float | str = 1.0) -> None:
        super().__init__()
        self.signal_power = check_signal_power(signal_power)

    def _es(self, x: torch.Tensor) -> torch.Tensor | float:
        return signal_energy(x, self.signal_power)

    def forward(self, x: torch.Tensor, snr_db: torch.Tensor | float, *,
                generator: torch.Generator | None = None) -> ChannelOutput:
        check_complex(x)
        if x.dim() < 1 or x.shape[-1] == 0:
            raise ValueError(f"x must have shape [..., n] with n >= 1 symbols, got shape {tuple(x.shape)}")
        n0 = snr_to_noise_var(snr_db, x) * self._es(x)
        noise = complex_noise(x.shape, n0, dtype=x.dtype, device=x.device, generator=generator)
        snr_t = torch.as_tensor(snr_db, dtype=x.real.dtype, device=x.device)
        return ChannelOutput(y=x + noise, h=None, noise_var=torch.broadcast_to(n0, x.shape[:-1] + (1,)) if n0.dim() else n0,
                             snr_db=snr_t, channel=self.name)
