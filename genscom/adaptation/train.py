r"""Train a :class:`~genscom.adaptation.adapter.ChannelAdapter` end to end through the channels.

Recipe (one step, ``B`` items of the **train** split; the test split is never read):

1. the encoder profile embeds every training clip and caption once (cached on disk,
   keyed by the encoder's weights, the dataset and the item count);
2. ``B`` items are drawn without replacement (``randperm`` per step), one caption each;
   the last ``val_items`` items are held out for validation;
3. each item draws an SNR uniformly in ``[snr_min_db, snr_max_db]`` (the channel's true SNR) and a **rate mode**:
   full (``p_full``), a random prefix of ``k' in [group_size, k]`` symbols (``p_prefix``), or
   scalable extraction keeping the ``m ~ U{1..G}`` most important groups (the rest), which is
   what a random ``mu`` does; the importance head learns through a straight-through gate;
4. the first half of the batch goes through AWGN, the second through Rayleigh block
   fading (``coherence`` symbols; any subset of ``channels``). What the two ends know (``csi``):

   * ``"pilot"`` (default, PROTOCOL.md "Channels"): the encoder is conditioned on the SNR the
     receiver fed back, the true SNR seen through a ``feedback_pilots``-pilot sounding and quantised
     to ``feedback_bits`` (:func:`fed_back_snr_db`, the exact law of
     :func:`genscom.channels.sensing.link_feedback`'s estimate, drawn per item); on fading channels
     ``pilots_per_block`` pilots open every coherence block and the receiver MMSE-equalises with
     their LMMSE estimates of ``h`` and ``N0`` and decodes with ``|h_hat|`` and its estimated SNR
     (:func:`genscom.channels.sensing.pass_with_pilots`); on AWGN it decodes with the fed-back SNR.
     This is what the ``adapted`` scheme does with ``transmit(batch, sensing=link_feedback(...))``;
   * ``"perfect"`` (the ``mini-k192`` recipe, an upper bound): true SNR at both ends, true ``h``;
5. loss ``L = 1/2 [CE(R T^T / tau, P) + CE(T R^T / tau, P)] + cos_weight * mean(1 - cos(R, V))``
   with ``R`` the received embeddings, ``T`` the paired caption embeddings, ``V`` the clean
   clip embeddings and ``P`` the row-normalised "same caption string" matrix;
6. AdamW, linear warm-up then cosine decay to ``min_lr_ratio * lr``.

The loop runs under `accelerate <https://huggingface.co/docs/accelerate>`_: ``python``/``genscom``
on one CPU or GPU, ``accelerate launch`` on several GPUs (each process draws its own batch from
its own generator, gradients are averaged). All randomness comes from explicit generators
seeded from ``seed`` (+ process index); checkpoints (model, optimizer, generator states, step,
losses) are written atomically to ``<run_dir>/checkpoint.pt`` and ``resume=True`` continues the
run exactly. The final adapter is written with ``save_pretrained`` to ``output_dir``
(``runs/adapter-<name>-<timestamp>/`` by default; a folder already holding weights, such as a shipped
adapter, only with ``overwrite=True``, and its README is kept) with ``README.md`` and ``train_log.json``.

Example:
    >>> cfg = TrainAdapterConfig(name="mini-k192", steps=3000)
    >>> folder = train_adapter(cfg)             # doctest: +SKIP
    >>> ad = ChannelAdapter.from_pretrained(folder)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genscom.adaptation import extraction as X
from genscom.adaptation.adapter import (AdapterConfig, ChannelAdapter, build_adapter, pilot_layout, receiver_snr,
                                        through_channel)
from genscom.channels.sensing import CSI
from genscom.data.base import caption_index
from genscom.loading import read_json
from genscom.metrics.retrieval import retrieval_metrics
from genscom.results import machine_description
from genscom.training import (cached_tensors, check_output_dir, config_defaults, contrastive_loss, decay_groups,
                              default_cache_dir, load_checkpoint, loss_curve, lr_at, make_accelerator,
                              resolve_run_dir, run_card, save_checkpoint, set_lr, write_run)

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
# fields that may change between a run and its resumption (they do not change the trajectory)
# What a run did before a field existed, where today's default differs: a checkpoint without the field resumes
# only with this value (pilot CSI came in 81058e7; runs before it used the true SNR and h).
_BEFORE_FIELDS = {"csi": "perfect"}
_RESUME_FREE = {"steps", "output_dir", "run_dir", "cache_dir", "text_cache_dir", "cpu_threads", "storage_dtype", "checkpoint_every", "log_every", "device",
                "eval_snrs_db"}


@dataclass
class TrainAdapterConfig:
    """Everything an adapter training run depends on (saved in the checkpoint, ``config.json`` and ``train_log.json``)."""

    name: str = "mini-k192"              # adapter name: output and checkpoints in runs/adapter-<name>-<timestamp>/
    profile: str = "mini"                # encoder profile whose embeddings are adapted
    dataset: str = "synthetic"           # its train split is used
    n_items: int = 10000                 # train-split items (the last val_items are held out)
    val_items: int = 500
    dataset_seed: int = 0
    adapter: dict[str, Any] = field(default_factory=dict)  # AdapterConfig overrides (dim follows the encoder)
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    temperature: float = 0.05            # InfoNCE softmax temperature tau
    cos_weight: float = 1.0              # weight of 1 - cos(received, clean)
    snr_min_db: float = -10.0
    snr_max_db: float = 20.0
    channels: tuple[str, ...] = ("awgn", "rayleigh")
    coherence: int = 16                  # Rayleigh coherence block (symbols), as the benchmark's default
    p_full: float = 0.3                  # rate-mode probabilities (the rest: scalable extraction)
    p_prefix: float = 0.3
    seed: int = 0
    checkpoint_every: int = 500          # steps between checkpoints (0: only at the end)
    log_every: int = 50
    device: Literal["auto", "cpu"] = "cpu"  # "auto": accelerate picks the GPU when present
    cpu_threads: int = 0                 # >0: torch intra-op threads during the run (1 is fastest on a busy shared CPU)
    output_dir: str | None = None        # final weights; default runs/adapter-<name>-<timestamp>/ (never shipped ones)
    run_dir: str | None = None           # checkpoints; default: output_dir
    cache_dir: str | None = None         # embedding cache; default $GENSCOM_CACHE or ~/.cache/genscom
    text_cache_dir: str | None = None    # mini profile: reuse `genscom train encoder`'s caption cache (same frozen MiniLM)
    eval_snrs_db: tuple[float, ...] = (-5.0, 0.0, 5.0)  # validation SNRs (held-out train items)
    storage_dtype: Literal["float16", "float32"] = "float16"  # dtype of the saved weights
    csi: Literal["pilot", "perfect"] = "pilot"  # "pilot": fed-back SNR + pilot estimates; "perfect": true h and SNR
    pilots_per_block: int = 2            # csi="pilot": pilots opening every coherence block of a fading channel
    feedback_bits: int = 6               # csi="pilot": SNR feedback word, 0.5 dB steps from -10 dB (as link_feedback)
    feedback_pilots: int = 64            # csi="pilot": pilots of the sounding whose SNR estimate is fed back

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name must be a non-empty folder name without '/', '\\' or spaces, got {self.name!r}")
        for k in ("n_items", "steps", "batch_size", "log_every", "coherence"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive int, got {v!r}")
        for k in ("val_items", "warmup_steps", "checkpoint_every", "seed", "dataset_seed", "cpu_threads"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{k} must be a non-negative int, got {v!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")
        if self.n_items - self.val_items < self.batch_size:
            raise ValueError(f"n_items - val_items ({self.n_items} - {self.val_items}) must be >= batch_size "
                             f"({self.batch_size})")
        for k in ("lr", "temperature"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{k} must be a positive number, got {v!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0 or self.cos_weight < 0:
            raise ValueError(f"weight_decay and cos_weight must be >= 0, got {self.weight_decay!r}, {self.cos_weight!r}")
        for k in ("snr_min_db", "snr_max_db"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{k} must be a finite number of dB, got {v!r}")
        if self.snr_min_db > self.snr_max_db:
            raise ValueError(f"snr_min_db ({self.snr_min_db}) must be <= snr_max_db ({self.snr_max_db})")
        self.channels = tuple(self.channels)
        if not self.channels or any(c not in ("awgn", "rayleigh", "rician") for c in self.channels):
            raise ValueError(f"channels must be a non-empty subset of ('awgn', 'rayleigh', 'rician'), got {self.channels!r}")
        if not (0 <= self.p_full <= 1 and 0 <= self.p_prefix <= 1 and self.p_full + self.p_prefix <= 1):
            raise ValueError(f"p_full and p_prefix must be probabilities with p_full + p_prefix <= 1, "
                             f"got {self.p_full!r}, {self.p_prefix!r}")
        if self.storage_dtype not in ("float16", "float32"):
            raise ValueError(f"storage_dtype must be 'float16' or 'float32', got {self.storage_dtype!r}")
        if self.device not in ("auto", "cpu"):
            raise ValueError(f"device must be 'auto' (GPU if present, as accelerate decides) or 'cpu', got {self.device!r}")
        if not isinstance(self.adapter, dict):
            raise TypeError(f"adapter must be a dict of AdapterConfig overrides, got {type(self.adapter).__name__}")
        self.eval_snrs_db = tuple(float(s) for s in self.eval_snrs_db)
        self._check_csi()
        self.adapter_config(dim=self.adapter.get("dim", 384))  # validates the overrides

    def _check_csi(self) -> None:
        if self.csi not in ("pilot", "perfect"):
            raise ValueError(f"csi must be 'pilot' (fed-back SNR, pilot-estimated channel; PROTOCOL.md) or "
                             f"'perfect' (true channel and SNR, an upper bound), got {self.csi!r}")
        for k, low in (("pilots_per_block", 2), ("feedback_bits", 1), ("feedback_pilots", 2)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{k} must be an int >= {low}, got {v!r}")
        fading = any(c != "awgn" for c in self.channels)
        if self.csi == "pilot" and fading and self.pilots_per_block >= self.coherence:
            raise ValueError(f"pilots_per_block ({self.pilots_per_block}) must be < coherence ({self.coherence}) "
                             "to leave room for data in each coherence block (csi='pilot')")

    def adapter_config(self, *, dim: int) -> AdapterConfig:
        over = {k: v for k, v in self.adapter.items() if k != "dim"}
        over.setdefault("snr_range_db", (self.snr_min_db, self.snr_max_db))
        try:
            return AdapterConfig(dim=dim, **over)
        except TypeError as exc:
            names = sorted(f.name for f in dataclasses.fields(AdapterConfig))
            raise ValueError(f"bad adapter overrides {sorted(self.adapter)}: {exc}; known fields: {names}") from exc

    @property
    def out_path(self) -> Path:
        """Where the final weights go: ``output_dir`` (``None`` until :func:`train_adapter` picks
        ``runs/adapter-<name>-<timestamp>/``: then this raises ``ValueError``)."""
        if not self.output_dir:
            raise ValueError("output_dir is None: train_adapter chooses runs/adapter-<name>-<timestamp>/ when it "
                             "starts; set output_dir to know the folder in advance")
        return Path(self.output_dir)

    @property
    def run_path(self) -> Path:
        """Where checkpoints go: ``run_dir``, else :attr:`out_path`."""
        return Path(self.run_dir) if self.run_dir else self.out_path

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["eval_snrs_db"] = list(self.eval_snrs_db)
        return d


ADAPTER_FIELDS = ("k", "hidden", "depth", "group_size", "cond_dim")


# ---------------------------------------------------------------------------------- fed-back SNR


def sounding_dof(channel: str, *, n_pilots: int, coherence: int) -> int:
    """Complex degrees of freedom of the noise estimate of an ``n_pilots`` sounding on ``channel``:
    ``n_pilots - n_blocks`` (one per coherence block is spent on ``h_ls``; AWGN: one block)."""
    block = n_pilots if channel == "awgn" else coherence
    return n_pilots - -(-n_pilots // block)


def fed_back_snr_db(snr_db: torch.Tensor, dof: torch.Tensor, *, bits: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Per-item model of :func:`genscom.channels.sensing.link_feedback` (``csi="pilot"``): the SNR a
    transmitter is told when the true SNR is ``snr_db`` ``[B]`` (dB).

    ``link_feedback`` estimates ``N0`` from the LS residuals of a sounding of unit-modulus pilots
    (:func:`~genscom.channels.sensing.sense`); each block's residual is the noise projected off the
    pilot vector, so ``N0_hat / N0 ~ chi2(2 dof) / (2 dof)`` whatever ``h``, with ``dof`` ``[B]``
    from :func:`sounding_dof`. The estimate ``-10 log10(N0_hat)`` (``Es = 1``) is quantised like
    :func:`~genscom.channels.sensing.quantize_feedback_snr`: 0.5 dB steps from
    :data:`~genscom.channels.sensing.FEEDBACK_SNR_LO_DB`, ``2**bits`` levels, clipped, ties to even.
    The same law, drawn from ``generator`` in one pass instead of ``B`` channel soundings.

    Returns ``[B]`` float32 dB on the feedback grid.
    """
    from genscom.channels.sensing import FEEDBACK_SNR_LO_DB

    dof = dof.to(torch.int64)
    m = 2 * int(dof.max())
    z = torch.randn(len(snr_db), m, generator=generator)
    used = torch.arange(m) < 2 * dof.unsqueeze(-1)  # [B, m]: 2 dof real Gaussians per item
    ratio = (z.square() * used).sum(dim=-1) / (2 * dof).float()  # N0_hat / N0
    est = snr_db.float() - 10.0 * torch.log10(ratio)
    idx = torch.round((est - FEEDBACK_SNR_LO_DB) / 0.5).clamp(0, 2 ** bits - 1)
    return FEEDBACK_SNR_LO_DB + 0.5 * idx


def _row_dof(config: "TrainAdapterConfig", batch: int) -> torch.Tensor:
    """``[B]`` sounding dof of each row; rows go to ``config.channels`` in equal contiguous chunks
    (as :class:`AdapterTrainModule` splits them)."""
    dof = torch.empty(batch, dtype=torch.int64)
    for name, rows in zip(config.channels, torch.tensor_split(torch.arange(batch), len(config.channels))):
        dof[rows] = sounding_dof(name, n_pilots=config.feedback_pilots, coherence=config.coherence)
    return dof


def load_train_config(source: str | Path | dict[str, Any] | None = None, **overrides: Any) -> TrainAdapterConfig:
    """Config file (YAML/JSON) or dict, then CLI-style overrides (``None`` values are ignored).

    Overrides named like an :class:`AdapterConfig` field (``k``, ``hidden``, ``depth``,
    ``group_size``, ``cond_dim``) are merged into the ``adapter`` dict; the rest replace
    :class:`TrainAdapterConfig` fields by name (unknown names raise ``ValueError``).

    Example: ``load_train_config("adapter.yaml", steps=500, k=96)``.
    """
    from genscom.utils import load_config

    over = {k: v for k, v in overrides.items() if v is not None}
    arch = {k: over.pop(k) for k in ADAPTER_FIELDS if k in over}
    base = load_config(TrainAdapterConfig, source)
    names = {f.name for f in dataclasses.fields(TrainAdapterConfig)}
    unknown = sorted(set(over) - names)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for TrainAdapterConfig; known: {sorted(names)} "
                         f"and the adapter fields {list(ADAPTER_FIELDS)}")
    if arch:
        over["adapter"] = {**base.adapter, **over.get("adapter", {}), **arch}
    return dataclasses.replace(base, **over) if over else base


# ---------------------------------------------------------------------------------- data


@dataclass
class AdapterData:
    """Precomputed training embeddings.

    Attributes:
        clips: ``[N, d]`` float32 clean clip embeddings (L2-normalised).
        texts: ``[M, d]`` float32 caption embeddings (unique caption strings).
        offsets: ``[N + 1]`` int64 CSR offsets into ``caption_ids`` per item.
        caption_ids: ``[n_pairs]`` int64 rows of ``texts`` (item ``i`` owns ``caption_ids[offsets[i]:offsets[i+1]]``).
        source: a description (profile, dataset, hash) for logs.
    """

    clips: torch.Tensor
    texts: torch.Tensor
    offsets: torch.Tensor
    caption_ids: torch.Tensor
    source: str = ""

    def __post_init__(self) -> None:
        if self.clips.dim() != 2 or self.texts.dim() != 2 or self.clips.shape[1] != self.texts.shape[1]:
            raise ValueError(f"clips [N, d] and texts [M, d] must share d, got {tuple(self.clips.shape)} and "
                             f"{tuple(self.texts.shape)}")
        if self.offsets.shape != (len(self.clips) + 1,):
            raise ValueError(f"offsets must be [N + 1] = [{len(self.clips) + 1}], got {tuple(self.offsets.shape)}")
        if bool(((self.offsets[1:] - self.offsets[:-1]) < 1).any()):
            raise ValueError("every item needs at least one caption")

    @classmethod
    def from_pairs(cls, clips: torch.Tensor, captions: list[str], text_emb: torch.Tensor,
                   text_to_item: torch.Tensor, *, source: str = "") -> "AdapterData":
        """Build from ``all_captions()``-style lists: ``captions [n]``, ``text_emb [n, d]``, ``text_to_item [n]``.

        Identical caption strings share one row of ``texts`` (so they are never used as negatives of each other).
        """
        index = caption_index(captions, text_to_item, len(clips))
        return cls(clips=F.normalize(clips.float(), dim=-1),
                   texts=F.normalize(text_emb[index.first_row].float(), dim=-1), offsets=index.offsets,
                   caption_ids=index.ids, source=source)

    def subset(self, lo: int, hi: int) -> "AdapterData":
        """Items ``lo..hi-1`` (all caption rows kept)."""
        off = self.offsets[lo:hi + 1]
        return AdapterData(clips=self.clips[lo:hi], texts=self.texts, offsets=off - off[0],
                           caption_ids=self.caption_ids[int(off[0]):int(off[-1])], source=self.source)


def _encoder_fingerprint(encoder: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "adapter_embeddings"


def prepare_data(config: TrainAdapterConfig, *, encoder: Any = None, dataset: Any = None,
                 progress: bool = True) -> AdapterData:
    """Embed the train split once with ``config.profile`` (cached as ``.pt`` keyed by encoder weights + data)."""
    from genscom.data import create_dataset
    from genscom.encoders import create_encoder

    if encoder is None:
        encoder = create_encoder(config.profile)
    if dataset is None:
        dataset = create_dataset(config.dataset, split="train", n_items=config.n_items, seed=config.dataset_seed)
    captions, text_to_item = dataset.all_captions()
    key = hashlib.sha256(json.dumps([config.profile, _encoder_fingerprint(encoder), config.dataset,
                                     config.dataset_seed, len(dataset), captions[:50]]).encode()).hexdigest()[:16]
    path = _cache_root(config.cache_dir) / f"{config.profile}-{config.dataset}-n{len(dataset)}-{key}.pt"

    def compute() -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        encoder.eval()
        with torch.no_grad():
            texts = _embed_captions(encoder, captions, config, progress=progress)
            clips = torch.cat([encoder.encode_clips(dataset.stacked_frames(range(s, min(s + 500, len(dataset)))),
                                                    batch_size=64).float().cpu()
                               for s in range(0, len(dataset), 500)])
        logger.info("embedded %d clips and %d captions in %.1f s -> %s", len(clips), len(captions),
                    time.perf_counter() - t0, path)
        return {"clips": clips, "texts": texts}

    blob = cached_tensors(path, compute, shapes={"clips": len(dataset), "texts": len(captions)})
    clips, text_emb = blob["clips"], blob["texts"]
    return AdapterData.from_pairs(clips, captions, text_emb, text_to_item,
                                  source=f"{config.profile} embeddings of {config.dataset} train "
                                         f"(n={len(dataset)}, seed={config.dataset_seed}), cache {path.name}")


def _embed_captions(encoder: Any, captions: list[str], config: TrainAdapterConfig, *, progress: bool) -> torch.Tensor:
    """``[len(captions), d]`` caption embeddings; for ``mini`` with ``text_cache_dir``, through the encoder
    trainer's cache of the same frozen MiniLM (unique captions, first-occurrence order)."""
    if config.text_cache_dir and config.profile == "mini" and hasattr(encoder, "text_tower"):
        from genscom.encoders.train import embed_captions

        uid: dict[str, int] = {}
        for c in captions:
            uid.setdefault(c, len(uid))
        emb = embed_captions(encoder.text_tower, list(uid), cache_dir=config.text_cache_dir, tower_name="minilm",
                             progress=progress)
        return emb[torch.tensor([uid[c] for c in captions])].float().cpu()
    return encoder.encode_text(captions, batch_size=256, progress=progress).float().cpu()


# ---------------------------------------------------------------------------------- one step


class AdapterTrainModule(nn.Module):
    """Wraps the adapter so one ``forward`` runs a whole training batch (what DDP must see).

    ``forward(clean, snr_db, keep, st_rows, generator, *, csi, tx_snr_db, pilots_per_block)`` ->
    ``(received [B, d], importance [B, G])``. Rows go to ``channels`` in equal contiguous chunks;
    ``snr_db`` ``[B]`` is the channels' true SNR, ``tx_snr_db`` ``[B]`` the encoder's (fed back;
    ``csi="pilot"`` only). See :meth:`ChannelAdapter.forward` for what each ``csi`` gives the decoder.
    """

    def __init__(self, adapter: ChannelAdapter, channels: list[nn.Module]) -> None:
        super().__init__()
        self.adapter = adapter
        self.channels = nn.ModuleList(channels)

    def forward(self, clean: torch.Tensor, snr_db: torch.Tensor, keep: torch.Tensor, st_rows: torch.Tensor,
                generator: torch.Generator | None = None, *, csi: CSI = "perfect",
                tx_snr_db: torch.Tensor | None = None, pilots_per_block: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        ad = self.adapter
        tx = snr_db if tx_snr_db is None or csi == "perfect" else tx_snr_db
        z, importance = ad.encode(clean, tx)
        w = X.expand_groups(importance, ad.config.group_size)
        gate = torch.where(st_rows.unsqueeze(-1), keep.float() + w - w.detach(), keep.float())
        x = ad.normalize(z, keep, gate=gate)
        chunks = torch.tensor_split(torch.arange(len(clean), device=clean.device), len(self.channels))
        outs = []
        for ch, rows in zip(self.channels, chunks):
            if len(rows) == 0:
                continue
            layout = pilot_layout(ch, pilots_per_block) if csi == "pilot" else None
            x_hat, gain, rx = through_channel(x[rows], keep[rows], ch, snr_db[rows], generator=generator, pilots=layout)
            rx_snr = receiver_snr(rx, snr_db[rows], tx[rows], csi=csi, pilots=layout,
                                  noiseless=ad.config.snr_range_db[1])
            outs.append(ad.decode(x_hat, snr_db=rx_snr, keep=keep[rows], gain=gain))
        return torch.cat(outs), importance


def sample_batch(data: AdapterData, n_train: int, config: TrainAdapterConfig, acfg: AdapterConfig,
                 gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw one batch (CPU tensors): items, captions, SNRs and rate masks; with ``csi="pilot"`` also
    ``snr_fb``, the fed-back SNR the encoder is conditioned on (:func:`fed_back_snr_db`, drawn last)."""
    b = config.batch_size
    idx = torch.randperm(n_train, generator=gen)[:b]
    lo, n_caps = data.offsets[idx], data.offsets[idx + 1] - data.offsets[idx]
    pick = (torch.rand(b, generator=gen) * n_caps).long().clamp(max=n_caps - 1)
    cid = data.caption_ids[lo + pick]
    snr = config.snr_min_db + (config.snr_max_db - config.snr_min_db) * torch.rand(b, generator=gen)
    u = torch.rand(b, generator=gen)
    lengths = torch.randint(acfg.group_size, acfg.k + 1, (b,), generator=gen)
    lengths = torch.where(u < config.p_full, torch.full_like(lengths, acfg.k), lengths)
    n_keep = torch.randint(1, acfg.n_groups + 1, (b,), generator=gen)
    extract = u >= config.p_full + config.p_prefix
    batch = {"idx": idx, "cid": cid, "snr": snr, "lengths": lengths, "n_keep": n_keep, "extract": extract}
    if config.csi == "pilot":
        batch["snr_fb"] = fed_back_snr_db(snr, _row_dof(config, b), bits=config.feedback_bits, generator=gen)
    return batch


def batch_loss(module: nn.Module, data: AdapterData, batch: dict[str, torch.Tensor], config: TrainAdapterConfig,
               acfg: AdapterConfig, *, device: torch.device, noise_gen: torch.Generator | None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one sampled batch through ``module`` (an :class:`AdapterTrainModule`, possibly DDP-wrapped)."""
    clean = data.clips[batch["idx"]].to(device)
    text = data.texts[batch["cid"]].to(device)
    b = len(clean)
    prefix = X.prefix_keep(batch["lengths"].to(device), acfg.k)
    importance_rows = batch["extract"].to(device)
    # the importance of each item decides the extraction mask: computed inside forward would need two passes,
    # so the mask is made from a no-grad encode of the same items (identical weights and inputs)
    unwrapped = module.module if hasattr(module, "module") else module
    snr = batch["snr"].to(device)
    tx = batch["snr_fb"].to(device) if config.csi == "pilot" else snr  # what the encoder is told
    with torch.no_grad():
        _, imp = unwrapped.adapter.encode(clean, tx)
    keep_g = X.topk_keep(imp, batch["n_keep"].to(device))
    keep = torch.where(importance_rows.unsqueeze(-1), X.expand_groups(keep_g, acfg.group_size), prefix)
    if config.csi == "pilot":
        received, _ = module(clean, snr, keep, importance_rows, noise_gen, csi="pilot", tx_snr_db=tx,
                             pilots_per_block=config.pilots_per_block)
    else:
        received, _ = module(clean, snr, keep, importance_rows, noise_gen)
    nce = contrastive_loss(received, text, scale=1.0 / config.temperature, ids=batch["cid"].to(device))
    cos = (1.0 - (received * clean).sum(dim=-1)).mean()
    loss = nce + config.cos_weight * cos
    return loss, {"nce": float(nce.detach()), "cos": float(cos.detach()), "mean_uses": float(keep.sum() / b)}


# ---------------------------------------------------------------------------------- evaluation


def _recall_at_1(gallery: torch.Tensor, data: AdapterData) -> float:
    """t2v R@1 (:func:`~genscom.metrics.retrieval.retrieval_metrics`) with every caption of ``data``
    as a query over ``gallery [N, d]``."""
    n = len(data.clips)
    item_of_row = torch.repeat_interleave(torch.arange(n), data.offsets[1:] - data.offsets[:-1])
    q = data.texts[data.caption_ids]
    return retrieval_metrics(q @ gallery.T, item_of_row)["t2v_R@1"]


@torch.no_grad()
def evaluate(adapter: ChannelAdapter, data: AdapterData, snrs_db: tuple[float, ...], *, channels: tuple[str, ...],
             coherence: int, seed: int = 0, csi: CSI = "pilot", pilots_per_block: int = 2, feedback_bits: int = 6,
             feedback_pilots: int = 64) -> dict[str, float]:
    """Validation t2v R@1 of the full-rate adapter per channel and SNR, plus the clean embeddings' R@1.

    ``csi="pilot"``: per channel and SNR the transmitter is told ``link_feedback(channel, snr, ...)``
    (one sounding for the whole set, as the benchmarks do) and fading frames carry pilots
    (:meth:`ChannelAdapter.forward`); ``csi="perfect"``: true SNR and ``h``.
    """
    from genscom.channels.registry import create_channel
    from genscom.channels.sensing import link_feedback

    adapter.eval()
    dev = next(adapter.parameters()).device
    clean = data.clips.to(dev)
    out = {"clean_R@1": _recall_at_1(data.clips, data)}
    for ch_name in channels:
        ch = create_channel(ch_name, **({"coherence": coherence} if ch_name != "awgn" else {}))
        for s in snrs_db:
            g = torch.Generator(device=dev).manual_seed(seed + int(s * 10) + 1000)
            if csi == "pilot":
                fb = link_feedback(ch, s, n_pilots=feedback_pilots, bits=feedback_bits,
                                   pilots_per_block=pilots_per_block, generator=g)
                rec = adapter(clean, s, channel=ch, csi="pilot", tx_snr_db=fb.snr_db,
                              pilots_per_block=pilots_per_block, generator=g).embeddings.cpu()
            else:
                rec = adapter(clean, s, channel=ch, csi="perfect", generator=g).embeddings.cpu()
            out[f"{ch_name}_{s:+.0f}dB_R@1"] = _recall_at_1(rec, data)
    return out


# ---------------------------------------------------------------------------------- loop


def train_adapter(config: TrainAdapterConfig, *, resume: bool = False, progress: bool = True,
                  data: AdapterData | None = None, encoder: Any = None, command: str | None = None,
                  stop_after: int | None = None, overwrite: bool = False) -> Path:
    """Train the adapter (see the module doc); return the folder holding the final ``save_pretrained`` weights.

    Args:
        config: the run's settings.
        resume: continue from ``<run_dir>/checkpoint.pt`` exactly where it stopped (``output_dir=None``:
            the newest ``runs/adapter-<name>-<timestamp>/`` holding a checkpoint).
        progress: tqdm progress bar (main process only).
        data: precomputed :class:`AdapterData` (tests, custom data); default: :func:`prepare_data`.
        encoder: encoder to embed the train split with (default ``create_encoder(config.profile)``).
        command: the launching command line (recorded in ``README.md``).
        stop_after: stop (after checkpointing) once this many steps are done, without writing the
            final adapter: simulates an interrupted run (tests).
        overwrite: allow an ``output_dir`` that already holds trained weights (its README is kept).

    The output folder, the checkpoint and the encoder profile are checked before any data is prepared.

    Raises:
        FileNotFoundError: ``resume=True`` but no checkpoint exists.
        OutputExistsError: ``output_dir`` holds trained weights and neither ``overwrite`` nor ``resume``.
        BadFileError: the checkpoint (or a ``profile`` folder) is unreadable.
        ValueError: the checkpoint was written with a different config.
    """
    out = resolve_run_dir(config.output_dir, f"adapter-{config.name}", resume=resume and not config.run_dir)
    config = dataclasses.replace(config, output_dir=str(out))
    check_output_dir(out, overwrite=overwrite, resuming=resume and (config.run_path / CHECKPOINT_NAME).is_file()
                     and config.run_path == out)
    if data is None and encoder is None:
        from genscom.encoders.registry import check_profile

        check_profile(config.profile)
    threads = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train(config, resume=resume, progress=progress, data=data, encoder=encoder, command=command,
                      stop_after=stop_after)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainAdapterConfig, *, resume: bool, progress: bool, data: AdapterData | None, encoder: Any,
           command: str | None, stop_after: int | None) -> Path:
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from genscom.channels.registry import create_channel

    t_start = time.perf_counter()
    accelerator = make_accelerator(config.device)
    device = accelerator.device
    rank, world = accelerator.process_index, accelerator.num_processes
    ckpt_path = config.run_path / CHECKPOINT_NAME
    ckpt = load_checkpoint(ckpt_path, resume=resume, config=config.to_dict(), free=_RESUME_FREE,
                           defaults={**config_defaults(type(config)), **_BEFORE_FIELDS},
                           hint="use the same config or drop --resume")

    if data is None:
        data = prepare_data(config, encoder=encoder, progress=progress and accelerator.is_main_process)
    n_all = len(data.clips)
    n_train = n_all - config.val_items
    if n_train < config.batch_size:
        raise ValueError(f"only {n_train} training items after holding out val_items={config.val_items}; "
                         f"need >= batch_size={config.batch_size}")
    val = data.subset(n_train, n_all) if config.val_items else None
    train = data.subset(0, n_train)
    acfg = config.adapter_config(dim=data.clips.shape[1])
    t_data = time.perf_counter() - t_start

    adapter = build_adapter(acfg, seed=config.seed)
    channels = [create_channel(c, **({"coherence": config.coherence} if c != "awgn" else {})) for c in config.channels]
    module = AdapterTrainModule(adapter, channels)
    optimizer = torch.optim.AdamW(decay_groups(module.named_parameters(), config.weight_decay,
                                               exclude=lambda name: "mask_token" in name), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed * 1000 + rank)        # batches (CPU)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed * 1000 + 500 + rank)  # channel noise
    step, losses, elapsed_before = 0, [], 0.0
    if ckpt is not None:
        module.adapter.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        states = ckpt["rng_states"]
        if len(states) != world:
            raise ValueError(f"checkpoint was written by {len(states)} process(es), this run has {world}; "
                             "resume with the same number of processes")
        gen.set_state(states[rank]["batch"])
        noise_gen.set_state(states[rank]["noise"].to(noise_gen.get_state().device))
        step, losses = int(ckpt["step"]), ckpt["losses"].tolist()
        elapsed_before = float(ckpt["train_seconds"])
        logger.info("resumed %s at step %d", ckpt_path, step)
    module, optimizer = accelerator.prepare(module, optimizer)

    def checkpoint() -> None:
        states = gather_object([{"batch": gen.get_state(), "noise": noise_gen.get_state().cpu()}])
        if accelerator.is_main_process:
            save_checkpoint(ckpt_path, {
                "step": step, "model": accelerator.unwrap_model(module).adapter.state_dict(),
                "optimizer": optimizer.state_dict(), "rng_states": states,
                "losses": torch.tensor(losses, dtype=torch.float64),
                "train_seconds": elapsed_before + (time.perf_counter() - t_loop),
            }, config=config.to_dict())
        accelerator.wait_for_everyone()

    module.train()
    t_loop = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc=f"train adapter {config.name}",
               disable=not (progress and accelerator.is_main_process))
    last_parts: dict[str, float] = {}
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    while step < end:
        set_lr(optimizer, lr_at(step, lr=config.lr, warmup_steps=config.warmup_steps, total_steps=config.steps,
                                min_lr_ratio=config.min_lr_ratio))
        batch = sample_batch(train, n_train, config, acfg, gen)
        loss, last_parts = batch_loss(module, train, batch, config, acfg, device=device, noise_gen=noise_gen)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            recent = losses[-config.log_every:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", cos=f"{last_parts['cos']:.3f}")
            logger.info("step %d/%d loss %.4f", step, config.steps, sum(recent) / len(recent))
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            checkpoint()
    bar.close()
    train_seconds = elapsed_before + (time.perf_counter() - t_loop)
    checkpoint()
    out = config.out_path
    if stop_after is not None and step < config.steps:
        return out
    if not accelerator.is_main_process:
        return out

    storage = torch.float16 if config.storage_dtype == "float16" else torch.float32
    accelerator.unwrap_model(module).adapter.to("cpu").save_pretrained(
        out, extra_config={"profile": config.profile, "train": config.to_dict()}, dtype=storage)
    adapter = ChannelAdapter.from_pretrained(out)  # evaluate exactly what was written
    metrics = (evaluate(adapter, val, config.eval_snrs_db, channels=config.channels, coherence=config.coherence,
                        seed=config.seed, csi=config.csi, pilots_per_block=config.pilots_per_block,
                        feedback_bits=config.feedback_bits, feedback_pilots=config.feedback_pilots)
               if val is not None else {})
    total_seconds = time.perf_counter() - t_start
    log = {
        "config": config.to_dict(), "command": command, "steps_done": step, "train_seconds": round(train_seconds, 1),
        "data_seconds": round(t_data, 1), "total_seconds": round(total_seconds, 1), "n_train_items": n_train,
        "n_val_items": config.val_items, "data": data.source, "processes": world, "device": str(device),
        "losses_every_log_step": loss_curve(losses, config.log_every),
        "val_metrics": metrics, "machine": machine_description(),
        "n_parameters": sum(p.numel() for p in adapter.parameters()),
    }
    write_run(out, log=log, readme=_readme(log, out))
    return out


def _csi_text(cfg: dict[str, Any]) -> str:
    if cfg.get("csi", "perfect") == "perfect":
        return "perfect CSI (true h and SNR at both ends: an upper bound)"
    return (f"pilot CSI: the encoder is told the receiver's SNR estimate from a {cfg['feedback_pilots']}-pilot "
            f"sounding, fed back on {cfg['feedback_bits']} bits (0.5 dB steps); {cfg['pilots_per_block']} pilots per "
            "coherence block on fading, LMMSE estimates of h and the SNR at the receiver")


def _readme(log: dict[str, Any], out: Path) -> str:
    cfg = log["config"]
    a = read_json(out / "config.json", expected="the adapter config.json just written")["adapter"]
    m = log["val_metrics"]
    rows = [
        ("architecture", f"FiLM-conditioned MLPs, hidden {a['hidden']}, depth {a['depth']}, "
                         f"{log['n_parameters'] / 1e6:.2f} M parameters (stored as {cfg['storage_dtype']})"),
        ("data", f"{log['data']}; {log['n_train_items']} items for training, {log['n_val_items']} held out"),
        ("channels", f"{', '.join(cfg['channels'])} (Rayleigh coherence {cfg['coherence']}), SNR ~ "
                     f"U[{cfg['snr_min_db']}, {cfg['snr_max_db']}] dB, {_csi_text(cfg)}, MMSE"),
        ("loss", f"InfoNCE (tau {cfg['temperature']}) + {cfg['cos_weight']} x (1 - cos)"),
        ("rate modes", f"full {cfg['p_full']}, prefix {cfg['p_prefix']}, extraction "
                       f"{1 - cfg['p_full'] - cfg['p_prefix']:.2f}"),
        ("training", f"{log['steps_done']} steps x {cfg['batch_size']}, AdamW lr {cfg['lr']}, warm-up "
                     f"{cfg['warmup_steps']}, cosine, seed {cfg['seed']}, {log['processes']} process(es) on "
                     f"{log['device']}"),
        ("wall time", f"{log['train_seconds']:.0f} s training, {log['total_seconds']:.0f} s in all "
                      f"(embedding the data: {log['data_seconds']:.0f} s, cached after the first run), on "
                      f"{log['machine']}"),
    ]
    if m:
        rows.append((f"validation t2v R@1 (held-out train items, full rate, {cfg.get('csi', 'perfect')} CSI)",
                     ", ".join(f"{k} {v:.3f}" for k, v in m.items())))
    return run_card(
        title=f"channel adapter `{cfg['name']}`",
        intro=[f"A learned, SNR/CSI-conditioned channel adapter for the `{cfg['profile']}` encoder profile: "
               f"{a['dim']}-d embedding -> {a['k']} complex channel uses (any prefix k' <= {a['k']}, or scalable "
               f"extraction in {a['k'] // a['group_size']} groups of {a['group_size']} symbols) -> {a['dim']}-d "
               "embedding.",
               f"Load it with `ChannelAdapter.from_pretrained(\"{out}\")` or pass the folder to the `adapted` / "
               "`adapted+mu` schemes (`adapter=`)."],
        rows=rows, command=log["command"], api="train_adapter(TrainAdapterConfig(**config))", config=cfg)
