"""Adapter training: loss goes down, exact resume, saved output, config errors (tiny dims, random data)."""

from __future__ import annotations

import json

import pytest
import torch

from genscom.adaptation.adapter import ChannelAdapter, build_adapter
from genscom.adaptation.train import (AdapterData, AdapterTrainModule, TrainAdapterConfig, batch_loss,
                                      sample_batch, train_adapter)
from genscom.channels.registry import create_channel

TINY_ADAPTER = dict(k=8, hidden=32, depth=1, group_size=2, cond_dim=8)




def _data(n: int = 96, d: int = 16, seed: int = 0) -> AdapterData:
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(n, d, generator=g)
    caps = [f"item {i} a" for i in range(n)] + [f"item {i} b" for i in range(n)]
    text = torch.cat([clips + 0.3 * torch.randn(n, d, generator=g), clips + 0.3 * torch.randn(n, d, generator=g)])
    return AdapterData.from_pairs(clips, caps, text, torch.cat([torch.arange(n), torch.arange(n)]), source="random")


def _config(tmp_path, **kw) -> TrainAdapterConfig:
    base = dict(name="tiny", n_items=96, val_items=16, batch_size=32, steps=6, warmup_steps=2, log_every=2,
                checkpoint_every=3, adapter=TINY_ADAPTER, output_dir=str(tmp_path / "out"),
                run_dir=str(tmp_path / "run"), eval_snrs_db=(0.0,), lr=3e-3)
    base.update(kw)
    return TrainAdapterConfig(**base)


def test_data_groups_identical_captions():
    clips = torch.randn(3, 4)
    data = AdapterData.from_pairs(clips, ["a", "b", "a", "c"], torch.randn(4, 4), torch.tensor([0, 1, 2, 2]))
    assert len(data.texts) == 3  # "a" once
    assert data.offsets.tolist() == [0, 1, 2, 4]
    assert data.caption_ids.tolist() == [0, 1, 0, 2]


def test_a_few_steps_reduce_the_loss(tmp_path):
    cfg = _config(tmp_path, batch_size=48, n_items=96, val_items=0)
    data = _data()
    acfg = cfg.adapter_config(dim=16)
    module = AdapterTrainModule(build_adapter(acfg, seed=0), [create_channel("awgn"), create_channel("rayleigh")])
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    fixed = sample_batch(data, 96, cfg, acfg, torch.Generator().manual_seed(123))

    def fixed_loss() -> float:
        with torch.no_grad():
            loss, _ = batch_loss(module, data, fixed, cfg, acfg, device=torch.device("cpu"),
                                 noise_gen=torch.Generator().manual_seed(7))
        return float(loss)

    before = fixed_loss()
    g, noise = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for _ in range(25):
        loss, _ = batch_loss(module, data, sample_batch(data, 96, cfg, acfg, g), cfg, acfg,
                             device=torch.device("cpu"), noise_gen=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.9 * before, (before, after)


def test_resume_reproduces_the_next_step_loss_exactly(tmp_path):
    data = _data()
    full = _config(tmp_path / "a")
    out = train_adapter(full, data=data, progress=False)
    ref = torch.load(full.run_path / "checkpoint.pt", weights_only=True)["losses"]
    assert len(ref) == 6

    part = _config(tmp_path / "b")
    train_adapter(part, data=data, progress=False, stop_after=3)  # interrupted after the step-3 checkpoint
    ck = torch.load(part.run_path / "checkpoint.pt", weights_only=True)
    assert int(ck["step"]) == 3
    assert not (part.out_path / "model.safetensors").exists()
    train_adapter(part, data=data, progress=False, resume=True)
    resumed = torch.load(part.run_path / "checkpoint.pt", weights_only=True)["losses"]
    assert resumed[3].item() == ref[3].item()  # the next step's loss, bit for bit
    assert torch.equal(resumed, ref)
    a = ChannelAdapter.from_pretrained(out)
    b = ChannelAdapter.from_pretrained(part.out_path)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


def test_output_folder_is_loadable_and_documented(tmp_path):
    cfg = _config(tmp_path, steps=2, checkpoint_every=0)
    out = train_adapter(cfg, data=_data(), progress=False, command="genscom train adapter --steps 2")
    ad = ChannelAdapter.from_pretrained(out)
    assert ad.config.k == 8 and ad.config.dim == 16
    meta = json.loads((out / "config.json").read_text())
    assert meta["train"]["steps"] == 2 and meta["profile"] == "mini"
    log = json.loads((out / "train_log.json").read_text())
    assert "awgn_+0dB_R@1" in log["val_metrics"] and log["steps_done"] == 2
    assert "genscom train adapter --steps 2" in (out / "README.md").read_text()


def test_resume_checks(tmp_path):
    data = _data()
    with pytest.raises(FileNotFoundError, match="without --resume"):
        train_adapter(_config(tmp_path), data=data, progress=False, resume=True)
    train_adapter(_config(tmp_path, steps=3), data=data, progress=False, stop_after=3)
    with pytest.raises(ValueError, match="lr"):
        train_adapter(_config(tmp_path, lr=1e-2), data=data, progress=False, resume=True)


@pytest.mark.parametrize("kw, match", [
    ({"adapter": {**TINY_ADAPTER, "k": 0}}, "k must be a positive integer"),
    ({"adapter": {"bogus": 1}}, "known fields"),
    ({"batch_size": 1}, "batch_size"),
    ({"snr_min_db": float("nan")}, "snr_min_db"),
    ({"snr_min_db": 10.0, "snr_max_db": 0.0}, "snr_min_db"),
    ({"channels": ("awgn", "mars")}, "channels"),
    ({"p_full": 0.8, "p_prefix": 0.5}, "p_full"),
    ({"name": "a/b"}, "name"),
    ({"val_items": 90}, "batch_size"),
])
def test_bad_train_config_raises(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _config(tmp_path, **kw)


def test_load_train_config_merges_file_and_flags(tmp_path):
    from genscom.adaptation.train import load_train_config

    f = tmp_path / "adapter.yaml"
    f.write_text("name: demo\nsteps: 10\nadapter:\n  hidden: 64\n")
    cfg = load_train_config(f, steps=20, k=96, group_size=None)
    assert cfg.name == "demo" and cfg.steps == 20 and cfg.adapter == {"hidden": 64, "k": 96}
    with pytest.raises(ValueError, match="unknown option"):
        load_train_config(f, bogus=1)
    with pytest.raises(ValueError, match="unknown field"):
        load_train_config({"nope": 1})
