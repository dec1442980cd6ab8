r"""An attribute classifier for regenerated frames: the shape and colour of the largest object, and the count.

``genscom bench regen`` scores a regenerated image by what it *means*: does it show the source frame's largest
object with the right shape and colour (and the right number of objects)? A small CNN trained on *real*
train-split frames of the procedural dataset reads those attributes; its accuracy on real test frames
(:func:`attribute_accuracy`) is the ceiling the regenerated images are measured against.

Labels (:func:`largest_object_labels`) come from the dataset's cached metadata (the ``"objects"`` layout
:func:`genscom.data.synthetic.plan_item` records), no re-rendering:

* **largest object**: the largest radius ``r``; a tie (two groups of the same size class) goes to the larger
  drawn area, ``AREA_FACTOR[shape] * r^2`` (a circle covers more pixels than a star of the same radius), so the
  rule is visible in the pixels; groups in one clip never share a shape, so no tie is left (the first object
  in layout order would win one). Objects never overlap and never leave the frame, and rotation keeps the
  area, so the label is the same in every frame of a clip.
* **count**: the number of objects in the clip, ``1..MAX_COUNT``, class ``count - 1``.

Images are float ``[B, 3, S, S]`` in ``[0, 1]`` with ``S = config.image_size`` (default 64, the frame size);
use :func:`resize_frames` for other sizes and :func:`dataset_frames` to take one frame per clip of a dataset.

Example (a tiny random classifier)::

    >>> import torch
    >>> from genscom.generation.attributes import AttributeClassifier, AttributeClassifierConfig
    >>> clf = AttributeClassifier(AttributeClassifierConfig(image_size=32, channels=(8, 16), hidden=16))
    >>> pred = clf.predict(torch.rand(2, 3, 32, 32))
    >>> sorted(pred), tuple(pred["shape"].shape)
    (['colour', 'count', 'shape'], (2,))
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
import torch.nn.functional as F
from torch import nn

from genscom.data.synthetic import COLOURS, COUNT_WORDS, SHAPES
from genscom.utils import check_positive_ints

logger = logging.getLogger(__name__)

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
MAX_COUNT = max(COUNT_WORDS)  # clips hold 1..3 objects
# Drawn area of each shape at radius 1 (pixels per r^2), measured from genscom.data.synthetic._shape_sdf;
# breaks radius ties (see the module docstring). A test checks these against the renderer.
AREA_FACTOR: dict[str, float] = {"circle": 3.142, "square": 2.434, "triangle": 1.630, "star": 1.690,
                                 "ring": 2.533, "cross": 2.204}
LABEL_KEYS = ("shape", "colour", "count")


# ----------------------------------------------------------------------------- labels and frames
def _largest(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest object: max radius, then max drawn area; the first in layout order on a full tie."""
    best, best_key = objects[0], None
    for o in objects:
        key = (round(float(o["r"]), 3), AREA_FACTOR[o["shape"]])
        if best_key is None or key > best_key:
            best, best_key = o, key
    return best


def largest_object_labels(dataset: Any, frame_index: int | None = None) -> dict[str, torch.Tensor]:
    """Labels of every item of ``dataset`` read from its metadata: ``{"shape", "colour", "count"}``, each int64 ``[N]``.

    ``shape`` indexes :data:`SHAPES`, ``colour`` indexes :data:`COLOUR_NAMES`, ``count`` is the number of
    objects minus one (``0..MAX_COUNT-1``). ``frame_index`` (default: the middle frame ``T // 2``) only has to be
    a frame of the clip: the labels are the same in every frame (objects keep their size, never overlap and
    never leave the frame).

    Raises:
        ValueError: ``frame_index`` out of range, or a dataset whose attributes hold no object layout
            (only the procedural ``synthetic`` dataset records one).
    """
    n_frames = int(getattr(dataset, "num_frames", 1))
    if frame_index is not None and (isinstance(frame_index, bool) or not isinstance(frame_index, int)
                                    or not 0 <= frame_index < n_frames):
        raise ValueError(f"frame_index must be an int in 0..{n_frames - 1} (or None for the middle frame), "
                         f"got {frame_index!r}")
    shapes, colours, counts = [], [], []
    for i in range(len(dataset)):
        attrs = dataset.attributes_of(i)
        objects = attrs.get("objects") if isinstance(attrs, dict) else None
        if not objects:
            raise ValueError(f"item {i} of dataset {getattr(dataset, 'name', type(dataset).__name__)!r} has no "
                             "object layout (attributes['objects']); attribute labels need the procedural "
                             "'synthetic' dataset")
        big = _largest(objects)
        shapes.append(SHAPES.index(big["shape"]))
        colours.append(COLOUR_NAMES.index(big["colour"]))
        n = len(objects)
        if not 1 <= n <= MAX_COUNT:
            raise ValueError(f"item {i} holds {n} objects; the classifier counts 1..{MAX_COUNT}")
        counts.append(n - 1)
    return {"shape": torch.tensor(shapes, dtype=torch.long), "colour": torch.tensor(colours, dtype=torch.long),
            "count": torch.tensor(counts, dtype=torch.long)}


def dataset_frames(dataset: Any, frame_index: int | None = None) -> torch.Tensor:
    """One frame per item: float ``[N, 3, H, W]`` in ``[0, 1]`` (default the middle frame ``T // 2``)."""
    frames = dataset.stacked_frames()                                     # [N, T, H, W, 3] uint8
    t = frames.shape[1] // 2 if frame_index is None else frame_index
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < frames.shape[1]:
        raise ValueError(f"frame_index must be an int in 0..{frames.shape[1] - 1} (or None for the middle frame), "
                         f"got {frame_index!r}")
    return frames[:, t].permute(0, 3, 1, 2).float().div(255.0).contiguous()


def resize_frames(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images [B, 3, H, W]`` resized to ``[B, 3, size, size]`` (bilinear, antialiased, clamped to ``[0, 1]``)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be float [B, 3, H, W], got {tuple(getattr(images, 'shape', ()))}")
    if tuple(images.shape[2:]) == (size, size):
        return images.float()
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- the classifier
@dataclass
class AttributeClassifierConfig:
    """Architecture and training settings of :class:`AttributeClassifier`.

    ``channels``: conv widths, one stage (two 3x3 convs, BatchNorm, ReLU, 2x2 max-pool) each; the last map is
    max-pooled over all positions (an object is recognised wherever it sits, and its size is in the
    features of the deepest, widest-field layer); ``hidden``: width of the shared layer feeding the three heads.
    Training: ``epochs`` over the data with Adam at ``lr`` (cosine decay to ``0.1 lr``), ``batch_size``
    frames per step, random flips and transposes (``flip``: the labels do not change under the 8 symmetries
    of the square).
    """

    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    hidden: int = 128
    n_shapes: int = len(SHAPES)
    n_colours: int = len(COLOURS)
    n_counts: int = MAX_COUNT
    epochs: int = 16  # 4000 64-px frames: attr_acc 0.91 on the 1000 test frames (0.75 after 8 epochs)
    batch_size: int = 64
    lr: float = 2e-3
    flip: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # provenance (dataset, n_items, test accuracy)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        check_positive_ints(self, ("image_size", "hidden", "n_shapes", "n_colours", "n_counts", "epochs", "batch_size"),
                            owner="AttributeClassifierConfig")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"AttributeClassifierConfig.channels must be positive widths, got {self.channels}")
        if self.image_size < 2 ** len(self.channels):
            raise ValueError(f"AttributeClassifierConfig.image_size={self.image_size} is too small for "
                             f"{len(self.channels)} pooling stages; use image_size >= {2 ** len(self.channels)} "
                             "or fewer channels")
        if not (math.isfinite(float(self.lr)) and float(self.lr) > 0):
            raise ValueError(f"AttributeClassifierConfig.lr must be a positive number, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AttributeClassifierConfig":
        from genscom.utils import config_from_dict

        return config_from_dict(cls, d)


class AttributeClassifier(nn.Module):
    """Small CNN reading a frame's largest object (shape, colour) and its object count.

    ``forward(images [B, 3, S, S] float in [0, 1]) -> {"shape": [B, n_shapes], "colour": [B, n_colours],
    "count": [B, n_counts]}`` logits; :meth:`predict` returns the arg-max class ids (int64 ``[B]``).
    """

    def __init__(self, config: AttributeClassifierConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = []
        cin = 3
        for cout in c.channels:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(),    # (B, channels[-1])
                                      nn.Linear(cin, c.hidden), nn.ReLU())
        self.heads = nn.ModuleDict({"shape": nn.Linear(c.hidden, c.n_shapes),
                                    "colour": nn.Linear(c.hidden, c.n_colours),
                                    "count": nn.Linear(c.hidden, c.n_counts)})

    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` as float ``[B, 3, S, S]``, else ``ValueError`` naming the fix."""
        s = self.config.image_size
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 or images.is_complex():
            raise ValueError(f"images must be a float tensor [B, 3, {s}, {s}] in [0, 1] (channels first), got "
                             f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}; frames stored "
                             "[B, H, W, 3] uint8 need .permute(0, 3, 1, 2).float() / 255")
        if tuple(images.shape[2:]) != (s, s):
            raise ValueError(f"images are {images.shape[2]}x{images.shape[3]} but this classifier reads {s}x{s}; "
                             f"resize them with genscom.generation.attributes.resize_frames(images, {s})")
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch; pass at least one frame")
        if not images.is_floating_point():
            raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}; divide uint8 frames by 255")
        return images.float()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(self.check_images(images) * 2.0 - 1.0)          # (B, hidden)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Class ids ``{"shape", "colour", "count"}``, int64 ``[B]`` each (eval mode, batched)."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        out: dict[str, list[torch.Tensor]] = {k: [] for k in LABEL_KEYS}
        self.check_images(images)
        for i in range(0, images.shape[0], batch_size):
            logits = self(images[i:i + batch_size].to(dev))
            for k in LABEL_KEYS:
                out[k].append(logits[k].argmax(dim=-1).cpu())
        self.train(was)
        return {k: torch.cat(v) for k, v in out.items()}

    # -- files ---------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> Path:
        """``model.safetensors`` + ``config.json`` (``{"attribute_classifier": ...}``), each written atomically."""
        from genscom.pretrained import save_module_folder

        return save_module_folder(self, folder, key="attribute_classifier", config=self.config.to_dict(),
                                  extra_config={"shapes": list(SHAPES), "colours": list(COLOUR_NAMES)}, dtype=dtype)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *, device: str | torch.device = "cpu"
                        ) -> "AttributeClassifier":
        """Load a folder written by :meth:`save_pretrained`; broken files raise genscom's file errors naming them."""
        from genscom.pretrained import load_module_folder

        model, _ = load_module_folder(
            folder, key="attribute_classifier", build=lambda d: cls(AttributeClassifierConfig.from_dict(d)),
            what="attribute classifier", device=device,
            fix="pass a folder written by AttributeClassifier.save_pretrained (or retrain it)")
        return model


# ----------------------------------------------------------------------------- training and evaluation
def _check_labels(images: torch.Tensor, labels: dict[str, torch.Tensor], config: AttributeClassifierConfig) -> None:
    if not isinstance(labels, dict) or any(k not in labels for k in LABEL_KEYS):
        raise ValueError(f"labels must be a dict with keys {list(LABEL_KEYS)} (see largest_object_labels), got "
                         f"{sorted(labels) if isinstance(labels, dict) else type(labels).__name__}")
    n = images.shape[0]
    limits = {"shape": config.n_shapes, "colour": config.n_colours, "count": config.n_counts}
    for k in LABEL_KEYS:
        y = labels[k]
        if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.dtype != torch.long:
            raise ValueError(f"labels[{k!r}] must be int64 [{n}] (one per image), got "
                             f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
        if n and (int(y.min()) < 0 or int(y.max()) >= limits[k]):
            raise ValueError(f"labels[{k!r}] must lie in 0..{limits[k] - 1}, got {int(y.min())}..{int(y.max())}")


def train_attribute_classifier(train_images: torch.Tensor, labels: dict[str, torch.Tensor],
                               config: AttributeClassifierConfig | None = None, *,
                               generator: torch.Generator) -> AttributeClassifier:
    """Train a fresh :class:`AttributeClassifier` on real frames and return it in eval mode.

    Args:
        train_images: float ``[N, 3, S, S]`` in ``[0, 1]`` (e.g. :func:`dataset_frames` of the train split).
        labels: :func:`largest_object_labels` of the same items.
        config: architecture and training settings (default :class:`AttributeClassifierConfig`).
        generator: the only randomness (initial weights, data order, flips); the same generator state gives
            the same classifier.

    Loss: the sum of the three heads' cross-entropies; Adam, cosine decay to ``0.1 lr``
    (:func:`genscom.training.lr_at`), data order from :class:`genscom.training.EpochSampler`.
    """
    from genscom.training import EpochSampler, lr_at, set_lr

    config = config or AttributeClassifierConfig()
    model = AttributeClassifier(config)
    train_images = model.check_images(train_images)
    _check_labels(train_images, labels, config)
    n = train_images.shape[0]
    with torch.no_grad():  # initial weights from the caller's generator (He normal), not the global RNG
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                m.bias.zero_()
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total = config.epochs * steps_per_epoch
    sampler = EpochSampler(n, generator=generator)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    for step in range(total):
        set_lr(opt, lr_at(step, lr=config.lr, warmup_steps=min(50, total // 10 + 1), total_steps=total,
                          min_lr_ratio=0.1))
        idx = sampler.next(batch)
        x = train_images[idx]
        if config.flip:
            fx = torch.rand(batch, generator=generator) < 0.5
            fy = torch.rand(batch, generator=generator) < 0.5
            x = torch.where(fx.view(-1, 1, 1, 1), x.flip(3), x)
            x = torch.where(fy.view(-1, 1, 1, 1), x.flip(2), x)
            ft = torch.rand(batch, generator=generator) < 0.5  # with the flips: all 8 symmetries of the square
            x = torch.where(ft.view(-1, 1, 1, 1), x.transpose(2, 3), x)
        logits = model(x)
        loss = sum(F.cross_entropy(logits[k], labels[k][idx]) for k in LABEL_KEYS)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        if (step + 1) % steps_per_epoch == 0:
            logger.info("attribute classifier epoch %d/%d: loss %.3f", (step + 1) // steps_per_epoch,
                        config.epochs, float(loss.detach()))
    return model.eval()


def attribute_accuracy(classifier: AttributeClassifier, images: torch.Tensor,
                       labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy of ``classifier`` on ``images [N, 3, S, S]`` against ``labels`` (:func:`largest_object_labels`).

    Returns ``{"shape_acc", "colour_acc", "attr_acc", "count_acc"}`` in ``[0, 1]``; ``attr_acc`` counts an
    image right when the largest object's shape *and* colour are both right (the regen benchmark's metric).
    """
    images = classifier.check_images(images)
    _check_labels(images, labels, classifier.config)
    pred = classifier.predict(images)
    ok = {k: pred[k] == labels[k] for k in LABEL_KEYS}
    return {"shape_acc": float(ok["shape"].float().mean()), "colour_acc": float(ok["colour"].float().mean()),
            "attr_acc": float((ok["shape"] & ok["colour"]).float().mean()),
            "count_acc": float(ok["count"].float().mean())}


__all__ = ["AREA_FACTOR", "COLOUR_NAMES", "LABEL_KEYS", "MAX_COUNT", "SHAPES", "AttributeClassifier",
           "AttributeClassifierConfig", "attribute_accuracy", "dataset_frames", "largest_object_labels",
           "resize_frames", "train_attribute_classifier"]
