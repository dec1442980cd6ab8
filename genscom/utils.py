"""Small shared helpers: atomic file writes, config loading, input checks."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, TypeVar

import torch

C = TypeVar("C")


def _umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (``mkstemp`` makes 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def give_default_permissions(folder: str | os.PathLike[str]) -> None:
    """Give ``folder`` and the files directly in it the modes a plain ``mkdir``/``open()`` would
    (``mkdtemp``/``mkstemp`` make 0700 / 0600)."""
    mode = _umask_mode()
    os.chmod(folder, mode | ((mode & 0o444) >> 2))  # directories: add x where r is set
    for f in Path(folder).iterdir():
        if f.is_file():
            os.chmod(f, mode)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None], *, mode: int | None = None) -> Path:
    """Create ``path`` atomically: ``write(fh)`` fills a temp file in the same folder, which is fsynced and
    renamed over ``path``; on any error the temp file is removed and ``path`` is untouched. The file gets
    ``mode`` (e.g. ``0o600`` for a secret, set before anything is written), else the umask's usual mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _umask_mode() if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` atomically (:func:`atomic_write`), so a crash never leaves half a checkpoint."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_config(cls: type[C], source: str | os.PathLike[str] | dict[str, Any] | None = None, **overrides: Any) -> C:
    """Build config dataclass ``cls`` from a YAML/JSON file or dict, then apply ``overrides``.

    The one config reader is :func:`genscom.loading.load_config` (this name is kept for callers):
    unknown keys raise ``ValueError`` naming the key and the known fields, wrong types name the
    field, an empty file is an error naming it; YAML is read with ``yaml.safe_load``.
    """
    from genscom.loading import load_config as _load_config

    return _load_config(cls, source, **overrides)


def config_from_dict(cls: type[C], d: Any) -> C:
    """``cls(**d)`` for a config dataclass read back from JSON: a non-mapping or unknown keys raise ``ValueError``
    naming them and the known fields; the dataclass's own ``__post_init__`` checks the values."""
    import dataclasses

    if not isinstance(d, dict):
        raise ValueError(f"a {cls.__name__} must be a mapping of its fields, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
    return cls(**d)


def check_positive_ints(obj: Any, names: Iterable[str], *, owner: str = "") -> None:
    """Raise ``ValueError`` for the first attribute of ``obj`` among ``names`` that is not an integer >= 1
    (``True``/``False`` are refused too); the message names ``owner.name`` (or ``name`` without an owner)."""
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner + '.' if owner else ''}{name} must be a positive integer, got {v!r}")


def check_snr_db(snr_db: Any, name: str = "snr_db") -> torch.Tensor:
    """Return ``snr_db`` as a float tensor, raising ``ValueError`` on NaN/inf and ``TypeError`` on non-numbers."""
    if isinstance(snr_db, torch.Tensor):
        t = snr_db
        if t.is_complex():
            raise TypeError(f"{name} must be real (dB), got a complex tensor")
        t = t.to(torch.float32) if not t.is_floating_point() else t
    elif isinstance(snr_db, (int, float)) and not isinstance(snr_db, bool):
        if not math.isfinite(float(snr_db)):
            raise ValueError(f"{name} must be a finite number of dB, got {snr_db!r}; pass e.g. 10.0")
        t = torch.tensor(float(snr_db))
    else:
        try:
            t = torch.as_tensor(snr_db, dtype=torch.float32)
        except Exception as exc:
            raise TypeError(f"{name} must be a number or a real tensor of dB values, got {type(snr_db).__name__}") from exc
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite (dB), got non-finite values {t.flatten()[:4].tolist()}; unknown SNR must be estimated first (genscom.channels.sensing)")
    return t


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
