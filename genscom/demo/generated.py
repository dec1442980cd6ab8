"""What the receiver panel shows of the generating tasks: the caption, the regenerated image and their costs.

For the task the transmission was sent for (the wire's ``eval.task``): the agent's caption (tidied,
:func:`~genscom.demo.captions.tidy_caption`), or the frame the ``regen`` scheme drew from the received
embedding, beside the bitstream baseline's decoded frame, each with its channel uses. Tasks that were not
asked for get a hint on how to ask for them, never a "no caption"/"no image" for an offered scheme.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genscom.demo.captions import tidy_caption

if TYPE_CHECKING:
    from genscom.demo.engine import RxResult

_BASELINE_LABEL = {"h264-ldpc": "H.264+LDPC", "jpeg-ldpc": "JPEG+LDPC"}


def _fmt(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


def caption_markdown(res: RxResult) -> str:
    """The caption panel: the agent's caption, or how to get one."""
    task = res.message.eval.get("task", "retrieval")
    if res.captions:
        return (f"**Caption (agent `{res.scheme_name}`, {_fmt(res.channel_uses)} channel uses):** "
                f"{tidy_caption(res.captions[0])}")  # the receiver tidied it knowing the token limit
    if task == "caption":  # only a sender that skipped the transmitter's task check gets here
        return f"_The sender asked for a caption but sent `{res.scheme_name}`, which does not write one._"
    return "_Caption: choose the task “caption” at the transmitter (the `agent` scheme writes it)._"


def regen_markdown(res: RxResult) -> str:
    """The regenerated-image panel's text: what was drawn and the channel uses of it and of the baseline."""
    base = _BASELINE_LABEL.get(res.baseline_name, res.baseline_name or "baseline")
    b_state = "failed" if res.baseline_frames is None else ("damaged" if res.baseline_block_errors else "decoded")
    beside = f"Beside: {base}, {b_state}, **{_fmt(res.baseline_channel_uses)} channel uses**."
    if res.regenerated is not None:
        h, w = res.regenerated.shape[:2]
        return (f"**Regenerated image** ({w}x{h}) drawn by the receiver from the received embedding: "
                f"`{res.scheme_name}`, **{_fmt(res.channel_uses)} channel uses**. {beside}")
    task = res.message.eval.get("task", "retrieval")
    if task == "image regeneration":  # only a sender that skipped the transmitter's task check gets here
        return f"_The sender asked for an image but sent `{res.scheme_name}`, which does not draw one._ {beside}"
    return "_Regenerated image: choose the task “image regeneration” at the transmitter (the `regen` scheme)._"


def regenerated_image(res: RxResult, size: int = 128) -> Any:
    """uint8 ``[S, S, 3]`` of the regenerated frame, upscaled to the baseline's panel size; ``None`` without one."""
    from genscom.demo.plots import upscale

    return None if res.regenerated is None else upscale(res.regenerated.numpy(), size)


__all__ = ["caption_markdown", "regen_markdown", "regenerated_image"]
