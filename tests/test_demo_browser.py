"""End-to-end test of the Gradio demo in headless Chromium (Playwright + Debian's /usr/bin/chromium).

Skipped, with the reason, when gradio, playwright or the chromium binary is missing;
CI installs all three (see .ci/run). The server binds 127.0.0.1 and is shut down after.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install gradio)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (pip install playwright)")
CHROMIUM = os.environ.get("GENSCOM_CHROMIUM", "/usr/bin/chromium")
if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"the browser test needs Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

from genscom.demo.app import build_demo, free_port, serve  # noqa: E402
from genscom.demo.engine import DemoConfig  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_regen_decoder):
    tmp = tmp_path_factory.mktemp("demo")
    results = tmp / "retrieval.json"
    results.write_text(json.dumps({"benchmark": "retrieval", "meta": {"seed": 0}, "records": [
        {"scheme": s, "channel": "awgn", "snr_db": snr, "channel_uses": 8, "bits": None, "cbr": 0.0,
         "failure_rate": 0.0, "metrics": {"t2v_R@1": r}, "ci95": {"t2v_R@1": 0.0}}
        for s, off in (("semantic-analog", 0.0), ("h264-ldpc", -0.2)) for snr, r in ((-10.0, 0.1), (0.0, 0.4), (10.0, 0.6))
        for r in [max(0.0, r + off)]]}))
    cfg = DemoConfig(profile="tiny", gallery_size=8, num_frames=2, max_side=64, max_upload_mb=0.02,
                     results_path=str(results), regen_decoder=tiny_regen_decoder(tmp / "regen-tiny"))
    parts = build_demo("combined", cfg)
    srv = serve(parts, port=free_port())
    yield srv, tmp
    srv.close()


@pytest.fixture(scope="module")
def page(server):
    srv, _ = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1800})
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(srv.url, wait_until="domcontentloaded")
        pg.locator("#tx-button").wait_for()
        yield pg
        browser.close()


def _set_snr(page, snr: float) -> None:
    box = page.locator("#tx-snr input[type=number]")
    box.fill(str(snr))
    box.press("Enter")
    box.blur()


def _transmit(page, snr: float) -> None:
    """Click Transmit and wait until the receiver panel shows the result at ``snr`` (or the page shows an error)."""
    page.locator("#tx-button").click()
    page.wait_for_function(
        "([want]) => { const q = (s) => document.querySelector(s)?.innerText || ''; "
        "if (q('#tx-status').includes('Error')) return true; "
        "return q('#rx-baseline').includes(want) && q('#tx-stats').includes('overhead') && !q('#rx-summary').includes('processing'); }",
        arg=[f"at {snr:.1f} dB"])
    status = page.locator("#tx-status").inner_text()
    assert "Error" not in status, status


def test_browser_end_to_end(page, server):
    _, tmp = server
    # choose a clip from the gallery dropdown
    page.locator("#tx-clip input").click()
    page.get_by_role("option", name=re.compile(r"^clip 3:")).click()
    page.wait_for_function("() => (document.querySelector('#rx-query textarea, #rx-query input')?.value || '').length > 0")
    _set_snr(page, 25)
    _transmit(page, 25)
    stats = page.locator("#tx-stats").inner_text()
    assert "channel uses" in stats and "overhead reduction" in stats
    summary = page.locator("#rx-summary").inner_text()
    assert re.search(r"\d+ channel uses", summary), summary
    assert re.search(r"Rank of the true clip: \d+(\.5)? of \d+", summary), summary
    high = page.locator("#rx-baseline").inner_text()
    assert "decoded" in high and "25.0 dB" in high, high
    assert page.locator("#rx-top5 img").count() >= 1
    assert "R@1 vs SNR from" in page.locator("#rx-r1-note").inner_text()
    # a very low SNR breaks the bitstream baseline
    _set_snr(page, -10)
    _transmit(page, -10)
    low = page.locator("#rx-baseline").inner_text()
    assert low != high and "-10.0 dB" in low and ("FAILED" in low or "damaged" in low), low
    page.screenshot(path=str(tmp / "demo.png"), full_page=True)
    assert (tmp / "demo.png").stat().st_size > 10_000


def test_browser_bad_uploads(page, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    page.locator("#tx-upload input[type=file]").set_input_files(str(bad))
    page.wait_for_function("() => (document.querySelector('#tx-status')?.innerText || '').includes('not a readable video')")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(30_000))
    page.reload(wait_until="domcontentloaded")  # a fresh, empty upload box
    page.locator("#tx-button").wait_for()
    page.locator("#tx-upload input[type=file]").set_input_files(str(big))
    page.wait_for_function("() => (document.querySelector('#tx-status')?.innerText || '').includes('too large')")
    msg = page.locator("#tx-status").inner_text()
    assert "the limit is 0.02 MB" in msg, msg
    assert "Traceback" not in page.content()


def test_browser_rate_knobs_follow_the_scheme(page):
    """The panel shows the chosen scheme's declared rate knobs (Scheme.rate_knobs), and they reach the scheme."""
    page.reload(wait_until="domcontentloaded")
    page.locator("#tx-button").wait_for()
    repeat = page.locator("#tx-knob-semantic-analog-repeat")
    assert repeat.is_visible() and not page.locator("#tx-knob-digital-embedding-mcs").is_visible()
    box = repeat.locator("input[type=number]")
    box.fill("2")
    box.press("Enter")
    box.blur()
    _set_snr(page, 20)
    _transmit(page, 20)
    stats = page.locator("#tx-stats").inner_text()
    assert "semantic-analog-x2" in stats and re.search(r"channel uses: 16 per item", stats), stats  # tiny: 8 x 2
    page.locator("#tx-scheme input").click()
    page.get_by_role("option", name="digital-embedding").click()
    page.locator("#tx-knob-digital-embedding-mcs").wait_for(state="visible")
    assert not repeat.is_visible() and page.locator("#tx-knob-digital-embedding-quantizer").is_visible()


def _pick_task(page, task: str) -> None:
    page.locator("#tx-task label", has_text=task).click()


def test_browser_image_regeneration_task(page, server):
    """Picking "image regeneration" selects the regen scheme; after Transmit the receiver shows the regenerated
    image (an <img> with a non-empty src) beside the baseline's decoded frame, with the channel uses of each."""
    srv, _ = server
    pytest.importorskip("diffusers", reason="the regen scheme needs diffusers")
    page.reload(wait_until="domcontentloaded")
    page.locator("#tx-button").wait_for()
    _pick_task(page, "image regeneration")
    page.wait_for_function("() => document.querySelector('#tx-scheme input')?.value === 'regen'")
    assert "regen" in page.locator("#tx-task-note").inner_text()
    _set_snr(page, 12)
    _transmit(page, 12)
    page.wait_for_function("() => (document.querySelector('#rx-regen-img img')?.getAttribute('src') || '').length > 0")
    src = page.locator("#rx-regen-img img").first.get_attribute("src")
    assert src and (src.startswith("data:image") or "/file=" in src or "/gradio_api/file" in src), src
    regen = page.locator("#rx-regen").inner_text()
    assert "Regenerated image" in regen and re.search(r"\b8 channel uses", regen) and "Beside:" in regen, regen
    assert (page.locator("#rx-baseline-img img").first.get_attribute("src") or "") != ""
    assert "regen" in page.locator("#tx-stats").inner_text()
    # the caption task without an agent card: said before sending, and Transmit refuses with the same reason
    _pick_task(page, "caption")
    page.wait_for_function("() => (document.querySelector('#tx-task-note')?.innerText || '').includes('agent card')")
    page.locator("#tx-button").click()
    page.wait_for_function("() => (document.querySelector('#tx-status')?.innerText || '').includes('--agent-card')")
    assert "No caption" not in page.locator("#rx-caption").inner_text()
