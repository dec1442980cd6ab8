"""Federated channel-adapter updates (Flower): users, weights, aggregation, training, resume, benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("flwr")

from genscom.adaptation.adapter import AdapterConfig, build_adapter  # noqa: E402
from genscom.adaptation.train import AdapterData  # noqa: E402
from genscom.federated import (FedConfig, FedUser, build_user_data, get_weights, make_client,  # noqa: E402
                               make_strategy, parse_users, run_federated, set_weights)

D = 32
ADAPTER = {"k": 16, "hidden": 48, "depth": 1, "group_size": 8}


@pytest.fixture(scope="module")
def data() -> AdapterData:
    """Clustered embeddings: 24 caption classes, clips = class vector + noise (R@1 is learnable)."""
    g = torch.Generator().manual_seed(0)
    n = 3 * (96 + 48)
    classes = F.normalize(torch.randn(24, D, generator=g), dim=-1)
    lab = torch.randint(24, (n,), generator=g)
    clips = classes[lab] + 0.25 * torch.randn(n, D, generator=g)
    return AdapterData.from_pairs(clips, [f"class {int(v)}" for v in lab], classes[lab], torch.arange(n))


def _max_r1(val: AdapterData) -> float:
    """Upper bound on t2v R@1: items sharing a caption string share one query, whose top hit is one item."""
    return len(set(val.caption_ids.tolist())) / len(val.caption_ids)


def _cfg(tmp_path: Path, **kw) -> FedConfig:
    base = dict(users=(FedUser("a", "awgn", -5, 5), FedUser("b", "rayleigh", 0, 10), FedUser("c", "rician", -5, 10)),
                items_per_user=96, val_per_user=48, adapter=dict(ADAPTER), rounds=3, local_steps=8, batch_size=32,
                lr=3e-3, run_dir=str(tmp_path / "run"))
    base.update(kw)
    return FedConfig(**base)


def test_parse_users_and_config_errors() -> None:
    users = parse_users("awgn:-10:0, rayleigh:0:20:15")
    assert [u.name for u in users] == ["u0", "u1"]
    assert users[0].eval_snr == -5.0 and users[1].eval_snr == 15.0 and users[1].channel == "rayleigh"
    with pytest.raises(ValueError, match="channel:snr_min:snr_max"):
        parse_users("awgn:-10")
    with pytest.raises(ValueError, match="numbers of dB"):
        parse_users("awgn:low:0")
    with pytest.raises(ValueError, match="channel must be one of"):
        parse_users("wifi:0:10")
    with pytest.raises(ValueError, match="snr_min_db"):
        FedUser("x", "awgn", 10, 0)
    with pytest.raises(ValueError, match="unique"):
        FedConfig(users=(FedUser("a"), FedUser("a")))
    with pytest.raises(ValueError, match="strategy"):
        FedConfig(strategy="fedsgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounds"):
        FedConfig(rounds=0)
    assert FedConfig(users=[{"name": "z", "channel": "rician"}]).users[0] == FedUser("z", "rician")


def test_weights_roundtrip_and_mismatch() -> None:
    a = build_adapter(AdapterConfig(dim=D, **ADAPTER), seed=0)
    b = build_adapter(AdapterConfig(dim=D, **ADAPTER), seed=1)
    set_weights(b, get_weights(a))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="same adapter config"):
        set_weights(b, get_weights(a)[:-1])
    other = build_adapter(AdapterConfig(dim=D, **{**ADAPTER, "hidden": 64}), seed=0)
    with pytest.raises(ValueError, match="shape"):
        set_weights(b, get_weights(other))


def test_flower_fedavg_is_the_example_weighted_mean(tmp_path: Path) -> None:
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    cfg = _cfg(tmp_path)
    rng = np.random.default_rng(0)
    w1 = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    w2 = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    strategy = make_strategy(cfg, [np.zeros_like(w) for w in w1])
    res = [(None, FitRes(status=Status(code=Code.OK, message=""), parameters=ndarrays_to_parameters([x.copy() for x in w]),
                         num_examples=n, metrics={"loss": float(n)})) for w, n in ((w1, 100), (w2, 300))]
    agg, metrics = strategy.aggregate_fit(1, res, [])
    out = parameters_to_ndarrays(agg)
    for o, a, b in zip(out, w1, w2):
        np.testing.assert_allclose(o, 0.25 * a + 0.75 * b, rtol=1e-5, atol=1e-6)
    assert metrics["loss"] == pytest.approx(0.25 * 100 + 0.75 * 300)


def test_client_is_a_flower_numpy_client_and_fedprox_pulls_to_global(data: AdapterData, tmp_path: Path) -> None:
    import flwr

    cfg = _cfg(tmp_path)
    shards = build_user_data(cfg, data=data)
    acfg = AdapterConfig(dim=D, snr_range_db=(-5.0, 10.0), **ADAPTER)
    client = make_client(cfg, cfg.users[0], *shards[0], acfg, 0)
    assert isinstance(client, flwr.client.NumPyClient)
    assert client.to_client() is not None
    start = client.get_parameters({})

    def drift(mu: float) -> float:
        c = make_client(cfg, cfg.users[0], *shards[0], acfg, 0)  # same seeds: same batches and noise
        new, n, metrics = c.fit([w.copy() for w in start], {"local_steps": 6, "proximal_mu": mu})
        assert n == 96 and np.isfinite(metrics["loss"])
        return float(sum(((x - y) ** 2).sum() for x, y in zip(new, start)))

    assert drift(50.0) < 0.8 * drift(0.0)
    # Evaluation at 60 dB (noise ~1e-3 of the signal): R@1 is the noiseless adapter's, ranked here by hand
    # (numpy, every caption a query over the held-out clips); Flower's loss is 1 - R@1.
    clear = make_client(cfg, FedUser("clear", "awgn", -5.0, 10.0, eval_snr_db=60.0), *shards[0], acfg, 0)
    loss, n, metrics = clear.evaluate(start, {})
    val = shards[0][1]
    ref = build_adapter(acfg, seed=99)
    set_weights(ref, start)
    with torch.no_grad():
        rx = ref.eval()(val.clips, 60.0, channel=None).embeddings.numpy()
    owner = np.repeat(np.arange(len(val.clips)), np.diff(val.offsets.numpy()))
    r1 = float(np.mean((val.texts.numpy()[val.caption_ids.numpy()] @ rx.T).argmax(axis=1) == owner))
    assert n == 48 and metrics["t2v_R@1"] == pytest.approx(r1) and loss == pytest.approx(1.0 - r1)
    assert r1 <= _max_r1(val)
    with pytest.raises(ValueError, match="items"):
        build_user_data(_cfg(tmp_path, items_per_user=500), data=data)


def test_federated_rounds_learn_and_resume_exactly(data: AdapterData, tmp_path: Path) -> None:
    full = run_federated(_cfg(tmp_path, run_dir=str(tmp_path / "full"), local_only_baseline=False), data=data,
                         progress=False)
    hist = full["history"]
    assert [h["round"] for h in hist] == [1, 2, 3]
    assert hist[-1]["loss"] < hist[0]["loss"]
    init = sum(full["initial"].values()) / 3
    final = sum(hist[-1]["t2v_R@1"].values()) / 3
    assert final > init + 0.1, (init, final)
    # stop after 2 rounds, resume to 3: the same trajectory
    run_federated(_cfg(tmp_path, run_dir=str(tmp_path / "part"), rounds=2, local_only_baseline=False), data=data,
                  progress=False)
    resumed = run_federated(_cfg(tmp_path, run_dir=str(tmp_path / "part"), local_only_baseline=False,
                                 output_dir=str(tmp_path / "global")), data=data, resume=True, progress=False)
    assert resumed["history"] == hist
    assert (tmp_path / "global" / "config.json").is_file()
    with pytest.raises(ValueError, match="lr"):
        run_federated(_cfg(tmp_path, run_dir=str(tmp_path / "part"), lr=1e-2), data=data, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="resume"):
        run_federated(_cfg(tmp_path, run_dir=str(tmp_path / "none")), data=data, resume=True, progress=False)


@pytest.mark.parametrize("strategy", ["fedprox", "fedavgm"])
def test_other_flower_strategies_run(data: AdapterData, tmp_path: Path, strategy: str) -> None:
    res = run_federated(_cfg(tmp_path, strategy=strategy, rounds=2, local_steps=4, local_only_baseline=False,
                             server_momentum=0.5), data=data, progress=False)
    assert len(res["history"]) == 2 and all(np.isfinite(h["loss"]) for h in res["history"])


def test_fed_bench_writes_results_and_plot(data: AdapterData, tmp_path: Path) -> None:
    from genscom.bench.fed import run_fed_bench

    cfg = _cfg(tmp_path, rounds=2, local_steps=4)
    out = run_fed_bench(cfg, out_dir=tmp_path / "out", data=data, progress=False)
    blob = json.loads((tmp_path / "out" / "fed.json").read_text())
    assert blob["benchmark"] == "fed" and blob["meta"]["machine"]
    schemes = {(r["scheme"], r["user"]) for r in blob["records"]}
    assert {("initial", "a"), ("fedavg", "b"), ("local-only", "c")} <= schemes
    # Every R@1 is a count over the 48 held-out captions of a user, at most the user's _max_r1 bound;
    # mean_R@1_other_users averages two such users: a multiple of 1/96 under the mean of their bounds.
    bound = {u.name: _max_r1(val) for u, (_, val) in zip(cfg.users, build_user_data(cfg, data=data))}
    for r in blob["records"]:
        assert r["metrics"]["t2v_R@1"] * 48 == pytest.approx(round(r["metrics"]["t2v_R@1"] * 48), abs=1e-9)
        assert r["metrics"]["t2v_R@1"] <= bound[r["user"]] + 1e-12, r
    local = [r for r in blob["records"] if r["scheme"] == "local-only"]
    assert len(local) == 3
    for r in local:
        other = r["metrics"]["mean_R@1_other_users"]
        cap = np.mean([b for name, b in bound.items() if name != r["user"]])
        assert other * 96 == pytest.approx(round(other * 96), abs=1e-9) and other <= cap + 1e-12, (other, cap)
    assert all(r["channel_uses"] == 16 for r in blob["records"])
    assert (tmp_path / "out" / "fed.png").stat().st_size > 1000
    assert out["png"].name == "fed.png"


def test_cli_rejects_bad_users() -> None:
    from typer.testing import CliRunner

    from genscom.cli import app

    res = CliRunner().invoke(app, ["bench", "fed", "--users", "awgn:-10"])
    assert res.exit_code != 0 and "channel:snr_min:snr_max" in res.output
