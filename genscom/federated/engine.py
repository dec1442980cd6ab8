r"""The graph adapter task on Flower's Simulation Engine: a ``ClientApp``, a ``ServerApp`` and a strategy.

Heterogeneous users (:mod:`~genscom.federated.graph_data`: own image and text towers, non-IID shard,
clean / mild / severe label noise) train the :class:`~genscom.federated.graph_adapter.GraphMultimodalAdapter`
locally and send only ``user_state(their encoders)`` (the shared part plus their own input heads) and
their example count. Flower runs them: :func:`run_graph_federated` calls
``flwr.simulation.run_simulation`` (Flower's Simulation Engine, Ray backend) with

* :func:`graph_client_app`: a ``flwr.clientapp.ClientApp`` whose ``@app.train()`` function loads the
  global adapter, trains ``local_epochs`` over the user's active pairs with error-aware labels
  (per-pair confidence from the batch similarity, :func:`~genscom.federated.labels.pair_confidence`;
  pairs below the federated threshold are excluded from the loss,
  :func:`~genscom.federated.labels.confident_mask`; a
  :class:`~genscom.federated.labels.ConfidenceTracker` kept in the node's ``Context.state`` across
  rounds prunes persistently inconsistent pairs), and replies with its state, its count, its
  confidence histogram and its detection counts against the injected noise;
* :func:`make_graph_strategy`: a subclass of the message-based ``flwr.serverapp.strategy.FedAvg`` whose
  ``aggregate_train`` is :func:`~genscom.federated.graph_adapter.aggregate` (example-weighted, each
  input head only among the users that sent it; stock FedAvg assumes identical arrays), merges the
  users' confidence histograms into one threshold for the next round
  (:func:`~genscom.federated.labels.global_threshold`), and tolerates failures: a reply that is an
  error (the ``ClientApp`` raised), missing (timed out) or malformed (wrong keys, shapes, non-finite
  values) is dropped for that round; with fewer than ``ceil(min_fit_fraction x sampled)`` good
  replies the round keeps the previous global adapter. A dropped client never enters the average;
* :func:`graph_server_app`: a ``flwr.serverapp.ServerApp`` whose ``main`` drives the rounds through the
  strategy and the ``Grid`` (``configure_train`` -> ``grid.send_and_receive`` -> ``aggregate_train``),
  evaluates the global adapter on the held-out pairs, and saves it after every round
  (``<out_dir>/rounds/round-NNN/`` via ``save_pretrained``, then ``<out_dir>/state.json`` atomically),
  so a run resumes from the last saved round.

Evaluation (server side, held-out items): for every (image tower, text tower) pair the users hold,
image and text features go through the adapter into the SKB space, and ``RSUM`` = 100 x (i2t + t2i
R@1/5/10) of image<->text retrieval there (:func:`~genscom.metrics.retrieval.retrieval_metrics`,
``t2v`` = t2i, ``v2t`` = i2t), averaged over the tower pairs; ``skb_R@1`` is the share of image and
text tokens whose nearest SKB entry is their own item's.

Personalised evaluation (client side, same held-out items, ``personal_eval=True``): after its local epochs
each client evaluates **its own updated model** (the global shared part and its heads after local training,
i.e. exactly the state it replies with: the model this user operates with until the next round) on its own
tower pair (:func:`evaluate_user`) and adds ``personal_RSUM``, ``personal_i2t_R@1``, ``personal_t2i_R@1`` to
its reply's ``MetricRecord``; the strategy averages them over the good replies, equally weighted (one user, one
vote), into ``RSUM_personal``, ``i2t_R@1_personal``, ``t2i_R@1_personal``. What is aggregated into the global
adapter is unchanged. Round 0: the initial adapter on every user's own pair, mean over users
(:func:`evaluate_personal_mean`). With ``personal_finetune_epochs > 0`` a client also fine-tunes its input
heads only, on a copy (:func:`finetune_heads`; the reply is unchanged), and reports ``*_personal_ft``.

Federated threshold: :func:`~genscom.federated.labels.global_threshold` of the merged histograms
(``threshold_method`` ``"otsu"`` by default, or ``"quantile"`` at ``threshold_quantile``), optionally smoothed
across rounds (``threshold_momentum``: EMA weight of the previous threshold; 0 = this round's alone).

Per-round record (``history``, ``fed_run.json``): ``round``, ``RSUM``, ``i2t_R@1``, ``t2i_R@1``, ``skb_R@1``,
``per_tower_pair``; when the round aggregated: ``loss``, ``excluded`` (share of pair-visits masked),
``noise_precision`` / ``noise_recall`` (pooled over users: pairs currently flagged, i.e. on an inconsistent
streak or pruned, against the injected swaps; 1.0 / 0.0 while nothing is flagged, e.g. in the warm-up;
absent with ``error_aware=False``),
``pruned``, ``threshold`` (the federated one for the next round), ``RSUM_personal``, ``i2t_R@1_personal``,
``t2i_R@1_personal`` (above; also in round 0), ``bytes_up`` (the good replies' arrays:
shared part + own heads) and ``bytes_down`` (the global adapter x clients sampled); always ``clients_ok``,
``failures``, ``aggregated``, ``seconds``. Round 0 is the initial adapter.

Example:
    >>> result = run_graph_federated(quick_graph_config(out_dir="runs/fed-demo"))  # doctest: +SKIP
    >>> result.history[-1]["RSUM"]                                                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genscom.federated.graph_adapter import (GraphAdapterConfig, GraphMultimodalAdapter, aggregate,
                                             build_graph_adapter, graph_adapter_loss)
from genscom.federated.graph_data import NOISE_FRACTIONS, GraphFedData, UserShard, build_graph_fed_data
from genscom.federated.labels import (ConfidenceStats, ConfidenceTracker, confident_mask, global_threshold,
                                      merge_stats, pair_confidence)
from genscom.utils import check_positive_ints

logger = logging.getLogger(__name__)

STATE_NAME = "state.json"
PERSONAL_METRICS = ("RSUM", "i2t_R@1", "t2i_R@1")  # what clients report of their own updated model
RESULTS_NAME = "fed_run.json"


@dataclass
class GraphFedConfig:
    """One federated run of the graph adapter task (Simulation Engine)."""

    clients: int = 10
    rounds: int = 10
    local_epochs: int = 10
    groups: tuple[str, ...] = ("clean", "mild", "severe")  # label-noise group of user k: groups[k % len]
    noise: dict[str, float] = field(default_factory=lambda: dict(NOISE_FRACTIONS))  # group -> share swapped
    n_train: int = 3000              # train items shared out among users (non-IID)
    n_test: int = 500                # held-out items (server-side evaluation)
    num_frames: int = 4
    frame_size: int = 32
    alpha: float = 0.5               # Dirichlet concentration of the shards (smaller: more skewed)
    skb_dim: int = 64
    hidden_dim: int = 64
    batch_size: int = 64
    lr: float = 1e-3                 # Adam; the reference 1e-4 is for hundreds of rounds, this task runs ~10
    error_aware: bool = True         # False: plain FedAvg with the graph adapter (no exclusion, no pruning)
    patience: int = 3                # rounds below the threshold before a pair is pruned (2 prunes clean pairs too)
    warmup_rounds: int = 2           # rounds trained on every pair before confidences are trusted (masked, tracked)
    min_fit_fraction: float = 0.5    # good replies needed (share of the sampled clients) to update the model
    round_timeout_s: float = 600.0   # a client that has not replied by then is dropped for the round
    fail_rounds: dict[int, list[int]] = field(default_factory=dict)  # fault injection: client -> rounds it raises
    backend_cpus: int = 2            # CPUs given to Ray; each client actor takes 1
    seed: int = 0
    out_dir: str | None = None       # rounds/, state.json and fed_run.json; None: nothing saved
    personal_eval: bool = True       # each client evaluates its own updated model on the held-out items
    personal_finetune_epochs: int = 0  # >0: also a heads-only local fine-tune (on a copy) -> *_personal_ft
    threshold_method: str = "otsu"   # federated threshold: "otsu" or "quantile" (labels.global_threshold)
    threshold_quantile: float = 0.1  # the quantile with threshold_method="quantile"
    threshold_momentum: float = 0.0  # EMA of the federated threshold across rounds (0: this round's alone)

    def __post_init__(self) -> None:
        self.groups = tuple(self.groups)
        check_positive_ints(self, ("clients", "rounds", "local_epochs", "n_train", "n_test", "num_frames", "skb_dim",
                                   "hidden_dim", "patience", "backend_cpus"))
        if isinstance(self.warmup_rounds, bool) or not isinstance(self.warmup_rounds, int) or self.warmup_rounds < 0:
            raise ValueError(f"warmup_rounds must be an integer >= 0, got {self.warmup_rounds!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ValueError(f"batch_size must be an integer >= 2, got {self.batch_size!r}")
        if not self.groups or any(g not in self.noise for g in self.groups):
            raise ValueError(f"groups must name noise groups from {sorted(self.noise)}, got {list(self.groups)}")
        if not 0 < self.min_fit_fraction <= 1:
            raise ValueError(f"min_fit_fraction must be in (0, 1], got {self.min_fit_fraction!r}")
        for k in ("lr", "alpha", "round_timeout_s"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{k} must be a positive number, got {v!r}")
        self.fail_rounds = {int(c): sorted(int(r) for r in rs) for c, rs in dict(self.fail_rounds).items()}
        ft = self.personal_finetune_epochs
        if isinstance(ft, bool) or not isinstance(ft, int) or ft < 0:
            raise ValueError(f"personal_finetune_epochs must be an integer >= 0, got {ft!r}")
        if self.threshold_method not in ("otsu", "quantile"):
            raise ValueError(f"threshold_method must be 'otsu' or 'quantile', got {self.threshold_method!r}")
        if not 0 <= self.threshold_quantile <= 1:
            raise ValueError(f"threshold_quantile must be in [0, 1], got {self.threshold_quantile!r}")
        if not 0 <= self.threshold_momentum < 1:
            raise ValueError(f"threshold_momentum must be in [0, 1), got {self.threshold_momentum!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["groups"] = list(self.groups)
        d["fail_rounds"] = {str(k): v for k, v in self.fail_rounds.items()}
        return d


def quick_graph_config(**overrides: Any) -> GraphFedConfig:
    """A CPU-minute run: 4 users, 6 rounds of 10 local epochs, 800 train + 200 held-out items."""
    base: dict[str, Any] = dict(clients=4, rounds=6, local_epochs=10, n_train=800, n_test=200)
    return GraphFedConfig(**{**base, **overrides})


def adapter_config(cfg: GraphFedConfig, encoders: Mapping[str, int]) -> GraphAdapterConfig:
    return GraphAdapterConfig(encoders=dict(encoders), skb_dim=cfg.skb_dim, hidden_dim=cfg.hidden_dim,
                              batch_size=cfg.batch_size, lr=cfg.lr)


def build_data(cfg: GraphFedConfig) -> GraphFedData:
    return build_graph_fed_data(n_users=cfg.clients, n_train=cfg.n_train, n_test=cfg.n_test, groups=cfg.groups,
                                noise=cfg.noise, skb_dim=cfg.skb_dim, alpha=cfg.alpha,
                                min_items=max(cfg.batch_size // 2, 8), num_frames=cfg.num_frames,
                                frame_size=cfg.frame_size, seed=cfg.seed)


# --------------------------------------------------------------------------- client
def local_train(model: GraphMultimodalAdapter, user: UserShard, tracker: ConfidenceTracker, *, epochs: int,
                mask: bool, generator: torch.Generator) -> dict[str, float]:
    """Train ``model`` in place on the user's active pairs; record confidences in ``tracker`` (this round).

    ``mask``: exclude pairs whose confidence is below ``tracker.threshold`` from the loss (error-aware).
    Returns ``{"loss": mean batch loss, "num-examples": active pairs, "excluded": share of pairs masked}``.
    """
    c = model.config
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    active = torch.nonzero(tracker.active()).flatten()
    losses, masked, seen = [], 0, 0
    model.train()
    for _ in range(epochs):
        order = active[torch.randperm(len(active), generator=generator)]
        for start in range(0, len(order), c.batch_size):
            idx = order[start:start + c.batch_size]
            if len(idx) < 2:
                continue
            out = model(user.image[idx], user.text[idx], image_encoder=user.image_tower,
                        text_encoder=user.text_tower)
            conf = pair_confidence(out.image_tokens @ out.text_tokens.t())  # (b,)
            tracker.update(idx, conf)
            w = confident_mask(conf, tracker.threshold) if mask else None
            if w is not None:
                masked += int((~w).sum())
            seen += len(idx)
            loss = graph_adapter_loss(out.image_tokens, out.text_tokens, margin=c.margin, reg_weight=c.reg_weight,
                                      targets=user.targets[idx], weights=w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return {"loss": sum(losses) / max(len(losses), 1), "num-examples": int(len(active)),
            "excluded": masked / max(seen, 1)}


def finetune_heads(model: GraphMultimodalAdapter, user: UserShard, tracker: ConfidenceTracker, *, epochs: int,
                   mask: bool, generator: torch.Generator) -> GraphMultimodalAdapter:
    """A copy of ``model`` whose input heads only (the shared part frozen) trained ``epochs`` more on the user's
    active pairs (same loss and masking as :func:`local_train`); ``model`` and ``tracker`` are not changed."""
    import copy

    from genscom.federated.graph_adapter import HEADS_PREFIX

    ft = copy.deepcopy(model)
    for name, p in ft.named_parameters():
        p.requires_grad_(name.startswith(HEADS_PREFIX))
    scratch = ConfidenceTracker(len(user.image), threshold=tracker.threshold, patience=tracker.patience)
    scratch.pruned = tracker.pruned.clone()
    local_train(ft, user, scratch, epochs=epochs, mask=mask, generator=generator)
    for p in ft.parameters():
        p.requires_grad_(True)
    return ft


def _client_train(message: Any, context: Any, *, cfg: GraphFedConfig, data: GraphFedData) -> Any:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    pid = int(context.node_config["partition-id"])
    conf_rec = message.content["config"]
    rnd = int(conf_rec["server-round"])
    if rnd in cfg.fail_rounds.get(pid, ()):
        raise RuntimeError(f"client {pid}: injected failure in round {rnd} (GraphFedConfig.fail_rounds)")
    torch.set_num_threads(1)  # one CPU per client actor (backend_config client_resources)
    user = data.users[pid]
    model = GraphMultimodalAdapter(adapter_config(cfg, data.encoders))
    model.load_user_state(message.content["arrays"].to_torch_state_dict())
    tracker = ConfidenceTracker(len(user.image), threshold=float(conf_rec["threshold"]), patience=cfg.patience)
    if "tracker" in context.state:  # the node's state persists across rounds in the Simulation Engine
        saved = context.state["tracker"].to_torch_state_dict()
        tracker.streak, tracker.pruned = saved["streak"].long(), saved["pruned"].bool()
    error_aware = cfg.error_aware and bool(conf_rec["federated-threshold"]) and rnd > cfg.warmup_rounds
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + pid * 1009 + rnd)
    stats = local_train(model, user, tracker, epochs=cfg.local_epochs, mask=error_aware, generator=gen)
    hist = tracker.stats().counts
    if error_aware:  # track after the warm-up, with a federated threshold (a fresh adapter's scores say nothing)
        tracker.end_round()
    flagged = tracker.inconsistent() if cfg.error_aware else torch.zeros_like(user.noisy)
    personal: dict[str, float] = {}
    if cfg.personal_eval:  # the model this user operates with: global shared part + its heads after local epochs
        ev = evaluate_user(model, data, user, batch_size=cfg.batch_size)
        personal.update({f"personal_{k}": float(ev[k]) for k in PERSONAL_METRICS})
    if cfg.personal_finetune_epochs > 0:  # heads-only fine-tune on a copy: the reply's state is unchanged
        ft = finetune_heads(model, user, tracker, epochs=cfg.personal_finetune_epochs, mask=error_aware,
                            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + pid * 1009 + rnd + 7))
        ev = evaluate_user(ft, data, user, batch_size=cfg.batch_size)
        personal.update({f"personal_ft_{k}": float(ev[k]) for k in PERSONAL_METRICS})
    context.state["tracker"] = ArrayRecord(torch_state_dict={"streak": tracker.streak.clone(),
                                                             "pruned": tracker.pruned.long()})
    metrics = MetricRecord({"num-examples": stats["num-examples"], "loss": stats["loss"],
                            "excluded": stats["excluded"], "client": pid,
                            "tp": int((flagged & user.noisy).sum()), "flagged": int(flagged.sum()),
                            "noisy": int(user.noisy.sum()), "pruned": int(tracker.pruned.sum()),
                            "conf-hist": [int(v) for v in hist], **personal})
    state = model.user_state(user.encoders)
    return Message(RecordDict({"arrays": ArrayRecord(torch_state_dict=state), "metrics": metrics}),
                   reply_to=message)


def graph_client_app(cfg: GraphFedConfig, data: GraphFedData) -> Any:
    """The ``flwr.clientapp.ClientApp``: node ``partition-id`` k is user ``data.users[k]``."""
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(message: Any, context: Any) -> Any:
        return _client_train(message, context, cfg=cfg, data=data)

    return app


# --------------------------------------------------------------------------- strategy
def _last_line(text: str) -> str:
    """The last non-empty line of an error reason (a Ray traceback ends with the client's own message)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else text)[:300]


def _check_update(state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> str | None:
    """Why a user's state cannot be averaged into ``base`` (``None``: it can)."""
    from genscom.federated.graph_adapter import HEADS_PREFIX

    unknown = sorted(set(state) - set(base))
    if unknown:
        return f"unknown entries {unknown[:3]}"
    missing = sorted(k for k in base if not k.startswith(HEADS_PREFIX) and k not in state)
    if missing:
        return f"missing shared entries {missing[:3]}"
    for k, v in state.items():
        if tuple(v.shape) != tuple(base[k].shape):
            return f"{k} has shape {tuple(v.shape)}, expected {tuple(base[k].shape)}"
        if not bool(torch.isfinite(v).all()):
            return f"{k} has non-finite values"
    return None


def make_graph_strategy(cfg: GraphFedConfig, *, keep_updates: bool = False) -> Any:
    """A ``flwr.serverapp.strategy.FedAvg`` subclass aggregating with the graph adapter's own rule.

    The class is built here so that importing this module does not import flwr (the ``[fed]`` extra).
    """
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp.strategy import FedAvg

    class _GraphFedAvg(FedAvg):
        """FedAvg sampling and messages; aggregation by :func:`~genscom.federated.graph_adapter.aggregate`."""

        def __init__(self) -> None:
            super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=cfg.clients,
                             min_evaluate_nodes=0, min_available_nodes=cfg.clients)
            self.threshold: float | None = None      # federated confidence threshold (None: not yet known)
            self.base: dict[str, torch.Tensor] = {}
            self.sent = 0
            self.bytes_down = 0                      # size of the global adapter sent to each client
            self.last: dict[str, Any] = {}          # what happened in the last aggregate_train
            self.keep_updates = keep_updates

        def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                            grid: Any) -> Iterable[Any]:
            self.base = arrays.to_torch_state_dict()
            self.bytes_down = arrays.count_bytes()
            config["threshold"] = 0.0 if self.threshold is None else float(self.threshold)
            config["federated-threshold"] = self.threshold is not None
            messages = list(super().configure_train(server_round, arrays, config, grid))
            self.sent = len(messages)
            return messages

        def aggregate_train(self, server_round: int,
                            replies: Iterable[Any]) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = list(replies)
            valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
            updates, metrics, dropped = [], [], [_last_line(str(m.error.reason)) for m in errors]
            up_bytes = []
            for m in valid:
                try:
                    state = m.content["arrays"].to_torch_state_dict()
                    met = m.content["metrics"]
                    n = int(met["num-examples"])
                    why = _check_update(state, self.base) or (None if n >= 1 else f"num-examples {n}")
                except (KeyError, TypeError, ValueError) as exc:
                    why = f"malformed reply ({type(exc).__name__}: {exc})"
                if why is not None:
                    logger.warning("round %d: dropping the reply of node %s: %s", server_round,
                                   m.metadata.src_node_id, why)
                    dropped.append(why)
                    continue
                updates.append((state, n))
                metrics.append(met)
                up_bytes.append(m.content["arrays"].count_bytes())
            order = sorted(range(len(updates)), key=lambda i: int(metrics[i]["client"]))  # reply order varies
            updates, metrics = [updates[i] for i in order], [metrics[i] for i in order]
            need = math.ceil(cfg.min_fit_fraction * self.sent)
            self.last = {"round": server_round, "sent": self.sent, "ok": len(updates),
                         "failures": self.sent - len(updates), "dropped": dropped,
                         "clients_ok": sorted(int(m["client"]) for m in metrics),
                         "updates": ([(int(m["client"]), s, n) for (s, n), m in zip(updates, metrics)]
                                     if self.keep_updates else None)}
            if len(updates) < max(need, 1):
                logger.warning("round %d: %d good replies of %d sampled, need %d (min_fit_fraction=%s); the global "
                               "adapter is unchanged", server_round, len(updates), self.sent, need,
                               cfg.min_fit_fraction)
                self.last["aggregated"] = False
                return None, None
            new = aggregate(updates, base=self.base)
            hists = [ConfidenceStats(counts=torch.tensor(list(m["conf-hist"]), dtype=torch.long)) for m in metrics]
            merged = merge_stats(hists)
            if cfg.error_aware and merged.total > 0:
                t = global_threshold(merged, method=cfg.threshold_method, quantile=cfg.threshold_quantile)
                mom = cfg.threshold_momentum if self.threshold is not None else 0.0
                self.threshold = mom * float(self.threshold or 0.0) + (1.0 - mom) * t
            personal: dict[str, float] = {}  # users' own updated models, equally weighted
            for pre, suf in (("personal_", "_personal"), ("personal_ft_", "_personal_ft")):
                for k in PERSONAL_METRICS:
                    vals = [float(m[pre + k]) for m in metrics if pre + k in m]
                    if vals and len(vals) == len(metrics):
                        personal[k + suf] = sum(vals) / len(vals)
            total = sum(n for _, n in updates)
            tp, fl, nz = (sum(int(m[k]) for m in metrics) for k in ("tp", "flagged", "noisy"))
            out = MetricRecord({"loss": sum(float(m["loss"]) * n for m, (_, n) in zip(metrics, updates)) / total,
                                "excluded": sum(float(m["excluded"]) * n for m, (_, n) in zip(metrics, updates))
                                / total,
                                **({"noise_precision": tp / fl if fl else 1.0, "noise_recall": tp / nz if nz else 1.0}
                                   if cfg.error_aware else {}),
                                "pruned": sum(int(m["pruned"]) for m in metrics),
                                "threshold": float(self.threshold) if self.threshold is not None else 0.0,
                                "bytes_up": sum(up_bytes), "bytes_down": self.bytes_down * self.sent,
                                "num-examples": total, **personal})
            self.last["aggregated"] = True
            return ArrayRecord(torch_state_dict=new), out

    return _GraphFedAvg()


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_adapter(model: GraphMultimodalAdapter, data: GraphFedData, *, batch_size: int) -> dict[str, Any]:
    """Held-out RSUM (i2t + t2i R@1/5/10 x 100 in SKB space) per tower pair the users hold, and their mean."""
    from genscom.metrics.retrieval import retrieval_metrics

    model.eval()
    pairs = sorted({u.encoders for u in data.users})
    per: dict[str, dict[str, float]] = {}
    for it, tt in pairs:
        img, txt = data.test.image[it], data.test.text[tt]
        toks = [model(img[s:s + batch_size], txt[s:s + batch_size], image_encoder=it, text_encoder=tt)
                for s in range(0, len(img), batch_size)]
        zi = torch.cat([o.image_tokens for o in toks])  # (n, D)
        zt = torch.cat([o.text_tokens for o in toks])   # (n, D)
        m = retrieval_metrics(zt @ zi.t(), torch.arange(len(zt)))
        own = torch.arange(len(zi))
        skb_hit = 0.5 * (float(((zi @ data.test.skb.t()).argmax(1) == own).float().mean())
                         + float(((zt @ data.test.skb.t()).argmax(1) == own).float().mean()))
        per[f"{it}+{tt}"] = {"RSUM": m["RSUM"], "i2t_R@1": m["v2t_R@1"], "t2i_R@1": m["t2v_R@1"],
                             "skb_R@1": skb_hit}
    keys = ("RSUM", "i2t_R@1", "t2i_R@1", "skb_R@1")
    mean = {k: sum(p[k] for p in per.values()) / len(per) for k in keys}
    model.train()
    return {**mean, "per_tower_pair": per}


def user_view(data: GraphFedData, users: Iterable[UserShard]) -> GraphFedData:
    """``data`` restricted to ``users`` (same held-out items): :func:`evaluate_adapter` then scores their pairs."""
    return GraphFedData(users=list(users), test=data.test, encoders=data.encoders, towers=data.towers)


def evaluate_user(model: GraphMultimodalAdapter, data: GraphFedData, user: UserShard, *,
                  batch_size: int) -> dict[str, Any]:
    """Held-out metrics of ``model`` on ``user``'s own tower pair (what that user sees through it)."""
    return evaluate_adapter(model, user_view(data, [user]), batch_size=batch_size)


def evaluate_personal_mean(model: GraphMultimodalAdapter, data: GraphFedData, *,
                           batch_size: int) -> dict[str, float]:
    """``<metric>_personal``: every user evaluating ``model`` on its own tower pair, mean over users (equal
    weights). With the global adapter this is the round-0 value of the personalised metric."""
    rows = [evaluate_user(model, data, u, batch_size=batch_size) for u in data.users]
    return {f"{k}_personal": sum(float(r[k]) for r in rows) / len(rows) for k in PERSONAL_METRICS}


# --------------------------------------------------------------------------- server
@dataclass
class GraphFedResult:
    """What a run returns: per-round records, the final global adapter and where it was saved."""

    history: list[dict[str, Any]] = field(default_factory=list)
    model: GraphMultimodalAdapter | None = None
    strategy: Any = None
    out_dir: str | None = None
    rounds_log: list[dict[str, Any]] = field(default_factory=list)  # the strategy's per-round record
    seconds: float = 0.0


def _save_round(out: Path, model: GraphMultimodalAdapter, rnd: int, *, cfg: GraphFedConfig,
                threshold: float | None, history: list[dict[str, Any]]) -> None:
    from genscom.utils import atomic_write_json

    folder = out / "rounds" / f"round-{rnd:03d}"
    model.save_pretrained(folder, extra_config={"federated": {"round": rnd, "task": "graph"}})
    atomic_write_json(out / STATE_NAME, {"round": rnd, "adapter": str(folder.relative_to(out)),
                                         "threshold": threshold, "config": cfg.to_dict(), "history": history})


def _load_resume(out: Path, cfg: GraphFedConfig) -> tuple[int, GraphMultimodalAdapter, float | None, list] | None:
    from genscom.loading import read_json

    path = out / STATE_NAME
    if not path.is_file():
        return None
    st = read_json(path, expected="a federated run state.json", fix="resume from the run's own --out folder")
    if st.get("config", {}).get("seed") != cfg.seed or st.get("config", {}).get("clients") != cfg.clients:
        raise ValueError(f"{path} was written by another run (seed/clients differ); use another --out or the "
                         "same settings")
    model = GraphMultimodalAdapter.from_pretrained(out / st["adapter"]).train()
    return int(st["round"]), model, st.get("threshold"), list(st.get("history", []))


def graph_server_app(cfg: GraphFedConfig, data: GraphFedData, result: GraphFedResult, *, resume: bool = False,
                    on_round: Callable[[dict[str, Any]], None] | None = None, keep_updates: bool = False) -> Any:
    """The ``flwr.serverapp.ServerApp``; it fills ``result`` (same process as the caller of the engine)."""
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        out = Path(cfg.out_dir) if cfg.out_dir else None
        strategy = make_graph_strategy(cfg, keep_updates=keep_updates)
        loaded = _load_resume(out, cfg) if (resume and out is not None) else None
        if loaded is not None:
            done, model, strategy.threshold, history = loaded
            logger.info("resuming after round %d from %s", done, out)
        else:
            done, history = 0, []
            model = build_graph_adapter(adapter_config(cfg, data.encoders), seed=cfg.seed)
            history.append({"round": 0, **evaluate_adapter(model, data, batch_size=cfg.batch_size),
                            **(evaluate_personal_mean(model, data, batch_size=cfg.batch_size)
                               if cfg.personal_eval else {})})
            if on_round:
                on_round(history[-1])
        arrays = ArrayRecord(torch_state_dict=model.state_dict())
        for rnd in range(done + 1, cfg.rounds + 1):
            t0 = time.perf_counter()
            messages = strategy.configure_train(rnd, arrays, ConfigRecord(), grid)
            replies = grid.send_and_receive(messages, timeout=cfg.round_timeout_s)
            new, metrics = strategy.aggregate_train(rnd, replies)
            if new is not None:
                arrays = new
                model.load_state_dict(arrays.to_torch_state_dict())
            rec = {"round": rnd, **evaluate_adapter(model, data, batch_size=cfg.batch_size),
                   **({k: float(v) for k, v in metrics.items()} if metrics is not None else {}),
                   "clients_ok": strategy.last["clients_ok"], "failures": strategy.last["failures"],
                   "aggregated": strategy.last["aggregated"], "seconds": time.perf_counter() - t0}
            history.append(rec)
            result.rounds_log.append(dict(strategy.last))
            if out is not None:
                _save_round(out, model, rnd, cfg=cfg, threshold=strategy.threshold, history=history)
            if on_round:
                on_round(rec)
        result.history, result.model, result.strategy = history, model, strategy

    return app


def run_graph_federated(cfg: GraphFedConfig, *, data: GraphFedData | None = None, resume: bool = False,
                        on_round: Callable[[dict[str, Any]], None] | None = None,
                        keep_updates: bool = False) -> GraphFedResult:
    """Run ``cfg.clients`` users for ``cfg.rounds`` on Flower's Simulation Engine (Ray backend, one machine).

    Args:
        data: prebuilt users and held-out set (default: :func:`build_data`).
        resume: continue after the last round saved in ``cfg.out_dir`` (client trackers restart).
        on_round: called with each round's record (round 0: the initial adapter).
        keep_updates: keep every good reply's ``(client, state, num_examples)`` in ``result.rounds_log``
            (for tests: recompute the aggregate).

    Returns:
        :class:`GraphFedResult`; with ``cfg.out_dir`` also ``fed_run.json`` there.
    """
    try:
        from flwr.simulation import run_simulation
    except ImportError as exc:  # pragma: no cover - the [fed] extra
        raise ImportError("the Simulation Engine needs `pip install 'genscom[fed]'` (flwr[simulation], ray)") from exc
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ImportError("Flower's Simulation Engine needs ray: pip install 'genscom[fed]' (flwr[simulation])")
    t0 = time.perf_counter()
    data = build_data(cfg) if data is None else data
    if len(data.users) != cfg.clients:
        raise ValueError(f"data has {len(data.users)} users but cfg.clients={cfg.clients}")
    result = GraphFedResult(out_dir=cfg.out_dir)
    server = graph_server_app(cfg, data, result, resume=resume, on_round=on_round, keep_updates=keep_updates)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cfg.backend_cpus, "logging_level": "ERROR", "log_to_driver": False}}
    run_simulation(server_app=server, client_app=graph_client_app(cfg, data), num_supernodes=cfg.clients,
                   backend_name="ray", backend_config=backend)
    if result.model is None:
        raise RuntimeError("the ServerApp did not finish (see the Flower log above)")
    result.seconds = time.perf_counter() - t0
    if cfg.out_dir:
        from genscom.utils import atomic_write_json

        users = [{"client": u.index, "image_tower": u.image_tower, "text_tower": u.text_tower, "group": u.group,
                  "pairs": len(u.image), "noisy": int(u.noisy.sum())} for u in data.users]
        atomic_write_json(Path(cfg.out_dir) / RESULTS_NAME, {
            "task": "graph", "engine": "flwr.simulation.run_simulation (ray)", "config": cfg.to_dict(),
            "users": users, "history": result.history, "seconds": result.seconds})
    return result


__all__ = ["PERSONAL_METRICS", "GraphFedConfig", "GraphFedResult", "adapter_config", "build_data", "evaluate_adapter",
           "evaluate_personal_mean", "evaluate_user", "finetune_heads", "local_train", "user_view",
           "graph_client_app", "graph_server_app", "make_graph_strategy", "quick_graph_config", "run_graph_federated"]
