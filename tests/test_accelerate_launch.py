"""Agent fine-tuning as 2 real processes under ``accelerate launch`` on CPU (gloo).

Checked against the definition of data-parallel training, not against the code: the ranks see
disjoint items, their trainable weights agree after every step (DDP averages the gradients and
every rank takes the same optimiser step), and the loss goes down.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genscom.agents.testing import make_tiny_llm
from genscom.training import check_launch

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "accelerate_finetune_worker.py"
STEPS = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _launch(args: list[str], *, cwd: Path) -> subprocess.CompletedProcess:
    # no visible GPU: accelerate's multi-process launcher (torchrun) then starts CPU processes with gloo;
    # `--cpu --num_processes 2` would start only one without MPI (see test_cpu_launch_without_mpi_is_refused)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "GENSCOM_CACHE": str(cwd / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), *args]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:  # the first error lines (the root cause) and the end
        errors = [ln for ln in proc.stderr.splitlines() if any(k in ln for k in ("Error", "error:", "terminate", "Abort"))]
        pytest.fail(f"accelerate launch exited with {proc.returncode}:\n" + "\n".join(errors[:20])
                    + "\n...\n" + proc.stderr[-3000:])
    return proc


def test_two_process_finetune_keeps_ranks_in_step(tmp_path: Path) -> None:
    llm = make_tiny_llm(tmp_path / "llm")
    out = tmp_path / "out"
    out.mkdir()
    t0 = time.time()
    _launch([str(WORKER), str(llm), str(out), str(STEPS)], cwd=tmp_path)
    print(f"2-process fine-tuning: {time.time() - t0:.1f} s")
    r0, r1 = _records(out / "rank0.jsonl"), _records(out / "rank1.jsonl")
    assert [r["step"] for r in r0] == [r["step"] for r in r1] == list(range(1, STEPS + 1))
    assert {(r["rank"], r["world"], r["backend"]) for r in r0 + r1} == {(0, 2, "gloo"), (1, 2, "gloo")}
    for a, b in zip(r0, r1):
        assert a["hash"] == b["hash"], f"ranks disagree after step {a['step']}"
        assert len(a["items"]) == len(b["items"]) == 4  # batch_size per process
        assert not set(a["items"]) & set(b["items"]), f"ranks share items at step {a['step']}: {a['items']} {b['items']}"
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)  # the logged loss is the mean over both ranks
    assert len({r["hash"] for r in r0}) == STEPS  # the weights change every step
    losses = [r["loss"] for r in r0]
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses
    saved = json.loads((out / "result0.json").read_text())["adapters"]
    assert sorted(saved) == ["tiny-generating", "tiny-understanding"]  # rank 0 saves, once
    assert json.loads((out / "result1.json").read_text())["adapters"] == {}


def test_two_process_cli_finetune(tmp_path: Path) -> None:
    """The documented command: `accelerate launch --multi_gpu --num_processes 2 -m genscom finetune agents`."""
    import yaml

    from genscom.agents.testing import tiny_card_dict

    llm = make_tiny_llm(tmp_path / "llm")
    for role, other in (("understanding", "generating"), ("generating", "understanding")):
        d = tiny_card_dict(llm, role, prompt=str(REPO / "prompts" / f"{role}.md"), perception="tiny",
                           partner=f"tiny-{other}.yaml", max_caption_tokens=4)
        (tmp_path / f"tiny-{role}.yaml").write_text(yaml.safe_dump(d))
    proc = _launch(["-m", "genscom", "finetune", "agents", "--card", "tiny-generating.yaml", "--n-train", "16",
                    "--steps", "3", "--batch-size", "2", "--warmup-steps", "1", "--out-dir", "run"], cwd=tmp_path)
    assert proc.stdout.count("done: 3 steps") == 1, proc.stdout  # the main process reports
    log = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2, 3]
    for name in ("tiny-understanding", "tiny-generating"):
        assert (tmp_path / "run" / "adapters" / name / "adapter_model.safetensors").is_file()


def test_cpu_launch_without_mpi_is_refused() -> None:
    # what `accelerate launch --cpu --num_processes 2 script.py` hands its single process
    env = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(ValueError, match="--multi_gpu --num_processes"):
        check_launch(env)
    check_launch({**env, "WORLD_SIZE": "2", "RANK": "0"})  # torchrun / --multi_gpu: fine
    check_launch({**env, "OMPI_COMM_WORLD_SIZE": "2"})  # MPI: fine
    check_launch({"ACCELERATE_USE_CPU": "True"})  # one process asked for, one started: fine
