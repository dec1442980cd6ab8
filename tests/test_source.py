"""JPEG / H.264 real bitstreams: round trips, rate monotonicity, decoders that never raise on damage."""

from __future__ import annotations

import io
import logging
import time
import warnings

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
    h264_sps_geometry,
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


def _patch_sof(data: bytes, height: int, width: int) -> bytes:
    """Rewrite the baseline SOF0 header: FF C0, length (2), precision (1), height (2), width (2)."""
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[i + 9:]


@pytest.mark.parametrize("claim", [(60000, 60000), (10000, 10000), (5792, 5792), (32, 64)])
def test_jpeg_corrupt_header_size_fails_fast_without_warning(claim):
    from PIL import Image

    data = encode_jpeg(_smooth_image(64, 64), quality=75)
    bad = _patch_sof(data, *claim)
    if claim == (10000, 10000):  # the hazard: Pillow's open() alone warns (1e8 pixels > its 89.5M limit)
        with pytest.warns(Image.DecompressionBombWarning):
            Image.open(io.BytesIO(bad))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        assert decode_jpeg(bad, expected_size=(64, 64)) is None
        assert time.perf_counter() - t0 < 0.2
        if claim[0] * claim[1] > (1 << 25):            # above the default max_pixels even without expected_size
            assert decode_jpeg(bad) is None
    assert not caught, [str(w.message) for w in caught]


def test_jpeg_normal_stream_decodes_as_pillow_does():
    from PIL import Image

    for q in (30, 90):
        data = encode_jpeg(_smooth_image(64, 80, seed=q), quality=q)
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        out = decode_jpeg(data, expected_size=(64, 80))
        assert out is not None and np.array_equal(out.numpy(), ref)


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


def _nal_type(data: bytes, start: int) -> int:
    return data[start + (4 if data[start:start + 4] == b"\x00\x00\x00\x01" else 3)] & 0x1F


def _sps_of(data: bytes) -> list[tuple[int, int]]:
    from genscom.coding.source import _split_nal_units

    return [(s, e) for s, e in _split_nal_units(data) if _nal_type(data, s) == 7]


def _replace_sps(data: bytes, which: int, new_sps: bytes) -> bytes:
    s, e = _sps_of(data)[which]
    return data[:s] + new_sps + data[e:]


@pytest.mark.parametrize("size, coded", [((48, 64), (48, 64)), ((33, 47), (34, 48)), ((1080, 1920), (1080, 1920))])
def test_h264_sps_geometry_is_the_encoded_size(size, coded):
    # 1080 is coded as 68 macroblock rows (1088) cropped by 8: exercises the cropping fields; odd sizes are padded
    data = encode_h264(torch.zeros(1, *size, 3, dtype=torch.uint8), crf=30, preset="ultrafast")
    assert [h264_sps_geometry(data[s:e]) for s, e in _sps_of(data)] == [coded]
    assert h264_sps_geometry(b"\x00\x00\x01\x68\xee") is None  # a PPS, not an SPS
    assert h264_sps_geometry(data[_sps_of(data)[0][0]:_sps_of(data)[0][0] + 8]) is None  # cut short


def test_h264_sps_geometry_agrees_with_ffmpeg_under_bit_errors():
    """Second implementation: FFmpeg's own SPS parser. Flip each bit of the SPS in turn; whenever FFmpeg still
    decodes a frame, its size is the geometry we read."""
    import av

    data = encode_h264(_smooth_clip(t=1), crf=23)
    s, e = _sps_of(data)[0]
    agree = 0
    for k in range(8 * 5, 8 * (e - s)):          # every bit after the start code and NAL header
        b = bytearray(data[s:e])
        b[k // 8] ^= 1 << (7 - k % 8)
        ours = h264_sps_geometry(bytes(b))
        ctx = av.CodecContext.create("h264", "r")
        ctx.options = {"max_pixels": str(4096 * 4096)}
        frames = []
        try:
            with av.logging.Capture(local=True):
                for packet in list(ctx.parse(bytes(b) + data[e:])) + list(ctx.parse(None)):
                    frames += ctx.decode(packet)
                frames += ctx.decode(None)
        except av.FFmpegError:
            pass
        if frames:
            assert (frames[0].height, frames[0].width) == ours, k
            agree += 1
    assert agree > 50


@pytest.mark.parametrize("other", [(720, 1280), (32, 48)])
def test_h264_sps_with_another_geometry_fails_before_decoding(other, caplog):
    # the SPS of a stream of another size spliced into a 48x64 clip: a damaged SPS that still parses
    clip = _smooth_clip(t=4)
    data = encode_h264(clip, crf=23)
    foreign = encode_h264(torch.zeros(1, *other, 3, dtype=torch.uint8), crf=30, preset="ultrafast")
    s, e = _sps_of(foreign)[0]
    bad = _replace_sps(data, 0, foreign[s:e])
    with caplog.at_level(logging.DEBUG, logger="genscom.coding.source"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        dec = decode_h264(bad, n_frames=4, height=48, width=64)
        assert time.perf_counter() - t0 < 0.5
    assert not caught
    assert dec.failed and dec.frames is None and dec.n_decoded == 0
    assert f"SPS declares [{other}]" in caplog.text


def test_h264_bad_later_sps_keeps_frames_of_good_segments():
    # gop=3: an IDR with its own SPS every 3 frames. A damaged 2nd SPS loses frames 3..5 only, and the frames
    # that are kept are bit-identical to those of the undamaged stream
    clip = _smooth_clip(t=9)
    data = encode_h264(clip, crf=23, gop=3)
    assert len(_sps_of(data)) == 3
    foreign = encode_h264(torch.zeros(1, 96, 128, 3, dtype=torch.uint8), crf=30, preset="ultrafast")
    s, e = _sps_of(foreign)[0]
    dec = decode_h264(_replace_sps(data, 1, foreign[s:e]), n_frames=9, height=48, width=64)
    good = decode_h264(data, n_frames=9, height=48, width=64)
    assert dec.decoded_mask.tolist() == [True] * 3 + [False] * 3 + [True] * 3
    keep = dec.decoded_mask
    assert torch.equal(dec.frames[keep], good.frames[keep])
    assert torch.equal(dec.frames[3], good.frames[2])   # gap filled with the last decoded frame


def test_h264_normal_stream_decodes_as_a_plain_demuxer_does():
    # a second decoding path: PyAV's raw-h264 demuxer, frames converted by the same yuv->rgb routine
    import av

    from genscom.coding.source import _frame_to_rgb

    clip = _smooth_clip(t=6)
    data = encode_h264(clip, crf=20)
    with av.open(io.BytesIO(data), format="h264") as container:
        ref = np.stack([_frame_to_rgb(f) for f in container.decode(video=0)])
    dec = decode_h264(data, n_frames=6, height=48, width=64)
    assert not dec.failed and dec.n_decoded == 6 and np.array_equal(dec.frames.numpy(), ref)


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
