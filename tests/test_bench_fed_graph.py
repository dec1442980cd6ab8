"""``genscom bench fed --task graph`` (issue 12, part 5): five methods, per-round records, JSON, PNG.

The tiny run uses one noise group (one Simulation Engine session for its three federations, ~30 s on the 2-core
CPU); one more engine run checks that a federation of the bench is the engine's own run (~15 s).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")
pytest.importorskip("sklearn")

from genscom.bench.fed_graph import (METHODS, quick_graph_bench_config, run_graph_bench,  # noqa: E402
                                     run_graph_group, tower_params)
from genscom.federated.engine import GraphFedConfig, build_data  # noqa: E402

TINY = dict(clients=3, rounds=2, local_epochs=2, n_train=180, n_test=48, num_frames=2, skb_dim=16, hidden_dim=16,
            batch_size=16, alpha=5.0, warmup_rounds=1, backend_cpus=2, seed=0)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "fed"
    return out, run_graph_bench(GraphFedConfig(**TINY), groups=("severe",), out_dir=out, quick=True, command="test")


def test_tiny_graph_bench_writes_every_method_and_round(bench) -> None:
    out, res = bench
    doc = json.loads((out / "fed_graph.json").read_text())
    assert doc["benchmark"] == "fed" and doc["meta"]["task"] == "graph" and doc["meta"]["quick"] is True
    assert doc["meta"]["centralised_error_aware"] is False
    recs = doc["records"]
    assert {r["scheme"] for r in recs} == set(METHODS)
    assert {r["group"] for r in recs} == {"severe"}
    for m in METHODS:  # rounds 0 (initial adapter) .. 2, once each
        assert sorted(r["round"] for r in recs if r["scheme"] == m) == [0, 1, 2], m
    for r in recs:
        for k in ("scheme", "channel", "snr_db", "channel_uses", "metrics", "ci95"):
            assert k in r
        assert 0.0 < r["metrics"]["RSUM"] <= 600.0
        assert 0.0 <= r["metrics"]["i2t_R@1"] <= 1.0 and 0.0 <= r["metrics"]["t2i_R@1"] <= 1.0
        for k in ("RSUM_personal", "i2t_R@1_personal", "t2i_R@1_personal"):  # every method, every round
            assert k in r["metrics"], (r["scheme"], r["round"], k)
        assert 0.0 < r["metrics"]["RSUM_personal"] <= 600.0
        assert 0.0 <= r["metrics"]["i2t_R@1_personal"] <= 1.0 and 0.0 <= r["metrics"]["t2i_R@1_personal"] <= 1.0
        if r["scheme"] == "local-only":  # each user's own adapter: personal is the headline number
            for k in ("RSUM", "i2t_R@1", "t2i_R@1"):
                assert r["metrics"][f"{k}_personal"] == r["metrics"][k]
        has_noise = "noise_precision" in r["metrics"]
        assert has_noise == (r["scheme"] == "graph-error-aware" and r["round"] > 0), r
        if has_noise:
            assert 0.0 <= r["metrics"]["noise_precision"] <= 1.0 and 0.0 <= r["metrics"]["noise_recall"] <= 1.0
        fed = r["scheme"] in ("graph-error-aware", "graph-fedavg", "homogeneous-fedavg")
        if fed and r["round"] > 0:  # adapter-only updates are smaller than full-model ones
            assert 0 < r["bytes_up"] < r["bytes_up_full"] and r["clients_ok"] == 3
        else:
            assert "bytes_up" not in r
    # the federated runs trained: the final adapters differ from the initial one
    final = {r["scheme"]: r["metrics"]["RSUM"] for r in recs if r["round"] == 2}
    first = {r["scheme"]: r["metrics"]["RSUM"] for r in recs if r["round"] == 0}
    assert final["graph-fedavg"] != first["graph-fedavg"] and final["centralised"] != first["centralised"]
    # federated users' own models drift from the average: personalised differs from global after training
    fin = {r["scheme"]: r["metrics"] for r in recs if r["round"] == 2}
    assert fin["graph-fedavg"]["RSUM_personal"] != fin["graph-fedavg"]["RSUM"]
    assert (out / "fed_graph.png").stat().st_size > 1000 and (out / "fed_graph.md").is_file()
    md = (out / "fed_graph.md").read_text()
    assert "RSUM_personal" in md and "t2i_R@1_personal" in md
    assert len(res["records"]) == len(recs) == 5 * 3


def test_one_session_federation_matches_run_graph_federated(bench) -> None:
    """The bench runs its federations in one Simulation Engine session; each must be the engine's own run."""
    from genscom.federated.engine import run_graph_federated

    cfg = GraphFedConfig(**{**TINY, "groups": ("severe",)})
    ref = run_graph_federated(cfg, data=build_data(cfg)).history
    rows = [r for r in bench[1]["records"] if r.scheme == "graph-error-aware"]
    assert [r.extra["round"] for r in rows] == [h["round"] for h in ref] == [0, 1, 2]
    for r, h in zip(rows, ref):
        assert "RSUM_personal" in h
        for k in ("RSUM", "i2t_R@1", "t2i_R@1", "noise_precision", "noise_recall", "RSUM_personal",
                  "i2t_R@1_personal", "t2i_R@1_personal"):
            if k in h:
                assert r.metrics[k] == pytest.approx(h[k], abs=1e-6), (k, h["round"])
        if h["round"] > 0:
            assert r.extra["bytes_up"] == int(h["bytes_up"])


def test_local_only_and_centralised_without_the_engine() -> None:
    rows = run_graph_group(GraphFedConfig(**TINY), "clean", methods=("local-only", "centralised"))
    assert list(rows) == ["local-only", "centralised"]
    for m, hist in rows.items():
        assert [h["round"] for h in hist] == [0, 1, 2]
        assert all(0.0 < h["RSUM"] <= 600.0 for h in hist) and "bytes_up" not in hist[-1]
        assert all(0.0 < h["RSUM_personal"] <= 600.0 for h in hist)
    # local-only round 0 is the initial adapter on each user's own pair, averaged: not the pooled mean's value
    assert rows["local-only"][2]["RSUM"] != rows["local-only"][0]["RSUM"]


def test_tower_params_and_bad_input() -> None:
    data = build_data(GraphFedConfig(**TINY))
    p = tower_params(data)
    assert p["img:stats"] == 2 * 104 and p["img:pca"] == 48 * (2 * 8 * 8 * 3) + 2 * 8 * 8 * 3 and p["txt:hash"] == 0
    assert p["txt:tfidf"] == data.towers.tfidf.idf_.size * 33
    assert quick_graph_bench_config().clients == 4
    with pytest.raises(ValueError, match="methods"):
        run_graph_bench(GraphFedConfig(**TINY), methods=("graph-magic",))
    with pytest.raises(ValueError, match="groups"):
        run_graph_bench(GraphFedConfig(**TINY), groups=("awful",))


def test_cli_task_flag_refuses_bad_input(tmp_path) -> None:
    from typer.testing import CliRunner

    from genscom.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["bench", "fed", "--task", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "channel or graph" in res.output
    res = runner.invoke(app, ["bench", "fed", "--task", "graph", "--local-steps", "3", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--local-steps" in res.output
    assert not any(tmp_path.iterdir())
