"""Adapter training: loss goes down, exact resume, saved output, config errors (tiny dims, random data)."""

from __future__ import annotations

import json

import pytest
import torch

from genscom.adaptation.adapter import ChannelAdapter, build_adapter
from genscom.adaptation.train import (AdapterData, AdapterTrainModule, TrainAdapterConfig, batch_loss,
                                      fed_back_snr_db, sample_batch, sounding_dof, train_adapter)
from genscom.channels.registry import create_channel
from genscom.training import contrastive_loss

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


@pytest.mark.parametrize("csi", ["pilot", "perfect"])
def test_a_few_steps_reduce_the_loss(tmp_path, csi):
    cfg = _config(tmp_path, batch_size=48, n_items=96, val_items=0, csi=csi)
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


@pytest.mark.parametrize("csi", ["pilot", "perfect"])
def test_resume_reproduces_the_next_step_loss_exactly(tmp_path, csi):
    data = _data()
    full = _config(tmp_path / "a", csi=csi)
    out = train_adapter(full, data=data, progress=False)
    ref = torch.load(full.run_path / "checkpoint.pt", weights_only=True)["losses"]
    assert len(ref) == 6

    part = _config(tmp_path / "b", csi=csi)
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
    readme = (out / "README.md").read_text()
    assert "genscom train adapter --steps 2" in readme
    assert meta["train"]["csi"] == "pilot" and "pilot CSI" in readme and "2 pilots per coherence block" in readme


def _one_batch(csi: str, **kw):
    cfg = TrainAdapterConfig(**{**dict(name="t", n_items=96, val_items=0, batch_size=48, adapter=TINY_ADAPTER, csi=csi,
                                       p_full=0.4, p_prefix=0.3), **kw})
    acfg = cfg.adapter_config(dim=16)
    module = AdapterTrainModule(build_adapter(acfg, seed=0), [create_channel(c, **({"coherence": cfg.coherence}
                                                                                 if c != "awgn" else {}))
                                                              for c in cfg.channels])
    return cfg, acfg, module, sample_batch(_data(), 96, cfg, acfg, torch.Generator().manual_seed(3))


def test_perfect_csi_loss_is_the_true_channel_computation():
    """csi="perfect" (the mini-k192 recipe) is the original computation: the encoder and decoder see the
    true SNR, the receiver equalises with the true h; recomputed here step by step, bit for bit."""
    from genscom.adaptation import extraction as X
    from genscom.channels.fading import equalize

    data = _data()
    cfg, acfg, module, batch = _one_batch("perfect")
    assert set(batch) == {"idx", "cid", "snr", "lengths", "n_keep", "extract"}  # no feedback drawn
    loss, _ = batch_loss(module, data, batch, cfg, acfg, device=torch.device("cpu"),
                         noise_gen=torch.Generator().manual_seed(9))

    ad, noise = module.adapter, torch.Generator().manual_seed(9)
    clean, snr = data.clips[batch["idx"]], batch["snr"]
    z, imp = ad.encode(clean, snr)
    keep = torch.where(batch["extract"].unsqueeze(-1),
                       X.expand_groups(X.topk_keep(imp.detach(), batch["n_keep"]), acfg.group_size),
                       X.prefix_keep(batch["lengths"], acfg.k))
    w = X.expand_groups(imp, acfg.group_size)
    x = ad.normalize(z, keep, gate=torch.where(batch["extract"].unsqueeze(-1), keep.float() + w - w.detach(),
                                               keep.float()))
    outs = []
    for ch, rows in zip(module.channels, torch.tensor_split(torch.arange(len(clean)), len(module.channels))):
        x_c, _, _ = X.compact(x[rows], keep[rows])
        out = ch(x_c, snr[rows], generator=noise)
        x_hat, _ = equalize(out.y, out.h, out.noise_var, "mmse")
        gain = None if out.h is None else X.uncompact(out.h.abs(), keep[rows], acfg.k)
        outs.append(ad.decode(X.uncompact(x_hat, keep[rows], acfg.k), snr_db=snr[rows], keep=keep[rows], gain=gain))
    rec = torch.cat(outs)
    ref = (contrastive_loss(rec, data.texts[batch["cid"]], scale=1.0 / cfg.temperature, ids=batch["cid"])
           + cfg.cos_weight * (1.0 - (rec * clean).sum(dim=-1)).mean())
    assert loss.item() == ref.item()


def test_pilot_csi_batch_feeds_back_a_quantised_estimate_drawn_last():
    cfg, acfg, _, pilot = _one_batch("pilot")
    _, _, _, perfect = _one_batch("perfect")
    for key, v in perfect.items():  # the feedback is drawn after everything else: same items, SNRs, rates
        assert torch.equal(pilot[key], v), key
    fb, snr = pilot["snr_fb"], pilot["snr"]
    assert torch.equal(fb * 2, torch.round(fb * 2))  # on the 0.5 dB grid
    assert bool((fb >= -10.0).all()) and bool((fb <= -10.0 + 0.5 * 63).all())
    assert 0.0 < float((fb - snr).abs().mean()) < 1.5  # an estimate: close to, but not, the true SNR


def test_gradients_reach_the_encoder_through_the_pilot_path():
    data = _data()
    cfg, acfg, module, batch = _one_batch("pilot", channels=("rayleigh",))
    loss, _ = batch_loss(module, data, batch, cfg, acfg, device=torch.device("cpu"),
                         noise_gen=torch.Generator().manual_seed(1))
    loss.backward()
    grads = dict(module.adapter.named_parameters())
    # (the sensing MLPs get gradients once the zero-initialised FiLM layers have moved: not at step 0)
    for name in ("tx_in.weight", "tx_blocks.0.film.weight", "tx_out.weight", "importance_head.weight", "rx_in.weight"):
        g = grads[name].grad
        assert g is not None and bool(g.abs().sum() > 0), name


@pytest.mark.parametrize("channel", ["awgn", "rayleigh"])
def test_fed_back_snr_model_matches_link_feedback_sounding(channel):
    """The per-item model has the law of link_feedback's estimate: a 64-pilot sounding, quantised to 6 bits."""
    from genscom.channels.sensing import quantize_feedback_snr, sense

    n, ch = 4000, create_channel(channel, **({"coherence": 16} if channel != "awgn" else {}))
    for snr in (-8.0, 6.2):
        est = sense(ch, snr, batch=n, n_pilots=64, generator=torch.Generator().manual_seed(0)).snr_db
        ref = torch.tensor([quantize_feedback_snr(float(e), 6) for e in est])
        dof = torch.full((n,), sounding_dof(channel, n_pilots=64, coherence=16))
        got = fed_back_snr_db(torch.full((n,), snr), dof, bits=6, generator=torch.Generator().manual_seed(1))
        # mean and spread agree within ~4 standard errors (std ~0.57 dB, n = 4000)
        assert float(got.mean()) == pytest.approx(float(ref.mean()), abs=0.05)
        assert float(got.std()) == pytest.approx(float(ref.std()), abs=0.04)
    assert sounding_dof("awgn", n_pilots=64, coherence=16) == 63 and sounding_dof("rayleigh", n_pilots=64,
                                                                                   coherence=16) == 60


def test_resume_checks(tmp_path):
    data = _data()
    with pytest.raises(FileNotFoundError, match="without --resume"):
        train_adapter(_config(tmp_path), data=data, progress=False, resume=True)
    train_adapter(_config(tmp_path, steps=3), data=data, progress=False, stop_after=3)
    with pytest.raises(ValueError, match="lr"):
        train_adapter(_config(tmp_path, lr=1e-2), data=data, progress=False, resume=True)


def test_resume_of_a_checkpoint_written_before_fields_existed(tmp_path):
    """A checkpoint whose config lacks a field resumes only with what the old run did: the default for the
    tuple-valued ``channels``, but ``csi="perfect"`` (runs before the field used the true SNR and h), not
    today's default ``"pilot"``."""
    data = _data()
    train_adapter(_config(tmp_path, steps=6, csi="perfect"), data=data, progress=False, stop_after=3)
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    for name in ("channels", "csi", "pilots_per_block", "feedback_bits", "feedback_pilots"):
        del ckpt["config"][name]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="channels"):
        train_adapter(_config(tmp_path, steps=6, csi="perfect", channels=("awgn",)), data=data, progress=False,
                      resume=True)
    with pytest.raises(ValueError, match="csi: checkpoint 'perfect', now 'pilot'"):
        train_adapter(_config(tmp_path, steps=6), data=data, progress=False, resume=True)
    train_adapter(_config(tmp_path, steps=6, csi="perfect"), data=data, progress=False, resume=True)
    assert len(torch.load(path, weights_only=True)["losses"]) == 6


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
    ({"csi": "ideal"}, "csi"),
    ({"pilots_per_block": 1}, "pilots_per_block"),
    ({"pilots_per_block": 16}, "coherence"),
    ({"feedback_bits": 0}, "feedback_bits"),
    ({"feedback_pilots": 1}, "feedback_pilots"),
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
