"""PEFT fine-tuning of an understanding + generating agent pair across a noisy channel.

Objective per batch (SNR drawn uniformly in ``[snr_min, snr_max]`` dB per batch)::

    features --understanding agent--> e --semantic-analog + channel(snr)--> e_hat --generating agent-->
        caption_weight * LM loss(reference caption)  +  retrieval_weight * InfoNCE(retrieval, text embedding)
        (+ attribute_weight * cross-entropy of the ``attributes`` head, when the generating card has one)

Both LoRA adapters (one LLM, two adapter names; QLoRA when the cards say
``quantization: nf4``), the projectors, query tokens and heads are trained
jointly; the LLM's base weights stay frozen. Runs under ``accelerate``, with
gradient accumulation and optional mixed precision. Several processes::

    accelerate launch --multi_gpu --num_processes N -m genscom finetune agents --device auto ...

runs on N GPUs; with no visible GPU (``CUDA_VISIBLE_DEVICES=``) the same command
starts N CPU processes over gloo (``--cpu --num_processes N`` would start one and is
refused). ``batch_size`` is per process: every step all ranks draw the same global
batch of ``N * batch_size`` items and each trains on its own disjoint slice; DDP
averages the gradients (``find_unused_parameters``: heads outside the loss get none).

Everything random comes from one ``torch.Generator``, identical on every rank, whose
state is checkpointed, so ``resume=True`` continues exactly (bit-identical losses on
the same machine); a step's channel noise comes from a generator seeded from it plus
the rank. Checkpoints are written atomically to ``out_dir`` (default
``runs/finetune-agents-<timestamp>/``); the final adapters are saved PEFT-style, one
folder per card name, under ``adapters_dir`` (default ``<out_dir>/adapters``; a folder
that already holds adapters, such as the shipped ones, only with ``overwrite=True``,
keeping their READMEs).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genscom.agents.agent import Agent, check_agent_folder, load_agent_pair
from genscom.agents.card import AgentCard, load_card
from genscom.agents.prompts import ChannelSensing
from genscom.channels.analog import send_analog
from genscom.loading import MissingFileError
from genscom.training import (EpochSampler, check_launch, check_output_dir, config_defaults, contrastive_loss,
                              load_checkpoint, lr_at, make_accelerator, resolve_run_dir, save_checkpoint, set_lr)
from genscom.utils import atomic_write_json, check_positive_ints

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class FinetuneConfig:
    """Options of ``genscom finetune agents`` and ``apps/finetune_agents.py`` (one flag per field, ``_`` -> ``-``).

    The script runs the CLI command, so both take the same flags; a new field needs its flag in
    ``genscom.cli.finetune_agents_cmd`` (``tests/test_finetune.py`` checks the two against these fields).
    ``none`` given to a field whose default is ``None`` (``--adapters-dir none``) sets it to ``None``.
    """

    card: str = "smollm2-generating"  # either end's card (a path or a name on the card search path); its `partner` is the other
    dataset: str = "synthetic"
    data_root: str | None = None  # folder of msrvtt / image-captions datasets
    n_train: int = 2000
    profile: str | None = None  # perception encoder profile (default: the card's `perception`)
    steps: int = 300
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 20
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after the linear warm-up; cosine decays to 0 at `steps`
    weight_decay: float = 0.0
    snr_min: float = -5.0
    snr_max: float = 20.0
    channel: str = "awgn"
    caption_weight: float = 1.0
    retrieval_weight: float = 1.0
    attribute_weight: float = 1.0  # cross-entropy of the generating card's `attributes` head (when it has one)
    temperature: float = 0.05
    seed: int = 0
    out_dir: str | None = None  # run folder (checkpoint.pt, finetune.json); None: runs/finetune-agents-<timestamp>/
    adapters_dir: str | None = None  # final adapters: <adapters_dir>/<card name>/; None: <out_dir>/adapters
    init_from: str | None = None  # start from trained adapters: <init_from>/<card name>/ for both agents
    checkpoint_every: int = 50
    log_every: int = 10
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    device: str = "cpu"
    eval_every: int = 0  # every N steps: caption metrics on the held-out `val` split (0 = never)
    n_eval: int = 48
    eval_snr: float = 20.0  # dB, over `channel`

    def __post_init__(self) -> None:
        check_positive_ints(self, ("n_train", "steps", "batch_size", "grad_accum", "checkpoint_every", "log_every",
                                   "n_eval"))
        if self.batch_size < 2 and self.retrieval_weight > 0:
            raise ValueError(f"batch_size must be >= 2 for the contrastive retrieval loss, got {self.batch_size}")
        for name in ("lr", "temperature"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be an integer >= 0 (0 = no evaluation), got {self.eval_every!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        for name in ("snr_min", "snr_max", "caption_weight", "retrieval_weight", "attribute_weight", "weight_decay",
                     "eval_snr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.snr_min > self.snr_max:
            raise ValueError(f"snr_min ({self.snr_min}) must be <= snr_max ({self.snr_max})")
        if self.caption_weight < 0 or self.retrieval_weight < 0 or self.caption_weight + self.retrieval_weight == 0:
            raise ValueError("caption_weight and retrieval_weight must be >= 0 and not both 0, got "
                             f"{self.caption_weight}, {self.retrieval_weight}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")


@dataclass
class CaptionData:
    """Training data for the agents, already through the perception encoder.

    Attributes:
        features: ``[N, d_p]`` (or ``[N, n, d_p]``) float perception features per item.
        captions: ``N`` lists of reference captions.
        text_emb: ``[n_captions, d_t]`` L2-normalised text embeddings of all captions, flattened in item order.
        caption_offsets: ``[N + 1]`` int64: captions of item ``i`` are rows ``offsets[i]:offsets[i+1]``.
        labels: ``{attribute: [N] int64}`` class indices of the first object group (``-100``: unknown), for the
            ``attributes`` head; ``None`` without labels.
    """

    features: torch.Tensor
    captions: list[list[str]]
    text_emb: torch.Tensor
    caption_offsets: torch.Tensor = field(default=None)  # type: ignore[assignment]
    labels: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        n = len(self.captions)
        if self.features.shape[0] != n:
            raise ValueError(f"features has {self.features.shape[0]} rows but captions has {n} items")
        if any(not c for c in self.captions):
            raise ValueError("every item needs at least one caption")
        counts = torch.tensor([len(c) for c in self.captions], dtype=torch.int64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        if self.caption_offsets is None:
            self.caption_offsets = offsets
        if self.text_emb.shape[0] != int(offsets[-1]):
            raise ValueError(f"text_emb has {self.text_emb.shape[0]} rows but there are {int(offsets[-1])} captions")
        for k, v in (self.labels or {}).items():
            if v.shape != (n,) or v.dtype != torch.int64:
                raise ValueError(f"labels[{k!r}] must be int64 [{n}], got {v.dtype} {tuple(v.shape)}")

    def __len__(self) -> int:
        return len(self.captions)


def attribute_labels(dataset: Any, classes: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """``{attribute: [N] int64}``: the index in ``classes[attribute]`` of each item's first object group's value
    (``dataset.attributes_of(i)["groups"][0]``, compared as strings); ``-100`` (ignored by the loss) where an item
    has no such value or a class the list does not name."""
    out = {k: torch.full((len(dataset),), -100, dtype=torch.int64) for k in classes}
    index = {k: {c: j for j, c in enumerate(v)} for k, v in classes.items()}
    for i in range(len(dataset)):
        groups = dataset.attributes_of(i).get("groups") or [{}]
        for k in classes:
            j = index[k].get(str(groups[0].get(k)))
            if j is not None:
                out[k][i] = j
    return out


def build_caption_data(encoder: Any, dataset: Any, *, batch_size: int = 64,
                       attribute_classes: dict[str, list[str]] | None = None) -> CaptionData:
    """Encode a clip-caption dataset once: clip features (``encode_clips``) and caption text embeddings (and,
    with ``attribute_classes``, the labels of :func:`attribute_labels`)."""
    with torch.no_grad():
        feats = encoder.encode_clips(dataset.stacked_frames(), batch_size=batch_size).float().cpu()
        caps = [list(dataset.captions_of(i)) for i in range(len(dataset))]
        flat = [c for cs in caps for c in cs]
        text = F.normalize(encoder.encode_text(flat, batch_size=256).float().cpu(), dim=-1)
    labels = attribute_labels(dataset, attribute_classes) if attribute_classes else None
    return CaptionData(features=feats, captions=caps, text_emb=text, labels=labels)


class AgentPairModule(nn.Module):
    """Both agents and the shared LLM as one module (what ``accelerator.prepare`` wraps)."""

    def __init__(self, understanding: Agent, generating: Agent) -> None:
        super().__init__()
        self.understanding = understanding
        self.generating = generating
        self.llm_model = understanding.llm.peft  # registers the LoRA parameters

    def forward(self, features: torch.Tensor, captions: list[str], text: torch.Tensor, *, snr_db: float,
                channel: Any, generator: torch.Generator, cfg: FinetuneConfig,
                labels: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One batch across the analog link (:func:`~genscom.channels.analog.send_analog`, the
        ``semantic-analog`` scheme's physical layer) at ``snr_db``; returns the weighted loss and its parts."""
        sensing = ChannelSensing(snr_db=float(snr_db), channel=cfg.channel)
        e = self.understanding(features, sensing=sensing).embedding
        e_hat = send_analog(e, channel, float(snr_db), generator=generator)
        out = self.generating(e_hat, sensing=sensing, captions=captions if cfg.caption_weight > 0 else None)
        zero = e.new_zeros(())
        cap = out.caption_loss if out.caption_loss is not None else zero
        ret = contrastive_loss(out.retrieval, text.to(out.retrieval.device), scale=1.0 / cfg.temperature) \
            if cfg.retrieval_weight > 0 and out.retrieval is not None else zero
        att = zero
        if cfg.attribute_weight > 0 and out.attributes is not None and labels is not None:
            for k, logits in out.attributes.items():
                y = labels[k].to(logits.device)
                if bool((y != -100).any()):  # a batch whose items all lack this attribute adds nothing (not NaN)
                    att = att + F.cross_entropy(logits, y, ignore_index=-100)
        return {"loss": cfg.caption_weight * cap + cfg.retrieval_weight * ret + cfg.attribute_weight * att,
                "caption": cap.detach(), "retrieval": ret.detach(), "attributes": att.detach()}


def _check_labels(data: CaptionData, card: AgentCard) -> None:
    """The training data must label every attribute of ``card``'s attributes head, each for some item."""
    fix = ("build the data with build_caption_data(..., attribute_classes=card.attribute_classes) from a dataset "
           "whose attributes_of(i)['groups'][0] holds these attributes, or set attribute_weight 0")
    if data.labels is None:
        raise ValueError(f"card {card.name!r} has an attributes head but the training data has no labels; {fix}")
    missing = sorted(set(card.attribute_classes) - set(data.labels))
    if missing:
        raise ValueError(f"the training data has no labels for attribute(s) {missing} of card {card.name!r}; {fix}")
    empty = sorted(k for k in card.attribute_classes if not bool((data.labels[k] != -100).any()))
    if empty:
        raise ValueError(f"no training item has a label among card {card.name!r}'s classes for attribute(s) {empty} "
                         f"(every label is -100); {fix}")


def _trainable(pair: AgentPairModule) -> list[nn.Parameter]:
    return pair.understanding.trainable_parameters() + pair.generating.trainable_parameters()


def _state(pair: AgentPairModule) -> dict[str, Any]:
    u, g = pair.understanding, pair.generating
    return {"understanding": u.state_dict(), "generating": g.state_dict(),
            "lora_understanding": u.llm.adapter_state_dict(u.adapter_name),
            "lora_generating": g.llm.adapter_state_dict(g.adapter_name)}


def _load_state(pair: AgentPairModule, state: dict[str, Any]) -> None:
    u, g = pair.understanding, pair.generating
    u.load_state_dict(state["understanding"])
    g.load_state_dict(state["generating"])
    u.llm.load_adapter_state(u.adapter_name, state["lora_understanding"])
    g.llm.load_adapter_state(g.adapter_name, state["lora_generating"])


def finetune_agents(cfg: FinetuneConfig, *, data: CaptionData | None = None, agents: tuple[Agent, Agent] | None = None,
                    resume: bool = False, progress: Any = None,
                    evaluator: Callable[["AgentPairModule"], dict[str, float]] | None = None,
                    overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune the agent pair; returns ``{"losses": [...], "steps": n, "adapters": {...}, "seconds": t,
    "main_process": bool}`` (under ``accelerate launch`` only the main process saves: ``adapters`` is empty elsewhere).

    Args:
        cfg: :class:`FinetuneConfig`.
        data: pre-encoded :class:`CaptionData`; default: the train split of ``cfg.dataset``
            (``cfg.n_train`` items) through ``create_encoder(cfg.profile or card.perception)``.
        agents: ``(understanding, generating)`` sharing one LLM; default :func:`load_agent_pair`
            on ``cfg.card`` with fresh adapters.
        resume: continue from ``<out_dir>/checkpoint.pt`` exactly (same config required; ``out_dir=None``:
            the newest ``runs/finetune-agents-<timestamp>/`` holding a checkpoint).
        progress: ``True`` for a tqdm bar (loss, caption/retrieval losses, last evaluation), or a
            callable ``progress(step, total, metrics)``.
        evaluator: called as ``evaluator(pair)`` every ``cfg.eval_every`` steps (and at the last step); its
            metrics go into that step's ``history`` entry under ``"eval"``. Default (when ``eval_every > 0``):
            :class:`CaptionEvaluator` on the synthetic ``val`` split.
        overwrite: allow an ``adapters_dir`` that already holds trained adapters (their READMEs are kept).

    Before any model or data is loaded: the output folders, the checkpoint (``resume``), the
    cards, the ``init_from`` adapters and the ``profile`` are checked.
    """
    from genscom.channels.registry import create_channel

    t0 = time.time()
    check_launch()  # before any loading: `accelerate launch --cpu --num_processes N` would run one process
    out_dir = resolve_run_dir(cfg.out_dir, "finetune-agents", resume=resume, flag="--out-dir")
    cfg = replace(cfg, out_dir=str(out_dir))
    ckpt_path = out_dir / CHECKPOINT_NAME
    adapters_dir = Path(cfg.adapters_dir) if cfg.adapters_dir is not None else out_dir / "adapters"
    own = adapters_dir.resolve().is_relative_to(out_dir.resolve())
    check_output_dir(adapters_dir, overwrite=overwrite, flag="--adapters-dir",
                     resuming=resume and own and ckpt_path.is_file())
    ck = load_checkpoint(ckpt_path, resume=resume, config=asdict(cfg), free=RESUME_FREE_FIELDS,
                         defaults=config_defaults(FinetuneConfig),
                         hint="resume with the config the run started with")
    cards = [a.card for a in agents] if agents is not None else _pair_cards(cfg.card)
    if cfg.init_from is not None and not resume:
        for card in cards:
            folder = Path(cfg.init_from) / card.name
            if not folder.is_dir():
                raise MissingFileError(f"init_from: {str(folder)!r} does not exist; init_from must hold one adapter "
                                       f"folder per card name (as written to adapters_dir by an earlier run)")
            check_agent_folder(folder, role=card.role)
    if cfg.profile is not None and data is None:
        from genscom.encoders.registry import check_profile

        check_profile(cfg.profile)
    if agents is None:
        agents = load_agent_pair(cfg.card, device=cfg.device, load_adapter=False, seed=cfg.seed)
    u, g = agents
    if cfg.init_from is not None and not resume:
        for agent in (u, g):  # heads the card adds to the folder's (e.g. `attributes`) start fresh
            agent.load_pretrained(Path(cfg.init_from) / agent.card.name, new_heads=True)
    if u.role != "understanding" or g.role != "generating" or u.llm is not g.llm:
        raise ValueError("agents must be (understanding, generating) sharing one SharedLLM (use load_agent_pair)")
    if data is None:
        data = _default_data(cfg, u, g)
    if "attributes" in g.card.heads and cfg.attribute_weight > 0:
        _check_labels(data, g.card)
    u.llm.set_trainable({u.adapter_name, g.adapter_name})
    pair = AgentPairModule(u, g)
    pair.train()
    u.llm.hf.eval()  # the frozen LLM stays in eval mode (no dropout inside the base)

    accelerator = make_accelerator(cfg.device, mixed_precision=cfg.mixed_precision, grad_accum=cfg.grad_accum,
                                   find_unused_parameters=True)  # e.g. the image-conditioning head is not in the loss
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size * world > len(data):
        raise ValueError(f"batch_size ({cfg.batch_size}) x {world} processes must be <= the {len(data)} training "
                         "items; lower batch_size or raise n_train")
    optimizer = torch.optim.AdamW(_trainable(pair), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pair, optimizer = accelerator.prepare(pair, optimizer)
    model = accelerator.unwrap_model(pair)

    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = EpochSampler(len(data), generator=gen)
    step, history = 0, []
    if ck is not None:
        _load_state(model, ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        sampler.load_state_dict(ck["sampler"])
        step, history = ck["step"], ck["history"]
        logger.info("resumed from %s at step %d", ckpt_path, step)

    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="finetune agents", disable=not accelerator.is_main_process)
        shown: dict[str, str] = {}

        def progress(step: int, total: int, metrics: dict[str, float]) -> None:  # noqa: ARG001
            shown.update({k: f"{v:.3f}" for k, v in metrics.items() if k in ("loss", "caption", "retrieval", "attributes")})
            bar.set_postfix(shown, refresh=False)
            if "eval_object_colour_acc" in metrics:
                shown["val obj+col"] = f"{metrics['eval_object_colour_acc']:.2f}"
                bar.set_postfix(shown)
            else:
                bar.update(1)
    elif progress is False:
        progress = None
    channel = create_channel(cfg.channel)
    feats = data.features
    while step < cfg.steps:
        set_lr(optimizer, lr_at(step, lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                                schedule=cfg.lr_schedule))
        sums = {"loss": 0.0, "caption": 0.0, "retrieval": 0.0, "attributes": 0.0}
        for _ in range(cfg.grad_accum):
            # the same draws on every rank (gen stays identical, so rank 0's checkpoint resumes all of them)
            idx = sampler.next(cfg.batch_size * world)  # the global batch
            choice = [int(data.caption_offsets[i]) + int(torch.randint(len(data.captions[i]), (1,), generator=gen))
                      for i in idx.tolist()]
            snr = cfg.snr_min + (cfg.snr_max - cfg.snr_min) * float(torch.rand((), generator=gen))
            noise = torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=gen)) + rank)
            mine = slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)  # this rank's disjoint part
            idx, choice = idx[mine], choice[mine]
            caps = [data.captions[i][c - int(data.caption_offsets[i])] for i, c in zip(idx.tolist(), choice)]
            with accelerator.accumulate(pair):
                with accelerator.autocast():
                    out = pair(feats[idx].to(accelerator.device), caps, data.text_emb[choice], snr_db=snr,
                               channel=channel, generator=noise, cfg=cfg,
                               labels=None if data.labels is None else {k: v[idx] for k, v in data.labels.items()})
                accelerator.backward(out["loss"])
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(_trainable(model), 1.0)
                optimizer.step()
                optimizer.zero_grad()
            for k in sums:
                sums[k] += float(out[k].detach()) / cfg.grad_accum
        if world > 1:  # the logged losses are means over all ranks' items
            mean = accelerator.reduce(torch.tensor(list(sums.values()), device=accelerator.device), reduction="mean")
            sums = dict(zip(sums, mean.tolist()))
        step += 1
        history.append({"step": step, **sums})
        if progress is not None:
            progress(step, cfg.steps, sums)
        if step % cfg.log_every == 0:
            logger.info("step %d/%d loss %.4f caption %.4f retrieval %.4f", step, cfg.steps, sums["loss"],
                        sums["caption"], sums["retrieval"])
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps) and accelerator.is_main_process:
            if evaluator is None:
                evaluator = CaptionEvaluator(cfg, model.understanding)
            model.eval()  # the evaluator may also do this; the fine-tuning itself goes on in train mode
            history[-1]["eval"] = {k: float(v) for k, v in evaluator(model).items()}
            model.train()
            model.understanding.llm.hf.eval()
            logger.info("step %d eval@%g dB: %s", step, cfg.eval_snr,
                        " ".join(f"{k} {v:.3f}" for k, v in history[-1]["eval"].items()))
            if progress is not None:
                progress(step, cfg.steps, {**sums, **{f"eval_{k}": v for k, v in history[-1]["eval"].items()}})
        if (step % cfg.checkpoint_every == 0 or step == cfg.steps) and accelerator.is_main_process:
            save_checkpoint(ckpt_path, {"model": _state(model), "optimizer": optimizer.state_dict(),
                                        "generator": gen.get_state(), "sampler": sampler.state_dict(), "step": step,
                                        "history": history}, config=asdict(cfg))

    if bar is not None:
        bar.close()
    accelerator.wait_for_everyone()
    saved: dict[str, str] = {}
    if accelerator.is_main_process:
        for agent in (model.understanding, model.generating):
            saved[agent.card.name] = str(agent.save_pretrained(adapters_dir / agent.card.name))
        atomic_write_json(out_dir / "finetune.json", {"config": asdict(cfg), "history": history, "adapters": saved,
                                                      "seconds": time.time() - t0})
    accelerator.wait_for_everyone()  # every rank returns once the adapters are on disk
    return {"losses": [h["loss"] for h in history], "history": history, "steps": step, "adapters": saved,
            "seconds": time.time() - t0, "main_process": bool(accelerator.is_main_process)}


def export_checkpoint(checkpoint: str | Path, adapters_dir: str | Path, *,
                      agents: tuple[Agent, Agent] | None = None, device: str = "cpu") -> dict[str, str]:
    """Write the adapters held in a fine-tuning checkpoint as PEFT-style folders ``<adapters_dir>/<card name>/``.

    For evaluating or shipping an intermediate step, or as ``init_from`` of another run. ``agents``:
    the pair to load into (default: :func:`load_agent_pair` on the checkpoint's ``card``).
    Returns ``{card name: folder}``.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; fine-tuning writes <out_dir>/{CHECKPOINT_NAME}")
    ck = load_checkpoint(path, resume=True, config={}, free=set())
    assert ck is not None
    if agents is None:
        agents = load_agent_pair(ck["config"]["card"], device=device, load_adapter=False, seed=ck["config"]["seed"])
    pair = AgentPairModule(*agents)
    _load_state(pair, ck["model"])
    return {a.card.name: str(a.save_pretrained(Path(adapters_dir) / a.card.name)) for a in agents}


class CaptionEvaluator:
    """Caption metrics of the pair on the first ``cfg.n_eval`` clips of the held-out ``val`` split.

    Clips go perception -> understanding agent -> analog symbols -> ``cfg.channel`` at
    ``cfg.eval_snr`` dB -> generating agent -> greedy caption; metrics as in
    :func:`genscom.metrics.text.caption_scores` (object/colour accuracy, BLEU-4).
    """

    def __init__(self, cfg: FinetuneConfig, understanding: Agent, *, encoder: Any = None, dataset: Any = None) -> None:
        from genscom.data import create_dataset
        from genscom.encoders import create_encoder

        if dataset is None and cfg.dataset != "synthetic":
            raise ValueError(f"eval_every needs the synthetic dataset (object/colour labels), got {cfg.dataset!r}; "
                             "set eval_every=0 or pass an evaluator")
        self.cfg = cfg
        self.dataset = dataset if dataset is not None else \
            create_dataset("synthetic", split="val", n_items=cfg.n_eval, seed=cfg.seed)
        self.encoder = encoder if encoder is not None else \
            create_encoder(cfg.profile or understanding.card.perception, device=cfg.device)

    def __call__(self, pair: "AgentPairModule") -> dict[str, float]:
        from genscom.agents.pair import caption_scores_for_pair

        was_training = pair.training
        pair.eval()
        try:
            with torch.no_grad():
                # the LM's own captions (fusion 0): what training changes, comparable across cards and runs
                scores = caption_scores_for_pair(pair.understanding, pair.generating, snr_db=self.cfg.eval_snr,
                                                 channel=self.cfg.channel, seed=self.cfg.seed, encoder=self.encoder,
                                                 dataset=self.dataset, fusion=0.0)
        finally:
            pair.train(was_training)
            pair.understanding.llm.hf.eval()  # the frozen base stays in eval mode
        return {k: float(v) for k, v in scores.items()}


def _pair_cards(card: str) -> list[AgentCard]:
    """A card and its partner, read (and validated) without loading any model."""
    first = load_card(card)
    return [first, first.partner_card()]


# fields that may change between a run and its resumption (a cosine schedule follows the new `steps`)
RESUME_FREE_FIELDS = frozenset({"steps", "checkpoint_every", "log_every", "out_dir", "adapters_dir", "device",
                                "eval_every", "n_eval", "eval_snr"})


def _default_data(cfg: FinetuneConfig, u: Agent, g: Agent) -> CaptionData:
    from genscom.data import create_dataset
    from genscom.encoders import create_encoder

    kwargs: dict[str, Any] = {"n_items": cfg.n_train}
    if cfg.dataset in ("synthetic", "digits"):
        kwargs["seed"] = cfg.seed
    if cfg.data_root is not None:
        kwargs["root"] = cfg.data_root
    ds = create_dataset(cfg.dataset, split="train", **kwargs)
    encoder = create_encoder(cfg.profile or u.card.perception, device=cfg.device)
    data = build_caption_data(encoder, ds, attribute_classes=g.card.attribute_classes or None)
    if data.features.shape[-1] != u.card.perception_dim:
        raise ValueError(f"perception features have size {data.features.shape[-1]} but card {u.card.name!r} has "
                         f"perception_dim={u.card.perception_dim}; match the card to the encoder profile")
    return data
