r"""The graph adapter task on Flower's *Deployment Engine*: a SuperLink, SuperNodes and ``flwr run``.

:mod:`~genscom.federated.engine` runs the task on Flower's Simulation Engine (one process, Ray). This
module runs the SAME ``ClientApp`` and ``ServerApp`` (:func:`~genscom.federated.engine.graph_client_app`,
:func:`~genscom.federated.engine.graph_server_app`, the strategy of
:func:`~genscom.federated.engine.make_graph_strategy`) as separate processes that talk over the network:

* a **SuperLink** (``flower-superlink``): the coordinator. In flwr 1.42 it serves the Fleet API (SuperNodes
  connect to it), the Control API (``flwr run`` submits to it) and the Runtime API on ONE HTTP port
  (``--host``/``--port``); it starts the ``ServerApp`` of a submitted run in a subprocess
  (``--isolation subprocess``: it launches ``flower-superexec``, which launches ``flwr-serverapp``);
* one **SuperNode** per user (``flower-supernode --superlink HOST:PORT --node-config
  "partition-id=K num-partitions=N"``), on this machine or on others; for every message it launches a
  ``flwr-clientapp`` process that runs the ``ClientApp`` for user ``K`` of ``N`` and exits;
* ``flwr run APP_DIR CONNECTION``: builds a FAB (a zip of the app directory) and submits it to the SuperLink.

The apps, importable by reference (what the app directory's ``pyproject.toml`` names):

* :data:`server_app` (``genscom.federated.deploy:server_app``): reads the run config
  (``context.run_config``, :func:`config_from_run_config`), builds the held-out set
  (:func:`~genscom.federated.engine.build_data`, deterministic in ``seed``) and runs
  ``graph_server_app(cfg, data, result)``: rounds through the ``Grid``, evaluation, the global adapter saved
  after every round to ``<out-dir>/rounds/round-NNN/`` (round 0 is not saved: rebuild it with
  ``build_graph_adapter(config, seed=seed)``), ``<out-dir>/state.json``, and at the end
  ``<out-dir>/fed_run.json`` (per-round history, ``"engine": "flwr deployment"``). ``<out-dir>`` is a path
  on the SuperLink's machine (a relative one from the directory ``flower-superlink`` was started in);
  empty: ``$FLWR_HOME/genscom-runs/run-<run_id>``;
* :data:`client_app` (``genscom.federated.deploy:client_app``): user ``partition-id`` of the run's
  ``num-clients`` users (the node config's ``num-partitions`` must equal ``num-clients``); it rebuilds the
  same users from ``seed`` and runs the engine's train function.

The app directory is generated, not shipped: :func:`write_app` writes ``APP_DIR/pyproject.toml`` with

.. code-block:: toml

    [project]
    name = "genscom-fed-graph"
    version = "1.0.0"
    [tool.flwr.app]
    publisher = "genscom"
    [tool.flwr.app.components]
    serverapp = "genscom.federated.deploy:server_app"
    clientapp = "genscom.federated.deploy:client_app"
    [tool.flwr.app.config]          # every key of RUN_CONFIG_FIELDS, from a GraphFedConfig
    num-rounds = 2
    num-clients = 2
    ...

(so ``flwr run APP_DIR genscom-local -c "num-rounds=5"`` overrides any of them), and
:func:`write_connection` writes the SuperLink connection to ``$FLWR_HOME/config.toml``
(``[superlink.genscom-local] address = "127.0.0.1:9093", insecure = false, root-certificates =
"/abs/certs/ca.pem"``). flwr 1.42 reads SuperLink connections only from there; a ``[tool.flwr.federations]``
table in the app's ``pyproject.toml`` is legacy and ``flwr run`` migrates it into ``config.toml``, so none is
written.

Security (the default; ``insecure=True`` / ``--insecure`` turns all of it off, for a trusted localhost only):

* **TLS.** :func:`generate_certificates` (the ``cryptography`` package; no openssl CLI) makes a self-signed CA
  (``certs/ca.pem``, key ``ca.key``; reused while it exists) and the SuperLink's certificate
  (``superlink.pem``, key ``superlink.key``; SAN 127.0.0.1, ::1, localhost, ``--host`` and ``cert_hosts``); private
  keys are created 0600. The SuperLink runs with ``--ssl-ca-certfile ca.pem --ssl-certfile superlink.pem
  --ssl-keyfile superlink.key`` (HTTPS on its one port, for the Fleet, Control and Runtime APIs; it passes
  ``--root-certificates ca.pem`` on to its own ``flower-superexec``), SuperNodes with ``--root-certificates
  ca.pem``, and ``flwr run``/``ls``/``log``/``supernode register`` through the connection above. TLS
  authenticates the SuperLink to its peers, not the peers to it (no client certificates).
* **SuperNode authentication.** The SuperLink runs with ``--enable-supernode-auth``: it refuses SuperNodes
  that register themselves (``RegisterNode``: error 2001, registration disabled) and activates only a
  SuperNode whose public key was registered beforehand through the Control API (``flwr supernode register
  KEY.pub CONNECTION``, :func:`register_supernode`); every Fleet request is signed with the node's key (signed
  timestamp, checked by flwr's ``NodeAuthMiddleware``, HTTP 401 otherwise). :func:`generate_node_key` makes
  one EC P-384 key pair per SuperNode in OpenSSH format (what ``flower-supernode
  --auth-supernode-private-key`` and ``flwr supernode register`` load); :func:`run_local_deployment` registers
  exactly the local SuperNodes' keys and ``allowed_keys`` (remote ones) before any SuperNode starts. A
  SuperNode with any other key gets ``ActivateNode`` refused (HTTP 412, error 2004 "Failed to activate
  SuperNode") and exits (code 305); it never receives work. (``--auth-list-public-keys`` of older flwr is
  refused by 1.42.)
* **Not authenticated by flwr 1.42 (open source).** The Control API (``flwr run``, ``flwr supernode
  register``, ``flwr ls``) shares the port and has no user authentication without Flower's enterprise OIDC
  plugin: whoever can reach ``host:port`` can submit runs and register SuperNode keys. The Runtime API
  (same port) hands a run's ServerApp task to whoever asks for it first (``AcquireTask``; later calls use
  that task's token): ``--superexec-auth-secret-file`` is ignored with ``--isolation subprocess``. Hence
  ``--host`` defaults to 127.0.0.1; on a network, firewall the port to the SuperNodes' machines. The SuperNode's own
  Runtime API (``--port``, for its ``flwr-clientapp`` processes) listens on 127.0.0.1 only, plain HTTP.

What is bounded, and by whom:

* flwr's ``Control`` API refuses a FAB over 10 MB (``FAB_MAX_SIZE``); pushed message objects must match
  their content hash and belong to a message the SuperLink expects; arrays travel in chunks of at most
  ``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE`` (5 MB). flwr 1.42's HTTP server (uvicorn + FastAPI) sets no limit on a
  request body, and its protobuf middleware reads the whole body before the node-authentication check:
  an oversized request is not refused by size at the transport level. ``GRPC_MAX_MESSAGE_LENGTH`` (2 GB)
  applies only to the legacy gRPC Fleet/Control servers, which are off by default and not used here;
  there is no command-line flag to lower either.
* genscom's ``ServerApp`` (:func:`~genscom.federated.engine.make_graph_strategy`, ``_check_update``) drops a
  reply that is malformed (missing arrays or metrics, a bad ``num-examples``) or whose state has unknown or
  missing entries, a wrong shape or non-finite values: an accepted update is exactly the size of the global
  adapter, so what is averaged is bounded; a round with too few good replies leaves the adapter unchanged.
* SuperNodes accept work only from the SuperLink they verified by TLS, and run only the app the SuperLink
  sends (FAB installs install no dependencies here, see below).

Offline, nothing installed at run time: the SuperLink is started with
``--disable-runtime-dependency-installation`` (otherwise it runs ``uv sync`` for every run: network); the
SuperNode installs nothing unless given ``--allow-runtime-dependency-installation``. Installing a FAB only
unzips it into ``$FLWR_HOME/apps/``; genscom, torch and flwr must be installed in the environment of every
SuperLink and SuperNode. :func:`deploy_env` also sets ``FLWR_TELEMETRY_ENABLED=0`` and
``FLWR_DISABLE_UPDATE_CHECK=1`` (both otherwise contact flower.ai) and ``FLWR_HOME`` (installed FABs,
``config.toml``).

By hand, one machine, three terminals plus one to submit (``genscom fed serve --local-clients 2`` does all
of it)::

    export FLWR_HOME=/tmp/flwr FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
    python -c "from pathlib import Path; from genscom.federated.deploy import *; \
        from genscom.federated.engine import quick_graph_config as q; \
        generate_certificates(Path('certs')); \
        generate_node_key(Path('certs/n0')); generate_node_key(Path('certs/n1')); \
        write_app(Path('app'), q(clients=2, rounds=2, out_dir='/tmp/fed-deploy')); \
        write_connection(Path('/tmp/flwr'), '127.0.0.1:9093', root_certificates=Path('certs/ca.pem'))"
    flower-superlink --ssl-ca-certfile certs/ca.pem --ssl-certfile certs/superlink.pem \
        --ssl-keyfile certs/superlink.key --enable-supernode-auth --disable-runtime-dependency-installation --port 9093
    flwr supernode register certs/n0.pub genscom-local; flwr supernode register certs/n1.pub genscom-local
    flower-supernode --root-certificates certs/ca.pem --auth-supernode-private-key certs/n0 \
        --superlink 127.0.0.1:9093 --port 9101 --node-config "partition-id=0 num-partitions=2"
    flower-supernode --root-certificates certs/ca.pem --auth-supernode-private-key certs/n1 \
        --superlink 127.0.0.1:9093 --port 9102 --node-config "partition-id=1 num-partitions=2"
    flwr run app genscom-local --stream

The SuperNodes' ``--port`` is their own Runtime API (default 9094): two on one machine need two ports.
``--insecure`` on all of them instead (and ``insecure = true`` in the connection) means plain HTTP without TLS
or SuperNode authentication: for a trusted localhost only.

Example:
    >>> from genscom.federated.engine import quick_graph_config
    >>> res = run_local_deployment(quick_graph_config(clients=2, rounds=2, out_dir="runs/fed-deploy"),
    ...                            workdir=Path("runs/fed-deploy/deploy"))          # doctest: +SKIP
    >>> [r["clients_ok"] for r in res.history[1:]]                                   # doctest: +SKIP
    [[0, 1], [0, 1]]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from genscom.federated.engine import (RESULTS_NAME, GraphFedConfig, GraphFedResult, build_data, graph_client_app,
                                      graph_server_app, quick_graph_config)

UserConfigValue = Union[bool, float, int, str]  # flwr.app.user_config.UserConfigValue

APP_NAME = "genscom-fed-graph"
APP_VERSION = "1.0.0"
PUBLISHER = "genscom"
SERVER_APP_REF = "genscom.federated.deploy:server_app"
CLIENT_APP_REF = "genscom.federated.deploy:client_app"
CONNECTION = "genscom-local"   # SuperLink connection name in $FLWR_HOME/config.toml
DEFAULT_PORT = 9093            # the SuperLink's one HTTP port (Fleet + Control + Runtime API)
ENGINE_NAME = "flwr deployment (SuperLink + SuperNodes, flwr run)"

# run-config key (pyproject [tool.flwr.app.config], `flwr run -c`) -> GraphFedConfig field
RUN_CONFIG_FIELDS: dict[str, str] = {
    "num-rounds": "rounds", "num-clients": "clients", "local-epochs": "local_epochs", "groups": "groups",
    "n-train": "n_train", "n-test": "n_test", "num-frames": "num_frames", "frame-size": "frame_size",
    "alpha": "alpha", "skb-dim": "skb_dim", "hidden-dim": "hidden_dim", "batch-size": "batch_size", "lr": "lr",
    "error-aware": "error_aware", "patience": "patience", "warmup-rounds": "warmup_rounds",
    "min-fit-fraction": "min_fit_fraction", "round-timeout-s": "round_timeout_s", "seed": "seed",
    "out-dir": "out_dir",
}
QUICK_KEY = "quick"  # optional run-config key: base values from quick_graph_config() for keys not given
_FLOAT_FIELDS = {"alpha", "lr", "min_fit_fraction", "round_timeout_s"}


# --------------------------------------------------------------------------- run config <-> GraphFedConfig
def config_from_run_config(run_config: Mapping[str, UserConfigValue]) -> GraphFedConfig:
    """The :class:`~genscom.federated.engine.GraphFedConfig` of a run config (``context.run_config``).

    Keys are those of :data:`RUN_CONFIG_FIELDS` (e.g. ``num-rounds``, ``num-clients``, ``seed``, ``out-dir``;
    ``groups`` is comma-separated, ``out-dir`` ``""`` means none) plus ``quick`` (bool): keys not given take
    the values of :func:`~genscom.federated.engine.quick_graph_config` with ``quick``, else of
    ``GraphFedConfig()``. Fault injection (``fail_rounds``) and custom noise levels are simulation-only.

    Raises:
        ValueError: an unknown key, or a value ``GraphFedConfig`` refuses.
    """
    unknown = sorted(set(run_config) - set(RUN_CONFIG_FIELDS) - {QUICK_KEY})
    if unknown:
        raise ValueError(f"unknown run-config keys {unknown}; known: {sorted([*RUN_CONFIG_FIELDS, QUICK_KEY])}")
    over: dict[str, Any] = {}
    for key, name in RUN_CONFIG_FIELDS.items():
        if key not in run_config:
            continue
        value = run_config[key]
        if name == "groups":
            value = tuple(g.strip() for g in str(value).split(",") if g.strip())
        elif name == "out_dir":
            value = str(value) or None
        elif name == "error_aware":
            if not isinstance(value, bool):
                raise ValueError(f"run config {key} must be true or false, got {value!r}")
        elif name in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        over[name] = value
    quick = run_config.get(QUICK_KEY, False)
    if not isinstance(quick, bool):
        raise ValueError(f"run config {QUICK_KEY} must be true or false, got {quick!r}")
    return quick_graph_config(**over) if quick else GraphFedConfig(**over)


def run_config_from_config(cfg: GraphFedConfig) -> dict[str, UserConfigValue]:
    """Every key of :data:`RUN_CONFIG_FIELDS` with ``cfg``'s value (inverse of :func:`config_from_run_config`).

    Raises:
        ValueError: ``cfg`` injects failures or changes the noise levels (simulation-only settings).
    """
    if cfg.fail_rounds:
        raise ValueError("fail_rounds (fault injection) is only for the Simulation Engine (genscom fed run --fail)")
    if cfg.noise != GraphFedConfig().noise:
        raise ValueError("custom noise levels are only for the Simulation Engine")
    out: dict[str, UserConfigValue] = {}
    for key, name in RUN_CONFIG_FIELDS.items():
        value = getattr(cfg, name)
        if name == "groups":
            value = ",".join(value)
        elif name == "out_dir":
            value = "" if value is None else str(value)
        out[key] = value
    return out


# --------------------------------------------------------------------------- the apps
def _partition(context: Any, cfg: GraphFedConfig) -> int:
    """The user this SuperNode plays: node config ``partition-id`` of ``num-partitions`` (= ``num-clients``)."""
    node = context.node_config
    if "partition-id" not in node or "num-partitions" not in node:
        raise ValueError("this SuperNode has no partition: start it with --node-config "
                         "'partition-id=K num-partitions=N' (genscom fed client does)")
    pid, n = int(node["partition-id"]), int(node["num-partitions"])
    if n != cfg.clients:
        raise ValueError(f"SuperNode num-partitions={n} but the run has num-clients={cfg.clients}; start the "
                         f"SuperNodes with num-partitions={cfg.clients}")
    if not 0 <= pid < n:
        raise ValueError(f"SuperNode partition-id={pid} is not in 0..{n - 1}")
    return pid


def _deployed_train(message: Any, context: Any) -> Any:
    """One round of local training on this SuperNode's user (a fresh ``flwr-clientapp`` process per message).

    The users are rebuilt from the run config's ``seed`` (the same on every node and on the server); the
    engine's ``ClientApp`` then trains user ``partition-id`` and replies with its state and metrics.
    """
    cfg = config_from_run_config(context.run_config)
    _partition(context, cfg)
    return graph_client_app(cfg, build_data(cfg))(message, context)


def _deployed_main(grid: Any, context: Any) -> None:
    """The server's whole run: the engine's ``ServerApp`` for the run config, then ``fed_run.json``."""
    from flwr.supercore.utils import get_flwr_home

    cfg = config_from_run_config(context.run_config)
    if cfg.out_dir is None:
        cfg = dataclasses.replace(cfg, out_dir=str(get_flwr_home() / "genscom-runs" / f"run-{context.run_id}"))
    t0 = time.perf_counter()
    data = build_data(cfg)
    result = GraphFedResult(out_dir=cfg.out_dir)

    def log_round(rec: dict[str, Any]) -> None:
        from flwr.common import log

        log(logging.INFO, "genscom round %d: RSUM %.2f, clients ok %s", rec["round"], rec["RSUM"],
            rec.get("clients_ok", "-"))

    graph_server_app(cfg, data, result, on_round=log_round)(grid, context)
    result.seconds = time.perf_counter() - t0
    write_results(cfg, data, result, engine=ENGINE_NAME, extra={"run_id": int(context.run_id)})


def write_results(cfg: GraphFedConfig, data: Any, result: GraphFedResult, *, engine: str,
                  extra: Mapping[str, Any] | None = None) -> Path | None:
    """Write ``<cfg.out_dir>/fed_run.json`` (config, users, per-round history, seconds); ``None`` without out_dir."""
    if not cfg.out_dir:
        return None
    from genscom.utils import atomic_write_json

    users = [{"client": u.index, "image_tower": u.image_tower, "text_tower": u.text_tower, "group": u.group,
              "pairs": len(u.image), "noisy": int(u.noisy.sum())} for u in data.users]
    path = Path(cfg.out_dir) / RESULTS_NAME
    atomic_write_json(path, {"task": "graph", "engine": engine, "config": cfg.to_dict(), "users": users,
                             "history": result.history, "seconds": result.seconds, **dict(extra or {})})
    return path


def _make_client_app() -> Any:
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(_deployed_train)
    return app


def _make_server_app() -> Any:
    from flwr.serverapp import ServerApp

    app = ServerApp()
    app.main()(_deployed_main)
    return app


# The objects flwr loads by reference ([tool.flwr.app.components]). Plain assignments: `flwr run` checks
# them statically. Importing this module therefore imports flwr (the [fed] extra); genscom.federated does not.
client_app = _make_client_app()
server_app = _make_server_app()


# --------------------------------------------------------------------------- app directory and flwr config
def write_app(app_dir: Path, cfg: GraphFedConfig) -> Path:
    """Write the Flower app ``app_dir/pyproject.toml`` (and a README) whose run config is ``cfg``; return it.

    The directory name must be a valid Flower app name (letters, digits, ``-``/``_``); files there other than
    the two written are bundled into the FAB too, so pass a new or dedicated folder.
    """
    import tomli_w

    app_dir = Path(app_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "project": {"name": APP_NAME, "version": APP_VERSION,
                    "description": "genscom graph multimodal adapter, federated on Flower's Deployment Engine",
                    "license": "Apache-2.0", "dependencies": []},
        "tool": {"flwr": {"app": {"publisher": PUBLISHER,
                                  "components": {"serverapp": SERVER_APP_REF, "clientapp": CLIENT_APP_REF},
                                  "config": run_config_from_config(cfg)}}},
    }
    path = app_dir / "pyproject.toml"
    path.write_text("# Generated by genscom.federated.deploy.write_app; `flwr run . genscom-local` submits it.\n"
                    + tomli_w.dumps(doc), encoding="utf-8")
    (app_dir / "README.md").write_text(
        f"# {APP_NAME}\n\nThe genscom graph adapter on Flower's Deployment Engine. The code is the installed "
        f"`genscom` package ({SERVER_APP_REF}, {CLIENT_APP_REF}); this folder only carries the run config.\n",
        encoding="utf-8")
    return path


def write_connection(flwr_home: Path, address: str, *, name: str = CONNECTION, insecure: bool = False,
                     root_certificates: Path | None = None) -> Path:
    """Add SuperLink connection ``name`` (``address`` = ``HOST:PORT``) to ``flwr_home/config.toml``; return it.

    ``root_certificates``: the CA certificate (absolute path written) that ``flwr run``/``ls``/``supernode
    register`` verify the SuperLink against; ``insecure=True`` instead writes ``insecure = true`` (plain HTTP).
    Neither: TLS verified against the system's CAs. Other connections there are kept; ``name`` becomes the
    default connection only if none is set.
    """
    if insecure and root_certificates is not None:
        raise ValueError("insecure=True takes no root_certificates")
    import tomli
    import tomli_w

    path = Path(flwr_home) / "config.toml"
    doc: dict[str, Any] = tomli.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    superlink = doc.setdefault("superlink", {})
    superlink.setdefault("default", name)
    conn: dict[str, Any] = {"address": address, "insecure": bool(insecure)}
    if root_certificates is not None:
        conn["root-certificates"] = str(Path(root_certificates).resolve())
    superlink[name] = conn
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def deploy_env(flwr_home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for flwr's processes: ``FLWR_HOME``, no telemetry, no update check, no ``uv sync``.

    ``PATH`` starts with this interpreter's ``bin`` folder (the SuperLink and SuperNodes launch
    ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name).
    """
    env = dict(os.environ if base is None else base)
    env.update(FLWR_HOME=str(Path(flwr_home).resolve()), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", PYTHONUNBUFFERED="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


# --------------------------------------------------------------------------- commands
def flwr_executable(name: str) -> str:
    """Path of a flwr console script (``flower-superlink``, ``flwr``, ...) next to this interpreter, or on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ImportError(f"`{name}` not found; Flower's Deployment Engine needs pip install 'genscom[fed]' (flwr)")
    return found


def superlink_command(*, port: int = DEFAULT_PORT, host: str = "127.0.0.1", tls: TlsFiles | None = None,
                      insecure: bool = False) -> list[str]:
    """``flower-superlink``: TLS with SuperNode authentication, ServerApps in subprocesses, no dependency installation.

    ``host:port`` is its one HTTPS address for SuperNodes, ``flwr run`` and its own ServerApp processes
    (``0.0.0.0`` to accept SuperNodes from other machines). ``tls`` (:func:`generate_certificates`) gives
    ``--ssl-ca-certfile --ssl-certfile --ssl-keyfile`` and ``--enable-supernode-auth`` (only SuperNodes whose
    public key was registered, :func:`register_supernode`, may connect). ``insecure=True`` instead: ``--insecure``,
    plain HTTP, any SuperNode accepted (trusted localhost only).

    Raises:
        ValueError: neither ``tls`` nor ``insecure``, or both.
    """
    if insecure == (tls is not None):
        raise ValueError("pass tls (TLS + SuperNode authentication) or insecure=True, exactly one")
    security = (["--insecure"] if tls is None else
                ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.server_cert),
                 "--ssl-keyfile", str(tls.server_key), "--enable-supernode-auth"])
    return [flwr_executable("flower-superlink"), *security, "--isolation", "subprocess",
            "--disable-runtime-dependency-installation", "--host", host, "--port", str(int(port))]


def supernode_command(superlink: str, *, partition_id: int, num_partitions: int, runtime_port: int,
                      max_wait_time: float | None = None, root_certificates: Path | None = None,
                      auth_private_key: Path | None = None, insecure: bool = False) -> list[str]:
    """``flower-supernode`` playing user ``partition_id`` of ``num_partitions``, connected to ``superlink``.

    Args:
        superlink: the SuperLink's ``HOST:PORT`` (HOST must be a name in its certificate).
        runtime_port: this SuperNode's own Runtime API port on 127.0.0.1 (distinct per SuperNode on a machine).
        max_wait_time: give up after this many seconds without reaching the SuperLink (``None``: never).
        root_certificates: the CA certificate the SuperLink's certificate must verify against
            (``--root-certificates``).
        auth_private_key: this SuperNode's EC private key, OpenSSH format (``--auth-supernode-private-key``;
            :func:`generate_node_key`); its public key must be registered at the SuperLink.
        insecure: ``--insecure`` instead of both (plain HTTP, no authentication; trusted localhost only).

    Raises:
        ValueError: a bad partition; neither both ``root_certificates`` and ``auth_private_key`` nor ``insecure``.
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is not in 0..{num_partitions - 1}")
    if insecure:
        if root_certificates is not None or auth_private_key is not None:
            raise ValueError("insecure=True takes no root_certificates / auth_private_key")
        security = ["--insecure"]
    elif root_certificates is None or auth_private_key is None:
        raise ValueError("a secure SuperNode needs root_certificates (the SuperLink's CA) and auth_private_key "
                         "(its registered key); or pass insecure=True")
    else:
        security = ["--root-certificates", str(root_certificates), "--auth-supernode-private-key",
                    str(auth_private_key)]
    cmd = [flwr_executable("flower-supernode"), *security, "--superlink", superlink, "--isolation", "subprocess",
           "--port", str(int(runtime_port)),
           "--node-config", f"partition-id={int(partition_id)} num-partitions={int(num_partitions)}"]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", str(float(max_wait_time))]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- TLS certificates and SuperNode keys
CA_CERT, CA_KEY = "ca.pem", "ca.key"                       # in the certs folder
SERVER_CERT, SERVER_KEY = "superlink.pem", "superlink.key"
NODE_KEYS_DIR = "supernodes"                               # node-K (OpenSSH EC private key) and node-K.pub
CERT_DAYS = 365
LOCAL_NAMES = ("127.0.0.1", "::1", "localhost")  # how this machine reaches a SuperLink on 0.0.0.0 / ::


@dataclass(frozen=True)
class TlsFiles:
    """The SuperLink's TLS files (PEM): the CA certificate every peer trusts, the server certificate and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600 from creation on, not chmod-ed afterwards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def _san_entries(names: Sequence[str]) -> list[Any]:
    import ipaddress

    from cryptography import x509

    out: list[Any] = []
    for name in dict.fromkeys(n.strip() for n in names if n and n.strip()):  # unique, order kept
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def generate_certificates(certs_dir: Path, *, hosts: Sequence[str] = (), days: int = CERT_DAYS) -> TlsFiles:
    """A self-signed CA and a SuperLink server certificate it signs, in ``certs_dir``; their paths.

    The CA (``ca.pem``, key ``ca.key``) is made once and reused while both files exist, so SuperNodes elsewhere
    that were given ``ca.pem`` keep trusting later SuperLinks; the server certificate (``superlink.pem``, key
    ``superlink.key``, EC P-256, ``days`` valid) is issued anew on every call with the subject alternative names
    127.0.0.1, ::1, localhost and ``hosts`` (IP addresses or DNS names: the names SuperNodes use in ``--superlink``;
    ``0.0.0.0``/``::`` are skipped). Private keys are written 0600. Built with ``cryptography`` (no openssl CLI).
    """
    import datetime as _dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    certs_dir = Path(certs_dir)
    certs_dir.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = certs_dir / CA_CERT, certs_dir / CA_KEY
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)  # tolerate small clock skew
    pem, no_enc = serialization.Encoding.PEM, serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    ca_key = ca_cert = None
    if ca_cert_path.is_file() and ca_key_path.is_file():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        if ca_cert.not_valid_after_utc < now + _dt.timedelta(days=1):
            ca_key = ca_cert = None  # (nearly) expired: make a new one
    if ca_key is None or ca_cert is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genscom"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "genscom federated CA")])
        ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=max(int(days), 1) * 2))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))
        _write_private(ca_key_path, ca_key.private_bytes(pem, pkcs8, no_enc))
        ca_cert_path.write_bytes(ca_cert.public_bytes(pem))
    names = [*LOCAL_NAMES, *(h for h in hosts if h and h not in ("0.0.0.0", "::", "[::]"))]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genscom"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, "genscom SuperLink")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(min(now + _dt.timedelta(days=max(int(days), 1)),
                                                       ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(ca_cert=ca_cert_path, server_cert=certs_dir / SERVER_CERT, server_key=certs_dir / SERVER_KEY)
    _write_private(files.server_key, key.private_bytes(pem, pkcs8, no_enc))
    files.server_cert.write_bytes(cert.public_bytes(pem))
    return files


def generate_node_key(private_key_path: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """A SuperNode authentication key pair: EC P-384, OpenSSH format (what flwr 1.42 loads:
    ``flower-supernode --auth-supernode-private-key`` reads ``load_ssh_private_key``, ``flwr supernode
    register`` reads ``load_ssh_public_key``); the private key 0600 at ``private_key_path``, the public key at
    ``<private_key_path>.pub``. An existing pair is kept unless ``overwrite``. Returns ``(private, public)``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv_path = Path(private_key_path)
    pub_path = priv_path.with_name(priv_path.name + ".pub")
    if priv_path.is_file() and not overwrite:
        key = serialization.load_ssh_private_key(priv_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{priv_path} is not an EC private key (flwr SuperNode authentication needs one)")
    else:
        key = ec.generate_private_key(ec.SECP384R1())
        _write_private(priv_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                    serialization.NoEncryption()))
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                       serialization.PublicFormat.OpenSSH) + b"\n")
    return priv_path, pub_path


def register_supernodes(public_keys: Sequence[Path], *, env: Mapping[str, str], connection: str = CONNECTION,
                        timeout_s: float = 60.0) -> dict[str, int]:
    """``flwr supernode register KEY.pub CONNECTION --name NAME`` for every key, all at once; key path -> node id.

    With ``--enable-supernode-auth`` the SuperLink refuses SuperNodes that register themselves; only keys
    registered through the Control API (this) may activate. NAME is the file name without ``.pub``.
    """
    jobs = []
    for key in public_keys:
        key = Path(key).resolve()
        args = ["supernode", "register", str(key), connection, "--name", key.name.removesuffix(".pub")]
        jobs.append((str(key), args, subprocess.Popen([flwr_executable("flwr"), *args, "--format", "json"],
                                                      env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                      stdin=subprocess.DEVNULL, text=True)))
    out: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        for key, args, proc in jobs:
            try:
                stdout, stderr = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"`flwr {' '.join(args)}` did not answer within {timeout_s:.0f} s") from None
            out[key] = int(_flwr_answer(args, proc.returncode, stdout, stderr)["node-id"])
    finally:
        for _, _, proc in jobs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def register_supernode(public_key: Path, *, env: Mapping[str, str], connection: str = CONNECTION,
                       timeout_s: float = 60.0) -> int:
    """:func:`register_supernodes` for one key: its node id."""
    return next(iter(register_supernodes([public_key], env=env, connection=connection,
                                         timeout_s=timeout_s).values()))


# --------------------------------------------------------------------------- processes
@dataclass
class FlowerProcess:
    """A started flwr process: its ``Popen`` (own process group) and the file its output goes to."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 25) -> str:
        """The last ``n`` lines of its output."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM its process group, SIGKILL after ``timeout_s``; then SIGKILL its remaining descendants.

        flwr starts ``flower-superexec`` (and it ``flwr-serverapp`` / ``flwr-clientapp``) in sessions of their
        own; they exit when their parent does, and whatever is left of them a few seconds later is killed by id.
        """
        if self.popen.poll() is not None:
            return
        family = _descendants(self.popen.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.popen.wait(timeout=timeout_s)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.popen.poll() is None:
            self.popen.wait(timeout=timeout_s)
        deadline = time.monotonic() + 3.0
        while family and time.monotonic() < deadline:
            family = [(pid, start) for pid, start in family if _start_time(pid) == start]
            time.sleep(0.2)
        for pid, _ in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (``/proc/PID/stat`` field 22); ``None`` if it is gone, a zombie, or
    there is no ``/proc``. With the pid it identifies one process (pids are reused)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _descendants(pid: int) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every living descendant of ``pid`` (Linux ``/proc``; elsewhere ``[]``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        start = _start_time(child)
        if start is not None:
            out.append((child, start))
        todo.extend(children.get(child, []))
    return out


def start_process(name: str, cmd: Sequence[str], *, env: Mapping[str, str], log_dir: Path,
                  cwd: Path | None = None) -> FlowerProcess:
    """Start ``cmd`` in its own process group, stdout and stderr to ``log_dir/<name>.log``."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(env), cwd=None if cwd is None else str(cwd), start_new_session=True)
    return FlowerProcess(name, popen, log_path)


def _tails(procs: Sequence[FlowerProcess], n: int = 15) -> str:
    return "\n".join(f"--- {p.name} ({p.log_path}, {'running' if p.alive() else f'exit {p.popen.returncode}'}):\n"
                     f"{p.tail(n)}" for p in procs)


def wait_for_port(host: str, port: int, *, timeout_s: float, proc: FlowerProcess | None = None) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    Raises:
        RuntimeError: ``proc`` exited first; TimeoutError: not within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before listening on {host}:{port}:\n"
                               f"{proc.tail()}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s"
                       + (f":\n{proc.tail()}" if proc is not None else ""))


def _flwr_cli(args: Sequence[str], *, env: Mapping[str, str], timeout_s: float) -> dict[str, Any]:
    """Run ``flwr ARGS --format json``; its JSON answer (``success`` false: ``RuntimeError``)."""
    cmd = [flwr_executable("flwr"), *args, "--format", "json"]
    try:
        proc = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"`flwr {' '.join(args)}` did not answer within {timeout_s:.0f} s") from None
    return _flwr_answer(args, proc.returncode, proc.stdout, proc.stderr)


def _flwr_answer(args: Sequence[str], returncode: int | None, stdout: str, stderr: str) -> dict[str, Any]:
    """The JSON answer of ``flwr ARGS --format json`` from its output (``success`` false: ``RuntimeError``)."""
    text = stdout.strip()
    start = text.find("{")
    try:
        answer = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict) or not answer.get("success", False):
        msg = (answer or {}).get("error-message") if isinstance(answer, dict) else None
        raise RuntimeError(f"`flwr {' '.join(args)}` failed (exit {returncode}): "
                           f"{msg or (text + ' ' + stderr.strip()).strip()[-1500:]}")
    return answer


def submit_run(app_dir: Path, *, env: Mapping[str, str], connection: str = CONNECTION,
               run_config: Mapping[str, UserConfigValue] | None = None, timeout_s: float = 120.0) -> int:
    """``flwr run APP_DIR CONNECTION`` (build the FAB, submit it); the run id.

    ``run_config`` overrides keys of the app's ``[tool.flwr.app.config]`` for this run.
    """
    args = ["run", str(Path(app_dir).resolve()), connection]
    if run_config:
        args += ["--run-config", " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())]
    return int(_flwr_cli(args, env=env, timeout_s=timeout_s)["run-id"])


def run_status(run_id: int, *, env: Mapping[str, str], connection: str = CONNECTION,
               timeout_s: float = 60.0) -> tuple[str, str]:
    """``(status, details)`` of a run from ``flwr ls``: status e.g. ``running``, ``finished:completed``."""
    runs = _flwr_cli(["ls", connection, "--run-id", str(int(run_id))], env=env, timeout_s=timeout_s)["runs"]
    if not runs:
        raise RuntimeError(f"the SuperLink knows no run {run_id}")
    return str(runs[0]["status"]), str(runs[0].get("status-details") or "")


def run_logs(run_id: int, *, env: Mapping[str, str], connection: str = CONNECTION, timeout_s: float = 60.0) -> str:
    """The ServerApp's log of a run (``flwr log RUN_ID CONNECTION --show``); ``""`` if it cannot be read."""
    try:
        proc = subprocess.run([flwr_executable("flwr"), "log", str(int(run_id)), connection, "--show"],
                              env=dict(env), capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, OSError):
        return ""
    return proc.stdout


def wait_for_run(run_id: int, *, env: Mapping[str, str], timeout_s: float | None, connection: str = CONNECTION,
                 processes: Sequence[FlowerProcess] = (), poll_s: float = 10.0, done_file: Path | None = None,
                 on_poll: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Wait until the run finishes; its final ``(status, details)`` from ``flwr ls``.

    ``flwr ls`` (a Python process of its own: CPU) runs every ``poll_s`` seconds, and every second once
    ``done_file`` (e.g. the server app's ``fed_run.json``, checked twice a second) exists.

    Raises:
        RuntimeError: one of ``processes`` (the SuperLink, local SuperNodes) exited meanwhile;
        TimeoutError: not finished within ``timeout_s`` (``None``: wait for ever).
    """
    start = time.monotonic()
    deadline = None if timeout_s is None else start + timeout_s
    next_ls = start + min(poll_s, 5.0)
    while True:
        dead = [p for p in processes if not p.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(p.name for p in dead)} exited during run {run_id}:\n{_tails(processes)}")
        now = time.monotonic()
        done = done_file is not None and Path(done_file).is_file()
        if now >= next_ls or done:
            status, details = run_status(run_id, env=env, connection=connection)
            if on_poll is not None:
                on_poll(status)
            if status.startswith("finished"):
                return status, details
            next_ls = time.monotonic() + (1.0 if done else poll_s)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is not finished after {timeout_s:.0f} s:\n{_tails(processes)}")
        time.sleep(0.5)


# --------------------------------------------------------------------------- all of it on this machine
@dataclass
class DeployResult:
    """What :func:`run_local_deployment` returns."""

    run_id: int
    status: str                       # flwr's final status, "finished:completed" on success
    out_dir: str                      # rounds/, state.json, fed_run.json
    history: list[dict[str, Any]] = field(default_factory=list)  # fed_run.json's per-round records
    seconds: float = 0.0              # wall time, SuperLink start to run finished
    logs: dict[str, str] = field(default_factory=dict)           # process name -> its log file
    returncodes: dict[str, int | None] = field(default_factory=dict)  # process name -> exit status once stopped
    secure: bool = True               # TLS + SuperNode authentication (False: --insecure)
    certs_dir: str | None = None      # the CA, SuperLink certificate and local SuperNode keys (secure only)
    node_ids: dict[str, int] = field(default_factory=dict)  # registered public key file -> SuperLink node id


def run_local_deployment(cfg: GraphFedConfig, *, workdir: Path, port: int | None = None, host: str = "127.0.0.1",
                         local_clients: int | None = None, timeout_s: float | None = 600.0,
                         on_event: Callable[[str], None] | None = None, insecure: bool = False,
                         certs_dir: Path | None = None, cert_hosts: Sequence[str] = (),
                         allowed_keys: Sequence[Path] = ()) -> DeployResult:
    """Start a SuperLink (and SuperNodes) here, submit the graph adapter run, wait for it, stop them all.

    Args:
        cfg: the run (``cfg.out_dir`` required: where the server app saves the rounds and ``fed_run.json``).
        workdir: ``app/`` (the generated Flower app), ``flwr-home/`` (``FLWR_HOME``: ``config.toml``, installed
            FABs) and ``logs/`` (one log file per process) go here.
        port: the SuperLink's HTTP port (``None``: a free one).
        host: the SuperLink listens there (``0.0.0.0``: SuperNodes on other machines can connect).
        local_clients: SuperNodes started here, partitions ``0..local_clients-1`` (default ``cfg.clients``);
            the others must connect from elsewhere (``genscom fed client``) before the run can start.
        timeout_s: for the whole run (``None``: no limit).
        on_event: called with one-line progress messages.
        insecure: plain HTTP, no SuperNode authentication (``--insecure`` everywhere): a trusted localhost only.
            Default: TLS and SuperNode authentication, as below.
        certs_dir: the CA (``ca.pem``: give it to remote SuperNodes; reused while it exists), the SuperLink's
            certificate and key, and ``supernodes/node-K[.pub]``, the local SuperNodes' key pairs (default
            ``workdir/certs``). :func:`generate_certificates`, :func:`generate_node_key`.
        cert_hosts: more names (IP or DNS) for the SuperLink's certificate, besides 127.0.0.1, ::1, localhost
            and ``host``: those remote SuperNodes use in ``--superlink``.
        allowed_keys: public key files (OpenSSH, EC) of remote SuperNodes, registered with the local ones
            (:func:`register_supernode`) before any SuperNode starts; any other key is refused.

    Returns:
        :class:`DeployResult`.

    Raises:
        RuntimeError: a process exited early or the run did not complete (message: status and log tails);
        TimeoutError: past ``timeout_s``. The processes are stopped in every case.
    """
    if cfg.out_dir is None:
        raise ValueError("cfg.out_dir is required: the server app saves the global adapter there")
    n_local = cfg.clients if local_clients is None else int(local_clients)
    if not 0 <= n_local <= cfg.clients:
        raise ValueError(f"local_clients must be in 0..{cfg.clients}, got {local_clients}")
    say = on_event or (lambda _msg: None)
    t0 = time.monotonic()
    workdir = Path(workdir).resolve()
    flwr_home, log_dir, app_dir = workdir / "flwr-home", workdir / "logs", workdir / "app"
    cfg = dataclasses.replace(cfg, out_dir=str(Path(cfg.out_dir).resolve()))
    results = Path(cfg.out_dir) / RESULTS_NAME
    if results.exists():
        raise ValueError(f"{results} exists: {cfg.out_dir} holds an earlier run; pass a new or empty out_dir")
    write_app(app_dir, cfg)
    if port is None:
        port = free_port()
    else:
        port = int(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                raise OSError(f"port {port} is in use; pick another SuperLink port") from None
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # where this machine reaches it
    address = f"{local_host}:{port}"
    allowed = [Path(k).resolve() for k in allowed_keys]
    if insecure and allowed:
        raise ValueError("allowed_keys needs the secure mode (insecure=False): --insecure authenticates nobody")
    missing = [str(k) for k in allowed if not k.is_file()]
    if missing:
        raise FileNotFoundError(f"SuperNode public key file(s) not found: {missing}")
    tls: TlsFiles | None = None
    node_keys: list[Path] = []
    if insecure:
        write_connection(flwr_home, address, insecure=True)
        certs = None
    else:
        certs = Path(certs_dir).resolve() if certs_dir is not None else workdir / "certs"
        tls = generate_certificates(certs, hosts=[host, *cert_hosts])
        node_keys = [generate_node_key(certs / NODE_KEYS_DIR / f"node-{k}")[0] for k in range(n_local)]
        write_connection(flwr_home, address, root_certificates=tls.ca_cert)
    env = deploy_env(flwr_home)
    procs: list[FlowerProcess] = []
    node_ids: dict[str, int] = {}
    try:
        link = start_process("superlink", superlink_command(port=port, host=host, tls=tls, insecure=insecure),
                             env=env, log_dir=log_dir, cwd=workdir)
        procs.append(link)
        wait_for_port(local_host, port, timeout_s=60.0, proc=link)
        say(f"SuperLink on {host}:{port} (pid {link.popen.pid}, "
            + ("INSECURE: plain HTTP, any SuperNode accepted)" if insecure else
               f"TLS, SuperNode authentication; CA {tls.ca_cert if tls else ''})"))
        node_ids = register_supernodes([*(k.with_name(k.name + ".pub") for k in node_keys), *allowed], env=env)
        if node_ids:
            say(f"registered {len(node_ids)} SuperNode public key(s); any other SuperNode is refused")
        for k in range(n_local):
            cmd = supernode_command(address, partition_id=k, num_partitions=cfg.clients, runtime_port=free_port(),
                                    insecure=insecure, root_certificates=None if tls is None else tls.ca_cert,
                                    auth_private_key=node_keys[k] if node_keys else None)
            procs.append(start_process(f"supernode-{k}", cmd, env=env, log_dir=log_dir, cwd=workdir))
        if n_local:
            say(f"{n_local} SuperNode(s) here: partitions 0..{n_local - 1} of {cfg.clients}")
        if n_local < cfg.clients:
            say(f"waiting for partitions {n_local}..{cfg.clients - 1}: genscom fed client --superlink "
                f"<this host>:{port} --partition-id K --num-partitions {cfg.clients}"
                + (" --insecure" if insecure else f" --root-certificates <copy of {tls.ca_cert if tls else ''}> "
                   "--auth-key <its private key, whose .pub was given here as an allowed key>"))
        run_id = submit_run(app_dir, env=env)
        say(f"submitted run {run_id} (flwr run {app_dir} {CONNECTION})")
        left = None if timeout_s is None else max(timeout_s - (time.monotonic() - t0), 1.0)
        status, details = wait_for_run(run_id, env=env, timeout_s=left, processes=procs, done_file=results)
        if status != "finished:completed":
            logs = run_logs(run_id, env=env)
            raise RuntimeError(f"run {run_id} ended {status}: {details}\n--- ServerApp log (tail):\n"
                               + "\n".join(logs.splitlines()[-25:]) + "\n" + _tails(procs))
        if not results.is_file():
            raise RuntimeError(f"run {run_id} completed but wrote no {results}:\n{_tails(procs)}")
        history = json.loads(results.read_text(encoding="utf-8"))["history"]
        result = DeployResult(run_id=run_id, status=status, out_dir=cfg.out_dir, history=history,
                              seconds=time.monotonic() - t0, logs={p.name: str(p.log_path) for p in procs},
                              secure=not insecure, certs_dir=None if certs is None else str(certs),
                              node_ids=node_ids)
    finally:
        for p in reversed(procs):  # SuperNodes first, the SuperLink last
            p.stop()
    result.returncodes = {p.name: p.popen.returncode for p in procs}
    return result


__all__ = ["CLIENT_APP_REF", "CONNECTION", "DEFAULT_PORT", "RUN_CONFIG_FIELDS", "SERVER_APP_REF", "DeployResult",
           "FlowerProcess", "TlsFiles", "client_app", "config_from_run_config", "deploy_env", "free_port",
           "generate_certificates", "generate_node_key", "register_supernode", "register_supernodes",
           "run_config_from_config",
           "run_local_deployment", "run_logs", "run_status", "server_app", "start_process", "submit_run",
           "superlink_command", "supernode_command", "wait_for_port", "wait_for_run", "write_app", "write_connection",
           "write_results"]
