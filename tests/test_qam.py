import itertools

import pytest
import torch

from genscom.coding.qam import QAM, llr_to_bits


@pytest.mark.parametrize("order", [4, 16, 64])
def test_unit_energy_gray_and_round_trip(order):
    qam = QAM(order)
    p = qam.points
    assert p.dtype == torch.complex64 and p.shape == (order,)
    assert abs(float(p.abs().pow(2).mean()) - 1.0) < 1e-5
    # Gray: nearest neighbours differ in exactly one bit
    d = (p[:, None] - p[None, :]).abs()
    dmin = float(d[d > 1e-6].min())
    pairs = [(i, j) for i, j in itertools.product(range(order), repeat=2) if i != j and abs(float(d[i, j]) - dmin) < 1e-4]
    assert pairs and all(bin(i ^ j).count("1") == 1 for i, j in pairs)
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2, (3, 5, 12 * qam.bits_per_symbol), generator=g)  # int bits, extra batch dim
    x = qam.map(bits)
    assert x.shape == (3, 5, 12) and x.dtype == torch.complex64
    assert torch.equal(qam.hard(x), bits.float())
    assert torch.equal(qam.map(bits.float()), x)


@pytest.mark.parametrize("method", ["app", "maxlog"])
def test_llr_sign_positive_means_one(method):
    qam = QAM(16, method=method)
    bits = torch.randint(0, 2, (2, 400), generator=torch.Generator().manual_seed(1)).float()
    llr = qam.demap(qam.map(bits), 0.01)
    assert llr.shape == bits.shape and llr.dtype == torch.float32
    assert torch.equal(llr_to_bits(llr), bits)
    assert bool((llr[bits == 1] > 0).all()) and bool((llr[bits == 0] < 0).all())
    # larger noise variance -> smaller confidence
    assert float(qam.demap(qam.map(bits), 1.0).abs().mean()) < float(llr.abs().mean())


def test_per_symbol_noise_var_and_double_precision():
    qam = QAM(4, precision="double")
    bits = torch.tensor([[0, 1, 1, 0]])
    x = qam.map(bits)
    assert x.dtype == torch.complex128
    llr = qam.demap(x, torch.tensor([[0.1, 10.0]]))
    assert llr.dtype == torch.float64 and abs(float(llr[0, 0])) > abs(float(llr[0, 2]))


def test_bad_inputs():
    for bad in (8, 32, 2, "16", 16.0):
        with pytest.raises(ValueError, match=r"\{4, 16, 64\}"):
            QAM(bad)
    qam = QAM(64)
    with pytest.raises(ValueError, match="multiple of 6"):
        qam.map(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="only 0 and 1"):
        qam.map(torch.full((1, 6), 0.5))
    with pytest.raises(TypeError, match="complex"):
        qam.demap(torch.zeros(1, 4), 0.1)
    with pytest.raises(ValueError, match="method"):
        QAM(4, method="exact")
    with pytest.raises(ValueError, match="precision"):
        QAM(4, precision="half")
