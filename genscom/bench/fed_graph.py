r"""``genscom bench fed --task graph``: the graph multimodal adapter across heterogeneous users, five methods.

Groups are **separate configurations**: in group ``g`` (``clean``, ``mild``, ``severe``) every user's labels
have that group's noise (:data:`~genscom.federated.graph_data.NOISE_FRACTIONS`: 0, 20 %, 50 % of pairs
swapped). Within a group all methods see the same users: the same non-IID shards, the same swapped pairs
and the same held-out items; only the towers differ for ``homogeneous-fedavg``.

Methods (``scheme`` of a record), each run for ``rounds`` rounds of ``local_epochs`` local epochs:

* ``graph-error-aware``: the proposed scheme, the engine's federation (as
  :func:`~genscom.federated.engine.run_graph_federated`) with error-aware labels (Flower's Simulation Engine,
  heterogeneous towers);
* ``graph-fedavg``: the same engine and users, plain (``error_aware=False``: no exclusion, no pruning);
* ``homogeneous-fedavg``: the same engine, plain, every user on one tower pair
  (:data:`HOMOGENEOUS` = ``img:stats`` + ``txt:tfidf``), evaluated on that pair only;
* ``local-only``: every user trains its own adapter alone (no aggregation) with the same local training
  (:func:`~genscom.federated.engine.local_train`, plain); evaluated each round on its own tower pair,
  averaged over users;
* ``centralised``: one adapter trained on all users' pairs pooled (the noisy labels as the users hold them,
  **plain: no error-aware labels**), ``local_epochs`` epochs per round over the pooled data, batches drawn
  within one tower pair (the adapter's forward takes one image and one text tower per batch), in a random
  order across users.

Engine: the federated methods of all groups run one after the other in **one** Flower Simulation Engine
session (:func:`run_federations`: one Ray start instead of nine), each with its own strategy
(:func:`~genscom.federated.engine.make_graph_strategy`), fresh global adapter and per-node client state; the
clients run the engine's own training (``_client_train`` of :func:`~genscom.federated.engine.graph_client_app`)
and the rounds are those of :func:`~genscom.federated.engine.graph_server_app`, so a federation gives the same
numbers as :func:`~genscom.federated.engine.run_graph_federated` with the same config and data (nothing is saved,
no resume). Local-only and centralised run in this process, one torch thread.

Metrics (held-out items, :func:`~genscom.federated.engine.evaluate_adapter`): ``RSUM`` (i2t + t2i R@1/5/10,
x 100, max 600), ``i2t_R@1``, ``t2i_R@1``, ``skb_R@1``; federated methods average over the tower pairs the
users hold. ``graph-error-aware`` adds ``noise_precision`` / ``noise_recall`` (flagged pairs against the
injected swaps, pooled over users; 1.0 / 0.0 while nothing is flagged, e.g. during the warm-up).

Global and personalised metrics. ``RSUM`` / ``i2t_R@1`` / ``t2i_R@1`` stay the **global** numbers, the
headline: issue 12 defines the federated object as the *global* multimodal adapter that maps every user's
features into the shared SKB space (only the shared part and the per-encoder heads are aggregated), its
reference evaluation is "RSUM of image<->text retrieval through the adapter", and its acceptance compares
"the proposed scheme's final RSUM" with plain FedAvg, local-only and centralised, i.e. the federated model,
not each user's locally drifted copy. Next to them, every record has the **personalised** numbers
``RSUM_personal`` / ``i2t_R@1_personal`` / ``t2i_R@1_personal`` (what federated-learning papers and deployments
also report: the model a user actually operates with):

* federated methods: after its local epochs each client evaluates its own updated model (the global shared
  part and its heads after local training, the state it replies with) on its own tower pair, and the
  strategy averages over users, equally weighted (see :mod:`~genscom.federated.engine`); round 0 is the
  initial adapter on each user's pair;
* ``local-only``: each user's own adapter on its own pair, so the personalised numbers equal the global ones;
* ``centralised``: the one pooled model on each user's own pair, mean over users (no personalisation; it
  differs from ``RSUM`` only by weighting users instead of distinct tower pairs).

With ``personal_finetune_epochs > 0`` the federated records also get ``*_personal_ft`` (heads-only fine-tune).
Federated rows also carry ``threshold`` (extra: the federated confidence threshold for the next round).

Bytes per round (extra keys, federated methods, rounds >= 1): ``bytes_up`` = what the users sent (measured:
the arrays of their replies, the adapter's shared part plus their own input heads); ``bytes_up_full`` =
an estimate of full-model updates: each user sending the whole adapter *and* its own towers' weights,
4 bytes per parameter (float32). Tower parameters are counted from the fitted towers (:func:`tower_params`):
``img:stats`` its z-score mean and std, ``img:pca`` the PCA components and mean, ``txt:tfidf`` the IDF
vector plus the SVD components, ``txt:hash`` none (stateless hashing).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from genscom.bench.results import markdown_table, render_table, save_figure
from genscom.results import Record, make_meta, write_results
from genscom.utils import atomic_write_text

METHODS: tuple[str, ...] = ("graph-error-aware", "graph-fedavg", "homogeneous-fedavg", "local-only", "centralised")
GROUPS: tuple[str, ...] = ("clean", "mild", "severe")
HOMOGENEOUS: tuple[str, str] = ("img:stats", "txt:tfidf")
_METRICS = ("RSUM", "i2t_R@1", "t2i_R@1", "skb_R@1")
PERSONAL = ("RSUM_personal", "i2t_R@1_personal", "t2i_R@1_personal")
_FT = ("RSUM_personal_ft", "i2t_R@1_personal_ft", "t2i_R@1_personal_ft")


def quick_graph_bench_config(**overrides: Any) -> Any:
    """The ``--quick`` settings: 4 users, 8 rounds of 4 local epochs, 480 train + 160 held-out items; the engine's
    defaults otherwise (2 warm-up rounds, pruning after 3 inconsistent rounds). About 1 min 45 s on the 2-core CPU
    (docs/benchmarks.md)."""
    from genscom.federated.engine import GraphFedConfig

    base: dict[str, Any] = dict(clients=4, rounds=8, local_epochs=4, n_train=480, n_test=160)
    return GraphFedConfig(**{**base, **overrides})


def tower_params(data: Any) -> dict[str, int]:
    """Parameters of each fitted tower (what a full-model update would also send); see the module docstring."""
    t = data.towers
    if t is None:
        raise ValueError("data.towers is None: build the data with build_graph_fed_data")
    return {"img:stats": int(t.stats_mean.numel() + t.stats_std.numel()),
            "img:pca": int(t.pca.components_.size + t.pca.mean_.size),
            "txt:tfidf": int(t.tfidf.idf_.size + t.svd.components_.size),
            "txt:hash": 0}


def _full_update_bytes(model: Any, data: Any) -> int:
    """Bytes per round if every user sent the whole adapter and its own towers (float32)."""
    adapter = sum(int(p.numel()) for p in model.state_dict().values())
    towers = tower_params(data)
    return sum(4 * (adapter + towers[u.image_tower] + towers[u.text_tower]) for u in data.users)


def _eval(model: Any, data: Any, users: Sequence[Any] | None, batch_size: int) -> dict[str, float]:
    from genscom.federated.engine import evaluate_adapter
    from genscom.federated.graph_data import GraphFedData

    view = data if users is None else GraphFedData(users=list(users), test=data.test, encoders=data.encoders,
                                                   towers=data.towers)
    res = evaluate_adapter(model, view, batch_size=batch_size)
    return {k: float(res[k]) for k in _METRICS}


def _personal(model: Any, data: Any, cfg: Any) -> dict[str, float]:
    """The one model every user would operate with, on each user's own pair, mean over users."""
    from genscom.federated.engine import evaluate_personal_mean

    return evaluate_personal_mean(model, data, batch_size=cfg.batch_size)


def _mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def run_local_only(cfg: Any, data: Any) -> list[dict[str, Any]]:
    """Each user alone: per round ``local_epochs`` of :func:`local_train` (plain), then evaluation on its own tower
    pair; per-round metrics averaged over users. Round 0: the initial adapter."""
    from genscom.federated.engine import adapter_config, local_train
    from genscom.federated.graph_adapter import build_graph_adapter
    from genscom.federated.labels import ConfidenceTracker

    per_round: list[list[dict[str, float]]] = [[] for _ in range(cfg.rounds + 1)]
    for u in data.users:
        model = build_graph_adapter(adapter_config(cfg, data.encoders), seed=cfg.seed)
        per_round[0].append(_eval(model, data, [u], cfg.batch_size))
        for rnd in range(1, cfg.rounds + 1):
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + u.index * 1009 + rnd)
            tracker = ConfidenceTracker(len(u.image), patience=cfg.patience)
            local_train(model, u, tracker, epochs=cfg.local_epochs, mask=False, generator=gen)
            per_round[rnd].append(_eval(model, data, [u], cfg.batch_size))
    rows = [{"round": r, **_mean(rs)} for r, rs in enumerate(per_round)]
    for row in rows:  # each user's own adapter on its own pair: already the personalised metric
        row.update({f"{k}_personal": row[k] for k in ("RSUM", "i2t_R@1", "t2i_R@1")})
    return rows


def run_centralised(cfg: Any, data: Any) -> list[dict[str, Any]]:
    """One adapter on the pooled (noisy) pairs, plain; ``local_epochs`` epochs per round, a fresh Adam each round
    (as the federated users have)."""
    from genscom.federated.engine import adapter_config
    from genscom.federated.graph_adapter import build_graph_adapter, graph_adapter_loss

    model = build_graph_adapter(adapter_config(cfg, data.encoders), seed=cfg.seed)
    c = model.config
    # pool the users' pairs per tower pair: a batch must come from one image and one text tower
    pools: dict[tuple[str, str], list[Any]] = {}
    for u in data.users:
        pools.setdefault(u.encoders, []).append(u)
    pooled = {enc: (torch.cat([u.image for u in us]), torch.cat([u.text for u in us]),
                    torch.cat([u.targets for u in us])) for enc, us in pools.items()}
    gen = torch.Generator().manual_seed(cfg.seed * 7 + 1)
    history = [{"round": 0, **_eval(model, data, None, cfg.batch_size), **_personal(model, data, cfg)}]
    for rnd in range(1, cfg.rounds + 1):
        opt = torch.optim.Adam(model.parameters(), lr=c.lr)
        model.train()
        for _ in range(cfg.local_epochs):
            batches = []
            for enc, (img, _, _) in pooled.items():
                order = torch.randperm(len(img), generator=gen)
                batches += [(enc, order[s:s + c.batch_size]) for s in range(0, len(order), c.batch_size)
                            if len(order[s:s + c.batch_size]) >= 2]
            for j in torch.randperm(len(batches), generator=gen).tolist():
                enc, idx = batches[j]
                img, txt, tgt = pooled[enc]
                out = model(img[idx], txt[idx], image_encoder=enc[0], text_encoder=enc[1])
                loss = graph_adapter_loss(out.image_tokens, out.text_tokens, margin=c.margin,
                                          reg_weight=c.reg_weight, targets=tgt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        history.append({"round": rnd, **_eval(model, data, None, cfg.batch_size), **_personal(model, data, cfg)})
    return history


class _VariantState:
    """A node's ``Context.state`` seen by one federation: keys prefixed with the variant's name."""

    def __init__(self, state: Any, prefix: str) -> None:
        self._state, self._prefix = state, prefix

    def _key(self, k: str) -> str:
        return f"{self._prefix}__{k}"

    def __contains__(self, k: str) -> bool:
        return self._key(k) in self._state

    def __getitem__(self, k: str) -> Any:
        return self._state[self._key(k)]

    def __setitem__(self, k: str, v: Any) -> None:
        self._state[self._key(k)] = v


class _VariantContext:
    def __init__(self, context: Any, variant: str) -> None:
        self.node_config = context.node_config
        self.state = _VariantState(context.state, variant.replace("/", "__"))


def run_federations(variants: dict[str, tuple[Any, Any]], *,
                    log: Callable[[str], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run several federations (``name -> (GraphFedConfig, GraphFedData)``, same number of clients) one after the
    other in **one** Flower Simulation Engine session (one Ray start instead of one per federation).

    Each federation has its own strategy (:func:`~genscom.federated.engine.make_graph_strategy`), fresh global
    adapter and per-node client state (the tracker, keyed by the federation's name); the rounds are those of
    :func:`~genscom.federated.engine.graph_server_app` (configure -> send_and_receive -> aggregate -> evaluate),
    and the clients run :func:`~genscom.federated.engine.graph_client_app`'s training. Nothing is saved.
    Returns name -> per-round rows (round 0: the initial adapter), with ``bytes_up`` / ``bytes_up_full``.
    """
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from genscom.federated.engine import (_client_train, adapter_config, evaluate_adapter, evaluate_personal_mean,
                                          make_graph_strategy)
    from genscom.federated.graph_adapter import build_graph_adapter

    clients = {cfg.clients for cfg, _ in variants.values()}
    if len(clients) != 1:
        raise ValueError(f"all federations must have the same number of clients, got {sorted(clients)}")
    first = next(iter(variants.values()))[0]
    out: dict[str, list[dict[str, Any]]] = {}
    client = ClientApp()

    @client.train()
    def train(message: Any, context: Any) -> Any:
        name = str(message.content["config"]["variant"])
        cfg, data = variants[name]
        return _client_train(message, _VariantContext(context, name), cfg=cfg, data=data)

    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        for name, (cfg, data) in variants.items():
            t_start = time.perf_counter()
            strategy = make_graph_strategy(cfg)
            model = build_graph_adapter(adapter_config(cfg, data.encoders), seed=cfg.seed)
            full = _full_update_bytes(model, data)
            rows = [{"round": 0, **{k: float(v) for k, v in evaluate_adapter(model, data, batch_size=cfg.batch_size)
                                    .items() if k in _METRICS},
                     **evaluate_personal_mean(model, data, batch_size=cfg.batch_size)}]
            arrays = ArrayRecord(torch_state_dict=model.state_dict())
            for rnd in range(1, cfg.rounds + 1):
                messages = strategy.configure_train(rnd, arrays, ConfigRecord({"variant": name}), grid)
                replies = grid.send_and_receive(messages, timeout=cfg.round_timeout_s)
                new, metrics = strategy.aggregate_train(rnd, replies)
                if new is not None:
                    arrays = new
                    model.load_state_dict(arrays.to_torch_state_dict())
                ev = evaluate_adapter(model, data, batch_size=cfg.batch_size)
                row: dict[str, Any] = {"round": rnd, **{k: float(ev[k]) for k in _METRICS}}
                m = dict(metrics) if metrics is not None else {}
                for k in ("noise_precision", "noise_recall", "threshold", *PERSONAL, *_FT):
                    if k in m:
                        row[k] = float(m[k])
                ok = len(strategy.last["clients_ok"])
                row.update(bytes_up=int(m.get("bytes_up", 0)), bytes_up_full=full * ok // cfg.clients,
                           clients_ok=ok)
                rows.append(row)
            out[name] = rows
            if log:
                log(f"  {name:<28} final RSUM {rows[-1]['RSUM']:7.2f}  personal "
                    f"{rows[-1].get('RSUM_personal', float('nan')):7.2f}  ({time.perf_counter() - t_start:.0f} s)")

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": first.backend_cpus, "logging_level": "ERROR", "log_to_driver": False}}
    run_simulation(server_app=server, client_app=client, num_supernodes=first.clients, backend_name="ray",
                   backend_config=backend)
    missing = [n for n in variants if n not in out]
    if missing:
        raise RuntimeError(f"the ServerApp did not finish federations {missing} (see the Flower log above)")
    return out


def _group_data(base: Any, group: str, *, homogeneous: bool) -> tuple[Any, Any, Any]:
    """(config of the group, heterogeneous users, homogeneous users or None): same shards, labels and held-out
    items."""
    from genscom.federated.engine import build_data
    from genscom.federated.graph_data import build_graph_fed_data

    cfg = dataclasses.replace(base, groups=(group,), out_dir=None, fail_rounds={})
    if not homogeneous:
        return cfg, build_data(cfg), None
    homo = build_graph_fed_data(n_users=cfg.clients, n_train=cfg.n_train, n_test=cfg.n_test, groups=cfg.groups,
                                noise=cfg.noise, skb_dim=cfg.skb_dim, alpha=cfg.alpha,
                                min_items=max(cfg.batch_size // 2, 8), num_frames=cfg.num_frames,
                                frame_size=cfg.frame_size, seed=cfg.seed, image_towers=HOMOGENEOUS[:1],
                                text_towers=HOMOGENEOUS[1:])
    return cfg, build_data(cfg), homo


def run_graph_methods(base: Any, groups: Sequence[str], *, methods: Sequence[str] = METHODS,
                      log: Callable[[str], None] | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every method in every noise group (all users in that group): group -> method -> per-round rows.

    The federated methods of all groups run in one Simulation Engine session (:func:`run_federations`).
    """
    bad = [g for g in groups if g not in base.noise] + [m for m in methods if m not in METHODS]
    if not groups or not methods or bad:
        raise ValueError(f"groups must come from {sorted(base.noise)} and methods from {list(METHODS)}; got {bad}")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {g: {} for g in groups}
    variants: dict[str, tuple[Any, Any]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each client actor; tiny models: more threads only contend on a shared CPU
    try:
        _run_in_process(base, groups, methods, results, variants, log)
        fed = run_federations(variants, log=log) if variants else {}
    finally:
        torch.set_num_threads(threads)
    for name, rows in fed.items():
        g, m = name.split("/", 1)
        results[g][m] = rows
    return {g: {m: results[g][m] for m in methods} for g in groups}  # methods in the order asked


def _run_in_process(base: Any, groups: Sequence[str], methods: Sequence[str], results: dict[str, Any],
                    variants: dict[str, tuple[Any, Any]], log: Callable[[str], None] | None) -> None:
    """Build each group's data, run local-only and centralised here, queue the federations in ``variants``."""
    for g in groups:
        cfg, data, homo = _group_data(base, g, homogeneous="homogeneous-fedavg" in methods)
        plain = dataclasses.replace(cfg, error_aware=False)
        for m in methods:
            t0 = time.perf_counter()
            if m == "graph-error-aware":
                variants[f"{g}/{m}"] = (dataclasses.replace(cfg, error_aware=True), data)
            elif m == "graph-fedavg":
                variants[f"{g}/{m}"] = (plain, data)
            elif m == "homogeneous-fedavg":
                variants[f"{g}/{m}"] = (plain, homo)
            else:
                results[g][m] = run_local_only(cfg, data) if m == "local-only" else run_centralised(cfg, data)
                if log:
                    log(f"  {g + '/' + m:<28} final RSUM {results[g][m][-1]['RSUM']:7.2f}  personal "
                        f"{results[g][m][-1]['RSUM_personal']:7.2f}  ({time.perf_counter() - t0:.0f} s)")


def run_graph_group(base: Any, group: str, *, methods: Sequence[str] = METHODS,
                    log: Callable[[str], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """All ``methods`` in one noise group (every user in ``group``); method -> per-round rows."""
    return run_graph_methods(base, (group,), methods=methods, log=log)[group]


def graph_records(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[Record]:
    """PROTOCOL records: one per (group, method, round); no channel in this task (``channel="none"``)."""
    records = []
    for group, by_method in results.items():
        for m, rows in by_method.items():
            for row in rows:
                metrics = {k: row[k] for k in (*_METRICS, *PERSONAL, *_FT, "noise_precision", "noise_recall")
                           if k in row}
                extra = {"group": group, "round": row["round"],
                         **{k: row[k] for k in ("bytes_up", "bytes_up_full", "clients_ok", "threshold") if k in row}}
                records.append(Record(scheme=m, channel="none", snr_db=None, channel_uses=None, metrics=metrics,
                                      extra=extra))
    return records


def plot_graph_bench(results: dict[str, dict[str, list[dict[str, Any]]]], path: str | Path) -> Path:
    """RSUM vs round, one panel per group, one line per method; top row the global adapter (``RSUM``), bottom row
    each user's own model (``RSUM_personal``; local-only is the same in both rows)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = list(results)
    fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 7.0), dpi=120, sharey=True,
                             squeeze=False)
    for row, (key, what) in enumerate((("RSUM", "global adapter"), ("RSUM_personal", "personalised"))):
        for ax, g in zip(axes[row], groups):
            for i, (m, rows) in enumerate(results[g].items()):
                pts = [(r["round"], r[key]) for r in rows if key in r]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=f"C{i}",
                        ls="--" if m in ("local-only", "centralised") else "-", label=m)
            ax.set_title(f"group {g}: {what}", fontsize=10)
            ax.set_xlabel("round")
            ax.grid(True, alpha=0.3)
        axes[row][0].set_ylabel(f"{key} (held-out, max 600)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def run_graph_bench(cfg: Any, *, groups: Sequence[str] = GROUPS, methods: Sequence[str] = METHODS,
                    out_dir: str | Path = "results/fed", quick: bool = False, command: str = "",
                    console: Any = None) -> dict[str, Any]:
    """Run every method in every group; writes ``fed_graph.json`` (benchmark ``"fed"``), ``fed_graph.md`` and
    ``fed_graph.png`` to ``out_dir``."""
    from rich.console import Console

    bad = [g for g in groups if g not in cfg.noise] + [m for m in methods if m not in METHODS]
    if not groups or not methods or bad:
        raise ValueError(f"groups must come from {sorted(cfg.noise)} and methods from {list(METHODS)}; got {bad}")
    console = console or Console()
    try:  # Flower's per-round INFO lines would bury ours
        from flwr.supercore.logger import update_console_handler

        update_console_handler(level="WARNING")
    except ImportError:
        pass
    t0 = time.perf_counter()
    results = run_graph_methods(cfg, groups, methods=methods, log=console.print)
    seconds = time.perf_counter() - t0
    records = graph_records(results)
    out = Path(out_dir)
    meta = make_meta(command=command, seed=cfg.seed, dataset="synthetic", n_items=cfg.n_train + cfg.n_test,
                     profile="cpu", quick=quick, task="graph", config=cfg.to_dict(), groups=list(groups),
                     methods=list(methods), homogeneous_towers=list(HOMOGENEOUS),
                     centralised_error_aware=False, group_design="separate configuration per group: every user "
                     "in the group's noise level", seconds=round(seconds, 1))
    path = write_results(out / "fed_graph.json", "fed", meta, records)
    final = [r for r in records if r.extra["round"] == cfg.rounds]
    cols = ["group", "scheme", "RSUM", "RSUM_personal", "i2t_R@1", "t2i_R@1", "i2t_R@1_personal",
            "t2i_R@1_personal", "noise_precision", "noise_recall", "bytes_up", "bytes_up_full"]
    console.print(render_table(final, cols, title=f"graph adapter, {cfg.clients} heterogeneous users, round "
                                                  f"{cfg.rounds} (held-out RSUM: global adapter; RSUM_personal: each user's own model, max 600)"))
    atomic_write_text(out / "fed_graph.md", markdown_table(final, cols) + "\n")
    png = plot_graph_bench(results, out / "fed_graph.png")
    console.print(f"done in {seconds:.0f} s: {path}, {png}")
    return {"records": records, "json": path, "png": png, "results": results, "seconds": seconds}


# ----------------------------------------------------------------------------- several seeds
SEED_METRICS = ("RSUM", "RSUM_personal", "i2t_R@1", "t2i_R@1", "noise_precision", "noise_recall")
# two-sided 95 % Student t quantiles by degrees of freedom (n_seeds - 1)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def seed_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95 % Student-t half-width over seeds (``0`` for one value; normal quantile beyond 10 seeds)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    return mean, _T95.get(n - 1, 1.96) * sd / n ** 0.5


def summarise_seeds(paths: Sequence[str | Path], out_dir: str | Path, *, command: str = "",
                    console: Any = None) -> dict[str, Any]:
    """Final-round results of several ``fed_graph.json`` files (one per seed, same settings) as mean and 95 %
    interval over seeds per (group, method): writes ``fed_graph_seeds.json`` (benchmark ``"fed"``; ``ci95`` is
    the half-width over seeds, ``extra.per_seed`` the values), ``fed_graph_seeds.md`` and ``fed_graph_seeds.png``.

    Raises:
        ValueError: fewer than two files, or files whose settings (other than the seed) differ.
    """
    from rich.console import Console

    from genscom.results import load_results

    if len(paths) < 2:
        raise ValueError(f"summarise_seeds needs results of >= 2 seeds, got {len(paths)}")
    runs = [load_results(p) for p in paths]
    configs = [{k: v for k, v in r["meta"].get("config", {}).items() if k != "seed"} for r in runs]
    if any(c != configs[0] for c in configs[1:]):
        raise ValueError("the results were run with different settings (other than the seed); summarise runs of "
                         "one command with different --seed only")
    seeds = [r["meta"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two results share a seed ({seeds}); give one file per seed")
    final: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        last = max(rec["round"] for rec in r["records"])
        for rec in r["records"]:
            if rec["round"] == last:
                final.setdefault((rec["group"], rec["scheme"]), []).append(rec["metrics"])
    records = []
    for (group, scheme), rows in final.items():
        if len(rows) != len(runs):
            continue  # a method missing from some seeds is not summarised
        metrics, ci, per_seed = {}, {}, {}
        for k in SEED_METRICS:
            vals = [float(m[k]) for m in rows if m.get(k) is not None]
            if len(vals) == len(rows):
                metrics[k], ci[k] = (round(x, 4) for x in seed_interval(vals))
                per_seed[k] = [round(v, 4) for v in vals]
        records.append(Record(scheme=scheme, channel="none", snr_db=None, channel_uses=None, metrics=metrics,
                              ci95=ci, extra={"group": group, "round": last, "seeds": seeds, "per_seed": per_seed}))
    meta = make_meta(command=command, seed=seeds[0], dataset="synthetic", n_items=runs[0]["meta"]["n_items"],
                     profile="cpu", quick=bool(runs[0]["meta"]["quick"]), task="graph", seeds=seeds,
                     sources=[str(p) for p in paths], config=runs[0]["meta"].get("config", {}),
                     ci_note="mean over seeds; ci95 = 95 % Student-t half-width over seeds")
    out = Path(out_dir)
    path = write_results(out / "fed_graph_seeds.json", "fed", meta, records)
    cols = ["group", "scheme", *SEED_METRICS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        cells = [r.extra["group"], r.scheme] + [f"{r.metrics[k]:.3f} ± {r.ci95[k]:.3f}" if k in r.metrics else "-"
                                                for k in SEED_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(out / "fed_graph_seeds.md", "\n".join(lines) + "\n")
    png = plot_seed_summary(records, out / "fed_graph_seeds.png", n_seeds=len(seeds))
    console = console or Console()
    console.print(render_table(records, cols, title=f"graph adapter, final round, mean over seeds {seeds}"))
    console.print(f"summary of {len(seeds)} seeds: {path}, {png}")
    return {"records": records, "json": path, "png": png}


def plot_seed_summary(records: Sequence[Record], path: str | Path, *, n_seeds: int) -> Path:
    """Bars of the final global RSUM per group and method, with the 95 % interval over seeds."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(r.extra["group"] for r in records))
    methods = list(dict.fromkeys(r.scheme for r in records))
    by = {(r.extra["group"], r.scheme): r for r in records}
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(groups) * max(1, len(methods)) / 3, 3.6), dpi=120)
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        xs = [g_i + (i - (len(methods) - 1) / 2) * width for g_i in range(len(groups))]
        ys = [by[(g, m)].metrics.get("RSUM", float("nan")) if (g, m) in by else float("nan") for g in groups]
        es = [by[(g, m)].ci95.get("RSUM", 0.0) if (g, m) in by else 0.0 for g in groups]
        ax.bar(xs, ys, width, yerr=es, capsize=2, color=f"C{i}", label=m)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("final RSUM, global adapter (max 600)")
    ax.set_title(f"mean over {n_seeds} seeds, 95 % interval", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["GROUPS", "HOMOGENEOUS", "METHODS", "PERSONAL", "SEED_METRICS", "graph_records", "plot_graph_bench",
           "plot_seed_summary", "quick_graph_bench_config", "run_centralised", "run_federations", "run_graph_bench",
           "run_graph_group", "run_graph_methods", "run_local_only", "seed_interval", "summarise_seeds",
           "tower_params"]
