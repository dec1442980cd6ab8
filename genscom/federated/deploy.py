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
(``[superlink.genscom-local] address = "127.0.0.1:9093", insecure = true``). flwr 1.42 reads SuperLink
connections only from there; a ``[tool.flwr.federations]`` table in the app's ``pyproject.toml`` is legacy
and ``flwr run`` migrates it into ``config.toml``, so none is written.

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
    flower-superlink --insecure --disable-runtime-dependency-installation --port 9093
    flower-supernode --insecure --superlink 127.0.0.1:9093 --port 9101 --node-config "partition-id=0 num-partitions=2"
    flower-supernode --insecure --superlink 127.0.0.1:9093 --port 9102 --node-config "partition-id=1 num-partitions=2"
    python -c "from pathlib import Path; from genscom.federated.deploy import *; \
        from genscom.federated.engine import quick_graph_config as q; \
        write_app(Path('app'), q(clients=2, rounds=2, out_dir='/tmp/fed-deploy')); \
        write_connection(Path('/tmp/flwr'), '127.0.0.1:9093')"
    flwr run app genscom-local --stream

The SuperNodes' ``--port`` is their own Runtime API (default 9094): two on one machine need two ports.
``--insecure`` means plain HTTP without TLS or SuperNode authentication: for localhost or a trusted network.

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


def write_connection(flwr_home: Path, address: str, *, name: str = CONNECTION, insecure: bool = True) -> Path:
    """Add SuperLink connection ``name`` (``address`` = ``HOST:PORT``) to ``flwr_home/config.toml``; return it.

    Other connections there are kept; ``name`` becomes the default connection only if none is set.
    """
    import tomli
    import tomli_w

    path = Path(flwr_home) / "config.toml"
    doc: dict[str, Any] = tomli.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    superlink = doc.setdefault("superlink", {})
    superlink.setdefault("default", name)
    superlink[name] = {"address": address, "insecure": bool(insecure)}
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


def superlink_command(*, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> list[str]:
    """``flower-superlink``: insecure (plain HTTP), ServerApps in subprocesses, no dependency installation.

    ``host:port`` is its one HTTP address for SuperNodes, ``flwr run`` and its own ServerApp processes
    (``0.0.0.0`` to accept SuperNodes from other machines).
    """
    return [flwr_executable("flower-superlink"), "--insecure", "--isolation", "subprocess",
            "--disable-runtime-dependency-installation", "--host", host, "--port", str(int(port))]


def supernode_command(superlink: str, *, partition_id: int, num_partitions: int, runtime_port: int,
                      max_wait_time: float | None = None) -> list[str]:
    """``flower-supernode`` playing user ``partition_id`` of ``num_partitions``, connected to ``superlink``.

    Args:
        superlink: the SuperLink's ``HOST:PORT``.
        runtime_port: this SuperNode's own Runtime API port on 127.0.0.1 (distinct per SuperNode on a machine).
        max_wait_time: give up after this many seconds without reaching the SuperLink (``None``: never).
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is not in 0..{num_partitions - 1}")
    cmd = [flwr_executable("flower-supernode"), "--insecure", "--superlink", superlink, "--isolation", "subprocess",
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
    text = proc.stdout.strip()
    start = text.find("{")
    try:
        answer = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict) or not answer.get("success", False):
        msg = (answer or {}).get("error-message") if isinstance(answer, dict) else None
        raise RuntimeError(f"`flwr {' '.join(args)}` failed (exit {proc.returncode}): "
                           f"{msg or (text + ' ' + proc.stderr.strip()).strip()[-1500:]}")
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


def run_local_deployment(cfg: GraphFedConfig, *, workdir: Path, port: int | None = None, host: str = "127.0.0.1",
                         local_clients: int | None = None, timeout_s: float | None = 600.0,
                         on_event: Callable[[str], None] | None = None) -> DeployResult:
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
    write_connection(flwr_home, address)
    env = deploy_env(flwr_home)
    procs: list[FlowerProcess] = []
    try:
        link = start_process("superlink", superlink_command(port=port, host=host), env=env, log_dir=log_dir,
                             cwd=workdir)
        procs.append(link)
        wait_for_port(local_host, port, timeout_s=60.0, proc=link)
        say(f"SuperLink on {host}:{port} (pid {link.popen.pid})")
        for k in range(n_local):
            cmd = supernode_command(address, partition_id=k, num_partitions=cfg.clients, runtime_port=free_port())
            procs.append(start_process(f"supernode-{k}", cmd, env=env, log_dir=log_dir, cwd=workdir))
        if n_local:
            say(f"{n_local} SuperNode(s) here: partitions 0..{n_local - 1} of {cfg.clients}")
        if n_local < cfg.clients:
            say(f"waiting for partitions {n_local}..{cfg.clients - 1}: genscom fed client --superlink "
                f"<this host>:{port} --partition-id K --num-partitions {cfg.clients}")
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
                              seconds=time.monotonic() - t0, logs={p.name: str(p.log_path) for p in procs})
    finally:
        for p in reversed(procs):  # SuperNodes first, the SuperLink last
            p.stop()
    result.returncodes = {p.name: p.popen.returncode for p in procs}
    return result


__all__ = ["CLIENT_APP_REF", "CONNECTION", "DEFAULT_PORT", "RUN_CONFIG_FIELDS", "SERVER_APP_REF", "DeployResult",
           "FlowerProcess", "client_app", "config_from_run_config", "deploy_env", "free_port", "run_config_from_config",
           "run_local_deployment", "run_logs", "run_status", "server_app", "start_process", "submit_run",
           "superlink_command", "supernode_command", "wait_for_port", "wait_for_run", "write_app", "write_connection",
           "write_results"]
