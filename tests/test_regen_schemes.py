"""The picture-delivering schemes (``regen``, ``deepjscc``) and the DeepJSCC model, with tiny random parts."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from genscom.channels.registry import create_channel  # noqa: E402
from genscom.channels.sensing import link_feedback  # noqa: E402
from genscom.errors import GenscomError  # noqa: E402
from genscom.generation.deepjscc import DeepJSCC, DeepJSCCConfig, TrainDeepJSCCConfig, train_deepjscc  # noqa: E402
from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig  # noqa: E402
from genscom.schemes import SourceBatch, create_scheme  # noqa: E402
from genscom.schemes.regen import frames_from_images, key_frame  # noqa: E402

D, S, B = 12, 16, 3


def _decoder(seed: int = 0) -> DiffusionDecoder:
    torch.manual_seed(seed)
    return DiffusionDecoder(DiffusionDecoderConfig(image_size=S, cond_dim=D, block_out_channels=(8, 16),
                                                   cross_attention_dim=8, attention_head_dim=4, sample_steps=2))


def _emb(seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(B, D, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _frames(seed: int = 0, t: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (B, t, S, S, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_regen_delivers_frames_reproducibly_and_follows_the_embedding() -> None:
    scheme = create_scheme("regen", decoder=_decoder(), seed=3)
    awgn = create_channel("awgn")
    out = scheme.send(SourceBatch(embeddings=_emb(0)), awgn, 30.0, generator=torch.Generator().manual_seed(1))
    assert out.frames.shape == (B, 1, S, S, 3) and out.frames.dtype == torch.uint8
    assert out.channel_uses.tolist() == [D // 2] * B and not out.failed.any()
    again = scheme.send(SourceBatch(embeddings=_emb(0)), awgn, 30.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.frames, again.frames)  # same received embeddings, same seed: same pictures
    other = scheme.send(SourceBatch(embeddings=_emb(5)), awgn, 30.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out.frames, other.frames)  # the picture depends on what was sent
    # pilots on a fading channel are counted, as for semantic-analog
    ray = create_channel("rayleigh")
    sensing = link_feedback(ray, 10.0, generator=torch.Generator().manual_seed(0))
    p = scheme.transmit(SourceBatch(embeddings=_emb(0)), sensing=sensing)
    assert bool((p.channel_uses > D // 2).all())


def test_regen_refuses_embeddings_of_another_size() -> None:
    scheme = create_scheme("regen", decoder=_decoder())
    with pytest.raises(ValueError, match=f"trained on {D}-dimensional"):
        scheme.transmit(SourceBatch(embeddings=torch.randn(2, D + 4)))


def test_regen_missing_decoder_name_is_a_clear_error(tmp_path) -> None:
    with pytest.raises((FileNotFoundError, GenscomError), match="no-such-decoder"):
        create_scheme("regen", decoder="no-such-decoder")


def test_deepjscc_scheme_noiseless_equals_the_model_and_checks_frame_size() -> None:
    torch.manual_seed(0)
    model = DeepJSCC(DeepJSCCConfig(image_size=S, channel_uses=16, filters=8, n_down=2)).eval()
    scheme = create_scheme("deepjscc", model=model)
    frames = _frames()
    out = scheme.send(SourceBatch(frames=frames), None, None)
    with torch.no_grad():
        want = frames_from_images(model(key_frame(frames)))
    assert torch.equal(out.frames, want) and out.channel_uses.tolist() == [16] * B
    noisy = scheme.send(SourceBatch(frames=frames), create_channel("awgn"), -10.0,
                        generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noisy.frames, want)
    with pytest.raises(ValueError, match=f"codes {S}x{S} frames"):
        scheme.transmit(SourceBatch(frames=torch.zeros(1, 1, 2 * S, 2 * S, 3, dtype=torch.uint8)))


def test_deepjscc_config_checks_and_round_trip(tmp_path) -> None:
    with pytest.raises(ValueError, match="whole channels"):
        DeepJSCCConfig(image_size=64, channel_uses=100)
    with pytest.raises(ValueError, match="divisible"):
        DeepJSCCConfig(image_size=20, n_down=3)
    assert DeepJSCCConfig().latent_channels == 6  # 192 uses = 384 reals = 6 channels of 8 x 8
    torch.manual_seed(0)
    m = DeepJSCC(DeepJSCCConfig(image_size=S, channel_uses=16, filters=8, n_down=2)).eval()
    m.save_pretrained(tmp_path / "m")
    back = DeepJSCC.from_pretrained(tmp_path / "m")
    x = torch.rand(2, 3, S, S)
    torch.testing.assert_close(back(x), m(x))
    s = m.encode(x)
    torch.testing.assert_close(s.abs().pow(2).mean(dim=1), torch.ones(2))  # unit energy per image


def test_train_deepjscc_is_seeded_and_learns() -> None:
    imgs = (torch.rand(16, 3, S, S, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    imgs[:, :, : S // 2] = 200  # some structure to learn
    cfg = DeepJSCCConfig(image_size=S, channel_uses=16, filters=8, n_down=2)
    train = TrainDeepJSCCConfig(steps=60, batch_size=8, lr=3e-3, warmup_steps=5, snr_min_db=10, snr_max_db=20)
    m1, l1 = train_deepjscc(imgs, cfg, train, generator=torch.Generator().manual_seed(0))
    m2, l2 = train_deepjscc(imgs, cfg, train, generator=torch.Generator().manual_seed(0))
    assert l1 == l2
    assert sum(l1[-10:]) / 10 < 0.8 * sum(l1[:10]) / 10, (l1[:10], l1[-10:])


def test_regen_over_the_learned_adapter_link() -> None:
    from genscom.adaptation.adapter import AdapterConfig, build_adapter

    adapter = build_adapter(AdapterConfig(dim=D, k=6, hidden=16, depth=1, group_size=3, cond_dim=8), seed=0).eval()
    scheme = create_scheme("regen", decoder=_decoder(), link="adapted", adapter=adapter)
    assert scheme.name == "regen-adapted-k6" and scheme.adapts  # the adapter encodes for the fed-back SNR
    awgn = create_channel("awgn")
    out = scheme.send(SourceBatch(embeddings=_emb(0)), awgn, 20.0, generator=torch.Generator().manual_seed(1))
    assert out.frames.shape == (B, 1, S, S, 3) and out.embeddings.shape == (B, D)
    direct = create_scheme("adapted", adapter=adapter).send(SourceBatch(embeddings=_emb(0)), awgn, 20.0,
                                                            generator=torch.Generator().manual_seed(1))
    assert out.channel_uses.tolist() == direct.channel_uses.tolist()  # the picture costs nothing on the air
    torch.testing.assert_close(out.embeddings, direct.embeddings)
    with pytest.raises(ValueError, match="repeat applies"):
        create_scheme("regen", decoder=_decoder(), link="adapted", adapter=adapter, repeat=2)
    with pytest.raises(ValueError, match="link must be"):
        create_scheme("regen", decoder=_decoder(), link="h264")
