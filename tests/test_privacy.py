"""genscom.privacy: key files, sessions and nonces, AEAD, headers, scrambling, mixing, wire MAC.

Fast (no model, no network): scrypt runs with small costs except once, the statistical checks use
fixed seeds and tolerances several standard errors wide.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import stat
import threading

import pytest
import torch

pytest.importorskip("cryptography", reason="genscom.privacy needs cryptography (pip install 'genscom[privacy]')")

from genscom.errors import BadFileError, GenscomError
from genscom.privacy import (
    AEAD_ALGORITHMS,
    SCRAMBLE_MODES,
    AeadConfig,
    AuthenticationFailed,
    EmbeddingMixer,
    HeaderConfig,
    ItemCipher,
    ItemHeaders,
    KeyFileFormatError,
    KeyFileNotFoundError,
    KeyFilePermissionError,
    KeyFormatError,
    LinkKey,
    LinkSession,
    MessageSigner,
    NonceError,
    NonceExhaustedError,
    PrivacyError,
    ScrambleConfig,
    ScryptParams,
    SessionConfig,
    SymbolScrambler,
    aead_overhead_bits,
    bits_to_bytes,
    bytes_to_bits,
    encode_item_id,
    generate_key_file,
    generate_salt,
    header_bits,
    sealed_bits,
)

FAST_SCRYPT = ScryptParams(n=2**10, r=8, p=1)  # tests only: ~1 ms
POSIX = os.name == "posix"


def _key(seed: int) -> LinkKey:
    return LinkKey.from_bytes(bytes((seed * 31 + i) % 256 for i in range(32)))


def _session(seed: int = 1, sid: bytes = b"session-0000001") -> LinkSession:
    return LinkSession(_key(seed), sid)


def _secret_forms(material: bytes) -> list[str]:
    """Every text form key bytes could leak as."""
    b64 = base64.b64encode(material).decode()
    return [material.hex(), material.hex().upper(), b64, b64.rstrip("="), base64.urlsafe_b64encode(material).decode(),
            repr(material)]


def _cnoise(shape: tuple[int, ...], n0: float, gen: torch.Generator) -> torch.Tensor:
    """``CN(0, n0)``: ``n0 / 2`` per real dimension, complex128."""
    re = torch.randn(shape, generator=gen, dtype=torch.float64)
    im = torch.randn(shape, generator=gen, dtype=torch.float64)
    return torch.complex(re, im) * math.sqrt(n0 / 2)


def _unit_power(shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    x = _cnoise(shape, 1.0, gen)
    return x / x.abs().pow(2).mean(dim=1, keepdim=True).sqrt()


# -- key files -----------------------------------------------------------------------------------------

def test_key_file_round_trip(tmp_path):
    path = tmp_path / "link.key"
    key = generate_key_file(path)
    text = path.read_text()
    assert text.endswith("\n") and len(text.strip()) == 44 and "\n" not in text.strip()
    assert len(base64.b64decode(text.strip(), validate=True)) == 32
    if POSIX:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = LinkKey.from_file(path)
    assert loaded == key and loaded.fingerprint == key.fingerprint and len(key.fingerprint) == 8
    assert loaded.source == f"file:{path}"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_key_file(path)
    assert generate_key_file(path, overwrite=True) != key  # a fresh random key


def test_missing_key_file_is_a_clear_error(tmp_path):
    path = tmp_path / "nope.key"
    with pytest.raises(KeyFileNotFoundError, match="does not exist.*generate_key_file") as info:
        LinkKey.from_file(path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, PrivacyError)
    assert isinstance(info.value, GenscomError)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content, why", [
    (b"", "empty"),
    (b"not base64 at all!!\n", "more than one line or word"),
    (b"@@@@not*base64@@@@\n", "not valid base64"),
    (bytes(range(200, 245)), "not ASCII"),
    (base64.b64encode(bytes(range(31))) + b"\n", "decodes to 31 bytes"),
    (bytes(range(32)).hex().encode() + b"\n", "decodes to 48 bytes"),  # hex is not the format
    (base64.b64encode(bytes(range(32))) + b"\n" + base64.b64encode(bytes(range(32))) + b"\n", "more than one line"),
])
def test_bad_key_file_format_is_a_clear_error(tmp_path, content, why):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileFormatError, match=why) as info:
        LinkKey.from_file(path)
    msg = str(info.value)
    assert isinstance(info.value, KeyFormatError) and isinstance(info.value, BadFileError)
    assert info.value.path == str(path) and "base64 (44 characters)" in msg and "Fix: copy the key file" in msg
    stripped = content.strip()
    if len(stripped) > 8:
        assert stripped.decode("latin-1") not in msg  # never echoes the file


def test_key_file_readable_by_others_is_refused(tmp_path):
    if not POSIX:
        pytest.skip("file modes are POSIX only")
    path = tmp_path / "open.key"
    key = generate_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFilePermissionError, match=f"mode 0644.*chmod 600 {path}") as info:
        LinkKey.from_file(path)
    assert isinstance(info.value, PermissionError)
    os.chmod(path, 0o660)  # group-readable only: refused too
    with pytest.raises(KeyFilePermissionError, match="chmod 600"):
        LinkKey.from_file(path)
    assert LinkKey.from_file(path, check_permissions=False) == key
    os.chmod(path, 0o400)  # stricter than 0600 is fine
    assert LinkKey.from_file(path) == key


def test_unreadable_key_file_and_directory(tmp_path, monkeypatch):
    with pytest.raises(KeyFileFormatError, match="is a directory"):
        LinkKey.from_file(tmp_path)
    path = tmp_path / "locked.key"
    generate_key_file(path)
    if POSIX and os.geteuid() != 0:
        os.chmod(path, 0o000)
    else:  # root reads any file: simulate the refusal
        import genscom.privacy.keys as keys_module

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(keys_module.os, "open", refuse)
    try:
        with pytest.raises(KeyFilePermissionError, match=f"cannot read key file {path}: permission denied") as info:
            LinkKey.from_file(path)
        assert isinstance(info.value, PermissionError)
    finally:
        monkeypatch.undo()
        os.chmod(path, 0o600)


def test_passphrase_keys():
    salt = generate_salt()
    assert len(salt) == 16 and generate_salt() != salt
    a = LinkKey.from_passphrase("correct horse battery staple", salt=salt, params=FAST_SCRYPT)
    assert a == LinkKey.from_passphrase(b"correct horse battery staple", salt=salt, params=FAST_SCRYPT)
    assert a != LinkKey.from_passphrase("correct horse battery staple", salt=generate_salt(), params=FAST_SCRYPT)
    assert a != LinkKey.from_passphrase("correct horse battery stapler", salt=salt, params=FAST_SCRYPT)
    # NFC: a precomposed and a decomposed "é" are the same typed passphrase
    assert LinkKey.from_passphrase("caf\u00e9", salt=salt, params=FAST_SCRYPT) == \
        LinkKey.from_passphrase("cafe\u0301", salt=salt, params=FAST_SCRYPT)
    assert LinkKey.from_passphrase("pw", salt=salt).source == "passphrase"  # default costs (~0.1 s)
    with pytest.raises(KeyFormatError, match="at least 16 bytes.*generate_salt"):
        LinkKey.from_passphrase("pw", salt=b"short", params=FAST_SCRYPT)
    with pytest.raises(KeyFormatError, match="passphrase is empty"):
        LinkKey.from_passphrase("", salt=salt, params=FAST_SCRYPT)
    with pytest.raises(ValueError, match="power of two"):
        ScryptParams(n=1000)
    assert ScryptParams().memory_bytes == 32 * 2**20


def test_key_material_never_shown(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="genscom")
    path = tmp_path / "k.key"
    key = generate_key_file(path)
    key = LinkKey.from_file(path)
    pkey = LinkKey.from_passphrase("hunter2 hunter2", salt=bytes(16), params=FAST_SCRYPT)
    session = LinkSession(key)
    cipher, headers = ItemCipher(session), ItemHeaders(session)
    texts = [repr(key), str(key), repr(pkey), str(pkey), repr(session), repr(cipher), repr(headers),
             repr(SymbolScrambler(session)), repr(EmbeddingMixer(session, dim=4)), repr(MessageSigner(key))]
    sealed = cipher.seal(b"payload", 1)
    for attempt in (lambda: ItemCipher(LinkSession(_key(9), session.session_id)).open(sealed, 1),
                    lambda: headers.check(bytes(20), 1, n_symbols=3),
                    lambda: MessageSigner(pkey).verify(b"body", bytes(32))):
        with pytest.raises(AuthenticationFailed) as info:
            attempt()
        texts.append(str(info.value))
    texts += [r.getMessage() for r in caplog.records]
    assert any(key.fingerprint in r.getMessage() for r in caplog.records)  # something was logged
    secrets_ = [key._material, pkey._material, session._subkey("aead/aes-gcm"), session._subkey("header"),
                session._subkey("scramble/mix"), key._derive("wire-mac", b"demo-wire")]
    for text in texts:
        for material in secrets_:
            for form in _secret_forms(material):
                assert form not in text
    assert path.read_text().strip() not in "\n".join(texts)


# -- sessions and nonces --------------------------------------------------------------------------------

def test_nonces_never_repeat_within_a_session():
    session = _session()
    nonces = session.next_nonces(5000) + [session.next_nonce() for _ in range(100)] + session.next_nonces(0)
    assert len(nonces) == 5100 and len(set(nonces)) == 5100 and all(len(n) == 12 for n in nonces)
    assert [session.counter_of(n) for n in nonces[:3]] == [0, 1, 2] and session.items_issued == 5100
    other = LinkSession(session._key, b"session-0000002")  # same key, another id
    assert not set(other.next_nonces(5100)) & set(nonces)
    with pytest.raises(NonceError, match="another session"):
        other.counter_of(nonces[0])
    fresh = [LinkSession(_key(1)).next_nonce() for _ in range(50)]  # random ids: different prefixes
    assert len({n[:4] for n in fresh}) == 50


def test_nonces_unique_across_threads():
    session = _session()
    got: list[bytes] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [session.next_nonce() for _ in range(500)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 2000


def test_session_refuses_when_nonces_run_out():
    session = LinkSession(_key(1), config=SessionConfig(max_items=3))
    session.next_nonces(2)
    with pytest.raises(NonceExhaustedError, match="start a new LinkSession"):
        session.next_nonces(2)
    session.next_nonce()
    with pytest.raises(NonceExhaustedError):
        session.next_nonce()
    resumed = LinkSession(_key(1), session.session_id, start_counter=2)
    assert session.counter_of(resumed.next_nonce()) == 2
    with pytest.raises(ValueError, match="max_items"):
        SessionConfig(max_items=0)
    with pytest.raises(ValueError, match="8 to 64 bytes"):
        LinkSession(_key(1), b"short")


# -- AEAD --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", AEAD_ALGORITHMS)
def test_seal_open_round_trip_and_overhead(algorithm):
    tx = ItemCipher(_session(), AeadConfig(algorithm))
    rx = ItemCipher(_session(), AeadConfig(algorithm))  # the receiver's own session object, same key and id
    items = [b"", b"x", bytes(range(256)) * 4]
    sealed = tx.seal_many(items, [0, "clip-1", b"\x02"])
    assert [len(s) - len(i) for s, i in zip(sealed, items)] == [28, 28, 28]
    assert rx.open_many(sealed, [0, "clip-1", b"\x02"]).items == items
    assert tx.overhead_bits == aead_overhead_bits(algorithm) == 224
    assert sealed_bits(8, algorithm) == 8 + 224 and sealed_bits(9, algorithm) == 16 + 224


@pytest.mark.parametrize("algorithm", AEAD_ALGORITHMS)
def test_wrong_key_session_or_id_fails_authentication(algorithm):
    cfg = AeadConfig(algorithm)
    sealed = ItemCipher(_session(1), cfg).seal(b"secret embedding bits", 7)
    wrong_key = ItemCipher(_session(2), cfg)  # same session id, another key
    with pytest.raises(AuthenticationFailed, match="item 7: .*same key file.*fingerprint") as info:
        wrong_key.open(sealed, 7)
    assert isinstance(info.value, ValueError)
    with pytest.raises(AuthenticationFailed, match="another session"):
        ItemCipher(_session(1, b"session-0000002"), cfg).open(sealed, 7)
    with pytest.raises(AuthenticationFailed, match="item 8: authentication failed.*another item id"):
        ItemCipher(_session(1), cfg).open(sealed, 8)  # moved to another item id
    with pytest.raises(AuthenticationFailed):
        ItemCipher(_session(1), cfg).open(sealed, "7")  # "7" is not 7
    other_alg = next(a for a in AEAD_ALGORITHMS if a != algorithm)
    with pytest.raises(AuthenticationFailed):
        ItemCipher(_session(1), AeadConfig(other_alg)).open(sealed, 7)


@pytest.mark.parametrize("algorithm", AEAD_ALGORITHMS)
def test_any_flipped_bit_or_truncation_is_rejected(algorithm):
    cipher = ItemCipher(_session(), AeadConfig(algorithm))
    sealed = cipher.seal(b"0123456789abcdefghij", 3)  # 48 bytes = 384 bits
    assert cipher.open(sealed, 3) == b"0123456789abcdefghij"
    for bit in range(8 * len(sealed)):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AuthenticationFailed):
            cipher.open(bytes(tampered), 3)
    for cut in (0, 11, 27, len(sealed) - 1):
        with pytest.raises(AuthenticationFailed):
            cipher.open(sealed[:cut], 3)
    with pytest.raises(AuthenticationFailed):
        cipher.open(sealed + b"\x00", 3)
    opened = cipher.open_many([sealed, sealed[:-1], sealed], [3, 3, 4])
    assert opened.items == [b"0123456789abcdefghij", None, None] and opened.failed.tolist() == [False, True, True]


def test_bit_tensor_helpers():
    gen = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 8, 13, 1000):
        bits = torch.randint(0, 2, (n,), generator=gen, dtype=torch.uint8)
        data = bits_to_bytes(bits)
        assert len(data) == (n + 7) // 8
        back = bytes_to_bits(data, n)
        assert back.dtype == torch.uint8 and torch.equal(back, bits)
    assert bytes_to_bits(b"\x80\x01").tolist() == [1] + [0] * 14 + [1]
    assert bits_to_bytes(torch.tensor([True, False, True])) == b"\xa0"
    with pytest.raises(ValueError, match="only 0 and 1"):
        bits_to_bytes(torch.tensor([0, 2], dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        bits_to_bytes(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        bits_to_bytes(torch.zeros(2, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"n_bits must be an integer in \[0, 8\]"):
        bytes_to_bits(b"\x00", 9)
    # a bitstream sealed as bytes comes back bit-exact
    cipher = ItemCipher(_session())
    bits = torch.randint(0, 2, (1001,), generator=gen, dtype=torch.uint8)
    sealed = cipher.seal(bits_to_bytes(bits), 0)
    assert 8 * len(sealed) == sealed_bits(1001)
    assert torch.equal(bytes_to_bits(cipher.open(sealed, 0), 1001), bits)


def test_item_ids_bind_unambiguously():
    codes = [encode_item_id(v) for v in (7, "7", b"7", 70, "", b"", -7, torch.tensor(7).item())]
    assert len(set(codes[:7])) == 7 and codes[-1] == codes[0]
    with pytest.raises(TypeError, match="item_id"):
        encode_item_id(True)
    with pytest.raises(TypeError, match="item_id"):
        encode_item_id(1.5)


# -- headers -----------------------------------------------------------------------------------------------

def test_header_binds_id_nonce_and_length():
    tx, rx = ItemHeaders(_session()), ItemHeaders(_session())
    nonces, hdrs = tx.issue([10, 11], n_symbols=256)
    assert tx.size_bits == header_bits() == 160 and all(len(h) == 20 for h in hdrs)
    assert [rx.check(h, i, n_symbols=256) for h, i in zip(hdrs, [10, 11])] == nonces
    with pytest.raises(AuthenticationFailed, match="header authentication failed"):
        rx.check(hdrs[0], 11, n_symbols=256)  # another item's header
    with pytest.raises(AuthenticationFailed):
        rx.check(hdrs[0], 10, n_symbols=255)  # another length
    with pytest.raises(AuthenticationFailed):
        ItemHeaders(_session(2)).check(hdrs[0], 10, n_symbols=256)  # wrong key
    with pytest.raises(AuthenticationFailed, match="expected 20"):
        rx.check(hdrs[0][:-1], 10, n_symbols=256)
    for bit in range(160):
        tampered = bytearray(hdrs[0])
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AuthenticationFailed):
            rx.check(bytes(tampered), 10, n_symbols=256)
    assert header_bits(HeaderConfig(tag_bits=128)) == 224
    with pytest.raises(ValueError, match="multiple of 8"):
        HeaderConfig(tag_bits=20)
    with pytest.raises(ValueError, match="nonce_bits must be 96"):
        HeaderConfig(nonce_bits=80)


def test_compact_headers_send_only_the_counter_low_bits():
    cfg = HeaderConfig(nonce_bits=16, tag_bits=64)
    tx = ItemHeaders(LinkSession(_key(1), b"session-0000001", start_counter=65530), cfg)  # near the 16-bit wrap
    rx = ItemHeaders(_session(), cfg)
    assert tx.size_bits == header_bits(cfg) == 80
    nonces, hdrs = tx.issue(list(range(10)), n_symbols=64)
    counters = [tx._session.counter_of(n) for n in nonces]
    assert counters[0] == 65530 and all(len(h) == 10 for h in hdrs)
    expected = counters[0]
    for k in (0, 1, 2, 6, 9):  # items 3-5 and 7-8 lost: the receiver's guess lags, the low bits resync it
        assert rx.check(hdrs[k], k, n_symbols=64, expected_counter=expected) == nonces[k]
        expected = rx._session.counter_of(nonces[k]) + 1
    with pytest.raises(AuthenticationFailed):  # more than 2**15 items away: the rebuilt nonce fails the tag
        rx.check(hdrs[0], 0, n_symbols=64, expected_counter=counters[0] + 40000)
    with pytest.raises(ValueError, match="expected_counter"):
        rx.check(hdrs[0], 0, n_symbols=64)
    implicit = HeaderConfig(nonce_bits=0, tag_bits=32)  # 32 bits: items strictly in order
    tx0, rx0 = ItemHeaders(_session(3), implicit), ItemHeaders(_session(3), implicit)
    nonces, hdrs = tx0.issue([0, 1], n_symbols=8)
    assert len(hdrs[0]) == 4 and rx0.check(hdrs[1], 1, n_symbols=8, expected_counter=1) == nonces[1]
    assert tx0._session.nonce_at(1) == nonces[1]
    with pytest.raises(AuthenticationFailed):
        rx0.check(hdrs[1], 1, n_symbols=8, expected_counter=0)  # out of sync


# -- scrambling --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", SCRAMBLE_MODES)
@pytest.mark.parametrize("dtype, tol", [(torch.complex64, 2e-5), (torch.complex128, 1e-12)])
def test_scramble_is_an_exact_norm_preserving_inverse(mode, dtype, tol):
    gen = torch.Generator().manual_seed(0)
    cfg = ScrambleConfig(mode)
    tx, rx = SymbolScrambler(_session(), cfg), SymbolScrambler(_session(), cfg)
    x = _unit_power((16, 97), gen).to(dtype)
    nonces = tx._session.next_nonces(16)
    y = tx.scramble(x, nonces)
    assert y.shape == x.shape and y.dtype == dtype and tx.overhead_symbols == 0
    assert torch.allclose(y.abs().pow(2).sum(1), x.abs().pow(2).sum(1), atol=tol * 97, rtol=0)
    assert (rx.unscramble(y, nonces) - x).abs().max().item() < tol  # the receiver's own object
    assert (y - x).abs().max().item() > 0.5  # it did change the symbols
    y2 = tx.scramble(x[:1].expand(2, -1), tx._session.next_nonces(2))
    assert not torch.allclose(y2[0], y2[1])  # a fresh unitary per nonce
    xg = x.clone().requires_grad_(True)
    tx.scramble(xg, nonces).abs().pow(2).sum().backward()  # differentiable: grad of ||Ux||^2 is 2x
    assert torch.allclose(xg.grad, 2 * x, atol=100 * tol)


@pytest.mark.parametrize("mode", SCRAMBLE_MODES)
def test_scramble_leaves_awgn_statistics_unchanged(mode):
    """Scramble, add CN(0, N0), unscramble: the residual noise is still CN(0, N0 I)."""
    gen = torch.Generator().manual_seed(1)
    scr = SymbolScrambler(_session(), ScrambleConfig(mode))
    b, n, n0 = 4000, 32, 0.1
    x = _unit_power((b, n), gen)
    # one fixed U over all trials (repeated nonce): the per-symbol covariance of U^H n must be N0 I
    fixed = [scr._session.next_nonce()] * b
    noise = scr.unscramble(scr.scramble(x, fixed) + _cnoise((b, n), n0, gen), fixed) - x  # [B, n]
    var = noise.abs().pow(2).mean(0)  # per symbol, each over B samples: std err N0 / sqrt(B) = 1.6 %
    assert abs(var.mean().item() / n0 - 1) < 0.02 and (var / n0 - 1).abs().max().item() < 0.08
    assert abs(noise.real.pow(2).mean().item() / (n0 / 2) - 1) < 0.03  # N0/2 per real dimension
    assert abs(noise.imag.pow(2).mean().item() / (n0 / 2) - 1) < 0.03
    cov = noise.T.conj() @ noise / b / n0  # [n, n]: identity
    pcov = noise.T @ noise / b / n0  # pseudo-covariance: zero (circular)
    off = cov - torch.diag(torch.diagonal(cov))
    limit = 5 / math.sqrt(b)  # each entry has std err 1/sqrt(B)
    assert off.abs().max().item() < limit and pcov.abs().max().item() < limit
    # fresh nonces per item (the real use): same variance
    nonces = scr._session.next_nonces(b)
    noise = scr.unscramble(scr.scramble(x, nonces) + _cnoise((b, n), n0, gen), nonces) - x
    assert abs(noise.abs().pow(2).mean().item() / n0 - 1) < 0.02


@pytest.mark.parametrize("mode", SCRAMBLE_MODES)
def test_eavesdropper_with_wrong_key_sees_uncorrelated_symbols(mode):
    gen = torch.Generator().manual_seed(2)
    cfg = ScrambleConfig(mode)
    tx = SymbolScrambler(_session(1), cfg)
    eve = SymbolScrambler(_session(2), cfg)  # knows everything but the key: same id, mode and nonces
    b, n = 64, 256
    x = _unit_power((b, n), gen)
    nonces = tx._session.next_nonces(b)
    y = tx.scramble(x, nonces) + _cnoise((b, n), 0.01, gen)  # 20 dB

    def corr(u: torch.Tensor) -> torch.Tensor:
        return (u * x.conj()).sum(1).abs() / (u.norm(dim=1) * x.norm(dim=1))

    assert corr(tx.unscramble(y, nonces)).min().item() > 0.99  # the legitimate receiver
    eve_corr = corr(eve.unscramble(y, nonces))
    assert eve_corr.mean().item() < 2 / math.sqrt(n)  # E|corr| = sqrt(pi / (4 n)) ~ 0.89 / sqrt(n)
    assert eve_corr.max().item() < 4 / math.sqrt(n)
    assert corr(y).mean().item() < 2 / math.sqrt(n)  # taking y as it comes is no better


def test_magnitude_profile_attack():
    """An eavesdropper who knows the candidate contents matches sorted |y| against sorted |x_j|:
    permute-phase keeps the magnitude multiset and leaks the item; mix hides it (chance level)."""
    gen = torch.Generator().manual_seed(3)
    g, n = 64, 64
    gallery = _unit_power((g, n), gen)
    rates = {}
    for mode in SCRAMBLE_MODES:
        scr = SymbolScrambler(_session(), ScrambleConfig(mode))
        y = scr.scramble(gallery, scr._session.next_nonces(g)) + _cnoise((g, n), 0.01, gen)  # 20 dB
        prof_y = y.abs().sort(dim=1).values
        prof_x = gallery.abs().sort(dim=1).values
        guess = torch.cdist(prof_y, prof_x).argmin(dim=1)
        rates[mode] = (guess == torch.arange(g)).float().mean().item()
    assert rates["permute-phase"] > 0.8, rates
    assert rates["mix"] < 0.15, rates  # chance is 1/64


def test_unscramble_state_for_fading_permute_phase():
    gen = torch.Generator().manual_seed(4)
    b, n, block = 8, 40, 10
    scr = SymbolScrambler(_session(), ScrambleConfig("permute-phase"))
    x = _unit_power((b, n), gen)
    h = _cnoise((b, n // block), 1.0, gen).repeat_interleave(block, dim=1)  # block fading on scrambled positions
    nonces = scr._session.next_nonces(b)
    y = h * scr.scramble(x, nonces)  # noiseless
    assert torch.allclose(scr.unscramble(y / h, nonces), x, atol=1e-12)  # equalise, then unscramble
    h_moved = scr.unscramble_state(h, nonces)  # or unscramble, then equalise with the moved state
    assert torch.allclose(scr.unscramble(y, nonces), h_moved * x, atol=1e-12)
    assert torch.allclose(scr.unscramble_state(h.abs(), nonces), h_moved.abs())  # real state too
    with pytest.raises(ValueError, match="equalise before unscrambling"):
        SymbolScrambler(_session()).unscramble_state(h, nonces)


def test_scramble_input_errors():
    scr = SymbolScrambler(_session())
    nonces = scr._session.next_nonces(2)
    with pytest.raises(TypeError, match="complex"):
        scr.scramble(torch.zeros(2, 4), nonces)
    with pytest.raises(ValueError, match=r"\[B, n\]"):
        scr.scramble(torch.zeros(2, 2, 4, dtype=torch.complex64), nonces)
    with pytest.raises(ValueError, match="one nonce per item"):
        scr.scramble(torch.zeros(3, 4, dtype=torch.complex64), nonces)
    with pytest.raises(ValueError, match="12 bytes"):
        scr.scramble(torch.zeros(2, 4, dtype=torch.complex64), [b"x", b"y"])
    with pytest.raises(ValueError, match="mode must be one of"):
        ScrambleConfig("xor")


# -- embedding mixing and the wire MAC ---------------------------------------------------------------------

def test_embedding_mixer_is_keyed_orthogonal():
    gen = torch.Generator().manual_seed(5)
    e = torch.randn(6, 33, generator=gen, dtype=torch.float64)
    mixer = EmbeddingMixer(_session(), dim=33)
    z = mixer.mix(e)
    assert torch.allclose(mixer.unmix(z), e, atol=1e-12)
    assert torch.allclose(z @ z.T, e @ e.T, atol=1e-12)  # inner products (and norms) kept
    assert torch.allclose(EmbeddingMixer(_session(), dim=33).mix(e), z)  # same key and session: same matrix
    assert not torch.allclose(EmbeddingMixer(_session(2), dim=33).mix(e), z, atol=1e-3)
    assert mixer.mix(e.float()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[B, 33\]"):
        mixer.mix(torch.zeros(2, 32))


def test_message_signer():
    signer = MessageSigner(_key(1))
    tag = signer.sign(b"body")
    assert len(tag) == 32
    MessageSigner(_key(1)).verify(b"body", tag)
    for bad in (lambda: signer.verify(b"bodY", tag),
                lambda: MessageSigner(_key(2)).verify(b"body", tag),
                lambda: MessageSigner(_key(1), context="other").verify(b"body", tag),
                lambda: signer.verify(b"body", tag[:-1])):
        with pytest.raises(AuthenticationFailed):
            bad()
