"""genscom's own error types: one line each, naming what was wrong, with what, and how to fix it.

Every error genscom raises on purpose for bad input is a :class:`GenscomError`. It subclasses
``ValueError``, so code that already catches ``ValueError`` keeps working; the ``genscom``
command catches it (and ``ValueError``/``TypeError``/``FileNotFoundError``) in one place and
prints ``error: <message>`` (``--debug`` shows the traceback instead).

* :class:`BadFileError`: a file (or folder) is not what was expected: truncated or foreign
  weights, a pickle where ``weights_only`` tensors were expected, an empty or malformed config,
  an image that declares more pixels than allowed. Carries ``path``, ``expected`` and ``fix``.
* :class:`InputTooLargeError`: an input past a stated bound (image pixels, video frames,
  caption characters, file size).
* :class:`OutputExistsError`: a training command would overwrite trained weights without
  ``--overwrite``.

Example:
    >>> str(BadFileError("ckpt.pt", problem="the file is empty", expected="a genscom checkpoint",
    ...                  fix="delete it and train without --resume"))
    "'ckpt.pt': the file is empty; expected a genscom checkpoint. Fix: delete it and train without --resume"
"""

from __future__ import annotations

import os


def one_line(text: object, *, limit: int = 600) -> str:
    """``text`` as one line: whitespace runs (newlines included) collapsed to one space, at most ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def first_line(exc: BaseException, *, limit: int | None = None) -> str:
    """The first line of ``str(exc)`` (at most ``limit`` characters), or ``""`` for an empty message: what a
    one-line error quotes of the exception it replaces."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""


class GenscomError(ValueError):
    """Base of genscom's own errors (a ``ValueError``); the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class BadFileError(GenscomError):
    """A file or folder that is not what was expected.

    Args:
        path: the file (or folder).
        problem: what is wrong with it (one clause; the underlying exception's first line is fine).
        expected: what should be there (e.g. ``"a safetensors file of ChannelAdapter weights"``).
        fix: how to fix it (a command or an action).
    """

    def __init__(self, path: str | os.PathLike[str], *, problem: str, expected: str = "", fix: str = "") -> None:
        self.path = str(path)
        self.problem = one_line(problem, limit=300)
        self.expected = one_line(expected, limit=200)
        self.fix = one_line(fix, limit=200)
        msg = f"{self.path!r}: {self.problem}"
        if self.expected:
            msg += f"; expected {self.expected}"
        if self.fix:
            msg += f". Fix: {self.fix}"
        super().__init__(msg)


class InputTooLargeError(GenscomError):
    """An input larger than genscom accepts (pixels, frames, characters, bytes); the message states the bound."""


class OutputExistsError(GenscomError):
    """A command would replace trained weights (or a file it must not touch) without ``--overwrite``."""


__all__ = ["BadFileError", "GenscomError", "InputTooLargeError", "OutputExistsError", "one_line"]
