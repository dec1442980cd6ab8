"""Caption metrics used by `genscom bench caption` / `bench edge`."""

from __future__ import annotations

import pytest

from genscom.bench.caption import bleu4, caption_scores, names_object_and_colour

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


def test_cider_ranks_captions() -> None:
    pytest.importorskip("pycocoevalcap")
    from genscom.bench.caption import cider

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
