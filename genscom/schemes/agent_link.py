r"""The agent Python API: ``genscom.load_agent(card)`` -> an :class:`AgentLink` that captions, embeds and retrieves.

One object holds an understanding + generating agent pair (one shared LLM, two LoRA
adapters, :func:`~genscom.agents.agent.load_agent_pair`) joined by the ``agent`` scheme
(:class:`~genscom.schemes.agent.AgentScheme`)::

    clips [B, T, H, W, 3] uint8 --perception--> understanding agent --analog symbols--> channel(snr_db)
        --> generating agent --> captions (B strings) / retrieval embeddings [B, text_dim]

Every call goes through the scheme exactly as the benchmarks do: the transmitter is told the
SNR the receiver fed back (:func:`~genscom.channels.sensing.link_feedback`, pilot estimate,
its bits counted), the symbols cross ``channel`` at ``snr_db``, and the receiver reads them.
``snr_db=None`` (or ``channel=None``) is a noiseless link. Noise comes from a generator
seeded with ``seed``, so a call is reproducible.

Example (offline, the shipped SmolLM2 agents)::

    import genscom
    agent = genscom.load_agent("smollm2-generating")   # a card name or a card file
    agent.caption(clips, channel="awgn", snr_db=5.0)    # ["a red circle moving left ...", ...]
    agent.retrieve(["a blue star"], clips, k=3).indices  # [1, 3] best clips per query
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_CARD = "smollm2-generating"


@dataclass
class Retrieved:
    """Result of :meth:`AgentLink.retrieve`.

    Attributes:
        indices: ``[Q, k]`` int64, the clips ranked best first for each query.
        scores: ``[Q, k]`` float32 cosine similarity of each query and clip (received embedding).
    """

    indices: torch.Tensor
    scores: torch.Tensor


def as_clips(clips: Any) -> torch.Tensor:
    """``clips`` as uint8 ``[B, T, H, W, 3]``: a tensor/array of that shape, ``[B, H, W, 3]`` images
    (``T = 1``), or a sequence of same-shaped ``[T, H, W, 3]`` clips."""
    if isinstance(clips, (list, tuple)):
        if not clips:
            raise ValueError("clips is empty; pass at least one clip [T, H, W, 3]")
        clips = torch.stack([torch.as_tensor(np.asarray(c)) if not isinstance(c, torch.Tensor) else c for c in clips])
    elif isinstance(clips, np.ndarray):
        clips = torch.from_numpy(np.ascontiguousarray(clips))
    if not isinstance(clips, torch.Tensor):
        raise TypeError(f"clips must be a uint8 tensor/array [B, T, H, W, 3] or a list of [T, H, W, 3] clips, "
                        f"got {type(clips).__name__}")
    if clips.dim() == 4:
        clips = clips[:, None]
    if clips.dim() != 5 or clips.shape[-1] != 3 or clips.shape[0] == 0:
        raise ValueError(f"clips must be [B, T, H, W, 3] (or [B, H, W, 3] images) with B >= 1, got shape "
                         f"{tuple(clips.shape)}")
    if clips.dtype != torch.uint8:
        raise TypeError(f"clips must be uint8 pixels 0..255, got dtype {clips.dtype}")
    return clips


class AgentLink:
    """An understanding + generating agent pair over a simulated channel (build with :func:`load_agent`).

    Args:
        scheme: an :class:`~genscom.schemes.agent.AgentScheme` holding both agents.

    Attributes:
        understanding, generating: the two :class:`~genscom.agents.agent.Agent` roles.
        card: the generating agent's :class:`~genscom.agents.card.AgentCard`.
    """

    def __init__(self, scheme: Any) -> None:
        from genscom.schemes.agent import AgentScheme

        if not isinstance(scheme, AgentScheme):
            raise TypeError(f"scheme must be an AgentScheme, got {type(scheme).__name__}; use genscom.load_agent(card)")
        self.scheme = scheme
        self.understanding, self.generating = scheme.understanding, scheme.generating
        self.card = self.generating.card

    @classmethod
    def from_agents(cls, understanding: Any, generating: Any, *, perception: Any = None, batch_size: int = 16,
                    device: str | torch.device = "cpu", repeat: int | str = 1) -> "AgentLink":
        """Wrap an already-built pair (``perception``: its encoder, default the card's ``perception`` profile;
        ``repeat``: the link's repetitions, an integer or ``"adaptive"``, see
        :class:`~genscom.schemes.agent.AgentScheme`)."""
        from genscom.schemes.agent import AgentScheme

        return cls(AgentScheme(agents=(understanding, generating), batch_size=batch_size, device=device,
                               perception=perception, repeat=repeat))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (f"AgentLink(understanding={self.understanding.card.name!r}, generating={self.card.name!r}, "
                f"llm={self.card.llm!r}, perception={self.understanding.card.perception!r})")

    @property
    def encoder(self) -> Any:
        """The perception encoder (clips -> features, text -> query embeddings), built on first use."""
        return self.scheme.perception_encoder()

    # -- the link ------------------------------------------------------------------------------
    def _deliver(self, clips: Any, channel: str | None, snr_db: float | None, seed: int, captions: bool) -> Any:
        from genscom.channels.registry import create_channel
        from genscom.channels.sensing import link_feedback
        from genscom.schemes.base import SourceBatch

        batch = SourceBatch(frames=as_clips(clips))
        g = torch.Generator().manual_seed(int(seed))
        self.scheme.captions = captions
        try:
            if channel is None or snr_db is None:
                return self.scheme.deliver(self.scheme.transmit(batch), None, None)
            ch = create_channel(channel)
            payload = self.scheme.transmit(batch, sensing=link_feedback(ch, float(snr_db), generator=g), generator=g)
            return self.scheme.deliver(payload, ch, float(snr_db), generator=g)
        finally:
            self.scheme.captions = False

    def caption(self, clips: Any, *, channel: str | None = "awgn", snr_db: float | None = 20.0,
                seed: int = 0) -> list[str]:
        """One caption per clip, generated at the receiver after the channel.

        Args:
            clips: uint8 ``[B, T, H, W, 3]`` (see :func:`as_clips`).
            channel: a channel name (``"awgn"``, ``"rayleigh"``, ``"rician"``); ``None``: noiseless.
            snr_db: the channel's SNR in dB; ``None``: noiseless.
            seed: seeds the channel noise and the SNR feedback.
        """
        return list(self._deliver(clips, channel, snr_db, seed, captions=True).extras["captions"])

    def embed(self, clips: Any, *, channel: str | None = "awgn", snr_db: float | None = 20.0,
              seed: int = 0) -> torch.Tensor:
        """Received retrieval embeddings ``[B, text_dim]`` float32 (L2-normalised, in the perception
        encoder's text space, so comparable with :meth:`embed_text`), after the channel."""
        return F.normalize(self._deliver(clips, channel, snr_db, seed, captions=False).embeddings.float(), dim=-1)

    def embed_text(self, queries: Sequence[str]) -> torch.Tensor:
        """Text queries -> ``[Q, text_dim]`` float32 L2-normalised embeddings (the perception encoder's text tower)."""
        from genscom.loading import check_caption

        if isinstance(queries, str) or not isinstance(queries, Iterable):
            raise TypeError(f"queries must be a list of strings, got {type(queries).__name__}")
        texts = [check_caption(q, source=f"query {i}") for i, q in enumerate(queries)]
        if not texts:
            raise ValueError("queries is empty; pass at least one text query")
        with torch.no_grad():
            return F.normalize(self.encoder.encode_text(texts).float().cpu(), dim=-1)

    def retrieve(self, queries: Sequence[str], clips: Any, *, k: int = 5, channel: str | None = "awgn",
                 snr_db: float | None = 20.0, seed: int = 0) -> Retrieved:
        """Rank ``clips`` (sent over the channel, read by the generating agent) for each text query.

        Returns:
            :class:`Retrieved` with ``[Q, min(k, B)]`` indices (best first) and cosine scores.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = self.embed_text(queries)
        gallery = self.embed(clips, channel=channel, snr_db=snr_db, seed=seed)
        if q.shape[1] != gallery.shape[1]:
            raise ValueError(f"the text space ({q.shape[1]}-d) and the agent's retrieval head ({gallery.shape[1]}-d) "
                             f"differ; card {self.card.name!r} needs text_dim = the perception profile's dimension")
        scores, idx = (q @ gallery.t()).topk(min(k, len(gallery)), dim=1)
        return Retrieved(indices=idx, scores=scores)


def load_agent(card: str | os.PathLike[str] = DEFAULT_CARD, *, device: str | torch.device = "cpu",
               search: Iterable[str | os.PathLike[str]] | None = None, batch_size: int = 16,
               perception: Any = None, repeat: int | str = 1) -> AgentLink:
    """Load the agent pair a card describes (either end; its ``partner`` is the other) as an :class:`AgentLink`.

    Args:
        card: a card file, or a card name on the card search path (``search`` folders, then
            ``$GENSCOM_CARDS``, then the shipped ``genscom/cards/``; see :func:`genscom.agents.card.list_cards`).
        device: where the agents (and the perception encoder) run.
        batch_size: items per agent forward.
        perception: an already-built perception encoder (default: the card's ``perception`` profile).
        repeat: sends of the understanding embedding: an integer, or ``"adaptive"`` (chosen from the fed-back
            SNR: 1 at 0 dB and above, up to 8 below; the channel uses grow with it).

    Example:
        >>> agent = load_agent("smollm2-generating")  # doctest: +SKIP
        >>> agent.caption(clips, channel="awgn", snr_db=10.0)  # doctest: +SKIP
    """
    from genscom.agents.agent import load_agent_pair
    from genscom.agents.card import find_card

    u, g = load_agent_pair(find_card(card, search=search), device=device)
    return AgentLink.from_agents(u, g, perception=perception, batch_size=batch_size, device=device, repeat=repeat)


__all__ = ["AgentLink", "DEFAULT_CARD", "Retrieved", "as_clips", "load_agent"]
