"""The demo receiver's wire defences (issue 13): signatures, replay, size limits, field checks, bounded state.

One receiver server (``build_demo("rx")`` in a thread, tiny profile) takes a fuzz set of hostile posts; each
must get its 4xx, the receiver keeps serving, its last result is unchanged, and its memory stays bounded.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import socket
import time

import pytest
import torch

pytest.importorskip("gradio", reason="the demo server needs gradio")
httpx = pytest.importorskip("httpx")

from genscom.demo.app import build_demo, free_port, send_to_receiver, serve  # noqa: E402
from genscom.demo.engine import (  # noqa: E402
    DemoConfig,
    DemoReceiver,
    DemoTransmitter,
    TxSettings,
    offered_schemes,
)
from genscom.demo.guard import (  # noqa: E402
    TIMESTAMP_HEADER,
    ReplayWindow,
    WireRejected,
    sign_headers,
)
from genscom.demo.wire import Transmission, decode_message, encode_message  # noqa: E402
from genscom.privacy import LinkKey, MessageSigner  # noqa: E402

CFG = DemoConfig(profile="tiny", gallery_size=6, num_frames=2, max_side=64, max_message_mb=1.0)
KEY = LinkKey.from_bytes(bytes(range(32)))
SIGNER = MessageSigner(KEY)


@pytest.fixture(scope="module")
def tx():
    return DemoTransmitter(CFG)


@pytest.fixture(scope="module")
def rx_server(tx):
    parts = build_demo("rx", CFG, encoder=tx.encoder, key=KEY)
    srv = serve(parts, port=free_port())
    yield srv, parts.receiver
    srv.close()


def _post(url: str, body: bytes, *, signer: MessageSigner | None = SIGNER, headers: dict | None = None):
    h = {"content-type": "application/octet-stream"}
    if signer is not None:
        h.update(sign_headers(signer, body))
    h.update(headers or {})
    return httpx.post(url + "/genscom/receive", content=body, headers=h, timeout=60, trust_env=False)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mutated(message: bytes, change) -> bytes:
    msg = decode_message(message)
    change(msg)
    return encode_message(msg)


def test_auth_replay_and_wrong_key(tx, rx_server):
    srv, _ = rx_server
    body = tx.transmit(tx.item("synthetic/1"), TxSettings(snr_db=20.0)).message
    r = _post(srv.url, body, signer=None)
    assert r.status_code == 401 and "unsigned message" in r.json()["error"]
    h = sign_headers(SIGNER, body)
    ok = httpx.post(srv.url + "/genscom/receive", content=body, headers=h, timeout=60, trust_env=False)
    assert ok.status_code == 200 and ok.json()["ok"]
    again = httpx.post(srv.url + "/genscom/receive", content=body, headers=h, timeout=60, trust_env=False)
    assert again.status_code == 403 and "replayed" in again.json()["error"]
    wrong = _post(srv.url, body, signer=MessageSigner(LinkKey.generate()))
    assert wrong.status_code == 403 and "authentication failed" in wrong.json()["error"]
    assert KEY.fingerprint in wrong.json()["error"]  # the fingerprints say why; never the key
    stale = _post(srv.url, body, headers={TIMESTAMP_HEADER: f"{time.time() - 3600:.3f}"})
    assert stale.status_code == 403 and "stale" in stale.json()["error"]
    tampered = dict(sign_headers(SIGNER, body))
    r = httpx.post(srv.url + "/genscom/receive", content=body[:-1] + bytes([body[-1] ^ 1]), headers=tampered,
                   timeout=60, trust_env=False)
    assert r.status_code == 403


def test_replay_window_is_bounded():
    w = ReplayWindow(max_age_s=1.0, max_entries=3)
    for i in range(3):
        w.add(f"{i:032x}", now=100.0)
    with pytest.raises(WireRejected, match="replay window is full") as e:
        w.add("f" * 32, now=100.5)
    assert e.value.status == 503
    w.add("f" * 32, now=103.0)  # the old nonces expired (older than the timestamp window)
    assert len(w) == 1
    with pytest.raises(WireRejected, match="replayed"):
        w.add("f" * 32, now=103.1)


def test_body_limit_from_content_length_and_while_streaming(rx_server):
    srv, _ = rx_server
    # a huge declared body, of which only a few bytes are sent: the answer comes before the body
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(b"POST /genscom/receive HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: 800000000\r\n\r\n" + b"\x00" * 1024)
        reply = s.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    # no Content-Length (chunked): cut off while streaming
    limit = CFG.max_message_bytes

    def chunks():
        for _ in range(limit // 65536 + 4):
            yield b"\x00" * 65536

    h = sign_headers(SIGNER, b"")  # headers are checked first; the body never gets to the MAC
    r = httpx.post(srv.url + "/genscom/receive", content=chunks(), headers=h, timeout=60, trust_env=False)
    assert r.status_code == 413 and "exceeds" in r.json()["error"], r.text


def _fuzz_set(tx) -> dict[str, bytes]:
    """Hostile but correctly signed messages, each built from a real one."""
    base = tx.transmit(tx.item("synthetic/2"), TxSettings(snr_db=20.0)).message
    dig = tx.transmit(tx.item("synthetic/2"), TxSettings(scheme="digital-embedding", snr_db=20.0)).message

    def frames(m):
        m.transmissions[1].payload.extras["shape"] = (10**6, 64, 64, 3)

    def nan(m):
        m.transmissions[0].payload.symbols[0, 0] = complex(float("nan"), 0.0)

    def inf(m):
        m.transmissions[0].payload.symbols[0, 1] = complex(0.0, float("inf"))

    def nan_bits(m):
        m.transmissions[0].payload.bit_rows[0, 0] = float("inf")

    def unknown_setting(m):
        m.transmissions[0].settings["frobnicate"] = 3

    def path_setting(m):
        m.transmissions[0].settings["knowledge_base"] = "/etc/passwd"

    def memory_path(m):
        m.transmissions[0].scheme = "memory"
        m.transmissions[0].settings = {"knowledge_base": "/tmp/kb.pkl", "threshold": 0.9}

    def agent_card(m):
        m.transmissions[0].scheme = "agent"
        m.transmissions[0].settings = {"card": "/etc/passwd", "captions": True}

    def baseline_path(m):
        m.transmissions[1].settings["adapter"] = "../../adapters/x"

    def huge_budget(m):
        m.transmissions[0].settings["repeat"] = 10**8

    def huge_uses(m):
        m.transmissions[0].payload.channel_uses[0] = 10**12

    def many_items(m):
        p = m.transmissions[0].payload
        m.transmissions[0].payload = dataclasses.replace(p, symbols=p.symbols.repeat(3, 1),
                                                         channel_uses=p.channel_uses.repeat(3),
                                                         side_bits=p.side_bits.repeat(3))

    def forged_state(m):
        m.transmissions[1].payload.extras["received_bytes"] = [b"\x00"]

    def unknown_scheme(m):
        m.transmissions[0].scheme = "../../etc/passwd"

    def bad_dim(m):
        m.transmissions[0].payload.dim = 10**6

    def lengths(m):
        m.transmissions[1].payload.extras["lengths"] = [[10**9]]

    def extra_transmission(m):
        m.transmissions.append(Transmission(m.transmissions[1].scheme, m.transmissions[1].settings,
                                            m.transmissions[1].payload, "baseline"))

    def gallery(m):
        m.eval["gallery_index"] = 10**6

    def snr(m):
        m.snr_db = float("nan")

    out = {name: _mutated(base, f) for name, f in [
        ("10**6 frames", frames), ("NaN symbols", nan), ("Inf symbols", inf), ("unknown setting", unknown_setting),
        ("path in a setting", path_setting), ("memory with a KB path", memory_path), ("agent card path", agent_card),
        ("baseline path", baseline_path), ("budget 10**8", huge_budget), ("10**12 channel uses", huge_uses),
        ("3 items", many_items), ("receiver-side extras", forged_state), ("unknown scheme", unknown_scheme),
        ("dim 10**6", bad_dim), ("stream length 10**9", lengths), ("3 transmissions", extra_transmission),
        ("gallery index", gallery), ("NaN SNR", snr)]}
    out["Inf bit rows"] = _mutated(dig, nan_bits)
    out["garbage"] = b"\x08\x00\x00\x00\x00\x00\x00\x00{}" + os.urandom(100)
    return out


def test_fuzz_set_rejected_and_receiver_unchanged(tx, rx_server):
    srv, receiver = rx_server
    good = tx.transmit(tx.item("synthetic/3"), TxSettings(snr_db=20.0)).message
    assert _post(srv.url, good).status_code == 200
    latest, version, cached = receiver.latest, receiver.version, len(receiver.schemes)
    fuzz = _fuzz_set(tx)
    rss0, peak0 = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(3):  # repeated: nothing may accumulate per rejected message
        for name, body in fuzz.items():
            r = _post(srv.url, body)
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
            assert r.json()["ok"] is False and r.json()["error"], name
    growth = _rss_bytes() - rss0
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak0
    print(f"fuzz: {len(fuzz)} messages x 3, RSS growth {growth / 1e6:.1f} MB, peak growth {peak_growth / 1e6:.1f} MB")
    assert growth < 100e6 and peak_growth < 100e6
    assert receiver.latest is latest and receiver.version == version and len(receiver.schemes) == cached
    # the NaN message's reason is spelled out
    r = _post(srv.url, fuzz["NaN symbols"])
    assert r.status_code == 400 and "NaN or Inf" in r.json()["error"]
    assert "not accepted" in _post(srv.url, fuzz["path in a setting"]).json()["error"]
    assert "frame count" in _post(srv.url, fuzz["10**6 frames"]).json()["error"]
    # and it keeps serving
    assert httpx.get(srv.url + "/genscom/health", timeout=10, trust_env=False).json()["ok"]
    reply = send_to_receiver(srv.url, tx.transmit(tx.item("synthetic/4"), TxSettings(snr_db=20.0)).message,
                             signer=SIGNER, timeout_s=60)
    assert reply["ok"] and receiver.version == version + 1


def test_transmitter_caps_the_budget(tx):
    cfg = dataclasses.replace(CFG, max_channel_uses=100)
    with pytest.raises(ValueError, match="exceeds the demo's budget of 100"):
        DemoTransmitter(cfg, encoder=tx.encoder).transmit(tx.item("synthetic/1"),
                                                          TxSettings(knobs={"repeat": 10**8}))
    small = DemoTransmitter(dataclasses.replace(CFG, max_channel_uses=12), encoder=tx.encoder)
    with pytest.raises(ValueError, match="budget"):  # 8 symbols x 2 = 16 > 12
        small.transmit(tx.item("synthetic/1"), TxSettings(knobs={"repeat": 2}))


def test_scheme_cache_is_bounded_lru(tx):
    rx = DemoReceiver(dataclasses.replace(CFG, scheme_cache_size=2), encoder=tx.encoder)
    for r in (1, 2, 3):
        rx.receive(tx.transmit(tx.item("synthetic/1"), TxSettings(knobs={"repeat": r})).message)
        assert len(rx.schemes) <= 2


def test_shared_storage_tensors_cross_the_wire(tx):
    """Two payload tensors sharing storage (as the adapted scheme's keep masks may) must still encode."""
    msg = decode_message(tx.transmit(tx.item("synthetic/1"), TxSettings()).message)
    shared = torch.ones(1, 4, dtype=torch.bool)
    msg.transmissions[0].payload.extras.update(a=shared, b=shared[:, :2], c=shared)
    back = decode_message(encode_message(msg)).transmissions[0].payload.extras
    assert back["a"].shape == (1, 4) and back["b"].shape == (1, 2) and back["c"].dtype == torch.bool


@pytest.mark.parametrize("channel", ["awgn", "rician"])
@pytest.mark.parametrize("scheme", [s for s in offered_schemes(CFG) if not s.startswith("adapted")])
def test_scheme_round_trips_over_the_wire(tx, rx_server, scheme, channel):
    srv, _ = rx_server
    settings = TxSettings(scheme=scheme, channel=channel, snr_db=20.0)
    reply = send_to_receiver(srv.url, tx.transmit(tx.item("synthetic/5"), settings).message, signer=SIGNER, timeout_s=60)
    assert reply["ok"] and reply["baseline"]["scheme"] == "h264-ldpc" and reply["channel"] == channel


def test_adapted_schemes_round_trip_over_the_wire():
    """``adapted`` (its adapter was trained on the ``mini`` profile's 384-d embeddings) over the checked wire."""
    cfg = DemoConfig(profile="mini", gallery_size=4, num_frames=2, max_side=64)
    names = [s for s in offered_schemes(cfg) if s.startswith("adapted")]
    if not names:
        pytest.skip("the adapted schemes are not installed here")
    mtx = DemoTransmitter(cfg)
    mrx = DemoReceiver(cfg, encoder=mtx.encoder)
    for name in names:
        t = mtx.transmit(mtx.item("synthetic/1"), TxSettings(scheme=name, channel="rayleigh", snr_db=20.0))
        res = mrx.receive(t.message)
        assert res.embedding is not None and torch.isfinite(res.embedding).all() and res.channel_uses > 0, name


def test_key_file_made_when_missing(tmp_path):
    from genscom.demo.app import load_or_create_key

    path = tmp_path / "keys" / "demo.key"
    key, note = load_or_create_key(None, default_path=path)
    assert path.is_file() and (path.stat().st_mode & 0o777) == 0o600
    assert str(path) in note and key.fingerprint in note and "--key-file" in note
    again, note2 = load_or_create_key(None, default_path=path)  # the other process on this machine reads it
    assert again == key and "using the demo link key" in note2
    same, none = load_or_create_key(path)
    assert same == key and none is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_or_create_key(tmp_path / "missing.key")


def test_cli_demo_commands_take_key_file():
    from typer.testing import CliRunner

    from genscom.cli import app

    for cmd in ("tx", "rx"):
        out = CliRunner().invoke(app, ["demo", cmd, "--help"], env={"COLUMNS": "200"})
        assert out.exit_code == 0 and "--key-file" in out.output and "--regen-decoder" in out.output, out.output
