import json
import math

import pytest

from genscom.bench.results import markdown_table, plot_metric_vs_snr
from genscom.results import Record, load_results, make_meta, write_results


def _meta():
    return make_meta(command="genscom bench test", seed=0, dataset="synthetic", n_items=10, profile="tiny", quick=True)


def test_results_file_has_protocol_shape(tmp_path):
    recs = [Record(scheme="noiseless", channel="none", snr_db=None, channel_uses=0, metrics={"t2v_R@1": 1.0}),
            Record(scheme="semantic-analog", channel="awgn", snr_db=-5.0, channel_uses=192, cbr=0.002,
                   metrics={"t2v_R@1": 0.5, "x": math.inf}, ci95={"t2v_R@1": 0.01}, extra={"mcs": "qpsk-1/2"})]
    p = write_results(tmp_path / "r.json", "retrieval", _meta(), recs)
    data = json.loads(p.read_text())
    assert data["benchmark"] == "retrieval"
    for k in ("genscom_version", "command", "date", "machine", "seed", "dataset", "n_items", "profile", "quick"):
        assert k in data["meta"]
    r = data["records"][1]
    assert r["snr_db"] == -5.0 and r["channel_uses"] == 192 and r["mcs"] == "qpsk-1/2"
    assert r["metrics"]["x"] is None  # JSON has no inf
    assert load_results(p)["records"][0]["scheme"] == "noiseless"
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_results_validation_errors(tmp_path):
    with pytest.raises(ValueError, match="missing required keys"):
        write_results(tmp_path / "r.json", "x", {"seed": 0}, [])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(bad)
    bad.write_text(json.dumps({"benchmark": "x", "meta": {}, "records": [{"scheme": "a"}]}))
    with pytest.raises(ValueError, match="lacks"):
        load_results(bad)
    with pytest.raises(FileNotFoundError, match="genscom bench"):
        load_results(tmp_path / "none.json")


def test_markdown_and_plot(tmp_path):
    recs = [Record(scheme="a", channel="awgn", snr_db=s, channel_uses=10, metrics={"t2v_R@1": s / 10}) for s in (0.0, 5.0)]
    md = markdown_table(recs, ["scheme", "snr_db", "t2v_R@1"])
    assert md.splitlines()[0] == "| scheme | snr_db | t2v_R@1 |" and "0.500" in md
    png = plot_metric_vs_snr({"a": ([0.0, 5.0], [0.1, 0.5])}, tmp_path / "p.png", ylabel="R@1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os
    import stat

    from genscom.utils import atomic_write_text

    p = atomic_write_text(tmp_path / "x.txt", "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
