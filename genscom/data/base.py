"""The clip-caption interface every genscom dataset follows.

A dataset is a list of items; each item is a short clip (``T`` frames, ``T = 1``
for images) with one or more captions. Benchmarks use three calls only:

* ``len(ds)`` and ``ds[i] -> ClipItem`` (``torch.utils.data.Dataset`` compatible,
  batch them with :func:`collate_clips`);
* ``ds.all_captions() -> (captions, item_index)``: every caption once, with the
  index of the item it describes (the retrieval ground truth);
* ``ds.stacked_frames(indices) -> uint8 [N, T, H, W, 3]`` for fixed-size datasets.

Datasets are built by name with :func:`create_dataset` (``"synthetic"`` is the
offline default); :func:`list_datasets` lists the names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from genscom._registry import Registry

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")



@dataclass(frozen=True)
class CaptionIndex:
    """The captions of a dataset as unique strings and a per-item CSR list (what contrastive trainers sample from).

    Attributes:
        unique: the distinct caption strings, in first-occurrence order.
        first_row: ``[len(unique)]`` int64, the row of ``all_captions()`` where each string first occurs.
        offsets: ``[n_items + 1]`` int64; item ``i`` owns ``ids[offsets[i]:offsets[i + 1]]``.
        ids: ``[n_captions]`` int64 indices into ``unique``, grouped by item (in caption order within an item).
    """

    unique: list[str]
    first_row: torch.Tensor
    offsets: torch.Tensor
    ids: torch.Tensor


def caption_index(captions: Sequence[str], text_to_item: torch.Tensor, n_items: int) -> CaptionIndex:
    """Build a :class:`CaptionIndex` from ``all_captions()``-style ``captions [n]`` and ``text_to_item [n]``.

    Identical strings share one id, so a trainer never uses a caption as a negative of itself.

    Raises:
        ValueError: an item has no caption.

    Example:
        >>> caption_index(["a", "b", "a"], torch.tensor([0, 1, 1]), 2).ids.tolist()
        [0, 1, 0]
    """
    uid: dict[str, int] = {}
    first: list[int] = []
    for row, c in enumerate(captions):
        if c not in uid:
            uid[c] = len(uid)
            first.append(row)
    ids = torch.tensor([uid[c] for c in captions], dtype=torch.long)
    counts = torch.bincount(text_to_item, minlength=n_items)
    if len(counts) != n_items or bool((counts == 0).any()):
        raise ValueError(f"every one of the {n_items} items needs at least one caption (and text_to_item must "
                         f"index items 0..{n_items - 1})")
    offsets = torch.zeros(n_items + 1, dtype=torch.long)
    offsets[1:] = counts.cumsum(0)
    return CaptionIndex(unique=list(uid), first_row=torch.tensor(first, dtype=torch.long), offsets=offsets,
                        ids=ids[torch.argsort(text_to_item, stable=True)])

@dataclass
class ClipItem:
    """One item of a clip-caption dataset.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB frames (``T = 1`` for images).
        captions: one or more captions describing the clip.
        id: a stable identifier (unique within the dataset).
        attributes: optional structured description (e.g. the rendered shape and
            colour of a synthetic clip, the digit of a digits image).
    """

    frames: torch.Tensor
    captions: list[str]
    id: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_frames(self.frames, name=f"frames of item {self.id!r}")
        if not self.captions or not all(isinstance(c, str) and c.strip() for c in self.captions):
            raise ValueError(f"item {self.id!r} needs at least one non-empty caption, got {self.captions!r}")


@dataclass
class ClipBatch:
    """A batch made by :func:`collate_clips`.

    Attributes:
        frames: ``[B, T, H, W, 3]`` uint8.
        captions: ``B`` lists of captions.
        ids: ``B`` item ids.
        attributes: ``B`` attribute dicts.
    """

    frames: torch.Tensor
    captions: list[list[str]]
    ids: list[str]
    attributes: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ids)


def check_frames(frames: Any, *, name: str = "frames") -> torch.Tensor:
    """Raise ``TypeError``/``ValueError`` unless ``frames`` is a uint8 ``[T, H, W, 3]`` tensor."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8, got {frames.dtype}; convert with (x * 255).round().clamp(0, 255).to(torch.uint8)")
    if frames.dim() != 4 or frames.shape[-1] != 3 or min(frames.shape) == 0:
        raise ValueError(f"{name} must have shape [T, H, W, 3] with T, H, W > 0, got {tuple(frames.shape)}")
    return frames


def collate_clips(items: Sequence[ClipItem]) -> ClipBatch:
    """``DataLoader`` ``collate_fn``: stack frames to ``[B, T, H, W, 3]`` uint8.

    Raises ``ValueError`` if the items' frame shapes differ (pass ``num_frames`` and
    ``size`` to the dataset to make them equal).
    """
    if len(items) == 0:
        raise ValueError("collate_clips got an empty list of items")
    shapes = {tuple(it.frames.shape) for it in items}
    if len(shapes) != 1:
        raise ValueError(
            f"cannot stack clips of different shapes {sorted(shapes)}; build the dataset with fixed num_frames and size"
        )
    return ClipBatch(
        frames=torch.stack([it.frames for it in items]),
        captions=[list(it.captions) for it in items],
        ids=[it.id for it in items],
        attributes=[dict(it.attributes) for it in items],
    )


def check_split(split: Any, *, allowed: Sequence[str] = SPLITS, dataset: str = "dataset") -> str:
    if split not in allowed:
        raise ValueError(f"split={split!r} is not a split of {dataset}; allowed: {', '.join(allowed)}")
    return str(split)


class ClipCaptionDataset(ABC, torch.utils.data.Dataset):
    """Abstract clip-caption dataset (``torch.utils.data.Dataset`` compatible).

    Subclasses set ``name`` and implement ``__len__``, :meth:`load_frames` and
    :meth:`captions_of`; they call :meth:`_validate` once their item list is known.
    ``__getitem__``, :meth:`all_captions` and :meth:`stacked_frames` come for free.
    """

    name: str = "dataset"
    split: str = "test"

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load_frames(self, i: int) -> torch.Tensor:
        """Frames of item ``i``: uint8 ``[T, H, W, 3]``."""

    @abstractmethod
    def captions_of(self, i: int) -> list[str]:
        """Captions of item ``i`` (cheap: no frames are read)."""

    def id_of(self, i: int) -> str:
        return f"{self.name}-{self.split}-{i:06d}"

    def attributes_of(self, i: int) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ helpers
    def _index(self, i: Any) -> int:
        if isinstance(i, torch.Tensor) and i.numel() == 1:
            i = int(i)
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        n = len(self)
        if i < -n or i >= n:
            raise IndexError(f"index {i} out of range for {self.name} ({self.split}) with {n} items")
        return i % n

    def _validate(self, n_clips: int, n_caption_lists: int, *, fix: str) -> None:
        """Raise ``ValueError`` on an empty dataset or when clips and caption lists disagree."""
        if n_clips == 0:
            raise ValueError(f"dataset {self.name!r} (split {self.split!r}) has no items; {fix}")
        if n_clips != n_caption_lists:
            raise ValueError(
                f"dataset {self.name!r} (split {self.split!r}) has {n_clips} clips but {n_caption_lists} caption lists; "
                "every clip needs its own list of captions"
            )

    # --------------------------------------------------------------- public API
    def __getitem__(self, i: int) -> ClipItem:
        i = self._index(i)
        return ClipItem(frames=self.load_frames(i), captions=list(self.captions_of(i)), id=self.id_of(i),
                        attributes=self.attributes_of(i))

    def all_captions(self) -> tuple[list[str], torch.Tensor]:
        """Every caption once, in item order, with the index of its item.

        Returns:
            ``(captions, item_index)``: ``list[str]`` of length ``n_captions`` and an
            int64 tensor ``[n_captions]`` giving the item each caption describes.
        """
        caps: list[str] = []
        idx: list[int] = []
        for i in range(len(self)):
            c = self.captions_of(i)
            caps.extend(c)
            idx.extend([i] * len(c))
        return caps, torch.tensor(idx, dtype=torch.long)

    def stacked_frames(self, indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Frames of ``indices`` (all items by default) as uint8 ``[N, T, H, W, 3]``.

        Raises ``ValueError`` when items differ in shape (variable-size datasets).
        """
        if indices is None:
            idx = list(range(len(self)))
        else:
            idx = [self._index(int(j)) for j in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
        if not idx:
            raise ValueError("indices is empty; pass at least one item index (or None for all items)")
        frames = [self.load_frames(j) for j in idx]
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) != 1:
            raise ValueError(
                f"{self.name} items have different shapes {sorted(shapes)[:4]}; pass fixed num_frames and size to stack them"
            )
        return torch.stack(frames)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n_items={len(self)})"


DATASETS: Registry[type[ClipCaptionDataset]] = Registry("dataset")


def register_dataset(name: str):
    """Class decorator: ``@register_dataset("synthetic")``. Refuses duplicates."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    import genscom.data  # noqa: F401  (registers the built-in datasets)

    return DATASETS.names()


def create_dataset(name: str, *, split: str, **kwargs: Any) -> ClipCaptionDataset:
    """Build a registered dataset by name (``"synthetic"``, ``"digits"``, ``"msrvtt"``, ``"image-captions"``).

    Unknown names raise ``ValueError`` listing the known ones; ``kwargs`` go to the
    dataset's constructor.

    Example:
        >>> ds = create_dataset("synthetic", split="test", n_items=16)
        >>> ds[0].frames.shape
        torch.Size([8, 64, 64, 3])
    """
    import genscom.data  # noqa: F401  (registers the built-in datasets)

    return DATASETS.get(name)(split=split, **kwargs)
