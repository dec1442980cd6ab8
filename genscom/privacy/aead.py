"""Per-item authenticated encryption of digital payloads (AES-GCM or ChaCha20-Poly1305).

A sealed item is ``nonce (12 bytes) || ciphertext (same length as the plaintext) || tag (16 bytes)``.
The associated data binds the item id (:func:`~genscom.privacy.ids.encode_item_id`) and the session
(through the session key), so a sealed item cannot be moved to another id or session. Opening with the
wrong key, in the wrong session, under another id, or after any change to any bit raises
:class:`~genscom.privacy.errors.AuthenticationFailed`: nothing decrypted is ever returned from a
payload that did not verify. Batch receivers use :meth:`ItemCipher.open_many`, which turns those
failures into a ``failed`` flag per item (a counted failure, never garbage).

Overhead: :func:`aead_overhead_bits` = 96 (nonce) + 128 (tag) = **224 bits per item**, plus at most 7
padding bits when a bitstream is not a whole number of bytes (:func:`sealed_bits` gives the exact total).

Example:
    >>> session = LinkSession(LinkKey.generate())
    >>> cipher = ItemCipher(session)
    >>> sealed = cipher.seal(b"jpeg bytes", item_id=17)       # len = 10 + 28 bytes
    >>> cipher.open(sealed, item_id=17)
    b'jpeg bytes'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from genscom.privacy.errors import AuthenticationFailed, NonceError
from genscom.privacy.ids import ItemId, encode_item_id
from genscom.privacy.session import NONCE_BITS, NONCE_BYTES, LinkSession

AeadAlgorithm = Literal["aes-gcm", "chacha20-poly1305"]
AEAD_ALGORITHMS: tuple[str, ...] = ("aes-gcm", "chacha20-poly1305")
TAG_BYTES = 16  # full 128-bit tags for both algorithms (never truncated)
TAG_BITS = 8 * TAG_BYTES
_AD_PREFIX = b"genscom/privacy/v1 item\x00"


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in AEAD_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(AEAD_ALGORITHMS)}; got {algorithm!r}")


@dataclass(frozen=True)
class AeadConfig:
    """Which AEAD seals digital items (both use a 256-bit key, 96-bit nonce, 128-bit tag)."""

    algorithm: AeadAlgorithm = field(default="aes-gcm", metadata={
        "help": "aes-gcm (hardware AES) or chacha20-poly1305 (fast without AES instructions)"})

    def __post_init__(self) -> None:
        _check_algorithm(self.algorithm)


def aead_overhead_bits(algorithm: AeadAlgorithm = "aes-gcm") -> int:
    """Bits a sealed item carries beyond its plaintext: nonce 96 + tag 128 = 224 (both algorithms)."""
    _check_algorithm(algorithm)
    return NONCE_BITS + TAG_BITS


def sealed_bits(n_plain_bits: int, algorithm: AeadAlgorithm = "aes-gcm") -> int:
    """Bits actually sent for an item of ``n_plain_bits`` plaintext bits: ``8 * ceil(n / 8) + 224``."""
    if isinstance(n_plain_bits, bool) or not isinstance(n_plain_bits, int) or n_plain_bits < 0:
        raise ValueError(f"n_plain_bits must be a non-negative integer, got {n_plain_bits!r}")
    return 8 * ((n_plain_bits + 7) // 8) + aead_overhead_bits(algorithm)


@dataclass
class OpenedItems:
    """What :meth:`ItemCipher.open_many` recovers from a batch.

    Attributes:
        items: per item, the plaintext bytes, or ``None`` where authentication failed.
        failed: ``[B]`` bool, True where authentication failed (count these as failures).
    """

    items: list[bytes | None]
    failed: torch.Tensor


class ItemCipher:
    """Seals and opens digital items with the AEAD key of a :class:`~genscom.privacy.session.LinkSession`.

    The sender's ``seal`` draws one nonce per item from the session; the receiver's ``open`` reads it
    from the sealed bytes. Both ends build the cipher from a session with the same key and session id.

    Args:
        session: the link session (its ``aead/<algorithm>`` subkey is used).
        config: :class:`AeadConfig`.
    """

    def __init__(self, session: LinkSession, config: AeadConfig | None = None) -> None:
        if not isinstance(session, LinkSession):
            raise TypeError(f"session must be a LinkSession, got {type(session).__name__}")
        self.config = AeadConfig() if config is None else config
        self._session = session
        subkey = session._subkey(f"aead/{self.config.algorithm}")
        self._aead = AESGCM(subkey) if self.config.algorithm == "aes-gcm" else ChaCha20Poly1305(subkey)

    @property
    def overhead_bits(self) -> int:
        """Bits added per item (224)."""
        return aead_overhead_bits(self.config.algorithm)

    def seal(self, item_bytes: bytes, item_id: ItemId) -> bytes:
        """Encrypt and authenticate one item: ``nonce || ciphertext || tag`` (``len(item_bytes) + 28`` bytes)."""
        if not isinstance(item_bytes, (bytes, bytearray, memoryview)):
            raise TypeError(f"item_bytes must be bytes, got {type(item_bytes).__name__}; "
                            "turn a bit tensor into bytes with bits_to_bytes(bits)")
        nonce = self._session.next_nonce()
        return nonce + self._aead.encrypt(nonce, bytes(item_bytes), _associated_data(item_id))

    def open(self, sealed: bytes, item_id: ItemId) -> bytes:
        """Verify and decrypt one sealed item.

        Raises:
            AuthenticationFailed: wrong key or session, another item id, truncation or any flipped bit.
        """
        if not isinstance(sealed, (bytes, bytearray, memoryview)):
            raise TypeError(f"sealed must be bytes, got {type(sealed).__name__}")
        sealed = bytes(sealed)
        ad = _associated_data(item_id)
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise AuthenticationFailed(f"item {item_id!r}: sealed payload is {len(sealed)} bytes, shorter than "
                                       f"nonce + tag ({NONCE_BYTES + TAG_BYTES}); count the item as a failure")
        nonce = sealed[:NONCE_BYTES]
        try:
            self._session.counter_of(nonce)
        except NonceError as exc:
            raise AuthenticationFailed(f"item {item_id!r}: {exc}; count the item as a failure") from None
        try:
            return self._aead.decrypt(nonce, sealed[NONCE_BYTES:], ad)
        except InvalidTag:
            raise AuthenticationFailed(
                f"item {item_id!r}: authentication failed (wrong key, wrong session, another item id or a tampered "
                f"payload); count the item as a failure, and if every item fails check both ends load the same "
                f"key file (fingerprint {self._session.key_fingerprint} here)") from None

    def seal_many(self, items: Sequence[bytes], item_ids: Sequence[ItemId]) -> list[bytes]:
        """:meth:`seal` for each item (one nonce each, consecutive)."""
        _check_lengths(items, item_ids)
        return [self.seal(b, i) for b, i in zip(items, item_ids)]

    def open_many(self, sealed: Sequence[bytes], item_ids: Sequence[ItemId]) -> OpenedItems:
        """:meth:`open` for each item; a failure becomes ``None`` and ``failed[i] = True`` instead of raising."""
        _check_lengths(sealed, item_ids)
        out: list[bytes | None] = []
        failed = torch.zeros(len(sealed), dtype=torch.bool)
        for k, (s, i) in enumerate(zip(sealed, item_ids)):
            try:
                out.append(self.open(s, i))
            except AuthenticationFailed:
                out.append(None)
                failed[k] = True
        return OpenedItems(items=out, failed=failed)

    def __repr__(self) -> str:
        return f"ItemCipher(algorithm={self.config.algorithm!r}, session={self._session!r})"


def _associated_data(item_id: ItemId) -> bytes:
    return _AD_PREFIX + encode_item_id(item_id)


def _check_lengths(a: Sequence[object], ids: Sequence[ItemId]) -> None:
    if len(a) != len(ids):
        raise ValueError(f"got {len(a)} items but {len(ids)} item ids; pass one id per item")


# -- bit tensors <-> bytes ------------------------------------------------------------------------------

def bits_to_bytes(bits: torch.Tensor) -> bytes:
    """Pack a ``[n_bits]`` uint8 (or bool) tensor of 0/1 into ``ceil(n_bits / 8)`` bytes, MSB first,
    zero-padded at the end (``numpy.packbits`` order). Keep ``n_bits`` to unpack with :func:`bytes_to_bits`."""
    if not isinstance(bits, torch.Tensor):
        raise TypeError(f"bits must be a torch.Tensor, got {type(bits).__name__}")
    if bits.dim() != 1:
        raise ValueError(f"bits must be 1-D [n_bits], got shape {tuple(bits.shape)}; flatten per item first")
    if bits.dtype not in (torch.uint8, torch.bool):
        raise TypeError(f"bits must be uint8 (0/1) or bool, got {bits.dtype}; use bits.to(torch.uint8)")
    arr = bits.detach().to("cpu", torch.uint8).numpy()
    if arr.size and int(arr.max()) > 1:
        raise ValueError("bits must hold only 0 and 1; threshold or unpack your values first")
    return np.packbits(arr).tobytes()


def bytes_to_bits(data: bytes, n_bits: int | None = None, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Unpack bytes into a ``[n_bits]`` uint8 tensor of 0/1 (MSB first); ``n_bits`` defaults to ``8 * len(data)``
    and drops the padding :func:`bits_to_bytes` added."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    total = 8 * len(data)
    if n_bits is None:
        n_bits = total
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 0 <= n_bits <= total:
        raise ValueError(f"n_bits must be an integer in [0, {total}] for {len(data)} bytes, got {n_bits!r}")
    arr = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))[:n_bits]
    return torch.from_numpy(arr.copy()).to(device)


__all__ = [
    "AEAD_ALGORITHMS",
    "TAG_BITS",
    "AeadAlgorithm",
    "AeadConfig",
    "ItemCipher",
    "OpenedItems",
    "aead_overhead_bits",
    "bits_to_bytes",
    "bytes_to_bits",
    "sealed_bits",
]
