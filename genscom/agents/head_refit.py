"""Refit the generating agent's ``attributes`` head on what the receiver actually gets.

The ``attributes`` head (:class:`~genscom.agents.heads.AttributeHead`) reads the first object group's shape,
colour, size and count straight from the received embedding; with ``attribute_fusion`` it also steers the
caption's class words (:mod:`genscom.agents.decoding`). In joint fine-tuning
(:mod:`genscom.agents.finetune`) it sees only ``steps x batch_size`` items, each once, beside the LLM's losses.
This trainer keeps both agents (LoRA, projectors, every other head) frozen and trains the head alone::

    train clips --perception--> features --understanding agent (told snr)--> e          (once, cached)
    e --semantic-analog + channel(snr), fresh noise every epoch--> e_hat --attributes head--> cross-entropy

over every SNR of ``snrs`` (each item at each SNR), for ``epochs`` passes. The understanding agent runs once
per item and SNR (its embeddings are cached in the run folder, with a fingerprint of the config that made
them), so an epoch costs only the head. The ``val`` split (``n_val`` clips) is read at each SNR before training
(the loaded head) and after every epoch, for the record; the last epoch's head is kept. The test split is never
touched.

Resumable per epoch (``checkpoint.pt``: head, optimiser, history; the first one is written once the embeddings
are cached, so a run killed during its first epoch resumes without embedding again; the noise of epoch ``k``
comes from a generator seeded with ``(seed, k)``, so a resumed run draws what the uninterrupted one would). The final
generating agent (its LoRA and modules as loaded, the refitted head) is written by
:meth:`~genscom.agents.agent.Agent.save_pretrained` to ``<adapters_dir>/<card name>/`` (default
``<out_dir>/adapters``; a folder that already holds weights only with ``overwrite=True``), with a run card.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from genscom.agents.card import AgentCard, load_card
from genscom.training import (_plain, check_output_dir, config_defaults, load_checkpoint, lr_at, resolve_run_dir,
                              run_card, save_checkpoint, set_lr, write_run)
from genscom.utils import check_positive_ints, resolve_device

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
EMBEDDINGS_NAME = "embeddings.pt"
RESUME_FREE_FIELDS = frozenset({"out_dir", "adapters_dir", "device"})


@dataclass
class HeadRefitConfig:
    """What :func:`refit_attribute_head` trains and where it writes.

    ``card``: the generating card (or its partner; a path or a name on the card search path) whose trained
    adapters are loaded; ``n_train`` / ``n_val``: clips of the synthetic ``train`` / ``val`` splits (dataset
    seed ``seed``); ``snrs``: the SNRs in dB at which every item is embedded (the understanding agent is told
    each) and sent over ``channel``; ``epochs`` passes over ``n_train x len(snrs)`` received embeddings,
    ``batch_size`` each step, AdamW (``lr``, cosine to 0, ``weight_decay``); ``init``: ``"warm"`` starts from the
    card's trained head, ``"fresh"`` from a new initialisation (seeded); ``out_dir``: run folder (default
    ``runs/attribute-head-<timestamp>/``); ``adapters_dir``: where the refitted agent goes (default
    ``<out_dir>/adapters``).
    """

    card: str = "smollm2-attr-v2-generating"
    n_train: int = 4000
    n_val: int = 300
    snrs: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 20.0)
    channel: str = "awgn"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    init: Literal["warm", "fresh"] = "warm"
    seed: int = 0
    out_dir: str | None = None
    adapters_dir: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_positive_ints(self, ("n_train", "n_val", "epochs", "batch_size"), owner="HeadRefitConfig")
        try:
            self.snrs = tuple(float(s) for s in self.snrs)
        except (TypeError, ValueError):
            raise ValueError(f"HeadRefitConfig.snrs must be a list of SNRs in dB, got {self.snrs!r}") from None
        if not self.snrs or not all(math.isfinite(s) for s in self.snrs) or len(set(self.snrs)) != len(self.snrs):
            raise ValueError(f"HeadRefitConfig.snrs must be distinct finite SNRs in dB, e.g. -5,0,5,10,20; "
                             f"got {self.snrs!r}")
        if not (math.isfinite(float(self.lr)) and float(self.lr) > 0):
            raise ValueError(f"HeadRefitConfig.lr must be > 0, got {self.lr!r}")
        if not (math.isfinite(float(self.weight_decay)) and float(self.weight_decay) >= 0):
            raise ValueError(f"HeadRefitConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.init not in ("warm", "fresh"):
            raise ValueError(f"HeadRefitConfig.init must be 'warm' (the card's trained head) or 'fresh', "
                             f"got {self.init!r}")
        if self.batch_size > self.n_train:
            raise ValueError(f"HeadRefitConfig.batch_size={self.batch_size} exceeds n_train={self.n_train}; lower "
                             "batch_size or raise n_train")
        try:
            resolve_device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"HeadRefitConfig.device must be cpu, cuda, cuda:N or auto, got {self.device!r}") from None

    def data_fingerprint(self) -> str:
        """What the cached embeddings depend on (card, data, SNRs, channel, seed), hashed."""
        import hashlib
        import json

        keys = ("card", "n_train", "n_val", "snrs", "channel", "seed")
        return hashlib.sha256(json.dumps({k: _plain(getattr(self, k)) for k in keys}).encode()).hexdigest()[:16]


def _generating_card(card: str) -> AgentCard:
    """The generating end of ``card``'s pair, which must have an ``attributes`` head (read, no model loaded)."""
    first = load_card(card)
    g = first if first.role == "generating" else first.partner_card()
    if g.role != "generating" or "attributes" not in g.heads:
        raise ValueError(f"card {g.name!r} has no attributes head (heads={g.heads}); refit a generating card "
                         "with `attributes` in heads and its attribute_classes (e.g. smollm2-attr-v2-generating)")
    return g


def _embed(u: Any, encoder: Any, dataset: Any, classes: dict[str, list[str]], snrs: tuple[float, ...],
           channel: str, *, progress: bool = False, what: str = "") -> dict[str, torch.Tensor]:
    """``{"emb": [S, N, d] float32, <attribute>: [N] int64}``: the understanding agent's embedding of every item at
    every SNR (told that SNR) and the first group's class labels (``-100``: not among ``classes``)."""
    from genscom.agents.finetune import attribute_labels
    from genscom.agents.pair import sensing_for, understand

    with torch.no_grad():
        feats = encoder.encode_clips(dataset.stacked_frames()).float().cpu()
    if progress:
        from tqdm.auto import tqdm

        snrs = tqdm(snrs, desc=f"embedding {len(feats)} {what} clips", unit="SNR")  # type: ignore[assignment]
    emb = torch.stack([understand(u, feats, sensing_for(s, channel), batch_size=32) for s in snrs])
    return {"emb": emb, **attribute_labels(dataset, classes)}


def _cache_fits(data: dict[str, torch.Tensor], fingerprint: str, classes: dict[str, Any], n_snrs: int) -> bool:
    """Whether cached embeddings were made by this config (fingerprint) and hold every tensor, consistently shaped."""
    fp = data.get("fingerprint")
    if not isinstance(fp, torch.Tensor) or bytes(fp.tolist()).decode(errors="replace") != fingerprint:
        return False
    for split in ("train", "val"):
        emb = data.get(f"{split}_emb")
        if not isinstance(emb, torch.Tensor) or emb.dim() != 3 or emb.shape[0] != n_snrs:
            return False
        if any(not isinstance(data.get(f"{split}_{k}"), torch.Tensor) or data[f"{split}_{k}"].shape != emb.shape[1:2]
               for k in classes):
            return False
    return True


def _received(emb: torch.Tensor, snrs: tuple[float, ...], channel: Any, generator: torch.Generator) -> torch.Tensor:
    """``[S, N, d]`` embeddings -> ``[S * N, d]`` received ones: row block ``s`` sent at ``snrs[s]``."""
    from genscom.channels.analog import send_analog

    return torch.cat([send_analog(emb[i], channel, s, generator=generator) for i, s in enumerate(snrs)])


@torch.no_grad()
def head_accuracy(head: Any, emb: torch.Tensor, labels: dict[str, torch.Tensor], snrs: tuple[float, ...],
                  channel: Any, *, seed: int) -> dict[str, dict[str, float]]:
    """Per SNR: the head's accuracy on each attribute (over the items labelled for it; ``-100``: not a class) and on
    ``shape_colour`` (both right, over all items: one whose shape or colour is not a class counts as wrong)
    -> ``{"<snr>": {attribute: acc, "shape_colour": acc}}``."""
    was = head.training
    head.eval()
    out: dict[str, dict[str, float]] = {}
    dev = next(head.parameters()).device
    for i, s in enumerate(snrs):
        x = _received(emb[i: i + 1], (s,), channel, torch.Generator().manual_seed(seed))
        logits = head(x[:, None, :].to(dev))
        ok = {k: (v.argmax(-1).cpu() == labels[k]) for k, v in logits.items()}
        row = {k: round(float(v[labels[k] != -100].float().mean()), 4) if bool((labels[k] != -100).any())
               else float("nan") for k, v in ok.items()}
        if "shape" in ok and "colour" in ok:
            row["shape_colour"] = round(float((ok["shape"] & ok["colour"]).float().mean()), 4)
        out[f"{s:g}"] = row
    head.train(was)
    return out


def refit_attribute_head(cfg: HeadRefitConfig, *, resume: bool = False, progress: bool = True,
                         agents: tuple[Any, Any] | None = None, encoder: Any = None, train: Any = None,
                         val: Any = None, overwrite: bool = False, command: str | None = None) -> dict[str, Any]:
    """Train the generating agent's ``attributes`` head alone (see the module docstring).

    ``agents`` / ``encoder`` / ``train`` / ``val``: a loaded pair (default :func:`load_agent_pair` on
    ``cfg.card`` with its trained adapters), the perception encoder (default the card's ``perception``) and the
    datasets (default the synthetic splits); ``command``: the CLI line, for the run card.

    Before any model or data is loaded, the card, the output folders and the checkpoint (``resume``) are checked.
    Returns ``{"history": [...], "val": {...}, "adapters": path or None, "seconds": t, "out_dir": path}``.
    """
    from genscom.channels.registry import create_channel

    t0 = time.time()
    g_card = agents[1].card if agents is not None else _generating_card(cfg.card)
    if "attributes" not in g_card.heads:
        raise ValueError(f"card {g_card.name!r} has no attributes head; refit a card that has one")
    out_dir = resolve_run_dir(cfg.out_dir, "attribute-head", resume=resume, flag="--out-dir")
    # the record names the card that was refitted (the given agents' when they are passed in)
    cfg = replace(cfg, out_dir=str(out_dir), card=cfg.card if agents is None else g_card.name)
    device = str(resolve_device(cfg.device))
    adapters_dir = Path(cfg.adapters_dir) if cfg.adapters_dir is not None else out_dir / "adapters"
    ckpt_path = out_dir / CHECKPOINT_NAME
    check_output_dir(adapters_dir, overwrite=overwrite, flag="--adapters-dir",
                     resuming=resume and adapters_dir.resolve().is_relative_to(out_dir.resolve()))
    ck = load_checkpoint(ckpt_path, resume=resume, config=asdict(cfg), free=RESUME_FREE_FIELDS,
                         defaults=config_defaults(HeadRefitConfig), hint="resume with the config the run started with")
    channel = create_channel(cfg.channel)
    if agents is None:
        from genscom.agents.agent import load_agent_pair

        agents = load_agent_pair(cfg.card, device=device)
    u, g = agents
    if encoder is None:
        from genscom.encoders import create_encoder

        encoder = create_encoder(u.card.perception, device=device)
    from genscom.data import create_dataset
    from genscom.training import cached_tensors

    classes = g.card.attribute_classes
    out_dir.mkdir(parents=True, exist_ok=True)

    def compute() -> dict[str, torch.Tensor]:
        tr = train if train is not None else create_dataset("synthetic", split="train", n_items=cfg.n_train,
                                                            seed=cfg.seed)
        va = val if val is not None else create_dataset("synthetic", split="val", n_items=cfg.n_val, seed=cfg.seed)
        a = _embed(u, encoder, tr, classes, cfg.snrs, channel.name, progress=progress, what="train")
        b = _embed(u, encoder, va, classes, cfg.snrs, channel.name, progress=progress, what="val")
        return {**{f"train_{k}": v for k, v in a.items()}, **{f"val_{k}": v for k, v in b.items()},
                "fingerprint": torch.tensor(list(fingerprint.encode()), dtype=torch.uint8)}

    fingerprint = cfg.data_fingerprint()
    cache = out_dir / EMBEDDINGS_NAME  # the run's own cache: a resumed run trains on the same embeddings
    if not resume:  # a new run into an old folder trusts neither that run's embeddings nor its checkpoint
        cache.unlink(missing_ok=True)
        ckpt_path.unlink(missing_ok=True)
    data = cached_tensors(cache, compute)
    if not _cache_fits(data, fingerprint, classes, len(cfg.snrs)):
        logger.warning("%s was made for another config or is incomplete; embedding again", cache)
        cache.unlink(missing_ok=True)
        data = cached_tensors(cache, compute)
    emb, val_emb = data["train_emb"], data["val_emb"]
    labels = {k: data[f"train_{k}"] for k in classes}
    val_labels = {k: data[f"val_{k}"] for k in classes}
    if emb.shape[0] != len(cfg.snrs) or emb.shape[1] < cfg.batch_size:
        raise ValueError(f"{cache}: {emb.shape[1]} train items at {emb.shape[0]} SNRs; need batch_size="
                         f"{cfg.batch_size} items at each of {len(cfg.snrs)} SNRs (lower batch_size or raise n_train)")

    head = g.heads["attributes"]
    if cfg.init == "fresh" and ck is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for m in head.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = emb.shape[0] * emb.shape[1]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    history: list[dict[str, Any]] = []
    start = 0
    if ck is not None:
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["optimizer"])
        history, start = list(ck["history"]), int(ck["epoch"])
        logger.info("resuming %s after epoch %d of %d", out_dir, start, cfg.epochs)
    dev = next(head.parameters()).device
    def checkpoint() -> None:
        """The head, the optimiser and the history after ``history[-1]["epoch"]`` epochs, atomically."""
        save_checkpoint(ckpt_path, {"head": head.state_dict(), "optimizer": opt.state_dict(), "history": history,
                                    "epoch": history[-1]["epoch"]}, config=asdict(cfg))

    if not history:  # epoch 0: the loaded head, before any refitting (checkpointed: the embeddings are now cached)
        history.append({"epoch": 0, "loss": None, "val": head_accuracy(head, val_emb, val_labels, cfg.snrs, channel,
                                                                        seed=cfg.seed + 1)})
        checkpoint()
    y_all = {k: v.repeat(emb.shape[0]) for k, v in labels.items()}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, desc="attributes head", unit="epoch")
    for epoch in range(start, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        x_all = _received(emb, cfg.snrs, channel, gen)  # fresh channel noise every epoch
        perm = torch.randperm(n, generator=gen)
        total_loss = 0.0
        for j in range(steps_per_epoch):
            idx = perm[j * cfg.batch_size: (j + 1) * cfg.batch_size]
            set_lr(opt, lr_at(epoch * steps_per_epoch + j, lr=cfg.lr, warmup_steps=0, total_steps=total))
            logits = head(x_all[idx][:, None, :].to(dev))
            loss = sum(F.cross_entropy(v, y_all[k][idx].to(dev), ignore_index=-100)
                       for k, v in logits.items() if bool((y_all[k][idx] != -100).any()))
            opt.zero_grad(set_to_none=True)
            if isinstance(loss, torch.Tensor):  # a batch with no labelled attribute adds nothing
                loss.backward()
                opt.step()
                total_loss += float(loss.detach()) * len(idx)
        acc = head_accuracy(head, val_emb, val_labels, cfg.snrs, channel, seed=cfg.seed + 1)
        history.append({"epoch": epoch + 1, "loss": round(total_loss / n, 5), "val": acc})
        checkpoint()
        if bar is not None:
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}",
                            val=" ".join(f"{s}:{a.get('shape_colour', 0):.2f}" for s, a in acc.items()))
            bar.update(1)
    if bar is not None:
        bar.close()
    head.eval()
    folder = g.save_pretrained(adapters_dir / g.card.name, dtype=torch.float16)
    seconds = time.time() - t0
    log = {"config": asdict(cfg), "history": history, "seconds": round(seconds, 1)}
    rows = [("card", g.card.name), ("data", f"synthetic train split, {cfg.n_train} clips x {len(cfg.snrs)} SNRs "
                                            f"({', '.join(f'{s:g}' for s in cfg.snrs)} dB), {cfg.channel}"),
            ("training", f"{cfg.epochs} epochs x {steps_per_epoch} steps of {cfg.batch_size}, AdamW lr {cfg.lr:g} "
                         f"cosine, weight decay {cfg.weight_decay:g}, init {cfg.init}, seed {cfg.seed}"),
            ("val shape+colour (refitted)", _fmt(history[-1]["val"])),
            ("wall time", f"{seconds:.0f} s")]
    rows.insert(2, ("val shape+colour (loaded head)", _fmt(history[0]["val"])))
    write_run(folder, log=log, readme=run_card(
        title=f"agent adapter `{g.card.name}` (attributes head refitted)",
        intro=[f"The adapters of `{g.card.name}` with its `attributes` head trained alone on received embeddings "
               "(genscom.agents.head_refit); the LoRA weights and every other module are the loaded ones."],
        rows=rows, command=command, api="genscom.agents.head_refit.refit_attribute_head(cfg)", config=asdict(cfg)))
    return {"history": history, "val": history[-1]["val"], "adapters": folder, "seconds": seconds,
            "out_dir": out_dir}


def _fmt(acc: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{s} dB: {a.get('shape_colour', float('nan')):.3f}" for s, a in acc.items())


__all__ = ["HeadRefitConfig", "head_accuracy", "refit_attribute_head"]
