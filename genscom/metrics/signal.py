"""Signal-level metrics: bit/block error rates, PSNR, (MS-)SSIM.

Image tensors are channels-last like genscom frames: ``[..., H, W, C]`` (uint8
in 0..255 or float), the leading dims are items (``[N, H, W, 3]``,
``[T, H, W, 3]``, ``[N, T, H, W, 3]`` ...). Per-item metrics are returned with
the leading shape; take ``.mean()`` for the usual average-of-frames video score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: MS-SSIM (5 scales, window ``w``) needs a smaller side > (w - 1) * 2**4; 160 for w = 11.
MS_SSIM_SCALES = 5


def ms_ssim_min_size(win_size: int = 11) -> int:
    """Smallest image side (pixels) accepted by :func:`ms_ssim` for ``win_size`` (161 for 11)."""
    return (win_size - 1) * 2 ** (MS_SSIM_SCALES - 1) + 1


# --------------------------------------------------------------------------- bits
def _bits_tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex():
        if not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"{name} must hold bits 0/1, got other values")
    elif t.dtype != torch.bool and bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"{name} must hold bits 0/1, got values outside {{0, 1}}")
    return t.to(torch.bool)


def ber(bits_a: Any, bits_b: Any) -> float:
    """Bit error rate: fraction of positions where two equal-shape 0/1 arrays differ."""
    a, b = _bits_tensor(bits_a, "bits_a"), _bits_tensor(bits_b, "bits_b")
    if a.shape != b.shape:
        raise ValueError(f"bits_a and bits_b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError("bits_a is empty; BER needs at least one bit")
    return float((a ^ b).double().mean())


def bler(block_errors: Any) -> float:
    """Block error rate: fraction of ``True`` in per-block (codeword) error flags ``[n_blocks]``."""
    f = torch.as_tensor(block_errors)
    if f.numel() == 0:
        raise ValueError("block_errors is empty; BLER needs at least one block")
    if f.dtype != torch.bool:
        if bool(((f != 0) & (f != 1)).any()):
            raise ValueError("block_errors must be booleans (or 0/1 flags), one per block")
        f = f != 0
    return float(f.double().mean())


def bit_errors_bytes(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length byte strings."""
    if not isinstance(a, (bytes, bytearray, memoryview)) or not isinstance(b, (bytes, bytearray, memoryview)):
        raise TypeError(f"a and b must be bytes, got {type(a).__name__} and {type(b).__name__}")
    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length, got {len(a)} and {len(b)} bytes")
    if len(a) == 0:
        return 0
    x = np.frombuffer(bytes(a), np.uint8) ^ np.frombuffer(bytes(b), np.uint8)
    return int(np.unpackbits(x).sum())


# --------------------------------------------------------------------------- pixels
def _pair(a: Any, b: Any, min_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    if ta.shape != tb.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    if ta.dim() < min_dims or ta.numel() == 0:
        raise ValueError(f"a must have at least {min_dims} dims [..., H, W, C] and be non-empty, got {tuple(ta.shape)}")
    if ta.is_complex() or tb.is_complex():
        raise TypeError("a and b must be real images, got a complex tensor")
    return ta.to(torch.float64), tb.to(torch.float64)


def psnr(a: Any, b: Any, *, max_val: float = 255.0, item_dims: int = 3) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per item: ``10 log10(max_val^2 / MSE)``.

    Args:
        a, b: same-shape images, uint8 or float (no rescaling: use ``max_val=1.0`` for [0, 1] floats).
        max_val: peak value (255 for uint8).
        item_dims: trailing dims forming one item (3 = ``[H, W, C]``; the leading dims are items).

    Returns:
        float64 tensor with the leading shape (a 0-dim tensor for a single image).
        Identical items give ``+inf`` (MSE = 0) explicitly; cap it before averaging if needed.

    Example:
        >>> psnr(torch.zeros(4, 4, 3), torch.full((4, 4, 3), 1.0))  # MSE = 1
        tensor(48.1308, dtype=torch.float64)
    """
    if not max_val > 0:
        raise ValueError(f"max_val must be positive, got {max_val!r}")
    if isinstance(item_dims, bool) or not isinstance(item_dims, int) or item_dims < 1:
        raise ValueError(f"item_dims must be a positive integer, got {item_dims!r}")
    ta, tb = _pair(a, b, item_dims)
    mse = (ta - tb).pow(2).flatten(start_dim=ta.dim() - item_dims).mean(dim=-1)
    out = 10.0 * torch.log10(max_val**2 / mse.clamp_min(1e-300))
    return torch.where(mse == 0, torch.full_like(out, float("inf")), out)


def _to_nchw(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
    lead = a.shape[:-3]
    h, w, c = a.shape[-3:]
    x = a.reshape(-1, h, w, c).permute(0, 3, 1, 2).to(torch.float32)
    y = b.reshape(-1, h, w, c).permute(0, 3, 1, 2).to(torch.float32)
    return x, y, lead


def ms_ssim(a: Any, b: Any, *, data_range: float = 255.0, win_size: int = 11) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003, 5 scales; ``pytorch_msssim``) per item, in [0, 1].

    Args:
        a, b: same-shape ``[..., H, W, C]`` images (uint8 or float in ``[0, data_range]``).
        data_range: value range (255 for uint8, 1.0 for [0, 1] floats).
        win_size: odd Gaussian window size (sigma 1.5).

    Returns:
        float32 tensor with the leading shape; identical images give 1.

    Raises:
        ValueError: if ``min(H, W) < ms_ssim_min_size(win_size)`` (161 for 11; 4 downsamplings
            must leave room for the window). Use :func:`ssim` or a smaller odd ``win_size``.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    ta, tb = _pair(a, b, 3)
    h, w = ta.shape[-3:-1]
    need = ms_ssim_min_size(win_size)
    if min(h, w) < need:
        raise ValueError(f"ms_ssim needs images of at least {need}x{need} pixels for win_size={win_size}, got "
                         f"{h}x{w}; use genscom.metrics.signal.ssim, or win_size <= "
                         f"{max(3, ((min(h, w) - 1) // 16) | 1)} (odd)")
    x, y, lead = _to_nchw(ta, tb)
    out = _ms_ssim(x, y, data_range=data_range, size_average=False, win_size=win_size)
    return out.reshape(lead)


def ssim(a: Any, b: Any, *, data_range: float = 255.0, win_size: int = 11) -> torch.Tensor:
    """Single-scale SSIM (``pytorch_msssim``, Gaussian window) per item; needs ``min(H, W) >= win_size``."""
    from pytorch_msssim import ssim as _ssim

    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    ta, tb = _pair(a, b, 3)
    h, w = ta.shape[-3:-1]
    if min(h, w) < win_size:
        raise ValueError(f"ssim needs images of at least {win_size}x{win_size} for win_size={win_size}, got {h}x{w}")
    x, y, lead = _to_nchw(ta, tb)
    return _ssim(x, y, data_range=data_range, size_average=False, win_size=win_size).reshape(lead)


__all__ = ["MS_SSIM_SCALES", "ber", "bit_errors_bytes", "bler", "ms_ssim", "ms_ssim_min_size", "psnr", "ssim"]
