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

Channel sensing is perfect here: both agents are told the SNR the channel is
set to. Because the understanding agent conditions on it, :meth:`AgentScheme.deliver`
re-runs the understanding side for each SNR (cached per rounded SNR and
channel); :meth:`transmit` prepares the features and counts channel uses.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch

from genscom.agents.pair import generate, sensing_for, understand
from genscom.channels.base import Channel, ChannelOutput
from genscom.schemes.analog import SemanticAnalogScheme, _require_embeddings
from genscom.schemes.base import Delivered, Payload, RateKnob, Scheme, SourceBatch, register_scheme


@register_scheme("agent")
class AgentScheme(Scheme):
    """Understanding agent -> analog symbols -> channel -> generating agent.

    Args:
        card: either end's agent card (path); its ``partner`` names the other end.
        agents: an already-built ``(understanding, generating)`` pair (overrides ``card``).
        repeat: analog bandwidth expansion (>= 1).
        equalizer: ``"mmse"`` or ``"zf"`` on fading channels.
        captions: also generate captions at the receiver (slow: LLM decoding).
        batch_size: items per agent forward.
        device: where the agents run.
        perception: the understanding agent's perception encoder; ``None`` builds the card's
            ``perception`` profile on first use (only when a batch brings frames).
    """

    name = "agent"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("repeat", "int", default=1, min=1,
                         help="send the understanding embedding this many times (repeat x its channel uses)"),)

    def __init__(self, *, card: str | os.PathLike[str] | None = None, agents: tuple[Any, Any] | None = None,
                 repeat: int = 1, equalizer: Literal["zf", "mmse"] = "mmse", captions: bool = False,
                 batch_size: int = 32, device: str | torch.device = "cpu", perception: Any = None) -> None:
        if agents is None:
            if card is None:
                raise ValueError("AgentScheme needs card= (an agent card path) or agents=(understanding, generating)")
            from genscom.agents.agent import load_agent_pair

            agents = load_agent_pair(card, device=device)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.understanding, self.generating = agents
        self.analog = SemanticAnalogScheme(repeat=repeat, equalizer=equalizer)
        self.captions = bool(captions)
        self.batch_size = batch_size
        self.name = f"agent-{self.generating.card.name}" + (f"-x{repeat}" if repeat > 1 else "")
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
                        captions=self.captions)

    # -- Scheme ----------------------------------------------------------------------
    def _symbols(self, features: torch.Tensor, snr_db: float | None, channel: str) -> Payload:
        key = (None if snr_db is None else round(float(snr_db)), channel, features.data_ptr(), tuple(features.shape))
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[2:] == key[2:]}  # keep one batch's entries
            self._cache[key] = self.understand(features, snr_db, channel)
        return self.analog.transmit(SourceBatch(embeddings=self._cache[key]))

    def transmit(self, batch: SourceBatch, *, generator: torch.Generator | None = None) -> Payload:
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
        analog = self._symbols(feats, None, "none")
        return Payload(symbols=analog.symbols, channel_uses=analog.channel_uses, side_bits=analog.side_bits,
                       extras={**analog.extras, "features": feats, "sensing": (None, "none")})

    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Re-render the understanding side for the sensed ``snr_db``/``channel``, send, then :meth:`receive`."""
        noiseless = channel is None or snr_db is None
        ch_name = "none" if noiseless else getattr(channel, "name", "awgn")
        analog = self._symbols(payload.extras["features"], None if noiseless else snr_db, ch_name)
        sent = Payload(symbols=analog.symbols, channel_uses=payload.channel_uses, side_bits=payload.side_bits,
                       extras={**payload.extras, **analog.extras, "sensing": (None if noiseless else float(snr_db), ch_name)})
        received = None if noiseless else channel(sent.symbols, snr_db, generator=generator)
        return self.receive(received, sent, generator=generator)

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        e_hat = self.analog.receive(received, payload).embeddings
        snr, ch = payload.extras.get("sensing", (None, "none"))
        if received is not None:
            ch = received.channel
            snr = float(received.snr_db.float().mean())  # perfect sensing of the set SNR
        retrieval, caps = self.generate(e_hat, snr, ch)
        extras: dict[str, Any] = {"understanding": e_hat}
        if caps is not None:
            extras["captions"] = caps
        return Delivered(embeddings=retrieval, frames=None, failed=torch.zeros(len(retrieval), dtype=torch.bool),
                         channel_uses=payload.channel_uses, extras=extras)
