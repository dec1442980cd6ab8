"""What the demo receiver checks before it decodes anything: signatures, replay, size and every wire field.

The demo wire (:mod:`genscom.demo.wire`) crosses a network, so the receiver treats each post as hostile:

1. **Authentication** (:class:`WireGuard`). The transmitter signs ``(timestamp, nonce, body)`` with
   :class:`~genscom.privacy.mac.MessageSigner` (HMAC-SHA256 under the key file's ``wire-mac`` subkey)
   and sends them in the :data:`TIMESTAMP_HEADER`, :data:`NONCE_HEADER` and :data:`SIGNATURE_HEADER`
   headers (:func:`sign_headers`). A post without them gets HTTP 401; a bad signature, a timestamp more
   than ``max_skew_s`` away from the receiver's clock, or a nonce already seen (:class:`ReplayWindow`,
   bounded) gets 403.
2. **Size.** The body limit is checked from ``Content-Length`` and again while the body streams in (413).
3. **Fields** (:func:`validate_message`). Every field is checked against the *receiver's own*
   configuration (:class:`WireLimits`) before anything is allocated from it: one item per message,
   frame counts and sizes within the receiver's clip geometry, channel uses and bit counts within the
   budget, the embedding dimension of the receiver's encoder, finite numbers only. Scheme names and
   settings come from an allowlist (the demo's schemes, their declared rate knobs with bounded values);
   anything else, including any path or file name, is rejected with 400. Settings the receiver needs
   beyond rate knobs (the ``agent`` scheme's card, the ``regen`` scheme's image decoder) are the receiver's own.

Example:
    >>> signer = MessageSigner(LinkKey.from_file("link.key"))
    >>> headers = sign_headers(signer, body)                   # transmitter
    >>> WireGuard(signer).check(headers, body)                 # receiver: raises WireRejected(status, ...)
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from genscom.demo.options import BASELINE_SCHEMES, CHANNEL_NAMES, TASKS, DemoConfig, offered_schemes, rate_knobs

if TYPE_CHECKING:  # genscom.privacy needs the optional `cryptography`; only signing and checking import it
    from genscom.demo.wire import WireMessage
    from genscom.privacy.mac import MessageSigner

TIMESTAMP_HEADER = "x-genscom-timestamp"
NONCE_HEADER = "x-genscom-nonce"
SIGNATURE_HEADER = "x-genscom-signature"
KEY_HEADER = "x-genscom-key"  # the sender's key fingerprint: only to explain a mismatch, never trusted
NONCE_BYTES = 16
WIRE_TAG_BYTES = 32  # = genscom.privacy.mac.WIRE_TAG_BYTES (HMAC-SHA256)
_SIGNED_PREFIX = b"genscom-demo-wire/1\x00"


class WireRejected(ValueError):
    """A post the receiver refuses; ``status`` is the HTTP status to answer with (400, 401, 403, 413, 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)


def signed_bytes(timestamp: str, nonce: str, body: bytes) -> bytes:
    """What the MAC covers: a label, the timestamp and nonce (as sent in the headers), then the body."""
    return _SIGNED_PREFIX + timestamp.encode("ascii") + b"\x00" + nonce.encode("ascii") + b"\x00" + bytes(body)


def sign_headers(signer: MessageSigner, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """HTTP headers authenticating ``body``: a fresh 128-bit nonce, the time (Unix seconds) and the tag."""
    ts = f"{time.time() if now is None else now:.3f}"
    nonce = secrets.token_hex(NONCE_BYTES)
    tag = signer.sign(signed_bytes(ts, nonce, body))
    return {TIMESTAMP_HEADER: ts, NONCE_HEADER: nonce, SIGNATURE_HEADER: tag.hex(),
            KEY_HEADER: signer.key_fingerprint}


class ReplayWindow:
    """The nonces seen in the last ``max_age_s`` seconds, at most ``max_entries`` of them.

    A nonce is remembered until it is older than the timestamp window (an older post is refused as
    stale anyway). When the window is full of unexpired nonces, new posts are refused (503) rather than
    forgetting a nonce that could still be replayed.
    """

    def __init__(self, *, max_age_s: float, max_entries: int = 4096) -> None:
        if not max_age_s > 0 or max_entries < 1:
            raise ValueError(f"max_age_s must be > 0 and max_entries >= 1, got {max_age_s!r}, {max_entries!r}")
        self.max_age_s, self.max_entries = float(max_age_s), int(max_entries)
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> time it was accepted (receiver clock)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: str, *, now: float) -> None:
        """Remember ``nonce``; ``WireRejected(403)`` if it was seen, ``(503)`` if the window is full."""
        with self._lock:
            while self._seen:
                t = next(iter(self._seen.values()))
                if now - t <= 2 * self.max_age_s:  # skew either way: a post may be 2x max_age apart in sender time
                    break
                self._seen.popitem(last=False)
            if nonce in self._seen:
                raise WireRejected(403, "replayed message: this nonce was already received; the transmitter signs "
                                        "every post with a fresh nonce")
            if len(self._seen) >= self.max_entries:
                raise WireRejected(503, f"the receiver's replay window is full ({self.max_entries} messages in "
                                        f"{2 * self.max_age_s:.0f} s); retry later")
            self._seen[nonce] = now


class WireGuard:
    """Checks the authentication headers of a post (see the module docstring).

    Args:
        signer: the receiver's :class:`MessageSigner` (the same key file as the transmitter).
        max_skew_s: largest accepted difference between the post's timestamp and the receiver's clock.
        replay_entries: size of the :class:`ReplayWindow`.
    """

    def __init__(self, signer: MessageSigner, *, max_skew_s: float = 60.0, replay_entries: int = 4096) -> None:
        from genscom.privacy.mac import MessageSigner

        if not isinstance(signer, MessageSigner):
            raise TypeError(f"signer must be a MessageSigner, got {type(signer).__name__}")
        self.signer = signer
        self.max_skew_s = float(max_skew_s)
        self.replay = ReplayWindow(max_age_s=self.max_skew_s, max_entries=replay_entries)

    def check_headers(self, headers: Mapping[str, str], *, now: float | None = None) -> tuple[str, str, bytes]:
        """Presence and format of the headers, and the timestamp's freshness (before the body is read).

        Returns ``(timestamp, nonce, tag)``. Raises :class:`WireRejected` (401 missing, 403 stale/malformed).
        """
        now = time.time() if now is None else now
        ts, nonce, sig = (headers.get(h) for h in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
        if not (ts and nonce and sig):
            raise WireRejected(401, "unsigned message: the receiver accepts only posts signed with the shared key "
                                    f"file (headers {TIMESTAMP_HEADER}, {NONCE_HEADER}, {SIGNATURE_HEADER}); start "
                                    "the transmitter with --key-file pointing to a copy of the receiver's key file")
        try:
            t = float(ts)
            tag = bytes.fromhex(sig)
            int(nonce, 16)
        except ValueError:
            raise WireRejected(403, "malformed authentication headers (timestamp, hex nonce, hex tag expected)") from None
        if not math.isfinite(t) or abs(now - t) > self.max_skew_s:
            raise WireRejected(403, f"stale message: its timestamp is {now - t:+.0f} s from the receiver's clock "
                                    f"(at most {self.max_skew_s:.0f} s accepted); check both clocks")
        if len(nonce) != 2 * NONCE_BYTES or len(tag) != WIRE_TAG_BYTES:
            raise WireRejected(403, f"malformed authentication headers (a {NONCE_BYTES}-byte nonce and a "
                                    f"{WIRE_TAG_BYTES}-byte tag, hex)")
        return ts, nonce.lower(), tag

    def check(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
        """Headers, signature over ``(timestamp, nonce, body)``, then the replay window (in that order)."""
        from genscom.privacy.errors import AuthenticationFailed

        now = time.time() if now is None else now
        ts, nonce, tag = self.check_headers(headers, now=now)
        try:
            self.signer.verify(signed_bytes(ts, nonce, body), tag)
        except AuthenticationFailed:
            theirs = headers.get(KEY_HEADER)
            hint = (f"; the sender says its key fingerprint is {theirs[:16]!r}, the receiver's is "
                    f"{self.signer.key_fingerprint!r}" if theirs else "")
            raise WireRejected(403, "message authentication failed (wrong key file or a changed message)" + hint) \
                from None
        self.replay.add(nonce, now=now)  # only authentic posts may take a place in the window


# ---------------------------------------------------------------------------- field checks
@dataclass(frozen=True)
class WireLimits:
    """Bounds the receiver puts on every wire field, from its own :class:`~genscom.demo.options.DemoConfig`.

    Attributes:
        max_body_bytes: largest post body (HTTP 413 above it).
        max_items: items per transmission (the demo sends one).
        max_frames, max_side: the receiver's clip geometry (frames per clip, pixels on the long side).
        max_channel_uses: channel uses per item (the budget; the transmitter caps at the same value).
        embedding_dim: dimension of the receiver encoder's embeddings (analog payloads must match it).
    """

    max_body_bytes: int
    max_items: int
    max_frames: int
    max_side: int
    max_channel_uses: int
    embedding_dim: int | None = None

    @classmethod
    def from_config(cls, config: DemoConfig, *, embedding_dim: int | None = None) -> WireLimits:
        return cls(max_body_bytes=config.max_message_bytes, max_items=1, max_frames=config.num_frames,
                   max_side=config.max_side, max_channel_uses=config.max_channel_uses, embedding_dim=embedding_dim)


_MAX_PILOTS = 64  # pilots per block: far above any layout the schemes use (4 or 8)
_MAX_REPEAT = 64
#: extras keys a transmitter may send (receiver-side keys such as received_bytes or bits_hat are refused)
ALLOWED_EXTRAS = frozenset({"dim", "lengths", "shape", "mcs"})
_BASELINE_SETTINGS = {"h264-ldpc": ("crf", 0, 51), "jpeg-ldpc": ("quality", 1, 100)}
_MAX_TEXT = 256


def _bad(msg: str) -> WireRejected:
    return WireRejected(400, msg)


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{what} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _bad(f"{what} = {v} is outside [{lo}, {hi}] (the receiver's limit)")
    return v


def _check_tensor(t: torch.Tensor, what: str, *, max_numel: int) -> None:
    if t.numel() > max_numel:
        raise _bad(f"{what} holds {t.numel()} values; the receiver accepts at most {max_numel}")
    if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(torch.isfinite(t).all()):
        raise _bad(f"{what} holds NaN or Inf values; symbols and embeddings must be finite")


def _walk(value: Any, what: str, lim: WireLimits, *, depth: int = 0) -> None:
    """Every tensor bounded and finite, every number bounded, strings short, nesting shallow."""
    big = 64 * lim.max_channel_uses
    if depth > 4:
        raise _bad(f"{what} is nested too deeply")
    if isinstance(value, torch.Tensor):
        _check_tensor(value, what, max_numel=big)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        _int(value, what, -big, big)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(f"{what} is {value}; numbers on the wire must be finite")
    elif isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise _bad(f"{what} is a string of {len(value)} characters; at most {_MAX_TEXT}")
    elif isinstance(value, (list, tuple)):
        if len(value) > max(lim.max_items, lim.max_frames, 16):
            raise _bad(f"{what} has {len(value)} entries; the receiver accepts at most "
                       f"{max(lim.max_items, lim.max_frames, 16)}")
        for i, v in enumerate(value):
            _walk(v, f"{what}[{i}]", lim, depth=depth + 1)
    elif isinstance(value, dict):
        if len(value) > 16:
            raise _bad(f"{what} has {len(value)} keys; at most 16")
        for k, v in value.items():
            _walk(v, f"{what}.{k}", lim, depth=depth + 1)
    else:
        from genscom.channels.sensing import PilotLayout
        from genscom.coding.mcs import LinkPlan

        if isinstance(value, PilotLayout):
            _int(value.pilots_per_block, f"{what}.pilots_per_block", 0, _MAX_PILOTS)
            if value.coherence is not None:
                _int(value.coherence, f"{what}.coherence", 1, lim.max_channel_uses)
        elif isinstance(value, LinkPlan):
            _int(value.repeat, f"{what}.repeat", 1, _MAX_REPEAT)
            _int(value.n_bits, f"{what}.n_bits", 0, 8 * lim.max_body_bytes)
            _int(value.n_codewords, f"{what}.n_codewords", 0, lim.max_channel_uses)
            _int(value.channel_uses, f"{what}.channel_uses", 0, lim.max_channel_uses)
            for f in ("p_success", "snr_db_estimate"):  # informational; NaN means "not estimated" (fixed MCS)
                if math.isinf(getattr(value, f)):
                    raise _bad(f"{what}.{f} must be finite or NaN")
            if value.pilots is not None:
                _walk(value.pilots, f"{what}.pilots", lim, depth=depth + 1)
        else:
            raise _bad(f"{what}: a {type(value).__name__} is not accepted on the wire")


def _check_payload(p: Any, what: str, lim: WireLimits) -> None:
    cu = p.channel_uses
    if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.dtype != torch.int64:
        raise _bad(f"{what}.channel_uses must be an int64 tensor [items]")
    b = int(cu.shape[0])
    if not 1 <= b <= lim.max_items:
        raise _bad(f"{what} carries {b} items; the receiver accepts 1 to {lim.max_items} per message")
    if cu.numel() and (int(cu.min()) < 0 or int(cu.max()) > lim.max_channel_uses):
        raise _bad(f"{what}.channel_uses must be in [0, {lim.max_channel_uses}] (the receiver's budget)")
    sb = p.side_bits
    if not isinstance(sb, torch.Tensor) or tuple(sb.shape) != (b,) or (sb.numel() and (int(sb.min()) < 0 or int(
            sb.max()) > 8 * lim.max_body_bytes)):
        raise _bad(f"{what}.side_bits must be [{b}] counts in [0, {8 * lim.max_body_bytes}]")
    if p.symbols is not None:
        s = p.symbols
        if not isinstance(s, torch.Tensor) or not s.is_complex() or s.dim() != 2 or s.shape[0] != b:
            raise _bad(f"{what}.symbols must be complex [{b}, n]")
        if s.shape[1] > lim.max_channel_uses:
            raise _bad(f"{what}.symbols has {s.shape[1]} symbols per item; the receiver's budget is "
                       f"{lim.max_channel_uses} channel uses")
        _check_tensor(s, f"{what}.symbols", max_numel=b * lim.max_channel_uses)
        layout = getattr(p, "pilots", None)
        if layout is not None and getattr(layout, "coherence", None):  # pilots the receiver will simulate too
            _walk(layout, f"{what}.pilots", lim)
            data_per_block = layout.coherence - layout.pilots_per_block
            total = s.shape[1] + -(-s.shape[1] // max(data_per_block, 1)) * layout.pilots_per_block
            if total > lim.max_channel_uses:
                raise _bad(f"{what}: {s.shape[1]} symbols with that pilot layout take {total} channel uses; the "
                           f"receiver's budget is {lim.max_channel_uses}")
    if p.bits is not None and len(p.bits) != b:
        raise _bad(f"{what}.bits has {len(p.bits)} rows for {b} items")
    unknown = sorted(set(p.extras) - ALLOWED_EXTRAS)
    if unknown:
        raise _bad(f"{what}.extras: {', '.join(map(repr, unknown))} not accepted from a transmitter; "
                   f"allowed: {', '.join(sorted(ALLOWED_EXTRAS))}")
    ex = p.extras
    if "shape" in ex:  # a clip's (T, H, W, 3): the decoder allocates it, so it must fit the receiver's geometry
        shape = ex["shape"]
        if not isinstance(shape, (tuple, list)) or len(shape) != 4:
            raise _bad(f"{what}.extras.shape must be (frames, height, width, 3)")
        _int(shape[0], f"{what}: declared frame count", 1, lim.max_frames)
        _int(shape[1], f"{what}: declared frame height", 1, lim.max_side)
        _int(shape[2], f"{what}: declared frame width", 1, lim.max_side)
        _int(shape[3], f"{what}: declared channels", 3, 3)
    if "lengths" in ex:
        lengths = ex["lengths"]
        if not isinstance(lengths, (list, tuple)) or len(lengths) != b or p.bits is None:
            raise _bad(f"{what}.extras.lengths must list each item's stream lengths (with bits)")
        for i, (row, bits) in enumerate(zip(lengths, p.bits)):
            if not isinstance(row, (list, tuple)) or len(row) > lim.max_frames:
                raise _bad(f"{what}.extras.lengths[{i}] must list at most {lim.max_frames} stream lengths")
            total = sum(_int(n, f"{what}.extras.lengths[{i}]", 0, len(bits)) for n in row)
            if total > len(bits):
                raise _bad(f"{what}.extras.lengths[{i}] adds up to {total} bytes but the item carries {len(bits)}")
    if "dim" in ex:
        _int(ex["dim"], f"{what}.extras.dim", 1, lim.max_channel_uses)
    for f in dataclasses.fields(p):
        if f.name in ("channel_uses", "side_bits", "symbols", "bits", "extras"):
            continue
        v = getattr(p, f.name)
        if f.name == "dim" and v is not None:
            hi = lim.embedding_dim if lim.embedding_dim is not None else lim.max_channel_uses
            _int(v, f"{what}.dim", lim.embedding_dim or 1, hi)
        elif f.name == "repeat" and v is not None:
            _int(v, f"{what}.repeat", 1, _MAX_REPEAT)
        elif isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] != b:
            raise _bad(f"{what}.{f.name} has {v.shape[0]} rows for {b} items")
        _walk(v, f"{what}.{f.name}", lim)
    _walk(ex, f"{what}.extras", lim)


def _check_settings(scheme: str, settings: Any, role: str, config: DemoConfig, what: str) -> dict[str, Any]:
    """The settings the receiver will build ``scheme`` with: sender values only for allowlisted knobs."""
    from genscom.schemes.base import get_scheme_class

    if not isinstance(settings, dict) or len(settings) > 16:
        raise _bad(f"{what}.settings must be a small JSON object")
    if role == "baseline":
        if scheme not in BASELINE_SCHEMES:
            raise _bad(f"{what}: baseline scheme {scheme!r} is not offered; allowed: {', '.join(sorted(BASELINE_SCHEMES))}")
        knob, lo, hi = _BASELINE_SETTINGS[scheme]
        allowed = {knob, "mcs", "fidelity"}
        if set(settings) - allowed:
            raise _bad(f"{what}: setting(s) {sorted(set(settings) - allowed)} not accepted for {scheme}; "
                       f"allowed: {', '.join(sorted(allowed))}")
        out = {knob: _int(settings.get(knob, getattr(config, "h264_crf" if knob == "crf" else "jpeg_quality")),
                          f"{what}.settings.{knob}", lo, hi),
               "mcs": _mcs_name(settings.get("mcs", config.mcs), f"{what}.settings.mcs", adaptive=False),
               "fidelity": "full"}
        if settings.get("fidelity", "full") != "full":
            raise _bad(f"{what}.settings.fidelity must be 'full'")
        return out
    offered = offered_schemes(config)
    if scheme not in offered:
        raise _bad(f"{what}: scheme {scheme!r} is not offered by this receiver; allowed: {', '.join(offered)}")
    knobs = {k.name: k for k in rate_knobs(scheme)}
    demo_keys = {"agent": {"card", "captions"}}.get(scheme, set())
    unknown = sorted(set(settings) - set(knobs) - demo_keys)
    if unknown:
        raise _bad(f"{what}: setting(s) {', '.join(map(repr, unknown))} not accepted for {scheme}; its rate knobs: "
                   f"{', '.join(knobs) or 'none'} (paths, files and other settings are the receiver's own)")
    values = {k: v for k, v in settings.items() if k in knobs}
    for k, v in values.items():
        if knobs[k].kind in ("int", "float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise _bad(f"{what}.settings.{k} must be a finite number, got {v!r}")
            if knobs[k].max is None and v > config.max_channel_uses:
                raise _bad(f"{what}.settings.{k} = {v} exceeds the receiver's budget of {config.max_channel_uses}")
        elif knobs[k].kind == "choice" and v not in knobs[k].choices:
            raise _bad(f"{what}.settings.{k} = {str(v)[:40]!r} is not one of {', '.join(map(str, knobs[k].choices))}")
    try:
        out = get_scheme_class(scheme).rate_kwargs(values)
    except (ValueError, TypeError) as exc:
        raise _bad(f"{what}.settings: {exc}") from None
    if scheme == "agent":
        if settings.get("card") not in (None, config.agent_card):
            raise _bad(f"{what}.settings.card: the receiver uses its own agent card; a sender may not choose one")
        captions = settings.get("captions", False)
        if not isinstance(captions, bool):
            raise _bad(f"{what}.settings.captions must be true or false")
        out.update(card=config.agent_card, captions=captions)
    return out


def _mcs_name(v: Any, what: str, *, adaptive: bool) -> str:
    from genscom.coding.mcs import get_mcs

    if not isinstance(v, str) or len(v) > 32 or (v == "adaptive" and not adaptive):
        raise _bad(f"{what} must be an MCS name")
    try:
        get_mcs(v)
    except (ValueError, KeyError):
        raise _bad(f"{what} = {v!r} is not an MCS name") from None
    return v


def validate_message(msg: WireMessage, config: DemoConfig, limits: WireLimits) -> WireMessage:
    """Check every field of a decoded message against the receiver's configuration; return it with the
    settings the receiver will use. Raises :class:`WireRejected` (400) naming the field."""
    if msg.channel not in CHANNEL_NAMES:
        raise _bad(f"channel {str(msg.channel)[:40]!r} is not one of {', '.join(CHANNEL_NAMES)}")
    if not isinstance(msg.snr_db, float) or not math.isfinite(msg.snr_db) or not -50.0 <= msg.snr_db <= 60.0:
        raise _bad(f"snr_db = {msg.snr_db!r} must be a finite number of dB in [-50, 60]")
    _int(msg.seed, "seed", 0, 2**63 - 1)
    ev = msg.eval
    if set(ev) - {"item", "gallery_index", "task"}:
        raise _bad(f"eval: field(s) {sorted(set(ev) - {'item', 'gallery_index', 'task'})} not accepted")
    if "item" in ev and (not isinstance(ev["item"], str) or len(ev["item"]) > _MAX_TEXT):
        raise _bad("eval.item must be a short string")
    if ev.get("gallery_index") is not None:
        _int(ev["gallery_index"], "eval.gallery_index", 0, config.gallery_size - 1)
    if "task" in ev and ev["task"] not in TASKS:
        raise _bad(f"eval.task must be one of {', '.join(TASKS)}")
    roles = [t.role for t in msg.transmissions]
    if roles.count("semantic") != 1 or roles.count("baseline") > 1 or len(roles) > 2:
        raise _bad(f"a message holds one semantic and at most one baseline transmission, got roles {roles[:4]}")
    for i, tr in enumerate(msg.transmissions):
        what = f"transmission {i} ({str(tr.scheme)[:40]})"
        tr.settings = _check_settings(tr.scheme, tr.settings, tr.role, config, what)
        _check_payload(tr.payload, what, limits)
    return msg


__all__ = ["ALLOWED_EXTRAS", "KEY_HEADER", "NONCE_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "ReplayWindow",
           "WireGuard", "WireLimits", "WireRejected", "sign_headers", "signed_bytes", "validate_message"]
