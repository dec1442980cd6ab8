"""The ``Scheme`` seam: every way of sending content is a scheme.

A scheme has two halves, ``transmit`` (content -> :class:`Payload`) and
``receive`` (what came out of the channel -> :class:`Delivered`), plus
:meth:`Scheme.send`, which runs both around a channel. The benchmark loops
over schemes x channels x SNRs through :meth:`Scheme.send` only.

Costs are counted where the symbols are made: a :class:`Payload` carries the
exact number of complex channel uses per item (data symbols, pilots and side
information all included) and the side-information bits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from genscom._registry import Registry
from genscom.channels.base import Channel, ChannelOutput


@dataclass
class SourceBatch:
    """What a transmitter holds for a batch of items.

    Attributes:
        frames: ``[B, T, H, W, 3]`` uint8 clips (``T = 1`` for images), or ``None``
            for schemes that only send embeddings.
        embeddings: ``[B, d]`` float clean encoder embeddings (L2-normalised),
            or ``None`` for schemes that only send pixels.
        ids: optional item identifiers.
    """

    frames: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    ids: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.frames is None and self.embeddings is None:
            raise ValueError("SourceBatch needs frames, embeddings, or both; got neither")
        if self.frames is not None:
            if self.frames.dim() != 5 or self.frames.shape[-1] != 3:
                raise ValueError(f"frames must be [B, T, H, W, 3] uint8, got shape {tuple(self.frames.shape)}")
        if self.embeddings is not None and self.embeddings.dim() != 2:
            raise ValueError(f"embeddings must be [B, d], got shape {tuple(self.embeddings.shape)}")
        if self.frames is not None and self.embeddings is not None and len(self.frames) != len(self.embeddings):
            raise ValueError(f"frames ({len(self.frames)}) and embeddings ({len(self.embeddings)}) must have the same batch size")

    def __len__(self) -> int:
        return len(self.frames) if self.frames is not None else len(self.embeddings)  # type: ignore[arg-type]


@dataclass
class Payload:
    """What a transmitter puts on the air.

    Attributes:
        symbols: ``[B, n]`` complex analog symbols (unit average energy), or ``None``.
        channel_uses: ``[B]`` int64, every complex symbol sent per item.
        side_bits: ``[B]`` int64 side-information bits (already inside ``channel_uses``).
        bits: per-item digital payloads (bytes) for digital schemes, or ``None``.
        extras: scheme-specific state the receiver is allowed to know (e.g. shapes).
    """

    symbols: torch.Tensor | None
    channel_uses: torch.Tensor
    side_bits: torch.Tensor
    bits: list[bytes] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delivered:
    """What the receiver makes of a payload.

    Attributes:
        embeddings: ``[B, d]`` received embeddings, or ``None``.
        frames: decoded ``[B, T, H, W, 3]`` uint8 content (or list of per-item tensors), or ``None``.
        failed: ``[B]`` bool, True where decoding failed and a fallback was used.
        channel_uses: ``[B]`` int64, copied from the payload.
        extras: diagnostics (e.g. bit errors, MCS used).
    """

    embeddings: torch.Tensor | None
    frames: torch.Tensor | list[torch.Tensor] | None
    failed: torch.Tensor
    channel_uses: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class Scheme(ABC):
    """Base class of every way of sending. Subclasses set ``name`` and implement the halves."""

    name: str = "scheme"

    @abstractmethod
    def transmit(self, batch: SourceBatch, *, generator: torch.Generator | None = None) -> Payload:
        """Content -> symbols/bits with their exact cost."""

    @abstractmethod
    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Channel output (and the payload's receiver-known ``extras``) -> delivered content."""

    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Pass an already-made payload through ``channel`` at ``snr_db`` and receive it.

        Splitting this from :meth:`transmit` lets a benchmark encode content once
        and sweep channels and SNRs. ``channel=None`` or ``snr_db=None`` means a
        noiseless link. Digital schemes override this to run their LDPC + QAM
        link. Must not mutate ``payload``.
        """
        received = None
        if payload.symbols is not None and channel is not None and snr_db is not None:
            received = channel(payload.symbols, snr_db, generator=generator)
        return self.receive(received, payload, generator=generator)

    def send(self, batch: SourceBatch, channel: Channel | None, snr_db: float | None, *,
             generator: torch.Generator | None = None) -> Delivered:
        """Transmit, pass through ``channel`` at ``snr_db``, receive (``None`` -> noiseless)."""
        return self.deliver(self.transmit(batch, generator=generator), channel, snr_db, generator=generator)


SCHEMES: Registry[type[Scheme]] = Registry("scheme")


def register_scheme(name: str):
    """Class decorator: ``@register_scheme("semantic-analog")``. Refuses duplicates."""
    return SCHEMES.register(name)


def list_schemes() -> list[str]:
    return SCHEMES.names()


def create_scheme(name: str, **kwargs: Any) -> Scheme:
    """Build a registered scheme by name; unknown names raise ``ValueError`` listing the known ones."""
    import genscom.schemes  # noqa: F401  (registers the built-in schemes)

    return SCHEMES.get(name)(**kwargs)
