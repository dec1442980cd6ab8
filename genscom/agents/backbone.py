"""One LLM shared by both roles, holding one LoRA adapter per role (PEFT multi-adapter).

:class:`SharedLLM` owns the (optionally quantised) causal LM and its tokenizer,
adds or loads LoRA adapters by name and switches between them. Only the
adapters listed in :attr:`SharedLLM.trainable` get gradients; base weights are
always frozen.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from typing import Any

import torch

from genscom.agents.card import LoraSpec
from genscom.agents.llm import load_llm, prepare_backbone
from genscom.agents.quant import keep_trainable_through, quantize_model

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def _cache_argument(model: torch.nn.Module) -> str:
    """The name of the key/value-cache argument of ``model.forward``: ``cache`` in newer transformers
    (``past_key_values`` there is deprecated, with a FutureWarning on every call), ``past_key_values`` before."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - an unusual forward
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


class SharedLLM:
    """A frozen causal LM + tokenizer with named LoRA adapters.

    Args:
        model: a transformers causal LM (frozen in place).
        tokenizer: its tokenizer (a pad token is added if missing).
        spec: the card ``llm`` string it was loaded from (checked when agents share it).
        quantization: ``"none"``, ``"nf4"`` or ``"int8"`` (already applied to ``model``).
    """

    def __init__(self, model: Any, tokenizer: Any, *, spec: str = "", quantization: str = "none") -> None:
        prepare_backbone(model, tokenizer)
        keep_trainable_through(model)  # NF4 layers: no CPU inference repacking, LoRA gradients pass through them
        self.hf = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.quantization = quantization
        self.peft: Any = None
        self.trainable: set[str] = set()
        self.active: str | None = None
        with torch.no_grad():
            w = model.get_input_embeddings()(torch.arange(min(1024, tokenizer.vocab_size or 1024),
                                                          device=self.device))
        self.token_rms = float(w.float().pow(2).mean().sqrt())

    @classmethod
    def load(cls, spec: str, *, dtype: str = "float32", quantization: str = "none", quantize_embeddings: bool = True,
             device: str | torch.device = "cpu", cache_dir: str | os.PathLike[str] | None = None) -> "SharedLLM":
        """Load the LLM named by a card's ``llm`` field, then quantise it (``"nf4"``/``"int8"``) if asked."""
        dt = torch_dtype(dtype)
        model, tok = load_llm(spec, dtype=torch.float32 if quantization != "none" else dt, device=device,
                              cache_dir=cache_dir)
        if quantization != "none":
            quantize_model(model, quantization, quantize_embeddings=quantize_embeddings, compute_dtype=dt)  # type: ignore[arg-type]
        return cls(model, tok, spec=spec, quantization=quantization)

    # -- properties --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.hf.config.hidden_size)

    @property
    def compute_dtype(self) -> torch.dtype:
        emb = self.hf.get_input_embeddings()
        return getattr(emb, "dtype", None) if isinstance(getattr(emb, "dtype", None), torch.dtype) else emb.weight.dtype

    @property
    def adapters(self) -> list[str]:
        return sorted(self.peft.peft_config) if self.peft is not None else []

    # -- adapters ----------------------------------------------------------------
    def _lora_config(self, lora: LoraSpec) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")

    def add_adapter(self, name: str, lora: LoraSpec, *, seed: int = 0) -> None:
        """Add a fresh LoRA adapter ``name``, initialised from ``seed`` (a forked RNG).

        Refuses duplicates; unknown target modules raise ``ValueError``.
        """
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} already exists in this LLM (adapters: {self.adapters}); "
                             "give the card another adapter_name")
        cfg = self._lora_config(lora)
        rng = torch.random.fork_rng(devices=[])
        rng.__enter__()
        torch.manual_seed(seed)
        try:
            if self.peft is None:
                from peft import get_peft_model

                with warnings.catch_warnings():  # peft reads a property transformers 5 deprecated: noise for users
                    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                            category=FutureWarning)
                    self.peft = get_peft_model(self.hf, cfg, adapter_name=name)
            else:
                self.peft.add_adapter(name, cfg)
        except ValueError as exc:
            raise ValueError(f"could not add LoRA adapter {name!r} (lora.target_modules={lora.target_modules}): {exc}") from exc
        finally:
            rng.__exit__(None, None, None)
        self.trainable.add(name)
        self.activate(name)

    def load_adapter(self, name: str, folder: str | os.PathLike[str]) -> None:
        """Load PEFT adapter weights from ``folder`` into the existing adapter ``name`` (strict shapes)."""
        from peft import set_peft_model_state_dict

        from genscom.errors import BadFileError, first_line
        from genscom.loading import load_safetensors

        if name not in self.adapters:
            raise ValueError(f"adapter {name!r} does not exist; add it first (adapters: {self.adapters})")
        path = os.path.join(folder, "adapter_model.safetensors")
        fix = "train it with `genscom finetune agents` or point the card's adapter at another folder"
        state = load_safetensors(path, device=str(self.device), expected="PEFT LoRA weights (adapter_model.safetensors, "
                                 "written by Agent.save_pretrained)", fix=fix)
        try:
            res = set_peft_model_state_dict(self.peft, state, adapter_name=name)
        except NotImplementedError:  # bitsandbytes' Embedding4bit cannot state_dict() (nf4 + quantize_embeddings)
            self._copy_lora_state(name, state, folder)
        except (RuntimeError, KeyError, ValueError) as exc:  # shapes or names of another model
            raise BadFileError(path, problem=f"the LoRA tensors do not fit adapter {name!r} "
                                             f"({type(exc).__name__}: {first_line(exc, limit=200)})",
                               expected="LoRA weights trained for this card's llm and lora settings", fix=fix) from None
        else:
            missing = [k for k in getattr(res, "unexpected_keys", []) if "lora" in k]
            if missing:
                raise ValueError(f"adapter weights in {folder} do not fit adapter {name!r}: unexpected {missing[:4]}")
        self.activate(name)

    def _copy_lora_state(self, name: str, state: dict[str, torch.Tensor], folder: str | os.PathLike[str]) -> None:
        """Copy PEFT-saved LoRA tensors (keys without the adapter name) into adapter ``name`` by parameter name."""
        params = dict(self.peft.named_parameters())
        for key, value in state.items():
            target = key
            for part in ("lora_A", "lora_B"):
                target = target.replace(f".{part}.weight", f".{part}.{name}.weight")
            p = params.get(target)
            if p is None or p.shape != value.shape:
                raise ValueError(f"adapter weights in {folder} do not fit adapter {name!r}: {key!r} "
                                 + ("has no matching parameter" if p is None else
                                    f"has shape {tuple(value.shape)}, the model {tuple(p.shape)}"))
            with torch.no_grad():
                p.copy_(value.to(device=p.device, dtype=p.dtype))

    def adapter_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        try:
            return get_peft_model_state_dict(self.peft, adapter_name=name)
        except NotImplementedError:  # bitsandbytes' Embedding4bit cannot state_dict(): collect LoRA tensors by name
            key = f".{name}."
            return {n.replace(key, "."): p.detach() for n, p in self.peft.named_parameters()
                    if "lora_" in n and key in n}

    def load_adapter_state(self, name: str, state: dict[str, torch.Tensor]) -> None:
        """Load a state from :meth:`adapter_state_dict` into adapter ``name``."""
        from peft import set_peft_model_state_dict

        try:
            set_peft_model_state_dict(self.peft, state, adapter_name=name)
        except NotImplementedError:
            self._copy_lora_state(name, state, "<state>")

    def set_trainable(self, names: set[str] | list[str]) -> None:
        """Only adapters in ``names`` get ``requires_grad``; base weights stay frozen."""
        unknown = sorted(set(names) - set(self.adapters))
        if unknown:
            raise ValueError(f"unknown adapter(s) {unknown}; adapters: {self.adapters}")
        self.trainable = set(names)
        self._apply_trainable()

    def _apply_trainable(self) -> None:
        if self.peft is None:
            return
        for pname, p in self.peft.named_parameters():
            if "lora_" in pname:
                p.requires_grad_(any(f".{n}." in pname for n in self.trainable))
            else:
                p.requires_grad_(False)

    def activate(self, name: str) -> None:
        """Route the LLM through adapter ``name`` (the other adapters stay loaded but inactive)."""
        if name not in self.adapters:
            raise ValueError(f"unknown adapter {name!r}; adapters: {self.adapters}")
        if self.active != name:
            self.peft.base_model.set_adapter(name)
            self.active = name
        self._apply_trainable()

    # -- compute -----------------------------------------------------------------
    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, L]`` -> input embeddings ``[B, L, hidden]`` in the LLM's compute dtype."""
        return self.hf.get_input_embeddings()(ids.to(self.device)).to(self.compute_dtype)

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                      shared_prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Last-layer hidden states (after the final norm) of ``[shared_prefix, inputs_embeds]``.

        Args:
            inputs_embeds: ``[B, L, hidden]`` per-item input embeddings.
            attention_mask: ``[B, L]`` (1 = attend) for ``inputs_embeds``; the shared prefix is always attended.
            shared_prefix: optional ``[1, P, hidden]`` embeddings common to every item (the rendered role
                prompt). It runs once at batch 1; its key/value cache is then repeated ``B`` times, so a
                batch costs ``P + B * L`` token positions instead of ``B * (P + L)`` (same result up to
                float rounding; gradients flow through the cache).

        Returns:
            ``[B, P + L, hidden]``: the prefix's states (repeated per item) followed by the items'.
        """
        inner = getattr(self.hf, self.hf.base_model_prefix)
        x = inputs_embeds.to(self.compute_dtype)
        if shared_prefix is None:
            return inner(inputs_embeds=x, attention_mask=attention_mask, use_cache=False).last_hidden_state
        if shared_prefix.dim() != 3 or shared_prefix.shape[0] != 1 or shared_prefix.shape[-1] != x.shape[-1]:
            raise ValueError(f"shared_prefix must be [1, P, {x.shape[-1]}], got {tuple(shared_prefix.shape)}")
        b, p = x.shape[0], shared_prefix.shape[1]
        mask = torch.ones((b, p + x.shape[1]), dtype=torch.long, device=x.device)  # over prefix + items
        if attention_mask is not None:
            mask[:, p:] = attention_mask.to(device=x.device, dtype=torch.long)
        if self._checkpointing_active(inner):  # layers drop caches under activation checkpointing: run it whole
            full = torch.cat([shared_prefix.to(x.dtype).expand(b, -1, -1), x], dim=1)
            return inner(inputs_embeds=full, attention_mask=mask, use_cache=False).last_hidden_state
        from transformers import DynamicCache

        cache = DynamicCache(config=self.hf.config)
        key = _cache_argument(inner)
        head = inner(inputs_embeds=shared_prefix.to(self.compute_dtype), **{key: cache}, use_cache=True)
        cache.batch_repeat_interleave(b)
        tail = inner(inputs_embeds=x, attention_mask=mask, **{key: cache}, use_cache=True).last_hidden_state
        return torch.cat([head.last_hidden_state.expand(b, -1, -1), tail], dim=1)

    @staticmethod
    def _checkpointing_active(inner: torch.nn.Module) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) is True and m.training for m in inner.modules())

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head on hidden states ``[..., hidden]`` -> ``[..., vocab]`` float32."""
        return self.hf.get_output_embeddings()(hidden).float()
