"""Power normalisation and real <-> complex packing (two reals per channel use).

A channel use is one complex symbol. Real features ``[..., 2k]`` become ``k``
complex symbols; :func:`normalize_power` then scales each item to unit average
energy per complex symbol, the ``Es = 1`` that SNR (``Es/N0``) assumes.

Example:
    >>> z = real_to_complex(torch.randn(8, 512))        # [8, 256] complex64
    >>> x = normalize_power(z)                           # mean |x|^2 = 1 per item
    >>> complex_to_real(x).shape
    torch.Size([8, 512])
"""

from __future__ import annotations

from typing import Literal

import torch

from genscom.channels.base import check_complex

Packing = Literal["interleaved", "halves"]


def normalize_power(x: torch.Tensor, dim: int | tuple[int, ...] = -1, *, eps: float = 1e-12) -> torch.Tensor:
    """Scale ``x`` to unit average energy per complex symbol: ``x / sqrt(mean(|x|^2 over dim))``.

    Args:
        x: ``[..., n]`` complex64/complex128 symbols.
        dim: dimension(s) averaged over (default the symbol dim: one scale per item).
        eps: floor on the mean energy so an all-zero item stays zero instead of NaN.

    Returns the same shape and dtype; differentiable.
    """
    check_complex(x)
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    energy = (x.real.square() + x.imag.square()).mean(dim=dim, keepdim=True)
    return x * torch.rsqrt(energy.clamp_min(eps))


def _check_packing(packing: str) -> None:
    if packing not in ("interleaved", "halves"):
        raise ValueError(f"packing must be 'interleaved' or 'halves', got {packing!r}")


def real_to_complex(x: torch.Tensor, *, pad: bool = False, packing: Packing = "interleaved") -> torch.Tensor:
    """Pack real features ``[..., 2k]`` into ``[..., k]`` complex symbols (two reals per channel use).

    Args:
        x: float32 or float64 tensor ``[..., m]`` (float32 -> complex64, float64 -> complex128).
        pad: when ``m`` is odd, append one zero (the receiver cuts it with
            ``complex_to_real(z, length=m)``); ``False`` raises ``ValueError`` instead.
        packing: ``"interleaved"``: symbol ``i`` = ``x[2i] + j x[2i+1]``;
            ``"halves"``: symbol ``i`` = ``x[i] + j x[k+i]``.

    Differentiable; :func:`complex_to_real` is its exact inverse.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a real torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}; convert with x.float() "
                        "(complex inputs are already channel symbols)")
    _check_packing(packing)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension [..., m]")
    m = x.shape[-1]
    if m % 2:
        if not pad:
            raise ValueError(f"x has an odd last dimension ({m}); two reals make one channel use: "
                             "pass pad=True (one zero appended) or pad the features yourself")
        x = torch.nn.functional.pad(x, (0, 1))
    if packing == "interleaved":
        return torch.complex(x[..., 0::2], x[..., 1::2])
    k = x.shape[-1] // 2
    return torch.complex(x[..., :k], x[..., k:])


def complex_to_real(z: torch.Tensor, *, length: int | None = None, packing: Packing = "interleaved") -> torch.Tensor:
    """Inverse of :func:`real_to_complex`: ``[..., k]`` complex -> ``[..., 2k]`` real (or ``[..., length]``).

    ``length`` cuts the padding added by ``real_to_complex(..., pad=True)``; it must be ``2k`` or ``2k-1``.
    """
    check_complex(z, "z")
    _check_packing(packing)
    k = z.shape[-1]
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length not in (2 * k, 2 * k - 1)):
        raise ValueError(f"length must be {2 * k} or {2 * k - 1} for {k} complex symbols, got {length!r}")
    if packing == "interleaved":
        out = torch.stack([z.real, z.imag], dim=-1).flatten(-2)
    else:
        out = torch.cat([z.real, z.imag], dim=-1)
    return out if length is None else out[..., :length]


def channel_uses(x: torch.Tensor | int) -> int:
    """Channel uses (complex symbols) per item for ``x``.

    A complex tensor ``[..., n]`` costs ``n``; a real tensor ``[..., m]`` (or an int
    ``m`` of reals) costs ``ceil(m / 2)``, as packed by :func:`real_to_complex`.
    """
    if isinstance(x, bool):
        raise TypeError("x must be a tensor or an int number of reals, got a bool")
    if isinstance(x, int):
        if x < 0:
            raise ValueError(f"x (number of reals) must be >= 0, got {x}")
        return (x + 1) // 2
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor or an int number of reals, got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension [..., n]")
    n = int(x.shape[-1])
    return n if x.is_complex() else (n + 1) // 2
