r"""5G NR LDPC codes (TS 38.212, with rate matching) from Sionna, at any code rate from 1/16 to 948/1024.

``LDPCCode(k, rate)`` encodes ``k`` information bits into ``n`` coded bits and
decodes channel LLRs back to ``k`` hard bits with flooding belief propagation
(boxplus-phi / sum-product check-node rule, ``num_iter`` iterations).

Length: ``n = ceil(k / rate)``; with ``bits_per_symbol = m`` given, ``n`` is
rounded up to a multiple of ``m`` (as the 5G rate-matched length ``E`` is a
multiple of ``Q_m``) and the 5G bit interleaver of TS 38.212 5.4.2.2 is applied
to the ``n`` bits, so each codeword fills whole QAM symbols. With the default
``k = 1024``, of the rates 1/3, 1/2, 2/3 only 64-QAM at rate 1/2 is rounded
(``n = 2052`` instead of 2048); the 3GPP rates ``R x 1024`` are rounded up by at most
``m - 1`` bits (e.g. ``qpsk-120/1024``: ``n = 8740``).

**Rates below 1/5.** Sionna's rate matching stops at rate 1/5 (``n <= 5k``; for
``k > 3824`` at 1/3). Below that, TS 38.212 keeps reading the circular buffer, so
coded bits repeat. Here the rate-1/5 codeword (``n_base = 5k`` bits, the first
``5k`` bits of the 5G circular buffer from ``k0 = 0``) is repeated cyclically to
``n`` bits, then interleaved; the receiver adds the LLRs of the copies of each bit
(exact for independent noise) and decodes the rate-1/5 code. This differs from the
standard only in the ``N_cb - 5k`` last parity bits of the buffer (64 bits for
``k = 1024``, 1.2 % of the buffer), which the standard sends before wrapping and
this code never sends: a slight underestimate of the lowest MCS.

**Decoders.** ``decoder="sionna"`` (default): Sionna's ``LDPC5GDecoder``, ``num_iter``
iterations, no early stopping, messages clipped at +-20. ``decoder="ldpc"``: the C++
belief propagation of the ``ldpc`` package (PyPI, MIT; optional) on the same
(pruned) parity-check matrix with the same LLR vector (punctured bits 0, filler bits
known, channel LLRs clipped at +-20), product-sum rule, flooding schedule, at most
``num_iter`` iterations, stopping early when the syndrome is satisfied: the same decoder
up to message clipping and early stopping, ~2-4x faster on a CPU where most codewords
decode (it is what the calibration uses when installed; see ``tests/test_ldpc.py`` for
the agreement check). ``"auto"``: ``"ldpc"`` if installed, else ``"sionna"``.

LLR convention: the decoder takes ``LLR = ln P(b=1)/P(b=0)`` (positive favours
1), exactly what :meth:`genscom.coding.qam.QAM.demap` returns.
"""

from __future__ import annotations

import importlib.util
import math
from fractions import Fraction
from typing import Literal

import numpy as np
import torch

from genscom.coding.qam import Precision, check_bits, check_precision, sionna_device

DEFAULT_K = 1024  # info bits per codeword: ~100-500 codewords/s on a 2-core CPU (rate 1/3 .. 2/3)
DEFAULT_NUM_ITER = 20
MIN_RATE = Fraction(1, 16)  # below 1/5 the rate-1/5 codeword is repeated cyclically (module docstring)
MAX_RATE = Fraction(948, 1024)  # the highest 5G NR code rate (TS 38.212 5.4.2.1)
DECODE_CHUNK = 64  # codewords per decoder call: larger batches decode slower per codeword on CPU
LLR_MAX = 20.0  # Sionna's LDPC5GDecoder clips messages (and filler LLRs) at this value
Decoder = Literal["sionna", "ldpc", "auto"]


def parse_rate(rate: object, name: str = "rate") -> Fraction:
    """``1/3``, ``0.5``, ``"2/3"``, ``"120/1024"`` or ``Fraction(2, 3)`` -> the exact code rate as a ``Fraction``.

    Floats are read to the nearest fraction with denominator <= 1024 (within 1e-9).
    Raises ``ValueError`` unless the rate is in [1/16, 948/1024].
    """
    frac: Fraction | None = None
    try:
        if isinstance(rate, Fraction):
            frac = rate
        elif isinstance(rate, str):
            frac = Fraction(rate.strip())
        elif isinstance(rate, (int, float)) and not isinstance(rate, bool):
            frac = Fraction(float(rate)).limit_denominator(1024)
            if abs(float(frac) - float(rate)) > 1e-9:
                frac = None
    except (ValueError, ZeroDivisionError):
        frac = None
    if frac is None or not MIN_RATE <= frac <= MAX_RATE:
        raise ValueError(f"{name} must be a code rate in [1/16, 948/1024] (5G NR LDPC), e.g. 1/2, '2/3' or "
                         f"'120/1024', got {rate!r}")
    return frac


def coded_length(k: int, rate: object, bits_per_symbol: int | None = None) -> int:
    """Codeword length ``n = ceil(k / rate)`` for ``k`` info bits (rounded up to a multiple of ``bits_per_symbol``
    if given)."""
    r = parse_rate(rate)
    n = math.ceil(k / r)
    if bits_per_symbol:
        n = bits_per_symbol * math.ceil(n / bits_per_symbol)
    return int(n)


def base_length(k: int, n: int) -> int:
    """Length of the 5G codeword actually rate-matched by Sionna: ``min(n, 5k)`` (``min(n, 3k)`` for ``k > 3824``);
    a longer ``n`` repeats it cyclically."""
    return min(n, 5 * k if k <= 3824 else 3 * k)


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 12 <= k <= 8448:
        raise ValueError(f"k (info bits per codeword) must be an integer in 12..8448 (5G NR LDPC), got {k!r}")
    return int(k)


def ldpc_available() -> bool:
    """True when the optional ``ldpc`` package (fast C++ belief propagation) is importable."""
    return importlib.util.find_spec("ldpc") is not None


def resolve_decoder(decoder: object) -> Literal["sionna", "ldpc"]:
    """``"auto"`` -> ``"ldpc"`` when installed, else ``"sionna"``; ``"ldpc"`` without the package raises."""
    if decoder not in ("sionna", "ldpc", "auto"):
        raise ValueError(f"decoder must be 'sionna', 'ldpc' or 'auto', got {decoder!r}")
    if decoder == "auto":
        return "ldpc" if ldpc_available() else "sionna"
    if decoder == "ldpc" and not ldpc_available():
        raise ValueError("decoder='ldpc' needs the optional 'ldpc' package (pip install ldpc); "
                         "use decoder='sionna' or 'auto'")
    return decoder  # type: ignore[return-value]


class _LdpcBP:
    """Belief propagation of the ``ldpc`` package on Sionna's 5G parity-check matrix (see the module docstring)."""

    def __init__(self, encoder: object, num_iter: int) -> None:
        import scipy.sparse as sp
        from ldpc import BpDecoder

        pcm = sp.csr_matrix(encoder.pcm)  # type: ignore[attr-defined]
        n_ldpc, z, k, k_filler = encoder.n_ldpc, encoder.z, encoder.k, encoder.k_filler  # type: ignore[attr-defined]
        # prune the trailing punctured degree-1 variable nodes and their checks, as LDPC5GDecoder(prune_pcm=True)
        dv = np.asarray(pcm.sum(axis=0)).ravel()
        last = n_ldpc
        for i in range(n_ldpc - 1, 0, -1):
            if dv[i] != 1:
                break
            last = i
        n_punc = (n_ldpc - k_filler) - encoder.n - 2 * z  # type: ignore[attr-defined]
        n_pr = int(max(last, n_ldpc - n_punc))
        pruned = n_ldpc - n_pr
        if pruned:
            pcm = pcm[: pcm.shape[0] - pruned, :n_pr]
        self.H = sp.csr_matrix(pcm, dtype=np.uint8)
        self.n_pr, self.z, self.k, self.k_filler = n_pr, z, k, k_filler
        self.buf_len = n_pr - 2 * z - k_filler
        self.bp = BpDecoder(self.H, error_rate=0.1, max_iter=num_iter, bp_method="product_sum",
                            schedule="parallel", input_vector_type="syndrome")

    def __call__(self, llr: torch.Tensor) -> torch.Tensor:
        """``[B, n_base]`` LLRs ``ln P(1)/P(0)`` -> ``[B, k]`` hard info bits (float32)."""
        L = llr.detach().to("cpu", torch.float64).numpy()
        b = L.shape[0]
        buf = np.zeros((b, self.buf_len))
        buf[:, : L.shape[1]] = L
        n_sys = self.k - 2 * self.z
        full = np.concatenate([np.zeros((b, 2 * self.z)), buf[:, :n_sys], np.full((b, self.k_filler), -LLR_MAX),
                               buf[:, n_sys:]], axis=1)
        np.clip(full, -LLR_MAX, LLR_MAX, out=full)
        hard = (full > 0).astype(np.uint8)
        syn = np.asarray((self.H @ hard.T).T % 2, dtype=np.uint8)
        prob = 1.0 / (1.0 + np.exp(np.abs(full)))  # P(hard decision wrong)
        out = hard[:, : self.k].copy()
        for i in range(b):
            if not syn[i].any():
                continue  # already a codeword
            self.bp.update_channel_probs(prob[i])
            out[i] ^= self.bp.decode(syn[i])[: self.k].astype(np.uint8)
        return torch.from_numpy(out.astype(np.float32))


class LDPCCode:
    """A 5G NR LDPC code with ``k`` info bits at ``rate`` in [1/16, 948/1024].

    Args:
        k: information bits per codeword (12..8448; default 1024).
        rate: the code rate (float, ``"1/2"`` / ``"120/1024"`` string or ``Fraction``).
        bits_per_symbol: QAM bits per symbol (2, 4, 6) to round ``n`` to whole
            symbols and apply the 5G bit interleaver; ``None`` for neither.
        num_iter: BP iterations (at most, for ``decoder="ldpc"``).
        decoder: ``"sionna"``, ``"ldpc"`` (optional package) or ``"auto"`` (module docstring).
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
                 num_iter: int = DEFAULT_NUM_ITER, decoder: Decoder = "sionna", precision: Precision = "single",
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
        self.decoder = resolve_decoder(decoder)
        self.precision = check_precision(precision)
        dev = sionna_device(device)
        self.device = torch.device(dev)
        self.n = coded_length(self.k, self.rate, bits_per_symbol)
        self.n_base = base_length(self.k, self.n)
        self._encoder = LDPC5GEncoder(self.k, self.n_base, precision=self.precision, device=dev)
        if self.decoder == "sionna":
            self._decoder = LDPC5GDecoder(self._encoder, num_iter=num_iter, hard_out=True, return_infobits=True,
                                          precision=self.precision, device=dev)
        else:
            self._decoder = _LdpcBP(self._encoder, num_iter)
        # cyclic repetition (n > n_base) and the 5G output interleaver over the n transmitted bits
        self._rep_idx = torch.arange(self.n, device=self.device) % self.n_base if self.n > self.n_base else None
        if bits_per_symbol:
            perm, inv = self._encoder.generate_out_int(self.n, bits_per_symbol)
            self._perm = torch.as_tensor(perm, dtype=torch.int64, device=self.device)
            self._perm_inv = torch.as_tensor(inv, dtype=torch.int64, device=self.device)
        else:
            self._perm = self._perm_inv = None

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
        c = self._encoder(flat.to(real))
        if self._rep_idx is not None:
            c = c[:, self._rep_idx]
        if self._perm is not None:
            c = c[:, self._perm]
        return c.reshape(*lead, self.n)

    @torch.no_grad()
    def decode(self, llr: torch.Tensor) -> torch.Tensor:
        """Channel LLRs ``[..., n]`` (``ln P(1)/P(0)``) -> hard info bits ``[..., k]`` (float 0/1)."""
        if not isinstance(llr, torch.Tensor) or llr.is_complex() or not llr.is_floating_point():
            raise TypeError(f"llr must be a real floating tensor [..., n={self.n}], got {getattr(llr, 'dtype', type(llr).__name__)}")
        if llr.dim() == 0 or llr.shape[-1] != self.n:
            raise ValueError(f"llr must have shape [..., n={self.n}], got {tuple(llr.shape)}")
        lead = llr.shape[:-1]
        real = torch.float64 if self.precision == "double" else torch.float32
        flat = llr.reshape(-1, self.n).to(self.device, real)
        if flat.shape[0] == 0:
            return torch.zeros(*lead, self.k, dtype=real, device=self.device)
        if self._perm_inv is not None:
            flat = flat[:, self._perm_inv]
        if self._rep_idx is not None:  # add the LLRs of the copies of each bit of the base codeword
            flat = torch.zeros(flat.shape[0], self.n_base, dtype=real, device=self.device).index_add_(
                1, self._rep_idx, flat)
        out = [self._decoder(flat[i:i + DECODE_CHUNK]) for i in range(0, flat.shape[0], DECODE_CHUNK)]
        return torch.cat(out).to(self.device, real).reshape(*lead, self.k)

    def __repr__(self) -> str:
        return (f"LDPCCode(k={self.k}, rate={self.rate}, n={self.n}, bits_per_symbol={self.bits_per_symbol}, "
                f"num_iter={self.num_iter}, decoder={self.decoder!r})")
