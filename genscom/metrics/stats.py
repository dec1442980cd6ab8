"""Summary statistics for reporting (PROTOCOL.md: mean and 95% interval over realisations)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of the two-sided 95% Student-t confidence interval of the mean.

    ``half = t_{0.975, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``). Report as ``mean ± half``.

    Args:
        values: ``n >= 1`` finite numbers (e.g. one metric over channel realisations).

    Returns:
        ``(mean, half_width)``; ``half_width`` is ``nan`` when ``n == 1`` (no spread
        estimate; the results file writes it as ``null``).

    Example:
        >>> mean_ci95([1.0, 2.0, 3.0])  # t_{0.975,2} = 4.303
        (2.0, 2.4841...)
    """
    from scipy import stats

    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    if arr.size == 0:
        raise ValueError("values must hold at least one number, got an empty sequence")
    if not np.isfinite(arr).all():
        raise ValueError(f"values must be finite, got {arr[~np.isfinite(arr)][:4].tolist()} among them; "
                         "drop or cap infinite entries (e.g. PSNR of identical images) first")
    mean = float(arr.mean())
    n = arr.size
    if n == 1:
        return mean, math.nan
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    return mean, float(stats.t.ppf(0.975, df=n - 1)) * sem


__all__ = ["mean_ci95"]
