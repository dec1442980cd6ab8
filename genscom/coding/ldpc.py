"""5G NR LDPC codes (TS 38.212, with rate matching) from Sionna, at rates 1/3, 1/2, 2/3.

``LDPCCode(k, rate)`` encodes ``k`` information bits into ``n`` coded bits and
decodes channel LLRs back to ``k`` hard bits with flooding belief propagation
(boxplus-phi check-node rule, ``num_iter`` iterations, no early stopping).

Length: ``n = ceil(k / rate)``; with ``bits_per_symbol = m`` given, ``n`` is
rounded up to a multiple of ``m`` (as the 5G rate-matched length ``E`` is a
multiple of ``Q_m``) and the 5G bit interleaver of TS 38.212 5.4.2.2 is applied,
so each codeword fills whole QAM symbols. With the default ``k = 1024`` the only
rounding is 64-QAM at rate 1/2 (``n = 2052`` instead of 2048).

LLR convention: the decoder takes ``LLR = ln P(b=1)/P(b=0)`` (positive favours
1), exactly what :meth:`genscom.coding.qam.QAM.demap` returns.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from genscom.coding.qam import Precision, check_bits, check_precision, sionna_device

DEFAULT_K = 1024  # info bits per codeword: ~100-500 codewords/s on a 2-core CPU (rate 1/3 .. 2/3)
DEFAULT_NUM_ITER = 20
ALLOWED_RATES: tuple[Fraction, ...] = (Fraction(1, 3), Fraction(1, 2), Fraction(2, 3))
_RATE_NAMES = "1/3, 1/2, 2/3"
DECODE_CHUNK = 64  # codewords per decoder call: larger batches decode slower per codeword on CPU


def parse_rate(rate: object, name: str = "rate") -> Fraction:
    """``1/3``, ``0.5``, ``"2/3"`` or ``Fraction(2, 3)`` -> the exact allowed ``Fraction``.

    Raises ``ValueError`` naming the allowed rates (1/3, 1/2, 2/3).
    """
    frac: Fraction | None = None
    try:
        if isinstance(rate, Fraction):
            frac = rate
        elif isinstance(rate, str):
            frac = Fraction(rate.strip())
        elif isinstance(rate, (int, float)) and not isinstance(rate, bool):
            frac = Fraction(float(rate)).limit_denominator(12)
            if abs(float(frac) - float(rate)) > 1e-6:
                frac = None
    except (ValueError, ZeroDivisionError):
        frac = None
    if frac is None or frac not in ALLOWED_RATES:
        raise ValueError(f"{name} must be one of the 5G LDPC code rates {_RATE_NAMES}, got {rate!r}")
    return frac


def coded_length(k: int, rate: object, bits_per_symbol: int | None = None) -> int:
    """Codeword length ``n`` for ``k`` info bits at ``rate`` (multiple of ``bits_per_symbol`` if given)."""
    r = parse_rate(rate)
    n = math.ceil(k / r)
    if bits_per_symbol:
        n = bits_per_symbol * math.ceil(n / bits_per_symbol)
    return int(n)


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 12 <= k <= 8448:
        raise ValueError(f"k (info bits per codeword) must be an integer in 12..8448 (5G NR LDPC), got {k!r}")
    return int(k)


class LDPCCode:
    """A 5G NR LDPC code with ``k`` info bits at ``rate`` in {1/3, 1/2, 2/3}.

    Args:
        k: information bits per codeword (12..8448; default 1024).
        rate: 1/3, 1/2 or 2/3 (float, ``"1/2"`` string or ``Fraction``).
        bits_per_symbol: QAM bits per symbol (2, 4, 6) to round ``n`` to whole
            symbols and apply the 5G bit interleaver; ``None`` for neither.
        num_iter: BP iterations.
        precision: ``"single"`` or ``"double"``.
        device: where Sionna's blocks run.

    ``encode``: bits ``[..., k]`` (0/1 float or int) -> ``[..., n]`` float32 0/1.
    ``decode``: LLRs ``[..., n]`` (``ln P(1)/P(0)``) -> hard bits ``[..., k]`` float32 0/1.

    Example:
        >>> code = LDPCCode(1024, "1/2")
        >>> c = code.encode(torch.randint(0, 2, (4, 1024)))     # [4, 2048]
        >>> u = code.decode(8.0 * (2 * c - 1))                    # [4, 1024]
    """

    def __init__(self, k: int = DEFAULT_K, rate: object = "1/2", *, bits_per_symbol: int | None = None,
                 num_iter: int = DEFAULT_NUM_ITER, precision: Precision = "single",
                 device: str | torch.device = "cpu") -> None:
        from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder

        self.k = check_k(k)
        self.rate = parse_rate(rate)
        if bits_per_symbol is not None and bits_per_symbol not in (2, 4, 6):
            raise ValueError(f"bits_per_symbol must be 2, 4, 6 (QPSK/16-QAM/64-QAM) or None, got {bits_per_symbol!r}")
        if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 1:
            raise ValueError(f"num_iter must be a positive integer (BP iterations), got {num_iter!r}")
        self.bits_per_symbol = bits_per_symbol
        self.num_iter = num_iter
        self.precision = check_precision(precision)
        dev = sionna_device(device)
        self.device = torch.device(dev)
        self.n = coded_length(self.k, self.rate, bits_per_symbol)
        self._encoder = LDPC5GEncoder(self.k, self.n, num_bits_per_symbol=bits_per_symbol,
                                      precision=self.precision, device=dev)
        self._decoder = LDPC5GDecoder(self._encoder, num_iter=num_iter, hard_out=True, return_infobits=True,
                                      precision=self.precision, device=dev)

    @property
    def actual_rate(self) -> float:
        """``k / n`` after rounding ``n`` to whole symbols."""
        return self.k / self.n

    def encode(self, bits: torch.Tensor) -> torch.Tensor:
        """Info bits ``[..., k]`` -> codeword bits ``[..., n]`` (float, 0/1)."""
        check_bits(bits)
        if bits.dim() == 0 or bits.shape[-1] != self.k:
            raise ValueError(f"bits must have shape [..., k={self.k}], got {tuple(bits.shape)}; pad or split into codewords of k bits")
        lead = bits.shape[:-1]
        flat = bits.reshape(-1, self.k).to(device=self.device)
        real = torch.float64 if self.precision == "double" else torch.float32
        if flat.shape[0] == 0:
            return torch.zeros(*lead, self.n, dtype=real, device=self.device)
        return self._encoder(flat.to(real)).reshape(*lead, self.n)

    @torch.no_grad()
    def decode(self, llr: torch.Tensor) -> torch.Tensor:
        """Channel LLRs ``[..., n]`` (``ln P(1)/P(0)``) -> hard info bits ``[..., k]`` (float 0/1)."""
        if not isinstance(llr, torch.Tensor) or llr.is_complex() or not llr.is_floating_point():
            raise TypeError(f"llr must be a real floating tensor [..., n={self.n}], got {getattr(llr, 'dtype', type(llr).__name__)}")
        if llr.dim() == 0 or llr.shape[-1] != self.n:
            raise ValueError(f"llr must have shape [..., n={self.n}], got {tuple(llr.shape)}")
        lead = llr.shape[:-1]
        flat = llr.reshape(-1, self.n).to(self.device)
        real = torch.float64 if self.precision == "double" else torch.float32
        if flat.shape[0] == 0:
            return torch.zeros(*lead, self.k, dtype=real, device=self.device)
        out = [self._decoder(flat[i:i + DECODE_CHUNK]) for i in range(0, flat.shape[0], DECODE_CHUNK)]
        return torch.cat(out).to(real).reshape(*lead, self.k)

    def __repr__(self) -> str:
        return (f"LDPCCode(k={self.k}, rate={self.rate}, n={self.n}, bits_per_symbol={self.bits_per_symbol}, "
                f"num_iter={self.num_iter})")
