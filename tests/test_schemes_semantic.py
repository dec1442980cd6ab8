import pytest
import torch

from genscom.channels.awgn import AWGNChannel
from genscom.schemes import SourceBatch, create_scheme, list_schemes
from genscom.schemes.digital import dequantize_embedding, quantize_embedding


def _emb(b=16, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(b, d, generator=g)
    return e / e.norm(dim=-1, keepdim=True)


def test_registry_lists_builtins_and_rejects_unknown():
    names = list_schemes()
    assert names == sorted(names)
    for n in ("noiseless", "semantic-analog", "digital-embedding", "jpeg-ldpc", "h264-ldpc"):
        assert n in names
    with pytest.raises(ValueError, match="unknown scheme 'nope'.*semantic-analog"):
        create_scheme("nope")


def test_source_batch_validation():
    with pytest.raises(ValueError, match="needs frames, embeddings"):
        SourceBatch()
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        SourceBatch(frames=torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="same batch size"):
        SourceBatch(frames=torch.zeros(2, 1, 8, 8, 3, dtype=torch.uint8), embeddings=torch.zeros(3, 4))


def test_noiseless_is_identity():
    e = _emb()
    out = create_scheme("noiseless").send(SourceBatch(embeddings=e), None, None)
    torch.testing.assert_close(out.embeddings, e)
    assert int(out.channel_uses.sum()) == 0


@pytest.mark.parametrize("d", [32, 33])
def test_semantic_analog_power_uses_and_roundtrip(d):
    e = _emb(d=d)
    s = create_scheme("semantic-analog")
    p = s.transmit(SourceBatch(embeddings=e))
    n = (d + 1) // 2
    assert p.symbols.shape == (16, n) and p.symbols.is_complex()
    assert torch.all(p.channel_uses == n)
    torch.testing.assert_close(p.symbols.abs().pow(2).mean(dim=1), torch.ones(16), atol=1e-5, rtol=0)
    out = s.deliver(p, None, None)
    torch.testing.assert_close(out.embeddings, e, atol=1e-5, rtol=0)


def test_semantic_analog_degrades_with_noise_and_repetition_helps():
    e = _emb(b=64, d=64)
    ch = AWGNChannel()
    cos = {}
    for rep in (1, 8):
        s = create_scheme("semantic-analog", repeat=rep)
        for snr in (-5.0, 20.0):
            out = s.send(SourceBatch(embeddings=e), ch, snr, generator=torch.Generator().manual_seed(1))
            cos[(rep, snr)] = float((out.embeddings * e).sum(-1).mean())
            if rep == 8:
                assert torch.all(out.channel_uses == 8 * 32)
    assert cos[(1, 20.0)] > 0.99
    assert cos[(1, -5.0)] < cos[(1, 20.0)]
    assert cos[(8, -5.0)] > cos[(1, -5.0)] + 0.1


def test_semantic_analog_bad_args():
    with pytest.raises(ValueError, match="repeat"):
        create_scheme("semantic-analog", repeat=0)
    with pytest.raises(ValueError, match="equalizer"):
        create_scheme("semantic-analog", equalizer="magic")
    with pytest.raises(ValueError, match="embeddings"):
        create_scheme("semantic-analog").transmit(SourceBatch(frames=torch.zeros(1, 1, 8, 8, 3, dtype=torch.uint8)))


@pytest.mark.parametrize("fmt,bits_per_dim,tol", [("float16", 16, 1e-3), ("int8", 8, 1e-2)])
def test_quantize_roundtrip(fmt, bits_per_dim, tol):
    e = _emb(b=4, d=24)
    bits = quantize_embedding(e, fmt)
    extra = 16 if fmt == "int8" else 0
    assert bits.shape == (4, 24 * bits_per_dim + extra)
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    back = dequantize_embedding(bits, 24, fmt)
    assert (back - e).abs().max() < tol


def test_dequantize_sanitises_non_finite():
    bits = torch.ones(1, 16 * 4)  # 0xFFFF float16 is NaN
    out = dequantize_embedding(bits, 4, "float16")
    assert torch.isfinite(out).all()
