"""The offline image/video tower ("mini"): a compact CNN per frame + a light temporal module.

It is trained by genscom itself (:mod:`genscom.encoders.train`) to land in the
frozen all-MiniLM-L6-v2 text space (locked-text tuning, LiT), since no image
tower ships offline. The shipped weights live in ``genscom/encoders/weights/mini/``.

What a clip goes through (``B`` clips, ``T`` frames, ``d = embed_dim``)::

    pixels [B, T, 3, 64, 64]  (normalised, (rgb/255 - 0.5) / 0.5)
      + motion channels x_t - x_{t-1} (x_{-1} := x_0)        -> [B*T, 6, 64, 64]
      CNN: stem conv s2, stride-2 stages with residual blocks -> [B*T, C, g, g]   (g = 4)
      1x1 conv + flatten (keeps *where* things are, so motion is visible over time)
      linear                                                  -> frame tokens [B, T, width]
      + learned time embedding, temporal transformer layer(s) (each frame attends to all frames)
      LayerNorm + linear head                                 -> frame features [B, T, d]
    meanP in the Encoder: clip embedding = normalize(mean_t frame features)   -> [B, d]

An image is a one-frame clip (zero motion channels). Everything pooled is the
frame features *after* the temporal module, so ``encode_clips`` stays the mean of
``encode_frames`` exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from genscom.encoders.base import Encoder, ImagePreprocess
from genscom.encoders.text import TransformerTextTower
from genscom.utils import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TRAIN_HINT = "genscom train encoder --output-dir {path}"


@dataclass
class MiniTowerConfig:
    """Architecture of :class:`MiniVideoTower` (stored as ``config.json`` beside the weights)."""

    image_size: int = 64             # frames are resized to image_size x image_size
    stem_channels: int = 24          # stem: 3x3 conv, stride 2
    channels: tuple[int, ...] = (48, 96, 128)  # one stride-2 stage each (down conv + residual blocks)
    blocks_per_stage: int = 1
    grid_channels: int = 32          # 1x1 conv before flattening the final g x g map
    width: int = 256                 # frame token width
    temporal: Literal["none", "attention"] = "attention"
    temporal_layers: int = 1
    temporal_heads: int = 4
    max_frames: int = 16             # length of the learned time embedding
    motion: bool = True              # add x_t - x_{t-1} as 3 input channels
    embed_dim: int = 384             # = the text tower's dim (MiniLM: 384)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        for k in ("image_size", "stem_channels", "blocks_per_stage", "grid_channels", "width", "temporal_heads",
                  "max_frames", "embed_dim"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive int, got {v!r}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {self.channels!r}")
        if self.temporal not in ("none", "attention"):
            raise ValueError(f"temporal must be 'none' or 'attention', got {self.temporal!r}")
        if self.temporal_layers < 0:
            raise ValueError(f"temporal_layers must be >= 0, got {self.temporal_layers}")
        if self.temporal == "attention" and self.width % self.temporal_heads:
            raise ValueError(f"width ({self.width}) must be divisible by temporal_heads ({self.temporal_heads})")
        down = 2 ** (len(self.channels) + 1)
        if self.image_size % down:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by 2**(len(channels)+1) = {down}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std must have 3 values (RGB)")

    @property
    def grid(self) -> int:
        """Side of the final feature map."""
        return self.image_size // 2 ** (len(self.channels) + 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MiniTowerConfig":
        from genscom.utils import config_from_dict

        return config_from_dict(cls, d)


class _ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class MiniVideoTower(nn.Module):
    """Frames -> per-frame features in the text space (see the module doc for the data flow).

    ``forward(pixels [B, T, 3, S, S]) -> [B, T, embed_dim]`` (unnormalised), with
    ``S = config.image_size`` and ``T <= config.max_frames``.
    """

    def __init__(self, config: MiniTowerConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or MiniTowerConfig()
        layers: list[nn.Module] = [_down(6 if c.motion else 3, c.stem_channels)]
        prev = c.stem_channels
        for ch in c.channels:
            layers.append(_down(prev, ch))
            layers.extend(_ResBlock(ch) for _ in range(c.blocks_per_stage))
            prev = ch
        layers += [nn.Conv2d(prev, c.grid_channels, 1), nn.ReLU(inplace=True)]
        self.cnn = nn.Sequential(*layers)
        self.to_token = nn.Linear(c.grid_channels * c.grid * c.grid, c.width)
        if c.temporal == "attention" and c.temporal_layers > 0:
            self.time_embed = nn.Parameter(torch.zeros(c.max_frames, c.width))
            layer = nn.TransformerEncoderLayer(c.width, c.temporal_heads, dim_feedforward=2 * c.width, dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.temporal = nn.TransformerEncoder(layer, c.temporal_layers, enable_nested_tensor=False)
        else:
            self.time_embed = None
            self.temporal = None
        self.norm = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        c = self.config
        if pixels.dim() != 5 or pixels.shape[2] != 3 or tuple(pixels.shape[-2:]) != (c.image_size, c.image_size):
            raise ValueError(f"pixels must be [B, T, 3, {c.image_size}, {c.image_size}], got {tuple(pixels.shape)}")
        B, T = pixels.shape[:2]
        if T > c.max_frames:
            raise ValueError(f"clips have T={T} frames but the tower takes at most max_frames={c.max_frames}; "
                             "pick frames with genscom.encoders.video.sample_frames")
        x = pixels
        if c.motion:
            prev = torch.cat([pixels[:, :1], pixels[:, :-1]], dim=1)
            x = torch.cat([pixels, pixels - prev], dim=2)  # (B, T, 6, S, S)
        x = self.cnn(x.flatten(0, 1))  # (B*T, grid_channels, g, g)
        x = self.to_token(x.flatten(1)).view(B, T, -1)  # (B, T, width)
        if self.temporal is not None:
            x = self.temporal(x + self.time_embed[:T])
        return self.head(self.norm(x))  # (B, T, embed_dim)

    # ----- weights as files ---------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str], *, dtype: torch.dtype | None = None,
                        extra_config: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (floats cast to ``dtype``, e.g. float16 to ship)."""
        from safetensors.torch import save

        directory = Path(directory)
        state = {}
        for k, v in self.state_dict().items():
            v = v.detach().cpu()
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            state[k] = v.contiguous()
        atomic_write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
        cfg = {"architecture": "MiniVideoTower", **self.config.to_dict(), **(extra_config or {})}
        atomic_write_json(directory / CONFIG_NAME, cfg)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "MiniVideoTower":
        """Load a tower written by :meth:`save_pretrained` (safetensors only; floats cast to ``dtype``).

        Raises:
            FileNotFoundError: a file is missing (the message names the command that makes them).
            BadFileError: ``config.json`` or ``model.safetensors`` is unreadable or does not fit.
        """
        from genscom.pretrained import load_module_folder

        directory = Path(directory)
        fix = f"make the weights with `{TRAIN_HINT.format(path=directory)}` or pass another folder"
        known = {f.name for f in dataclasses.fields(MiniTowerConfig)}

        def build(raw: dict[str, Any]) -> MiniVideoTower:
            if raw.get("architecture", "MiniVideoTower") != "MiniVideoTower":
                raise ValueError(f'"architecture" is {raw.get("architecture")!r}, not "MiniVideoTower"')
            return cls(MiniTowerConfig.from_dict({k: v for k, v in raw.items() if k in known}))

        model, _ = load_module_folder(directory, key=None, build=build, what="MiniVideoTower", fix=fix)
        return model.to(device=device, dtype=dtype).eval()


class TowerEncoder(Encoder):
    """An :class:`~genscom.encoders.base.Encoder` made of a text tower and a :class:`MiniVideoTower`.

    ``"mini"`` = frozen MiniLM + the trained tower; ``"tiny"`` = random tiny towers (tests).
    """

    def __init__(self, text_tower: TransformerTextTower, video_tower: MiniVideoTower, *, name: str) -> None:
        cfg = video_tower.config
        if text_tower.dim != cfg.embed_dim:
            raise ValueError(f"text tower dim ({text_tower.dim}) must equal the video tower's embed_dim "
                             f"({cfg.embed_dim})")
        super().__init__(dim=cfg.embed_dim, name=name,
                         preprocess=ImagePreprocess(size=(cfg.image_size, cfg.image_size), mean=cfg.mean, std=cfg.std,
                                                    mode="resize", interpolation="bilinear"))
        self.text_tower = text_tower
        self.video_tower = video_tower

    def forward_text(self, texts: list[str]) -> torch.Tensor:
        return self.text_tower(texts)

    def forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.video_tower(pixels.unsqueeze(1))[:, 0]

    def forward_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.video_tower(pixels)
