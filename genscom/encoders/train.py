"""Train the mini image/video tower against a frozen text tower (locked-text tuning, LiT).

Recipe (one step, ``B`` clips):

1. the frozen text tower embeds every training caption once (L2-normalised,
   cached on disk, keyed by the tower and the caption list);
2. ``B`` clips are drawn without replacement from a seeded per-epoch permutation,
   one of each clip's captions is drawn uniformly;
3. the tower encodes the clips (meanP over frame features, L2-normalised), and
   the symmetric InfoNCE loss with a learnable logit scale ``s = exp(log_s)``
   (CLIP; initialised to ``1 / temperature``, clamped to ``max_logit_scale``) is

       L = 1/2 [ CE(s V T^T, P) + CE(s T V^T, P) ],

   where ``P`` is the row-normalised "same caption text" matrix (the identity
   unless two clips in the batch drew the same caption string, which are then not
   pushed apart);
4. optionally (``attribute_weight > 0``, datasets with attribute labels such as the synthetic
   one), an auxiliary cross-entropy of linear heads on the pooled clip features that predict
   each object group's shape, colour, count, size and motion and the background,
   ``L += attribute_weight * mean_attributes CE`` (the heads are dropped after training;
   they make the tower keep what the captions name but retrieval alone does not need,
   e.g. the shape when colour and motion already tell clips apart);
5. AdamW, linear warm-up then cosine decay to ``min_lr_ratio * lr``.

``init_from`` starts from a trained tower folder (e.g. the shipped ``mini`` weights) instead
of a random one: a fine-tuning run.

All randomness comes from one ``torch.Generator`` seeded with ``config.seed``;
checkpoints (model, logit scale, optimizer, generator state, epoch permutation,
step, loss history) are written atomically and ``resume=True`` continues the run
bit for bit on the same machine. The final tower is written with
``save_pretrained`` (float16 by default) plus ``README.md`` and ``train_log.json``.

Example:
    >>> cfg = TrainEncoderConfig()                   # defaults = the shipped recipe, into runs/encoder-mini-<timestamp>/
    >>> out = train_encoder(cfg)                     # doctest: +SKIP
    >>> enc = create_encoder("mini", pretrained=out)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from genscom.data.base import caption_index
from genscom.encoders.base import Encoder
from genscom.encoders.mini import MiniTowerConfig, MiniVideoTower, TowerEncoder
from genscom.encoders.text import TransformerTextTower
from genscom.encoders.video import l2_normalize, mean_pool
from genscom.metrics.retrieval import retrieval_metrics
from genscom.results import library_versions, machine_description
from genscom.training import (EpochSampler, cached_tensors, check_output_dir, config_defaults, contrastive_loss,
                              decay_groups, default_cache_dir, load_checkpoint, loss_curve, lr_at, make_accelerator,
                              resolve_run_dir, run_card, save_checkpoint, set_lr, write_run)

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
TEXT_TOWERS = ("minilm", "tiny")
# Fields that may differ between a run and its resumption (they do not change the trajectory).
_RESUME_FREE = {"steps", "output_dir", "cache_dir", "checkpoint_every", "log_every", "device", "eval_n_items"}


@dataclass
class TrainEncoderConfig:
    """Everything a mini-tower training run depends on (saved in the checkpoint and ``train_log.json``)."""

    dataset: str = "synthetic"          # a genscom.data dataset name (its train split is used)
    n_items: int = 10000                 # training clips
    dataset_seed: int = 0                # the dataset's seed (fixes the splits)
    num_frames: int = 8                  # frames per clip T
    size: int = 64                       # frame side in pixels (rendered datasets)
    steps: int = 600                     # optimizer steps (defaults = the shipped recipe)
    batch_size: int = 64                 # clips per step (= negatives per positive + 1)
    lr: float = 2e-3
    min_lr_ratio: float = 0.05           # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.05           # on conv/linear weights only
    temperature: float = 0.07            # initial softmax temperature (logit scale 1/0.07, as CLIP)
    learn_temperature: bool = True
    max_logit_scale: float = 100.0
    augment: Literal["none", "shift", "noise"] = "shift"  # shift: same +-4 px translation for all frames of a clip
    text_tower: Literal["minilm", "tiny"] = "minilm"     # frozen text tower ("tiny": random, tests only)
    tower: dict[str, Any] = field(default_factory=dict)  # MiniTowerConfig overrides (embed_dim follows the text)
    seed: int = 0                        # training RNG (init, sampling, augmentation)
    output_dir: str | None = None        # final weights + checkpoint; default runs/encoder-mini-<timestamp>/
    cache_dir: str | None = None         # caption-embedding cache; default $GENSCOM_CACHE or ~/.cache/genscom
    checkpoint_every: int = 100          # steps between checkpoints (0: only at the end)
    log_every: int = 50
    device: str = "cpu"                  # "cpu", "cuda", "auto"
    eval_n_items: int = 1000             # test-split clips for the final R@K (0: skip)
    storage_dtype: Literal["float16", "float32"] = "float16"
    attribute_weight: float = 0.0        # auxiliary attribute cross-entropy (0: the shipped LiT-only recipe)
    init_from: str | None = None         # start from this tower folder (fine-tuning) instead of random weights

    def __post_init__(self) -> None:
        if isinstance(self.attribute_weight, bool) or not isinstance(self.attribute_weight, (int, float)) \
                or not math.isfinite(self.attribute_weight) or self.attribute_weight < 0:
            raise ValueError(f"attribute_weight must be a number >= 0, got {self.attribute_weight!r}")
        for k in ("n_items", "num_frames", "size", "steps", "batch_size", "log_every"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive int, got {v!r}")
        for k in ("warmup_steps", "checkpoint_every", "eval_n_items", "seed", "dataset_seed"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{k} must be a non-negative int, got {v!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")
        if self.batch_size > self.n_items:
            raise ValueError(f"batch_size ({self.batch_size}) must be <= n_items ({self.n_items})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 < self.temperature <= 1:
            raise ValueError(f"temperature must be in (0, 1], got {self.temperature!r}")
        if self.max_logit_scale < 1 / self.temperature:
            raise ValueError(f"max_logit_scale ({self.max_logit_scale}) must be >= 1/temperature "
                             f"({1 / self.temperature:.1f})")
        if self.augment not in ("none", "shift", "noise"):
            raise ValueError(f"augment must be 'none', 'shift' or 'noise', got {self.augment!r}")
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {TEXT_TOWERS}, got {self.text_tower!r}")
        if self.storage_dtype not in ("float16", "float32"):
            raise ValueError(f"storage_dtype must be 'float16' or 'float32', got {self.storage_dtype!r}")
        if not isinstance(self.tower, dict):
            raise TypeError(f"tower must be a dict of MiniTowerConfig overrides, got {type(self.tower).__name__}")
        self.tower_config(text_dim=None)  # validates the overrides

    def tower_config(self, *, text_dim: int | None) -> MiniTowerConfig:
        """The tower architecture: defaults, then ``tower`` overrides; ``embed_dim`` = ``text_dim`` unless set."""
        known = {f.name for f in dataclasses.fields(MiniTowerConfig)}
        unknown = sorted(set(self.tower) - known)
        if unknown:
            raise ValueError(f"unknown tower field(s) {unknown}; known MiniTowerConfig fields: {sorted(known)}")
        over = dict(self.tower)
        if text_dim is not None:
            if "embed_dim" in over and over["embed_dim"] != text_dim:
                raise ValueError(f"tower embed_dim ({over['embed_dim']}) must equal the text tower's dim ({text_dim})")
            over["embed_dim"] = text_dim
        over.setdefault("image_size", self.size)
        over.setdefault("max_frames", max(16, self.num_frames))
        return MiniTowerConfig(**over)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- text side
def build_text_tower(name: str) -> TransformerTextTower:
    """The frozen text tower by name (``"minilm"``: all-MiniLM-L6-v2; ``"tiny"``: random, seed 0)."""
    if name == "minilm":
        from genscom.encoders.text import load_minilm

        return load_minilm()
    if name == "tiny":
        from genscom.encoders.registry import _seeded_build, tiny_configs
        from genscom.encoders.text import build_tiny_text_tower

        return _seeded_build(0, lambda: build_tiny_text_tower(tiny_configs()[0], frozen=True))
    raise ValueError(f"text_tower must be one of {TEXT_TOWERS}, got {name!r}")


@torch.no_grad()
def embed_captions(text_tower: TransformerTextTower, captions: list[str], *, cache_dir: str | Path | None,
                   tower_name: str, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """L2-normalised float32 ``[len(captions), d]`` caption embeddings of the frozen tower, cached on disk.

    The cache file (:func:`genscom.training.cached_tensors`) is keyed by ``tower_name`` and a
    SHA-256 of the caption list.
    """
    key = hashlib.sha256(("\x00".join([tower_name, *captions])).encode("utf-8")).hexdigest()[:20]
    path = Path(cache_dir) / f"text-{tower_name}-{key}.pt" if cache_dir is not None else None

    def compute() -> dict[str, torch.Tensor]:
        from tqdm.auto import tqdm

        text_tower.eval()
        order = sorted(range(len(captions)), key=lambda i: len(captions[i]))  # less padding per batch
        out = torch.empty(len(captions), text_tower.dim)
        t0 = time.perf_counter()
        for s in tqdm(range(0, len(order), batch_size), desc="embed captions", disable=not progress, leave=False):
            idx = order[s:s + batch_size]
            out[idx] = l2_normalize(text_tower([captions[i] for i in idx]).float()).cpu()
        logger.info("embedded %d captions in %.1f s", len(captions), time.perf_counter() - t0)
        return {"embeddings": out}

    return cached_tensors(path, compute, shapes={"embeddings": len(captions)})["embeddings"]


def _augment(pixels: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """``pixels`` ``[B, T, 3, S, S]``; the same transform for every frame of a clip (motion is kept)."""
    if mode == "none":
        return pixels
    B = pixels.shape[0]
    if mode == "noise":
        sigma = 0.1 * torch.rand(B, 1, 1, 1, 1, generator=generator)
        return pixels + sigma.to(pixels) * torch.randn(pixels.shape, generator=generator).to(pixels)
    # shift: translate each clip by up to +-4 px (replicate padding)
    s = 4
    offsets = torch.randint(0, 2 * s + 1, (B, 2), generator=generator)
    T, C, H, W = pixels.shape[1:]
    padded = F.pad(pixels.flatten(1, 2), (s, s, s, s), mode="replicate").view(B, T, C, H + 2 * s, W + 2 * s)
    return torch.stack([padded[i, :, :, oy:oy + H, ox:ox + W] for i, (oy, ox) in enumerate(offsets.tolist())])


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_retrieval(encoder: Encoder, dataset: Any, *, batch_size: int = 64,
                       progress: bool = False) -> dict[str, float]:
    """Noiseless text<->clip retrieval of ``encoder`` on ``dataset`` (cosine similarity, every caption a query).

    Returns PROTOCOL.md metric names (``t2v_R@1``, ..., ``RSUM``) of
    :func:`genscom.metrics.retrieval.retrieval_metrics`.
    """
    clips = dataset.stacked_frames()
    captions, text_to_item = dataset.all_captions()
    video = encoder.encode_clips(clips, batch_size=batch_size, progress=progress).float().cpu()
    text = encoder.encode_text(captions, batch_size=256, progress=progress).float().cpu()
    return retrieval_metrics(text @ video.t(), text_to_item)


# --------------------------------------------------------------------------- training
def _param_groups(tower: MiniVideoTower, logit_scale: torch.nn.Parameter, weight_decay: float) -> list[dict]:
    groups = decay_groups(tower.named_parameters(), weight_decay, exclude=lambda name: "time_embed" in name)
    if logit_scale.requires_grad:
        groups.append({"params": [logit_scale], "weight_decay": 0.0})
    return groups


ATTRIBUTE_KEYS = ("shape", "colour", "count", "size", "motion")


def attribute_labels(dataset: Any, n_items: int) -> tuple[dict[str, list[str]], torch.Tensor]:
    """Categorical labels per item from ``dataset.attributes_of``: object groups 0 and 1 x
    :data:`ATTRIBUTE_KEYS`, plus ``background``.

    Returns ``(vocab, labels)``: ``vocab[name]`` lists the classes of attribute ``name``
    (``"g0.shape"``, ..., ``"background"``); ``labels`` is ``[n_items, len(vocab)]`` int64 with
    ``-100`` where an item has no such attribute (e.g. no second group).
    """
    rows = [dataset.attributes_of(i) for i in range(n_items)]
    if not any(r.get("groups") for r in rows):
        raise ValueError(f"attribute_weight > 0 needs object attributes (groups of shape/colour/...) in the dataset; "
                         f"{getattr(dataset, 'name', type(dataset).__name__)!r} has none: use the synthetic dataset "
                         "or set attribute_weight=0")
    values: dict[str, list[Any]] = {}
    for r in rows:
        groups = r.get("groups") or []
        for g in range(2):
            for key in ATTRIBUTE_KEYS:
                values.setdefault(f"g{g}.{key}", []).append(groups[g].get(key) if g < len(groups) else None)
        values.setdefault("background", []).append(r.get("background"))
    vocab = {name: sorted({str(v) for v in vs if v is not None}) for name, vs in values.items()}
    vocab = {name: classes for name, classes in vocab.items() if len(classes) >= 2}
    labels = torch.full((n_items, len(vocab)), -100, dtype=torch.long)
    for j, (name, classes) in enumerate(vocab.items()):
        index = {c: k for k, c in enumerate(classes)}
        for i, v in enumerate(values[name]):
            if v is not None:
                labels[i, j] = index[str(v)]
    return vocab, labels


class AttributeHeads(torch.nn.Module):
    """One linear classifier per attribute on the pooled clip features ``[B, d]`` (training only)."""

    def __init__(self, dim: int, vocab: dict[str, list[str]]) -> None:
        super().__init__()
        self.names = list(vocab)
        self.norm = torch.nn.LayerNorm(dim)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, len(c)) for c in vocab.values())

    def loss(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over attributes of the cross-entropy (items without the attribute ignored)."""
        h = self.norm(pooled)
        parts = [torch.nn.functional.cross_entropy(head(h), labels[:, j], ignore_index=-100)
                 for j, head in enumerate(self.heads) if bool((labels[:, j] >= 0).any())]
        return torch.stack(parts).mean() if parts else pooled.new_zeros(())


def train_encoder(config: TrainEncoderConfig, *, resume: bool = False, progress: bool = True,
                  dataset: Any = None, command: str | None = None, overwrite: bool = False) -> Path:
    """Train the mini tower (see the module doc) and return ``output_dir`` holding the final weights.

    Args:
        config: the run's settings; ``output_dir=None`` writes to a new ``runs/encoder-mini-<timestamp>/``.
        resume: continue from ``<output_dir>/checkpoint.pt`` exactly where it stopped (``output_dir=None``:
            the newest ``runs/encoder-mini-<timestamp>/`` holding a checkpoint).
        progress: show a progress bar (tqdm) with the running loss.
        dataset: a training :class:`~genscom.data.ClipCaptionDataset` to use instead of
            ``create_dataset(config.dataset, split="train", ...)``.
        command: the command line that launched the run (recorded in README.md).
        overwrite: allow an ``output_dir`` that already holds trained weights (its README is kept).

    ``init_from``, the checkpoint and the output folder are checked before any data is prepared.

    Output folder: ``model.safetensors`` + ``config.json`` (load with
    ``create_encoder("mini", pretrained=output_dir)``), ``README.md``, ``train_log.json``,
    ``checkpoint.pt`` (for ``resume``) and ``cache/`` (caption embeddings).

    Raises:
        FileNotFoundError: ``resume=True`` but no checkpoint exists.
        BadFileError: the checkpoint or the ``init_from`` tower is unreadable.
        OutputExistsError: ``output_dir`` holds trained weights and neither ``overwrite`` nor ``resume``.
        ValueError: the checkpoint was written with a different config.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    out = resolve_run_dir(config.output_dir, "encoder-mini", resume=resume)
    config = dataclasses.replace(config, output_dir=str(out))
    ckpt_path = out / CHECKPOINT_NAME
    check_output_dir(out, overwrite=overwrite, resuming=resume and ckpt_path.is_file())
    init_tower = MiniVideoTower.from_pretrained(config.init_from) if config.init_from else None  # fail fast
    accelerator = make_accelerator(config.device)
    device = accelerator.device
    ckpt = load_checkpoint(ckpt_path, resume=resume, config=config.to_dict(), free=_RESUME_FREE,
                           defaults=config_defaults(type(config)),
                           hint="use the same config or resume=False")
    if ckpt is not None and ckpt["config"].get("steps") != config.steps:
        logger.warning("resuming with steps=%s (checkpoint run had %s): the cosine schedule changes",
                       config.steps, ckpt["config"].get("steps"))

    # data
    if dataset is None:
        from genscom.data import create_dataset

        dataset = create_dataset(config.dataset, split="train", n_items=config.n_items, seed=config.dataset_seed,
                                 num_frames=config.num_frames, size=config.size)
    frames = dataset.stacked_frames()  # uint8 (N, T, H, W, 3)
    n_items = frames.shape[0]
    if config.batch_size > n_items:
        raise ValueError(f"batch_size ({config.batch_size}) must be <= the dataset's {n_items} items")
    captions, text_to_item = dataset.all_captions()
    index = caption_index(captions, text_to_item, n_items)
    unique_caps, cap_offsets, cap_ids = index.unique, index.offsets, index.ids
    text_tower = build_text_tower(config.text_tower)
    cache_dir = Path(config.cache_dir) if config.cache_dir is not None else default_cache_dir() / "text_embeddings"
    text_emb = embed_captions(text_tower, unique_caps, cache_dir=cache_dir, tower_name=config.text_tower,
                              progress=progress).to(device)
    t_data = time.perf_counter() - t_start

    # model, optimiser, data order
    tower, logit_scale = _build_tower(config, text_dim=text_tower.dim, device=device, init_tower=init_tower)
    encoder_px = TowerEncoder(text_tower, tower, name="mini")  # reuse its preprocessing
    attr_heads: AttributeHeads | None = None
    attr_labels = torch.zeros((n_items, 0), dtype=torch.long)
    if config.attribute_weight > 0:
        from genscom.encoders.registry import _seeded_build

        vocab, attr_labels = attribute_labels(dataset, n_items)
        attr_heads = _seeded_build(config.seed + 1, lambda: AttributeHeads(tower.config.embed_dim, vocab)).to(device)
    groups = _param_groups(tower, logit_scale, config.weight_decay)
    if attr_heads is not None:
        groups.append({"params": list(attr_heads.parameters()), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(config.seed)
    sampler = EpochSampler(n_items, generator=gen)
    step, losses, elapsed_before = 0, [], 0.0
    if ckpt is not None:
        tower.load_state_dict(ckpt["model"])
        if attr_heads is not None:
            attr_heads.load_state_dict(ckpt["attribute_heads"])
        with torch.no_grad():
            logit_scale.copy_(ckpt["logit_scale"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng_state"])
        sampler.load_state_dict(ckpt["sampler"])
        step, losses = int(ckpt["step"]), ckpt["losses"].tolist()
        elapsed_before = float(ckpt["train_seconds"])
        logger.info("resumed %s at step %d", ckpt_path, step)
    tower, optimizer = accelerator.prepare(tower, optimizer)

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {
            "step": step, "model": accelerator.unwrap_model(tower).state_dict(),
            "logit_scale": logit_scale.detach().cpu(), "optimizer": optimizer.state_dict(),
            "rng_state": gen.get_state(), "sampler": sampler.state_dict(),
            "losses": torch.tensor(losses, dtype=torch.float64),
            "train_seconds": elapsed_before + (time.perf_counter() - t_loop),
            **({"attribute_heads": attr_heads.state_dict()} if attr_heads is not None else {}),
        }, config=config.to_dict())

    # loop
    tower.train()
    t_loop = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc="train mini tower", disable=not progress)
    max_log = math.log(config.max_logit_scale)
    while step < config.steps:
        idx = sampler.next(config.batch_size)
        lo, n_caps = cap_offsets[idx], cap_offsets[idx + 1] - cap_offsets[idx]
        pick = (torch.rand(len(idx), generator=gen) * n_caps).long().clamp(max=n_caps - 1)
        cid = cap_ids[lo + pick]
        pixels = _augment(encoder_px.preprocess_clips(frames[idx]), config.augment, gen)

        set_lr(optimizer, lr_at(step, lr=config.lr, warmup_steps=config.warmup_steps, total_steps=config.steps,
                                min_lr_ratio=config.min_lr_ratio))
        pooled = mean_pool(tower(pixels.to(device)))
        video = l2_normalize(pooled)
        loss = contrastive_loss(video, text_emb[cid.to(device)], scale=logit_scale.exp(), ids=cid.to(device))
        if attr_heads is not None:
            loss = loss + config.attribute_weight * attr_heads.loss(pooled, attr_labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        with torch.no_grad():
            logit_scale.clamp_(0.0, max_log)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            recent = sum(losses[-config.log_every:]) / len(losses[-config.log_every:])
            bar.set_postfix(loss=f"{recent:.3f}", scale=f"{logit_scale.exp().item():.1f}")
            logger.info("step %d/%d loss %.4f logit_scale %.1f", step, config.steps, recent, logit_scale.exp().item())
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            checkpoint()
    bar.close()
    train_seconds = elapsed_before + (time.perf_counter() - t_loop)
    checkpoint()

    # final weights, then evaluation of what was written
    tower = accelerator.unwrap_model(tower).eval()
    storage = torch.float16 if config.storage_dtype == "float16" else torch.float32
    tower.save_pretrained(out, dtype=storage, extra_config={
        "text_tower": "sentence-transformers/all-MiniLM-L6-v2" if config.text_tower == "minilm" else "tiny",
        "logit_scale": logit_scale.detach().exp().item()})
    metrics: dict[str, float] = {}
    if config.eval_n_items > 0:
        from genscom.data import create_dataset

        test = create_dataset(config.dataset, split="test", n_items=config.eval_n_items, seed=config.dataset_seed,
                              num_frames=config.num_frames, size=config.size)
        shipped = TowerEncoder(text_tower, MiniVideoTower.from_pretrained(out, device=device), name="mini").eval()
        metrics = evaluate_retrieval(shipped, test, progress=progress)
        logger.info("test retrieval on %d clips: %s", len(test), metrics)
    log = {
        "config": config.to_dict(), "command": command, "steps_done": step,
        "train_seconds": round(train_seconds, 1), "data_seconds": round(t_data, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1), "n_train_items": n_items,
        "n_train_captions": len(captions), "n_unique_captions": len(unique_caps),
        "final_logit_scale": logit_scale.detach().exp().item(),
        "losses_every_log_step": loss_curve(losses, config.log_every),
        "test_metrics": metrics, "machine": machine_description(), "versions": library_versions(),
    }
    write_run(out, log=log, readme=_readme(log, sum(p.numel() for p in tower.parameters()), out))
    return out


def _build_tower(config: TrainEncoderConfig, *, text_dim: int, device: torch.device,
                 init_tower: MiniVideoTower | None = None) -> tuple[MiniVideoTower, torch.nn.Parameter]:
    """A seeded random tower (or ``init_from``'s trained one, ``init_tower`` if already loaded) and its log logit scale."""
    from genscom.encoders.registry import _seeded_build
    from genscom.loading import read_json

    init_scale = 1 / config.temperature
    if config.init_from:
        tower = (init_tower or MiniVideoTower.from_pretrained(config.init_from)).to(device)
        if tower.config.embed_dim != text_dim:
            raise ValueError(f"init_from {config.init_from!r} has embed_dim {tower.config.embed_dim}, the text tower "
                             f"{text_dim}; start from a tower trained against the same text tower")
        # continue from the trained tower's own temperature
        scale = read_json(Path(config.init_from) / "config.json", expected="a mini tower config").get("logit_scale",
                                                                                                      init_scale)
        init_scale = float(scale) if isinstance(scale, (int, float)) and scale > 0 else init_scale
    else:
        tower_cfg = config.tower_config(text_dim=text_dim)
        tower = _seeded_build(config.seed, lambda: MiniVideoTower(tower_cfg)).to(device)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(init_scale), device=device),
                                     requires_grad=config.learn_temperature)
    return tower, logit_scale


def _readme(log: dict[str, Any], n_params: int, out: Path) -> str:
    cfg = log["config"]
    m = log["test_metrics"]
    rows = [
        ("architecture", f"MiniVideoTower, {n_params / 1e6:.2f} M parameters, stored as {cfg['storage_dtype']}"),
        ("text tower", "sentence-transformers/all-MiniLM-L6-v2 (frozen)" if cfg["text_tower"] == "minilm"
         else "tiny random"),
        ("data", f"`{cfg['dataset']}` train split, {log['n_train_items']} clips x {cfg['num_frames']} frames "
                 f"{cfg['size']}x{cfg['size']}, dataset seed {cfg['dataset_seed']}, {log['n_train_captions']} captions"),
        ("training", f"{log['steps_done']} steps x {cfg['batch_size']} clips, AdamW lr {cfg['lr']}, "
                     f"warm-up {cfg['warmup_steps']}, cosine, augment {cfg['augment']}, seed {cfg['seed']}"),
        ("wall time", f"{log['train_seconds']:.0f} s training, {log['total_seconds']:.0f} s in all, on {log['machine']}"),
        ("final logit scale", f"{log['final_logit_scale']:.1f}"),
    ]
    if m:
        rows.append((f"test retrieval ({cfg['eval_n_items']} test clips, every caption a query, noiseless)",
                     ", ".join(f"{k} {v:.3f}" if "R@" in k else f"{k} {v:.1f}" for k, v in m.items())))
    return run_card(
        title="mini image/video tower",
        intro=["genscom's offline image/video tower, aligned to the frozen all-MiniLM-L6-v2 text space by",
               "locked-text tuning (LiT) with a symmetric InfoNCE loss"
               + (f" plus {cfg['attribute_weight']:g} x the attribute cross-entropy" if cfg.get("attribute_weight")
                  else "") + (f", starting from `{cfg['init_from']}`" if cfg.get("init_from") else "")
               + ". Load it with",
               f"`create_encoder(\"mini\", pretrained=\"{out}\")`: every tower this command trains has the `mini` "
               "profile's architecture."],
        rows=rows, command=log["command"], api="train_encoder(TrainEncoderConfig(**config))", config=cfg)
