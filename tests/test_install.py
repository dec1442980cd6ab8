"""A plain (non-editable) install finds the shipped weights; :mod:`genscom.assets` search order and errors.

The install test builds a wheel with the venv's pip (offline: ``--no-build-isolation --no-index``),
from a copy of ``pyproject.toml``, ``README.md`` and ``genscom/`` so the checkout gets no ``build/``
folder, unpacks it (a wheel is a zip) and imports it in a subprocess run from an unrelated folder
with the editable-install finder removed, so only the wheel's files can be found.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from genscom.assets import ENV_ADAPTERS, SHIPPED_ADAPTERS, adapter_search_path, find_adapter, list_adapters

REPO = Path(__file__).resolve().parents[1]
SHIPPED_NAMES = ["attr-classifier", "deepjscc-k192", "mini-attr-k192", "mini-k192", "regen-mini-attr",
                 "regen-mini-attr-v2", "regen-mini-attr-v3", "regen-mini-attr-v4", "regen-mini-attr-v5",
                 "smollm2-attr-generating", "smollm2-attr-understanding", "smollm2-attr-v2-generating",
                 "smollm2-attr-v2-understanding", "smollm2-attr-v3-generating",
                 "smollm2-generating", "smollm2-understanding"]  # genscom/adapters/*/

# Run in the subprocess: drop the editable finder (it would map ``genscom`` to the checkout), then load
# every shipped weight file the way the library finds it.
PROBE = r"""
import json, sys
from pathlib import Path

def editable(obj):
    return str(getattr(obj, "__module__", "") or "").startswith("__editable__")

sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
sys.path[:] = [p for p in sys.path if not p.startswith("__editable__")]
sys.path_importer_cache.clear()

import torch
import genscom
from genscom.adaptation.adapter import ChannelAdapter
from genscom.assets import SHIPPED_ADAPTERS, find_adapter, list_adapters
from genscom.encoders.mini import MiniVideoTower
from genscom.encoders.registry import MINI_ATTR_V2_WEIGHTS_DIR, MINI_ATTR_WEIGHTS_DIR, MINI_WEIGHTS_DIR

folder = find_adapter("mini-k192")
adapter = ChannelAdapter.from_pretrained(folder)
emb = torch.nn.functional.normalize(torch.randn(2, adapter.config.dim, generator=torch.Generator().manual_seed(0)), dim=-1)
with torch.no_grad():
    out = adapter(emb, 10.0, channel=None).embeddings
towers = {str(d): MiniVideoTower.from_pretrained(d).config.embed_dim for d in (MINI_WEIGHTS_DIR, MINI_ATTR_WEIGHTS_DIR,
                                                                        MINI_ATTR_V2_WEIGHTS_DIR)}

# the agent cards by name (no LLM is loaded), their prompts and adapters, the peft base model, the link tables
from genscom.agents.agent import check_agent_folder
from genscom.agents.card import SHIPPED_CARDS, list_cards, load_card
from genscom.agents.llm import base_model_of
from genscom.coding.calibration import SHIPPED_DIR, read_table_file

card = load_card("smollm2-generating")
check_agent_folder(card.adapter_path(), role="generating")
partner = card.partner_card()
print(json.dumps({"genscom": genscom.__file__, "shipped": str(SHIPPED_ADAPTERS), "adapter": str(folder),
                  "k": adapter.config.k, "dim": adapter.config.dim, "finite": bool(torch.isfinite(out).all()),
                  "names": list_adapters(), "towers": towers,
                  "cards": list_cards(), "card_dir": str(SHIPPED_CARDS), "card": card.source,
                  "prompt": str(card.prompt_path()), "card_adapter": str(card.adapter_path()),
                  "partner": partner.source, "partner_prompt": str(partner.prompt_path()),
                  "base_model": base_model_of(card.adapter_path()),
                  "tables": sum(len(read_table_file(f)[1]) for f in sorted(SHIPPED_DIR.glob("*.json"))),
                  "tables_dir": str(SHIPPED_DIR)}))
"""


def _files(root: Path, sub: str) -> dict[str, str]:
    """``genscom/<sub>/...`` relative path -> sha256 of every file under it in the checkout."""
    out = {}
    for p in sorted((root / sub).rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            out[p.relative_to(root.parent).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_wheel_install_finds_shipped_adapters_and_towers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "genscom", src / "genscom", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in (ENV_ADAPTERS, "PYTHONPATH")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "dist"), str(src)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("genscom-*.whl")

    # every shipped weight file, byte for byte, and every module is in the wheel (package data + packages)
    with zipfile.ZipFile(wheel) as z:
        packed = {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if n.startswith("genscom/")}
        z.extractall(tmp_path / "site")
    pkg = REPO / "genscom"
    for sub in ("adapters", "encoders/weights", "cards", "coding/tables"):  # weights, agent cards + prompts, link tables
        want = _files(pkg, sub)
        assert want, sub
        assert {n: packed.get(n) for n in want} == want, f"files under genscom/{sub} missing or changed in the wheel"
    modules = {p.relative_to(REPO).as_posix() for p in pkg.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= set(packed), sorted(modules - set(packed))

    site = (tmp_path / "site").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(site)
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("genscom", "shipped", "adapter", *got["towers"], "card_dir", "card", "prompt", "card_adapter",
                "partner", "partner_prompt", "tables_dir"):
        assert Path(got.get(key, key)).resolve().is_relative_to(site), (key, got, "imported from outside the wheel")
    assert Path(got["adapter"]) == Path(got["shipped"]) / "mini-k192"
    assert got["k"] == 192 and got["dim"] == 384 and got["finite"]
    assert set(got["towers"].values()) == {384}
    assert got["names"] == SHIPPED_NAMES
    assert got["cards"] == sorted(p.stem for p in (REPO / "agents").glob("*.yaml")), got["cards"]
    assert Path(got["card"]) == Path(got["card_dir"]) / "smollm2-generating.yaml"
    assert Path(got["card_adapter"]) == Path(got["shipped"]) / "smollm2-generating"
    assert got["base_model"] == "smollm2-135m-instruct"
    assert got["tables"] == sum(len(json.loads(f.read_text())["tables"]) for f in (pkg / "coding" / "tables").glob("*.json"))


# ------------------------------------------------------------------------------------ genscom.assets
def _adapter(folder: Path, name: str, config: str = "config.json") -> Path:
    d = folder / name
    d.mkdir(parents=True)
    (d / config).write_text("{}")
    return d


def test_shipped_adapters_are_found_without_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ADAPTERS, raising=False)
    assert SHIPPED_ADAPTERS == REPO / "genscom" / "adapters"
    assert adapter_search_path() == [SHIPPED_ADAPTERS]
    assert list_adapters() == SHIPPED_NAMES
    for name in SHIPPED_NAMES:
        assert find_adapter(name) == SHIPPED_ADAPTERS / name


def test_search_order_explicit_then_env_then_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    in_a, in_b = _adapter(a, "mini-k192"), _adapter(b, "mini-k192")
    in_c = _adapter(c, "mine", config="adapter_config.json")  # a LoRA adapter folder counts too
    monkeypatch.setenv(ENV_ADAPTERS, os.pathsep.join([str(b), "", str(c)]))  # empty entries are ignored
    assert adapter_search_path() == [b, c, SHIPPED_ADAPTERS]
    assert adapter_search_path([a]) == [a, b, c, SHIPPED_ADAPTERS]
    assert find_adapter("mini-k192") == in_b                # the environment comes before the shipped folder
    assert find_adapter("mini-k192", search=[a]) == in_a    # explicit folders come before the environment
    assert find_adapter("mine") == in_c                     # later folders are searched when earlier ones lack it
    assert find_adapter("smollm2-generating") == SHIPPED_ADAPTERS / "smollm2-generating"
    monkeypatch.setenv(ENV_ADAPTERS, os.pathsep.join([str(c), str(b)]))
    assert find_adapter("mini-k192") == in_b                # c has no mini-k192: b's, still before shipped
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(ENV_ADAPTERS, "~/c")                  # ~ is expanded
    assert find_adapter("mine") == in_c
    assert find_adapter(in_a) == in_a and find_adapter(str(in_a)) == in_a  # a folder is taken as it is


def test_a_missing_adapter_names_the_command_that_makes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from genscom.generation.diffusion import DiffusionDecoder
    from genscom.pretrained import resolve_pretrained
    from genscom.schemes import create_scheme

    monkeypatch.delenv(ENV_ADAPTERS, raising=False)
    with pytest.raises(FileNotFoundError, match=r"`genscom train adapter \| decoder \| deepjscc \| classifier"):
        find_adapter("no-such-thing")
    with pytest.raises(FileNotFoundError, match="`genscom train decoder`"):
        resolve_pretrained("no-such-decoder", DiffusionDecoder, what="decoder", train_command="genscom train decoder")
    with pytest.raises(FileNotFoundError, match="`genscom train decoder`"):
        create_scheme("regen", decoder="no-such-decoder")
    with pytest.raises(FileNotFoundError, match="`genscom train adapter`"):
        create_scheme("adapted", adapter="no-such-adapter")


def test_list_adapters_merges_folders_and_skips_non_adapters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _adapter(tmp_path / "a", "mini-k192")
    _adapter(tmp_path / "a", "lora-x", config="adapter_config.json")
    (tmp_path / "a" / "notes").mkdir()          # no config: not an adapter
    (tmp_path / "a" / "stray.json").write_text("{}")
    monkeypatch.setenv(ENV_ADAPTERS, str(tmp_path / "missing"))  # a folder that does not exist is skipped
    assert list_adapters([tmp_path / "a"]) == sorted({"lora-x", *SHIPPED_NAMES})


def test_unknown_adapter_error_lists_names_and_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _adapter(a, "ours-k32")
    (b / "notdir").parent.mkdir()
    (b / "notdir").write_text("a file, not an adapter folder")
    monkeypatch.setenv(ENV_ADAPTERS, str(b))
    for name in ("no-such-adapter", "notdir", "sub/ours-k32"):
        with pytest.raises(FileNotFoundError) as info:
            find_adapter(name, search=[a])
        msg = str(info.value)
        assert repr(name) in msg
        for folder in (a, b, SHIPPED_ADAPTERS):
            assert str(folder) in msg, (folder, msg)
        assert str(sorted(["ours-k32", *SHIPPED_NAMES])) in msg, msg
        assert ENV_ADAPTERS in msg and "genscom train adapter" in msg


# ------------------------------------------------------------------------------------ agent cards as package data
def test_package_cards_are_the_repository_cards() -> None:
    """`genscom/cards/` (what ships) holds the same cards and prompts as the top-level `agents/` and `prompts/`."""
    pairs = [(REPO / "agents", REPO / "genscom" / "cards", "*.yaml"),
             (REPO / "prompts", REPO / "genscom" / "cards" / "prompts", "*.md")]
    for top, pkg, pattern in pairs:
        names = sorted(p.name for p in top.glob(pattern) if p.name != "README.md")
        assert names and names == sorted(p.name for p in pkg.glob(pattern) if p.name != "README.md"), (top, pkg)
        for name in names:
            assert (top / name).read_bytes() == (pkg / name).read_bytes(), (
                f"{top / name} and {pkg / name} differ: edit both (genscom/cards/ is the copy that ships)")


def test_package_data_globs_cover_the_shipped_files() -> None:
    """Every file under the shipped-data folders matches a `[tool.setuptools.package-data]` glob (quick; the
    wheel test above checks the built wheel itself)."""
    import fnmatch
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["genscom"]
    pkg = REPO / "genscom"
    for sub in ("adapters", "encoders/weights", "cards", "coding/tables"):
        files = [p for p in (pkg / sub).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files, sub
        for f in files:
            rel = f.relative_to(pkg).as_posix()
            assert any(fnmatch.fnmatchcase(rel, g) and rel.count("/") == g.count("/") for g in globs), (
                f"genscom/{rel} matches no package-data glob in pyproject.toml: {globs}")


def test_version_is_the_packaged_one() -> None:
    import tomllib

    import genscom
    from genscom._version import __version__

    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert genscom.__version__ == __version__ == meta["project"]["version"]
