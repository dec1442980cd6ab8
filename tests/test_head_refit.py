"""Refitting the generating agent's attributes head alone (genscom.agents.head_refit), on a tiny random pair."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genscom.agents.agent import Agent
from genscom.agents.card import load_card
from genscom.agents.head_refit import HeadRefitConfig, refit_attribute_head
from genscom.agents.testing import StubEncoder, make_tiny_llm, tiny_card_dict
from genscom.data import create_dataset

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"shape": ["circle", "square", "triangle", "star", "ring", "cross"],
           "colour": ["red", "orange", "yellow", "green", "blue", "purple", "pink", "white"]}


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llm(tmp_path_factory.mktemp("llm"))


@pytest.fixture(scope="module")
def splits() -> tuple:
    return (create_dataset("synthetic", split="train", n_items=48, seed=0, cache=False),
            create_dataset("synthetic", split="val", n_items=16, seed=0, cache=False))


def _pair(tiny_llm: Path) -> tuple[Agent, Agent]:
    u = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "understanding", prompt=str(REPO / "prompts/understanding.md"))))
    g = Agent.from_card(load_card(tiny_card_dict(tiny_llm, "generating", prompt=str(REPO / "prompts/generating.md"),
                                                 heads=["retrieval", "caption", "attributes"],
                                                 attribute_classes=CLASSES)), llm=u.llm, seed=1)
    return u, g


def _cfg(tmp_path: Path, name: str, **kw: object) -> HeadRefitConfig:
    base = dict(n_train=48, n_val=16, snrs=(0.0, 20.0), epochs=3, batch_size=16, lr=3e-3,
                out_dir=str(tmp_path / name))
    return HeadRefitConfig(**{**base, **kw})  # type: ignore[arg-type]


def _run(tiny_llm: Path, splits: tuple, cfg: HeadRefitConfig, **kw: object) -> tuple[dict, Agent, Agent]:
    u, g = _pair(tiny_llm)
    res = refit_attribute_head(cfg, agents=(u, g), encoder=StubEncoder(), train=splits[0], val=splits[1],
                               progress=False, **kw)
    return res, u, g


def test_config_rejects_bad_values() -> None:
    for bad, match in [({"snrs": ()}, "snrs"), ({"snrs": (0.0, 0.0)}, "distinct"), ({"snrs": ("x",)}, "snrs"),
                       ({"epochs": 0}, "epochs"), ({"init": "cold"}, "warm"), ({"lr": 0.0}, "lr"),
                       ({"weight_decay": -1.0}, "weight_decay"), ({"batch_size": 64, "n_train": 32}, "batch_size"),
                       ({"device": "gpu0"}, "device")]:
        with pytest.raises(ValueError, match=match):
            HeadRefitConfig(**bad)  # type: ignore[arg-type]


def test_a_card_without_attributes_head_is_refused_before_loading(tiny_llm: Path, tmp_path: Path) -> None:
    import yaml

    card = tmp_path / "plain.yaml"
    card.write_text(yaml.safe_dump(tiny_card_dict(tiny_llm, "generating", prompt=str(REPO / "prompts/generating.md"))))
    with pytest.raises(ValueError, match="no attributes head"):
        refit_attribute_head(HeadRefitConfig(card=str(card), out_dir=str(tmp_path / "run")), progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_refit_trains_only_the_head_and_saves_a_loadable_agent(tiny_llm: Path, splits: tuple, tmp_path: Path) -> None:
    u0, g0 = _pair(tiny_llm)  # the same seeds: what the agents were before the refit
    res, u, g = _run(tiny_llm, splits, _cfg(tmp_path, "run", epochs=6))
    hist = res["history"]
    assert [h["epoch"] for h in hist] == list(range(7)) and hist[0]["loss"] is None
    assert hist[-1]["loss"] < hist[1]["loss"]  # the cross-entropy falls on these items
    assert set(res["val"]) == {"0", "20"} and {"shape", "colour", "shape_colour"} <= set(res["val"]["20"])
    before, after = g0.state_dict(), g.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("heads.attributes.") for k in changed), changed
    assert all(torch.equal(a, b) for a, b in zip(u0.state_dict().values(), u.state_dict().values()))
    lora0, lora = g0.llm.adapter_state_dict(g0.adapter_name), g.llm.adapter_state_dict(g.adapter_name)
    assert all(torch.equal(lora0[k], lora[k]) for k in lora)
    folder = res["adapters"]
    assert folder == tmp_path / "run" / "adapters" / "tiny-generating"
    fresh = _pair(tiny_llm)[1]
    fresh.load_pretrained(folder)
    torch.testing.assert_close(fresh.heads["attributes"].fc.weight, g.heads["attributes"].fc.weight.half().float())
    readme = (folder / "README.md").read_text()
    assert "attributes head refitted" in readme and "loaded head" in readme


def test_resume_after_an_interruption_reproduces_the_uninterrupted_run(tiny_llm: Path, splits: tuple,
                                                                      tmp_path: Path, monkeypatch) -> None:
    import genscom.agents.head_refit as hr

    full, _, g_full = _run(tiny_llm, splits, _cfg(tmp_path, "full"))
    real, calls = hr.save_checkpoint, []

    def dies_after_two(*a: object, **k: object):
        out = real(*a, **k)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed right after the second epoch's checkpoint
        return out

    monkeypatch.setattr(hr, "save_checkpoint", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_llm, splits, _cfg(tmp_path, "cut"))
    assert not (tmp_path / "cut" / "adapters").exists()  # nothing half-written
    monkeypatch.setattr(hr, "save_checkpoint", real)
    res, _, g = _run(tiny_llm, splits, _cfg(tmp_path, "cut"), resume=True)
    assert [h["loss"] for h in res["history"]] == [h["loss"] for h in full["history"]]
    for k, v in g_full.heads["attributes"].state_dict().items():
        assert torch.equal(v, g.heads["attributes"].state_dict()[k]), k
    # another config cannot resume this run
    with pytest.raises(ValueError, match="lr"):
        _run(tiny_llm, splits, _cfg(tmp_path, "cut", lr=1e-2), resume=True)


def test_the_refit_does_not_write_into_a_folder_with_weights(tiny_llm: Path, splits: tuple, tmp_path: Path) -> None:
    from genscom.errors import OutputExistsError

    res, _, _ = _run(tiny_llm, splits, _cfg(tmp_path, "a", epochs=1))
    target = str(res["adapters"].parent)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        _run(tiny_llm, splits, _cfg(tmp_path, "b", epochs=1, adapters_dir=target))
    res2, _, _ = _run(tiny_llm, splits, _cfg(tmp_path, "b", epochs=1, adapters_dir=target), overwrite=True)
    assert res2["adapters"] == res["adapters"]


def test_head_accuracy_counts_unlabelled_items_only_where_it_should() -> None:
    from genscom.agents.head_refit import head_accuracy

    class Fixed(torch.nn.Module):  # always says shape 0, colour 1
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            b = x.shape[0]
            return {"shape": torch.tensor([[5.0, 0.0]]).expand(b, -1), "colour": torch.tensor([[0.0, 5.0]]).expand(b, -1)}

    labels = {"shape": torch.tensor([0, 0, 1, -100]), "colour": torch.tensor([1, 0, 1, 1])}
    acc = head_accuracy(Fixed(), torch.randn(1, 4, 6), labels, (20.0,), None, seed=0)["20"]  # channel None: noiseless
    assert acc["shape"] == pytest.approx(2 / 3, abs=1e-4)  # the unlabelled item is left out of the shape accuracy
    assert acc["colour"] == pytest.approx(3 / 4)
    assert acc["shape_colour"] == pytest.approx(1 / 4)  # ... but counts as wrong for shape+colour


def test_a_run_killed_in_its_first_epoch_resumes_from_its_cached_embeddings(tiny_llm: Path, splits: tuple,
                                                                           tmp_path: Path, monkeypatch) -> None:
    import genscom.agents.head_refit as hr

    real_save, real_embed, embeds = hr.save_checkpoint, hr._embed, []

    def dies(*a: object, **k: object):
        real_save(*a, **k)
        raise KeyboardInterrupt  # right after the epoch-0 checkpoint

    def counting(*a: object, **k: object):
        embeds.append(1)
        return real_embed(*a, **k)

    monkeypatch.setattr(hr, "_embed", counting)
    monkeypatch.setattr(hr, "save_checkpoint", dies)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_llm, splits, _cfg(tmp_path, "run"))
    assert len(embeds) == 2  # train and val, once
    monkeypatch.setattr(hr, "save_checkpoint", real_save)
    res, _, _ = _run(tiny_llm, splits, _cfg(tmp_path, "run"), resume=True)
    assert len(embeds) == 2 and [h["epoch"] for h in res["history"]] == [0, 1, 2, 3]  # no embedding again
    # a cache made by another config is not trusted: the run embeds again
    cache = tmp_path / "run" / hr.EMBEDDINGS_NAME
    blob = torch.load(cache, weights_only=True)
    blob["fingerprint"] = torch.tensor(list(b"0123456789abcdef"), dtype=torch.uint8)
    torch.save(blob, cache)
    _run(tiny_llm, splits, _cfg(tmp_path, "run"), resume=True)
    assert len(embeds) == 4


def test_cli_names_a_wrongly_typed_field(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from genscom.cli import app

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: [1, 2]\n")
    res = CliRunner().invoke(app, ["finetune", "attribute-head", "--config", str(cfg)])
    assert res.exit_code != 0 and "epochs" in res.output and "Traceback" not in res.output
