"""JPEG / H.264 real bitstreams: round trips, rate monotonicity, decoders that never raise on damage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genscom.coding.source import (
    DecodedClip,
    ImageCodec,
    VideoCodec,
    bits_of,
    decode_h264,
    decode_jpeg,
    encode_h264,
    encode_jpeg,
)
from genscom.metrics.signal import psnr


def _smooth_image(h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    base = torch.stack(torch.broadcast_tensors(180 * x + 40 * y, 120 + 80 * torch.sin(6 * x + 3 * y), 200 * y), dim=-1)
    base = base + 6 * torch.randn(h, w, 1, generator=g)  # luma texture
    return base.clamp(0, 255).round().to(torch.uint8)


def _smooth_clip(t: int = 10, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    frames = []
    for k in range(t):
        y = torch.linspace(0, 1, h)[:, None]
        x = torch.linspace(0, 1, w)[None, :] + 0.04 * k  # moving pattern: frames differ
        f = torch.stack(torch.broadcast_tensors(128 + 100 * torch.sin(8 * x), 100 + 60 * torch.cos(5 * y + 4 * x),
                                               60 + 150 * y * x), dim=-1)
        frames.append(f + 4 * torch.randn(h, w, 1, generator=g))
    return torch.stack(frames).clamp(0, 255).round().to(torch.uint8)


def _flip_bits(data: bytes, rate: float, rng: np.random.Generator) -> bytes:
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    bits ^= (rng.random(bits.size) < rate).astype(np.uint8)
    return np.packbits(bits).tobytes()


# --------------------------------------------------------------------------- JPEG
def test_jpeg_round_trip_high_quality():
    img = _smooth_image()
    out = decode_jpeg(encode_jpeg(img, quality=95))
    assert out is not None and out.dtype == torch.uint8 and out.shape == img.shape
    assert float(psnr(img, out)) > 35.0


def test_jpeg_quality_monotone_in_bytes_and_psnr():
    img = _smooth_image()
    sizes, psnrs = [], []
    for q in (10, 30, 60, 90):
        data = encode_jpeg(img, quality=q)
        sizes.append(len(data))
        psnrs.append(float(psnr(img, decode_jpeg(data))))
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert psnrs == sorted(psnrs)
    assert bits_of(encode_jpeg(img, quality=50)) == 8 * len(encode_jpeg(img, quality=50))


def test_jpeg_accepts_numpy_and_codec_config():
    img = _smooth_image().numpy()
    codec = ImageCodec(quality=80)
    out = codec.decode(codec.encode(img), expected_size=img.shape[:2])
    assert out is not None and tuple(out.shape) == img.shape


@pytest.mark.parametrize("rate", [1e-4, 1e-3, 1e-2, 1e-1])
def test_jpeg_bit_errors_never_raise(rate):
    img = _smooth_image(64, 80)
    data = encode_jpeg(img, quality=75)
    rng = np.random.default_rng(int(rate * 1e6))
    n_ok = 0
    for _ in range(40):
        out = decode_jpeg(_flip_bits(data, rate, rng), expected_size=(64, 80))
        if out is not None:
            assert out.dtype == torch.uint8 and tuple(out.shape) == (64, 80, 3)
            n_ok += 1
    if rate <= 1e-4:
        assert n_ok >= 30  # a couple of flipped bits rarely kill a JPEG
    if rate >= 1e-1:
        assert n_ok == 0  # every marker is destroyed


def test_jpeg_truncated_and_garbage():
    img = _smooth_image()
    data = encode_jpeg(img, quality=75)
    half = decode_jpeg(data[: len(data) // 2])
    assert half is not None and half.shape == img.shape  # partial decode, rest filled
    assert float(psnr(img[:10], half[:10])) > 25.0       # the top rows survived
    rng = np.random.default_rng(0)
    for junk in (b"", b"\xff\xd8", data[:20], rng.bytes(2000), bytearray(data[:100])):
        assert decode_jpeg(junk) is None


def test_jpeg_wrong_size_counts_as_failed():
    data = encode_jpeg(_smooth_image(), quality=75)
    assert decode_jpeg(data, expected_size=(96, 127)) is None
    assert decode_jpeg(data, expected_size=(96, 128)) is not None


def test_jpeg_bad_arguments():
    img = _smooth_image()
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(img, quality=0)
    with pytest.raises(ValueError, match="quality"):
        ImageCodec(quality=100)
    with pytest.raises(TypeError, match="uint8"):
        encode_jpeg(img.float(), quality=50)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        encode_jpeg(img[..., :2], quality=50)
    with pytest.raises(TypeError, match="bytes"):
        decode_jpeg("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- H.264
def test_h264_round_trip_frame_aligned():
    clip = _smooth_clip()
    data = encode_h264(clip, crf=12)
    dec = decode_h264(data, n_frames=10, height=48, width=64)
    assert isinstance(dec, DecodedClip) and not dec.failed and dec.n_decoded == 10
    assert dec.frames.dtype == torch.uint8 and dec.frames.shape == clip.shape
    assert bool(dec.decoded_mask.all())
    per_frame = psnr(clip, dec.frames)
    assert float(per_frame.min()) > 35.0
    # frame i is decoded into slot i: a shifted comparison is clearly worse
    assert float(psnr(clip[1:], dec.frames[:-1]).mean()) < float(per_frame.mean()) - 5.0


def test_h264_crf_monotone_in_bytes_and_psnr():
    clip = _smooth_clip()
    sizes, psnrs = [], []
    for crf in (40, 30, 20, 10):
        data = encode_h264(clip, crf=crf)
        sizes.append(len(data))
        psnrs.append(float(psnr(clip, decode_h264(data, n_frames=10, height=48, width=64).frames).mean()))
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert psnrs == sorted(psnrs)


def test_h264_bitrate_mode_and_config():
    clip = _smooth_clip()
    low = encode_h264(clip, bitrate=50_000)
    high = encode_h264(clip, bitrate=800_000)
    assert len(low) < len(high)
    codec = VideoCodec(crf=None, bitrate=200_000, gop=4)
    dec = codec.decode(codec.encode(clip), n_frames=10, height=48, width=64)
    assert not dec.failed and dec.frames.shape == clip.shape


def test_h264_sei_stripped():
    clip = _smooth_clip(t=3)
    with_sei = encode_h264(clip, crf=30, strip_sei=False)
    without = encode_h264(clip, crf=30)
    assert b"x264" in with_sei and b"x264" not in without
    assert len(with_sei) - len(without) > 300
    assert not decode_h264(without, n_frames=3, height=48, width=64).failed


def test_h264_odd_size_padded_and_cropped():
    clip = _smooth_clip(t=4, h=33, w=47)
    dec = decode_h264(encode_h264(clip, crf=15), n_frames=4, height=33, width=47)
    assert dec.frames.shape == (4, 33, 47, 3)
    assert float(psnr(clip, dec.frames).min()) > 30.0


@pytest.mark.parametrize("rate", [1e-4, 1e-3, 1e-2, 1e-1])
def test_h264_bit_errors_never_raise(rate):
    clip = _smooth_clip()
    data = encode_h264(clip, crf=23)
    rng = np.random.default_rng(int(rate * 1e6) + 1)
    n_failed = 0
    for _ in range(30):
        dec = decode_h264(_flip_bits(data, rate, rng), n_frames=10, height=48, width=64)
        assert 0 <= dec.n_decoded <= 10 and dec.decoded_mask.shape == (10,)
        assert dec.n_decoded == int(dec.decoded_mask.sum())
        if dec.failed:
            assert dec.frames is None and dec.n_decoded == 0
            n_failed += 1
        else:
            assert dec.frames.shape == clip.shape and dec.frames.dtype == torch.uint8
    if rate <= 1e-4:
        assert n_failed <= 3
    if rate >= 1e-1:
        assert n_failed == 30


def test_h264_truncated_keeps_leading_frames_and_fills():
    clip = _smooth_clip()
    data = encode_h264(clip, crf=23)
    dec = decode_h264(data[: int(len(data) * 0.6)], n_frames=10, height=48, width=64)
    assert not dec.failed and 0 < dec.n_decoded < 10
    assert bool(dec.decoded_mask[0]) and not bool(dec.decoded_mask[-1])
    last = int(dec.decoded_mask.nonzero().max())
    assert torch.equal(dec.frames[-1], dec.frames[last])  # gap filled by repeating the last decoded frame


def test_h264_garbage_and_empty_fail_cleanly():
    rng = np.random.default_rng(3)
    for junk in (b"", b"\x00" * 64, b"\x00\x00\x00\x01" * 50, rng.bytes(4000)):
        dec = decode_h264(junk, n_frames=5, height=48, width=64)
        assert dec.failed and dec.frames is None and dec.n_decoded == 0


def test_h264_wrong_expected_size_counts_as_failed():
    data = encode_h264(_smooth_clip(t=3), crf=30)
    assert decode_h264(data, n_frames=3, height=96, width=128).failed


def test_h264_bad_arguments():
    clip = _smooth_clip(t=2)
    with pytest.raises(ValueError, match="crf or bitrate"):
        encode_h264(clip, crf=23, bitrate=100_000)
    with pytest.raises(ValueError, match="crf"):
        encode_h264(clip, crf=60)
    with pytest.raises(ValueError, match="preset"):
        encode_h264(clip, preset="warp")
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        encode_h264(clip[0], crf=23)
    with pytest.raises(ValueError, match="n_frames"):
        decode_h264(b"", n_frames=0, height=4, width=4)
    with pytest.raises(ValueError, match="gop"):
        VideoCodec(gop=0)


def test_fast_yuv_conversion_matches_swscale():
    import av

    from genscom.coding.source import _frame_to_rgb, encode_h264

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (1, 4, 6, 3)).repeat(16, axis=1).repeat(16, axis=2).astype(np.uint8)
    data = encode_h264(np.repeat(base, 3, axis=0), crf=18)
    ctx = av.CodecContext.create("h264", "r")
    frames = [f for p in list(ctx.parse(data)) + list(ctx.parse(None)) for f in ctx.decode(p)]
    frames += list(ctx.decode(None))
    assert frames
    for f in frames:
        ref = f.to_ndarray(format="rgb24").astype(int)
        diff = np.abs(_frame_to_rgb(f).astype(int) - ref)
        assert diff.max() <= 4 and diff.mean() < 2.0
