r"""``agent``: the LLM agents as a scheme.

Transmitter: the understanding agent turns the perception embedding of each
clip (from the card's own ``perception`` encoder run on ``SourceBatch.frames``
when frames are given; else ``SourceBatch.embeddings``, which must then come
from that encoder) into
its understanding embedding, rendered for the *sensed* channel (SNR, type) and
task; it is sent as ``ceil(embedding_dim / 2) * repeat`` analog symbols
(:class:`~genscom.schemes.analog.SemanticAnalogScheme`). Receiver: the
generating agent reads the equalised embedding with the sensed SNR and returns
its retrieval embedding (in the encoder's text space, so the retrieval
benchmark ranks caption queries against it) and, with ``captions=True``, its
captions (``Delivered.extras["captions"]``).

Sensing is honest: the understanding agent is told the SNR the receiver fed back
(:class:`~genscom.channels.sensing.LinkFeedback`, its bits counted), the frame carries pilots on
fading channels (counted), and the generating agent is told the receiver's own estimate.
:meth:`transmit` renders for that feedback (cached per batch, SNR and channel); ``deliver``
never re-runs it.

Repetition: the receiver averages the ``repeat`` copies, so the embedding it reads has the SNR of one
copy plus ``10 log10(repeat)`` dB (exact on AWGN; on fading channels, where each copy is equalised
before the average, an approximation); both agents are told that *effective* SNR (what the embedding
carries), which can lie above the range they were trained on (e.g. 29 dB for 8 copies at 20 dB).
``repeat="adaptive"`` chooses the repetitions from the fed-back SNR estimate, like the adaptive MCS
of the classic link: the fewest (at most ``max_repeat``) that lift it to ``target_snr_db``. The receiver fed that estimate back, so it knows the choice: no side bits.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

from genscom.agents.card import check_fusion_weight
from genscom.agents.pair import generate, sensing_for, understand
from genscom.channels.base import ChannelOutput
from genscom.channels.sensing import LinkFeedback
from genscom.schemes.analog import AnalogPayload, SemanticAnalogScheme, _require_embeddings
from genscom.schemes.base import (Delivered, Payload, RateKnob, Scheme, SourceBatch, expect_payload, feedback_bits,
                                  register_scheme)


@dataclass
class AgentPayload(AnalogPayload):
    """The understanding embedding's analog symbols, and the sensing both agents were told (the fed-back
    SNR estimate ``snr_db``, ``None`` when nothing was fed back, and the ``channel`` name)."""

    snr_db: float | None = None
    channel: str = "none"


@register_scheme("agent")
class AgentScheme(Scheme):
    """Understanding agent -> analog symbols -> channel -> generating agent.

    Args:
        card: either end's agent card (path); its ``partner`` names the other end.
        agents: an already-built ``(understanding, generating)`` pair (overrides ``card``).
        repeat: analog bandwidth expansion (>= 1), or ``"adaptive"``: chosen per link from the fed-back SNR
            estimate (:meth:`repeat_for`).
        target_snr_db: with ``repeat="adaptive"``, the effective SNR (dB) the repetitions aim at.
        max_repeat: with ``repeat="adaptive"``, the most repetitions (the bandwidth cap).
        equalizer: ``"mmse"`` or ``"zf"`` on fading channels.
        captions: also generate captions at the receiver (slow: LLM decoding).
        fusion: weight of the generating agent's ``attributes`` head in caption decoding
            (:mod:`genscom.agents.decoding`); ``None``: the card's ``attribute_fusion``.
        batch_size: items per agent forward.
        device: where the agents run.
        perception: the understanding agent's perception encoder; ``None`` builds the card's
            ``perception`` profile on first use (only when a batch brings frames).
    """

    name = "agent"
    adapts = True

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("repeat", "int", default=1, min=1,
                         help="send the understanding embedding this many times (repeat x its channel uses)"),)

    def __init__(self, *, card: str | os.PathLike[str] | None = None, agents: tuple[Any, Any] | None = None,
                 repeat: int | Literal["adaptive"] = 1, target_snr_db: float = 0.0, max_repeat: int = 8,
                 equalizer: Literal["zf", "mmse"] = "mmse", captions: bool = False, fusion: float | None = None,
                 batch_size: int = 32, device: str | torch.device = "cpu", perception: Any = None) -> None:
        adaptive = repeat == "adaptive"
        if not adaptive and (isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1):
            raise ValueError(f"repeat must be an integer >= 1 or 'adaptive', got {repeat!r}")
        if adaptive and (isinstance(max_repeat, bool) or not isinstance(max_repeat, int) or max_repeat < 1):
            raise ValueError(f"max_repeat must be an integer >= 1, got {max_repeat!r}")
        if adaptive and (isinstance(target_snr_db, bool) or not isinstance(target_snr_db, (int, float))
                         or not math.isfinite(target_snr_db)):
            raise ValueError(f"target_snr_db must be a finite number of dB, got {target_snr_db!r}")
        fusion = check_fusion_weight(fusion, none_ok=True)
        if agents is None:
            if card is None:
                raise ValueError("AgentScheme needs card= (an agent card path) or agents=(understanding, generating)")
            from genscom.agents.agent import load_agent_pair

            agents = load_agent_pair(card, device=device)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.understanding, self.generating = agents
        if fusion and "attributes" not in self.generating.card.heads:
            raise ValueError(f"fusion={fusion} needs a generating card with an attributes head; "
                             f"{self.generating.card.name!r} has heads {self.generating.card.heads}; use fusion=0 or None")
        self.adaptive, self.target_snr_db, self.max_repeat = adaptive, float(target_snr_db), max_repeat
        self.equalizer = equalizer
        self.analog = SemanticAnalogScheme(repeat=1 if adaptive else repeat, equalizer=equalizer)
        self.captions = bool(captions)
        self.fusion = fusion
        self.batch_size = batch_size
        self.name = f"agent-{self.generating.card.name}" + (
            "-adaptive" if adaptive else (f"-x{repeat}" if repeat > 1 else ""))
        self._cache: dict[tuple[Any, ...], torch.Tensor] = {}
        self._perception = perception
        self.device = device

    def perception_encoder(self) -> Any:
        """The encoder the understanding agent perceives with (the card's ``perception`` profile)."""
        if self._perception is None:
            from genscom.encoders import create_encoder

            self._perception = create_encoder(self.understanding.card.perception, device=self.device)
        return self._perception

    # -- the two agents ------------------------------------------------------------
    def understand(self, features: torch.Tensor, snr_db: float | None, channel: str) -> torch.Tensor:
        """Perception features ``[B, d_p]`` -> understanding embeddings ``[B, embedding_dim]`` for the sensed channel."""
        return understand(self.understanding, features, sensing_for(snr_db, channel), batch_size=self.batch_size)

    def generate(self, received: torch.Tensor, snr_db: float | None, channel: str) -> tuple[torch.Tensor, list[str] | None]:
        """Received embeddings ``[B, embedding_dim]`` -> retrieval embeddings ``[B, text_dim]`` (+ captions)."""
        return generate(self.generating, received, sensing_for(snr_db, channel), batch_size=self.batch_size,
                        captions=self.captions, fusion=self.fusion)

    def repeat_for(self, snr_db: float | None) -> int:
        """Repetitions for a fed-back SNR estimate (dB): the fixed ``repeat``, or (adaptive) the fewest
        ``r <= max_repeat`` with ``snr_db + 10 log10(r) >= target_snr_db``; 1 without feedback."""
        if not self.adaptive:
            return self.analog.repeat
        if snr_db is None:
            return 1
        need = 10 ** ((self.target_snr_db - float(snr_db)) / 10)
        return int(min(self.max_repeat, max(1, math.ceil(need - 1e-9))))

    # -- Scheme ----------------------------------------------------------------------
    def _understanding(self, features: torch.Tensor, snr_db: float | None, channel: str) -> torch.Tensor:
        """Understanding embeddings for the told SNR and channel, cached for one batch of features."""
        fingerprint = (tuple(features.shape), float(features.sum()), float(features.abs().sum()))  # not just an address
        key = (None if snr_db is None else float(snr_db), channel, fingerprint)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[2] == key[2]}  # keep one batch's entries
            self._cache[key] = self.understand(features, snr_db, channel)
        return self._cache[key]

    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> AgentPayload:
        """Perceive (frames) or take perception features (embeddings), understand for the fed-back SNR (plus
        ``10 log10(repeat)`` dB) and channel, send as analog symbols with the link's pilots; the feedback bits
        are counted."""
        if batch.frames is not None:  # the agent perceives the content itself
            enc = self.perception_encoder()
            with torch.no_grad():
                feats = enc.encode_clips(batch.frames, batch_size=self.batch_size).float().cpu()
        else:
            feats = _require_embeddings(batch, self.name).float()
        if feats.shape[-1] != self.understanding.card.perception_dim:
            raise ValueError(f"the understanding agent {self.understanding.card.name!r} reads "
                             f"{self.understanding.card.perception_dim}-d perception features "
                             f"(profile {self.understanding.card.perception!r}); got embeddings of size {feats.shape[-1]}")
        snr = None if sensing is None else sensing.snr_db
        channel = "none" if sensing is None else sensing.channel
        repeat = self.repeat_for(snr)
        told = _effective(snr, repeat)  # the SNR of the averaged copies: what the embedding will carry
        link = self.analog if repeat == self.analog.repeat else SemanticAnalogScheme(repeat=repeat,
                                                                                     equalizer=self.equalizer)
        analog = link.transmit(SourceBatch(embeddings=self._understanding(feats, told, channel)), sensing=sensing)
        uses, side = analog.channel_uses, analog.side_bits
        if snr is not None:  # the agents read the fed-back SNR: its bits are on the air
            uses = uses + sensing.feedback_uses  # type: ignore[union-attr]
            side = side + feedback_bits(len(feats), sensing)
        return AgentPayload(symbols=analog.symbols, channel_uses=uses, side_bits=side, pilots=analog.pilots,
                            dim=analog.dim, repeat=analog.repeat, snr_db=snr, channel=channel)

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Equalise and unpack (the analog receiver), then the generating agent reads it with the receiver's
        sensing: its own pilot estimate of the SNR where pilots were sent, else the value it fed back (plus
        ``10 log10(repeat)`` dB for the averaged copies)."""
        payload = expect_payload(payload, AgentPayload, self.name)
        e_hat = self.analog.receive(received, payload).embeddings
        snr = payload.snr_db
        if received is not None and payload.pilots is not None:
            snr = float(received.snr_db.float().mean())
        retrieval, caps = self.generate(e_hat, _effective(snr, payload.repeat), payload.channel)
        return Delivered(embeddings=retrieval, frames=None, failed=torch.zeros(len(retrieval), dtype=torch.bool),
                         channel_uses=payload.channel_uses, extras={"understanding": e_hat, "captions": caps})


def _effective(snr_db: float | None, repeat: int) -> float | None:
    """The SNR (dB) of the average of ``repeat`` copies received at ``snr_db`` each."""
    return None if snr_db is None else float(snr_db) + 10 * math.log10(repeat)
