"""Message authentication for the demo wire: HMAC-SHA256 with the link key's ``wire-mac`` subkey.

The demo's transmitter and receiver share only the key file, so the wire key is derived from the
long-term key and a context label (not from a session). :class:`MessageSigner` authenticates whole
message bodies; replay protection (a timestamp and a nonce inside the signed body, checked against a
bounded window at the receiver) belongs to the wire format that uses it.

Size: :data:`WIRE_TAG_BITS` = 256 bits per message.

Example:
    >>> signer = MessageSigner(LinkKey.from_file("link.key"))
    >>> tag = signer.sign(body)                 # sender: send tag with the body (e.g. a header)
    >>> signer.verify(body, tag)                # receiver: raises AuthenticationFailed if it does not match
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from genscom.privacy.errors import AuthenticationFailed
from genscom.privacy.keys import LinkKey

WIRE_TAG_BYTES = 32  # full HMAC-SHA256 output
WIRE_TAG_BITS = 8 * WIRE_TAG_BYTES


class MessageSigner:
    """Signs and verifies message bodies with ``HMAC-SHA256(HKDF(key, "wire-mac", context), body)``.

    Args:
        key: the long-term link key (both ends load the same key file).
        context: separates independent uses of one key (e.g. ``"demo-wire"``); both ends must agree.
    """

    def __init__(self, key: LinkKey, *, context: str = "demo-wire") -> None:
        if not isinstance(key, LinkKey):
            raise TypeError(f"key must be a LinkKey, got {type(key).__name__}; load one with LinkKey.from_file(path)")
        if not isinstance(context, str) or not context:
            raise ValueError(f"context must be a non-empty string, got {context!r}")
        self.context = context
        self._fingerprint = key.fingerprint
        self._key = key._derive("wire-mac", context.encode("utf-8"))

    @property
    def key_fingerprint(self) -> str:
        """The link key's :attr:`~genscom.privacy.keys.LinkKey.fingerprint` (safe to show)."""
        return self._fingerprint

    def sign(self, message: bytes) -> bytes:
        """The 32-byte tag of ``message``."""
        return self._mac(message).finalize()

    def verify(self, message: bytes, tag: bytes) -> None:
        """Check ``tag`` in constant time.

        Raises:
            AuthenticationFailed: the tag does not match (wrong key, another context, or a changed body).
        """
        if not isinstance(tag, (bytes, bytearray)) or len(tag) != WIRE_TAG_BYTES:
            got = f"{len(tag)} bytes" if isinstance(tag, (bytes, bytearray)) else type(tag).__name__
            raise AuthenticationFailed(f"message tag must be {WIRE_TAG_BYTES} bytes, got {got}; reject the message")
        try:
            self._mac(message).verify(bytes(tag))
        except InvalidSignature:
            raise AuthenticationFailed(
                "message authentication failed (wrong key, another context or a changed body); reject the message, "
                f"and if every message fails check both ends load the same key file (fingerprint {self._fingerprint} "
                "here)") from None

    def _mac(self, message: bytes) -> crypto_hmac.HMAC:
        if not isinstance(message, (bytes, bytearray, memoryview)):
            raise TypeError(f"message must be bytes, got {type(message).__name__}")
        mac = crypto_hmac.HMAC(self._key, hashes.SHA256())
        mac.update(bytes(message))
        return mac

    def __repr__(self) -> str:
        return f"MessageSigner(context={self.context!r}, key_fingerprint={self._fingerprint!r})"


__all__ = ["WIRE_TAG_BITS", "MessageSigner"]
