r"""Channel adapter: a learned, channel-aware map embedding -> ``k`` complex symbols -> embedding.

Architecture (all sizes in :class:`AdapterConfig`)::

    sensing  s = clamp(snr_db, snr_range) / 10  --MLP-->  c  [B, cond_dim]

    TX  e [B, d] -> Linear -> depth x FiLMBlock(c) -> LN -> Linear -> z [B, 2k] -> k complex symbols
                                                    \-> Linear -> sigmoid -> importance [B, G]
        kept symbols (prefix or importance >= mu) scaled to unit average energy per item

    channel  y = h x + n   (AWGN: h = 1; block fading: h per coherence block), n ~ CN(0, N0)
             csi="pilot" on fading: P known pilots open every coherence block (PilotLayout)

    RX  MMSE equalise with h_hat -> x_hat [B, k]; missing positions <- mask token
        features per symbol [Re x_hat, Im x_hat, |h_hat|, sent flag] [B, 4k] -> Linear -> depth x FiLMBlock(c)
        -> LN -> Linear -> L2 normalise -> e_hat [B, d]

``FiLMBlock(c)``: ``h + Linear(GELU((1 + gamma(c)) * LN(h) + beta(c)))``, a pre-norm residual
MLP block whose normalised activations are scaled and shifted by the sensing vector (FiLM).
Both halves see an SNR and the receiver also sees ``|h_hat|`` per symbol (1 for AWGN, 0 for
positions not received). What each end knows depends on ``csi`` (PROTOCOL.md "Channels"):

* ``"pilot"`` (default): the transmitter encodes for ``tx_snr_db``, the SNR estimate the receiver
  fed back (:func:`genscom.channels.sensing.link_feedback`); on fading channels the pilots give the
  receiver LMMSE estimates of ``h`` per block, of ``N0`` and of the SNR
  (:func:`genscom.channels.sensing.pass_with_pilots`), on AWGN it decodes with the fed-back SNR;
* ``"perfect"`` (labelled upper bound): no pilots, the receiver uses the true ``h``, ``N0`` and SNR.

Power: each item's **sent** symbols have unit average energy, ``mean_{sent}|x|^2 = 1``,
so ``Es/N0 = snr_db`` holds per channel use (PROTOCOL.md).

Weights are files with a config beside them: :meth:`ChannelAdapter.save_pretrained` writes
``model.safetensors`` + ``config.json``; :meth:`ChannelAdapter.from_pretrained` reads them.

Example:
    >>> cfg = AdapterConfig(dim=16, k=8, hidden=32, depth=1, group_size=2)
    >>> ad = build_adapter(cfg, seed=0)
    >>> out = ad(torch.randn(4, 16), 0.0, channel=AWGNChannel(), generator=torch.Generator().manual_seed(0))
    >>> out.embeddings.shape, out.symbols.shape
    (torch.Size([4, 16]), torch.Size([4, 8]))
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genscom.adaptation import extraction as X
from genscom.channels.base import Channel, ChannelOutput
from genscom.channels.sensing import CSI, PilotLayout, pass_with_pilots
from genscom.utils import check_snr_db

Equalizer = Literal["zf", "mmse"]


@dataclass
class AdapterConfig:
    """Shape of a :class:`ChannelAdapter` (saved as ``config.json`` beside the weights)."""

    dim: int = 384                   # embedding dimension d (mini profile: 384)
    k: int = 192                     # complex symbols (channel uses) at full rate; prefixes give any k' <= k
    hidden: int = 512                # width of both MLP trunks
    depth: int = 2                   # FiLM residual blocks per side
    group_size: int = 16             # symbols per importance group (bitmap has k / group_size bits)
    cond_dim: int = 64               # width of the sensing (SNR) embedding
    snr_range_db: tuple[float, float] = (-10.0, 20.0)  # sensing input is clamped to the trained range

    def __post_init__(self) -> None:
        for name in ("dim", "k", "hidden", "depth", "group_size", "cond_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}"
                                 + ("; k is the number of complex channel uses, e.g. k=64" if name == "k" else ""))
        if self.k % self.group_size:
            raise ValueError(f"k={self.k} must be a multiple of group_size={self.group_size} "
                             "(each importance group holds group_size symbols)")
        lo, hi = (float(v) for v in self.snr_range_db)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"snr_range_db must be (low, high) finite dB with low < high, got {self.snr_range_db!r}")
        self.snr_range_db = (lo, hi)

    @property
    def n_groups(self) -> int:
        """``G = k / group_size``: importance groups (bits of the bitmap)."""
        return self.k // self.group_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["snr_range_db"] = list(self.snr_range_db)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdapterConfig":
        from genscom.utils import config_from_dict

        if isinstance(d, dict) and "snr_range_db" in d:
            d = {**d, "snr_range_db": tuple(d["snr_range_db"])}
        return config_from_dict(cls, d)


class FiLMBlock(nn.Module):
    """Pre-norm residual MLP block modulated by the sensing vector: ``h + W2 GELU(W1((1+g) LN(h) + b))``."""

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.film = nn.Linear(cond_dim, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(c).chunk(2, dim=-1)  # [B, width] each
        u = self.norm(h) * (1.0 + gamma) + beta
        return h + self.fc2(F.gelu(self.fc1(u)))


class Sensing(nn.Module):
    """SNR in dB ``[B]`` -> conditioning vector ``[B, cond_dim]`` (input clamped to ``snr_range_db``, / 10)."""

    def __init__(self, cond_dim: int, snr_range_db: tuple[float, float]) -> None:
        super().__init__()
        self.lo, self.hi = snr_range_db
        self.net = nn.Sequential(nn.Linear(2, cond_dim), nn.GELU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, snr_db: torch.Tensor) -> torch.Tensor:
        s = snr_db.clamp(self.lo, self.hi) / 10.0
        return self.net(torch.stack([s, torch.tanh(s)], dim=-1))


@dataclass
class AdapterOutput:
    """Result of :meth:`ChannelAdapter.forward`.

    Attributes:
        embeddings: ``[B, d]`` received embeddings (L2-normalised).
        symbols: ``[B, k]`` complex transmitted symbols (zeros where not sent).
        keep: ``[B, k]`` bool, the positions sent.
        importance: ``[B, G]`` importance weights in ``[0, 1]``.
        channel_uses: ``[B]`` int64 data symbols sent (side information not included).
        received: the :class:`ChannelOutput` of the compacted stream, or ``None`` (noiseless).
    """

    embeddings: torch.Tensor
    symbols: torch.Tensor
    keep: torch.Tensor
    importance: torch.Tensor
    channel_uses: torch.Tensor
    received: ChannelOutput | None


def _snr_vector(snr_db: Any, batch: int, device: torch.device) -> torch.Tensor:
    t = check_snr_db(snr_db).to(device=device, dtype=torch.float32)
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(()).expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"snr_db must be a number or a [B]={batch} tensor of dB values, got shape {tuple(t.shape)}")
    return t


class ChannelAdapter(nn.Module):
    """SNR/CSI-conditioned encoder (``d -> k`` complex symbols) and decoder (``k -> d``), plus importance head.

    See the module docstring for the architecture. Inputs/outputs are float32 on
    the module's device; symbols are complex64.
    """

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        if not isinstance(config, AdapterConfig):
            raise TypeError(f"config must be an AdapterConfig, got {type(config).__name__}")
        self.config = config
        c, h = config.cond_dim, config.hidden
        self.tx_sense = Sensing(c, config.snr_range_db)
        self.rx_sense = Sensing(c, config.snr_range_db)
        self.tx_in = nn.Linear(config.dim, h)
        self.tx_blocks = nn.ModuleList(FiLMBlock(h, c) for _ in range(config.depth))
        self.tx_norm = nn.LayerNorm(h)
        self.tx_out = nn.Linear(h, 2 * config.k)
        self.importance_head = nn.Linear(h, config.n_groups)
        self.mask_token = nn.Parameter(torch.zeros(config.k, 2))  # learned (Re, Im) per symbol position
        self.rx_in = nn.Linear(4 * config.k, h)
        self.rx_blocks = nn.ModuleList(FiLMBlock(h, c) for _ in range(config.depth))
        self.rx_norm = nn.LayerNorm(h)
        self.rx_out = nn.Linear(h, config.dim)

    # ------------------------------------------------------------------ transmitter
    def encode(self, emb: torch.Tensor, snr_db: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``emb [B, d]`` float, ``snr_db`` number or ``[B]`` -> ``(z [B, k] complex64, importance [B, G])``.

        ``z`` is not yet power-normalised (see :meth:`normalize`).
        """
        self._check_emb(emb)
        b = emb.shape[0]
        cond = self.tx_sense(_snr_vector(snr_db, b, emb.device))
        e = F.normalize(emb.float(), dim=-1) * math.sqrt(self.config.dim)  # unit-variance features
        h = self.tx_in(e)
        for blk in self.tx_blocks:
            h = blk(h, cond)
        h = self.tx_norm(h)
        z = self.tx_out(h)  # [B, 2k]
        k = self.config.k
        symbols = torch.complex(z[:, :k], z[:, k:])
        importance = torch.sigmoid(self.importance_head(h))  # [B, G]
        return symbols, importance

    @staticmethod
    def normalize(z: torch.Tensor, keep: torch.Tensor, *, gate: torch.Tensor | None = None) -> torch.Tensor:
        """Unit average energy over each item's sent symbols; zeros elsewhere.

        ``x = m z / sqrt(mean_{keep} |m z|^2)`` with ``m = keep`` (or the straight-through
        ``gate``, equal to ``keep`` in value, whose gradient trains the importance head).
        """
        m = keep.to(z.real.dtype) if gate is None else gate
        zm = z * m
        n = keep.sum(dim=-1, keepdim=True).clamp_min(1).to(z.real.dtype)
        energy = (zm.real.square() + zm.imag.square()).sum(dim=-1, keepdim=True) / n
        return zm * torch.rsqrt(energy.clamp_min(1e-12))

    # ------------------------------------------------------------------ receiver
    def decode(self, x_hat: torch.Tensor, *, snr_db: Any, keep: torch.Tensor,
               gain: torch.Tensor | None = None) -> torch.Tensor:
        """Equalised symbols -> embedding.

        Args:
            x_hat: ``[B, k]`` complex equalised symbols (anything at positions not received).
            snr_db: number or ``[B]`` (dB, the receiver's SNR estimate).
            keep: ``[B, k]`` bool, positions received (others take the mask token).
            gain: ``[B, k]`` real ``|h|`` per symbol, or ``None`` (AWGN: 1).
        Returns: ``[B, d]`` float32, L2-normalised.
        """
        b, k = x_hat.shape
        if k != self.config.k:
            raise ValueError(f"x_hat must have k={self.config.k} symbols per item, got {k}")
        cond = self.rx_sense(_snr_vector(snr_db, b, x_hat.device))
        token = torch.complex(self.mask_token[:, 0], self.mask_token[:, 1])
        x = X.fill_masked(x_hat.to(torch.complex64), keep, token)
        g = torch.ones(b, k, device=x_hat.device) if gain is None else gain.float()
        g = torch.where(keep, g, torch.zeros_like(g))
        feats = torch.cat([x.real, x.imag, g, keep.float()], dim=-1)  # [B, 4k]
        h = self.rx_in(feats)
        for blk in self.rx_blocks:
            h = blk(h, cond)
        return F.normalize(self.rx_out(self.rx_norm(h)), dim=-1)

    # ------------------------------------------------------------------ end to end
    def forward(self, emb: torch.Tensor, snr_db: Any, *, channel: Channel | None,
                keep_groups: torch.Tensor | None = None, prefix: torch.Tensor | int | None = None,
                straight_through: bool = False, equalizer: Equalizer = "mmse", csi: CSI = "pilot",
                tx_snr_db: Any = None, pilots_per_block: int = 2,
                generator: torch.Generator | None = None) -> AdapterOutput:
        """Encode, send the kept symbols through ``channel`` at ``snr_db``, equalise, decode.

        Rate control (at most one): ``keep_groups [B, G]`` bool (scalable extraction; the
        bitmap is assumed received correctly here) or ``prefix`` (first ``k'`` symbols,
        an int or ``[B]`` lengths). Neither -> all ``k`` symbols. ``straight_through``
        lets gradients reach the importance head (training). ``channel=None``: noiseless.

        Sensing: the encoder is conditioned on ``tx_snr_db`` (number or ``[B]`` dB: the SNR the
        transmitter was told, e.g. ``link_feedback(...).snr_db``; default ``snr_db``), the channel
        runs at the true ``snr_db``. ``csi="pilot"``: on a fading channel ``pilots_per_block`` pilots
        open every coherence block and the decoder gets the receiver's estimates of ``h`` and the SNR;
        on AWGN it gets ``tx_snr_db``. ``csi="perfect"``: true ``h`` and ``snr_db``, no pilots.
        ``AdapterOutput.channel_uses`` counts data symbols only (pilots: :class:`PilotLayout`).
        Differentiable end to end through the channel (pilots are constants).
        """
        if keep_groups is not None and prefix is not None:
            raise ValueError("give keep_groups (importance selection) or prefix (truncation), not both")
        if csi not in ("pilot", "perfect"):
            raise ValueError(f"csi must be 'pilot' (estimated, the default) or 'perfect' (upper bound), got {csi!r}")
        tx_snr = snr_db if tx_snr_db is None else tx_snr_db
        z, importance = self.encode(emb, tx_snr)
        b, k = z.shape
        gate = None
        if keep_groups is not None:
            if keep_groups.shape != importance.shape:
                raise ValueError(f"keep_groups must be [B, G]={tuple(importance.shape)}, got {tuple(keep_groups.shape)}")
            keep = X.expand_groups(keep_groups, self.config.group_size)
            if straight_through:
                w = X.expand_groups(importance, self.config.group_size)
                gate = keep.float() + w - w.detach()
        elif prefix is not None:
            keep = X.prefix_keep(prefix, k, batch=b, device=z.device)
        else:
            keep = torch.ones(b, k, dtype=torch.bool, device=z.device)
        x = self.normalize(z, keep, gate=gate)
        layout = pilot_layout(channel, pilots_per_block) if csi == "pilot" else None
        x_hat, gain, received = through_channel(x, keep, channel, snr_db, equalizer=equalizer, generator=generator,
                                                pilots=layout)
        rx_snr = receiver_snr(received, snr_db, tx_snr, csi=csi, pilots=layout, noiseless=self.config.snr_range_db[1])
        out = self.decode(x_hat, snr_db=rx_snr, keep=keep, gain=gain)
        return AdapterOutput(embeddings=out, symbols=x, keep=keep, importance=importance,
                             channel_uses=keep.sum(dim=-1).to(torch.int64), received=received)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, folder: str | os.PathLike[str], *, extra_config: dict[str, Any] | None = None,
                        dtype: torch.dtype = torch.float32) -> Path:
        """Write ``model.safetensors`` (``dtype``: float32 or float16; loaded back as float32) and
        ``config.json`` (``{"adapter": ..., **extra_config}``)."""
        from genscom.pretrained import save_module_folder

        return save_module_folder(self, folder, key="adapter", config=self.config.to_dict(),
                                  extra_config=extra_config, dtype=dtype)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> "ChannelAdapter":
        """Load a folder written by :meth:`save_pretrained` (or ``genscom train adapter``).

        Raises:
            FileNotFoundError: a file is missing.
            BadFileError: ``config.json`` or ``model.safetensors`` is unreadable or does not fit (naming the file).
        """
        from genscom.pretrained import load_module_folder

        model, _ = load_module_folder(folder, key="adapter", build=lambda d: cls(AdapterConfig.from_dict(d)),
                                      what="channel adapter", device=device,
                                      fix="make one with `genscom train adapter`, or pass another adapter folder")
        return model

    def _check_emb(self, emb: torch.Tensor) -> None:
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.is_complex():
            raise ValueError(f"emb must be a real tensor [B, d], got {type(emb).__name__} "
                             f"{tuple(getattr(emb, 'shape', ()))}")
        if emb.shape[1] != self.config.dim:
            raise ValueError(f"emb has dimension {emb.shape[1]} but this adapter was built for dim={self.config.dim}; "
                             "use embeddings of the encoder profile the adapter was trained on")


def pilot_layout(channel: Channel | None, pilots_per_block: int = 2) -> PilotLayout | None:
    """Pilots of a pilot-CSI frame on ``channel``: ``pilots_per_block`` at the start of every coherence
    block of a fading channel; ``None`` for AWGN or ``channel=None`` (nothing to estimate), as
    :meth:`genscom.channels.sensing.LinkFeedback.pilot_layout`."""
    if channel is None or getattr(channel, "coherence", None) is None:
        return None
    return PilotLayout.for_channel(channel, pilots_per_block)


def receiver_snr(received: ChannelOutput | None, snr_db: Any, tx_snr_db: Any, *, csi: CSI,
                 pilots: PilotLayout | None, noiseless: float) -> Any:
    """The SNR the decoder is conditioned on: ``noiseless`` without a channel; the true ``snr_db``
    with ``csi="perfect"``; with ``csi="pilot"`` the receiver's pilot estimate (``received.snr_db``)
    when the frame had ``pilots``, else (AWGN) the value it fed back itself, ``tx_snr_db``."""
    if received is None:
        return noiseless
    if csi == "perfect":
        return snr_db
    return received.snr_db if pilots is not None else tx_snr_db


def through_channel(x: torch.Tensor, keep: torch.Tensor, channel: Channel | None, snr_db: Any, *,
                    equalizer: Equalizer = "mmse", generator: torch.Generator | None = None,
                    pilots: PilotLayout | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, ChannelOutput | None]:
    """Put each item's sent symbols on the air (compacted, in order), equalise, scatter back.

    ``pilots=None``: the receiver equalises with the true ``h`` and ``N0`` (perfect CSI; AWGN needs
    nothing else). With a :class:`PilotLayout` the compacted stream ``[B, n_max]`` (the longest
    item's symbols; shorter items are zero-padded, as the ``adapted+mu`` scheme sends them) goes
    through :func:`~genscom.channels.sensing.pass_with_pilots`: pilots at the start of every block,
    LMMSE estimate ``h_hat`` per block, estimated ``N0``; MMSE equalisation and ``gain = |h_hat|``
    use these estimates. The estimates depend on the (constant) pilots and the noise only, so they
    carry no gradient to ``x`` and are detached; the data part stays differentiable.

    Args:
        x: ``[B, k]`` complex symbols (zeros where not sent); keep: ``[B, k]`` bool.
        channel: a :class:`Channel` or ``None`` (noiseless: ``x`` is returned).
        snr_db: the true SNR (number or ``[B]`` dB) the channel runs at.
    Returns: ``(x_hat [B, k], gain [B, k] |h| or |h_hat| (None for AWGN/noiseless), ChannelOutput or None)``;
        with ``pilots`` the output is the receiver's view (``h``, ``noise_var``, ``snr_db`` are its estimates).
    """
    if channel is None:
        return x, None, None
    from genscom.channels.fading import equalize

    k = x.shape[1]
    x_c, _, _ = X.compact(x, keep)
    if pilots is None:
        out = channel(x_c, snr_db, generator=generator)
    else:
        rx = pass_with_pilots(x_c, channel, snr_db, pilots, generator=generator)
        out = ChannelOutput(y=rx.y, h=None if rx.h is None else rx.h.detach(), noise_var=rx.noise_var.detach(),
                            snr_db=rx.snr_db.detach(), channel=rx.channel)
    x_hat_c, _ = equalize(out.y, out.h, out.noise_var, equalizer)
    x_hat = X.uncompact(x_hat_c, keep, k)
    gain = None if out.h is None else X.uncompact(out.h.abs(), keep, k)
    return x_hat, gain, out


def build_adapter(config: AdapterConfig, *, seed: int = 0, device: str | torch.device = "cpu") -> ChannelAdapter:
    """A randomly initialised adapter, deterministic for ``seed`` (the caller's RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ChannelAdapter(config)
    return model.to(device)
