r"""``memory``: the knowledge-base shortcut. Known content is sent as an index into a base both ends hold.

Per item the transmitter searches its copy of the :class:`~genscom.memory.KnowledgeBase`:

* **hit** (cosine >= ``threshold``): only a signalling frame is sent: 1 flag bit +
  ``ceil(log2 N)`` index bits, protected by 5G LDPC + QAM at ``mcs`` (one codeword of
  ``k = frame bits``, full-fidelity link); the receiver rebuilds the content from
  entry ``index`` of *its* copy.
* **miss**: the same frame (flag = 0) plus the embedding as ``ceil(d/2)`` analog
  symbols (as :class:`~genscom.schemes.analog.SemanticAnalogScheme`).

Channel uses per item = frame channel uses (+ analog symbols on a miss), counted
in :meth:`MemoryScheme.transmit`. Before trusting an index the receiver checks
that the two bases are in sync (version hash carried in the payload; in a real
system exchanged once when the base is shared) and raises
:class:`~genscom.memory.KnowledgeBaseSyncError` otherwise. A frame that decodes
to an index outside the base marks the item failed (gallery-mean fallback).

The base should hold TRAINING content only (PROTOCOL.md); :meth:`MemoryScheme.remember`
grows both copies with delivered misses (the transmitter's clean vector and the
receiver's received vector under the same id, so the copies stay in sync).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from genscom.channels.analog import unit_norm
from genscom.channels.base import Channel, ChannelOutput
from genscom.memory.knowledge_base import KnowledgeBase
from genscom.channels.sensing import LinkFeedback, pass_with_pilots
from genscom.schemes.analog import AnalogPayload, SemanticAnalogScheme, _require_embeddings
from genscom.schemes.base import Delivered, Payload, RateKnob, Scheme, SourceBatch, expect_payload, register_scheme
from genscom.schemes.digital import mcs_knob

if TYPE_CHECKING:
    from genscom.coding.link import DigitalLink


@dataclass
class MemoryPayload(AnalogPayload):
    """Signalling frame fields (``hit`` ``[B]`` bool, ``index`` ``[B]`` int64, ``frame_bits`` per item) and the analog
    embedding of the misses; ``kb_version`` is the base's sync hash (both ends hold the same base)."""

    hit: torch.Tensor | None = None
    index: torch.Tensor | None = None
    frame_bits: int = 0
    kb_version: str = ""


def _as_kb(kb: KnowledgeBase | str | os.PathLike[str], name: str) -> KnowledgeBase:
    if isinstance(kb, KnowledgeBase):
        return kb
    if isinstance(kb, (str, os.PathLike)):
        return KnowledgeBase.load(kb)
    raise TypeError(f"{name} must be a KnowledgeBase or the folder of a saved one, got {type(kb).__name__}")


@register_scheme("memory")
class MemoryScheme(Scheme):
    """Send an index on a knowledge-base hit, else the analog embedding.

    Args:
        knowledge_base: the transmitter's base (or its folder).
        receiver_base: the receiver's copy (default: an exact copy of ``knowledge_base``).
        threshold: cosine similarity at or above which an item is a hit, in [-1, 1].
        mcs: MCS of the signalling frame (e.g. ``"qpsk-1/2"``).

    The frame's :class:`~genscom.coding.link.DigitalLink` (one codeword of :meth:`frame_bits`)
    is built once, on first delivery, and rebuilt only when the base grows past a power of
    two (:meth:`remember`) and the frame gets longer.
    """

    name = "memory"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("threshold", "float", default=0.9, min=-1.0, max=1.0, step=0.01,
                         help="cosine similarity for a hit (a hit sends only the index frame; lower: more hits)"),
                mcs_knob(adaptive=False))

    def __init__(self, *, knowledge_base: KnowledgeBase | str | os.PathLike[str],
                 receiver_base: KnowledgeBase | str | os.PathLike[str] | None = None, threshold: float = 0.9,
                 mcs: str = "qpsk-1/2") -> None:
        from genscom.coding.mcs import get_mcs

        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold!r}")
        self.tx_kb = _as_kb(knowledge_base, "knowledge_base")
        self.rx_kb = self.tx_kb.copy() if receiver_base is None else _as_kb(receiver_base, "receiver_base")
        if self.rx_kb.dim != self.tx_kb.dim:
            raise ValueError(f"receiver_base has dim {self.rx_kb.dim} but knowledge_base has {self.tx_kb.dim}")
        self.threshold = float(threshold)
        self.mcs = get_mcs(mcs)
        self.analog = SemanticAnalogScheme()
        self._link: DigitalLink | None = None

    def frame_bits(self) -> int:
        """Signalling bits per item: 1 flag + ``ceil(log2 N)`` index bits (at least 12, the smallest LDPC k)."""
        return max(12, 1 + self.tx_kb.index_bits())

    def frame_link(self, n_bits: int | None = None) -> DigitalLink:
        """The signalling frames' link: ``mcs``, one codeword of ``n_bits`` (default :meth:`frame_bits`),
        full simulation. Built once and reused while the frame size stays the same."""
        from genscom.coding.link import DigitalLink

        n = self.frame_bits() if n_bits is None else n_bits
        if self._link is None or self._link.k != n:
            self._link = DigitalLink(self.mcs, k=n, fidelity="full")
        return self._link

    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> MemoryPayload:
        """Look each embedding up in the transmitter's base: a hit sends only its signalling frame (flag +
        index), a miss the frame and the analog embedding (with the link's pilots on fading)."""
        from genscom.coding.mcs import channel_uses_for_bits

        emb = unit_norm(_require_embeddings(batch, self.name).float())
        if emb.shape[1] != self.tx_kb.dim:
            raise ValueError(f"embeddings have size {emb.shape[1]} but the knowledge base holds {self.tx_kb.dim}-d vectors")
        b = emb.shape[0]
        scores, index = self.tx_kb.search(emb)
        hit = (scores >= self.threshold) & (index >= 0)
        analog = self.analog.transmit(SourceBatch(embeddings=emb), sensing=sensing)
        n_bits = self.frame_bits()
        frame = channel_uses_for_bits(n_bits, self.mcs, k=n_bits)
        uses = torch.full((b,), frame, dtype=torch.int64) + torch.where(hit, 0, analog.channel_uses)
        return MemoryPayload(symbols=analog.symbols, channel_uses=uses,
                             side_bits=torch.full((b,), n_bits, dtype=torch.int64), pilots=analog.pilots,
                             dim=emb.shape[1], repeat=1, hit=hit, index=torch.where(hit, index, torch.zeros_like(index)),
                             frame_bits=n_bits, kb_version=self.tx_kb.version_hash())

    def _frames(self, payload: MemoryPayload) -> torch.Tensor:
        n = payload.frame_bits
        hit, index = payload.hit, payload.index
        assert hit is not None and index is not None  # always set by transmit
        shifts = torch.arange(n - 2, -1, -1)
        idx_bits = (index[:, None] >> shifts) & 1
        return torch.cat([hit[:, None].to(torch.int64), idx_bits], dim=1).to(torch.uint8)  # [B, n]

    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Signalling frames over the LDPC link, analog symbols (with pilots) over ``channel``, then decode."""
        payload = expect_payload(payload, MemoryPayload, self.name)
        frames = self._frames(payload)
        if channel is None or snr_db is None:
            return self._decode(None, payload, frames)
        link = self.frame_link(payload.frame_bits)
        frames_hat = link.send_bits(frames, float(snr_db), channel=channel,
                                    generator=generator).bits_hat.round().to(torch.uint8)
        received = pass_with_pilots(payload.symbols, channel, float(snr_db), payload.pilots, generator=generator)
        return self._decode(received, payload, frames_hat)

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Decode with the signalling frames as sent (:meth:`deliver` sends them over their own link)."""
        payload = expect_payload(payload, MemoryPayload, self.name)
        return self._decode(received, payload, self._frames(payload))

    def _decode(self, received: ChannelOutput | None, payload: MemoryPayload, frames: torch.Tensor) -> Delivered:
        self.rx_kb.check_sync(payload.kb_version)
        frames = frames.to(torch.int64)
        hit_hat = frames[:, 0] == 1
        weights = 2 ** torch.arange(frames.shape[1] - 2, -1, -1)
        index_hat = (frames[:, 1:] * weights).sum(dim=1)
        emb = self.analog.receive(received, payload).embeddings.clone()
        valid = hit_hat & (index_hat < len(self.rx_kb))
        if valid.any():
            emb[valid] = unit_norm(self.rx_kb.get(index_hat[valid]))
        failed = hit_hat & ~valid
        if failed.any() and (~failed).any():
            emb[failed] = unit_norm(emb[~failed].mean(dim=0, keepdim=True))
        sent_hit, sent_index = payload.hit, payload.index
        assert sent_hit is not None and sent_index is not None
        return Delivered(embeddings=emb, frames=None, failed=failed, channel_uses=payload.channel_uses,
                         extras={"hit": sent_hit, "hit_rate": float(sent_hit.float().mean()),
                                 "index_errors": int(((hit_hat != sent_hit) | (sent_hit & (index_hat != sent_index))).sum())})

    def remember(self, embeddings: torch.Tensor, payload: Payload, delivered: Delivered, *, ids: list[str],
                 metadata: list[dict[str, Any]] | None = None) -> int:
        """Grow both copies with the misses (same ids at both ends): the transmitter adds its clean
        ``embeddings`` ``[B, d]``, the receiver what it delivered. Returns how many were added."""
        payload = expect_payload(payload, MemoryPayload, self.name)
        assert payload.hit is not None
        miss = ~payload.hit
        if len(ids) != len(miss) or len(embeddings) != len(miss):
            raise ValueError(f"ids and embeddings must have one entry per item ({len(miss)}), got {len(ids)} ids and "
                             f"{len(embeddings)} embeddings")
        sel = [i for i in range(len(miss)) if bool(miss[i])]
        if not sel:
            return 0
        meta = [metadata[i] for i in sel] if metadata is not None else None
        self.tx_kb.add(unit_norm(embeddings[sel].float()), ids=[ids[i] for i in sel], metadata=meta)
        self.rx_kb.add(delivered.embeddings[sel], ids=[ids[i] for i in sel], metadata=meta)
        return len(sel)
