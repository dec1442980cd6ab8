"""``genscom bench fed``: federated channel-adapter updates across users vs each user training alone.

Rows (one per user; ``channel``/``snr_db`` = the user's channel and evaluation SNR;
``channel_uses`` = the adapter's ``k``; metric ``t2v_R@1`` on the user's held-out clips):

* ``initial``: the starting adapter (fresh or ``init_from``);
* ``<strategy>``: the global adapter after each round (``round`` key; the last round is the result);
* ``local-only``: an adapter trained on this user's data and channel alone for the same number
  of local steps (``rounds x local_steps``), no aggregation; ``mean_R@1_other_users`` is that
  adapter on the other users' clips and channels (how far a user's own model carries).

The plot shows R@1 per round for each user, the local-only results as dashed lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genscom.bench.results import markdown_table, render_table, save_figure
from genscom.federated.adapter import FedConfig, run_federated
from genscom.results import Record, make_meta, write_results
from genscom.utils import atomic_write_text


def quick_config(**overrides: Any) -> FedConfig:
    """The ``--quick`` settings: 4 rounds x 10 local steps, 300 + 100 items per user."""
    return FedConfig(**{"rounds": 4, "local_steps": 10, "items_per_user": 300, "val_per_user": 100, **overrides})


def fed_records(cfg: FedConfig, result: dict[str, Any]) -> list[Record]:
    """PROTOCOL.md records from :func:`genscom.federated.run_federated`'s result."""
    k = int(result["adapter_config"]["k"])
    records: list[Record] = []
    for u in cfg.users:
        base = dict(channel=u.channel, snr_db=u.eval_snr, channel_uses=float(k))
        records.append(Record(scheme="initial", metrics={"t2v_R@1": result["initial"][u.name]},
                              extra={"user": u.name, "round": 0}, **base))
        for h in result["history"]:
            records.append(Record(scheme=cfg.strategy, metrics={"t2v_R@1": h["t2v_R@1"][u.name]},
                                  extra={"user": u.name, "round": h["round"], "train_loss": h["loss"]}, **base))
        if u.name in result["local_only"]:
            row = result["local_only"][u.name]
            others = [v for name, v in row.items() if name != u.name]
            records.append(Record(scheme="local-only", metrics={
                "t2v_R@1": row[u.name], "mean_R@1_other_users": sum(others) / len(others) if others else None},
                extra={"user": u.name, "round": cfg.rounds}, **base))
    return records


def plot_fed(cfg: FedConfig, result: dict[str, Any], path: str | Path) -> Path:
    """R@1 vs round per user (solid), local-only per user (dashed, same colour)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    rounds = [0] + [h["round"] for h in result["history"]]
    for i, u in enumerate(cfg.users):
        colour = f"C{i}"
        ys = [result["initial"][u.name]] + [h["t2v_R@1"][u.name] for h in result["history"]]
        label = f"{u.name}: {u.channel} @ {u.eval_snr:g} dB"
        ax.plot(rounds, ys, marker="o", ms=3, color=colour, label=f"{label} ({cfg.strategy})")
        if u.name in result["local_only"]:
            ax.axhline(result["local_only"][u.name][u.name], color=colour, ls="--", lw=1,
                       label=f"{label} (local-only)")
    ax.set_xlabel(f"round ({cfg.local_steps} local steps per user per round)")
    ax.set_ylabel("t2v R@1 (user's held-out clips, own channel)")
    ax.set_title(f"federated channel adapter (k={result['adapter_config']['k']}), {len(cfg.users)} users",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def run_fed_bench(cfg: FedConfig, *, out_dir: str | Path = "results/fed", quick: bool = False, command: str = "",
                  console: Any = None, resume: bool = False, data: Any = None, progress: bool = True,
                  overwrite: bool = False) -> dict[str, Any]:
    """Run the federated benchmark; writes ``fed.json``, ``fed.md`` and ``fed.png`` to ``out_dir``.

    The global adapter is saved to ``cfg.output_dir`` (``--save-adapter``) when set; a folder that already
    holds weights is refused before any work unless ``overwrite`` (a README there is kept).

    Raises:
        OutputExistsError: ``cfg.output_dir`` holds weights and ``overwrite`` is False.
    """
    from rich.console import Console

    from genscom.training import check_output_dir

    if cfg.output_dir:
        check_output_dir(cfg.output_dir, overwrite=overwrite, flag="--save-adapter")
    console = console or Console()
    result = run_federated(cfg, data=data, resume=resume, progress=progress)
    records = fed_records(cfg, result)
    out = Path(out_dir)
    meta = make_meta(command=command, seed=cfg.seed, dataset=cfg.dataset,
                     n_items=len(cfg.users) * (cfg.items_per_user + cfg.val_per_user), profile=cfg.profile,
                     quick=quick, config=cfg.to_dict(), adapter_config=result["adapter_config"],
                     seconds=round(result["seconds"], 1), saved_adapter=result["adapter"])
    path = write_results(out / "fed.json", "fed", meta, records)
    final = [r for r in records if r.scheme != cfg.strategy or r.extra["round"] == cfg.rounds]
    cols = ["scheme", "user", "channel", "snr_db", "channel_uses", "t2v_R@1", "mean_R@1_other_users"]
    console.print(render_table(final, cols, title=f"federated adapter ({cfg.strategy}, {cfg.rounds} rounds) vs "
                                                 "local-only, t2v R@1"))
    atomic_write_text(out / "fed.md", markdown_table(final, cols) + "\n")
    png = plot_fed(cfg, result, out / "fed.png")
    return {"records": records, "json": path, "png": png, "result": result}
