"""Agent fine-tuning: a few steps lower the loss, and --resume continues exactly."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genscom.agents.agent import Agent
from genscom.agents.card import load_card
from genscom.agents.finetune import CaptionData, FinetuneConfig, finetune_agents
from genscom.agents.testing import StubEncoder, make_tiny_llm, tiny_card_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("tiny_llm_ft"))


def _pair(tiny_llm: Path) -> tuple[Agent, Agent]:
    u = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "understanding", prompt=str(REPO / "prompts/understanding.md"))))
    g = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "generating", prompt=str(REPO / "prompts/generating.md"))),
                        llm=u.llm, seed=1)
    return u, g


@pytest.fixture(scope="module")
def data() -> CaptionData:
    gen = torch.Generator().manual_seed(0)
    words = ["red circle", "blue square", "green star", "white ring"]
    classes = F.normalize(torch.randn(4, 16, generator=gen), dim=-1)  # one text embedding per caption class
    return CaptionData(features=torch.randn(8, 16, generator=gen),
                       captions=[[f"a {words[i % 4]}", f"one {words[i % 4]}"] for i in range(8)],
                       text_emb=classes[torch.tensor([i % 4 for i in range(8)]).repeat_interleave(2)])


def test_finetune_lowers_loss_and_saves(tiny_llm: Path, data: CaptionData, tmp_path: Path) -> None:
    cfg = FinetuneConfig(steps=20, batch_size=4, lr=3e-3, warmup_steps=1, snr_min=10, snr_max=20,
                         out_dir=str(tmp_path / "run"), adapters_dir=str(tmp_path / "adapters"), checkpoint_every=100)
    res = finetune_agents(cfg, data=data, agents=_pair(tiny_llm))
    losses = res["losses"]
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    for name in ("tiny-understanding", "tiny-generating"):
        assert (tmp_path / "adapters" / name / "adapter_model.safetensors").is_file()


def test_resume_continues_exactly(tiny_llm: Path, data: CaptionData, tmp_path: Path) -> None:
    kw = dict(batch_size=2, lr=3e-3, warmup_steps=2, grad_accum=2, adapters_dir=None, checkpoint_every=2)
    full = finetune_agents(FinetuneConfig(steps=3, out_dir=str(tmp_path / "a"), **kw), data=data, agents=_pair(tiny_llm))
    finetune_agents(FinetuneConfig(steps=2, out_dir=str(tmp_path / "b"), **kw), data=data, agents=_pair(tiny_llm))
    resumed = finetune_agents(FinetuneConfig(steps=3, out_dir=str(tmp_path / "b"), **kw), data=data,
                              agents=_pair(tiny_llm), resume=True)
    assert resumed["losses"] == full["losses"]
    # adapters_dir=None: the adapters go under the run folder, never into the shipped ones
    for name in ("tiny-understanding", "tiny-generating"):
        assert (tmp_path / "a" / "adapters" / name / "adapter_model.safetensors").is_file()
    with pytest.raises(ValueError, match="lr"):
        finetune_agents(FinetuneConfig(steps=5, out_dir=str(tmp_path / "b"), **{**kw, "lr": 1e-2}), data=data,
                        agents=_pair(tiny_llm), resume=True)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="snr_min"):
        FinetuneConfig(snr_min=10, snr_max=0)
    with pytest.raises(ValueError, match="steps"):
        FinetuneConfig(steps=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        FinetuneConfig(lr_schedule="linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval_every"):
        FinetuneConfig(eval_every=-1)


def test_periodic_evaluation_is_recorded(tiny_llm: Path, data: CaptionData, tmp_path: Path) -> None:
    calls: list[bool] = []

    def evaluator(pair) -> dict[str, float]:
        calls.append(pair.training)
        return {"score": float(len(calls))}

    cfg = FinetuneConfig(steps=5, batch_size=2, warmup_steps=1, eval_every=2, out_dir=str(tmp_path / "run"),
                         adapters_dir=None, checkpoint_every=100)
    res = finetune_agents(cfg, data=data, agents=_pair(tiny_llm), evaluator=evaluator)
    evals = {h["step"]: h["eval"] for h in res["history"] if "eval" in h}
    assert evals == {2: {"score": 1.0}, 4: {"score": 2.0}, 5: {"score": 3.0}}  # every 2 steps and the last one
    assert calls == [False, False, False]  # evaluated in eval mode


def test_caption_evaluator_scores_val_split(tiny_llm: Path) -> None:
    from genscom.agents.finetune import AgentPairModule, CaptionEvaluator
    from genscom.data import create_dataset

    u, g = _pair(tiny_llm)
    ds = create_dataset("synthetic", split="val", n_items=3, seed=0, cache=False)
    ev = CaptionEvaluator(FinetuneConfig(n_eval=3, eval_snr=10.0), u, encoder=StubEncoder(), dataset=ds)
    pair = AgentPairModule(u, g)
    pair.train()
    scores = ev(pair)
    assert set(scores) >= {"object_colour_acc", "object_acc", "colour_acc", "bleu4", "text_sim"}
    assert all(0.0 <= scores[k] <= 1.0 for k in ("object_colour_acc", "object_acc", "colour_acc", "bleu4"))
    assert pair.training  # restored
    with pytest.raises(ValueError, match="synthetic"):
        CaptionEvaluator(FinetuneConfig(dataset="msrvtt"), u, encoder=StubEncoder())


def test_init_from_trained_adapters(tiny_llm: Path, data: CaptionData, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    kw = dict(batch_size=2, warmup_steps=1, checkpoint_every=100, snr_min=10, snr_max=20)
    finetune_agents(FinetuneConfig(steps=4, lr=3e-3, out_dir=str(tmp_path / "a"), adapters_dir=str(tmp_path / "ad"),
                                   **kw), data=data, agents=_pair(tiny_llm))
    saved = load_file(str(tmp_path / "ad" / "tiny-generating" / "agent_modules.safetensors"))
    pair = _pair(tiny_llm)
    assert not torch.allclose(pair[1].queries, saved["queries"])  # fresh agents differ from the trained ones
    finetune_agents(FinetuneConfig(steps=1, lr=1e-12, out_dir=str(tmp_path / "b"), adapters_dir=None,
                                   init_from=str(tmp_path / "ad"), **kw), data=data, agents=pair)
    torch.testing.assert_close(pair[1].queries.detach(), saved["queries"], atol=1e-6, rtol=0)  # continued from them
    with pytest.raises(FileNotFoundError, match="init_from"):
        finetune_agents(FinetuneConfig(steps=1, out_dir=str(tmp_path / "d"), init_from=str(tmp_path / "none"), **kw),
                        data=data, agents=_pair(tiny_llm))
    # the checkpoint of run "a" holds the same adapters as its saved folders
    from genscom.agents.finetune import export_checkpoint

    out = export_checkpoint(tmp_path / "a" / "checkpoint.pt", tmp_path / "exported", agents=_pair(tiny_llm))
    assert sorted(out) == ["tiny-generating", "tiny-understanding"]
    again = load_file(str(tmp_path / "exported" / "tiny-generating" / "agent_modules.safetensors"))
    assert all(torch.equal(again[k], saved[k]) for k in saved)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        export_checkpoint(tmp_path / "nope.pt", tmp_path / "x")


# ----------------------------------------------------------------------------- one flag set for the script and the CLI
def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_agents_script", REPO / "apps" / "finetune_agents.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _cli_options() -> set[str]:
    import typer

    from genscom.cli import app

    cmd = typer.main.get_command(app).commands["finetune"].commands["agents"]  # type: ignore[attr-defined]
    return {o for p in cmd.params for o in p.opts + p.secondary_opts if o.startswith("--")}


def _help_options(text: str) -> set[str]:
    import re

    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - {"--help"}


# flags of the command that are not FinetuneConfig fields; --out is an alias of --out-dir. No field is internal.
EXTRA_FLAGS = {"--config", "--resume", "--overwrite", "--out"}


def test_script_and_cli_share_one_flag_set_from_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from typer.testing import CliRunner

    from genscom.cli import app

    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(FinetuneConfig)}
    cli = _cli_options()
    assert cli == fields | EXTRA_FLAGS, (sorted(fields - cli), sorted(cli - fields - EXTRA_FLAGS))
    with pytest.raises(SystemExit) as info:
        _script().main(["--help"])
    assert info.value.code == 0
    script_help = capsys.readouterr().out
    cli_help = CliRunner().invoke(app, ["finetune", "agents", "--help"], env={"COLUMNS": "200"}).output
    assert _help_options(script_help) == _help_options(cli_help) == cli, (
        sorted(_help_options(script_help) ^ cli), sorted(_help_options(cli_help) ^ cli))


def _flag_values(tmp_path: Path) -> dict[str, object]:
    """A value different from the default for every FinetuneConfig field (valid for its checks)."""
    import dataclasses
    import typing

    special: dict[str, object] = {"card": str(tmp_path / "c.yaml"), "dataset": "digits", "data_root": str(tmp_path / "d"),
                                  "profile": "mini", "out_dir": str(tmp_path / "run"), "adapters_dir": str(tmp_path / "a"),
                                  "init_from": str(tmp_path / "i"), "lr_schedule": "cosine", "mixed_precision": "bf16",
                                  "channel": "rayleigh", "device": "cuda"}
    hints = typing.get_type_hints(FinetuneConfig)
    values: dict[str, object] = {}
    for f in dataclasses.fields(FinetuneConfig):
        if f.name in special:
            values[f.name] = special[f.name]
        elif hints[f.name] is int:
            values[f.name] = f.default + 1  # type: ignore[operator]
        elif hints[f.name] is float:
            values[f.name] = f.default + 0.5  # type: ignore[operator]
        else:
            raise AssertionError(f"add a test value for the new field {f.name!r}")
    return values


def test_script_and_cli_build_the_same_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field set by its flag reaches the config, identically through `genscom finetune agents` and the script."""
    from typer.testing import CliRunner

    import genscom.agents.finetune as ft
    from genscom.cli import app

    seen: list[tuple[FinetuneConfig, bool, bool]] = []

    def fake(cfg: FinetuneConfig, *, resume: bool = False, progress=None, overwrite: bool = False, **_: object) -> dict:
        seen.append((cfg, resume, overwrite))
        return {"main_process": True, "history": [], "steps": cfg.steps, "seconds": 0.0, "losses": [0.5],
                "adapters": {}}

    monkeypatch.setattr(ft, "finetune_agents", fake)
    values = _flag_values(tmp_path)
    args = [a for k, v in values.items() for a in ("--" + k.replace("_", "-"), str(v))] + ["--resume", "--overwrite"]
    res = CliRunner().invoke(app, ["finetune", "agents", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = _script().main(args)
    assert out["steps"] == values["steps"]
    (cli_cfg, *cli_flags), (script_cfg, *script_flags) = seen
    assert cli_cfg == script_cfg == FinetuneConfig(**values)  # type: ignore[arg-type]
    assert cli_flags == script_flags == [True, True]
    # the --out alias; `none` unsets an optional field, over a --config value too; the same one-line errors
    _script().main(["--out", str(tmp_path / "o")])
    assert seen[-1][0].out_dir == str(tmp_path / "o")
    cfg_file = tmp_path / "f.yaml"
    cfg_file.write_text(f"adapters_dir: {tmp_path / 'x'}\nsteps: 7\n")
    _script().main(["--config", str(cfg_file)])
    assert (seen[-1][0].adapters_dir, seen[-1][0].steps) == (str(tmp_path / "x"), 7)
    _script().main(["--config", str(cfg_file), "--adapters-dir", "none"])
    assert (seen[-1][0].adapters_dir, seen[-1][0].steps) == (None, 7)
    for bad in (["--steps", "0"], ["--out-dir-typo", "x"]):
        with pytest.raises(SystemExit) as info:
            _script().main(bad)
        assert info.value.code == 2


# ----------------------------------------------------------------------------- the attributes head
ATTR_CLASSES = {"shape": ["circle", "square", "star", "ring"], "colour": ["red", "blue", "green", "white"]}


def _attr_pair(tiny_llm: Path, **extra: object) -> tuple[Agent, Agent]:
    u = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "understanding", prompt=str(REPO / "prompts/understanding.md"))))
    g = Agent.from_card(load_card(tiny_card_dict(
        tiny_llm, "generating", prompt=str(REPO / "prompts/generating.md"),
        heads=["retrieval", "caption", "image-conditioning", "attributes"], attribute_classes=ATTR_CLASSES, **extra)),
        llm=u.llm, seed=1)
    return u, g


def test_attributes_head_card_shapes_and_names(tiny_llm: Path) -> None:
    with pytest.raises(ValueError, match="attribute_classes"):
        load_card(tiny_card_dict(tiny_llm, "generating", prompt="p.md", heads=["caption", "attributes"]))
    with pytest.raises(ValueError, match="attribute_classes"):
        load_card(tiny_card_dict(tiny_llm, "generating", prompt="p.md", attribute_classes=ATTR_CLASSES))
    with pytest.raises(ValueError, match="at least two distinct"):
        load_card(tiny_card_dict(tiny_llm, "generating", prompt="p.md", heads=["attributes"],
                                 attribute_classes={"shape": ["circle", "circle"]}))
    # a card without `heads` does not get the opt-in attributes head
    assert "attributes" not in load_card(tiny_card_dict(tiny_llm, "generating", prompt="p.md")).heads
    _, g = _attr_pair(tiny_llm)
    from genscom.agents.prompts import ChannelSensing

    out = g(torch.randn(3, 12), sensing=ChannelSensing(snr_db=5.0, channel="awgn"))
    assert {k: tuple(v.shape) for k, v in out.attributes.items()} == {"shape": (3, 4), "colour": (3, 4)}
    read = g.read_attributes(torch.randn(3, 12))
    assert sorted(read) == ["colour", "shape"] and all(len(v) == 3 for v in read.values())
    assert set(read["shape"]) <= set(ATTR_CLASSES["shape"]) and set(read["colour"]) <= set(ATTR_CLASSES["colour"])


def test_attribute_labels_follow_the_first_group() -> None:
    from genscom.agents.finetune import attribute_labels
    from genscom.data import create_dataset

    ds = create_dataset("synthetic", split="train", n_items=12, seed=0, cache=False)
    labels = attribute_labels(ds, {"shape": ATTR_CLASSES["shape"], "count": ["1", "2", "3"]})
    for i in range(len(ds)):
        g0 = ds.attributes_of(i)["groups"][0]
        want = ATTR_CLASSES["shape"].index(g0["shape"]) if g0["shape"] in ATTR_CLASSES["shape"] else -100
        assert int(labels["shape"][i]) == want
        assert int(labels["count"][i]) == g0["count"] - 1
    assert (labels["shape"] == -100).any()  # triangles and crosses are not among these classes: ignored


def test_finetune_trains_the_attributes_head_and_warm_starts_it(tiny_llm: Path, data: CaptionData,
                                                                tmp_path: Path) -> None:
    kw = dict(batch_size=4, warmup_steps=1, checkpoint_every=100, snr_min=10, snr_max=20)
    # a pair without the head, trained and saved; a card that adds the head warm-starts from it
    finetune_agents(FinetuneConfig(steps=2, lr=3e-3, out_dir=str(tmp_path / "a"), adapters_dir=str(tmp_path / "ad"),
                                   **kw), data=data, agents=_pair(tiny_llm))
    u, g = _attr_pair(tiny_llm, name="tiny-generating")
    from genscom.errors import BadFileError

    with pytest.raises(BadFileError, match="does not fit"):
        g.load_pretrained(tmp_path / "ad" / "tiny-generating")  # strict: the folder has no attributes head
    labels = {"shape": torch.arange(8) % 4, "colour": torch.arange(8) % 4}  # the data's captions name these
    with_labels = CaptionData(features=data.features, captions=data.captions, text_emb=data.text_emb, labels=labels)
    with pytest.raises(ValueError, match="no labels"):
        finetune_agents(FinetuneConfig(steps=1, out_dir=str(tmp_path / "x"), **kw), data=data, agents=(u, g))
    res = finetune_agents(FinetuneConfig(steps=30, lr=3e-3, out_dir=str(tmp_path / "b"), adapters_dir=None,
                                         init_from=str(tmp_path / "ad"), **kw), data=with_labels, agents=(u, g))
    att = [h["attributes"] for h in res["history"]]
    assert att[0] > 0 and sum(att[-5:]) / 5 < 0.7 * sum(att[:5]) / 5, att
    saved = tmp_path / "b" / "adapters" / "tiny-generating"
    fresh = _attr_pair(tiny_llm, name="tiny-generating")[1]
    fresh.load_pretrained(saved)  # now the folder has the head: strict loading fits
    torch.testing.assert_close(fresh.heads["attributes"].fc.weight, g.heads["attributes"].fc.weight)
    with pytest.raises(ValueError, match="labels"):
        CaptionData(features=data.features, captions=data.captions, text_emb=data.text_emb,
                    labels={"shape": torch.zeros(3, dtype=torch.int64)})


def test_attribute_labels_are_checked_and_sparse_batches_stay_finite(tiny_llm: Path, data: CaptionData,
                                                                      tmp_path: Path) -> None:
    kw = dict(batch_size=4, warmup_steps=1, checkpoint_every=100, snr_min=10, snr_max=20, adapters_dir=None)
    none = torch.full((8,), -100, dtype=torch.int64)

    def run(labels: dict[str, torch.Tensor], out: str, steps: int = 1) -> dict:
        d = CaptionData(features=data.features, captions=data.captions, text_emb=data.text_emb, labels=labels)
        return finetune_agents(FinetuneConfig(steps=steps, lr=3e-3, out_dir=str(tmp_path / out), **kw), data=d,
                               agents=_attr_pair(tiny_llm))

    with pytest.raises(ValueError, match=r"no labels for attribute\(s\) \['colour'\]"):
        run({"shape": torch.arange(8) % 4}, "a")
    with pytest.raises(ValueError, match=r"every label is -100"):
        run({"shape": torch.arange(8) % 4, "colour": none}, "b")
    # one labelled item of eight: most batches of four have no colour label at all, and must add 0, not NaN
    sparse = none.clone()
    sparse[0] = 2
    res = run({"shape": torch.arange(8) % 4, "colour": sparse}, "c", steps=6)
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["attributes"]) for h in res["history"])


def test_resume_takes_fields_added_later_at_their_defaults() -> None:
    from genscom.training import check_resumable, config_defaults

    now = dataclasses.asdict(FinetuneConfig())
    old = {k: v for k, v in now.items() if k != "attribute_weight"}  # written before the field existed
    check_resumable(old, now, free=set(), hint="h", defaults=config_defaults(FinetuneConfig))
    with pytest.raises(ValueError, match="attribute_weight"):
        check_resumable(old, {**now, "attribute_weight": 2.0}, free=set(), hint="h",
                        defaults=config_defaults(FinetuneConfig))
    with pytest.raises(ValueError, match="attribute_weight"):
        check_resumable(old, now, free=set(), hint="h")  # without defaults a missing field is a difference


def test_warm_start_adds_only_the_heads_the_card_adds(tiny_llm: Path, tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file, save_file

    from genscom.errors import BadFileError

    _, g0 = _pair(tiny_llm)
    folder = g0.save_pretrained(tmp_path / "tiny-generating")
    _, g = _attr_pair(tiny_llm, name="tiny-generating")
    g.load_pretrained(folder, new_heads=True)  # the attributes head is new: it starts fresh
    torch.testing.assert_close(g.queries, g0.queries)
    # a folder that lost a head its own agent.json lists is broken, warm start or not
    modules = folder / "agent_modules.safetensors"
    save_file({k: v for k, v in load_file(str(modules)).items() if not k.startswith("heads.retrieval.")}, str(modules))
    with pytest.raises(BadFileError, match="does not fit"):
        _attr_pair(tiny_llm, name="tiny-generating")[1].load_pretrained(folder, new_heads=True)
    # an attributes head trained on other classes does not load
    folder2 = g.save_pretrained(tmp_path / "with-attr")
    meta = json.loads((folder2 / "agent.json").read_text())
    meta["card"]["attribute_classes"]["shape"] = list(reversed(meta["card"]["attribute_classes"]["shape"]))
    (folder2 / "agent.json").write_text(json.dumps(meta))
    with pytest.raises(BadFileError, match="trained on classes"):
        _attr_pair(tiny_llm, name="tiny-generating")[1].load_pretrained(folder2)
