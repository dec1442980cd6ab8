"""Whether the demo can offer the ``regen`` scheme: an image decoder of its own that fits its encoder.

The decoder is the demo's own setting (:attr:`~genscom.demo.options.DemoConfig.regen_decoder`: a folder, or a
name on the adapter search path, :mod:`genscom.assets`); a sender never names it (:mod:`genscom.demo.guard`).
It fits when the encoder profile it was trained on (``config.json`` ``extra.profile``) is the demo's profile;
``"auto"`` (the default) picks the best shipped decoder trained on that profile.
Only ``config.json`` is read here; the weights are loaded when the scheme is built.

Example:
    >>> regen_unavailable(DemoConfig(profile="mini", regen_decoder="regen-mini-attr"))  # doctest: +SKIP
    'the image decoder regen-mini-attr was trained on mini-attr embeddings; start the demo with --profile mini-attr'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol


class DemoConfig(Protocol):
    """What this module reads of :class:`genscom.demo.options.DemoConfig` (kept as a protocol: options imports
    this module, not the other way round)."""

    profile: str
    regen_decoder: str | None
    regen_steps: int | None
    regen_candidates: int
    seed: int


def decoder_config(name_or_path: str) -> tuple[Path, dict[str, Any]]:
    """``(folder, the decoder's config dict)`` of a :class:`~genscom.generation.diffusion.DiffusionDecoder` folder.

    Raises:
        FileNotFoundError: no such folder or name on the adapter search path (the message lists the path).
        ValueError: the folder holds no readable diffusion-decoder ``config.json``.
    """
    from genscom.assets import find_adapter

    from genscom.loading import read_json

    folder = find_adapter(name_or_path, train_command="genscom train decoder")
    try:  # bounded and parsed by genscom.loading; any failure of it is a GenscomError (a ValueError)
        cfg = read_json(folder / "config.json", expected="a diffusion decoder config.json")["diffusion_decoder"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{folder} is not a diffusion decoder folder (config.json with a 'diffusion_decoder' "
                         "entry); pass one written by `genscom train decoder`") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{folder}/config.json: 'diffusion_decoder' must be an object; retrain or re-save it")
    return folder, cfg


AUTO = "auto"


def decoder_name(config: DemoConfig) -> str | None:
    """The decoder folder or name ``config`` means: ``regen_decoder`` itself, or for ``"auto"`` the best shipped
    decoder trained on ``config.profile`` (``None`` when none is, or when no decoder is set)."""
    from genscom.schemes.regen import SHIPPED_DECODERS

    name = config.regen_decoder
    return SHIPPED_DECODERS.get(config.profile) if name == AUTO else (name or None)


def regen_unavailable(config: DemoConfig) -> str | None:
    """``None`` when the demo can run ``regen`` with ``config``, else the reason in plain words (with the fix)."""
    from genscom.schemes.regen import SHIPPED_DECODERS

    name = decoder_name(config)
    if name is None and config.regen_decoder == AUTO:
        return (f"no shipped image decoder was trained on {config.profile} embeddings (shipped: "
                f"{', '.join(f'{v} for {k}' for k, v in SHIPPED_DECODERS.items())}); start the demo with --profile "
                f"{next(iter(SHIPPED_DECODERS))}, or pass a decoder trained on {config.profile} with --regen-decoder")
    if not name:
        return "no image decoder is set (start the demo with --regen-decoder NAME_OR_FOLDER)"
    try:
        _, cfg = decoder_config(name)
    except FileNotFoundError:
        return (f"the image decoder {name} is not installed (train it with `genscom train decoder`, or pass a "
                "folder with --regen-decoder)")
    except ValueError as exc:
        return str(exc)
    profile = (cfg.get("extra") or {}).get("profile")
    if profile is not None and profile != config.profile:
        shipped = SHIPPED_DECODERS.get(config.profile)
        fix = f" (or --regen-decoder {shipped}, trained on {config.profile})" if shipped else ""
        return (f"the image decoder {Path(name).name} was trained on {profile} embeddings; start the demo with "
                f"--profile {profile}{fix}")
    if importlib.util.find_spec("diffusers") is None:
        return "the image decoder needs diffusers (pip install 'genscom[gen]')"
    return None


def regen_settings(config: DemoConfig) -> dict[str, Any]:
    """Constructor keywords of ``regen`` that come from the demo's own configuration (never from the wire)."""
    return {"decoder": str(decoder_name(config)), "steps": config.regen_steps, "seed": config.seed,
            "candidates": config.regen_candidates}


__all__ = ["AUTO", "decoder_config", "decoder_name", "regen_settings", "regen_unavailable"]
