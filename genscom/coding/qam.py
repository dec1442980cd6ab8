"""Gray-labelled square QAM (4/16/64) on top of Sionna's Mapper/Demapper.

Modulation is named by its **order** ``M`` (number of points): 4 (QPSK), 16
or 64; ``m = log2(M)`` bits per symbol. Points follow 3GPP TS 38.211
(Gray-labelled per I/Q dimension) and have unit average energy ``Es = 1``.

LLR sign convention (Sionna's, used everywhere in :mod:`genscom.coding`)::

    LLR(b) = ln P(b = 1 | y) / P(b = 0 | y)

so a **positive** LLR favours bit 1 (it is a logit). The LDPC decoder of
:mod:`genscom.coding.ldpc` takes LLRs with this same sign.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

ALLOWED_ORDERS: tuple[int, ...] = (4, 16, 64)
Precision = Literal["single", "double"]
DemapMethod = Literal["app", "maxlog"]


def check_order(order: object, name: str = "order") -> int:
    """Return ``order`` as int, or raise ``ValueError`` naming the allowed orders {4, 16, 64}."""
    if isinstance(order, bool) or not isinstance(order, int) or order not in ALLOWED_ORDERS:
        raise ValueError(
            f"{name} must be a QAM order (number of constellation points) in {{4, 16, 64}}, got {order!r}; "
            "use 4 for QPSK, 16 for 16-QAM, 64 for 64-QAM"
        )
    return int(order)


def sionna_device(device: str | torch.device | None) -> str:
    """Torch device -> the device string Sionna accepts (``"cpu"`` or ``"cuda:<i>"``)."""
    d = torch.device("cpu" if device is None else device)
    if d.type == "cuda":
        return f"cuda:{d.index if d.index is not None else 0}"
    if d.type != "cpu":
        raise ValueError(f"device must be 'cpu' or a CUDA device, got {str(device)!r}")
    return "cpu"


def check_precision(precision: object) -> Precision:
    if precision not in ("single", "double"):
        raise ValueError(f"precision must be 'single' (float32/complex64) or 'double' (float64/complex128), got {precision!r}")
    return precision  # type: ignore[return-value]


def check_bits(bits: torch.Tensor, name: str = "bits") -> None:
    """Raise ``TypeError``/``ValueError`` unless ``bits`` is a real tensor of 0/1 values."""
    if not isinstance(bits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of 0/1 values, got {type(bits).__name__}")
    if bits.is_complex():
        raise TypeError(f"{name} must be real 0/1 values (float or int), got {bits.dtype}")
    if bits.numel() and not bool(((bits == 0) | (bits == 1)).all()):
        raise ValueError(f"{name} must hold only 0 and 1; threshold or unpack your data first")


class QAM:
    r"""Gray-labelled square QAM with unit average energy.

    ``map``: bits ``[..., n_bits]`` (0/1, float or int; ``n_bits`` a multiple of
    ``m = log2(order)``) -> symbols ``[..., n_bits / m]`` complex64 (complex128 for
    ``precision="double"``). Bit ``j`` of a symbol is bit ``j`` of its label,
    most significant first, as in TS 38.211.

    ``demap``: received ``y`` ``[..., n_sym]`` and noise variance ``N0`` (scalar or
    broadcastable to ``y``; the variance of the complex noise, ``N0/2`` per real
    dimension, after any equalisation) -> LLRs ``[..., n_sym * m]`` float32 with
    ``LLR = ln P(b=1|y)/P(b=0|y)`` (positive favours 1). ``method="app"`` is exact
    (log-sum-exp), ``"maxlog"`` the max-log approximation.

    ``hard``: nearest-point decisions -> bits ``[..., n_sym * m]`` float 0/1.

    Args:
        order: 4, 16 or 64 (number of points).
        method: demapping method, ``"app"`` or ``"maxlog"``.
        precision: ``"single"`` or ``"double"``.
        device: where Sionna's blocks run (``"cpu"``, ``"cuda"``...).

    Example:
        >>> qam = QAM(16)
        >>> x = qam.map(torch.randint(0, 2, (8, 400)))   # [8, 100] complex64
        >>> llr = qam.demap(x, 0.01)                      # [8, 400]
    """

    def __init__(self, order: int, *, method: DemapMethod = "app", precision: Precision = "single",
                 device: str | torch.device = "cpu") -> None:
        from sionna.phy.mapping import Constellation, Demapper, Mapper

        self.order = check_order(order)
        if method not in ("app", "maxlog"):
            raise ValueError(f"method must be 'app' or 'maxlog', got {method!r}")
        self.method = method
        self.precision = check_precision(precision)
        self.device = torch.device(sionna_device(device))
        self.bits_per_symbol = int(math.log2(self.order))
        dev = sionna_device(device)
        self._constellation = Constellation("qam", self.bits_per_symbol, precision=self.precision, device=dev)
        self._mapper = Mapper(constellation=self._constellation, precision=self.precision, device=dev)
        self._demapper = Demapper(method, constellation=self._constellation, precision=self.precision, device=dev)
        self._hard = Demapper("maxlog", constellation=self._constellation, hard_out=True,
                              precision=self.precision, device=dev)

    @property
    def points(self) -> torch.Tensor:
        """``[order]`` complex constellation points; index = bit label (MSB first)."""
        return self._constellation()

    def _check_len(self, n: int, what: str) -> None:
        if n % self.bits_per_symbol:
            raise ValueError(
                f"{what} has {n} bits in its last dimension, not a multiple of {self.bits_per_symbol} "
                f"(bits per {self.order}-QAM symbol); pad the bits first"
            )

    def map(self, bits: torch.Tensor) -> torch.Tensor:
        """Bits ``[..., n_bits]`` 0/1 -> symbols ``[..., n_bits / m]`` complex, ``E|x|^2 = 1``."""
        check_bits(bits)
        if bits.dim() == 0:
            raise ValueError("bits must have at least one dimension [..., n_bits]")
        self._check_len(bits.shape[-1], "bits")
        return self._mapper(bits.to(self.device))

    def demap(self, y: torch.Tensor, noise_var: float | torch.Tensor) -> torch.Tensor:
        """Symbols ``[..., n_sym]`` + ``N0`` -> LLRs ``[..., n_sym * m]``, ``ln P(1)/P(0)``."""
        if not isinstance(y, torch.Tensor) or not y.is_complex():
            raise TypeError(f"y must be a complex tensor of received symbols, got {getattr(y, 'dtype', type(y).__name__)}")
        nv = torch.as_tensor(noise_var, device=y.device)
        if nv.is_complex() or not bool((nv >= 0).all()):
            raise ValueError("noise_var must be real and non-negative (N0 per complex symbol)")
        real = torch.float64 if self.precision == "double" else torch.float32
        return self._demapper(y.to(self.device), nv.to(device=self.device, dtype=real))

    def hard(self, y: torch.Tensor) -> torch.Tensor:
        """Nearest-point decisions: symbols ``[..., n_sym]`` -> bits ``[..., n_sym * m]`` float 0/1."""
        if not isinstance(y, torch.Tensor) or not y.is_complex():
            raise TypeError(f"y must be a complex tensor of received symbols, got {getattr(y, 'dtype', type(y).__name__)}")
        real = torch.float64 if self.precision == "double" else torch.float32
        out = self._hard(y.to(self.device), torch.ones((), dtype=real, device=self.device))
        return out.to(real)

    def __repr__(self) -> str:
        return f"QAM(order={self.order}, method={self.method!r}, precision={self.precision!r})"


def llr_to_bits(llr: torch.Tensor) -> torch.Tensor:
    """Hard decision on LLRs in the ``ln P(1)/P(0)`` convention: ``llr > 0 -> 1``."""
    return (llr > 0).to(torch.float32)
