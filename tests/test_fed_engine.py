"""The graph adapter task on Flower's Simulation Engine (issue 12, part 4): 3 tiny heterogeneous clients, 2 rounds.

Each run starts Ray (about 10-15 s on the 2-core CPU); the three runs share one module-scoped data set.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")
pytest.importorskip("ray")
pytest.importorskip("sklearn")

from genscom.federated.engine import GraphFedConfig, build_data, finetune_heads, run_graph_federated  # noqa: E402
from genscom.federated.graph_adapter import GraphMultimodalAdapter, aggregate, build_graph_adapter  # noqa: E402

# 3 users: 0 = (img:stats, txt:tfidf, clean), 1 = (img:pca, txt:tfidf, mild), 2 = (img:stats, txt:hash, severe)
TINY = dict(clients=3, rounds=2, local_epochs=2, n_train=180, n_test=48, num_frames=2, skb_dim=16, hidden_dim=16,
            batch_size=16, alpha=5.0, warmup_rounds=1, backend_cpus=2, seed=0)


def _cfg(out: Path, **kw) -> GraphFedConfig:
    return GraphFedConfig(**{**TINY, "out_dir": str(out), **kw})


@pytest.fixture(scope="module")
def data():
    return build_data(GraphFedConfig(**TINY))


@pytest.fixture(scope="module")
def clean_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return out, run_graph_federated(_cfg(out), data=data, keep_updates=True)


@pytest.fixture(scope="module")
def fail_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fail")
    return out, run_graph_federated(_cfg(out, fail_rounds={1: [1]}), data=data, keep_updates=True)


def _global(out: Path, rnd: int) -> dict[str, torch.Tensor]:
    return GraphMultimodalAdapter.from_pretrained(out / "rounds" / f"round-{rnd:03d}").state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys=None) -> None:
    for k in keys if keys is not None else a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


def test_users_are_heterogeneous(data) -> None:
    towers = [(u.image_tower, u.text_tower, u.group) for u in data.users]
    assert towers == [("img:stats", "txt:tfidf", "clean"), ("img:pca", "txt:tfidf", "mild"),
                      ("img:stats", "txt:hash", "severe")]
    assert data.encoders == {"img:stats": 104, "img:pca": 48, "txt:tfidf": 32, "txt:hash": 128}
    for u in data.users:  # injected noise: round(fraction * n) swapped pairs
        frac = {"clean": 0.0, "mild": 0.2, "severe": 0.5}[u.group]
        assert int(u.noisy.sum()) == max(int(round(frac * len(u.image))), 0)
        assert u.image.shape[1] == data.encoders[u.image_tower] and u.text.shape[1] == data.encoders[u.text_tower]


def test_simulation_engine_run_changes_the_global_adapter_and_reports(clean_run, data) -> None:
    out, res = clean_run
    init = build_graph_adapter(res.model.config, seed=TINY["seed"]).state_dict()
    final = res.model.state_dict()
    assert any(not torch.equal(init[k], final[k]) for k in init)
    assert [r["round"] for r in res.history] == [0, 1, 2]
    for r in res.history[1:]:
        assert r["clients_ok"] == [0, 1, 2] and r["failures"] == 0 and r["aggregated"]
        assert 0.0 <= r["noise_precision"] <= 1.0 and 0.0 <= r["noise_recall"] <= 1.0
        assert math.isfinite(r["loss"]) and r["num-examples"] == sum(len(u.image) for u in data.users)
        assert 0 < r["bytes_up"] < r["bytes_down"]  # users send the shared part and their own heads only
    for r in res.history:  # RSUM: six recalls x 100 over 48 held-out items; chance is 100 * 2 * (1+5+10)/48
        assert 0.0 < r["RSUM"] <= 600.0 and set(r["per_tower_pair"]) == {
            "img:pca+txt:tfidf", "img:stats+txt:hash", "img:stats+txt:tfidf"}
    # every round is saved (resumable); the last saved adapter is the result
    _assert_same(_global(out, 2), final)
    state = json.loads((out / "state.json").read_text())
    assert state["round"] == 2 and state["adapter"] == "rounds/round-002"
    report = json.loads((out / "fed_run.json").read_text())
    assert [r["round"] for r in report["history"]] == [0, 1, 2] and len(report["users"]) == 3


def test_heads_are_aggregated_only_among_users_that_hold_them(clean_run) -> None:
    out, res = clean_run
    log = res.rounds_log[0]  # round 1
    ups = {c: (s, n) for c, s, n in log["updates"]}
    assert sorted(ups) == [0, 1, 2]
    # each user sent the shared part and only its own heads
    heads = {c: sorted({k.split(".")[1] for k in s if k.startswith("heads.")}) for c, (s, _) in ups.items()}
    assert heads == {0: ["img:stats", "txt:tfidf"], 1: ["img:pca", "txt:tfidf"], 2: ["img:stats", "txt:hash"]}
    g1 = _global(out, 1)
    (s0, n0), (s1, n1), (s2, n2) = ups[0], ups[1], ups[2]
    # a head held by one user is that user's; by two, their example-weighted mean (not the mean of all three)
    _assert_same(g1, s1, [k for k in s1 if k.startswith("heads.img:pca.")])
    _assert_same(g1, s2, [k for k in s2 if k.startswith("heads.txt:hash.")])
    for k in (k for k in s0 if k.startswith("heads.img:stats.")):
        torch.testing.assert_close(g1[k], (n0 * s0[k] + n2 * s2[k]) / (n0 + n2), rtol=1e-5, atol=1e-6)
    for k in (k for k in s0 if k.startswith("heads.txt:tfidf.")):
        torch.testing.assert_close(g1[k], (n0 * s0[k] + n1 * s1[k]) / (n0 + n1), rtol=1e-5, atol=1e-6)
    for k in (k for k in s0 if not k.startswith("heads.")):
        torch.testing.assert_close(g1[k], (n0 * s0[k] + n1 * s1[k] + n2 * s2[k]) / (n0 + n1 + n2),
                                   rtol=1e-5, atol=1e-6)


def test_a_client_that_raises_is_dropped_and_does_not_change_the_aggregate(fail_run, clean_run) -> None:
    out, res = fail_run
    r1, r2 = res.history[1], res.history[2]
    assert r1["clients_ok"] == [0, 2] and r1["failures"] == 1 and r1["aggregated"]
    assert r2["clients_ok"] == [0, 1, 2] and r2["failures"] == 0  # the client is back in round 2
    assert any("injected failure" in d for d in res.rounds_log[0]["dropped"])
    init = build_graph_adapter(res.model.config, seed=TINY["seed"]).state_dict()
    ups = [(s, n) for c, s, n in res.rounds_log[0]["updates"]]
    g1 = _global(out, 1)
    # the round-1 global is exactly the aggregate of the two good clients' updates over the initial adapter
    _assert_same(g1, aggregate(ups, base=init))
    # the failed client's own head (img:pca, no one else has it) kept its initial value
    _assert_same(g1, init, [k for k in init if k.startswith("heads.img:pca.")])
    # and the two good clients sent what they send when nobody fails (deterministic local training)
    clean = {c: s for c, s, _ in clean_run[1].rounds_log[0]["updates"]}
    for c, s, _ in res.rounds_log[0]["updates"]:
        _assert_same(s, clean[c])


def test_min_fit_fraction_keeps_the_global_adapter_and_runs_resume(fail_run, data, tmp_path) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(fail_run[0], out)
    before = _global(out, 2)
    # resume for a third round in which 2 of 3 clients fail: 1 good reply < ceil(0.5 * 3): no update
    res = run_graph_federated(_cfg(out, rounds=3, fail_rounds={0: [3], 2: [3]}), data=data, resume=True)
    assert [r["round"] for r in res.history] == [0, 1, 2, 3]
    r3 = res.history[3]
    assert r3["clients_ok"] == [1] and r3["failures"] == 2 and not r3["aggregated"]
    _assert_same(_global(out, 3), before)
    assert json.loads((out / "state.json").read_text())["round"] == 3


def _own_model_rsum(state, cfg_model, data, user) -> dict[str, float]:
    """RSUM and R@1 of a client's returned state on its own tower pair, recomputed here (strict ranks)."""
    model = GraphMultimodalAdapter(cfg_model)
    model.load_user_state(state)  # shared part + this user's heads: all that its own pair uses
    model.eval()
    img, txt = data.test.image[user.image_tower], data.test.text[user.text_tower]
    bs = TINY["batch_size"]
    with torch.no_grad():
        outs = [model(img[s:s + bs], txt[s:s + bs], image_encoder=user.image_tower, text_encoder=user.text_tower)
                for s in range(0, len(img), bs)]
    zi = torch.cat([o.image_tokens for o in outs]).double()
    zt = torch.cat([o.text_tokens for o in outs]).double()
    sim = zt @ zi.t()  # rows: text queries
    own = torch.arange(len(zi))

    def recalls(s: torch.Tensor) -> list[float]:
        rank = (s > s[own, own][:, None]).sum(1)  # items scored above the true one
        return [float((rank < k).double().mean()) for k in (1, 5, 10)]

    t2i, i2t = recalls(sim), recalls(sim.t())
    return {"RSUM": 100.0 * (sum(t2i) + sum(i2t)), "i2t_R@1": i2t[0], "t2i_R@1": t2i[0]}


def test_personalised_metric_is_each_clients_own_returned_model(clean_run, data) -> None:
    out, res = clean_run
    init = build_graph_adapter(res.model.config, seed=TINY["seed"])
    for rnd, r in enumerate(res.history):
        for k in ("RSUM_personal", "i2t_R@1_personal", "t2i_R@1_personal"):
            assert k in r, (rnd, k)
        assert 0.0 < r["RSUM_personal"] <= 600.0
        assert 0.0 <= r["i2t_R@1_personal"] <= 1.0 and 0.0 <= r["t2i_R@1_personal"] <= 1.0
    # round 0: the initial adapter on each user's own pair, mean over users
    exp0 = [_own_model_rsum(init.state_dict(), init.config, data, u) for u in data.users]
    for k in ("RSUM", "i2t_R@1", "t2i_R@1"):
        assert res.history[0][f"{k}_personal"] == pytest.approx(sum(e[k] for e in exp0) / 3, abs=1e-4), k
    # rounds 1, 2: each client's returned state (before aggregation), on its own pair, equally weighted
    for log, r in zip(res.rounds_log, res.history[1:]):
        exp = [_own_model_rsum(s, init.config, data, data.users[c]) for c, s, _ in log["updates"]]
        assert len(exp) == 3
        for k in ("RSUM", "i2t_R@1", "t2i_R@1"):
            assert r[f"{k}_personal"] == pytest.approx(sum(e[k] for e in exp) / 3, abs=1e-4), (r["round"], k)
        assert "RSUM_personal_ft" not in r  # no heads-only fine-tune by default
    # personalised differs from the global adapter's number (users' models drift from the average)
    assert res.history[-1]["RSUM_personal"] != res.history[-1]["RSUM"]


def test_finetune_heads_trains_only_the_heads_on_a_copy(data) -> None:
    from genscom.federated.engine import adapter_config
    from genscom.federated.labels import ConfidenceTracker

    cfg = GraphFedConfig(**TINY)
    model = build_graph_adapter(adapter_config(cfg, data.encoders), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    u = data.users[1]
    tracker = ConfidenceTracker(len(u.image), patience=2)
    ft = finetune_heads(model, u, tracker, epochs=1, mask=False, generator=torch.Generator().manual_seed(0))
    _assert_same(model.state_dict(), before)  # the original is untouched
    assert int(tracker.round_confidence().isfinite().sum()) == 0  # the caller's tracker saw nothing
    after = ft.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(f"heads.{u.image_tower}.") or k.startswith(f"heads.{u.text_tower}.")
                           for k in changed), changed
    assert all(p.requires_grad for p in ft.parameters())


def test_config_and_cli_refuse_bad_input(tmp_path) -> None:
    from typer.testing import CliRunner

    from genscom.cli import app

    with pytest.raises(ValueError, match="min_fit_fraction"):
        GraphFedConfig(min_fit_fraction=0.0)
    with pytest.raises(ValueError, match="groups"):
        GraphFedConfig(groups=("clean", "awful"))
    with pytest.raises(ValueError, match="threshold_method"):
        GraphFedConfig(threshold_method="median")
    with pytest.raises(ValueError, match="threshold_momentum"):
        GraphFedConfig(threshold_momentum=1.0)
    with pytest.raises(ValueError, match="personal_finetune_epochs"):
        GraphFedConfig(personal_finetune_epochs=-1)
    runner = CliRunner()
    (tmp_path / "old.txt").write_text("shipped")
    res = runner.invoke(app, ["fed", "run", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not empty" in res.output and (tmp_path / "old.txt").read_text() == "shipped"
    res = runner.invoke(app, ["fed", "run", "--quick", "--resume", "--out", str(tmp_path / "none")])
    assert res.exit_code == 2 and "state.json" in res.output
    res = runner.invoke(app, ["fed", "run", "--quick", "--fail", "1-1", "--out", str(tmp_path / "new")])
    assert res.exit_code == 2 and "client:round" in res.output
