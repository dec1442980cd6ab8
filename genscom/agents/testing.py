"""Tiny offline LLMs for tests and examples: a random ``LlamaConfig`` model and a locally trained tokenizer.

Nothing is downloaded. ``make_tiny_llm(folder)`` writes a model + tokenizer that
``transformers.AutoModelForCausalLM.from_pretrained(folder)`` loads, so agent
cards can point their ``llm`` field at it and exercise the real loading path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

TINY_CORPUS = (
    "you are the understanding generating agent of a semantic radio link channel awgn rayleigh rician none snr db "
    "very low medium high noiseless task retrieval caption image understanding budget unlimited channel uses "
    "summarise describe the clip below into its meaning from received caption : . , ( ) - "
    "a an one two three small large red orange yellow green blue purple pink white black gray circle circles "
    "square squares triangle triangles star stars ring rings cross crosses moving left right up down rising "
    "falling rotating static still on over background striped checkered gradient stripes clip of and with "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 -5 -10"
)


def make_tiny_tokenizer(corpus: str = TINY_CORPUS):
    """A word-level ``PreTrainedTokenizerFast`` (``<unk>``, ``<pad>``, ``</s>``) built from ``corpus``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(pre_tokenizers.Whitespace().pre_tokenize_str(corpus)[i][0]
                       for i in range(len(pre_tokenizers.Whitespace().pre_tokenize_str(corpus)))))
    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")


def make_tiny_llm(folder: str | os.PathLike[str], *, hidden_size: int = 32, num_layers: int = 2,
                  seed: int = 0, tie_word_embeddings: bool = True) -> Path:
    """Save a random tiny Llama causal LM and its tokenizer to ``folder``; returns the folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=tie_word_embeddings,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    folder = Path(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_card_dict(llm_folder: str | os.PathLike[str], role: str, *, prompt: str, name: str | None = None,
                   **overrides: object) -> dict[str, object]:
    """A card dict for the tiny LLM (small dims), for :func:`genscom.agents.card.load_card`."""
    d: dict[str, object] = {
        "name": name or f"tiny-{role}", "role": role, "llm": str(llm_folder), "prompt": str(prompt),
        "perception_dim": 16, "embedding_dim": 12, "text_dim": 16, "n_soft_tokens": 2, "n_query_tokens": 2,
        "image_cond_dim": 8, "max_caption_tokens": 8,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    }
    d.update(overrides)
    return d


class StubEncoder:
    """A 16-d stand-in for a perception encoder, for tests with the tiny cards (``perception_dim`` 16).

    ``encode_clips``: per-channel means of the frames, zero-padded to 16; ``encode_text``: hashed
    bag of words. Deterministic, no weights.
    """

    dim = 16

    def encode_clips(self, frames: torch.Tensor, **_: object) -> torch.Tensor:
        x = frames.float().mean(dim=(1, 2, 3)) if frames.dim() == 5 else frames.float().mean(dim=(1, 2))
        return torch.nn.functional.pad(x / 255.0, (0, self.dim - x.shape[-1]))

    def encode_text(self, texts: list[str], **_: object) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, sum(map(ord, w)) % self.dim] += 1.0
        return out
