"""Bit-exact baselines: real JPEG / H.264 bitstreams through LDPC + QAM, really decoded."""

import pytest
import torch

from genscom.channels.awgn import AWGNChannel
from genscom.coding.link import channel_uses_for_bits
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
