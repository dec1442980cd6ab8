"""The demo's two-process mode over localhost, the wire format, and upload errors (no browser)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from genscom.demo.content import UploadError, read_upload
from genscom.demo.engine import DemoConfig, DemoReceiver, DemoTransmitter, TxSettings
from genscom.demo.wire import PRIVATE_EXTRAS, decode_message, encode_message
from genscom.schemes.base import Payload

CFG = DemoConfig(profile="tiny", gallery_size=6, num_frames=2, max_side=64, max_upload_mb=0.02)


@pytest.fixture(scope="module")
def tx():
    return DemoTransmitter(CFG)


def test_wire_round_trip_strips_private_extras(tx):
    t = tx.transmit(tx.item("synthetic/1"), TxSettings(scheme="semantic-analog", snr_db=5.0))
    msg = decode_message(t.message)
    sem, base = msg.transmissions
    assert (msg.channel, msg.snr_db, msg.eval["item"]) == ("awgn", 5.0, "synthetic/1")
    assert sem.payload.symbols.dtype == torch.complex64 and sem.payload.symbols.shape == (1, 8)  # tiny: 16-d -> 8 uses
    assert torch.allclose(sem.payload.symbols[0], t.symbols)
    assert base.scheme == "h264-ldpc" and len(base.payload.bits) == 1 and base.payload.extras["shape"] == (2, 64, 64, 3)
    p = Payload(symbols=None, channel_uses=torch.zeros(1, dtype=torch.int64), side_bits=torch.zeros(1, dtype=torch.int64),
                bits=[b"\x00\xffab"], extras={"tx_embeddings": torch.ones(1, 4), "_cache": {}, "dim": 4, "keep": torch.ones(1, 3, dtype=torch.bool)})
    msg.transmissions[0].payload = p
    back = decode_message(encode_message(msg)).transmissions[0].payload
    assert back.bits == [b"\x00\xffab"] and set(back.extras) == {"dim", "keep"} and back.extras["keep"].dtype == torch.bool
    assert not PRIVATE_EXTRAS & set(back.extras)


def test_wire_rejects_garbage():
    with pytest.raises(ValueError, match="not a genscom-demo-wire/1 message"):
        decode_message(b"\x00" * 40)


def test_receiver_decodes_in_process(tx):
    rx = DemoReceiver(CFG, encoder=tx.encoder)
    clean = tx.encoder.encode_clips(tx.item("synthetic/2").frames[None]).float()[0]
    hi = rx.receive(tx.transmit(tx.item("synthetic/2"), TxSettings(snr_db=30.0)).message)
    lo = rx.receive(tx.transmit(tx.item("synthetic/2"), TxSettings(snr_db=-10.0)).message)
    assert torch.dot(hi.embedding, clean) > 0.95 > torch.dot(lo.embedding, clean)
    assert hi.channel_uses == lo.channel_uses == 8
    assert not hi.baseline_failed and hi.baseline_block_errors == 0 and lo.baseline_block_errors > 0
    rk = rx.rank(hi, tx.item("synthetic/2").captions[0])
    assert 1 <= rk.rank <= rk.n == CFG.gallery_size and len(rk.top) == 5
    with pytest.raises(ValueError, match="type a text query"):
        rx.rank(hi, "  ")


def test_bad_uploads_messages(tmp_path):
    kw = dict(max_bytes=CFG.max_upload_bytes, max_side=64, num_frames=2)
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(UploadError, match="'clip.mp4' is not a readable video"):
        read_upload(bad, **kw)
    img = tmp_path / "x.png"
    img.write_bytes(b"not a png")
    with pytest.raises(UploadError, match="not a readable image"):
        read_upload(img, **kw)
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(25_000))
    with pytest.raises(UploadError, match=r"too large: 0.03 MB; the limit is 0.02 MB"):
        read_upload(big, **kw)
    with pytest.raises(UploadError, match="unsupported type '.txt'"):
        (tmp_path / "a.txt").write_text("hi")
        read_upload(tmp_path / "a.txt", **kw)
    from PIL import Image

    Image.new("RGB", (100, 50), (200, 10, 10)).save(tmp_path / "ok.png")
    item = read_upload(tmp_path / "ok.png", **kw)
    assert item.frames.shape == (1, 32, 64, 3) and item.gallery_index is None


def test_unreachable_receiver_message():
    pytest.importorskip("httpx")
    from genscom.demo.app import ReceiverError, free_port, send_to_receiver

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ReceiverError, match=f"the receiver at {url} is unreachable"):
        send_to_receiver(url, b"x", timeout_s=5)


def test_two_processes_over_localhost(tx, tmp_path, tiny_regen_decoder):
    """An RX process (``python -m genscom.demo rx``) decodes what this TX process POSTs to it, signed with the
    shared key file; an unsigned post is refused. With its own image decoder (``--regen-decoder``) it regenerates
    the image of a ``regen`` transmission; the wire carries only the payload and the rate knob."""
    pytest.importorskip("gradio", reason="the demo server needs gradio")
    import httpx

    from genscom.demo.app import free_port, send_to_receiver
    from genscom.privacy import MessageSigner, generate_key_file

    key_file = tmp_path / "link.key"
    signer = MessageSigner(generate_key_file(key_file))
    port = free_port()
    cmd = [sys.executable, "-m", "genscom.demo", "rx", "--port", str(port), "--profile", "tiny", "--gallery-size", "6",
           "--num-frames", "2", "--max-side", "64", "--key-file", str(key_file)]
    decoder = tiny_regen_decoder(tmp_path / "regen-tiny")
    if decoder is not None:
        cmd += ["--regen-decoder", str(decoder)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(url + "/genscom/health", timeout=2, trust_env=False).json()["mode"] == "rx":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                pytest.fail(f"receiver process did not start: {proc.stderr.read() if proc.poll() is not None else 'timeout'}")
            time.sleep(0.25)
        item = tx.item("synthetic/3")
        clean = tx.encoder.encode_clips(item.frames[None]).float()[0]
        message = tx.transmit(item, TxSettings(snr_db=30.0)).message
        r = httpx.post(url + "/genscom/receive", content=message, timeout=10, trust_env=False)
        assert r.status_code == 401 and "unsigned message" in r.json()["error"]
        reply = send_to_receiver(url, message, signer=signer, timeout_s=60)
        assert reply["ok"] and reply["channel_uses"] == 8 and reply["scheme"] == "semantic-analog"
        assert torch.dot(torch.tensor(reply["embedding"]), clean) > 0.95  # RX decoded what TX sent
        assert reply["baseline"]["scheme"] == "h264-ldpc" and not reply["baseline"]["failed"]
        assert len(reply["constellation"]["received"]) == 8
        from genscom.demo.guard import sign_headers

        r = httpx.post(url + "/genscom/receive", content=b"junk", headers=sign_headers(signer, b"junk"), timeout=10,
                       trust_env=False)
        assert r.status_code == 400 and "not a genscom-demo-wire/1 message" in r.json()["error"]
        if decoder is not None:  # the image task: the receiver process draws the frame with its own decoder
            from dataclasses import replace

            rtx = DemoTransmitter(replace(CFG, regen_decoder=str(decoder)), encoder=tx.encoder)
            t = rtx.transmit(item, TxSettings(scheme="regen", task="image regeneration", snr_db=10.0))
            assert decode_message(t.message).transmissions[0].settings == {"repeat": 1}
            reply = send_to_receiver(url, t.message, signer=signer, timeout_s=60)
            assert reply["scheme"] == "regen" and reply["regenerated"] == [16, 16, 3] and reply["channel_uses"] == 8
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
