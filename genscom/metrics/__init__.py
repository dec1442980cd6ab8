"""Metrics: retrieval ranks (PROTOCOL.md names, mid-rank ties), signal metrics (BER, PSNR, MS-SSIM), reporting
statistics (bootstrap and Student-t intervals)."""

from genscom.metrics.retrieval import (
    RECALL_KS,
    retrieval_metrics,
    retrieval_per_query,
    retrieval_ranks,
    retrieval_summary,
)
from genscom.metrics.signal import ber, bit_errors_bytes, bler, ms_ssim, ms_ssim_min_size, psnr, ssim
from genscom.metrics.stats import bootstrap_ci, bootstrap_means, half_width, mean_ci95, paired_bootstrap_diff

__all__ = [
    "RECALL_KS", "ber", "bit_errors_bytes", "bler", "bootstrap_ci", "bootstrap_means", "half_width", "mean_ci95", "ms_ssim",
    "ms_ssim_min_size", "paired_bootstrap_diff", "psnr", "retrieval_metrics", "retrieval_per_query",
    "retrieval_ranks", "retrieval_summary", "ssim",
]
