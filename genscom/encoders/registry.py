"""Encoder profiles by name: ``list_profiles()`` and ``create_encoder(name, ...)``.

========  ====================================================================  ==========
profile   towers                                                                weights
========  ====================================================================  ==========
``mini``  frozen all-MiniLM-L6-v2 text (384-d) + genscom's trained mini          shipped in
          image/video tower (:mod:`genscom.encoders.mini`). OFFLINE DEFAULT.     the repo
``mini-attr``  the same towers; the mini image/video tower fine-tuned with       shipped in
          auxiliary attribute supervision (object shape, colour, count, size,   the repo
          motion, background): keeps what captions name, e.g. the shape. The
          agents' perception.
``mini-attr-v2``  ``mini-attr`` trained on with a heavier attribute loss: reads   shipped in
          the object's shape better. The ``smollm2-attr-v2`` agents'             the repo
          perception.
``tiny``  random tiny BERT (hashing tokenizer) + tiny mini tower, 16-d. Tests.   none
``hf``    any CLIP/SigLIP hub id or local folder (``pretrained=...``)            hub/local
========  ====================================================================  ==========

Any name that is not a profile but contains ``/`` or is an existing folder is read
as a CLIP/SigLIP id or path: ``create_encoder("openai/clip-vit-base-patch32")``; a folder
written by ``genscom train encoder`` (a ``MiniVideoTower`` ``config.json``) is read as the
``mini`` profile with those weights. :func:`check_profile` validates a name or folder without
loading it (the commands call it before preparing any data).

Example:
    >>> enc = create_encoder("mini")             # offline default
    >>> enc.encode_text(["a red square moving left"]).shape
    torch.Size([1, 384])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from genscom._registry import Registry
from genscom.encoders.base import Encoder

EncoderBuilder = Callable[..., Encoder]
ENCODER_PROFILES: Registry[EncoderBuilder] = Registry("encoder profile")

DEFAULT_PROFILE = "mini"
MINI_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "mini"
MINI_ATTR_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "mini-attr"
MINI_ATTR_V2_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "mini-attr-v2"
DEFAULT_HF_ID = "openai/clip-vit-base-patch32"

Pretrained = bool | str | os.PathLike[str] | None


def register_profile(name: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Decorator registering ``builder(*, pretrained, device, dtype, **kwargs) -> Encoder``; refuses duplicates."""
    return ENCODER_PROFILES.register(name)


def list_profiles() -> list[str]:
    """Registered encoder profile names, sorted."""
    return ENCODER_PROFILES.names()


def _seeded_build(seed: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (module construction) under a forked CPU RNG seeded with ``seed``; the caller's RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


@register_profile("mini")
def build_mini(*, pretrained: Pretrained = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, seed: int = 0, config: Any = None,
               _shipped: Path = MINI_WEIGHTS_DIR, _name: str = "mini") -> Encoder:
    """Frozen MiniLM text tower + the mini image/video tower.

    ``pretrained``: ``None``/``True`` -> the shipped weights (``genscom/encoders/weights/mini``);
    a folder -> weights written by ``genscom train encoder``; ``False`` -> a random tower
    (built with ``seed``, architecture ``config`` or the default :class:`MiniTowerConfig`).
    """
    from genscom.encoders.mini import WEIGHTS_NAME, MiniTowerConfig, MiniVideoTower, TowerEncoder
    from genscom.encoders.text import load_minilm

    if pretrained is False:
        cfg = config or MiniTowerConfig()
        tower = _seeded_build(seed, lambda: MiniVideoTower(cfg))
    else:
        if config is not None:
            raise ValueError("config is only used with pretrained=False (trained weights carry their own config.json)")
        folder = _shipped if pretrained in (None, True) else Path(pretrained)
        if folder.name == WEIGHTS_NAME:
            folder = folder.parent
        tower = MiniVideoTower.from_pretrained(folder)
    enc = TowerEncoder(load_minilm(), tower, name=_name)
    return enc.to(device=device, dtype=dtype).eval()


def _trained_tower_profile(name: str, folder: Path, what: str) -> None:
    """Register profile ``name``: frozen MiniLM + the shipped trained tower in ``folder`` (``what`` for its doc)."""

    def build(*, pretrained: Pretrained = None, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> Encoder:
        if pretrained is False:
            raise ValueError(f"profile {name!r} is a trained tower; for a random one use create_encoder('mini', "
                             "pretrained=False)")
        return build_mini(pretrained=pretrained, device=device, dtype=dtype, _shipped=folder, _name=name)

    build.__name__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = (f"Frozen MiniLM text tower + {what} (``genscom/encoders/weights/{folder.name}``; see its "
                     "README.md for the recipe and figures).")
    register_profile(name)(build)


_trained_tower_profile("mini-attr", MINI_ATTR_WEIGHTS_DIR, "the mini tower fine-tuned with attribute supervision")
_trained_tower_profile("mini-attr-v2", MINI_ATTR_V2_WEIGHTS_DIR,
                       "``mini-attr`` fine-tuned further with a heavier attribute loss")


def tiny_configs() -> tuple[Any, Any]:
    """The (text, tower) configs of the ``tiny`` profile: 16-d, 16x16 input, a few thousand parameters."""
    from genscom.encoders.mini import MiniTowerConfig
    from genscom.encoders.text import TinyTextConfig

    text = TinyTextConfig(vocab_size=128, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          max_length=32, out_dim=16)
    tower = MiniTowerConfig(image_size=16, stem_channels=4, channels=(8,), blocks_per_stage=1, grid_channels=4,
                            width=16, temporal="attention", temporal_layers=1, temporal_heads=2, max_frames=16,
                            motion=True, embed_dim=16)
    return text, tower


@register_profile("tiny")
def build_tiny(*, pretrained: Pretrained = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, seed: int = 0) -> Encoder:
    """Random tiny towers built from configs (no files, no downloads); deterministic for a given ``seed``."""
    from genscom.encoders.mini import MiniVideoTower, TowerEncoder
    from genscom.encoders.text import build_tiny_text_tower

    if pretrained not in (None, False):
        raise ValueError(f"profile 'tiny' has no pretrained weights (got pretrained={pretrained!r}); "
                         "pass pretrained=None")
    text_cfg, tower_cfg = tiny_configs()
    enc = _seeded_build(seed, lambda: TowerEncoder(build_tiny_text_tower(text_cfg), MiniVideoTower(tower_cfg),
                                                   name="tiny"))
    return enc.to(device=device, dtype=dtype).eval()


@register_profile("hf")
def build_hf(*, pretrained: Pretrained = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, local_files_only: bool = False,
             revision: str | None = None) -> Encoder:
    """A CLIP/SigLIP hub id or local folder (``pretrained``; default ``openai/clip-vit-base-patch32``)."""
    from genscom.encoders.hf import load_hf_encoder

    if pretrained is False:
        raise ValueError("profile 'hf' loads pretrained weights; pass pretrained='<hub id or local folder>'")
    name = DEFAULT_HF_ID if pretrained in (None, True) else str(pretrained)
    return load_hf_encoder(name, device=device, dtype=dtype, local_files_only=local_files_only, revision=revision)


def _is_mini_folder(folder: Path) -> bool:
    from genscom.loading import read_json

    cfg = folder / "config.json"
    if not cfg.is_file():
        return False
    data = read_json(cfg, expected="an encoder config.json (JSON mapping)", max_bytes=2**20)
    return isinstance(data, dict) and data.get("architecture") == "MiniVideoTower"


def check_profile(name: str) -> None:
    """Check an encoder profile name or local folder cheaply, before any data preparation.

    A registered name passes; a local folder must be a mini tower (``genscom train encoder``)
    or a CLIP/SigLIP folder whose ``config.json`` and safetensors headers read; a name with
    ``/`` that is no local path is taken as a hub id (checked when it loads).

    Raises:
        ValueError: an unknown name (listing the profiles).
        FileNotFoundError: a path (``./x``, ``/x``, ``~/x``) that does not exist.
        BadFileError: a folder whose files are unreadable (naming the file).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"profile must be a non-empty str (a profile name or a folder), got {name!r}")
    if name in ENCODER_PROFILES:
        return
    p = Path(name).expanduser()
    if p.is_dir():
        if _is_mini_folder(p):
            from genscom.encoders.mini import WEIGHTS_NAME
            from genscom.loading import check_safetensors

            check_safetensors(p / WEIGHTS_NAME, expected="MiniVideoTower weights (safetensors)",
                              fix="re-create them with `genscom train encoder`")
        else:
            from genscom.encoders.hf import check_hf_folder

            check_hf_folder(p)
        return
    if name.startswith((".", "/", "~")) or p.exists():
        from genscom.loading import MissingFileError

        raise MissingFileError(f"encoder profile {name!r} is neither a profile name nor an existing folder; known "
                               f"profiles: {', '.join(list_profiles())}")
    if "/" not in name:
        raise ValueError(f"unknown encoder profile {name!r}; known profiles: {', '.join(list_profiles())} "
                         "(or a CLIP/SigLIP hub id 'org/model' or an existing local folder)")


def create_encoder(name: str = DEFAULT_PROFILE, *, pretrained: Pretrained = None,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   **kwargs: Any) -> Encoder:
    """Build an encoder by profile name (or CLIP/SigLIP id/path), in eval mode on ``device`` in ``dtype``.

    Args:
        name: a profile from :func:`list_profiles`, or a hub id (``"org/model"``) / local folder,
            which is read with the ``hf`` profile.
        pretrained: profile-specific: ``None`` = the profile's default weights, ``False`` = random
            (where allowed), a string = a weights folder / hub id.
        kwargs: passed to the profile builder (``seed``, ``local_files_only``, ``revision``, ...).

    Raises:
        ValueError: unknown name (the message lists the profiles) or a bad ``pretrained``.
        FileNotFoundError: the ``mini`` weights are missing (the message names the command making them).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (profile or model id), got {type(name).__name__}")
    if name not in ENCODER_PROFILES:
        if "/" in name or os.path.isdir(name):
            if pretrained not in (None, True):
                raise ValueError(f"name={name!r} is already a model id/path; leave pretrained=None")
            if os.path.isdir(name) and _is_mini_folder(Path(name)):
                return build_mini(pretrained=name, device=device, dtype=dtype, _name=str(name))
            return ENCODER_PROFILES.get("hf")(pretrained=name, device=device, dtype=dtype, **kwargs)
        raise ValueError(f"unknown encoder profile {name!r}; known profiles: {', '.join(list_profiles())} "
                         "(or a CLIP/SigLIP hub id 'org/model' or an existing local folder)")
    return ENCODER_PROFILES.get(name)(pretrained=pretrained, device=device, dtype=dtype, **kwargs)
