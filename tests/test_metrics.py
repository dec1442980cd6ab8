"""Retrieval ranks, signal metrics (BER, PSNR, MS-SSIM) and the 95% interval helper."""

from __future__ import annotations

import math

import pytest
import torch

from genscom.metrics import (
    ber,
    bit_errors_bytes,
    bler,
    mean_ci95,
    ms_ssim,
    ms_ssim_min_size,
    psnr,
    retrieval_metrics,
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


def test_reversed_order_known_ranks():
    # row t scores items by closeness to n-1-t, true item t: rank of item t = |t - (n-1-t)| + 1 (ties pessimistic)
    n = 20
    idx = torch.arange(n, dtype=torch.float64)
    sim = -(idx[None, :] - (n - 1 - idx)[:, None]).abs()
    t2v, v2t = retrieval_ranks(sim, torch.arange(n))
    want = []
    for t in range(n):
        d = abs(t - (n - 1 - t))
        want.append(int(((sim[t] >= -d).sum())))
    assert t2v.tolist() == want
    m = retrieval_metrics(sim, torch.arange(n))
    assert m["t2v_R@1"] == pytest.approx(sum(r <= 1 for r in want) / n)
    assert m["t2v_R@10"] == pytest.approx(sum(r <= 10 for r in want) / n)
    assert m["t2v_MnR"] == pytest.approx(sum(want) / n)


def test_permuted_gallery_hand_computed():
    # 3 captions x 3 items, true items 0,1,2
    sim = torch.tensor([[0.9, 0.1, 0.5],    # t0 -> item0 rank 1
                        [0.8, 0.7, 0.2],    # t1 -> item1 rank 2
                        [0.9, 0.6, 0.3]])   # t2 -> item2 rank 3
    m = retrieval_metrics(sim, torch.tensor([0, 1, 2]))
    assert m["t2v_R@1"] == pytest.approx(1 / 3) and m["t2v_MdR"] == 2.0 and m["t2v_MnR"] == 2.0
    # v2t: item0 column [0.9,0.8,0.9]: own 0.9, t2 ties 0.9 -> pessimistic rank 2
    # item1 column [0.1,0.7,0.6]: rank 1; item2 column [0.5,0.2,0.3]: t0 0.5 > 0.3 -> rank 2
    _, v2t = retrieval_ranks(sim, torch.tensor([0, 1, 2]))
    assert v2t.tolist() == [2, 1, 2]
    assert m["RSUM"] == pytest.approx(100 * (m["t2v_R@1"] + m["t2v_R@5"] + m["t2v_R@10"]
                                              + m["v2t_R@1"] + m["v2t_R@5"] + m["v2t_R@10"]))


def test_constant_similarity_is_not_perfect():
    m = retrieval_metrics(torch.ones(50, 25), torch.arange(50) % 25)
    assert m["t2v_R@1"] == 0.0 and m["t2v_MdR"] == 25.0
    assert m["v2t_R@1"] == 0.0 and m["v2t_R@10"] == 0.0


def test_multiple_captions_use_best_caption():
    # 2 items, captions 0,1 -> item0 and 2,3 -> item1
    text_to_item = torch.tensor([0, 0, 1, 1])
    sim = torch.tensor([[0.1, 0.0],   # weak caption of item0
                        [0.9, 0.0],   # strong caption of item0
                        [0.5, 0.2],   # caption of item1 that prefers item0
                        [0.0, 0.8]])
    t2v, v2t = retrieval_ranks(sim, text_to_item)
    assert t2v.tolist() == [1, 1, 2, 1]
    assert v2t.tolist() == [1, 1]  # item0: best own 0.9 beats 0.5; item1: best own 0.8
    # items without a caption are left out of v2t but stay in the t2v gallery
    t2v, v2t = retrieval_ranks(torch.cat([sim, torch.full((4, 1), 0.95)], dim=1), text_to_item)
    assert v2t.shape == (2,) and t2v.tolist() == [2, 2, 3, 2]


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
