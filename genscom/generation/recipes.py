"""``genscom train deepjscc`` and ``genscom train classifier``: the regeneration benchmark's two helpers.

* the **DeepJSCC** peer (:mod:`genscom.generation.deepjscc`), trained on the middle frames of the train split
  over AWGN at SNRs drawn from ``[snr_min_db, snr_max_db]``, at the semantic rows' channel-use budget;
* the **attribute classifier** (:mod:`genscom.generation.attributes`), trained on *real* train frames only.

Both read the same cached train frames as ``genscom train decoder`` (:func:`genscom.generation.train.prepare_data`),
write ``runs/<kind>-<timestamp>/`` by default (never over shipped weights without ``overwrite``), and leave a
run card (README) with the command and config beside the safetensors weights. They are short runs (minutes on
a CPU), so they are not resumable; a killed run leaves no weights (files are written atomically at the end).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class RecipeConfig:
    """Shared settings: ``n_items`` train clips of ``dataset`` (seed ``dataset_seed``), the run ``seed``, the
    output folder and, for DeepJSCC, its training (``steps``, ``batch_size``, ``lr``, SNR range, ``channel_uses``);
    for the classifier, ``epochs``."""

    n_items: int = 4000
    dataset: str = "synthetic"
    dataset_seed: int = 0
    profile: str = "mini-attr"  # only names the cached frame file shared with `train decoder`
    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    snr_min_db: float = -10.0
    snr_max_db: float = 20.0
    channel_uses: int = 192
    epochs: int = 16
    n_test: int = 1000  # real test frames the classifier is scored on
    output_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _frames(cfg: RecipeConfig) -> torch.Tensor:
    from genscom.generation.train import TrainDecoderConfig, prepare_data

    data = prepare_data(TrainDecoderConfig(profile=cfg.profile, dataset=cfg.dataset, n_items=cfg.n_items,
                                           dataset_seed=cfg.dataset_seed))
    return data.images                                                   # [N, 3, S, S] uint8


def _card(kind: str, out: Path, cfg: RecipeConfig, command: str | None, rows: list[tuple[str, str]],
          log: dict[str, Any]) -> None:
    from genscom.training import run_card, write_run

    readme = run_card(title=f"{kind} `{out.name}`",
                      intro=[f"Trained by genscom on {cfg.n_items} `{cfg.dataset}` train frames (seed {cfg.seed})."],
                      rows=rows, command=command, api=f"genscom.generation.recipes.train_{kind.lower()}",
                      config=cfg.to_dict())
    write_run(out, log=log, readme=readme)


def train_deepjscc_run(cfg: RecipeConfig, *, overwrite: bool = False, command: str | None = None,
                       progress: bool = True) -> Path:
    """Train DeepJSCC and write it (float32 safetensors + config + README) to the run folder; return it."""
    from genscom.generation.deepjscc import DeepJSCCConfig, TrainDeepJSCCConfig, train_deepjscc
    from genscom.training import check_output_dir, resolve_run_dir

    out = resolve_run_dir(cfg.output_dir, "deepjscc", resume=False)
    check_output_dir(out, overwrite=overwrite)
    train = TrainDeepJSCCConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, snr_min_db=cfg.snr_min_db,
                                snr_max_db=cfg.snr_max_db)
    images = _frames(cfg)
    mcfg = DeepJSCCConfig(image_size=int(images.shape[-1]), channel_uses=cfg.channel_uses,
                          extra={"dataset": cfg.dataset, "snr_db": [cfg.snr_min_db, cfg.snr_max_db],
                                 "steps": cfg.steps})
    t0 = time.perf_counter()
    model, losses = train_deepjscc(images, mcfg, train, generator=torch.Generator().manual_seed(cfg.seed),
                                   progress=progress)
    seconds = time.perf_counter() - t0
    model.save_pretrained(out)
    tail = losses[-min(100, len(losses)):]
    _card("DeepJSCC", out, cfg, command,
          [("architecture", f"Bourtsoulatze et al. 2019, {mcfg.n_down} stride-2 stages, c = {mcfg.latent_channels}"),
           ("channel uses", str(cfg.channel_uses)), ("training", f"{cfg.steps} steps x {cfg.batch_size}, AWGN "
                                                                   f"{cfg.snr_min_db:g}..{cfg.snr_max_db:g} dB"),
           ("final MSE (last 100 steps)", f"{sum(tail) / len(tail):.5f}"), ("seconds", f"{seconds:.0f}")],
          {"config": cfg.to_dict(), "seconds": round(seconds, 1), "losses_every_50": losses[::50]})
    return out


def train_classifier_run(cfg: RecipeConfig, *, overwrite: bool = False, command: str | None = None) -> Path:
    """Train the attribute classifier on real train frames, report its accuracy on ``n_test`` real test frames, and
    write it to the run folder; return it."""
    from genscom.data import create_dataset
    from genscom.generation.attributes import (AttributeClassifierConfig, attribute_accuracy, dataset_frames,
                                               largest_object_labels, train_attribute_classifier)
    from genscom.training import check_output_dir, resolve_run_dir

    out = resolve_run_dir(cfg.output_dir, "attr-classifier", resume=False)
    check_output_dir(out, overwrite=overwrite)
    train = create_dataset(cfg.dataset, split="train", n_items=cfg.n_items, seed=cfg.dataset_seed)
    test = create_dataset(cfg.dataset, split="test", n_items=cfg.n_test, seed=cfg.dataset_seed)
    t0 = time.perf_counter()
    clf = train_attribute_classifier(dataset_frames(train), largest_object_labels(train),
                                     AttributeClassifierConfig(epochs=cfg.epochs),
                                     generator=torch.Generator().manual_seed(cfg.seed))
    seconds = time.perf_counter() - t0
    acc = attribute_accuracy(clf, dataset_frames(test), largest_object_labels(test))
    clf.save_pretrained(out)
    _card("AttributeClassifier", out, cfg, command,
          [("trained on", f"{cfg.n_items} real train frames, {cfg.epochs} epochs"),
           (f"accuracy on {cfg.n_test} real test frames", ", ".join(f"{k} {v:.3f}" for k, v in acc.items())),
           ("seconds", f"{seconds:.0f}")],
          {"config": cfg.to_dict(), "seconds": round(seconds, 1), "test_accuracy": acc})
    return out


__all__ = ["RecipeConfig", "train_classifier_run", "train_deepjscc_run"]
