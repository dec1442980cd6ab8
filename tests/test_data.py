"""Datasets: the clip-caption interface, the procedural default, digits, and local-folder loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genscom.data import (
    MSRVTT,
    ClipCaptionDataset,
    ClipItem,
    DigitsCaptions,
    ImageCaptionFolder,
    SyntheticClips,
    collate_clips,
    create_dataset,
    list_datasets,
)
from genscom.data import synthetic as syn


def _syn(split: str = "test", **kw) -> SyntheticClips:
    kw.setdefault("n_items", 12)
    kw.setdefault("cache", False)
    return SyntheticClips(split, **kw)


# ----------------------------------------------------------------------------- registry and interface
def test_registry_lists_builtins_and_rejects_unknown():
    assert list_datasets() == ["digits", "image-captions", "msrvtt", "synthetic"]
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*synthetic"):
        create_dataset("nope", split="test")
    with pytest.raises(ValueError, match="split='dev'.*train, test, val"):
        create_dataset("synthetic", split="dev", n_items=2, cache=False)


class _Toy(ClipCaptionDataset):
    name = "toy"

    def __init__(self, n_clips: int, n_caps: int) -> None:
        self.split = "test"
        self._validate(n_clips, n_caps, fix="add clips to the toy folder")

    def __len__(self) -> int:
        return 0

    def load_frames(self, i: int) -> torch.Tensor:
        return torch.zeros(1, 4, 4, 3, dtype=torch.uint8)

    def captions_of(self, i: int) -> list[str]:
        return ["x"]


def test_empty_and_mismatched_datasets_raise():
    with pytest.raises(ValueError, match="'toy'.*no items; add clips"):
        _Toy(0, 0)
    with pytest.raises(ValueError, match="3 clips but 2 caption lists"):
        _Toy(3, 2)
    with pytest.raises(ValueError, match="'synthetic'.*empty.*n_items"):
        SyntheticClips("test", n_items=0, cache=False)


def test_clip_item_validates_frames():
    with pytest.raises(TypeError, match="uint8"):
        ClipItem(frames=torch.zeros(1, 4, 4, 3), captions=["a"], id="x")
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        ClipItem(frames=torch.zeros(4, 4, 3, dtype=torch.uint8), captions=["a"], id="x")
    with pytest.raises(ValueError, match="caption"):
        ClipItem(frames=torch.zeros(1, 4, 4, 3, dtype=torch.uint8), captions=[], id="x")


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_shapes_dtypes_and_captions_index():
    ds = _syn(n_items=6, num_frames=4, size=48)
    item = ds[0]
    assert item.frames.shape == (4, 48, 48, 3) and item.frames.dtype == torch.uint8
    assert len(item.captions) == 2  # test split: fixed two captions
    caps, idx = ds.all_captions()
    assert len(caps) == 12 and idx.dtype == torch.long and idx.tolist() == sorted([i for i in range(6)] * 2)
    stacked = ds.stacked_frames()
    assert stacked.shape == (6, 4, 48, 48, 3) and torch.equal(stacked[3], ds[3].frames)
    assert torch.equal(ds.stacked_frames(torch.tensor([5, 1]))[0], ds[5].frames)
    assert ds[-1].id == ds[5].id
    with pytest.raises(IndexError):
        ds[6]
    train = _syn("train", n_items=30)
    assert {len(train.captions_of(i)) for i in range(30)} <= {2, 3, 4, 5}
    assert len({len(train.captions_of(i)) for i in range(30)}) > 1


def test_synthetic_default_sizes():
    assert len(SyntheticClips("train", cache=False)) == 3000
    assert len(SyntheticClips("test", cache=False)) == 1000


def test_synthetic_deterministic_and_seed_sensitive():
    a, b = _syn(seed=3), _syn(seed=3)
    assert torch.equal(a.stacked_frames(), b.stacked_frames())
    assert a.all_captions()[0] == b.all_captions()[0]
    c = _syn(seed=4)
    assert not torch.equal(a.stacked_frames(), c.stacked_frames())
    assert a.all_captions()[0] != c.all_captions()[0]
    # items do not depend on n_items: the first items of a bigger set are the same
    assert torch.equal(_syn(seed=3, n_items=3).stacked_frames(), a.stacked_frames(range(3)))


def test_synthetic_splits_disjoint():
    tr, te, va = _syn("train", n_items=40), _syn("test", n_items=40), _syn("val", n_items=40)
    ftr = {tr[i].frames.numpy().tobytes() for i in range(40)}
    fte = {te[i].frames.numpy().tobytes() for i in range(40)}
    fva = {va[i].frames.numpy().tobytes() for i in range(40)}
    assert len(ftr) == 40 and len(fte) == 40 and len(fva) == 40
    assert not ftr & fte and not ftr & fva and not fte & fva
    assert not set(tr[i].id for i in range(40)) & set(te[i].id for i in range(40))
    assert len(va[0].captions) == 2


def test_synthetic_captions_mention_attributes():
    ds = _syn("train", n_items=300)
    seen_shapes, seen_colours, seen_motions, seen_bgs = set(), set(), set(), set()
    for i in range(len(ds)):
        attrs = ds.attributes_of(i)
        for cap in ds.captions_of(i):
            for g in attrs["groups"]:
                assert g["colour"] in cap.split(), (cap, g)
                word = syn._plural(g["shape"], g["count"])
                assert word in cap.split(), (cap, g)
                if g["count"] > 1:
                    assert syn.COUNT_WORDS[g["count"]] in cap.split()
                assert any(p in cap for p in syn._MOTION_PHRASES[g["motion"]]), (cap, g)
                seen_shapes.add(g["shape"]), seen_colours.add(g["colour"]), seen_motions.add(g["motion"])
            bg = attrs["background"]
            assert bg in cap or any(p in cap for p in syn._BACKGROUND_PHRASES.get(bg, [])), cap
            seen_bgs.add(bg)
        assert len(set(ds.captions_of(i))) == len(ds.captions_of(i))  # paraphrases are distinct
    assert seen_shapes == set(syn.SHAPES) and seen_colours == set(syn.COLOURS)
    assert seen_motions == set(syn.MOTIONS) and seen_bgs == set(syn.BACKGROUNDS)


def _colour_mask(frame: torch.Tensor, colour: str) -> torch.Tensor:
    ref = torch.tensor(syn.COLOURS[colour], dtype=torch.float32)
    return (frame.float() - ref).norm(dim=-1) < 40


def test_synthetic_attributes_recoverable_from_pixels():
    ds = _syn("test", n_items=60)
    frames = ds.stacked_frames()
    checked_motion = 0
    for i in range(len(ds)):
        attrs = ds.attributes_of(i)
        for g in attrs["groups"]:
            r = syn._RADIUS[g["size"]] * ds.size
            area = np.pi * r * r
            n_pix = int(_colour_mask(frames[i, 0], g["colour"]).sum())
            assert n_pix >= 0.3 * area * g["count"], (i, g, n_pix, area)
        if attrs["background"] in syn.PLAIN_BACKGROUNDS:
            bg = torch.tensor(syn.PLAIN_BACKGROUNDS[attrs["background"]], dtype=torch.float32)
            assert float(((frames[i, 0].float() - bg).norm(dim=-1) < 5).float().mean()) > 0.3
        if len(attrs["groups"]) == 1 and attrs["groups"][0]["motion"] in ("left", "right", "up", "down"):
            g = attrs["groups"][0]
            pts = [torch.nonzero(_colour_mask(frames[i, t], g["colour"])).float().mean(0) for t in (0, -1)]
            dy, dx = (pts[1] - pts[0]).tolist()
            want = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[g["motion"]]
            assert dx * want[1] + dy * want[0] > 0.2 * syn._TRAVEL * ds.size, (i, g, dx, dy)
            checked_motion += 1
    assert checked_motion >= 5


def test_synthetic_single_frame_omits_motion():
    ds = _syn(n_items=10, num_frames=1)
    assert ds[0].frames.shape[0] == 1
    for i in range(10):
        assert all(g["motion"] == "static" for g in ds.attributes_of(i)["groups"])
        for cap in ds.captions_of(i):
            assert not any(p in cap for phrases in syn._MOTION_PHRASES.values() for p in phrases), cap


def test_synthetic_argument_errors():
    with pytest.raises(ValueError, match="size"):
        _syn(size=16)
    with pytest.raises(ValueError, match="n_captions"):
        _syn(n_captions=0)
    with pytest.raises(ValueError, match="seed"):
        _syn(seed=-1)


def test_synthetic_cache_written_and_reused(tmp_path, monkeypatch):
    a = SyntheticClips("test", n_items=20, cache_dir=tmp_path)
    fa = a.stacked_frames()
    assert a.cache_path.is_file() and a.cache_path.with_suffix(".json").is_file()
    assert not a.loaded_from_cache
    meta = json.loads(a.cache_path.with_suffix(".json").read_text())
    assert meta["captions"] == [a.captions_of(i) for i in range(20)]

    # a different parameter is a different cache file
    assert SyntheticClips("test", n_items=20, cache_dir=tmp_path, size=48, cache=False).cache_path != a.cache_path

    def boom(*args, **kwargs):
        raise AssertionError("rendered instead of reading the cache")

    monkeypatch.setattr(syn, "render_clip", boom)
    monkeypatch.setattr(syn, "plan_item", boom)  # metadata comes from the JSON too
    b = SyntheticClips("test", n_items=20, cache_dir=tmp_path)
    fb = b.stacked_frames()
    assert b.loaded_from_cache and torch.equal(fa, fb)
    assert b.all_captions()[0] == a.all_captions()[0]


def test_synthetic_corrupt_cache_is_rerendered(tmp_path):
    a = SyntheticClips("test", n_items=5, cache_dir=tmp_path)
    fa = a.stacked_frames()
    a.cache_path.write_bytes(b"not a zip")
    b = SyntheticClips("test", n_items=5, cache_dir=tmp_path)
    assert torch.equal(b.stacked_frames(), fa) and not b.loaded_from_cache


def test_dataloader_collate():
    ds = _syn(n_items=5, num_frames=2, size=32)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_clips)
    batches = list(loader)
    assert [len(b) for b in batches] == [3, 2]
    assert batches[0].frames.shape == (3, 2, 32, 32, 3) and batches[0].frames.dtype == torch.uint8
    assert batches[1].ids == [ds[3].id, ds[4].id] and batches[0].captions[0] == ds[0].captions
    with pytest.raises(ValueError, match="different shapes"):
        collate_clips([ds[0], _syn(n_items=1, num_frames=2, size=40)[0]])


# ----------------------------------------------------------------------------- digits
def test_digits_split_shapes_and_captions():
    te, tr = DigitsCaptions("test"), DigitsCaptions("train", num_frames=2, size=32)
    assert len(te) + len(tr) == 1797 and len(te) == 449
    src_te = {te.attributes_of(i)["source_index"] for i in range(len(te))}
    src_tr = {tr.attributes_of(i)["source_index"] for i in range(len(tr))}
    assert not src_te & src_tr
    item = tr[0]
    assert item.frames.shape == (2, 32, 32, 3) and item.frames.dtype == torch.uint8
    assert torch.equal(item.frames[0], item.frames[1])
    for ds in (te, tr):
        for i in range(0, len(ds), 97):
            d = ds.attributes_of(i)["digit"]
            caps = ds.captions_of(i)
            assert all((f" {d} " in f" {c} ") or ((" " + ("zero one two three four five six seven eight nine".split()[d])) in c)
                       for c in caps), caps
    assert len(te.captions_of(0)) == 2 and len(tr.captions_of(0)) == 5
    # ink is bright on a dark background
    f = te.stacked_frames().float()
    assert f.shape == (449, 1, 64, 64, 3) and f.mean() < 80 and f.max() > 200
    assert torch.equal(DigitsCaptions("test").stacked_frames(), te.stacked_frames())
    few = create_dataset("digits", split="test", n_items=7, seed=0, num_frames=1, size=64)
    assert len(few) == 7 and torch.equal(few.stacked_frames(), te.stacked_frames(range(7)))
    assert DigitsCaptions("test", seed=1).indices.tolist() != te.indices.tolist()


# ----------------------------------------------------------------------------- MSR-VTT
def _write_video(path: Path, color: tuple[int, int, int], n: int = 6) -> None:
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("mpeg4", rate=10)
        st.width, st.height, st.pix_fmt = 32, 24, "yuv420p"
        for t in range(n):
            img = np.zeros((24, 32, 3), np.uint8) + np.array(color, np.uint8)
            img[:, t * 4 : t * 4 + 4] = 255
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


@pytest.fixture()
def msrvtt_root(tmp_path: Path) -> Path:
    root = tmp_path / "msrvtt"
    (root / "videos" / "all").mkdir(parents=True)
    _write_video(root / "videos" / "all" / "video0.mp4", (200, 0, 0))
    _write_video(root / "videos" / "all" / "video1.mp4", (0, 0, 200))
    data = {
        "videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video1", "split": "test"}],
        "sentences": [{"video_id": "video0", "caption": "a red scene", "sen_id": 0},
                      {"video_id": "video0", "caption": "something red", "sen_id": 1},
                      {"video_id": "video1", "caption": "a blue scene", "sen_id": 2}],
    }
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a blue clip\n")
    return root


def test_msrvtt_splits_and_captions(msrvtt_root):
    te = create_dataset("msrvtt", split="test", root=msrvtt_root, num_frames=3, size=16)
    assert len(te) == 1 and te.id_of(0) == "video1"
    assert te.captions_of(0) == ["a blue clip"]
    assert MSRVTT("test", root=msrvtt_root, caption_source="json").captions_of(0) == ["a blue scene"]
    tr = MSRVTT("train", root=msrvtt_root)
    assert tr.ids == ["video0"] and tr.all_captions()[0] == ["a red scene", "something red"]
    assert MSRVTT("train", root=msrvtt_root, n_items=1).ids == ["video0"]
    # without the 1k-A csv the JSON test split is used
    (msrvtt_root / "MSRVTT_JSFUSION_test.csv").unlink()
    assert MSRVTT("test", root=msrvtt_root).ids == ["video1"]


def test_msrvtt_reads_frames(msrvtt_root):
    te = MSRVTT("test", root=msrvtt_root, num_frames=3, size=16)
    f = te[0].frames
    assert f.dtype == torch.uint8 and f.shape[0] == 3 and f.shape[-1] == 3
    assert f.float()[..., 2].mean() > f.float()[..., 0].mean()  # the blue clip
    assert te.stacked_frames().shape[0] == 1


def test_msrvtt_missing_files(tmp_path, msrvtt_root):
    with pytest.raises(FileNotFoundError, match="nowhere.*MSRVTT_data.json"):
        MSRVTT("test", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no clip folder"):
        MSRVTT("test", root=tmp_path)
    (msrvtt_root / "videos" / "all" / "video0.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 1 MSR-VTT clips are missing.*video0"):
        MSRVTT("train", root=msrvtt_root)
    (msrvtt_root / "MSRVTT_data.json").unlink()
    with pytest.raises(FileNotFoundError, match="MSRVTT_data.json"):
        MSRVTT("train", root=msrvtt_root)
    (msrvtt_root / "MSRVTT_JSFUSION_test.csv").write_text("key,video_id\nret0,video1\n")
    with pytest.raises(ValueError, match="lacks column.*sentence"):
        MSRVTT("test", root=msrvtt_root)


def test_msrvtt_needs_root(monkeypatch):
    monkeypatch.delenv("GENSCOM_MSRVTT", raising=False)
    with pytest.raises(ValueError, match="root=.*GENSCOM_MSRVTT"):
        MSRVTT("test")


# ----------------------------------------------------------------------------- image-caption folders
def _image_folder(root: Path, n: int = 5) -> list[str]:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    names = []
    for k in range(n):
        name = f"img{k}.jpg" if k % 2 else f"img{k}.png"
        Image.fromarray(np.full((30 + k, 40, 3), 40 * k, np.uint8)).save(root / "images" / name)
        names.append(name)
    return names


def test_image_captions_csv_split_and_frames(tmp_path):
    names = _image_folder(tmp_path)
    rows = ["image,caption"] + [f"{n},picture number {k}, grey" for k, n in enumerate(names)]
    rows.append(f'{names[0]},"another, quoted caption"')
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    all_ = create_dataset("image-captions", split="all", root=tmp_path, size=16)
    assert len(all_) == 5 and all_.captions_of(0) == ["picture number 0, grey", "another, quoted caption"]
    item = all_[2]
    assert item.frames.shape == (1, 16, 16, 3) and item.frames.dtype == torch.uint8
    assert abs(float(item.frames.float().mean()) - 40 * 2) < 2
    te, tr = ImageCaptionFolder("test", root=tmp_path), ImageCaptionFolder("train", root=tmp_path)
    assert len(te) == 1 and len(tr) == 4 and not set(te.names) & set(tr.names)
    assert ImageCaptionFolder("all", root=tmp_path, n_items=2).names == all_.names[:2]
    native = ImageCaptionFolder("all", root=tmp_path, size=None)
    assert native[3].frames.shape == (1, 33, 40, 3)
    with pytest.raises(ValueError, match="different shapes"):
        native.stacked_frames()
    with pytest.raises(ValueError, match="no split information"):
        ImageCaptionFolder("val", root=tmp_path)


def test_image_captions_coco_karpathy_and_token(tmp_path):
    names = _image_folder(tmp_path, n=3)
    coco = {"images": [{"id": k, "file_name": n} for k, n in enumerate(names)],
            "annotations": [{"image_id": k, "caption": f"c{k}"} for k in range(3)] + [{"image_id": 1, "caption": "d1"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    ds = ImageCaptionFolder("all", root=tmp_path, captions_file="coco.json", size=8)
    assert ds.all_captions()[0] == ["c0", "c1", "d1", "c2"] and ds.all_captions()[1].tolist() == [0, 1, 1, 2]
    karpathy = {"images": [{"filename": n, "split": s, "sentences": [{"raw": f"k{k}"}]}
                           for k, (n, s) in enumerate(zip(names, ["train", "test", "restval"]))]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(karpathy))
    assert ImageCaptionFolder("test", root=tmp_path).names == [names[1]]  # auto-detected file
    assert ImageCaptionFolder("train", root=tmp_path).names == sorted([names[0], names[2]])
    (tmp_path / "f.token").write_text("".join(f"{n}#0\tt{k}\n{n}#1\tu{k}\n" for k, n in enumerate(names)))
    tok = ImageCaptionFolder("all", root=tmp_path, captions_file="f.token")
    assert tok.captions_of(0) == ["t0", "u0"]
    with pytest.raises(ValueError, match="no items"):
        ImageCaptionFolder("val", root=tmp_path)


def test_image_captions_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ImageCaptionFolder("all", root=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no captions file"):
        ImageCaptionFolder("all", root=tmp_path)
    names = _image_folder(tmp_path, n=2)
    (tmp_path / "captions.csv").write_text(f"image,caption\n{names[0]},a\nghost.png,b\n")
    with pytest.raises(FileNotFoundError, match="1 of 2 images are missing.*ghost.png"):
        ImageCaptionFolder("all", root=tmp_path)
    (tmp_path / "captions.csv").write_text(f"file,words\n{names[0]},a\n")
    with pytest.raises(ValueError, match="header"):
        ImageCaptionFolder("all", root=tmp_path)
    (tmp_path / "captions.csv").write_text("image,caption\n")
    with pytest.raises(ValueError, match="'image-captions'.*no items"):
        ImageCaptionFolder("all", root=tmp_path)
