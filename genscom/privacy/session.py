"""A link session: per-session subkeys and the per-item nonce counter.

A session is named by a ``session_id`` (16 random bytes by default; public, sent once when the session
starts, e.g. in the first message or the link set-up). Both ends build ``LinkSession(key, session_id)``
and derive the same independent subkeys from it (HKDF, see :mod:`genscom.privacy.keys`).

**Nonces** are 96 bits: ``prefix (4 bytes) || counter (8 bytes, big-endian)``, where ``prefix`` is
``HKDF(key, "nonce-prefix", session_id)`` and ``counter`` counts the items this session has sealed or
scrambled, from 0. A session never hands out the same nonce twice and raises
:class:`~genscom.privacy.errors.NonceExhaustedError` after ``SessionConfig.max_items``; start a new
session (fresh id) well before. Because the subkeys differ per session, nonces only have to be unique
within one session; the prefix additionally makes nonces of different sessions differ and lets the
receiver reject an item of another session with a precise error.

The sender draws nonces (:meth:`LinkSession.next_nonces`); the receiver reads them from each item's
header or sealed bytes and never draws any. One session object must not be shared by two senders.

Example:
    >>> session = LinkSession(LinkKey.from_file("link.key"))       # sender; send session.session_id once
    >>> rx = LinkSession(LinkKey.from_file("link.key"), session.session_id)   # receiver
    >>> nonces = session.next_nonces(4)                             # 4 x 12 bytes, never repeated
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from genscom.privacy.errors import NonceError, NonceExhaustedError
from genscom.privacy.keys import LinkKey

NONCE_BYTES = 12  # 96-bit nonces (AES-GCM / ChaCha20-Poly1305 standard size)
NONCE_BITS = 8 * NONCE_BYTES
NONCE_PREFIX_BYTES = 4
_COUNTER_BYTES = NONCE_BYTES - NONCE_PREFIX_BYTES  # 64-bit counter
SESSION_ID_BYTES = 16  # default length of a fresh session id (128 bits: collisions negligible)
_SESSION_ID_MIN, _SESSION_ID_MAX = 8, 64


def new_session_id() -> bytes:
    """16 fresh random bytes: the id of a new session (public)."""
    return secrets.token_bytes(SESSION_ID_BYTES)


@dataclass(frozen=True)
class SessionConfig:
    """Limits of one session."""

    max_items: int = field(default=2**32, metadata={
        "help": "nonces handed out before the session refuses (rotate sessions before; the counter has 2**64)"})

    def __post_init__(self) -> None:
        if isinstance(self.max_items, bool) or not isinstance(self.max_items, int) \
                or not 1 <= self.max_items <= 2 ** (8 * _COUNTER_BYTES):
            raise ValueError(f"SessionConfig.max_items must be an integer in [1, 2**64], got {self.max_items!r}")


class LinkSession:
    """Per-session subkeys and a nonce counter, shared (by id) between the two ends of a link.

    Args:
        key: the long-term :class:`~genscom.privacy.keys.LinkKey`.
        session_id: public session id (8 to 64 bytes); ``None`` draws a fresh 16-byte one. Reusing an id
            with the same key and a fresh counter would repeat nonces: only the receiver, or a sender
            resuming with ``start_counter``, may pass an id that was used before.
        config: :class:`SessionConfig`.
        start_counter: first counter value (a sender resuming a session after ``items_issued`` items).
    """

    def __init__(self, key: LinkKey, session_id: bytes | None = None, *, config: SessionConfig | None = None,
                 start_counter: int = 0) -> None:
        if not isinstance(key, LinkKey):
            raise TypeError(f"key must be a LinkKey, got {type(key).__name__}; load one with LinkKey.from_file(path)")
        if session_id is None:
            session_id = new_session_id()
        if not isinstance(session_id, (bytes, bytearray)):
            raise TypeError(f"session_id must be bytes, got {type(session_id).__name__}; "
                            "use new_session_id() or the id received from the sender")
        if not _SESSION_ID_MIN <= len(session_id) <= _SESSION_ID_MAX:
            raise ValueError(f"session_id must be {_SESSION_ID_MIN} to {_SESSION_ID_MAX} bytes, got {len(session_id)}; "
                             "use new_session_id()")
        self.config = SessionConfig() if config is None else config
        if isinstance(start_counter, bool) or not isinstance(start_counter, int) \
                or not 0 <= start_counter <= self.config.max_items:
            raise ValueError(f"start_counter must be an integer in [0, max_items={self.config.max_items}], "
                             f"got {start_counter!r}")
        self._key = key
        self._session_id = bytes(session_id)
        self._prefix = key._derive("nonce-prefix", self._session_id, NONCE_PREFIX_BYTES)
        self._counter = start_counter
        self._lock = threading.Lock()

    @property
    def session_id(self) -> bytes:
        """The public session id (send it to the receiver once)."""
        return self._session_id

    @property
    def key_fingerprint(self) -> str:
        """The long-term key's fingerprint (safe to show)."""
        return self._key.fingerprint

    @property
    def items_issued(self) -> int:
        """Nonces handed out so far (the next counter value)."""
        return self._counter

    def next_nonce(self) -> bytes:
        """One fresh 12-byte nonce."""
        return self.next_nonces(1)[0]

    def next_nonces(self, count: int) -> list[bytes]:
        """``count`` fresh 12-byte nonces, consecutive counters, reserved atomically (thread-safe).

        Raises:
            NonceExhaustedError: fewer than ``count`` nonces are left in this session.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative integer, got {count!r}")
        with self._lock:
            start = self._counter
            if start + count > self.config.max_items:
                raise NonceExhaustedError(
                    f"session {self._session_id.hex()[:8]}... has issued {start} of its {self.config.max_items} "
                    f"nonces and cannot issue {count} more; start a new LinkSession (fresh session id)")
            self._counter = start + count
        return [self._prefix + c.to_bytes(_COUNTER_BYTES, "big") for c in range(start, start + count)]

    def nonce_at(self, counter: int) -> bytes:
        """The nonce with ``counter`` in this session, without reserving it (a receiver rebuilding an implicit
        nonce; senders use :meth:`next_nonces`)."""
        if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter < 2 ** (8 * _COUNTER_BYTES):
            raise NonceError(f"counter must be an integer in [0, 2**64), got {counter!r}")
        return self._prefix + counter.to_bytes(_COUNTER_BYTES, "big")

    def counter_of(self, nonce: bytes) -> int:
        """The counter inside ``nonce``, after checking it is 12 bytes and belongs to this session.

        Raises:
            NonceError: wrong length, or the prefix of another session (or another key).
        """
        if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != NONCE_BYTES:
            got = f"{len(nonce)} bytes" if isinstance(nonce, (bytes, bytearray)) else type(nonce).__name__
            raise NonceError(f"a nonce is {NONCE_BYTES} bytes, got {got}")
        if bytes(nonce[:NONCE_PREFIX_BYTES]) != self._prefix:
            raise NonceError("nonce belongs to another session or key; check both ends use the same key file "
                             f"(fingerprint {self.key_fingerprint} here) and session id")
        return int.from_bytes(nonce[NONCE_PREFIX_BYTES:], "big")

    def _subkey(self, purpose: str, length: int = 32) -> bytes:
        """This session's key for ``purpose`` (package-private)."""
        return self._key._derive(purpose, self._session_id, length)

    def __repr__(self) -> str:
        return (f"LinkSession(session_id={self._session_id.hex()!r}, key={self._key!r}, "
                f"items_issued={self._counter}, max_items={self.config.max_items})")


__all__ = ["NONCE_BITS", "NONCE_BYTES", "SESSION_ID_BYTES", "LinkSession", "SessionConfig", "new_session_id"]
