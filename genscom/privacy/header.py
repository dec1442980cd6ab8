"""A short authenticated header per analog item: binds the item id, its nonce and its symbol count.

An analog payload cannot carry an AEAD tag (the symbols arrive noisy), so a scrambled item travels with
a small *digital* header (sent with a robust MCS like other side information, and counted):

    header = sent nonce bits || tag,
    tag = HMAC-SHA256(header key, "genscom header" || full nonce || n_symbols || item id)[:tag_bits]

The receiver verifies the tag before it uses the nonce to unscramble; a header that does not verify,
or one made for another item id, another session or another symbol count, raises
:class:`~genscom.privacy.errors.AuthenticationFailed`. The header does **not** authenticate the analog
symbols themselves (nothing can, under noise): see ``docs/security.md``.

How much of the nonce is sent (:attr:`HeaderConfig.nonce_bits`):

* ``96`` (default): the whole nonce; each header stands alone.
* ``8..64``: only the low bits of the nonce's counter, as SRTP sends a 16-bit sequence number. The
  receiver passes ``expected_counter`` (the counter after the last item it accepted) and the counter
  closest to it with those low bits is taken; the tag covers the full nonce, so a wrong guess fails
  authentication instead of unscrambling with a wrong key stream.
* ``0``: nothing; the receiver's ``expected_counter`` is the counter (items strictly in order).

Size: :func:`header_bits` = ``nonce_bits + tag_bits``: **160 bits per item** by default (96 + 64), e.g.
80 with ``nonce_bits=16``. At ``qpsk-1/3`` with one short LDPC codeword (``k`` = header bits) 160 bits
cost 240 channel uses and 80 bits 120.

Example:
    >>> headers = ItemHeaders(session)
    >>> nonces, hdrs = headers.issue([3, 4], n_symbols=256)   # sender: nonces for the scrambler, headers to send
    >>> headers.check(hdrs[0], 3, n_symbols=256) == nonces[0] # receiver: the verified nonce
    True
"""

from __future__ import annotations

import hmac as _stdlib_hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from genscom.privacy.errors import AuthenticationFailed, NonceError
from genscom.privacy.ids import ItemId, encode_item_id
from genscom.privacy.session import NONCE_BITS, NONCE_BYTES, LinkSession

_MAC_PREFIX = b"genscom/privacy/v1 header\x00"
_COUNTER_BITS = 64
_NONCE_BITS_ALLOWED = (*range(0, _COUNTER_BITS + 1, 8), NONCE_BITS)  # 0, 8, ..., 64, 96


@dataclass(frozen=True)
class HeaderConfig:
    """Header layout: how many nonce bits are sent, and the tag length (a forged header succeeds with
    probability ``2**-tag_bits`` per attempt)."""

    tag_bits: int = field(default=64, metadata={
        "help": "truncated HMAC-SHA256 tag, a multiple of 8 in [32, 256]; 64 bits stop online forgery"})
    nonce_bits: int = field(default=NONCE_BITS, metadata={
        "help": "96: whole nonce sent; 0..64 (multiple of 8): only the counter's low bits, the receiver "
                "passes expected_counter"})

    def __post_init__(self) -> None:
        if isinstance(self.tag_bits, bool) or not isinstance(self.tag_bits, int) \
                or not 32 <= self.tag_bits <= 256 or self.tag_bits % 8:
            raise ValueError(f"HeaderConfig.tag_bits must be a multiple of 8 in [32, 256], got {self.tag_bits!r}")
        if isinstance(self.nonce_bits, bool) or self.nonce_bits not in _NONCE_BITS_ALLOWED:
            raise ValueError(f"HeaderConfig.nonce_bits must be 96 (whole nonce) or a multiple of 8 in [0, 64] "
                             f"(counter's low bits), got {self.nonce_bits!r}")


def header_bits(config: HeaderConfig | None = None) -> int:
    """Bits of one header: ``nonce_bits + tag_bits`` (96 + 64 = 160 with the default config)."""
    config = HeaderConfig() if config is None else config
    return config.nonce_bits + config.tag_bits


class ItemHeaders:
    """Makes and checks authenticated item headers with the ``header`` subkey of a session.

    Args:
        session: the link session (same key and session id at both ends).
        config: :class:`HeaderConfig` (the same at both ends).
    """

    def __init__(self, session: LinkSession, config: HeaderConfig | None = None) -> None:
        if not isinstance(session, LinkSession):
            raise TypeError(f"session must be a LinkSession, got {type(session).__name__}")
        self.config = HeaderConfig() if config is None else config
        self._session = session
        self._key = session._subkey("header")

    @property
    def size_bits(self) -> int:
        """Bits per header (160 by default)."""
        return header_bits(self.config)

    @property
    def size_bytes(self) -> int:
        """Bytes per header (20 by default)."""
        return self.size_bits // 8

    def make(self, item_id: ItemId, nonce: bytes, *, n_symbols: int) -> bytes:
        """The header of one item whose ``n_symbols`` data symbols are scrambled under ``nonce``."""
        self._session.counter_of(nonce)  # a nonce of this session (raises NonceError otherwise)
        nonce = bytes(nonce)
        sent = nonce[NONCE_BYTES - self.config.nonce_bits // 8:] if self.config.nonce_bits else b""
        return sent + self._tag(item_id, nonce, n_symbols)

    def issue(self, item_ids: Sequence[ItemId], *, n_symbols: int) -> tuple[list[bytes], list[bytes]]:
        """Draw one fresh nonce per item from the session and make its header: ``(nonces, headers)``."""
        nonces = self._session.next_nonces(len(item_ids))
        return nonces, [self.make(i, n, n_symbols=n_symbols) for i, n in zip(item_ids, nonces, strict=True)]

    def check(self, header: bytes, item_id: ItemId, *, n_symbols: int, expected_counter: int | None = None) -> bytes:
        """Verify ``header`` for ``item_id`` and ``n_symbols``; return the item's full 12-byte nonce.

        Args:
            header: the received header bytes.
            item_id: the id the receiver expects for this item.
            n_symbols: the number of data symbols the receiver expects.
            expected_counter: with ``nonce_bits < 96``, the counter the receiver expects (e.g. one past
                the last accepted item's); ignored with the whole nonce sent.

        Raises:
            AuthenticationFailed: wrong length, another session, another id or symbol count, wrong key,
                a counter too far from ``expected_counter``, or any flipped bit. Count the item as a
                failure and do not unscramble it.
        """
        if not isinstance(header, (bytes, bytearray, memoryview)):
            raise TypeError(f"header must be bytes, got {type(header).__name__}")
        header = bytes(header)
        if len(header) != self.size_bytes:
            raise AuthenticationFailed(f"item {item_id!r}: header is {len(header)} bytes, expected {self.size_bytes} "
                                       f"(nonce_bits={self.config.nonce_bits}, tag_bits={self.config.tag_bits}); "
                                       "count the item as a failure")
        split = self.config.nonce_bits // 8
        sent, tag = header[:split], header[split:]
        try:
            nonce = self._full_nonce(sent, expected_counter)
        except NonceError as exc:
            raise AuthenticationFailed(f"item {item_id!r}: {exc}; count the item as a failure") from None
        if not _stdlib_hmac.compare_digest(tag, self._tag(item_id, nonce, n_symbols)):
            raise AuthenticationFailed(
                f"item {item_id!r}: header authentication failed (wrong key, another item id or symbol count, a "
                f"lost-sync counter, or tampering); count the item as a failure, and if every item fails check both "
                f"ends load the same key file (fingerprint {self._session.key_fingerprint} here)")
        return nonce

    def _full_nonce(self, sent: bytes, expected_counter: int | None) -> bytes:
        bits = self.config.nonce_bits
        if bits == NONCE_BITS:
            self._session.counter_of(sent)  # raises NonceError for another session's prefix
            return sent
        if isinstance(expected_counter, bool) or not isinstance(expected_counter, int) or expected_counter < 0:
            raise ValueError(f"expected_counter must be a non-negative integer with nonce_bits={bits} (only the "
                             f"counter's low bits are sent), got {expected_counter!r}; pass one past the last "
                             "accepted item's counter (session.counter_of(nonce) + 1)")
        if bits == 0:
            return self._session.nonce_at(expected_counter)
        span = 1 << bits
        low = int.from_bytes(sent, "big")
        base = expected_counter - expected_counter % span + low
        candidates = [c for c in (base - span, base, base + span) if 0 <= c < 1 << _COUNTER_BITS]
        return self._session.nonce_at(min(candidates, key=lambda c: abs(c - expected_counter)))

    def _tag(self, item_id: ItemId, nonce: bytes, n_symbols: int) -> bytes:
        if isinstance(n_symbols, bool) or not isinstance(n_symbols, int) or n_symbols < 0:
            raise ValueError(f"n_symbols must be a non-negative integer, got {n_symbols!r}")
        mac = crypto_hmac.HMAC(self._key, hashes.SHA256())
        mac.update(_MAC_PREFIX + nonce + n_symbols.to_bytes(8, "big") + encode_item_id(item_id))
        return mac.finalize()[: self.config.tag_bits // 8]

    def __repr__(self) -> str:
        return (f"ItemHeaders(nonce_bits={self.config.nonce_bits}, tag_bits={self.config.tag_bits}, "
                f"session={self._session!r})")


__all__ = ["HeaderConfig", "ItemHeaders", "header_bits"]
