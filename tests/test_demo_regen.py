"""The demo's image-regeneration task with a tiny random diffusion decoder (no browser), task -> scheme, captions."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers", reason="the regen scheme needs diffusers (pip install 'genscom[gen]')")

from genscom.demo.captions import hit_token_limit, shorten, tidy_caption  # noqa: E402
from genscom.demo.engine import DemoConfig, DemoReceiver, DemoTransmitter, TxSettings  # noqa: E402
from genscom.demo.guard import WireRejected  # noqa: E402
from genscom.demo.options import offered_schemes  # noqa: E402
from genscom.demo.tasks import check_task, preferred_scheme, schemes_for_task, task_unavailable  # noqa: E402
from genscom.demo.wire import decode_message, encode_message  # noqa: E402

TINY_DIM = 16  # the tiny profile's embedding size
IMAGE_SIZE = 16


def make_tiny_decoder(folder, *, profile: str = "tiny", cond_dim: int = TINY_DIM):
    """Save a tiny random :class:`DiffusionDecoder` (2 DDIM steps) for ``profile`` to ``folder``; return it."""
    from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig

    torch.manual_seed(0)
    dec = DiffusionDecoder(DiffusionDecoderConfig(image_size=IMAGE_SIZE, cond_dim=cond_dim, block_out_channels=(8, 16),
                                                  cross_attention_dim=8, attention_head_dim=4, sample_steps=2,
                                                  extra={"profile": profile}))
    dec.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory):
    return make_tiny_decoder(tmp_path_factory.mktemp("regen") / "regen-tiny")


@pytest.fixture(scope="module")
def cfg(decoder_dir):
    return DemoConfig(profile="tiny", gallery_size=6, num_frames=2, max_side=64, regen_decoder=str(decoder_dir))


@pytest.fixture(scope="module")
def tx(cfg):
    return DemoTransmitter(cfg)


def test_image_task_regenerates_beside_the_baseline(tx, cfg):
    assert preferred_scheme("image regeneration", cfg) == "regen"
    rx = DemoReceiver(cfg, encoder=tx.encoder)
    t = tx.transmit(tx.item("synthetic/2"), TxSettings(scheme="regen", task="image regeneration", snr_db=10.0))
    assert t.channel_uses == 8 and t.scheme_name == "regen"  # the analog link's cost: ceil(16 / 2)
    res = rx.receive(t.message)
    assert res.regenerated is not None and res.regenerated.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert res.regenerated.dtype == torch.uint8 and res.embedding is not None and res.channel_uses == 8
    assert res.baseline_frames is not None and res.baseline_channel_uses > 1000  # H.264 + LDPC of the same clip
    assert res.summary()["regenerated"] == [IMAGE_SIZE, IMAGE_SIZE, 3]
    from genscom.demo.generated import regen_markdown, regenerated_image

    text = regen_markdown(res)
    assert "Regenerated image" in text and "8 channel uses" in text and f"{res.baseline_channel_uses:,}" in text
    assert regenerated_image(res).shape == (128, 128, 3)
    again = rx.receive(tx.transmit(tx.item("synthetic/2"), TxSettings(scheme="regen", task="image regeneration",
                                                                      snr_db=10.0)).message)
    assert torch.equal(again.regenerated, res.regenerated)  # seeded sampling: the same picture


def test_task_selects_a_scheme_that_serves_it(cfg):
    assert "regen" in offered_schemes(cfg) and "deepjscc" not in offered_schemes(cfg)
    assert schemes_for_task("image regeneration", cfg) == ["regen"]
    assert "regen" in schemes_for_task("retrieval", cfg) and preferred_scheme("retrieval", cfg) == "semantic-analog"
    assert schemes_for_task("caption", cfg) == [] and preferred_scheme("caption", cfg) is None
    assert "--agent-card" in task_unavailable("caption", cfg)
    with pytest.raises(ValueError, match="task 'caption' is unavailable here: captions come from the agent scheme"):
        check_task("caption", "semantic-analog", cfg)
    with pytest.raises(ValueError, match="needs the scheme regen; 'semantic-analog' cannot serve it"):
        check_task("image regeneration", "semantic-analog", cfg)
    check_task("retrieval", "regen", cfg)  # regen delivers the embedding too


def test_transmitter_refuses_a_task_its_scheme_cannot_serve(tx):
    item = tx.item("synthetic/1")
    with pytest.raises(ValueError, match="needs the scheme regen"):
        tx.transmit(item, TxSettings(scheme="semantic-analog", task="image regeneration"))
    with pytest.raises(ValueError, match="captions come from the agent scheme"):
        tx.transmit(item, TxSettings(scheme="semantic-analog", task="caption"))


def test_mismatched_profile_gives_the_plain_reason(tmp_path):
    folder = make_tiny_decoder(tmp_path / "regen-mini-attr", profile="mini-attr", cond_dim=384)
    cfg = DemoConfig(profile="tiny", regen_decoder=str(folder))
    why = task_unavailable("image regeneration", cfg)
    assert why == ("the image decoder regen-mini-attr was trained on mini-attr embeddings; start the demo with "
                   "--profile mini-attr"), why
    assert "regen" not in offered_schemes(cfg) and schemes_for_task("image regeneration", cfg) == []
    missing = DemoConfig(profile="tiny", regen_decoder=str(tmp_path / "nowhere"))
    assert "is not installed" in task_unavailable("image regeneration", missing)
    assert "--regen-decoder" in task_unavailable("image regeneration", DemoConfig(profile="tiny", regen_decoder=None))
    v2 = DemoConfig(profile="mini-attr-v2", regen_decoder=str(folder))  # a shipped decoder fits that profile
    assert task_unavailable("image regeneration", v2).endswith(
        "--profile mini-attr (or --regen-decoder regen-mini-attr-v5, trained on mini-attr-v2)")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps({"something": {}}))
    broken = DemoConfig(profile="tiny", regen_decoder=str(tmp_path / "broken"))
    assert "not a diffusion decoder folder" in task_unavailable("image regeneration", broken)


def test_receiver_uses_its_own_decoder_never_the_senders(tx, cfg, tmp_path):
    """A sender cannot name a decoder (a path) in the regen settings; a receiver without one refuses regen."""
    rx = DemoReceiver(cfg, encoder=tx.encoder)
    msg = decode_message(tx.transmit(tx.item("synthetic/1"), TxSettings(scheme="regen", task="image regeneration"))
                         .message)
    assert set(msg.transmissions[0].settings) == {"repeat"}  # only the rate knob crosses the wire
    msg.transmissions[0].settings["decoder"] = str(tmp_path / "evil")
    with pytest.raises(WireRejected, match="'decoder' not accepted for regen"):
        rx.receive(encode_message(msg))
    bare = DemoReceiver(DemoConfig(profile="tiny", gallery_size=6, num_frames=2, max_side=64, regen_decoder=None),
                        encoder=tx.encoder)
    ok = tx.transmit(tx.item("synthetic/1"), TxSettings(scheme="regen", task="image regeneration")).message
    with pytest.raises(WireRejected, match="scheme 'regen' is not offered by this receiver"):
        bare.receive(ok)
    assert bare.latest is None


@pytest.mark.parametrize("raw, shown", [
    ("a red circle moving left. two blue squa", "a red circle moving left."),
    ("a red circle moving left and", "a red circle moving left"),
    ("two small red circles moving left over a", "two small red circles moving left"),
    ("one static green star on a striped background", "one static green star on a striped background"),
    ("  a blue ring,  ", "a blue ring"),
])
def test_captions_are_not_cut_mid_sentence(raw, shown):
    assert tidy_caption(raw) == shown


def test_a_caption_cut_at_the_token_limit_ends_at_a_clause():
    """The receiver knows the agent's token limit: a caption that reached it is ended at its last clause."""
    from types import SimpleNamespace

    from genscom.agents.testing import make_tiny_tokenizer

    agent = SimpleNamespace(card=SimpleNamespace(max_caption_tokens=8),
                            llm=SimpleNamespace(tokenizer=make_tiny_tokenizer()))
    scheme = SimpleNamespace(generating=agent)
    cut = "one small green cross moving left and a large"  # 9 words: at the limit
    assert hit_token_limit(scheme, cut) and not hit_token_limit(scheme, "a red circle")
    assert not hit_token_limit(SimpleNamespace(), cut)  # not an agent scheme
    assert tidy_caption(cut, truncated=True) == "one small green cross moving left"
    assert tidy_caption("one small green cross moving lef", truncated=True) == "one small green cross moving…"


def test_caption_task_selects_the_agent_when_set_up(decoder_dir):
    cfg = DemoConfig(profile="tiny", agent_card="some-card.yaml", regen_decoder=str(decoder_dir))
    assert schemes_for_task("caption", cfg) == ["agent"] and preferred_scheme("caption", cfg) == "agent"
    assert task_unavailable("caption", cfg) is None
    check_task("caption", "agent", cfg)


def test_labels_are_shortened_at_a_word():
    label = "two small red circles moving left over a striped background"
    assert shorten(label, 30) == "two small red circles moving…" and shorten("short", 30) == "short"


def test_receiver_draws_best_of_n_when_configured(tx, decoder_dir):
    from genscom.demo.generated import regen_markdown
    from genscom.demo.regen import regen_settings

    with pytest.raises(ValueError, match="regen_candidates"):
        DemoConfig(profile="tiny", regen_candidates=0)
    with pytest.raises(ValueError, match="regen_candidates"):
        DemoConfig(profile="tiny", regen_candidates=17)  # N x the drawing time per item: bounded
    with pytest.raises(ValueError, match="regen_candidates"):
        DemoConfig(profile="tiny", regen_candidates=True)
    best = DemoConfig(profile="tiny", gallery_size=6, num_frames=2, max_side=64, regen_decoder=str(decoder_dir),
                      regen_candidates=3)
    assert regen_settings(best)["candidates"] == 3
    rx = DemoReceiver(best, encoder=tx.encoder)
    t = tx.transmit(tx.item("synthetic/2"), TxSettings(scheme="regen", task="image regeneration", snr_db=10.0))
    res = rx.receive(t.message)
    assert res.scheme_name == "regen-best3" and res.channel_uses == t.channel_uses == 8  # nothing more sent
    assert res.regenerated is not None and res.regenerated.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert "regen-best3" in regen_markdown(res)


def test_auto_decoder_is_the_shipped_one_trained_on_the_profile():
    from genscom.demo.regen import decoder_config, regen_settings
    from genscom.schemes.regen import SHIPPED_DECODERS

    assert DemoConfig().regen_decoder == "auto"
    for profile, name in SHIPPED_DECODERS.items():  # each shipped decoder names the profile it was trained on
        assert decoder_config(name)[1]["extra"]["profile"] == profile
        cfg = DemoConfig(profile=profile)
        assert regen_settings(cfg)["decoder"] == name and task_unavailable("image regeneration", cfg) is None
    assert regen_settings(DemoConfig(profile="mini-attr-v2"))["decoder"] == "regen-mini-attr-v5"
    why = task_unavailable("image regeneration", DemoConfig(profile="tiny"))
    assert "no shipped image decoder was trained on tiny" in why and "--regen-decoder" in why, why
