"""The shared training core: InfoNCE against its definition, schedules, data order, checkpoints, run cards."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genscom.training import (
    EpochSampler,
    check_resumable,
    contrastive_loss,
    decay_groups,
    load_checkpoint,
    loss_curve,
    lr_at,
    run_card,
    save_checkpoint,
)


def _pairs(seed: int = 0, b: int = 4, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(b, d, generator=g), dim=-1), F.normalize(torch.randn(b, d, generator=g), dim=-1))


def test_contrastive_loss_matches_its_definition() -> None:
    v, t = _pairs()
    logits = 10.0 * v @ t.T
    ref = 0.5 * (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4)))
    torch.testing.assert_close(contrastive_loss(v, t, scale=10.0), ref)
    torch.testing.assert_close(contrastive_loss(v, t, scale=torch.tensor(10.0), ids=torch.arange(4)), ref)
    # perfect pairs at a large scale: the loss goes to 0
    assert contrastive_loss(v, v, scale=100.0) < 0.05
    # duplicated ids: soft targets P = row-normalised "same id" matrix, written out by hand
    ids = torch.tensor([0, 0, 1, 2])
    same = (ids[:, None] == ids[None, :]).float()
    P = same / same.sum(1, keepdim=True)
    ls = F.log_softmax
    manual = 0.5 * ((-P * ls(logits, 1)).sum(1).mean() + (-P * ls(logits.T, 1)).sum(1).mean())
    torch.testing.assert_close(contrastive_loss(v, t, scale=10.0, ids=ids), manual)


def test_contrastive_loss_of_uninformative_scores_is_log_batch() -> None:
    # all logits equal: each cross-entropy is log B, whatever the targets
    x = torch.ones(5, 3) / math.sqrt(3)
    assert math.isclose(float(contrastive_loss(x, x, scale=7.0)), math.log(5), rel_tol=1e-6)


def test_contrastive_loss_gradient_flows_to_a_learnable_scale() -> None:
    v, t = _pairs(1)
    log_s = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    contrastive_loss(v, t, scale=log_s.exp()).backward()
    assert log_s.grad is not None and log_s.grad.abs() > 0


def test_contrastive_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[B, d\]"):
        contrastive_loss(torch.zeros(4, 8), torch.zeros(3, 8), scale=1.0)


def test_lr_schedule_warmup_cosine_constant() -> None:
    kw = dict(lr=1e-3, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert math.isclose(lr_at(0, **kw), 1e-4) and math.isclose(lr_at(9, **kw), 1e-3)
    assert math.isclose(lr_at(10, **kw), 1e-3)                       # top of the cosine
    assert math.isclose(lr_at(60, **kw), 1e-4 + 0.5 * 9e-4)          # half-way: cos(pi/2) = 0
    assert math.isclose(lr_at(110, **kw), 1e-4) and math.isclose(lr_at(500, **kw), 1e-4)  # floor
    decay = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lr_at(70, **{**kw, "schedule": "constant"}) == 1e-3
    assert math.isclose(lr_at(110, **{**kw, "min_lr_ratio": 0.0}), 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, **{**kw, "schedule": "linear"})  # type: ignore[arg-type]


def test_decay_groups_split_matrices_from_vectors() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    m.register_parameter("mask_token", torch.nn.Parameter(torch.zeros(2, 4)))
    g = decay_groups(m.named_parameters(), 0.1, exclude=lambda n: "mask_token" in n)
    assert [p.shape for p in g[0]["params"]] == [torch.Size([4, 3])] and g[0]["weight_decay"] == 0.1
    assert len(g[1]["params"]) == 4 and g[1]["weight_decay"] == 0.0  # bias, norm weight/bias, mask token


def test_epoch_sampler_covers_each_epoch_and_resumes() -> None:
    s = EpochSampler(10, generator=torch.Generator().manual_seed(0))
    first = torch.cat([s.next(3) for _ in range(3)])
    assert len(set(first.tolist())) == 9  # no item twice within an epoch; the 10th is dropped
    state, gen_state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.state_dict().items()}, \
        s.generator.get_state()
    ahead = [s.next(3).tolist() for _ in range(4)]
    again = EpochSampler(10, generator=torch.Generator())
    again.generator.set_state(gen_state)
    again.load_state_dict(state)
    assert [again.next(3).tolist() for _ in range(4)] == ahead
    with pytest.raises(ValueError, match="another data set"):
        EpochSampler(7, generator=torch.Generator()).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        s.next(11)


def test_check_resumable_names_each_differing_field() -> None:
    check_resumable({"lr": 1.0, "steps": 5}, {"lr": 1.0, "steps": 9}, free={"steps"}, hint="h")
    with pytest.raises(ValueError, match=r"lr: checkpoint 1\.0, now 2\.0.*seed: checkpoint 0, now 1.*; fix it"):
        check_resumable({"lr": 1.0, "seed": 0}, {"lr": 2.0, "seed": 1}, free=set(), hint="fix it")


def test_load_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    cfg = {"lr": 1e-3, "steps": 10}
    assert load_checkpoint(path, resume=False, config=cfg, free=set()) is None
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        load_checkpoint(path, resume=True, config=cfg, free=set())
    save_checkpoint(path, {"step": 3, "w": torch.arange(4)}, config=cfg)
    got = load_checkpoint(path, resume=True, config={**cfg, "steps": 20}, free={"steps"})
    assert got is not None and got["step"] == 3 and torch.equal(got["w"], torch.arange(4))
    with pytest.raises(ValueError, match="lr"):
        load_checkpoint(path, resume=True, config={**cfg, "lr": 1.0}, free=set())
    # a stale temporary file of an interrupted save is removed; the checkpoint is untouched
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half")
    load_checkpoint(path, resume=False, config=cfg, free=set())
    assert not stale.exists() and path.is_file()


@pytest.mark.parametrize("content", [b"", b"not a zip", pickle.dumps(Path("x")), "no-config"])
def test_load_checkpoint_refuses_foreign_files(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "checkpoint.pt"
    if content == "no-config":
        torch.save({"step": 1}, path)
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint.pt.*without --resume"):
        load_checkpoint(path, resume=True, config={}, free=set())


def test_loss_curve_and_run_card() -> None:
    assert loss_curve([1.0, 3.0, 5.0, 7.0, 9.0], 2) == [2.0, 6.0]
    text = run_card(title="t", intro=["what"], rows=[("a", "b")], command=None, api="f(cfg)", config={"x": 1})
    assert text.startswith("# t\n\nwhat\n") and "| a | b |" in text and "(python API) f(cfg)" in text
    assert '"x": 1' in text


def test_cached_tensors_computes_once_and_recomputes_bad_files(tmp_path: Path) -> None:
    from genscom.training import cached_tensors

    calls: list[int] = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"x": torch.arange(3.0)}

    path = tmp_path / "c.pt"
    assert torch.equal(cached_tensors(path, compute, shapes={"x": 3})["x"], torch.arange(3.0))
    assert torch.equal(cached_tensors(path, compute, shapes={"x": 3})["x"], torch.arange(3.0)) and len(calls) == 1
    cached_tensors(path, compute, shapes={"x": 4})  # stands for other data: recomputed
    path.write_bytes(b"truncated")
    cached_tensors(path, compute, shapes={"x": 3})  # unreadable: recomputed, then rewritten
    assert len(calls) == 3 and torch.load(path, weights_only=True)["x"].shape == (3,)


def test_check_resumable_compares_plain_forms() -> None:
    """A tuple and its list, or a dataclass and its ``asdict``, are the same config value; other values differ."""
    import dataclasses

    from genscom.training import check_resumable

    @dataclasses.dataclass
    class Inner:
        width: int = 4

    check_resumable({"snrs": [0.0, 5.0], "inner": {"width": 4}}, {"snrs": (0.0, 5.0), "inner": {"width": 4}},
                    free=set(), hint="h")
    check_resumable({}, {"snrs": [0.0], "inner": {"width": 4}}, free=set(), hint="h",
                    defaults={"snrs": (0.0,), "inner": Inner()})
    with pytest.raises(ValueError, match=r"inner: checkpoint \{'width': 4\}, now \{'width': 8\}"):
        check_resumable({"inner": {"width": 4}}, {"inner": {"width": 8}}, free=set(), hint="h")

    @dataclasses.dataclass
    class Outer:  # a nested config that gained the field `depth` after a checkpoint was written
        width: int = 4
        depth: int = 2

    check_resumable({"inner": {"width": 4}}, {"inner": {"width": 4, "depth": 2}}, free=set(), hint="h",
                    defaults={"inner": Outer()})
    with pytest.raises(ValueError, match=r"inner: checkpoint \{'width': 4, 'depth': 2\}, now \{'width': 4, 'depth': 3\}"):
        check_resumable({"inner": {"width": 4}}, {"inner": {"width": 4, "depth": 3}}, free=set(), hint="h",
                        defaults={"inner": Outer()})
