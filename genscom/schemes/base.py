"""The ``Scheme`` seam: every way of sending content is a scheme.

A scheme has two halves, ``transmit`` (content -> :class:`Payload`) and
``receive`` (what came out of the channel -> :class:`Delivered`), plus
:meth:`Scheme.send`, which runs both around a channel. The benchmark loops
over schemes x channels x SNRs through :meth:`Scheme.send` only.

Costs are counted where the symbols are made: a :class:`Payload` carries the
exact number of complex channel uses per item (data symbols, pilots and side
information all included) and the side-information bits.

A scheme declares the constructor keywords that set its rate as :class:`RateKnob`
specs (:meth:`Scheme.rate_knobs`), so a UI or a sweep can offer them without reading
constructor signatures; :meth:`Scheme.rate_kwargs` turns chosen values into keywords.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, TypeVar

import numpy as np

import torch

from genscom._registry import Registry
from genscom.channels.base import Channel, ChannelOutput
from genscom.channels.sensing import LinkFeedback, PilotLayout, link_feedback, pass_with_pilots


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
        symbols: ``[B, n]`` complex analog data symbols (unit average energy), or ``None``. Pilots are
            not in it: :meth:`Scheme.deliver` inserts them per ``pilots``.
        channel_uses: ``[B]`` int64, every complex symbol sent per item: data, pilots, side
            information and feedback, counted here, at the transmitter.
        side_bits: ``[B]`` int64 side-information bits (feedback, bitmaps, headers; already inside
            ``channel_uses``).
        bits: per-item digital payloads (bytes) for digital schemes, or ``None``.
        pilots: where pilots go in each item's frame (:class:`~genscom.channels.sensing.PilotLayout`,
            chosen from the :class:`~genscom.channels.sensing.LinkFeedback`), or ``None`` (AWGN, perfect
            CSI, noiseless).
        extras: scheme-specific values the receiver is allowed to know (e.g. shapes).
    """

    symbols: torch.Tensor | None
    channel_uses: torch.Tensor
    side_bits: torch.Tensor
    bits: list[bytes] | None = None
    pilots: PilotLayout | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class DigitalPayload(Payload):
    """A payload carried by a digital link (LDPC + QAM), planned at the transmitter.

    Attributes (besides :class:`Payload`'s; ``symbols`` is ``None``):
        plans: one :class:`~genscom.coding.mcs.LinkPlan` per item: the MCS, repetition, pilots and channel
            uses chosen at transmit (from the fed-back SNR estimate for an adaptive link); the receiver and
            the link follow them, nobody re-plans.
        source_bits: ``[B]`` int64 source bits per item (the bitstream or quantised embedding, before CRC,
            headers and coding); ``side_bits`` holds the rest.
        bit_rows: ``[B, n_bits]`` 0/1 bits of fixed-length payloads (a quantised embedding), or ``None``
            (variable-length bitstreams travel as ``bits``, bytes per item).
    """

    plans: list[Any] = field(default_factory=list)
    source_bits: torch.Tensor | None = None
    bit_rows: torch.Tensor | None = None


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


KnobKind = Literal["int", "float", "choice"]
KNOB_KINDS: tuple[str, ...] = ("int", "float", "choice")


@dataclass(frozen=True)
class RateKnob:
    """One constructor keyword that sets a scheme's rate (channel uses per item), declared for UIs and sweeps.

    Attributes:
        name: the constructor keyword, e.g. ``"repeat"``, ``"k"``, ``"mcs"``.
        kind: ``"int"``, ``"float"`` or ``"choice"``.
        default: the value used when none is chosen; ``None``: not passed (the scheme's own default).
        help: one line for a UI: what the knob does and its unit.
        choices: the allowed values of a ``"choice"`` knob.
        min, max: inclusive bounds of a numeric knob (``None``: open; the scheme may check more,
            e.g. ``k`` up to the adapter's ``k``).
        step: UI step of a numeric knob (``None``: 1 for ``"int"``, a UI default for ``"float"``).
        replaces: knobs this one stands in for: when it has a value, those are not passed
            (``adapted+mu`` takes a ``budget`` or a ``mu``, not both).

    Example:
        >>> RateKnob("repeat", "int", default=1, min=1, help="send the embedding this many times").check(3.0)
        3
    """

    name: str
    kind: KnobKind
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    replaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"RateKnob name must be a constructor keyword (a Python identifier), got {self.name!r}")
        if self.kind not in KNOB_KINDS:
            raise ValueError(f"RateKnob {self.name!r}: kind must be one of {', '.join(KNOB_KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "replaces", tuple(self.replaces))
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"RateKnob {self.name!r}: a 'choice' knob needs choices=(...)")
        if self.kind != "choice" and self.choices:
            raise ValueError(f"RateKnob {self.name!r}: choices= is only for kind='choice', got kind={self.kind!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"RateKnob {self.name!r}: min={self.min} is above max={self.max}")
        if self.name in self.replaces:
            raise ValueError(f"RateKnob {self.name!r} cannot replace itself")
        if self.default is not None:
            self.check(self.default)

    def check(self, value: Any) -> Any:
        """``value`` validated and converted (``int`` for ``"int"``, ``float`` for ``"float"``); ``ValueError`` names
        the knob, the value and what is allowed. A float with an integral value is accepted as an ``"int"``."""
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(value)):
            raise ValueError(f"{self.name} must be a finite number, got {value!r}")
        if self.kind == "int":
            if float(value) != int(value):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            lo = "-inf" if self.min is None else f"{self.min:g}"
            hi = "inf" if self.max is None else f"{self.max:g}"
            raise ValueError(f"{self.name} must be in [{lo}, {hi}], got {value!r}")
        return value


class Scheme(ABC):
    """Base class of every way of sending. Subclasses set ``name`` and implement the halves."""

    name: str = "scheme"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        """The constructor keywords that set this scheme's rate, as :class:`RateKnob` specs (default: none)."""
        return ()

    @classmethod
    def rate_kwargs(cls, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Constructor keywords for chosen rate-knob ``values`` (``{knob name: value}``).

        Each declared knob takes its value from ``values``, else its ``default``; ``None``
        means "not passed". Values are checked (:meth:`RateKnob.check`); a knob with a value
        drops the knobs it ``replaces``. Unknown names raise ``ValueError`` listing the knobs.

        Example:
            >>> get_scheme_class("adapted+mu").rate_kwargs({"budget": 120})  # budget replaces mu
            {'budget': 120}
        """
        knobs = {k.name: k for k in cls.rate_knobs()}
        values = dict(values or {})
        unknown = sorted(set(values) - set(knobs))
        if unknown:
            raise ValueError(f"{cls.__name__} has no rate knob {', '.join(map(repr, unknown))}; its knobs: "
                             f"{', '.join(knobs) or 'none'}")
        out: dict[str, Any] = {}
        for name, knob in knobs.items():
            v = values.get(name, knob.default)
            if v is not None:
                out[name] = knob.check(v)
        for name in list(out):
            for other in knobs[name].replaces:
                out.pop(other, None)
        return out

    adapts: bool = False
    """Whether :meth:`transmit` reads the fed-back SNR (``LinkFeedback.snr_db``): benchmarks transmit again for
    every channel draw of such a scheme, and once per channel for the others."""

    @abstractmethod
    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> Payload:
        """Content -> symbols/bits with their exact cost, decided from what the transmitter knows.

        ``sensing`` is the receiver's feedback (estimated SNR, CSI mode, coherence): the only
        channel knowledge a transmitter has. ``None``: a noiseless link or nothing known (no
        pilots, design defaults).
        """

    @abstractmethod
    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Channel output (and the payload's receiver-known fields) -> delivered content.

        With pilots, ``received`` is the receiver's view: ``h`` and ``noise_var`` are estimates
        (:func:`~genscom.channels.sensing.pass_with_pilots`), never the true channel.
        """

    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Pass an already-made payload through ``channel`` at ``snr_db`` and receive it.

        The transmitter is never re-run here: the payload is what it sent. Pilots are inserted
        per ``payload.pilots`` and the receiver equalises with their estimates. ``channel=None``
        or ``snr_db=None`` means a noiseless link. Digital schemes override this to run their
        LDPC + QAM link. Must not mutate ``payload``.
        """
        received = None
        if payload.symbols is not None and channel is not None and snr_db is not None:
            received = pass_with_pilots(payload.symbols, channel, snr_db, payload.pilots, generator=generator)
        return self.receive(received, payload, generator=generator)

    def send(self, batch: SourceBatch, channel: Channel | None, snr_db: float | None, *,
             sensing: LinkFeedback | None = None, generator: torch.Generator | None = None) -> Delivered:
        """Transmit, pass through ``channel`` at ``snr_db``, receive (``None`` -> noiseless).

        ``sensing`` defaults to the receiver's pilot estimate fed back over 6 bits
        (:func:`~genscom.channels.sensing.link_feedback`); pass ``link_feedback(..., csi="perfect")``
        for the labelled perfect-CSI upper bound.
        """
        if sensing is None and channel is not None and snr_db is not None:
            sensing = link_feedback(channel, float(snr_db), generator=generator)
        return self.deliver(self.transmit(batch, sensing=sensing, generator=generator), channel, snr_db,
                            generator=generator)

    def sent_symbols(self, payload: Payload) -> torch.Tensor:
        """``[B]`` int64: how many leading symbols of each item's ``payload.symbols`` row are data on the air
        (default: the whole row; a scheme whose rows end in unsent zeros, e.g. ``adapted+mu``, says fewer).
        Keyed symbol scrambling (:mod:`genscom.schemes.private`) scrambles exactly these."""
        if payload.symbols is None:
            return torch.zeros(len(payload.channel_uses), dtype=torch.int64)
        b, n = payload.symbols.shape[0], payload.symbols.shape[-1]
        return torch.full((b,), n, dtype=torch.int64)


class ItemLinkScheme(Scheme):
    """A scheme whose payload crosses a digital link (:class:`~genscom.coding.link.DigitalLink`, its ``link``)
    as one byte string per item: ``digital-embedding``, ``jpeg-ldpc``, ``h264-ldpc``.

    The two methods below are the seam where per-item processing of those bytes plugs in (authenticated
    encryption: :class:`genscom.schemes.private.PrivateScheme`): :meth:`link_items` gives each item's bytes as
    :meth:`transmit` made them, :meth:`receive_items` decodes items that arrived whole, or not at all.
    """

    link: Any  # genscom.coding.link.DigitalLink, built by the subclass

    @abstractmethod
    def link_items(self, payload: DigitalPayload) -> list[bytes]:
        """The bytes each item of ``payload`` (made by this scheme's :meth:`transmit`) puts on the link, in item
        order (a bit row is packed MSB first and zero-padded to whole bytes)."""

    @abstractmethod
    def receive_items(self, payload: DigitalPayload, items: list[bytes | None]) -> Delivered:
        """Decode items received whole over the link: ``items[i]`` are item ``i``'s bytes exactly as
        :meth:`link_items` gave them, or ``None`` for an item that was lost (a failed codeword, a failed
        authentication): a counted failure (``Delivered.failed``), never decoded from garbage. ``payload``
        supplies the receiver-known fields only (its bits are not read)."""


def payload_types() -> dict[str, type[Payload]]:
    """Every payload class by name (:class:`Payload` and its subclasses in the registered schemes): what may
    cross the demo's wire."""
    import genscom.schemes  # noqa: F401  (defines the schemes' payload classes)

    out: dict[str, type[Payload]] = {}
    todo: list[type[Payload]] = [Payload]
    while todo:
        cls = todo.pop()
        out[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return out


P = TypeVar("P", bound=Payload)


def expect_payload(payload: Payload, cls: type[P], scheme: str) -> P:
    """``payload`` if it is a ``cls`` (what scheme ``scheme`` transmits), else ``TypeError`` naming both."""
    if not isinstance(payload, cls):
        raise TypeError(f"scheme {scheme!r} receives a {cls.__name__}, got a {type(payload).__name__}: deliver a "
                        f"payload made by the same scheme's transmit()")
    return payload


def frame_uses(n_data: torch.Tensor, sensing: LinkFeedback | None, *, feedback: bool) -> torch.Tensor:
    """``[B]`` int64 channel uses of frames carrying ``n_data`` ``[B]`` data symbols on the link of ``sensing``:
    the data, the pilots of :meth:`LinkFeedback.pilot_layout`, and with ``feedback=True`` (a scheme that read
    ``sensing.snr_db``) the feedback's channel uses."""
    n_data = n_data.to(torch.int64)
    if sensing is None:
        return n_data
    layout = sensing.pilot_layout()
    pilots = n_data.new_tensor([layout.frame_length(int(n)) - int(n) if (layout is not None and int(n) > 0) else 0
                                for n in n_data.tolist()])
    return n_data + pilots + (sensing.feedback_uses if feedback else 0)


def feedback_bits(batch_size: int, sensing: LinkFeedback | None) -> torch.Tensor:
    """``[B]`` int64 feedback bits per item (side information) of ``sensing`` (0 without one)."""
    return torch.full((batch_size,), 0 if sensing is None else sensing.bits, dtype=torch.int64)


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


def get_scheme_class(name: str) -> type[Scheme]:
    """The registered class of scheme ``name`` (e.g. to read its :meth:`Scheme.rate_knobs`); unknown names raise
    ``ValueError`` listing the known ones."""
    import genscom.schemes  # noqa: F401  (registers the built-in schemes)

    return SCHEMES.get(name)
