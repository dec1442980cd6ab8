"""The demo's configuration and the choices it offers, shared by the engine and the wire guard.

:class:`DemoConfig` (the receiver's and transmitter's own settings), :class:`TxSettings` (the panel's values), the
tasks, channels and baseline schemes the demo offers, and the rate knobs of each scheme
(:meth:`~genscom.schemes.base.Scheme.rate_knobs`). Nothing here touches the wire or a model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from genscom.schemes.base import RateKnob, get_scheme_class

logger = logging.getLogger(__name__)

Task = Literal["retrieval", "caption", "image regeneration"]
TASKS: tuple[str, ...] = ("retrieval", "caption", "image regeneration")
CHANNEL_NAMES: tuple[str, ...] = ("awgn", "rayleigh", "rician")
BASELINE_SCHEMES = frozenset({"jpeg-ldpc", "h264-ldpc"})
#: schemes that send pixels, not an embedding: the demo leaves them out (its receiver ranks and regenerates
#: from embeddings; ``genscom bench regen`` compares them)
PIXEL_SCHEMES = frozenset({"deepjscc"})
DEFAULT_REGEN_DECODER = "auto"  # the best shipped decoder trained on the demo's profile
MAX_REGEN_CANDIDATES = 16  # best-of-N at the receiver: N x the drawing time per item
DEFAULT_RESULTS = "results/retrieval/retrieval.json"


@dataclass
class DemoConfig:
    """Settings of the demo (both processes).

    Attributes:
        profile: encoder profile (``"mini-attr"`` offline default: the benchmarks' profile, with a shipped
            channel adapter and image decoder; ``"tiny"`` for tests).
        gallery_size: synthetic test clips in the offline gallery / receiver gallery.
        seed: dataset and channel seed.
        num_frames: frames sampled per clip (``T``).
        max_side: long side of transmitted frames in pixels (even sizes for H.264).
        max_upload_mb: largest upload accepted, in MB (10^6 bytes).
        mcs: MCS of the baseline's digital link, e.g. ``"qpsk-1/2"``, and the initial value of a
            scheme's ``mcs`` rate knob (``digital-embedding``, ``memory``).
        jpeg_quality, h264_crf: baseline source-coding settings.
        results_path: retrieval benchmark JSON for the R@1-vs-SNR plot.
        agent_card: agent card for the ``agent`` scheme (``None``: that scheme reports it is not set up).
        request_timeout_s: HTTP timeout of the transmitter process, seconds.
        max_channel_uses: the budget: most channel uses per item the transmitter sends and the receiver
            accepts (also bounds rate knobs without their own maximum, e.g. ``budget``, ``k``).
        max_message_mb: largest wire message, in MB (10^6 bytes); the receiver answers 413 above it.
        scheme_cache_size: scheme instances kept per process (LRU).
        regen_decoder: the image decoder of the ``regen`` scheme (image-regeneration task): a folder or a name on
            the adapter search path (:mod:`genscom.assets`); each end uses its own, a sender never names one.
            ``"auto"`` (default): the best shipped one trained on ``profile``
            (:data:`~genscom.schemes.regen.SHIPPED_DECODERS`: ``regen-mini-attr`` for ``mini-attr``,
            ``regen-mini-attr-v5`` for ``mini-attr-v2``). ``None``: no image task. The scheme is offered only when
            the decoder was trained on ``profile``.
        regen_steps: DDIM steps of the image decoder (``None``: the decoder's own default).
        regen_candidates: pictures the receiver draws per item, keeping the one its own image tower reads as
            what it received (best-of-N, :mod:`genscom.generation.rerank`; 1: one draw). N x the drawing time,
            no extra channel uses; at most 16.
    """

    profile: str = "mini-attr"
    gallery_size: int = 24
    seed: int = 0
    num_frames: int = 8
    max_side: int = 128
    max_upload_mb: float = 20.0
    mcs: str = "qpsk-1/2"
    jpeg_quality: int = 50
    h264_crf: int = 28
    results_path: str = DEFAULT_RESULTS
    agent_card: str | None = None
    request_timeout_s: float = 120.0
    max_channel_uses: int = 1 << 20  # ~1 M: an 8-frame 128 px H.264 clip needs ~0.3 M at qpsk-1/2
    max_message_mb: float = 64.0
    scheme_cache_size: int = 8
    regen_decoder: str | None = DEFAULT_REGEN_DECODER
    regen_steps: int | None = None
    regen_candidates: int = 1

    def __post_init__(self) -> None:
        for name, lo in (("gallery_size", 2), ("num_frames", 1), ("max_side", 16), ("max_channel_uses", 1),
                         ("scheme_cache_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not isinstance(self.max_upload_mb, (int, float)) or not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be a positive number of MB, got {self.max_upload_mb!r}")
        if not isinstance(self.max_message_mb, (int, float)) or not self.max_message_mb > 0:
            raise ValueError(f"max_message_mb must be a positive number of MB, got {self.max_message_mb!r}")
        if not isinstance(self.request_timeout_s, (int, float)) or not self.request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be positive seconds, got {self.request_timeout_s!r}")
        if self.regen_steps is not None and (isinstance(self.regen_steps, bool) or not isinstance(self.regen_steps, int)
                                             or not 1 <= self.regen_steps <= 1000):
            raise ValueError(f"regen_steps must be an integer in [1, 1000] or None, got {self.regen_steps!r}")
        if isinstance(self.regen_candidates, bool) or not isinstance(self.regen_candidates, int) \
                or not 1 <= self.regen_candidates <= MAX_REGEN_CANDIDATES:
            raise ValueError(f"regen_candidates must be an integer in [1, {MAX_REGEN_CANDIDATES}], got "
                             f"{self.regen_candidates!r}")
        if self.regen_decoder is not None and not isinstance(self.regen_decoder, str):
            raise TypeError(f"regen_decoder must be a folder or a name (str) or None, got "
                            f"{type(self.regen_decoder).__name__}")
        from genscom.coding.mcs import get_mcs

        get_mcs(self.mcs)  # raises ValueError listing the MCS names

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1e6)


@dataclass
class TxSettings:
    """What the transmitter panel chose.

    Attributes:
        scheme: semantic scheme name (:func:`semantic_schemes`).
        channel: ``"awgn"``, ``"rayleigh"`` or ``"rician"``.
        snr_db: Es/N0 per complex symbol in dB.
        task: ``"retrieval"``, ``"caption"`` or ``"image regeneration"``.
        knobs: values of the scheme's rate knobs (:meth:`~genscom.schemes.base.Scheme.rate_knobs`),
            ``{knob name: value}``; a missing knob or ``None`` takes its initial value
            (:func:`initial_knob_values`).
        seed: seed of the channel realisation.
    """

    scheme: str = "semantic-analog"
    channel: str = "awgn"
    snr_db: float = 10.0
    task: str = "retrieval"
    knobs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.channel not in CHANNEL_NAMES:
            raise ValueError(f"channel must be one of {', '.join(CHANNEL_NAMES)}, got {self.channel!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not isinstance(self.snr_db, (int, float)) or not math.isfinite(self.snr_db):
            raise ValueError(f"snr_db must be a finite number of dB, got {self.snr_db!r}")
        self.snr_db = float(self.snr_db)
        if not isinstance(self.knobs, dict) or not all(isinstance(k, str) for k in self.knobs):
            raise TypeError(f"knobs must be a dict {{knob name: value}}, got {self.knobs!r}")


# ---------------------------------------------------------------------------- optional parts
def optional_features(config: DemoConfig | None = None) -> dict[str, str | None]:
    """``{feature: None if available else the reason}`` for the adapted and agent schemes and, with ``config``,
    the image decoder of the ``regen`` scheme (``"diffusion"``, :func:`~genscom.demo.regen.regen_unavailable`).

    Importing registers the ``adapted``, ``adapted+mu`` and ``agent`` schemes when their
    modules import cleanly (already-registered schemes are left alone).
    """
    import genscom.schemes  # noqa: F401
    from genscom.schemes.base import SCHEMES

    out: dict[str, str | None] = {}
    for feature, module, names in (("adapted", "genscom.schemes.adapted", ("adapted",)),
                                   ("agent", "genscom.schemes.agent", ("agent",))):
        if all(n in SCHEMES for n in names):
            out[feature] = None
            continue
        try:
            __import__(module)
            out[feature] = None if all(n in SCHEMES for n in names) else f"{module} registers no {names[0]!r} scheme"
        except Exception as exc:  # noqa: BLE001 - a half-finished optional part must not break the demo
            out[feature] = f"not installed ({type(exc).__name__}: {exc})"
    if config is not None:
        from genscom.demo.regen import regen_unavailable

        out["diffusion"] = regen_unavailable(config)
    return out


def semantic_schemes() -> list[str]:
    """Registered schemes that send an embedding (every scheme except the bitstream baselines and
    :data:`PIXEL_SCHEMES`)."""
    from genscom.schemes.base import list_schemes

    optional_features()
    return [n for n in list_schemes() if n not in BASELINE_SCHEMES and n not in PIXEL_SCHEMES]


#: Schemes the demo cannot set up from its own configuration (and never from the sender's settings).
NEEDS_SETUP = {"memory": "the demo has no knowledge-base setting (the receiver never opens one named by a sender)",
               "agent": "needs an agent card (DemoConfig.agent_card / --agent-card)",
               "regen": "needs an image decoder trained on the demo's profile "
                        "(DemoConfig.regen_decoder / --regen-decoder)"}


def offered_schemes(config: DemoConfig) -> list[str]:
    """The schemes the demo offers with ``config``: :func:`semantic_schemes` less those it cannot set up
    (``memory`` always, ``agent`` without an agent card, ``regen`` without an image decoder trained on the
    demo's profile). The receiver accepts only these on the wire."""
    from genscom.demo.regen import regen_unavailable

    names = [n for n in semantic_schemes() if not (n == "memory" or (n == "agent" and not config.agent_card))]
    if "regen" in names and regen_unavailable(config) is not None:
        names.remove("regen")
    return names


def rate_knobs(name: str) -> tuple[RateKnob, ...]:
    """The rate knobs scheme ``name`` declares (:meth:`~genscom.schemes.base.Scheme.rate_knobs`)."""
    return get_scheme_class(name).rate_knobs()


def initial_knob_values(name: str, config: DemoConfig) -> dict[str, Any]:
    """The panel's starting value of each rate knob of ``name``: the knob's default, except that an
    ``mcs`` knob starts at ``config.mcs`` (the MCS the demo's digital links use)."""
    return {k.name: (config.mcs if k.name == "mcs" and config.mcs in k.choices else k.default) for k in rate_knobs(name)}


def own_settings(name: str, config: DemoConfig) -> dict[str, Any]:
    """Constructor keywords each end takes from its *own* configuration and that never cross the wire (the
    ``regen`` scheme's image decoder, its steps and seed): :func:`scheme_settings` plus these build the scheme."""
    if name == "regen":
        from genscom.demo.regen import regen_settings

        return regen_settings(config)
    if name in ("adapted", "adapted+mu"):  # the shipped adapter trained for the demo's profile, when there is one
        from genscom.assets import list_adapters

        adapter = f"{config.profile}-k192"
        return {"adapter": adapter} if adapter in list_adapters() else {}
    return {}


def demo_settings(name: str, *, settings: TxSettings, config: DemoConfig) -> dict[str, Any]:
    """Constructor keywords the demo itself sets (not rate knobs): the ``agent`` scheme's card and captions."""
    if name == "agent":
        return {"card": config.agent_card, "captions": settings.task == "caption"}
    return {}


def scheme_settings(name: str, *, settings: TxSettings, config: DemoConfig) -> dict[str, Any]:
    """Constructor keywords of scheme ``name`` for the panel's choices (JSON-able: they cross the wire).

    The rate knobs' values (``settings.knobs`` over :func:`initial_knob_values`, checked by
    :meth:`~genscom.schemes.base.Scheme.rate_kwargs`) plus :func:`demo_settings`.
    Unknown knob names or bad values raise ``ValueError`` naming the knob.
    """
    values = initial_knob_values(name, config)
    values.update({k: v for k, v in settings.knobs.items() if v is not None})
    for knob in rate_knobs(name):  # the budget cap: a knob without its own maximum stays within it
        v = values.get(knob.name)
        if knob.kind in ("int", "float") and knob.max is None and isinstance(v, (int, float)) \
                and not isinstance(v, bool) and v > config.max_channel_uses:
            raise ValueError(f"rate knob {knob.name!r} of {name} = {v} exceeds the demo's budget of "
                             f"{config.max_channel_uses} channel uses per item (DemoConfig.max_channel_uses)")
    return {**get_scheme_class(name).rate_kwargs(values), **demo_settings(name, settings=settings, config=config)}


def baseline_for(frames: torch.Tensor, config: DemoConfig) -> tuple[str, dict[str, Any]]:
    """H.264 + LDPC for clips (``T > 1``), JPEG + LDPC for images."""
    if frames.shape[0] > 1:
        return "h264-ldpc", {"crf": config.h264_crf, "mcs": config.mcs, "fidelity": "full"}
    return "jpeg-ldpc", {"quality": config.jpeg_quality, "mcs": config.mcs, "fidelity": "full"}


__all__ = ['BASELINE_SCHEMES', 'CHANNEL_NAMES', 'DEFAULT_REGEN_DECODER', 'DEFAULT_RESULTS', 'DemoConfig', 'NEEDS_SETUP', 'PIXEL_SCHEMES', 'TASKS', 'Task', 'TxSettings', 'baseline_for', 'demo_settings', 'initial_knob_values', 'offered_schemes', 'optional_features', 'own_settings', 'rate_knobs', 'scheme_settings', 'semantic_schemes']
