"""A conditional diffusion decoder: regenerate a frame from a *received* embedding (diffusers).

The receiver holds a semantic embedding ``[B, d]`` (the channel decoder's output, noisy at low SNR). The
decoder is a :class:`diffusers.UNet2DConditionModel` in pixel space at the frame size, conditioned through
cross-attention on ``cond_tokens`` tokens projected from that embedding, with classifier-free guidance
(a learned null condition replaces the embedding with probability ``cond_dropout`` at training).
Sampling runs a :class:`diffusers.DDIMScheduler` for ``sample_steps`` steps.

Shapes and units: images are float ``[B, 3, H, W]`` in ``[0, 1]`` (``H = W = image_size``); the UNet works
on ``2 x image - 1`` in ``[-1, 1]``; embeddings are float ``[B, cond_dim]`` (any norm; they are
L2-normalised before projection, as the encoders emit them).

Example (a tiny random decoder; the offline one is trained by genscom and shipped as safetensors)::

    >>> import torch
    >>> from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig
    >>> dec = DiffusionDecoder(DiffusionDecoderConfig(image_size=16, cond_dim=8, block_out_channels=(8, 16),
    ...                                               cross_attention_dim=8, attention_head_dim=4, sample_steps=2))
    >>> img = dec.generate(torch.randn(2, 8), generator=torch.Generator().manual_seed(0))
    >>> tuple(img.shape), bool(img.min() >= 0 and img.max() <= 1)
    ((2, 3, 16, 16), True)
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genscom.pretrained import CONFIG_NAME, WEIGHTS_NAME
from genscom.utils import check_positive_ints


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
LATENT_DEFAULTS: dict[str, Any] = {"block_out_channels": [32, 64, 64], "latent_channels": 4, "layers_per_block": 1,
                                   "norm_num_groups": 16, "scaling_factor": 1.0,
                                   "mid_block_add_attention": True}
_LATENT_KEYS = frozenset(LATENT_DEFAULTS)


@dataclass
class DiffusionDecoderConfig:
    """Architecture and sampling defaults of :class:`DiffusionDecoder`.

    ``block_out_channels``: UNet widths per resolution (one down/up block each); ``attention_levels``: how
    many of the coarsest resolutions get (self- and cross-) attention blocks, the mid block always has them
    (attention at 64 x 64 would cost 4096^2 scores per head on a CPU); ``cross_attention_dim``: width of the condition tokens;
    ``cond_tokens``: tokens the embedding is projected to; ``num_train_timesteps``: the DDPM chain length;
    ``sample_steps``: DDIM steps at generation; ``guidance_scale``: classifier-free guidance (1 = none);
    ``cond_dropout``: probability of the null condition at training; ``prediction_type``: what the UNet predicts,
    ``"epsilon"`` (the noise), ``"v_prediction"`` (``sqrt(a) eps - sqrt(1 - a) x0``) or ``"sample"`` (``x0``),
    as diffusers' schedulers name them; ``global_cond``: also add a projection of the embedding to the UNet's
    timestep embedding (``class_embed_type="projection"``, as Stable unCLIP conditions on image embeddings), so
    every ResNet block is modulated by it, not only the attention blocks (much faster to learn);
    ``reader_classes``: a *semantic reader*, one
    classification head per named scene attribute (``{"shape": 6, "colour": 8, ...}``, empty: none), an MLP
    (``reader_hidden`` wide) on the received embedding whose class probabilities join the condition (tokens and
    global vector), trained with cross-entropy (weight ``reader_weight``) beside the diffusion loss when the
    training data has those labels: the UNet then gets the scene's discrete facts as near one-hot inputs instead
    of having to untangle them from the embedding itself, which is what it learns slowest;
    ``reader_teacher_forcing``: the probability, per training row, that the UNet is given the *true* labels as
    one-hot vectors instead of the reader's probabilities (as unCLIP's decoder learns on true image embeddings
    and its prior predicts them): a reader that is wrong for 30 % of the rows otherwise teaches the UNet to
    hedge between classes. When it is > 0, sampling feeds the reader's arg-max as one-hot vectors (what the
    UNet learned on); ``snr_gamma``: min-SNR loss weighting (Hang et al. 2023), each row's diffusion loss
    weighted by ``min(SNR(t), gamma)`` relative to its target's own weight (``None``: plain MSE); ``latent``: the
    keyword arguments of a small :class:`diffusers.AutoencoderKL` (``block_out_channels``, ``latent_channels``,
    ``layers_per_block``, ``norm_num_groups``, ``scaling_factor``, ``mid_block_add_attention``: self-attention
    over every latent position in the middle block, ``(H/f * W/f)^2`` scores, default on), empty for pixel
    space: with it the UNet denoises the autoencoder's ``[B, latent_channels, H/f, W/f]`` latents
    (``f = 2^(len(block_out_channels)-1)``, scaled by ``scaling_factor`` to about unit variance) and :meth:`DiffusionDecoder.generate` decodes them,
    as latent diffusion does (the autoencoder is trained first by ``genscom train decoder``, then frozen).
    """

    image_size: int = 64
    cond_dim: int = 384
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    cross_attention_dim: int = 64
    attention_head_dim: int = 8
    attention_levels: int = 1
    cond_tokens: int = 4
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    sample_steps: int = 25
    guidance_scale: float = 2.0
    cond_dropout: float = 0.1
    prediction_type: str = "epsilon"
    global_cond: bool = True
    reader_classes: dict[str, int] = field(default_factory=dict)
    reader_hidden: int = 256
    reader_weight: float = 1.0
    reader_teacher_forcing: float = 0.0
    snr_gamma: float | None = None
    latent: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (dataset, encoder profile)

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        check_positive_ints(self, ("image_size", "cond_dim", "layers_per_block", "cross_attention_dim",
                                   "attention_head_dim", "attention_levels", "cond_tokens", "norm_num_groups",
                                   "num_train_timesteps", "sample_steps", "reader_hidden"), owner="DiffusionDecoderConfig")
        if not self.block_out_channels or any(c < 1 or c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"DiffusionDecoderConfig.block_out_channels must be positive multiples of "
                             f"norm_num_groups={self.norm_num_groups}, got {self.block_out_channels}")
        if not isinstance(self.latent, dict) or not set(self.latent) <= _LATENT_KEYS:
            raise ValueError(f"DiffusionDecoderConfig.latent must be a mapping with keys from {sorted(_LATENT_KEYS)} "
                             f"(AutoencoderKL settings), got {self.latent!r}")
        if self.latent:
            self.latent = {**LATENT_DEFAULTS, **self.latent}
            self.latent["block_out_channels"] = [int(c) for c in self.latent["block_out_channels"]]
        if self.latent and self.image_size % self.latent_factor:
            raise ValueError(f"DiffusionDecoderConfig.image_size={self.image_size} must be divisible by the "
                             f"autoencoder's downsampling factor {self.latent_factor}")
        size = self.sample_size
        if size % (2 ** (len(self.block_out_channels) - 1)):
            raise ValueError(f"the UNet's input size {size} (image_size, divided by the autoencoder's factor) must be "
                             f"divisible by 2^(len(block_out_channels) - 1) = {2 ** (len(self.block_out_channels) - 1)}")
        if self.cross_attention_dim % self.attention_head_dim:
            raise ValueError(f"DiffusionDecoderConfig.cross_attention_dim={self.cross_attention_dim} must be a multiple "
                             f"of attention_head_dim={self.attention_head_dim}")
        if not 0.0 <= float(self.cond_dropout) < 1.0:
            raise ValueError(f"DiffusionDecoderConfig.cond_dropout must be in [0, 1), got {self.cond_dropout!r}")
        if not (math.isfinite(float(self.guidance_scale)) and float(self.guidance_scale) >= 1.0):
            raise ValueError(f"DiffusionDecoderConfig.guidance_scale must be >= 1 (1 = no guidance), "
                             f"got {self.guidance_scale!r}")
        if not isinstance(self.reader_classes, dict) or any(
                not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 2
                for k, v in self.reader_classes.items()):
            raise ValueError(f"DiffusionDecoderConfig.reader_classes must map attribute names to class counts >= 2, "
                             f"got {self.reader_classes!r}")
        if not (math.isfinite(float(self.reader_weight)) and float(self.reader_weight) >= 0):
            raise ValueError(f"DiffusionDecoderConfig.reader_weight must be >= 0, got {self.reader_weight!r}")
        if not 0.0 <= float(self.reader_teacher_forcing) <= 1.0:
            raise ValueError(f"DiffusionDecoderConfig.reader_teacher_forcing must be in [0, 1], "
                             f"got {self.reader_teacher_forcing!r}")
        if self.snr_gamma is not None and not (math.isfinite(float(self.snr_gamma)) and float(self.snr_gamma) > 0):
            raise ValueError(f"DiffusionDecoderConfig.snr_gamma must be > 0 (or null for plain MSE), "
                             f"got {self.snr_gamma!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"DiffusionDecoderConfig.prediction_type must be one of {PREDICTION_TYPES}, "
                             f"got {self.prediction_type!r}")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"DiffusionDecoderConfig.sample_steps={self.sample_steps} exceeds "
                             f"num_train_timesteps={self.num_train_timesteps}")

    @property
    def latent_factor(self) -> int:
        """Downsampling factor of the autoencoder (1 in pixel space)."""
        return 2 ** (len(self.latent["block_out_channels"]) - 1) if self.latent else 1

    @property
    def sample_size(self) -> int:
        """Side of what the UNet denoises: the image, or the autoencoder's latent."""
        return self.image_size // self.latent_factor

    @property
    def sample_channels(self) -> int:
        """Channels of what the UNet denoises: 3, or the autoencoder's ``latent_channels``."""
        return int(self.latent["latent_channels"]) if self.latent else 3

    @property
    def feature_dim(self) -> int:
        """Width of the condition features: the embedding plus the reader's class probabilities."""
        return self.cond_dim + sum(self.reader_classes.values())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiffusionDecoderConfig":
        from genscom.utils import config_from_dict

        return config_from_dict(cls, d)


class DiffusionDecoder(nn.Module):
    """Embedding-conditioned pixel-space diffusion decoder (see the module docstring).

    ``forward(noisy [B,3,H,W] in [-1,1], t [B] long, cond [B, cond_dim] or None) -> predicted noise [B,3,H,W]``;
    ``cond=None`` (or ``drop`` rows) use the learned null condition.
    """

    def __init__(self, config: DiffusionDecoderConfig) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config
        c = config
        n = len(c.block_out_channels)
        a = min(c.attention_levels, n)  # cross-attention only at the `a` coarsest resolutions (cost: tokens^2)
        down = ["DownBlock2D"] * (n - a) + ["CrossAttnDownBlock2D"] * a
        up = ["CrossAttnUpBlock2D"] * a + ["UpBlock2D"] * (n - a)
        self.vae = None
        if c.latent:
            from diffusers import AutoencoderKL

            blocks = len(c.latent["block_out_channels"])
            self.vae = AutoencoderKL(in_channels=3, out_channels=3, sample_size=c.image_size,
                                     down_block_types=("DownEncoderBlock2D",) * blocks,
                                     up_block_types=("UpDecoderBlock2D",) * blocks,
                                     **{**c.latent, "block_out_channels": tuple(c.latent["block_out_channels"])})
            self.vae.requires_grad_(False)
        self.unet = UNet2DConditionModel(
            sample_size=c.sample_size, in_channels=c.sample_channels, out_channels=c.sample_channels,
            block_out_channels=c.block_out_channels,
            layers_per_block=c.layers_per_block, down_block_types=tuple(down), up_block_types=tuple(up),
            cross_attention_dim=c.cross_attention_dim, attention_head_dim=c.attention_head_dim,
            norm_num_groups=c.norm_num_groups,
            **({"class_embed_type": "projection", "projection_class_embeddings_input_dim": c.feature_dim}
               if c.global_cond else {}))
        self.reader = None
        if c.reader_classes:
            self.reader = nn.Sequential(nn.Linear(c.cond_dim, c.reader_hidden), nn.GELU(),
                                        nn.Linear(c.reader_hidden, c.reader_hidden), nn.GELU(),
                                        nn.Linear(c.reader_hidden, sum(c.reader_classes.values())))
        self.cond_proj = nn.Sequential(nn.Linear(c.feature_dim, c.cross_attention_dim * c.cond_tokens), nn.SiLU(),
                                       nn.Linear(c.cross_attention_dim * c.cond_tokens,
                                                 c.cross_attention_dim * c.cond_tokens))
        self.null_cond = nn.Parameter(torch.zeros(c.cond_tokens, c.cross_attention_dim))
        if c.global_cond:  # the null condition's global vector (classifier-free guidance)
            self.null_global = nn.Parameter(torch.zeros(c.feature_dim))

    # -- conditioning -------------------------------------------------------------------------------
    def check_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """``cond [B, cond_dim]`` finite float, else ``ValueError`` naming the fix."""
        if not isinstance(cond, torch.Tensor) or cond.dim() != 2 or cond.is_complex():
            raise ValueError(f"cond must be a real tensor [B, {self.config.cond_dim}] (received embeddings), got "
                             f"{type(cond).__name__} {tuple(getattr(cond, 'shape', ()))}")
        if cond.shape[1] != self.config.cond_dim:
            raise ValueError(f"cond has dimension {cond.shape[1]} but this decoder was trained on "
                             f"{self.config.cond_dim}-dimensional embeddings; use the encoder profile it names "
                             f"(config.extra) or another decoder")
        if not torch.isfinite(cond).all():
            raise ValueError("cond holds NaN or Inf values; mark the item as failed instead of regenerating it")
        return cond.float()

    def _unit(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """``cond`` checked (:meth:`check_cond`) and L2-normalised, or ``None``."""
        return None if cond is None else nn.functional.normalize(self.check_cond(cond), dim=-1)

    def read(self, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """The semantic reader's logits ``{attribute: [B, classes]}`` for ``cond [B, cond_dim]`` (``{}`` without
        ``config.reader_classes``); ``logits.argmax(-1)`` is what the receiver reads from the embedding."""
        return self._read(self._unit(cond))

    def _read(self, e: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.reader is None:
            return {}
        return dict(zip(self.config.reader_classes, self.reader(e).split(list(self.config.reader_classes.values()),
                                                                          dim=-1)))

    def _features(self, e: torch.Tensor | None, logits: dict[str, torch.Tensor] | None = None,
                  forced: dict[str, torch.Tensor] | None = None, rows: torch.Tensor | None = None
                  ) -> torch.Tensor | None:
        """``[B, feature_dim]``: the unit embedding and the reader's class probabilities (``None`` stays None).

        With ``config.reader_teacher_forcing`` the probabilities are one-hot: of the reader's arg-max, or, where
        ``rows [B]`` is set (training), of the true labels ``forced`` (``{attribute: int64 [B]}``)."""
        if e is None or self.reader is None:
            return e
        logits = self._read(e) if logits is None else logits
        if not self.config.reader_teacher_forcing:
            return torch.cat([e, *(v.softmax(-1) for v in logits.values())], dim=-1)
        parts = []
        for k, v in logits.items():
            cls = v.argmax(-1)
            if forced is not None and rows is not None:
                cls = torch.where(rows, forced[k].to(cls.device).long(), cls)
            parts.append(nn.functional.one_hot(cls, v.shape[-1]).to(e.dtype))
        return torch.cat([e, *parts], dim=-1)

    def tokens(self, cond: torch.Tensor | None, batch: int, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Condition tokens ``[B, cond_tokens, cross_attention_dim]``; ``cond=None`` or ``drop [B]`` -> null."""
        return self._tokens(self._features(self._unit(cond)), batch, drop)

    def _tokens(self, e: torch.Tensor | None, batch: int, drop: torch.Tensor | None) -> torch.Tensor:
        c = self.config
        null = self.null_cond.unsqueeze(0).expand(batch, -1, -1)
        if e is None:
            return null
        tok = self.cond_proj(e).view(batch, c.cond_tokens, c.cross_attention_dim)
        if drop is not None:
            tok = torch.where(drop.view(-1, 1, 1), null, tok)
        return tok

    def global_vector(self, cond: torch.Tensor | None, batch: int, drop: torch.Tensor | None = None
                      ) -> torch.Tensor | None:
        """The global condition ``[B, feature_dim]`` (the normalised embedding and the reader's probabilities, or
        the learned null vector where ``cond`` is None or ``drop [B]`` is set); ``None`` without
        ``config.global_cond``."""
        return self._global(self._features(self._unit(cond)), batch, drop)

    def _global(self, e: torch.Tensor | None, batch: int, drop: torch.Tensor | None) -> torch.Tensor | None:
        if not self.config.global_cond:
            return None
        null = self.null_global.unsqueeze(0).expand(batch, -1)
        if e is None:
            return null
        return e if drop is None else torch.where(drop.view(-1, 1), null, e)

    def _unet(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, glob: torch.Tensor | None) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=tokens, class_labels=glob).sample

    def _predict(self, noisy: torch.Tensor, t: torch.Tensor, f: torch.Tensor | None,
                 drop: torch.Tensor | None) -> torch.Tensor:
        """The UNet's prediction for condition features ``f`` (:meth:`_features`; ``None``: the null condition)."""
        b = noisy.shape[0]
        return self._unet(noisy, t, self._tokens(f, b, drop), self._global(f, b, drop))

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        return self._predict(noisy, t, self._features(self._unit(cond)), drop)

    # -- latent space --------------------------------------------------------------------------------
    @torch.no_grad()
    def to_latents(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """What the UNet denoises for ``images [B, 3, H, W]`` in ``[0, 1]``: the autoencoder's scaled posterior
        means ``[B, C, H/f, W/f]``, or ``2 x images - 1`` in pixel space."""
        self._check_images(images)
        if self.vae is None:
            return images.float() * 2.0 - 1.0
        sf = float(self.config.latent["scaling_factor"])
        out = [self.vae.encode(x.float() * 2.0 - 1.0).latent_dist.mean * sf for x in images.split(batch_size)]
        return torch.cat(out)

    @torch.no_grad()
    def from_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in ``[0, 1]`` from what the UNet denoises (:meth:`to_latents`' inverse)."""
        if self.vae is not None:
            x = self.vae.decode(x / float(self.config.latent["scaling_factor"])).sample
        return ((x.clamp(-1, 1) + 1) / 2).float()

    # -- training ------------------------------------------------------------------------------------
    def train_scheduler(self) -> Any:
        from diffusers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.config.num_train_timesteps,
                             beta_schedule=self.config.beta_schedule, prediction_type=self.config.prediction_type)

    def loss(self, images: torch.Tensor | None, cond: torch.Tensor, *, generator: torch.Generator | None = None,
             scheduler: Any = None, labels: dict[str, torch.Tensor] | None = None,
             latents: torch.Tensor | None = None, with_reader: bool = True) -> torch.Tensor:
        """MSE of a DDPM step's prediction (``config.prediction_type``: noise, velocity or clean image), plus
        ``reader_weight`` x the reader's cross-entropy on ``labels`` (``{attribute: int64 [B]}``, needed when
        the config has ``reader_classes``; left out with ``with_reader=False``, when the reader is frozen).
        ``images [B,3,H,W]`` in ``[0,1]``, ``cond [B, cond_dim]``; the timesteps, noise and condition dropout are
        drawn from ``generator`` (CPU). ``latents``: precomputed :meth:`to_latents` of the images (a trainer
        encodes its data once); ``images`` is then ignored."""
        if self.reader is not None:
            missing = [k for k in self.config.reader_classes if labels is None or k not in labels]
            if missing:
                raise ValueError(f"this decoder reads {sorted(self.config.reader_classes)} but the training labels "
                                 f"lack {missing}; train on a dataset with those labels or drop reader_classes")
        sched = scheduler or self.train_scheduler()
        x0 = self.to_latents(images) if latents is None else latents.float()
        b, dev = x0.shape[0], x0.device
        noise = torch.randn(x0.shape, generator=generator).to(dev)
        t = torch.randint(0, self.config.num_train_timesteps, (b,), generator=generator).to(dev)
        drop = (torch.rand(b, generator=generator) < self.config.cond_dropout).to(dev)
        noisy = sched.add_noise(x0, noise, t)
        kind = self.config.prediction_type
        target = noise if kind == "epsilon" else x0 if kind == "sample" else sched.get_velocity(x0, noise, t)
        e = self._unit(cond.to(dev))
        logits = self._read(e)  # once: it feeds the condition and its own cross-entropy
        rows = None
        if logits and self.config.reader_teacher_forcing:
            rows = (torch.rand(b, generator=generator) < self.config.reader_teacher_forcing).to(dev)
        pred = self._predict(noisy, t, self._features(e, logits, labels, rows), drop)
        err = ((pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, pred.dim())))   # [B]
        if self.config.snr_gamma is not None:
            err = err * self._snr_weight(sched, t)
        loss = err.mean()
        if logits and with_reader:
            loss = loss + self.config.reader_weight * self._reader_ce(logits, labels)
        return loss

    def reader_loss(self, cond: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """The semantic reader's cross-entropy on ``labels`` (``{attribute: int64 [B]}``), summed over its
        attributes, for received ``cond [B, cond_dim]``: what ``train decoder``'s ``phase: reader`` minimises
        (the rest of the decoder untouched).

        Raises:
            ValueError: the decoder has no reader, or ``labels`` lack one of its attributes.
        """
        if self.reader is None:
            raise ValueError("this decoder has no semantic reader (config.reader_classes is empty); nothing to train")
        missing = [k for k in self.config.reader_classes if k not in labels]
        if missing:
            raise ValueError(f"this decoder reads {sorted(self.config.reader_classes)} but the training labels "
                             f"lack {missing}; train on a dataset with those labels")
        return self._reader_ce(self.read(cond), labels)

    @staticmethod
    def _reader_ce(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(v, labels[k].to(v.device).long()) for k, v in logits.items())

    def _snr_weight(self, sched: Any, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights ``[B]`` for timesteps ``t``: ``min(SNR, gamma) / SNR`` for noise targets,
        ``/ (SNR + 1)`` for velocity, ``min(SNR, gamma)`` for clean-image targets (SNR = abar / (1 - abar))."""
        abar = sched.alphas_cumprod.to(t.device)[t].float()
        snr = abar / (1.0 - abar)
        w = snr.clamp(max=float(self.config.snr_gamma))
        kind = self.config.prediction_type
        return w / snr if kind == "epsilon" else w / (snr + 1.0) if kind == "v_prediction" else w

    def _check_images(self, images: torch.Tensor) -> None:
        s = self.config.image_size
        if not isinstance(images, torch.Tensor) or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"images must be float [B, 3, {s}, {s}] in [0, 1], got "
                             f"{tuple(getattr(images, 'shape', ()))}")

    # -- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, cond: torch.Tensor, *, generator: torch.Generator | None = None, steps: int | None = None,
                 guidance_scale: float | None = None) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in ``[0, 1]`` from ``cond [B, cond_dim]`` with DDIM (``steps``, default
        ``config.sample_steps``) and classifier-free guidance (``guidance_scale``, default the config's).
        Deterministic for a given ``generator`` (the initial noise is its only randomness, eta = 0)."""
        from diffusers import DDIMScheduler

        c = self.config
        cond = self.check_cond(cond)
        steps = c.sample_steps if steps is None else int(steps)
        if not 1 <= steps <= c.num_train_timesteps:
            raise ValueError(f"steps must be in 1..{c.num_train_timesteps}, got {steps}")
        w = c.guidance_scale if guidance_scale is None else float(guidance_scale)
        if not (math.isfinite(w) and w >= 1.0):
            raise ValueError(f"guidance_scale must be >= 1, got {guidance_scale!r}")
        dev = next(self.parameters()).device
        sched = DDIMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                              clip_sample=self.vae is None, prediction_type=c.prediction_type)
        sched.set_timesteps(steps)
        b = cond.shape[0]
        x = torch.randn((b, c.sample_channels, c.sample_size, c.sample_size), generator=generator).to(dev)
        f = self._features(nn.functional.normalize(cond.to(dev), dim=-1))  # checked above
        tok, glob = self._tokens(f, b, None), self._global(f, b, None)
        null, null_glob = self._tokens(None, b, None), self._global(None, b, None)
        for t in sched.timesteps:
            tt = torch.full((b,), int(t), dtype=torch.long, device=dev)
            if w == 1.0:
                eps = self._unet(x, tt, tok, glob)
            else:
                both = self._unet(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([null, tok]),
                                  None if glob is None else torch.cat([null_glob, glob]))
                eps_u, eps_c = both.chunk(2)
                eps = eps_u + w * (eps_c - eps_u)
            x = sched.step(eps, t, x).prev_sample
        return self.from_latents(x)

    # -- files ---------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> Path:
        """``model.safetensors`` (float32 or float16; loaded back as float32) + ``config.json``
        (``{"diffusion_decoder": ...}``), each written atomically."""
        from genscom.pretrained import save_module_folder

        return save_module_folder(self, folder, key="diffusion_decoder", config=self.config.to_dict(), dtype=dtype)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *, device: str | torch.device = "cpu"
                        ) -> "DiffusionDecoder":
        """Load a folder written by :meth:`save_pretrained`; missing or broken files raise genscom's file errors
        naming the file."""
        from genscom.pretrained import load_module_folder

        model, _ = load_module_folder(
            folder, key="diffusion_decoder", build=lambda d: cls(DiffusionDecoderConfig.from_dict(d)),
            what="diffusion decoder", device=device,
            fix="pass a folder written by DiffusionDecoder.save_pretrained (or `genscom train decoder`)")
        return model


__all__ = ["CONFIG_NAME", "DiffusionDecoder", "DiffusionDecoderConfig", "WEIGHTS_NAME"]
