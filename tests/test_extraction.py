"""Scalable extraction: thresholds, budget search, bitmap cost, mask-token filling, compaction."""

from __future__ import annotations

import pytest
import torch

from genscom.adaptation import extraction as X
from genscom.coding.mcs import channel_uses_for_bits




def test_threshold_keep_sends_groups_at_or_above_mu():
    w = torch.tensor([[0.1, 0.5, 0.9, 0.5]])
    assert X.threshold_keep(w, 0.0).all()
    assert X.threshold_keep(w, 0.5).tolist() == [[False, True, True, True]]
    assert X.threshold_keep(w, 0.95).sum() == 0
    assert X.threshold_keep(w, torch.tensor([0.9])).tolist() == [[False, False, True, False]]


@pytest.mark.parametrize("mu", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_mu_raises(mu):
    with pytest.raises(ValueError, match="mu"):
        X.threshold_keep(torch.rand(2, 4), mu)


def test_side_channel_uses_counted_by_the_link_counter():
    # 24-bit bitmap at qpsk-1/3: one codeword of k=24 info bits -> 72 coded bits -> 36 QPSK symbols
    assert X.side_channel_uses(24, "qpsk-1/3") == 36
    assert X.side_channel_uses(12, "qpsk-1/3") == channel_uses_for_bits(12, "qpsk-1/3", k=12) == 18
    # fewer than 12 bits still take the smallest 5G codeword (k = 12)
    assert X.side_channel_uses(4, "qpsk-1/3") == channel_uses_for_bits(4, "qpsk-1/3", k=12)
    assert X.side_channel_uses(12, "16qam-1/2") < X.side_channel_uses(12, "qpsk-1/3")
    assert X.side_channel_uses(24, "qpsk-1/3", repeat=4) == 144  # repetition multiplies the side cost


def test_budget_search_never_exceeds_budget_and_keeps_as_much_as_fits():
    g = torch.Generator().manual_seed(0)
    gs, side = 4, 18
    w = torch.rand(64, 12, generator=g)
    w[:8] = torch.round(w[:8] * 3) / 3  # ties
    w[8] = 0.7  # all equal
    for budget in [18, 19, 22, 26, 30, 40, 50, 66, 100]:
        mu = X.budget_mu(w, budget, group_size=gs, side_uses=side)
        keep = X.threshold_keep(w, mu)
        uses = X.channel_uses_of(keep, group_size=gs, side_uses=side)
        assert bool((uses <= budget).all()), (budget, uses.max())
        # minimal mu: lowering it to the next smaller importance value (one more group) would not fit,
        # unless everything is already sent
        for b in range(len(w)):
            below = w[b][w[b] < mu[b]]
            if len(below):
                more = X.threshold_keep(w[b:b + 1], below.max().reshape(1))
                assert int(X.channel_uses_of(more, group_size=gs, side_uses=side)) > budget
            else:
                assert bool(keep[b].all())


def test_budget_smaller_than_side_information_raises():
    with pytest.raises(ValueError, match="smaller than the side information"):
        X.budget_mu(torch.rand(2, 12), 17, group_size=4, side_uses=18)


def test_bitmap_round_trip_and_padding():
    keep = torch.tensor([[True, False, True, False, True]])
    bits = X.bitmap_from_keep(keep)
    assert bits.shape == (1, 12)  # padded to the 5G minimum k
    assert bits[0, 5:].sum() == 0
    assert torch.equal(X.keep_from_bitmap(bits, 5), keep)


def test_mask_token_fills_exactly_the_missing_positions():
    x = torch.complex(torch.arange(6.0), torch.zeros(6)).reshape(1, 6)
    keep = X.expand_groups(torch.tensor([[True, False, True]]), 2)
    token = torch.complex(torch.full((6,), -1.0), torch.arange(6.0))
    out = X.fill_masked(x, keep, token)
    assert keep.tolist() == [[True, True, False, False, True, True]]
    assert out[0, [0, 1, 4, 5]].tolist() == x[0, [0, 1, 4, 5]].tolist()
    assert out[0, [2, 3]].tolist() == token[[2, 3]].tolist()


def test_compact_then_uncompact_restores_sent_positions():
    g = torch.Generator().manual_seed(1)
    x = torch.complex(torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g))
    keep = torch.rand(5, 8, generator=g) > 0.4
    keep[0] = False
    x = torch.where(keep, x, torch.zeros_like(x))
    x_c, _, n_max = X.compact(x, keep)
    assert n_max == int(keep.sum(1).max())
    for b in range(5):  # kept symbols first, in order, then zeros
        n = int(keep[b].sum())
        assert torch.equal(x_c[b, :n], x[b][keep[b]])
        assert torch.all(x_c[b, n:] == 0)
    assert torch.equal(X.uncompact(x_c, keep, 8), x)


def test_received_mask_drops_positions_beyond_the_stream():
    keep = torch.tensor([[True, False, True, True, True]])
    assert X.received_mask(keep, torch.tensor([2])).tolist() == [[True, False, True, False, False]]


def test_topk_keep_picks_most_important_with_stable_ties():
    w = torch.tensor([[0.2, 0.9, 0.9, 0.1]])
    assert X.topk_keep(w, torch.tensor([2])).tolist() == [[False, True, True, False]]
    assert X.topk_keep(w, torch.tensor([1])).tolist() == [[False, True, False, False]]
