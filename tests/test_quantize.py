"""Embedding quantisers, codeword accounting and erasures (genscom.coding.quantize), against hand-computed
values and a brute-force nearest-centroid search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genscom.coding.quantize import (
    EmbeddingQuantizer,
    ProductQuantizer,
    codewords_for_bits,
    create_quantizer,
    erased_bits_from_codewords,
    fit_quantizer,
    framed_bits,
    info_bits_per_codeword,
    list_quantizers,
    load_quantizer,
)


def _unit(b: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _bits(s: str) -> list[float]:
    return [float(c) for c in s if c in "01"]


# --------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("name,dim,bits", [
    ("float16", 384, 384 * 16),     # 6144: no scale
    ("int8", 384, 384 * 8 + 16),    # 3088: + the float16 scale
    ("int4", 384, 384 * 4 + 16),    # 1552
    ("int2", 384, 384 * 2 + 16),    # 784
    ("pq-48x8", 384, 48 * 8),       # 384: m codes of nbits, no scale
    ("pq-96x8", 384, 96 * 8),       # 768
    ("pq-4x5", 16, 4 * 5),          # 20
])
def test_bits_per_item(name, dim, bits):
    assert create_quantizer(name, dim=dim).bits_per_item == bits


def test_codeword_accounting():
    assert info_bits_per_codeword(1024) == 1000
    assert codewords_for_bits(1552, 1024) == 2 and framed_bits(1552, 1024) == 1552 + 48
    assert codewords_for_bits(1000, 1024) == 1 and framed_bits(1000, 1024) == 1024  # exactly one full codeword
    assert codewords_for_bits(1001, 1024) == 2
    assert framed_bits(6144, 1024) == 6144 + 7 * 24
    assert framed_bits(0, 1024) == 0
    from genscom.coding.mcs import channel_uses_for_bits  # the link's own count, CRC included

    for n in (1, 1000, 1001, 1552, 6144):
        assert channel_uses_for_bits(n, "qpsk-1/2", crc=True) == channel_uses_for_bits(framed_bits(n, 1024),
                                                                                        "qpsk-1/2")
    with pytest.raises(ValueError, match="k"):
        info_bits_per_codeword(24)


# --------------------------------------------------------------------------- scalar round trips
def test_int2_and_int4_by_hand():
    x = torch.tensor([[0.5, -0.25, 0.1, -0.5]])
    # int2: s = 0.5 (exact in float16: 0x3800), L = 2, step 0.25; q = floor(x / 0.25) clipped to [-2, 1]
    # = [1, -1, 0, -2]; codes q + 2 = [3, 1, 2, 0]; x_hat = (q + 0.5) * 0.25
    q2 = create_quantizer("int2", dim=4)
    assert q2.encode(x)[0].tolist() == _bits("0011100000000000" "11 01 10 00")
    assert torch.allclose(q2.decode(q2.encode(x), normalize=False), torch.tensor([[0.375, -0.125, 0.125, -0.375]]))
    # int4: L = 8, step 1/16; x / step = [8, -4, 1.6, -8] -> q = [7, -4, 1, -8], codes [15, 4, 9, 0]
    q4 = create_quantizer("int4", dim=4)
    assert q4.encode(x)[0, 16:].tolist() == _bits("1111 0100 1001 0000")
    assert torch.allclose(q4.decode(q4.encode(x), normalize=False),
                          torch.tensor([[7.5, -3.5, 1.5, -7.5]]) / 16)


def test_float16_bits_are_ieee_half():
    x = torch.tensor([[1.0, -2.0]])  # 1.0 = 0x3C00, -2.0 = 0xC000
    q = create_quantizer("float16", dim=2)
    assert q.encode(x)[0].tolist() == _bits("0011110000000000" "1100000000000000")
    assert torch.equal(q.decode(q.encode(x), normalize=False), x)


@pytest.mark.parametrize("name,b", [("int8", 8), ("int4", 4), ("int2", 2)])
def test_scalar_error_bound(name, b):
    e = _unit(64, 48, seed=1)
    q = create_quantizer(name, dim=48)
    back = q.decode(q.encode(e), normalize=False)
    amax = e.abs().amax(dim=1, keepdim=True)
    scale = amax * (1 + 2.0 ** -10)  # the float16 scale: max |x| rounded up (relative step 2^-10)
    err = (back - e).abs()
    assert bool((err <= scale / 2 ** b + 1e-7).all())  # half a step, step = scale / 2^(b-1)
    if name == "int8":
        assert bool((err <= amax / 127).all())
    assert bool((err > scale / 2 ** (b + 2)).any())  # the bound is not loose by orders of magnitude


def test_int4_cosine_on_unit_vectors():
    e = _unit(512, 384, seed=2)
    q = create_quantizer("int4", dim=384)
    cos = (q.decode(q.encode(e)) * e).sum(-1)
    assert float(cos.mean()) > 0.99 and float(cos.min()) > 0.98
    assert torch.allclose(q.decode(q.encode(e)).norm(dim=-1), torch.ones(512))


def test_float16_non_finite_becomes_zero():
    q = create_quantizer("float16", dim=2)
    out = q.decode(torch.ones(1, 32), normalize=False)  # 0xFFFF is NaN
    assert torch.equal(out, torch.zeros(1, 2))


# --------------------------------------------------------------------------- product quantisation
def _brute_force_codes(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    m, _, dsub = centroids.shape
    sub = x.reshape(len(x), m, 1, dsub)
    return ((sub - centroids[None]) ** 2).sum(-1).argmin(-1)  # [B, m]


@pytest.mark.parametrize("name,dim", [("pq-4x4", 16), ("pq-4x5", 16), ("pq-2x8", 8)])
def test_pq_matches_brute_force(name, dim):
    train, test = _unit(600, dim, seed=3), _unit(50, dim, seed=4)
    q = fit_quantizer(name, train, seed=0)
    assert isinstance(q, ProductQuantizer)
    m, nbits = q.n_units, q.bits_per_unit
    assert q.centroids.shape == (m, 2 ** nbits, dim // m)
    codes = _brute_force_codes(test.numpy(), q.centroids)
    assert np.array_equal(q.codes(test).numpy(), codes)
    bits = q.encode(test).numpy()
    want = [[(c >> (nbits - 1 - j)) & 1 for c in row for j in range(nbits)] for row in codes]  # MSB first
    assert np.array_equal(bits, np.array(want, dtype=np.float32))
    recon = np.concatenate([q.centroids[i][codes[:, i]] for i in range(m)], axis=1)
    assert np.allclose(q.decode(q.encode(test), normalize=False).numpy(), recon)
    assert torch.allclose(q.mean, train.mean(0))


def test_pq_training_is_seeded():
    train = _unit(400, 16, seed=5)
    a = fit_quantizer("pq-4x4", train, seed=0).centroids
    b = fit_quantizer("pq-4x4", train, seed=0).centroids
    c = fit_quantizer("pq-4x4", train, seed=1).centroids
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_pq_needs_fit_and_enough_points():
    q = create_quantizer("pq-4x4", dim=16)
    with pytest.raises(ValueError, match="fit"):
        q.encode(_unit(2, 16))
    with pytest.raises(ValueError, match="at least 16"):
        q.fit(_unit(10, 16))


@pytest.mark.parametrize("name", ["pq-4x4", "int4"])
def test_save_load_round_trip(name, tmp_path):
    q = fit_quantizer(name, _unit(300, 16, seed=6), seed=0, fill="mean")
    folder = q.save(tmp_path / name)
    assert sorted(p.name for p in folder.iterdir()) == ["quantizer.json", "quantizer.safetensors"]
    assert json.loads((folder / "quantizer.json").read_text())["config"]["name"] == name
    back = load_quantizer(folder)
    assert type(back) is type(q) and back.config == q.config and torch.equal(back.mean, q.mean)
    x = _unit(20, 16, seed=7)
    assert torch.equal(back.encode(x), q.encode(x))
    erased = torch.zeros(20, q.bits_per_item, dtype=torch.bool)
    erased[:, -3:] = True
    assert torch.equal(back.decode(q.encode(x), erased), q.decode(q.encode(x), erased))
    if name.startswith("pq"):
        assert np.array_equal(ProductQuantizer.load(folder).centroids, q.centroids)
    else:
        with pytest.raises(ValueError, match="not a ProductQuantizer"):
            ProductQuantizer.load(folder)


# --------------------------------------------------------------------------- erasures
@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_erased_dims_take_the_fill_value(fill):
    train, x = _unit(100, 8, seed=8), _unit(3, 8, seed=9)
    q = fit_quantizer("int4", train, fill=fill)
    bits = q.encode(x)
    clean = q.decode(bits, normalize=False)
    erased = torch.zeros_like(bits, dtype=torch.bool)
    erased[0, 16 + 2 * 4 + 3] = True  # last bit of dim 2 of item 0
    erased[1, 16 + 5 * 4] = True      # first bit of dim 5 of item 1
    bad = bits.clone()
    bad[erased] = 1 - bad[erased]     # the erased bits' values must not matter
    out = q.decode(bad, erased, normalize=False)
    fill_value = torch.zeros(8) if fill == "zero" else train.mean(0)
    assert out[0, 2] == fill_value[2] and out[1, 5] == fill_value[5]
    keep = torch.ones(3, 8, dtype=torch.bool)
    keep[0, 2] = keep[1, 5] = False
    assert torch.equal(out[keep], clean[keep])
    # the scale erased: the whole item is a failure and takes the fill vector
    erased[2, 0] = True
    assert q.failed_items(erased).tolist() == [False, False, True]
    assert torch.equal(q.decode(bits, erased, normalize=False)[2], fill_value)
    if fill == "zero":
        assert torch.equal(q.decode(bits, erased)[2], torch.zeros(8))  # stays zero after normalisation


def test_pq_erased_subvector_takes_the_train_mean():
    train, x = _unit(300, 16, seed=10), _unit(2, 16, seed=11)
    q = fit_quantizer("pq-4x4", train, fill="mean")
    erased = torch.zeros(2, 16, dtype=torch.bool)
    erased[1, 4 * 2 + 1] = True  # a bit of sub-vector 2 (dims 8..11) of item 1
    out, clean = q.decode(q.encode(x), erased, normalize=False), q.decode(q.encode(x), normalize=False)
    assert torch.equal(out[1, 8:12], train.mean(0)[8:12])
    assert torch.equal(out[0], clean[0]) and torch.equal(out[1, :8], clean[1, :8]) and torch.equal(out[1, 12:],
                                                                                                   clean[1, 12:])
    assert not q.failed_items(erased).any()


@pytest.mark.parametrize("name,failed,dims", [
    # int4, d = 384, k = 1024 -> 1000 payload bits per codeword: codeword 0 = scale + dims 0..245
    # (16 + 246 * 4 = 1000), codeword 1 = dims 246..383
    ("int4", [False, True], list(range(246, 384))),
    ("int4", [True, False], list(range(384))),  # the scale is lost: the whole item
    # int8: codeword 1 = bits 1000..1999 = dims (1000-16)/8 = 123 .. 247; codeword 3 = dims 373..383
    ("int8", [False, True, False, False], list(range(123, 248))),
    ("int8", [False, False, False, True], list(range(373, 384))),
    # float16: dim 62 = bits 992..1007 straddles codewords 0 and 1; codeword 1 = bits 1000..1999 = dims 62..124
    ("float16", [False, True, False, False, False, False, False], list(range(62, 125))),
    ("float16", [True, False, False, False, False, False, False], list(range(0, 63))),
])
def test_codeword_failures_erase_the_right_dims(name, failed, dims):
    q = create_quantizer(name, dim=384)
    k_info = info_bits_per_codeword(1024)
    assert codewords_for_bits(q.bits_per_item, 1024) == len(failed)
    erased = erased_bits_from_codewords(torch.tensor([failed]), k_info, q.bits_per_item)
    assert torch.nonzero(q.erased_dims(erased)[0]).flatten().tolist() == dims


def test_erased_bits_from_codewords():
    out = erased_bits_from_codewords(torch.tensor([[False, True, True], [True, False, False]]), 4, 7)
    assert out.tolist() == [[False] * 4 + [True] * 3, [True] * 4 + [False] * 3]  # 3rd column: padding, ignored
    with pytest.raises(ValueError, match="failed_codewords"):
        erased_bits_from_codewords(torch.zeros(1, 1, dtype=torch.bool), 4, 7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="int4"):
        create_quantizer("int5", dim=8)
    with pytest.raises(ValueError, match="divide"):
        create_quantizer("pq-5x8", dim=384)
    with pytest.raises(ValueError, match="fill"):
        create_quantizer("int4", dim=8, fill="median")
    with pytest.raises(ValueError, match="fit"):
        create_quantizer("int4", dim=8, fill="mean").decode(torch.zeros(1, 48))
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        create_quantizer("int4", dim=8).encode(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="48 bits"):
        create_quantizer("int4", dim=8).decode(torch.zeros(1, 40))
    assert "pq-<m>x<nbits>" in list_quantizers() and isinstance(create_quantizer("int8", dim=4), EmbeddingQuantizer)
