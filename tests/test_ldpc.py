from fractions import Fraction

import pytest
import torch

from genscom.coding.ldpc import DEFAULT_K, LDPCCode, coded_length, parse_rate




def test_lengths():
    assert DEFAULT_K == 1024
    assert [coded_length(1024, r) for r in ("1/3", "1/2", "2/3")] == [3072, 2048, 1536]
    assert coded_length(1024, "1/2", 6) == 2052  # rounded up to whole 64-QAM symbols
    assert coded_length(1024, "2/3", 6) == 1536 and coded_length(1024, "1/3", 4) == 3072
    assert parse_rate(0.5) == parse_rate("1/2") == parse_rate(Fraction(1, 2)) == Fraction(1, 2)
    assert parse_rate(2 / 3) == Fraction(2, 3)


@pytest.mark.parametrize("rate", ["1/3", "1/2", "2/3"])
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


def test_bad_inputs():
    for bad in (0.4, "3/4", 1, "x", None):
        with pytest.raises(ValueError, match=r"1/3, 1/2, 2/3"):
            LDPCCode(256, bad)
    with pytest.raises(ValueError, match="12..8448"):
        LDPCCode(8, "1/2")
    with pytest.raises(ValueError, match="bits_per_symbol"):
        LDPCCode(256, "1/2", bits_per_symbol=3)
    code = LDPCCode(128, "1/2")
    with pytest.raises(ValueError, match="k=128"):
        code.encode(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="n=256"):
        code.decode(torch.zeros(2, 100))
