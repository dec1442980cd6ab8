"""Frames and pooling: input checks for images/clips, uniform frame sampling, meanP pooling.

A clip embedding in genscom is the CLIP4Clip "meanP" recipe:

    e_clip = normalize( (1/T) * sum_t f_t )

where ``f_t`` is the (unnormalised) feature of frame ``t`` -- the image tower's
feature of that frame, or, for towers with a temporal module
(:class:`genscom.encoders.mini.MiniVideoTower`), the frame's feature after the
temporal module has mixed in its neighbours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _as_tensor(x: Any, name: str, expected: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"{name} must be a torch.Tensor or numpy array of {expected}, got {type(x).__name__}")


def check_images(images: Any, name: str = "images") -> torch.Tensor:
    """Return ``images`` as a uint8 tensor ``[B, H, W, 3]`` or raise ``ValueError`` naming the expected shape.

    Accepts a torch tensor or a numpy array (not copied when already contiguous).
    """
    expected = "uint8 [B, H, W, 3] (RGB, 0..255)"
    x = _as_tensor(images, name, expected)
    if x.dtype != torch.uint8:
        raise ValueError(f"{name} must be {expected}, got dtype {x.dtype}; convert with (x * 255).round().to(torch.uint8)")
    if x.dim() != 4 or x.shape[-1] != 3:
        hint = "; for a single image add a batch axis (x[None])" if x.dim() == 3 else ""
        raise ValueError(f"{name} must be {expected}, got shape {tuple(x.shape)}{hint}")
    return x


def check_clips(clips: Any, name: str = "clips") -> torch.Tensor:
    """Return ``clips`` as a uint8 tensor ``[B, T, H, W, 3]`` or raise ``ValueError`` naming the expected shape."""
    expected = "uint8 [B, T, H, W, 3] (RGB, 0..255)"
    x = _as_tensor(clips, name, expected)
    if x.dtype != torch.uint8:
        raise ValueError(f"{name} must be {expected}, got dtype {x.dtype}; convert with (x * 255).round().to(torch.uint8)")
    if x.dim() != 5 or x.shape[-1] != 3:
        hint = "; for a single clip add a batch axis (x[None])" if x.dim() == 4 else ""
        raise ValueError(f"{name} must be {expected}, got shape {tuple(x.shape)}{hint}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one frame per clip, got T={x.shape[1]}")
    return x


def sample_frame_indices(num_available: int, num_frames: int) -> torch.Tensor:
    """Uniformly spaced frame indices (CLIP4Clip-style), ``[num_frames]`` int64.

    Takes the centre of each of ``num_frames`` equal segments of ``[0, num_available)``;
    when ``num_frames >= num_available`` every frame is kept once (no repeats).
    """
    if num_available < 1:
        raise ValueError(f"num_available must be >= 1, got {num_available}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames >= num_available:
        return torch.arange(num_available)
    edges = torch.linspace(0, num_available, num_frames + 1, dtype=torch.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    return centres.floor().clamp(max=num_available - 1).to(torch.int64)


def sample_frames(clip: Any, num_frames: int) -> torch.Tensor:
    """Pick ``num_frames`` uniformly spaced frames of one clip ``[T, H, W, 3]`` -> ``[min(T, num_frames), H, W, 3]``."""
    x = check_clips(_as_tensor(clip, "clip", "uint8 [T, H, W, 3]")[None], name="clip[None]")[0]
    return x[sample_frame_indices(x.shape[0], num_frames)]


def mean_pool(features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """meanP: average frame features ``[B, T, d]`` over time -> ``[B, d]`` (not normalised).

    ``mask`` (optional, bool ``[B, T]``) marks valid frames; padded frames are
    ignored. Every clip needs at least one valid frame.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [B, T, d], got shape {tuple(features.shape)}")
    if mask is None:
        return features.mean(dim=1)
    if mask.shape != features.shape[:2]:
        raise ValueError(f"mask must be bool [B, T] = {tuple(features.shape[:2])}, got {tuple(mask.shape)}")
    m = mask.to(features.dtype).unsqueeze(-1)
    count = m.sum(dim=1)
    if bool((count == 0).any()):
        raise ValueError("mask leaves a clip with no valid frame; every clip needs at least one")
    return (features * m).sum(dim=1) / count


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / ||x||_2`` along the last axis (zero vectors stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
