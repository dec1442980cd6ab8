"""Clip-caption datasets; importing this package registers the built-in ones.

``create_dataset("synthetic", split="test")`` is the offline default; see
:mod:`genscom.data.base` for the interface.
"""

from genscom.data import captions, digits, msrvtt, synthetic  # noqa: F401  (registration)
from genscom.data.base import (
    DATASETS,
    CaptionIndex,
    ClipBatch,
    ClipCaptionDataset,
    ClipItem,
    collate_clips,
    caption_index,
    create_dataset,
    list_datasets,
    register_dataset,
)
from genscom.data.captions import ImageCaptionFolder
from genscom.data.digits import DigitsCaptions
from genscom.data.msrvtt import MSRVTT
from genscom.data.synthetic import SyntheticClips

__all__ = [
    "CaptionIndex",
    "ClipBatch",
    "ClipCaptionDataset",
    "ClipItem",
    "DATASETS",
    "DigitsCaptions",
    "ImageCaptionFolder",
    "MSRVTT",
    "SyntheticClips",
    "caption_index",
    "collate_clips",
    "create_dataset",
    "list_datasets",
    "register_dataset",
]
