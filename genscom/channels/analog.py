r"""Analog transmission of real vectors: pack to unit-energy complex symbols, send, equalise, unpack.

The physical layer of the semantic-analog scheme, shared by every part that puts an embedding
on the air as it is (:class:`~genscom.schemes.analog.SemanticAnalogScheme`, the agent trainer):

    e [B, d] --pack--> s [B, ceil(d/2) * repeat], mean |s|^2 = 1 per item
      --channel(snr)--> y = h s + n --equalise (true h)--> s_hat --average copies, unpack--> e_hat / ||e_hat||

``repeat`` copies are averaged after equalisation (a ``10 log10(repeat)`` dB gain on AWGN).
"""

from __future__ import annotations

from typing import Any

import torch

from genscom.channels.base import Channel
from genscom.channels.fading import Equalizer, equalize_received
from genscom.channels.power import complex_to_real, normalize_power, real_to_complex


def unit_norm(x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||`` along the last dimension (zero vectors stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def pack_analog(emb: torch.Tensor, *, repeat: int = 1) -> torch.Tensor:
    """Real ``[B, d]`` -> complex ``[B, ceil(d/2) * repeat]`` with unit average energy per item."""
    sym = normalize_power(real_to_complex(emb.float(), pad=True, packing="halves"))
    return sym.repeat(1, repeat)


def unpack_analog(x_hat: torch.Tensor, *, dim: int, repeat: int = 1) -> torch.Tensor:
    """Equalised ``[B, ceil(dim/2) * repeat]`` symbols -> unit-norm real ``[B, dim]`` (copies averaged)."""
    b = x_hat.shape[0]
    x_hat = x_hat.reshape(b, repeat, -1).mean(dim=1)
    return unit_norm(complex_to_real(x_hat, length=dim, packing="halves").float())


def send_analog(emb: torch.Tensor, channel: Channel | None, snr_db: Any, *, repeat: int = 1,
                equalizer: Equalizer = "mmse", generator: torch.Generator | None = None) -> torch.Tensor:
    """Pack ``emb [B, d]``, pass it through ``channel`` at ``snr_db`` (``None``: noiseless), equalise, unpack.

    Differentiable with respect to ``emb`` (the channel noise does not depend on it).
    Returns unit-norm ``[B, d]`` float32.
    """
    sym = pack_analog(emb, repeat=repeat)
    if channel is not None and snr_db is not None:
        sym = equalize_received(channel(sym, snr_db, generator=generator), method=equalizer)
    return unpack_analog(sym, dim=emb.shape[-1], repeat=repeat)


__all__ = ["pack_analog", "send_analog", "unit_norm", "unpack_analog"]
