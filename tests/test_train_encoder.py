"""Locked-text training of the mini tower: loss goes down, exact resume, caches, configs, losses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import genscom.encoders.train as train_mod
from genscom.data.synthetic import SyntheticClips
from genscom.encoders.mini import MiniVideoTower
from genscom.encoders.train import TrainEncoderConfig, embed_captions, train_encoder



TINY_TOWER = {"stem_channels": 4, "channels": [8], "grid_channels": 4, "width": 16, "temporal_heads": 2}


@pytest.fixture(scope="module")
def tiny_data() -> SyntheticClips:
    ds = SyntheticClips("train", n_items=16, num_frames=3, size=32, n_captions=1, cache=False)
    ds._frames = torch.from_numpy(ds.render_all())  # render once for the module, nothing written to disk
    return ds


def tiny_config(tmp_path: Path, **kw) -> TrainEncoderConfig:
    base = dict(text_tower="tiny", n_items=16, num_frames=3, size=32, steps=6, batch_size=8, lr=5e-3,
                warmup_steps=2, tower=TINY_TOWER, eval_n_items=0, checkpoint_every=3, log_every=1,
                output_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), augment="shift")
    base.update(kw)
    return TrainEncoderConfig(**base)


def read_log(out: Path) -> dict:
    return json.loads((out / "train_log.json").read_text())


def test_a_few_steps_lower_the_loss(tmp_path: Path, tiny_data: SyntheticClips) -> None:
    cfg = tiny_config(tmp_path, steps=40, lr=1e-2, warmup_steps=2, checkpoint_every=0, augment="none")
    out = train_encoder(cfg, progress=False, dataset=tiny_data)
    losses = read_log(out)["losses_every_log_step"]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.75 * math.log(8)  # well below chance (batch of 8)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert "Command" in (out / "README.md").read_text()
    tower = MiniVideoTower.from_pretrained(out)
    assert tower.config.embed_dim == 16 and tower.config.image_size == 32


class _Crash(RuntimeError):
    pass


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, tiny_data: SyntheticClips,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    full = train_encoder(tiny_config(tmp_path / "a"), progress=False, dataset=tiny_data)
    ref = read_log(full)["losses_every_log_step"]

    # crash during step 5 (after the checkpoint written at step 3), then resume
    calls = {"n": 0}
    real_loss = train_mod.contrastive_loss

    def crashing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise _Crash("simulated crash")
        return real_loss(*args, **kwargs)

    cfg = tiny_config(tmp_path / "b")
    monkeypatch.setattr(train_mod, "contrastive_loss", crashing_loss)
    with pytest.raises(_Crash):
        train_encoder(cfg, progress=False, dataset=tiny_data)
    monkeypatch.setattr(train_mod, "contrastive_loss", real_loss)
    ckpt = torch.load(Path(cfg.output_dir) / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 and isinstance(ckpt["rng_state"], torch.Tensor)

    out = train_encoder(cfg, resume=True, progress=False, dataset=tiny_data)
    got = read_log(out)["losses_every_log_step"]
    assert got == ref  # every step, including the first one after resuming, identical
    a, b = MiniVideoTower.from_pretrained(full), MiniVideoTower.from_pretrained(out)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_resume_errors(tmp_path: Path, tiny_data: SyntheticClips) -> None:
    cfg = tiny_config(tmp_path, steps=3)
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        train_encoder(cfg, resume=True, progress=False, dataset=tiny_data)
    train_encoder(cfg, progress=False, dataset=tiny_data)
    changed = tiny_config(tmp_path, steps=3, lr=1e-3)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0\.005, now 0\.001"):
        train_encoder(changed, resume=True, progress=False, dataset=tiny_data)


def test_caption_embeddings_are_cached(tmp_path: Path) -> None:
    tower = train_mod.build_text_tower("tiny")
    caps = ["a red circle", "two blue squares moving left", "a star"]
    first = embed_captions(tower, caps, cache_dir=tmp_path, tower_name="tiny", batch_size=2)
    assert len(list(tmp_path.glob("text-tiny-*.pt"))) == 1
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(3))

    def boom(texts):
        raise AssertionError("the cache should have been used")

    tower.forward = boom  # type: ignore[method-assign]
    again = embed_captions(tower, caps, cache_dir=tmp_path, tower_name="tiny")
    assert torch.equal(first, again)
    # sorted-by-length batching keeps the caption order
    direct = torch.nn.functional.normalize(train_mod.build_text_tower("tiny")(caps), dim=-1)
    torch.testing.assert_close(first, direct, atol=1e-5, rtol=0)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainEncoderConfig(n_items=8, batch_size=16)
    with pytest.raises(ValueError, match="unknown tower field"):
        TrainEncoderConfig(tower={"depth": 4})
    with pytest.raises(ValueError, match="augment"):
        TrainEncoderConfig(augment="flip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text_tower"):
        TrainEncoderConfig(text_tower="bert")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embed_dim"):
        TrainEncoderConfig(tower={"embed_dim": 32}).tower_config(text_dim=384)


def test_attribute_labels_cover_groups_and_background(tiny_data: SyntheticClips) -> None:
    from genscom.encoders.train import attribute_labels

    vocab, labels = attribute_labels(tiny_data, 16)
    assert labels.shape == (16, len(vocab)) and "g0.shape" in vocab and "background" in vocab
    j = list(vocab).index("g0.shape")
    for i in range(16):
        assert vocab["g0.shape"][int(labels[i, j])] == tiny_data.attributes_of(i)["groups"][0]["shape"]
    two = [len(tiny_data.attributes_of(i)["groups"]) == 2 for i in range(16)]
    if "g1.shape" in vocab:  # items with one group have no second-group label
        k = list(vocab).index("g1.shape")
        assert all((labels[i, k] >= 0) == two[i] for i in range(16))


def test_attribute_loss_and_init_from(tmp_path: Path, tiny_data: SyntheticClips) -> None:
    from genscom.encoders.train import AttributeHeads, attribute_labels

    vocab, labels = attribute_labels(tiny_data, 16)
    heads = AttributeHeads(16, vocab)
    pooled = torch.randn(16, 16, requires_grad=True)
    loss = heads.loss(pooled, labels)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert pooled.grad is not None and pooled.grad.abs().sum() > 0
    # a run with the auxiliary loss, then a fine-tuning run that starts from its weights
    first = train_encoder(tiny_config(tmp_path, attribute_weight=1.0, checkpoint_every=0), progress=False,
                          dataset=tiny_data)
    assert read_log(first)["config"]["attribute_weight"] == 1.0
    cfg = tiny_config(tmp_path, steps=1, lr=1e-12, warmup_steps=0, init_from=str(first),
                      output_dir=str(tmp_path / "ft"), checkpoint_every=0)
    second = train_encoder(cfg, progress=False, dataset=tiny_data)
    assert "1 x the attribute cross-entropy" in (first / "README.md").read_text()  # the README says what it did
    assert f"starting from `{first}`" in (second / "README.md").read_text()
    a, b = MiniVideoTower.from_pretrained(first), MiniVideoTower.from_pretrained(second)
    for x, y in zip(a.parameters(), b.parameters()):  # (BatchNorm running stats move in any train-mode step)
        torch.testing.assert_close(x, y, atol=1e-3, rtol=0)  # one step at lr ~0: the same weights
    with pytest.raises(ValueError, match="attribute_weight"):
        tiny_config(tmp_path, attribute_weight=-1.0)


def test_attribute_loss_needs_labelled_data(tmp_path: Path, tiny_data: SyntheticClips) -> None:
    from genscom.encoders.train import attribute_labels

    class NoAttributes:
        name = "plain"

        def attributes_of(self, i: int) -> dict:
            return {}

    with pytest.raises(ValueError, match="synthetic dataset or set attribute_weight=0"):
        attribute_labels(NoAttributes(), 4)
