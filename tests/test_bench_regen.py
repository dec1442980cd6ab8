"""``genscom bench regen`` with tiny random parts: what it records, what it writes, and its fixed points."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("diffusers")

from genscom.bench.regen import (RegenBenchConfig, Scorer, grey_frames, jpeg_fits_budget, read_accuracy,  # noqa: E402
                                 run_regen_bench)
from genscom.data.synthetic import SyntheticClips  # noqa: E402
from genscom.encoders import create_encoder  # noqa: E402
from genscom.generation.attributes import (AttributeClassifier, AttributeClassifierConfig,  # noqa: E402
                                           largest_object_labels)
from genscom.generation.deepjscc import DeepJSCC, DeepJSCCConfig  # noqa: E402
from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig  # noqa: E402
from genscom.schemes.regen import key_frame  # noqa: E402

N, S = 5, 32


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    ds = SyntheticClips("test", n_items=N, num_frames=2, size=S, cache=False)
    enc = create_encoder("mini-attr").eval()
    dim = int(enc.encode_clips(ds.stacked_frames()[:1]).shape[-1])
    dec = DiffusionDecoder(DiffusionDecoderConfig(image_size=S, cond_dim=dim, block_out_channels=(8, 16),
                                                  cross_attention_dim=8, attention_head_dim=4, sample_steps=2,
                                                  extra={"profile": "mini-attr"})).eval()
    clf = AttributeClassifier(AttributeClassifierConfig(image_size=S, channels=(8, 16), hidden=16)).eval()
    jscc = DeepJSCC(DeepJSCCConfig(image_size=S, channel_uses=dim // 2, filters=8, n_down=2)).eval()
    return {"dataset": ds, "encoder": enc, "decoder": dec, "classifier": clf, "deepjscc": jscc, "dim": dim}


def test_bench_regen_records_files_and_fixed_points(parts, tmp_path):
    cfg = RegenBenchConfig(n_items=N, snrs=(-5.0, 20.0), grid_snrs=(20.0,), jpeg_qualities=(50,), grid_items=2,
                           steps=1, out_dir=str(tmp_path / "out"))
    res = run_regen_bench(cfg, command="test", **{k: parts[k] for k in ("dataset", "encoder", "decoder",
                                                                          "classifier", "deepjscc")})
    data = json.loads((tmp_path / "out" / "regen.json").read_text())
    assert data["benchmark"] == "regen"
    for f in ("regen.md", "regen.png", "regen_grid.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0, f
    recs = data["records"]
    assert {r["scheme"] for r in recs} == {"regen", "deepjscc", "jpeg-ldpc", "real"}
    for r in recs:
        assert {"attr_acc", "shape_acc", "colour_acc", "emb_cos", "psnr_db"} <= set(r["metrics"])
        assert set(r["ci95"]) == set(r["metrics"])
        assert 0.0 <= r["metrics"]["attr_acc"] <= min(r["metrics"]["shape_acc"], r["metrics"]["colour_acc"])
    meta = data["meta"]
    assert 0.0 <= meta["classifier_acc_real"] <= 1.0
    assert meta["sampling"]["steps"] == 1 and meta["sampling"]["images_per_s"] > 0
    # the source frames scored against themselves: identical embeddings, PSNR at its cap
    real = next(r for r in recs if r["scheme"] == "real")
    assert real["metrics"]["emb_cos"] == pytest.approx(1.0, abs=1e-4)
    assert real["metrics"]["psnr_db"] == pytest.approx(100.0)
    assert real["metrics"]["attr_acc"] == pytest.approx(meta["classifier_acc_real"])
    # the semantic rows cost ceil(d / 2) channel uses on AWGN (no pilots); DeepJSCC the same by construction
    for r in recs:
        if r["scheme"] in ("regen", "deepjscc") and r["snr_db"] is not None:
            assert r["channel_uses"] == parts["dim"] // 2
    # JPEG at the equal budget: nothing fits, every item is a counted failure shown as grey
    budget_rows = [r for r in recs if r["scheme"] == "jpeg-ldpc" and r.get("uses") == "equal budget"]
    assert len(budget_rows) == 2 and all(r["failure_rate"] == 1.0 and r["channel_uses"] == 192 for r in budget_rows)
    assert meta["jpeg_budget"]["fits"] is False
    assert "jpeg-ldpc q1 (192 uses)" in (tmp_path / "out" / "regen.md").read_text()
    # JPEG at its own uses: at 20 dB the adaptive link decodes every item, far above grey in PSNR
    own = next(r for r in recs if r["scheme"] == "jpeg-ldpc" and r.get("uses") == "own" and r["snr_db"] == 20.0)
    assert own["failure_rate"] == 0.0 and own["channel_uses"] > 192
    assert own["metrics"]["psnr_db"] > budget_rows[0]["metrics"]["psnr_db"] + 10
    assert len(res["records"]) == len(recs)


def test_scorer_grey_frames_psnr_matches_hand_computation(parts):
    ds = parts["dataset"]
    frames = ds.stacked_frames()
    src = frames[:, 1:2]
    score = Scorer(source=key_frame(frames), source_emb=parts["encoder"].encode_clips(src).float(),
                   labels=largest_object_labels(ds), classifier=parts["classifier"], encoder=parts["encoder"])
    out = score(grey_frames(N, S))
    mse = (src[:, 0].float() - 128.0).pow(2).flatten(1).mean(1)
    want = 10 * torch.log10(255.0 ** 2 / mse)
    torch.testing.assert_close(out["psnr_db"], want.float(), atol=1e-3, rtol=0)
    assert out["attr_acc"].shape == (N,) and set(out["attr_acc"].tolist()) <= {0.0, 1.0}


def test_jpeg_does_not_fit_the_semantic_budget(parts):
    fit = jpeg_fits_budget(parts["dataset"].stacked_frames(), 192)
    assert fit["fits"] is False
    assert fit["uses_needed"] == math.ceil(8 * fit["smallest_jpeg_bytes"] / fit["info_bits_per_use"])
    assert fit["smallest_jpeg_bytes"] > 192 * fit["info_bits_per_use"] / 8  # more bytes than the budget carries


def test_config_rejects_grid_snrs_outside_snrs():
    with pytest.raises(ValueError, match="grid_snrs"):
        RegenBenchConfig(snrs=(0.0, 10.0), grid_snrs=(5.0,))
    with pytest.raises(ValueError, match="jpeg_qualities"):
        RegenBenchConfig(jpeg_qualities=(0,))


def test_read_accuracy_scores_the_readers_arg_max_and_is_empty_without_a_reader(parts):
    dim = parts["dim"]
    dec = DiffusionDecoder(DiffusionDecoderConfig(image_size=S, cond_dim=dim, block_out_channels=(8, 16),
                                                  cross_attention_dim=8, attention_head_dim=4,
                                                  reader_classes={"shape": 6, "colour": 8}, reader_hidden=8)).eval()
    emb = torch.randn(20, dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        read = {k: v.argmax(-1) for k, v in dec.read(emb).items()}
    # labels that agree with the reader on the first 12 shapes and the first 15 colours (both: the first 12)
    labels = {"shape": torch.where(torch.arange(20) < 12, read["shape"], (read["shape"] + 1) % 6),
              "colour": torch.where(torch.arange(20) < 15, read["colour"], (read["colour"] + 1) % 8)}
    assert read_accuracy(dec, emb, labels) == {"read_attr_acc": 0.6, "read_shape_acc": 0.6, "read_colour_acc": 0.75}
    assert read_accuracy(parts["decoder"], emb, labels) == {}
    assert read_accuracy(dec, None, labels) == {}


def test_bench_regen_best_of_n_row_same_uses_and_its_own_speed(parts, tmp_path):
    cfg = RegenBenchConfig(n_items=N, snrs=(20.0,), grid_snrs=(20.0,), jpeg_qualities=(), grid_items=2, steps=1,
                           deepjscc=None, candidates=2, budget=150, out_dir=str(tmp_path / "out"))
    run_regen_bench(cfg, command="test", **{k: parts[k] for k in ("dataset", "encoder", "decoder", "classifier")})
    data = json.loads((tmp_path / "out" / "regen.json").read_text())
    regen = [r for r in data["records"] if r["scheme"] == "regen" and r["snr_db"] == 20.0]
    plain = next(r for r in regen if "candidates" not in r)
    best = next(r for r in regen if r.get("candidates") == 2)
    assert best["channel_uses"] == plain["channel_uses"] == parts["dim"] // 2
    assert data["meta"]["sampling"]["best_of_n"]["candidates"] == 2
    assert data["meta"]["sampling"]["best_of_n"]["images_per_s"] > 0
    assert "regen best-of-2" in (tmp_path / "out" / "regen.md").read_text()
    assert "jpeg-ldpc q1 (150 uses)" in (tmp_path / "out" / "regen.md").read_text()   # the budget it was given
    with pytest.raises(ValueError, match="candidates"):
        RegenBenchConfig(candidates=0)
