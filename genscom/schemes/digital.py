"""``digital-embedding``: the embedding quantised to bits, sent over LDPC + QAM.

The "separate digital embedding" alternative of PROTOCOL.md: float16 (16 bits
per dimension) or int8 (8 bits per dimension plus one float16 scale per item),
through a :class:`genscom.coding.link.DigitalLink` at a fixed or ideal adaptive
MCS. Failed codewords leave their bits wrong; non-finite float16 values that
bit errors create are set to zero before re-normalisation.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch

from genscom.channels.base import Channel, ChannelOutput
from genscom.schemes.base import Delivered, Payload, Scheme, SourceBatch, register_scheme


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
    """Quantised embedding -> bits -> LDPC + QAM (fixed ``mcs`` name or ``"adaptive"``)."""

    name = "digital-embedding"

    def __init__(self, *, fmt: Literal["float16", "int8"] = "float16", mcs: str = "qpsk-1/2",
                 fidelity: Literal["full", "abstract", "auto"] = "full") -> None:
        if fmt not in ("float16", "int8"):
            raise ValueError(f"fmt must be 'float16' or 'int8', got {fmt!r}")
        self.fmt = fmt
        self.mcs = mcs
        self.fidelity = fidelity
        self.name = f"digital-embedding-{'fp16' if fmt == 'float16' else 'int8'}" + ("-mcs-adaptive" if mcs == "adaptive" else "")

    def transmit(self, batch: SourceBatch, *, generator: torch.Generator | None = None) -> Payload:
        if batch.embeddings is None:
            raise ValueError(f"scheme {self.name!r} sends embeddings; build the SourceBatch with embeddings=[B, d]")
        bits = quantize_embedding(batch.embeddings, self.fmt)
        return Payload(symbols=None, channel_uses=torch.zeros(len(bits), dtype=torch.int64),
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
        from genscom.coding.link import DigitalLink

        link = DigitalLink(self.mcs, channel, fidelity=self.fidelity)
        res = link.send_bits(payload.extras["bits"], snr_db, generator=generator)
        extras = dict(payload.extras, bits_hat=res.bits_hat, failed=torch.as_tensor(res.block_errors) > 0,
                      mcs=getattr(res, "mcs", self.mcs), block_errors=res.block_errors)
        sent = dataclasses.replace(payload, channel_uses=torch.as_tensor(res.channel_uses, dtype=torch.int64),
                                   extras=extras)
        return self.receive(None, sent)
