"""The attribute classifier of `genscom bench regen`: labels from the dataset, training, files, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genscom.data.synthetic import COLOURS, SHAPES, SyntheticClips, _shape_sdf
from genscom.generation.attributes import (AREA_FACTOR, COLOUR_NAMES, MAX_COUNT, AttributeClassifier,
                                           AttributeClassifierConfig, attribute_accuracy, dataset_frames,
                                           largest_object_labels, resize_frames, train_attribute_classifier)


def clips(split: str, n: int, *, size: int = 32, num_frames: int = 1) -> SyntheticClips:
    return SyntheticClips(split, n_items=n, num_frames=num_frames, size=size, cache=False)


def tiny(**kw) -> AttributeClassifier:
    cfg = dict(image_size=32, channels=(8, 16), hidden=16)
    cfg.update(kw)
    torch.manual_seed(0)
    return AttributeClassifier(AttributeClassifierConfig(**cfg))


def test_area_factors_match_the_renderer() -> None:
    n = 800  # pixels per side of a [-2, 2]^2 window at radius 1
    g = (np.arange(n) + 0.5) / n * 4 - 2
    px, py = np.meshgrid(g, g)
    for shape in SHAPES:
        area = float((_shape_sdf(shape, px, py, 1.0) <= 0).mean() * 16)
        assert area == pytest.approx(AREA_FACTOR[shape], rel=0.01), shape


def test_labels_agree_with_captions_groups_and_pixels() -> None:
    ds = clips("test", 60, size=64, num_frames=3)
    labels = largest_object_labels(ds)
    assert set(labels) == {"shape", "colour", "count"}
    assert all(v.dtype == torch.long and v.shape == (60,) for v in labels.values())
    assert torch.equal(largest_object_labels(ds, 0)["colour"], labels["colour"])  # the same in every frame
    mid = ds.stacked_frames()[:, 1].numpy().astype(np.float32)  # [N, H, W, 3]
    checked_pixels = 0
    for i in range(len(ds)):
        shape, colour = SHAPES[int(labels["shape"][i])], COLOUR_NAMES[int(labels["colour"][i])]
        groups = ds.attributes_of(i)["groups"]
        # independent of the object layout: the captions and the groups
        assert all(f"{colour} {shape}" in cap for cap in ds.captions_of(i)), (i, ds.captions_of(i))
        assert int(labels["count"][i]) + 1 == sum(g["count"] for g in groups)
        if any(g["size"] == "large" for g in groups):
            assert any(g["size"] == "large" and g["colour"] == colour and g["shape"] == shape for g in groups)
        # and the pixels: with one object per colour and clearly different areas, the label's colour covers most
        if len(groups) == 2 and all(g["count"] == 1 for g in groups):
            areas = sorted(AREA_FACTOR[g["shape"]] * (0.19 if g["size"] == "large" else 0.12) ** 2 for g in groups)
            if areas[1] > 1.15 * areas[0]:
                cover = {g["colour"]: int((np.abs(mid[i] - np.asarray(COLOURS[g["colour"]])).max(-1) < 40).sum())
                         for g in groups}
                assert max(cover, key=cover.get) == colour, (i, cover, colour)
                checked_pixels += 1
    assert checked_pixels >= 2  # the pixel check ran on some two-object clips


def test_training_beats_chance_on_held_out_frames() -> None:
    tr, te = clips("train", 1000), clips("test", 300)
    cfg = AttributeClassifierConfig(image_size=32, channels=(16, 32, 32), hidden=64, epochs=10, batch_size=16,
                                    lr=2e-3)
    clf = train_attribute_classifier(dataset_frames(tr), largest_object_labels(tr), cfg,
                                     generator=torch.Generator().manual_seed(0))
    acc = attribute_accuracy(clf, dataset_frames(te), largest_object_labels(te))
    assert set(acc) == {"shape_acc", "colour_acc", "attr_acc", "count_acc"}
    assert acc["shape_acc"] > 2 / len(SHAPES), acc
    assert acc["colour_acc"] > 2 / len(COLOURS), acc
    assert acc["count_acc"] > 1 / MAX_COUNT, acc
    assert acc["attr_acc"] <= min(acc["shape_acc"], acc["colour_acc"])


def test_training_is_seeded() -> None:
    ds = clips("train", 48)
    x, y = dataset_frames(ds), largest_object_labels(ds)
    cfg = AttributeClassifierConfig(image_size=32, channels=(8, 16), hidden=16, epochs=1, batch_size=16)
    a = train_attribute_classifier(x, y, cfg, generator=torch.Generator().manual_seed(3))
    b = train_attribute_classifier(x, y, cfg, generator=torch.Generator().manual_seed(3))
    c = train_attribute_classifier(x, y, cfg, generator=torch.Generator().manual_seed(4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_save_load_round_trip_gives_identical_predictions(tmp_path) -> None:
    clf = tiny()
    clf.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        clf(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    clf.eval()
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    clf.save_pretrained(tmp_path / "clf")
    meta = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert meta["attribute_classifier"]["image_size"] == 32 and meta["shapes"] == list(SHAPES)
    back = AttributeClassifier.from_pretrained(tmp_path / "clf")
    assert not back.training
    with torch.no_grad():
        la, lb = clf(x), back(x)
    assert all(torch.equal(la[k], lb[k]) for k in la)
    pa, pb = clf.predict(x), back.predict(x)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_bad_inputs_name_the_fix() -> None:
    clf = tiny()
    with pytest.raises(ValueError, match=r"resize_frames\(images, 32\)"):
        clf.predict(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="permute"):
        clf.predict(torch.rand(2, 32, 32, 3))
    with pytest.raises(ValueError, match="divide uint8 frames by 255"):
        clf.predict(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty batch"):
        clf.predict(torch.rand(0, 3, 32, 32))
    x = torch.rand(4, 3, 32, 32)
    good = {k: torch.zeros(4, dtype=torch.long) for k in ("shape", "colour", "count")}
    with pytest.raises(ValueError, match="largest_object_labels"):
        attribute_accuracy(clf, x, {"shape": good["shape"]})
    with pytest.raises(ValueError, match=r"labels\['colour'\] must be int64 \[4\]"):
        attribute_accuracy(clf, x, {**good, "colour": torch.zeros(3, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"labels\['count'\] must lie in 0..2"):
        attribute_accuracy(clf, x, {**good, "count": torch.full((4,), 3)})
    ds = clips("test", 4, num_frames=2)
    with pytest.raises(ValueError, match="frame_index must be an int in 0..1"):
        largest_object_labels(ds, 2)
    with pytest.raises(ValueError, match="frame_index must be an int in 0..1"):
        dataset_frames(ds, 5)
    with pytest.raises(ValueError, match="AttributeClassifierConfig.epochs"):
        AttributeClassifierConfig(epochs=0)
    with pytest.raises(ValueError, match="too small"):
        AttributeClassifierConfig(image_size=8, channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"unknown AttributeClassifierConfig field\(s\) \[.width.\]"):
        AttributeClassifierConfig.from_dict({"width": 3})

    class NoLayout:
        name = "other"

        def __len__(self) -> int:
            return 1

        def attributes_of(self, i: int) -> dict:
            return {"groups": []}

    with pytest.raises(ValueError, match="'synthetic' dataset"):
        largest_object_labels(NoLayout())


def test_resize_frames_and_dataset_frames() -> None:
    ds = clips("test", 3, num_frames=2)
    x = dataset_frames(ds)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and float(x.max()) <= 1.0
    assert torch.equal(x, ds.stacked_frames()[:, 1].permute(0, 3, 1, 2).float() / 255)
    y = resize_frames(x, 64)
    assert y.shape == (3, 3, 64, 64) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(resize_frames(x, 32), x)
    pred = tiny().predict(x)
    assert all(v.shape == (3,) and v.dtype == torch.long for v in pred.values())
