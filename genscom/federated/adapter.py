"""Federated updates of the channel adapter across users with Flower.

Each user (an edge device) holds its own clips and sees its own channel (type and SNR
range). It trains the shared :class:`~genscom.adaptation.adapter.ChannelAdapter` locally for
``local_steps`` with the same objective as :mod:`genscom.adaptation.train` (InfoNCE + cosine,
through its channel), and only the adapter weights travel. The server aggregates them with a
Flower strategy (``FedAvg``: example-weighted mean; ``FedProx``: the same mean, clients add
``mu/2 * ||w - w_global||^2`` to their loss; ``FedAvgM``: server momentum) and sends the
global adapter back. Raw content never leaves a user.

Clients are real :class:`flwr.client.NumPyClient` objects and aggregation is the Flower
strategy's own ``aggregate_fit``; :func:`run_federated` drives them in one process
(no network, no Ray) so a run is deterministic and resumable. For a deployment, the same
client is served by :func:`client_app` (a ``flwr.client.ClientApp``) under ``flwr run``.

Evaluation (per round): text-to-video R@1 of each user's held-out clips after its own
channel at its ``eval_snr_db``; the **local-only** baseline trains one adapter per user for the
same number of local steps with no aggregation.

Example:
    >>> cfg = FedConfig(rounds=5, local_steps=20)
    >>> result = run_federated(cfg)          # doctest: +SKIP
    >>> result["records"][-1].metrics        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from genscom.adaptation.adapter import AdapterConfig, ChannelAdapter, build_adapter
from genscom.adaptation.train import (AdapterData, AdapterTrainModule, TrainAdapterConfig, batch_loss, evaluate,
                                      prepare_data, sample_batch)
from genscom.training import config_defaults, load_checkpoint, save_checkpoint
from genscom.utils import check_positive_ints

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "fed_checkpoint.pt"
CHANNELS = ("awgn", "rayleigh", "rician")
STRATEGIES = ("fedavg", "fedprox", "fedavgm")


def _require_flwr() -> Any:
    try:
        import flwr
    except ImportError as exc:
        raise ImportError("federated training needs Flower: pip install 'genscom[fed]' (flwr)") from exc
    return flwr


@dataclass(frozen=True)
class FedUser:
    """One user: its channel, the SNR range it trains over (dB, Es/N0) and the SNR it is evaluated at."""

    name: str
    channel: Literal["awgn", "rayleigh", "rician"] = "awgn"
    snr_min_db: float = -10.0
    snr_max_db: float = 20.0
    eval_snr_db: float | None = None  # default: the middle of the range

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "/\\ ,:"):
            raise ValueError(f"user name must be a non-empty word without '/', '\\\\', ' ', ',' or ':', got {self.name!r}")
        if self.channel not in CHANNELS:
            raise ValueError(f"user {self.name!r}: channel must be one of {CHANNELS}, got {self.channel!r}")
        for k in ("snr_min_db", "snr_max_db"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"user {self.name!r}: {k} must be a finite number of dB, got {v!r}")
        if self.snr_min_db > self.snr_max_db:
            raise ValueError(f"user {self.name!r}: snr_min_db ({self.snr_min_db}) must be <= snr_max_db "
                             f"({self.snr_max_db})")
        if self.eval_snr_db is not None and (isinstance(self.eval_snr_db, bool) or not math.isfinite(self.eval_snr_db)):
            raise ValueError(f"user {self.name!r}: eval_snr_db must be a finite number of dB, got {self.eval_snr_db!r}")

    @property
    def eval_snr(self) -> float:
        return float(self.eval_snr_db) if self.eval_snr_db is not None else 0.5 * (self.snr_min_db + self.snr_max_db)


def parse_users(spec: str) -> tuple[FedUser, ...]:
    """``"awgn:-10:0,rayleigh:0:20"`` -> users ``u0, u1`` (``channel:snr_min:snr_max[:eval_snr]`` each)."""
    users = []
    for i, part in enumerate(p.strip() for p in str(spec).split(",") if p.strip()):
        fields = part.split(":")
        if len(fields) not in (3, 4):
            raise ValueError(f"user spec {part!r} must be channel:snr_min:snr_max[:eval_snr], e.g. 'rayleigh:0:20'")
        try:
            nums = [float(f) for f in fields[1:]]
        except ValueError:
            raise ValueError(f"user spec {part!r}: SNRs must be numbers of dB, e.g. 'awgn:-10:0'") from None
        users.append(FedUser(f"u{i}", fields[0].strip().lower(), nums[0], nums[1],  # type: ignore[arg-type]
                             nums[2] if len(nums) == 3 else None))
    if not users:
        raise ValueError(f"no users in {spec!r}; give e.g. 'awgn:-10:0,rayleigh:0:20'")
    return tuple(users)


def _default_users() -> tuple[FedUser, ...]:
    return (FedUser("u0", "awgn", -10.0, 0.0), FedUser("u1", "rayleigh", 0.0, 20.0),
            FedUser("u2", "rician", -5.0, 10.0))


@dataclass
class FedConfig:
    """A federated run (``genscom bench fed``); every field is a CLI/YAML key."""

    users: tuple[FedUser, ...] = field(default_factory=_default_users)
    profile: str = "mini"
    dataset: str = "synthetic"
    items_per_user: int = 600        # train items of each user (disjoint shards of the train split)
    val_per_user: int = 200          # held-out items of each user (evaluation)
    dataset_seed: int = 0
    adapter: dict[str, Any] = field(default_factory=lambda: {"k": 64, "hidden": 256, "depth": 1})
    init_from: str | None = None     # start from a trained adapter folder instead of a fresh one
    rounds: int = 10
    local_steps: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05
    cos_weight: float = 1.0
    strategy: Literal["fedavg", "fedprox", "fedavgm"] = "fedavg"
    proximal_mu: float = 0.01        # FedProx
    server_momentum: float = 0.9     # FedAvgM
    coherence: int = 16              # Rayleigh / Rician coherence block (symbols)
    local_only_baseline: bool = True
    seed: int = 0
    run_dir: str = "runs/fed"        # checkpoint (resumable per round)
    output_dir: str | None = None    # save the final global adapter here (save_pretrained)
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.users = tuple(u if isinstance(u, FedUser) else FedUser(**u) for u in self.users)
        if not self.users:
            raise ValueError("users must name at least one user")
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError(f"user names must be unique, got {names}")
        check_positive_ints(self, ("items_per_user", "val_per_user", "rounds", "local_steps", "batch_size", "coherence"))
        if self.batch_size < 2 or self.items_per_user < self.batch_size:
            raise ValueError(f"batch_size must be >= 2 and <= items_per_user ({self.items_per_user}), "
                             f"got {self.batch_size}")
        for k in ("lr", "temperature"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{k} must be a positive number, got {v!r}")
        for k in ("weight_decay", "cos_weight", "proximal_mu"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{k} must be a number >= 0, got {v!r}")
        if not 0 <= self.server_momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1), got {self.server_momentum!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not isinstance(self.adapter, dict):
            raise TypeError(f"adapter must be a dict of AdapterConfig overrides, got {type(self.adapter).__name__}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["users"] = [dataclasses.asdict(u) for u in self.users]
        return d

    def snr_range(self) -> tuple[float, float]:
        return (min(u.snr_min_db for u in self.users), max(u.snr_max_db for u in self.users))


def _user_train_config(cfg: FedConfig, user: FedUser) -> TrainAdapterConfig:
    """The local objective of ``user`` as an adapter-training config (its channel and SNR range)."""
    return TrainAdapterConfig(name=f"fed-{user.name}", profile=cfg.profile, dataset=cfg.dataset,
                              n_items=cfg.items_per_user, val_items=0, dataset_seed=cfg.dataset_seed,
                              batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              temperature=cfg.temperature, cos_weight=cfg.cos_weight, snr_min_db=user.snr_min_db,
                              snr_max_db=user.snr_max_db, channels=(user.channel,), coherence=cfg.coherence,
                              seed=cfg.seed)


def get_weights(adapter: ChannelAdapter) -> list[np.ndarray]:
    """The adapter's state as Flower ``NDArrays`` (state-dict order, float32 copies)."""
    return [v.detach().cpu().float().numpy().copy() for v in adapter.state_dict().values()]


def set_weights(adapter: ChannelAdapter, weights: list[np.ndarray]) -> None:
    """Load Flower ``NDArrays`` into ``adapter`` (same order and shapes as :func:`get_weights`)."""
    state = adapter.state_dict()
    if len(weights) != len(state):
        raise ValueError(f"got {len(weights)} arrays for an adapter with {len(state)} tensors; the server and the "
                         "clients must use the same adapter config")
    new = {}
    for (k, v), w in zip(state.items(), weights):
        if tuple(w.shape) != tuple(v.shape):
            raise ValueError(f"array for {k!r} has shape {tuple(w.shape)}, the adapter {tuple(v.shape)}; the server "
                             "and the clients must use the same adapter config")
        new[k] = torch.as_tensor(w, dtype=v.dtype)
    adapter.load_state_dict(new)


def _make_numpy_client_base() -> type:
    return _require_flwr().client.NumPyClient


class AdapterClient:
    """One user's Flower client: local training and evaluation of the shared channel adapter.

    Built through :func:`make_client` (the class derives from ``flwr.client.NumPyClient`` at
    construction, so importing this module does not need Flower).

    Args:
        cfg: the :class:`FedConfig`.
        user: this client's :class:`FedUser`.
        train: its :class:`AdapterData` shard; ``val``: its held-out items.
        acfg: the adapter shape (identical on every client and the server).
        index: client index (seeds its batch and noise generators).
    """

    def __init__(self, cfg: FedConfig, user: FedUser, train: AdapterData, val: AdapterData, acfg: AdapterConfig,
                 index: int) -> None:
        from genscom.channels.registry import create_channel

        self.cfg, self.user, self.train, self.val, self.acfg, self.index = cfg, user, train, val, acfg, index
        self.tcfg = _user_train_config(cfg, user)
        self.adapter = build_adapter(acfg, seed=cfg.seed)
        kw = {"coherence": cfg.coherence} if user.channel != "awgn" else {}
        self.module = AdapterTrainModule(self.adapter, [create_channel(user.channel, **kw)])
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + 17 * index + 1)
        self.noise_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 17 * index + 2)

    # -- Flower NumPyClient API ------------------------------------------------------
    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:  # noqa: ARG002 - Flower's signature
        return get_weights(self.adapter)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Load the global weights, train ``config["local_steps"]`` steps, return the new weights."""
        set_weights(self.adapter, parameters)
        steps = int(config.get("local_steps", self.cfg.local_steps))
        mu = float(config.get("proximal_mu", 0.0))
        anchor = [p.detach().clone() for p in self.adapter.parameters()] if mu > 0 else None
        loss_sum = self.local_train(steps, proximal_mu=mu, anchor=anchor)
        return get_weights(self.adapter), len(self.train.clips), {"loss": loss_sum / max(1, steps),
                                                                  "user": self.user.name}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:  # noqa: ARG002
        """Load the weights; loss = 1 - R@1 on this user's held-out clips at its evaluation SNR."""
        set_weights(self.adapter, parameters)
        r1 = self.recall_at_1()
        return 1.0 - r1, len(self.val.clips), {"t2v_R@1": r1, "user": self.user.name}

    # -- local work ------------------------------------------------------------------
    def local_train(self, steps: int, *, proximal_mu: float = 0.0, anchor: list[torch.Tensor] | None = None) -> float:
        """``steps`` AdamW steps on the local shard (fresh optimizer state each round); returns the loss sum."""
        self.module.train()
        opt = torch.optim.AdamW(self.adapter.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        total = 0.0
        for _ in range(steps):
            batch = sample_batch(self.train, len(self.train.clips), self.tcfg, self.acfg, self.gen)
            loss, _ = batch_loss(self.module, self.train, batch, self.tcfg, self.acfg, device=torch.device("cpu"),
                                 noise_gen=self.noise_gen)
            if proximal_mu > 0 and anchor is not None:
                loss = loss + 0.5 * proximal_mu * sum((p - a).pow(2).sum() for p, a in
                                                      zip(self.adapter.parameters(), anchor))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        return total

    def recall_at_1(self, adapter: ChannelAdapter | None = None) -> float:
        """t2v R@1 of ``adapter`` (default: this client's) on the held-out shard, own channel, ``eval_snr``."""
        ad = adapter or self.adapter
        out = evaluate(ad, self.val, (self.user.eval_snr,), channels=(self.user.channel,), coherence=self.cfg.coherence,
                       seed=self.cfg.seed + 7 * self.index)
        ad.train()
        return float(out[f"{self.user.channel}_{self.user.eval_snr:+.0f}dB_R@1"])


def make_client(cfg: FedConfig, user: FedUser, train: AdapterData, val: AdapterData, acfg: AdapterConfig,
                index: int) -> AdapterClient:
    """An :class:`AdapterClient` that is also a ``flwr.client.NumPyClient`` (``.to_client()`` works)."""
    base = _make_numpy_client_base()
    cls = type("FlowerAdapterClient", (AdapterClient, base), {})
    return cls(cfg, user, train, val, acfg, index)


def make_strategy(cfg: FedConfig, initial: list[np.ndarray]) -> Any:
    """The Flower strategy named by ``cfg.strategy``, waiting for every user each round."""
    _require_flwr()
    from flwr.common import ndarrays_to_parameters
    from flwr.server import strategy as S

    n = len(cfg.users)
    common = dict(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=n, min_evaluate_clients=n,
                  min_available_clients=n, accept_failures=False, initial_parameters=ndarrays_to_parameters(initial),
                  fit_metrics_aggregation_fn=_mean_loss)
    if cfg.strategy == "fedprox":
        return S.FedProx(proximal_mu=cfg.proximal_mu, **common)
    if cfg.strategy == "fedavgm":
        return S.FedAvgM(server_momentum=cfg.server_momentum, server_learning_rate=1.0, **common)
    return S.FedAvg(**common)


def _mean_loss(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    n = sum(k for k, _ in metrics)
    return {"loss": sum(k * float(m.get("loss", 0.0)) for k, m in metrics) / max(1, n)}


def build_user_data(cfg: FedConfig, *, data: AdapterData | None = None,
                    encoder: Any = None) -> list[tuple[AdapterData, AdapterData]]:
    """``(train, val)`` shards per user: consecutive, disjoint blocks of the dataset's train split."""
    per = cfg.items_per_user + cfg.val_per_user
    need = per * len(cfg.users)
    if data is None:
        tc = TrainAdapterConfig(name="fed-data", profile=cfg.profile, dataset=cfg.dataset, n_items=need, val_items=0,
                                dataset_seed=cfg.dataset_seed, batch_size=2, cache_dir=cfg.cache_dir)
        data = prepare_data(tc, encoder=encoder)
    if len(data.clips) < need:
        raise ValueError(f"{len(cfg.users)} users x ({cfg.items_per_user} + {cfg.val_per_user}) items need {need} "
                         f"clips, the data has {len(data.clips)}; lower items_per_user/val_per_user")
    out = []
    for i in range(len(cfg.users)):
        lo = i * per
        out.append((data.subset(lo, lo + cfg.items_per_user), data.subset(lo + cfg.items_per_user, lo + per)))
    return out


def run_federated(cfg: FedConfig, *, data: AdapterData | None = None, encoder: Any = None, resume: bool = False,
                  progress: bool = True) -> dict[str, Any]:
    """Run ``cfg.rounds`` rounds of federated adapter training (and the local-only baseline).

    Returns ``{"history": [...], "local_only": {...}, "initial": {...}, "seconds": t, "adapter": path|None}``:
    ``history[r]`` has the round's mean client loss and each user's R@1 with the global adapter.
    A checkpoint (global weights, strategy state, generators, history) is written atomically to
    ``<run_dir>/fed_checkpoint.pt`` after every round; ``resume=True`` continues exactly.
    """
    _require_flwr()
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    # the checkpoint, the init_from adapter and the profile are checked before any data is prepared
    ckpt_path = Path(cfg.run_dir) / CHECKPOINT_NAME
    ck = load_checkpoint(ckpt_path, resume=resume, config=cfg.to_dict(), defaults=config_defaults(type(cfg)),
                         free=frozenset({"rounds", "run_dir", "output_dir", "cache_dir"}),
                         hint="resume with the config the run started with")
    init_from = ChannelAdapter.from_pretrained(cfg.init_from) if cfg.init_from else None
    if data is None and encoder is None:
        from genscom.encoders.registry import check_profile

        check_profile(cfg.profile)
    shards = build_user_data(cfg, data=data, encoder=encoder)
    dim = shards[0][0].clips.shape[1]
    lo, hi = cfg.snr_range()
    acfg = AdapterConfig.from_dict({**{"snr_range_db": [lo, hi] if lo < hi else [lo - 1, hi + 1]}, **cfg.adapter,
                                    "dim": dim})
    if init_from is not None:
        init = init_from
        if init.config != acfg:
            acfg = init.config
            logger.info("init_from %s: using its adapter config %s", cfg.init_from, acfg.to_dict())
    else:
        init = build_adapter(acfg, seed=cfg.seed)
    if acfg.dim != dim:
        raise ValueError(f"adapter dim {acfg.dim} != embedding dim {dim} of profile {cfg.profile!r}")
    clients = [make_client(cfg, u, tr, va, acfg, i) for i, (u, (tr, va)) in enumerate(zip(cfg.users, shards))]
    weights = get_weights(init)
    strategy = make_strategy(cfg, weights)
    history: list[dict[str, Any]] = []
    start_round = 1
    if ck is not None:
        weights = [t.numpy() for t in ck["weights"]]
        for c, st in zip(clients, ck["generators"]):
            c.gen.set_state(st["batch"])
            c.noise_gen.set_state(st["noise"])
        if "momentum" in ck:
            strategy.momentum_vector = [t.numpy() for t in ck["momentum"]]
        history, start_round = ck["history"], int(ck["round"]) + 1
        # FedAvgM steps from `initial_parameters` (it updates them itself each round): start from the checkpoint
        strategy.initial_parameters = ndarrays_to_parameters(weights)
        logger.info("resumed %s after round %d", ckpt_path, start_round - 1)

    initial = {c.user.name: c.recall_at_1(init) for c in clients}
    fit_config = {"local_steps": cfg.local_steps,
                  "proximal_mu": cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0}
    bar = tqdm(total=cfg.rounds, initial=start_round - 1, desc=f"federated {cfg.strategy}", disable=not progress)
    for rnd in range(start_round, cfg.rounds + 1):
        results = []
        for c in clients:
            new, n, metrics = c.fit([w.copy() for w in weights], dict(fit_config, server_round=rnd))
            results.append((None, FitRes(status=Status(code=Code.OK, message=""),
                                         parameters=ndarrays_to_parameters(new), num_examples=n, metrics=metrics)))
        agg, agg_metrics = strategy.aggregate_fit(rnd, results, [])
        if agg is None:  # pragma: no cover - accept_failures=False and no failures: Flower always aggregates
            raise RuntimeError(f"round {rnd}: the {cfg.strategy} strategy returned no parameters")
        weights = parameters_to_ndarrays(agg)
        r1 = {c.user.name: float(1.0 - c.evaluate([w.copy() for w in weights], {})[0]) for c in clients}
        history.append({"round": rnd, "loss": float(agg_metrics.get("loss", float("nan"))), "t2v_R@1": r1})
        state: dict[str, Any] = {"round": rnd, "history": history,
                                 "weights": [torch.from_numpy(np.ascontiguousarray(w)) for w in weights],
                                 "generators": [{"batch": c.gen.get_state(), "noise": c.noise_gen.get_state()}
                                                for c in clients]}
        if getattr(strategy, "momentum_vector", None) is not None:
            state["momentum"] = [torch.from_numpy(np.ascontiguousarray(m)) for m in strategy.momentum_vector]
        save_checkpoint(ckpt_path, state, config=cfg.to_dict())
        bar.update(1)
        bar.set_postfix({"loss": f"{history[-1]['loss']:.3f}",
                         "mean R@1": f"{sum(r1.values()) / len(r1):.3f}"}, refresh=False)
    bar.close()

    local_only: dict[str, dict[str, float]] = {}
    if cfg.local_only_baseline:
        total = cfg.rounds * cfg.local_steps
        for c in tqdm(clients, desc="local-only baselines", disable=not progress):
            solo = make_client(cfg, c.user, c.train, c.val, acfg, c.index)
            set_weights(solo.adapter, get_weights(init))
            solo.local_train(total)
            local_only[c.user.name] = {other.user.name: other.recall_at_1(solo.adapter) for other in clients}
    saved = None
    if cfg.output_dir:
        final = build_adapter(acfg, seed=cfg.seed)
        set_weights(final, weights)
        saved = str(final.save_pretrained(cfg.output_dir, extra_config={
            "federated": {"strategy": cfg.strategy, "rounds": cfg.rounds, "local_steps": cfg.local_steps,
                          "users": [dataclasses.asdict(u) for u in cfg.users]}}))
    return {"history": history, "initial": initial, "local_only": local_only, "adapter": saved,
            "adapter_config": acfg.to_dict(), "seconds": time.perf_counter() - t0}


def client_app(cfg: FedConfig, *, data: AdapterData | None = None) -> Any:
    """A ``flwr.client.ClientApp`` serving user ``node_config["user"]`` (an index into ``cfg.users``) for ``flwr run``."""
    flwr = _require_flwr()

    def client_fn(context: Any) -> Any:
        idx = int(context.node_config.get("user", context.node_config.get("partition-id", 0)))
        if not 0 <= idx < len(cfg.users):
            raise ValueError(f"node_config user={idx} but the config has {len(cfg.users)} users")
        train, val = build_user_data(cfg, data=data)[idx]
        lo, hi = cfg.snr_range()
        acfg = AdapterConfig.from_dict({"snr_range_db": [lo, hi] if lo < hi else [lo - 1, hi + 1], **cfg.adapter,
                                        "dim": train.clips.shape[1]})
        return make_client(cfg, cfg.users[idx], train, val, acfg, idx).to_client()

    return flwr.client.ClientApp(client_fn=client_fn)


__all__ = ["AdapterClient", "FedConfig", "FedUser", "build_user_data", "client_app", "get_weights", "make_client",
           "make_strategy", "parse_users", "run_federated", "set_weights"]
