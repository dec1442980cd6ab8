r"""Closed-form bit error rates of uncoded Gray QAM, to check simulations against.

SNR convention (PROTOCOL.md): ``snr_db`` is ``Es/N0`` per complex symbol in dB,
symbols of unit average energy, noise ``CN(0, N0)``. Every function is
vectorised over ``snr_db`` (scalar or array-like) and returns a float64 numpy
array of the same shape (a 0-d array for a scalar).

Square Gray M-QAM on AWGN (exact, Cho & Yoon, IEEE Trans. Commun. 2002), with
``L = sqrt(M)``, ``gamma = Es/N0``::

    P_b = 1/log2(L) * sum_{k=1}^{log2 L} P_k,
    P_k = 1/L * sum_{i=0}^{(1-2^-k) L - 1} (-1)^floor(i 2^(k-1)/L)
          * (2^(k-1) - floor(i 2^(k-1)/L + 1/2)) * erfc((2i+1) sqrt(3 gamma / (2 (M-1))))

For QPSK this is ``Q(sqrt(Es/N0))`` (``= Q(sqrt(2 Eb/N0))``). As ``P_b`` is a linear
combination of ``erfc(sqrt(c_j gamma))``, its average over Rayleigh fading
(``gamma`` exponential with mean ``Es/N0``, perfect CSI) is the same combination
of ``1 - sqrt(c_j gamma_bar / (1 + c_j gamma_bar))`` -- exact, no quadrature.
For QPSK that is ``0.5 (1 - sqrt(g / (1 + g)))`` with ``g = Es/N0 / 2 = Eb/N0``.
Rician fading is averaged numerically (``scipy.integrate.quad``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate, special

from genscom.coding.qam import check_order


@lru_cache(maxsize=None)
def _erfc_terms(order: int) -> tuple[tuple[float, float], ...]:
    """``((weight_j, c_j), ...)`` with ``P_b(gamma) = sum_j weight_j erfc(sqrt(c_j gamma))``."""
    m = check_order(order)
    L = int(round(math.sqrt(m)))
    nb = int(round(math.log2(L)))
    base = 3.0 / (2.0 * (m - 1))
    acc: dict[int, float] = {}
    for k in range(1, nb + 1):
        for i in range(int((1 - 2.0 ** -k) * L)):
            f = math.floor(i * 2 ** (k - 1) / L)
            w = (-1) ** f * (2 ** (k - 1) - math.floor(i * 2 ** (k - 1) / L + 0.5))
            acc[i] = acc.get(i, 0.0) + w / L / nb
    return tuple((w, (2 * i + 1) ** 2 * base) for i, w in sorted(acc.items()) if w != 0)


def _gamma(snr_db: ArrayLike) -> np.ndarray:
    s = np.asarray(snr_db, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"snr_db must be finite (dB), got {s.ravel()[:4].tolist()}")
    return 10.0 ** (s / 10.0)


def qfunc(x: ArrayLike) -> np.ndarray:
    """Gaussian tail ``Q(x) = 0.5 erfc(x / sqrt(2))``."""
    return 0.5 * special.erfc(np.asarray(x, dtype=np.float64) / math.sqrt(2.0))


def ber_qam_awgn(snr_db: ArrayLike, order: int) -> np.ndarray:
    """Exact BER of Gray ``order``-QAM (4, 16, 64) on AWGN at ``Es/N0 = snr_db``."""
    g = _gamma(snr_db)
    out = np.zeros_like(g)
    for w, c in _erfc_terms(order):
        out = out + w * special.erfc(np.sqrt(c * g))
    return out


def ber_qpsk_awgn(snr_db: ArrayLike) -> np.ndarray:
    """``Q(sqrt(Es/N0))``: QPSK BER on AWGN."""
    return qfunc(np.sqrt(_gamma(snr_db)))


def ber_qpsk_rayleigh(snr_db: ArrayLike) -> np.ndarray:
    """QPSK BER on Rayleigh fading (``E|h|^2 = 1``, perfect CSI): ``0.5 (1 - sqrt(g/(1+g)))``, ``g = Es/N0/2``."""
    g = _gamma(snr_db) / 2.0
    return 0.5 * (1.0 - np.sqrt(g / (1.0 + g)))


def ber_qam_rayleigh(snr_db: ArrayLike, order: int) -> np.ndarray:
    """Exact average BER of Gray ``order``-QAM on Rayleigh fading with perfect CSI (coherent detection)."""
    g = _gamma(snr_db)
    out = np.zeros_like(g)
    for w, c in _erfc_terms(order):
        out = out + w * (1.0 - np.sqrt(c * g / (1.0 + c * g)))
    return out


def ber_qam_rician(snr_db: ArrayLike, order: int, *, k_factor: float) -> np.ndarray:
    """Average BER of Gray QAM on Rician fading (``E|h|^2 = 1``, K factor linear), numerical quadrature.

    ``|h|^2`` is non-central chi-square: ``pdf(x) = (1+K) e^{-K-(1+K)x} I0(2 sqrt(K(1+K)x))``.
    ``k_factor = 0`` is Rayleigh; large ``k_factor`` tends to AWGN.
    """
    if not isinstance(k_factor, (int, float)) or isinstance(k_factor, bool) or not k_factor >= 0 or not math.isfinite(k_factor):
        raise ValueError(f"k_factor must be a finite number >= 0 (linear, not dB), got {k_factor!r}")
    K = float(k_factor)
    g = _gamma(snr_db)
    terms = _erfc_terms(order)

    def pdf(x: float) -> float:
        # i0e(z) = exp(-z) I0(z): stable for large K.
        z = 2.0 * math.sqrt(K * (1.0 + K) * x)
        return (1.0 + K) * math.exp(-K - (1.0 + K) * x + z) * float(special.i0e(z))

    def one(gamma: float) -> float:
        f = lambda x: pdf(x) * sum(w * math.erfc(math.sqrt(c * gamma * x)) for w, c in terms)  # noqa: E731
        std = math.sqrt(1.0 + 2.0 * K) / (1.0 + K)  # std of |h|^2
        val, _ = integrate.quad(f, 0.0, 2.0 + 50.0 * std, limit=200, points=[1.0])
        return val

    flat = np.array([one(float(x)) for x in g.ravel()])
    return flat.reshape(g.shape)
