"""Every file genscom reads, read through one helper that fails with one clear line.

Weights, checkpoints, configs and data files come from users, downloads and interrupted
runs, so each reader here checks what it can before trusting the file, and turns whatever
goes wrong (a truncated safetensors, a pickle where tensors were expected, an empty or
malformed config, a YAML alias bomb, an image declaring a billion pixels) into a
:class:`~genscom.errors.BadFileError` that names the file, what was expected and the fix:

===========================  =====================================================================
reader                       reads (and refuses)
===========================  =====================================================================
:func:`load_torch`           ``torch.load(weights_only=True)`` checkpoints (pickles with code,
                             empty or truncated files)
:func:`load_safetensors`     ``safetensors`` weights (broken headers, truncated data); also
                             :func:`check_safetensors` (header only, for early validation) and
                             :func:`safetensors_shapes` (the header's tensor shapes)
:func:`read_json`            JSON files (size-bounded)
:func:`read_yaml`            YAML with ``safe_load`` (python tags refused; alias bombs refused by
                             :data:`MAX_CONFIG_NODES`)
:func:`read_config_file`     a config file (YAML/JSON) as a mapping: empty files are an error
:func:`load_config`          a config dataclass from a file/dict + overrides: unknown keys and
                             wrong types name the field (then the dataclass's own checks)
:func:`load_numpy`           ``.npy`` arrays without pickles
:func:`load_image`           an image, its declared size checked before decoding
                             (:data:`MAX_IMAGE_PIXELS`); Pillow's decompression-bomb errors
:func:`check_caption`        one caption, at most :data:`MAX_CAPTION_CHARS` characters
===========================  =====================================================================

Nothing here executes code from a file: tensors load with ``weights_only=True``, YAML with
``safe_load``, ``.npy`` with ``allow_pickle=False``.

Example:
    >>> from genscom.loading import read_config_file
    >>> read_config_file("missing.yaml")  # doctest: +SKIP
    genscom.errors.MissingFileError: 'missing.yaml': no such file; expected a config file (YAML or JSON) ...
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any, TypeVar

from genscom.errors import BadFileError, GenscomError, InputTooLargeError, first_line

C = TypeVar("C")

MAX_CONFIG_BYTES = 4 * 2**20        # a config or card file: 4 MiB is far past any real one
MAX_CONFIG_NODES = 100_000          # YAML/JSON nodes after expanding aliases (a billion-laughs file has 10^9)
MAX_JSON_BYTES = 512 * 2**20        # data annotation files (MS-COCO's captions JSON is ~100 MB)
MAX_IMAGE_PIXELS = 50_000_000       # decoded image size (an 8K photo is 33 MP; Pillow's own limit is 89 MP)
MAX_CAPTION_CHARS = 2_000           # one caption (MS-COCO's longest is ~250 characters)
MAX_HEADER_BYTES = 100 * 2**20      # safetensors JSON header (the format's own limit)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """``"TypeName: first line"`` of ``exc`` (:func:`~genscom.errors.first_line`, cut to ``limit`` with ``...``)."""
    line = first_line(exc)
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class MissingFileError(GenscomError, FileNotFoundError):
    """A file that should exist does not (a ``FileNotFoundError`` and a :class:`~genscom.errors.GenscomError`)."""


def check_file(path: str | os.PathLike[str], *, expected: str, fix: str = "", max_bytes: int | None = None,
               allow_empty: bool = False) -> Path:
    """``path`` as a ``Path`` after checking it is an existing, non-empty regular file of at most ``max_bytes``.

    Raises:
        MissingFileError: no such file (a folder counts as missing).
        BadFileError: empty (unless ``allow_empty``) or larger than ``max_bytes``.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "no such file"
        raise MissingFileError(f"{str(p)!r}: {what}; expected {expected}" + (f". Fix: {fix}" if fix else ""))
    size = p.stat().st_size
    if size == 0 and not allow_empty:
        raise BadFileError(p, problem="the file is empty (0 bytes)", expected=expected, fix=fix)
    if max_bytes is not None and size > max_bytes:
        raise BadFileError(p, problem=f"the file has {size} bytes, more than the {max_bytes} allowed",
                           expected=expected, fix=fix)
    return p


# --------------------------------------------------------------------------- tensors
def load_torch(path: str | os.PathLike[str], *, expected: str = "a genscom checkpoint (torch.save of tensors)",
               fix: str = "delete it and start a new run") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; any failure is a :class:`BadFileError`.

    ``weights_only=True`` refuses pickled code (``__reduce__`` payloads are never called).
    """
    import torch

    import pickle

    p = check_file(path, expected=expected, fix=fix)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BadFileError(p, problem="a pickle holding objects other than tensors (refused by weights_only=True; "
                                      "nothing in it was run)", expected=expected, fix=fix) from None
    except Exception as exc:  # EOFError, RuntimeError (truncated zip), ...
        raise BadFileError(p, problem=f"not a readable torch file ({_first_line(exc)})", expected=expected,
                           fix=fix) from None


def check_safetensors(path: str | os.PathLike[str], *, expected: str = "a safetensors weights file",
                      fix: str = "re-create or re-download the weights") -> list[str]:
    """Validate a safetensors file's header (and that its data fits the file) without loading tensors;
    return the tensor names. Cheap: for checking ``--init-from``/``--profile`` folders before any work."""
    from safetensors import safe_open

    p = check_file(path, expected=expected, fix=fix)
    with open(p, "rb") as fh:
        head = fh.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if n < 2 or n > MAX_HEADER_BYTES or 8 + n > p.stat().st_size:
        raise BadFileError(p, problem=f"not a safetensors file (header length {n} does not fit the "
                                      f"{p.stat().st_size}-byte file)", expected=expected, fix=fix)
    try:
        with safe_open(str(p), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # SafetensorError (bad JSON, offsets past the end), OSError
        raise BadFileError(p, problem=f"broken safetensors file ({_first_line(exc)})", expected=expected,
                           fix=fix) from None


def safetensors_shapes(path: str | os.PathLike[str], *, expected: str = "a safetensors weights file",
                       fix: str = "re-create or re-download the weights") -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` from a safetensors file's header, after :func:`check_safetensors`; reads no
    tensor data. For comparing a file with the module a config declares before that module is allocated."""
    from safetensors import safe_open

    check_safetensors(path, expected=expected, fix=fix)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {n: tuple(int(d) for d in f.get_slice(n).get_shape()) for n in f.keys()}
    except Exception as exc:  # SafetensorError, OSError
        raise BadFileError(path, problem=f"broken safetensors file ({_first_line(exc)})", expected=expected,
                           fix=fix) from None


def load_safetensors(path: str | os.PathLike[str], *, device: str = "cpu",
                     expected: str = "a safetensors weights file",
                     fix: str = "re-create or re-download the weights") -> dict[str, Any]:
    """``safetensors.torch.load_file(path, device)`` after :func:`check_safetensors`; failures are :class:`BadFileError`."""
    from safetensors.torch import load_file

    check_safetensors(path, expected=expected, fix=fix)
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # SafetensorError, RuntimeError (dtype), OSError
        raise BadFileError(path, problem=f"broken safetensors file ({_first_line(exc)})", expected=expected,
                           fix=fix) from None


def load_numpy(path: str | os.PathLike[str], *, expected: str = "a .npy array",
               fix: str = "re-create the file") -> Any:
    """``numpy.load(path, allow_pickle=False)``; failures (pickled objects, truncation) are :class:`BadFileError`."""
    import numpy as np

    p = check_file(path, expected=expected, fix=fix, allow_empty=False)
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:  # ValueError (pickled objects, bad header), EOFError, OSError
        raise BadFileError(p, problem=f"not a readable .npy array ({_first_line(exc)})", expected=expected,
                           fix=fix) from None


# --------------------------------------------------------------------------- JSON / YAML
def _count_nodes(obj: Any, path: Path, limit: int) -> int:
    """Nodes of ``obj`` with shared (aliased) parts counted once per use; raises past ``limit`` or on a cycle."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(o: Any, depth: int) -> int:
        if not isinstance(o, (dict, list, tuple)):
            return 1
        key = id(o)
        if key in memo:
            return memo[key]
        if key in active or depth > 200:
            raise BadFileError(path, problem="the document is recursive or nested deeper than 200 levels",
                               expected="a plain mapping of settings", fix="remove the self-referencing alias")
        active.add(key)
        items = list(o.items()) if isinstance(o, dict) else [(None, v) for v in o]
        n = 1
        for k, v in items:
            n += size(k, depth + 1) + size(v, depth + 1)
            if n > limit:
                raise BadFileError(path, problem=f"the document expands to more than {limit} nodes "
                                                 "(a YAML alias bomb?)", expected="a plain mapping of settings",
                                   fix="write the settings out without nested aliases")
        active.discard(key)
        memo[key] = n
        return n

    return size(obj, 0)


def read_json(path: str | os.PathLike[str], *, expected: str = "a JSON file", fix: str = "fix or re-create the file",
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file (UTF-8, at most ``max_bytes``); failures are :class:`BadFileError`."""
    p = check_file(path, expected=expected, fix=fix, max_bytes=max_bytes)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadFileError(p, problem=f"not valid JSON ({_first_line(exc)})", expected=expected, fix=fix) from None


def read_yaml(path: str | os.PathLike[str], *, expected: str = "a YAML file", fix: str = "fix the YAML syntax",
              max_bytes: int = MAX_CONFIG_BYTES, max_nodes: int = MAX_CONFIG_NODES) -> Any:
    """Parse a YAML file with ``yaml.safe_load`` (no python tags), at most ``max_bytes`` and ``max_nodes``
    nodes once aliases are expanded (a billion-laughs file is refused, not expanded)."""
    import yaml

    p = check_file(path, expected=expected, fix=fix, max_bytes=max_bytes)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise BadFileError(p, problem=f"could not parse the YAML ({_first_line(exc)})", expected=expected,
                           fix=fix) from None
    _count_nodes(data, p, max_nodes)
    return data


def read_config_file(path: str | os.PathLike[str], *, expected: str = "a config file (YAML or JSON mapping of "
                     "field: value)", fix: str = "fix the file") -> dict[str, Any]:
    """A YAML/JSON config file as a ``dict`` (``.json``: JSON, anything else: YAML, which also reads JSON).

    Raises:
        MissingFileError: no such file.
        BadFileError: empty (or only comments), unparsable, too large, an alias bomb, or not a mapping.
    """
    p = check_file(path, expected=expected, fix=fix, max_bytes=MAX_CONFIG_BYTES, allow_empty=True)
    if p.stat().st_size == 0:
        raise BadFileError(p, problem="the file is empty (0 bytes)", expected=expected,
                           fix="write the fields to set (an empty file is not taken to mean the defaults)")
    if p.suffix.lower() == ".json":
        data = read_json(p, expected=expected, fix=fix, max_bytes=MAX_CONFIG_BYTES)
        _count_nodes(data, p, MAX_CONFIG_NODES)
    else:
        data = read_yaml(p, expected=expected, fix=fix)
    if data is None:
        raise BadFileError(p, problem="the file holds no settings (only comments or blanks)", expected=expected,
                           fix="write the fields to set (an empty file is not taken to mean the defaults)")
    if not isinstance(data, dict):
        raise BadFileError(p, problem=f"the config holds a {type(data).__name__}, not a mapping", expected=expected,
                           fix=fix)
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise BadFileError(p, problem=f"field names must be strings, got {bad[:3]!r}", expected=expected, fix=fix)
    return data


# --------------------------------------------------------------------------- config dataclasses
def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    """Does ``value`` (as read from YAML/JSON or passed in) fit the annotation ``tp``? Unknown annotations pass."""
    if tp is Any or tp is object:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, a) for a in args)
    if tp is type(None) or tp is None:
        return value is None
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        elem = args[0] if args else Any
        return all(_matches(v, elem) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False
        kt, vt = args if len(args) == 2 else (Any, Any)
        return all(_matches(k, kt) and _matches(v, vt) for k, v in value.items())
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, (dict, tp))
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def check_types(cls: type, data: dict[str, Any]) -> None:
    """Raise ``TypeError`` (``ValueError`` for a value outside a ``Literal``) naming the first field of ``data``
    whose value does not fit ``cls``'s annotation."""
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        tp = hints.get(name, Any)
        if not _matches(value, tp):
            union = typing.get_origin(tp) in (typing.Union, types.UnionType)
            choices = [a for a in typing.get_args(tp) if a is not type(None)] if union else [tp]
            literal = len(choices) == 1 and typing.get_origin(choices[0]) is typing.Literal
            error = ValueError if literal else TypeError  # a wrong choice is a bad value, a list for an int a bad type
            raise error(f"field {name!r} of {cls.__name__} must be {_type_name(choices[0] if literal else tp)}, "
                        f"got {value!r:.80} ({type(value).__name__})")


def load_config(cls: type[C], source: str | os.PathLike[str] | dict[str, Any] | None = None,
                **overrides: Any) -> C:
    """Build config dataclass ``cls`` from a YAML/JSON file or dict, then apply ``overrides`` (``None`` ignored).

    Unknown keys raise ``ValueError`` naming them and the known fields; values whose type does
    not fit the field's annotation raise ``TypeError`` naming the field; then the dataclass's
    ``__post_init__`` checks the values. Errors about a file are :class:`BadFileError` naming it.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls must be a dataclass type, got {cls!r}")
    path: Path | None = None
    if isinstance(source, dict):
        data = dict(source)
    elif source is None:
        data = {}
    else:
        path = Path(source)
        data = read_config_file(path, expected=f"a YAML/JSON mapping of {cls.__name__} fields")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown} for {cls.__name__}; known fields: {sorted(names)}")
        check_types(cls, data)
        data.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown} for {cls.__name__}; known fields: {sorted(names)}")
        return cls(**data)
    except GenscomError:
        raise
    except (ValueError, TypeError) as exc:
        if path is None:
            raise
        raise BadFileError(path, problem=str(exc), expected=f"valid {cls.__name__} fields",
                           fix="correct that field in the file") from None


# --------------------------------------------------------------------------- images and text
def load_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Open an image with Pillow and return it decoded as RGB (a ``PIL.Image.Image``).

    The declared width x height is checked against ``max_pixels`` BEFORE any pixel is
    decoded (Pillow reads only the header in ``open``); Pillow's own ``DecompressionBombError``
    and ``DecompressionBombWarning`` are turned into the same error.

    Raises:
        InputTooLargeError: the image declares more than ``max_pixels`` pixels.
        BadFileError: not an image Pillow reads, or truncated.
    """
    from PIL import Image

    expected = f"an image of at most {max_pixels} pixels"
    p = check_file(path, expected=expected, fix="replace the file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(p) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise InputTooLargeError(f"{str(p)!r}: the image declares {w} x {h} = {w * h} pixels, more than "
                                             f"the {max_pixels} allowed; resize it (or raise max_pixels)")
                return im.convert("RGB")
        except InputTooLargeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's check at open()
            found = re.search(r"\((\d+) pixels\)", str(exc))
            n = f"{int(found.group(1))} pixels" if found else "more pixels than Pillow's limit"
            raise InputTooLargeError(f"{str(p)!r}: the image declares {n}, more than the {max_pixels} allowed "
                                     "(a decompression bomb?); resize it (or raise max_pixels)") from None
        except Exception as exc:  # UnidentifiedImageError, OSError (truncated), SyntaxError, ValueError
            raise BadFileError(p, problem=f"could not decode the image ({_first_line(exc)})", expected=expected,
                               fix="replace the file with a readable image") from None


def check_caption(text: Any, *, source: str = "caption", max_chars: int = MAX_CAPTION_CHARS) -> str:
    """``text`` as a stripped ``str`` of at most ``max_chars`` characters (``source`` names it in the error)."""
    if not isinstance(text, str):
        raise TypeError(f"{source} must be a string, got {type(text).__name__}")
    text = text.strip()
    if len(text) > max_chars:
        raise InputTooLargeError(f"{source} has {len(text)} characters, more than the {max_chars} allowed; "
                                 "shorten it")
    return text


__all__ = [
    "MAX_CAPTION_CHARS", "MAX_CONFIG_BYTES", "MAX_CONFIG_NODES", "MAX_IMAGE_PIXELS", "MAX_JSON_BYTES",
    "MissingFileError", "check_caption", "check_file", "check_safetensors", "check_types", "load_config",
    "load_image", "load_numpy", "load_safetensors", "load_torch", "read_config_file", "read_json", "read_yaml",
    "safetensors_shapes",
]
