"""Retrieval ranks (mid-rank ties), signal metrics (BER, PSNR, MS-SSIM) and the 95% interval helpers."""

from __future__ import annotations

import math

import pytest
import torch

from genscom.metrics import (
    ber,
    bit_errors_bytes,
    bler,
    bootstrap_ci,
    bootstrap_means,
    half_width,
    mean_ci95,
    ms_ssim,
    ms_ssim_min_size,
    paired_bootstrap_diff,
    psnr,
    retrieval_metrics,
    retrieval_per_query,
    retrieval_ranks,
    ssim,
)

KEYS = ["t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR",
        "v2t_R@1", "v2t_R@5", "v2t_R@10", "v2t_MdR", "v2t_MnR", "RSUM"]


# --------------------------------------------------------------------------- retrieval
def test_identity_is_perfect():
    m = retrieval_metrics(torch.eye(12), torch.arange(12))
    assert sorted(m) == sorted(KEYS)
    assert m["t2v_R@1"] == m["v2t_R@1"] == 1.0 and m["t2v_MdR"] == m["v2t_MdR"] == 1.0
    assert m["t2v_MnR"] == 1.0 and m["RSUM"] == pytest.approx(600.0)


@pytest.mark.parametrize("n", [1, 4, 7, 25])
def test_all_equal_gallery_scores_chance(n):
    # PROTOCOL.md: ties take the mid-rank, so a constant similarity is chance: R@K = K/N (capped at 1), MnR = (N+1)/2
    for n_caps in (1, 2):  # one or two captions per item (v2t: CLIP4Clip, one candidate per item)
        m = retrieval_metrics(torch.full((n_caps * n, n), 0.3), torch.arange(n_caps * n) % n)
        for tag in ("t2v", "v2t"):
            for k in (1, 5, 10):
                assert m[f"{tag}_R@{k}"] == pytest.approx(min(k, n) / n), (tag, k)
            assert m[f"{tag}_MnR"] == pytest.approx((n + 1) / 2) and m[f"{tag}_MdR"] == pytest.approx((n + 1) / 2)


def test_reversed_order_known_ranks():
    # row t scores item j by -|j - (n-1-t)|, true item t at distance d = |2t - (n-1)|: g = #{j : |j - c| < d},
    # e = #{j != t : |j - c| == d} (the mirror item c - (t - c) when it lies in the gallery)
    n = 20
    idx = torch.arange(n, dtype=torch.float64)
    sim = -(idx[None, :] - (n - 1 - idx)[:, None]).abs()
    t2v, _ = retrieval_ranks(sim, torch.arange(n))
    want, r1, r10 = [], [], []
    for t in range(n):
        c, d = n - 1 - t, abs(t - (n - 1 - t))
        g = max(0, min(c + d, n) - max(c - d + 1, 0))     # items strictly closer to c than d: c-d+1 .. c+d-1
        e = int(d > 0 and 0 <= 2 * c - t < n)             # the mirror of t about c
        want.append(g + 1 + e / 2)
        r1.append(min(max((1 - g) / (e + 1), 0), 1))
        r10.append(min(max((10 - g) / (e + 1), 0), 1))
    assert t2v.dtype == torch.float64 and t2v.tolist() == want
    assert any(w % 1 for w in want)                       # the case does contain ties
    m = retrieval_metrics(sim, torch.arange(n))
    assert m["t2v_R@1"] == pytest.approx(sum(r1) / n) and m["t2v_R@10"] == pytest.approx(sum(r10) / n)
    assert m["t2v_MnR"] == pytest.approx(sum(want) / n)


def test_hand_built_3x3_with_one_tie():
    # 3 captions x 3 items, true items 0,1,2
    sim = torch.tensor([[0.9, 0.1, 0.5],    # t0 -> item0 rank 1
                        [0.8, 0.7, 0.2],    # t1 -> item1 rank 2
                        [0.9, 0.6, 0.3]])   # t2 -> item2 rank 3
    m = retrieval_metrics(sim, torch.tensor([0, 1, 2]))
    assert m["t2v_R@1"] == pytest.approx(1 / 3) and m["t2v_MdR"] == 2.0 and m["t2v_MnR"] == 2.0
    # v2t: item0 column [0.9, 0.8, 0.9]: own 0.9 ties with t2 -> rank 1 or 2 with equal odds: mid-rank 1.5, R@1 0.5
    # item1 column [0.1, 0.7, 0.6]: rank 1; item2 column [0.5, 0.2, 0.3]: t0 0.5 > 0.3 -> rank 2
    _, v2t = retrieval_ranks(sim, torch.tensor([0, 1, 2]))
    assert v2t.tolist() == [1.5, 1.0, 2.0]
    assert m["v2t_R@1"] == pytest.approx((0.5 + 1 + 0) / 3) and m["v2t_R@5"] == 1.0
    assert m["v2t_MnR"] == pytest.approx(1.5) and m["v2t_MdR"] == 1.5
    assert m["RSUM"] == pytest.approx(100 * (1 / 3 + 1 + 1 + 0.5 + 1 + 1))


def _jittered_ranks(scores: torch.Tensor, true: torch.Tensor, n_perm: int, g: torch.Generator) -> torch.Tensor:
    """Brute force: ``[n_perm, n_query]`` 1-based ranks of ``true`` after breaking ties by a random jitter
    smaller than half the grid step of the integer ``scores`` (a random permutation within each tie)."""
    jit = scores[None] + 0.4 * torch.rand(n_perm, *scores.shape, generator=g, dtype=torch.float64)
    order = jit.argsort(dim=-1, descending=True)                               # (P, Q, C)
    return (order == true[None, :, None]).to(torch.int64).argmax(dim=-1) + 1  # position of the true candidate


def test_ties_match_monte_carlo_random_tie_breaking():
    g = torch.Generator().manual_seed(3)
    n_items, n_perm = 10, 4000
    t2i = torch.cat([torch.arange(n_items), torch.randint(0, n_items, (14,), generator=g)])  # 1-3 captions/item
    sim = torch.randint(0, 4, (len(t2i), n_items), generator=g).to(torch.float64)         # many exact ties
    per = retrieval_per_query(sim, t2i)
    # t2v: shuffle the tied items of each caption's row
    ranks = _jittered_ranks(sim, t2i, n_perm, g).to(torch.float64)
    torch.testing.assert_close(per["t2v_rank"], ranks.mean(0), atol=0.25, rtol=0)
    for k in (1, 5, 10):
        torch.testing.assert_close(per[f"t2v_R@{k}"], (ranks <= k).to(torch.float64).mean(0), atol=0.04, rtol=0)
    # v2t (CLIP4Clip): item i's row of candidates holds each item's best caption score, built here by a loop
    best = torch.stack([torch.stack([sim[t2i == j, i].max() for j in range(n_items)]) for i in range(n_items)])
    ranks = _jittered_ranks(best, torch.arange(n_items), n_perm, g).to(torch.float64)
    torch.testing.assert_close(per["v2t_rank"], ranks.mean(0), atol=0.25, rtol=0)
    for k in (1, 5):
        torch.testing.assert_close(per["v2t_R@1" if k == 1 else "v2t_R@5"], (ranks <= k).to(torch.float64).mean(0),
                                   atol=0.04, rtol=0)
    assert (per["t2v_rank"] % 1 != 0).any() and (per["v2t_rank"] % 1 != 0).any()  # ties were present


def test_no_ties_give_plain_sorted_ranks():
    # continuous scores: the rank is the true candidate's position in a descending sort, recalls are 0/1
    g = torch.Generator().manual_seed(5)
    sim = torch.randn(40, 40, generator=g, dtype=torch.float64)
    t2v, v2t = retrieval_ranks(sim, torch.arange(40))
    pos_t = [sim[t].argsort(descending=True).tolist().index(t) + 1 for t in range(40)]
    pos_v = [sim[:, i].argsort(descending=True).tolist().index(i) + 1 for i in range(40)]
    assert t2v.tolist() == pos_t and v2t.tolist() == pos_v
    m = retrieval_metrics(sim, torch.arange(40))
    assert m["t2v_R@5"] == sum(p <= 5 for p in pos_t) / 40 and m["v2t_R@10"] == sum(p <= 10 for p in pos_v) / 40
    assert m["t2v_MnR"] == pytest.approx(sum(pos_t) / 40) and m["v2t_MnR"] == pytest.approx(sum(pos_v) / 40)


def test_per_query_values_reduce_to_metrics():
    g = torch.Generator().manual_seed(6)
    t2i = torch.tensor([0, 0, 1, 2, 2, 2, 4])       # item 3 has no caption: no v2t query
    sim = torch.randint(0, 3, (7, 5), generator=g).to(torch.float32)
    per = retrieval_per_query(sim, t2i)
    assert sorted(per) == sorted(f"{tag}_{m}" for tag in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "rank"))
    assert all(v.shape == ((7,) if k.startswith("t2v") else (4,)) for k, v in per.items())
    assert all(v.dtype == torch.float64 and bool(((v >= 0) & (v <= (5 if "rank" in k else 1))).all())
               for k, v in per.items())
    m = retrieval_metrics(sim, t2i)
    assert m["t2v_R@1"] == pytest.approx(float(per["t2v_R@1"].mean()))
    assert m["v2t_MnR"] == pytest.approx(float(per["v2t_rank"].mean()))
    assert m["t2v_MdR"] == sorted(per["t2v_rank"].tolist())[3]  # 7 queries: the 4th smallest


def test_multiple_captions_use_best_caption():
    # 2 items, captions 0,1 -> item0 and 2,3 -> item1
    text_to_item = torch.tensor([0, 0, 1, 1])
    sim = torch.tensor([[0.1, 0.0],   # weak caption of item0
                        [0.9, 0.0],   # strong caption of item0
                        [0.5, 0.2],   # caption of item1 that prefers item0
                        [0.0, 0.8]])
    t2v, v2t = retrieval_ranks(sim, text_to_item)
    assert t2v.tolist() == [1, 1, 2, 1]
    assert v2t.tolist() == [1, 1]  # item0: best own 0.9 beats item1's best 0.5; item1: best own 0.8 beats 0.0
    # items without a caption are left out of v2t but stay in the t2v gallery
    t2v, v2t = retrieval_ranks(torch.cat([sim, torch.full((4, 1), 0.95)], dim=1), text_to_item)
    assert v2t.shape == (2,) and t2v.tolist() == [2, 2, 3, 2]


def test_v2t_counts_each_other_item_once_clip4clip():
    # CLIP4Clip: query item B is ranked against each other item's *best* caption, so two captions of item A
    # above B's own caption push B down by one place, not two
    text_to_item = torch.tensor([0, 0, 1])           # a1, a2 -> A; b1 -> B
    sim = torch.tensor([[0.9, 0.7],
                        [0.8, 0.6],
                        [0.1, 0.5]])
    _, v2t = retrieval_ranks(sim, text_to_item)
    assert v2t.tolist() == [1.0, 2.0]


def test_even_median_is_mean_of_middle():
    sim = torch.tensor([[1.0, 0.0], [2.0, 0.5]])  # t0 -> item0 rank 1; t1 -> item1 rank 2
    m = retrieval_metrics(sim, torch.tensor([0, 1]))
    assert m["t2v_MdR"] == pytest.approx(1.5)


def test_retrieval_shape_errors():
    with pytest.raises(ValueError, match="sim"):
        retrieval_metrics(torch.ones(3), torch.arange(3))
    with pytest.raises(ValueError, match="text_to_item"):
        retrieval_metrics(torch.ones(3, 2), torch.arange(2))
    with pytest.raises(ValueError, match="text_to_item"):
        retrieval_metrics(torch.ones(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="text_to_item"):
        retrieval_metrics(torch.ones(2, 2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), torch.arange(2))


# --------------------------------------------------------------------------- bits
def test_ber_bler_and_byte_errors():
    a = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    b = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1])
    assert ber(a, b) == pytest.approx(2 / 8)
    assert ber(a, a) == 0.0
    assert bler(torch.tensor([True, False, False, True])) == 0.5
    assert bler([0, 0, 1]) == pytest.approx(1 / 3)
    assert bit_errors_bytes(b"\x00\xff", b"\x01\x0f") == 1 + 4
    assert bit_errors_bytes(b"", b"") == 0
    with pytest.raises(ValueError, match="same shape"):
        ber(a, b[:4])
    with pytest.raises(ValueError, match="0/1"):
        ber(torch.tensor([0, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same length"):
        bit_errors_bytes(b"\x00", b"")


# --------------------------------------------------------------------------- pixels
def test_psnr_closed_form_and_per_item():
    a = torch.full((3, 8, 8, 3), 100, dtype=torch.uint8)
    b = a.clone()
    b[1] += 5                           # MSE 25
    b[2] -= 20                          # MSE 400
    out = psnr(a, b)
    assert out.shape == (3,)
    assert math.isinf(float(out[0])) and float(out[0]) > 0
    assert float(out[1]) == pytest.approx(10 * math.log10(255**2 / 25))
    assert float(out[2]) == pytest.approx(10 * math.log10(255**2 / 400))
    # float images in [0, 1] with max_val=1; uint8 does not wrap around in the difference
    assert float(psnr(torch.zeros(4, 4, 3), torch.full((4, 4, 3), 0.1), max_val=1.0)) == pytest.approx(20.0)
    assert float(psnr(torch.zeros(4, 4, 3, dtype=torch.uint8), torch.full((4, 4, 3), 255, dtype=torch.uint8))) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, b[:2])


def test_ms_ssim_identical_one_and_decreasing_with_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.linspace(0, 1, 164)[:, None, None]
    x = torch.linspace(0, 1, 170)[None, :, None]
    img = (255 * (0.5 + 0.5 * torch.sin(12 * x + 7 * y)) * torch.ones(1, 1, 3)).round().to(torch.uint8)
    noisy = [(img.float() + s * torch.randn(img.shape, generator=g)).clamp(0, 255) for s in (5.0, 20.0, 60.0)]
    vals = ms_ssim(torch.stack([img.float(), *noisy]), img.float().expand(4, *img.shape))  # one batched call
    assert vals.shape == (4,)
    assert float(vals[0]) == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > float(vals[1]) > float(vals[2]) > float(vals[3])


def test_ms_ssim_too_small_raises_and_ssim_works():
    img = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert ms_ssim_min_size() == 161
    with pytest.raises(ValueError, match="161x161"):
        ms_ssim(img, img)
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-5)
    assert float(ms_ssim(img, img, win_size=3)) == pytest.approx(1.0, abs=1e-5)


def test_ssim_matches_scikit_image():
    """A second implementation: scikit-image's SSIM with the Wang et al. settings (Gaussian sigma 1.5, 11x11
    window, population covariances, K1 = 0.01, K2 = 0.03), averaged over the valid window positions and channels."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(1)
    y = torch.linspace(0, 1, 64)[:, None, None]
    x = torch.linspace(0, 1, 80)[None, :, None]
    img = (255 * (0.5 + 0.5 * torch.sin(12 * x + 7 * y)) * torch.ones(1, 1, 3)).round().to(torch.uint8)
    noisy = torch.stack([(img.float() + s * torch.randn(img.shape, generator=g)).clamp(0, 255).round()
                         for s in (5.0, 20.0, 60.0)]).to(torch.uint8)
    ours = ssim(noisy, img.expand_as(noisy))
    ref = [structural_similarity(img.numpy(), n.numpy(), channel_axis=-1, data_range=255, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False) for n in noisy]
    torch.testing.assert_close(ours.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-5, rtol=0)
    assert ref[0] > 0.9 > ref[1] > 0.5 > ref[2]  # the three noise levels span the range


# --------------------------------------------------------------------------- stats
def test_mean_ci95():
    m, h = mean_ci95([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))
    assert mean_ci95([5.0, 5.0, 5.0]) == (5.0, 0.0)
    m, h = mean_ci95([7.0])
    assert m == 7.0 and math.isnan(h)
    with pytest.raises(ValueError, match="empty"):
        mean_ci95([])
    with pytest.raises(ValueError, match="finite"):
        mean_ci95([1.0, float("inf")])


def test_mean_ci95_coverage():
    # ~95% of intervals from N(0, 1) samples of size 5 cover the true mean 0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 5, generator=g, dtype=torch.float64)
    cover = 0
    for row in x:
        m, h = mean_ci95(row.tolist())
        cover += abs(m) <= h
    assert 0.93 <= cover / 2000 <= 0.97


def test_bootstrap_covers_true_mean_of_bernoulli():
    # 200 repeated experiments; the 95% percentile interval should cover the true mean in about 95% of them
    # (resampling realisations too is conservative when the channel, not the item, dominates the spread:
    # Owen 2007, "the pigeonhole bootstrap"; here item difficulty dominates, as in retrieval)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    p, cover_items, cover_both = 0.3, 0, 0
    for _ in range(200):
        x = (torch.rand(1, 100, generator=g1) < p).double()     # one realisation, 100 items
        _, lo, hi = bootstrap_ci(x, n_boot=1000, generator=g1)
        cover_items += lo <= p <= hi
        # items x realisations: item difficulty q_i in {0.1, 0.9} (mean 0.5), 4 independent channel draws each
        q = torch.where(torch.rand(100, generator=g2) < 0.5, 0.1, 0.9)
        y = (torch.rand(4, 100, generator=g2) < q).double()
        _, lo, hi = bootstrap_ci(y, n_boot=1000, generator=g2)
        cover_both += lo <= 0.5 <= hi
    assert 0.90 <= cover_items / 200 <= 0.99, cover_items  # 0.95 here
    assert 0.90 <= cover_both / 200 <= 0.99, cover_both    # 0.945 here


def test_bootstrap_width_shrinks_as_one_over_sqrt_n():
    # half-width ~ 1.96 sqrt(p (1 - p) / n): 16x the items -> a quarter of the width
    g = torch.Generator().manual_seed(1)
    widths = {}
    for n in (100, 1600):
        x = torch.tensor([[0.0, 1.0]]).repeat(1, n // 2)          # p = 0.5 exactly, no sampling luck
        m, lo, hi = bootstrap_ci(x, n_boot=2000, generator=g)
        assert m == 0.5
        widths[n] = hi - lo
        assert widths[n] == pytest.approx(2 * 1.96 * math.sqrt(0.25 / n), rel=0.1)
    assert widths[100] / widths[1600] == pytest.approx(4.0, rel=0.15)


def test_bootstrap_means_equal_explicit_resampling():
    # second implementation: gather the resampled [R, n] table with the documented draw order, then average
    g = torch.Generator().manual_seed(2)
    v = torch.randn(3, 7, generator=g, dtype=torch.float64)
    ours = bootstrap_means(v, n_boot=50, generator=torch.Generator().manual_seed(9))
    g2 = torch.Generator().manual_seed(9)
    r_idx = torch.randint(0, 3, (50, 3), generator=g2)
    i_idx = torch.randint(0, 7, (50, 7), generator=g2)
    ref = v[r_idx[:, :, None], i_idx[:, None, :]].mean(dim=(1, 2))
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    # the same seed gives the same interval
    a = bootstrap_ci(v, generator=torch.Generator().manual_seed(4))
    assert a == bootstrap_ci(v.numpy(), generator=torch.Generator().manual_seed(4))


def test_paired_bootstrap_difference():
    g = torch.Generator().manual_seed(3)
    b = (torch.rand(3, 200, generator=g) < 0.6).double()
    assert paired_bootstrap_diff(b, b, generator=g) == (0.0, 0.0, 0.0)
    assert paired_bootstrap_diff(b + 0.25, b, generator=g) == (0.25, 0.25, 0.25)
    # pairing removes the shared item difficulty: a = b except 5 misses per realisation turned into hits
    # (15 of 600 entries). The separate intervals overlap, the paired one excludes 0 (a is better on the same
    # items and channel draws)
    a = b.clone()
    for r in range(3):
        a[r, (b[r] == 0).nonzero()[5 * r:5 * r + 5, 0]] = 1.0
    d, lo, hi = paired_bootstrap_diff(a, b, generator=torch.Generator().manual_seed(0))
    assert d == pytest.approx(15 / 600) and 0 < lo <= d <= hi
    _, alo, ahi = bootstrap_ci(a, generator=torch.Generator().manual_seed(0))
    _, blo, bhi = bootstrap_ci(b, generator=torch.Generator().manual_seed(0))
    assert alo < bhi
    with pytest.raises(ValueError, match="equal shapes"):
        paired_bootstrap_diff(a, b[:, :10], generator=g)


def test_half_width_and_bootstrap_errors():
    assert half_width(0.9, 0.85, 0.92) == pytest.approx(0.05)
    assert half_width(0.1, 0.08, 0.16) == pytest.approx(0.06)
    assert half_width(1.0, 1.0, 1.0) == 0.0
    with pytest.raises(ValueError, match="lo must be <= hi"):
        half_width(0.5, 0.6, 0.4)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"values\[None, :\]"):
        bootstrap_ci(torch.ones(5), generator=g)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(torch.ones(2, 5), n_boot=0, generator=g)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(torch.ones(2, 5), level=95, generator=g)
    with pytest.raises(TypeError, match="generator"):
        bootstrap_ci(torch.ones(2, 5), generator=None)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci(torch.tensor([[1.0, float("nan")]]), generator=g)
