"""The ``Encoder`` seam: one text tower and one image/video tower sharing a ``dim``-d space.

Every encoder profile (:func:`genscom.encoders.create_encoder`) returns an
:class:`Encoder`. Its public ``encode_*`` methods take raw content and return
L2-normalised embeddings, with preprocessing, batching and no-grad inference
included:

====================  ==============================  ===========================
method                input                           output
====================  ==============================  ===========================
``encode_text``       ``list[str]`` of N captions     ``[N, dim]`` unit norm
``encode_images``     uint8 ``[B, H, W, 3]`` RGB      ``[B, dim]`` unit norm
``encode_clips``      uint8 ``[B, T, H, W, 3]`` RGB   ``[B, dim]`` unit norm (meanP)
``encode_frames``     uint8 ``[B, T, H, W, 3]`` RGB   ``[B, T, dim]`` unnormalised
====================  ==============================  ===========================

``encode_clips(x) == l2_normalize(encode_frames(x).mean(1))`` (CLIP4Clip meanP,
see :mod:`genscom.encoders.video`). Outputs live on the encoder's device in its
dtype; move the encoder with ``.to(device, dtype)``. Encoders come out of the
factory in eval mode; the ``encode_*`` methods do not change the mode.

Subclasses implement the differentiable ``forward_text`` / ``forward_images``
(and optionally ``forward_frames``, for towers that look across time).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genscom.encoders.video import check_clips, check_images, l2_normalize, mean_pool


@dataclass(frozen=True)
class ImagePreprocess:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, h, w]``: rescale to [0, 1], resize, normalise.

    Attributes:
        size: ``(h, w)`` the tower expects.
        mean, std: per-channel normalisation applied after rescaling to [0, 1]
            (``x = (rgb / 255 - mean) / std``).
        mode: ``"resize"`` resizes straight to ``size`` (aspect ratio not kept);
            ``"shortest_edge_crop"`` (CLIP) resizes the short side to
            ``shortest_edge`` and centre-crops ``size``.
        shortest_edge: short side after resizing in ``"shortest_edge_crop"`` mode
            (default ``max(size)``).
        interpolation: resampling filter (antialiased when downsampling).
    """

    size: tuple[int, int]
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    mode: Literal["resize", "shortest_edge_crop"] = "resize"
    shortest_edge: int | None = None
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (height, width) with positive ints, got {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 floats with std > 0, got mean={self.mean!r} std={self.std!r}")
        if self.mode not in ("resize", "shortest_edge_crop"):
            raise ValueError(f"mode must be 'resize' or 'shortest_edge_crop', got {self.mode!r}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}")

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode=self.interpolation, align_corners=False, antialias=True)

    def __call__(self, images: torch.Tensor, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Preprocess uint8 ``[B, H, W, 3]`` -> ``[B, 3, h, w]`` on ``device`` in ``dtype``."""
        images = check_images(images)
        x = images.to(device).permute(0, 3, 1, 2).to(torch.float32) / 255.0  # (B, 3, H, W)
        h, w = self.size
        if self.mode == "resize":
            x = self._resize(x, (h, w))
        else:
            short = self.shortest_edge or max(h, w)
            H, W = x.shape[-2:]
            scale = short / min(H, W)
            x = self._resize(x, (max(h, round(H * scale)), max(w, round(W * scale))))
            top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
            x = x[..., top:top + h, left:left + w]
        if x.shape[-2:] != (h, w):  # pragma: no cover - guarded by the arithmetic above
            raise RuntimeError(f"preprocessing produced {tuple(x.shape[-2:])}, expected {(h, w)}")
        if self.interpolation == "bicubic":
            x = x.clamp(0.0, 1.0)  # bicubic overshoots
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of str; wrap a single caption in a list: [text]")
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}"
                        + ("" if not isinstance(texts, Sequence) else " with non-str items"))
    return list(texts)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _progress(total: int, desc: str, enabled: bool):  # -> tqdm
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


class Encoder(nn.Module, ABC):
    """A text tower and an image/video tower mapping into one ``dim``-d space (see module doc).

    Args:
        dim: embedding size shared by both towers.
        preprocess: how uint8 frames become the image tower's input.
        name: the profile or model id it was built from (for result files).

    Example:
        >>> enc = create_encoder("tiny")
        >>> enc.encode_text(["a red circle"]).shape
        torch.Size([1, 16])
    """

    def __init__(self, *, dim: int, preprocess: ImagePreprocess, name: str) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.preprocess = preprocess
        self.name = name

    # ----- device / dtype ---------------------------------------------------------------------
    def _first_tensor(self) -> torch.Tensor | None:
        for t in self.parameters():
            return t
        for t in self.buffers():
            return t
        return None

    @property
    def device(self) -> torch.device:
        t = self._first_tensor()
        return t.device if t is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in self.parameters():
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    # ----- differentiable parts (subclasses) ----------------------------------------------------
    @abstractmethod
    def forward_text(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised text features ``[N, dim]`` (differentiable where the tower is trainable)."""

    @abstractmethod
    def forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features: preprocessed ``[B, 3, h, w]`` -> ``[B, dim]``."""

    def forward_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised per-frame features: preprocessed ``[B, T, 3, h, w]`` -> ``[B, T, dim]``.

        Default: each frame through :meth:`forward_images` independently. Towers
        with a temporal module override this.
        """
        B, T = pixels.shape[:2]
        return self.forward_images(pixels.flatten(0, 1)).view(B, T, -1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed clips ``[B, T, 3, h, w]`` -> unnormalised meanP clip features ``[B, dim]``."""
        return mean_pool(self.forward_frames(pixels))

    # ----- preprocessing ------------------------------------------------------------------------
    def preprocess_images(self, images: Any) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` -> ``[B, 3, h, w]`` on the encoder's device and dtype."""
        return self.preprocess(check_images(images), device=self.device, dtype=self.dtype)

    def preprocess_clips(self, clips: Any) -> torch.Tensor:
        """uint8 ``[B, T, H, W, 3]`` -> ``[B, T, 3, h, w]`` on the encoder's device and dtype."""
        clips = check_clips(clips)
        B, T = clips.shape[:2]
        px = self.preprocess(clips.flatten(0, 1), device=self.device, dtype=self.dtype)
        return px.view(B, T, *px.shape[1:])

    # ----- public inference API -----------------------------------------------------------------
    def _batched(self, items: Any, batch_size: int, fn: Any, desc: str, progress: bool,
                 *, empty_shape: tuple[int, ...]) -> torch.Tensor:
        """Apply ``fn`` to consecutive chunks of ``batch_size`` items and concatenate (with a progress bar)."""
        batch_size = _check_batch_size(batch_size)
        out = []
        with _progress(len(items), desc, progress) as bar:
            for i in range(0, len(items), batch_size):
                chunk = items[i:i + batch_size]
                out.append(fn(chunk))
                bar.update(len(chunk))
        if not out:
            return torch.empty(*empty_shape, device=self.device, dtype=self.dtype)
        return torch.cat(out)

    @torch.no_grad()
    def encode_text(self, texts: list[str], *, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Captions -> L2-normalised ``[N, dim]`` embeddings (``N = len(texts)``, may be 0)."""
        texts = _check_texts(texts)
        return self._batched(texts, batch_size, lambda c: l2_normalize(self.forward_text(c)),
                             "encode text", progress, empty_shape=(0, self.dim))

    @torch.no_grad()
    def encode_images(self, images: Any, *, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` RGB images -> L2-normalised ``[B, dim]``."""
        images = check_images(images)
        return self._batched(images, batch_size,
                             lambda c: l2_normalize(self.forward_images(self.preprocess_images(c))),
                             "encode images", progress, empty_shape=(0, self.dim))

    @torch.no_grad()
    def encode_frames(self, clips: Any, *, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """uint8 ``[B, T, H, W, 3]`` clips -> unnormalised per-frame features ``[B, T, dim]``.

        ``batch_size`` counts clips (``batch_size * T`` frames per forward pass).
        """
        clips = check_clips(clips)
        return self._batched(clips, batch_size, lambda c: self.forward_frames(self.preprocess_clips(c)),
                             "encode clips", progress, empty_shape=(0, clips.shape[1], self.dim))

    def encode_clips(self, clips: Any, *, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """uint8 ``[B, T, H, W, 3]`` clips -> L2-normalised ``[B, dim]``: meanP over :meth:`encode_frames`."""
        return l2_normalize(mean_pool(self.encode_frames(clips, batch_size=batch_size, progress=progress)))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, input_size={self.preprocess.size}"
