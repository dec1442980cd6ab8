"""``genscom train decoder``: train the diffusion decoder on received embeddings (the shared training core).

Data: the middle frame of each train-split clip (``[3, H, W]`` in ``[0, 1]``) and two embeddings from the
encoder ``profile`` (cached under ``$GENSCOM_CACHE``): the whole clip's and the middle frame's alone, so one
decoder serves a video sender (clip embedding, regenerate a key frame) and an image sender (one picture).
A fraction ``p_frame_cond`` of each batch is conditioned on the frame embedding. Each step draws a batch, sends its embeddings through an
AWGN channel as analog symbols at one SNR drawn uniformly from ``[snr_min_db, snr_max_db]`` (a fraction
``p_clean`` stays clean), and takes a DDPM noise-prediction step conditioned on what was received, so the decoder
learns what noisy conditions look like. Seeded, resumable bit-exactly from ``checkpoint.pt`` (weights, optimiser,
generators, step), atomic writes, a progress bar with the loss, and a PNG grid of samples every
``sample_every`` steps (top row: the frames, below: regenerated from clean and from 0 dB embeddings). Output:
``runs/decoder-<name>-<timestamp>/`` unless ``output_dir`` is given; never over shipped weights.

``phase: reader`` retrains only the semantic reader of a trained decoder (``init_from``), on the same received
embeddings, with its cross-entropy alone; the UNet and the condition layers stay as they were. It is for a
decoder with ``reader_teacher_forcing: 1.0``, whose UNet learned on one-hot *true* classes: a reader that
reads more of them right then feeds it better conditions without the UNet having to learn anything new. A
step costs a small MLP, not a UNet, so the reader can see many more items (``n_items``) than the UNet did.

``phase: unet`` is the converse: everything but the reader of ``init_from`` trains on the diffusion loss alone,
the reader stays byte-identical (a longer drawing schedule for a decoder whose reader was retrained apart). In
both phases the decoder settings come from ``init_from``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig
from genscom.training import (check_output_dir, config_defaults, lr_at, load_checkpoint, loss_curve, make_accelerator,
                              resolve_run_dir, save_checkpoint, set_lr, write_run)
from genscom.utils import check_positive_ints

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
# What a run did before a field existed, where today's default differs (frame conditioning came in 515ff49).
_BEFORE_FIELDS = {"p_frame_cond": 0.0}
PHASES = ("diffusion", "reader", "unet")
_RESUME_FREE = frozenset({"steps", "checkpoint_every", "sample_every", "log_every", "output_dir", "device",
                          "cpu_threads"})


@dataclass
class TrainDecoderConfig:
    """Settings of one decoder training run (every field is a ``--config`` YAML key)."""

    name: str = "regen"
    profile: str = "mini-attr"
    dataset: str = "synthetic"
    n_items: int = 4000
    dataset_seed: int = 0
    decoder: dict[str, Any] = field(default_factory=dict)  # DiffusionDecoderConfig fields (cond_dim, image_size: from data)
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    snr_min_db: float = -10.0
    snr_max_db: float = 20.0
    p_clean: float = 0.1
    p_frame_cond: float = 0.5
    seed: int = 0
    checkpoint_every: int = 250
    sample_every: int = 500
    n_samples: int = 6
    log_every: int = 50
    output_dir: str | None = None
    device: str = "cpu"
    cpu_threads: int | None = None
    init_from: str | None = None  # warm start: a decoder folder or adapter name (see warm_start)
    # "reader": only the semantic reader of init_from trains; "unet": all of init_from but its reader
    phase: Literal["diffusion", "reader", "unet"] = "diffusion"
    # latent decoders (decoder.latent set): the autoencoder is trained first, then frozen
    vae_steps: int = 2000
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6

    def __post_init__(self) -> None:
        check_positive_ints(self, ("n_items", "steps", "batch_size", "log_every", "n_samples", "vae_steps",
                                   "vae_batch_size"), owner="TrainDecoderConfig")
        for name in ("checkpoint_every", "sample_every", "warmup_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainDecoderConfig.{name} must be an integer >= 0 (0: never), got {v!r}")
        for name in ("lr", "vae_lr"):
            if not (float(getattr(self, name)) > 0):
                raise ValueError(f"TrainDecoderConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not float(self.vae_kl_weight) >= 0:
            raise ValueError(f"TrainDecoderConfig.vae_kl_weight must be >= 0, got {self.vae_kl_weight!r}")
        if not float(self.snr_min_db) < float(self.snr_max_db):
            raise ValueError(f"TrainDecoderConfig needs snr_min_db < snr_max_db, got {self.snr_min_db}, {self.snr_max_db}")
        for name in ("p_clean", "p_frame_cond"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"TrainDecoderConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not isinstance(self.decoder, dict):
            raise ValueError(f"TrainDecoderConfig.decoder must be a mapping of DiffusionDecoderConfig fields, "
                             f"got {type(self.decoder).__name__}")
        if self.phase not in PHASES:
            raise ValueError(f"TrainDecoderConfig.phase must be one of {', '.join(PHASES)}, got {self.phase!r}")
        if self.phase != "diffusion" and self.init_from is None:
            raise ValueError(f"phase: {self.phase} trains part of a trained decoder; set init_from (--init-from) "
                             "to its folder or adapter name")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DecoderData:
    """``images [N, 3, H, W]`` uint8 and ``cond [N, d]`` float32 clean clip embeddings of the same items;
    ``cond_frame [N, d]`` (optional): the embeddings of ``images`` alone (one-frame clips); ``labels``
    (optional): scene attributes ``{name: int64 [N]}`` for the decoder's semantic reader."""

    images: torch.Tensor
    cond: torch.Tensor
    cond_frame: torch.Tensor | None = None
    labels: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[1] != 3 or self.images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.cond.dim() != 2 or self.cond.shape[0] != self.images.shape[0]:
            raise ValueError(f"cond must be [N, d] with N = {self.images.shape[0]}, got {tuple(self.cond.shape)}")
        if self.cond_frame is not None and self.cond_frame.shape != self.cond.shape:
            raise ValueError(f"cond_frame must have cond's shape {tuple(self.cond.shape)}, "
                             f"got {tuple(self.cond_frame.shape)}")
        for k, v in (self.labels or {}).items():
            if v.dim() != 1 or v.shape[0] != self.images.shape[0] or v.dtype != torch.int64:
                raise ValueError(f"labels[{k!r}] must be int64 [{self.images.shape[0]}], got {v.dtype} "
                                 f"{tuple(v.shape)}")

    def check_reader(self, classes: dict[str, int]) -> None:
        """``ValueError`` unless every attribute of ``classes`` has labels in ``0..classes-1``."""
        for k, n in classes.items():
            v = (self.labels or {}).get(k)
            if v is None:
                raise ValueError(f"decoder.reader_classes names {k!r} but the training data has labels "
                                 f"{sorted(self.labels or {})}; drop it from reader_classes")
            if v.numel() and (int(v.min()) < 0 or int(v.max()) >= n):
                raise ValueError(f"labels of {k!r} span {int(v.min())}..{int(v.max())} but reader_classes gives "
                                 f"{n} classes; set reader_classes.{k} to at least {int(v.max()) + 1}")

    def condition(self, idx: torch.Tensor, frame_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Clean conditions of items ``idx [B]``: the clip embedding, or the frame embedding where
        ``frame_rows [B]`` bool is set (needs ``cond_frame``)."""
        cond = self.cond[idx]
        if frame_rows is None or self.cond_frame is None:
            return cond
        return torch.where(frame_rows.view(-1, 1), self.cond_frame[idx], cond)


def prepare_data(config: TrainDecoderConfig, *, progress: bool = True) -> DecoderData:
    """Middle frames, clip and frame ``profile`` embeddings of ``n_items`` train clips (cached), and the
    largest object's shape / colour and the object count (:func:`largest_object_labels`) when the decoder
    config asks for a semantic reader."""
    from genscom.data import create_dataset
    from genscom.encoders import create_encoder
    from genscom.training import cached_tensors, default_cache_dir

    def compute() -> dict[str, torch.Tensor]:
        ds = create_dataset(config.dataset, split="train", n_items=config.n_items, seed=config.dataset_seed)
        frames = ds.stacked_frames()                                      # [N, T, H, W, 3] uint8
        enc = create_encoder(config.profile).eval()
        with torch.no_grad():
            cond = enc.encode_clips(frames, batch_size=64).float().cpu()
            t = frames.shape[1] // 2
            cond_frame = enc.encode_clips(frames[:, t:t + 1], batch_size=64).float().cpu()
        mid = frames[:, frames.shape[1] // 2].permute(0, 3, 1, 2).contiguous()
        return {"images": mid, "cond": cond, "cond_frame": cond_frame}

    path = default_cache_dir() / f"decoder-{config.profile}-{config.dataset}-n{config.n_items}-s{config.dataset_seed}.pt"
    blob = cached_tensors(path, compute, shapes={"images": config.n_items, "cond": config.n_items,
                                                 "cond_frame": config.n_items})
    labels = None
    if config.decoder.get("reader_classes"):
        from genscom.generation.attributes import largest_object_labels

        ds = create_dataset(config.dataset, split="train", n_items=config.n_items, seed=config.dataset_seed)
        labels = largest_object_labels(ds)
    return DecoderData(images=blob["images"], cond=blob["cond"], cond_frame=blob["cond_frame"], labels=labels)


def received(cond: torch.Tensor, snr_db: float | None, generator: torch.Generator) -> torch.Tensor:
    """``cond [B, d]`` as the receiver gets it over AWGN at ``snr_db`` (analog symbols; ``None``: clean)."""
    from genscom.channels.analog import send_analog
    from genscom.channels.registry import create_channel

    if snr_db is None:
        return torch.nn.functional.normalize(cond.float(), dim=-1)
    return send_analog(cond.float(), create_channel("awgn"), float(snr_db), generator=generator)


def train_decoder(config: TrainDecoderConfig, *, resume: bool = False, progress: bool = True,
                  data: DecoderData | None = None, stop_after: int | None = None, overwrite: bool = False,
                  command: str | None = None) -> Path:
    """Train; return the run folder (``save_pretrained`` weights, ``train_log.json``, ``README.md``, samples).

    ``data``: precomputed :class:`DecoderData` (tests; default :func:`prepare_data`). ``stop_after``: stop after
    checkpointing at that step (an interrupted run). The output folder and checkpoint are checked first.
    """
    out = resolve_run_dir(config.output_dir, f"decoder-{config.name}", resume=resume)
    config = dataclasses.replace(config, output_dir=str(out))
    check_output_dir(out, overwrite=overwrite, resuming=resume and (out / CHECKPOINT_NAME).is_file())
    warm = None
    if config.init_from is not None:  # loaded (and so checked) before any data is prepared
        from genscom.pretrained import resolve_pretrained

        warm = resolve_pretrained(config.init_from, DiffusionDecoder, what="init_from",
                                  train_command="genscom train decoder")
        if config.phase != "diffusion":
            config = source_phase_config(config, warm)
    threads = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train(config, out, resume=resume, progress=progress, data=data, stop_after=stop_after,
                      command=command, warm=warm)
    finally:
        torch.set_num_threads(threads)


def source_phase_config(config: TrainDecoderConfig, source: DiffusionDecoder) -> TrainDecoderConfig:
    """``config`` for training one part of ``source`` (``phase: reader`` or ``unet``): ``decoder`` settings left
    empty are ``source``'s own.

    Raises:
        ValueError: ``source`` was trained on another encoder profile or dataset than ``config`` names; or has no
            semantic reader; or, for ``phase: reader``, was not trained with
            ``reader_teacher_forcing: 1.0`` (its UNet then learned on the old reader's outputs, which a new reader
            would change); or ``decoder`` names settings that differ from ``source``'s.
    """
    own = {k: v for k, v in source.config.to_dict().items() if k not in ("image_size", "cond_dim", "extra")}
    trained_on = source.config.extra or {}
    for key in ("profile", "dataset"):  # mini-attr and mini-attr-v2 are both 384-d: a shape check would not see it
        if trained_on.get(key) is not None and trained_on[key] != getattr(config, key):
            how = f"pass --profile {trained_on[key]} (or `profile:` in the config)" if key == "profile" else \
                f"set `{key}: {trained_on[key]}` in the config"  # `train decoder` has no --dataset flag
            raise ValueError(f"init_from {config.init_from!r} was trained on {key} {trained_on[key]!r}, the config "
                             f"names {getattr(config, key)!r}; {how}")
    if not own["reader_classes"]:
        raise ValueError(f"phase: {config.phase} splits a decoder into its semantic reader and the rest, but "
                         f"init_from {config.init_from!r} has no reader: train it whole (phase: diffusion) instead")
    if config.phase == "reader" and float(own["reader_teacher_forcing"]) != 1.0:
        raise ValueError(f"phase: reader needs a decoder with a semantic reader trained with "
                         f"reader_teacher_forcing: 1.0 (its UNet learned on true one-hot classes); init_from "
                         f"{config.init_from!r} has teacher forcing {own['reader_teacher_forcing']}: retrain it "
                         f"whole (phase: diffusion) instead")
    differ = sorted(k for k, v in config.decoder.items() if k in own and _plain(v) != _plain(own[k]))
    unknown = sorted(k for k in config.decoder if k not in own)
    if differ or unknown:
        raise ValueError(f"phase: {config.phase} keeps init_from's decoder settings, but the config's decoder "
                         f"settings {differ + unknown} differ from them; drop them from `decoder:`")
    return dataclasses.replace(config, decoder=own)


def _plain(v: Any) -> Any:
    """Lists for tuples, so that YAML and dataclass values compare equal."""
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def _train(config: TrainDecoderConfig, out: Path, *, resume: bool, progress: bool, data: DecoderData | None,
           stop_after: int | None, command: str | None, warm: DiffusionDecoder | None = None) -> Path:
    from tqdm.auto import tqdm

    ckpt = load_checkpoint(out / CHECKPOINT_NAME, resume=resume, config=config.to_dict(), free=_RESUME_FREE,
                           defaults={**config_defaults(type(config)), **_BEFORE_FIELDS},
                           hint="use the same config or drop --resume")
    t0 = time.perf_counter()
    if data is None:
        data = prepare_data(config, progress=progress)
    n = data.images.shape[0]
    if n < config.batch_size:
        raise ValueError(f"only {n} training items; need >= batch_size={config.batch_size}")
    dcfg = DiffusionDecoderConfig(**{"image_size": int(data.images.shape[-1]), "cond_dim": int(data.cond.shape[1]),
                                     **config.decoder, "extra": {"profile": config.profile, "dataset": config.dataset}})
    data.check_reader(dcfg.reader_classes)
    accelerator = make_accelerator(config.device)
    torch.manual_seed(config.seed)
    model = DiffusionDecoder(dcfg)
    if ckpt is not None:
        warm = None  # resuming: the checkpoint holds everything the warm start gave
    elif warm is not None:
        warm_start(model, warm)
    if model.vae is not None and ckpt is None and (warm is None or warm.vae is None):
        train_autoencoder(model, data.images, config, progress=progress)
    if config.phase != "diffusion":  # the autoencoder of a latent decoder stays frozen in either phase
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("reader.") if config.phase == "reader"
                             else not name.startswith(("reader.", "vae.")))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    step, losses, before = 0, [], 0.0
    if ckpt is not None:
        if model.vae is not None:
            set_latent_scale(model, float(ckpt["latent_scale"]))
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"])
        step, losses, before = int(ckpt["step"]), ckpt["losses"].tolist(), float(ckpt["train_seconds"])
    model, opt = accelerator.prepare(model, opt)
    core: DiffusionDecoder = accelerator.unwrap_model(model)
    sched = core.train_scheduler()
    dev = accelerator.device

    def checkpoint() -> None:
        if accelerator.is_main_process:
            save_checkpoint(out / CHECKPOINT_NAME, {
                "step": step, "model": core.state_dict(), "optimizer": opt.state_dict(), "rng": gen.get_state(),
                "losses": torch.tensor(losses, dtype=torch.float64),
                "train_seconds": before + time.perf_counter() - t_loop,
                **({"latent_scale": float(core.config.latent["scaling_factor"])} if core.vae is not None else {})},
                config=config.to_dict())
        accelerator.wait_for_everyone()

    # encode the data once: the autoencoder is frozen from here on
    latents = encode_images(core, data.images) if core.vae is not None and config.phase != "reader" else None
    t_loop = time.perf_counter()
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = tqdm(total=config.steps, initial=step, desc=f"train decoder {config.name}",
               disable=not (progress and accelerator.is_main_process))
    with_reader = config.phase != "unet"  # a frozen reader's cross-entropy would only pad the logged loss
    model.train()
    while step < end:
        set_lr(opt, lr_at(step, lr=config.lr, warmup_steps=config.warmup_steps, total_steps=config.steps,
                          min_lr_ratio=config.min_lr_ratio))
        idx = torch.randint(0, n, (config.batch_size,), generator=gen)
        clean = bool(torch.rand((), generator=gen) < config.p_clean)
        snr = float(config.snr_min_db + (config.snr_max_db - config.snr_min_db) * torch.rand((), generator=gen))
        frame_rows = torch.rand(config.batch_size, generator=gen) < config.p_frame_cond
        cond = received(data.condition(idx, frame_rows), None if clean else snr, gen)
        labels = None if not dcfg.reader_classes else {k: data.labels[k][idx] for k in dcfg.reader_classes}
        if config.phase == "reader":
            loss = core.reader_loss(cond.to(dev), labels)
        elif latents is None:
            images = data.images[idx].float().div(255.0)
            loss = core.loss(images.to(dev), cond.to(dev), generator=gen, scheduler=sched, labels=labels,
                             with_reader=with_reader)
        else:
            loss = core.loss(None, cond.to(dev), generator=gen, scheduler=sched, labels=labels,
                             latents=latents[idx].to(dev), with_reader=with_reader)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % config.log_every == 0:
            recent = losses[-config.log_every:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
        if config.sample_every and step % config.sample_every == 0 and accelerator.is_main_process:
            sample_grid(core, data, out / f"samples-{step:06d}.png", n=config.n_samples, seed=config.seed)
            model.train()
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            checkpoint()
    bar.close()
    checkpoint()
    if (stop_after is not None and step < config.steps) or not accelerator.is_main_process:
        return out
    core.to("cpu").save_pretrained(out)
    seconds = before + time.perf_counter() - t_loop
    log = {"config": config.to_dict(), "command": command, "steps_done": step, "train_seconds": round(seconds, 1),
           "data_seconds": round(t_loop - t0, 1), "n_items": n, "decoder": dcfg.to_dict(),
           "losses_every_log_step": loss_curve(losses, config.log_every),
           "n_parameters": sum(p.numel() for p in core.parameters())}
    what = {"reader": "Its semantic reader retrained", "unet": "All but its semantic reader trained"}.get(
        config.phase, "Trained")
    write_run(out, log=log, readme=f"# Diffusion decoder `{config.name}`\n\n{what} by `genscom train decoder` "
                                   f"({step} steps, {seconds:.0f} s) on {n} `{config.dataset}` train frames with "
                                   f"`{config.profile}` embeddings received over AWGN at "
                                   f"{config.snr_min_db:g}..{config.snr_max_db:g} dB. See `train_log.json`.\n")
    return out


def encode_images(model: DiffusionDecoder, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """:meth:`DiffusionDecoder.to_latents` of uint8 ``images [N, 3, H, W]``, converted to float a batch at a time
    (the whole set as float32 would be 4 x its uint8 size), on the model's device; returned on the CPU."""
    dev = next(model.parameters()).device
    return torch.cat([model.to_latents(x.float().div(255.0).to(dev)).cpu() for x in images.split(batch_size)])


def set_latent_scale(model: DiffusionDecoder, scale: float) -> None:
    """Set the latent scaling factor in the decoder's config and its autoencoder's (saved with the weights)."""
    model.config.latent["scaling_factor"] = float(scale)
    model.vae.register_to_config(scaling_factor=float(scale))


def train_autoencoder(model: DiffusionDecoder, images: torch.Tensor, config: TrainDecoderConfig, *,
                      progress: bool = True) -> list[float]:
    """Train ``model.vae`` (diffusers ``AutoencoderKL``) on ``images`` uint8 ``[N, 3, H, W]``, then freeze it and
    set the latent scaling factor to ``1 / std`` of the posterior means (as Stable Diffusion's 0.18215).

    Loss per step: L1 + MSE of the reconstruction from a posterior sample (in ``[-1, 1]``) + ``vae_kl_weight`` x
    KL. ``vae_steps`` steps of ``vae_batch_size``, AdamW at ``vae_lr``, seeded by ``config.seed``; the phase is
    short and restarts from scratch if interrupted (the decoder's checkpoint holds the finished autoencoder).
    Returns the per-step losses.
    """
    from tqdm.auto import tqdm

    vae = model.vae
    dev = next(model.parameters()).device
    vae.requires_grad_(True).train()
    gen = torch.Generator().manual_seed(config.seed + 7919)
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    losses: list[float] = []
    bar = tqdm(range(config.vae_steps), desc="train autoencoder", disable=not progress)
    for step in bar:
        set_lr(opt, lr_at(step, lr=config.vae_lr, warmup_steps=min(100, config.vae_steps // 10),
                          total_steps=config.vae_steps, min_lr_ratio=0.1))
        idx = torch.randint(0, images.shape[0], (config.vae_batch_size,), generator=gen)
        x = (images[idx].float() / 127.5 - 1.0).to(dev)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(dev)
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + config.vae_kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    vae.requires_grad_(False).eval()
    with torch.no_grad():
        set_latent_scale(model, 1.0)
        set_latent_scale(model, 1.0 / max(float(encode_images(model, images).std()), 1e-6))
    return losses


@torch.no_grad()
def warm_start(model: DiffusionDecoder, source: DiffusionDecoder) -> list[str]:
    """Copy ``source``'s weights into ``model`` (fine-tuning a trained decoder); returns the widened tensors.

    Tensors of the same shape are copied. A tensor that ``model`` widened along its last (input) dimension,
    as adding a semantic reader widens the condition projections and the null global vector, keeps
    ``source``'s values in its first columns and zeros in the new ones, so the warm-started decoder computes
    exactly what ``source`` did until training moves the new weights. Tensors only ``model`` has (the reader)
    keep their initialisation.

    Raises:
        ValueError: any other shape difference (another architecture), naming the tensors.
    """
    own = model.state_dict()
    widened, bad = [], []
    if model.vae is not None and source.vae is not None:
        set_latent_scale(model, float(source.config.latent["scaling_factor"]))
    for name, value in source.state_dict().items():
        target = own.get(name)
        if target is None:
            bad.append(f"{name} (not in the new decoder)")
        elif target.shape == value.shape:
            target.copy_(value)
        elif target.shape[:-1] == value.shape[:-1] and target.shape[-1] > value.shape[-1]:
            target.zero_()
            target[..., :value.shape[-1]].copy_(value)
            widened.append(name)
        else:
            bad.append(f"{name} {tuple(value.shape)} -> {tuple(target.shape)}")
    if bad:
        raise ValueError(f"init_from: the decoder's architecture differs from this config's ({', '.join(bad[:4])}"
                         f"{', ...' if len(bad) > 4 else ''}); drop init_from or use the same decoder settings")
    return widened


@torch.no_grad()
def sample_grid(decoder: DiffusionDecoder, data: DecoderData, path: str | Path, *, n: int = 6, seed: int = 0,
                snrs_db: tuple[float | None, ...] = (None, 0.0)) -> Path:
    """A PNG grid: the first ``n`` frames, then one row regenerated per ``snrs_db`` entry (``None``: clean)."""
    import io

    import numpy as np
    from PIL import Image

    from genscom.utils import atomic_write_bytes

    decoder.eval()
    n = min(n, data.images.shape[0])
    rows = [data.images[:n].float().div(255.0)]
    for snr in snrs_db:
        g = torch.Generator().manual_seed(seed)
        cond = received(data.cond[:n], snr, g)
        rows.append(decoder.generate(cond.to(next(decoder.parameters()).device), generator=g).cpu())
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # [3, rows*H, n*W]
    arr = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


__all__ = ["DecoderData", "TrainDecoderConfig", "encode_images", "prepare_data", "received", "sample_grid",
           "set_latent_scale",
           "train_autoencoder", "train_decoder", "warm_start"]
