r"""Pixel DeepJSCC: the learned peer of image regeneration (Bourtsoulatze, Kurka and Gunduz, 2019).

A convolutional encoder maps the frame straight to complex channel symbols, power-normalised per image; the
channel adds its noise (and fading, equalised with the receiver's estimate); a transposed-convolution decoder
maps the received symbols back to pixels. No bits, no source code: the symbols are the image. It is trained by
genscom with the MSE loss on the same train frames and SNR range as the diffusion decoder, at the same channel
use budget, so ``genscom bench regen`` compares both at equal channel uses.

Architecture (the paper's, with one change): 5x5 convolutions with PReLU, the first ``n_down`` with stride 2,
then ``c`` output channels, flattened to ``c * (S / 2^n_down)^2 / 2`` complex symbols. The paper's 32 x 32
CIFAR images used two stride-2 stages; a 64 x 64 frame gets three, so that ``c = 6`` channels at 8 x 8 give
192 channel uses (the analog semantic rows' budget). The decoder mirrors the encoder and ends in a sigmoid.

Shapes and units: images float ``[B, 3, S, S]`` in ``[0, 1]``; symbols complex ``[B, n]`` with mean
``|s|^2 = 1`` per image (``n = channel_uses``); SNR in dB is Es/N0 per complex symbol, as everywhere in genscom.

Example (a tiny random model)::

    >>> import torch
    >>> from genscom.generation.deepjscc import DeepJSCC, DeepJSCCConfig
    >>> m = DeepJSCC(DeepJSCCConfig(image_size=16, channel_uses=16, filters=8, n_down=2))
    >>> s = m.encode(torch.rand(2, 3, 16, 16))
    >>> tuple(s.shape), round(float(s.abs().pow(2).mean()), 4)
    ((2, 16), 1.0)
    >>> tuple(m.decode(s).shape)
    (2, 3, 16, 16)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from genscom.utils import check_positive_ints

logger = logging.getLogger(__name__)


@dataclass
class DeepJSCCConfig:
    """Architecture of :class:`DeepJSCC`: ``image_size`` ``S``; ``channel_uses`` complex symbols per image;
    ``filters`` of the hidden convolutions; ``n_down`` stride-2 stages (the latent map is ``S / 2^n_down``)."""

    image_size: int = 64
    channel_uses: int = 192
    filters: int = 32
    n_down: int = 3
    extra: dict[str, Any] = field(default_factory=dict)  # provenance (dataset, SNR range, steps)

    def __post_init__(self) -> None:
        check_positive_ints(self, ("image_size", "channel_uses", "filters", "n_down"), owner="DeepJSCCConfig")
        side = self.image_size / 2 ** self.n_down
        if side != int(side):
            raise ValueError(f"DeepJSCCConfig.image_size={self.image_size} must be divisible by 2^n_down = "
                             f"{2 ** self.n_down}")
        cells = int(side) ** 2
        if (2 * self.channel_uses) % cells:
            raise ValueError(f"DeepJSCCConfig.channel_uses={self.channel_uses}: 2 x channel_uses real values must "
                             f"fill whole channels of the {int(side)}x{int(side)} latent map ({cells} cells); "
                             f"use a multiple of {cells // math.gcd(cells, 2)}")

    @property
    def latent_channels(self) -> int:
        """``c``: real channels of the latent map (``2 * channel_uses / (S / 2^n_down)^2``)."""
        return 2 * self.channel_uses // (self.image_size // 2 ** self.n_down) ** 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeepJSCCConfig":
        from genscom.utils import config_from_dict

        return config_from_dict(cls, d)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 5, stride=stride, padding=2), nn.PReLU(cout))


def _deconv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 5, stride=stride, padding=2, output_padding=stride - 1),
                         nn.PReLU(cout))


class DeepJSCC(nn.Module):
    """Conv encoder -> power-normalised complex symbols; received symbols -> conv decoder (module docstring)."""

    def __init__(self, config: DeepJSCCConfig) -> None:
        super().__init__()
        self.config = c = config
        f = c.filters
        enc = [_conv(3, f // 2 if c.n_down > 1 else f, 2)]
        ch = enc[0][0].out_channels
        for _ in range(c.n_down - 1):
            enc.append(_conv(ch, f, 2))
            ch = f
        enc += [_conv(f, f, 1), _conv(f, f, 1), nn.Conv2d(f, c.latent_channels, 5, padding=2)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [_deconv(c.latent_channels, f, 1), _deconv(f, f, 1), _deconv(f, f, 1)]
        for i in range(c.n_down - 1):
            last = i == c.n_down - 2
            dec.append(_deconv(f, f // 2 if last else f, 2))
        dec += [nn.ConvTranspose2d(f // 2 if c.n_down > 1 else f, 3, 5, stride=2, padding=2, output_padding=1),
                nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        s = self.config.image_size
        if not isinstance(images, torch.Tensor) or tuple(images.shape[1:]) != (3, s, s) or images.is_complex():
            raise ValueError(f"images must be float [B, 3, {s}, {s}] in [0, 1], got "
                             f"{tuple(getattr(images, 'shape', ()))}")
        return images.float()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, 3, S, S]`` in ``[0, 1]`` -> complex ``[B, channel_uses]``, mean ``|s|^2 = 1`` per image."""
        from genscom.channels.power import normalize_power

        z = self.encoder(self._check_images(images) * 2.0 - 1.0).flatten(1)      # [B, 2 n] reals
        sym = torch.complex(z[:, 0::2], z[:, 1::2])
        return normalize_power(sym)

    def decode(self, symbols: torch.Tensor) -> torch.Tensor:
        """Equalised complex ``[B, channel_uses]`` -> images ``[B, 3, S, S]`` in ``[0, 1]``."""
        c = self.config
        if not symbols.is_complex() or symbols.dim() != 2 or symbols.shape[1] != c.channel_uses:
            raise ValueError(f"symbols must be complex [B, {c.channel_uses}], got {symbols.dtype} "
                             f"{tuple(symbols.shape)}")
        side = c.image_size // 2 ** c.n_down
        z = torch.stack([symbols.real, symbols.imag], dim=-1).flatten(1).float()
        return self.decoder(z.view(-1, c.latent_channels, side, side))

    def forward(self, images: torch.Tensor, channel: Any = None, snr_db: Any = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """End to end: encode, pass ``channel`` at ``snr_db`` (``None``: noiseless; fading is MMSE-equalised with
        the channel's own ``h``), decode. Differentiable in the weights."""
        from genscom.channels.fading import equalize_received

        sym = self.encode(images)
        if channel is not None and snr_db is not None:
            sym = equalize_received(channel(sym, snr_db, generator=generator), method="mmse")
        return self.decode(sym)

    def save_pretrained(self, folder: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> Path:
        """``model.safetensors`` + ``config.json`` (``{"deepjscc": ...}``), atomically."""
        from genscom.pretrained import save_module_folder

        return save_module_folder(self, folder, key="deepjscc", config=self.config.to_dict(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> "DeepJSCC":
        """Load a folder written by :meth:`save_pretrained` (bad files: genscom errors naming the file)."""
        from genscom.pretrained import load_module_folder

        model, _ = load_module_folder(folder, key="deepjscc", build=lambda d: cls(DeepJSCCConfig.from_dict(d)),
                                      what="DeepJSCC model", device=device,
                                      fix="pass a folder written by DeepJSCC.save_pretrained (train_deepjscc)")
        return model.eval()


@dataclass
class TrainDeepJSCCConfig:
    """Training of :func:`train_deepjscc`: Adam at ``lr`` with warm-up and cosine decay for ``steps`` of
    ``batch_size`` frames; each batch at one SNR drawn uniformly from ``[snr_min_db, snr_max_db]`` on
    ``channel``."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    snr_min_db: float = -10.0
    snr_max_db: float = 20.0
    channel: str = "awgn"
    log_every: int = 250

    def __post_init__(self) -> None:
        check_positive_ints(self, ("steps", "batch_size", "log_every"), owner="TrainDeepJSCCConfig")
        if not float(self.lr) > 0:
            raise ValueError(f"TrainDeepJSCCConfig.lr must be > 0, got {self.lr!r}")
        if not float(self.snr_min_db) <= float(self.snr_max_db):
            raise ValueError("TrainDeepJSCCConfig needs snr_min_db <= snr_max_db")


def train_deepjscc(images: torch.Tensor, config: DeepJSCCConfig | None = None,
                   train: TrainDeepJSCCConfig | None = None, *, generator: torch.Generator,
                   progress: bool = False) -> tuple[DeepJSCC, list[float]]:
    """Train a fresh :class:`DeepJSCC` on ``images`` (uint8 or float ``[N, 3, S, S]``); return it (eval mode)
    and the loss per step. ``generator`` is the only randomness (weights, batches, SNRs, channel noise)."""
    from tqdm.auto import tqdm

    from genscom.channels.registry import create_channel
    from genscom.training import EpochSampler, lr_at, set_lr

    train = train or TrainDeepJSCCConfig()
    config = config or DeepJSCCConfig(image_size=int(images.shape[-1]))
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, S, S], got {tuple(images.shape)}")
    x_all = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    model = DeepJSCC(config)
    with torch.no_grad():  # initial weights from the caller's generator, not the global RNG
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=generator) * math.sqrt(1.0 / fan_in))
                mod.bias.zero_()
    channel = create_channel(train.channel)
    opt = torch.optim.Adam(model.parameters(), lr=train.lr)
    batch = min(train.batch_size, x_all.shape[0])
    sampler = EpochSampler(x_all.shape[0], generator=generator)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(train.steps), desc="train DeepJSCC", disable=not progress)
    for step in bar:
        set_lr(opt, lr_at(step, lr=train.lr, warmup_steps=train.warmup_steps, total_steps=train.steps,
                          min_lr_ratio=0.05))
        x = x_all[sampler.next(batch)]
        snr = float(train.snr_min_db + (train.snr_max_db - train.snr_min_db) * torch.rand((), generator=generator))
        loss = nn.functional.mse_loss(model(x, channel, snr, generator=generator), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % train.log_every == 0:
            recent = losses[-train.log_every:]
            bar.set_postfix(mse=f"{sum(recent) / len(recent):.4f}")
            logger.info("DeepJSCC step %d: mse %.4f", step + 1, sum(recent) / len(recent))
    return model.eval(), losses


__all__ = ["DeepJSCC", "DeepJSCCConfig", "TrainDeepJSCCConfig", "train_deepjscc"]
