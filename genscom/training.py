r"""One training core for every genscom trainer (mini tower, channel adapter, LLM agents, federated users).

What every trainer shares lives here once:

* **losses**: :func:`contrastive_loss`, the symmetric InfoNCE of CLIP / LiT,
  ``L = 1/2 [CE(s A B^T, P) + CE(s B A^T, P)]`` with ``P`` the row-normalised "same id" matrix
  (the identity when no ids are given);
* **schedule**: :func:`lr_at`, linear warm-up then cosine decay (or constant), and :func:`set_lr`;
* **optimiser groups**: :func:`decay_groups` (weight decay on matrices only);
* **seeded data order**: :class:`EpochSampler`, an epoch permutation drawn from the caller's generator;
* **caches** of derived data (embeddings): :func:`cached_tensors`;
* **checkpoints**: :func:`save_checkpoint` (atomic, fsynced) and :func:`load_checkpoint`
  (``weights_only`` load, stale temporary files removed, :func:`check_resumable` names the
  config fields that differ);
* **run records**: :func:`loss_curve`, :func:`run_card` (the README beside trained weights: what,
  how, the command and the config) and :func:`write_run` (README + ``train_log.json``, atomically;
  a hand-written README already there is kept and the card goes to ``RUN.md``);
* **output folders**: :func:`resolve_run_dir` (``runs/<name>-<timestamp>/`` by default, the newest
  such run for ``--resume``) and :func:`check_output_dir` (a folder holding trained weights is only
  written with ``--overwrite``: shipped weights are never replaced by a default run);
* **devices**: :func:`make_accelerator`, the `accelerate <https://huggingface.co/docs/accelerate>`_
  set-up every loop runs under (one CPU/GPU with ``python``, several with ``accelerate launch``).

Randomness is always passed in (``torch.Generator``); nothing here seeds a global RNG.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genscom.errors import BadFileError, OutputExistsError
from genscom.loading import MissingFileError, load_torch
from genscom.utils import atomic_torch_save, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

Schedule = Literal["cosine", "constant"]


# --------------------------------------------------------------------------- losses
def contrastive_loss(a: torch.Tensor, b: torch.Tensor, *, scale: torch.Tensor | float,
                     ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between ``a`` and ``b`` ``[B, d]`` (row ``i`` of each is a positive pair).

    Args:
        a, b: ``[B, d]`` embeddings (L2-normalised by the caller: the logits are ``scale * a b^T``).
        scale: logit multiplier ``s = 1 / temperature`` (a tensor keeps a learnable scale in the graph).
        ids: ``[B]`` optional ids; rows sharing an id are positives of each other (soft targets,
            e.g. two clips that drew the same caption string). ``None``: the identity.

    Returns:
        scalar loss, ``1/2 [CE(s a b^T, P) + CE(s b a^T, P)]``.

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        >>> bool(contrastive_loss(x, x, scale=20.0) < contrastive_loss(x, x.roll(1, 0), scale=20.0))
        True
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must both be [B, d] with the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = scale * a @ b.t()  # (B, B)
    if ids is None:
        target = torch.arange(len(a), device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    same = (ids[:, None] == ids[None, :]).to(logits.dtype)
    target = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


# --------------------------------------------------------------------------- schedule
def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
          schedule: Schedule = "cosine") -> float:
    """Learning rate of 0-based optimiser ``step``.

    Linear warm-up ``lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``; then
    ``"constant"`` keeps ``lr`` and ``"cosine"`` decays as
    ``low + (lr - low) (1 + cos(pi t)) / 2`` with ``low = min_lr_ratio * lr`` and
    ``t = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to ``[0, 1]``.

    Example:
        >>> lr_at(0, lr=1e-3, warmup_steps=10, total_steps=100)
        0.0001
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    low = lr * min_lr_ratio
    return low + 0.5 * (lr - low) * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def decay_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float, *,
                 exclude: Callable[[str], bool] = lambda name: False) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices and kernels (``dim >= 2``), none on biases, norms and ``exclude``\\ d names."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        (decay if p.dim() >= 2 and not exclude(name) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- data order
class EpochSampler:
    """Seeded data order: batches of a fresh permutation per epoch, drawn from the caller's generator.

    The first permutation is drawn at construction; a new one when the next batch would run
    past the end (the remainder of the epoch is dropped). Its state (permutation and cursor)
    goes into checkpoints with :meth:`state_dict`; the generator's own state is the caller's.

    Example:
        >>> s = EpochSampler(10, generator=torch.Generator().manual_seed(0))
        >>> len(s.next(4)), len(s.next(4)), len(s.next(4))
        (4, 4, 4)
    """

    def __init__(self, n: int, *, generator: torch.Generator) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive number of items, got {n!r}")
        self.n = n
        self.generator = generator
        self.perm = torch.randperm(n, generator=generator)
        self.cursor = 0

    def next(self, batch_size: int) -> torch.Tensor:
        """The next ``[batch_size]`` int64 item indices (no item twice within an epoch)."""
        if batch_size > self.n:
            raise ValueError(f"batch_size ({batch_size}) must be <= the {self.n} items")
        if self.cursor + batch_size > self.n:
            self.perm, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.cursor:self.cursor + batch_size]
        self.cursor += batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        perm = state["perm"]
        if not isinstance(perm, torch.Tensor) or perm.shape != (self.n,):
            raise ValueError(f"sampler state holds a permutation of shape {getattr(perm, 'shape', None)}, "
                             f"expected ({self.n},): the checkpoint was written for another data set")
        self.perm, self.cursor = perm, int(state["cursor"])


# --------------------------------------------------------------------------- checkpoints
def _plain(value: Any) -> Any:
    """``value`` in the form a config takes after ``to_dict``/``asdict``: dataclasses as dicts, tuples as lists
    (so that a tuple default and its list form, or a dataclass default and its dict, compare equal)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _with_defaults(saved: dict[str, Any], defaults: Any) -> dict[str, Any]:
    """``saved`` with the keys it lacks taken from ``defaults``, recursively into nested configs."""
    out = _plain(defaults)
    if not isinstance(out, dict):
        return saved
    for k, v in saved.items():
        out[k] = _with_defaults(v, out[k]) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_resumable(saved: dict[str, Any], now: dict[str, Any], *, free: "set[str] | frozenset[str]",
                    hint: str, defaults: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` when a checkpoint's config differs from the current one in a field
    that changes the run (fields in ``free`` may differ); the message names each field, both
    values, and ``hint`` says how to fix it. A field the saved config lacks (the trainer gained it
    after the checkpoint was written) counts as its value in ``defaults``, the value the old run had; so does
    a key that a nested config (a dict in the checkpoint, a dataclass or dict in ``defaults``) lacks."""
    saved = _with_defaults(saved, defaults or {})
    diff = sorted(k for k in now if k not in free and _plain(saved.get(k)) != _plain(now[k]))
    if diff:
        pairs = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in diff)
        raise ValueError(f"cannot resume: config field(s) differ from the checkpoint's ({pairs}); {hint}")


def remove_stale_temporaries(path: str | Path) -> int:
    """Delete the temporary files an interrupted atomic save of ``path`` left beside it; return how many."""
    path = Path(path)
    n = 0
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            n += 1
    if n:
        logger.info("removed %d stale temporary file(s) of %s", n, path)
    return n


def save_checkpoint(path: str | Path, state: dict[str, Any], *, config: dict[str, Any]) -> Path:
    """Write ``{**state, "config": config}`` atomically (temp file, fsync, rename)."""
    return atomic_torch_save({**state, "config": config}, path)


def load_checkpoint(path: str | Path, *, resume: bool, config: dict[str, Any], free: "set[str] | frozenset[str]",
                    hint: str = "use the same config, or start a new run without --resume",
                    defaults: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The checkpoint to continue from, or ``None`` for a fresh run.

    Removes stale temporary files of ``path`` first. With ``resume=False`` an existing checkpoint
    is left to be overwritten (logged). With ``resume=True`` the file must exist, load with
    ``weights_only=True``, and hold a ``config`` that matches ``config`` outside ``free``.

    Raises:
        FileNotFoundError: ``resume=True`` and there is no checkpoint.
        BadFileError: the file is not a genscom checkpoint (empty, truncated, a pickle, another format).
        ValueError: its config differs (:func:`check_resumable`; ``defaults`` stand in for the fields a
            checkpoint from before a field existed lacks, see :func:`config_defaults`).
    """
    path = Path(path)
    remove_stale_temporaries(path)
    if not resume:
        if path.is_file():
            logger.warning("%s exists and resume=False: starting a new run that will overwrite it", path)
        return None
    if not path.is_file():
        raise MissingFileError(f"resume=True but {str(path)!r} does not exist; train without --resume first, or "
                               "pass the folder of the run to continue")
    fix = "delete it and train without --resume (or resume another run's folder)"
    ckpt = load_torch(path, expected="a genscom training checkpoint (torch.save of tensors and a config)", fix=fix)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
        raise BadFileError(path, problem="holds no training config (it was not written by a genscom trainer)",
                           expected="a genscom training checkpoint", fix=fix)
    check_resumable(ckpt["config"], config, free=free, hint=hint, defaults=defaults)
    return ckpt


def config_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of a config dataclass (fields with a plain default or a default factory)."""
    import dataclasses

    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


# --------------------------------------------------------------------------- derived-data cache
def cached_tensors(path: str | Path | None, compute: Callable[[], dict[str, torch.Tensor]], *,
                   shapes: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Tensors from the cache file ``path``, else ``compute()`` them and cache them there (atomically).

    The file is read with ``weights_only=True``. A file that does not load, lacks a key of ``shapes``,
    or whose tensor ``k`` does not have ``shapes[k]`` rows is logged and recomputed (a cache is never
    trusted over the data it stands for). ``path=None``: no cache.
    """
    if path is not None and Path(path).is_file():
        try:
            blob = load_torch(path, expected="a genscom cache of tensors")
        except BadFileError as exc:  # empty, truncated, not a torch file, a pickle with code
            blob = None
            logger.warning("ignoring cache %s (%s)", path, exc.problem)
        ok = isinstance(blob, dict) and all(isinstance(blob.get(k), torch.Tensor) and blob[k].shape[0] == n
                                            for k, n in (shapes or {}).items())
        if ok:
            logger.info("loaded cached tensors %s", path)
            return blob  # type: ignore[return-value]
        logger.warning("ignoring cache %s (unexpected content); recomputing", path)
    out = compute()
    if path is not None:
        atomic_torch_save(out, path)
    return out


def default_cache_dir() -> Path:
    """Root of genscom's caches of derived data: ``$GENSCOM_CACHE``, else ``~/.cache/genscom``."""
    return Path(os.environ.get("GENSCOM_CACHE") or Path("~/.cache/genscom").expanduser())


# --------------------------------------------------------------------------- run records
def loss_curve(losses: list[float], every: int) -> list[float]:
    """Mean loss of each window of ``every`` steps (the ``losses_every_log_step`` of ``train_log.json``)."""
    return [round(sum(losses[i - every:i]) / every, 4) for i in range(every, len(losses) + 1, every)]


RUN_CARD_MARK = "<!-- genscom run card: the next run written into this folder rewrites it -->"


def run_card(*, title: str, intro: list[str], rows: list[tuple[str, str]], command: str | None,
             api: str, config: dict[str, Any]) -> str:
    """The ``README.md`` written beside trained weights: title, what it is, a table of how it was made,
    the command that made it (``api`` when it came from Python) and the full config; its last line
    is :data:`RUN_CARD_MARK` (how :func:`write_run` tells its own cards from hand-written READMEs)."""
    lines = [f"# {title}", "", *intro, "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows],
             "", "## Command", "", "```", command or f"(python API) {api}", "```",
             "", "## Config", "", "```json", json.dumps(config, indent=2), "```", "", RUN_CARD_MARK, ""]
    return "\n".join(lines)


def write_run(folder: str | Path, *, log: dict[str, Any], readme: str) -> Path:
    """Write ``train_log.json`` and the run card into ``folder`` (each atomically); return the card's path.

    The card goes to ``README.md`` unless the folder already holds a README that is not a run
    card (e.g. the curated README of shipped weights): that one is kept and the card goes to ``RUN.md``.
    """
    folder = Path(folder)
    atomic_write_json(folder / "train_log.json", log)
    target = folder / "README.md"
    if target.is_file() and RUN_CARD_MARK not in target.read_text(encoding="utf-8", errors="replace"):
        target = folder / "RUN.md"
        logger.warning("kept %s/README.md; this run's card is %s", folder, target)
    atomic_write_text(target, readme)
    return target


# --------------------------------------------------------------------------- output folders
RUNS_ROOT = Path("runs")
_STAMP = re.compile(r"-\d{8}-\d{6}(-\d+)?$")


def new_run_dir(prefix: str, *, root: str | Path = RUNS_ROOT) -> Path:
    """A fresh ``<root>/<prefix>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... appended if taken); not created."""
    base = Path(root) / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def latest_run_dir(prefix: str, *, root: str | Path = RUNS_ROOT, holding: str = "checkpoint.pt") -> Path | None:
    """The newest ``<root>/<prefix>-<timestamp>`` folder that holds ``holding`` (by that file's mtime), or ``None``."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [d for d in root.iterdir() if d.name.startswith(prefix + "-") and _STAMP.fullmatch(d.name[len(prefix):])
             and (d / holding).is_file()]
    return max(found, key=lambda d: (d / holding).stat().st_mtime_ns, default=None)


def resolve_run_dir(explicit: str | Path | None, prefix: str, *, resume: bool, root: str | Path = RUNS_ROOT,
                    holding: str = "checkpoint.pt", flag: str = "--output-dir") -> Path:
    """Where a training run writes: ``explicit`` if given; else with ``resume`` the newest earlier
    ``<root>/<prefix>-<timestamp>`` holding a checkpoint; else a new timestamped folder (:func:`new_run_dir`).

    Raises:
        MissingFileError: ``resume`` without ``explicit`` and no earlier run to continue.
    """
    if explicit:
        return Path(explicit)
    if resume:
        found = latest_run_dir(prefix, root=root, holding=holding)
        if found is None:
            raise MissingFileError(f"--resume: no earlier run {str(Path(root) / (prefix + '-<timestamp>'))!r} holds "
                                   f"a {holding}; pass the run's folder with {flag}, or train without --resume")
        logger.info("resuming the newest run %s", found)
        return found
    return new_run_dir(prefix, root=root)


def weight_files(folder: str | Path) -> list[Path]:
    """The ``*.safetensors`` files in ``folder`` and in its direct subfolders (e.g. one adapter per card), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.safetensors"), *folder.glob("*/*.safetensors")])


def check_output_dir(folder: str | Path, *, overwrite: bool, flag: str = "--output-dir",
                     resuming: bool = False) -> None:
    """Refuse to write trained weights into ``folder`` when it already holds some, unless ``overwrite``
    (or ``resuming`` the run that wrote them). Called before any data preparation.

    Raises:
        OutputExistsError: naming the folder, a weights file in it, and the two ways out.
    """
    files = weight_files(folder)
    if files and not overwrite and not resuming:
        raise OutputExistsError(f"{str(folder)!r} already holds trained weights ({files[0].relative_to(folder)}"
                                f"{f' and {len(files) - 1} more' if len(files) > 1 else ''}); pass --overwrite to "
                                f"replace them (a README there is kept), or choose another {flag}")


# --------------------------------------------------------------------------- devices
_MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def check_launch(environ: Mapping[str, str] | None = None) -> None:
    """Refuse the launch that silently runs one process: ``accelerate launch --cpu --num_processes N``.

    accelerate starts CPU processes only through MPI (``--mpirun_hostfile``); without it, ``--cpu``
    runs the script once, with ``MASTER_ADDR`` set but no ``WORLD_SIZE``. Several CPU processes
    (gloo) come from ``accelerate launch --multi_gpu --num_processes N`` on a machine without a
    visible GPU (``CUDA_VISIBLE_DEVICES=``) and genscom's ``device="cpu"``.

    Raises:
        ValueError: naming the launch and the command that works.
    """
    env = os.environ if environ is None else environ
    if (env.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1") and "MASTER_ADDR" in env
            and "WORLD_SIZE" not in env and not any(k in env for k in _MPI_SIZE_VARS)):
        raise ValueError("`accelerate launch --cpu --num_processes N` runs a single process unless MPI is set up "
                         "(--mpirun_hostfile); for N CPU processes (gloo) run `CUDA_VISIBLE_DEVICES= accelerate "
                         "launch --multi_gpu --num_processes N ...` with --device cpu, or drop --num_processes")


def make_accelerator(device: str, *, mixed_precision: Literal["no", "bf16", "fp16"] = "no",
                     grad_accum: int = 1, find_unused_parameters: bool = False) -> Any:
    """The ``accelerate.Accelerator`` a training loop runs under.

    ``device="cpu"`` forces the CPU; ``"auto"`` lets accelerate pick (the GPU of this process
    under ``accelerate launch``); ``"cuda"`` requires one. Under ``accelerate launch`` with several
    processes the model is wrapped in ``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs);
    ``find_unused_parameters=True`` lets a step leave some trainable parameters without a gradient
    (heads outside the loss), which DDP otherwise refuses at the second step. See :func:`check_launch`.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    device = str(device)
    if device not in ("cpu", "auto") and not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu', 'auto' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is visible; use device='cpu' or 'auto'")
    check_launch()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum,
                       kwargs_handlers=handlers)


__all__ = [
    "RUNS_ROOT", "RUN_CARD_MARK", "EpochSampler", "cached_tensors", "check_launch", "check_output_dir",
    "check_resumable", "config_defaults",
    "contrastive_loss", "decay_groups", "default_cache_dir", "latest_run_dir", "load_checkpoint", "loss_curve", "lr_at", "make_accelerator",
    "new_run_dir", "remove_stale_temporaries", "resolve_run_dir", "run_card", "save_checkpoint", "set_lr",
    "weight_files", "write_run",
]
