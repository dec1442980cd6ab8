"""Text shown in the demo's panels, never cut mid-sentence or mid-word.

The generating agent decodes at most ``max_caption_tokens`` tokens (its card; its caption targets were cut
to that length at training too), so a long caption can stop in the middle of a sentence.
:func:`tidy_caption` keeps the complete sentences of such a text; without a sentence end it drops a dangling
last word ("and", "with", ...) and, when the caption hit the token limit (:func:`hit_token_limit`), ends it at
its last complete clause. :func:`shorten` cuts a label at a word boundary with an ellipsis.

Example:
    >>> tidy_caption("a red circle moving left. two blue squa")
    'a red circle moving left.'
    >>> tidy_caption("a red circle moving left and")
    'a red circle moving left'
    >>> tidy_caption("one green cross sliding left and a large yellow", truncated=True)
    'one green cross sliding left'
    >>> shorten("two small red circles moving left over a striped background", 30)
    'two small red circles moving…'
"""

from __future__ import annotations

import re
from typing import Any

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
#: words a caption cannot end on: a caption cut after one of them was cut mid-phrase
DANGLING = frozenset({"a", "an", "the", "and", "or", "with", "of", "on", "over", "in", "to", "at", "by", "for",
                      "from", "into", "its", "their", "is", "are"})


_CLAUSE = re.compile(r",\s|;\s|\s(?:and|but|while|with)\s")


def tidy_caption(text: str, *, truncated: bool = False) -> str:
    """``text`` up to its last complete sentence; without a sentence end, without a dangling last word, and
    (``truncated``: it stopped at the token limit) up to its last complete clause, or its last whole word + "…"."""
    text = " ".join(str(text).split())
    if not text:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if ends:
        return text[:ends[-1]]
    if truncated:
        clauses = [m.start() for m in _CLAUSE.finditer(text)]
        if clauses:
            text = text[:clauses[-1]]
        elif " " in text:
            return tidy_caption(text.rsplit(" ", 1)[0]) + "…"  # the last word may be a cut-off token
    words = text.rstrip(",;:-( ").split()
    while len(words) > 1 and words[-1].lower().strip(",;:") in DANGLING:
        words.pop()
    return " ".join(words).rstrip(",;:-( ")


def hit_token_limit(scheme: Any, text: str) -> bool:
    """Whether ``text`` from ``scheme``'s generating agent reached its card's ``max_caption_tokens`` (so it was
    cut, not ended); ``False`` when the scheme has no such agent."""
    agent = getattr(scheme, "generating", None)
    limit = getattr(getattr(agent, "card", None), "max_caption_tokens", None)
    tok = getattr(getattr(agent, "llm", None), "tokenizer", None)
    if not isinstance(limit, int) or tok is None:
        return False
    return len(tok(text, add_special_tokens=False)["input_ids"]) >= limit - 1  # trained on limit - 1 caption tokens


def shorten(text: str, max_chars: int) -> str:
    """``text`` in at most ``max_chars`` characters, cut at a word boundary with "…" when it is longer."""
    text = " ".join(str(text).split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0] if " " in text[:max_chars] else text[:max_chars - 1]
    return cut.rstrip(",;:-( ") + "…"


__all__ = ["DANGLING", "hit_token_limit", "shorten", "tidy_caption"]
