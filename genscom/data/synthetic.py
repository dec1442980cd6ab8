"""The offline default dataset: procedurally rendered clips with compositional captions.

Each clip shows one or two groups of objects (1-3 objects in all) on a background.
A group has a shape, a colour, a count, a size and a motion; the captions describe
them all, e.g. ``"two small red circles moving left on a blue background"`` or
``"a clip of a large green square rising over stripes"``. Everything is drawn
from the attributes, so every caption is recoverable from the pixels.

Determinism: item ``i`` of split ``s`` is drawn from
``numpy.random.default_rng([seed, SPLIT_STREAM[s], i])`` alone, so the train, val
and test splits come from disjoint random streams (``val`` is for monitoring training), and the same ``(seed, split, i)``
gives the same frames and captions on every machine.

Frames are rendered with numpy (signed-distance shapes with a one-pixel
anti-aliased edge) and cached on first use as a compressed ``.npz`` (plus a JSON
of captions and attributes) under ``cache_dir`` (default ``$GENSCOM_CACHE/datasets/synthetic``
or ``~/.cache/genscom/datasets/synthetic``), keyed by every parameter and
:data:`GENERATOR_VERSION`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genscom.data.base import ClipCaptionDataset, check_split, register_dataset
from genscom.loading import read_json
from genscom.utils import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever rendering or captions change (invalidates caches)
SPLIT_STREAM = {"train": 1, "test": 2, "val": 3}  # disjoint random streams per split
DEFAULT_N_ITEMS = {"train": 3000, "test": 1000, "val": 200}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
# Object colours: saturated, far apart in RGB.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 225, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "purple": (140, 50, 200),
    "pink": (255, 120, 200),
    "white": (250, 250, 250),
}
# Plain background colours (a background never shares or resembles an object's colour).
PLAIN_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
    "white": (250, 250, 250),
    "blue": (30, 70, 230),
    "green": (30, 170, 50),
    "red": (220, 30, 30),
}
TEXTURED_BACKGROUNDS: tuple[str, ...] = ("striped", "checkered", "gradient")
BACKGROUNDS: tuple[str, ...] = tuple(PLAIN_BACKGROUNDS) + TEXTURED_BACKGROUNDS
# Colour pairs too close to share a clip as object/background.
_SIMILAR = {("red", "orange"), ("red", "pink"), ("orange", "yellow"), ("blue", "purple"), ("purple", "pink"),
            ("white", "yellow")}
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "rotating", "static")
SIZES: tuple[str, ...] = ("small", "large")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_ROT_SYMMETRIC = {"circle", "ring"}  # rotation is invisible for these
_SYMMETRY = {"square": 4, "triangle": 3, "star": 5, "cross": 4}
_RADIUS = {"small": 0.12, "large": 0.19}  # circumradius as a fraction of the frame side
_TRAVEL = 0.30  # translation over the whole clip, fraction of the frame side
_TEXTURE_DARK, _TEXTURE_LIGHT = (70, 70, 70), (150, 150, 150)

_MOTION_PHRASES = {
    "left": ["moving left", "drifting to the left", "sliding left", "heading left"],
    "right": ["moving right", "drifting to the right", "sliding right", "heading right"],
    "up": ["moving up", "drifting upward", "rising", "floating up"],
    "down": ["moving down", "drifting downward", "falling", "sinking"],
    "rotating": ["rotating", "spinning", "turning in place", "rotating slowly"],
    "static": ["standing still", "not moving", "staying in place", "resting motionless"],
}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_COUNT_DETERMINERS = {1: ("a", "one", "single"), 2: ("two",), 3: ("three",)}
# The words the caption grammar uses for each attribute value, for parsing captions back
# (genscom.metrics.text.attribute_flags): count determiners, size words, motion phrases.
CAPTION_VOCABULARY: dict[str, dict[Any, tuple[str, ...]]] = {
    "count": _COUNT_DETERMINERS,
    "size": _SIZE_WORDS,
    "motion": {k: tuple(v) for k, v in _MOTION_PHRASES.items()},
}
_BACKGROUND_PHRASES = {
    "striped": ["on a striped background", "over stripes", "against a striped backdrop"],
    "checkered": ["on a checkered background", "over a checkerboard", "against a checkered pattern"],
    "gradient": ["on a gradient background", "over a grey gradient", "against a shaded backdrop"],
}
_PLAIN_PHRASES = ["on a {c} background", "against a plain {c} backdrop", "over a {c} background"]
_TEMPLATES = [
    "{g} {b}",
    "a clip of {g} {b}",
    "a video showing {g} {b}",
    "there {be} {g} {b}",
    "an animation of {g} {b}",
]


def _plural(shape: str, n: int) -> str:
    if n == 1:
        return shape
    return shape + ("es" if shape.endswith("s") else "s")


def _group_phrase(g: dict[str, Any], rng: np.random.Generator, *, with_motion: bool) -> str:
    n = g["count"]
    det = str(rng.choice(["a", "one", "a single"])) if n == 1 else COUNT_WORDS[n]
    size = str(rng.choice(list(_SIZE_WORDS[g["size"]])))
    text = f"{det} {size} {g['colour']} {_plural(g['shape'], n)}"
    if with_motion:
        text += " " + str(rng.choice(_MOTION_PHRASES[g["motion"]]))
    return text


def make_captions(attributes: dict[str, Any], rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct paraphrases describing ``attributes`` (all mention every group's colour and shape)."""
    groups = attributes["groups"]
    with_motion = attributes["num_frames"] > 1
    bg = attributes["background"]
    out: list[str] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        gtext = " and ".join(_group_phrase(g, rng, with_motion=with_motion) for g in groups)
        if bg in PLAIN_BACKGROUNDS:
            btext = str(rng.choice(_PLAIN_PHRASES)).format(c=bg)
        else:
            btext = str(rng.choice(_BACKGROUND_PHRASES[bg]))
        plural = groups[0]["count"] > 1  # "there is a red circle and a blue star"
        cap = str(rng.choice(_TEMPLATES)).format(g=gtext, b=btext, be="are" if plural else "is")
        if cap not in out:
            out.append(cap)
    while len(out) < n:  # vanishingly rare: pad with repeats rather than loop forever
        out.append(out[len(out) % max(1, len(out))])
    return out


def sample_attributes(rng: np.random.Generator, *, num_frames: int) -> dict[str, Any]:
    """Draw the structured description of one clip."""
    n_groups = 2 if rng.random() < 0.3 else 1
    colours = list(rng.choice(list(COLOURS), size=n_groups, replace=False))
    shapes = list(rng.choice(SHAPES, size=n_groups, replace=n_groups > len(SHAPES)))
    groups = []
    total = 0
    for k in range(n_groups):
        count = int(rng.integers(1, 4)) if n_groups == 1 else (int(rng.integers(1, 3)) if k == 0 else 1)
        total += count
        shape = str(shapes[k])
        motions = [m for m in MOTIONS if not (m == "rotating" and shape in _ROT_SYMMETRIC)]
        motion = str(rng.choice(motions)) if num_frames > 1 else "static"
        size = str(rng.choice(SIZES)) if total <= 2 else "small"
        groups.append({"shape": shape, "colour": str(colours[k]), "count": count, "size": size, "motion": motion})
    used = {g["colour"] for g in groups}
    allowed = [b for b in BACKGROUNDS if b not in used
               and not any((b, c) in _SIMILAR or (c, b) in _SIMILAR for c in used)]
    background = str(rng.choice(allowed))
    return {"groups": groups, "background": background, "num_frames": num_frames,
            "background_variant": int(rng.integers(0, 2))}


# ----------------------------------------------------------------------------- rendering
def _box_sdf(px: np.ndarray, py: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(px) - bx, np.abs(py) - by
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _polygon_sdf(px: np.ndarray, py: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance to a star-shaped polygon with evenly spaced vertices.

    Vertex ``k`` sits at angle ``pi/2 + 2 pi k / M`` and radius ``radii[k]``; each pixel is
    measured against the edge of its angular sector (exact near edges, good enough for
    a one-pixel anti-aliased border).
    """
    m = len(radii)
    ang = np.pi / 2 + 2 * np.pi * np.arange(m) / m
    vx, vy = radii * np.cos(ang), radii * np.sin(ang)
    theta = np.mod(np.arctan2(py, px) - np.pi / 2, 2 * np.pi)
    k = np.minimum((theta / (2 * np.pi / m)).astype(np.int64), m - 1)
    k1 = (k + 1) % m
    ex, ey = vx[k1] - vx[k], vy[k1] - vy[k]
    norm = np.hypot(ex, ey)
    # outward normal of a counter-clockwise edge is (ey, -ex)
    return ((px - vx[k]) * ey - (py - vy[k]) * ex) / norm


def _shape_sdf(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "ring":
        return np.abs(np.hypot(px, py) - 0.72 * r) - 0.28 * r
    if shape == "square":
        return _box_sdf(px, py, 0.78 * r, 0.78 * r)
    if shape == "cross":
        return np.minimum(_box_sdf(px, py, r, 0.33 * r), _box_sdf(px, py, 0.33 * r, r))
    if shape == "triangle":
        # equilateral triangle, circumradius enlarged a little so its area matches the others
        return _polygon_sdf(px, py, np.full(3, 1.12 * r))
    if shape == "star":
        return _polygon_sdf(px, py, np.tile([1.15 * r, 0.5 * r], 5))
    raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")


def _background(name: str, size: int, variant: int) -> np.ndarray:
    """``[size, size, 3]`` float32 background in 0..255."""
    if name in PLAIN_BACKGROUNDS:
        return np.broadcast_to(np.asarray(PLAIN_BACKGROUNDS[name], np.float32), (size, size, 3)).copy()
    dark, light = np.asarray(_TEXTURE_DARK, np.float32), np.asarray(_TEXTURE_LIGHT, np.float32)
    coord = np.arange(size, dtype=np.float32)
    period = max(2, size // 8)
    if name == "striped":
        band = ((coord // (period / 2)) % 2).astype(np.float32)  # vertical or horizontal stripes
        mask = band[None, :] if variant == 0 else band[:, None]
        mask = np.broadcast_to(mask, (size, size))
    elif name == "checkered":
        b = (coord // (period / 2)).astype(np.int64)
        mask = ((b[:, None] + b[None, :]) % 2).astype(np.float32)
    elif name == "gradient":
        ramp = coord / max(1, size - 1)
        mask = np.broadcast_to(ramp[None, :] if variant == 0 else ramp[:, None], (size, size))
        dark, light = np.asarray((20, 20, 20), np.float32), np.asarray((200, 200, 200), np.float32)
    else:
        raise ValueError(f"unknown background {name!r}; known backgrounds: {', '.join(BACKGROUNDS)}")
    return dark + mask[..., None] * (light - dark)


def _layout(rng: np.random.Generator, attributes: dict[str, Any], size: int) -> list[dict[str, Any]] | None:
    """Place every object (start centre, velocity, angle) so that no two overlap in any frame."""
    objs: list[dict[str, Any]] = []
    travel = _TRAVEL * size
    for g in attributes["groups"]:
        r = _RADIUS[g["size"]] * size
        dx, dy = {"left": (-travel, 0.0), "right": (travel, 0.0), "up": (0.0, -travel), "down": (0.0, travel)}.get(
            g["motion"], (0.0, 0.0))
        sym = _SYMMETRY.get(g["shape"], 1)
        spin = (0.8 * 2 * math.pi / sym) * float(rng.choice([-1.0, 1.0])) if g["motion"] == "rotating" else 0.0
        for _ in range(g["count"]):
            margin = 1.05 * r + 1
            lo_x, hi_x = margin - min(dx, 0.0), size - margin - max(dx, 0.0)
            lo_y, hi_y = margin - min(dy, 0.0), size - margin - max(dy, 0.0)
            if hi_x < lo_x or hi_y < lo_y:
                return None
            for _try in range(200):
                cx, cy = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
                ok = True
                for o in objs:
                    # distance at start and end of the clip (motion is linear, so min distance
                    # over the clip is checked at the closest point of approach)
                    rx, ry = cx - o["x"], cy - o["y"]
                    vx, vy = dx - o["dx"], dy - o["dy"]
                    vv = vx * vx + vy * vy
                    t = 0.0 if vv == 0 else min(1.0, max(0.0, -(rx * vx + ry * vy) / vv))
                    if math.hypot(rx + t * vx, ry + t * vy) < 1.15 * (r + o["r"]) + 2:
                        ok = False
                        break
                if ok:
                    break
            else:
                return None
            objs.append({"shape": g["shape"], "colour": g["colour"], "r": r, "x": cx, "y": cy, "dx": dx, "dy": dy,
                         "angle": float(rng.uniform(0, 2 * math.pi)) if g["shape"] not in _ROT_SYMMETRIC else 0.0,
                         "spin": spin})
    return objs


def render_clip(attributes: dict[str, Any], objects: list[dict[str, Any]], *, num_frames: int, size: int,
                antialias: bool = True) -> np.ndarray:
    """Draw a clip: uint8 ``[num_frames, size, size, 3]``."""
    bg = _background(attributes["background"], size, attributes.get("background_variant", 0))
    out = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        s = t / (num_frames - 1) if num_frames > 1 else 0.0
        img = bg.copy()
        for o in objects:
            cx, cy = o["x"] + s * o["dx"], o["y"] + s * o["dy"]
            ext = 1.2 * o["r"] + 2
            x0, x1 = max(0, int(cx - ext)), min(size, int(math.ceil(cx + ext)) + 1)
            y0, y1 = max(0, int(cy - ext)), min(size, int(math.ceil(cy + ext)) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            gx = np.arange(x0, x1, dtype=np.float32) + 0.5 - cx
            gy = np.arange(y0, y1, dtype=np.float32) + 0.5 - cy
            px, py = np.meshgrid(gx, gy)  # [h, w], y down
            a = o["angle"] + s * o["spin"]
            ca, sa = math.cos(a), math.sin(a)
            # rotate pixel coordinates into the object frame; flip y so shapes point up
            qx, qy = ca * px + sa * py, -(-sa * px + ca * py)
            d = _shape_sdf(o["shape"], qx, qy, o["r"])
            alpha = np.clip(0.5 - d, 0.0, 1.0) if antialias else (d <= 0).astype(np.float32)
            colour = np.asarray(COLOURS[o["colour"]], np.float32)
            patch = img[y0:y1, x0:x1]
            patch += alpha[..., None] * (colour - patch)
        out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def plan_item(seed: int, split: str, index: int, *, num_frames: int, size: int,
              n_captions: int | None) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Attributes, object layout and captions of item ``index`` of ``split`` (no pixels; fast)."""
    rng = np.random.default_rng([int(seed), SPLIT_STREAM[split], int(index)])
    for _ in range(50):
        attributes = sample_attributes(rng, num_frames=num_frames)
        objects = _layout(rng, attributes, size)
        if objects is not None:
            break
    else:  # pragma: no cover - the attribute space always has layouts that fit
        raise RuntimeError(f"could not lay out synthetic item {index} (seed {seed}, split {split})")
    n = n_captions if n_captions is not None else int(rng.integers(2, 6))
    captions = make_captions(attributes, rng, n)
    attributes = dict(attributes)
    attributes["objects"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in o.items()} for o in objects]
    return attributes, objects, captions


def generate_item(seed: int, split: str, index: int, *, num_frames: int, size: int, n_captions: int | None,
                  antialias: bool = True) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Frames uint8 ``[T, size, size, 3]``, captions and attributes of one item (pure function of its arguments)."""
    attributes, objects, captions = plan_item(seed, split, index, num_frames=num_frames, size=size,
                                              n_captions=n_captions)
    frames = render_clip(attributes, objects, num_frames=num_frames, size=size, antialias=antialias)
    return frames, captions, attributes


def default_cache_dir() -> Path:
    """``$GENSCOM_CACHE/datasets`` or ``~/.cache/genscom/datasets``."""
    root = os.environ.get("GENSCOM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "genscom"
    return base / "datasets"


@register_dataset("synthetic")
class SyntheticClips(ClipCaptionDataset):
    """Procedural clip-caption dataset, the offline default.

    Args:
        split: ``"train"`` or ``"test"`` (disjoint random streams).
        n_items: number of clips (default 3000 for train, 1000 for test).
        seed: dataset seed; the same ``(seed, split)`` always gives the same items.
        num_frames: frames per clip ``T`` (``1`` gives still images; captions then omit motion).
        size: frame side in pixels (frames are ``size x size``); at least 32.
        n_captions: captions per clip; default 2..5 (random) for train and 2 for test/val.
        antialias: soft one-pixel object edges (default) or hard edges.
        cache_dir: folder for the rendered ``.npz`` cache; ``None`` -> :func:`default_cache_dir`
            ``/ "synthetic"``.
        cache: ``False`` renders items on the fly and writes nothing.

    Items: ``frames`` uint8 ``[T, size, size, 3]``; ``attributes`` holds
    ``{"groups": [{"shape", "colour", "count", "size", "motion"}, ...], "background",
    "num_frames", "objects": [...]}``.

    Example:
        >>> ds = SyntheticClips("test", n_items=4, cache=False)
        >>> ds[0].captions  # doctest: +SKIP
        ['two small red circles moving left on a blue background', ...]
    """

    name = "synthetic"
    caption_vocabulary = CAPTION_VOCABULARY  # the grammar's words, for genscom.metrics.text.attribute_flags

    def __init__(self, split: str = "train", *, n_items: int | None = None, seed: int = 0, num_frames: int = 8,
                 size: int = 64, n_captions: int | None = None, antialias: bool = True,
                 cache_dir: str | os.PathLike[str] | None = None, cache: bool = True) -> None:
        self.split = check_split(split, allowed=tuple(SPLIT_STREAM), dataset=self.name)
        n_items = DEFAULT_N_ITEMS[self.split] if n_items is None else n_items
        for arg, val, lo in (("n_items", n_items, 0), ("num_frames", num_frames, 1), ("size", size, 32)):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ValueError(f"{arg} must be an int >= {lo}, got {val!r}")
        if n_items == 0:
            raise ValueError(f"dataset {self.name!r} (split {self.split!r}) would be empty: n_items=0; pass n_items >= 1")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if n_captions is None:
            n_captions = 2 if self.split in ("test", "val") else None
        if n_captions is not None and (not isinstance(n_captions, int) or not 1 <= n_captions <= 8):
            raise ValueError(f"n_captions must be an int in 1..8 or None, got {n_captions!r}")
        self.n_items, self.seed, self.num_frames, self.size = n_items, seed, num_frames, size
        self.n_captions, self.antialias, self.cache = n_captions, bool(antialias), bool(cache)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "synthetic"
        self._frames: torch.Tensor | None = None
        self.loaded_from_cache = False
        self._captions, self._attributes = self._metadata()
        self._validate(self.n_items, len(self._captions), fix="pass n_items >= 1")

    # ------------------------------------------------------------------ metadata
    def _params(self) -> dict[str, Any]:
        return {"version": GENERATOR_VERSION, "split": self.split, "n_items": self.n_items, "seed": self.seed,
                "num_frames": self.num_frames, "size": self.size, "n_captions": self.n_captions,
                "antialias": self.antialias}

    @property
    def cache_path(self) -> Path:
        """The ``.npz`` frame cache for these parameters (a ``.json`` of captions sits beside it)."""
        key = hashlib.sha256(json.dumps(self._params(), sort_keys=True).encode()).hexdigest()[:12]
        return self.cache_dir / (f"synthetic-v{GENERATOR_VERSION}-{self.split}-n{self.n_items}-s{self.seed}"
                                 f"-t{self.num_frames}-{self.size}px-{key}.npz")

    def _metadata(self) -> tuple[list[list[str]], list[dict[str, Any]]]:
        meta_path = self.cache_path.with_suffix(".json")
        if self.cache and meta_path.is_file():
            try:  # a cache of what plan_item computes: a broken one is re-planned (and rewritten), not an error
                meta = read_json(meta_path, expected="the synthetic dataset's cached captions (JSON)",
                                 fix="delete it (it is rebuilt)")
                if (isinstance(meta, dict) and meta.get("params") == self._params()
                        and isinstance(meta.get("captions"), list) and isinstance(meta.get("attributes"), list)
                        and len(meta["captions"]) == len(meta["attributes"]) == self.n_items):
                    return meta["captions"], meta["attributes"]
            except (OSError, ValueError) as exc:  # BadFileError is a ValueError
                logger.warning("ignoring unreadable synthetic metadata %s: %s", meta_path, exc)
        caps: list[list[str]] = []
        attrs: list[dict[str, Any]] = []
        for i in range(self.n_items):
            a, _, c = plan_item(self.seed, self.split, i, num_frames=self.num_frames, size=self.size,
                                n_captions=self.n_captions)
            caps.append(c)
            attrs.append(a)
        return caps, attrs

    # ------------------------------------------------------------------ frames
    def _render(self, i: int) -> np.ndarray:
        return generate_item(self.seed, self.split, i, num_frames=self.num_frames, size=self.size,
                             n_captions=self.n_captions, antialias=self.antialias)[0]

    def render_all(self) -> np.ndarray:
        """Render every clip: uint8 ``[n_items, T, size, size, 3]`` (no cache involved)."""
        out = np.empty((self.n_items, self.num_frames, self.size, self.size, 3), np.uint8)
        for i in range(self.n_items):
            out[i] = self._render(i)  # type: ignore[index]
        return out

    def _load_cache(self) -> np.ndarray | None:
        path = self.cache_path
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arr = z["frames"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            logger.warning("ignoring unreadable synthetic cache %s (%s); re-rendering", path, exc)
            return None
        want = (self.n_items, self.num_frames, self.size, self.size, 3)
        if arr.shape != want or arr.dtype != np.uint8:
            logger.warning("synthetic cache %s has shape %s, expected %s; re-rendering", path, arr.shape, want)
            return None
        return arr

    def _write_cache(self, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, frames=arr)
        try:
            atomic_write_bytes(self.cache_path, buf.getvalue())
            atomic_write_json(self.cache_path.with_suffix(".json"),
                              {"params": self._params(), "captions": self._captions, "attributes": self._attributes})
        except OSError as exc:  # a read-only cache folder must not stop the benchmark
            logger.warning("could not write synthetic cache %s: %s", self.cache_path, exc)

    def frames(self) -> torch.Tensor:
        """All frames, uint8 ``[n_items, T, size, size, 3]`` (rendered once, then cached)."""
        if self._frames is None:
            arr = self._load_cache() if self.cache else None
            self.loaded_from_cache = arr is not None
            if arr is None:
                t0 = time.perf_counter()
                arr = self.render_all()
                logger.info("rendered %d synthetic clips in %.1f s", self.n_items, time.perf_counter() - t0)
                if self.cache:
                    self._write_cache(arr)
            self._frames = torch.from_numpy(arr)
        return self._frames

    # ------------------------------------------------------------------ dataset API
    def __len__(self) -> int:
        return self.n_items

    def load_frames(self, i: int) -> torch.Tensor:
        if self._frames is None and not self.cache:
            return torch.from_numpy(self._render(i))  # type: ignore[arg-type]
        return self.frames()[i]

    def captions_of(self, i: int) -> list[str]:
        return list(self._captions[i])

    def attributes_of(self, i: int) -> dict[str, Any]:
        return self._attributes[i]

    def id_of(self, i: int) -> str:
        return f"synthetic-s{self.seed}-{self.split}-{i:06d}"

    def stacked_frames(self, indices=None) -> torch.Tensor:  # type: ignore[override]
        """uint8 ``[N, T, size, size, 3]`` for ``indices`` (all items by default)."""
        if indices is None:
            return self.frames() if (self.cache or self._frames is not None) else super().stacked_frames(None)
        if self.cache or self._frames is not None:
            idx = [self._index(int(j)) for j in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
            if not idx:
                raise ValueError("indices is empty; pass at least one item index (or None for all items)")
            return self.frames()[torch.tensor(idx, dtype=torch.long)]
        return super().stacked_frames(indices)
