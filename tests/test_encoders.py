"""Encoder profiles, preprocessing, meanP pooling, the HF loading path, weights round trips, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from genscom.encoders import (
    ImagePreprocess,
    create_encoder,
    l2_normalize,
    list_profiles,
    mean_pool,
    sample_frame_indices,
    sample_frames,
)
from genscom.encoders.hf import HFClipEncoder, preprocess_from_config
from genscom.encoders.mini import CONFIG_NAME, WEIGHTS_NAME, MiniTowerConfig, MiniVideoTower
from genscom.encoders.text import HashingTokenizer



CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WORDS = ["a", "an", "red", "blue", "green", "circle", "square", "moving", "left", "right", "on", "background",
         "two", "small", "large", "clip", "of"]


def make_clip(T: int = 4, size: int = 64, *, dx: int = 6, colour=(220, 30, 30)) -> torch.Tensor:
    """One uint8 clip [T, size, size, 3]: a square moving right by dx px per frame on grey."""
    clip = torch.full((T, size, size, 3), 128, dtype=torch.uint8)
    for t in range(T):
        x0 = 4 + dx * t
        clip[t, 20:36, x0:x0 + 16] = torch.tensor(colour, dtype=torch.uint8)
    return clip


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP (CLIPConfig) + a locally built WordLevel tokenizer + preprocessor config."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-clip")
    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", 2), ("<eos>", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=16)
    fast.save_pretrained(path)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=12,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPModel(cfg).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
        "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "resample": 3, "do_convert_rgb": True}))
    return path


_CACHE: dict[str, object] = {}


def build(profile: str, tiny_clip_dir: Path):
    """Each profile at test size, built once per session (the mini towers' weights ship in the package)."""
    if profile not in _CACHE:
        if profile == "hf":
            _CACHE[profile] = create_encoder("hf", pretrained=str(tiny_clip_dir), local_files_only=True)
        else:
            _CACHE[profile] = create_encoder(profile)
    return _CACHE[profile]


def test_profiles_listed_sorted() -> None:
    names = list_profiles()
    assert names == sorted(names)
    assert {"hf", "mini", "tiny"} <= set(names)


@pytest.mark.parametrize("profile", list_profiles())
def test_every_profile_encodes_with_unit_norm(profile: str, tiny_clip_dir: Path) -> None:
    enc = build(profile, tiny_clip_dir)
    d = enc.dim
    clips = torch.stack([make_clip(), make_clip(dx=-4, colour=(30, 70, 230)), make_clip(dx=0)])  # [3, 4, 64, 64, 3]
    t = enc.encode_text(["a red square moving right", "two small blue circles", "a clip"])
    i = enc.encode_images(clips[:, 0])
    v = enc.encode_clips(clips)
    f = enc.encode_frames(clips)
    assert t.shape == (3, d) and i.shape == (3, d) and v.shape == (3, d) and f.shape == (3, 4, d)
    for e in (t, i, v):
        assert torch.isfinite(e).all()
        torch.testing.assert_close(e.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    assert enc.encode_text([]).shape == (0, d)
    assert not torch.allclose(v[0], v[1])  # different clips, different embeddings


@pytest.mark.parametrize("profile", list_profiles())
def test_clip_embedding_is_meanp_of_frame_features(profile: str, tiny_clip_dir: Path) -> None:
    enc = build(profile, tiny_clip_dir)
    clips = torch.stack([make_clip(T=5), make_clip(T=5, dx=-3)])
    frames = enc.encode_frames(clips)  # unnormalised [2, 5, d]
    expected = frames.mean(dim=1)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(enc.encode_clips(clips), expected, atol=1e-6, rtol=0)
    # batching does not change anything (eval mode)
    torch.testing.assert_close(enc.encode_clips(clips, batch_size=1), enc.encode_clips(clips, batch_size=2),
                               atol=1e-5, rtol=0)


def test_frame_features_of_per_frame_tower_are_image_features(tiny_clip_dir: Path) -> None:
    """Without a temporal module (CLIP), frame t's feature is the image feature of frame t."""
    enc = build("hf", tiny_clip_dir)
    clip = make_clip(T=3)[None]
    f = l2_normalize(enc.encode_frames(clip)[0])
    torch.testing.assert_close(f, enc.encode_images(clip[0]), atol=1e-5, rtol=0)


def test_mini_tower_sees_motion() -> None:
    """Reversing a clip flips its motion; the tiny tower (motion channels + temporal attention) notices."""
    enc = create_encoder("tiny")
    clip = make_clip(T=6)[None]
    a, b = enc.encode_clips(clip), enc.encode_clips(clip.flip(1))
    assert (a - b).abs().max() > 1e-3


def test_tiny_profile_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = create_encoder("tiny", seed=3), create_encoder("tiny", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    texts = ["a red circle", "a blue square moving left"]
    torch.testing.assert_close(a.encode_text(texts), b.encode_text(texts), atol=0, rtol=0)
    assert not torch.allclose(create_encoder("tiny", seed=4).encode_text(texts), a.encode_text(texts))


def test_text_batching_and_numpy_input() -> None:
    enc = create_encoder("tiny")
    texts = ["a", "a red circle moving left on a blue background", "two squares"]
    torch.testing.assert_close(enc.encode_text(texts, batch_size=1), enc.encode_text(texts), atol=1e-5, rtol=0)
    clips = make_clip()[None]
    torch.testing.assert_close(enc.encode_clips(clips.numpy()), enc.encode_clips(clips), atol=0, rtol=0)


def test_dtype_moves_with_the_encoder() -> None:
    enc = create_encoder("tiny")
    clips = make_clip()[None]
    ref = enc.encode_clips(clips)
    enc64 = create_encoder("tiny", dtype=torch.float64)
    out = enc64.encode_clips(clips)
    assert out.dtype == torch.float64 and enc64.encode_text(["a"]).dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, atol=1e-4, rtol=0)


def test_hf_path_matches_the_model_and_its_processor(tiny_clip_dir: Path) -> None:
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    enc = create_encoder(str(tiny_clip_dir))  # a local folder as the name goes through the hf profile
    assert isinstance(enc, HFClipEncoder) and enc.dim == 12
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_clip_dir)
    texts = ["a red circle moving left", "two small blue square"]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref_t = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=torch.zeros(1, 3, 32, 32)).text_embeds
    torch.testing.assert_close(enc.encode_text(texts), ref_t, atol=1e-5, rtol=0)
    # images already at the crop size: our torch preprocessing equals the HF (PIL) processor
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    proc = CLIPImageProcessorPil.from_pretrained(tiny_clip_dir)
    ref_px = proc(images=list(imgs), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(enc.preprocess_images(imgs), ref_px, atol=1e-5, rtol=0)
    with torch.no_grad():
        ref_i = model(input_ids=batch["input_ids"][:1], pixel_values=ref_px).image_embeds
    torch.testing.assert_close(enc.encode_images(imgs), ref_i, atol=1e-5, rtol=0)


def test_hf_rejects_a_model_that_is_not_a_dual_encoder(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=16)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="clip, siglip"):
        create_encoder("hf", pretrained=str(tmp_path), local_files_only=True)


def test_preprocess_from_config_defaults() -> None:
    sig = preprocess_from_config(None, image_size=224, model_type="siglip")
    assert sig.mode == "resize" and sig.size == (224, 224) and sig.mean == (0.5, 0.5, 0.5)
    clip = preprocess_from_config(None, image_size=224, model_type="clip")
    assert clip.mode == "shortest_edge_crop" and clip.size == (224, 224) and clip.mean == CLIP_MEAN


def test_image_preprocess_resize_crop_and_normalise() -> None:
    p = ImagePreprocess(size=(16, 16), mode="shortest_edge_crop", shortest_edge=16, interpolation="bilinear")
    img = torch.zeros(1, 20, 40, 3, dtype=torch.uint8)
    img[:, :, 4:36] = 255  # white centre band, black edges outside the centre crop
    out = p(img)
    assert out.shape == (1, 3, 16, 16)
    torch.testing.assert_close(out, torch.ones_like(out), atol=1e-5, rtol=0)  # (1 - 0.5) / 0.5
    flat = ImagePreprocess(size=(8, 8))(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    torch.testing.assert_close(flat, -torch.ones(2, 3, 8, 8))
    with pytest.raises(ValueError, match="mode"):
        ImagePreprocess(size=(8, 8), mode="stretch")  # type: ignore[arg-type]


def test_bad_inputs_raise_clear_errors() -> None:
    enc = create_encoder("tiny")
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        enc.encode_images(torch.zeros(2, 8, 8, 3))  # float, not uint8
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        enc.encode_images(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        enc.encode_clips(make_clip())  # missing batch axis
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        enc.encode_clips(torch.zeros(1, 2, 8, 8, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="list of str"):
        enc.encode_text("a single caption")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        enc.encode_images([[0]])
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode_text(["a"], batch_size=0)
    with pytest.raises(ValueError, match="max_frames"):
        enc.encode_clips(torch.zeros(1, 17, 16, 16, 3, dtype=torch.uint8))


def test_unknown_profile_lists_the_profiles() -> None:
    with pytest.raises(ValueError, match="hf, mini, mini-attr, mini-attr-v2, tiny"):
        create_encoder("no-such-profile")
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_encoder("tiny", pretrained=True)
    for trained in ("mini-attr", "mini-attr-v2"):
        with pytest.raises(ValueError, match="trained tower"):
            create_encoder(trained, pretrained=False)


def test_missing_mini_weights_name_path_and_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="genscom train encoder") as info:
        create_encoder("mini", pretrained=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(info.value)


@pytest.mark.parametrize("dtype,atol", [(None, 0.0), (torch.float16, 2e-2)])
def test_save_pretrained_round_trip(tmp_path: Path, dtype: torch.dtype | None, atol: float) -> None:
    cfg = MiniTowerConfig(image_size=16, stem_channels=4, channels=(8,), grid_channels=4, width=16,
                          temporal_heads=2, embed_dim=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = MiniVideoTower(cfg).eval()
        with torch.no_grad():
            tower.time_embed.normal_()  # non-zero so the time embedding is checked too
    tower.save_pretrained(tmp_path, dtype=dtype)
    assert (tmp_path / WEIGHTS_NAME).is_file() and (tmp_path / CONFIG_NAME).is_file()
    loaded = MiniVideoTower.from_pretrained(tmp_path)
    assert loaded.config == cfg
    x = torch.randn(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tower(x), atol=atol, rtol=atol)


def test_mini_tower_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MiniTowerConfig(image_size=60)
    with pytest.raises(ValueError, match="temporal"):
        MiniTowerConfig(temporal="lstm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        MiniTowerConfig.from_dict({"depth": 3})


def test_frame_sampling_and_pooling() -> None:
    assert sample_frame_indices(8, 4).tolist() == [1, 3, 5, 7]
    assert sample_frame_indices(3, 8).tolist() == [0, 1, 2]
    clip = make_clip(T=10)
    assert sample_frames(clip, 5).shape == (5, 64, 64, 3)
    feats = torch.arange(12.0).view(1, 4, 3)
    torch.testing.assert_close(mean_pool(feats), feats.mean(1))
    mask = torch.tensor([[True, True, False, False]])
    torch.testing.assert_close(mean_pool(feats, mask), feats[:, :2].mean(1))
    with pytest.raises(ValueError, match="no valid frame"):
        mean_pool(feats, torch.zeros(1, 4, dtype=torch.bool))


def test_hashing_tokenizer() -> None:
    tok = HashingTokenizer(vocab_size=64)
    out = tok(["A red circle", "red"], max_length=4)
    assert out["input_ids"].shape == (2, 4)
    assert out["input_ids"][0, 0] == tok.cls_id and out["attention_mask"][1].tolist() == [1, 1, 1, 0]
    assert out["input_ids"][0, 2] == out["input_ids"][1, 1]  # "red" hashes the same in both
    assert math.isclose(float(out["attention_mask"].sum()), 7.0)
