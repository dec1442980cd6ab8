"""Real-data check set: scikit-learn's 1,797 handwritten digits with captions.

Each 8x8 digit (UCI optical digits, shipped inside scikit-learn) is upsampled to
``size x size`` RGB, white ink on black, repeated over ``num_frames`` identical
frames, and captioned e.g. ``"a handwritten digit seven"`` / ``"the number 7
written by hand"``. The train/test split is a fixed seeded permutation.

Retrieval note: the ten classes share captions, so many clips match each query;
use it as a real-pixel sanity check, not as a retrieval benchmark.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genscom.data.base import ClipCaptionDataset, check_split, register_dataset

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEMPLATES = (
    "a handwritten digit {w}",
    "the number {d} written by hand",
    "a hand-drawn {d}",
    "an image of the handwritten numeral {w}",
    "a white handwritten {w} on a black background",
)


def digit_captions(digit: int) -> list[str]:
    """All caption paraphrases for ``digit`` (0-9), fixed order."""
    return [t.format(w=DIGIT_WORDS[digit], d=digit) for t in _TEMPLATES]


@register_dataset("digits")
class DigitsCaptions(ClipCaptionDataset):
    """scikit-learn ``load_digits`` as a clip-caption dataset.

    Args:
        split: ``"train"`` or ``"test"``.
        test_fraction: share of the 1,797 digits in the test split (0 < f < 1).
        seed: seed of the split permutation (same seed -> same split).
        size: frame side in pixels (bilinear upsampling from 8x8).
        num_frames: identical frames per item ``T`` (default 1).
        n_captions: captions per item (1..5); default 5 for train, 2 for test.
        n_items: keep only the first ``n_items`` digits of the split (quick runs).

    Items: ``frames`` uint8 ``[T, size, size, 3]``; ``attributes = {"digit": int, "source_index": int}``.
    """

    name = "digits"

    def __init__(self, split: str = "train", *, test_fraction: float = 0.25, seed: int = 0, size: int = 64,
                 num_frames: int = 1, n_captions: int | None = None, n_items: int | None = None) -> None:
        self.split = check_split(split, dataset=self.name)
        if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
            raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
        for arg, val, lo in (("size", size, 8), ("num_frames", num_frames, 1)):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ValueError(f"{arg} must be an int >= {lo}, got {val!r}")
        if n_items is not None and (not isinstance(n_items, int) or isinstance(n_items, bool) or n_items < 1):
            raise ValueError(f"n_items must be a positive int or None, got {n_items!r}")
        n_captions = (2 if self.split == "test" else len(_TEMPLATES)) if n_captions is None else n_captions
        if not isinstance(n_captions, int) or not 1 <= n_captions <= len(_TEMPLATES):
            raise ValueError(f"n_captions must be an int in 1..{len(_TEMPLATES)} or None, got {n_captions!r}")
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
            raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from exc
        data = load_digits()
        images = np.asarray(data.images, dtype=np.float32)  # [1797, 8, 8], 0..16
        targets = np.asarray(data.target, dtype=np.int64)
        perm = np.random.default_rng(seed).permutation(len(images))
        n_test = int(round(float(test_fraction) * len(images)))
        chosen = perm[:n_test] if self.split == "test" else perm[n_test:]
        self.indices = np.sort(chosen)[:n_items]
        self.seed, self.size, self.num_frames, self.n_captions = seed, size, num_frames, n_captions
        self.labels = targets[self.indices]
        self._validate(len(self.indices), len(self.labels), fix="choose test_fraction so that both splits are non-empty")
        x = torch.from_numpy(images[self.indices] / 16.0).unsqueeze(1)  # [N, 1, 8, 8] in 0..1
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        self._frames = (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0]  # [N, size, size]

    def __len__(self) -> int:
        return len(self.indices)

    def load_frames(self, i: int) -> torch.Tensor:
        img = self._frames[i]
        return img[None, :, :, None].expand(self.num_frames, self.size, self.size, 3).contiguous()

    def captions_of(self, i: int) -> list[str]:
        d = int(self.labels[i])
        caps = digit_captions(d)
        if self.split == "test":
            return caps[: self.n_captions]
        # rotate the paraphrases per item so that n_captions < 5 still sees every template
        k = i % len(caps)
        return (caps[k:] + caps[:k])[: self.n_captions]

    def attributes_of(self, i: int) -> dict[str, Any]:
        return {"digit": int(self.labels[i]), "source_index": int(self.indices[i])}

    def id_of(self, i: int) -> str:
        return f"digits-{int(self.indices[i]):04d}"
