"""``digital-embedding``: the embedding quantised to bits, sent over LDPC + QAM, failed codewords erased.

The quantised-embedding baseline of PROTOCOL.md ("Bit-exact baselines"): a quantiser of
:mod:`genscom.coding.quantize` (``int4`` by default; ``int8``, ``int2``, product quantisation
``pq-<m>x<nbits>`` fitted on the train split, and raw ``float16`` as a labelled reference) turns
each embedding into ``bits_per_item`` bits; every LDPC codeword carries ``k - 24`` of them plus
a CRC-24 (5G NR CRC24B), so the link sends ``bits_per_item + 24 * n_codewords`` bits per item
through a :class:`genscom.coding.link.DigitalLink` (built once per scheme) at a fixed or
adaptive MCS. The receiver checks each codeword's CRC (undetected-error probability ``2**-24``,
neglected) and erases the dimensions that failed codewords carried (fill value, then
re-normalisation) instead of decoding garbage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from genscom.channels.base import Channel, ChannelOutput
from genscom.channels.sensing import LinkFeedback
from genscom.schemes.base import (Delivered, DigitalPayload, ItemLinkScheme, Payload, RateKnob, SourceBatch,
                                  expect_payload, register_scheme)

if TYPE_CHECKING:
    from genscom.coding.calibration import CalibrationConfig
    from genscom.coding.link import DigitalLink
    from genscom.coding.mcs import LinkPlan
    from genscom.coding.quantize import EmbeddingQuantizer

#: Quantisers the ``quantizer`` rate knob offers (PQ needs a fitted object: ``fit_quantizer``).
QUANTIZER_CHOICES: tuple[str, ...] = ("int4", "int8", "int2", "float16")


def plan_link(link: DigitalLink, n_bits: list[int], sensing: LinkFeedback | None
              ) -> tuple[list[LinkPlan], torch.Tensor, torch.Tensor]:
    """How each item's ``n_bits`` go on ``link``, decided at the transmitter: ``(plans, channel_uses [B],
    feedback_bits [B])``.

    Every plan carries the frame's pilots, ``sensing.pilot_layout()`` (``P`` pilots opening every coherence
    block with ``csi="pilot"`` on a fading channel, counted in the plan's channel uses; ``None`` on AWGN, with
    ``csi="perfect"`` or without ``sensing``). A fixed-MCS link reads nothing else (no feedback counted). An
    adaptive link plans from the fed-back SNR estimate less its margin (``sensing.snr_db - sensing.margin_db``;
    the feedback bits and channel uses are counted here) on the calibrated tables of the channel ``sensing``
    names with the plan's CSI (pilot tables per ``P``); without an estimate it raises ``ValueError``.
    """
    b = len(n_bits)
    no_feedback = torch.zeros(b, dtype=torch.int64)
    pilots = None if sensing is None else sensing.pilot_layout()
    if not link.adaptive:
        plans = [link.plan(int(n), pilots=pilots) for n in n_bits]
        return plans, torch.tensor([p.channel_uses for p in plans], dtype=torch.int64), no_feedback
    if sensing is None or sensing.snr_db is None:
        raise ValueError("an adaptive-MCS link chooses its MCS from the receiver's fed-back SNR estimate: pass "
                         "sensing=link_feedback(channel, snr_db) to transmit (or use a fixed mcs=)")
    from genscom.channels.registry import create_channel

    channel = create_channel(sensing.channel, **({"coherence": sensing.coherence} if sensing.coherence else {}))
    # the MCS is chosen for the estimate less its margin: an MCS has a cliff, and the estimate may overshoot
    snr = sensing.snr_db - sensing.margin_db
    cache: dict[int, LinkPlan] = {}
    for n in set(int(n) for n in n_bits):
        cache[n] = link.plan(n, snr, channel=channel, pilots=pilots)
    plans = [cache[int(n)] for n in n_bits]
    uses = torch.tensor([p.channel_uses + sensing.feedback_uses for p in plans], dtype=torch.int64)
    return plans, uses, torch.full((b,), sensing.bits, dtype=torch.int64)


def mcs_knob(default: str = "qpsk-1/2", *, adaptive: bool = True) -> RateKnob:
    """The ``mcs`` rate knob of a scheme with a digital link: the 9 MCS names (plus ``"adaptive"``)."""
    from genscom.coding.mcs import ADAPTIVE, list_mcs

    return RateKnob("mcs", "choice", default=default, choices=(*list_mcs(), *((ADAPTIVE,) if adaptive else ())),
                    help="MCS of the LDPC + QAM link (channel uses = coded bits / bits per symbol)"
                         + ("; 'adaptive': the most efficient MCS that meets 10% BLER at the SNR" if adaptive else ""))


def quantize_embedding(emb: torch.Tensor, fmt: str) -> torch.Tensor:
    """``[B, d]`` float -> ``[B, n_bits]`` float32 bits of quantiser ``fmt`` (``"float16"``: ``16 d``; ``"int8"``:
    ``8 d + 16``; see :func:`genscom.coding.quantize.create_quantizer`). No CRC."""
    from genscom.coding.quantize import create_quantizer

    return create_quantizer(fmt, dim=int(emb.shape[-1])).encode(emb)


def dequantize_embedding(bits: torch.Tensor, dim: int, fmt: str) -> torch.Tensor:
    """Inverse of :func:`quantize_embedding` (no erasures, not re-normalised); non-finite values become 0."""
    from genscom.coding.quantize import create_quantizer

    return create_quantizer(fmt, dim=dim).decode(bits, normalize=False)


@register_scheme("digital-embedding")
class DigitalEmbeddingScheme(ItemLinkScheme):
    """Quantised embedding -> bits + a CRC-24 per codeword -> LDPC + QAM (fixed ``mcs`` or ``"adaptive"``).

    Cost per item: ``framed_bits(bits_per_item, k) = bits_per_item + 24 * ceil(bits_per_item / (k - 24))``
    bits on the link (``k`` = the link's LDPC information bits, 1024 by default), so ``int4`` on a 384-d
    embedding sends 1552 + 48 = 1600 bits in 2 codewords. :meth:`transmit` plans the link and counts its
    channel uses (:func:`plan_link`: the MCS, fixed or chosen from the fed-back SNR estimate, the pilots of
    ``sensing.pilot_layout()`` and the feedback); :meth:`deliver` follows those plans. The payload's
    ``side_bits`` are the CRC (and feedback) bits; ``source_bits`` the quantiser's bits;
    ``pilots`` the frame's pilot layout (``None``: perfect CSI or AWGN).

    At the receiver, a codeword whose CRC fails erases the dimensions it carried (the quantiser's fill
    value: 0, or the train mean for a quantiser fitted with ``fill="mean"``; an erased scale loses the
    item); ``Delivered.failed`` marks items with any failed codeword and ``extras`` holds
    ``codeword_failed`` ``[B, n_codewords]``, ``erased_dims`` ``[B]`` and ``lost`` ``[B]`` (scale erased).

    Args:
        quantizer: ``"int4"`` (4 bits per dimension + a float16 scale), ``"int8"``, ``"int2"``, ``"float16"``
            (16 bits per dimension, the labelled reference), a fitted
            :class:`~genscom.coding.quantize.EmbeddingQuantizer` (e.g. product quantisation:
            ``fit_quantizer("pq-48x8", train_embeddings, seed=0)``, TRAIN split only), or a
            :class:`pathlib.Path` to one saved with ``.save(folder)``.
        mcs: MCS name of the link, or ``"adaptive"``.
        fidelity: the link's ``"full"`` simulation, ``"abstract"`` calibrated tables, or ``"auto"``.
        calibration: where and how the link's tables are calibrated (``None``: the default folder,
            :func:`genscom.coding.calibration.default_cache_dir`); used by ``"abstract"``/``"auto"``/adaptive.
    """

    name = "digital-embedding"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("quantizer", "choice", default="int4", choices=QUANTIZER_CHOICES,
                         help="embedding bits: int4 (4 d + 16), int8 (8 d + 16), int2 (2 d + 16), float16 (16 d, "
                              "reference); plus a 24-bit CRC per LDPC codeword"),
                mcs_knob())

    def __init__(self, *, quantizer: str | EmbeddingQuantizer | Path = "int4",
                 mcs: str = "qpsk-1/2", fidelity: Literal["full", "abstract", "auto"] = "full",
                 calibration: CalibrationConfig | None = None) -> None:
        from genscom.coding.link import DigitalLink
        from genscom.coding.quantize import EmbeddingQuantizer, load_quantizer

        if isinstance(quantizer, Path):
            quantizer = load_quantizer(quantizer)
        if isinstance(quantizer, EmbeddingQuantizer):
            if not quantizer.trained:
                raise ValueError(f"quantizer {quantizer.name!r} is not fitted: pass "
                                 f"fit_quantizer({quantizer.name!r}, train_embeddings) or a saved one")
            label = quantizer.name
        elif quantizer in QUANTIZER_CHOICES:
            label = str(quantizer)
        else:
            raise ValueError(f"quantizer must be one of {', '.join(QUANTIZER_CHOICES)}, a fitted EmbeddingQuantizer "
                             f"(product quantisation: fit_quantizer('pq-48x8', train_embeddings)) or a Path to a "
                             f"saved one, got {quantizer!r}")
        self.quantizer: str | EmbeddingQuantizer = quantizer
        self._by_dim: dict[int, EmbeddingQuantizer] = {}
        self.mcs = mcs
        self.fidelity = fidelity
        # crc=True: every codeword carries k - 24 payload bits and a CRC24B (counted), whose verdict erases dims
        self.link: DigitalLink = DigitalLink(mcs, fidelity=fidelity, calibration=calibration, crc=True)
        self.adapts = self.link.adaptive  # it reads the fed-back SNR to choose its MCS
        self.name = (f"digital-embedding-{'fp16' if label == 'float16' else label}"
                     + ("-mcs-adaptive" if self.link.adaptive else ""))

    def quantizer_for(self, dim: int) -> EmbeddingQuantizer:
        """The quantiser of ``dim``-dimensional embeddings (a named one is built once per ``dim``)."""
        from genscom.coding.quantize import create_quantizer

        if not isinstance(self.quantizer, str):
            if self.quantizer.dim != dim:
                raise ValueError(f"scheme {self.name!r}: its quantizer {self.quantizer.name!r} codes {self.quantizer.dim}"
                                 f"-d embeddings, got {dim}-d; fit one on embeddings of this encoder")
            return self.quantizer
        if dim not in self._by_dim:
            self._by_dim[dim] = create_quantizer(self.quantizer, dim=dim)
        return self._by_dim[dim]

    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> Payload:
        if batch.embeddings is None:
            raise ValueError(f"scheme {self.name!r} sends embeddings; build the SourceBatch with embeddings=[B, d]")
        from genscom.coding.quantize import CRC_BITS, codewords_for_bits

        q = self.quantizer_for(int(batch.embeddings.shape[1]))
        bits = q.encode(batch.embeddings)  # [B, bits_per_item]; the link adds a CRC-24 per codeword
        b = len(bits)
        n_cw = codewords_for_bits(q.bits_per_item, self.link.k)
        plans, uses, fb_bits = plan_link(self.link, [q.bits_per_item] * b, sensing)
        return DigitalPayload(symbols=None, channel_uses=uses, pilots=plans[0].pilots if plans else None,
                              side_bits=torch.full((b,), CRC_BITS * n_cw, dtype=torch.int64) + fb_bits,
                              plans=plans, source_bits=torch.full((b,), q.bits_per_item, dtype=torch.int64),
                              bit_rows=bits, extras={"dim": int(batch.embeddings.shape[1])})

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        from genscom.coding.quantize import codewords_for_bits, erased_bits_from_codewords, info_bits_per_codeword

        payload = expect_payload(payload, DigitalPayload, self.name)
        q = self.quantizer_for(payload.extras["dim"])
        bits = payload.extras.get("bits_hat", payload.bit_rows)
        b, n_cw = len(bits), codewords_for_bits(q.bits_per_item, self.link.k)
        # the link's CRC verdict per codeword ([B, max_codewords]); none failed on a noiseless link
        cw_failed = payload.extras.get("codeword_failed", torch.zeros(b, n_cw, dtype=torch.bool))[:, :n_cw]
        erased = erased_bits_from_codewords(cw_failed, info_bits_per_codeword(self.link.k), q.bits_per_item)
        emb = q.decode(bits, erased)  # erased dims take the fill value, then unit norm
        extras = {k: v for k, v in payload.extras.items() if k in ("mcs", "block_errors")}
        extras.update(codeword_failed=cw_failed, erased_dims=q.erased_dims(erased).sum(-1),
                      lost=q.failed_items(erased))
        return Delivered(embeddings=emb, frames=None, failed=cw_failed.any(-1), channel_uses=payload.channel_uses,
                         extras=extras)

    def link_items(self, payload: DigitalPayload) -> list[bytes]:
        """Each item's quantised bits (``bit_rows``), packed MSB first into ``ceil(bits_per_item / 8)`` bytes."""
        payload = expect_payload(payload, DigitalPayload, self.name)
        if payload.bit_rows is None:
            raise ValueError(f"scheme {self.name!r}: the payload carries no bit_rows; pass the payload transmit() made")
        rows = payload.bit_rows.detach().to("cpu").round().to(torch.uint8).numpy()
        return [np.packbits(r).tobytes() for r in rows]

    def receive_items(self, payload: DigitalPayload, items: list[bytes | None]) -> Delivered:
        """Whole items -> embeddings; a lost item (``None``, or bytes of the wrong length) has every bit erased:
        its dimensions take the fill value (a zero vector by default) and it is ``failed``."""
        payload = expect_payload(payload, DigitalPayload, self.name)
        q = self.quantizer_for(payload.extras["dim"])
        n, n_bytes = q.bits_per_item, (q.bits_per_item + 7) // 8
        bits = torch.zeros(len(items), n, dtype=torch.float32)
        lost = torch.zeros(len(items), dtype=torch.bool)
        for i, item in enumerate(items):
            if item is None or len(item) != n_bytes:
                lost[i] = True
            else:
                bits[i] = torch.from_numpy(np.unpackbits(np.frombuffer(bytes(item), dtype=np.uint8))[:n].astype(np.float32))
        erased = lost[:, None].expand(-1, n).clone()
        emb = q.decode(bits, erased)
        return Delivered(embeddings=emb, frames=None, failed=lost, channel_uses=payload.channel_uses,
                         extras={"erased_dims": q.erased_dims(erased).sum(-1), "lost": q.failed_items(erased)})

    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        if channel is None or snr_db is None:
            return self.receive(None, payload)
        # the plans made at transmit (from the fed-back estimate), whatever the true SNR; costs as counted there
        payload = expect_payload(payload, DigitalPayload, self.name)
        res = self.link.send_bits(payload.bit_rows, snr_db, channel=channel, generator=generator,
                                  plans=payload.plans)
        extras = dict(payload.extras, bits_hat=res.bits_hat, codeword_failed=res.codeword_failed,
                      mcs=res.mcs, block_errors=res.block_errors)
        return self.receive(None, dataclasses.replace(payload, extras=extras))
