"""Private links (:mod:`genscom.schemes.private`) and ``genscom bench privacy`` on tiny offline galleries.

Expectations are computed here, independently of the code under test: the AEAD overhead from its parts
(96-bit nonce + 128-bit tag), the header from its parts (16 nonce bits + 64 tag bits), and the link's
channel uses from the 5G LDPC arithmetic (``k = 1024`` info bits per codeword, ``k - 24`` payload bits
with a CRC; rate 1/2 on QPSK: 1024 channel uses per codeword; rate 1/3 on QPSK: ``3 k / 2``).
Every private analog link here runs its header link at full fidelity (no calibration in tests).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

pytest.importorskip("cryptography", reason="private links need cryptography (pip install 'genscom[privacy]')")

from genscom.bench.privacy import PrivacyBenchConfig, run_privacy_bench
from genscom.bench.retrieval import SchemeSpec, _aggregate, gallery_similarity
from genscom.channels import create_channel
from genscom.data.base import ClipCaptionDataset
from genscom.metrics.retrieval import retrieval_per_query
from genscom.privacy import LinkKey, aead_overhead_bits
from genscom.schemes import SourceBatch, create_scheme
from genscom.schemes.private import (PrivacyConfig, PrivateDelivered, PrivateScheme, ScrambledPayload,
                                     SealedPayload)

NONCE_BITS, TAG_BITS = 96, 128          # AEAD: 96-bit nonce, 128-bit tag per item
HEADER_BITS = 16 + 64                   # analog header: the counter's low 16 bits + a 64-bit HMAC tag
FULL = PrivacyConfig(header_fidelity="full")
AWGN = create_channel("awgn")


def _key(seed: int) -> LinkKey:
    return LinkKey.from_bytes(bytes((seed * 37 + 3 * i) % 256 for i in range(32)))


def _pair(inner, *, config: PrivacyConfig = FULL) -> tuple[PrivateScheme, PrivateScheme]:
    """The legitimate end and an eavesdropper with the same public models and session id, another key."""
    tx = PrivateScheme(inner, _key(1), session_id=b"test-session-0001", config=config)  # reproducible draws
    return tx, PrivateScheme(inner, _key(2), session_id=tx.session_id, config=config)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _embeddings(b: int, d: int, seed: int = 0) -> torch.Tensor:
    return _unit(torch.randn(b, d, generator=torch.Generator().manual_seed(seed)))


# -- costs ----------------------------------------------------------------------------------------------

def test_analog_private_uses_are_plain_plus_the_counted_header():
    inner = create_scheme("semantic-analog")
    tx, _ = _pair(inner)
    batch = SourceBatch(embeddings=_embeddings(5, 16))
    plain, private = inner.transmit(batch), tx.transmit(batch)
    assert isinstance(private, ScrambledPayload)
    header_uses = HEADER_BITS * 3 // 2  # one k = 80 codeword at qpsk-1/3: 240 coded bits on 120 QPSK symbols
    assert torch.equal(plain.channel_uses, torch.full((5,), 8))  # 16 reals, two per channel use
    assert torch.equal(private.channel_uses, plain.channel_uses + header_uses)
    assert torch.equal(private.overhead_uses, torch.full((5,), header_uses))
    assert torch.equal(private.side_bits, plain.side_bits + HEADER_BITS)
    # the scrambler adds no symbol and keeps each item's energy; the symbols on the air differ
    assert private.symbols.shape == plain.symbols.shape
    torch.testing.assert_close(private.symbols.abs().square().sum(-1), plain.symbols.abs().square().sum(-1))
    assert not torch.allclose(private.symbols, plain.symbols)


@pytest.mark.parametrize("dim", [200, 384])
def test_digital_private_uses_are_plain_plus_the_counted_seal(dim):
    """int4: 4 d + 16 bits per item; CRC-24 per k = 1024 codeword (1000 payload bits); qpsk-1/2: 1024 uses each.
    d = 200: 816 bits fit 1 codeword, sealed 1040 need 2; d = 384: 1552 and 1776 bits both need 2."""
    inner = create_scheme("digital-embedding", quantizer="int4", mcs="qpsk-1/2")
    tx, _ = _pair(inner)
    batch = SourceBatch(embeddings=_embeddings(3, dim))
    plain, private = inner.transmit(batch), tx.transmit(batch)
    assert isinstance(private, SealedPayload)
    assert aead_overhead_bits() == NONCE_BITS + TAG_BITS
    n_plain = 4 * dim + 16
    n_sealed = 8 * math.ceil(n_plain / 8) + NONCE_BITS + TAG_BITS
    cw_plain, cw_sealed = math.ceil(n_plain / 1000), math.ceil(n_sealed / 1000)
    assert torch.equal(plain.channel_uses, torch.full((3,), 1024 * cw_plain))
    assert torch.equal(private.channel_uses, torch.full((3,), 1024 * cw_sealed))
    assert torch.equal(private.overhead_uses, private.channel_uses - plain.channel_uses)
    assert torch.equal(private.overhead_bits, torch.full((3,), n_sealed - n_plain + 24 * (cw_sealed - cw_plain)))
    assert all(len(s) * 8 == n_sealed for s in private.bits)
    assert private.bit_rows is None and private.inner.bit_rows is None  # no plaintext on the private payload


def test_bitstream_private_uses_are_plain_plus_the_counted_seal():
    """jpeg-ldpc at a fixed MCS (no CRC on that link: 1024 payload bits per codeword, 1024 uses at qpsk-1/2)."""
    inner = create_scheme("jpeg-ldpc", quality=50, mcs="qpsk-1/2")
    tx, _ = _pair(inner)
    frames = torch.randint(0, 256, (3, 1, 16, 16, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    batch = SourceBatch(frames=frames)
    plain, private = inner.transmit(batch), tx.transmit(batch)
    for i, item in enumerate(plain.bits):
        sealed_bits = 8 * len(item) + NONCE_BITS + TAG_BITS
        assert int(plain.channel_uses[i]) == 1024 * math.ceil(8 * len(item) / 1024)
        assert int(private.channel_uses[i]) == 1024 * math.ceil(sealed_bits / 1024)
        assert int(private.overhead_bits[i]) == NONCE_BITS + TAG_BITS


# -- authentication ----------------------------------------------------------------------------------------

def test_wrong_key_fails_authentication_as_counted_failures():
    emb = _embeddings(6, 32)
    inner = create_scheme("digital-embedding", quantizer="int4", mcs="qpsk-1/2")
    tx, eve = _pair(inner)
    payload = tx.transmit(SourceBatch(embeddings=emb))
    legit, stolen = tx.deliver(payload, None, None), eve.deliver(payload, None, None)
    assert isinstance(stolen, PrivateDelivered)
    assert stolen.failed.all() and stolen.auth_failed.all() and not stolen.link_failed.any()
    assert torch.count_nonzero(stolen.embeddings) == 0  # erased, never decoded from garbage
    # the key holder gets exactly what the plain scheme delivers
    plain = inner.deliver(inner.transmit(SourceBatch(embeddings=emb)), None, None)
    assert not legit.failed.any() and not legit.auth_failed.any()
    assert torch.equal(legit.embeddings, plain.embeddings)

    clips = create_scheme("jpeg-ldpc", quality=50, mcs="qpsk-1/2")
    tx, eve = _pair(clips)
    frames = torch.randint(0, 256, (2, 1, 16, 16, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    payload = tx.transmit(SourceBatch(frames=frames))
    stolen = eve.deliver(payload, None, None)
    assert stolen.failed.all() and all(f is None for f in stolen.frames)
    got = tx.deliver(payload, None, None)
    assert not got.failed.any() and all(f is not None and f.shape == (1, 16, 16, 3) for f in got.frames)


def test_one_flipped_bit_is_rejected():
    emb = _embeddings(4, 32, seed=3)
    inner = create_scheme("digital-embedding", quantizer="int4", mcs="qpsk-1/2")
    tx, _ = _pair(inner)
    payload = tx.transmit(SourceBatch(embeddings=emb))
    for byte in (0, 20, len(payload.bits[1]) - 1):  # the nonce, the ciphertext, the tag
        sealed = list(payload.bits)
        sealed[1] = sealed[1][:byte] + bytes([sealed[1][byte] ^ 0x10]) + sealed[1][byte + 1:]
        got = tx.deliver(dataclasses.replace(payload, bits=sealed), None, None)
        assert got.failed.tolist() == [False, True, False, False]
        assert got.auth_failed.tolist() == [False, True, False, False]
        assert torch.count_nonzero(got.embeddings[1]) == 0
    # an analog header with one flipped bit does not verify (with on_header_failure="fail" the item is lost)
    strict = PrivacyConfig(header_fidelity="full", on_header_failure="fail")
    atx = PrivateScheme(create_scheme("semantic-analog"), _key(1), config=strict)
    ap = atx.transmit(SourceBatch(embeddings=emb))
    headers = list(ap.headers)
    headers[2] = bytes([headers[2][0] ^ 0x01]) + headers[2][1:]
    got = atx.deliver(dataclasses.replace(ap, headers=headers), None, None)
    assert got.auth_failed.tolist() == [False, False, True, False] and got.failed.tolist() == [False, False, True, False]
    torch.testing.assert_close(got.embeddings[[0, 1, 3]], emb[[0, 1, 3]], atol=1e-5, rtol=0)


def test_failed_codewords_are_counted_failures_through_authentication():
    """On the calibrated abstract link a failed codeword carries drawn wrong bits: its item's seal no longer opens."""
    emb = _embeddings(64, 384, seed=4)
    inner = create_scheme("digital-embedding", quantizer="int4", mcs="qpsk-1/2", fidelity="abstract")
    tx, _ = _pair(inner)
    payload = tx.transmit(SourceBatch(embeddings=emb))
    got = tx.deliver(payload, AWGN, 1.3, generator=torch.Generator().manual_seed(0))  # near qpsk-1/2's waterfall
    assert 0 < int(got.link_failed.sum()) < 64
    assert torch.equal(got.failed, got.link_failed | got.auth_failed)
    assert not (got.auth_failed & ~got.link_failed).any()  # a clean item always opens
    assert got.auth_failed[got.link_failed].float().mean() > 0.9  # the drawn bit errors break the tag
    assert torch.count_nonzero(got.embeddings[got.failed]) == 0 and torch.count_nonzero(got.embeddings[~got.failed]) > 0


def test_adapted_private_is_exactly_inverted_by_the_key_holder():
    emb = _embeddings(4, 384, seed=5)
    inner = create_scheme("adapted", adapter="mini-k192", k=64)
    tx, _ = _pair(inner)
    plain = inner.deliver(inner.transmit(SourceBatch(embeddings=emb)), None, None).embeddings
    payload = tx.transmit(SourceBatch(embeddings=emb))
    assert torch.equal(payload.n_data, torch.full((4,), 64))
    torch.testing.assert_close(tx.deliver(payload, None, None).embeddings, plain, atol=1e-5, rtol=1e-4)


# -- retrieval: the legitimate receiver and the eavesdropper -------------------------------------------

N, D, CAPS, R = 48, 16, 4, 6


def _retrieval_kit():
    items = _embeddings(N, D, seed=10)
    noise = torch.randn(N * CAPS, D, generator=torch.Generator().manual_seed(11))
    queries = _unit(items.repeat_interleave(CAPS, dim=0) + 0.35 * noise)
    return items, queries, torch.arange(N).repeat_interleave(CAPS)


def _r1(runs):
    means, cis = _aggregate(runs)
    return means["t2v_R@1"], cis["t2v_R@1"]


def test_analog_legit_matches_plain_and_the_eavesdropper_is_at_chance():
    items, queries, t2i = _retrieval_kit()
    batch = SourceBatch(embeddings=items)
    inner = create_scheme("semantic-analog")
    tx, eve = _pair(inner)

    def runs(scheme, snr, salt, payloads=None):
        out = []
        for r in range(R):
            g = torch.Generator().manual_seed(1000 * r + salt)
            p = scheme.transmit(batch) if payloads is None else payloads[r]
            out.append(retrieval_per_query(gallery_similarity(queries, scheme.deliver(p, AWGN, snr, generator=g)
                                                              .embeddings), t2i))
        return out

    for snr in (-3.0, 20.0):
        plain, plain_ci = _r1(runs(inner, snr, 1))
        private, _ = _r1(runs(tx, snr, 1))  # the same generator seeds: the same channel draws
        print(f"{snr:+.1f} dB: plain {plain:.3f} ± {plain_ci:.3f}, private {private:.3f}")
        assert abs(private - plain) <= plain_ci, (snr, plain, private, plain_ci)
    chance = 1.0 / N
    sent = [tx.transmit(batch) for _ in range(R)]
    stolen, _ = _r1(runs(eve, 20.0, 7, sent))
    print(f"eavesdropper at +20 dB: {stolen:.3f} (chance {chance:.3f})")
    assert stolen <= 2 * chance, (stolen, chance)
    # without encryption, the eavesdropper at the receiver's SNR decodes as well as the receiver
    legit, legit_ci = _r1(runs(inner, 20.0, 1))
    overheard, _ = _r1(runs(inner, 20.0, 7))
    assert legit > 10 * chance and abs(overheard - legit) <= legit_ci


# -- the benchmark ---------------------------------------------------------------------------------------

class ColourClips(ClipCaptionDataset):
    """12 clips of one flat colour each; caption i names item i."""

    name = "colour-clips"

    def __init__(self, n: int = 12, seed: int = 0):
        self.colours = torch.randint(0, 256, (n, 3), generator=torch.Generator().manual_seed(seed)).to(torch.uint8)

    def __len__(self):
        return len(self.colours)

    def load_frames(self, i):
        return self.colours[i].view(1, 1, 1, 3).expand(1, 16, 16, 3).clone()

    def captions_of(self, i):
        return [f"item {i}"]


class LookupEncoder(torch.nn.Module):
    """Clip -> a fixed random projection of its mean colour; caption 'item i' -> clip i's vector."""

    def __init__(self, ds: ColourClips, dim: int = 16):
        super().__init__()
        self.proj = torch.randn(3, dim, generator=torch.Generator().manual_seed(1))
        self.table = {f"item {i}": self._embed(ds.colours[i].float().view(1, 3))[0] for i in range(len(ds))}

    def _embed(self, rgb):
        return _unit((rgb / 255.0 - 0.5) @ self.proj)

    def encode_text(self, texts, batch_size=64):
        return torch.stack([self.table[t] for t in texts])

    def encode_clips(self, clips, batch_size=64):
        return self._embed(clips.float().mean(dim=(1, 2, 3)))


def test_privacy_bench_writes_the_results_file(tmp_path):
    ds = ColourClips()
    key_file = _key(1).save(tmp_path / "link.key")
    cfg = PrivacyBenchConfig(profile="lookup", snrs=(0.0, 20.0), legit_snr_db=20.0, realisations=2,
                             out_dir=str(tmp_path / "out"), key_file=str(key_file))
    specs = [SchemeSpec("semantic-analog"),
             SchemeSpec("digital-embedding", {"quantizer": "int4", "mcs": "qpsk-1/2", "fidelity": "abstract"}),
             SchemeSpec("jpeg-ldpc", {"quality": 50, "mcs": "qpsk-1/2", "fidelity": "abstract"})]
    res = run_privacy_bench(cfg, schemes=specs, encoder=LookupEncoder(ds), dataset=ds, privacy=FULL)
    data = json.loads((tmp_path / "out" / "privacy.json").read_text())
    assert data["benchmark"] == "privacy" and data["meta"]["chance_t2v_R1"] == pytest.approx(1 / 12)
    rows = [r for r in data["records"] if r["snr_db"] is not None]
    # per scheme: 2 modes x (2 legit SNRs + 2 eavesdropper SNRs)
    assert len(rows) == 3 * 2 * 4
    for r in rows:
        assert r["receiver"] in ("legit", "eve") and isinstance(r["encrypted"], bool)
        assert ("eve_snr_db" in r) == (r["receiver"] == "eve")
        assert {"t2v_R@1", "RSUM"} <= set(r["metrics"]) and "t2v_R@1" in r["ci95"]
        if r["receiver"] == "eve":
            assert r["snr_db"] == 20.0 and r["eve_snr_db"] in (0.0, 20.0)
        if not r["encrypted"]:
            assert r["overhead_uses"] == 0.0
    by = {(r["scheme"], r["receiver"], r["encrypted"], r.get("eve_snr_db", r["snr_db"])): r for r in rows}
    analog_plain = by[("semantic-analog", "legit", False, 20.0)]["channel_uses"]
    assert by[("semantic-analog", "legit", True, 20.0)]["channel_uses"] == analog_plain + HEADER_BITS * 3 // 2
    for name in ("semantic-analog", "digital-embedding-int4", "jpeg-ldpc"):
        plain, private = by[(name, "legit", False, 20.0)], by[(name, "legit", True, 20.0)]
        assert by[(name, "eve", True, 20.0)]["metrics"]["t2v_R@1"] < private["metrics"]["t2v_R@1"]
        if name == "semantic-analog":  # a fresh session (random unitary) per run: the same noise statistics
            assert private["metrics"]["t2v_R@1"] >= 0.9 and plain["metrics"]["t2v_R@1"] >= 0.9
        else:  # the same bits arrive: exactly the plain scheme's result
            assert private["metrics"] == plain["metrics"]
    assert by[("digital-embedding-int4", "eve", True, 20.0)]["auth_failure_rate"] == 1.0
    assert set(res["overhead"]) == {"semantic-analog", "digital-embedding-int4", "jpeg-ldpc"}
    assert (tmp_path / "out" / "privacy_r1.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "privacy.md").exists()
    assert key_file.read_text().strip() not in (tmp_path / "out" / "privacy.json").read_text()  # no key in results


def test_cli_offers_bench_privacy():
    from typer.testing import CliRunner

    from genscom.cli import app

    out = CliRunner().invoke(app, ["bench", "privacy", "--help"])
    assert out.exit_code == 0 and "--quick" in out.output and "--key-file" in out.output
