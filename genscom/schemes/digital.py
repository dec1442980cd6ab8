"""``digital-embedding``: the embedding quantised to bits, sent over LDPC + QAM.

The "separate digital embedding" alternative of PROTOCOL.md: float16 (16 bits
per dimension) or int8 (8 bits per dimension plus one float16 scale per item),
through a :class:`genscom.coding.link.DigitalLink` (built once per scheme) at a
fixed or ideal adaptive MCS. Failed codewords leave their bits wrong; non-finite
float16 values that bit errors create are set to zero before re-normalisation.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from genscom.channels.base import Channel, ChannelOutput
from genscom.schemes.base import Delivered, Payload, RateKnob, Scheme, SourceBatch, register_scheme

if TYPE_CHECKING:
    from genscom.coding.calibration import CalibrationConfig
    from genscom.coding.link import DigitalLink


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


def _bits_from_bytes(arr: np.ndarray) -> torch.Tensor:
    """``uint8 [B, nbytes]`` -> ``float32 [B, 8*nbytes]`` bits (MSB first)."""
    return torch.from_numpy(np.unpackbits(arr, axis=1).astype(np.float32))


def _bytes_from_bits(bits: torch.Tensor) -> np.ndarray:
    return np.packbits(bits.detach().cpu().numpy().round().clip(0, 1).astype(np.uint8), axis=1)


def quantize_embedding(emb: torch.Tensor, fmt: Literal["float16", "int8"]) -> torch.Tensor:
    """``[B, d]`` float -> ``[B, n_bits]`` bits (``16 d`` for float16, ``8 d + 16`` for int8)."""
    e = emb.detach().float().cpu()
    if fmt == "float16":
        raw = e.numpy().astype(">f2").view(np.uint8).reshape(len(e), -1)
    elif fmt == "int8":
        scale = e.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
        q = torch.round(e / scale * 127).clamp(-127, 127).to(torch.int8).numpy().view(np.uint8)
        s = scale.numpy().astype(">f2").view(np.uint8).reshape(len(e), -1)
        raw = np.concatenate([s, q], axis=1)
    else:
        raise ValueError(f"fmt must be 'float16' or 'int8', got {fmt!r}")
    return _bits_from_bytes(np.ascontiguousarray(raw))


def dequantize_embedding(bits: torch.Tensor, dim: int, fmt: Literal["float16", "int8"]) -> torch.Tensor:
    """Inverse of :func:`quantize_embedding`; non-finite values (from bit errors) become 0."""
    raw = _bytes_from_bits(bits)
    if fmt == "float16":
        vals = raw.view(">f2").astype(np.float32).reshape(len(raw), dim)
    else:
        scale = raw[:, :2].copy().view(">f2").astype(np.float32)
        q = raw[:, 2:].copy().view(np.int8).astype(np.float32)
        vals = q / 127.0 * scale
    out = torch.from_numpy(np.ascontiguousarray(vals))
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


@register_scheme("digital-embedding")
class DigitalEmbeddingScheme(Scheme):
    """Quantised embedding -> bits -> LDPC + QAM (fixed ``mcs`` name or ``"adaptive"``).

    :meth:`transmit` counts the channel uses at a fixed MCS; with ``"adaptive"`` they are 0 until
    :meth:`deliver` (the MCS depends on the SNR).

    Args:
        fmt: ``"float16"`` (16 bits per dimension) or ``"int8"`` (8 bits per dimension + a float16 scale).
        mcs: MCS name of the link, or ``"adaptive"``.
        fidelity: the link's ``"full"`` simulation, ``"abstract"`` calibrated tables, or ``"auto"``.
        calibration: where and how the link's tables are calibrated (``None``: the default folder,
            :func:`genscom.coding.calibration.default_cache_dir`); used by ``"abstract"``/``"auto"``/adaptive.
    """

    name = "digital-embedding"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("fmt", "choice", default="float16", choices=("float16", "int8"),
                         help="bits per dimension: float16 (16 d bits) or int8 (8 d + 16 bits)"),
                mcs_knob())

    def __init__(self, *, fmt: Literal["float16", "int8"] = "float16", mcs: str = "qpsk-1/2",
                 fidelity: Literal["full", "abstract", "auto"] = "full",
                 calibration: CalibrationConfig | None = None) -> None:
        from genscom.coding.link import DigitalLink

        if fmt not in ("float16", "int8"):
            raise ValueError(f"fmt must be 'float16' or 'int8', got {fmt!r}")
        self.fmt = fmt
        self.mcs = mcs
        self.fidelity = fidelity
        self.link: DigitalLink = DigitalLink(mcs, fidelity=fidelity, calibration=calibration)
        self.name = f"digital-embedding-{'fp16' if fmt == 'float16' else 'int8'}" + ("-mcs-adaptive" if self.link.adaptive else "")

    def transmit(self, batch: SourceBatch, *, generator: torch.Generator | None = None) -> Payload:
        if batch.embeddings is None:
            raise ValueError(f"scheme {self.name!r} sends embeddings; build the SourceBatch with embeddings=[B, d]")
        bits = quantize_embedding(batch.embeddings, self.fmt)
        return Payload(symbols=None, channel_uses=link_uses(self.link, [bits.shape[1]] * len(bits)),
                       side_bits=torch.zeros(len(bits), dtype=torch.int64),
                       extras={"bits": bits, "dim": batch.embeddings.shape[1]})

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        bits = payload.extras.get("bits_hat", payload.extras["bits"])
        emb = dequantize_embedding(bits, payload.extras["dim"], self.fmt)
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        failed = payload.extras.get("failed", torch.zeros(len(emb), dtype=torch.bool))
        return Delivered(embeddings=emb, frames=None, failed=failed, channel_uses=payload.channel_uses,
                         extras={k: v for k, v in payload.extras.items() if k in ("mcs", "block_errors")})

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
