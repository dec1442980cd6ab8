"""Semantic schemes that send the embedding itself as analog symbols.

``noiseless``: the clean embedding, no channel (the upper bound of every table).
``semantic-analog``: the L2-normalised embedding packed two reals per channel
use, scaled to unit average energy per complex symbol, optionally repeated
``repeat`` times (bandwidth expansion for equal-channel-use comparisons; the
receiver averages the equalised copies, a ``10 log10(repeat)`` dB gain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from genscom.channels.analog import pack_analog, unit_norm, unpack_analog
from genscom.channels.base import ChannelOutput
from genscom.channels.fading import equalize_received
from genscom.channels.sensing import LinkFeedback
from genscom.schemes.base import (Delivered, Payload, RateKnob, Scheme, SourceBatch, expect_payload, frame_uses,
                                  register_scheme)


def _require_embeddings(batch: SourceBatch, scheme: str) -> torch.Tensor:
    if batch.embeddings is None:
        raise ValueError(f"scheme {scheme!r} sends embeddings; build the SourceBatch with embeddings=[B, d]")
    return batch.embeddings


@dataclass
class NoiselessPayload(Payload):
    """The clean embeddings themselves (``embeddings`` ``[B, d]``): a reference, not a real link."""

    embeddings: torch.Tensor | None = None


@dataclass
class AnalogPayload(Payload):
    """Analog symbols of embeddings of ``dim`` reals (the receiver knows ``dim`` and ``repeat`` by convention)."""

    dim: int = 0
    repeat: int = 1


@register_scheme("noiseless")
class NoiselessScheme(Scheme):
    """The clean embedding delivered exactly: the upper bound row. Costs 0 channel uses (not a real link)."""

    name = "noiseless"

    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> NoiselessPayload:
        emb = _require_embeddings(batch, self.name)
        zeros = torch.zeros(len(emb), dtype=torch.int64)
        return NoiselessPayload(symbols=None, channel_uses=zeros, side_bits=zeros.clone(), embeddings=emb)

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        emb = expect_payload(payload, NoiselessPayload, self.name).embeddings
        assert emb is not None  # always set by transmit
        return Delivered(embeddings=unit_norm(emb.float()), frames=None,
                         failed=torch.zeros(len(emb), dtype=torch.bool), channel_uses=payload.channel_uses)


@register_scheme("semantic-analog")
class SemanticAnalogScheme(Scheme):
    """Embedding ``[B, d]`` -> ``ceil(d/2) * repeat`` complex symbols with unit average energy.

    Args:
        repeat: integer bandwidth expansion (>= 1).
        equalizer: ``"mmse"`` or ``"zf"`` on fading channels, with the receiver's CSI (pilot estimates, or
            the true channel for the ``csi="perfect"`` upper bound).

    No side information and no feedback (it does not adapt): the receiver knows ``d`` and ``repeat`` by
    convention. On fading channels the frame carries the link's pilots (counted).
    """

    name = "semantic-analog"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("repeat", "int", default=1, min=1,
                         help="send the embedding this many times: repeat x ceil(d/2) channel uses, +10 log10(repeat) dB"),)

    def __init__(self, *, repeat: int = 1, equalizer: Literal["zf", "mmse"] = "mmse") -> None:
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
        if equalizer not in ("zf", "mmse"):
            raise ValueError(f"equalizer must be 'zf' or 'mmse', got {equalizer!r}")
        self.repeat = repeat
        self.equalizer = equalizer
        if repeat > 1:
            self.name = f"semantic-analog-x{repeat}"

    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> AnalogPayload:
        emb = _require_embeddings(batch, self.name).float()
        b, d = emb.shape
        sym = pack_analog(emb, repeat=self.repeat)  # [B, ceil(d/2) * repeat], mean |s|^2 = 1
        uses = frame_uses(torch.full((b,), sym.shape[1]), sensing, feedback=False)
        return AnalogPayload(symbols=sym, channel_uses=uses, side_bits=torch.zeros(b, dtype=torch.int64),
                             pilots=None if sensing is None else sensing.pilot_layout(), dim=d, repeat=self.repeat)

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        payload = expect_payload(payload, AnalogPayload, self.name)
        assert payload.symbols is not None  # always set by transmit
        x_hat = payload.symbols if received is None else equalize_received(received, method=self.equalizer)
        b = x_hat.shape[0]
        emb = unpack_analog(x_hat, dim=payload.dim, repeat=payload.repeat)
        return Delivered(embeddings=emb, frames=None,
                         failed=torch.zeros(b, dtype=torch.bool), channel_uses=payload.channel_uses)
