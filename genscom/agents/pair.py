r"""An understanding + generating agent pair run end to end, for inference and evaluation.

    perception features [B, d_p] --understanding(sensing)--> e [B, embedding_dim]
      --analog symbols, channel(snr), MMSE--> e_hat --generating(sensing)--> retrieval [B, text_dim] (+ captions)

Both ends are told the SNR and channel the link is set to (perfect sensing). The analog link is
:func:`genscom.channels.analog.send_analog`, the physical layer of the ``semantic-analog`` scheme;
:class:`genscom.schemes.agent.AgentScheme` wraps the same steps as a ``Scheme``.
"""

from __future__ import annotations

from typing import Any

import torch

from genscom.agents.prompts import ChannelSensing


def sensing_for(snr_db: float | None, channel: str) -> ChannelSensing:
    """What the agents are told: the SNR (``None``: noiseless) and the channel's name (``"none"``: no channel)."""
    return ChannelSensing(snr_db=None if snr_db is None else float(snr_db), channel=channel)


@torch.no_grad()
def understand(agent: Any, features: torch.Tensor, sensing: ChannelSensing, *, batch_size: int) -> torch.Tensor:
    """Perception features ``[B, d_p]`` -> understanding embeddings ``[B, embedding_dim]`` float32 on the CPU."""
    agent.eval()
    return torch.cat([agent.understand(features[i: i + batch_size], sensing=sensing).float().cpu()
                      for i in range(0, len(features), batch_size)])


@torch.no_grad()
def generate(agent: Any, received: torch.Tensor, sensing: ChannelSensing, *, batch_size: int,
             captions: bool, fusion: float | None = None) -> tuple[torch.Tensor, list[str] | None]:
    """Received embeddings ``[B, embedding_dim]`` -> retrieval embeddings ``[B, text_dim]`` and, with
    ``captions=True``, one greedy caption per item (``fusion``: the attribute-fusion weight, ``None``: the card's)."""
    agent.eval()
    embs, caps = [], []
    for i in range(0, len(received), batch_size):
        chunk = received[i: i + batch_size]
        embs.append(agent(chunk, sensing=sensing).retrieval.float().cpu())
        if captions:
            caps.extend(agent.generate_captions(chunk, sensing=sensing, fusion=fusion))
    return torch.cat(embs), (caps if captions else None)


def caption_scores_for_pair(understanding: Any, generating: Any, *, n_items: int = 64, snr_db: float | None = 20.0,
                            channel: str = "awgn", seed: int = 0, batch_size: int = 16, encoder: Any = None,
                            dataset: Any = None, fusion: float | None = None) -> dict[str, float]:
    """Caption metrics (:func:`genscom.metrics.text.caption_scores`) of an agent pair on the synthetic
    test split (or ``dataset``) at one SNR over ``channel`` (``snr_db=None``: noiseless).

    The channel noise comes from a generator seeded with ``seed + 1``. ``fusion``: the attribute-fusion weight
    of the caption decoding (``None``: the card's; ``0``: the LM alone).
    """
    from genscom.channels.analog import send_analog
    from genscom.channels.registry import create_channel
    from genscom.data import create_dataset
    from genscom.encoders import create_encoder
    from genscom.metrics.text import caption_scores

    ds = dataset if dataset is not None else create_dataset("synthetic", split="test", n_items=n_items, seed=seed)
    enc = encoder if encoder is not None else create_encoder(understanding.card.perception)
    with torch.no_grad():
        feats = enc.encode_clips(ds.stacked_frames()).float()
    ch = None if snr_db is None else create_channel(channel)
    sensing = sensing_for(snr_db, "none" if ch is None else ch.name)
    e = understand(understanding, feats, sensing, batch_size=batch_size)
    e_hat = send_analog(e, ch, snr_db, generator=torch.Generator().manual_seed(seed + 1))
    _, caps = generate(generating, e_hat, sensing, batch_size=batch_size, captions=True, fusion=fusion)
    refs = [ds.captions_of(i) for i in range(len(ds))]
    attrs = [ds.attributes_of(i) for i in range(len(ds))]
    return caption_scores(caps or [], refs, attrs, encoder=enc, vocabulary=getattr(ds, "caption_vocabulary", None))


__all__ = ["caption_scores_for_pair", "generate", "sensing_for", "understand"]
