"""The Gradio demo: a Transmitter panel and a Receiver panel, combined or as two processes.

* ``build_demo("combined", config)``: one page; the transmitter's wire message is
  handed to the in-process receiver (through the same serialisation as over HTTP).
* ``build_demo("tx", config, rx_url=...)``: the transmitter page; each transmission is
  POSTed to ``{rx_url}/genscom/receive``.
* ``build_demo("rx", config)``: the receiver page and the ``/genscom/receive`` endpoint;
  the page refreshes when a message arrives.

The two processes share a link key (``--key-file``, :func:`load_or_create_key`): the transmitter
signs each post, the receiver accepts only signed, fresh, never-seen posts whose fields fit its own
configuration (:mod:`genscom.demo.guard`; 401/403/413/400). The combined page makes an in-memory key.

:func:`create_server` wraps a page in a FastAPI app (``/genscom/health``,
``/genscom/receive``), :func:`serve` runs it with uvicorn on ``127.0.0.1`` in a thread,
and :func:`launch_demo` is what ``genscom demo`` calls. Errors are shown in the page as
messages (``**Error:** ...``), never as tracebacks.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from genscom.demo.captions import shorten
from genscom.demo.content import UploadError, read_upload
from genscom.demo.engine import (
    CHANNEL_NAMES,
    TASKS,
    DemoConfig,
    DemoReceiver,
    DemoTransmitter,
    RxResult,
    TxResult,
    TxSettings,
    initial_knob_values,
    optional_features,
    rate_knobs,
    offered_schemes,
)
from genscom.demo.generated import caption_markdown, regen_markdown, regenerated_image
from genscom.demo.guard import WireGuard, WireRejected, sign_headers
from genscom.demo.tasks import preferred_scheme, schemes_for_task, task_unavailable
from genscom.privacy.keys import LinkKey
from genscom.privacy.mac import MessageSigner
from genscom.schemes.base import RateKnob

logger = logging.getLogger(__name__)

Mode = Literal["combined", "tx", "rx"]
MODES: tuple[str, ...] = ("combined", "tx", "rx")
RECEIVE_PATH = "/genscom/receive"
HEALTH_PATH = "/genscom/health"
MAX_INFLIGHT = 4  # receiver: posts read or decoded at once (503 above), so memory is <= 4 x the body limit
CSS = ".gs-small {font-size: 0.9em}"


class ReceiverError(RuntimeError):
    """The receiver process could not be reached or refused the message (message meant for the page)."""


def send_to_receiver(rx_url: str, data: bytes, *, signer: MessageSigner | None = None,
                     timeout_s: float = 120.0) -> dict[str, Any]:
    """POST a wire message to a receiver process, signed with ``signer`` (:func:`~genscom.demo.guard.sign_headers`;
    ``None`` sends it unsigned, which a receiver refuses with 401); return its JSON reply.

    Raises:
        ReceiverError: unreachable receiver, timeout, or a rejected message (the text says which).
    """
    import httpx

    url = rx_url.rstrip("/") + RECEIVE_PATH
    headers = {"content-type": "application/octet-stream"}
    if signer is not None:
        headers.update(sign_headers(signer, data))
    try:
        r = httpx.post(url, content=data, headers=headers, timeout=timeout_s,
                       trust_env=False)
    except httpx.TimeoutException:
        raise ReceiverError(f"the receiver at {rx_url} did not answer within {timeout_s:.0f} s") from None
    except (httpx.TransportError, OSError) as exc:
        raise ReceiverError(f"the receiver at {rx_url} is unreachable ({type(exc).__name__}: {exc}); start it with "
                            "`genscom demo rx --port PORT` and pass its address with --rx-url") from None
    try:
        reply = r.json()
    except ValueError:
        raise ReceiverError(f"the receiver at {rx_url} answered HTTP {r.status_code} without JSON; is it a genscom "
                            "demo receiver?") from None
    if r.status_code != 200 or not reply.get("ok"):
        raise ReceiverError(f"the receiver at {rx_url} rejected the message: {reply.get('error', r.status_code)}")
    return reply


# ---------------------------------------------------------------------------- rendering
def _fmt(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


def tx_stats_markdown(t: TxResult) -> str:
    """The transmitter panel's cost summary."""
    s, b = t.settings, t.baseline
    b_label = {"h264-ldpc": "H.264+LDPC", "jpeg-ldpc": "JPEG+LDPC"}
    lines = [f"**Sent** `{t.scheme_name}` · {s.channel} at {s.snr_db:.1f} dB · task: {s.task}",
             f"- channel uses: **{_fmt(t.channel_uses)}** per item (side-information bits: {_fmt(t.side_bits)})",
             f"- bits: {'analog symbols, no bits' if t.bits is None else _fmt(t.bits) + ' bits'}",
             f"- baseline {b_label[b['name']]} ({t.item.frames.shape[0]} frame(s), same content): "
             f"{_fmt(b['channel_uses'])} channel uses ({_fmt(b['bits'])} bits)"]
    if b.get("other_channel_uses"):
        lines.append(f"- {b_label[b['other']]}: {_fmt(b['other_channel_uses'])} channel uses ({_fmt(b['other_bits'])} bits)")
    if b["channel_uses"] and t.channel_uses is not None:
        red = 1.0 - t.channel_uses / b["channel_uses"]
        lines.append(f"- overhead reduction vs {b_label[b['name']]}: **{100 * red:.1f} %**")
    return "\n".join(lines)


def rx_markdown(res: RxResult, receiver: DemoReceiver, query: str) -> tuple[str, list[tuple[Any, str]], str]:
    """(summary with the rank of the true clip, top-5 gallery, baseline text)."""
    from genscom.demo.plots import placeholder, upscale

    msg = res.message
    state = "decoded" if not res.failed else "decoded with a failure flag (fallback used)"
    head = (f"**Received** `{res.scheme_name}` over {msg.channel} at {msg.snr_db:.1f} dB: "
            f"**{_fmt(res.channel_uses)} channel uses**, {state}.")
    top: list[tuple[Any, str]] = []
    try:
        rk = receiver.rank(res, query)
        base = "" if rk.baseline_rank is None else f" (baseline {res.baseline_name}: rank {rk.baseline_rank:g})"
        head += f"\n\n**Rank of the true clip: {rk.rank:g} of {rk.n}** for the query “{rk.query}”{base}."
        for i, score, label in rk.top:
            thumb = receiver.thumbnail(i)
            img = upscale(thumb, 96) if thumb is not None else placeholder("received item")
            top.append((img, f"{score:.2f} · {shorten(label, 60)}"))
    except ValueError as exc:
        head += f"\n\n_{exc}_"
    if res.baseline_frames is None:
        b = (f"**Baseline `{res.baseline_name}` at {msg.snr_db:.1f} dB: FAILED** ({res.baseline_block_errors} "
             f"codeword(s) wrong, nothing decodable; the gallery mean stands in), {_fmt(res.baseline_channel_uses)} channel uses.")
    elif res.baseline_block_errors:
        b = (f"**Baseline `{res.baseline_name}` at {msg.snr_db:.1f} dB: damaged** ({res.baseline_block_errors} "
             f"codeword(s) wrong; decoded what survived), {_fmt(res.baseline_channel_uses)} channel uses.")
    else:
        b = (f"**Baseline `{res.baseline_name}` at {msg.snr_db:.1f} dB: decoded** (0 codewords wrong), "
             f"{_fmt(res.baseline_channel_uses)} channel uses.")
    return head, top, b


def baseline_image(res: RxResult) -> Any:
    from genscom.demo.plots import failure_marker, upscale

    if res.baseline_frames is None:
        return failure_marker("LDPC failed")
    fr = res.baseline_frames
    return upscale(fr[fr.shape[0] // 2].numpy(), 128)


def generated_markdown(res: RxResult) -> tuple[str, str]:
    """(caption text, regenerated-image text): :mod:`genscom.demo.generated`."""
    return caption_markdown(res), regen_markdown(res)


def r1_plot(config: DemoConfig, channel: str, snr_db: float | None) -> tuple[Any, str]:
    """(image or None, note) for the R@1-vs-SNR plot from the latest benchmark JSON."""
    from genscom.results import load_results
    from genscom.demo.plots import r1_vs_snr_image

    path = config.results_path
    if not os.path.isfile(path):
        return None, f"_No benchmark results at `{path}`; run `genscom bench retrieval --quick` to get the R@1 vs SNR plot._"
    try:
        img = r1_vs_snr_image(load_results(path), channel=channel, snr_db=snr_db)
    except (ValueError, OSError, KeyError) as exc:
        return None, f"_Benchmark results at `{path}` are unreadable: {exc}_"
    if img is None:
        return None, f"_`{path}` holds no R@1 records for channel {channel}._"
    return img, f"R@1 vs SNR from `{path}` (dotted line: this SNR)."


def _err(exc: BaseException) -> str:
    return f"**Error:** {exc}"


# ---------------------------------------------------------------------------- the page
@dataclass
class DemoParts:
    """What :func:`build_demo` made: the page and the engines behind it."""

    blocks: Any
    mode: str
    config: DemoConfig
    transmitter: DemoTransmitter | None = None
    receiver: DemoReceiver | None = None
    features: dict[str, str | None] = field(default_factory=dict)
    key: LinkKey | None = None  # signs (tx) and checks (rx) the wire; combined: a fresh in-memory key

    @property
    def signer(self) -> MessageSigner | None:
        return None if self.key is None else MessageSigner(self.key)


def build_demo(mode: Mode = "combined", config: DemoConfig | None = None, *, rx_url: str | None = None,
               encoder: Any = None, key: LinkKey | None = None) -> DemoParts:
    """Build the Gradio page for ``mode`` (``"combined"``, ``"tx"`` or ``"rx"``).

    Args:
        mode: which panels; ``"tx"`` needs ``rx_url`` (e.g. ``"http://127.0.0.1:7861"``).
        config: :class:`DemoConfig` (default: the ``mini`` profile).
        encoder: an already-built encoder to share (default: ``create_encoder(config.profile)``).
        key: the link key both processes load from the shared key file (:class:`~genscom.privacy.keys.LinkKey`):
            the transmitter signs every post with it, the receiver accepts only posts it signed. ``None``: a
            fresh in-memory key (``LinkKey.generate()``), enough for the combined page (no set-up); a
            receiver with it accepts no post from another process.
    """
    import gradio as gr

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "tx" and not rx_url:
        raise ValueError("mode 'tx' needs rx_url, the receiver's address, e.g. http://127.0.0.1:7861")
    config = config or DemoConfig()
    if key is not None and not isinstance(key, LinkKey):
        raise TypeError(f"key must be a LinkKey (LinkKey.from_file(path)), got {type(key).__name__}")
    key = key if key is not None else LinkKey.generate()
    signer = MessageSigner(key)
    features = optional_features(config)
    tx = DemoTransmitter(config, encoder=encoder) if mode in ("combined", "tx") else None
    rx = DemoReceiver(config, encoder=encoder if encoder is not None else (tx.encoder if tx else None)) \
        if mode in ("combined", "rx") else None
    title = {"combined": "genscom demo", "tx": "genscom demo: transmitter", "rx": "genscom demo: receiver"}[mode]

    with gr.Blocks(title=title) as blocks:
        gr.Markdown(f"## {title}\nSend the meaning of a clip over a simulated radio channel (profile `{config.profile}`), "
                    "beside the bit-exact H.264/JPEG + 5G LDPC + QAM bitstream of the same content.")
        with gr.Row():
            tx_ui = _tx_panel(gr, tx, config, features) if tx is not None else None
            rx_ui = _rx_panel(gr, rx, config) if rx is not None else None
        _wire_events(gr, mode, config, tx, rx, tx_ui, rx_ui, features, rx_url, signer)
    return DemoParts(blocks=blocks, mode=mode, config=config, transmitter=tx, receiver=rx, features=features, key=key)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def knob_component(gr: Any, knob: RateKnob, value: Any, *, elem_id: str) -> Any:
    """The Gradio control of one :class:`~genscom.schemes.base.RateKnob`: a dropdown for ``"choice"``, a slider
    for a bounded ``"float"``, else a number box. A knob without a default (the scheme decides) starts at 0,
    which :func:`knob_values` reads as "not set"."""
    kw = {"label": knob.name, "info": knob.help or None, "elem_id": elem_id}
    if knob.kind == "choice":
        return gr.Dropdown(choices=list(knob.choices), value=value, **kw)
    if knob.kind == "float" and knob.min is not None and knob.max is not None:
        return gr.Slider(knob.min, knob.max, value=value, step=knob.step or (knob.max - knob.min) / 100, **kw)
    if value is None:  # 0 stands for "not set": no bounds in the box, the scheme checks the value
        kw["info"] = f"{knob.help} (0: the scheme's default)" if knob.help else "0: the scheme's default"
        return gr.Number(value=0, precision=0 if knob.kind == "int" else None, step=knob.step or 1, **kw)
    return gr.Number(value=value, precision=0 if knob.kind == "int" else None, minimum=knob.min, maximum=knob.max,
                     step=knob.step or 1, **kw)


def knob_values(scheme: str, knobs: list[tuple[str, RateKnob, Any]], values: Any) -> dict[str, Any]:
    """``{knob name: value}`` of ``scheme`` from the panel's controls (``knobs``, in order, and their ``values``).
    Empty boxes, and 0 in the box of a knob without a default, are left out (the scheme's default)."""
    out = {}
    for (name, knob, _), v in zip(knobs, values):
        if name == scheme and v is not None and not (knob.default is None and v == 0):
            out[knob.name] = v
    return out


def _tx_panel(gr: Any, tx: DemoTransmitter, config: DemoConfig, features: dict[str, str | None]) -> dict[str, Any]:
    schemes = offered_schemes(config)
    first = preferred_scheme("retrieval", config) or schemes[0]
    notes = [f"- `{k}`: {v}" for k, v in features.items() if v]
    agent_card = (f"Agent card: `{config.agent_card}`" if config.agent_card else
                  "Agent card: none loaded (pass one to use the `agent` scheme)")
    with gr.Column(scale=1):
        gr.Markdown("### Transmitter")
        choices = tx.choices()
        ui = {
            "clip": gr.Dropdown(choices=choices, value=choices[0][1], label="clip or image from the offline gallery",
                                elem_id="tx-clip"),
            "upload": gr.File(label=f"or upload a video/image (max {config.max_upload_mb:g} MB)", type="filepath",
                              elem_id="tx-upload"),
            "task": gr.Radio(list(TASKS), value="retrieval", label="task", elem_id="tx-task"),
            "channel": gr.Radio(list(CHANNEL_NAMES), value="awgn", label="channel", elem_id="tx-channel"),
            "snr": gr.Slider(-10, 30, value=10, step=0.5, label="SNR (dB, Es/N0)", elem_id="tx-snr"),
            "scheme": gr.Dropdown(choices=schemes, value=first, label="scheme", elem_id="tx-scheme"),
            "task_note": gr.Markdown("", elem_id="tx-task-note"),
        }
        # the rate knobs each scheme declares (Scheme.rate_knobs), shown for the chosen scheme only
        groups: dict[str, Any] = {}
        knobs: list[tuple[str, RateKnob, Any]] = []
        for name in schemes:
            declared = rate_knobs(name)
            if not declared:
                continue
            start = initial_knob_values(name, config)
            with gr.Group(visible=name == first, elem_id=f"tx-knobs-{_slug(name)}") as group:
                for knob in declared:
                    knobs.append((name, knob, knob_component(gr, knob, start[knob.name],
                                                             elem_id=f"tx-knob-{_slug(name)}-{knob.name}")))
            groups[name] = group
        ui["knob_groups"], ui["knobs"] = groups, knobs
        gr.Markdown(agent_card + ("\n\nNot available here:\n" + "\n".join(notes) if notes else ""),
                    elem_classes=["gs-small"], elem_id="tx-features")
        ui["button"] = gr.Button("Transmit", variant="primary", elem_id="tx-button")
        ui["status"] = gr.Markdown("", elem_id="tx-status")
        ui["frames"] = gr.Gallery(label="frames sampled", columns=8, height=120, elem_id="tx-frames")
        ui["stats"] = gr.Markdown("", elem_id="tx-stats")
        ui["constellation"] = gr.Image(label="constellation: sent and received symbols", type="numpy",
                                       elem_id="tx-constellation", height=300)
    return ui


def _rx_panel(gr: Any, rx: DemoReceiver, config: DemoConfig) -> dict[str, Any]:
    with gr.Column(scale=1):
        gr.Markdown(f"### Receiver\nGallery: {len(rx.gallery)} clips; the received item takes its place in it.")
        ui = {"query": gr.Textbox(label="text query at the receiver", elem_id="rx-query",
                                  placeholder="e.g. two small red circles moving left"),
              "search": gr.Button("Search", elem_id="rx-search"),
              "summary": gr.Markdown("_Nothing received yet._", elem_id="rx-summary"),
              "top": gr.Gallery(label="top-5 retrieved clips", columns=5, height=150, elem_id="rx-top5")}
        ui["caption"] = gr.Markdown("", elem_id="rx-caption")
        with gr.Row():  # the regenerated frame beside the baseline's decoded frame, each with its channel uses
            ui["regen_img"] = gr.Image(label="regenerated from the received embedding", type="numpy",
                                       elem_id="rx-regen-img", height=180)
            ui["baseline_img"] = gr.Image(label="baseline at the same SNR", type="numpy", elem_id="rx-baseline-img",
                                          height=180)
        with gr.Row():
            ui["regen"] = gr.Markdown("", elem_id="rx-regen")
            ui["baseline"] = gr.Markdown("", elem_id="rx-baseline")
        ui["r1"] = gr.Image(label="R@1 vs SNR (latest benchmark)", type="numpy", elem_id="rx-r1", height=260)
        ui["r1_note"] = gr.Markdown("", elem_id="rx-r1-note")
        ui["version"] = gr.State(0)
    return ui


def _wire_events(gr: Any, mode: str, config: DemoConfig, tx: DemoTransmitter | None, rx: DemoReceiver | None,
                 tx_ui: dict[str, Any] | None, rx_ui: dict[str, Any] | None, features: dict[str, str | None],
                 rx_url: str | None, signer: MessageSigner | None = None) -> None:
    from genscom.demo.plots import constellation_image

    rx_keys = ("summary", "top", "baseline_img", "baseline", "caption", "regen", "regen_img", "r1", "r1_note")

    def rx_values(res: RxResult | None, query: str) -> list[Any]:
        if res is None:
            return [gr.update()] * len(rx_keys)
        head, top, base = rx_markdown(res, rx, query)  # type: ignore[arg-type]
        cap, reg = generated_markdown(res)
        img, note = r1_plot(config, res.message.channel, res.message.snr_db)
        return [head, top, baseline_image(res), base, cap, reg, regenerated_image(res), img, note]

    rx_outs = [rx_ui[k] for k in rx_keys] if rx_ui else []

    if tx_ui is not None and tx is not None:
        def check_upload(path: str | None) -> str:
            if not path:
                return ""
            try:
                item = read_upload(path, max_bytes=config.max_upload_bytes, max_side=config.max_side,
                                   num_frames=config.num_frames)
            except UploadError as exc:
                return _err(exc)
            return f"Upload ready: {item.label}, {item.frames.shape[0]} frame(s) of {item.frames.shape[2]}x{item.frames.shape[1]}."

        tx_ui["upload"].change(check_upload, inputs=[tx_ui["upload"]], outputs=[tx_ui["status"]])

        knobs = tx_ui["knobs"]

        def show_knobs(scheme):
            return [gr.update(visible=name == scheme) for name in tx_ui["knob_groups"]]

        if tx_ui["knob_groups"]:
            tx_ui["scheme"].change(show_knobs, inputs=[tx_ui["scheme"]], outputs=list(tx_ui["knob_groups"].values()))

        def pick_task(task, current):
            """Offer only the schemes that serve ``task`` and select one; say plainly why a task is unavailable."""
            why = task_unavailable(task, config)
            if why is not None:
                return gr.update(), f"**{task} is unavailable here:** {why}."
            allowed = schemes_for_task(task, config)
            value = current if current in allowed else preferred_scheme(task, config)
            note = "" if task == "retrieval" else f"The `{value}` scheme serves the task “{task}”."
            return gr.update(choices=allowed, value=value), note

        tx_ui["task"].change(pick_task, inputs=[tx_ui["task"], tx_ui["scheme"]],
                             outputs=[tx_ui["scheme"], tx_ui["task_note"]])

        def transmit(clip, upload, task, channel, snr, scheme, *rest):
            values, rest = rest[:len(knobs)], rest[len(knobs):]
            query = rest[0] if rest else ""
            chosen = knob_values(scheme, knobs, values)
            nothing = [gr.update()] * (3 + len(rx_outs))
            try:
                if upload:
                    item = read_upload(upload, max_bytes=config.max_upload_bytes, max_side=config.max_side,
                                       num_frames=config.num_frames)
                else:
                    item = tx.item(clip)
                settings = TxSettings(scheme=scheme, channel=channel, snr_db=float(snr), task=task, knobs=chosen,
                                      seed=config.seed)
                t = tx.transmit(item, settings)
            except (UploadError, ValueError, TypeError, FileNotFoundError) as exc:
                return [_err(exc)] + nothing
            except Exception as exc:  # noqa: BLE001 - the page shows a message, the log keeps the traceback
                logger.exception("transmission failed")
                return [_err(f"transmission failed ({type(exc).__name__}: {exc})")] + nothing
            frames = [f.numpy() for f in item.frames]
            stats = tx_stats_markdown(t)
            if mode == "combined":
                try:
                    res = rx.receive(t.message)  # type: ignore[union-attr]
                except Exception as exc:  # noqa: BLE001
                    logger.exception("reception failed")
                    return [_err(f"the receiver could not decode the message ({type(exc).__name__}: {exc})"), frames,
                            stats, constellation_image(_np(t.symbols), None)] + [gr.update()] * len(rx_outs)
                status = f"Sent {len(t.message):,} bytes on the wire to the receiver."
                cons = constellation_image(res.sent, res.received, title=f"{t.scheme_name}, {channel} {float(snr):.1f} dB")
                return [status, frames, stats, cons] + rx_values(res, query)
            try:
                reply = send_to_receiver(rx_url, t.message, signer=signer, timeout_s=config.request_timeout_s)  # type: ignore[arg-type]
            except ReceiverError as exc:
                return [_err(exc), frames, stats, constellation_image(_np(t.symbols), None)]
            c = reply.get("constellation") or {}
            cons = constellation_image(_pts(c.get("sent")), _pts(c.get("received")),
                                       title=f"{t.scheme_name}, {channel} {float(snr):.1f} dB")
            b = reply["baseline"]
            status = (f"Sent {len(t.message):,} bytes to the receiver at {rx_url}: it counted "
                      f"**{_fmt(reply['channel_uses'])} channel uses**, decoded "
                      f"{'with a failure flag' if reply['failed'] else 'OK'}; baseline `{b['scheme']}` "
                      f"{'FAILED' if b['failed'] else 'decoded'} ({b['block_errors']} codeword(s) wrong).")
            if reply.get("regenerated"):
                h, w = reply["regenerated"][:2]
                status += f" It regenerated a {w}x{h} image from the received embedding (shown on its page)."
            return [status, frames, stats, cons]

        inputs = [tx_ui[k] for k in ("clip", "upload", "task", "channel", "snr", "scheme")] + [c for _, _, c in knobs]
        if mode == "combined":
            inputs.append(rx_ui["query"])  # type: ignore[index]
        tx_ui["button"].click(transmit, inputs=inputs,
                              outputs=[tx_ui["status"], tx_ui["frames"], tx_ui["stats"], tx_ui["constellation"]] + rx_outs)

        if mode == "combined":
            def prefill(clip):
                try:
                    item = tx.item(clip)
                except Exception as exc:  # noqa: BLE001
                    return gr.update(), _err(exc)
                return (item.captions[0] if item.captions else gr.update()), ""

            tx_ui["clip"].change(prefill, inputs=[tx_ui["clip"]], outputs=[rx_ui["query"], tx_ui["status"]])  # type: ignore[index]

    if rx_ui is not None and rx is not None:
        def search(query):
            return rx_values(rx.latest, query) if rx.latest is not None else \
                ["_Nothing received yet._"] + [gr.update()] * (len(rx_outs) - 1)

        rx_ui["search"].click(search, inputs=[rx_ui["query"]], outputs=rx_outs)
        rx_ui["query"].submit(search, inputs=[rx_ui["query"]], outputs=rx_outs)
        if mode == "rx":
            timer = gr.Timer(1.0)

            def poll(version, query):
                res = rx.latest
                if res is None or res.version == version:
                    return [version] + [gr.update()] * len(rx_outs)
                return [res.version] + rx_values(res, query)

            timer.tick(poll, inputs=[rx_ui["version"], rx_ui["query"]], outputs=[rx_ui["version"]] + rx_outs)


def _np(t: Any) -> Any:
    return None if t is None else t.numpy()


def _pts(p: Any) -> Any:
    import numpy as np

    if not p:
        return None
    a = np.asarray(p, dtype=np.float32)
    return a[:, 0] + 1j * a[:, 1]


# ---------------------------------------------------------------------------- serving
def create_server(parts: DemoParts, *, max_skew_s: float = 60.0) -> Any:
    """A FastAPI app with the page at ``/`` and, where there is a receiver, ``POST /genscom/receive``.

    The endpoint answers 413 (body over ``config.max_message_mb``, from Content-Length and while reading),
    401 (unsigned), 403 (bad signature, timestamp more than ``max_skew_s`` off, replayed nonce), 400 (a
    field outside the receiver's limits, :func:`~genscom.demo.guard.validate_message`) or 200 with the
    result's summary. Only a 200 changes the receiver's page.
    """
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title=f"genscom demo ({parts.mode})")

    @app.get(HEALTH_PATH)
    def health() -> dict[str, Any]:
        return {"ok": True, "mode": parts.mode, "profile": parts.config.profile}

    if parts.receiver is not None:
        receiver = parts.receiver
        if parts.key is None:
            raise ValueError("a receiver needs DemoParts.key (the shared link key) to check posts")
        guard = WireGuard(MessageSigner(parts.key), max_skew_s=max_skew_s)
        body_limit = parts.config.max_message_bytes
        inflight = {"n": 0}  # posts being read or decoded: at most MAX_INFLIGHT bodies in memory at once

        def refuse(status: int, error: str) -> Any:
            return JSONResponse({"ok": False, "error": error}, status_code=status)

        async def receive(request):  # a plain Starlette route: the body is raw wire bytes
            import anyio

            declared = request.headers.get("content-length")
            if declared is not None:  # the limit before a byte of the body is read
                if not declared.isdigit():
                    return refuse(400, "Content-Length must be a number of bytes")
                if int(declared) > body_limit:
                    return refuse(413, f"message of {int(declared)} bytes exceeds the receiver's limit of {body_limit}")
            try:
                guard.check_headers(request.headers)  # 401 unsigned, 403 stale, before reading the body
            except WireRejected as exc:
                return refuse(exc.status, str(exc))
            if inflight["n"] >= MAX_INFLIGHT:
                return refuse(503, f"the receiver is busy with {MAX_INFLIGHT} messages; retry later")
            inflight["n"] += 1
            try:
                chunks, size = [], 0
                async for chunk in request.stream():  # and again while it streams in (chunked or lying posts)
                    size += len(chunk)
                    if size > body_limit:
                        raise WireRejected(413, f"message exceeds the receiver's limit of {body_limit} bytes")
                    chunks.append(chunk)
                body = b"".join(chunks)
                del chunks
                headers = dict(request.headers)

                def check_and_receive() -> RxResult:
                    guard.check(headers, body)  # 403: bad signature or a replayed nonce
                    return receiver.receive(body)  # 400: a field outside the receiver's limits

                res = await anyio.to_thread.run_sync(check_and_receive)
            except WireRejected as exc:
                return refuse(exc.status, str(exc))
            except (ValueError, TypeError, KeyError) as exc:
                return refuse(400, str(exc))
            except Exception as exc:  # noqa: BLE001 - the log keeps the traceback; the sender learns only the type
                logger.exception("reception failed")
                return refuse(500, f"the receiver failed to decode the message ({type(exc).__name__})")
            finally:
                inflight["n"] -= 1
            return JSONResponse(res.summary())

        app.add_route(RECEIVE_PATH, receive, methods=["POST"])

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: the demo runs offline
    limit = max(int(parts.config.max_upload_bytes * 4), 1_000_000)  # hard stop; the page states the real limit
    return gr.mount_gradio_app(app, parts.blocks, path="/", server_name="127.0.0.1", max_file_size=limit,
                               theme=theme, css=CSS, footer_links=[], ssr_mode=False)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RunningServer:
    """A uvicorn server in a background thread: ``url``, ``close()``; usable as a context manager."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 7860, start_timeout_s: float = 60.0) -> None:
        import uvicorn

        self.host, self.port = host, port
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name=f"genscom-demo-{port}", daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > start_timeout_s:
                self.close()
                raise RuntimeError(f"the demo server did not start on {host}:{port} within {start_timeout_s:.0f} s "
                                   "(is the port taken?)")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve(parts: DemoParts, *, host: str = "127.0.0.1", port: int = 7860) -> RunningServer:
    """Start the page (and receiver endpoint) in a background thread; returns a :class:`RunningServer`."""
    return RunningServer(create_server(parts), host=host, port=port)


def launch_demo(mode: Mode = "combined", config: DemoConfig | None = None, *, host: str = "127.0.0.1",
                port: int = 7860, rx_url: str | None = None, block: bool = True,
                key: LinkKey | None = None) -> RunningServer | None:
    """Build and serve the demo (what ``genscom demo`` runs). ``block=True`` serves until Ctrl-C.

    ``key``: the shared link key (:func:`load_or_create_key`); ``None`` only makes sense for ``"combined"``.
    """
    parts = build_demo(mode, config, rx_url=rx_url, key=key)
    if not block:
        return serve(parts, host=host, port=port)
    import uvicorn

    logger.info("genscom demo (%s) on http://%s:%d", mode, host, port)
    uvicorn.run(create_server(parts), host=host, port=port, log_level="warning")
    return None


DEFAULT_KEY_FILE = "~/.genscom/demo-wire.key"


def load_or_create_key(key_file: str | os.PathLike[str] | None, *,
                       default_path: str | os.PathLike[str] = DEFAULT_KEY_FILE) -> tuple[LinkKey, str | None]:
    """The demo's link key: read ``key_file``, or (``None``) write a new one at ``default_path`` (mode 0600,
    :func:`~genscom.privacy.keys.generate_key_file`; an existing file there is read, not replaced).

    Returns ``(key, note)``; ``note`` tells the user which file is used, its fingerprint and how to share it
    (``None`` when ``key_file`` was given).
    """
    from genscom.privacy.keys import generate_key_file

    if key_file is not None:
        return LinkKey.from_file(key_file), None
    path = os.path.abspath(os.path.expanduser(os.fspath(default_path)))
    if os.path.exists(path):
        key = LinkKey.from_file(path)
        return key, (f"No --key-file given: using the demo link key at {path}, fingerprint {key.fingerprint}. The "
                     "other process needs a copy of this file (--key-file PATH, mode 0600).")
    key = generate_key_file(path)
    note = (f"No --key-file given: made a new demo link key at {path} (mode 0600), fingerprint {key.fingerprint}.\n"
            f"Copy it to the other end over a channel you trust (e.g. `scp {path} otherhost:` then `chmod 600`), and "
            "start the other process with --key-file PATH; both ends must print the same fingerprint.")
    return key, note


__all__ = ["DEFAULT_KEY_FILE", "DemoParts", "HEALTH_PATH", "MODES", "RECEIVE_PATH", "ReceiverError", "RunningServer", "build_demo",
           "create_server", "free_port", "knob_component", "knob_values", "launch_demo", "load_or_create_key", "send_to_receiver", "serve",
           "tx_stats_markdown"]
