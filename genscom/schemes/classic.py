"""Bit-exact classic baselines: real JPEG / H.264 bitstreams over 5G LDPC + QAM.

``jpeg-ldpc``: every frame of a clip is a JPEG (Pillow) at ``quality``.
``h264-ldpc``: the clip is one H.264 stream (libx264 via PyAV) at ``crf``.

Each item is one link payload: a header of 32-bit stream lengths, then the
streams. The header's bits are sent (and counted) in the same codewords; the
receiver treats them as protected side information. Bit errors of failed codewords land in the real bitstream, which is then
really decoded. Failure rule (PROTOCOL.md): a clip keeps its decodable frames;
a clip with none is flagged ``failed`` and has ``frames[i] = None`` (the
benchmark substitutes the gallery's mean embedding). Each scheme builds its
:class:`~genscom.coding.link.DigitalLink` once and reuses it for every delivery.

The link is planned at transmit (:func:`genscom.schemes.digital.plan_link`): the MCS (fixed, or
chosen from the fed-back SNR estimate), and on fading channels with ``csi="pilot"`` the pilots
opening every coherence block, counted in the payload's channel uses; the receiver equalises
with their estimates. :meth:`deliver` follows the plans made at transmit; nothing is recounted.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING, Literal

import torch

from genscom.channels.base import Channel, ChannelOutput
from genscom.channels.sensing import LinkFeedback
from genscom.schemes.base import (Delivered, DigitalPayload, ItemLinkScheme, Payload, RateKnob, SourceBatch,
                                  expect_payload, register_scheme)
from genscom.schemes.digital import mcs_knob, plan_link

if TYPE_CHECKING:
    from genscom.coding.calibration import CalibrationConfig
    from genscom.coding.link import DigitalLink

LENGTH_FIELD_BITS = 32


def _require_frames(batch: SourceBatch, scheme: str) -> torch.Tensor:
    if batch.frames is None:
        raise ValueError(f"scheme {scheme!r} sends pixels; build the SourceBatch with frames=[B, T, H, W, 3] uint8")
    if batch.frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {batch.frames.dtype}")
    return batch.frames


class _BitstreamScheme(ItemLinkScheme):
    """Shared plumbing: bytes per item -> DigitalLink -> bytes -> decoder."""

    def __init__(self, *, mcs: str = "qpsk-1/2", fidelity: Literal["full", "abstract", "auto"] = "auto",
                 calibration: CalibrationConfig | None = None) -> None:
        from genscom.coding.link import DigitalLink

        self.mcs = mcs
        self.fidelity = fidelity
        self.link: DigitalLink = DigitalLink(mcs, fidelity=fidelity, calibration=calibration)
        self.adapts = self.link.adaptive  # it reads the fed-back SNR to choose its MCS
        self._streams: tuple[weakref.ref[torch.Tensor], int, list[list[bytes]]] | None = None
        self._clean_decode: dict[tuple[bytes, tuple[int, ...]], torch.Tensor | None] = {}

    # subclasses: encode one clip -> list of streams; decode list of streams -> frames or None
    def _encode_item(self, clip: torch.Tensor) -> list[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode_item(self, streams: list[bytes], shape: tuple[int, ...]) -> torch.Tensor | None:  # pragma: no cover
        raise NotImplementedError

    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> Payload:
        frames = _require_frames(batch, self.name)
        # source coding does not depend on the channel: an adaptive scheme transmitted again for every
        # channel draw reuses the last batch's bitstreams while it is given the same, unmodified tensor (held
        # by a weak reference, so a new tensor at a recycled address is never mistaken for it; in-place edits
        # bump the tensor's version counter)
        cached = self._streams
        if cached is None or cached[0]() is not frames or cached[1] != frames._version:
            cached = (weakref.ref(frames), frames._version, [self._encode_item(clip) for clip in frames])
            self._streams = cached
        streams = cached[2]
        lengths = [[len(b) for b in s] for s in streams]
        # One link payload per item: a header of 32-bit length fields, then the streams.
        # The header travels in the same codewords (so it is paid for); the receiver is
        # given the true lengths, i.e. the header is treated as protected side information.
        header = [b"".join(n.to_bytes(LENGTH_FIELD_BITS // 8, "big") for n in ls) for ls in lengths]
        payloads = [h + b"".join(s) for h, s in zip(header, streams)]
        bits = torch.tensor([8 * sum(ls) for ls in lengths], dtype=torch.int64)
        side = torch.tensor([LENGTH_FIELD_BITS * len(ls) for ls in lengths], dtype=torch.int64)
        # header + streams, planned here (an adaptive MCS from the fed-back SNR estimate, its bits counted;
        # the pilots of sensing.pilot_layout() counted in each plan's channel uses)
        plans, uses, fb_bits = plan_link(self.link, [8 * len(p) for p in payloads], sensing)
        side = side + fb_bits
        return DigitalPayload(symbols=None, channel_uses=uses, side_bits=side, bits=payloads,
                              pilots=plans[0].pilots if plans else None, plans=plans, source_bits=bits,
                              extras={"lengths": lengths, "shape": tuple(frames.shape[1:])})

    def _split(self, data: bytes, lengths: list[int]) -> list[bytes]:
        pos = len(lengths) * LENGTH_FIELD_BITS // 8
        out = []
        for n in lengths:
            out.append(data[pos:pos + n])
            pos += n
        return out

    def _bound_cache(self, n_items: int) -> None:
        """Keep the receiver's cache of whole-item decodes under 4x the items of one call."""
        if len(self._clean_decode) > 4 * max(1, n_items):
            self._clean_decode.clear()

    def _decode_whole(self, data: bytes, lengths: list[int], shape: tuple[int, ...]) -> torch.Tensor | None:
        """Decode of an item received whole: deterministic, so computed once per distinct stream and reused across
        SNRs and channel draws."""
        key = (data, shape)
        if key not in self._clean_decode:
            self._clean_decode[key] = self._decode_item(self._split(data, lengths), shape)
        return self._clean_decode[key]

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        sent = payload.bits or []
        got = payload.extras.get("received_bytes") or sent
        shape = payload.extras["shape"]
        block_errors = payload.extras.get("block_errors")
        # Items whose codewords all decoded carry the sent bytes: decoded once per distinct stream (_decode_whole)
        self._bound_cache(len(sent))
        out: list[torch.Tensor | None] = []
        clean: list[bool] = []
        for i, lengths in enumerate(payload.extras["lengths"]):
            is_clean = block_errors is None or int(block_errors[i]) == 0
            if is_clean:
                out.append(self._decode_whole(sent[i], lengths, shape))
            else:
                out.append(self._decode_item(self._split(got[i], lengths), shape))
            clean.append(is_clean)
        failed = torch.tensor([f is None for f in out], dtype=torch.bool)
        return Delivered(embeddings=None, frames=out, failed=failed, channel_uses=payload.channel_uses,
                         extras={"payload_bits": payload.source_bits, "block_errors": block_errors,
                                 "clean": clean, "mcs": payload.extras.get("mcs")})

    def link_items(self, payload: DigitalPayload) -> list[bytes]:
        """Each item's link payload: the header of stream lengths, then the streams (as :meth:`transmit` made it)."""
        payload = expect_payload(payload, DigitalPayload, self.name)
        if payload.bits is None:
            raise ValueError(f"scheme {self.name!r}: the payload carries no bits; pass the payload transmit() made")
        return list(payload.bits)

    def receive_items(self, payload: DigitalPayload, items: list[bytes | None]) -> Delivered:
        """Whole items -> decoded clips (an item received whole is the sent one: its decode is cached as a clean
        one); a lost item (``None``, or bytes of another length than the declared streams) has ``frames[i] = None``
        and is ``failed``."""
        payload = expect_payload(payload, DigitalPayload, self.name)
        shape = payload.extras["shape"]
        self._bound_cache(len(items))
        out: list[torch.Tensor | None] = []
        for item, lengths in zip(items, payload.extras["lengths"], strict=True):
            if item is None or len(item) != len(lengths) * LENGTH_FIELD_BITS // 8 + sum(lengths):
                out.append(None)
                continue
            out.append(self._decode_whole(bytes(item), lengths, shape))
        clean = [item is not None and f is not None for item, f in zip(items, out)]
        failed = torch.tensor([f is None for f in out], dtype=torch.bool)
        return Delivered(embeddings=None, frames=out, failed=failed, channel_uses=payload.channel_uses,
                         extras={"payload_bits": payload.source_bits, "clean": clean})

    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        if channel is None or snr_db is None:
            return self.receive(None, payload)
        # the plans made at transmit, whatever the true SNR; the costs are those counted there
        payload = expect_payload(payload, DigitalPayload, self.name)
        res = self.link.send_bytes(payload.bits or [], snr_db, channel=channel, generator=generator,
                                   plans=payload.plans)
        extras = dict(payload.extras, received_bytes=res.received, block_errors=res.block_errors.tolist(),
                      mcs=res.mcs.name)
        return self.receive(None, dataclasses.replace(payload, extras=extras))


@register_scheme("jpeg-ldpc")
class JPEGLDPCScheme(_BitstreamScheme):
    """Each frame as a JPEG at ``quality`` (1..95), over LDPC + QAM at ``mcs``.

    ``fidelity`` and ``calibration`` are the link's (:class:`~genscom.coding.link.DigitalLink`;
    ``calibration=CalibrationConfig(cache_dir=...)`` chooses where its tables are cached).
    """

    name = "jpeg-ldpc"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("quality", "int", default=50, min=1, max=95,
                         help="JPEG quality of every frame (higher: more bits)"), mcs_knob())

    def __init__(self, *, quality: int = 50, mcs: str = "qpsk-1/2",
                 fidelity: Literal["full", "abstract", "auto"] = "auto",
                 calibration: CalibrationConfig | None = None) -> None:
        super().__init__(mcs=mcs, fidelity=fidelity, calibration=calibration)
        if not isinstance(quality, int) or not 1 <= quality <= 95:
            raise ValueError(f"quality must be an integer in 1..95, got {quality!r}")
        self.quality = quality
        if self.link.adaptive:
            self.name = "jpeg-ldpc-mcs-adaptive"

    def _encode_item(self, clip: torch.Tensor) -> list[bytes]:
        from genscom.coding.source import encode_jpeg

        return [encode_jpeg(frame, quality=self.quality) for frame in clip]

    def _decode_item(self, streams: list[bytes], shape: tuple[int, ...]) -> torch.Tensor | None:
        from genscom.coding.source import decode_jpeg

        good = []
        for s in streams:
            img = decode_jpeg(s, expected_size=(shape[1], shape[2]))  # a header declaring another size fails
            if img is not None and tuple(img.shape) == tuple(shape[1:]):
                good.append(torch.as_tensor(img))
        return torch.stack(good) if good else None


@register_scheme("h264-ldpc")
class H264LDPCScheme(_BitstreamScheme):
    """The clip as one H.264 stream (libx264, ``crf``), over LDPC + QAM at ``mcs``.

    ``fidelity`` and ``calibration`` are the link's, as for :class:`JPEGLDPCScheme`.
    """

    name = "h264-ldpc"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("crf", "int", default=28, min=0, max=51,
                         help="H.264 constant rate factor (lower: higher quality, more bits)"), mcs_knob())

    def __init__(self, *, crf: int = 28, mcs: str = "qpsk-1/2",
                 fidelity: Literal["full", "abstract", "auto"] = "auto",
                 calibration: CalibrationConfig | None = None) -> None:
        super().__init__(mcs=mcs, fidelity=fidelity, calibration=calibration)
        if not isinstance(crf, int) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
        self.crf = crf
        if self.link.adaptive:
            self.name = "h264-ldpc-mcs-adaptive"

    def _encode_item(self, clip: torch.Tensor) -> list[bytes]:
        from genscom.coding.source import encode_h264

        return [encode_h264(clip, crf=self.crf)]

    def _decode_item(self, streams: list[bytes], shape: tuple[int, ...]) -> torch.Tensor | None:
        from genscom.coding.source import decode_h264

        t, h, w, _ = shape
        dec = decode_h264(streams[0], n_frames=t, height=h, width=w)
        if dec.failed or dec.frames is None:
            return None
        return torch.as_tensor(dec.frames)
