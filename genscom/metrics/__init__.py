"""Metrics: retrieval ranks (PROTOCOL.md names), signal metrics (BER, PSNR, MS-SSIM), reporting statistics."""

from genscom.metrics.retrieval import RECALL_KS, retrieval_metrics, retrieval_ranks
from genscom.metrics.signal import ber, bit_errors_bytes, bler, ms_ssim, ms_ssim_min_size, psnr, ssim
from genscom.metrics.stats import mean_ci95

__all__ = [
    "RECALL_KS", "ber", "bit_errors_bytes", "bler", "mean_ci95", "ms_ssim", "ms_ssim_min_size", "psnr",
    "retrieval_metrics", "retrieval_ranks", "ssim",
]
