"""Where shipped and user-trained weights are found.

genscom ships small trained weights as package data: the mini towers in
``genscom/encoders/weights/<profile>`` and the channel / LoRA adapters in
``genscom/adapters/<name>``, so an editable checkout and a plain wheel install find
them alike. A name is looked up along the **adapter search path**, first match wins:

1. the folders passed in ``search`` (e.g. the CLI's ``--adapters-dir``);
2. the folders in the ``GENSCOM_ADAPTERS`` environment variable (``os.pathsep``-separated);
3. the shipped folder, :data:`SHIPPED_ADAPTERS`.

Training commands never write into the shipped folder by default (they write under
``runs/``); put a trained adapter on the path with ``GENSCOM_ADAPTERS`` or pass its folder.

Example:
    >>> find_adapter("mini-k192").name
    'mini-k192'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SHIPPED_ADAPTERS = Path(__file__).resolve().parent / "adapters"
ENV_ADAPTERS = "GENSCOM_ADAPTERS"


def adapter_search_path(search: Iterable[str | os.PathLike[str]] | None = None) -> list[Path]:
    """The folders searched for adapters by name, in order (see the module doc)."""
    env = os.environ.get(ENV_ADAPTERS, "")
    folders = [Path(p).expanduser() for p in (search or ())]
    folders += [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    folders.append(SHIPPED_ADAPTERS)
    return folders


def list_adapters(search: Iterable[str | os.PathLike[str]] | None = None) -> list[str]:
    """Sorted names of the adapter folders (those holding a ``config.json``) on the search path."""
    names: set[str] = set()
    for folder in adapter_search_path(search):
        if folder.is_dir():
            names.update(d.name for d in folder.iterdir() if (d / "config.json").is_file() or
                         (d / "adapter_config.json").is_file())
    return sorted(names)


TRAIN_COMMANDS = ("genscom train adapter | decoder | deepjscc | classifier, or genscom finetune agents")


def find_adapter(name_or_path: str | os.PathLike[str], *,
                 search: Iterable[str | os.PathLike[str]] | None = None, train_command: str = TRAIN_COMMANDS) -> Path:
    """An existing adapter folder: ``name_or_path`` itself if it is a folder, else a name on the search path.
    ``train_command`` is the command the error suggests for making one (e.g. ``"genscom train decoder"``).

    Raises:
        FileNotFoundError: neither; the message lists the folders searched and the names found.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    name = str(name_or_path)
    if name and "/" not in name and "\\" not in name and name not in (".", ".."):
        for folder in adapter_search_path(search):
            if (folder / name).is_dir():
                return folder / name
    searched = ", ".join(str(f) for f in adapter_search_path(search))
    raise FileNotFoundError(f"adapter {name!r} is neither a folder nor a name on the adapter search path "
                            f"({searched}); known names: {list_adapters(search)}. Pass a folder, add one to "
                            f"${ENV_ADAPTERS}, or train one (`{train_command}`)")


__all__ = ["ENV_ADAPTERS", "SHIPPED_ADAPTERS", "TRAIN_COMMANDS", "adapter_search_path", "find_adapter", "list_adapters"]
