"""Small images for the demo panels: constellation, R@1 vs SNR, failure marker, frame strips.

All return uint8 ``[H, W, 3]`` numpy images (matplotlib Agg, no display needed).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _fig_to_array(fig: Any) -> np.ndarray:
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return arr


def constellation_image(sent: np.ndarray | None, received: np.ndarray | None, *, title: str = "") -> np.ndarray:
    """Scatter of sent (dots) and equalised received (crosses) complex symbols."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.0, 3.6), dpi=90)
    if received is not None and len(received):
        r = np.asarray(received)[:2048]
        ax.scatter(r.real, r.imag, s=6, marker="x", alpha=0.5, color="tab:red", label="received (equalised)")
    if sent is not None and len(sent):
        s = np.asarray(sent)[:2048]
        ax.scatter(s.real, s.imag, s=8, alpha=0.8, color="tab:blue", label="sent")
    if sent is None and received is None:
        ax.text(0.5, 0.5, "no symbols yet", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(0, color="0.8", lw=0.5)
    ax.axvline(0, color="0.8", lw=0.5)
    ax.set_xlabel("in-phase")
    ax.set_ylabel("quadrature")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _fig_to_array(fig)


def r1_vs_snr_image(results: dict[str, Any], *, channel: str, snr_db: float | None = None,
                    metric: str = "t2v_R@1") -> np.ndarray | None:
    """R@1 vs SNR, one line per scheme, from a retrieval results dict (PROTOCOL.md); ``None`` if no record fits."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    flat: dict[str, float] = {}
    for rec in results.get("records", []):
        val = (rec.get("metrics") or {}).get(metric)
        if val is None:
            continue
        if rec.get("snr_db") is None:
            flat[rec["scheme"]] = float(val)
        elif rec.get("channel") == channel:
            series.setdefault(rec["scheme"], []).append((float(rec["snr_db"]), float(val)))
    if not series and not flat:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=90)
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    for name, val in flat.items():
        ax.axhline(val, ls="--", color="0.5", lw=1, label=name)
    if snr_db is not None:
        ax.axvline(snr_db, color="k", lw=0.8, ls=":")
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.set_title(f"{metric} vs SNR ({channel})", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return _fig_to_array(fig)


def failure_marker(text: str = "LDPC failed", size: int = 128) -> np.ndarray:
    """A grey tile with a red cross and ``text``: the baseline delivered nothing decodable."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (70, 70, 70))
    d = ImageDraw.Draw(img)
    d.line((8, 8, size - 8, size - 8), fill=(220, 40, 40), width=6)
    d.line((8, size - 8, size - 8, 8), fill=(220, 40, 40), width=6)
    d.rectangle((0, size // 2 - 9, size, size // 2 + 9), fill=(0, 0, 0))
    d.text((6, size // 2 - 6), text, fill=(255, 255, 255))
    return np.asarray(img)


def upscale(img: np.ndarray, min_side: int = 128) -> np.ndarray:
    """Nearest-neighbour upscaling so small frames are visible (integer factor)."""
    h, w = img.shape[:2]
    f = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    return np.ascontiguousarray(img.repeat(f, axis=0).repeat(f, axis=1)) if f > 1 else img


def placeholder(text: str, size: int = 96) -> np.ndarray:
    """A plain tile with ``text`` (an item the receiver holds no pixels of)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (30, 60, 110))
    ImageDraw.Draw(img).text((4, size // 2 - 6), text[:16], fill=(255, 255, 255))
    return np.asarray(img)


__all__ = ["constellation_image", "failure_marker", "placeholder", "r1_vs_snr_image", "upscale"]
