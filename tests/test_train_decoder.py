"""`genscom train decoder` on tiny data: resume is bit-exact, outputs never overwrite weights, samples are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers", reason="the diffusion decoder needs diffusers (pip install 'genscom[gen]')")

from genscom.errors import OutputExistsError  # noqa: E402
from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig  # noqa: E402
from genscom.generation.train import DecoderData, TrainDecoderConfig, train_decoder, warm_start  # noqa: E402

TINY = {"block_out_channels": [8, 16], "cross_attention_dim": 8, "attention_head_dim": 4, "cond_tokens": 2,
        "norm_num_groups": 4, "num_train_timesteps": 50, "sample_steps": 2}


def data() -> DecoderData:
    g = torch.Generator().manual_seed(0)
    return DecoderData(images=torch.randint(0, 256, (8, 3, 16, 16), generator=g, dtype=torch.uint8),
                       cond=torch.randn(8, 8, generator=g))


def cfg(out, **kw) -> TrainDecoderConfig:
    base = dict(name="t", steps=4, batch_size=4, lr=1e-3, warmup_steps=0, checkpoint_every=2, sample_every=4,
                n_samples=2, log_every=1, decoder=TINY, output_dir=str(out))
    base.update(kw)
    return TrainDecoderConfig(**base)


def test_resume_reproduces_the_uninterrupted_run(tmp_path) -> None:
    full = train_decoder(cfg(tmp_path / "full"), data=data(), progress=False)
    part = tmp_path / "part"
    train_decoder(cfg(part), data=data(), progress=False, stop_after=2)
    assert not (part / "model.safetensors").exists() and (part / "checkpoint.pt").is_file()
    train_decoder(cfg(part), data=data(), progress=False, resume=True)
    a, b = DiffusionDecoder.from_pretrained(full), DiffusionDecoder.from_pretrained(part)
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(ta, tb), na
    assert (full / "samples-000004.png").read_bytes()[:4] == b"\x89PNG"
    assert (full / "train_log.json").is_file() and (full / "README.md").is_file()
    # training moved the weights away from the seeded initialisation
    torch.manual_seed(0)
    init = DiffusionDecoder(a.config)
    assert any(not torch.equal(p, q) for p, q in zip(init.state_dict().values(), a.state_dict().values()))


def test_outputs_never_overwrite_weights_and_resume_needs_the_same_config(tmp_path) -> None:
    out = train_decoder(cfg(tmp_path / "r", steps=1, sample_every=0), data=data(), progress=False)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train_decoder(cfg(out, steps=1, sample_every=0), data=data(), progress=False)
    assert (out / "model.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="lr"):
        train_decoder(cfg(out, steps=2, sample_every=0, lr=5e-4), data=data(), progress=False, resume=True)


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="snr_min_db"):
        TrainDecoderConfig(snr_min_db=5, snr_max_db=0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainDecoderConfig(batch_size=0)
    with pytest.raises(ValueError, match="cond must be"):
        DecoderData(images=torch.zeros(2, 3, 4, 4, dtype=torch.uint8), cond=torch.zeros(3, 8))


def test_a_reader_trains_on_the_data_labels_and_refuses_missing_or_out_of_range_ones(tmp_path) -> None:
    reader = {**TINY, "reader_classes": {"shape": 3}, "reader_hidden": 8}
    d = data()
    with pytest.raises(ValueError, match="shape"):
        train_decoder(cfg(tmp_path / "a", decoder=reader, steps=1, sample_every=0), data=d, progress=False)
    d.labels = {"shape": torch.tensor([0, 1, 2, 3, 0, 1, 2, 0])}
    with pytest.raises(ValueError, match="at least 4"):
        train_decoder(cfg(tmp_path / "b", decoder=reader, steps=1, sample_every=0), data=d, progress=False)
    d.labels = {"shape": torch.tensor([0, 1, 2, 2, 0, 1, 2, 0])}
    out = train_decoder(cfg(tmp_path / "c", decoder=reader, steps=2, sample_every=0), data=d, progress=False)
    dec = DiffusionDecoder.from_pretrained(out)
    assert dec.config.reader_classes == {"shape": 3}
    assert dec.read(torch.randn(2, 8))["shape"].shape == (2, 3)
    with pytest.raises(ValueError, match="int64"):
        DecoderData(images=d.images, cond=d.cond, labels={"shape": torch.zeros(8)})


def test_warm_start_widens_the_condition_layers_and_keeps_what_the_source_computes(tmp_path) -> None:
    src_dir = train_decoder(cfg(tmp_path / "src", steps=2, sample_every=0), data=data(), progress=False)
    src = DiffusionDecoder.from_pretrained(src_dir)
    d = data()
    d.labels = {"shape": torch.tensor([0, 1, 2, 2, 0, 1, 2, 0])}
    reader = {**TINY, "reader_classes": {"shape": 3}, "reader_hidden": 8}
    dec = DiffusionDecoder(DiffusionDecoderConfig.from_dict({**src.config.to_dict(), **reader}))
    assert sorted(warm_start(dec, src)) == ["cond_proj.0.weight", "null_global",
                                            "unet.class_embedding.linear_1.weight"]
    c = torch.randn(3, 8)
    a = src.generate(c, generator=torch.Generator().manual_seed(0))
    b = dec.generate(c, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # the new reader inputs start with zero weight
    other = DiffusionDecoder(DiffusionDecoderConfig.from_dict({**src.config.to_dict(), "block_out_channels": [4, 8]}))
    with pytest.raises(ValueError, match="architecture differs"):
        warm_start(other, src)
    # through the trainer: init_from is checked before any data is prepared
    with pytest.raises(FileNotFoundError, match="neither a folder nor a name"):
        train_decoder(cfg(tmp_path / "x", init_from=str(tmp_path / "missing")), data=d, progress=False)
    out = train_decoder(cfg(tmp_path / "w", decoder=reader, init_from=str(src_dir), steps=1, sample_every=0),
                        data=d, progress=False)
    assert DiffusionDecoder.from_pretrained(out).config.reader_classes == {"shape": 3}


def test_a_latent_decoder_trains_its_autoencoder_first_and_resumes_bit_exactly(tmp_path) -> None:
    latent = {**TINY, "latent": {"block_out_channels": [8, 16], "norm_num_groups": 4}}
    kw = dict(decoder=latent, vae_steps=6, vae_batch_size=4, sample_every=0)
    full = train_decoder(cfg(tmp_path / "full", **kw), data=data(), progress=False)
    part = tmp_path / "part"
    train_decoder(cfg(part, **kw), data=data(), progress=False, stop_after=2)
    train_decoder(cfg(part, **kw), data=data(), progress=False, resume=True)
    a, b = DiffusionDecoder.from_pretrained(full), DiffusionDecoder.from_pretrained(part)
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(ta, tb), na
    scale = a.config.latent["scaling_factor"]
    assert scale == b.config.latent["scaling_factor"] == a.vae.config.scaling_factor
    # the scale makes the training latents unit-variance: recompute it from the saved autoencoder
    a.config.latent["scaling_factor"] = 1.0
    z = a.to_latents(data().images.float() / 255)
    assert scale == pytest.approx(1.0 / float(z.std()), rel=1e-4)
    torch.manual_seed(0)  # the autoencoder was trained: its weights left the seeded initialisation
    init = DiffusionDecoder(DiffusionDecoderConfig.from_dict({**a.config.to_dict(), "latent": latent["latent"]}))
    assert not torch.equal(init.vae.encoder.conv_in.weight, a.vae.encoder.conv_in.weight)
    with pytest.raises(ValueError, match="vae_steps"):
        TrainDecoderConfig(vae_steps=0)


def reader_source(tmp_path, teacher_forcing: float) -> tuple[dict, DecoderData, Path]:
    """``(decoder settings, data with shape labels, folder)`` of a tiny decoder with a 3-class reader, 1 step."""
    reader = {**TINY, "reader_classes": {"shape": 3}, "reader_hidden": 8, "reader_teacher_forcing": teacher_forcing}
    d = data()
    d.labels = {"shape": torch.tensor([0, 1, 2, 2, 0, 1, 2, 0])}
    return reader, d, train_decoder(cfg(tmp_path / "src", decoder=reader, steps=1, sample_every=0), data=d,
                                    progress=False)


def test_phase_reader_retrains_only_the_reader_and_needs_a_teacher_forced_source(tmp_path) -> None:
    reader, d, src_dir = reader_source(tmp_path, 1.0)
    with pytest.raises(ValueError, match="init_from"):
        cfg(tmp_path / "x", decoder=reader, phase="reader")
    with pytest.raises(ValueError, match="phase must be one of"):
        cfg(tmp_path / "x", phase="vae")
    soft = train_decoder(cfg(tmp_path / "soft", decoder={**reader, "reader_teacher_forcing": 0.5}, steps=1,
                             sample_every=0), data=d, progress=False)
    with pytest.raises(ValueError, match="teacher forcing"):  # its UNet learned on the old reader's outputs
        train_decoder(cfg(tmp_path / "x1", decoder={}, phase="reader", init_from=str(soft)), data=d, progress=False)
    with pytest.raises(ValueError, match="drop them"):
        train_decoder(cfg(tmp_path / "x2", decoder={**reader, "reader_hidden": 16}, phase="reader",
                          init_from=str(src_dir)), data=d, progress=False)
    run = dict(decoder={}, phase="reader", init_from=str(src_dir), steps=60, batch_size=8, lr=1e-2,
               sample_every=0, snr_min_db=30.0, snr_max_db=40.0, p_clean=1.0)
    out = train_decoder(cfg(tmp_path / "r", **run), data=d, progress=False)
    src, new = DiffusionDecoder.from_pretrained(src_dir), DiffusionDecoder.from_pretrained(out)
    changed = {k for k, v in new.state_dict().items() if not torch.equal(v, src.state_dict()[k])}
    assert changed and all(k.startswith("reader.") for k in changed), changed
    # the reader fits the training labels better than the source's did (60 full-batch steps on 8 items)
    before = src.reader_loss(d.cond, d.labels).item()
    assert new.reader_loss(d.cond, d.labels).item() < 0.9 * before
    # resumable like any run: stopped at 10 and resumed equals the uninterrupted run
    part = tmp_path / "part"
    train_decoder(cfg(part, **run), data=d, progress=False, stop_after=10)
    train_decoder(cfg(part, **run), data=d, progress=False, resume=True)
    for (na, ta), (_, tb) in zip(new.state_dict().items(), DiffusionDecoder.from_pretrained(part).state_dict().items()):
        assert torch.equal(ta, tb), na
    with pytest.raises(ValueError, match="no semantic reader"):
        DiffusionDecoder(DiffusionDecoderConfig.from_dict({**src.config.to_dict(), "reader_classes": {}})
                         ).reader_loss(d.cond, d.labels)


def test_phase_unet_trains_all_but_the_reader_on_the_diffusion_loss_alone(tmp_path) -> None:
    # soft reader (no teacher forcing): diffusion gradients would reach it, so only the freeze keeps it fixed
    soft, d, src_dir = reader_source(tmp_path, 0.0)
    with pytest.raises(ValueError, match="init_from"):
        cfg(tmp_path / "x", phase="unet")
    plain = train_decoder(cfg(tmp_path / "plain", steps=1, sample_every=0), data=d, progress=False)
    with pytest.raises(ValueError, match="has no reader"):
        train_decoder(cfg(tmp_path / "x1", decoder={}, phase="unet", init_from=str(plain)), data=d, progress=False)
    with pytest.raises(ValueError, match="drop them"):
        train_decoder(cfg(tmp_path / "x2", decoder={"cond_tokens": 4}, phase="unet", init_from=str(src_dir)),
                      data=d, progress=False)
    with pytest.raises(ValueError, match="--profile mini-attr"):  # same width, other encoder: refused by name
        train_decoder(cfg(tmp_path / "x3", decoder={}, phase="unet", init_from=str(src_dir), profile="mini"),
                      data=d, progress=False)
    run = dict(decoder={}, phase="unet", init_from=str(src_dir), steps=3, batch_size=8, sample_every=0)
    out = train_decoder(cfg(tmp_path / "u", **run), data=d, progress=False)
    src, new = DiffusionDecoder.from_pretrained(src_dir), DiffusionDecoder.from_pretrained(out)
    changed = {k for k, v in new.state_dict().items() if not torch.equal(v, src.state_dict()[k])}
    assert any(k.startswith("unet.") for k in changed) and not any(k.startswith("reader.") for k in changed), changed
    # the same first step of a whole-decoder run (same seed, data, start) logs the reader's cross-entropy on
    # top: an untrained 3-class reader's is about ln 3
    whole = train_decoder(cfg(tmp_path / "w", decoder=soft, init_from=str(src_dir), steps=1, batch_size=8,
                              sample_every=0), data=d, progress=False)
    first = lambda run_dir: json.loads((run_dir / "train_log.json").read_text())["losses_every_log_step"][0]  # noqa: E731
    assert first(whole) - first(out) == pytest.approx(1.1, abs=0.3)
    # resumable like any run
    part = tmp_path / "part"
    train_decoder(cfg(part, **run), data=d, progress=False, stop_after=2)
    train_decoder(cfg(part, **run), data=d, progress=False, resume=True)
    for (na, ta), (_, tb) in zip(new.state_dict().items(), DiffusionDecoder.from_pretrained(part).state_dict().items()):
        assert torch.equal(ta, tb), na
