r"""Scalable extraction: importance per symbol group, threshold ``mu``, bitmap, mask token, rate budget.

The adapter's transmitter splits its ``k`` complex symbols into ``G = k / group_size``
groups and scores each group with an importance ``w_g`` in ``[0, 1]``. A group is
**sent iff** ``w_g >= mu`` (``mu = 0`` sends everything). The receiver learns which
groups were sent from a ``G``-bit **bitmap** (bit ``g`` = 1 if group ``g`` was sent),
which is side information: it goes over a protected digital link (LDPC + QAM at
``side_mcs``, one codeword of ``max(12, G)`` info bits per item) and its channel uses
are counted with :func:`genscom.coding.mcs.channel_uses_for_bits`, the project's
single counter of digital channel uses. Missing groups are filled at the receiver
by a learned **mask token** (one complex value per symbol position).

Cost of one item (complex channel uses)::

    uses = group_size * (number of sent groups) + side_uses(G, side_mcs)

**Budget search**: given a budget ``U`` (channel uses per item), ``mu`` is raised,
item by item, over the candidate values ``{0} U {w_g}`` until the cost fits; the
smallest such ``mu`` is used (most groups kept). If even the side information does
not fit (``U < side_uses``), :func:`budget_mu` raises ``ValueError``.

All functions here are pure tensor functions (no modules, no randomness unless a
``torch.Generator`` is passed).
"""

from __future__ import annotations

import math

import torch

DEFAULT_SIDE_MCS = "qpsk-1/3"  # the most robust MCS: the bitmap decides where every symbol goes
MIN_LDPC_K = 12  # smallest 5G NR LDPC info block (genscom.coding.ldpc.check_k)


def bitmap_ldpc_k(n_groups: int) -> int:
    """Info bits of the single LDPC codeword that carries a ``n_groups``-bit bitmap: ``max(12, n_groups)``."""
    _check_pos_int(n_groups, "n_groups")
    return max(MIN_LDPC_K, int(n_groups))


def side_channel_uses(n_groups: int, side_mcs: str = DEFAULT_SIDE_MCS, *, repeat: int = 1) -> int:
    """Channel uses of one item's ``n_groups``-bit bitmap at ``side_mcs`` (one codeword of ``max(12, G)`` bits),
    each symbol sent ``repeat`` times (MRC-combined at the receiver).

    Example: 24 groups at ``"qpsk-1/3"`` -> 72 coded bits -> 36 channel uses (144 with ``repeat=4``).
    """
    from genscom.coding.mcs import channel_uses_for_bits

    return channel_uses_for_bits(int(n_groups), side_mcs, k=bitmap_ldpc_k(n_groups), repeat=repeat)


def _check_pos_int(v: object, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def check_mu(mu: object) -> float:
    """``mu`` must be a finite number in ``[0, 1]`` (a threshold on importance weights)."""
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(float(mu)) or not 0 <= mu <= 1:
        raise ValueError(f"mu must be a number in [0, 1] (importance threshold; 0 sends every group), got {mu!r}")
    return float(mu)


def check_importance(importance: torch.Tensor) -> torch.Tensor:
    """``[B, G]`` real tensor with values in ``[0, 1]``."""
    if not isinstance(importance, torch.Tensor) or importance.is_complex() or importance.dim() != 2:
        raise ValueError(f"importance must be a real tensor [B, G], got "
                         f"{type(importance).__name__} {tuple(getattr(importance, 'shape', ()))}")
    if not bool(torch.isfinite(importance).all()) or bool((importance < 0).any()) or bool((importance > 1).any()):
        raise ValueError("importance must hold finite values in [0, 1]")
    return importance


def threshold_keep(importance: torch.Tensor, mu: float | torch.Tensor) -> torch.Tensor:
    """Groups sent at threshold ``mu``: ``keep[b, g] = importance[b, g] >= mu[b]``.

    Args:
        importance: ``[B, G]`` in ``[0, 1]``.
        mu: a number in ``[0, 1]`` or a ``[B]`` tensor (per-item thresholds, as found by :func:`budget_mu`).
    Returns: ``[B, G]`` bool.
    """
    check_importance(importance)
    if isinstance(mu, torch.Tensor):
        if mu.shape != importance.shape[:1]:
            raise ValueError(f"mu tensor must have shape [B]={tuple(importance.shape[:1])}, got {tuple(mu.shape)}")
        if not bool(torch.isfinite(mu).all()):
            raise ValueError("mu must be finite")
        return importance >= mu.to(importance.dtype).unsqueeze(-1)
    return importance >= check_mu(mu)


def channel_uses_of(keep_groups: torch.Tensor, *, group_size: int, side_uses: int) -> torch.Tensor:
    """``[B, G]`` bool -> ``[B]`` int64 channel uses: ``group_size * sent groups + side_uses``."""
    return keep_groups.sum(dim=-1).to(torch.int64) * int(group_size) + int(side_uses)


def budget_mu(importance: torch.Tensor, budget: int, *, group_size: int, side_uses: int) -> torch.Tensor:
    """Smallest per-item ``mu`` whose cost ``group_size * #{w >= mu} + side_uses`` fits ``budget``.

    Candidates are ``0`` and the item's importance values; when ties at the top
    keep too many groups, ``mu`` is raised just above the largest importance (no
    group sent). The returned ``mu`` always satisfies the budget:
    ``channel_uses_of(threshold_keep(w, mu), ...) <= budget``.

    Args:
        importance: ``[B, G]`` in ``[0, 1]``.
        budget: channel uses per item (int).
        group_size: symbols per group; side_uses: channel uses of the bitmap.
    Returns: ``[B]`` float thresholds (may exceed 1 by one ulp when nothing fits).
    Raises: ``ValueError`` if ``budget < side_uses`` (the side information alone does not fit).
    """
    check_importance(importance)
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ValueError(f"budget must be an integer number of channel uses per item, got {budget!r}")
    if budget < side_uses:
        raise ValueError(f"budget={budget} channel uses is smaller than the side information "
                         f"(bitmap: {side_uses} channel uses); raise the budget to at least {side_uses}")
    max_groups = (budget - side_uses) // int(group_size)
    w = importance
    # count[b, j] = #{g : w[b, g] >= w[b, j]}: how many groups candidate mu = w[b, j] would keep
    counts = (w.unsqueeze(1) >= w.unsqueeze(2)).sum(dim=-1)  # [B, G]
    fits = counts <= max_groups
    big = torch.full_like(w, float("inf"))
    cand = torch.where(fits, w, big).amin(dim=-1)  # smallest fitting importance value
    above_max = torch.nextafter(w.amax(dim=-1), torch.full_like(cand, float("inf")))
    mu = torch.where(torch.isfinite(cand), cand, above_max)
    all_fit = w.shape[1] <= max_groups
    if all_fit:
        mu = torch.zeros_like(mu)
    return mu


def expand_groups(keep_groups: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[B, G]`` -> ``[B, G * group_size]`` (each group's value repeated over its symbols)."""
    return keep_groups.repeat_interleave(int(group_size), dim=-1)


def prefix_keep(lengths: torch.Tensor | int, k: int, *, batch: int | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """``[B, k]`` bool with the first ``lengths[b]`` symbols kept (rate by truncation, no side information)."""
    if isinstance(lengths, int):
        if not 1 <= lengths <= k:
            raise ValueError(f"k (symbols sent) must be in 1..{k} (the adapter's k), got {lengths}")
        if batch is None:
            raise ValueError("batch is required when lengths is an int")
        lengths = torch.full((batch,), lengths, dtype=torch.int64, device=device)
    pos = torch.arange(k, device=lengths.device)
    return pos.unsqueeze(0) < lengths.unsqueeze(-1)


def fill_masked(x: torch.Tensor, keep: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """Receiver-side gap filling: ``x`` where ``keep``, else the mask ``token``.

    Args:
        x: ``[B, k]`` complex received (equalised) symbols; values at dropped positions are ignored.
        keep: ``[B, k]`` bool.
        token: ``[k]`` complex learned mask token (one value per symbol position).
    """
    return torch.where(keep, x, token.to(x.dtype).unsqueeze(0).expand_as(x))


def topk_keep(importance: torch.Tensor, n_keep: torch.Tensor) -> torch.Tensor:
    """Keep the ``n_keep[b]`` most important groups of each item (ties by lower index); ``[B, G]`` bool.

    Used in training, where a random keep count stands for a random ``mu``.
    """
    order = torch.argsort(importance, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(importance.shape[1], device=importance.device).expand_as(order))
    return ranks < n_keep.unsqueeze(-1)


def bitmap_from_keep(keep_groups: torch.Tensor) -> torch.Tensor:
    """``[B, G]`` bool -> ``[B, max(12, G)]`` float 0/1 bits for the digital link (zero padded to the LDPC ``k``)."""
    b, g = keep_groups.shape
    bits = torch.zeros(b, bitmap_ldpc_k(g), dtype=torch.float32, device=keep_groups.device)
    bits[:, :g] = keep_groups.float()
    return bits


def keep_from_bitmap(bits: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Inverse of :func:`bitmap_from_keep`: ``[B, >= G]`` bits -> ``[B, G]`` bool."""
    return bits[:, :n_groups] > 0.5


def compact(x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Move each item's kept symbols to the front, in order: what is actually put on the air.

    Args: ``x`` ``[B, k]`` complex, ``keep`` ``[B, k]`` bool.
    Returns: ``(x_c [B, n_max], order [B, k], n_max)`` where ``n_max`` is the largest kept count;
    row ``b`` of ``x_c`` holds the ``keep[b].sum()`` sent symbols then zeros. Differentiable in ``x``.
    """
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)
    n_max = max(int(keep.sum(dim=-1).max()), 1) if keep.numel() else 1
    x_c = torch.gather(x, 1, order)[:, :n_max]
    counts = keep.sum(dim=-1, keepdim=True)
    x_c = torch.where(torch.arange(n_max, device=x.device).unsqueeze(0) < counts, x_c, torch.zeros_like(x_c))
    return x_c, order, n_max


def uncompact(y_c: torch.Tensor, keep: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`compact` at the receiver: stream ``[B, n]`` -> ``[B, k]`` at the positions ``keep`` marks.

    The ``j``-th received symbol goes to the ``j``-th marked position; marked
    positions beyond the stream length (possible when the receiver's bitmap was
    corrupted) get zeros and should be treated as missing by the caller (see the
    returned mask of :func:`received_mask`). Differentiable in ``y_c``.
    """
    b, n = y_c.shape
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)
    if n < k:
        y_c = torch.cat([y_c, torch.zeros(b, k - n, dtype=y_c.dtype, device=y_c.device)], dim=-1)
    else:
        y_c = y_c[:, :k]
    out = torch.zeros(b, k, dtype=y_c.dtype, device=y_c.device)
    return out.scatter(1, order, y_c)


def received_mask(keep: torch.Tensor, n_stream: int | torch.Tensor) -> torch.Tensor:
    """Positions marked by ``keep`` whose rank among marked positions is below ``n_stream`` (symbols actually received)."""
    rank = torch.cumsum(keep.to(torch.int64), dim=-1) - 1
    n = torch.as_tensor(n_stream, device=keep.device)
    if n.dim() == 1:
        n = n.unsqueeze(-1)
    return keep & (rank < n)
