"""The graph adapter task on Flower's Deployment Engine (issue 12, part 4): a real SuperLink and two SuperNodes.

``test_deployment_*`` start ``flower-superlink`` and two ``flower-supernode`` processes on localhost (free ports,
a temporary ``FLWR_HOME``, output to log files that failures quote), submit 2 rounds with ``flwr run`` and
read what the ServerApp saved. About 60-75 s on the shared 2-core CPU (each round every SuperNode starts a
fresh ``flwr-clientapp`` process); every wait has a timeout and the processes are stopped even on failure.
The other tests need no processes.
"""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")
pytest.importorskip("sklearn")

from genscom.federated import deploy  # noqa: E402
from genscom.federated.engine import GraphFedConfig, quick_graph_config  # noqa: E402
from genscom.federated.graph_adapter import GraphMultimodalAdapter, build_graph_adapter  # noqa: E402

# 2 users: 0 = (img:stats, txt:tfidf, clean), 1 = (img:pca, txt:tfidf, mild)
TINY = dict(clients=2, rounds=2, local_epochs=2, n_train=120, n_test=48, num_frames=2, skb_dim=16, hidden_dim=16,
            batch_size=16, alpha=5.0, warmup_rounds=1, seed=0, round_timeout_s=60.0)
RUN_TIMEOUT_S = 240.0  # the whole deployment; a hang fails here, not in CI's global timeout


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """One real deployment run: ``(result, out_dir, seconds)``."""
    root = tmp_path_factory.mktemp("deploy")
    cfg = GraphFedConfig(**TINY, out_dir=str(root / "out"))
    t0 = time.monotonic()
    res = deploy.run_local_deployment(cfg, workdir=root / "work", timeout_s=RUN_TIMEOUT_S)
    seconds = time.monotonic() - t0
    print(f"\nFlower deployment (SuperLink + 2 SuperNodes, 2 rounds): {seconds:.1f} s")
    return res, Path(res.out_dir), seconds


def _global(out: Path, rnd: int) -> dict[str, torch.Tensor]:
    return GraphMultimodalAdapter.from_pretrained(out / "rounds" / f"round-{rnd:03d}").state_dict()


def test_deployment_runs_two_rounds_with_both_supernodes_and_changes_the_global_adapter(deployed) -> None:
    res, out, seconds = deployed
    assert res.status == "finished:completed"
    assert [r["round"] for r in res.history] == [0, 1, 2]
    for r in res.history[1:]:  # both SuperNodes replied and were aggregated in every round
        assert r["clients_ok"] == [0, 1] and r["failures"] == 0 and r["aggregated"], r
        assert math.isfinite(r["loss"]) and 0 < r["bytes_up"] < r["bytes_down"]
    final = _global(out, 2)
    init = build_graph_adapter(GraphMultimodalAdapter.from_pretrained(out / "rounds" / "round-002").config,
                               seed=TINY["seed"]).state_dict()  # the ServerApp's round-0 adapter
    assert set(final) == set(init)
    assert all(bool(torch.isfinite(v).all()) for v in final.values())
    changed = [k for k in init if not torch.equal(init[k], final[k])]
    assert changed and any(not k.startswith("heads.") for k in changed)  # the shared part moved too
    assert any(not torch.equal(_global(out, 1)[k], final[k]) for k in final)  # round 2 moved it again
    state = json.loads((out / "state.json").read_text())
    assert state["round"] == 2 and state["adapter"] == "rounds/round-002"
    report = json.loads((out / "fed_run.json").read_text())
    assert report["engine"].startswith("flwr deployment") and report["run_id"] == res.run_id
    assert report["config"]["clients"] == 2 and len(report["users"]) == 2
    assert seconds < RUN_TIMEOUT_S


def test_deployment_stops_every_process_and_logs_each(deployed) -> None:
    res, _, _ = deployed
    assert sorted(res.returncodes) == ["superlink", "supernode-0", "supernode-1"]
    assert all(rc is not None for rc in res.returncodes.values())  # none left running
    for name, log in res.logs.items():
        text = Path(log).read_text(errors="replace")
        assert text.strip(), name
    assert "Fleet" in Path(res.logs["superlink"]).read_text(errors="replace")


def test_run_config_round_trips_and_refuses_unknown_keys() -> None:
    cfg = GraphFedConfig(**TINY, out_dir="runs/x")
    rc = deploy.run_config_from_config(cfg)
    assert rc["num-rounds"] == 2 and rc["num-clients"] == 2 and rc["out-dir"] == "runs/x"
    assert all(isinstance(v, (bool, int, float, str)) for v in rc.values())  # flwr's UserConfigValue
    assert deploy.config_from_run_config(rc) == cfg
    assert deploy.config_from_run_config({**rc, "out-dir": ""}).out_dir is None
    assert deploy.config_from_run_config({"quick": True, "num-rounds": 3}) == quick_graph_config(rounds=3)
    with pytest.raises(ValueError, match="unknown run-config keys"):
        deploy.config_from_run_config({"num-round": 3})
    with pytest.raises(ValueError, match="clients"):
        deploy.config_from_run_config({"num-clients": 0})
    with pytest.raises(ValueError, match="Simulation Engine"):
        deploy.run_config_from_config(GraphFedConfig(fail_rounds={1: [1]}))


def test_a_supernode_with_the_wrong_partition_is_refused() -> None:
    class Ctx:
        def __init__(self, node_config):
            self.node_config = node_config

    cfg = GraphFedConfig(**TINY)
    assert deploy._partition(Ctx({"partition-id": 1, "num-partitions": 2}), cfg) == 1
    with pytest.raises(ValueError, match="num-partitions=3"):
        deploy._partition(Ctx({"partition-id": 0, "num-partitions": 3}), cfg)
    with pytest.raises(ValueError, match="partition-id=2"):
        deploy._partition(Ctx({"partition-id": 2, "num-partitions": 2}), cfg)
    with pytest.raises(ValueError, match="node-config"):
        deploy._partition(Ctx({}), cfg)
    with pytest.raises(ValueError, match="partition-id"):
        deploy.supernode_command("127.0.0.1:9093", partition_id=2, num_partitions=2, runtime_port=9101)


def test_the_written_app_is_a_valid_flower_app(tmp_path) -> None:
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.config_utils import load_and_validate

    app = tmp_path / "app"
    deploy.write_app(app, GraphFedConfig(**TINY, out_dir="runs/x"))
    config, warnings = load_and_validate(app / "pyproject.toml", check_module=True)  # finds the component modules
    assert warnings == []
    comps = config["tool"]["flwr"]["app"]["components"]
    assert comps == {"serverapp": deploy.SERVER_APP_REF, "clientapp": deploy.CLIENT_APP_REF}
    assert deploy.config_from_run_config(config["tool"]["flwr"]["app"]["config"]).rounds == 2
    assert build_fab_from_disk(app)[:2] == b"PK"  # what `flwr run` submits
    home = tmp_path / "home"
    (home).mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "mine"\n\n[superlink.mine]\naddress = "x:1"\n')
    text = deploy.write_connection(home, "127.0.0.1:9093").read_text()
    assert 'default = "mine"' in text and "[superlink.mine]" in text and "[superlink.genscom-local]" in text
    env = deploy.deploy_env(home, base={"PATH": "/usr/bin"})
    assert env["FLWR_HOME"] == str(home.resolve()) and env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert "--disable-runtime-dependency-installation" in deploy.superlink_command(port=9093)


def test_deployment_refuses_a_busy_port_and_a_used_out_dir(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            deploy.run_local_deployment(GraphFedConfig(**TINY, out_dir=str(tmp_path / "a")), workdir=tmp_path / "w",
                                        port=busy, timeout_s=5)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "fed_run.json").write_text("{}")
    with pytest.raises(ValueError, match="earlier run"):
        deploy.run_local_deployment(GraphFedConfig(**TINY, out_dir=str(tmp_path / "b")), workdir=tmp_path / "w2")


def test_cli_fed_serve_and_client_help_and_errors(tmp_path) -> None:
    from typer.testing import CliRunner

    from genscom.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["fed", "serve", "--help"])
    assert res.exit_code == 0 and "SuperLink" in res.output and "--local-clients" in res.output
    res = runner.invoke(app, ["fed", "client", "--help"])
    assert res.exit_code == 0 and "SuperNode" in res.output and "--partition-id" in res.output
    (tmp_path / "old.txt").write_text("kept")
    res = runner.invoke(app, ["fed", "serve", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not empty" in res.output and (tmp_path / "old.txt").read_text() == "kept"
    res = runner.invoke(app, ["fed", "serve", "--quick", "--local-clients", "5", "--out", str(tmp_path / "n")])
    assert res.exit_code == 2 and "--local-clients" in res.output
    res = runner.invoke(app, ["fed", "client", "--partition-id", "2", "--num-partitions", "2"])
    assert res.exit_code == 2 and "partition-id" in res.output
    res = runner.invoke(app, ["fed", "client", "--partition-id", "0", "--num-partitions", "2", "--superlink", "x"])
    assert res.exit_code == 2 and "HOST:PORT" in res.output


def test_processes_are_stopped_with_their_detached_children_and_deaths_are_reported(tmp_path) -> None:
    import os
    import sys

    env = {"PATH": os.environ.get("PATH", "")}
    # like flwr: a child in a session of its own (SIGTERM to our process group does not reach it)
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
            "start_new_session=True); time.sleep(120)")
    proc = deploy.start_process("parent", [sys.executable, "-c", code], env=env, log_dir=tmp_path)
    deadline = time.monotonic() + 20
    while not deploy._descendants(proc.popen.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    family = deploy._descendants(proc.popen.pid)
    assert family
    proc.stop(timeout_s=5)
    assert proc.popen.returncode is not None
    time.sleep(0.5)
    assert all(deploy._start_time(pid) != start for pid, start in family)  # the detached child is gone too
    dead = deploy.start_process("crashes", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], env=env,
                                log_dir=tmp_path)
    dead.popen.wait(timeout=30)
    with pytest.raises(RuntimeError, match=r"crashes exited during run 7(.|\n)*boom"):
        deploy.wait_for_run(7, env=env, timeout_s=5, processes=[dead])
