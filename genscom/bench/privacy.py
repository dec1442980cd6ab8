"""``genscom bench privacy``: what an eavesdropper retrieves, with and without a private link.

The retrieval task of PROTOCOL.md (:mod:`genscom.bench.retrieval`: text-to-video over a channel, the same
metrics, intervals and failure rule, through the same helpers) with two receivers of one transmission:

* the **legitimate** receiver, at SNR ``s`` (the transmitter adapts to its fed-back estimate), for every ``s``
  of the grid; and
* an **eavesdropper** who knows every public model (encoder, adapter, quantiser, codec) but not the key, on
  an independent channel draw at its own SNR ``e`` (every ``e`` of the grid), receiving the transmission
  made for the legitimate receiver at ``legit_snr_db``.

Each scheme runs plain (the leak: the eavesdropper decodes as well as the receiver at equal SNR) and
private (:class:`genscom.schemes.private.PrivateScheme`: AEAD per digital item, keyed scrambling plus an
authenticated header per analog item, every overhead counted in channel uses). The eavesdropper of the
private link is the same wrapper with another key and the public session id. A fresh random key is drawn
per run (or read with ``key_file``); no key material is written anywhere.

Records: ``receiver`` (``"legit"`` / ``"eve"``), ``encrypted``, ``snr_db`` (the legitimate receiver's),
``eve_snr_db`` (eavesdropper rows), ``overhead_uses`` / ``overhead_bits`` (per item, counted at transmit),
``auth_failure_rate``; meta has ``chance_t2v_R1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch

from genscom.bench.results import markdown_table, plot_metric_vs_snr, render_table
from genscom.bench.retrieval import (CI_NOTE, SchemeSpec, _aggregate, _plain, default_adapter, load_gallery,
                                     embed_delivered, gallery_similarity)
from genscom.channels.sensing import LinkFeedback, link_feedback
from genscom.results import Record, make_meta, write_results

if TYPE_CHECKING:
    from genscom.schemes.private import PrivacyConfig

QUICK_SNRS = (0.0, 10.0, 20.0)
FULL_SNRS = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)


def privacy_schemes(profile: str, *, mcs: str = "adaptive", fidelity: str = "abstract", quantizer: str = "int4",
                    codec: Literal["h264-ldpc", "jpeg-ldpc"] = "h264-ldpc",
                    adapter: str | None = "default") -> list[SchemeSpec]:
    """The benchmark's schemes: ``semantic-analog``; ``adapted`` with the shipped adapter of ``profile``
    (``adapter="default"``; ``None``: no adapted row); the quantised embedding (``quantizer``) and ``codec``
    over the digital link at ``mcs`` (adaptive by default) with the link ``fidelity``."""
    rows = [SchemeSpec("semantic-analog")]
    name = default_adapter(profile) if adapter == "default" else adapter
    if name is not None:
        rows.append(SchemeSpec("adapted", {"adapter": name}))
    rows.append(SchemeSpec("digital-embedding", {"quantizer": quantizer, "mcs": mcs, "fidelity": fidelity}))
    codec_kw = {"crf": 28} if codec == "h264-ldpc" else {"quality": 50}
    rows.append(SchemeSpec(codec, {**codec_kw, "mcs": mcs, "fidelity": fidelity}))
    return rows


@dataclass
class PrivacyBenchConfig:
    """Options of the privacy benchmark (``None``: the quick or full default).

    Quick: 200 items, SNRs 0/10/20 dB, 2 realisations. Full: 1000 items, -5..20 dB step 5, 5 realisations.
    """

    dataset: str = "synthetic"
    profile: str = "mini-attr"
    n_items: int | None = None
    channel: str = "awgn"
    snrs: tuple[float, ...] | None = None  # legitimate receiver's SNRs, and the eavesdropper's
    legit_snr_db: float = 10.0  # the legitimate receiver's SNR of the transmission the eavesdropper receives
    realisations: int | None = None
    seed: int = 0
    quick: bool = False
    mcs: str = "adaptive"
    fidelity: Literal["full", "abstract", "auto"] = "abstract"  # digital links (PROTOCOL: calibrated abstraction)
    csi: Literal["pilot", "perfect"] = "pilot"
    feedback_bits: int = 6
    pilots_per_block: int = 2
    key_file: str | None = None  # None: a fresh random key per run (never written)
    out_dir: str = "results/privacy"
    device: str = "cpu"
    batch_size: int = 64
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_items is None:
            self.n_items = 200 if self.quick else 1000
        if self.snrs is None:
            self.snrs = QUICK_SNRS if self.quick else FULL_SNRS
        if self.realisations is None:
            self.realisations = 2 if self.quick else 5
        self.snrs = tuple(float(s) for s in self.snrs)
        if not self.snrs or not all(math.isfinite(s) for s in self.snrs):
            raise ValueError(f"snrs must be finite dB values, got {self.snrs!r}")
        if not math.isfinite(float(self.legit_snr_db)):
            raise ValueError(f"legit_snr_db must be a finite dB value, got {self.legit_snr_db!r}")
        if isinstance(self.n_items, bool) or not isinstance(self.n_items, int) or self.n_items < 2:
            raise ValueError(f"n_items must be an integer >= 2, got {self.n_items!r}")
        if isinstance(self.realisations, bool) or not isinstance(self.realisations, int) or self.realisations < 1:
            raise ValueError(f"realisations must be an integer >= 1, got {self.realisations!r}")
        if self.csi not in ("pilot", "perfect"):
            raise ValueError(f"csi must be 'pilot' or 'perfect', got {self.csi!r}")


def _seed(cfg: PrivacyBenchConfig, r: int, snr: float, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + r * 7919 + int(round(snr * 10)) + salt)


def run_privacy_bench(cfg: PrivacyBenchConfig, *, command: str = "", console: Any = None,
                      schemes: list[SchemeSpec] | None = None, encoder: Any = None,
                      dataset: Any = None, privacy: PrivacyConfig | None = None) -> dict[str, Any]:
    """Run the benchmark; write ``privacy.json``, ``privacy_r1.png`` and ``privacy.md`` to ``cfg.out_dir``.

    ``schemes`` default to :func:`privacy_schemes`; ``encoder`` / ``dataset`` to ``create_encoder(cfg.profile)``
    and the test split of ``cfg.dataset`` (objects with the same methods work, as in the retrieval benchmark);
    ``privacy``: the :class:`~genscom.schemes.private.PrivacyConfig` of the private links (``None``: defaults).
    Returns ``{"records", "json", "png", "overhead"}``.
    """
    from rich.console import Console

    from genscom.channels.registry import create_channel
    from genscom.metrics.retrieval import retrieval_per_query
    from genscom.privacy import LinkKey
    from genscom.schemes import DigitalPayload, create_scheme
    from genscom.schemes.private import (PrivacyConfig, PrivateDelivered, PrivateScheme, ScrambledPayload,
                                         SealedPayload)

    console = console or Console()
    privacy = PrivacyConfig() if privacy is None else privacy
    specs = schemes if schemes is not None else privacy_schemes(cfg.profile, mcs=cfg.mcs, fidelity=cfg.fidelity)
    device = torch.device(cfg.device)
    gal = load_gallery(dataset_name=cfg.dataset, n_items=cfg.n_items, seed=cfg.seed, dataset_kwargs=cfg.dataset_kwargs,
                       profile=cfg.profile, device=device, batch_size=cfg.batch_size, encoder=encoder, dataset=dataset)
    dataset, captions, text_to_item = gal.dataset, gal.captions, gal.text_to_item
    text_emb, clean_emb, encode_clips, batch = gal.text_emb, gal.clean_emb, gal.encode_clips, gal.batch
    dim, source_dim = gal.dim, gal.source_dim
    console.print(f"[bold]privacy benchmark[/] dataset={cfg.dataset} profile={cfg.profile} N={len(dataset)} "
                  f"channel={cfg.channel} SNRs={list(cfg.snrs)} legit SNR for the eavesdropper rows="
                  f"{cfg.legit_snr_db:+.1f} dB realisations={cfg.realisations}")
    chance = 1.0 / len(dataset)
    channel = create_channel(cfg.channel)
    key = LinkKey.from_file(cfg.key_file) if cfg.key_file else LinkKey.generate()
    eve_key = LinkKey.generate()  # anything but the link's key

    def metrics_of(gallery: torch.Tensor) -> dict[str, torch.Tensor]:
        return retrieval_per_query(gallery_similarity(text_emb, gallery), text_to_item)

    def sensing_for(scheme: Any, snr: float, g: torch.Generator) -> LinkFeedback:
        if scheme.adapts:
            return link_feedback(channel, snr, csi=cfg.csi, bits=cfg.feedback_bits,
                                 pilots_per_block=cfg.pilots_per_block, generator=g)
        return LinkFeedback(channel=channel.name, csi=cfg.csi, coherence=getattr(channel, "coherence", None),
                            pilots_per_block=cfg.pilots_per_block)

    records: list[Record] = []
    upper, upper_ci = _aggregate([metrics_of(clean_emb)])
    records.append(Record(scheme="noiseless", channel="none", snr_db=None, channel_uses=0, metrics=upper,
                          ci95=upper_ci, extra={"receiver": "legit", "encrypted": False,
                                                "note": f"clean {cfg.profile} embeddings (upper bound)"}))
    for spec in specs:
        plain = create_scheme(spec.name, **spec.kwargs)
        private = PrivateScheme(plain, key, config=privacy)
        eve_private = PrivateScheme(plain, eve_key, session_id=private.session_id, config=privacy)
        clean_cache: dict[int, torch.Tensor] = {}
        for encrypted, tx, eve in ((False, plain, plain), (True, private, eve_private)):
            label = f"{plain.name}{' (private)' if encrypted else ''}"
            base = {"scheme_kwargs": _plain(spec.kwargs), "encrypted": encrypted, "csi": cfg.csi}
            eve_payloads: list[Any] = []

            def run(receiver: Any, payload_of: Callable[[int], Any], snr: float, salt: int) -> dict[str, Any]:
                runs, uses, fails, auth, over_u, over_b, bits = [], [], [], [], [], [], []
                for r in range(cfg.realisations):  # type: ignore[arg-type]
                    payload, g = payload_of(r)
                    delivered = receiver.deliver(payload, channel, snr, generator=_seed(cfg, r, snr, salt)
                                                 if g is None else g)
                    runs.append(metrics_of(embed_delivered(delivered, encode_clips, clean_cache, dim)))
                    uses.append(float(payload.channel_uses.float().mean()))
                    fails.append(float(delivered.failed.float().mean()))
                    private_rx = isinstance(delivered, PrivateDelivered) and delivered.auth_failed is not None
                    auth.append(float(delivered.auth_failed.float().mean()) if private_rx else 0.0)
                    if isinstance(payload, (SealedPayload, ScrambledPayload)):  # overhead counted at transmit
                        over_u.append(float(payload.overhead_uses.float().mean()))
                        over_b.append(float(payload.overhead_bits.float().mean()))
                    else:
                        over_u.append(0.0)
                        over_b.append(0.0)
                    if isinstance(payload, DigitalPayload) and payload.source_bits is not None:
                        bits.append(float(payload.source_bits.float().mean() + payload.side_bits.float().mean()))
                means, cis = _aggregate(runs)
                n = len(uses)
                return {"channel_uses": sum(uses) / n, "bits": sum(bits) / len(bits) if bits else None,
                        "failure_rate": sum(fails) / n, "metrics": means, "ci95": cis,
                        "extra": {"overhead_uses": sum(over_u) / n, "overhead_bits": sum(over_b) / n,
                                  "auth_failure_rate": sum(auth) / n}}

            def record(res: dict[str, Any], snr: float, extra: dict[str, Any]) -> Record:
                return Record(scheme=plain.name, channel=cfg.channel, snr_db=snr, channel_uses=res["channel_uses"],
                              bits=res["bits"], cbr=res["channel_uses"] / source_dim,
                              failure_rate=res["failure_rate"], metrics=res["metrics"], ci95=res["ci95"],
                              extra={**base, **res["extra"], **extra})

            # the legitimate receiver at every SNR (the transmitter adapts to its fed-back estimate)
            for snr in cfg.snrs:
                def legit_payload(r: int, snr: float = snr) -> tuple[Any, torch.Generator]:
                    g = _seed(cfg, r, snr, 17)  # the same draws plain and private: paired comparisons
                    p = tx.transmit(batch, sensing=sensing_for(tx, snr, g), generator=g)
                    if snr == cfg.legit_snr_db:
                        eve_payloads.append(p)
                    return p, g
                res = run(tx, legit_payload, snr, 17)
                records.append(record(res, snr, {"receiver": "legit"}))
                console.print(f"{label:>36} legit {snr:+6.1f} dB: t2v R@1 {res['metrics']['t2v_R@1']:.3f} "
                              f"± {res['ci95']['t2v_R@1']:.3f}, {res['channel_uses']:.0f} channel uses "
                              f"({res['extra']['overhead_uses']:.0f} overhead)")
            if len(eve_payloads) != cfg.realisations:  # legit_snr_db is not on the grid: transmit for it
                for r in range(cfg.realisations):  # type: ignore[arg-type]
                    g = _seed(cfg, r, cfg.legit_snr_db, 17)
                    eve_payloads.append(tx.transmit(batch, sensing=sensing_for(tx, cfg.legit_snr_db, g), generator=g))
            # the eavesdropper: the same transmissions, its own channel draws at its own SNR
            for e in cfg.snrs:
                res = run(eve, lambda r: (eve_payloads[r], None), e, 104_729)
                records.append(record(res, cfg.legit_snr_db, {"receiver": "eve", "eve_snr_db": e}))
                console.print(f"{label:>36}   eve {e:+6.1f} dB: t2v R@1 {res['metrics']['t2v_R@1']:.3f} "
                              f"± {res['ci95']['t2v_R@1']:.3f} (legit at {cfg.legit_snr_db:+.1f} dB)")

    overhead = overhead_summary(records)
    meta = make_meta(command=command, seed=cfg.seed, dataset=cfg.dataset, n_items=len(dataset), profile=cfg.profile,
                     quick=cfg.quick, channels=[cfg.channel], snrs=list(cfg.snrs), legit_snr_db=cfg.legit_snr_db,
                     realisations=cfg.realisations, mcs=cfg.mcs, fidelity=cfg.fidelity, csi=cfg.csi,
                     feedback_bits=cfg.feedback_bits, source_dim=source_dim, n_queries=len(captions),
                     chance_t2v_R1=chance, ci=CI_NOTE, overhead=overhead,
                     key=("read from a key file" if cfg.key_file else "a fresh random key per run") + " (never written)",
                     eavesdropper="same public models, another key, the public session id; independent channel "
                                  "draws at eve_snr_db of the transmission made for the receiver at legit_snr_db",
                     privacy=_privacy_note(privacy))
    out_dir = Path(cfg.out_dir)
    json_path = write_results(out_dir / "privacy.json", "privacy", meta, records)
    png = plot_privacy(records, out_dir / "privacy_r1.png", chance=chance,
                       title=f"{cfg.dataset} N={len(dataset)}, {cfg.channel}, legit at {cfg.legit_snr_db:+g} dB for eve")
    columns = ["scheme", "receiver", "encrypted", "snr_db", "eve_snr_db", "channel_uses", "overhead_uses",
               "failure_rate", "auth_failure_rate", "t2v_R@1", "t2v_R@5", "RSUM"]
    console.print(render_table(records, columns, title="retrieval by the receiver and an eavesdropper, "
                                                       "plain and private"))
    console.print(f"chance t2v R@1 = {chance:.4f} (N = {len(dataset)}); overhead per item (channel uses): "
                  + ", ".join(f"{k} {v['overhead_uses']:.0f} ({100 * v['relative']:.1f}%)" for k, v in overhead.items()))
    from genscom.utils import atomic_write_text

    atomic_write_text(out_dir / "privacy.md", markdown_table(records, columns) + "\n")
    console.print(f"wrote {json_path}, {png}")
    return {"records": records, "json": json_path, "png": png, "overhead": overhead}


def _privacy_note(c: PrivacyConfig) -> dict[str, Any]:
    return {"aead": c.aead.algorithm, "scramble": c.scramble.mode, "header_bits": c.header.nonce_bits + c.header.tag_bits,
            "header_mcs": c.header_mcs, "header_repeat": c.header_repeat, "header_fidelity": c.header_fidelity,
            "on_header_failure": c.on_header_failure}


def overhead_summary(records: list[Record]) -> dict[str, dict[str, float]]:
    """Per scheme: the mean channel uses per item the private link adds over the plain one (legitimate rows,
    over the SNR grid), also relative to the plain scheme's channel uses."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.scheme for r in records if r.snr_db is not None):
        legit = [r for r in records if r.scheme == name and r.extra.get("receiver") == "legit" and r.snr_db is not None]
        enc = [r for r in legit if r.extra.get("encrypted")]
        pl = [r for r in legit if not r.extra.get("encrypted")]
        if not enc or not pl:
            continue
        over = sum(r.extra.get("overhead_uses", 0.0) for r in enc) / len(enc)
        plain_uses = sum(float(r.channel_uses or 0.0) for r in pl) / len(pl)
        out[name] = {"overhead_uses": over, "plain_uses": plain_uses,
                     "relative": over / plain_uses if plain_uses else 0.0,
                     "overhead_bits": sum(r.extra.get("overhead_bits", 0.0) for r in enc) / len(enc)}
    return out


def plot_privacy(records: list[Record], path: str | Path, *, chance: float, title: str = "") -> Path:
    """t2v R@1 vs SNR: per scheme the legitimate receiver (vs its SNR) and the eavesdropper (vs its own SNR),
    plain (solid) and private (dashed); eavesdropper lines with square markers."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    schemes = list(dict.fromkeys(r.scheme for r in records if r.snr_db is not None))
    cmap = plt.get_cmap("tab10")
    series: dict[str, tuple[list[float], list[float]]] = {}
    styles: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.snr_db is None:
            continue
        who = r.extra.get("receiver")
        enc = bool(r.extra.get("encrypted"))
        label = f"{r.scheme} {who}{' private' if enc else ''}"
        x = r.extra["eve_snr_db"] if who == "eve" else r.snr_db
        xs, ys = series.setdefault(label, ([], []))
        xs.append(float(x))
        ys.append(r.metrics["t2v_R@1"])
        styles[label] = {"color": cmap(schemes.index(r.scheme) % cmap.N), "ls": "--" if enc else "-",
                         "marker": "s" if who == "eve" else "o", "ms": 3}
    return plot_metric_vs_snr(series, path, ylabel="text-to-video R@1", title=title, styles=styles,
                              hlines={"chance": chance, "2 x chance": 2 * chance})


__all__ = ["FULL_SNRS", "QUICK_SNRS", "PrivacyBenchConfig", "overhead_summary", "plot_privacy", "privacy_schemes",
           "run_privacy_bench"]
