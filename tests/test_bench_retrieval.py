"""End-to-end retrieval benchmark on a tiny hand-built gallery (no model weights needed)."""

import json
import math

import pytest
import torch

from genscom.bench.retrieval import RetrievalBenchConfig, SchemeSpec, run_retrieval_bench
from genscom.bench.results import Record
from genscom.data.base import ClipCaptionDataset

N, D = 12, 16


class ColourClips(ClipCaptionDataset):
    """N clips of one flat colour each; caption i names item i."""

    name = "colour-clips"

    def __init__(self):
        g = torch.Generator().manual_seed(0)
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
    """The README's main job, ``genscom bench retrieval --quick`` (mini profile, 200 synthetic items, AWGN,
    6 SNRs), checked against hand-computed costs and channel-coding theory rather than stored numbers."""
    from typer.testing import CliRunner

    from genscom.cli import app

    res = CliRunner().invoke(app, ["bench", "retrieval", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, (res.output, res.exception)
    blob = json.loads((tmp_path / "retrieval.json").read_text())
    meta, recs = blob["meta"], blob["records"]
    assert meta["n_items"] == 200 and meta["chance_t2v_R1"] == pytest.approx(1 / 200)
    snrs = sorted(meta["snrs"])
    assert snrs[0] <= -5.0 and snrs[-1] >= 20.0
    row = {(r["scheme"], r["snr_db"]): r for r in recs}
    r1 = {k: r["metrics"]["t2v_R@1"] for k, r in row.items()}
    clean = r1[("noiseless", None)]
    assert clean > 0.5  # the shipped mini tower retrieves; every scheme below is judged against it
    h264 = row[("h264-ldpc", snrs[0])]["channel_uses"]
    rep = int(h264 // 192)  # equal-use repetition of the 192-symbol analog embedding
    uses = {"semantic-analog": 192,          # 384 reals, two per complex symbol
            "adapted-k192": 192, "adapted-k64": 64,
            "digital-embedding-fp16": 6144,  # 384 x 16 bits at qpsk-1/2: one channel use per bit
            f"semantic-analog-x{rep}": 192 * rep}
    for name, n in uses.items():
        for s in snrs:
            assert row[(name, s)]["channel_uses"] == n, (name, s)
            if name != "digital-embedding-fp16":
                assert row[(name, s)]["failure_rate"] == 0.0
    assert 192 * rep <= h264 < 192 * (rep + 1)
    assert meta["overhead_reduction"]["awgn"]["reduction"] == pytest.approx(1 - 192 / h264)
    # Shannon: rate-1/2 QPSK carries 1 bit per channel use, more than log2(1 + SNR) <= 1 at SNR <= 0 dB,
    # so every codeword fails there; at 20 dB the codes decode and the digital schemes deliver what they sent.
    for name in ("digital-embedding-fp16", "jpeg-ldpc", "h264-ldpc"):
        for s in snrs:
            if s <= 0.0:
                assert math.log2(1 + 10 ** (s / 10)) <= 1.0 and row[(name, s)]["failure_rate"] == 1.0, (name, s)
        assert row[(name, snrs[-1])]["failure_rate"] == 0.0
    assert abs(r1[("digital-embedding-fp16", snrs[-1])] - clean) <= 0.01  # float16 rounding only
    # Analog: cosine 1/sqrt(1 + N0) -> 0.995 at 20 dB, so retrieval is that of clean embeddings; it degrades
    # monotonically as the SNR falls (0.01 slack: 400 queries x 2 realisations)
    analog = [r1[("semantic-analog", s)] for s in snrs]
    assert all(b >= a - 0.01 for a, b in zip(analog, analog[1:])), analog
    assert abs(analog[-1] - clean) <= 0.02 and analog[0] < clean - 0.2
    # Repetition by rep averages rep copies: 10 log10(rep) dB more SNR (14.6 dB for rep = 29), so at the lowest
    # SNR it retrieves like a single copy between the grid points that bracket that gain (10 and 15 dB higher).
    gain = 10 * math.log10(rep)
    lo, hi = snrs[0] + math.floor(gain / 5) * 5, snrs[0] + math.ceil(gain / 5) * 5
    assert lo in snrs and hi in snrs, (gain, snrs)
    assert r1[("semantic-analog", lo)] - 0.01 <= r1[(f"semantic-analog-x{rep}", snrs[0])] <= r1[("semantic-analog", hi)] + 0.01
    assert (tmp_path / "retrieval_r1.png").read_bytes()[:4] == b"\x89PNG"
