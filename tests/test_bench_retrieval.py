"""End-to-end retrieval benchmark on a tiny hand-built gallery (no model weights needed)."""

import json

import pytest
import torch

from genscom.bench.retrieval import RetrievalBenchConfig, SchemeSpec, overhead_reduction, run_retrieval_bench
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
    data = json.loads((tmp_path / "retrieval.json").read_text())
    assert data["benchmark"] == "retrieval" and data["meta"]["n_items"] == N
    assert (tmp_path / "retrieval_r1.png").read_bytes()[:4] == b"\x89PNG"


def test_overhead_reduction_definition():
    mk = lambda s, snr, uses, r1: Record(scheme=s, channel="awgn", snr_db=snr, channel_uses=uses, metrics={"t2v_R@1": r1})
    recs = [mk("semantic-analog", 0.0, 100, 0.5), mk("h264-ldpc", 0.0, 10_000, 0.1),
            mk("semantic-analog", 10.0, 100, 0.5), mk("h264-ldpc", 10.0, 10_000, 0.9)]
    out = overhead_reduction(recs)["awgn"]
    assert out["reduction"] == pytest.approx(0.99)
    assert out["snrs_where_semantic_at_least_as_accurate"] == [0.0]


def test_config_validation():
    with pytest.raises(ValueError, match="n_items"):
        RetrievalBenchConfig(n_items=1)
    with pytest.raises(ValueError, match="snrs must be finite"):
        RetrievalBenchConfig(snrs=(float("nan"),))
    q = RetrievalBenchConfig(quick=True)
    assert q.n_items == 200 and q.channels == ("awgn",) and q.realisations == 2


def test_accuracy_gain_is_mean_over_grid():
    from genscom.bench.retrieval import accuracy_gain

    recs = [Record(scheme="a", channel="awgn", snr_db=s, channel_uses=1, metrics={"t2v_R@1": v})
            for s, v in ((0.0, 0.2), (5.0, 0.6))]
    recs.append(Record(scheme="noiseless", channel="none", snr_db=None, channel_uses=0, metrics={"t2v_R@1": 1.0}))
    assert accuracy_gain(recs) == {"awgn": {"a": pytest.approx(0.4)}}


def test_exact_and_faiss_gallery_scores_agree():
    from genscom.bench.retrieval import gallery_similarity

    g = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    torch.testing.assert_close(gallery_similarity(q, g), gallery_similarity(q, g, index="faiss"), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="index must be"):
        gallery_similarity(q, g, index="annoy")
