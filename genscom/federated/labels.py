r"""Error-aware labelling for federated multimodal training: inject, score, track and prune noisy pairs.

Users have no ground truth while operating: their image-text pairs may be wrong. This module

1. injects label error for experiments (:func:`inject_label_noise`: a fraction of pairs swapped
   among themselves, so every chosen pair gets another pair's text);
2. scores each pair of a batch from the batch similarity matrix (:func:`pair_confidence`): the
   margin of the matched similarity over the best competitor in its row *and* its column,
   ``c_i = S_ii - max(max_{j != i} S_ij, max_{j != i} S_ji)``; ``c_i > 0`` means image ``i`` and text
   ``i`` pick each other. Pairs below a threshold are excluded from this epoch's loss
   (:func:`confident_mask`, weights for :func:`~genscom.federated.graph_adapter.graph_adapter_loss`);
3. tracks confidence across rounds (:class:`ConfidenceTracker`) and prunes only pairs that stay
   below the threshold for ``patience`` consecutive rounds; users share only histograms of their
   confidences (:class:`ConfidenceStats`), the server merges them (:func:`merge_stats`) and derives one
   global threshold (:func:`global_threshold`: Otsu's split of the merged histogram, or a quantile);
4. measures detection against the injected noise (:func:`detection_scores`: precision and recall).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> noise = inject_label_noise(10, 0.2, generator=g)
    >>> int(noise.noisy.sum()), bool((noise.perm[noise.noisy] != torch.arange(10)[noise.noisy]).all())
    (2, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

HIST_RANGE = (-2.0, 2.0)  # confidence margins of cosine similarities lie in [-2, 2]
HIST_BINS = 80


@dataclass
class LabelNoise:
    """Injected label error: pair ``i`` gets text ``perm[i]``; ``noisy[i]`` is ``perm[i] != i``.

    Attributes:
        perm: ``[n]`` long, the text index each pair now carries (apply as ``texts[perm]``).
        noisy: ``[n]`` bool, the swapped pairs.
    """

    perm: torch.Tensor
    noisy: torch.Tensor


def inject_label_noise(n: int, fraction: float, *, generator: torch.Generator) -> LabelNoise:
    """Swap ``round(fraction * n)`` randomly chosen pairs among themselves (a derangement: none keeps its text).

    One pair cannot be swapped alone, so a count of 1 becomes 2 (when ``n >= 2``).

    Args:
        n: number of pairs.
        fraction: in ``[0, 1]``; e.g. 0.2 (mild), 0.5 (severe).
        generator: seeds the choice.

    Returns:
        :class:`LabelNoise`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be a number in [0, 1] (share of pairs swapped), got {fraction!r}")
    m = int(round(fraction * n))
    if m == 1:
        m = 2 if n >= 2 else 0
    perm = torch.arange(n)
    chosen = torch.randperm(n, generator=generator)[:m]
    if m >= 2:
        perm[chosen] = chosen.roll(1)  # cyclic shift over a random order: no fixed point
    return LabelNoise(perm=perm, noisy=perm != torch.arange(n))


def pair_confidence(sim: torch.Tensor) -> torch.Tensor:
    """Per-pair confidence ``[B]`` from the batch similarity ``sim [B, B]`` (row: image ``i``, column: text ``j``).

    ``c_i = S_ii - max(max_{j != i} S_ij, max_{j != i} S_ji)``: the margin by which the matched pair beats the
    best competing text of image ``i`` and the best competing image of text ``i``. ``B = 1``: ``+inf``.
    """
    if not isinstance(sim, torch.Tensor) or sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        shape = tuple(sim.shape) if isinstance(sim, torch.Tensor) else type(sim).__name__
        raise ValueError(f"sim must be a square [B, B] image-text similarity, got {shape}")
    s = sim.detach().float()
    b = s.shape[0]
    if b == 1:
        return torch.full((1,), float("inf"), device=s.device)
    off = s.masked_fill(torch.eye(b, dtype=torch.bool, device=s.device), float("-inf"))
    rival = torch.maximum(off.amax(dim=1), off.amax(dim=0))
    return s.diagonal() - rival


def confident_mask(confidence: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``[B]`` bool: pairs kept in this epoch's loss (``confidence >= threshold``)."""
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return confidence >= threshold


# --------------------------------------------------------------------------- federated statistics
@dataclass
class ConfidenceStats:
    """A user's confidence histogram (what it shares instead of its pairs): ``counts [bins]`` over ``HIST_RANGE``
    (values outside are clipped into the end bins)."""

    counts: torch.Tensor

    @classmethod
    def from_confidence(cls, confidence: torch.Tensor, *, bins: int = HIST_BINS) -> "ConfidenceStats":
        c = confidence.detach().float().flatten()
        c = c[~torch.isnan(c)].clamp(*HIST_RANGE)
        return cls(counts=torch.histc(c, bins=bins, min=HIST_RANGE[0], max=HIST_RANGE[1]).long())

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def edges(self) -> torch.Tensor:
        """``[bins + 1]`` bin edges."""
        return torch.linspace(HIST_RANGE[0], HIST_RANGE[1], len(self.counts) + 1)


def merge_stats(stats: Sequence[ConfidenceStats]) -> ConfidenceStats:
    """The server's view: the users' histograms summed (same bins required)."""
    if not stats:
        raise ValueError("merge_stats needs at least one ConfidenceStats")
    sizes = {len(s.counts) for s in stats}
    if len(sizes) != 1:
        raise ValueError(f"users' histograms have different bin counts {sorted(sizes)}; use the same bins")
    return ConfidenceStats(counts=torch.stack([s.counts for s in stats]).sum(dim=0))


def global_threshold(stats: ConfidenceStats, *, method: Literal["otsu", "quantile"] = "otsu",
                     quantile: float = 0.1) -> float:
    """One threshold for every user from merged histograms.

    * ``"otsu"``: the bin edge that maximises the between-class variance of the two sides (splits clean,
      high-margin pairs from noisy, low-margin ones without knowing the noise rate);
    * ``"quantile"``: the ``quantile`` of the merged distribution (e.g. the expected noise rate).
    """
    if method not in ("otsu", "quantile"):
        raise ValueError(f"method must be 'otsu' or 'quantile', got {method!r}")
    counts = stats.counts.double()
    total = float(counts.sum())
    if total == 0:
        raise ValueError("the histograms are empty: no confidence was recorded")
    edges = stats.edges().double()
    centres = 0.5 * (edges[1:] + edges[:-1])
    if method == "quantile":
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {quantile!r}")
        cum = counts.cumsum(0) / total
        i = int(torch.searchsorted(cum, torch.tensor(quantile, dtype=torch.float64)).clamp(max=len(counts) - 1))
        return float(edges[i + 1])
    p = counts / total
    w0 = p.cumsum(0)                       # share below each cut (after bin i)
    mu = (p * centres).cumsum(0)
    mu_t = mu[-1]
    between = (mu_t * w0 - mu) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    between[(w0 <= 0) | (w0 >= 1)] = -1.0
    i = int(between.argmax())
    return float(edges[i + 1])


# --------------------------------------------------------------------------- tracking across rounds
class ConfidenceTracker:
    """Per-pair confidence across rounds; prunes pairs that stay below the threshold for ``patience`` rounds.

    Within a round call :meth:`update` for each batch (a pair seen twice keeps its mean confidence), then
    :meth:`end_round`: a pair seen this round is *inconsistent* if its confidence < ``threshold``; its streak
    of consecutive inconsistent rounds grows, else resets to 0 (pairs not seen keep their streak). A pair whose
    streak reaches ``patience`` is pruned for good.

    Args:
        n_pairs: pairs of this user's data.
        threshold: confidence below which a pair is inconsistent (set a federated one with
            :meth:`set_threshold`).
        patience: consecutive inconsistent rounds before pruning.
    """

    def __init__(self, n_pairs: int, *, threshold: float = 0.0, patience: int = 3) -> None:
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
            raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer (rounds), got {patience!r}")
        self.n_pairs, self.patience = n_pairs, patience
        self.set_threshold(threshold)
        self.streak = torch.zeros(n_pairs, dtype=torch.long)
        self.pruned = torch.zeros(n_pairs, dtype=torch.bool)
        self.history: list[torch.Tensor] = []  # per round: [n_pairs] mean confidence (nan: not seen)
        self._sum = torch.zeros(n_pairs, dtype=torch.float64)
        self._n = torch.zeros(n_pairs, dtype=torch.long)

    def set_threshold(self, threshold: float) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        self.threshold = float(threshold)

    def update(self, indices: torch.Tensor, confidence: torch.Tensor) -> None:
        """Record ``confidence [b]`` of pairs ``indices [b]`` (long, into ``0..n_pairs-1``) for this round."""
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        c = confidence.detach().to(torch.float64).flatten().cpu()
        if idx.shape != c.shape:
            raise ValueError(f"indices and confidence must have the same length, got {len(idx)} and {len(c)}")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n_pairs):
            raise ValueError(f"indices must be in [0, {self.n_pairs}), got {int(idx.min())}..{int(idx.max())}")
        self._sum.index_add_(0, idx, c.clamp(*HIST_RANGE))
        self._n.index_add_(0, idx, torch.ones_like(idx))

    def round_confidence(self) -> torch.Tensor:
        """``[n_pairs]`` mean confidence recorded so far this round (nan: not seen)."""
        return torch.where(self._n > 0, self._sum / self._n.clamp_min(1), torch.full_like(self._sum, float("nan")))

    def stats(self, *, bins: int = HIST_BINS) -> ConfidenceStats:
        """This round's confidence histogram (of the active pairs seen): what the user shares."""
        c = self.round_confidence()
        return ConfidenceStats.from_confidence(c[(self._n > 0) & ~self.pruned], bins=bins)

    def end_round(self) -> torch.Tensor:
        """Close the round: update streaks, prune; returns the ``[n_pairs]`` bool mask of newly pruned pairs."""
        c = self.round_confidence()
        seen = self._n > 0
        bad = seen & (c < self.threshold)
        self.streak = torch.where(bad, self.streak + 1, torch.where(seen, torch.zeros_like(self.streak),
                                                                    self.streak))
        new = (self.streak >= self.patience) & ~self.pruned
        self.pruned |= new
        self.history.append(c.float())
        self._sum.zero_()
        self._n.zero_()
        return new

    def inconsistent(self) -> torch.Tensor:
        """``[n_pairs]`` bool: pairs currently on an inconsistent streak or pruned (flagged as noisy)."""
        return (self.streak > 0) | self.pruned

    def active(self) -> torch.Tensor:
        """``[n_pairs]`` bool: pairs still used for training."""
        return ~self.pruned


def detection_scores(flagged: torch.Tensor, noisy: torch.Tensor) -> dict[str, float]:
    """Precision, recall and F1 of noisy-pair detection: ``flagged`` and ``noisy`` are ``[n]`` bool.

    ``precision = TP / flagged`` (1.0 when nothing is flagged: no false alarm), ``recall = TP / noisy``
    (1.0 when nothing is noisy).
    """
    f = torch.as_tensor(flagged, dtype=torch.bool).flatten()
    y = torch.as_tensor(noisy, dtype=torch.bool).flatten()
    if f.shape != y.shape:
        raise ValueError(f"flagged and noisy must have the same length, got {len(f)} and {len(y)}")
    tp = int((f & y).sum())
    nf, ny = int(f.sum()), int(y.sum())
    precision = tp / nf if nf else 1.0
    recall = tp / ny if ny else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": float(nf), "noisy": float(ny)}


__all__ = ["ConfidenceStats", "ConfidenceTracker", "LabelNoise", "confident_mask", "detection_scores",
           "global_threshold", "inject_label_noise", "merge_stats", "pair_confidence"]
