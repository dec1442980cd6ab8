"""A corpus of broken files, built here by code, fed to every `genscom` command that takes a file.

Each (command, bad file) pair must end quickly (< 10 s) with a non-zero exit status and ONE
`error:` line that names the file (or its folder), without a traceback or click's bare
`Aborted!`, and nothing a pickle or a YAML tag asks for may run (a marker file stays absent).

Commands run in-process with typer's CliRunner (catch_exceptions=False, so an exception that
escaped genscom's one error handler would fail the test); a few run as real subprocesses
(`python -m genscom`) to check stderr and the exit status end to end.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genscom.cli import app

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 10.0
MARKER = "PWNED"  # a file the payloads of pickles and YAML tags would create in the working folder


class _Payload:
    """Unpickling this would call ``open("PWNED", "w")``: create the marker file."""

    def __reduce__(self):  # noqa: D105
        return (open, (MARKER, "w"))


# ----------------------------------------------------------------------------------------- the corpus
def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.arange(64, dtype=torch.float32).reshape(8, 8)})


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _random(n: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _yaml_bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")  # 9^9 ~ 387 M strings once expanded
    return "\n".join(lines) + "\n"


YAML_TAG = f'steps: !!python/object/apply:builtins.open ["{MARKER}", "w"]\n'

# name -> bytes of a broken weights / checkpoint / config file
SAFETENSORS_BAD: dict[str, Callable[[], bytes]] = {
    "truncated": lambda: _safetensors_bytes()[: len(_safetensors_bytes()) // 2],
    "random-bytes": lambda: _random(),
    "bad-header-json": lambda: struct.pack("<Q", 24) + b'{"w": {"dtype": "F32", ,}' + b"\0" * 64,
    "header-past-end": lambda: struct.pack("<Q", 10**6) + b"{}",
    "empty": lambda: b"",
}
CHECKPOINT_BAD: dict[str, Callable[[], bytes]] = {
    "pickle-reduce": lambda: pickle.dumps({"config": {}, "x": _Payload()}),
    "torch-pickle-reduce": lambda: _torch_bytes({"config": {}, "x": _Payload()}),
    "truncated": lambda: _torch_bytes({"config": {"a": 1}, "w": torch.zeros(1000)})[:600],
    "random-bytes": lambda: _random(),
    "empty": lambda: b"",
}
CONFIG_BAD: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "only-comments": lambda: b"# nothing set here\n",
    "wrong-type": lambda: b"steps: [1, 2]\n",
    "yaml-bomb": lambda: _yaml_bomb().encode(),
    "yaml-python-tag": lambda: YAML_TAG.encode(),
    "random-bytes": lambda: _random(),
    "not-a-mapping": lambda: b"- steps\n- 3\n",
}
CARD_BAD: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "wrong-type": lambda: (REPO / "agents" / "smollm2-generating.yaml").read_bytes() + b"embedding_dim: big\n",
    "yaml-bomb": lambda: _yaml_bomb().encode(),
    "yaml-python-tag": lambda: YAML_TAG.replace("steps", "name").encode(),
    "random-bytes": lambda: _random(),
}


def _png_bomb(path: Path, side: int = 13_000) -> None:
    """A small PNG whose header declares ``side`` x ``side`` pixels (169 MP), with a valid IHDR CRC."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", side, side)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
    path.write_bytes(bytes(data))


def _tiny_mp4(path: Path, frames: int = 12) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=12)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((32, 32, 3), (i * 20) % 256, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _damaged_mp4(path: Path, how: str) -> None:
    _tiny_mp4(path)
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) * 2 // 5]
    else:  # bit-flipped: the container's index (the moov atom at the end) and the header
        for i in [*range(0, 32), *range(len(data) * 3 // 5, len(data))]:
            data[i] ^= 0xA5
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------------- the runner
@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty folder (outputs and the marker would land here) with caches in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENSCOM_CACHE", str(tmp_path / "cache"))
    return tmp_path


def run_cli(args: list[str], named: Path | str) -> str:
    """Run ``genscom <args>`` in-process; assert a quick, clean, one-line failure naming ``named``."""
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    took = time.perf_counter() - t0
    out = res.output
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert res.exit_code not in (0, None), (args, out)
    assert len(errors) == 1, (args, out)
    assert "Traceback" not in out and "Aborted" not in out, (args, out)
    assert str(named) in errors[0], (named, errors[0])
    assert took < LIMIT_S, (args, took)
    assert not Path(MARKER).exists(), "a payload ran"
    return errors[0]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------- configs
CONFIG_COMMANDS = {
    "train-adapter": ["train", "adapter"],
    "train-encoder": ["train", "encoder"],
    "finetune-agents": ["finetune", "agents"],
    "finetune-attribute-head": ["finetune", "attribute-head"],
    "bench-fed": ["bench", "fed"],
}


@pytest.mark.parametrize("bad", sorted(CONFIG_BAD))
@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_bad_config_files(in_tmp: Path, command: str, bad: str) -> None:
    cfg = write(in_tmp / "cfg.yaml", CONFIG_BAD[bad]())
    line = run_cli([*CONFIG_COMMANDS[command], "--config", str(cfg)], cfg)
    if bad == "wrong-type" and command != "bench-fed":
        assert "steps" in line


def test_bad_json_config(in_tmp: Path) -> None:
    cfg = write(in_tmp / "cfg.json", b'{"steps": 3,,}')
    assert "not valid JSON" in run_cli(["train", "adapter", "--config", str(cfg)], cfg)


# ----------------------------------------------------------------------------------------- --resume
RESUME_COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "train-adapter": lambda d: ["train", "adapter", "--output-dir", str(d), "--resume"],
    "train-encoder": lambda d: ["train", "encoder", "--output-dir", str(d), "--resume"],
    "finetune-agents": lambda d: ["finetune", "agents", "--out-dir", str(d), "--resume"],
    "finetune-attribute-head": lambda d: ["finetune", "attribute-head", "--out-dir", str(d), "--resume"],
    "bench-fed": lambda d: ["bench", "fed", "--quick", "--run-dir", str(d), "--resume", "--out", "fed-results"],
}


@pytest.mark.parametrize("bad", sorted(CHECKPOINT_BAD))
@pytest.mark.parametrize("command", sorted(RESUME_COMMANDS))
def test_bad_checkpoints(in_tmp: Path, command: str, bad: str) -> None:
    name = "fed_checkpoint.pt" if command == "bench-fed" else "checkpoint.pt"
    ckpt = write(in_tmp / "run" / name, CHECKPOINT_BAD[bad]())
    run_cli(RESUME_COMMANDS[command](in_tmp / "run"), ckpt)


def test_resume_without_a_run_names_the_pattern(in_tmp: Path) -> None:
    line = run_cli(["train", "adapter", "--name", "x", "--resume"], "runs/adapter-x-<timestamp>")
    assert "--output-dir" in line


# ----------------------------------------------------------------------------------------- weights folders
def _mini_tower_folder(folder: Path) -> Path:
    from genscom.encoders.mini import MiniTowerConfig, MiniVideoTower

    tower = MiniVideoTower(MiniTowerConfig(image_size=16, stem_channels=4, channels=(8,), blocks_per_stage=1,
                                           grid_channels=4, width=16, temporal="attention", temporal_layers=1,
                                           temporal_heads=2, max_frames=4, embed_dim=384))
    return tower.save_pretrained(folder)


def _adapter_folder(folder: Path) -> Path:
    from genscom.adaptation.adapter import AdapterConfig, ChannelAdapter

    return ChannelAdapter(AdapterConfig(dim=16, k=8, hidden=16, depth=1, group_size=2, cond_dim=4)).save_pretrained(folder)


def _clip_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    (folder / "model.safetensors").write_bytes(_safetensors_bytes())
    return folder


def _agent_folders(root: Path) -> Path:
    """<root>/<card name>/ for both shipped SmolLM2 cards, copied from the shipped adapters (headers only matter)."""
    import shutil

    from genscom.assets import SHIPPED_ADAPTERS

    for name in ("smollm2-understanding", "smollm2-generating"):
        shutil.copytree(SHIPPED_ADAPTERS / name, root / name)
    return root


# command -> (builder of a sound folder, the file in it that gets broken, args)
WEIGHTS_COMMANDS: dict[str, tuple[Callable[[Path], Path], str, Callable[[Path], list[str]]]] = {
    "train-encoder-init-from": (_mini_tower_folder, "model.safetensors",
                                lambda d: ["train", "encoder", "--init-from", str(d)]),
    "finetune-agents-init-from": (_agent_folders, "smollm2-generating/agent_modules.safetensors",
                                  lambda d: ["finetune", "agents", "--init-from", str(d)]),
    "finetune-agents-init-from-lora": (_agent_folders, "smollm2-understanding/adapter_model.safetensors",
                                       lambda d: ["finetune", "agents", "--init-from", str(d)]),
    "bench-rate-adapter": (_adapter_folder, "model.safetensors", lambda d: ["bench", "rate", "--adapter", str(d)]),
    "bench-fed-init-from": (_adapter_folder, "model.safetensors",
                            lambda d: ["bench", "fed", "--quick", "--init-from", str(d), "--out", "fed-results"]),
    "bench-retrieval-profile": (_clip_folder, "model.safetensors",
                                lambda d: ["bench", "retrieval", "--quick", "--profile", str(d)]),
    "demo-profile": (_clip_folder, "model.safetensors", lambda d: ["demo", "--profile", str(d), "--port", "1"]),
    "train-adapter-profile": (_clip_folder, "model.safetensors", None),  # type: ignore[dict-item]  # via --config
}


@pytest.mark.parametrize("bad", sorted(SAFETENSORS_BAD))
@pytest.mark.parametrize("command", sorted(WEIGHTS_COMMANDS))
def test_bad_weights(in_tmp: Path, command: str, bad: str) -> None:
    build, rel, args = WEIGHTS_COMMANDS[command]
    folder = build(in_tmp / "weights")
    broken = write(folder / rel, SAFETENSORS_BAD[bad]())
    if command == "train-adapter-profile":
        cfg = write(in_tmp / "cfg.yaml", f"profile: {folder}\n".encode())
        run_cli(["train", "adapter", "--config", str(cfg)], broken)
    else:
        run_cli(args(folder), broken)


@pytest.mark.parametrize("command", ["train-encoder-init-from", "bench-rate-adapter", "bench-retrieval-profile"])
def test_bad_weights_config_json(in_tmp: Path, command: str) -> None:
    build, _, args = WEIGHTS_COMMANDS[command]
    folder = build(in_tmp / "weights")
    broken = write(folder / "config.json", _random(300))
    assert "JSON" in run_cli(args(folder), broken)


# ----------------------------------------------------------------------------------------- agent cards
CARD_COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "finetune-agents": lambda f: ["finetune", "agents", "--card", str(f)],
    "finetune-attribute-head": lambda f: ["finetune", "attribute-head", "--card", str(f)],
    "bench-caption": lambda f: ["bench", "caption", "--card", str(f)],
    "bench-edge": lambda f: ["bench", "edge", "--card", str(f)],
    "bench-edge-nf4": lambda f: ["bench", "edge", "--nf4-card", str(f)],
    "bench-retrieval-agents": lambda f: ["bench", "retrieval", "--quick", "--agents", str(f)],
    "demo-agent-card": lambda f: ["demo", "--agent-card", str(f), "--port", "1"],
}


@pytest.mark.parametrize("bad", sorted(CARD_BAD))
@pytest.mark.parametrize("command", sorted(CARD_COMMANDS))
def test_bad_agent_cards(in_tmp: Path, command: str, bad: str) -> None:
    card = write(in_tmp / "card.yaml", CARD_BAD[bad]())
    line = run_cli(CARD_COMMANDS[command](card), card)
    if bad == "wrong-type":
        assert "embedding_dim" in line


def test_card_whose_adapter_is_broken(in_tmp: Path) -> None:
    """A sound card pointing at a broken adapter folder: named before any model loads."""
    import shutil

    cards = in_tmp / "agents"
    shutil.copytree(REPO / "agents", cards)
    shutil.copytree(REPO / "prompts", in_tmp / "prompts")
    folder = _agent_folders(in_tmp / "adapters")
    broken = write(folder / "smollm2-understanding" / "agent.json", b"{")
    for f in cards.glob("smollm2-*.yaml"):
        f.write_text(f.read_text().replace("adapter: smollm2-", f"adapter: {folder}/smollm2-"))
    run_cli(["bench", "caption", "--card", str(cards / "smollm2-generating.yaml")], broken)


# ----------------------------------------------------------------------------------------- data folders
def _image_captions(root: Path, *, bomb: bool, caption: str = "a red circle") -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for i in range(10):  # 2 test items (the seeded 20 % split); with `bomb` every image is one
        if bomb:
            _png_bomb(root / "images" / f"{i}.png")
        else:
            Image.new("RGB", (20, 20), (20 * i, 0, 0)).save(root / "images" / f"{i}.png")
    rows = ["image,caption", *[f"{i}.png,{caption if i == 2 else 'a red circle'}" for i in range(10)]]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


def _msrvtt(root: Path, damaged: dict[int, str], n: int = 3) -> Path:
    """An MSR-VTT folder of ``n`` tiny test clips; ``damaged`` maps clip index -> how it is broken
    (``truncated``, ``bit-flipped``, ``not-a-video``)."""
    (root / "videos").mkdir(parents=True)
    videos, sentences = [], []
    for i in range(n):
        path = root / "videos" / f"video{i}.mp4"
        if damaged.get(i) == "not-a-video":
            path.write_text("this is not a video\n")
        elif i in damaged:
            _damaged_mp4(path, damaged[i])
        else:
            _tiny_mp4(path)
        videos.append({"video_id": f"video{i}", "split": "test"})
        sentences.append({"video_id": f"video{i}", "caption": f"clip number {i}"})
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return root


RETRIEVAL = ["bench", "retrieval", "--quick", "--n-items", "3", "--snrs", "0", "--realisations", "1",
             "--schemes", "semantic-analog", "--pq", "none", "--profile", "mini"]


@pytest.mark.parametrize("bad", ["png-bomb", "huge-caption"])
def test_bad_image_caption_folders(in_tmp: Path, bad: str) -> None:
    root = _image_captions(in_tmp / "data", bomb=bad == "png-bomb",
                           caption="x" * 100_000 if bad == "huge-caption" else "a red circle")
    named = root / "images" if bad == "png-bomb" else root / "captions.csv"
    line = run_cli([*RETRIEVAL, "--dataset", "image-captions", "--data-root", str(root)], named)
    assert ("169000000 pixels" in line) if bad == "png-bomb" else ("100000 characters" in line)


DAMAGES = ["truncated", "bit-flipped", "not-a-video"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_videos_in_a_folder_are_skipped(in_tmp: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    """A damaged clip among good ones is skipped at load (the next clip takes its place), counted in ONE warning line
    with its name and the fix; the good clips load."""
    from genscom.data import create_dataset

    root = _msrvtt(in_tmp / "msrvtt", {0: damage})
    t0 = time.perf_counter()
    with caplog.at_level("WARNING", logger="genscom.data.msrvtt"):
        ds = create_dataset("msrvtt", split="test", root=str(root), num_frames=2, size=16)
    assert time.perf_counter() - t0 < LIMIT_S
    assert ds.ids == ["video1", "video2"] and [p.name for p, _ in ds.skipped] == ["video0.mp4"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "skipped 1 damaged" in warnings[0] and "video0.mp4" in warnings[0] and "re-encode or remove" in warnings[0]
    assert ds[0].frames.shape == (2, 16, 16, 3) and ds.captions_of(1) == ["clip number 2"]
    # n_items counts usable clips: the damaged first clip is replaced by the next one
    assert create_dataset("msrvtt", split="test", root=str(root), n_items=2).ids == ["video1", "video2"]


def test_mixed_video_folder_reports_the_count_on_the_command_line(in_tmp: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Several kinds of damage in one folder with good clips: the command runs on the good clips and reports the
    count of skipped ones, the first names and the fix, once (a logging warning: on stderr for a user, whose root
    logger has no handler; pytest's own handler takes it here)."""
    root = _msrvtt(in_tmp / "msrvtt", {0: "truncated", 2: "bit-flipped", 3: "not-a-video", 4: "truncated"}, n=6)
    t0 = time.perf_counter()
    with caplog.at_level("WARNING"):
        res = CliRunner().invoke(app, [*RETRIEVAL, "--n-items", "2", "--dataset", "msrvtt", "--data-root", str(root)],
                                 catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = [r.getMessage() for r in caplog.records if "damaged MSR-VTT video" in r.getMessage()]
    assert len(lines) == 1, res.output
    assert "skipped 4 damaged" in lines[0] and "re-encode or remove them" in lines[0], lines[0]
    assert "video0.mp4, video2.mp4, video3.mp4, ..." in lines[0], lines[0]  # the first few, by name
    assert "Traceback" not in res.output and "error:" not in res.output
    print(f"retrieval on a mixed folder: {time.perf_counter() - t0:.1f} s")


@pytest.mark.parametrize("damage", DAMAGES)
def test_all_videos_damaged_is_one_error_naming_the_folder(in_tmp: Path, damage: str) -> None:
    root = _msrvtt(in_tmp / "msrvtt", {0: damage, 1: "truncated", 2: "bit-flipped"})
    line = run_cli([*RETRIEVAL, "--dataset", "msrvtt", "--data-root", str(root)], root / "videos")
    assert "none of its 3 MSR-VTT videos" in line and "re-encode or remove them" in line, line
    assert "video0.mp4" in line


def test_probe_bounds_declared_geometry_before_decoding(tmp_path: Path) -> None:
    """The load-time probe checks the declared frame size and count against the decode caps before any frame is
    decoded; in a dataset folder such a clip is skipped like a damaged one."""
    from genscom.data import create_dataset, real
    from genscom.errors import InputTooLargeError

    path = tmp_path / "v.mp4"
    _tiny_mp4(path, frames=40)
    assert real.probe_video(path) == (32, 32, 40)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(real, "MAX_VIDEO_FRAMES", 10)
        with pytest.raises(InputTooLargeError, match="40 frames"):
            real.probe_video(path)
        mp.setattr(real, "MAX_VIDEO_FRAMES", 20_000)
        mp.setattr(real, "MAX_FRAME_PIXELS", 32 * 32 - 1)
        with pytest.raises(InputTooLargeError, match="pixel frames"):
            real.probe_video(path)
    root = _msrvtt(tmp_path / "msrvtt", {})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(real, "MAX_FRAME_PIXELS", 32 * 32 - 1)
        with pytest.raises(ValueError, match="none of its 3"):
            create_dataset("msrvtt", split="test", root=str(root))


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_single_damaged_video_given_to_a_command_is_an_error(tmp_path: Path, damage: str) -> None:
    """One video file handed over on its own (an upload, read_video) is still an error naming it, not a skip."""
    from genscom.data.real import probe_video, read_video
    from genscom.demo.content import UploadError, read_upload

    root = _msrvtt(tmp_path / "msrvtt", {0: damage}, n=1)
    bad = root / "videos" / "video0.mp4"
    for fn in (lambda: read_video(bad, num_frames=2), lambda: probe_video(bad)):
        with pytest.raises(ValueError, match="video0.mp4"):
            fn()
    with pytest.raises(UploadError):
        read_upload(bad, max_bytes=10**6, max_side=64, num_frames=2)


def test_huge_video_is_refused_before_decoding(tmp_path: Path) -> None:
    from genscom.data import real
    from genscom.errors import InputTooLargeError

    path = tmp_path / "v.mp4"
    _tiny_mp4(path, frames=40)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(real, "MAX_VIDEO_FRAMES", 10)
        with pytest.raises(InputTooLargeError, match="v.mp4"):
            real.read_video(path, num_frames=4)
        mp.setattr(real, "MAX_FRAME_PIXELS", 32 * 32 - 1)
        with pytest.raises(InputTooLargeError, match="pixel frames"):
            real.read_video(path, num_frames=4)


def test_png_bomb_in_the_library(tmp_path: Path) -> None:
    from genscom.errors import InputTooLargeError
    from genscom.loading import load_image

    _png_bomb(tmp_path / "bomb.png")
    t0 = time.perf_counter()
    with pytest.raises(InputTooLargeError, match="169000000 pixels"):
        load_image(tmp_path / "bomb.png")
    assert time.perf_counter() - t0 < 1.0


# ----------------------------------------------------------------------------------------- library loaders
# Files read by the library rather than by a command-line flag: each broken file is a BadFileError (a ValueError)
# naming it and the fix, quickly, without running a payload.
JSON_BAD: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "truncated": lambda: b'{"format_version": 1, "config": {"name": "int4", "di',
    "random-bytes": lambda: _random(),
    "not-a-mapping": lambda: b"[1, 2, 3]",
}


def raises_bad_file(fn: Callable[[], object], named: Path, *, fix: str = "") -> str:
    from genscom.errors import BadFileError

    t0 = time.perf_counter()
    with pytest.raises(BadFileError) as info:
        fn()
    msg = str(info.value)
    assert str(named) in msg and "\n" not in msg, msg
    assert fix in msg, (fix, msg)
    assert time.perf_counter() - t0 < LIMIT_S
    assert not Path(MARKER).exists(), "a payload ran"
    return msg


def _quantizer_folder(folder: Path, name: str = "pq-4x4") -> Path:
    from genscom.coding.quantize import fit_quantizer

    train = torch.nn.functional.normalize(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    return fit_quantizer(name, train, seed=0).save(folder)


QUANTIZER_CONFIG_BAD = {**JSON_BAD,
                        "wrong-type": lambda: b'{"format_version": 1, "config": {"name": "int4", "dim": "16"}}',
                        "unknown-field": lambda: b'{"format_version": 1, "config": {"name": "int4", "dims": 16}}',
                        "other-version": lambda: b'{"format_version": 99, "config": {"name": "int4", "dim": 16}}'}


@pytest.mark.parametrize("bad", sorted(QUANTIZER_CONFIG_BAD))
def test_bad_quantizer_config(in_tmp: Path, bad: str) -> None:
    from genscom.coding.quantize import load_quantizer

    folder = _quantizer_folder(in_tmp / "q")
    broken = write(folder / "quantizer.json", QUANTIZER_CONFIG_BAD[bad]())
    raises_bad_file(lambda: load_quantizer(folder), broken, fix="quantizer.save")


@pytest.mark.parametrize("bad", sorted([*SAFETENSORS_BAD, "wrong-shape"]))
def test_bad_quantizer_tensors(in_tmp: Path, bad: str) -> None:
    from safetensors.numpy import save_file

    from genscom.coding.quantize import ProductQuantizer, load_quantizer

    folder = _quantizer_folder(in_tmp / "q")
    broken = folder / "quantizer.safetensors"
    if bad == "wrong-shape":  # sound file, centroids of another quantiser
        save_file({"centroids": np.zeros((2, 16, 8), np.float32)}, str(broken))
    else:
        write(broken, SAFETENSORS_BAD[bad]())
    raises_bad_file(lambda: load_quantizer(folder), broken, fix="quantizer.save")
    raises_bad_file(lambda: ProductQuantizer.load(folder), broken)


def test_fitted_quantizer_without_its_arrays(in_tmp: Path) -> None:
    from genscom.coding.quantize import load_quantizer

    folder = _quantizer_folder(in_tmp / "q")
    (folder / "quantizer.safetensors").unlink()
    assert "missing" in raises_bad_file(lambda: load_quantizer(folder), folder / "quantizer.safetensors")


def _table_file() -> bytes:
    from genscom.coding.calibration import SHIPPED_DIR

    return next(iter(sorted(SHIPPED_DIR.glob("awgn-*.json")))).read_bytes()


def _wrong_typed_table() -> bytes:
    d = json.loads(_table_file())
    d["tables"][0]["bler"] = "high"
    return json.dumps(d).encode()


def _table_missing_field() -> bytes:
    d = json.loads(_table_file())
    del d["tables"][1]["snr_db"]
    return json.dumps(d).encode()


TABLE_BAD: dict[str, Callable[[], bytes]] = {
    **JSON_BAD,
    "truncated": lambda: _table_file()[: len(_table_file()) // 2],
    "no-tables": lambda: b'{"meta": {}}',
    "wrong-type": _wrong_typed_table,
    "missing-field": _table_missing_field,
}


@pytest.mark.parametrize("bad", sorted(TABLE_BAD))
def test_bad_shipped_calibration_table(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    """A broken shipped table is an error naming it and how to restore it; it is never simulated over (nothing is
    written to the user cache)."""
    from genscom.channels.awgn import AWGNChannel
    from genscom.coding import calibration

    shipped = in_tmp / "tables"
    broken = write(shipped / "awgn-00000000.json", TABLE_BAD[bad]())
    monkeypatch.setattr(calibration, "SHIPPED_DIR", shipped)
    msg = raises_bad_file(lambda: calibration.calibrate("qpsk-1/2", AWGNChannel()), broken, fix="reinstall genscom")
    assert bad not in ("wrong-type", "missing-field") or "table " in msg  # which table of the file
    raises_bad_file(lambda: calibration.read_table_file(broken), broken, fix="reinstall genscom")
    assert not (in_tmp / "cache").exists()  # GENSCOM_CACHE: no table written in its place


CACHED_BAD: dict[str, Callable[[], bytes]] = {
    **JSON_BAD,
    "wrong-type": lambda: json.dumps({**json.loads(_table_file())["tables"][0], "n_codewords": "many"}).encode(),
    "missing-field": lambda: b'{"mcs": "qpsk-1/2"}',
}


@pytest.mark.parametrize("bad", sorted(CACHED_BAD))
def test_bad_cached_calibration_table(in_tmp: Path, bad: str) -> None:
    """A broken table in the user cache names the file and says to delete it (it is simulated again), before
    any simulation starts."""
    from genscom.channels.awgn import AWGNChannel
    from genscom.coding.calibration import CalibrationConfig, _cache_path, calibrate, find_table, link_key
    from genscom.coding.ldpc import DEFAULT_K, DEFAULT_NUM_ITER
    from genscom.coding.mcs import get_mcs

    cfg = CalibrationConfig(use_shipped=False, cache_dir=str(in_tmp / "cal"))
    path, _ = _cache_path(get_mcs("qpsk-1/2"), link_key(AWGNChannel()), DEFAULT_K, DEFAULT_NUM_ITER, cfg, "app")
    write(path, CACHED_BAD[bad]())
    raises_bad_file(lambda: calibrate("qpsk-1/2", AWGNChannel(), config=cfg), path, fix="delete")
    raises_bad_file(lambda: find_table("qpsk-1/2", AWGNChannel(), config=cfg), path, fix="delete")
    assert path.read_bytes() == CACHED_BAD[bad]()  # left for the user to look at, not replaced


def test_demo_upload_png_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    from genscom.demo.content import UploadError, read_upload

    _png_bomb(tmp_path / "bomb.png")
    t0 = time.perf_counter()
    with pytest.raises(UploadError, match="'bomb.png' is too large an image"):
        read_upload(tmp_path / "bomb.png", max_bytes=10**6, max_side=64, num_frames=2)
    assert time.perf_counter() - t0 < 1.0
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")  # a bound of its own: 40 x 30 > 1000 pixels
    with pytest.raises(UploadError, match="more than the 1000 pixels"):
        read_upload(tmp_path / "small.png", max_bytes=10**6, max_side=64, num_frames=2, max_pixels=1000)
    assert read_upload(tmp_path / "small.png", max_bytes=10**6, max_side=64, num_frames=2).frames.shape == (1, 30, 40, 3)


def test_bad_synthetic_metadata_cache_is_rebuilt(tmp_path: Path) -> None:
    """The synthetic dataset's caption cache is derived data: a broken one is rebuilt, not an error."""
    from genscom.data import create_dataset

    kw = dict(split="test", n_items=3, cache_dir=str(tmp_path))
    ds = create_dataset("synthetic", **kw)
    ref = [ds.captions_of(i) for i in range(3)]
    for data in (b"[1, 2]", b'{"params": 1', _random()):
        ds.cache_path.with_suffix(".json").write_bytes(data)
        assert [create_dataset("synthetic", **kw).captions_of(i) for i in range(3)] == ref


# ----------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("case", ["empty-checkpoint", "yaml-tag-config", "pickle-checkpoint"])
def test_subprocess_one_line_on_stderr(tmp_path: Path, case: str) -> None:
    """The installed command as a user runs it: exit status 2, one `error:` line on stderr, no traceback,
    no `Aborted!` (an empty checkpoint used to raise an EOFError that click turned into it)."""
    if case == "yaml-tag-config":
        bad = write(tmp_path / "cfg.yaml", YAML_TAG.encode())
        args = ["train", "encoder", "--config", str(bad)]
    else:
        bad = write(tmp_path / "run" / "checkpoint.pt", b"" if case == "empty-checkpoint" else CHECKPOINT_BAD["pickle-reduce"]())
        args = ["train", "encoder", "--output-dir", str(tmp_path / "run"), "--resume"]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "genscom", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={**__import__("os").environ, "GENSCOM_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 2, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(bad) in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout and "Aborted" not in res.stderr + res.stdout
    assert not (tmp_path / MARKER).exists()
    assert time.perf_counter() - t0 < 30  # a cold interpreter importing torch, on a busy 2-core machine


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path / "cfg.yaml", b"")
    res = CliRunner().invoke(app, ["--debug", "train", "encoder", "--config", str(bad)], catch_exceptions=False)
    assert res.exit_code == 2 and "Traceback" in res.output and "error:" in res.output
