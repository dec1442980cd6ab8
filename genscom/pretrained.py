"""One way to write and read a genscom module folder: ``model.safetensors`` + ``config.json``.

Every trained module genscom ships or trains (the channel adapter, the graph multimodal adapter, the diffusion
decoder) is a folder of its float weights and a JSON config ``{<key>: <config dict>, **extra}``, written
atomically and read back through :mod:`genscom.loading`, so a missing, truncated or mismatched file is a
:class:`~genscom.errors.GenscomError` that names the file and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound=nn.Module)


def save_module_folder(module: nn.Module, folder: str | os.PathLike[str], *, key: str, config: dict[str, Any],
                       extra_config: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``module``'s state as ``model.safetensors`` (``dtype``: float32 or float16) and ``config.json``
    (``{key: config, **extra_config}``), each atomically; returns the folder."""
    from safetensors.torch import save as st_save

    from genscom.utils import atomic_write_bytes, atomic_write_json

    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {n: t.detach().to("cpu", dtype).contiguous() for n, t in module.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, st_save(state, metadata={"format": "pt"}))
    atomic_write_json(folder / CONFIG_NAME, {key: config, **(extra_config or {})})
    return folder


def _shape_mismatch(want: dict[str, tuple[int, ...]], have: dict[str, tuple[int, ...]]) -> str | None:
    """The first difference between the module's tensor shapes and the file's, in words; ``None`` when equal."""
    missing = [n for n in want if n not in have]
    if missing:
        return f"{len(missing)} tensor(s) the config declares are missing, e.g. {missing[0]!r}"
    extra = [n for n in have if n not in want]
    if extra:
        return f"{len(extra)} tensor(s) the config does not declare, e.g. {extra[0]!r}"
    for n, shape in want.items():
        if have[n] != shape:
            return f"{n!r} is {list(have[n])} in the file but {list(shape)} in the config"
    return None


def build_fitting(build: Callable[[], M], weights: str | os.PathLike[str], *, what: str, fix: str) -> M:
    """``build()`` on the CPU, once the same ``build()`` on the ``meta`` device (no memory) has shown that the
    module's tensor names and shapes are those in the safetensors header of ``weights``.

    So a config that declares sizes its weights do not have is a :class:`~genscom.errors.BadFileError` on
    ``weights``, decided from the header, not a multi-gigabyte allocation. ``build`` raises its own errors."""
    from genscom.errors import BadFileError
    from genscom.loading import safetensors_shapes

    with torch.device("meta"):
        want = {n: tuple(t.shape) for n, t in build().state_dict().items()}
    have = safetensors_shapes(weights, expected=f"{what} weights (safetensors)", fix=fix)
    problem = _shape_mismatch(want, have)
    if problem is not None:
        raise BadFileError(weights, problem=f"the tensors do not fit {CONFIG_NAME} ({problem})",
                           expected="the weights saved with this config.json", fix=fix)
    with torch.device("cpu"):
        return build()


def load_module_folder(folder: str | os.PathLike[str], *, key: str | None, build: Callable[[dict[str, Any]], M],
                       what: str, fix: str, device: str | torch.device = "cpu") -> tuple[M, dict[str, Any]]:
    """Read a folder written by :func:`save_module_folder` (or any ``config.json`` + ``model.safetensors`` pair).

    ``build(config[key])`` (``build(config)`` when ``key`` is ``None``: a flat config) makes the module, first
    on the ``meta`` device (no memory), so that its tensor shapes are compared with the safetensors header before
    anything is allocated: a config that declares sizes its weights do not have is a
    :class:`~genscom.errors.BadFileError`, not a multi-gigabyte allocation. The
    ``KeyError``/``TypeError``/``ValueError`` of ``build`` are a ``BadFileError`` on ``config.json``; floating
    weights are loaded as float32. Returns ``(module in eval mode on device, the whole config.json)``.
    ``what`` names the module in messages (``"adapter"``); ``fix`` tells the user what to do."""
    from genscom.errors import BadFileError, first_line
    from genscom.loading import check_file, load_safetensors, read_json

    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        check_file(p, expected=f"a {what} folder ({CONFIG_NAME} + {WEIGHTS_NAME})", fix=fix)
    shape = f'{{"{key}": {{config fields}}}}' if key is not None else "a JSON mapping of config fields"
    meta = read_json(cfg_path, expected=f"a {what} config.json ({shape})", fix=fix, max_bytes=2**20)

    def make() -> M:
        try:
            if not isinstance(meta, dict):
                raise TypeError(f"expected a JSON mapping, got {type(meta).__name__}")
            return build(meta if key is None else meta[key])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadFileError(cfg_path, problem=f"invalid {what} config ({type(exc).__name__}: {exc})",
                               expected=f"{shape} as written by save_pretrained", fix=fix) from None

    model = build_fitting(make, w_path, what=what, fix=fix)
    state = load_safetensors(w_path, expected=f"{what} weights (safetensors)", fix=fix)
    try:
        model.load_state_dict({n: t.float() if t.is_floating_point() else t for n, t in state.items()})
    except RuntimeError as exc:
        raise BadFileError(w_path, problem=f"the tensors do not fit {CONFIG_NAME} ({first_line(exc)})",
                           expected="the weights saved with this config.json", fix=fix) from None
    return model.to(device).eval(), meta


def resolve_pretrained(obj: Any, cls: type[M], *, what: str, device: str | torch.device = "cpu",
                       train_command: str | None = None) -> M:
    """``obj`` as a loaded ``cls`` in eval mode: an instance (moved to ``device``), a folder, or a name on the
    adapter search path (:func:`genscom.assets.find_adapter`, whose error suggests ``train_command``) loaded with
    ``cls.from_pretrained``.

    Raises:
        TypeError: anything else, naming ``what`` and the accepted kinds.
    """
    from genscom.assets import find_adapter

    if isinstance(obj, cls):
        return obj.to(device).eval()
    if not isinstance(obj, (str, os.PathLike)):
        raise TypeError(f"{what} must be a {cls.__name__}, a folder or an adapter name, got {type(obj).__name__}")
    folder = find_adapter(obj) if train_command is None else find_adapter(obj, train_command=train_command)
    return cls.from_pretrained(folder, device=device).eval()  # type: ignore[attr-defined]


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "build_fitting", "load_module_folder", "resolve_pretrained", "save_module_folder"]
