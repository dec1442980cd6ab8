"""Keyed pseudo-random words from the ChaCha20 keystream of ``cryptography`` (package-private).

``ChaCha20(key, nonce)`` is a PRF of its nonce: with a secret 256-bit key, its keystream is
indistinguishable from random bytes, and different nonces give independent streams.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from genscom.privacy.session import NONCE_BYTES

_ZERO_COUNTER = bytes(4)  # cryptography's ChaCha20 takes counter (4 bytes) || nonce (12 bytes)


def check_nonces(nonces: Sequence[bytes], batch: int) -> list[bytes]:
    """``nonces`` as a list of ``batch`` 12-byte values, or a ``ValueError`` naming the fix."""
    if isinstance(nonces, (bytes, bytearray)):
        raise TypeError("nonces must be a sequence of 12-byte nonces (one per item), not a single bytes object")
    nonces = list(nonces)
    if len(nonces) != batch:
        raise ValueError(f"got {len(nonces)} nonces for {batch} items; pass one nonce per item "
                         "(session.next_nonces(B) at the sender, the checked headers' nonces at the receiver)")
    for k, n in enumerate(nonces):
        if not isinstance(n, (bytes, bytearray)) or len(n) != NONCE_BYTES:
            raise ValueError(f"nonce {k} must be {NONCE_BYTES} bytes, got "
                             f"{len(n) if isinstance(n, (bytes, bytearray)) else type(n).__name__}")
    return [bytes(n) for n in nonces]


def keystream_words(key: bytes, nonces: Sequence[bytes], n_words: int) -> np.ndarray:
    """``[len(nonces), n_words]`` uint64: the first ``8 * n_words`` keystream bytes per nonce (little-endian)."""
    out = np.empty((len(nonces), n_words), dtype=np.uint64)
    zeros = bytes(8 * n_words)
    for k, nonce in enumerate(nonces):
        enc = Cipher(algorithms.ChaCha20(key, _ZERO_COUNTER + nonce), mode=None).encryptor()
        out[k] = np.frombuffer(enc.update(zeros), dtype="<u8")
    return out


def uniform01(words: np.ndarray) -> np.ndarray:
    """Words -> float64 uniform on ``[0, 1)`` (top 53 bits)."""
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
