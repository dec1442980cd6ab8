"""Caption decoding helpers: shallow fusion of the ``attributes`` head into the caption LM.

The generating agent reads the first object group's attributes twice from the same received
embedding: the LLM spells them out in the caption, and the ``attributes`` head
(:class:`~genscom.agents.heads.AttributeHead`) classifies them directly. The two err on
different items (on 300 test clips at 20 dB, the caption named shape+colour right for 0.737, the
head for 0.750, at least one of them for 0.803), so the receiver combines them while it decodes.

:class:`AttributeFusion` is a ``transformers`` logits processor. At every step, for each fused
attribute that the caption has not named yet, it groups the vocabulary's class words (one token
each, with a leading space, e.g. ``" red"``; plurals such as ``" circles"`` join their class),
and replaces the LM's distribution *over the classes* with the product of experts
``p_LM(class) * p_head(class) ** weight`` (renormalised), keeping the LM's total probability of
naming a class word at all and its split among a class's words. Once the caption has emitted one
of the attribute's words, the attribute is left alone (the first mention describes the first
group in the caption grammar). ``weight = 0`` is plain greedy decoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

try:  # transformers is a core dependency; the base class only adds the generate() contract
    from transformers import LogitsProcessor
except ImportError:  # pragma: no cover - transformers is always installed with genscom
    LogitsProcessor = object  # type: ignore[misc,assignment]


def class_words(attribute: str, name: str) -> tuple[str, ...]:
    """The caption words that name class ``name`` of ``attribute``: the name, and for shapes its plural."""
    if attribute == "shape":
        return (name, name + ("es" if name.endswith(("s", "x", "ch", "sh")) else "s"))
    return (name,)


def class_token_ids(tokenizer: Any, attribute: str, classes: Sequence[str]) -> list[list[int]]:
    """For each class, the token ids of its words (``" word"`` must be one token).

    Raises:
        ValueError: a class word that the tokenizer splits into several tokens, or two classes sharing a token
            (fusion over that attribute would be ill-defined; drop it from ``fusion_attributes``).
    """
    out: list[list[int]] = []
    seen: dict[int, str] = {}
    for name in classes:
        ids: list[int] = []
        for word in class_words(attribute, name):
            tok = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            if len(tok) != 1:
                raise ValueError(f"attribute fusion needs one token per class word; the tokenizer splits "
                                 f"{' ' + word!r} ({attribute}) into {len(tok)} tokens; drop {attribute!r} from the "
                                 "card's fusion_attributes")
            if tok[0] in seen and seen[tok[0]] != name:
                raise ValueError(f"attribute fusion: classes {seen[tok[0]]!r} and {name!r} of {attribute!r} share "
                                 f"token {tok[0]}; drop {attribute!r} from the card's fusion_attributes")
            seen[tok[0]] = name
            ids.append(tok[0])
        out.append(sorted(set(ids)))
    return out


class AttributeFusion(LogitsProcessor):  # type: ignore[misc]
    """Product-of-experts fusion of per-item class log-probabilities into next-token scores.

    Args:
        token_ids: ``{attribute: [class -> token ids]}`` (:func:`class_token_ids`).
        log_probs: ``{attribute: [B, C] float}`` log-probabilities of the head (C classes, the same order).
        weight: exponent of the head's probabilities (>= 0; 0 leaves the scores unchanged).

    Called by ``generate`` with the tokens generated so far ``[B', t]`` and scores ``[B', V]``; returns
    log-probabilities ``[B', V]``. ``B' = B`` for greedy decoding; with ``k`` beams or samples per item
    ``B' = k B`` (rows item-major, as ``generate`` lays them out), and each item's head reading is repeated.
    """

    def __init__(self, token_ids: Mapping[str, list[list[int]]], log_probs: Mapping[str, torch.Tensor],
                 weight: float) -> None:
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise ValueError(f"fusion weight must be a number >= 0, got {weight!r}")
        if set(token_ids) != set(log_probs):
            raise ValueError(f"token_ids and log_probs must name the same attributes, got {sorted(token_ids)} and "
                             f"{sorted(log_probs)}")
        for k, lp in log_probs.items():
            if lp.dim() != 2 or lp.shape[1] != len(token_ids[k]):
                raise ValueError(f"log_probs[{k!r}] must be [B, {len(token_ids[k])}], got {tuple(lp.shape)}")
        self.token_ids = {k: [torch.tensor(t, dtype=torch.long) for t in v] for k, v in token_ids.items()}
        self.log_probs = {k: v.detach().float() for k, v in log_probs.items()}
        self.weight = float(weight)
        self._on: tuple[torch.device, dict[str, Any]] | None = None  # the tensors moved to the scores' device

    def _tensors(self, device: torch.device) -> dict[str, Any]:
        if self._on is None or self._on[0] != device:
            self._on = (device, {k: ([g.to(device) for g in groups], torch.cat(groups).to(device),
                                     self.log_probs[k].to(device)) for k, groups in self.token_ids.items()})
        return self._on[1]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        lm = scores.float().log_softmax(dim=-1)  # [B', V]
        if self.weight == 0:
            return lm
        out = lm.clone()
        for groups, every, head in self._tensors(lm.device).values():
            if head.shape[0] != lm.shape[0]:  # k beams / samples per item
                if lm.shape[0] % head.shape[0]:
                    raise ValueError(f"scores have {lm.shape[0]} rows, not a multiple of the {head.shape[0]} items "
                                     "the head read")
                head = head.repeat_interleave(lm.shape[0] // head.shape[0], dim=0)
            named = torch.isin(input_ids, every).any(dim=-1)  # [B']: this attribute already said
            per_class = torch.stack([lm[:, g].logsumexp(dim=-1) for g in groups],
                                    dim=-1).clamp_min(-1e4)  # [B', C]; finite where another processor put -inf
            total = per_class.logsumexp(dim=-1, keepdim=True)  # [B', 1]: P(LM names some class now)
            fused = (per_class + self.weight * head).log_softmax(dim=-1) + total  # same total, new split
            shift = (fused - per_class).masked_fill(named[:, None], 0.0)  # [B', C]
            for c, g in enumerate(groups):
                out[:, g] += shift[:, c: c + 1]
        return out
