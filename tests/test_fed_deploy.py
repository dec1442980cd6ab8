"""The graph adapter task on Flower's Deployment Engine (issue 12, part 4): a real SuperLink and two SuperNodes.

``test_deployment_*`` start ``flower-superlink`` and two ``flower-supernode`` processes on localhost (free ports,
a temporary ``FLWR_HOME``, output to log files that failures quote), submit 2 rounds with ``flwr run`` and
read what the ServerApp saved, in the default secure mode (TLS with a generated CA, SuperNode authentication
with registered keys). About 60-75 s on the shared 2-core CPU (each round every SuperNode starts a fresh
``flwr-clientapp`` process); every wait has a timeout and the processes are stopped even on failure.
``test_secure_superlink_*`` (about 10-15 s) starts a secure SuperLink alone and shows that a SuperNode whose key
was not registered is refused (it exits; the SuperLink answers its ActivateNode with error 2004) while a
registered one is activated, and that a TLS client that does not trust the generated CA cannot connect.
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


@pytest.mark.slow  # a real SuperLink + 2 SuperNodes + TLS: 52-114 s on 2 loaded cores
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


@pytest.mark.slow  # a real SuperLink + 2 SuperNodes + TLS: 52-114 s on 2 loaded cores
def test_deployment_stops_every_process_and_logs_each(deployed) -> None:
    res, _, _ = deployed
    assert sorted(res.returncodes) == ["superlink", "supernode-0", "supernode-1"]
    assert all(rc is not None for rc in res.returncodes.values())  # none left running
    for name, log in res.logs.items():
        text = Path(log).read_text(errors="replace")
        assert text.strip(), name
    assert "Fleet" in Path(res.logs["superlink"]).read_text(errors="replace")


@pytest.mark.slow  # a real SuperLink + 2 SuperNodes + TLS: 52-114 s on 2 loaded cores
def test_deployment_is_secure_by_default(deployed) -> None:
    res, _, _ = deployed
    assert res.secure and res.certs_dir
    certs = Path(res.certs_dir)
    assert (certs / deploy.CA_CERT).is_file() and (certs / deploy.SERVER_KEY).stat().st_mode & 0o777 == 0o600
    assert sorted(Path(k).name for k in res.node_ids) == ["node-0.pub", "node-1.pub"]  # registered, nothing else
    link = Path(res.logs["superlink"]).read_text(errors="replace")
    assert "Uvicorn running on https://" in link                      # TLS
    assert "SuperNode authentication is disabled" not in link         # --enable-supernode-auth
    activated = {int(x) for x in __import__("re").findall(r"Activated node_id=(\d+)", link)}
    assert activated == set(res.node_ids.values())                    # exactly the registered keys took part
    home = Path(res.logs["superlink"]).parent.parent / "flwr-home"
    conn = __import__("tomli").loads((home / "config.toml").read_text())["superlink"][deploy.CONNECTION]
    assert conn["insecure"] is False and conn["root-certificates"] == str(certs / deploy.CA_CERT)


def _san(cert) -> set[str]:
    from cryptography import x509

    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def test_certificates_and_node_keys_are_generated_private_and_verify(tmp_path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import bytes_to_public_key, uses_nist_ec_curve

    tls = deploy.generate_certificates(tmp_path / "certs", hosts=["0.0.0.0", "link.example.org", "10.1.2.3"])
    for f in (tls.ca_cert, tls.server_cert, tls.server_key, tmp_path / "certs" / deploy.CA_KEY):
        assert f.is_file() and f.read_bytes().startswith(b"-----BEGIN ")
    for key in (tls.server_key, tmp_path / "certs" / deploy.CA_KEY):
        assert key.stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _san(cert) == {"127.0.0.1", "::1", "localhost", "link.example.org", "10.1.2.3"}  # no 0.0.0.0
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    key = serialization.load_pem_private_key(tls.server_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    # a real TLS handshake against the CA, checking the name, in memory (no sockets)
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls.server_cert, tls.server_key)
    client_ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    for name, ok in (("localhost", True), ("link.example.org", True), ("other.example.org", False)):
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        error = None
        for _ in range(10):
            for end in (client, server):
                try:
                    end.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    error = exc
            s_in.write(c_out.read())
            c_in.write(s_out.read())
            if error is not None:
                break
        assert (error is None) == ok, (name, error)
    # a second call keeps the CA (remote SuperNodes keep trusting it) and issues a new server certificate
    again = deploy.generate_certificates(tmp_path / "certs", hosts=["127.0.0.1"])
    assert again.ca_cert.read_bytes() == tls.ca_cert.read_bytes()
    assert x509.load_pem_x509_certificate(again.server_cert.read_bytes()).serial_number != cert.serial_number
    # SuperNode keys: what flwr's loaders accept, private 0600, kept on a second call
    priv, pub = deploy.generate_node_key(tmp_path / "certs" / "supernodes" / "node-0")
    assert priv.stat().st_mode & 0o777 == 0o600 and pub.name == "node-0.pub"
    sk = serialization.load_ssh_private_key(priv.read_bytes(), password=None)  # flower-supernode's loader
    assert isinstance(sk, ec.EllipticCurvePrivateKey) and isinstance(sk.curve, ec.SECP384R1)
    pk = bytes_to_public_key(try_load_public_key(pub))                      # `flwr supernode register`'s loader
    assert uses_nist_ec_curve(pk) and pk.public_numbers() == sk.public_key().public_numbers()
    assert deploy.generate_node_key(priv)[1].read_bytes() == pub.read_bytes()
    # the commands
    link = deploy.superlink_command(port=9093, tls=tls)
    assert "--insecure" not in link and "--enable-supernode-auth" in link
    assert link[link.index("--ssl-ca-certfile") + 1] == str(tls.ca_cert)
    assert link[link.index("--ssl-certfile") + 1] == str(tls.server_cert)
    assert link[link.index("--ssl-keyfile") + 1] == str(tls.server_key)
    node = deploy.supernode_command("127.0.0.1:9093", partition_id=0, num_partitions=2, runtime_port=9101,
                                    root_certificates=tls.ca_cert, auth_private_key=priv)
    assert "--insecure" not in node and node[node.index("--root-certificates") + 1] == str(tls.ca_cert)
    assert node[node.index("--auth-supernode-private-key") + 1] == str(priv)
    assert "--insecure" in deploy.superlink_command(port=9093, insecure=True)
    with pytest.raises(ValueError, match="exactly one"):
        deploy.superlink_command(port=9093)
    with pytest.raises(ValueError, match="root_certificates"):
        deploy.supernode_command("127.0.0.1:9093", partition_id=0, num_partitions=2, runtime_port=9101)


def test_secure_superlink_refuses_an_unregistered_supernode_and_an_untrusting_client(tmp_path) -> None:
    import re
    import ssl

    tls = deploy.generate_certificates(tmp_path / "certs")
    good, _ = deploy.generate_node_key(tmp_path / "certs" / "good")
    bad, _ = deploy.generate_node_key(tmp_path / "certs" / "bad")  # never registered
    port = deploy.free_port()
    address = f"127.0.0.1:{port}"
    deploy.write_connection(tmp_path / "home", address, root_certificates=tls.ca_cert)
    env = deploy.deploy_env(tmp_path / "home")
    logs = tmp_path / "logs"
    procs = []
    try:
        link = deploy.start_process("superlink", deploy.superlink_command(port=port, tls=tls), env=env, log_dir=logs,
                                    cwd=tmp_path)
        procs.append(link)
        deploy.wait_for_port("127.0.0.1", port, timeout_s=60, proc=link)
        # TLS: a client that does not trust the generated CA (system CAs only) is refused the handshake
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ssl.create_default_context(cafile=str(tls.ca_cert)).wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
        node_id = deploy.register_supernode(good.with_name("good.pub"), env=env)
        for name, key in (("good", good), ("bad", bad)):
            cmd = deploy.supernode_command(address, partition_id=0, num_partitions=2, runtime_port=deploy.free_port(),
                                           root_certificates=tls.ca_cert, auth_private_key=key, max_wait_time=30)
            procs.append(deploy.start_process(name, cmd, env=env, log_dir=logs, cwd=tmp_path))
        rc = procs[2].popen.wait(timeout=60)  # the unregistered SuperNode gives up at once
        bad_log = procs[2].log_path.read_text(errors="replace")
        assert rc != 0 and "2004" in bad_log and "Failed to activate SuperNode" in bad_log, bad_log[-2000:]
        deadline = time.monotonic() + 60
        while f"Activated node_id={node_id}" not in link.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline and procs[1].alive(), procs[1].tail()
            time.sleep(0.5)
        assert procs[1].alive()  # the registered one is connected
        text = link.log_path.read_text(errors="replace")
        assert len(re.findall(r"Activated node_id=", text)) == 1  # and nobody else
        assert re.search(r"activate-node HTTP/1.1\" 412", text)  # the SuperLink refused the unknown key
    finally:
        for p in reversed(procs):
            p.stop()


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
    text = deploy.write_connection(home, "127.0.0.1:9093", insecure=True).read_text()
    assert 'default = "mine"' in text and "[superlink.mine]" in text and "[superlink.genscom-local]" in text
    assert "insecure = true" in text
    env = deploy.deploy_env(home, base={"PATH": "/usr/bin"})
    assert env["FLWR_HOME"] == str(home.resolve()) and env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert "--disable-runtime-dependency-installation" in deploy.superlink_command(port=9093, insecure=True)
    from flwr.cli.flower_config import read_superlink_connection

    (tmp_path / "ca.pem").write_text("x")
    deploy.write_connection(home, "127.0.0.1:9094", root_certificates=tmp_path / "ca.pem")
    with pytest.MonkeyPatch.context() as mp:  # flwr's own reader of config.toml
        mp.setenv("FLWR_HOME", str(home))
        conn = read_superlink_connection(deploy.CONNECTION)
    assert conn.address == "127.0.0.1:9094" and conn.insecure is False
    assert conn.root_certificates == str((tmp_path / "ca.pem").resolve())


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
    # secure by default: --insecure is an explicit, documented opt-out, refused off localhost
    for cmd in ("serve", "client"):
        res = runner.invoke(app, ["fed", cmd, "--help"])
        text = " ".join(res.output.replace("\u2502", " ").split())  # rich's box, wrapped
        assert "--insecure" in text and "DISABLE TLS and SuperNode authentication" in text and "localhost" in text
    res = runner.invoke(app, ["fed", "serve", "--quick", "--insecure", "--host", "0.0.0.0", "--out",
                              str(tmp_path / "i")])
    assert res.exit_code == 2 and "--insecure" in res.output
    res = runner.invoke(app, ["fed", "serve", "--quick", "--allow-key", str(tmp_path / "nope.pub"), "--out",
                              str(tmp_path / "k")])
    assert res.exit_code == 2 and "public key" in res.output
    res = runner.invoke(app, ["fed", "client", "--partition-id", "0", "--num-partitions", "2"])
    assert res.exit_code == 2 and "--root-certificates" in res.output
    (tmp_path / "ca.pem").write_text("x")
    key = tmp_path / "keys" / "node"
    res = runner.invoke(app, ["fed", "client", "--partition-id", "0", "--num-partitions", "2", "--root-certificates",
                              str(tmp_path / "ca.pem"), "--auth-key", str(key)])
    assert res.exit_code == 0 and "--allow-key" in res.output, res.output  # made the key pair, started nothing
    assert key.stat().st_mode & 0o777 == 0o600 and key.with_name("node.pub").read_text().startswith("ecdsa-sha2-")


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
