"""Small trainable modules around the LLM: the input projector and the functional heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SoftPromptProjector(nn.Module):
    """Map each input vector to ``n_tokens`` soft tokens in the LLM's input-embedding space.

    Input ``[B, n, d_in]`` float; output ``[B, n * n_tokens, hidden]``. The output
    starts at the scale ``token_rms`` of the LLM's own token embeddings.
    """

    def __init__(self, d_in: int, hidden: int, n_tokens: int, *, token_rms: float = 1.0) -> None:
        super().__init__()
        self.n_tokens, self.hidden = n_tokens, hidden
        self.norm = nn.LayerNorm(d_in)
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden * n_tokens)
        self.scale = nn.Parameter(torch.tensor(float(token_rms)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.fc2(F.gelu(self.fc1(self.norm(x))))  # [B, n, hidden * n_tokens]
        h = h.reshape(b, n * self.n_tokens, self.hidden)
        h = h / h.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt()  # unit RMS per token
        return h * self.scale


class VectorHead(nn.Module):
    """Mean of the query tokens' hidden states ``[B, Q, hidden]`` -> L2-normalised ``[B, d_out]``."""

    def __init__(self, hidden: int, d_out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, h: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """``skip``: optional ``[B, hidden]`` added after the input norm (a residual path around the LLM)."""
        u = self.norm(h.mean(dim=1))
        z = self.fc2(F.gelu(self.fc1(u if skip is None else u + skip)))
        return F.normalize(z, dim=-1)


class AttributeHead(nn.Module):
    """The received embedding ``[B, n, d_in]`` (its mean over ``n``) -> one logit vector per attribute.

    Reads the first object group's attributes (``{"shape": [B, n_shapes], "colour": [B, n_colours], ...}``)
    straight from what the receiver got, not through the LLM: a cheap semantic reader whose cross-entropy, in
    joint fine-tuning, pushes the understanding agent to keep those attributes in the embedding it sends.
    """

    def __init__(self, d_in: int, classes: dict[str, int], hidden: int = 512) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.fc = nn.Linear(d_in, hidden)
        self.out = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = F.gelu(self.fc(self.norm(x.mean(dim=1))))
        return {name: layer(h) for name, layer in self.out.items()}


class ImageConditioningHead(nn.Module):
    """Query hidden states ``[B, Q, hidden]`` -> conditioning vectors ``[B, Q, d_cond]`` for an image decoder."""

    def __init__(self, hidden: int, d_cond: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc = nn.Linear(hidden, d_cond)

    def forward(self, h: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        u = self.norm(h)
        return self.fc(u if skip is None else u + skip[:, None, :])
