"""End-to-end retrieval benchmark on a tiny hand-built gallery (no model weights needed)."""

import json

import pytest
import torch

from genscom.bench.retrieval import RetrievalBenchConfig, SchemeSpec, run_retrieval_bench
from genscom.bench.results import Record
from genscom.data.base import ClipCaptionDataset

N, D = 12, 16


class ColourClips(ClipCaptionDataset):
    """N clips of one flat colour each; caption i names item i."""

    name = "colour-clips"

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.colours = torch.randint(0, 256, (N, 3), generator=g, dtype=torch.int64).to(torch.uint8)

    def __len__(self):
        return N

    def load_frames(self, i):
        return self.colours[i].view(1, 1, 1, 3).expand(2, 16, 16, 3).clone()

    def captions_of(self, i):
        return [f"item {i}"]


class LookupEncoder(torch.nn.Module):
    """Clip -> fixed random projection of its mean colour; caption 'item i' -> the same vector for clip i."""

    def __init__(self, ds):
        super().__init__()
        self.proj = torch.randn(3, D, generator=torch.Generator().manual_seed(1))
        self.table = {f"item {i}": self._embed(ds.colours[i].float().view(1, 3)) [0] for i in range(N)}
        self.dim = D

    def _embed(self, rgb):
        e = (rgb / 255.0 - 0.5) @ self.proj
        return e / e.norm(dim=-1, keepdim=True)

    def encode_text(self, texts, batch_size=64):
        return torch.stack([self.table[t] for t in texts])

    def encode_clips(self, clips, batch_size=64):
        return self._embed(clips.float().mean(dim=(1, 2, 3)))


def test_retrieval_bench_end_to_end(tmp_path):
    ds = ColourClips()
    cfg = RetrievalBenchConfig(n_items=N, channels=("awgn",), snrs=(-25.0, 40.0), realisations=2,
                               out_dir=str(tmp_path), profile="lookup", equal_uses=False)
    res = run_retrieval_bench(cfg, schemes=[SchemeSpec("semantic-analog")], encoder=LookupEncoder(ds), dataset=ds)
    recs = {(r.scheme, r.snr_db): r for r in res["records"]}
    assert recs[("noiseless", None)].metrics["t2v_R@1"] == 1.0
    hi, lo = recs[("semantic-analog", 40.0)], recs[("semantic-analog", -25.0)]
    assert hi.metrics["t2v_R@1"] == 1.0
    assert lo.metrics["t2v_R@1"] < hi.metrics["t2v_R@1"]
    assert hi.channel_uses == D / 2 and hi.cbr == pytest.approx((D / 2) / (2 * 16 * 16 * 3))
    assert recs[("semantic-analog", None)].metrics["t2v_R@1"] == 1.0  # its own noiseless reference row
    data = json.loads((tmp_path / "retrieval.json").read_text())
    assert data["benchmark"] == "retrieval" and data["meta"]["n_items"] == N
    meta = data["meta"]
    # frontier: at 40 dB the analog row (D/2 uses) reaches 0.95 x its reference, at -25 dB it does not
    front = meta["frontier"]["awgn"]["semantic"]
    assert front["+40"]["channel_uses"] == D / 2 and (front["-25"] is None) == (lo.metrics["t2v_R@1"] < 0.95)
    assert meta["equal_budget"]["awgn"]["semantic"] == pytest.approx(
        (hi.metrics["t2v_R@1"] + lo.metrics["t2v_R@1"]) / 2)  # D/2 <= 192 channel uses: both points count
    for png in ("retrieval_r1.png", "retrieval_frontier.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_pq_row_fitted_on_train_split_and_best_digital_envelope(tmp_path):
    """A ``pq-<m>x<b>`` row is fitted on the train split (never the test gallery) and sent over the adaptive
    link; ``best-digital`` is, per SNR, the classic row with the highest R@1 (ties: fewer channel uses)."""
    ds, train = ColourClips(), ColourClips(seed=5)
    cfg = RetrievalBenchConfig(n_items=N, channels=("awgn",), snrs=(-8.0, 30.0), realisations=1,
                               out_dir=str(tmp_path), profile="lookup", equal_uses=False)
    specs = [SchemeSpec("digital-embedding", {"quantizer": q, "mcs": "adaptive", "fidelity": "abstract"})
             for q in ("pq-4x2", "int8")]
    res = run_retrieval_bench(cfg, schemes=specs, encoder=LookupEncoder(ds), dataset=ds, train_dataset=train)
    rows = {(r.scheme, r.channel, r.snr_db): r for r in res["records"]}
    pq = rows[("digital-embedding-pq-4x2-mcs-adaptive", "awgn", 30.0)]
    assert pq.extra["scheme_kwargs"]["quantizer"] == "pq-4x2" and pq.bits == 4 * 2 + 24 + cfg.feedback_bits  # code, CRC, fed-back SNR
    for snr in (-8.0, 30.0):
        cands = [r for (name, ch, s), r in rows.items() if name.startswith("digital-embedding") and s == snr]
        best = rows[("best-digital", "awgn", snr)]
        top = max(r.metrics["t2v_R@1"] for r in cands)
        assert best.metrics["t2v_R@1"] == top
        assert best.channel_uses == min(r.channel_uses for r in cands if r.metrics["t2v_R@1"] == top)
        assert best.extra["from"] in {r.scheme for r in cands}
    blob = json.loads((tmp_path / "retrieval.json").read_text())  # fitted quantisers are named, not serialised
    assert {r["scheme"] for r in blob["records"]} >= {"best-digital", "digital-embedding-pq-4x2-mcs-adaptive"}


def test_equal_uses_row_matches_the_baseline_per_snr_and_is_capped(tmp_path):
    """The equal-channel-uses row repeats the analog embedding to the baseline family's channel uses *at each
    SNR* (an adaptive link spends more at low SNR), capped at ``equal_uses_max_repeat`` copies."""
    ds = ColourClips()
    spec = SchemeSpec("digital-embedding", {"quantizer": "int8", "mcs": "adaptive", "fidelity": "abstract"})
    runs = {}
    for cap in (10_000, 3):
        out = tmp_path / f"cap{cap}"
        cfg = RetrievalBenchConfig(n_items=N, channels=("awgn",), snrs=(-8.0, 25.0), realisations=1,
                                   out_dir=str(out), profile="lookup", equal_uses_family="digital-embedding",
                                   equal_uses_max_repeat=cap)
        res = run_retrieval_bench(cfg, schemes=[spec], encoder=LookupEncoder(ds), dataset=ds)
        runs[cap] = {(r.scheme, r.snr_db): r for r in res["records"]}
    rows = runs[10_000]
    base = {snr: rows[("digital-embedding-int8-mcs-adaptive", snr)].channel_uses for snr in (-8.0, 25.0)}
    assert base[-8.0] > base[25.0]  # the adaptive link spends more at low SNR
    for snr in (-8.0, 25.0):
        eq = rows[("semantic-analog-equal-digital-embedding", snr)]
        want = max(1, round(base[snr] / (D / 2)))
        assert eq.extra["repeat"] == want and not eq.extra["capped"]
        assert eq.channel_uses == want * D / 2  # AWGN, no pilots, no feedback (the analog row does not adapt)
        capped = runs[3][("semantic-analog-equal-digital-embedding", snr)]
        assert capped.extra["repeat"] == min(want, 3) and capped.extra["capped"] == (want > 3)
        assert capped.channel_uses == min(want, 3) * D / 2
    with pytest.raises(ValueError, match="equal_uses_max_repeat"):
        RetrievalBenchConfig(equal_uses_max_repeat=0)


def test_fit_spec_quantizers_fits_once_and_only_trained_quantizers():
    from genscom.bench.retrieval import fit_spec_quantizers
    from genscom.coding.quantize import EmbeddingQuantizer

    calls = []

    def train():
        calls.append(1)
        return torch.nn.functional.normalize(torch.randn(300, 8, generator=torch.Generator().manual_seed(0)), dim=-1)

    plain = [SchemeSpec("digital-embedding", {"quantizer": "int4"}), SchemeSpec("semantic-analog")]
    assert fit_spec_quantizers(plain, train) == plain and not calls
    out = fit_spec_quantizers([*plain, SchemeSpec("digital-embedding", {"quantizer": "pq-2x4"}),
                               SchemeSpec("digital-embedding", {"quantizer": "pq-4x4"})], train)
    assert len(calls) == 1
    q = out[3].kwargs["quantizer"]
    assert isinstance(q, EmbeddingQuantizer) and q.trained and q.bits_per_item == 16 and out[:2] == plain


def test_config_validation():
    with pytest.raises(ValueError, match="n_items"):
        RetrievalBenchConfig(n_items=1)
    with pytest.raises(ValueError, match="snrs must be finite"):
        RetrievalBenchConfig(snrs=(float("nan"),))
    q = RetrievalBenchConfig(quick=True)
    assert q.n_items == 200 and q.channels == ("awgn",) and q.realisations == 2


def test_exact_and_faiss_gallery_scores_agree():
    from genscom.bench.retrieval import gallery_similarity

    g = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    torch.testing.assert_close(gallery_similarity(q, g), gallery_similarity(q, g, index="faiss"), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="index must be"):
        gallery_similarity(q, g, index="annoy")


@pytest.mark.slow
def test_quick_benchmark_end_to_end_against_theory(tmp_path):
    """The README's main job, ``genscom bench retrieval --quick`` (mini-attr profile, 200 synthetic items, AWGN,
    6 SNRs, adaptive MCS, fed-back SNR), checked against hand-computed costs and theory, not stored numbers."""
    from typer.testing import CliRunner

    from genscom.channels.sensing import feedback_uses
    from genscom.cli import app

    res = CliRunner().invoke(app, ["bench", "retrieval", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, (res.output, res.exception)
    blob = json.loads((tmp_path / "retrieval.json").read_text())
    meta, recs = blob["meta"], blob["records"]
    assert meta["n_items"] == 200 and meta["chance_t2v_R1"] == pytest.approx(1 / 200)
    assert meta["mcs"] == "adaptive" and meta["csi"] == "pilot" and meta["profile"] == "mini-attr"
    snrs = sorted(meta["snrs"])
    row = {(r["scheme"], r["snr_db"]): r for r in recs}
    r1 = {k: r["metrics"]["t2v_R@1"] for k, r in row.items()}
    clean = r1[("noiseless", None)]
    assert clean > 0.5
    fb = feedback_uses(meta["feedback_bits"])  # 12: only schemes that read the fed-back SNR pay it
    uses = {"semantic-analog": 192, "adapted-k192": 192 + fb, "adapted-k64": 64 + fb}
    for name, n in uses.items():
        for s in snrs:
            assert row[(name, s)]["channel_uses"] == n, (name, s)
    # adaptive links: higher SNR -> a more efficient MCS -> fewer channel uses, and every record names its MCS
    for name in ("digital-embedding-int4-mcs-adaptive", "h264-ldpc-mcs-adaptive"):
        costs = [row[(name, s)]["channel_uses"] for s in snrs]
        assert all(b < a for a, b in zip(costs, costs[1:])), (name, costs)
        assert all(row[(name, s)]["mcs"] == "adaptive" and row[(name, s)]["mcs_used"] for s in snrs)
    # the acceptance of the honest comparison: adaptive H.264 decodes far below the old QPSK-1/2 cliff
    assert r1[("h264-ldpc-mcs-adaptive", -5.0)] >= 0.7 and r1[("h264-ldpc-mcs-adaptive", -10.0)] >= 0.7
    # Analog: cosine 1/sqrt(1 + N0) -> 0.995 at 20 dB; it degrades as the SNR falls (0.01 slack)
    analog = [r1[("semantic-analog", s)] for s in snrs]
    assert all(b >= a - 0.01 for a, b in zip(analog, analog[1:])), analog
    assert abs(analog[-1] - clean) <= 0.02 and analog[0] < clean - 0.2
    # headline analyses are in the results file, with the frontier plot
    assert set(meta["frontier"]["awgn"]) >= {"adapted", "semantic", "digital-embedding", "h264", "jpeg"}
    names = {r["scheme"] for r in recs}
    assert {"best-digital", "jpeg-ldpc-mcs-adaptive", "digital-embedding-pq-48x8-mcs-adaptive",
            "digital-embedding-int2-mcs-adaptive", "digital-embedding-int8-mcs-adaptive"} <= names
    for s in snrs:  # the envelope is the best classic row at every SNR
        classic = [r for r in recs if r["snr_db"] == s and r["scheme"].split("-mcs")[0] in
                   {"h264-ldpc", "jpeg-ldpc"} | {n.split("-mcs")[0] for n in names if n.startswith("digital-")}]
        assert row[("best-digital", s)]["metrics"]["t2v_R@1"] == max(r["metrics"]["t2v_R@1"] for r in classic)
    assert set(meta["overhead_reduction"]["awgn"]) == {f"{s:+g}" for s in snrs}
    assert meta["equal_budget"]["awgn"]["h264"] == pytest.approx(1 / 200)  # nothing fits in 192 uses: chance
    for png in ("retrieval_r1.png", "retrieval_frontier.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
