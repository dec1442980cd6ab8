"""Channels by name: ``create_channel("rayleigh", coherence=16)``, ``list_channels()``.

Registered: ``"awgn"`` (:class:`AWGNChannel`), ``"rayleigh"`` (:class:`RayleighBlockFading`),
``"rician"`` (:class:`RicianBlockFading`). Add a channel with ``CHANNELS.register("name")(cls)``.
"""

from __future__ import annotations

import inspect
from typing import Any

from genscom._registry import Registry
from genscom.channels.awgn import AWGNChannel
from genscom.channels.base import Channel
from genscom.channels.fading import RayleighBlockFading, RicianBlockFading

CHANNELS: Registry[type[Channel]] = Registry("channel")
CHANNELS.register("awgn")(AWGNChannel)
CHANNELS.register("rayleigh")(RayleighBlockFading)
CHANNELS.register("rician")(RicianBlockFading)


def list_channels() -> list[str]:
    """Registered channel names, sorted."""
    return CHANNELS.names()


def create_channel(name: str, **kwargs: Any) -> Channel:
    """Build the channel registered as ``name`` with its keyword settings.

    Raises ``ValueError`` for an unknown name (listing the known ones) and
    ``TypeError`` for a setting the channel does not take (listing those it does).

    Example:
        >>> create_channel("rician", k_factor=4.0, coherence=32)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a channel name (str), got {type(name).__name__}; known: {', '.join(list_channels())}")
    cls = CHANNELS.get(name)
    sig = inspect.signature(cls)
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        raise TypeError(f"create_channel({name!r}) got bad arguments {sorted(kwargs)}: {exc}; "
                        f"{name!r} accepts: {', '.join(sig.parameters)}") from exc
    return cls(**kwargs)
