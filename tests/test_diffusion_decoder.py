"""The conditional diffusion decoder on a tiny config-built UNet (no downloaded weights)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers", reason="the diffusion decoder needs diffusers (pip install 'genscom[gen]')")

from genscom.errors import BadFileError, GenscomError  # noqa: E402
from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig  # noqa: E402

D = 8


def tiny(**kw) -> DiffusionDecoder:
    cfg = dict(image_size=16, cond_dim=D, block_out_channels=(8, 16), cross_attention_dim=8, attention_head_dim=4,
               cond_tokens=2, norm_num_groups=4, num_train_timesteps=100, sample_steps=3, guidance_scale=2.0)
    cfg.update(kw)
    torch.manual_seed(0)
    dec = DiffusionDecoder(DiffusionDecoderConfig(**cfg)).eval()
    with torch.no_grad():  # a random null token and output layer, so conditions and guidance matter
        dec.null_cond.normal_()
        for p in dec.unet.conv_out.parameters():
            p.normal_(std=0.2)
    return dec


def cond(b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, D, generator=torch.Generator().manual_seed(seed))


def test_shapes_range_and_training_loss_backward() -> None:
    dec = tiny()
    out = dec.generate(cond(3), generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    eps = dec(torch.randn(2, 3, 16, 16), torch.tensor([0, 99]), cond())
    assert eps.shape == (2, 3, 16, 16)
    dec.train()
    loss = dec.loss(torch.rand(4, 3, 16, 16), cond(4), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    grads = [p.grad for p in dec.cond_proj.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)  # the condition reaches the loss


def test_deterministic_under_a_generator_and_different_noise_differs() -> None:
    dec = tiny()
    a = dec.generate(cond(), generator=torch.Generator().manual_seed(5))
    b = dec.generate(cond(), generator=torch.Generator().manual_seed(5))
    c = dec.generate(cond(), generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_a_different_condition_changes_the_image_and_guidance_one_ignores_the_null() -> None:
    dec = tiny()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731  (same initial noise for every call)
    a = dec.generate(cond(seed=1), generator=g())
    b = dec.generate(cond(seed=2), generator=g())
    assert (a - b).abs().mean() > 1e-3
    # guidance: w = 1 is the conditional model alone; w > 1 moves away from the unconditional prediction
    w1 = dec.generate(cond(seed=1), generator=g(), guidance_scale=1.0)
    assert not torch.allclose(w1, a)


def test_condition_dropout_uses_the_null_token() -> None:
    dec = tiny()
    c = cond()
    null = dec.tokens(None, 2)
    tok = dec.tokens(c, 2, drop=torch.tensor([True, False]))
    assert torch.equal(tok[0], null[0]) and not torch.equal(tok[1], null[1])
    assert torch.equal(tok[1], dec.tokens(c, 2)[1])


def test_save_pretrained_from_pretrained_round_trip(tmp_path) -> None:
    dec = tiny()
    dec.save_pretrained(tmp_path / "d")
    back = DiffusionDecoder.from_pretrained(tmp_path / "d")
    assert back.config == dec.config
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    assert torch.equal(dec.generate(cond(), generator=g()), back.generate(cond(), generator=g()))
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    assert cfg["diffusion_decoder"]["cond_dim"] == D


def test_bad_conditions_and_configs_get_clear_errors() -> None:
    dec = tiny()
    with pytest.raises(ValueError, match="dimension 5"):
        dec.generate(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        dec.generate(torch.randn(8))
    bad = cond()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dec.generate(bad)
    with pytest.raises(ValueError, match="steps"):
        dec.generate(cond(), steps=0)
    with pytest.raises(ValueError, match="images"):
        dec.loss(torch.rand(2, 3, 8, 8), cond())
    with pytest.raises(ValueError, match="image_size"):
        DiffusionDecoderConfig(image_size=18, block_out_channels=(8, 16, 16), norm_num_groups=4)
    with pytest.raises(ValueError, match="cond_dropout"):
        DiffusionDecoderConfig(cond_dropout=1.0)
    with pytest.raises(ValueError, match="unknown"):
        DiffusionDecoderConfig.from_dict({"image_size": 16, "unet": 1})


def test_broken_decoder_folders_raise_file_errors(tmp_path) -> None:
    dec = tiny()
    folder = dec.save_pretrained(tmp_path / "d")
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(BadFileError, match="model.safetensors"):
        DiffusionDecoder.from_pretrained(folder)
    dec.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"diffusion_decoder": {"image_size": 16, "cond_dim": 9}}))
    with pytest.raises(BadFileError, match="config.json"):  # the weights do not fit the declared config
        DiffusionDecoder.from_pretrained(folder)
    with pytest.raises(GenscomError):
        DiffusionDecoder.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_prediction_type_sets_the_training_target(kind: str) -> None:
    """A UNet that outputs exactly the target of its prediction type has zero loss; the noise target does not
    fit the other two (an independent check of which target the loss uses)."""
    dec = tiny(prediction_type=kind)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sched = dec.train_scheduler()
    # replay the loss's draws: noise, timesteps, dropout from the same generator state
    g = torch.Generator().manual_seed(4)
    noise = torch.randn((2, 3, 16, 16), generator=g)
    t = torch.randint(0, dec.config.num_train_timesteps, (2,), generator=g)
    x0 = images * 2 - 1
    target = {"epsilon": noise, "sample": x0, "v_prediction": sched.get_velocity(x0, noise, t)}[kind]
    dec._unet = lambda noisy, tt, tok, glob: target  # type: ignore[method-assign]
    assert float(dec.loss(images, cond(), generator=torch.Generator().manual_seed(4))) == pytest.approx(0.0, abs=1e-10)
    if kind != "epsilon":
        dec._unet = lambda noisy, tt, tok, glob: noise  # type: ignore[method-assign]
        assert float(dec.loss(images, cond(), generator=torch.Generator().manual_seed(4))) > 1e-3
    out = tiny(prediction_type=kind).generate(cond(), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and bool(torch.isfinite(out).all())


def test_unknown_prediction_type_is_refused() -> None:
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionDecoderConfig(prediction_type="x0")


def test_global_condition_modulates_the_unet_and_drops_to_the_null_vector() -> None:
    on, off = tiny(global_cond=True), tiny(global_cond=False)
    assert on.unet.class_embedding is not None and off.unet.class_embedding is None
    c = cond(3)
    g = on.global_vector(c, 3, drop=torch.tensor([False, True, False]))
    torch.testing.assert_close(g[0], torch.nn.functional.normalize(c[0], dim=0))
    torch.testing.assert_close(g[1], on.null_global)  # a dropped row takes the learned null vector
    assert off.global_vector(c, 3) is None
    # with the attention tokens held fixed, the global vector alone changes the prediction
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    with torch.no_grad():
        tok = on.tokens(c[:1], 1)
        a = on._unet(x, t, tok, on.global_vector(c[:1], 1))
        b = on._unet(x, t, tok, on.global_vector(c[1:2], 1))
    assert not torch.allclose(a, b)


def test_semantic_reader_joins_the_condition_and_learns_from_labels() -> None:
    classes = {"shape": 3, "colour": 4}
    dec = tiny(reader_classes=classes, reader_hidden=16)
    c = cond(4)
    logits = dec.read(c)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"shape": (4, 3), "colour": (4, 4)}
    g = dec.global_vector(c, 4)
    assert g.shape == (4, D + 7)
    torch.testing.assert_close(g[:, :D], torch.nn.functional.normalize(c, dim=-1))
    torch.testing.assert_close(g[:, D:D + 3], logits["shape"].softmax(-1))  # probabilities, in config order
    torch.testing.assert_close(g[:, D:].sum(-1), torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="lack"):
        dec.loss(torch.rand(4, 3, 16, 16), c, generator=torch.Generator().manual_seed(0))
    # the cross-entropy term: a reader that learns the labels lowers the loss by what an independent CE says
    labels = {"shape": torch.tensor([0, 1, 2, 0]), "colour": torch.tensor([3, 2, 1, 0])}
    opt = torch.optim.Adam(dec.reader.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        ce = sum(torch.nn.functional.cross_entropy(v, labels[k]) for k, v in dec.read(c).items())
        first = float(ce.detach()) if first is None else first
        opt.zero_grad()
        dec.loss(torch.rand(4, 3, 16, 16), c, generator=torch.Generator().manual_seed(0), labels=labels).backward()
        opt.step()
    read = dec.read(c)
    assert all(torch.equal(read[k].argmax(-1), labels[k]) for k in classes)
    with_ce = float(dec.loss(torch.zeros(4, 3, 16, 16), c, generator=torch.Generator().manual_seed(3),
                             labels=labels))
    expect_ce = sum(float(torch.nn.functional.cross_entropy(v, labels[k])) for k, v in dec.read(c).items())
    assert expect_ce < first
    dec.config.reader_weight = 0.0
    mse_only = float(dec.loss(torch.zeros(4, 3, 16, 16), c, generator=torch.Generator().manual_seed(3), labels=labels))
    assert with_ce - mse_only == pytest.approx(expect_ce, rel=1e-4)
    for bad in ({"shape": 1}, {"shape": True}, [("shape", 3)]):
        with pytest.raises(ValueError, match="reader_classes"):
            DiffusionDecoderConfig(reader_classes=bad)


def test_latent_decoder_denoises_autoencoder_latents_and_decodes_to_pixels() -> None:
    dec = tiny(latent={"block_out_channels": [8, 16], "latent_channels": 3, "norm_num_groups": 4})
    assert dec.vae is not None and dec.config.latent_factor == 2
    assert dec.unet.config.sample_size == 8 and dec.unet.config.in_channels == 3
    assert not any(p.requires_grad for p in dec.vae.parameters())  # frozen during diffusion training
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    z = dec.to_latents(images)
    assert z.shape == (2, 3, 8, 8)
    # the loss on images is the loss on their latents (the trainer passes precomputed latents)
    a = dec.loss(images, cond(), generator=torch.Generator().manual_seed(5))
    b = dec.loss(None, cond(), generator=torch.Generator().manual_seed(5), latents=z)
    torch.testing.assert_close(a, b)
    # the scaling factor scales the latents the UNet sees, and generate undoes it before decoding
    dec.config.latent["scaling_factor"] = 2.0
    torch.testing.assert_close(dec.to_latents(images), 2.0 * z)
    out = dec.generate(cond(), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError, match="latent"):
        DiffusionDecoderConfig(latent={"down_block_types": ["x"]})
    with pytest.raises(ValueError, match="divisible"):
        DiffusionDecoderConfig(image_size=16, block_out_channels=(8, 16, 16, 16), norm_num_groups=4,
                               latent={"block_out_channels": [8, 16, 16]})


def test_teacher_forcing_feeds_true_one_hot_labels_at_training_and_the_readers_argmax_at_sampling() -> None:
    classes = {"shape": 3, "colour": 4}
    dec = tiny(reader_classes=classes, reader_hidden=16, reader_teacher_forcing=1.0)
    c = cond(4)
    e = torch.nn.functional.normalize(c, dim=-1)
    logits = dec.read(c)
    f = dec._features(e, logits)                                   # sampling: the reader's arg-max, one-hot
    assert torch.equal(f[:, D:D + 3].argmax(-1), logits["shape"].argmax(-1))
    assert set(f[:, D:].unique().tolist()) <= {0.0, 1.0} and torch.equal(f[:, D:].sum(-1), torch.full((4,), 2.0))
    labels = {"shape": torch.tensor([2, 2, 0, 1]), "colour": torch.tensor([0, 3, 3, 1])}
    rows = torch.tensor([True, False, True, False])
    g = dec._features(e, logits, labels, rows)                      # training: the truth where forced
    expect = torch.where(rows, labels["shape"], logits["shape"].argmax(-1))
    assert torch.equal(g[:, D:D + 3].argmax(-1), expect)
    # the diffusion term does not depend on what the reader says when every row is forced
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    dec.config.reader_weight = 0.0
    before = float(dec.loss(x, c, generator=torch.Generator().manual_seed(2), labels=labels))
    with torch.no_grad():
        dec.reader[-1].bias.add_(torch.randn(7) * 10)
    assert float(dec.loss(x, c, generator=torch.Generator().manual_seed(2), labels=labels)) == pytest.approx(before)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="reader_teacher_forcing"):
            DiffusionDecoderConfig(reader_teacher_forcing=bad)


def test_min_snr_weights_follow_hang_et_al_per_prediction_type() -> None:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    t = torch.tensor([0, 10, 50, 99])
    abar = sched.alphas_cumprod[t].double()
    snr = abar / (1 - abar)
    gamma = 5.0
    for kind, expect in (("epsilon", torch.minimum(snr, torch.tensor(gamma)) / snr),
                         ("v_prediction", torch.minimum(snr, torch.tensor(gamma)) / (snr + 1)),
                         ("sample", torch.minimum(snr, torch.tensor(gamma)))):
        dec = tiny(prediction_type=kind, snr_gamma=gamma)
        torch.testing.assert_close(dec._snr_weight(sched, t).double(), expect, rtol=1e-5, atol=1e-6)
    # below gamma the clamp does nothing: at the noisiest step SNR ~ 0, so a v target's weight SNR / (SNR + 1) ~ 0
    assert float(tiny(prediction_type="v_prediction", snr_gamma=gamma)._snr_weight(sched, t)[-1]) < 0.01
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="snr_gamma"):
            DiffusionDecoderConfig(snr_gamma=bad)


def test_min_snr_weighting_changes_the_loss_of_the_same_step() -> None:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = tiny(prediction_type="v_prediction")
    weighted = tiny(prediction_type="v_prediction", snr_gamma=5.0)
    weighted.load_state_dict(plain.state_dict())
    a = float(plain.loss(x, cond(4), generator=torch.Generator().manual_seed(4)))
    b = float(weighted.loss(x, cond(4), generator=torch.Generator().manual_seed(4)))
    assert a > 0 and b > 0 and a != pytest.approx(b)


def test_autoencoder_mid_block_attention_can_be_switched_off() -> None:
    on = tiny(latent={"block_out_channels": [8, 16], "latent_channels": 3, "norm_num_groups": 4})
    off = tiny(latent={"block_out_channels": [8, 16], "latent_channels": 3, "norm_num_groups": 4,
                       "mid_block_add_attention": False})
    n_attn = lambda d: sum("attentions" in k for k, _ in d.vae.named_parameters())  # noqa: E731
    assert n_attn(on) > 0 and n_attn(off) == 0
    assert off.to_latents(torch.rand(1, 3, 16, 16)).shape == (1, 3, 8, 8)
