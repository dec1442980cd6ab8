"""5G NR LDPC codes (genscom.coding.ldpc): lengths, bit-exactness with Sionna, repetition below rate 1/5, decoders."""

from fractions import Fraction

import pytest
import torch

from genscom.coding.ldpc import (
    DEFAULT_K,
    LDPCCode,
    base_length,
    coded_length,
    ldpc_available,
    parse_rate,
    resolve_decoder,
)


def test_lengths():
    assert DEFAULT_K == 1024
    assert [coded_length(1024, r) for r in ("1/3", "1/2", "2/3")] == [3072, 2048, 1536]
    assert coded_length(1024, "1/2", 6) == 2052  # rounded up to whole 64-QAM symbols
    assert coded_length(1024, "2/3", 6) == 1536 and coded_length(1024, "1/3", 4) == 3072
    # 3GPP rates R x 1024: n = ceil(k / R), then whole symbols
    assert coded_length(1024, "120/1024", 2) == 8740  # ceil(8738.13) = 8739 -> 8740
    assert coded_length(1024, "378/1024", 4) == 2776 and coded_length(1024, "948/1024", 6) == 1110
    assert parse_rate(0.5) == parse_rate("1/2") == parse_rate(Fraction(1, 2)) == Fraction(1, 2)
    assert parse_rate(2 / 3) == Fraction(2, 3) and parse_rate(120 / 1024) == Fraction(120, 1024)
    assert base_length(1024, 8740) == 5120 and base_length(1024, 2048) == 2048 and base_length(4000, 20000) == 12000


def test_legacy_codes_are_bit_identical_to_sionna_rate_matching():
    """The encoder is Sionna's LDPC5GEncoder with its 5G output interleaver: same codewords as before the split."""
    from sionna.phy.fec.ldpc import LDPC5GEncoder

    g = torch.Generator().manual_seed(0)
    for k, rate, m in ((256, "1/2", 6), (256, "1/3", 4), (128, "2/3", 2), (256, "602/1024", 2)):
        code = LDPCCode(k, rate, bits_per_symbol=m)
        u = torch.randint(0, 2, (4, k), generator=g).float()
        assert torch.equal(code.encode(u), LDPC5GEncoder(k, code.n, num_bits_per_symbol=m)(u)), (k, rate, m)


@pytest.mark.parametrize("rate", ["1/3", "1/2", "2/3", "1/10"])
def test_round_trip_and_error_correction(rate):
    code = LDPCCode(256, rate, bits_per_symbol=4, num_iter=10)
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 2, (2, 3, 256), generator=g)
    c = code.encode(u)
    assert c.shape == (2, 3, code.n) and code.n % 4 == 0
    llr = 4.0 * (2.0 * c - 1.0)  # ln P(1)/P(0): positive for 1
    flip = torch.rand(c.shape, generator=g) < 0.02  # ~2% of the LLRs point the wrong way
    llr = torch.where(flip, -llr, llr)
    u_hat = code.decode(llr)
    assert u_hat.shape == u.shape and torch.equal(u_hat, u.float())
    # sign convention matters: the opposite sign (ln P(0)/P(1)) does not give the message back
    assert not torch.equal(code.decode(-4.0 * (2.0 * c - 1.0)), u.float())


def test_below_rate_one_fifth_the_base_codeword_repeats_and_llrs_add():
    code = LDPCCode(128, "1/10")  # n = 1280 = 2 x the rate-1/5 codeword of 640 bits
    assert (code.n, code.n_base) == (1280, 640)
    u = torch.randint(0, 2, (3, 128), generator=torch.Generator().manual_seed(1))
    c = code.encode(u)
    assert torch.equal(c[:, :640], c[:, 640:])  # cyclic repetition (no interleaver without bits_per_symbol)
    # BPSK over AWGN at Es/N0 = -5 dB per copy: one copy alone mostly fails, the two copies' LLRs added decode
    g = torch.Generator().manual_seed(2)
    u = torch.randint(0, 2, (40, 128), generator=g)
    c = code.encode(u)
    var = 10 ** 0.5
    llr = 2.0 * ((2.0 * c - 1.0) + var ** 0.5 * torch.randn(c.shape, generator=g)) / var
    one = llr.clone()
    one[:, 640:] = 0.0  # the second copy erased
    fail_one = int((code.decode(one) != u).any(-1).sum())
    fail_both = int((code.decode(llr) != u).any(-1).sum())
    assert fail_one >= 20 and fail_both <= 4, (fail_one, fail_both)


def _awgn_llr(code, n, snr_db, seed):
    from genscom.channels.awgn import AWGNChannel
    from genscom.coding.calibration import through_channel
    from genscom.coding.qam import QAM

    g = torch.Generator().manual_seed(seed)
    qam = QAM(2 ** code.bits_per_symbol)
    u = torch.randint(0, 2, (n, code.k), generator=g).float()
    x_hat, nv = through_channel(qam.map(code.encode(u)), AWGNChannel(), snr_db, generator=g)
    return u, qam.demap(x_hat, nv)


@pytest.mark.skipif(not ldpc_available(), reason="the optional 'ldpc' package is not installed")
@pytest.mark.parametrize("rate,m,snr_db", [("1/2", 2, 1.0), ("1/2", 4, 6.0), ("1/10", 2, -6.5)])
def test_ldpc_package_decoder_agrees_with_sionna(rate, m, snr_db):
    """Same code, same LLR vector, same rule: block decisions agree on >= 97 % of waterfall codewords."""
    ref = LDPCCode(128, rate, bits_per_symbol=m)
    fast = LDPCCode(128, rate, bits_per_symbol=m, decoder="ldpc")
    u, llr = _awgn_llr(ref, 300, snr_db, seed=3)
    f_ref = (ref.decode(llr) != u).any(-1)
    f_fast = (fast.decode(llr) != u).any(-1)
    assert 0.05 < float(f_ref.float().mean()) < 0.95, float(f_ref.float().mean())  # the waterfall: a real check
    assert float((f_ref != f_fast).float().mean()) <= 0.03
    assert abs(float(f_ref.float().mean()) - float(f_fast.float().mean())) <= 0.03


def test_bad_inputs():
    for bad in (0.05, "1", 0.95, "x", None, Fraction(3, 2)):
        with pytest.raises(ValueError, match=r"\[1/16, 948/1024\]"):
            LDPCCode(256, bad)
    with pytest.raises(ValueError, match="12..8448"):
        LDPCCode(8, "1/2")
    with pytest.raises(ValueError, match="bits_per_symbol"):
        LDPCCode(256, "1/2", bits_per_symbol=3)
    with pytest.raises(ValueError, match="decoder"):
        resolve_decoder("fast")
    code = LDPCCode(128, "1/2")
    with pytest.raises(ValueError, match="k=128"):
        code.encode(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="n=256"):
        code.decode(torch.zeros(2, 100))
