"""Private semantic links: keys, authenticated encryption, keyed scrambling and authenticated headers.

| module | one job |
|---|---|
| ``keys.py`` | :class:`LinkKey` from a key file (one base64 line, mode 0600) or a passphrase (scrypt); HKDF subkeys |
| ``session.py`` | :class:`LinkSession`: per-session subkeys and never-repeating 96-bit nonces |
| ``aead.py`` | :class:`ItemCipher`: AES-GCM / ChaCha20-Poly1305 per digital item (224 bits per item); bits <-> bytes |
| ``scramble.py`` | :class:`SymbolScrambler`: keyed per-item unitary scrambling of analog symbols (0 extra symbols) |
| ``header.py`` | :class:`ItemHeaders`: authenticated per-item header binding id, nonce and length (160 bits) |
| ``mixing.py`` | :class:`EmbeddingMixer`: optional keyed orthogonal mixing of real embeddings (per session) |
| ``mac.py`` | :class:`MessageSigner`: HMAC-SHA256 of whole messages on the demo wire (256 bits per message) |
| ``errors.py`` | the errors: genscom errors (``ValueError``) that are also the built-in type a caller expects |

The threat model (what each mechanism protects, and what it does not) is in ``docs/security.md``.
All cryptography comes from the ``cryptography`` package (``pip install 'genscom[privacy]'``).
"""

from __future__ import annotations

try:
    import cryptography  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("genscom.privacy needs the 'cryptography' package; install it with "
                      "pip install 'genscom[privacy]'") from exc

from genscom.privacy.aead import (
    AEAD_ALGORITHMS,
    AeadConfig,
    ItemCipher,
    OpenedItems,
    aead_overhead_bits,
    bits_to_bytes,
    bytes_to_bits,
    sealed_bits,
)
from genscom.privacy.errors import (
    AuthenticationFailed,
    KeyFileFormatError,
    KeyFileNotFoundError,
    KeyFilePermissionError,
    KeyFormatError,
    NonceError,
    NonceExhaustedError,
    PrivacyError,
)
from genscom.privacy.header import HeaderConfig, ItemHeaders, header_bits
from genscom.privacy.ids import ItemId, encode_item_id
from genscom.privacy.keys import (
    KEY_BYTES,
    LinkKey,
    ScryptParams,
    generate_key_file,
    generate_salt,
)
from genscom.privacy.mac import WIRE_TAG_BITS, MessageSigner
from genscom.privacy.mixing import EmbeddingMixer
from genscom.privacy.scramble import SCRAMBLE_MODES, ScrambleConfig, SymbolScrambler
from genscom.privacy.session import (
    NONCE_BITS,
    LinkSession,
    SessionConfig,
    new_session_id,
)

__all__ = [
    "AEAD_ALGORITHMS",
    "KEY_BYTES",
    "NONCE_BITS",
    "SCRAMBLE_MODES",
    "WIRE_TAG_BITS",
    "AeadConfig",
    "AuthenticationFailed",
    "EmbeddingMixer",
    "HeaderConfig",
    "ItemCipher",
    "ItemHeaders",
    "ItemId",
    "KeyFileFormatError",
    "KeyFileNotFoundError",
    "KeyFilePermissionError",
    "KeyFormatError",
    "LinkKey",
    "LinkSession",
    "MessageSigner",
    "NonceError",
    "NonceExhaustedError",
    "OpenedItems",
    "PrivacyError",
    "ScrambleConfig",
    "ScryptParams",
    "SessionConfig",
    "SymbolScrambler",
    "aead_overhead_bits",
    "bits_to_bytes",
    "bytes_to_bits",
    "encode_item_id",
    "generate_key_file",
    "generate_salt",
    "header_bits",
    "new_session_id",
    "sealed_bits",
]
