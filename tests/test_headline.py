"""Headline analyses of the retrieval benchmark on hand-built records with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from genscom.bench.headline import (
    equal_budget,
    family_of,
    family_references,
    overhead_at_semantic_accuracy,
    overhead_reduction_per_snr,
    plot_frontier,
    rate_frontier,
    shannon_floor,
)
from genscom.results import Record


def _r(scheme: str, snr: float | None, uses: float, r1: float, channel: str = "awgn") -> Record:
    return Record(scheme=scheme, channel="none" if snr is None else channel, snr_db=snr, channel_uses=uses,
                  metrics={"t2v_R@1": r1})


RECORDS = [
    _r("adapted-k192", None, 0, 0.90), _r("h264-ldpc", None, 0, 0.80),
    # 0 dB: the adapter reaches 0.95 x 0.90 = 0.855 only at k192; H.264 fails; the int4 embedding makes it
    _r("adapted-k64", 0.0, 64, 0.80), _r("adapted-k192", 0.0, 192, 0.86),
    _r("h264-ldpc", 0.0, 5000, 0.005), _r("digital-embedding-int4", 0.0, 3000, 0.84),
    # 10 dB: k64 suffices; H.264 at 1300 uses reaches 0.79 >= 0.95 x 0.80
    _r("adapted-k64", 10.0, 64, 0.87), _r("adapted-k192", 10.0, 192, 0.89),
    _r("h264-ldpc", 10.0, 1300, 0.79), _r("digital-embedding-int4", 10.0, 900, 0.70),
]


def test_families_and_references() -> None:
    assert [family_of(s) for s in ("adapted-k64", "semantic-analog-x29", "h264-ldpc-qpsk-1/2",
                                   "digital-embedding-int4", "noiseless")] == \
        ["adapted", "semantic", "h264", "digital-embedding", None]
    ref = family_references(RECORDS, encoder_r1=0.85)
    assert ref == {"adapted": 0.90, "h264": 0.80, "digital-embedding": 0.85}  # int4 has no own row: the encoder's


def test_rate_frontier_takes_the_cheapest_row_over_the_target() -> None:
    f = rate_frontier(RECORDS, reference=family_references(RECORDS, encoder_r1=0.85))["awgn"]
    assert f["adapted"]["+0"]["channel_uses"] == 192 and f["adapted"]["+10"]["channel_uses"] == 64
    assert f["h264"]["+0"] is None and f["h264"]["+10"]["scheme"] == "h264-ldpc"
    assert f["digital-embedding"]["+0"]["channel_uses"] == 3000  # 0.84 >= 0.95 x 0.85 = 0.8075
    assert f["digital-embedding"]["+10"] is None
    with pytest.raises(ValueError, match="target"):
        rate_frontier(RECORDS, reference={}, target=0.0)


def test_overhead_reduction_against_the_best_classic_row() -> None:
    o = overhead_reduction_per_snr(RECORDS, reference=family_references(RECORDS, encoder_r1=0.85))["awgn"]
    # 0 dB: best classic is int4 at 3000 uses with R@1 0.84; cheapest semantic row >= 0.84 is k192
    assert o["+0"]["classic"] == "digital-embedding-int4" and o["+0"]["semantic"] == "adapted-k192"
    assert o["+0"]["reduction"] == pytest.approx(1 - 192 / 3000)
    # 10 dB: H.264 at 1300 (R@1 0.79); k64 (0.87) is enough
    assert o["+10"]["reduction"] == pytest.approx(1 - 64 / 1300)


def test_overhead_reduction_says_when_semantic_loses() -> None:
    recs = [_r("h264-ldpc", None, 0, 0.8), _r("h264-ldpc", 20.0, 1000, 0.8), _r("adapted-k64", 20.0, 64, 0.5)]
    o = overhead_reduction_per_snr(recs, reference=family_references(recs, encoder_r1=0.8))["awgn"]["+20"]
    assert o["reduction"] is None and o["classic"] == "h264-ldpc"


def _rc(scheme: str, snr: float, uses: float, r1: float, ci: float) -> Record:
    return Record(scheme=scheme, channel="awgn", snr_db=snr, channel_uses=uses, metrics={"t2v_R@1": r1},
                  ci95={"t2v_R@1": ci})


def test_at_least_as_good_means_inside_the_classic_interval() -> None:
    """A semantic row 0.010 under the classic row counts when the classic interval is +-0.012, not when +-0.008."""
    refs = [_r("h264-ldpc", None, 0, 0.93), _r("adapted-k64", None, 0, 0.92)]
    for ci, counts in ((0.012, True), (0.008, False)):
        recs = [*refs, _rc("h264-ldpc", 5.0, 2000, 0.92, ci), _rc("adapted-k64", 5.0, 64, 0.91, 0.01)]
        o = overhead_reduction_per_snr(recs, reference=family_references(recs, encoder_r1=0.9))["awgn"]["+5"]
        assert (o["reduction"] == pytest.approx(1 - 64 / 2000)) if counts else (o["reduction"] is None)
        assert o["classic"] == "h264-ldpc" and o["classic_R@1"] == 0.92


def test_overhead_at_semantic_accuracy_lets_the_semantic_row_set_the_level() -> None:
    """The adapter at 0.86 (its target 0.855) against the cheapest classic row at least as good: int4 at 0.90
    (3000 uses), not int2 at 0.80 (cheaper, but worse than 0.86 - 0.01)."""
    recs = [_r("adapted-k192", None, 0, 0.90), _r("digital-embedding-int4", None, 0, 0.93),
            _rc("adapted-k64", 0.0, 64, 0.70, 0.01), _rc("adapted-k192", 0.0, 192, 0.86, 0.01),
            _rc("digital-embedding-int2", 0.0, 1500, 0.80, 0.01), _rc("digital-embedding-int4", 0.0, 3000, 0.90, 0.01),
            _rc("adapted-k192", 10.0, 192, 0.50, 0.01), _rc("digital-embedding-int4", 10.0, 900, 0.90, 0.01)]
    o = overhead_at_semantic_accuracy(recs, reference=family_references(recs, encoder_r1=0.9))["awgn"]
    assert o["+0"]["semantic"] == "adapted-k192" and o["+0"]["classic"] == "digital-embedding-int4"
    assert o["+0"]["reduction"] == pytest.approx(1 - 192 / 3000)
    assert o["+10"] is None  # no semantic row reaches its target at 10 dB
    # the strict headline: int4 (0.90 +- 0.01) sets the level; the adapter's 0.86 is outside that interval
    strict = overhead_reduction_per_snr(recs, reference=family_references(recs, encoder_r1=0.9))["awgn"]["+0"]
    assert strict["classic"] == "digital-embedding-int4" and strict["reduction"] is None


def test_equal_budget_scores_chance_when_nothing_fits() -> None:
    e = equal_budget(RECORDS, budget=192, chance=0.001)["awgn"]
    assert e["adapted"] == pytest.approx((0.86 + 0.89) / 2)
    assert e["h264"] == pytest.approx(0.001) and e["digital-embedding"] == pytest.approx(0.001)


def test_shannon_floor_and_frontier_plot(tmp_path: Path) -> None:
    assert shannon_floor(1024, 10 * math.log10(3)) == pytest.approx(5.0)  # log2(1024)/log2(4)
    assert shannon_floor(1000, 20.0) < shannon_floor(1000, 0.0)
    ref = family_references(RECORDS, encoder_r1=0.85)
    png = plot_frontier(rate_frontier(RECORDS, reference=ref), tmp_path / "f.png", n_items=1000)
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
