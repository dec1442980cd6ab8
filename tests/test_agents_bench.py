"""Caption metrics used by `genscom bench caption` / `bench edge`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genscom.data.synthetic import CAPTION_VOCABULARY, make_captions, sample_attributes
from genscom.metrics.text import attribute_flags, bleu4, caption_scores, names_object_and_colour

ATTR = {"groups": [{"shape": "cross", "colour": "green", "count": 2, "size": "small", "motion": "left"}]}


def test_bleu4_bounds() -> None:
    refs = [["two small green crosses moving left on a black background"]]
    assert bleu4(["two small green crosses moving left on a black background"], refs) == pytest.approx(1.0)
    assert bleu4(["a purple star"], refs) == 0.0
    mid = bleu4(["two small green crosses moving right on a gray background"], refs)
    assert 0.0 < mid < 1.0
    short = bleu4(["two small green crosses moving left"], refs)  # brevity penalty
    assert short < 1.0
    with pytest.raises(ValueError, match="align"):
        bleu4(["a"], [])


def test_object_and_colour_named() -> None:
    assert names_object_and_colour("two small green crosses sliding left", ATTR) == (True, True, True)
    assert names_object_and_colour("a green star and a red cross", ATTR) == (True, True, False)
    s = caption_scores(["small green crosses", "a blue ring"], [["x"], ["y"]], [ATTR, ATTR])
    assert s["object_colour_acc"] == 0.5 and s["object_acc"] == 0.5 and s["colour_acc"] == 0.5


def test_attribute_flags_parse_count_size_motion() -> None:
    v = CAPTION_VOCABULARY
    assert attribute_flags("two little green crosses drifting to the left", ATTR, v) == \
        {"count": True, "size": True, "motion": True}
    assert attribute_flags("a small green cross moving right", ATTR, v) == {"count": False, "size": True, "motion": False}
    assert attribute_flags("two big green crosses rising", ATTR, v) == {"count": True, "size": False, "motion": False}
    # no size word: neither size nor count can be read; the earliest motion phrase wins
    assert attribute_flags("green crosses sliding left then moving up", ATTR, v) == \
        {"count": False, "size": False, "motion": True}
    still = {**ATTR, "num_frames": 1}
    assert attribute_flags("two small green crosses", still, v)["motion"] is None
    s = caption_scores(["two small green crosses sliding left", "three big green crosses moving up"], [["x"], ["y"]],
                       [ATTR, ATTR], vocabulary=v)
    assert (s["count_acc"], s["size_acc"], s["motion_acc"]) == (0.5, 0.5, 0.5)
    assert "count_acc" not in caption_scores(["a"], [["x"]], [ATTR])


def test_attribute_flags_accept_every_reference_caption() -> None:
    """Every caption the dataset's own grammar writes states its first group right (an independent round trip)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        attrs = sample_attributes(rng, num_frames=8)
        for cap in make_captions(attrs, rng, 3):
            assert attribute_flags(cap, attrs, CAPTION_VOCABULARY) == {"count": True, "size": True, "motion": True}, cap
            assert names_object_and_colour(cap, attrs) == (True, True, True), cap


def test_cider_ranks_captions() -> None:
    pytest.importorskip("pycocoevalcap")
    from genscom.metrics.text import cider

    refs = [["two small green crosses moving left", "two little green crosses sliding left"],
            ["a large red circle rising over stripes", "one big red circle moving up over stripes"],
            ["three blue rings staying in place", "three blue rings that do not move"]]
    exact = cider([r[0] for r in refs], refs)
    swapped = cider([refs[1][0], refs[2][0], refs[0][0]], refs)  # every caption describes another clip
    partial = cider(["two small green stars moving left", "a large red square rising over stripes",
                     "three blue rings staying still"], refs)
    assert exact > partial > swapped >= 0.0
    assert caption_scores([r[0] for r in refs], refs)["cider"] == pytest.approx(exact)
    with pytest.raises(ValueError, match="align"):
        cider(["a"], [])


def _tiny_pair(tmp_path):
    """An understanding + generating pair on a tiny random LLM (written under ``tmp_path``)."""
    from genscom.agents.agent import Agent
    from genscom.agents.card import load_card
    from genscom.agents.testing import make_tiny_llm, tiny_card_dict

    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    llm = make_tiny_llm(tmp_path / "llm")
    u = Agent.from_card(load_card(tiny_card_dict(llm, "understanding", prompt=str(repo / "prompts/understanding.md"))))
    g = Agent.from_card(load_card(tiny_card_dict(llm, "generating", prompt=str(repo / "prompts/generating.md"))),
                        llm=u.llm, seed=1)
    return u, g


def test_caption_bench_runs_end_to_end(tmp_path) -> None:
    """The benchmark loop with tiny agents and a stub perception: rows, JSON and Markdown."""
    import json

    from genscom.agents.testing import StubEncoder
    from genscom.bench.caption import CaptionBenchConfig, run_caption_bench
    from genscom.data import create_dataset

    u, g = _tiny_pair(tmp_path)
    ds = create_dataset("synthetic", split="test", n_items=4, seed=0, cache=False)
    cfg = CaptionBenchConfig(n_items=4, snrs=(-5.0, 20.0), baselines=("jpeg-ldpc",), out_dir=str(tmp_path / "out"),
                             batch_size=2)
    res = run_caption_bench(cfg, agents=(u, g), encoder=StubEncoder(), dataset=ds)
    rows = [(r.scheme.split("-")[0], r.snr_db, r.extra.get("uses")) for r in res["records"]]
    assert rows == [("agent", None, None), ("agent", -5.0, None), ("agent", 20.0, None), ("jpeg", -5.0, "own"),
                    ("jpeg", 20.0, "own"), ("jpeg", -5.0, "equal budget"), ("jpeg", 20.0, "equal budget")]
    agent_uses = res["records"][1].channel_uses
    own = {r.snr_db: r for r in res["records"] if r.extra.get("uses") == "own"}
    # the adaptive MCS: a denser code at +20 dB than at -5 dB, the bitstream decodes at both, at many more uses
    assert own[20.0].channel_uses < own[-5.0].channel_uses and own[20.0].failure_rate == own[-5.0].failure_rate == 0
    assert own[20.0].channel_uses > 5 * agent_uses
    equal = [r for r in res["records"] if r.extra.get("uses") == "equal budget"]
    assert all(r.failure_rate == 1.0 and r.channel_uses == agent_uses for r in equal)
    blob = json.loads((tmp_path / "out" / "caption.json").read_text())
    assert blob["benchmark"] == "caption" and len(blob["records"]) == 7
    assert all(0.0 <= r["metrics"]["object_colour_acc"] <= 1.0 for r in blob["records"])
    assert all({"count_acc", "size_acc", "motion_acc"} <= set(r["metrics"]) for r in blob["records"])
    assert all(0.0 <= r["ci95"]["object_colour_acc"] <= 0.5 for r in blob["records"])
    table = (tmp_path / "out" / "caption.md").read_text()
    assert "| failure_rate |" in table and "| uses |" in table and "equal budget" in table
    assert (tmp_path / "out" / "caption.md").read_text().startswith("| scheme")
    assert (tmp_path / "out" / "caption.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_caption_bench_adaptive_repeat_gives_each_snr_its_own_budget(tmp_path) -> None:
    """With ``repeat="adaptive"`` the agent spends more channel uses at -5 dB than at +20 dB, and the JPEG row at
    the agent's budget follows it SNR by SNR."""
    from genscom.agents.testing import StubEncoder
    from genscom.bench.caption import CaptionBenchConfig, run_caption_bench
    from genscom.data import create_dataset

    u, g = _tiny_pair(tmp_path)
    ds = create_dataset("synthetic", split="test", n_items=2, seed=0, cache=False)
    cfg = CaptionBenchConfig(n_items=2, snrs=(-5.0, 20.0), baselines=("jpeg-ldpc",), out_dir=str(tmp_path / "out"),
                             batch_size=2, repeat="adaptive")
    res = run_caption_bench(cfg, agents=(u, g), encoder=StubEncoder(), dataset=ds)
    agent = {r.snr_db: r.channel_uses for r in res["records"] if r.scheme.startswith("agent") and r.snr_db is not None}
    assert res["records"][0].scheme.endswith("-adaptive")
    assert agent[-5.0] >= agent[20.0] + 2 * 6  # 3-4 sends of 6 symbols at -5 dB, one at +20 dB
    equal = {r.snr_db: r.channel_uses for r in res["records"] if r.extra.get("uses") == "equal budget"}
    assert equal == {s: float(math.ceil(u)) for s, u in agent.items()}
    with pytest.raises(ValueError, match="repeat must be"):
        CaptionBenchConfig(repeat="often")
    with pytest.raises(ValueError, match="max_repeat"):
        CaptionBenchConfig(repeat="adaptive", max_repeat=0)
    with pytest.raises(ValueError, match="fusion"):
        CaptionBenchConfig(fusion=-1.0)
