"""Role prompts: templates rendered with the channel sensing and the task requirement.

A template is plain text with ``{{ field }}`` placeholders and optional
``{# comments #}`` (removed). Fields:

============== ===========================================================
``snr_db``     sensed SNR in dB, rounded to an integer (``"noiseless"`` if none)
``snr_level``  ``"very low"`` (< 0 dB), ``"low"`` (< 5), ``"medium"`` (< 12), ``"high"``
``channel``    channel type (``awgn``, ``rayleigh``, ``rician``, ``none``)
``task``       task requirement (``retrieval``, ``caption``, ``image``, ``understanding``)
``budget``     channel-use budget (``"unlimited"`` if none)
============== ===========================================================

Unknown placeholders raise ``ValueError`` naming them.

Example:
    >>> render_prompt("SNR {{ snr_db }} dB on {{ channel }}; task: {{ task }}.",
    ...               sensing=ChannelSensing(snr_db=7.4, channel="awgn"), task=TaskRequirement("caption"))
    'SNR 7 dB on awgn; task: caption.'
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

Task = Literal["retrieval", "caption", "image", "understanding"]
PROMPT_FIELDS = ("snr_db", "snr_level", "channel", "task", "budget")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)


@dataclass(frozen=True)
class ChannelSensing:
    """What an agent knows about the channel: the sensed SNR (Es/N0, dB; ``None`` = noiseless) and its type."""

    snr_db: float | None
    channel: str = "awgn"

    def __post_init__(self) -> None:
        if self.snr_db is not None:
            if isinstance(self.snr_db, bool) or not isinstance(self.snr_db, (int, float)) or not math.isfinite(self.snr_db):
                raise ValueError(f"snr_db must be a finite number of dB or None (noiseless), got {self.snr_db!r}")
        if not isinstance(self.channel, str) or not self.channel:
            raise ValueError(f"channel must be a channel name such as 'awgn', got {self.channel!r}")

    @property
    def snr_text(self) -> str:
        return "noiseless" if self.snr_db is None else str(int(round(float(self.snr_db))))

    @property
    def snr_level(self) -> str:
        if self.snr_db is None:
            return "noiseless"
        s = float(self.snr_db)
        return "very low" if s < 0 else "low" if s < 5 else "medium" if s < 12 else "high"


@dataclass(frozen=True)
class TaskRequirement:
    """The task an agent serves and its channel-use budget (``None`` = unconstrained)."""

    task: Task = "retrieval"
    budget: int | None = None

    def __post_init__(self) -> None:
        if self.task not in get_args(Task):
            raise ValueError(f"task must be one of {list(get_args(Task))}, got {self.task!r}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise ValueError(f"budget must be a positive number of channel uses or None, got {self.budget!r}")


def load_prompt(path: str | os.PathLike[str]) -> str:
    """Read a template file (comments removed, surrounding whitespace stripped) and check its placeholders."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {str(p)!r} does not exist")
    text = _COMMENT.sub("", p.read_text(encoding="utf-8")).strip()
    check_template(text, name=str(p))
    return text


def check_template(template: str, *, name: str = "template") -> None:
    """Raise ``ValueError`` if ``template`` uses a placeholder outside :data:`PROMPT_FIELDS`."""
    if not isinstance(template, str):
        raise TypeError(f"{name} must be a string, got {type(template).__name__}")
    unknown = sorted({m for m in _PLACEHOLDER.findall(template) if m not in PROMPT_FIELDS})
    if unknown:
        raise ValueError(f"{name} uses unknown placeholder(s) {unknown}; allowed: {list(PROMPT_FIELDS)}")


def render_prompt(template: str, *, sensing: ChannelSensing, task: TaskRequirement) -> str:
    """Fill ``template``'s placeholders from ``sensing`` and ``task`` (see the module docstring)."""
    if not isinstance(sensing, ChannelSensing):
        raise TypeError(f"sensing must be a ChannelSensing, got {type(sensing).__name__}")
    if not isinstance(task, TaskRequirement):
        raise TypeError(f"task must be a TaskRequirement, got {type(task).__name__}")
    template = _COMMENT.sub("", template)
    check_template(template)
    values = {
        "snr_db": sensing.snr_text,
        "snr_level": sensing.snr_level,
        "channel": sensing.channel,
        "task": task.task,
        "budget": "unlimited" if task.budget is None else str(task.budget),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
