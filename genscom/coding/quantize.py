r"""Embeddings <-> bits for the digital baseline, and which dimensions each LDPC codeword carries.

The quantised embedding is the strongest digital alternative of PROTOCOL.md ("Bit-exact
baselines"): a scalar quantiser (``int8`` / ``int4`` / ``int2``, one float16 scale per item),
a product quantiser (``pq-<m>x<nbits>``, codebooks trained with FAISS on the TRAIN split),
and raw ``float16`` as a labelled reference. Every quantiser has the same interface
(:class:`EmbeddingQuantizer`) and is built by name with :func:`create_quantizer`, or built
and trained in one call with :func:`fit_quantizer`.

**Bit layout** of one item (MSB first everywhere)::

    [ header (scale, 16 bits; scalar quantisers only) | unit 0 | unit 1 | ... | unit n_units-1 ]

A *unit* is one dimension (scalar, float16: ``bits_per_unit`` = 8 / 4 / 2 / 16) or one
PQ sub-vector (``nbits`` bits of its code). The header comes first so that it sits in the
first codeword; units are dimension-major, so a failed codeword erases whole, contiguous
dimensions (a unit that straddles two codewords is erased when either fails).

**Codewords and CRC**: the link (:class:`genscom.coding.link.DigitalLink` with ``crc=True``)
cuts the item's ``n_bits`` into codewords of ``k_info = k - 24`` payload bits
(:func:`info_bits_per_codeword`), each followed by its CRC-24 (5G NR ``gCRC24B``, TS 38.212
§5.1, the per-code-block CRC), so it pays for ``n_bits + 24 * n_codewords`` bits
(:func:`framed_bits`) in ``n_codewords = ceil(n_bits / k_info)`` LDPC codewords of ``k`` bits
(the counting itself lives in :mod:`genscom.coding.mcs`). The receiver checks each CRC and
reports the failed codewords (``LinkResult.codeword_failed``). Detection is treated as ideal:
a CRC-24 misses a random error pattern with probability ``2**-24``
(:data:`CRC_UNDETECTED_PROB`, about 6e-8), which is neglected.

**Erasure instead of garbage**: :func:`erased_bits_from_codewords` turns the failed-codeword
mask into erased payload bits; :meth:`EmbeddingQuantizer.decode` does not use them. A unit
with any erased bit takes the *fill* value: ``fill="zero"`` (0, the mean of an isotropic
unit-norm distribution; the default) or ``fill="mean"`` (the train-split mean embedding, set by
:meth:`~EmbeddingQuantizer.fit`). Zero is the better choice for retrieval: measured on the mini
profile (synthetic test split, 10% of codewords failing), mean fill lowered t2v R@1 from 0.697 to
0.604 for int4, because every damaged item moves towards the same mean direction and becomes a
"hub" that outranks the right item for many queries, whereas a zero part adds no score. An erased
header (the scale) makes the whole item a failure: every dimension takes the fill value
(zero fill: a zero vector, which scores 0 against every query). The result is then
re-normalised to unit L2 norm (a zero vector stays zero).

Example:
    >>> q = create_quantizer("int4", dim=384)
    >>> q.bits_per_item                            # 384 x 4 + 16 (the float16 scale)
    1552
    >>> framed_bits(q.bits_per_item, k=1024)       # 2 codewords of 1000 payload + 24 CRC bits
    1600
    >>> bits = q.encode(emb)                       # [B, 1552] float32 0/1
    >>> res = DigitalLink("qpsk-1/2", crc=True).send_bits(bits, 3.0, channel=AWGNChannel())
    >>> erased = erased_bits_from_codewords(res.codeword_failed, info_bits_per_codeword(1024), 1552)
    >>> emb_hat = q.decode(res.bits_hat, erased)   # [B, 384], unit norm; erased dims are 0
"""

from __future__ import annotations

import json
import logging
import math
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from genscom.coding.mcs import CRC_BITS, payload_bits_per_codeword
from genscom.coding.mcs import codewords_for_bits as mcs_codewords_for_bits

log = logging.getLogger(__name__)

Fill = Literal["zero", "mean"]

#: Probability that a CRC-24 misses a random error pattern; neglected (detection treated as ideal).
CRC_UNDETECTED_PROB = 2.0 ** -24
#: Bits of the per-item scale of the scalar quantisers (one float16).
SCALE_BITS = 16
#: Bits per dimension of the scalar quantisers.
SCALAR_BITS: dict[str, int] = {"int8": 8, "int4": 4, "int2": 2}
#: Fixed quantiser names; product quantisers are named ``pq-<m>x<nbits>``.
FIXED_NAMES: tuple[str, ...] = ("float16", "int2", "int4", "int8")
PQ_PATTERN = re.compile(r"^pq-(\d+)x(\d+)$")
CONFIG_FILE = "quantizer.json"
TENSORS_FILE = "quantizer.safetensors"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class QuantizerConfig:
    """What defines a quantiser; saved as ``quantizer.json`` next to its trained tensors.

    Attributes:
        name: ``"float16"`` (reference), ``"int8"``, ``"int4"``, ``"int2"``, or ``"pq-<m>x<nbits>"``
            (``m`` sub-vectors of ``dim / m`` dimensions, each coded on ``nbits`` bits, 1..16).
        dim: embedding size ``d``.
        fill: value of erased dimensions: ``"zero"`` (default; best for retrieval, module docstring) or
            ``"mean"`` (the train-split mean; needs :meth:`fit`).
        seed: seed of the PQ k-means (FAISS ``ClusteringParameters.seed``); unused by scalar quantisers.
        niter: k-means iterations of the PQ training (FAISS default 25).
    """

    name: str
    dim: int
    fill: Fill = "zero"
    seed: int = 0
    niter: int = 25

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not (self.name in FIXED_NAMES or PQ_PATTERN.match(self.name)):
            raise ValueError(f"quantizer name must be one of {', '.join(list_quantizers())}, got {self.name!r}")
        for arg, val, lo in (("dim", self.dim, 1), ("seed", self.seed, 0), ("niter", self.niter, 1)):
            if isinstance(val, bool) or not isinstance(val, int) or val < lo:
                raise ValueError(f"{arg} must be an integer >= {lo}, got {val!r}")
        if self.fill not in ("zero", "mean"):
            raise ValueError(f"fill must be 'zero' or 'mean' (the train-split mean, set by fit), got {self.fill!r}")
        m = PQ_PATTERN.match(self.name)
        if m:
            n_sub, nbits = int(m.group(1)), int(m.group(2))
            if n_sub < 1 or self.dim % n_sub:
                raise ValueError(f"quantizer {self.name!r}: m={n_sub} sub-vectors must divide dim={self.dim}; "
                                 f"pick m among the divisors of {self.dim}")
            if not 1 <= nbits <= 16:
                raise ValueError(f"quantizer {self.name!r}: nbits={nbits} must be in 1..16 (2**nbits centroids)")


def list_quantizers() -> list[str]:
    """Quantiser names, sorted: the fixed ones and the product-quantiser pattern ``pq-<m>x<nbits>``."""
    return [*FIXED_NAMES, "pq-<m>x<nbits>"]


# --------------------------------------------------------------------------- bit helpers
def _check_bits_tensor(bits: Any, name: str, n_bits: int) -> torch.Tensor:
    if not isinstance(bits, torch.Tensor) or bits.dim() != 2:
        raise ValueError(f"{name} must be a [B, {n_bits}] tensor of 0/1 values, got "
                         f"{tuple(bits.shape) if isinstance(bits, torch.Tensor) else type(bits).__name__}")
    if bits.shape[1] != n_bits:
        raise ValueError(f"{name} must have {n_bits} bits per item, got shape {tuple(bits.shape)}")
    if bits.numel() and not bool(((bits == 0) | (bits == 1)).all()):
        raise ValueError(f"{name} must hold only 0 and 1; threshold received bits first")
    return bits


def _codes_to_bits(codes: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, n]`` int64 codes in ``[0, 2**width)`` -> ``[B, n * width]`` float32 bits, MSB first per code."""
    shifts = torch.arange(width - 1, -1, -1, dtype=torch.int64)
    return ((codes[..., None] >> shifts) & 1).reshape(codes.shape[0], -1).to(torch.float32)


def _bits_to_codes(bits: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`_codes_to_bits`: ``[B, n * width]`` 0/1 -> ``[B, n]`` int64."""
    b = bits.detach().cpu().round().to(torch.int64).reshape(bits.shape[0], -1, width)
    weights = 2 ** torch.arange(width - 1, -1, -1, dtype=torch.int64)
    return (b * weights).sum(-1)


def _check_embeddings(emb: Any, dim: int, name: str = "emb") -> torch.Tensor:
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[1] != dim:
        got = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"{name} must be a [B, {dim}] float tensor, got {got}")
    e = emb.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"{name} must be finite (no NaN/inf)")
    return e


# --------------------------------------------------------------------------- quantisers
class EmbeddingQuantizer(ABC):
    """Embeddings ``[B, d]`` <-> bits ``[B, bits_per_item]``, with erasure-aware decoding.

    Subclasses set :attr:`header_bits`, :attr:`n_units` and :attr:`bits_per_unit` (the layout
    of the module docstring) and implement :meth:`_encode_units` / :meth:`_decode_units`.

    Attributes:
        config: the :class:`QuantizerConfig`.
        mean: ``[d]`` float32 train-split mean embedding (``None`` until :meth:`fit`).
    """

    header_bits: int = 0
    bits_per_unit: int
    n_units: int

    def __init__(self, config: QuantizerConfig) -> None:
        self.config = config
        self.dim = config.dim
        self.mean: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def bits_per_item(self) -> int:
        """Payload bits per item: ``header_bits + n_units * bits_per_unit`` (CRCs not included)."""
        return self.header_bits + self.n_units * self.bits_per_unit

    @property
    def dims_per_unit(self) -> int:
        return self.dim // self.n_units

    @property
    def trained(self) -> bool:
        """Whether encode/decode can run (PQ: codebooks trained; ``fill="mean"``: mean known)."""
        return self.config.fill == "zero" or self.mean is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, bits_per_item={self.bits_per_item})"

    # -- training ----------------------------------------------------------------
    def fit(self, train_embeddings: torch.Tensor) -> EmbeddingQuantizer:
        """Learn from TRAIN-split embeddings ``[N, d]``: the mean (for ``fill="mean"``) and, for PQ,
        the codebooks. Never pass test items. Returns ``self``."""
        x = _check_embeddings(train_embeddings, self.dim, "train_embeddings")
        if len(x) < 1:
            raise ValueError("train_embeddings is empty; pass the train split's embeddings [N, d]")
        self._fit(x)
        self.mean = x.mean(0)
        return self

    def _fit(self, x: torch.Tensor) -> None:
        """Extra training of a subclass (default: none)."""

    # -- coding ------------------------------------------------------------------
    def encode(self, emb: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` float embeddings -> ``[B, bits_per_item]`` float32 0/1 bits (layout: module docstring)."""
        e = _check_embeddings(emb, self.dim)
        self._check_trained("encode")
        bits = self._encode_units(e)
        if bits.shape != (len(e), self.bits_per_item):  # a subclass bug, not user input
            raise RuntimeError(f"{type(self).__name__} produced bits of shape {tuple(bits.shape)}")
        return bits

    def decode(self, bits: torch.Tensor, erased: torch.Tensor | None = None, *,
               normalize: bool = True) -> torch.Tensor:
        """``[B, bits_per_item]`` 0/1 bits -> ``[B, d]`` float32 embeddings.

        Args:
            bits: received payload bits (CRCs removed: ``LinkResult.bits_hat``).
            erased: ``[B, bits_per_item]`` bool, True for bits of failed codewords
                (:func:`erased_bits_from_codewords`), or ``None`` (none erased). Erased bits are not
                read: their units take the fill value; an erased header fails the whole item.
            normalize: re-normalise each item to unit L2 norm (a zero vector stays zero).
        """
        _check_bits_tensor(bits, "bits", self.bits_per_item)
        self._check_trained("decode")
        out = self._decode_units(bits.detach().cpu())
        out = torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)  # only for float16 under undetected errors
        if erased is not None:
            dims = self.erased_dims(erased)
            out = torch.where(dims, self.fill_vector()[None], out)
        if normalize:
            out = out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return out

    def erased_units(self, erased: torch.Tensor) -> torch.Tensor:
        """``[B, bits_per_item]`` erased bits -> ``[B, n_units]`` bool: units with any erased bit, all units of
        items whose header is erased."""
        e = _check_erased(erased, self.bits_per_item)
        units = e[:, self.header_bits:].reshape(len(e), self.n_units, self.bits_per_unit).any(-1)
        return units | self.failed_items(e)[:, None]

    def erased_dims(self, erased: torch.Tensor) -> torch.Tensor:
        """``[B, bits_per_item]`` erased bits -> ``[B, d]`` bool: dimensions that take the fill value."""
        return self.erased_units(erased).repeat_interleave(self.dims_per_unit, dim=1)

    def failed_items(self, erased: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool: items whose header (the scale) is erased, so none of their bits can be used."""
        e = _check_erased(erased, self.bits_per_item)
        return e[:, :self.header_bits].any(-1) if self.header_bits else torch.zeros(len(e), dtype=torch.bool)

    def fill_vector(self) -> torch.Tensor:
        """``[d]`` float32 value of erased dimensions: zeros, or the train-split mean (``fill="mean"``)."""
        if self.config.fill == "zero":
            return torch.zeros(self.dim)
        if self.mean is None:
            raise ValueError(f"quantizer {self.name!r} has fill='mean' but no mean: call fit(train_embeddings) "
                             "first, or use fill='zero'")
        return self.mean

    def _check_trained(self, what: str) -> None:
        if not self.trained:
            raise ValueError(f"quantizer {self.name!r} must be fitted before {what}: call "
                             f"fit(train_embeddings) with TRAIN-split embeddings, or load a saved one")

    @abstractmethod
    def _encode_units(self, e: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` float32 -> ``[B, bits_per_item]`` float32 bits."""

    @abstractmethod
    def _decode_units(self, bits: torch.Tensor) -> torch.Tensor:
        """``[B, bits_per_item]`` bits -> ``[B, d]`` raw reconstruction (no erasure, no normalisation)."""

    # -- persistence -----------------------------------------------------------------
    def tensors(self) -> dict[str, np.ndarray]:
        """Trained arrays to save (``mean``, PQ ``centroids``)."""
        return {} if self.mean is None else {"mean": self.mean.numpy()}

    def save(self, path: str | Path) -> Path:
        """Write ``quantizer.json`` (config) and ``quantizer.safetensors`` (trained arrays) into folder ``path``."""
        from safetensors.numpy import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "config": asdict(self.config)}
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.tensors().items()},
                  str(folder / TENSORS_FILE))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingQuantizer:
        """Read a quantiser written by :meth:`save` (``ProductQuantizer.load(path)`` checks its type too)."""
        q = load_quantizer(path)
        if not isinstance(q, cls):
            raise ValueError(f"{path} holds a {type(q).__name__} ({q.name!r}), not a {cls.__name__}")
        return q

    def _load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        if "mean" in tensors:
            self.mean = torch.from_numpy(tensors["mean"].astype(np.float32))


def _check_erased(erased: Any, n_bits: int) -> torch.Tensor:
    if not isinstance(erased, torch.Tensor) or erased.dim() != 2 or erased.shape[1] != n_bits:
        got = tuple(erased.shape) if isinstance(erased, torch.Tensor) else type(erased).__name__
        raise ValueError(f"erased must be a [B, {n_bits}] bool tensor (see erased_bits_from_codewords), got {got}")
    return erased.detach().cpu().to(torch.bool)


class Float16Quantizer(EmbeddingQuantizer):
    """Raw float16, 16 bits per dimension, no scale: the labelled reference (``6144`` bits for ``d = 384``).

    Reconstruction: the float16 value itself; non-finite values (only under undetected bit errors) become 0.
    """

    bits_per_unit = 16

    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__(config)
        self.n_units = config.dim

    def _encode_units(self, e: torch.Tensor) -> torch.Tensor:
        codes = torch.from_numpy(e.numpy().astype(np.float16).view(np.uint16).astype(np.int64))
        return _codes_to_bits(codes, 16)

    def _decode_units(self, bits: torch.Tensor) -> torch.Tensor:
        codes = _bits_to_codes(bits, 16).numpy().astype(np.uint16)
        return torch.from_numpy(codes.view(np.float16).astype(np.float32))


class ScalarQuantizer(EmbeddingQuantizer):
    r"""Uniform symmetric (mid-rise) scalar quantiser on ``b`` bits per dimension with a per-item scale.

    Per item, the scale ``s`` is ``max_i |x_i|`` rounded *up* to float16 (sent first, 16 bits), so
    ``|x_i| <= s``. With ``L = 2**(b-1)`` and step ``Δ = s / L``:

    .. math::
        q_i = \mathrm{clip}(\lfloor x_i / Δ \rfloor, -L, L-1), \quad \hat x_i = (q_i + 1/2)\,Δ

    sent as the offset-binary code ``q_i + L`` in ``[0, 2**b)``. All ``2**b`` codes are used, the
    levels are symmetric about 0 (``±Δ/2, ±3Δ/2, ...``) and ``|x_i - \hat x_i| <= Δ/2 = s / 2**b``
    (int8: ``s/256``, int4: ``s/16``, int2: ``s/4``). Bits per item: ``b d + 16``.
    """

    header_bits = SCALE_BITS

    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__(config)
        self.bits_per_unit = SCALAR_BITS[config.name]
        self.n_units = config.dim

    @staticmethod
    def scales(e: torch.Tensor) -> np.ndarray:
        """``[B]`` float16 per-item scales: ``max |x|`` rounded up to float16 (at least 2**-14)."""
        amax = np.maximum(e.abs().amax(dim=1).numpy().astype(np.float64), 2.0 ** -14)
        s = amax.astype(np.float16)
        low = s.astype(np.float64) < amax
        s[low] = np.nextafter(s[low], np.float16(np.inf))
        return s

    def _encode_units(self, e: torch.Tensor) -> torch.Tensor:
        s16 = self.scales(e)
        levels = 2 ** (self.bits_per_unit - 1)
        step = torch.from_numpy(s16.astype(np.float32))[:, None] / levels
        q = torch.floor(e / step).clamp(-levels, levels - 1).to(torch.int64)
        scale_bits = _codes_to_bits(torch.from_numpy(s16.view(np.uint16).astype(np.int64))[:, None], SCALE_BITS)
        return torch.cat([scale_bits, _codes_to_bits(q + levels, self.bits_per_unit)], dim=1)

    def _decode_units(self, bits: torch.Tensor) -> torch.Tensor:
        s16 = _bits_to_codes(bits[:, :SCALE_BITS], SCALE_BITS).numpy().astype(np.uint16).view(np.float16)
        s = torch.from_numpy(np.nan_to_num(s16.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0))[:, 0]
        levels = 2 ** (self.bits_per_unit - 1)
        q = _bits_to_codes(bits[:, SCALE_BITS:], self.bits_per_unit) - levels
        return (q.to(torch.float32) + 0.5) * (s[:, None] / levels)


class ProductQuantizer(EmbeddingQuantizer):
    r"""Product quantiser ``pq-<m>x<nbits>``: ``m`` sub-vectors of ``dsub = d/m`` dimensions, each replaced by
    the index of its nearest centroid (squared L2) in its own codebook of ``2**nbits`` centroids.

    Codebooks are trained with FAISS (``faiss.ProductQuantizer``, k-means seeded by ``config.seed``) on
    TRAIN-split embeddings by :meth:`fit`. No scale: bits per item ``m * nbits`` (``pq-48x8``: 384).
    Reconstruction: the concatenation of the chosen centroids; an erased code takes the fill value for its
    sub-vector (``fill="mean"``: the train mean of that sub-vector, i.e. the codebook's frequency-weighted mean).

    Attributes:
        centroids: ``[m, 2**nbits, dsub]`` float32 (``None`` until fitted).
    """

    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__(config)
        match = PQ_PATTERN.match(config.name)
        if match is None:
            raise ValueError(f"ProductQuantizer needs a name 'pq-<m>x<nbits>', got {config.name!r}")
        self.n_units, self.bits_per_unit = int(match.group(1)), int(match.group(2))
        self.ksub = 2 ** self.bits_per_unit
        self.centroids: np.ndarray | None = None
        self._faiss_pq: Any = None

    @property
    def trained(self) -> bool:
        return self.centroids is not None and super().trained

    def _fit(self, x: torch.Tensor) -> None:
        import faiss

        if len(x) < self.ksub:
            raise ValueError(f"quantizer {self.name!r} trains {self.ksub} centroids per sub-vector: it needs at "
                             f"least {self.ksub} train embeddings, got {len(x)}; lower nbits or pass more")
        pq = faiss.ProductQuantizer(self.dim, self.n_units, self.bits_per_unit)
        pq.cp.seed = self.config.seed
        pq.cp.niter = self.config.niter
        pq.cp.min_points_per_centroid = 1  # FAISS would print one warning per sub-vector; one logged below
        if len(x) < 39 * self.ksub:
            log.warning("quantizer %s: %d train embeddings for %d centroids per sub-vector (FAISS advises >= %d)",
                        self.name, len(x), self.ksub, 39 * self.ksub)
        pq.verbose = False
        pq.train(np.ascontiguousarray(x.numpy()))
        self.centroids = faiss.vector_to_array(pq.centroids).reshape(self.n_units, self.ksub, -1).copy()
        self._faiss_pq = pq

    def _faiss(self) -> Any:
        """A FAISS ProductQuantizer holding :attr:`centroids` (rebuilt after :meth:`load`)."""
        import faiss

        if self._faiss_pq is None:
            pq = faiss.ProductQuantizer(self.dim, self.n_units, self.bits_per_unit)
            faiss.copy_array_to_vector(np.ascontiguousarray(self.centroids, dtype=np.float32).ravel(), pq.centroids)
            self._faiss_pq = pq
        return self._faiss_pq

    def codes(self, emb: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` -> ``[B, m]`` int64 nearest-centroid indices (FAISS ``compute_codes``)."""
        e = _check_embeddings(emb, self.dim)
        self._check_trained("encode")
        packed = self._faiss().compute_codes(np.ascontiguousarray(e.numpy()))  # [B, code_size] uint8
        # FAISS packs the m codes of nbits bits LSB first (BitstringWriter)
        bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : self.n_units * self.bits_per_unit]
        weights = 2 ** np.arange(self.bits_per_unit, dtype=np.int64)
        return torch.from_numpy((bits.reshape(len(e), self.n_units, self.bits_per_unit) * weights).sum(-1))

    def _encode_units(self, e: torch.Tensor) -> torch.Tensor:
        return _codes_to_bits(self.codes(e), self.bits_per_unit)

    def _decode_units(self, bits: torch.Tensor) -> torch.Tensor:
        codes = _bits_to_codes(bits, self.bits_per_unit).numpy()  # [B, m]
        parts = np.asarray(self.centroids)[np.arange(self.n_units)[None, :], codes]  # [B, m, dsub]
        return torch.from_numpy(np.ascontiguousarray(parts.reshape(len(codes), self.dim), dtype=np.float32))

    def tensors(self) -> dict[str, np.ndarray]:
        out = super().tensors()
        if self.centroids is not None:
            out["centroids"] = self.centroids
        return out

    def _load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        super()._load_tensors(tensors)
        if "centroids" in tensors:
            c = tensors["centroids"].astype(np.float32)
            if c.shape != (self.n_units, self.ksub, self.dims_per_unit):
                raise ValueError(f"centroids of shape {c.shape} do not match {self.name!r} on dim {self.dim}")
            self.centroids = c
            self._faiss_pq = None


# --------------------------------------------------------------------------- factory
def create_quantizer(name: str, *, dim: int, fill: Fill = "zero", seed: int = 0, niter: int = 25) -> EmbeddingQuantizer:
    """Build quantiser ``name`` for ``dim``-dimensional embeddings (see :class:`QuantizerConfig`).

    ``"float16"``, ``"int8"``, ``"int4"``, ``"int2"`` are ready to use (``fill="mean"`` needs :meth:`fit`);
    ``"pq-<m>x<nbits>"`` must be fitted on TRAIN-split embeddings (:func:`fit_quantizer` does both).
    Unknown names raise ``ValueError`` listing the known ones.
    """
    cfg = QuantizerConfig(name=name, dim=dim, fill=fill, seed=seed, niter=niter)
    if cfg.name == "float16":
        return Float16Quantizer(cfg)
    if cfg.name in SCALAR_BITS:
        return ScalarQuantizer(cfg)
    return ProductQuantizer(cfg)


def fit_quantizer(name: str, train_embeddings: torch.Tensor, *, seed: int = 0, fill: Fill = "zero",
                  niter: int = 25) -> EmbeddingQuantizer:
    """Build quantiser ``name`` for the size of ``train_embeddings`` ``[N, d]`` (TRAIN split only) and fit it.

    Example:
        >>> pq = fit_quantizer("pq-48x8", train_emb, seed=0)   # 384 bits per item
        >>> pq.save("runs/pq-48x8"); ProductQuantizer.load("runs/pq-48x8")
    """
    if not isinstance(train_embeddings, torch.Tensor) or train_embeddings.dim() != 2:
        raise ValueError("train_embeddings must be a [N, d] float tensor of TRAIN-split embeddings")
    q = create_quantizer(name, dim=int(train_embeddings.shape[1]), fill=fill, seed=seed, niter=niter)
    return q.fit(train_embeddings)


def load_quantizer(path: str | Path) -> EmbeddingQuantizer:
    """Read a quantiser folder written by :meth:`EmbeddingQuantizer.save` (JSON config + safetensors).

    Raises:
        MissingFileError: no ``quantizer.json`` in ``path`` (a ``FileNotFoundError``).
        BadFileError: a file that is truncated, not JSON/safetensors, of another format version, with
            wrong-typed config fields, or with arrays that do not fit the config (naming the file and the fix).
    """
    from genscom.errors import BadFileError, GenscomError, first_line
    from genscom.loading import load_safetensors, read_json

    folder = Path(path)
    fix = "save the fitted quantiser again with quantizer.save(folder) (fit_quantizer on TRAIN-split embeddings)"
    cfg_path, tensors_path = folder / CONFIG_FILE, folder / TENSORS_FILE
    meta = read_json(cfg_path, expected=f"{CONFIG_FILE} written by quantizer.save()", fix=fix, max_bytes=2**20)
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        got = meta.get("format_version") if isinstance(meta, dict) else type(meta).__name__
        raise BadFileError(cfg_path, problem=f"format_version {got!r} is not {FORMAT_VERSION}",
                           expected=f'{{"format_version": {FORMAT_VERSION}, "config": {{...}}}}', fix=fix)
    try:
        if not isinstance(meta.get("config"), dict):
            raise TypeError(f"'config' must be a mapping of QuantizerConfig fields, got {meta.get('config')!r:.80}")
        q = create_quantizer(**meta["config"])
    except GenscomError:
        raise
    except (TypeError, ValueError) as exc:
        raise BadFileError(cfg_path, problem=first_line(exc, limit=300), expected="valid QuantizerConfig fields",
                           fix=fix) from None
    expected = f"{TENSORS_FILE} written by quantizer.save() for {q.name!r} on dim {q.dim}"
    if tensors_path.is_file():
        state = load_safetensors(tensors_path, expected=expected, fix=fix)
        try:
            q._load_tensors({k: v.numpy() for k, v in state.items()})
        except (TypeError, ValueError) as exc:
            raise BadFileError(tensors_path, problem=first_line(exc, limit=300), expected=expected, fix=fix) from None
    if not q.trained:
        raise BadFileError(tensors_path, problem="the fitted arrays (mean / centroids) are missing",
                           expected=expected, fix=fix)
    return q


# --------------------------------------------------------------------------- codewords and CRC
def _check_int(val: Any, name: str, lo: int) -> int:
    if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
    return int(val)


def info_bits_per_codeword(k: int) -> int:
    """Payload bits of an LDPC codeword of ``k`` information bits once its CRC-24 is in: ``k - 24``
    (:func:`genscom.coding.mcs.payload_bits_per_codeword` with ``crc=True``)."""
    return payload_bits_per_codeword(k, crc=True)


def codewords_for_bits(n_bits: int, k: int) -> int:
    """Codewords that carry ``n_bits`` payload bits with a CRC-24 each: ``ceil(n_bits / (k - 24))``."""
    return mcs_codewords_for_bits(n_bits, k=k, crc=True)


def framed_bits(n_bits: int, k: int) -> int:
    """Bits on the link for ``n_bits`` payload bits, CRCs included: ``n_bits + 24 * codewords_for_bits(n_bits, k)``
    (what :func:`genscom.coding.mcs.channel_uses_for_bits` with ``crc=True`` pays for, padding aside)."""
    return int(n_bits) + CRC_BITS * codewords_for_bits(n_bits, k)


def erased_bits_from_codewords(failed_codewords: torch.Tensor, k_info: int, n_bits: int) -> torch.Tensor:
    """``[B, n_cw]`` bool failed codewords -> ``[B, n_bits]`` bool erased payload bits.

    Payload bit ``j`` travels in codeword ``j // k_info`` (``k_info = info_bits_per_codeword(k)``).
    ``n_cw`` may exceed ``ceil(n_bits / k_info)`` (a link's mask padded to the longest item in a batch):
    the extra columns are ignored.
    """
    k_info = _check_int(k_info, "k_info", 1)
    n_bits = _check_int(n_bits, "n_bits", 0)
    need = math.ceil(n_bits / k_info)
    if not isinstance(failed_codewords, torch.Tensor) or failed_codewords.dim() != 2 \
            or failed_codewords.shape[1] < need:
        got = tuple(failed_codewords.shape) if isinstance(failed_codewords, torch.Tensor) else type(failed_codewords)
        raise ValueError(f"failed_codewords must be a [B, >= {need}] bool tensor ({n_bits} bits in codewords of "
                         f"{k_info} payload bits), got {got}")
    cw_of_bit = torch.arange(n_bits) // k_info
    return failed_codewords.detach().cpu().to(torch.bool)[:, cw_of_bit]


__all__ = [
    "CRC_BITS", "CRC_UNDETECTED_PROB", "FIXED_NAMES", "SCALAR_BITS", "SCALE_BITS",
    "EmbeddingQuantizer", "Fill", "Float16Quantizer", "ProductQuantizer", "QuantizerConfig", "ScalarQuantizer",
    "codewords_for_bits", "create_quantizer", "erased_bits_from_codewords", "fit_quantizer", "framed_bits",
    "info_bits_per_codeword", "list_quantizers", "load_quantizer",
]
