"""Summary statistics for reporting (PROTOCOL.md: mean and 95% interval).

* :func:`bootstrap_ci`, :func:`paired_bootstrap_diff`: percentile bootstrap over items x
  channel realisations, the protocol's interval for retrieval metrics;
  :func:`half_width` maps it to the results record's ``ci95`` number.
* :func:`mean_ci95`: Student-t interval over realisations (one number per realisation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


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


def _as_matrix(values: Any, name: str, *, stacked: bool = False) -> torch.Tensor:
    """``values`` as a float64 CPU tensor ``[R, n]`` (or ``[M, R, n]`` with ``stacked``), checked."""
    t = torch.as_tensor(np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values,
                                   dtype=np.float64))
    dims = (2, 3) if stacked else (2,)
    if t.dim() not in dims or min(t.shape, default=0) < 1:
        want = "[R realisations, n items] or [M metrics, R, n]" if stacked else "[R realisations, n items]"
        raise ValueError(f"{name} must be a non-empty array {want}, got shape {tuple(t.shape)}; "
                         f"for one realisation pass {name}[None, :]")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf entries; drop or cap them first")
    return t


def _check_boot(n_boot: Any, level: Any, generator: Any) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer (bootstrap replicates), got {n_boot!r}")
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a coverage in (0, 1), e.g. 0.95, got {level!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
                        f"got {type(generator).__name__}")


def _resample_weights(n: int, n_boot: int, generator: torch.Generator) -> torch.Tensor:
    """``[n_boot, n]`` float64 multiplicities of ``n`` indices drawn with replacement, once per replicate."""
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    w = torch.zeros(n_boot, n, dtype=torch.float64)
    return w.scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))


def bootstrap_means(values: Any, *, n_boot: int = 1000, generator: torch.Generator) -> torch.Tensor:
    """Replicate means of ``values [R, n]`` (or ``[M, R, n]``), resampling realisations and items with replacement.

    Replicate ``b`` draws realisations ``r_1..r_R`` and items ``i_1..i_n`` (the same items
    for every realisation) and takes ``mean_{a, c} values[r_a, i_c]``. With the draws as
    multiplicities ``u_b [R]`` and ``w_b [n]`` (summing to ``R`` and ``n``) that mean is
    ``u_b^T values w_b / (R n)``: one matrix product, no ``[n_boot, R, n]`` gather.
    Realisations are drawn first (``[n_boot, R]`` indices), then items (``[n_boot, n]``).
    A stacked ``[M, R, n]`` input (``M`` metrics of the same queries) is resampled with the
    **same** draws for every metric, so replicates of sums of metrics are sums of replicates.
    Building block of :func:`bootstrap_ci` and :func:`paired_bootstrap_diff`.

    Returns:
        float64 ``[n_boot]`` (or ``[M, n_boot]``).
    """
    _check_boot(n_boot, 0.95, generator)
    v = _as_matrix(values, "values", stacked=True)
    return _boot_means(v, n_boot, generator)


def _boot_means(values: torch.Tensor, n_boot: int, generator: torch.Generator) -> torch.Tensor:
    flat = values.dim() == 2
    v = values[None] if flat else values                          # (M, R, n)
    m, r, n = v.shape
    u = _resample_weights(r, n_boot, generator)                   # (B, R) realisation multiplicities
    w = _resample_weights(n, n_boot, generator)                   # (B, n) item multiplicities
    item_sums = (v.reshape(m * r, n) @ w.T).reshape(m, r, n_boot)  # (M, R, B): sum_c w_bc v[m, r, c]
    out = (item_sums * u.T[None]).sum(dim=1) / (r * n)            # (M, B)
    return out[0] if flat else out


def _percentile(means: torch.Tensor, level: float) -> tuple[float, float]:
    q = torch.tensor([(1.0 - level) / 2.0, (1.0 + level) / 2.0], dtype=torch.float64)
    lo, hi = torch.quantile(means, q).tolist()
    return float(lo), float(hi)


def bootstrap_ci(values: Any, *, n_boot: int = 1000, generator: torch.Generator,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval over channel realisations x items (PROTOCOL.md).

    ``values[r, i]`` is a per-item (per-query) metric under channel realisation ``r``.
    Each of the ``n_boot`` replicates resamples the ``R`` realisations with replacement
    **and** the ``n`` items with replacement (the same item indices in every
    realisation row, so an item's realisations stay together) and takes the grand mean
    of the resampled ``[R, n]`` table. The interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of the replicate means (linear interpolation).
    Resampling both ways is slightly conservative when the channel rather than the item
    drives the spread (Owen 2007, "the pigeonhole bootstrap"); with ``R = 1`` it is the
    ordinary bootstrap over items.

    Args:
        values: ``[R, n]`` finite numbers (tensor or array), e.g. 0/1 (or fractional) hit
            indicators of ``n`` queries under ``R`` channel realisations. ``R = 1`` resamples
            items only.
        n_boot: number of bootstrap replicates.
        generator: source of the resampling indices (fix its seed for reproducible intervals;
            two calls with equally seeded generators and equal shapes draw the same indices).
        level: coverage of the interval, in (0, 1).

    Returns:
        ``(mean, lo, hi)``: the mean of ``values`` (not of the replicates) and the interval.
        The interval need not be symmetric about the mean; :func:`half_width` turns it into
        the single ``ci95`` number of a results record.

    Example:
        >>> v = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0]])
        >>> bootstrap_ci(v, generator=torch.Generator().manual_seed(0))[0]
        0.625
    """
    _check_boot(n_boot, level, generator)
    v = _as_matrix(values, "values")
    means = _boot_means(v, n_boot, generator)
    lo, hi = _percentile(means, float(level))
    return float(v.mean()), lo, hi


def paired_bootstrap_diff(a: Any, b: Any, *, n_boot: int = 1000, generator: torch.Generator,
                          level: float = 0.95) -> tuple[float, float, float]:
    """Mean difference ``mean(a) - mean(b)`` and its paired percentile bootstrap interval.

    ``a[r, i]`` and ``b[r, i]`` are the same item ``i`` under the same channel
    realisation ``r`` for two schemes. Every replicate applies **one** resampling of
    realisations and items (as in :func:`bootstrap_ci`) to both, so the interval is
    that of ``mean(a* - b*)``: shared item difficulty and shared channel draws cancel.
    "a better than b" holds when ``lo > 0``; "at least as good" when ``hi >= 0``.

    Args:
        a, b: ``[R, n]`` finite numbers of equal shape.
        n_boot, generator, level: as in :func:`bootstrap_ci`.

    Returns:
        ``(mean_diff, lo, hi)``; identical inputs give ``(0.0, 0.0, 0.0)``.
    """
    _check_boot(n_boot, level, generator)
    ta, tb = _as_matrix(a, "a"), _as_matrix(b, "b")
    if ta.shape != tb.shape:
        raise ValueError(f"a and b must have equal shapes [R, n] (paired: same realisations and items), got "
                         f"{tuple(ta.shape)} and {tuple(tb.shape)}")
    d = ta - tb
    means = _boot_means(d, n_boot, generator)
    lo, hi = _percentile(means, float(level))
    return float(d.mean()), lo, hi


def half_width(mean: float, lo: float, hi: float) -> float:
    """The one-number ``ci95`` of a results record for a possibly asymmetric interval ``[lo, hi]``.

    ``h = max(mean - lo, hi - mean)``, so ``[mean - h, mean + h]`` contains ``[lo, hi]``
    (conservative). Keep ``lo``/``hi`` next to it where the asymmetry matters (a recall
    near 0 or 1).

    Example:
        >>> half_width(0.9, 0.85, 0.92)
        0.05...
    """
    for name, v in (("mean", mean), ("lo", lo), ("hi", hi)):
        if not math.isfinite(float(v)):
            raise ValueError(f"{name} must be finite, got {v!r}")
    if not lo <= hi:
        raise ValueError(f"lo must be <= hi, got lo={lo!r}, hi={hi!r}")
    return float(max(mean - lo, hi - mean, 0.0))


__all__ = ["bootstrap_ci", "bootstrap_means", "half_width", "mean_ci95", "paired_bootstrap_diff"]
