"""The channel benchmark end to end on tiny grids (real QAM, LDPC, JPEG and H.264)."""

import json
import math
from dataclasses import dataclass

import pytest

from genscom.bench.channel import ChannelBenchConfig, run_channel_bench


@dataclass
class TinyChannelBench(ChannelBenchConfig):
    @property
    def uncoded_orders(self):
        return (4,)

    def uncoded_snrs(self, channel):
        return [4.0]

    @property
    def uncoded_bits(self):
        return 200_000

    @property
    def coded_mcs(self):
        return ("qpsk-1/2",)

    def coded_snrs(self, channel):
        return [-8.0, 12.0]

    @property
    def coded_codewords(self):
        return 4

    def media_snrs(self, channel):
        return [-10.0, 25.0]

    @property
    def media_realisations(self):
        return 1


def test_channel_bench_tiny(tmp_path):
    cfg = TinyChannelBench(channels=("awgn",), out_dir=str(tmp_path), image_size=48, clip_frames=3)
    res = run_channel_bench(cfg, command="test")
    recs = {(r.scheme, r.snr_db): r for r in res["records"]}
    unc = recs[("uncoded-4qam", 4.0)]
    # Gray 4-QAM on AWGN: each bit is a BPSK decision at Eb/N0 = (Es/N0)/2, BER = Q(sqrt(Es/N0))
    theory = 0.5 * math.erfc(math.sqrt(10 ** (4.0 / 10) / 2))
    assert unc.metrics["ber_theory"] == pytest.approx(theory, rel=1e-6)
    assert unc.metrics["ber"] == pytest.approx(theory, rel=0.1)  # 200k bits, ~2500 errors: 2% std
    assert recs[("ldpc-qpsk-1/2", 12.0)].metrics["bler"] == 0.0
    assert recs[("ldpc-qpsk-1/2", -8.0)].metrics["bler"] == 1.0
    for media in ("jpeg-ldpc", "h264-ldpc"):
        good, bad = recs[(media, 25.0)], recs[(media, -10.0)]
        assert good.failure_rate == 0.0 and good.metrics["psnr_db"] > 25.0
        assert bad.failure_rate == 1.0 and bad.metrics["psnr_db"] < good.metrics["psnr_db"]
        assert good.channel_uses > 0 and good.cbr > 0
    data = json.loads((tmp_path / "channel.json").read_text())
    assert data["benchmark"] == "channel" and len(data["records"]) == len(res["records"])
    assert (tmp_path / "channel.png").read_bytes()[:4] == b"\x89PNG"


def test_channel_bench_config_errors():
    with pytest.raises(ValueError, match="channels must be among"):
        ChannelBenchConfig(channels=("awgn", "wormhole"))
    with pytest.raises(ValueError, match="channels is empty"):
        ChannelBenchConfig(channels=())
