"""Perception encoders: text + image/video towers sharing one embedding space.

``create_encoder(name)`` builds a profile (``"mini"`` is the offline default:
frozen all-MiniLM-L6-v2 text + genscom's trained image/video tower); every
encoder has ``encode_text``, ``encode_images``, ``encode_clips`` (meanP) and
``encode_frames``. ``genscom.encoders.train.train_encoder`` trains the mini tower
(locked-text tuning).
"""

from genscom.encoders.base import Encoder, ImagePreprocess
from genscom.encoders.registry import (
    DEFAULT_PROFILE,
    MINI_WEIGHTS_DIR,
    check_profile,
    create_encoder,
    list_profiles,
    register_profile,
)
from genscom.encoders.video import l2_normalize, mean_pool, sample_frame_indices, sample_frames

__all__ = [
    "DEFAULT_PROFILE",
    "MINI_WEIGHTS_DIR",
    "Encoder",
    "ImagePreprocess",
    "check_profile",
    "create_encoder",
    "l2_normalize",
    "list_profiles",
    "mean_pool",
    "register_profile",
    "sample_frame_indices",
    "sample_frames",
]
