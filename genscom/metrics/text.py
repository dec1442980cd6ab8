"""Caption metrics: corpus BLEU-4, CIDEr-D, and attribute accuracy on the synthetic clips.

* :func:`bleu4`: corpus BLEU-4 (Papineni et al.) against all references, lower-cased words,
  brevity penalty, no smoothing.
* :func:`cider`: corpus CIDEr-D (Vedantam et al.) with the COCO caption toolkit's scorer
  (``pycocoevalcap``, the ``[eval]`` extra; ``None`` without it), on the same word tokens; its IDF
  comes from the evaluated set's references. METEOR needs a Java runtime and is not computed.
* :func:`names_object_and_colour`: whether a caption names the first object group's shape, its
  colour, and the colour directly before the shape ("... green cross ...").
* :func:`attribute_flags`: whether a caption states the first group's count, size and motion, parsed
  with the dataset's caption grammar words.
* :func:`caption_scores`: all of the above over a set (``object_colour_acc``, ``object_acc``,
  ``colour_acc``, ``count_acc``, ``size_acc``, ``motion_acc``, ``bleu4``, ``cider``), and ``text_sim``, the mean cosine between each caption's
  and its first reference's embeddings in an encoder's text space.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Mapping, Sequence

import torch

_WORD = re.compile(r"[a-z]+")


def _words(s: str) -> list[str]:
    return _WORD.findall(s.lower())


def bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (Papineni et al.): clipped 1-4-gram precisions, geometric mean, brevity penalty. In [0, 1]."""
    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses ({len(hypotheses)}) and references ({len(references)}) must align")
    match, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        h = _words(hyp)
        rs = [_words(r) for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1] if rs else 0
        for n in range(1, 5):
            hc = Counter(tuple(h[i: i + n]) for i in range(len(h) - n + 1))
            maxref: Counter = Counter()
            for r in rs:
                for g, c in Counter(tuple(r[i: i + n]) for i in range(len(r) - n + 1)).items():
                    maxref[g] = max(maxref[g], c)
            match[n - 1] += sum(min(c, maxref[g]) for g, c in hc.items())
            total[n - 1] += max(0, len(h) - n + 1)
    if min(total) == 0 or min(match) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return bp * math.exp(log_p)


def cider(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
    """Corpus CIDEr-D (``pycocoevalcap``'s scorer) on lower-cased word tokens; ``None`` if the package is missing.

    Scale as in the COCO toolkit (a perfect match of all references scores about 10 x the
    mean cosine, typically 1-3 for good captions).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses ({len(hypotheses)}) and references ({len(references)}) must align")
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return None
    if not hypotheses:
        return 0.0
    gts = {i: [" ".join(_words(r)) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(_words(h))] for i, h in enumerate(hypotheses)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def names_object_and_colour(caption: str, attributes: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(object named, colour named, colour directly before the shape) for the first object group."""
    grp = attributes["groups"][0]
    shape, colour = grp["shape"], grp["colour"]
    words = _words(caption)
    plural = {shape, shape + "s", shape + "es"}
    obj = any(w in plural for w in words)
    col = colour in words
    both = any(words[i] == colour and words[i + 1] in plural for i in range(len(words) - 1))
    return obj, col, both


def _find_phrase(words: list[str], phrases: Mapping[Any, Sequence[str]]) -> Any:
    """The value whose phrase (a word sequence) starts earliest in ``words``; ``None`` when none occurs."""
    best, best_at = None, len(words)
    for value, options in phrases.items():
        for phrase in options:
            p = phrase.split()
            for i in range(min(best_at, len(words) - len(p) + 1)):
                if words[i: i + len(p)] == p:
                    best, best_at = value, i
                    break
    return best


def attribute_flags(caption: str, attributes: dict[str, Any],
                    vocabulary: Mapping[str, Mapping[Any, Sequence[str]]]) -> dict[str, bool | None]:
    """Whether ``caption`` states the first object group's count, size and motion right.

    The caption is parsed with the dataset's grammar words (``vocabulary``: ``{"count": {1: ("a", "one", ...)},
    "size": {"small": ("small", "little"), ...}, "motion": {"left": ("moving left", ...), ...}}``, e.g.
    :data:`genscom.data.synthetic.CAPTION_VOCABULARY`): the first size word is the first group's size, the word
    before it its count, the earliest motion phrase its motion. A caption with no size word gets neither size nor
    count right. ``motion`` is ``None`` for a still image (``num_frames == 1``: its captions name no motion).
    """
    grp = attributes["groups"][0]
    words = _words(caption)
    size_of = {w: v for v, ws in vocabulary["size"].items() for w in ws}
    count_of = {w: v for v, ws in vocabulary["count"].items() for w in ws}
    at = next((i for i, w in enumerate(words) if w in size_of), None)
    size_ok = at is not None and size_of[words[at]] == grp["size"]
    count_ok = at is not None and at > 0 and count_of.get(words[at - 1]) == grp["count"]
    motion_ok: bool | None = None
    if attributes.get("num_frames", 2) > 1:
        motion_ok = _find_phrase(words, vocabulary["motion"]) == grp["motion"]
    return {"count": count_ok, "size": size_ok, "motion": motion_ok}


def caption_scores(captions: Sequence[str], references: Sequence[Sequence[str]],
                   attributes: Sequence[dict[str, Any]] | None = None, *, encoder: Any = None,
                   vocabulary: Mapping[str, Mapping[Any, Sequence[str]]] | None = None) -> dict[str, float]:
    """Caption metrics of the module docstring (``object*``/``colour*`` need ``attributes``; ``count_acc``,
    ``size_acc`` and ``motion_acc`` need ``attributes`` and the grammar's ``vocabulary`` (see
    :func:`attribute_flags`; ``motion_acc`` over the clips, ``num_frames > 1``, static ones included); ``text_sim`` needs an encoder)."""
    out: dict[str, float] = {"bleu4": bleu4(captions, references)}
    c = cider(captions, references)
    if c is not None:
        out["cider"] = c
    if attributes is not None:
        flags = [names_object_and_colour(c, a) for c, a in zip(captions, attributes)]
        n = max(1, len(flags))
        out["object_acc"] = sum(f[0] for f in flags) / n
        out["colour_acc"] = sum(f[1] for f in flags) / n
        out["object_colour_acc"] = sum(f[2] for f in flags) / n
        if vocabulary is not None:
            more = [attribute_flags(c, a, vocabulary) for c, a in zip(captions, attributes)]
            out["count_acc"] = sum(bool(f["count"]) for f in more) / n
            out["size_acc"] = sum(bool(f["size"]) for f in more) / n
            moving = [f["motion"] for f in more if f["motion"] is not None]
            if moving:
                out["motion_acc"] = sum(moving) / len(moving)
    if encoder is not None:
        with torch.no_grad():
            a = torch.nn.functional.normalize(encoder.encode_text([c or "." for c in captions]).float(), dim=-1)
            b = torch.nn.functional.normalize(encoder.encode_text([r[0] for r in references]).float(), dim=-1)
        out["text_sim"] = float((a * b).sum(-1).mean())
    return out


__all__ = ["attribute_flags", "bleu4", "caption_scores", "cider", "names_object_and_colour"]
