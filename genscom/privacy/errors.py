"""Errors of :mod:`genscom.privacy`: genscom errors (:class:`~genscom.errors.GenscomError`, a ``ValueError``)
that are also the built-in type a caller would expect (``FileNotFoundError``, ``PermissionError``, ...).

Every message is one line that says what went wrong and what to do, and none ever contains key material
(key bytes, their hex/base64 text, derived keys or the contents of a key file).
"""

from __future__ import annotations

from genscom.errors import BadFileError, GenscomError


class PrivacyError(GenscomError):
    """Base of every :mod:`genscom.privacy` error (catch this to handle them all)."""


class KeyFileNotFoundError(PrivacyError, FileNotFoundError):
    """The key file does not exist."""


class KeyFilePermissionError(PrivacyError, PermissionError):
    """The key file cannot be read, or other users can access it (permissions broader than 0600)."""


class KeyFormatError(PrivacyError):
    """Key bytes, a passphrase or a salt have the wrong format or length."""


class KeyFileFormatError(KeyFormatError, BadFileError):
    """A key file is not one base64 line encoding 32 bytes (carries ``path``, ``expected`` and ``fix``)."""


class AuthenticationFailed(PrivacyError):
    """A sealed item, header or signed message did not verify: wrong key, wrong session or tampering.

    The receiver must treat the item as a counted failure; nothing decrypted from it is returned.
    """


class NonceError(PrivacyError):
    """A nonce has the wrong length or belongs to another session."""


class NonceExhaustedError(PrivacyError, RuntimeError):
    """A session has handed out all its nonces; start a new session (fresh session id)."""


__all__ = [
    "AuthenticationFailed",
    "KeyFileFormatError",
    "KeyFileNotFoundError",
    "KeyFilePermissionError",
    "KeyFormatError",
    "NonceError",
    "NonceExhaustedError",
    "PrivacyError",
]
