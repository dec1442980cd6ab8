"""Best-of-N regeneration (:mod:`genscom.generation.rerank`) with tiny random decoders and a stub image tower."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from genscom.generation.diffusion import DiffusionDecoder, DiffusionDecoderConfig  # noqa: E402
from genscom.generation.rerank import agreement_scores, best_of_n, pick_best  # noqa: E402
from genscom.schemes import SourceBatch, create_scheme  # noqa: E402

D, S = 8, 16


def _decoder(**kw) -> DiffusionDecoder:
    torch.manual_seed(0)
    return DiffusionDecoder(DiffusionDecoderConfig(image_size=S, cond_dim=D, block_out_channels=(8, 16),
                                                   cross_attention_dim=8, attention_head_dim=4, sample_steps=2,
                                                   **kw)).eval()


class BrightnessTower:
    """A stand-in image tower: the embedding of a frame is ``[mean brightness, 1 - mean brightness, 0, ...]``
    (brightness in [0, 1]), so a received ``[1, 0, ...]`` agrees most (cosine) with the brightest picture."""

    def __init__(self) -> None:
        self.calls = 0

    def encode_clips(self, clips: torch.Tensor) -> torch.Tensor:
        assert clips.dtype == torch.uint8 and clips.dim() == 5 and clips.shape[-1] == 3  # [B, 1, H, W, 3]
        self.calls += 1
        m = clips.float().div(255).mean(dim=(1, 2, 3, 4))
        return torch.cat([m[:, None], 1 - m[:, None], torch.zeros(len(m), D - 2)], dim=1)


def test_cosine_agreement_without_a_reader():
    dec = _decoder()
    e = torch.randn(4, D, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(agreement_scores(dec, e, 3 * e), torch.ones(4))
    torch.testing.assert_close(agreement_scores(dec, e, -e), -torch.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        agreement_scores(dec, e, e[:2])


def test_reader_agreement_is_the_log_probability_of_what_was_read():
    dec = _decoder(reader_classes={"shape": 6, "colour": 8}, reader_hidden=16)
    e = torch.randn(5, D, generator=torch.Generator().manual_seed(2))
    other = torch.randn(5, D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        probs = {k: v.softmax(-1) for k, v in dec.read(e).items()}
        probs_other = {k: v.softmax(-1) for k, v in dec.read(other).items()}
    # a drawing read exactly as the message: the sum of the log of each attribute's top probability
    want_self = sum(p.max(-1).values.log() for p in probs.values())
    torch.testing.assert_close(agreement_scores(dec, e, e), want_self, atol=1e-5, rtol=0)
    # another drawing: the probability it gives to the message's classes, attribute by attribute
    want = torch.ones(5)
    for k in probs:
        want = want * probs_other[k][torch.arange(5), probs[k].argmax(-1)]
    torch.testing.assert_close(agreement_scores(dec, e, other).exp(), want, atol=1e-5, rtol=1e-4)
    # only the attributes the task names
    shape_only = probs_other["shape"][torch.arange(5), probs["shape"].argmax(-1)]
    torch.testing.assert_close(agreement_scores(dec, e, other, attributes=("shape",)).exp(), shape_only,
                               atol=1e-5, rtol=1e-4)
    for bad in (("size",), ()):
        with pytest.raises(ValueError, match="reader reads"):
            agreement_scores(dec, e, other, attributes=bad)
    with pytest.raises(ValueError, match="reader reads"):   # told at construction, before any sampling
        create_scheme("regen", decoder=dec, candidates=2, encoder=BrightnessTower(), rerank_on=("size",))


def test_pick_best_takes_the_highest_score_first_on_ties():
    cands = torch.arange(2 * 3 * 2).view(2, 3, 2)
    best, idx = pick_best(cands, torch.tensor([[0.1, 0.5, 0.5], [2.0, -1.0, 1.0]]))
    assert idx.tolist() == [1, 0]
    assert torch.equal(best, torch.stack([cands[0, 1], cands[1, 0]]))
    with pytest.raises(ValueError, match="must agree"):
        pick_best(cands, torch.zeros(2, 2))


def test_best_of_n_keeps_the_candidate_the_tower_finds_closest():
    dec, tower = _decoder(), BrightnessTower()
    received = torch.zeros(3, D)
    received[:, 0] = 1.0   # "bright": the brightest candidate agrees most
    n = 4
    best, scores = best_of_n(dec, tower, received, n, generator=torch.Generator().manual_seed(7), steps=2)
    # the candidates, drawn independently: item i's candidates are rows i*n .. i*n+n-1 of one batch
    all_c = dec.generate(received.repeat_interleave(n, 0), generator=torch.Generator().manual_seed(7), steps=2)
    all_c = all_c.view(3, n, 3, S, S)
    q = (all_c.clamp(0, 1) * 255).round() / 255   # what the tower sees (uint8 frames)
    brightest = q.mean(dim=(2, 3, 4)).argmax(dim=1)
    assert scores.shape == (3, n) and tower.calls == 1
    torch.testing.assert_close(best, all_c[torch.arange(3), brightest])
    assert torch.equal(scores.argmax(1), brightest)


def test_best_of_one_is_plain_sampling_and_encodes_nothing():
    dec, tower = _decoder(), BrightnessTower()
    e = torch.randn(2, D, generator=torch.Generator().manual_seed(4))
    one, scores = best_of_n(dec, tower, e, 1, generator=torch.Generator().manual_seed(9))
    plain = dec.generate(e, generator=torch.Generator().manual_seed(9))
    assert torch.equal(one, plain) and scores.shape == (2, 0) and tower.calls == 0
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="candidates"):
            best_of_n(dec, tower, e, bad)
    with pytest.raises(ValueError, match="dimension"):
        best_of_n(dec, tower, torch.randn(2, D + 1), 2)


def test_regen_scheme_best_of_n_costs_the_same_channel_uses_and_checks_its_settings():
    dec = _decoder(extra={})
    e = torch.nn.functional.normalize(torch.randn(3, D, generator=torch.Generator().manual_seed(5)), dim=-1)
    plain = create_scheme("regen", decoder=dec, seed=1)
    best = create_scheme("regen", decoder=dec, seed=1, candidates=3, encoder=BrightnessTower(), batch_size=4)
    assert best.name == "regen-best3" and plain.name == "regen"
    a, b = plain.send(SourceBatch(embeddings=e), None, None), best.send(SourceBatch(embeddings=e), None, None)
    assert b.frames.shape == a.frames.shape == (3, 1, S, S, 3)
    assert torch.equal(a.channel_uses, b.channel_uses)   # drawing more pictures sends nothing more
    again = best.send(SourceBatch(embeddings=e), None, None)
    assert torch.equal(b.frames, again.frames)            # seeded: the same pick every time
    for bad in (0, 2.0, False):
        with pytest.raises(ValueError, match="candidates must be a positive integer"):
            create_scheme("regen", decoder=dec, candidates=bad)
    # no profile recorded and no tower given: say how to score candidates
    with pytest.raises(ValueError, match="encoder="):
        create_scheme("regen", decoder=dec, candidates=2).send(SourceBatch(embeddings=e), None, None)
