"""Best-of-N regeneration: draw several pictures per received embedding, keep the one that agrees with it most.

The receiver holds the same image tower as the sender (the shared encoder profile the decoder was trained on),
so it can check its own drawings: each candidate is encoded, and the candidate whose embedding best matches
what was *received* is kept (the reranking step of DALL-E, which kept the CLIP-best of 512 samples; here N is a
handful). Nothing more is sent: the cost is N x the sampling time at the receiver, the channel uses are the
link's.

Agreement (:func:`agreement_scores`):

* decoder with a semantic reader (``config.reader_classes``): the log-probability, under the reader applied to
  the candidate's embedding, of the classes the reader read from the received embedding, summed over the
  reader's attributes (or the ones the task names, ``attributes``): "does the drawing say what the message
  said";
* without a reader: the cosine between the candidate's embedding and the received one.

The judge of the benchmark (the attribute classifier trained on real frames,
:mod:`genscom.generation.attributes`) is a different model from this scorer, which sees only what the
receiver has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from genscom.generation.diffusion import DiffusionDecoder


def check_attributes(decoder: "DiffusionDecoder", attributes: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The reader's attributes a choice looks at: ``attributes`` checked against the decoder's reader (default
    all it reads); ``()`` for a decoder without a reader (the choice is then by cosine).

    Raises:
        ValueError: an attribute the reader does not read, or an empty list.
    """
    classes = getattr(decoder.config, "reader_classes", None) or {}
    if not classes:
        return ()
    keys = tuple(classes) if attributes is None else tuple(attributes)
    unknown = [k for k in keys if k not in classes]
    if unknown or not keys:
        raise ValueError(f"attributes {list(keys)}: the decoder's reader reads {sorted(classes)}; name some of those")
    return keys


def agreement_scores(decoder: "DiffusionDecoder", received: torch.Tensor, drawn: torch.Tensor, *,
                     attributes: tuple[str, ...] | None = None) -> torch.Tensor:
    """How well drawn pictures agree with what was received (higher is better), ``[B]``.

    Args:
        decoder: the decoder that drew them (its reader, when it has one, scores).
        received: received embeddings ``[B, d]``.
        drawn: the image tower's embeddings of the drawn pictures ``[B, d]`` (row ``i`` drawn from row ``i``).
        attributes: the reader's attributes that count (default all of them); ignored without a reader.
    """
    if received.shape != drawn.shape:
        raise ValueError(f"received {tuple(received.shape)} and drawn {tuple(drawn.shape)} embeddings must have the "
                         f"same shape [B, d]")
    keys = check_attributes(decoder, attributes)
    if not keys:
        return torch.nn.functional.cosine_similarity(drawn.float(), received.float(), dim=-1)
    with torch.no_grad():
        said = {k: v for k, v in decoder.read(received).items() if k in keys}
        shown = decoder.read(drawn)
    score = torch.zeros(received.shape[0], device=received.device)
    for k, logits in said.items():
        score = score + shown[k].log_softmax(-1).gather(1, logits.argmax(-1, keepdim=True))[:, 0]
    return score


def pick_best(candidates: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The best of ``n`` candidates per item.

    Args:
        candidates: ``[B, n, ...]`` pictures (or anything with an item and a candidate axis).
        scores: ``[B, n]``, higher is better; ties go to the first candidate.

    Returns:
        ``(best [B, ...], index [B] int64)``.
    """
    if scores.dim() != 2 or tuple(candidates.shape[:2]) != tuple(scores.shape):
        raise ValueError(f"candidates [B, n, ...] and scores [B, n] must agree, got {tuple(candidates.shape)} and "
                         f"{tuple(scores.shape)}")
    index = scores.argmax(dim=1)
    return candidates[torch.arange(candidates.shape[0]), index], index


def best_of_n(decoder: "DiffusionDecoder", encoder: Any, received: torch.Tensor, n: int, *,
              generator: torch.Generator | None = None, steps: int | None = None,
              guidance_scale: float | None = None, attributes: tuple[str, ...] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` pictures per received embedding and keep the one that agrees with it most.

    Args:
        decoder: the diffusion decoder.
        encoder: the receiver's image tower (``encode_clips(uint8 [B, 1, H, W, 3]) -> [B, d]``), the profile the
            decoder was trained on.
        received: received embeddings ``[B, d]``.
        n: candidates per item (1: plain sampling, nothing encoded).
        generator, steps, guidance_scale: :meth:`DiffusionDecoder.generate`'s; the ``B x n`` starting noises are
            drawn from ``generator`` item by item, candidate by candidate.
        attributes: the reader's attributes the choice looks at (:func:`agreement_scores`).

    Returns:
        ``(images [B, 3, H, W] in [0, 1], scores [B, n])`` (``scores`` is empty ``[B, 0]`` when ``n == 1``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"candidates must be a positive integer, got {n!r}")
    received = decoder.check_cond(received)
    b = received.shape[0]
    images = decoder.generate(received.repeat_interleave(n, dim=0), generator=generator, steps=steps,
                              guidance_scale=guidance_scale)                                  # [B*n, 3, H, W]
    if n == 1:
        return images, images.new_zeros((b, 0))
    with torch.no_grad():
        frames = (images.cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).unsqueeze(1)
        drawn = encoder.encode_clips(frames.contiguous()).float().to(received.device)
    scores = agreement_scores(decoder, received.repeat_interleave(n, dim=0), drawn, attributes=attributes).view(b, n)
    best, _ = pick_best(images.view(b, n, *images.shape[1:]), scores.to(images.device))
    return best, scores


__all__ = ["agreement_scores", "best_of_n", "check_attributes", "pick_best"]
