"""Bit-exact baselines: real JPEG / H.264 bitstreams through LDPC + QAM, really decoded; digital links built once."""

import dataclasses

import pytest
import torch

from genscom.adaptation.adapter import AdapterConfig, build_adapter
from genscom.channels.awgn import AWGNChannel
from genscom.channels.fading import RayleighBlockFading
from genscom.channels.sensing import PilotLayout, link_feedback
from genscom.coding.link import DigitalLink
from genscom.coding.mcs import channel_uses_for_bits, plan_fixed
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
        n_bits = int(payload.source_bits[i] + payload.side_bits[i])
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



@pytest.mark.parametrize("name,kwargs", [
    ("digital-embedding", {"mcs": "qpsk-1/2"}),
    ("digital-embedding", {"mcs": "adaptive"}),
    ("jpeg-ldpc", {"mcs": "qpsk-1/2", "fidelity": "full"}),
    ("h264-ldpc", {"mcs": "adaptive", "fidelity": "full"}),
])
def test_digital_schemes_pay_for_pilots_with_pilot_csi_and_not_with_perfect(name, kwargs, monkeypatch):
    """PROTOCOL.md: on fading, every scheme sends pilots per coherence block (counted at transmit) unless the
    labelled perfect-CSI bound; the digital rows too, fixed or adaptive MCS (adaptive on the pilot tables)."""
    ch = RayleighBlockFading(coherence=16)
    scheme = create_scheme(name, **kwargs)
    batch = SourceBatch(embeddings=_emb(b=2, d=384)) if name == "digital-embedding" else SourceBatch(frames=_clips())
    pilot_fb = link_feedback(ch, 12.0, csi="pilot", generator=torch.Generator().manual_seed(0))
    perfect_fb = link_feedback(ch, 12.0, csi="perfect")
    layout = pilot_fb.pilot_layout()
    assert layout == PilotLayout(2, coherence=16)
    for fb, pilots in ((pilot_fb, layout), (perfect_fb, None)):
        payload = scheme.transmit(batch, sensing=fb)
        feedback = fb.feedback_uses if scheme.adapts else 0  # a fixed MCS reads no SNR: no feedback counted
        assert payload.pilots == pilots
        for plan, uses in zip(payload.plans, payload.channel_uses.tolist()):
            data = plan_fixed(plan.n_bits, plan.mcs, repeat=plan.repeat, crc=scheme.link.crc).channel_uses
            assert plan.pilots == pilots and data > 0
            assert uses == (data if pilots is None else layout.frame_length(data)) + feedback, (fb.csi, plan)
    # deliver follows the plans (pilots) made at transmit: nothing is planned or recounted there
    payload = scheme.transmit(batch, sensing=pilot_fb)

    def no_plan(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("deliver re-planned the link")

    monkeypatch.setattr(scheme.link, "plan", no_plan)
    out = scheme.deliver(payload, ch, 30.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.channel_uses, payload.channel_uses) and not out.failed.any()


# --------------------------------------------------------------------------- digital-embedding: quantiser, CRC, erasure
@pytest.mark.parametrize("quantizer,n_bits,n_cw", [
    ("int4", 384 * 4 + 16, 2),      # 1552 bits + 2 CRCs = 1600 <= 2 x 1024
    ("int8", 384 * 8 + 16, 4),      # 3088: ceil(3088 / 1000) = 4 codewords
    ("int2", 384 * 2 + 16, 1),      # 784 + 24 = 808
    ("float16", 384 * 16, 7),       # 6144: ceil(6144 / 1000) = 7
])
def test_digital_embedding_counts_bits_crc_and_uses(quantizer, n_bits, n_cw):
    scheme = create_scheme("digital-embedding", quantizer=quantizer, mcs="qpsk-1/2")
    payload = scheme.transmit(SourceBatch(embeddings=_emb(b=2, d=384)))
    assert payload.source_bits.tolist() == [n_bits] * 2
    assert payload.bit_rows.shape == (2, n_bits)
    assert payload.side_bits.tolist() == [24 * n_cw] * 2                  # one CRC-24 per LDPC codeword
    assert payload.channel_uses.tolist() == [n_cw * 1024] * 2             # qpsk-1/2: 2048 coded bits on 1024 symbols
    assert scheme.name == f"digital-embedding-{'fp16' if quantizer == 'float16' else quantizer}"


def test_digital_embedding_noiseless_and_high_snr():
    e = _emb(b=4, d=64)
    scheme = create_scheme("digital-embedding", quantizer="int8", mcs="qpsk-1/2")
    payload = scheme.transmit(SourceBatch(embeddings=e))
    for out in (scheme.deliver(payload, None, None),
                scheme.deliver(payload, AWGNChannel(), 10.0, generator=torch.Generator().manual_seed(0))):
        assert not out.failed.any() and not out.extras["codeword_failed"].any()
        assert float((out.embeddings * e).sum(-1).min()) > 0.999


def test_digital_embedding_erases_dims_of_failed_codewords():
    # int4 on 384-d with k = 1024: codeword 0 = scale + dims 0..245, codeword 1 = dims 246..383
    e = _emb(b=3, d=384, seed=2)
    scheme = create_scheme("digital-embedding", quantizer="int4", mcs="qpsk-1/2")
    payload = scheme.transmit(SourceBatch(embeddings=e))
    clean = scheme.deliver(payload, None, None).embeddings
    hat = payload.bit_rows.clone()
    hat[0, 1000:] = 1 - hat[0, 1000:]  # garbage in the failed codewords: must not be read
    hat[1, :1000] = 1 - hat[1, :1000]
    failed = torch.tensor([[False, True], [True, False], [False, False]])
    out = scheme.receive(None, dataclasses.replace(payload, extras=dict(payload.extras, bits_hat=hat,
                                                                        codeword_failed=failed)))
    assert out.failed.tolist() == [True, True, False]
    assert out.extras["erased_dims"].tolist() == [138, 384, 0] and out.extras["lost"].tolist() == [False, True, False]
    assert torch.equal(out.embeddings[0, 246:], torch.zeros(138))  # erased: the fill value 0, not garbage
    kept = clean[0, :246] / clean[0, :246].norm()                  # the rest: the clean decode, re-normalised
    assert torch.allclose(out.embeddings[0, :246], kept, atol=1e-6)
    assert torch.equal(out.embeddings[1], torch.zeros(384))        # scale lost: the whole item
    assert torch.equal(out.embeddings[2], clean[2])


def test_digital_embedding_erases_what_the_link_flags():
    # qpsk-1/2 at 1 dB: about half of the codewords fail (full LDPC simulation, the link's CRC decides)
    e = _emb(b=16, d=384, seed=5)
    scheme = create_scheme("digital-embedding", quantizer="int4", mcs="qpsk-1/2")
    payload = scheme.transmit(SourceBatch(embeddings=e))
    raw = scheme.quantizer_for(384).decode(payload.bit_rows, normalize=False)
    out = scheme.deliver(payload, AWGNChannel(), 1.0, generator=torch.Generator().manual_seed(0))
    failed = out.extras["codeword_failed"]
    assert failed.shape == (16, 2) and failed[:, 1].any() and not failed.all()
    assert torch.equal(out.failed, failed.any(1))
    for i in range(16):
        want = raw[i].clone()
        if failed[i, 0]:
            want[:] = 0      # the scale rode in codeword 0
        if failed[i, 1]:
            want[246:] = 0
        want = want / want.norm().clamp_min(1e-12)
        assert torch.allclose(out.embeddings[i], want, atol=1e-6), i


def test_digital_embedding_low_snr_erases_instead_of_garbage():
    scheme = create_scheme("digital-embedding", quantizer="int4", mcs="qpsk-1/2")
    payload = scheme.transmit(SourceBatch(embeddings=_emb(b=3, d=384)))
    out = scheme.deliver(payload, AWGNChannel(), -8.0, generator=torch.Generator().manual_seed(0))
    assert out.failed.all() and out.extras["lost"].all()
    assert torch.equal(out.embeddings, torch.zeros(3, 384))
    assert (torch.as_tensor(out.extras["block_errors"]) == 2).all()  # the link agrees: both codewords failed


def test_digital_embedding_takes_a_fitted_product_quantizer(tmp_path):
    from genscom.coding.quantize import fit_quantizer

    pq = fit_quantizer("pq-4x4", _emb(b=300, d=16, seed=3), seed=0, fill="mean")
    e = _emb(b=2, d=16, seed=4)
    for q in (pq, pq.save(tmp_path / "pq")):  # the object, or the folder it was saved to (a Path)
        scheme = create_scheme("digital-embedding", quantizer=q, mcs="qpsk-1/2")
        assert scheme.name == "digital-embedding-pq-4x4"
        payload = scheme.transmit(SourceBatch(embeddings=e))
        assert payload.bit_rows.shape == (2, 16) and payload.side_bits.tolist() == [24, 24]
        out = scheme.deliver(payload, None, None)
        assert torch.allclose(out.embeddings, pq.decode(pq.encode(e)))
    with pytest.raises(ValueError, match="codes 16-d"):
        scheme.transmit(SourceBatch(embeddings=_emb(b=2, d=32)))


def test_digital_embedding_bad_quantizer():
    from genscom.coding.quantize import create_quantizer

    with pytest.raises(ValueError, match="int4, int8, int2, float16"):
        create_scheme("digital-embedding", quantizer="int5")
    with pytest.raises(ValueError, match="not fitted"):
        create_scheme("digital-embedding", quantizer=create_quantizer("pq-4x4", dim=16))
    with pytest.raises(TypeError, match="fmt"):  # the old keyword is gone: quantizer= names every format
        create_scheme("digital-embedding", fmt="int8")
