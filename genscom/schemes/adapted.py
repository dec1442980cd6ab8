"""Learned channel adaptation as schemes: ``adapted`` (k' symbols) and ``adapted+mu`` (scalable extraction).

``adapted``: the trained :class:`~genscom.adaptation.adapter.ChannelAdapter` sends the
first ``k`` of its symbols (any ``k`` up to the adapter's; no side information). Name
``adapted-k{k}``.

``adapted+mu``: scalable extraction. Each symbol group is sent iff its importance is
``>= mu``; with a ``budget`` (channel uses per item), ``mu`` is raised per item until
``group_size * groups sent + bitmap channel uses <= budget``
(:func:`genscom.adaptation.extraction.budget_mu`). The bitmap is side information sent
through the real digital link (:class:`genscom.coding.link.DigitalLink`, LDPC + QAM at
``side_mcs``, one codeword of ``max(12, G)`` bits); a bitmap that arrives wrong puts
the received symbols at the wrong positions, as it would. Names ``adapted+mu-mu{mu}`` or
``adapted+mu-b{budget}``. Measured consequence: the 12-bit bitmap's short LDPC codeword (k = 12,
qpsk-1/3) fails often below about 0 dB (AWGN) / 5 dB (Rayleigh, coherence 16), and then
``adapted+mu`` loses most of its accuracy (``Delivered.failed`` flags those items); at low SNR
protect the bitmap with ``side_repeat`` (symbol repetition + MRC, counted), use ``adapted`` (prefix
rates, no side information), or ``side_link="ideal"`` for the error-free-side-information
assumption of the scalable-extraction literature.

Sensing: :meth:`transmit` encodes for the SNR the receiver fed back
(:class:`~genscom.channels.sensing.LinkFeedback`; its bits are counted as side information and
channel uses) or, without feedback, at ``design_snr_db``. On fading channels the frame carries
pilots (counted) and the receiver decodes with their estimates of ``h`` and the SNR; with
``csi="perfect"`` feedback (a labelled upper bound) it uses the true ``h``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from genscom.adaptation import extraction as X
from genscom.adaptation.adapter import ChannelAdapter
from genscom.channels.base import Channel, ChannelOutput
from genscom.channels.sensing import LinkFeedback, pass_with_pilots
from genscom.schemes.base import (Delivered, Payload, RateKnob, Scheme, SourceBatch, expect_payload, feedback_bits,
                                  frame_uses, register_scheme)

if TYPE_CHECKING:
    from genscom.coding.calibration import CalibrationConfig
    from genscom.coding.link import DigitalLink

DEFAULT_ADAPTER = "mini-k192"


def resolve_adapter(adapter: str | Path | ChannelAdapter, device: str | torch.device = "cpu") -> ChannelAdapter:
    """An adapter object, a folder path, or a name on the adapter search path (:mod:`genscom.assets`)
    -> a loaded :class:`ChannelAdapter`."""
    from genscom.pretrained import resolve_pretrained

    return resolve_pretrained(adapter, ChannelAdapter, what="adapter", device=device,
                              train_command="genscom train adapter")


@dataclass
class AdaptedPayload(Payload):
    """What the adapter's transmitter sends and the receiver may know.

    Attributes (besides :class:`Payload`'s): ``symbols`` are each item's sent symbols, compacted, then zeros;
    ``keep`` ``[B, k]`` bool the positions sent (a prefix by convention, or the extraction bitmap's groups:
    side information on the air); ``keep_groups`` ``[B, G]`` the bitmap itself; ``n_sent`` ``[B]`` data symbols;
    ``snr_db`` the SNR the encoder was conditioned on (the fed-back value, known to both ends); ``mu`` ``[B]``
    the extraction thresholds used (diagnostic, ``None`` for prefixes).
    """

    keep: torch.Tensor | None = None
    keep_groups: torch.Tensor | None = None
    n_sent: torch.Tensor | None = None
    snr_db: float = 0.0
    mu: torch.Tensor | None = None


class _AdaptedBase(Scheme):
    adapts = True

    def __init__(self, *, adapter: str | Path | ChannelAdapter = DEFAULT_ADAPTER, design_snr_db: float = 5.0,
                 sensing: bool = True, equalizer: Literal["zf", "mmse"] = "mmse",
                 device: str | torch.device = "cpu") -> None:
        if equalizer not in ("zf", "mmse"):
            raise ValueError(f"equalizer must be 'zf' or 'mmse', got {equalizer!r}")
        if not isinstance(design_snr_db, (int, float)) or not math.isfinite(design_snr_db):
            raise ValueError(f"design_snr_db must be a finite number of dB, got {design_snr_db!r}")
        self.adapter = resolve_adapter(adapter, device)
        self.design_snr_db = float(design_snr_db)
        self.sensing = bool(sensing)
        self.equalizer = equalizer
        self.device = torch.device(device)

    @property
    def k_max(self) -> int:
        return self.adapter.config.k

    # subclasses: which symbols to send, and the side information
    def _select(self, importance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:  # pragma: no cover
        """Which symbols (``[B, k]``) or groups (``[B, G]``) to send, and the thresholds ``mu`` ``[B]`` (or ``None``)."""
        raise NotImplementedError

    def _side_uses(self) -> int:
        return 0

    def _embeddings(self, batch: SourceBatch) -> torch.Tensor:
        if batch.embeddings is None:
            raise ValueError(f"scheme {self.name!r} sends embeddings; build the SourceBatch with embeddings=[B, d]")
        return batch.embeddings.float()

    @torch.no_grad()
    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> AdaptedPayload:
        """Encode for the fed-back SNR (``design_snr_db`` without one, or with ``sensing=False``).

        ``symbols`` ``[B, n_max]`` are each item's sent symbols then zeros; ``channel_uses`` count data,
        pilots, the bitmap (``adapted+mu``) and the feedback."""
        emb = self._embeddings(batch)
        use_feedback = self.sensing and sensing is not None and sensing.snr_db is not None
        snr_db = float(sensing.snr_db) if use_feedback else self.design_snr_db  # type: ignore[union-attr]
        ad = self.adapter
        z, importance = ad.encode(emb.to(self.device), snr_db)
        keep_g, mu = self._select(importance)
        keep = keep_g if keep_g.shape[1] == ad.config.k else X.expand_groups(keep_g, ad.config.group_size)
        x = ad.normalize(z, keep)
        x_c, _, _ = X.compact(x, keep)
        n_sent = keep.sum(dim=-1).to(torch.int64).cpu()
        b = len(emb)
        side_bits = torch.full((b,), self._side_bits(), dtype=torch.int64)
        uses = frame_uses(n_sent, sensing, feedback=use_feedback) + self._side_uses()
        if use_feedback:
            side_bits = side_bits + feedback_bits(b, sensing)
        return AdaptedPayload(symbols=x_c, channel_uses=uses, side_bits=side_bits,
                              pilots=None if sensing is None else sensing.pilot_layout(), keep=keep,
                              keep_groups=keep_g, n_sent=n_sent, snr_db=snr_db,
                              mu=None if mu is None else mu.cpu())

    def _side_bits(self) -> int:
        return 0

    def sent_symbols(self, payload: Payload) -> torch.Tensor:
        """``[B]``: each item's ``n_sent`` data symbols (its row's leading symbols; the rest are unsent zeros)."""
        payload = expect_payload(payload, AdaptedPayload, self.name)
        assert payload.n_sent is not None  # always set by transmit
        return payload.n_sent.to(torch.int64).cpu()

    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        payload = expect_payload(payload, AdaptedPayload, self.name)
        if channel is None or snr_db is None:
            return self.receive(None, payload)
        keep_rx, side_failed = self._side_link(payload, channel, float(snr_db), generator)
        received = pass_with_pilots(payload.symbols, channel, float(snr_db), payload.pilots, generator=generator)
        return self._decode(received, payload, keep_rx, side_failed)

    def _side_link(self, payload: AdaptedPayload, channel: Channel, snr_db: float,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The positions the receiver believes were sent, and where that belief is wrong (ideal side information here)."""
        assert payload.keep is not None
        return payload.keep, torch.zeros(len(payload.keep), dtype=torch.bool)

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Decode with the side information as sent (the bitmap link is run by :meth:`deliver`)."""
        payload = expect_payload(payload, AdaptedPayload, self.name)
        assert payload.keep is not None
        return self._decode(received, payload, payload.keep, torch.zeros(len(payload.keep), dtype=torch.bool))

    @torch.no_grad()
    def _decode(self, received: ChannelOutput | None, payload: AdaptedPayload, keep_rx: torch.Tensor,
                side_failed: torch.Tensor) -> Delivered:
        from genscom.channels.fading import equalize

        ad = self.adapter
        k = ad.config.k
        keep_rx = keep_rx.to(self.device)
        n_sent = payload.n_sent.to(self.device)  # type: ignore[union-attr]
        if received is None:
            stream, gain_c, snr = payload.symbols, None, ad.config.snr_range_db[1]
        else:
            stream, _ = equalize(received.y, received.h, received.noise_var, self.equalizer)
            gain_c = None if received.h is None else received.h.abs()
            # the receiver's SNR: its pilot estimate, else (AWGN) the value it fed back itself
            snr = received.snr_db if payload.pilots is not None else torch.as_tensor(payload.snr_db)
        got = X.received_mask(keep_rx, n_sent)  # marked positions that a received symbol fills
        x_hat = X.uncompact(stream.to(self.device), keep_rx, k)
        gain = None if gain_c is None else X.uncompact(gain_c.to(self.device), keep_rx, k)
        emb = ad.decode(x_hat, snr_db=snr, keep=got, gain=gain).cpu()
        return Delivered(embeddings=emb, frames=None, failed=side_failed.cpu(), channel_uses=payload.channel_uses,
                         extras={"n_sent": payload.n_sent, "mu": payload.mu})


@register_scheme("adapted")
class AdaptedScheme(_AdaptedBase):
    """The learned adapter at ``k`` channel uses per item (a prefix of its symbols; default all).

    Args:
        adapter: a :class:`ChannelAdapter`, a folder, or an adapter name (:mod:`genscom.assets`; default ``mini-k192``).
        k: channel uses per item, ``1 <= k <= adapter k`` (``None``: the adapter's ``k``).
        design_snr_db: SNR the transmitter assumes without sensing (``transmit``).
        sensing: encode for the fed-back SNR estimate (``False``: always at ``design_snr_db``, no feedback counted).
        equalizer: ``"mmse"`` (default) or ``"zf"``, with the receiver's CSI (pilot estimates on fading).
    """

    name = "adapted"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("k", "int", default=None, min=1,
                         help="channel uses per item: the first k of the adapter's symbols (empty: all of them)"),)

    def __init__(self, *, adapter: str | Path | ChannelAdapter = DEFAULT_ADAPTER, k: int | None = None,
                 design_snr_db: float = 5.0, sensing: bool = True, equalizer: Literal["zf", "mmse"] = "mmse",
                 device: str | torch.device = "cpu") -> None:
        super().__init__(adapter=adapter, design_snr_db=design_snr_db, sensing=sensing, equalizer=equalizer,
                         device=device)
        k = self.k_max if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.k_max:
            raise ValueError(f"k must be an integer in 1..{self.k_max} (channel uses; the adapter's k is "
                             f"{self.k_max}), got {k!r}")
        self.k = k
        self.name = f"adapted-k{k}"

    def _select(self, importance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return X.prefix_keep(self.k, self.k_max, batch=len(importance), device=importance.device), None


@register_scheme("adapted+mu")
class AdaptedMuScheme(_AdaptedBase):
    """Scalable extraction with the learned adapter: threshold ``mu`` or a channel-use ``budget``.

    Args:
        mu: importance threshold in ``[0, 1]`` (groups with importance ``>= mu`` are sent).
        budget: channel uses per item (data + bitmap); ``mu`` is searched per item. Give ``mu`` or ``budget``.
        side_mcs: MCS of the bitmap's digital link (default ``"qpsk-1/3"``).
        side_link: ``"full"``: the bitmap goes through LDPC + QAM over the same channel (errors possible);
            ``"ideal"``: it is counted but assumed error-free.
        side_repeat: send each bitmap symbol this many times, MRC-combined (``side_repeat`` x its channel
            uses for ``10 log10(side_repeat)`` dB on AWGN); names get a ``-r{side_repeat}`` suffix.
        calibration: where and how the bitmap link's tables are calibrated (its ``fidelity`` is ``"auto"``:
            calls with more than 256 bitmaps use the calibrated abstraction); ``None``: the default folder,
            :func:`genscom.coding.calibration.default_cache_dir`.
        (other arguments as :class:`AdaptedScheme`)

    The bitmap's :class:`~genscom.coding.link.DigitalLink` is built once, here.

    Raises ``ValueError`` when the budget is smaller than the bitmap's channel uses.
    """

    name = "adapted+mu"

    @classmethod
    def rate_knobs(cls) -> tuple[RateKnob, ...]:
        return (RateKnob("mu", "float", default=0.5, min=0.0, max=1.0, step=0.05,
                         help="importance threshold: symbol groups with importance >= mu are sent (higher: fewer)"),
                RateKnob("budget", "int", default=None, min=1, replaces=("mu",),
                         help="channel uses per item incl. the bitmap; mu is searched per item (replaces mu)"),
                RateKnob("side_repeat", "int", default=1, min=1, max=64,
                         help="send each bitmap symbol this many times (more side channel uses, sturdier bitmap)"))

    def __init__(self, *, adapter: str | Path | ChannelAdapter = DEFAULT_ADAPTER, mu: float | None = None,
                 budget: int | None = None, side_mcs: str = X.DEFAULT_SIDE_MCS,
                 side_link: Literal["full", "ideal"] = "full", side_repeat: int = 1, design_snr_db: float = 5.0,
                 sensing: bool = True,
                 equalizer: Literal["zf", "mmse"] = "mmse", device: str | torch.device = "cpu",
                 calibration: CalibrationConfig | None = None) -> None:
        super().__init__(adapter=adapter, design_snr_db=design_snr_db, sensing=sensing, equalizer=equalizer,
                         device=device)
        if (mu is None) == (budget is None):
            raise ValueError(f"give exactly one of mu (threshold in [0, 1]) or budget (channel uses), "
                             f"got mu={mu!r}, budget={budget!r}")
        if side_link not in ("full", "ideal"):
            raise ValueError(f"side_link must be 'full' or 'ideal', got {side_link!r}")
        from genscom.coding.link import DigitalLink
        from genscom.coding.mcs import check_repeat, get_mcs

        get_mcs(side_mcs)  # validates the name
        self.side_mcs = side_mcs
        self.side_link = side_link
        self.side_repeat = check_repeat(side_repeat)
        self.n_groups = self.adapter.config.n_groups
        self.link: DigitalLink | None = None if side_link == "ideal" else DigitalLink(
            side_mcs, k=X.bitmap_ldpc_k(self.n_groups), fidelity="auto", repeat=self.side_repeat,
            calibration=calibration)
        self.side_uses = X.side_channel_uses(self.n_groups, side_mcs, repeat=self.side_repeat)
        suffix = f"-r{self.side_repeat}" if self.side_repeat > 1 else ""
        if mu is not None:
            self.mu: float | None = X.check_mu(mu)
            self.budget: int | None = None
            self.name = f"adapted+mu-mu{self.mu:g}{suffix}"
        else:
            if isinstance(budget, bool) or not isinstance(budget, int):
                raise ValueError(f"budget must be an integer number of channel uses per item, got {budget!r}")
            if budget < self.side_uses:
                raise ValueError(f"budget={budget} channel uses is smaller than the side information: the "
                                 f"{self.n_groups}-bit bitmap costs {self.side_uses} channel uses at {side_mcs}; "
                                 f"use budget >= {self.side_uses}")
            self.mu, self.budget = None, budget
            self.name = f"adapted+mu-b{budget}{suffix}"

    def _side_uses(self) -> int:
        return self.side_uses

    def _side_bits(self) -> int:
        return self.n_groups

    def _select(self, importance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        gs = self.adapter.config.group_size
        if self.budget is not None:
            mu = X.budget_mu(importance, self.budget, group_size=gs, side_uses=self.side_uses)
        else:
            mu = torch.full((len(importance),), float(self.mu), device=importance.device)
        return X.threshold_keep(importance, mu), mu

    def _side_link(self, payload: AdaptedPayload, channel: Channel, snr_db: float,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The bitmap through its LDPC link: the received keep mask, and the items whose bitmap arrived wrong."""
        keep_g = payload.keep_groups
        assert keep_g is not None and payload.keep is not None
        if self.link is None:  # side_link="ideal"
            return payload.keep, torch.zeros(len(keep_g), dtype=torch.bool)
        res = self.link.send_bits(X.bitmap_from_keep(keep_g.cpu()), snr_db, channel=channel, generator=generator)
        uses = torch.as_tensor(res.channel_uses, dtype=torch.int64)
        if bool((uses != self.side_uses).any()):  # pragma: no cover - counted in one place, must agree
            raise RuntimeError(f"bitmap link used {uses.tolist()[:4]} channel uses, expected {self.side_uses}")
        keep_rx_g = X.keep_from_bitmap(res.bits_hat, self.n_groups).to(keep_g.device)
        keep_rx = X.expand_groups(keep_rx_g, self.adapter.config.group_size)
        return keep_rx, (keep_rx_g != keep_g).any(dim=-1).cpu()
