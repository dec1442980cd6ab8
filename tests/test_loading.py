"""genscom.loading: the one reader of weights, checkpoints and configs, and its one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import torch
import yaml

from genscom.encoders.registry import MINI_WEIGHTS_DIR, check_profile, create_encoder
from genscom.errors import BadFileError, GenscomError, InputTooLargeError, OutputExistsError, one_line
from genscom.loading import (MissingFileError, check_safetensors, load_config, load_safetensors, load_torch,
                             read_config_file, read_yaml, safetensors_shapes)


@dataclass
class Cfg:
    steps: int = 3
    lr: float = 1e-3
    name: str | None = None
    mode: Literal["a", "b"] = "a"
    snrs: tuple[float, ...] = (0.0,)
    extra: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_errors_are_value_errors_of_one_line() -> None:
    e = BadFileError("a\nb.pt", problem="bad\n  thing", expected="x", fix="y")
    assert isinstance(e, ValueError) and isinstance(e, GenscomError) and "\n" not in str(e)
    assert str(e) == "'a\\nb.pt': bad thing; expected x. Fix: y" and e.path == "a\nb.pt"
    assert issubclass(InputTooLargeError, GenscomError) and issubclass(OutputExistsError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, GenscomError)
    assert one_line("x" * 50, limit=10) == "xxxxxxx..."


def test_load_config_types_unknown_keys_and_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\nlr: 1\nsnrs: [-5, 0]\nextra: {a: 1}\nmode: b\n")
    cfg = load_config(Cfg, f, lr=0.5, name=None)
    assert (cfg.steps, cfg.lr, cfg.mode, cfg.snrs, cfg.extra) == (5, 0.5, "b", [-5, 0], {"a": 1})
    for text, match, kind in [("steps: '5'\n", "'steps' of Cfg must be int", TypeError),
                              ("steps: true\n", "'steps'", TypeError),
                              ("mode: c\n", r"'mode' of Cfg must be one of 'a', 'b'", ValueError),
                              ("extra: {a: x}\n", "'extra'", TypeError),
                              ("stepz: 1\n", r"unknown field\(s\) \['stepz'\]", ValueError),
                              ("steps: 0\n", "steps must be >= 1", ValueError)]:
        with pytest.raises(kind, match=match):
            load_config(Cfg, yaml.safe_load(text))  # a dict: the plain error, no file to name
        f.write_text(text)
        with pytest.raises(BadFileError, match=match) as info:
            load_config(Cfg, f)
        assert str(f) in str(info.value)
    f.write_text("")
    with pytest.raises(BadFileError, match="empty"):
        load_config(Cfg, f)
    f.write_text("# nothing\n")
    with pytest.raises(BadFileError, match="holds no settings"):
        read_config_file(f)
    with pytest.raises(MissingFileError, match="no such file"):
        load_config(Cfg, tmp_path / "none.yaml")


def test_yaml_aliases_are_fine_until_they_explode(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("base: &b {r: 4}\none: *b\ntwo: *b\n")
    assert read_yaml(f)["two"] == {"r": 4}
    f.write_text("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcd", "bcde")))
    with pytest.raises(BadFileError, match="alias bomb"):
        read_yaml(f)
    f.write_text("a: &a [*a]\n")
    with pytest.raises(BadFileError):
        read_yaml(f)


def test_tensor_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.ones(3)}, str(path))
    assert check_safetensors(path) == ["x"] and torch.equal(load_safetensors(path)["x"], torch.ones(3))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(BadFileError, match="w.safetensors"):
        load_safetensors(path)
    ckpt = tmp_path / "c.pt"
    torch.save({"a": torch.zeros(2)}, ckpt)
    assert torch.equal(load_torch(ckpt)["a"], torch.zeros(2))
    ckpt.write_bytes(b"")
    with pytest.raises(BadFileError, match="empty"):
        load_torch(ckpt)


def test_safetensors_shapes_read_the_header_only(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(2, 3), "b": torch.zeros(5, dtype=torch.float16)}, str(path))
    assert safetensors_shapes(path) == {"a": (2, 3), "b": (5,)}
    path.write_bytes(b"\x08" + bytes(7) + b"{broken}")
    with pytest.raises(BadFileError, match="w.safetensors"):
        safetensors_shapes(path)


def test_module_folder_refuses_declared_sizes_before_allocating(tmp_path: Path) -> None:
    """A config.json declaring sizes its weights lack is refused from the header, not allocated: these widths
    would need about 4 TB of float32."""
    import json

    from genscom.adaptation.adapter import AdapterConfig, ChannelAdapter

    folder = ChannelAdapter(AdapterConfig(dim=8, k=16, hidden=8, depth=1, group_size=4, cond_dim=4)).save_pretrained(
        tmp_path / "adapter")
    assert ChannelAdapter.from_pretrained(folder).config.hidden == 8
    cfg = json.loads((folder / "config.json").read_text())
    cfg["adapter"]["hidden"] = 1_000_000
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadFileError, match=r"model\.safetensors.*do not fit config\.json.*in the file but"):
        ChannelAdapter.from_pretrained(folder)
    cfg["adapter"]["hidden"] = 8
    cfg["adapter"]["depth"] = 2  # a block the file does not have
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadFileError, match="missing"):
        ChannelAdapter.from_pretrained(folder)


def test_check_profile_and_tower_folders_as_profiles(tmp_path: Path) -> None:
    check_profile("mini")
    check_profile("openai/clip-vit-base-patch32")  # a hub id: checked when it loads
    with pytest.raises(ValueError, match="known profiles"):
        check_profile("no-such-profile")
    with pytest.raises(FileNotFoundError):
        check_profile(str(tmp_path / "missing"))
    check_profile(str(MINI_WEIGHTS_DIR))  # a tower folder written by `genscom train encoder`
    enc = create_encoder(str(MINI_WEIGHTS_DIR))
    assert enc.dim == 384 and enc.name == str(MINI_WEIGHTS_DIR)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(BadFileError, match="clip, siglip"):
        check_profile(str(tmp_path / "f"))


def test_first_line_of_an_exception():
    from genscom.errors import first_line

    assert first_line(RuntimeError("size mismatch\n  at layer 3")) == "size mismatch"
    assert first_line(RuntimeError("")) == "" and first_line(KeyError()) == ""  # no IndexError on empty messages
    assert first_line(ValueError("x" * 500), limit=200) == "x" * 200
