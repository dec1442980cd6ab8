"""Text-video (or text-image) retrieval metrics, PROTOCOL.md names.

Ranks are 1-based. **Ties are counted pessimistically**: every other candidate
scoring *greater than or equal to* the true one is ranked above it, so a
constant (uninformative) similarity matrix gets the worst rank, never a perfect
score.

* text-to-video: query caption ``t``, true item ``i = text_to_item[t]``;
  ``rank = 1 + #{j != i : sim[t, j] >= sim[t, i]}``.
* video-to-text: query item ``i`` with its captions ``C_i`` (one or more);
  ``rank = 1 + #{t not in C_i : sim[t, i] >= max_{c in C_i} sim[c, i]}``, i.e. the
  rank of its best-ranked caption among the other items' captions (the standard
  multi-caption protocol). Items with no caption are left out of v2t.

Recalls are fractions in [0, 1]; ``RSUM`` is their sum x100 (max 600).
"""

from __future__ import annotations

import numpy as np
import torch

RECALL_KS: tuple[int, ...] = (1, 5, 10)


def _check(sim: torch.Tensor, text_to_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(sim, torch.Tensor):
        raise TypeError(f"sim must be a torch.Tensor [n_text, n_items], got {type(sim).__name__}")
    if sim.dim() != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"sim must be a non-empty 2-D tensor [n_text, n_items], got shape {tuple(sim.shape)}")
    if sim.is_complex():
        raise TypeError("sim must be real, got a complex tensor")
    t2i = torch.as_tensor(text_to_item)
    if t2i.is_floating_point() or t2i.is_complex() or t2i.dtype == torch.bool:
        raise TypeError(f"text_to_item must be an integer tensor [n_text], got dtype {t2i.dtype}")
    if t2i.dim() != 1 or t2i.shape[0] != sim.shape[0]:
        raise ValueError(f"text_to_item must have shape [n_text] = [{sim.shape[0]}] (one item index per row of sim), "
                         f"got {tuple(t2i.shape)}")
    t2i = t2i.to(device=sim.device, dtype=torch.long)
    if bool(((t2i < 0) | (t2i >= sim.shape[1])).any()):
        raise ValueError(f"text_to_item values must be item indices in [0, {sim.shape[1] - 1}] (columns of sim), got "
                         f"min {int(t2i.min())}, max {int(t2i.max())}")
    s = sim.to(torch.float64) if sim.dtype != torch.float64 else sim
    if not bool(torch.isfinite(s).all()):
        raise ValueError("sim has NaN or inf entries; fix the embeddings (e.g. zero-norm vectors) first")
    return s, t2i


def retrieval_ranks(sim: torch.Tensor, text_to_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks with pessimistic ties (see module docstring).

    Args:
        sim: ``[n_text, n_items]`` similarity (higher = more alike), any real dtype.
        text_to_item: ``[n_text]`` integer index of the true item of each caption.

    Returns:
        ``(t2v_ranks [n_text], v2t_ranks [n_items_with_captions])``, int64.
    """
    s, t2i = _check(sim, text_to_item)
    n_text, n_items = s.shape
    rows = torch.arange(n_text, device=s.device)
    pos = s[rows, t2i]                                            # (n_text,)
    t2v = (s >= pos[:, None]).sum(dim=1)                          # counts the true item once -> 1-based
    best = torch.full((n_items,), -torch.inf, dtype=s.dtype, device=s.device)
    best = best.scatter_reduce(0, t2i, pos, reduce="amax")        # best caption score per item
    has_caption = torch.zeros(n_items, dtype=torch.bool, device=s.device)
    has_caption[t2i] = True
    own = torch.zeros_like(s, dtype=torch.bool)
    own[rows, t2i] = True                                         # (n_text, n_items): caption t describes item i
    above = (s >= best[None, :]) & ~own                           # other items' captions at or above the best
    v2t = 1 + above.sum(dim=0)
    return t2v.cpu(), v2t[has_caption].cpu()


def _summary(ranks: torch.Tensor, tag: str) -> dict[str, float]:
    r = ranks.to(torch.float64).numpy()
    out = {f"{tag}_R@{k}": float((r <= k).mean()) for k in RECALL_KS}
    out[f"{tag}_MdR"] = float(np.median(r))
    out[f"{tag}_MnR"] = float(r.mean())
    return out


def retrieval_metrics(sim: torch.Tensor, text_to_item: torch.Tensor) -> dict[str, float]:
    """t2v/v2t R@1, R@5, R@10 (fractions), MdR, MnR and RSUM (sum of the six recalls x100).

    Args:
        sim: ``[n_text, n_items]`` similarity, row = caption query, column = gallery item.
        text_to_item: ``[n_text]`` integer (long) index of each caption's true item.

    Returns:
        ``{"t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR", "v2t_R@1", ..., "v2t_MnR", "RSUM"}``
        as floats. MdR is the median (mean of the two middle ranks for an even count).

    Example:
        >>> retrieval_metrics(torch.eye(3), torch.arange(3))["t2v_R@1"]
        1.0
    """
    t2v, v2t = retrieval_ranks(sim, text_to_item)
    out = {**_summary(t2v, "t2v"), **_summary(v2t, "v2t")}
    out["RSUM"] = 100.0 * sum(out[f"{tag}_R@{k}"] for tag in ("t2v", "v2t") for k in RECALL_KS)
    return out


__all__ = ["RECALL_KS", "retrieval_metrics", "retrieval_ranks"]
