"""The demo's transmitter and receiver, without any UI.

:class:`DemoTransmitter` turns a :class:`~genscom.demo.content.DemoItem` into a wire
message (the semantic scheme's payload and the H.264/JPEG + LDPC baseline's payload
of the same content); :class:`DemoReceiver` simulates the channel on a message,
decodes both transmissions and ranks its gallery for a text query. The Gradio app
(:mod:`genscom.demo.app`) only calls these.

The receiver's gallery is the offline synthetic test split (clean embeddings: clips
received earlier); the received item replaces its own entry (or joins the gallery
when it is new to it), and its rank for the query is reported (:mod:`genscom.metrics.retrieval`
ranks, ties at the mid-rank). Optional features (``adapted`` / ``agent`` schemes,
diffusion heads) are picked up when importable and otherwise reported by
:func:`optional_features`.

The demo knows schemes only through their public API: the rate knobs each declares
(:meth:`~genscom.schemes.base.Scheme.rate_knobs`) become the panel's controls, and each
scheme's ``transmit`` renders the payload from the receiver's fed-back SNR estimate
(:func:`~genscom.channels.sensing.link_feedback`) before it goes on the wire; the receiver
only delivers it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from genscom.channels.sensing import link_feedback
from genscom.demo.content import DemoItem, load_real_item, real_choices
from genscom.demo.guard import WireLimits, WireRejected, validate_message
from genscom.demo.wire import Transmission, WireMessage, decode_message, encode_message
from genscom.schemes.base import Delivered, Scheme, SourceBatch

if TYPE_CHECKING:
    from genscom.coding.link import DigitalLink

logger = logging.getLogger(__name__)

from genscom.demo.options import (BASELINE_SCHEMES, CHANNEL_NAMES, DEFAULT_RESULTS, DemoConfig, NEEDS_SETUP, TASKS, Task, TxSettings, baseline_for, demo_settings, initial_knob_values, offered_schemes, optional_features, own_settings, rate_knobs, scheme_settings, semantic_schemes)  # noqa: F401  (re-exported)
from genscom.demo.captions import hit_token_limit, tidy_caption
from genscom.demo.tasks import check_task


class _SchemeCache:
    """Scheme instances per (name, settings), least recently used first out, at most ``maxsize``.

    :meth:`get` builds a missing scheme without keeping it; :meth:`keep` stores it, which the receiver
    does only after a successful receive (a rejected message leaves nothing behind).
    """

    def __init__(self, maxsize: int = 8) -> None:
        self.maxsize = int(maxsize)
        self._cache: OrderedDict[str, Scheme] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def _key(name: str, settings: dict[str, Any]) -> str:
        return name + json.dumps(settings, sort_keys=True, default=str)

    def get(self, name: str, settings: dict[str, Any], *, keep: bool = True,
            own: dict[str, Any] | None = None) -> Scheme:
        """The scheme ``name`` built with ``settings`` plus ``own`` (this end's own keywords, constant per process
        and left out of the key: :func:`~genscom.demo.options.own_settings`)."""
        from genscom.schemes.base import create_scheme

        key = self._key(name, settings)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        scheme = create_scheme(name, **settings, **(own or {}))
        if keep:
            self.keep(name, settings, scheme)
        return scheme

    def keep(self, name: str, settings: dict[str, Any], scheme: Scheme) -> None:
        key = self._key(name, settings)
        self._cache[key] = scheme
        self._cache.move_to_end(key)
        while len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)


def _channel(name: str):
    from genscom.channels.registry import create_channel

    return create_channel(name)


def _demo_link(cache: dict[str, DigitalLink], mcs: str) -> DigitalLink:
    """A full-fidelity :class:`~genscom.coding.link.DigitalLink` at ``mcs`` from ``cache`` (built once per MCS)."""
    from genscom.coding.link import DigitalLink

    if mcs not in cache:
        cache[mcs] = DigitalLink(mcs, fidelity="full")
    return cache[mcs]


# ---------------------------------------------------------------------------- transmitter
@dataclass
class TxResult:
    """What the transmitter made: the wire bytes and what the panel shows."""

    item: DemoItem
    settings: TxSettings
    message: bytes
    scheme_name: str
    channel_uses: int
    side_bits: int
    bits: int | None
    symbols: torch.Tensor | None  # [n] complex sent symbols of the item, or None (digital)
    baseline: dict[str, Any]  # name, bits, channel_uses for the simulated baseline and the other bitstream
    notes: list[str] = field(default_factory=list)


class DemoTransmitter:
    """Encode content, build both payloads, serialise them for the air."""

    def __init__(self, config: DemoConfig, *, encoder: Any = None) -> None:
        from genscom.data import create_dataset
        from genscom.encoders import create_encoder

        self.config = config
        self.encoder = encoder if encoder is not None else create_encoder(config.profile)
        self.dataset = create_dataset("synthetic", split="test", n_items=config.gallery_size, seed=config.seed,
                                      num_frames=config.num_frames)
        self.schemes = _SchemeCache(config.scheme_cache_size)
        self._links: dict[str, DigitalLink] = {}
        self._lock = threading.Lock()

    def choices(self) -> list[tuple[str, str]]:
        """``(label, key)`` of the offline gallery: synthetic test clips, then real clips/images."""
        syn = [(f"clip {i}: {self.dataset.captions_of(i)[0]}", f"synthetic/{i}") for i in range(len(self.dataset))]
        return syn + real_choices()

    def item(self, key: str) -> DemoItem:
        """The gallery item ``key`` (``"synthetic/3"``, ``"real-clip/bikes"``, ``"real-image/astronaut"``)."""
        kind, _, name = str(key).partition("/")
        if kind == "synthetic":
            try:
                i = int(name)
                frames = self.dataset.load_frames(i)
            except (ValueError, IndexError):
                raise ValueError(f"unknown gallery clip {key!r}; choose one of synthetic/0..synthetic/{len(self.dataset) - 1}") from None
            return DemoItem(key=key, label=f"clip {i}", frames=frames, captions=self.dataset.captions_of(i),
                            gallery_index=i)
        if kind in ("real-clip", "real-image"):
            return load_real_item(kind, name, max_side=self.config.max_side, num_frames=self.config.num_frames)
        raise ValueError(f"unknown gallery item {key!r}; choose one from the list")

    @torch.no_grad()
    def transmit(self, item: DemoItem, settings: TxSettings) -> TxResult:
        """Encode ``item``, build the semantic and the baseline payloads, serialise them (:mod:`genscom.demo.wire`)."""
        from genscom.coding.mcs import channel_uses_for_bits
        from genscom.coding.source import encode_h264, encode_jpeg

        check_task(settings.task, settings.scheme, self.config)  # a task is only sent with a scheme that serves it
        with self._lock:
            frames = item.frames
            emb = self.encoder.encode_clips(frames[None]).float().cpu()  # [1, d]
            batch = SourceBatch(frames=frames[None], embeddings=emb, ids=[item.key])
            kw = scheme_settings(settings.scheme, settings=settings, config=self.config)
            scheme = self.schemes.get(settings.scheme, kw, own=own_settings(settings.scheme, self.config))
            # what the transmitter knows: the receiver's pilot estimate of the SNR, fed back (counted by the schemes)
            sensing = link_feedback(_channel(settings.channel), float(settings.snr_db),
                                    generator=torch.Generator().manual_seed(settings.seed))
            payload = scheme.transmit(batch, sensing=sensing)
            b_name, b_kw = baseline_for(frames, self.config)
            base = self.schemes.get(b_name, b_kw)
            b_payload = base.transmit(SourceBatch(frames=frames[None]), sensing=sensing)
            for what, p in (("the scheme", payload), ("the baseline", b_payload)):
                n = int(p.channel_uses.max()) if p.channel_uses.numel() else 0
                if p.symbols is not None:
                    n = max(n, int(p.symbols.shape[-1]))
                if n > self.config.max_channel_uses:
                    raise ValueError(f"{what} would send {n:,} channel uses per item; the demo's budget is "
                                     f"{self.config.max_channel_uses:,} (DemoConfig.max_channel_uses): choose a "
                                     "smaller rate knob or a smaller clip")
            msg = WireMessage(transmissions=[Transmission(settings.scheme, kw, payload, "semantic"),
                                             Transmission(b_name, b_kw, b_payload, "baseline")],
                              channel=settings.channel, snr_db=settings.snr_db, seed=settings.seed,
                              eval={"item": item.key, "gallery_index": item.gallery_index, "task": settings.task})
            data = encode_message(msg)
            if len(data) > self.config.max_message_bytes:
                raise ValueError(f"the wire message is {len(data):,} bytes; the demo sends at most "
                                 f"{self.config.max_message_bytes:,} (DemoConfig.max_message_mb)")
            # costs, as the schemes count them (a digital scheme at an adaptive MCS: at the MCS chosen for the SNR)
            bits = None
            if payload.symbols is not None:
                uses = int(payload.channel_uses[0])
            else:
                n_bits = int(payload.bit_rows.shape[1]) if getattr(payload, "bit_rows", None) is not None else \
                    8 * sum(len(b) for b in (payload.bits or []))
                bits = n_bits
                uses = int(payload.channel_uses[0])  # counted by the scheme at a fixed MCS; 0 for an adaptive one
                if n_bits and not uses and "mcs" in kw:
                    uses = self._adaptive_uses(n_bits, str(kw["mcs"]), settings)
            b_bits = int(b_payload.source_bits[0]) + int(b_payload.side_bits[0])
            other = "jpeg-ldpc" if b_name == "h264-ldpc" else "h264-ldpc"
            if other == "jpeg-ldpc":
                o_bits = sum(8 * len(encode_jpeg(f, quality=self.config.jpeg_quality)) + 32 for f in frames)
            else:
                o_bits = 8 * len(encode_h264(frames, crf=self.config.h264_crf)) + 32 if frames.shape[0] > 1 else None
            baseline = {"name": b_name, "bits": b_bits, "channel_uses": int(b_payload.channel_uses[0]),
                        "other": other, "other_bits": o_bits,
                        "other_channel_uses": channel_uses_for_bits(o_bits, self.config.mcs) if o_bits else None}
            sym = payload.symbols[0].detach().cpu() if payload.symbols is not None else None
            return TxResult(item=item, settings=settings, message=data, scheme_name=getattr(scheme, "name", settings.scheme),
                            channel_uses=uses, side_bits=int(payload.side_bits[0]), bits=bits, symbols=sym,
                            baseline=baseline)

    def _adaptive_uses(self, n_bits: int, mcs: str, settings: TxSettings) -> int:
        """Channel uses of ``n_bits`` on an adaptive link: at the MCS it chooses for the sensed SNR and channel."""
        link = _demo_link(self._links, mcs)
        return link.channel_uses_for_bits(n_bits, link.select(settings.snr_db, _channel(settings.channel)))


# ---------------------------------------------------------------------------- receiver
@dataclass
class RxResult:
    """What the receiver made of one message."""

    message: WireMessage
    scheme_name: str
    embedding: torch.Tensor | None  # [d] received embedding (semantic)
    failed: bool
    channel_uses: int
    captions: list[str] | None
    sent: np.ndarray | None  # complex sample of sent symbols (for the constellation)
    received: np.ndarray | None  # complex sample of equalised received symbols
    baseline_name: str = ""
    baseline_frames: torch.Tensor | None = None  # [T, H, W, 3] decoded, or None
    baseline_failed: bool = True
    baseline_block_errors: int = 0
    baseline_channel_uses: int = 0
    baseline_embedding: torch.Tensor | None = None
    regenerated: torch.Tensor | None = None  # [H, W, 3] uint8 frame drawn from the received embedding (regen)
    version: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-able reply of the receiver process."""
        def pts(a):
            return None if a is None else [[float(v.real), float(v.imag)] for v in a[:256]]

        return {"ok": True, "scheme": self.scheme_name, "channel": self.message.channel, "snr_db": self.message.snr_db,
                "channel_uses": self.channel_uses, "failed": self.failed, "captions": self.captions,
                "embedding": None if self.embedding is None else [float(v) for v in self.embedding],
                "constellation": {"sent": pts(self.sent), "received": pts(self.received)},
                "baseline": {"scheme": self.baseline_name, "failed": self.baseline_failed,
                             "block_errors": self.baseline_block_errors, "channel_uses": self.baseline_channel_uses,
                             "frames": None if self.baseline_frames is None else list(self.baseline_frames.shape)},
                "regenerated": None if self.regenerated is None else list(self.regenerated.shape),
                "version": self.version}


@dataclass
class Ranking:
    """Top-k of the receiver's gallery for a query, and the true item's rank (1 = best)."""

    query: str
    top: list[tuple[int, float, str]]  # (gallery position, score, label)
    rank: float  # 1-based; ties at the mid-rank
    n: int
    baseline_rank: float | None


class DemoReceiver:
    """Simulate the air on a wire message, decode it, rank the gallery for text queries."""

    def __init__(self, config: DemoConfig, *, encoder: Any = None) -> None:
        from genscom.data import create_dataset
        from genscom.encoders import create_encoder

        self.config = config
        self.encoder = encoder if encoder is not None else create_encoder(config.profile)
        self.dataset = create_dataset("synthetic", split="test", n_items=config.gallery_size, seed=config.seed,
                                      num_frames=config.num_frames)
        frames = self.dataset.stacked_frames()
        with torch.no_grad():
            self.gallery = self.encoder.encode_clips(frames).float().cpu()  # [N, d]
        self.thumbs = [frames[i, frames.shape[1] // 2].numpy() for i in range(len(frames))]
        self.labels = [self.dataset.captions_of(i)[0] for i in range(len(frames))]
        self.schemes = _SchemeCache(config.scheme_cache_size)
        self._links: dict[str, DigitalLink] = {}
        self._lock = threading.Lock()
        self.latest: RxResult | None = None
        self.version = 0

    @property
    def limits(self) -> WireLimits:
        """What this receiver accepts on the wire (:class:`~genscom.demo.guard.WireLimits`, from its config)."""
        return WireLimits.from_config(self.config, embedding_dim=int(self.gallery.shape[1]))

    @torch.no_grad()
    def receive(self, data: bytes) -> RxResult:
        """Wire bytes -> :class:`RxResult` (also kept as :attr:`latest`).

        The message is checked against this receiver's configuration first
        (:func:`~genscom.demo.guard.validate_message`); a bad message raises ``ValueError``
        (:class:`~genscom.demo.guard.WireRejected`, status 400) and changes nothing here: neither
        :attr:`latest` nor the scheme cache.
        """
        if isinstance(data, (bytes, bytearray)) and len(data) > self.config.max_message_bytes:
            raise WireRejected(413, f"message of {len(data)} bytes exceeds {self.config.max_message_bytes}")
        try:
            msg = decode_message(data)
        except WireRejected:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
            raise WireRejected(400, str(exc) if isinstance(exc, ValueError) else
                               f"malformed message ({type(exc).__name__}: {str(exc)[:200]})") from None
        msg = validate_message(msg, self.config, self.limits)
        gen = torch.Generator().manual_seed(int(msg.seed))
        channel = _channel(msg.channel)
        with self._lock:
            sem = next(t for t in msg.transmissions if t.role == "semantic")
            base = next((t for t in msg.transmissions if t.role == "baseline"), None)
            own = own_settings(sem.scheme, self.config)  # e.g. regen's decoder: the receiver's own, never the sender's
            scheme = self.schemes.get(sem.scheme, sem.settings, keep=False, own=own)
            delivered, sent, rec = self._deliver(scheme, sem, channel, msg.snr_db, gen, int(msg.seed))
            caps = delivered.extras.get("captions")
            emb = None if delivered.embeddings is None else delivered.embeddings[0].float().cpu()
            if emb is not None and not bool(torch.isfinite(emb).all()):
                raise WireRejected(400, "the delivered embedding is not finite; the message is rejected")
            res = RxResult(message=msg, scheme_name=getattr(scheme, "name", sem.scheme), embedding=emb,
                           failed=bool(delivered.failed[0]), channel_uses=int(delivered.channel_uses[0]),
                           captions=[tidy_caption(c, truncated=hit_token_limit(scheme, c)) for c in caps] if caps
                           else None, sent=sent, received=rec)
            if delivered.frames is not None:  # a generating scheme drew the frame at this receiver
                drawn = delivered.frames[0]  # [T, H, W, 3]
                res.regenerated = drawn[drawn.shape[0] // 2].cpu()
            bs = None
            if base is not None:
                bs = self.schemes.get(base.scheme, base.settings, keep=False)
                bd = bs.deliver(base.payload, channel, msg.snr_db, generator=gen)
                fr = bd.frames[0] if bd.frames is not None else None
                res.baseline_name = base.scheme
                res.baseline_frames = fr
                res.baseline_failed = fr is None
                res.baseline_block_errors = int((bd.extras.get("block_errors") or [0])[0])
                res.baseline_channel_uses = int(bd.channel_uses[0])
                res.baseline_embedding = (self.encoder.encode_clips(fr[None]).float().cpu()[0] if fr is not None
                                          else torch.nn.functional.normalize(self.gallery.mean(0), dim=0))
            # a successful receive: only now the schemes join the (bounded) cache and the result is shown
            self.schemes.keep(sem.scheme, sem.settings, scheme)
            if bs is not None:
                self.schemes.keep(base.scheme, base.settings, bs)  # type: ignore[union-attr]
            self.version += 1
            res.version = self.version
            self.latest = res
            return res

    def _deliver(self, scheme: Scheme, tr: Transmission, channel, snr_db: float, gen: torch.Generator, seed: int
                 ) -> tuple[Delivered, np.ndarray | None, np.ndarray | None]:
        """Run the transmission's receive path; also return (sent, equalised received) symbols of item 0."""
        from genscom.channels.fading import equalize_received

        p = tr.payload
        if p.symbols is not None:
            # The constellation shows the analog data symbols through a channel draw of the message's seed
            # (an illustration of this SNR, equalised with the true channel; the scheme's own pass uses pilots).
            received = channel(p.symbols, snr_db, generator=torch.Generator().manual_seed(seed))
            delivered = scheme.deliver(p, channel, snr_db, generator=gen)
            eq = equalize_received(received)[0]
            n = int(delivered.channel_uses[0]) or eq.shape[-1]
            return delivered, p.symbols[0, :n].numpy(), eq[:n].numpy()
        delivered = scheme.deliver(p, channel, snr_db, generator=gen)
        bits = getattr(p, "bit_rows", None)
        if isinstance(bits, torch.Tensor):
            row: bytes | torch.Tensor = bits[0]
        elif p.bits:
            row = p.bits[0]
        else:
            return delivered, None, None
        link = _demo_link(self._links, str(tr.settings.get("mcs", self.config.mcs)))
        c = link.constellation(row, snr_db, channel=channel, generator=gen)
        return delivered, c.sent.numpy(), c.received.numpy()

    @torch.no_grad()
    def rank(self, result: RxResult, query: str, *, k: int = 5) -> Ranking:
        """Rank the gallery (with the received item in it) for ``query``; ``ValueError`` when the query is empty."""
        query = (query or "").strip()
        if not query:
            raise ValueError("type a text query at the receiver to rank its gallery")
        if result.embedding is None:
            raise ValueError(f"scheme {result.scheme_name!r} delivered no embedding to rank")
        q = self.encoder.encode_text([query]).float().cpu()[0]
        gi = result.message.eval.get("gallery_index")

        def place(e: torch.Tensor) -> tuple[torch.Tensor, int, list[str]]:
            labels = list(self.labels)
            if gi is not None and 0 <= int(gi) < len(self.gallery):
                g = self.gallery.clone()
                g[int(gi)] = e.to(g.dtype)
                labels[int(gi)] = f"received: {labels[int(gi)]}"
                return g, int(gi), labels
            return torch.cat([self.gallery, e[None].to(self.gallery.dtype)]), len(self.gallery), labels + [
                f"received: {result.message.eval.get('item', 'item')}"]

        g, true, labels = place(result.embedding)
        scores = g @ q
        rank = _query_rank(scores, true)
        order = torch.argsort(scores, descending=True)[:k].tolist()
        top = [(i, float(scores[i]), labels[i]) for i in order]
        b_rank = None
        if result.baseline_embedding is not None:
            gb, tb, _ = place(result.baseline_embedding)
            b_rank = _query_rank(gb @ q, tb)
        return Ranking(query=query, top=top, rank=rank, n=len(g), baseline_rank=b_rank)

    def thumbnail(self, index: int) -> np.ndarray | None:
        """uint8 ``[H, W, 3]`` thumbnail of gallery entry ``index`` (``None`` for an item new to the gallery)."""
        return self.thumbs[index] if 0 <= index < len(self.thumbs) else None


def _query_rank(scores: torch.Tensor, true: int) -> float:
    """1-based rank of gallery entry ``true`` for one query's ``scores`` ``[N]``; ties take the mid-rank
    (:func:`genscom.metrics.retrieval.retrieval_ranks`), so it can end in .5."""
    from genscom.metrics.retrieval import retrieval_ranks

    t2v, _ = retrieval_ranks(scores[None, :], torch.tensor([int(true)]))
    return float(t2v[0])


def link_constellation(bits: torch.Tensor | bytes, mcs: str, channel, snr_db: float, generator: torch.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The first LDPC codeword of ``bits`` (0/1 ``[n]`` or bytes) at ``mcs`` through ``channel``: (sent, equalised)
    complex symbols, from :meth:`genscom.coding.link.DigitalLink.constellation`."""
    from genscom.coding.link import DigitalLink

    c = DigitalLink(mcs, channel, fidelity="full").constellation(bits, snr_db, generator=generator)
    return c.sent.numpy(), c.received.numpy()


__all__ = ["CHANNEL_NAMES", "DemoConfig", "DemoReceiver", "DemoTransmitter", "Ranking", "RxResult", "TASKS",
           "TxResult", "TxSettings", "baseline_for", "demo_settings", "initial_knob_values", "link_constellation",
           "offered_schemes", "optional_features", "rate_knobs", "scheme_settings", "semantic_schemes"]
