"""``genscom bench fed --task graph --seeds``: the final round over seeds, mean and Student-t interval."""

from __future__ import annotations

import json
import math

import pytest

from genscom.bench.fed_graph import seed_interval, summarise_seeds
from genscom.results import Record, make_meta, write_results


def _run(path, seed: int, rsum: dict[tuple[str, str], float], *, rounds: int = 2, lr: float = 1e-3):
    records = []
    for (group, scheme), final in rsum.items():
        for rnd in range(rounds + 1):
            value = final if rnd == rounds else final / 10  # earlier rounds must not be summarised
            metrics = {"RSUM": value, "RSUM_personal": value + 1, "i2t_R@1": 0.1, "t2i_R@1": 0.2}
            if scheme == "graph-error-aware":
                metrics.update(noise_precision=0.5 + seed / 10, noise_recall=0.4)
            records.append(Record(scheme=scheme, channel="none", snr_db=None, channel_uses=None, metrics=metrics,
                                  extra={"group": group, "round": rnd}))
    meta = make_meta(command="test", seed=seed, dataset="synthetic", n_items=10, profile="cpu", quick=False,
                     config={"clients": 10, "lr": lr, "seed": seed})
    return write_results(path, "fed", meta, records)


def test_seed_interval_matches_a_hand_computed_t_interval() -> None:
    mean, half = seed_interval([10.0, 20.0, 30.0])
    assert mean == pytest.approx(20.0)
    assert half == pytest.approx(4.303 * 10.0 / math.sqrt(3))  # t(0.975, 2 dof) * sd / sqrt(n)
    assert seed_interval([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        seed_interval([])


def test_summary_reads_the_final_round_of_each_seed(tmp_path) -> None:
    paths = [_run(tmp_path / f"s{s}.json", s, {("severe", "graph-error-aware"): 100.0 + 10 * s,
                                               ("severe", "local-only"): 40.0}) for s in range(3)]
    res = summarise_seeds(paths, tmp_path / "sum")
    data = json.loads((tmp_path / "sum" / "fed_graph_seeds.json").read_text())
    assert data["benchmark"] == "fed" and data["meta"]["seeds"] == [0, 1, 2]
    by = {r["scheme"]: r for r in data["records"]}
    ea = by["graph-error-aware"]
    assert ea["metrics"]["RSUM"] == pytest.approx(110.0) and ea["per_seed"]["RSUM"] == [100.0, 110.0, 120.0]
    assert ea["ci95"]["RSUM"] == pytest.approx(4.303 * 10.0 / math.sqrt(3), abs=1e-3)
    assert ea["metrics"]["noise_precision"] == pytest.approx(0.6)
    assert by["local-only"]["ci95"]["RSUM"] == 0.0 and "noise_precision" not in by["local-only"]["metrics"]
    assert (tmp_path / "sum" / "fed_graph_seeds.png").read_bytes()[:4] == b"\x89PNG"
    assert "graph-error-aware" in (tmp_path / "sum" / "fed_graph_seeds.md").read_text()
    assert len(res["records"]) == 2


def test_summary_refuses_mixed_settings_repeated_seeds_and_one_file(tmp_path) -> None:
    a = _run(tmp_path / "a.json", 0, {("mild", "local-only"): 1.0})
    b = _run(tmp_path / "b.json", 1, {("mild", "local-only"): 2.0}, lr=5e-4)
    c = _run(tmp_path / "c.json", 0, {("mild", "local-only"): 3.0})
    with pytest.raises(ValueError, match="different settings"):
        summarise_seeds([a, b], tmp_path / "x")
    with pytest.raises(ValueError, match="share a seed"):
        summarise_seeds([a, c], tmp_path / "x")
    with pytest.raises(ValueError, match=">= 2 seeds"):
        summarise_seeds([a], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_seeds_flag_refuses_bad_lists_before_running(tmp_path) -> None:
    from typer.testing import CliRunner

    from genscom.cli import app

    runner = CliRunner()
    for bad, msg in (("0", "at least two"), ("0,0", "at least two"), ("0,x", "integers")):
        res = runner.invoke(app, ["bench", "fed", "--task", "graph", "--seeds", bad, "--out", str(tmp_path)])
        assert res.exit_code == 2 and msg in res.output, res.output
    res = runner.invoke(app, ["bench", "fed", "--task", "graph", "--seeds", "0,1", "--seed", "3",
                              "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not both" in res.output
    assert not any(tmp_path.iterdir())
