"""Private links: any scheme made private, every cost counted at transmit.

:class:`PrivateScheme` wraps a scheme (``PrivateScheme(create_scheme("h264-ldpc", mcs="adaptive"), key)``) and is
itself a :class:`~genscom.schemes.base.Scheme`: benchmarks and demos send it through the same
``transmit`` / ``deliver`` seam as any other. What it does depends on what the wrapped scheme puts on the air:

* **Digital** (an :class:`~genscom.schemes.base.ItemLinkScheme`: ``digital-embedding``, ``jpeg-ldpc``,
  ``h264-ldpc``): each item's link bytes (:meth:`~genscom.schemes.base.ItemLinkScheme.link_items`) are sealed
  with AES-GCM or ChaCha20-Poly1305 (:class:`~genscom.privacy.aead.ItemCipher`, the item id in the associated
  data): ``nonce || ciphertext || tag``, 224 bits more per item (plus padding to whole bytes). The sealed bytes
  are planned on the wrapped scheme's own link (:func:`~genscom.schemes.digital.plan_link`: the same fixed or
  adaptive MCS rule, from the same fed-back SNR estimate), so the codewords, CRCs and channel uses the
  overhead adds are counted there. At the receiver an item with any failed codeword, or whose seal does not
  open (wrong key, wrong session, a flipped bit), is lost: a counted failure
  (:meth:`~genscom.schemes.base.ItemLinkScheme.receive_items` with ``None``), never decoded from garbage. On
  the calibrated ``"abstract"`` link a failed codeword carries the wrong bits drawn from calibration, so the
  seal of that item fails to open as well: authentication failure follows from the link's failures.
* **Analog** (a scheme whose payload has ``symbols``: ``semantic-analog``, ``adapted``): each item's data
  symbols (:meth:`~genscom.schemes.base.Scheme.sent_symbols`) are scrambled by a keyed unitary
  (:class:`~genscom.privacy.scramble.SymbolScrambler`, default mode ``"mix"``) under a fresh nonce; pilots are
  inserted after it (public, as before). A short authenticated header
  (:class:`~genscom.privacy.header.ItemHeaders`: the nonce's low counter bits and a truncated HMAC tag binding
  the item id, nonce and symbol count; 80 bits by default) goes as side information over its own digital link
  (one LDPC codeword of ``k = header bits`` at ``header_mcs``, calibrated abstraction or full simulation; the
  tag is its check),
  counted in channel uses. The receiver verifies the header, equalises, unscrambles (exactly ``U^H``: AWGN
  statistics unchanged) and hands the result to the wrapped scheme's receiver. An item whose header does not
  verify is flagged in ``auth_failed``; by default (``on_header_failure="expected"``) the receiver unscrambles
  it with the nonce of the counter it expects (items arrive in order), so a header lost at low SNR costs no
  item; with ``"fail"`` it is not unscrambled (its symbols go to the public decoder as received, what an
  eavesdropper gets) and is ``failed``.

**The eavesdropper** is the same wrapper built with another key (``PrivateScheme(inner, other_key,
session_id=legit.session_id)``: session ids are public) or the plain public receiver; it delivers the
legitimate transmitter's payload through its own channel draw at its own SNR.

Costs: :class:`SealedPayload` / :class:`ScrambledPayload` carry ``channel_uses`` (the wrapped scheme's plus the
overhead) and the overhead apart (``overhead_uses``, ``overhead_bits``), all counted at transmit.

Limits: the wrapped scheme's receiver gets the analog symbols with its own side information as sent
(``adapted+mu``'s bitmap link is not re-run); on fading channels the receiver equalises (MMSE) before it
unscrambles and passes the mean effective noise variance on (``mix`` spreads each symbol over the frame).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from genscom.channels.base import Channel, ChannelOutput
from genscom.channels.sensing import LinkFeedback, pass_with_pilots
from genscom.schemes.base import (Delivered, DigitalPayload, ItemLinkScheme, Payload, Scheme, SourceBatch,
                                  expect_payload)

if TYPE_CHECKING:
    from genscom.coding.calibration import CalibrationConfig
    from genscom.privacy.aead import AeadConfig
    from genscom.privacy.header import HeaderConfig
    from genscom.privacy.scramble import ScrambleConfig

DEFAULT_HEADER_MCS = "qpsk-1/3"  # robust, as other side information (the adapted+mu bitmap)


def _default_header() -> HeaderConfig:
    from genscom.privacy.header import HeaderConfig

    return HeaderConfig(nonce_bits=16, tag_bits=64)  # 80 bits: the counter's low 16 bits + a 64-bit tag


def _default_aead() -> AeadConfig:
    from genscom.privacy.aead import AeadConfig

    return AeadConfig()


def _default_scramble() -> ScrambleConfig:
    from genscom.privacy.scramble import ScrambleConfig

    return ScrambleConfig()


@dataclass(frozen=True)
class PrivacyConfig:
    """How :class:`PrivateScheme` protects a scheme (both ends must agree).

    Attributes:
        aead: digital items: :class:`~genscom.privacy.aead.AeadConfig` (``"aes-gcm"`` default).
        scramble: analog items: :class:`~genscom.privacy.scramble.ScrambleConfig` (``"mix"`` default).
        header: analog items' authenticated header: :class:`~genscom.privacy.header.HeaderConfig` (default
            ``nonce_bits=16, tag_bits=64``: 80 bits; the receiver expects consecutive counters).
        header_mcs: MCS of the header's link (one LDPC codeword of ``k`` = header bits).
        header_repeat: send every header symbol this many times, MRC-combined (counted).
        header_fidelity: the header link's ``"abstract"`` calibrated tables (default: fast; the table of
            ``k`` = header bits is calibrated once, about 20 s, and cached), ``"full"`` LDPC + QAM simulation
            (exact, about 2 s per 200 headers on a 2-core CPU) or ``"auto"`` (full for at most 256 codewords).
        calibration: where the header link's table is cached (``None``: the default folder).
        on_header_failure: what the receiver does with an analog item whose header does not verify (lost on
            the link, tampered, another key): ``"expected"`` (default) unscrambles with the nonce of the counter
            it expects (items arrive in order: ``first_counter + i``) and flags the item in ``auth_failed``
            only, so a lost header costs no item; ``"fail"`` does not unscramble and counts the item as
            ``failed``. Either way a receiver without the key gets nothing usable.
    """

    aead: AeadConfig = field(default_factory=_default_aead)
    scramble: ScrambleConfig = field(default_factory=_default_scramble)
    header: HeaderConfig = field(default_factory=_default_header)
    header_mcs: str = field(default=DEFAULT_HEADER_MCS, metadata={"help": "MCS of the analog items' header"})
    header_repeat: int = field(default=1, metadata={"help": "symbol repetitions of the header (counted)"})
    header_fidelity: Literal["full", "abstract", "auto"] = "abstract"
    calibration: CalibrationConfig | None = None
    on_header_failure: Literal["expected", "fail"] = "expected"

    def __post_init__(self) -> None:
        from genscom.coding.mcs import check_repeat, get_mcs
        from genscom.privacy.aead import AeadConfig
        from genscom.privacy.header import HeaderConfig
        from genscom.privacy.scramble import ScrambleConfig

        for name, cls in (("aead", AeadConfig), ("scramble", ScrambleConfig), ("header", HeaderConfig)):
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"PrivacyConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        get_mcs(self.header_mcs)  # unknown names raise, listing the known ones
        check_repeat(self.header_repeat)
        if self.on_header_failure not in ("expected", "fail"):
            raise ValueError(f"PrivacyConfig.on_header_failure must be 'expected' or 'fail', "
                             f"got {self.on_header_failure!r}")
        if self.header_fidelity not in ("full", "abstract", "auto"):
            raise ValueError(f"PrivacyConfig.header_fidelity must be 'full', 'abstract' or 'auto', "
                             f"got {self.header_fidelity!r}")


@dataclass
class SealedPayload(DigitalPayload):
    """A digital payload whose items are sealed (AEAD): ``bits`` are the sealed bytes, ``plans`` their link plans.

    Attributes (besides :class:`~genscom.schemes.base.DigitalPayload`'s):
        inner: the wrapped scheme's payload with its plaintext removed (``bits``/``bit_rows`` ``None``): the
            receiver-known fields its receiver reads (dimension, stream lengths, frame shape).
        item_ids: the id each item is sealed under (its associated data).
        overhead_bits: ``[B]`` bits added per item: nonce + tag + byte padding, and CRCs of extra codewords.
        overhead_uses: ``[B]`` channel uses added per item (``channel_uses`` minus the wrapped scheme's).
    """

    inner: DigitalPayload | None = None
    item_ids: list[Any] = field(default_factory=list)
    overhead_bits: torch.Tensor | None = None
    overhead_uses: torch.Tensor | None = None


@dataclass
class ScrambledPayload(Payload):
    """An analog payload with keyed-scrambled symbols and an authenticated digital header per item.

    Attributes (besides :class:`~genscom.schemes.base.Payload`'s; ``symbols`` are the scrambled ones):
        inner: the wrapped scheme's payload carrying the same scrambled symbols (its other fields are what its
            receiver knows).
        headers: per item, the header bytes sent (:class:`~genscom.privacy.header.ItemHeaders`).
        header_plan: the header link's :class:`~genscom.coding.mcs.LinkPlan` (one codeword per item).
        n_data: ``[B]`` scrambled data symbols per item (each row's leading symbols).
        item_ids: the id each header binds.
        first_counter: the nonce counter of item 0 (item ``i`` has ``first_counter + i``): the receiver's
            expectation from the items it accepted before (public), used with ``nonce_bits < 96``.
        overhead_bits, overhead_uses: ``[B]`` header bits and their channel uses.
    """

    inner: Payload | None = None
    headers: list[bytes] = field(default_factory=list)
    header_plan: Any = None
    n_data: torch.Tensor | None = None
    item_ids: list[Any] = field(default_factory=list)
    first_counter: int = 0
    overhead_bits: torch.Tensor | None = None
    overhead_uses: torch.Tensor | None = None


@dataclass
class PrivateDelivered(Delivered):
    """:class:`~genscom.schemes.base.Delivered` of a private link, with the authentication verdict.

    Attributes (besides ``Delivered``'s; ``failed`` includes every item below):
        auth_failed: ``[B]`` bool, items whose seal or header did not verify (wrong key, tampering, link errors).
        link_failed: ``[B]`` bool, items with a failed codeword (CRC) on the digital link (all False for analog).
    """

    auth_failed: torch.Tensor | None = None
    link_failed: torch.Tensor | None = None


class PrivateScheme(Scheme):
    """``inner`` made private with ``key`` (module docstring): AEAD for digital payloads, keyed scrambling plus an
    authenticated header for analog ones.

    Args:
        inner: the scheme to protect (an :class:`~genscom.schemes.base.ItemLinkScheme`, or one that sends analog
            ``symbols``).
        key: the long-term :class:`~genscom.privacy.keys.LinkKey` (``LinkKey.from_file(path)``).
        session_id: the public session id; ``None`` draws a fresh one (a sender). A receiver passes the
            sender's :attr:`session_id`.
        config: :class:`PrivacyConfig`.

    Example:
        >>> tx = PrivateScheme(create_scheme("semantic-analog"), LinkKey.from_file("link.key"))
        >>> p = tx.transmit(batch)                                # scrambled symbols + 80-bit headers (counted)
        >>> rx = PrivateScheme(create_scheme("semantic-analog"), LinkKey.from_file("link.key"), session_id=tx.session_id)
        >>> rx.deliver(p, AWGNChannel(), 10.0).embeddings        # as the plain scheme's, in distribution
    """

    def __init__(self, inner: Scheme, key: Any, *, session_id: bytes | None = None,
                 config: PrivacyConfig | None = None) -> None:
        from genscom.coding.link import DigitalLink
        from genscom.privacy import ItemCipher, ItemHeaders, LinkKey, LinkSession, SymbolScrambler, header_bits

        if not isinstance(inner, Scheme) or isinstance(inner, PrivateScheme):
            raise TypeError(f"inner must be a (non-private) Scheme, got {type(inner).__name__}; build it with "
                            "create_scheme(name, ...)")
        if not isinstance(key, LinkKey):
            raise TypeError(f"key must be a LinkKey (LinkKey.from_file(path) or LinkKey.generate()), got "
                            f"{type(key).__name__}")
        self.config = PrivacyConfig() if config is None else config
        if not isinstance(self.config, PrivacyConfig):
            raise TypeError(f"config must be a PrivacyConfig, got {type(self.config).__name__}")
        self.inner = inner
        self.name = f"{inner.name}-private"
        self.adapts = inner.adapts
        self._session = LinkSession(key, session_id)
        self._cipher = ItemCipher(self._session, self.config.aead)
        self._scrambler = SymbolScrambler(self._session, self.config.scramble)
        self._headers = ItemHeaders(self._session, self.config.header)
        self.header_bits = header_bits(self.config.header)
        # the analog items' header link: one short codeword per item; no CRC (the header's tag checks it)
        self.header_link = DigitalLink(self.config.header_mcs, k=max(12, self.header_bits),
                                       fidelity=self.config.header_fidelity, crc=False,
                                       repeat=self.config.header_repeat, calibration=self.config.calibration)

    @property
    def session_id(self) -> bytes:
        """The public session id (a receiver builds its wrapper with it)."""
        return self._session.session_id

    # -- transmit ----------------------------------------------------------------------------------------
    def transmit(self, batch: SourceBatch, *, sensing: LinkFeedback | None = None,
                 generator: torch.Generator | None = None) -> Payload:
        payload = self.inner.transmit(batch, sensing=sensing, generator=generator)
        ids = self._item_ids(batch, len(payload.channel_uses))
        if isinstance(payload, DigitalPayload):
            return self._seal(payload, ids, sensing)
        if payload.symbols is not None:
            return self._scramble(payload, ids)
        raise TypeError(f"scheme {self.inner.name!r} sends a {type(payload).__name__} with neither a digital link "
                        "nor analog symbols; PrivateScheme protects ItemLinkScheme (digital) and analog schemes")

    @staticmethod
    def _item_ids(batch: SourceBatch, b: int) -> list[Any]:
        if batch.ids is None:
            return list(range(b))
        if len(batch.ids) != b:
            raise ValueError(f"batch.ids has {len(batch.ids)} ids for {b} items")
        return list(batch.ids)

    def _seal(self, payload: DigitalPayload, ids: list[Any], sensing: LinkFeedback | None) -> SealedPayload:
        from genscom.coding.mcs import CRC_BITS
        from genscom.schemes.digital import plan_link

        if not isinstance(self.inner, ItemLinkScheme):
            raise TypeError(f"scheme {self.inner.name!r} sends a DigitalPayload but is not an ItemLinkScheme: it must "
                            "say which bytes each item puts on the link (link_items / receive_items)")
        plain = self.inner.link_items(payload)
        sealed = self._cipher.seal_many(plain, ids)
        link = self.inner.link
        plans, uses, fb_bits = plan_link(link, [8 * len(s) for s in sealed], sensing)
        crc = CRC_BITS if link.crc else 0
        extra_cw = torch.tensor([p.n_codewords - q.n_codewords for p, q in zip(plans, payload.plans)],
                                dtype=torch.int64)
        overhead_bits = torch.tensor([8 * (len(s) - len(m)) for s, m in zip(sealed, plain)],
                                     dtype=torch.int64) + crc * extra_cw
        overhead_uses = uses - payload.channel_uses
        inner = dataclasses.replace(payload, bits=None, bit_rows=None)  # no plaintext on the private payload
        return SealedPayload(symbols=None, channel_uses=uses, side_bits=payload.side_bits + overhead_bits,
                             bits=sealed, pilots=plans[0].pilots if plans else None, plans=plans,
                             source_bits=payload.source_bits, bit_rows=None, inner=inner, item_ids=ids,
                             overhead_bits=overhead_bits, overhead_uses=overhead_uses)

    def _scramble(self, payload: Payload, ids: list[Any]) -> ScrambledPayload:
        assert payload.symbols is not None
        b = len(payload.channel_uses)
        n_data = self.inner.sent_symbols(payload).to(torch.int64)
        first = self._session.items_issued
        nonces = self._session.next_nonces(b)
        headers = [self._headers.make(i, nonce, n_symbols=int(n)) for i, nonce, n in zip(ids, nonces, n_data.tolist())]
        sym = payload.symbols.clone()
        for n, idx in _groups(n_data):
            sym[idx, :n] = self._scrambler.scramble(payload.symbols[idx, :n], [nonces[j] for j in idx.tolist()])
        plan = self.header_link.plan(self.header_bits, pilots=payload.pilots)
        overhead_uses = torch.full((b,), plan.channel_uses, dtype=torch.int64)
        overhead_bits = torch.full((b,), self.header_bits, dtype=torch.int64)
        return ScrambledPayload(symbols=sym, channel_uses=payload.channel_uses + overhead_uses,
                                side_bits=payload.side_bits + overhead_bits, pilots=payload.pilots,
                                inner=dataclasses.replace(payload, symbols=sym), headers=headers, header_plan=plan,
                                n_data=n_data, item_ids=ids, first_counter=first, overhead_bits=overhead_bits,
                                overhead_uses=overhead_uses)

    # -- receive -----------------------------------------------------------------------------------------
    def deliver(self, payload: Payload, channel: Channel | None, snr_db: float | None, *,
                generator: torch.Generator | None = None) -> Delivered:
        noiseless = channel is None or snr_db is None
        if isinstance(payload, SealedPayload):
            if noiseless:
                return self._open(payload, list(payload.bits or []), torch.zeros(len(payload.item_ids), dtype=torch.bool))
            res = self.inner.link.send_bytes(payload.bits or [], float(snr_db), channel=channel,  # type: ignore[attr-defined]
                                             generator=generator, plans=payload.plans)
            return self._open(payload, list(res.received or []), res.failed)
        payload = expect_payload(payload, ScrambledPayload, self.name)
        if noiseless:
            return self._unscramble(None, payload, payload.headers)
        # the analog symbols first (the same channel draw as the plain scheme's from the same generator), then the
        # headers over their own link
        received = pass_with_pilots(payload.symbols, channel, float(snr_db), payload.pilots, generator=generator)
        res = self.header_link.send_bytes(payload.headers, float(snr_db), channel=channel, generator=generator,
                                          plans=[payload.header_plan] * len(payload.headers))
        return self._unscramble(received, payload, list(res.received or []))

    def receive(self, received: ChannelOutput | None, payload: Payload, *,
                generator: torch.Generator | None = None) -> Delivered:
        """Receive with the side information (sealed bytes of a digital payload, analog headers) as sent: the
        noiseless link of the digital part; :meth:`deliver` runs it through the channel."""
        if isinstance(payload, SealedPayload):
            return self._open(payload, list(payload.bits or []), torch.zeros(len(payload.item_ids), dtype=torch.bool))
        payload = expect_payload(payload, ScrambledPayload, self.name)
        return self._unscramble(received, payload, payload.headers)

    def _open(self, payload: SealedPayload, received: list[bytes], link_failed: torch.Tensor) -> PrivateDelivered:
        from genscom.privacy.errors import AuthenticationFailed

        assert isinstance(self.inner, ItemLinkScheme) and payload.inner is not None
        link_failed = link_failed.to(torch.bool).reshape(-1)
        auth_failed = torch.zeros(len(received), dtype=torch.bool)
        items: list[bytes | None] = []
        for i, (data, item_id) in enumerate(zip(received, payload.item_ids, strict=True)):
            try:
                plain = self._cipher.open(data, item_id)
            except AuthenticationFailed:
                auth_failed[i] = True
                plain = None
            items.append(None if bool(link_failed[i]) else plain)
        got = self.inner.receive_items(payload.inner, items)
        return PrivateDelivered(embeddings=got.embeddings, frames=got.frames,
                                failed=got.failed | link_failed | auth_failed, channel_uses=payload.channel_uses,
                                extras=got.extras, auth_failed=auth_failed, link_failed=link_failed)

    def _unscramble(self, received: ChannelOutput | None, payload: ScrambledPayload,
                    headers: list[bytes]) -> PrivateDelivered:
        from genscom.channels.fading import equalize
        from genscom.privacy.errors import AuthenticationFailed

        assert payload.symbols is not None and payload.n_data is not None and payload.inner is not None
        b = len(payload.item_ids)
        nonces: list[bytes | None] = [None] * b
        auth_failed = torch.zeros(b, dtype=torch.bool)
        for i, (hdr, item_id, n) in enumerate(zip(headers, payload.item_ids, payload.n_data.tolist(), strict=True)):
            try:
                nonces[i] = self._headers.check(hdr, item_id, n_symbols=int(n),
                                                expected_counter=payload.first_counter + i)
            except AuthenticationFailed:
                auth_failed[i] = True
                if self.config.on_header_failure == "expected":  # the nonce of the counter this receiver expects
                    nonces[i] = self._session.nonce_at(payload.first_counter + i)
        ok = torch.tensor([n is not None for n in nonces], dtype=torch.bool)  # items it unscrambles
        if received is None:
            y, out = payload.symbols, None
        elif received.h is None:  # AWGN: U^H (U x + n) = x + U^H n, the same noise statistics
            y, out = received.y, received
        else:  # fading: equalise at the scrambled positions, then unscramble; the noise is spread by the mix
            y, nv = equalize(received.y, received.h, received.noise_var, "mmse")
            nv = torch.as_tensor(nv, dtype=received.y.real.dtype).expand(y.shape)
            out = ChannelOutput(y=y, h=None, noise_var=nv.mean(dim=-1, keepdim=True), snr_db=received.snr_db,
                                channel=received.channel)
        x = y.clone()
        for n, idx in _groups(payload.n_data, ok):
            x[idx, :n] = self._scrambler.unscramble(y[idx, :n], [nonces[j] for j in idx.tolist()])  # type: ignore[misc]
        if out is None:
            got = self.inner.receive(None, dataclasses.replace(payload.inner, symbols=x))
        else:
            got = self.inner.receive(dataclasses.replace(out, y=x), payload.inner)
        return PrivateDelivered(embeddings=got.embeddings, frames=got.frames, failed=got.failed | ~ok,
                                channel_uses=payload.channel_uses, extras=got.extras, auth_failed=auth_failed,
                                link_failed=torch.zeros(b, dtype=torch.bool))

    def sent_symbols(self, payload: Payload) -> torch.Tensor:
        if isinstance(payload, ScrambledPayload) and payload.n_data is not None:
            return payload.n_data
        return super().sent_symbols(payload)


def _groups(n_data: torch.Tensor, mask: torch.Tensor | None = None) -> list[tuple[int, torch.Tensor]]:
    """``[(n, item indices)]``: items (within ``mask``) with the same number ``n > 0`` of data symbols."""
    keep = torch.ones_like(n_data, dtype=torch.bool) if mask is None else mask
    out = []
    for n in sorted(set(n_data[keep].tolist())):
        if n > 0:
            out.append((int(n), torch.nonzero(keep & (n_data == n)).flatten()))
    return out


__all__ = ["PrivacyConfig", "PrivateDelivered", "PrivateScheme", "ScrambledPayload", "SealedPayload"]
