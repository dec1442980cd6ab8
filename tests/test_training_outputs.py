"""Training outputs never overwrite shipped weights: every training command, run with its default output
paths from an unrelated working folder, leaves `genscom/adapters/` (and the shipped towers) byte-identical
and writes under `runs/<name>-<timestamp>/`; a folder holding weights is only written with --overwrite,
and its README is kept. Tiny settings throughout (random tiny models, a few steps)."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from genscom.assets import SHIPPED_ADAPTERS
from genscom.cli import app
from genscom.encoders.registry import MINI_WEIGHTS_DIR
from genscom.training import RUN_CARD_MARK

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (SHIPPED_ADAPTERS, MINI_WEIGHTS_DIR.parent)

TINY_ADAPTER_CFG = dict(profile="tiny", n_items=40, val_items=8, batch_size=16, steps=2, warmup_steps=1, log_every=1,
                        checkpoint_every=0, eval_snrs_db=[0.0], adapter=dict(k=8, hidden=16, depth=1, group_size=2,
                                                                               cond_dim=4))
TINY_ENCODER_CFG = dict(text_tower="tiny", n_items=16, num_frames=3, size=32, steps=2, batch_size=8, warmup_steps=1,
                        eval_n_items=0, checkpoint_every=0, log_every=1,
                        tower={"stem_channels": 4, "channels": [8], "grid_channels": 4, "width": 16,
                               "temporal_heads": 2})


def tree_hash(folders: tuple[Path, ...]) -> str:
    h = hashlib.sha256()
    for root in folders:
        for p in sorted(root.rglob("*")):
            h.update(str(p.relative_to(root.parent)).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_cards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from genscom.agents.testing import make_tiny_llm, tiny_card_dict

    root = tmp_path_factory.mktemp("outputs_cards")
    llm = make_tiny_llm(root / "llm")
    for role, other in (("understanding", "generating"), ("generating", "understanding")):
        d = tiny_card_dict(llm, role, prompt=str(REPO / "prompts" / f"{role}.md"), perception="tiny",
                           partner=f"tiny-{other}.yaml", max_caption_tokens=4)
        (root / f"tiny-{role}.yaml").write_text(yaml.safe_dump(d))
        # the same pair whose generating end has an attributes head (for the head refit)
        d.update(name=f"tiny-attr-{role}", partner=f"tiny-attr-{other}.yaml")
        if role == "generating":
            d.update(heads=["retrieval", "caption", "attributes"],
                     attribute_classes={"shape": ["circle", "square"], "colour": ["red", "blue"]})
        (root / f"tiny-attr-{role}.yaml").write_text(yaml.safe_dump(d))
    return root


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENSCOM_CACHE", str(tmp_path / "cache"))
    return tmp_path


def cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def config(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def only_run(prefix: str) -> Path:
    runs = [d for d in Path("runs").iterdir() if d.name.startswith(prefix + "-")]
    assert len(runs) == 1, runs
    return runs[0]


def test_default_runs_leave_shipped_weights_untouched(cwd: Path, tiny_cards: Path) -> None:
    before = tree_hash(SHIPPED)
    cli("train", "adapter", "--config", config(cwd / "a.yaml", {**TINY_ADAPTER_CFG, "name": "tiny-k8"}))
    cli("train", "encoder", "--config", config(cwd / "e.yaml", TINY_ENCODER_CFG))
    ft = dict(card=str(tiny_cards / "tiny-generating.yaml"), n_train=8, steps=2, batch_size=2, warmup_steps=1,
              checkpoint_every=1, log_every=1)
    cli("finetune", "agents", "--config", config(cwd / "f.yaml", ft))
    sys.path.insert(0, str(REPO / "apps"))
    try:
        import finetune_agents as script
    finally:
        sys.path.pop(0)
    script.main(["--card", ft["card"], "--n-train", "8", "--steps", "1", "--batch-size", "2", "--warmup-steps", "1"])
    cli("finetune", "attribute-head", "--card", str(tiny_cards / "tiny-attr-generating.yaml"), "--n-train", "8",
        "--n-val", "4", "--epochs", "1", "--batch-size", "4", "--snrs", "0,20")
    assert (only_run("attribute-head") / "adapters" / "tiny-attr-generating" / "agent_modules.safetensors").is_file()
    # the regeneration trainers: the diffusion decoder, its DeepJSCC peer and the attribute classifier
    dec = dict(n_items=8, steps=1, batch_size=4, warmup_steps=0, checkpoint_every=0, sample_every=0,
               decoder={"block_out_channels": [8, 16], "cross_attention_dim": 8, "attention_head_dim": 4})
    cli("train", "decoder", "--config", config(cwd / "d.yaml", dec))
    cli("train", "deepjscc", "--n-items", "8", "--steps", "1", "--batch-size", "4")
    cli("train", "classifier", "--n-items", "8", "--n-test", "4", "--epochs", "1")
    assert tree_hash(SHIPPED) == before
    for prefix in ("decoder-regen", "deepjscc", "attr-classifier"):
        assert (only_run(prefix) / "model.safetensors").is_file(), prefix
    adapter = only_run("adapter-tiny-k8")
    assert {"model.safetensors", "config.json", "README.md", "train_log.json"} <= {p.name for p in adapter.iterdir()}
    assert (only_run("encoder-mini") / "model.safetensors").is_file()
    runs = sorted(d for d in Path("runs").iterdir() if d.name.startswith("finetune-agents-"))
    assert len(runs) == 2  # the CLI and the script: two timestamped runs, neither over the other
    for run in runs:
        assert (run / "adapters" / "tiny-generating" / "adapter_model.safetensors").is_file()
    # --resume without a folder continues the newest run of that name
    out = cli("train", "adapter", "--config", config(cwd / "a.yaml", {**TINY_ADAPTER_CFG, "name": "tiny-k8",
                                                                        "checkpoint_every": 1}))
    newest = max((d for d in Path("runs").iterdir() if d.name.startswith("adapter-tiny-k8-")),
                  key=lambda d: (d / "checkpoint.pt").stat().st_mtime_ns)
    assert str(newest) in out
    out = cli("train", "adapter", "--resume", "--config",
              config(cwd / "a.yaml", {**TINY_ADAPTER_CFG, "name": "tiny-k8", "checkpoint_every": 1, "steps": 3}))
    assert str(newest) in out and len(list(Path("runs").glob("adapter-tiny-k8-*"))) == 2


def test_writing_over_weights_needs_overwrite_and_keeps_the_readme(cwd: Path) -> None:
    target = cwd / "mini-k192"
    shutil.copytree(SHIPPED_ADAPTERS / "mini-k192", target)
    readme = (target / "README.md").read_bytes()
    weights = (target / "model.safetensors").read_bytes()
    cfg = config(cwd / "a.yaml", {**TINY_ADAPTER_CFG, "name": "tiny-k8"})
    res = CliRunner().invoke(app, ["train", "adapter", "--config", cfg, "--output-dir", str(target)],
                             catch_exceptions=False)
    assert res.exit_code == 2 and "--overwrite" in res.output and str(target) in res.output
    assert (target / "model.safetensors").read_bytes() == weights and not Path("runs").exists()
    cli("train", "adapter", "--config", cfg, "--output-dir", str(target), "--overwrite")
    assert (target / "model.safetensors").read_bytes() != weights
    assert (target / "README.md").read_bytes() == readme  # the curated README stays
    assert RUN_CARD_MARK in (target / "RUN.md").read_text()  # this run's card beside it
    # a folder whose README is a run card gets the new card in README.md
    run = cwd / "run"
    cli("train", "adapter", "--config", cfg, "--output-dir", str(run))
    cli("train", "adapter", "--config", cfg, "--output-dir", str(run), "--overwrite")
    assert not (run / "RUN.md").exists() and RUN_CARD_MARK in (run / "README.md").read_text()


def test_finetune_into_adapters_needs_overwrite_and_keeps_readmes(cwd: Path, tiny_cards: Path) -> None:
    adapters = cwd / "adapters"
    ft = dict(card=str(tiny_cards / "tiny-generating.yaml"), n_train=8, steps=1, batch_size=2, warmup_steps=1)
    cli("finetune", "agents", "--config", config(cwd / "f.yaml", ft), "--adapters-dir", str(adapters))
    (adapters / "tiny-generating" / "README.md").write_text("# curated\n")
    res = CliRunner().invoke(app, ["finetune", "agents", "--config", str(cwd / "f.yaml"), "--adapters-dir",
                                   str(adapters)], catch_exceptions=False)
    assert res.exit_code == 2 and "--overwrite" in res.output and "--adapters-dir" in res.output
    cli("finetune", "agents", "--config", str(cwd / "f.yaml"), "--adapters-dir", str(adapters), "--overwrite")
    assert (adapters / "tiny-generating" / "README.md").read_text() == "# curated\n"
    assert (adapters / "tiny-generating" / "agent_modules.safetensors").is_file()


def test_python_m_genscom_help() -> None:
    import subprocess

    res = subprocess.run([sys.executable, "-m", "genscom", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "train" in res.stdout and "--debug" in res.stdout


def test_bench_fed_save_adapter_needs_overwrite(cwd: Path) -> None:
    """`bench fed --save-adapter` (or `output_dir` in --config) into a folder holding weights is refused before any
    work, naming the folder and the flags; with --overwrite the check passes (the run then stops at a missing
    --init-from, the next check, so nothing is trained here)."""
    target = cwd / "mini-k192"
    shutil.copytree(SHIPPED_ADAPTERS / "mini-k192", target)
    before = tree_hash((target,))
    for args in (["--save-adapter", str(target)],
                 ["--config", config(cwd / "fed.yaml", {"output_dir": str(target), "rounds": 1})]):
        res = CliRunner().invoke(app, ["bench", "fed", "--quick", *args, "--out", "fed-results"],
                                 catch_exceptions=False)
        errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
        assert res.exit_code == 2 and len(errors) == 1, res.output
        assert str(target) in errors[0] and "--overwrite" in errors[0] and "--save-adapter" in errors[0]
    res = CliRunner().invoke(app, ["bench", "fed", "--quick", "--save-adapter", str(target), "--overwrite",
                                   "--init-from", str(cwd / "no-such-adapter"), "--out", "fed-results"],
                             catch_exceptions=False)
    assert res.exit_code == 2 and "no-such-adapter" in res.output and "--overwrite" not in res.output, res.output
    assert tree_hash((target,)) == before and not Path("fed-results").exists() and not Path("runs").exists()
    # an empty or new folder needs no flag
    from genscom.training import check_output_dir

    check_output_dir(cwd / "new", overwrite=False, flag="--save-adapter")


def test_shipped_readmes_name_the_timestamped_default() -> None:
    """Shipped READMEs that say where a trainer writes by default name `runs/<name>-<timestamp>/` (or just `runs/`),
    not the old fixed `runs/adapter-<name>/`."""
    import re

    docs = [SHIPPED_ADAPTERS / "README.md", *SHIPPED_ADAPTERS.glob("*/README.md"),
            *MINI_WEIGHTS_DIR.parent.glob("*/README.md"), REPO / "agents" / "README.md",
            REPO / "genscom" / "cards" / "README.md"]
    said = re.compile(r"\bwrites? (?:to|under|into) (?:a new )?`(runs/[^`]*)`")
    found = 0
    for doc in docs:
        for m in said.finditer(doc.read_text(encoding="utf-8")):
            found += 1
            assert m.group(1) == "runs/" or "<timestamp>" in m.group(1), (doc, m.group(0))
    assert found >= 3
