"""Text-video (or text-image) retrieval metrics, PROTOCOL.md names.

Ranks are 1-based and **ties take the mid-rank**, the expected rank under
random tie-breaking. For a query whose true candidate has ``g`` candidates
scoring strictly higher and ``e`` *other* candidates scoring exactly the same,
random tie-breaking puts it uniformly on ``g+1 .. g+e+1``, so

* expected rank ``rank = g + 1 + e / 2`` (used for MdR and MnR),
* expected recall ``R@K = P(rank <= K) = clip((K - g) / (e + 1), 0, 1)``.

A constant (uninformative) similarity over ``N`` candidates therefore scores
``R@1 = 1/N`` and ``MnR = (N + 1) / 2``, the chance level, neither perfect nor
worst. Without ties, ``rank = g + 1`` and ``R@K`` is the usual 0/1 indicator.

* text-to-video: query caption ``t``, true item ``i = text_to_item[t]``, the
  candidates are all ``n_items`` items: ``g = #{j != i : sim[t, j] > sim[t, i]}``,
  ``e = #{j != i : sim[t, j] == sim[t, i]}``.
* video-to-text, **CLIP4Clip protocol** (its ``tensor_video_to_text_sim``): each
  item ``j`` with captions ``C_j`` is represented, for query item ``i``, by its
  best caption ``M[j, i] = max_{c in C_j} sim[c, i]``; the candidates are the
  items that have captions, and item ``i`` is ranked by ``M[i, i]`` against the
  other items' ``M[j, i]``. With one caption per item this is plain ranking among
  the captions. Items with no caption are neither queries nor candidates of v2t
  (they stay in the t2v gallery).

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


def _greater_equal(s: torch.Tensor, t2i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(g_t2v, e_t2v, g_v2t, e_v2t)``: per query, other candidates strictly above / tied with the true one.

    t2v: ``[n_text]``; v2t: ``[n_items_with_captions]`` (CLIP4Clip, module docstring). int64.
    """
    n_text, n_items = s.shape
    rows = torch.arange(n_text, device=s.device)
    pos = s[rows, t2i]                                             # (n_text,) score of the true item
    g_t = (s > pos[:, None]).sum(dim=1)
    e_t = (s == pos[:, None]).sum(dim=1) - 1                       # the true item ties with itself
    # M[j, i] = best score of item j's captions for item i (-inf for items without captions)
    best = torch.full((n_items, n_items), -torch.inf, dtype=s.dtype, device=s.device)
    best = best.scatter_reduce(0, t2i[:, None].expand(n_text, n_items), s, reduce="amax")
    has_caption = torch.zeros(n_items, dtype=torch.bool, device=s.device)
    has_caption[t2i] = True
    own = best.diagonal()                                          # (n_items,) M[i, i]
    g_v = (best > own[None, :]).sum(dim=0)                         # -inf rows (no caption) never count
    e_v = (best == own[None, :]).sum(dim=0) - 1                    # minus M[i, i] itself
    return g_t, e_t, g_v[has_caption], e_v[has_caption]


def _expected(greater: torch.Tensor, equal: torch.Tensor, tag: str) -> dict[str, torch.Tensor]:
    g, e = greater.to(torch.float64), equal.to(torch.float64)
    out = {f"{tag}_R@{k}": ((k - g) / (e + 1.0)).clamp(0.0, 1.0) for k in RECALL_KS}
    out[f"{tag}_rank"] = g + 1.0 + e / 2.0
    return out


def retrieval_per_query(sim: torch.Tensor, text_to_item: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-query expected recalls and mid-ranks (ties: module docstring), for intervals that resample queries.

    For a query with ``g`` candidates strictly above its true one and ``e`` others tied
    with it: ``R@K = clip((K - g) / (e + 1), 0, 1)`` (the probability of a hit at ``K``
    under random tie-breaking) and ``rank = g + 1 + e / 2``.

    Args:
        sim: ``[n_text, n_items]`` similarity (higher = more alike), any real dtype.
        text_to_item: ``[n_text]`` integer index of the true item of each caption.

    Returns:
        float64 CPU tensors ``{"t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_rank"}`` of shape
        ``[n_text]`` (one per caption query) and ``{"v2t_R@1", "v2t_R@5", "v2t_R@10",
        "v2t_rank"}`` of shape ``[n_v2t]`` (one per item that has a caption, in item order).
        Their means are the recalls and MnR of :func:`retrieval_metrics`.

    Example:
        >>> retrieval_per_query(torch.ones(2, 2), torch.arange(2))["t2v_R@1"]
        tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    s, t2i = _check(sim, text_to_item)
    g_t, e_t, g_v, e_v = _greater_equal(s, t2i)
    out = {**_expected(g_t, e_t, "t2v"), **_expected(g_v, e_v, "v2t")}
    return {k: v.cpu() for k, v in out.items()}


def retrieval_ranks(sim: torch.Tensor, text_to_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based expected ranks with mid-rank ties (module docstring): ``g + 1 + e / 2``.

    Args:
        sim: ``[n_text, n_items]`` similarity (higher = more alike), any real dtype.
        text_to_item: ``[n_text]`` integer index of the true item of each caption.

    Returns:
        ``(t2v_ranks [n_text], v2t_ranks [n_items_with_captions])``, float64 on the CPU;
        whole numbers where there are no ties, halves possible with ties.
    """
    per = retrieval_per_query(sim, text_to_item)
    return per["t2v_rank"], per["v2t_rank"]


def retrieval_summary(per_query: dict[str, torch.Tensor]) -> dict[str, float]:
    """Reduce :func:`retrieval_per_query` output to the metrics of :func:`retrieval_metrics`.

    ``R@K`` and ``MnR`` are means over queries of the per-query values, ``MdR`` the
    median of the per-query expected ranks (mean of the two middle ones for an even
    count), ``RSUM = 100 * sum of the six recalls``.
    """
    out: dict[str, float] = {}
    for tag in ("t2v", "v2t"):
        for k in RECALL_KS:
            out[f"{tag}_R@{k}"] = float(per_query[f"{tag}_R@{k}"].to(torch.float64).mean())
        r = per_query[f"{tag}_rank"].to(torch.float64).cpu().numpy()
        out[f"{tag}_MdR"] = float(np.median(r))
        out[f"{tag}_MnR"] = float(r.mean())
    out["RSUM"] = 100.0 * sum(out[f"{tag}_R@{k}"] for tag in ("t2v", "v2t") for k in RECALL_KS)
    return {k: out[k] for k in _KEY_ORDER}


_KEY_ORDER = tuple(f"{tag}_{m}" for tag in ("t2v", "v2t") for m in (*(f"R@{k}" for k in RECALL_KS), "MdR", "MnR")
                   ) + ("RSUM",)


def retrieval_metrics(sim: torch.Tensor, text_to_item: torch.Tensor) -> dict[str, float]:
    """t2v/v2t R@1, R@5, R@10 (fractions), MdR, MnR and RSUM (sum of the six recalls x100).

    Ties take the mid-rank and recalls are expected recalls under random
    tie-breaking (module docstring); v2t follows CLIP4Clip (each other item
    represented by its best caption).

    Args:
        sim: ``[n_text, n_items]`` similarity, row = caption query, column = gallery item.
        text_to_item: ``[n_text]`` integer (long) index of each caption's true item.

    Returns:
        ``{"t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR", "v2t_R@1", ..., "v2t_MnR", "RSUM"}``
        as floats. MdR is the median (mean of the two middle ranks for an even count).

    Example:
        >>> retrieval_metrics(torch.eye(3), torch.arange(3))["t2v_R@1"]
        1.0
        >>> retrieval_metrics(torch.ones(4, 4), torch.arange(4))["t2v_MnR"]  # chance: (N + 1) / 2
        2.5
    """
    return retrieval_summary(retrieval_per_query(sim, text_to_item))


__all__ = ["RECALL_KS", "retrieval_metrics", "retrieval_per_query", "retrieval_ranks", "retrieval_summary"]
