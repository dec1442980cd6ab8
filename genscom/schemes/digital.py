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

import torch

from genscom.channels.base import Channel, ChannelOutput
from genscom.channels.sensing import LinkFeedback
from genscom.schemes.base import Delivered, Payload, RateKnob, Scheme, SourceBatch, register_scheme

if TYPE_CHECKING:
    from genscom.coding.calibration import CalibrationConfig
    from genscom.coding.link import DigitalLink
    from genscom.coding.quantize import EmbeddingQuantizer

#: Quantisers the ``quantizer`` rate knob offers (PQ needs a fitted object: ``fit_quantizer``).
QUANTIZER_CHOICES: tuple[str, ...] = ("int4", "int8", "int2", "float16")


def link_uses(link: DigitalLink, n_bits: list[int]) -> torch.Tensor:
    """``[B]`` int64 channel uses of items of ``n_bits`` bits on ``link``, counted at the transmitter; zeros for an
    adaptive link, whose MCS (hence cost) is chosen per delivery from the SNR."""
    if link.adaptive:
        return torch.zeros(len(n_bits), dtype=torch.int64)
    return torch.tensor([link.channel_uses_for_bits(int(n)) for n in n_bits], dtype=torch.int64)


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
class DigitalEmbeddingScheme(Scheme):
    """Quantised embedding -> bits + a CRC-24 per codeword -> LDPC + QAM (fixed ``mcs`` or ``"adaptive"``).

    Cost per item: ``framed_bits(bits_per_item, k) = bits_per_item + 24 * ceil(bits_per_item / (k - 24))``
    bits on the link (``k`` = the link's LDPC information bits, 1024 by default), so ``int4`` on a 384-d
    embedding sends 1552 + 48 = 1600 bits in 2 codewords. :meth:`transmit` counts the channel uses at a
    fixed MCS; with ``"adaptive"`` they are 0 until :meth:`deliver` (the MCS depends on the SNR). The
    payload's ``side_bits`` are the CRC bits; ``extras["payload_bits"]`` the quantiser's bits.

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
        fmt: legacy name of ``quantizer`` (``"float16"`` or ``"int8"``); pass one of the two, not both.
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

    def __init__(self, *, quantizer: str | EmbeddingQuantizer | Path = "int4", fmt: str | None = None,
                 mcs: str = "qpsk-1/2", fidelity: Literal["full", "abstract", "auto"] = "full",
                 calibration: CalibrationConfig | None = None) -> None:
        from genscom.coding.link import DigitalLink
        from genscom.coding.quantize import EmbeddingQuantizer, load_quantizer

        if fmt is not None:
            if fmt not in ("float16", "int8"):
                raise ValueError(f"fmt must be 'float16' or 'int8' (legacy; use quantizer=), got {fmt!r}")
            if quantizer not in ("int4", fmt):
                raise ValueError(f"pass quantizer= or the legacy fmt=, not both (got quantizer={quantizer!r}, "
                                 f"fmt={fmt!r})")
            quantizer = fmt
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
        self.link: DigitalLink = DigitalLink(mcs, fidelity=fidelity, calibration=calibration)
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
        from genscom.coding.quantize import CRC_BITS, add_crc, codewords_for_bits

        q = self.quantizer_for(int(batch.embeddings.shape[1]))
        framed = add_crc(q.encode(batch.embeddings), self.link.k)  # [B, bits_per_item + 24 n_cw]
        b = len(framed)
        n_cw = codewords_for_bits(q.bits_per_item, self.link.k)
        return Payload(symbols=None, channel_uses=link_uses(self.link, [framed.shape[1]] * b),
                       side_bits=torch.full((b,), CRC_BITS * n_cw, dtype=torch.int64),
                       extras={"bits": framed, "dim": int(batch.embeddings.shape[1]),
                               "payload_bits": torch.full((b,), q.bits_per_item, dtype=torch.int64)})

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        from genscom.coding.quantize import check_crc, erased_bits_from_codewords, info_bits_per_codeword

        q = self.quantizer_for(payload.extras["dim"])
        framed = payload.extras.get("bits_hat", payload.extras["bits"])
        bits, cw_failed = check_crc(framed, self.link.k, q.bits_per_item)  # cw_failed: [B, n_codewords]
        erased = erased_bits_from_codewords(cw_failed, info_bits_per_codeword(self.link.k), q.bits_per_item)
        emb = q.decode(bits, erased)  # erased dims take the fill value, then unit norm
        extras = {k: v for k, v in payload.extras.items() if k in ("mcs", "block_errors")}
        extras.update(codeword_failed=cw_failed, erased_dims=q.erased_dims(erased).sum(-1),
                      lost=q.failed_items(erased))
        return Delivered(embeddings=emb, frames=None, failed=cw_failed.any(-1), channel_uses=payload.channel_uses,
                         extras=extras)

    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        if channel is None or snr_db is None:
            return self.receive(None, payload)
        res = self.link.send_bits(payload.extras["bits"], snr_db, channel=channel, generator=generator)
        extras = dict(payload.extras, bits_hat=res.bits_hat, failed=torch.as_tensor(res.block_errors) > 0,
                      mcs=res.mcs, block_errors=res.block_errors)
        sent = dataclasses.replace(payload, channel_uses=torch.as_tensor(res.channel_uses, dtype=torch.int64),
                                   extras=extras)
        return self.receive(None, sent)
