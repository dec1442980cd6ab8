"""The demo's HTTP wire format: what the transmitter process sends to the receiver process.

A message is one safetensors file (``application/octet-stream``). It holds one or
more *transmissions* of the same content (the semantic scheme's and the bitstream
baseline's), each being exactly what crosses the channel:

* ``symbols``: the complex symbols put on the air, ``[B, n]`` complex64, stored as
  float32 ``[B, n, 2]`` (real, imaginary), or absent for digital schemes;
* ``bits``: for digital schemes, the link-layer bytes the LDPC + QAM link carries
  (one uint8 tensor, split by lengths);
* ``channel_uses`` / ``side_bits``: ``[B]`` int64, as counted by the scheme;
* the payload's typed fields: its class (one of :func:`genscom.schemes.base.payload_types`)
  and every field that class declares (shapes, masks, pilots, ...), by name; ``extras``
  without transmitter-only keys (``_*`` and :data:`PRIVATE_EXTRAS`).

Beside them, a JSON header (the safetensors ``__metadata__``) names, per transmission,
the scheme and its settings, and for the message the simulated air (channel name,
SNR in dB, seed) and an ``eval`` section (the true item's id, used for scoring the
retrieval rank only, never for decoding). The receiver simulates the channel on what
arrives: the HTTP hop stands in for the air.

Example:
    >>> msg = WireMessage(transmissions=[Transmission("semantic-analog", {}, payload)],
    ...                   channel="awgn", snr_db=5.0, seed=0, eval={"item": "synthetic/3"})
    >>> same = decode_message(encode_message(msg))
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from genscom.channels.sensing import PilotLayout
from genscom.coding.mcs import LinkPlan, get_mcs
from genscom.schemes.base import Payload, payload_types

WIRE_FORMAT = "genscom-demo-wire/1"
CONTENT_TYPE = "application/octet-stream"
#: Payload extras the transmitter keeps to itself (clean content or transmitter-side state).
PRIVATE_EXTRAS = frozenset({"tx_embeddings", "features", "importance"})
#: Payload fields sent by their own rules (the rest of a payload class's fields go under "fields").
_BASE_FIELDS = frozenset({"symbols", "channel_uses", "side_bits", "bits", "extras"})
#: Largest message the receiver accepts (bytes).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class Transmission:
    """One scheme's payload for the message.

    Attributes:
        scheme: registered scheme name (``create_scheme(scheme, **settings)`` at the receiver).
        settings: JSON-able constructor keywords of the scheme (e.g. ``{"mcs": "qpsk-1/2"}``).
        payload: the :class:`Payload` as the channel carries it.
        role: ``"semantic"`` or ``"baseline"``.

    The receiver runs ``scheme.deliver`` on the payload (channel, pilots, digital links, receive).
    """

    scheme: str
    settings: dict[str, Any]
    payload: Payload
    role: str = "semantic"


@dataclass
class WireMessage:
    """A whole message: transmissions plus the simulated air and the scoring label."""

    transmissions: list[Transmission]
    channel: str
    snr_db: float
    seed: int = 0
    eval: dict[str, Any] = field(default_factory=dict)


def public_extras(extras: dict[str, Any]) -> dict[str, Any]:
    """``extras`` without transmitter-only keys (``_*`` and :data:`PRIVATE_EXTRAS`)."""
    return {k: v for k, v in extras.items() if not k.startswith("_") and k not in PRIVATE_EXTRAS}


def _pack(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able description of ``value``; tensors go into ``tensors`` under ``key``."""
    if isinstance(value, torch.Tensor):
        # copies: extras may hold one tensor under two keys, and safetensors refuses shared memory
        t = value.detach().cpu()
        if t.is_complex():
            tensors[key] = torch.view_as_real(t.to(torch.complex64)).clone()
            return {"__tensor__": key, "complex": True}
        tensors[key] = t.clone()
        return {"__tensor__": key}
    if isinstance(value, (bytes, bytearray)):
        tensors[key] = torch.frombuffer(bytearray(value), dtype=torch.uint8).clone() if value else torch.zeros(0, dtype=torch.uint8)
        return {"__bytes__": key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"extras key {key!r}: only dicts with str keys cross the wire")
        return {"__dict__": {k: _pack(v, f"{key}.{k}", tensors) for k, v in value.items()}}
    if isinstance(value, LinkPlan):  # a digital payload's plan, chosen at transmit: it travels with the bits
        # every declared field by name (the MCS as its name, the pilot layout as [P, coherence])
        return {"__plan__": {f.name: _pack(getattr(value, f.name), f"{key}.{f.name}", tensors)
                             for f in dataclasses.fields(LinkPlan)}}
    if isinstance(value, PilotLayout):
        return {"__pilots__": [value.pilots_per_block, value.coherence]}
    if hasattr(value, "name") and isinstance(getattr(value, "name"), str):  # e.g. an MCS object -> its name
        return value.name
    raise TypeError(f"extras key {key!r} holds a {type(value).__name__}, which has no wire form")


#: Most transmissions in one message (the demo sends two: the scheme's and the baseline's).
MAX_TRANSMISSIONS = 2


class _UseOnce(dict):
    """The message's tensors; each may be referenced once (no fan-out of one large tensor into many copies)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(tensors)
        self.used: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        if not isinstance(key, str) or key not in self:
            raise ValueError(f"the message refers to a tensor {str(key)[:40]!r} it does not hold")
        if key in self.used:
            raise ValueError(f"the message refers to tensor {key[:40]!r} more than once")
        self.used.add(key)
        return super().__getitem__(key)


def _unpack(desc: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(desc, dict):
        if "__tensor__" in desc:
            t = tensors[desc["__tensor__"]]
            return torch.view_as_complex(t.contiguous()) if desc.get("complex") else t
        if "__bytes__" in desc:
            return tensors[desc["__bytes__"]].numpy().tobytes()
        if "__tuple__" in desc:
            return tuple(_unpack(v, tensors) for v in desc["__tuple__"])
        if "__dict__" in desc:
            return {k: _unpack(v, tensors) for k, v in desc["__dict__"].items()}
        if "__plan__" in desc:
            d = {k: _unpack(v, tensors) for k, v in desc["__plan__"].items()}
            declared = {f.name for f in dataclasses.fields(LinkPlan)}
            if set(d) - declared:
                raise ValueError(f"LinkPlan has no field(s) {sorted(set(d) - declared)}")
            pilots = d.get("pilots")
            if pilots is not None and not isinstance(pilots, PilotLayout):
                raise ValueError(f"a LinkPlan's pilots must be a pilot layout or null, got {pilots!r}")
            return LinkPlan(**{**d, "mcs": get_mcs(str(d["mcs"])), "repeat": int(d["repeat"]),
                               "n_bits": int(d["n_bits"]), "n_codewords": int(d["n_codewords"]),
                               "channel_uses": int(d["channel_uses"]), "p_success": float(d["p_success"]),
                               "snr_db_estimate": float(d["snr_db_estimate"])})
        if "__pilots__" in desc:
            p, c = desc["__pilots__"]
            return PilotLayout(pilots_per_block=int(p), coherence=None if c is None else int(c))
        raise ValueError(f"unknown wire value {desc!r}")
    if isinstance(desc, list):
        return [_unpack(v, tensors) for v in desc]
    return desc


def encode_message(msg: WireMessage) -> bytes:
    """:class:`WireMessage` -> safetensors bytes (transmitter-only extras removed)."""
    from safetensors.torch import save

    if not msg.transmissions:
        raise ValueError("a wire message needs at least one transmission")
    tensors: dict[str, torch.Tensor] = {}
    header: dict[str, Any] = {"format": WIRE_FORMAT, "channel": msg.channel, "snr_db": float(msg.snr_db),
                              "seed": int(msg.seed), "eval": msg.eval, "transmissions": []}
    for i, tr in enumerate(msg.transmissions):
        p = tr.payload
        pre = f"t{i}"
        entry = {"scheme": tr.scheme, "settings": tr.settings, "role": tr.role,
                 "symbols": _pack(p.symbols, f"{pre}.symbols", tensors) if p.symbols is not None else None,
                 "channel_uses": _pack(p.channel_uses, f"{pre}.channel_uses", tensors),
                 "side_bits": _pack(p.side_bits, f"{pre}.side_bits", tensors),
                 "bits": None, "extras": _pack(public_extras(p.extras), f"{pre}.extras", tensors)["__dict__"],
                 "payload_type": type(p).__name__,
                 "fields": {f.name: _pack(getattr(p, f.name), f"{pre}.f.{f.name}", tensors)
                            for f in dataclasses.fields(p) if f.name not in _BASE_FIELDS}}
        if p.bits is not None:
            lengths = [len(b) for b in p.bits]
            joined = b"".join(bytes(b) for b in p.bits)
            tensors[f"{pre}.bits"] = torch.frombuffer(bytearray(joined), dtype=torch.uint8).clone() if joined \
                else torch.zeros(0, dtype=torch.uint8)
            entry["bits"] = {"tensor": f"{pre}.bits", "lengths": lengths}
        header["transmissions"].append(entry)
    return save(tensors, metadata={"genscom": json.dumps(header)})


def decode_message(data: bytes) -> WireMessage:
    """Inverse of :func:`encode_message`. Raises ``ValueError`` naming what is wrong with ``data``."""
    from safetensors.torch import load

    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message is {len(data)} bytes; the receiver accepts at most {MAX_MESSAGE_BYTES}")
    try:
        tensors = load(bytes(data))
        n = int.from_bytes(bytes(data[:8]), "little")
        meta = json.loads(bytes(data[8:8 + n]).decode("utf-8")).get("__metadata__", {})
        header = json.loads(meta["genscom"])
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user-facing problem
        raise ValueError(f"not a {WIRE_FORMAT} message (expected a safetensors body with a 'genscom' header): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != WIRE_FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"wire format {str(fmt)[:40]!r} is not supported; expected {WIRE_FORMAT!r}")
    if not isinstance(header.get("transmissions"), list) or not 1 <= len(header["transmissions"]) <= MAX_TRANSMISSIONS:
        raise ValueError(f"a message holds 1 to {MAX_TRANSMISSIONS} transmissions")
    tensors = _UseOnce(tensors)
    trs = []
    for e in header["transmissions"]:
        bits = None
        if e["bits"] is not None:
            flat = tensors[e["bits"]["tensor"]].numpy().tobytes()
            bits, pos = [], 0
            for n_b in e["bits"]["lengths"]:
                bits.append(flat[pos:pos + n_b])
                pos += n_b
        kinds = payload_types()
        cls = kinds.get(str(e.get("payload_type", "Payload")))
        if cls is None:
            raise ValueError(f"unknown payload type {e.get('payload_type')!r}; known: {', '.join(sorted(kinds))}")
        declared = {f.name for f in dataclasses.fields(cls)} - _BASE_FIELDS
        extra_fields = dict(e.get("fields") or {})
        if set(extra_fields) - declared:
            raise ValueError(f"{cls.__name__} has no field(s) {sorted(set(extra_fields) - declared)}")
        payload = cls(symbols=_unpack(e["symbols"], tensors) if e["symbols"] is not None else None,
                      channel_uses=_unpack(e["channel_uses"], tensors), side_bits=_unpack(e["side_bits"], tensors),
                      bits=bits, extras={k: _unpack(v, tensors) for k, v in e["extras"].items()},
                      **{k: _unpack(v, tensors) for k, v in extra_fields.items()})
        trs.append(Transmission(e["scheme"], dict(e["settings"]), payload, e.get("role", "semantic")))
    return WireMessage(transmissions=trs, channel=header["channel"], snr_db=float(header["snr_db"]),
                       seed=int(header["seed"]), eval=dict(header.get("eval") or {}))


__all__ = ["CONTENT_TYPE", "MAX_MESSAGE_BYTES", "MAX_TRANSMISSIONS", "PRIVATE_EXTRAS", "Transmission", "WIRE_FORMAT", "WireMessage",
           "decode_message", "encode_message", "public_extras"]
