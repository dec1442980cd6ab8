"""4-bit (NF4) and 8-bit variants of an LLM for edge devices, and honest parameter-memory accounting.

:func:`quantize_model` swaps, in place, every ``nn.Linear`` of a causal LM for a
bitsandbytes ``Linear4bit`` (NF4, block size 64) or ``Linear8bitLt``. With
``quantize_embeddings=True`` the token embedding becomes an ``Embedding4bit``
(NF4) and, when the LM head is tied to it (SmolLM2, most small LLMs), the head
becomes :class:`TiedLMHead4bit`, which multiplies by the *same* 4-bit tensor,
so the tied matrix is stored once, in 4 bits. (bitsandbytes and transformers'
``BitsAndBytesConfig`` keep embeddings and the LM head 16-bit by default; for a
135M model that tied matrix is a fifth of the weights.) Quantisation runs on
CPU; bitsandbytes >= 0.45 has CPU kernels (slow: speed claims need a GPU).

NF4 layers stay *trainable-through*: on CPUs with AVX512-BF16, bitsandbytes'
``Linear4bit`` repacks its weight into an inference-only layout on the first forward
that runs in eval mode without gradients (``Linear4bit.support_avx512bf16_for_cpu``,
``_convert_weight_packed_for_cpu``); later forwards then call ``gemv_4bit``, which has
no autograd kernel, so gradients that pass through that layer to the LoRA adapters and
projectors are silently wrong (measured cosine 0.31 and 0.04 against a dequantised
reference). :func:`keep_trainable_through` turns that flag off (and undoes a packing that
already happened); :func:`quantize_model` and :class:`~genscom.agents.backbone.SharedLLM`
call it, and ``tests/test_qlora.py`` checks the gradients.

:func:`parameter_memory_bytes` counts every parameter and buffer once (tied
tensors once) plus the 4-bit quantisation statistics (absmax, code book) that
live outside ``parameters()``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

QuantMode = Literal["none", "nf4", "int8"]
NF4_BLOCKSIZE = 64


# bitsandbytes log lines that are noise for genscom (matched by their start): the optional `kernels` package
# notice, logged at import on AVX512-BF16 CPUs; genscom never uses that inference kernel (keep_trainable_through)
_BNB_NOISE = ("Failed to load CPU gemm_4bit_forward from kernels-community",)
_BNB_NOISY_LOGGERS = ("bitsandbytes.backends.cpu.ops",)


class _DropBnbNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BNB_NOISE)


def _bnb() -> Any:
    for name in _BNB_NOISY_LOGGERS:  # before the import: the notice is logged while bitsandbytes loads
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropBnbNoise) for f in log.filters):
            log.addFilter(_DropBnbNoise())
    try:
        import bitsandbytes as bnb
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("quantization 'nf4'/'int8' needs bitsandbytes: pip install 'bitsandbytes>=0.50.2'") from exc
    return bnb


def keep_trainable_through(model: nn.Module) -> int:
    """Keep every bitsandbytes ``Linear4bit`` in ``model`` usable for backpropagation on CPU; returns how many.

    bitsandbytes' CPU backend (0.50.2 here) repacks a ``Linear4bit`` weight for its AVX512-BF16
    inference kernel on the first forward with ``module.training is False`` and an input without
    ``requires_grad`` (documented attribute ``Linear4bit.support_avx512bf16_for_cpu``, "whether CPU
    supports AVX-512 BF16 for optimized inference"). The packed weight is then used by every later
    forward through ``gemv_4bit``, which has no autograd kernel ("bitsandbytes::gemv_4bit: an autograd
    kernel was not registered"), so gradients through that layer are wrong. This sets
    ``support_avx512bf16_for_cpu = False`` on each ``Linear4bit`` and converts an already packed weight
    back with bitsandbytes' own ``_convert_weight_packed_for_cpu_inverse`` (what its ``state_dict``
    does). Costs only the AVX512-BF16 inference fast path. In place; no-op for a model without 4-bit layers.
    """
    bnb = sys.modules.get("bitsandbytes")  # a model holding bitsandbytes layers has imported it
    if bnb is None:
        return 0
    n = 0
    for m in model.modules():
        if not isinstance(m, bnb.nn.Linear4bit):
            continue
        m.support_avx512bf16_for_cpu = False
        w = m.weight
        state = getattr(w, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            w.data, w.quant_state = _convert_weight_packed_for_cpu_inverse(w.data, state)
            m.quant_state = w.quant_state
        n += 1
    return n


class TiedLMHead4bit(nn.Module):
    """LM head that multiplies by a tied ``Embedding4bit``'s NF4 weight: ``logits = x W^T`` (no bias).

    Input ``[..., hidden]``; output ``[..., vocab]`` in the input's dtype.
    """

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self._embedding = [embedding]  # a list so the tied weight is not registered (and counted) twice
        self.in_features = embedding.embedding_dim
        self.out_features = embedding.num_embeddings

    @property
    def weight(self) -> nn.Parameter:
        return self._embedding[0].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bnb = _bnb()
        w = self._embedding[0].weight
        full = bnb.functional.dequantize_4bit(w.data, w.quant_state).to(x.dtype)  # [vocab, hidden]
        return x @ full.t()


def _quantize_linear(lin: nn.Linear, mode: str, compute_dtype: torch.dtype) -> nn.Module:
    bnb = _bnb()
    dev = lin.weight.device
    if mode == "nf4":
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                              compute_dtype=compute_dtype, quant_type="nf4", device="meta")
        q.weight = bnb.nn.Params4bit(lin.weight.data.to(torch.float32).contiguous(), requires_grad=False,
                                     quant_type="nf4", blocksize=NF4_BLOCKSIZE, compress_statistics=True, module=q)
    else:
        q = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                has_fp16_weights=False, threshold=0.0, device="meta")
        q.weight = bnb.nn.Int8Params(lin.weight.data.to(torch.float16).contiguous(), requires_grad=False,
                                     has_fp16_weights=False)
    if lin.bias is not None:
        q.bias = nn.Parameter(lin.bias.data.to(compute_dtype), requires_grad=False)
    return q.to(dev)  # quantisation happens on .to()


def quantize_model(model: nn.Module, mode: QuantMode, *, quantize_embeddings: bool = True,
                   compute_dtype: torch.dtype = torch.float32, skip: tuple[str, ...] = ()) -> nn.Module:
    """Quantise ``model``'s linear layers (and optionally its token embedding) in place; returns ``model``.

    Args:
        model: a transformers causal LM (``get_input_embeddings``/``get_output_embeddings``), or any module.
        mode: ``"none"`` (no-op), ``"nf4"`` or ``"int8"``.
        quantize_embeddings: (nf4 only) also quantise the input embedding and a tied LM head.
        compute_dtype: dtype of the 4-bit matmuls and of the embedding output.
        skip: module-name substrings left unquantised.

    Raises ``ValueError`` for an unknown mode. Parameters end frozen; 4-bit layers stay trainable-through
    (:func:`keep_trainable_through`).
    """
    if mode not in ("none", "nf4", "int8"):
        raise ValueError(f"mode must be 'none', 'nf4' or 'int8', got {mode!r}")
    if mode == "none":
        return model
    bnb = _bnb()
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    emb = get_in() if callable(get_in) else None
    head = get_out() if callable(get_out) else None
    tied = emb is not None and head is not None and head.weight is emb.weight
    special = {id(head)} if head is not None else set()

    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if id(child) in special or any(s in full for s in skip):
                continue
            if type(child) is nn.Linear:
                setattr(parent, child_name, _quantize_linear(child, mode, compute_dtype))

    if mode == "nf4" and quantize_embeddings and emb is not None:
        w = emb.weight.data
        q = bnb.nn.Embedding4bit(emb.num_embeddings, emb.embedding_dim, dtype=compute_dtype, quant_type="nf4",
                                 device="meta")
        q.weight = bnb.nn.Params4bit(w.to(torch.float32).contiguous(), requires_grad=False, quant_type="nf4",
                                     blocksize=NF4_BLOCKSIZE, compress_statistics=False, module=q)
        q = q.to(w.device)
        q.padding_idx = emb.padding_idx
        model.set_input_embeddings(q)
        if tied:
            model.set_output_embeddings(TiedLMHead4bit(q))
            if hasattr(model, "config"):
                model.config.tie_word_embeddings = False  # stop transformers from re-tying to a Params4bit
        elif head is not None and type(head) is nn.Linear:
            model.set_output_embeddings(_quantize_linear(head, mode, compute_dtype))
    for p in model.parameters():
        p.requires_grad_(False)
    keep_trainable_through(model)  # no CPU inference repacking: LoRA gradients pass through these layers
    return model


def _quant_state_bytes(state: Any, seen: set[int]) -> int:
    if state is None or id(state) in seen:
        return 0
    seen.add(id(state))
    total = 0
    for name in ("absmax", "code"):
        t = getattr(state, name, None)
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    total += _quant_state_bytes(getattr(state, "state2", None), seen)
    off = getattr(state, "offset", None)
    if isinstance(off, torch.Tensor):
        total += off.numel() * off.element_size()
    return total


def parameter_memory_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (shared tensors once) plus 4-bit/8-bit quantisation statistics."""
    seen_ptr: set[tuple[int, int]] = set()
    seen_state: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.data_ptr(), t.numel())
        if key in seen_ptr:
            continue
        seen_ptr.add(key)
        total += t.numel() * t.element_size()
        total += _quant_state_bytes(getattr(t, "quant_state", None), seen_state)
        scb = getattr(t, "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total


def dense_parameter_bytes(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """What ``model``'s parameters and floating buffers would occupy dense in ``dtype`` (shared tensors once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    size = torch.empty((), dtype=dtype).element_size()
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.data_ptr(), t.numel())
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * (size if t.is_floating_point() else t.element_size())
    return total
