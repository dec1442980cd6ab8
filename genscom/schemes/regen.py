"""Schemes that deliver a *picture* from a few hundred channel uses.

``regen``: the semantic embedding crosses the channel as analog symbols (:class:`SemanticAnalogScheme`, the
same link and the same cost; or, with ``link="adapted"``, through the learned channel adapter of the decoder's
encoder profile), and the receiver regenerates a frame from what it received with a conditional
diffusion decoder (:class:`~genscom.generation.diffusion.DiffusionDecoder`). ``Delivered.frames`` holds the
regenerated frame, ``Delivered.embeddings`` the received embedding.

``deepjscc``: the learned pixel peer (:class:`~genscom.generation.deepjscc.DeepJSCC`): the middle frame is
mapped by a convolutional encoder straight to channel symbols and decoded back to pixels.

Both need the ``[gen]`` extra only for ``regen`` (diffusers); weights are found by name on the adapter search
path (:mod:`genscom.assets`: ``--adapters-dir``, ``GENSCOM_ADAPTERS``, then the shipped folder) or given as a
folder or a module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from genscom.channels.base import ChannelOutput
from genscom.channels.fading import equalize_received
from genscom.channels.sensing import LinkFeedback
from genscom.schemes.analog import SemanticAnalogScheme
from genscom.schemes.base import (Delivered, Payload, RateKnob, Scheme, SourceBatch, expect_payload, frame_uses,
                                  register_scheme)

if TYPE_CHECKING:
    from genscom.generation.deepjscc import DeepJSCC
    from genscom.generation.diffusion import DiffusionDecoder

DEFAULT_DECODER = "regen-mini-attr"
#: the best shipped decoder trained on each encoder profile (``genscom/adapters``; docs/benchmarks.md)
SHIPPED_DECODERS: dict[str, str] = {"mini-attr": "regen-mini-attr", "mini-attr-v2": "regen-mini-attr-v5"}
DEFAULT_DEEPJSCC = "deepjscc-k192"


def load_decoder(decoder: "str | Path | DiffusionDecoder", device: str | torch.device = "cpu") -> "DiffusionDecoder":
    """A :class:`DiffusionDecoder` object, folder, or name on the adapter search path, in eval mode."""
    from genscom.generation.diffusion import DiffusionDecoder
    from genscom.pretrained import resolve_pretrained

    return resolve_pretrained(decoder, DiffusionDecoder, what="decoder", device=device,
                              train_command="genscom train decoder")


def frames_from_images(images: torch.Tensor) -> torch.Tensor:
    """Float ``[B, 3, H, W]`` in ``[0, 1]`` -> uint8 one-frame clips ``[B, 1, H, W, 3]``."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).unsqueeze(1).contiguous()


def key_frame(frames: torch.Tensor) -> torch.Tensor:
    """The middle frame of clips ``[B, T, H, W, 3]`` uint8 as float ``[B, 3, H, W]`` in ``[0, 1]``."""
    return frames[:, frames.shape[1] // 2].permute(0, 3, 1, 2).float().div(255.0)


@register_scheme("regen")
class RegenScheme(Scheme):
    """The embedding over analog symbols, a frame regenerated from the received embedding at the receiver.

    Args:
        decoder: a :class:`~genscom.generation.diffusion.DiffusionDecoder`, its folder, or a name on the adapter
            search path (default ``regen-mini-attr``, trained by genscom on ``mini-attr`` embeddings).
        link: how the embedding crosses the channel: ``"semantic-analog"`` (default) or ``"adapted"`` (the
            learned channel adapter ``adapter``, default ``<profile>-k192``, at ``k`` channel uses).
        repeat, equalizer: the analog link's (:class:`SemanticAnalogScheme`); ``repeat`` is the rate knob.
        steps, guidance_scale: DDIM steps and classifier-free guidance (default: the decoder's config).
        seed: the sampling noise of item ``i`` of a batch is drawn from one generator seeded with ``seed``, so
            the same received embeddings give the same pictures.
        batch_size: images sampled at once.
        candidates: pictures drawn per item; with more than one the receiver keeps the one whose embedding (by
            its own image tower) agrees most with what it received (:mod:`genscom.generation.rerank`).
        encoder: that image tower (``encode_clips``), default the decoder's profile built on ``device`` when
            ``candidates > 1``.
        rerank_on: the reader's attributes the choice looks at (default all; e.g. ``("shape", "colour")`` when
            the task is the main object's shape and colour).

    Cost: exactly the link's (``ceil(d/2) * repeat`` data symbols plus pilots for ``semantic-analog``): the
    decoder runs at the receiver and sends nothing; ``candidates`` multiplies the receiver's sampling time.
    """

    name = "regen"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return SemanticAnalogScheme.rate_knobs()

    def __init__(self, *, decoder: "str | Path | DiffusionDecoder" = DEFAULT_DECODER,
                 link: Literal["semantic-analog", "adapted"] = "semantic-analog", repeat: int = 1,
                 adapter: Any = None, k: int | None = None,
                 equalizer: Literal["zf", "mmse"] = "mmse", steps: int | None = None,
                 guidance_scale: float | None = None, seed: int = 0, batch_size: int = 64,
                 candidates: int = 1, encoder: Any = None, rerank_on: tuple[str, ...] | None = None,
                 device: str | torch.device = "cpu") -> None:
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be a positive integer (pictures drawn per item), got {candidates!r}")
        self.decoder = load_decoder(decoder, device=device)
        self.candidates, self._encoder, self._device = candidates, encoder, device
        self.rerank_on = None if rerank_on is None else tuple(rerank_on)
        if self.rerank_on is not None:  # fail at construction, not after sampling
            from genscom.generation.rerank import check_attributes

            check_attributes(self.decoder, self.rerank_on)
        self.link: Scheme
        if link == "semantic-analog":
            self.link = SemanticAnalogScheme(repeat=repeat, equalizer=equalizer)
        elif link == "adapted":
            from genscom.schemes.adapted import AdaptedScheme

            if repeat != 1:
                raise ValueError("repeat applies to link='semantic-analog'; the adapter's rate is k")
            self.link = AdaptedScheme(adapter=adapter if adapter is not None else f"{self.profile or 'mini-attr'}-k192",
                                      k=k, equalizer=equalizer, device=device)
        else:
            raise ValueError(f"link must be 'semantic-analog' or 'adapted', got {link!r}")
        self.adapts = self.link.adapts
        self.steps, self.guidance_scale, self.seed = steps, guidance_scale, int(seed)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        if link == "adapted":
            self.name = f"regen-{self.link.name}"
        elif repeat > 1:
            self.name = f"regen-x{repeat}"
        if candidates > 1:
            self.name = f"{self.name}-best{candidates}"

    @property
    def profile(self) -> str | None:
        """The encoder profile whose embeddings the decoder was trained on (its config's provenance)."""
        return self.decoder.config.extra.get("profile")

    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> Payload:
        if batch.embeddings is not None and batch.embeddings.shape[-1] != self.decoder.config.cond_dim:
            raise ValueError(f"scheme 'regen': the decoder was trained on {self.decoder.config.cond_dim}-dimensional "
                             f"{self.profile or ''} embeddings, got {batch.embeddings.shape[-1]}; encode with that "
                             f"profile or pass another decoder")
        return self.link.transmit(batch, sensing=sensing, generator=generator)

    @property
    def encoder(self) -> Any:
        """The receiver's image tower that scores candidates (built on first use from the decoder's profile)."""
        if self._encoder is None:
            from genscom.encoders import create_encoder

            if not self.profile:
                raise ValueError("this decoder names no encoder profile (config.extra['profile']); pass encoder= "
                                 "to score its candidates")
            self._encoder = create_encoder(self.profile, device=self._device).eval()
        return self._encoder

    def regenerate(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Received ``embeddings [B, d]`` -> regenerated frames, uint8 ``[B, 1, H, W, 3]`` (the best of
        ``candidates`` per item, :func:`~genscom.generation.rerank.best_of_n`)."""
        from genscom.generation.rerank import best_of_n

        g = torch.Generator().manual_seed(self.seed)
        dev = next(self.decoder.parameters()).device
        n = self.candidates
        enc = self.encoder if n > 1 else None
        step = max(1, self.batch_size // n)   # batch_size counts pictures, candidates included
        out = [best_of_n(self.decoder, enc, embeddings[i:i + step].to(dev), n, generator=g, steps=self.steps,
                         guidance_scale=self.guidance_scale, attributes=self.rerank_on)[0].cpu()
               for i in range(0, len(embeddings), step)]
        return frames_from_images(torch.cat(out) if out else torch.zeros(0, 3, 1, 1))

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        # the link checks its own payload type
        return self._with_picture(self.link.receive(received, payload, generator=generator))

    def deliver(self, payload: Payload, channel: Any, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        """The link's own delivery (pilots, its equaliser), then the picture from what it delivered."""
        return self._with_picture(self.link.deliver(payload, channel, snr_db, generator=generator))

    def _with_picture(self, d: Delivered) -> Delivered:
        """The link's delivery plus the frame regenerated from its embeddings."""
        assert d.embeddings is not None  # both links always deliver embeddings
        return Delivered(embeddings=d.embeddings, frames=self.regenerate(d.embeddings), failed=d.failed,
                         channel_uses=d.channel_uses, extras={**d.extras, "regenerated": True})

    def sent_symbols(self, payload: Payload) -> torch.Tensor:
        return self.link.sent_symbols(payload)


def load_deepjscc(model: "str | Path | DeepJSCC", device: str | torch.device = "cpu") -> "DeepJSCC":
    """A :class:`DeepJSCC` object, folder, or name on the adapter search path, in eval mode."""
    from genscom.generation.deepjscc import DeepJSCC
    from genscom.pretrained import resolve_pretrained

    return resolve_pretrained(model, DeepJSCC, what="model", device=device, train_command="genscom train deepjscc")


@dataclass
class JSCCPayload(Payload):
    """DeepJSCC symbols of a frame of ``image_size`` pixels a side (the receiver's decoder knows it)."""

    image_size: int = 0


@register_scheme("deepjscc")
class DeepJSCCScheme(Scheme):
    """The key frame through a trained :class:`~genscom.generation.deepjscc.DeepJSCC` (pixels in, pixels out).

    Args:
        model: a :class:`DeepJSCC`, its folder, or a name on the adapter search path (default ``deepjscc-k192``).
        equalizer: ``"mmse"`` or ``"zf"`` on fading channels, with the receiver's (pilot) estimates.

    Cost: the model's ``channel_uses`` data symbols per item plus the link's pilots; no side information, no
    feedback (it does not adapt). ``Delivered.frames``: uint8 ``[B, 1, S, S, 3]``.
    """

    name = "deepjscc"

    def __init__(self, *, model: "str | Path | DeepJSCC" = DEFAULT_DEEPJSCC,
                 equalizer: Literal["zf", "mmse"] = "mmse", device: str | torch.device = "cpu") -> None:
        if equalizer not in ("zf", "mmse"):
            raise ValueError(f"equalizer must be 'zf' or 'mmse', got {equalizer!r}")
        self.model = load_deepjscc(model, device=device)
        self.equalizer = equalizer

    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> JSCCPayload:
        s = self.model.config.image_size
        if batch.frames is None or batch.frames.dtype != torch.uint8:
            raise ValueError("scheme 'deepjscc' sends pixels; build the SourceBatch with frames=[B, T, H, W, 3] uint8")
        if tuple(batch.frames.shape[2:4]) != (s, s):
            raise ValueError(f"scheme 'deepjscc': this model codes {s}x{s} frames, got "
                             f"{batch.frames.shape[2]}x{batch.frames.shape[3]}; resize them or train a model for that size")
        dev = next(self.model.parameters()).device
        with torch.no_grad():
            sym = self.model.encode(key_frame(batch.frames).to(dev)).cpu()
        b = sym.shape[0]
        uses = frame_uses(torch.full((b,), sym.shape[1]), sensing, feedback=False)
        return JSCCPayload(symbols=sym, channel_uses=uses, side_bits=torch.zeros(b, dtype=torch.int64),
                           pilots=None if sensing is None else sensing.pilot_layout(), image_size=s)

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        payload = expect_payload(payload, JSCCPayload, self.name)
        assert payload.symbols is not None  # always set by transmit
        x_hat = payload.symbols if received is None else equalize_received(received, method=self.equalizer)
        dev = next(self.model.parameters()).device
        with torch.no_grad():
            images = self.model.decode(x_hat.to(dev)).cpu()
        b = images.shape[0]
        return Delivered(embeddings=None, frames=frames_from_images(images), failed=torch.zeros(b, dtype=torch.bool),
                         channel_uses=payload.channel_uses)


__all__ = ["DEFAULT_DECODER", "DEFAULT_DEEPJSCC", "SHIPPED_DECODERS", "DeepJSCCScheme", "JSCCPayload", "RegenScheme",
           "frames_from_images", "key_frame", "load_decoder", "load_deepjscc"]
