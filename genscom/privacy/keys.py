"""Long-term link keys: a pre-shared key file or a passphrase stretched with scrypt; HKDF subkeys.

**Key file format** (the only one read): one line of standard base64 (RFC 4648, with padding) that
decodes to exactly 32 random bytes, i.e. 44 characters, optionally followed by a newline. On POSIX the
file must not be accessible by group or others (mode 0600 or stricter). :func:`generate_key_file` writes
one; copy it to the other end over a channel you trust (``scp``, a password manager), never over the
link it protects.

**Passphrase keys** are ``scrypt(NFC-normalised UTF-8 passphrase, salt, n, r, p)`` -> 32 bytes with
:class:`ScryptParams` (default ``n = 2**15, r = 8, p = 1``: 32 MiB and about 0.1 s on one core). The salt
is not secret but must be the same at both ends: make it once with :func:`generate_salt` and store or
send it beside the link settings.

**Subkeys**: every working key is ``HKDF-SHA256(ikm=link key, salt=none, info="genscom/privacy/v1" ||
purpose || context)``, so the AEAD, scrambling, header and wire-MAC keys of a session are independent,
and keys of different sessions are independent (the session id is the context).

Key material never appears in ``repr``/``str``, in error messages or in log records; the only value
derived from a key that is ever shown is :attr:`LinkKey.fingerprint`, 32 bits of an HKDF output under
its own label, to check that both ends hold the same key.

Example:
    >>> key = generate_key_file("link.key")          # once, then copy link.key to the receiver
    >>> key = LinkKey.from_file("link.key")          # both ends
    >>> print(key)
    LinkKey(source='file:link.key', fingerprint='3f9a01c2')
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import secrets
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from genscom.privacy.errors import (
    KeyFileFormatError,
    KeyFileNotFoundError,
    KeyFilePermissionError,
    KeyFormatError,
)
from genscom.utils import atomic_write, check_positive_ints

logger = logging.getLogger(__name__)

KEY_BYTES = 32  # 256-bit link key
SALT_MIN_BYTES = 16  # scrypt salt: at least 128 bits
_KEY_FILE_MAX_BYTES = 4096  # a key file is 45 bytes; refuse to read anything large
_HKDF_INFO_PREFIX = b"genscom/privacy/v1\x00"


_EXPECTED = (f"one line of base64 (44 characters) encoding {KEY_BYTES} random bytes, "
             "as written by genscom.privacy.generate_key_file")


def _fix_for(path: Path) -> str:
    return f"create one with genscom.privacy.generate_key_file({str(path)!r}) and copy it to the other end"


def _bad_file(path: Path, problem: str, fix: str = "") -> KeyFileFormatError:
    fix = fix or (f"copy the key file from the other end again, or make a new one with "
                  f"genscom.privacy.generate_key_file({str(path)!r}, overwrite=True) and copy it there")
    return KeyFileFormatError(path, problem=problem, expected=_EXPECTED, fix=fix)


_DIR_FIX = "pass the path of the key file itself, not its folder"


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters for :meth:`LinkKey.from_passphrase` (RFC 7914).

    Memory is ``128 * r * n`` bytes per lane (32 MiB by default), time grows linearly with ``n * p``.
    Both ends must use the same values.
    """

    n: int = field(default=2**15, metadata={"help": "CPU/memory cost, a power of two >= 2 (2**15: ~0.1 s, 32 MiB)"})
    r: int = field(default=8, metadata={"help": "block size (8 is the standard value)"})
    p: int = field(default=1, metadata={"help": "parallelisation (lanes run one after another here)"})

    def __post_init__(self) -> None:
        check_positive_ints(self, ("n", "r", "p"), owner="ScryptParams")
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError(f"ScryptParams.n must be a power of two >= 2, got {self.n}; e.g. 2**15")

    @property
    def memory_bytes(self) -> int:
        """Working memory of one scrypt lane: ``128 * r * n`` bytes."""
        return 128 * self.r * self.n


def generate_salt() -> bytes:
    """16 fresh random bytes for :meth:`LinkKey.from_passphrase` (public; store it with the link settings)."""
    return secrets.token_bytes(SALT_MIN_BYTES)


class LinkKey:
    """A 256-bit long-term key shared by the two ends of a link.

    Build one with :meth:`from_file`, :meth:`from_passphrase`, :meth:`generate` or :meth:`from_bytes`;
    hand it to :class:`~genscom.privacy.session.LinkSession` (per-session AEAD, scrambling and header keys)
    or :class:`~genscom.privacy.mac.MessageSigner` (the demo wire). The key bytes stay private: ``repr``
    and ``str`` show only the source and the :attr:`fingerprint`.
    """

    __slots__ = ("_material", "_source")

    def __init__(self, material: bytes, *, source: str = "bytes") -> None:
        if not isinstance(material, (bytes, bytearray)):
            raise TypeError(f"key material must be bytes, got {type(material).__name__}")
        if len(material) != KEY_BYTES:
            raise KeyFormatError(f"a link key is {KEY_BYTES} bytes, got {len(material)}; "
                                 "use LinkKey.generate(), LinkKey.from_file(path) or LinkKey.from_passphrase(...)")
        self._material = bytes(material)
        self._source = str(source)

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def generate(cls) -> LinkKey:
        """A fresh random key (``secrets.token_bytes(32)``); save it with :meth:`save` to share it."""
        return cls(secrets.token_bytes(KEY_BYTES), source="generated")

    @classmethod
    def from_bytes(cls, material: bytes) -> LinkKey:
        """A key from 32 raw bytes (tests, or a key held by another key store)."""
        return cls(material, source="bytes")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, check_permissions: bool = True) -> LinkKey:
        """Read a key file (one base64 line encoding 32 bytes; see the module docstring).

        Args:
            path: the key file.
            check_permissions: on POSIX, refuse a file that group or others may access (anything
                broader than 0600). Leave it on outside tests.

        Raises:
            KeyFileNotFoundError: no such file.
            KeyFilePermissionError: the file cannot be read, or its mode is broader than 0600.
            KeyFileFormatError: a directory, not one base64 line, or not 32 bytes once decoded (a
                :class:`~genscom.errors.BadFileError` and a :class:`KeyFormatError`).
        """
        path = Path(path).expanduser()
        try:
            # O_NONBLOCK: a FIFO is refused below instead of blocking the open
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise KeyFileNotFoundError(f"key file {path} does not exist; {_fix_for(path)}") from None
        except IsADirectoryError:
            raise _bad_file(path, "is a directory, not a key file", _DIR_FIX) from None
        except PermissionError:
            raise KeyFilePermissionError(
                f"cannot read key file {path}: permission denied; run genscom as the file's owner "
                f"and give it mode 0600 (chmod 600 {path})") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise _bad_file(path, "is a directory, not a key file", _DIR_FIX)
            if not stat.S_ISREG(st.st_mode):
                raise _bad_file(path, "is not a regular file", f"pass a key file; {_fix_for(path)}")
            mode = stat.S_IMODE(st.st_mode)
            if check_permissions and os.name == "posix" and mode & 0o077:
                raise KeyFilePermissionError(
                    f"key file {path} has mode {mode:04o}: group or others can access it; "
                    f"run `chmod 600 {path}` (and make a new key if others may have read it)")
            try:
                data = os.read(fd, _KEY_FILE_MAX_BYTES + 1)
            except PermissionError:
                raise KeyFilePermissionError(
                    f"cannot read key file {path}: permission denied; chmod 600 {path} as its owner") from None
        finally:
            os.close(fd)
        key = cls(_parse_key_text(data, path), source=f"file:{path}")
        logger.debug("loaded link key %s from %s", key.fingerprint, path)
        return key

    @classmethod
    def from_passphrase(cls, passphrase: str | bytes, *, salt: bytes,
                        params: ScryptParams | None = None) -> LinkKey:
        """Stretch a passphrase into a key with scrypt (see the module docstring).

        Args:
            passphrase: non-empty; a ``str`` is NFC-normalised and UTF-8 encoded first, so the same
                typed passphrase gives the same key on every OS.
            salt: at least 16 bytes, the same at both ends (:func:`generate_salt`; not secret).
            params: scrypt costs (default :class:`ScryptParams`), the same at both ends.

        Raises:
            KeyFormatError: empty passphrase or short salt.
        """
        params = ScryptParams() if params is None else params
        if not isinstance(params, ScryptParams):
            raise TypeError(f"params must be a ScryptParams, got {type(params).__name__}")
        if isinstance(passphrase, str):
            secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        elif isinstance(passphrase, (bytes, bytearray)):
            secret = bytes(passphrase)
        else:
            raise TypeError(f"passphrase must be str or bytes, got {type(passphrase).__name__}")
        if not secret:
            raise KeyFormatError("passphrase is empty; choose a long passphrase (e.g. 5+ random words)")
        if not isinstance(salt, (bytes, bytearray)):
            raise TypeError(f"salt must be bytes, got {type(salt).__name__}; make one with generate_salt()")
        if len(salt) < SALT_MIN_BYTES:
            raise KeyFormatError(f"salt must be at least {SALT_MIN_BYTES} bytes, got {len(salt)}; "
                                 "make one with genscom.privacy.generate_salt() and use it at both ends")
        material = Scrypt(salt=bytes(salt), length=KEY_BYTES, n=params.n, r=params.r, p=params.p).derive(secret)
        key = cls(material, source="passphrase")
        logger.debug("derived link key %s from a passphrase (scrypt n=%d r=%d p=%d)",
                     key.fingerprint, params.n, params.r, params.p)
        return key

    # -- use ----------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write this key as a key file with mode 0600 (atomically: temp file, fsync, rename).

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
        """
        path = Path(path).expanduser()
        if path.exists() and not overwrite:
            raise FileExistsError(f"key file {path} already exists; pass overwrite=True to replace it (the old "
                                  "key is lost and the other end needs the new file) or choose another path")
        atomic_write(path, lambda fh: fh.write(base64.b64encode(self._material) + b"\n"), mode=0o600)
        logger.info("wrote link key %s to %s (mode 0600)", self.fingerprint, path)
        return path

    @property
    def fingerprint(self) -> str:
        """8 hex characters (32 bits of ``HKDF(key, "fingerprint")``): compare them at both ends.

        Safe to show: it reveals nothing usable about the key or any working subkey.
        """
        return self._derive("fingerprint", b"", 4).hex()

    @property
    def source(self) -> str:
        """Where the key came from: ``file:<path>``, ``passphrase``, ``generated`` or ``bytes``."""
        return self._source

    def _derive(self, purpose: str, context: bytes, length: int = KEY_BYTES) -> bytes:
        """``HKDF-SHA256(self, info = prefix || purpose || 0x00 || context)`` -> ``length`` bytes.

        Package-private: only :mod:`genscom.privacy` modules hold derived keys.
        """
        if "\x00" in purpose:
            raise ValueError("purpose must not contain NUL")
        info = _HKDF_INFO_PREFIX + purpose.encode("ascii") + b"\x00" + bytes(context)
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(self._material)

    def __repr__(self) -> str:
        return f"LinkKey(source={self._source!r}, fingerprint={self.fingerprint!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinkKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    __hash__ = None  # type: ignore[assignment]  # keys are compared in constant time, never hashed


def _parse_key_text(data: bytes, path: Path) -> bytes:
    """Decode a key file's bytes; errors never echo the content."""
    if len(data) > _KEY_FILE_MAX_BYTES:
        raise _bad_file(path, f"the key file is larger than {_KEY_FILE_MAX_BYTES} bytes")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _bad_file(path, "the key file is not ASCII text") from None
    if not text:
        raise _bad_file(path, "the key file is empty")
    if any(c.isspace() for c in text):
        raise _bad_file(path, "the key file holds more than one line or word")
    try:
        material = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_file(path, "the key file is not valid base64") from None
    if len(material) != KEY_BYTES:
        raise _bad_file(path, f"the key file decodes to {len(material)} bytes")
    return material


def generate_key_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> LinkKey:
    """Make a fresh random key, write it to ``path`` (mode 0600, see the module docstring) and return it.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    key = LinkKey.generate()
    saved = key.save(path, overwrite=overwrite)
    return LinkKey(key._material, source=f"file:{saved}")


__all__ = ["KEY_BYTES", "SALT_MIN_BYTES", "LinkKey", "ScryptParams", "generate_key_file", "generate_salt"]
