"""Bit-exact baselines: real JPEG / H.264 bitstreams through LDPC + QAM, really decoded; digital links built once."""

import pytest
import torch

from genscom.adaptation.adapter import AdapterConfig, build_adapter
from genscom.channels.awgn import AWGNChannel
from genscom.channels.fading import RayleighBlockFading
from genscom.coding.link import DigitalLink
from genscom.coding.mcs import channel_uses_for_bits
from genscom.memory import build_knowledge_base
from genscom.metrics.signal import psnr
from genscom.schemes import SourceBatch, create_scheme




def _clips(b=2, t=3, h=32, w=48):
    """Smooth moving gradients: compressible, so the streams stay a few codewords long."""
    y = torch.linspace(0, 1, h).view(h, 1)
    x = torch.linspace(0, 1, w).view(1, w)
    out = torch.empty(b, t, h, w, 3, dtype=torch.uint8)
    for i in range(b):
        for j in range(t):
            base = (x + 0.1 * j + 0.3 * i) % 1.0
            out[i, j] = (torch.stack([base * 255 + 0 * y, y * 255 + 0 * x, (1 - base) * 200 + 0 * y], -1)).to(torch.uint8)
    return out


@pytest.mark.parametrize("name,kwargs", [("jpeg-ldpc", {"quality": 60}), ("h264-ldpc", {"crf": 26})])
def test_classic_scheme_high_snr_decodes_and_counts_uses(name, kwargs):
    clips = _clips()
    scheme = create_scheme(name, mcs="qpsk-1/2", fidelity="full", **kwargs)
    payload = scheme.transmit(SourceBatch(frames=clips))
    out = scheme.deliver(payload, AWGNChannel(), 20.0, generator=torch.Generator().manual_seed(0))
    assert not out.failed.any()
    for i in range(len(clips)):
        assert out.frames[i].shape == clips[i].shape
        assert float(psnr(clips[i], out.frames[i]).mean()) > 20.0  # a failed decode (grey) is ~10 dB
        n_bits = int(payload.extras["payload_bits"][i] + payload.side_bits[i])
        assert int(out.channel_uses[i]) == channel_uses_for_bits(n_bits, "qpsk-1/2")
    # what was decoded is the real bitstream's decode: identical to a noiseless delivery
    clean = scheme.deliver(payload, None, None)
    for a, b in zip(out.frames, clean.frames):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["jpeg-ldpc", "h264-ldpc"])
def test_classic_scheme_low_snr_fails_without_raising(name):
    scheme = create_scheme(name, mcs="qpsk-1/2", fidelity="full")
    out = scheme.send(SourceBatch(frames=_clips()), AWGNChannel(), -10.0, generator=torch.Generator().manual_seed(1))
    assert out.failed.dtype == torch.bool and out.failed.shape == (2,)
    assert out.failed.all()
    assert all(f is None for f in out.frames)
    assert (torch.as_tensor(out.extras["block_errors"]) > 0).all()


def test_classic_scheme_bad_args():
    with pytest.raises(ValueError, match="quality"):
        create_scheme("jpeg-ldpc", quality=0)
    with pytest.raises(ValueError, match="crf"):
        create_scheme("h264-ldpc", crf=99)
    with pytest.raises(ValueError, match="sends pixels"):
        create_scheme("h264-ldpc").transmit(SourceBatch(embeddings=torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="mcs|MCS"):
        create_scheme("jpeg-ldpc", mcs="qpsk-9/10").send(SourceBatch(frames=_clips()), AWGNChannel(), 5.0)


def _emb(b=3, d=16, seed=0):
    return torch.nn.functional.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _digital(name):
    """(scheme, batch) of every scheme with a digital link, tiny."""
    if name == "digital-embedding":
        return create_scheme(name), SourceBatch(embeddings=_emb())
    if name in ("jpeg-ldpc", "h264-ldpc"):
        return create_scheme(name, fidelity="full"), SourceBatch(frames=_clips(b=1, t=2))
    if name == "memory":
        return create_scheme(name, knowledge_base=build_knowledge_base(_emb(8, seed=1))), SourceBatch(embeddings=_emb())
    adapter = build_adapter(AdapterConfig(dim=16, k=12, hidden=32, depth=1, group_size=3, cond_dim=8), seed=0).eval()
    return create_scheme("adapted+mu", adapter=adapter, mu=0.3), SourceBatch(embeddings=_emb())


@pytest.mark.parametrize("name", ["digital-embedding", "jpeg-ldpc", "h264-ldpc", "memory", "adapted+mu"])
def test_digital_scheme_builds_its_link_once(name, monkeypatch):
    scheme, batch = _digital(name)
    built = []
    init = DigitalLink.__init__

    def counting(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(DigitalLink, "__init__", counting)
    payload = scheme.transmit(batch)
    gen = torch.Generator().manual_seed(0)
    for channel, snr in ((AWGNChannel(), 20.0), (AWGNChannel(), 5.0), (RayleighBlockFading(coherence=8), 25.0)):
        out = scheme.deliver(payload, channel, snr, generator=gen)
        if name in ("digital-embedding", "jpeg-ldpc", "h264-ldpc"):  # fixed MCS: transmit counted the cost
            assert torch.equal(out.channel_uses, payload.channel_uses) and bool((payload.channel_uses > 0).all())
    # built in __init__ (none during deliveries), or lazily on the first delivery only (memory's frame link)
    assert len(built) == (1 if name == "memory" else 0), built
    link = scheme.frame_link() if name == "memory" else scheme.link
    assert isinstance(link, DigitalLink) and link.channel is None  # one link serves every channel
    if name == "memory":
        assert built == [link]

