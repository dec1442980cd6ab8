"""Graph multimodal adapter and error-aware labels (issue 12, parts 1 and 3): tiny configs, seeded, CPU."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genscom.errors import BadFileError
from genscom.federated.graph_adapter import (GraphAdapterConfig, GraphMultimodalAdapter, aggregate, build_graph,
                                             build_graph_adapter, graph_adapter_loss, topk_mask)
from genscom.federated.labels import (ConfidenceStats, ConfidenceTracker, confident_mask, detection_scores,
                                      global_threshold, inject_label_noise, merge_stats, pair_confidence)
from genscom.loading import MissingFileError
from genscom.metrics.retrieval import retrieval_metrics

TWO_USERS = {"img:a": 20, "txt:a": 12, "img:b": 7, "txt:b": 30}


def _cfg(**kw) -> GraphAdapterConfig:
    base = dict(encoders=dict(TWO_USERS), skb_dim=8, hidden_dim=16, intra_topk=3, cross_topk=2)
    return GraphAdapterConfig(**{**base, **kw})


def _unit2d(degrees: list[float]) -> torch.Tensor:
    r = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([r.cos(), r.sin()], dim=1)


# --------------------------------------------------------------------------- graph construction
def test_intra_edges_topk_symmetric_and_gaussian_weights() -> None:
    angles = [0.0, 10.0, 30.0, 120.0, 125.0, 250.0]
    x = _unit2d(angles)
    text = _unit2d([45.0, 200.0])
    sigma = 0.5
    g = build_graph(x, text, intra_topk=1, cross_topk=1, bandwidth=sigma)
    w = g.intra_image
    # nearest other node by angle: 0->10, 10->0, 30->10, 120->125, 125->120, 250->0 (110 deg away across 360)
    expected_edges = {(0, 1), (1, 2), (3, 4), (0, 5)}
    got = {(i, j) for i in range(6) for j in range(i + 1, 6) if w[i, j] > 0}
    assert got == expected_edges
    assert torch.equal(w, w.t())
    assert torch.all(w.diagonal() == 0)
    assert all(int((w[i] > 0).sum()) >= 1 for i in range(6))
    for i, j in expected_edges:  # kernel value from the chord length between the two angles
        d2 = 2 - 2 * math.cos(math.radians(angles[i] - angles[j]))
        assert float(w[i, j]) == pytest.approx(math.exp(-d2 / (2 * sigma**2)), rel=1e-9)
    # directed top-k: exactly k per row (self excluded), k clipped to the nodes available
    score = torch.randn(7, 7, generator=torch.Generator().manual_seed(0))
    for k, want in ((3, 3), (6, 6), (10, 6)):
        m = topk_mask(score, k, exclude_diagonal=True)
        assert m.sum(dim=1).tolist() == [want] * 7 and not bool(m.diagonal().any())
    # symmetrised: every node keeps >= k neighbours, and the union is symmetric
    feats = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    g2 = build_graph(feats, feats[:3], intra_topk=3, cross_topk=1, bandwidth=0.7)
    deg = (g2.intra_image > 0).sum(dim=1)
    assert bool((deg >= 3).all()) and torch.equal(g2.intra_image > 0, (g2.intra_image > 0).t())


def test_cross_edges_connect_the_matching_pairs_and_the_mapping_refines_them() -> None:
    gen = torch.Generator().manual_seed(2)
    img = F.normalize(torch.randn(6, 8, generator=gen, dtype=torch.float64), dim=-1)
    perm = torch.tensor([3, 0, 5, 1, 2, 4])          # text j shows image perm[j]
    txt = img[perm] + 0.01 * torch.randn(6, 8, generator=gen, dtype=torch.float64)
    g = build_graph(img, txt, intra_topk=2, cross_topk=1, bandwidth=0.5)
    i2t = {(i, j) for i in range(6) for j in range(6) if g.cross_i2t[i, j] > 0}
    t2i = {(j, i) for j in range(6) for i in range(6) if g.cross_t2i[j, i] > 0}
    assert i2t == {(int(perm[j]), j) for j in range(6)}
    assert t2i == {(j, int(perm[j])) for j in range(6)}
    # mean pooling over k=1: weight = sigmoid(cos / 0.1); the adjacency holds the blocks and self-loops
    j0 = 0
    cos = float(F.cosine_similarity(img[perm[j0]], txt[j0], dim=0))
    assert float(g.cross_t2i[j0, perm[j0]]) == pytest.approx(1 / (1 + math.exp(-cos / 0.1)), rel=1e-9)
    a = g.adjacency
    assert a.shape == (12, 12)
    assert torch.equal(a[:6, 6:], g.cross_i2t) and torch.equal(a[6:, :6], g.cross_t2i)
    assert torch.equal(a.diagonal(), torch.ones(12, dtype=torch.float64))
    # k = 2: two texts per image, each with weight gate / 2
    g2 = build_graph(img, txt, intra_topk=2, cross_topk=2, bandwidth=0.5)
    assert (g2.cross_i2t > 0).sum(dim=1).tolist() == [2] * 6
    assert float(g2.cross_i2t.max()) <= 0.5
    # text lives in a rotated space: the plain cosine misses the pairs, the learned map (here the rotation) finds them
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    rot = txt @ q
    plain = build_graph(img, rot, intra_topk=2, cross_topk=1, bandwidth=0.5)
    mapped = build_graph(img, rot, intra_topk=2, cross_topk=1, bandwidth=0.5, mapping=lambda x: x @ q)
    right = {(int(perm[j]), j) for j in range(6)}
    assert {(i, j) for i in range(6) for j in range(6) if mapped.cross_i2t[i, j] > 0} == right
    assert {(i, j) for i in range(6) for j in range(6) if plain.cross_i2t[i, j] > 0} != right


# --------------------------------------------------------------------------- forward / backward
def test_forward_backward_two_users_with_different_encoder_dims() -> None:
    torch.manual_seed(0)
    model = build_graph_adapter(_cfg(), seed=0)
    gen = torch.Generator().manual_seed(3)
    users = [("img:a", "txt:a", 5), ("img:b", "txt:b", 9)]
    total = 0.0
    for img_enc, txt_enc, b in users:
        x = torch.randn(b, TWO_USERS[img_enc], generator=gen)
        t = torch.randn(b, TWO_USERS[txt_enc], generator=gen)
        out = model(x, t, image_encoder=img_enc, text_encoder=txt_enc)
        assert out.image_tokens.shape == (b, 8) and out.text_tokens.shape == (b, 8)
        assert torch.allclose(out.image_tokens.norm(dim=-1), torch.ones(b), atol=1e-5)
        assert out.graph.adjacency.shape == (2 * b, 2 * b)
        loss = graph_adapter_loss(out.image_tokens, out.text_tokens, margin=0.2, reg_weight=1.0)
        total = total + loss
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
    assert float(model.cross_map.weight.grad.abs().sum()) > 0
    # a head only trains on its own user's data
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(4, 20), torch.randn(4, 12), image_encoder="img:a", text_encoder="txt:a")
    graph_adapter_loss(out.image_tokens, out.text_tokens).backward()
    assert model.heads["img:b"].weight.grad is None and model.heads["img:a"].weight.grad is not None
    # one modality alone: a graph without cross-modal edges
    only = model(text=torch.randn(3, 30), text_encoder="txt:b")
    assert only.image_tokens.shape == (0, 8) and only.text_tokens.shape == (3, 8)
    with pytest.raises(ValueError, match="img:zzz"):
        model(torch.randn(2, 20), image_encoder="img:zzz")
    with pytest.raises(ValueError, match=r"\[B, 20\]"):
        model(torch.randn(2, 7), image_encoder="img:a")


def test_loss_hardest_negative_matches_a_loop_and_excluded_pairs_do_not_count() -> None:
    gen = torch.Generator().manual_seed(4)
    a = F.normalize(torch.randn(5, 6, generator=gen, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(5, 6, generator=gen, dtype=torch.float64), dim=-1)
    m, lam = 0.2, 0.7
    ref = 0.0
    for i in range(5):
        hard_i2t = max(max(0.0, m - float(a[i] @ b[i]) + float(a[i] @ b[j])) for j in range(5) if j != i)
        hard_t2i = max(max(0.0, m - float(a[i] @ b[i]) + float(a[j] @ b[i])) for j in range(5) if j != i)
        ref += hard_i2t + hard_t2i + lam * (1 - float(a[i] @ b[i]))
    got = graph_adapter_loss(a, b, margin=m, reg_weight=lam)
    assert float(got) == pytest.approx(ref / 5, rel=1e-9)
    # pair 2 excluded: changing its tokens changes nothing (not an anchor, not a negative)
    w = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    a2, b2 = a.clone(), b.clone()
    a2[2], b2[2] = a[0], b[1]
    l1 = graph_adapter_loss(a, b, weights=w)
    assert float(l1) == pytest.approx(float(graph_adapter_loss(a2, b2, weights=w)), rel=1e-12)
    assert float(l1) != pytest.approx(float(graph_adapter_loss(a, b)), rel=1e-6)
    # with SKB targets the regulariser pulls both tokens to the target
    assert float(graph_adapter_loss(a, a, margin=0.0, targets=a)) == pytest.approx(0.0, abs=1e-12)
    assert float(graph_adapter_loss(a, b, weights=torch.zeros(5, dtype=torch.float64))) == 0.0


# --------------------------------------------------------------------------- error-aware labels
def test_confidence_flags_injected_swaps() -> None:
    gen = torch.Generator().manual_seed(5)
    n = 100
    img = F.normalize(torch.randn(n, 64, generator=gen), dim=-1)
    txt = F.normalize(img + 0.05 * torch.randn(n, 64, generator=gen), dim=-1)  # matched pairs near-identical
    noise = inject_label_noise(n, 0.2, generator=torch.Generator().manual_seed(6))
    assert int(noise.noisy.sum()) == 20
    assert sorted(noise.perm.tolist()) == list(range(n))               # a permutation
    assert torch.equal(noise.noisy, noise.perm != torch.arange(n))     # every chosen pair lost its text
    same = inject_label_noise(n, 0.2, generator=torch.Generator().manual_seed(6))
    assert torch.equal(same.perm, noise.perm)
    conf = pair_confidence(img @ txt[noise.perm].t())
    flagged = ~confident_mask(conf, 0.0)
    s = detection_scores(flagged, noise.noisy)
    assert s["precision"] >= 0.95 and s["recall"] >= 0.95
    # the score is the margin over the best rival in row and column (hand example)
    sim = torch.tensor([[0.9, 0.2, 0.1], [0.5, 0.6, 0.7], [0.95, 0.0, 0.3]])
    assert torch.allclose(pair_confidence(sim), torch.tensor([0.9 - 0.95, 0.6 - 0.7, 0.3 - 0.95]))
    assert detection_scores(torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])) \
        == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "flagged": 2.0, "noisy": 2.0}
    with pytest.raises(ValueError, match="fraction"):
        inject_label_noise(10, 1.5, generator=gen)


@pytest.mark.parametrize(("n", "fraction", "swapped"), [(10, 0.3, 3), (10, 0.1, 2), (7, 0.0, 0), (50, 0.5, 25),
                                                       (4, 1.0, 4)])
def test_injected_noise_swaps_exactly_the_requested_count(n: int, fraction: float, swapped: int) -> None:
    for seed in range(20):  # a derangement of the chosen pairs: none keeps its own text, whatever the seed
        noise = inject_label_noise(n, fraction, generator=torch.Generator().manual_seed(seed))
        assert int(noise.noisy.sum()) == swapped
        assert sorted(noise.perm.tolist()) == list(range(n))


def test_tracker_prunes_only_persistently_inconsistent_pairs() -> None:
    tr = ConfidenceTracker(5, threshold=0.0, patience=3)
    bad, good = -0.4, 0.5
    # pair 0: always bad; 1: bad, bad, good, bad, bad; 2: bad, bad, unseen, bad; 3: good; 4: mixed within a round
    rounds = [
        {0: [bad], 1: [bad], 2: [bad], 3: [good], 4: [-0.5, 1.0]},
        {0: [bad], 1: [bad], 2: [bad], 3: [good], 4: [-0.5, 1.0]},
        {0: [bad], 1: [good], 3: [good], 4: [-0.5, 1.0]},
        {0: [bad], 1: [bad], 2: [bad], 3: [good], 4: [-0.5, 1.0]},
        {0: [bad], 1: [bad], 2: [bad], 3: [good], 4: [-0.5, 1.0]},
    ]
    pruned_after = []
    for r in rounds:
        for pair, values in r.items():
            for v in values:  # one batch per value
                tr.update(torch.tensor([pair]), torch.tensor([v]))
        tr.end_round()
        pruned_after.append(tr.pruned.nonzero().flatten().tolist())
    assert pruned_after == [[], [], [0], [0, 2], [0, 2]]
    assert tr.active().tolist() == [False, True, False, True, True]
    assert tr.streak[1] == 2 and tr.streak[4] == 0
    assert len(tr.history) == 5 and math.isnan(float(tr.history[2][2]))
    assert float(tr.history[0][4]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="indices"):
        tr.update(torch.tensor([7]), torch.tensor([0.1]))


def test_federated_label_statistics_give_a_global_threshold() -> None:
    gen = torch.Generator().manual_seed(7)
    user_a = torch.cat([0.5 + 0.05 * torch.randn(80, generator=gen), -0.4 + 0.05 * torch.randn(20, generator=gen)])
    user_b = torch.cat([0.6 + 0.05 * torch.randn(50, generator=gen), -0.3 + 0.05 * torch.randn(50, generator=gen)])
    sa, sb = ConfidenceStats.from_confidence(user_a), ConfidenceStats.from_confidence(user_b)
    merged = merge_stats([sa, sb])
    assert merged.total == 200 and torch.equal(merged.counts, sa.counts + sb.counts)
    t = global_threshold(merged)
    assert -0.25 < t < 0.4
    clean = torch.cat([torch.ones(80), torch.zeros(20), torch.ones(50), torch.zeros(50)]).bool()
    s = detection_scores(torch.cat([user_a, user_b]) < t, ~clean)
    assert s["precision"] == 1.0 and s["recall"] == 1.0
    assert -0.25 < global_threshold(merged, method="quantile", quantile=0.35) < 0.45
    tr = ConfidenceTracker(100)
    tr.update(torch.arange(100), user_a)
    assert torch.equal(tr.stats().counts, sa.counts)
    tr.set_threshold(t)
    assert tr.threshold == t
    with pytest.raises(ValueError, match="bin"):
        merge_stats([sa, ConfidenceStats.from_confidence(user_b, bins=10)])


# --------------------------------------------------------------------------- files and config
def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = build_graph_adapter(_cfg(num_layers=2), seed=1).eval()
    x, t = torch.randn(6, 7), torch.randn(6, 30)
    with torch.no_grad():
        ref = model(x, t, image_encoder="img:b", text_encoder="txt:b")
    folder = model.save_pretrained(tmp_path / "ga", extra_config={"note": "test"})
    meta = json.loads((folder / "config.json").read_text())
    assert meta["note"] == "test" and meta["graph_adapter"]["encoders"] == dict(sorted(TWO_USERS.items()))
    assert not list(folder.glob(".*.tmp"))
    loaded = GraphMultimodalAdapter.from_pretrained(folder)
    assert loaded.config == model.config
    with torch.no_grad():
        out = loaded(x, t, image_encoder="img:b", text_encoder="txt:b")
    assert torch.equal(out.image_tokens, ref.image_tokens) and torch.equal(out.text_tokens, ref.text_tokens)
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(BadFileError, match="model.safetensors"):
        GraphMultimodalAdapter.from_pretrained(folder)
    with pytest.raises(MissingFileError):
        GraphMultimodalAdapter.from_pretrained(tmp_path / "nothing")


@pytest.mark.parametrize(("field", "value"), [
    ("skb_dim", 0), ("hidden_dim", -3), ("num_layers", 0), ("num_layers", 1.5), ("attention_scale", 0.0),
    ("attention_scale", float("nan")), ("intra_topk", 0), ("cross_topk", True), ("bandwidth", -1.0),
    ("reg_weight", -0.1), ("margin", float("inf")), ("lr", 0), ("batch_size", 1),
])
def test_bad_config_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        _cfg(**{field: value})


def test_bad_encoder_names_and_unknown_fields() -> None:
    with pytest.raises(ValueError, match="encoders"):
        GraphAdapterConfig(encoders={"img.mini": 8})
    with pytest.raises(ValueError, match="img:x"):
        GraphAdapterConfig(encoders={"img:x": 0})
    with pytest.raises(ValueError, match="hiden_dim"):
        GraphAdapterConfig.from_dict({"hiden_dim": 3})


# --------------------------------------------------------------------------- aggregation
def test_aggregate_heads_only_among_users_sharing_the_encoder() -> None:
    cfg = _cfg(encoders={"img:a": 6, "img:b": 5, "txt:a": 4, "txt:z": 3})
    glob = build_graph_adapter(cfg, seed=0)
    users = [build_graph_adapter(cfg, seed=s) for s in (1, 2, 3)]
    holds = [("img:a", "txt:a"), ("img:b", "txt:a"), ("img:a", "txt:a")]
    counts = [30, 10, 60]
    updates = [(u.user_state(h), n) for u, h, n in zip(users, holds, counts)]
    assert not any(k.startswith("heads.img:b") for k in updates[0][0])
    new = aggregate(updates, base=glob.state_dict())
    sd = [u.state_dict() for u in users]
    base = glob.state_dict()
    for k in base:
        if k.startswith("heads.img:a."):
            want = (30 * sd[0][k] + 60 * sd[2][k]) / 90
        elif k.startswith("heads.img:b."):
            want = sd[1][k]
        elif k.startswith("heads.txt:z."):
            want = base[k]          # nobody holds it: untouched
        else:                       # shared part and txt:a: everyone
            want = (30 * sd[0][k] + 10 * sd[1][k] + 60 * sd[2][k]) / 100
        assert torch.allclose(new[k], want, atol=1e-6), k
    # user 2's own (random) img:a head did not leak into img:a
    moved = aggregate([(users[0].user_state(["img:a"]), 1), (users[1].user_state(["img:b"]), 1)],
                      base=glob.state_dict())
    assert torch.allclose(moved["heads.img:a.weight"], sd[0]["heads.img:a.weight"])
    glob.load_state_dict(new)
    partial = GraphMultimodalAdapter(cfg)
    partial.load_user_state(users[1].user_state(["img:b"]))
    assert torch.equal(partial.heads["img:b"].weight, users[1].heads["img:b"].weight)
    with pytest.raises(ValueError, match="num_examples"):
        aggregate([(updates[0][0], 0)])
    no_shared = {k: v for k, v in updates[1][0].items() if k.startswith("heads.")}
    with pytest.raises(ValueError, match="shared"):
        aggregate([updates[0], (no_shared, 5)])


# --------------------------------------------------------------------------- training sanity
def _towers(seed: int) -> dict[str, torch.nn.Module]:
    """Four frozen 'encoders' of different shapes over a 16-d latent concept."""
    torch.manual_seed(seed)
    return {
        "img:a": torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Tanh()),
        "img:b": torch.nn.Linear(16, 40),
        "txt:a": torch.nn.Sequential(torch.nn.Linear(16, 20), torch.nn.ReLU(), torch.nn.Linear(20, 20)),
        "txt:b": torch.nn.Linear(16, 32),
    }


def test_training_two_encoder_pairs_lifts_retrieval_far_above_chance() -> None:
    t0 = time.perf_counter()
    towers = _towers(0)
    dims = {"img:a": 24, "img:b": 40, "txt:a": 20, "txt:b": 32}
    cfg = GraphAdapterConfig(encoders=dims, skb_dim=16, hidden_dim=32, intra_topk=4, cross_topk=2, batch_size=64,
                             lr=3e-3)
    model = build_graph_adapter(cfg, seed=0)
    skb = torch.nn.Linear(16, 16)  # the SKB space: a fixed map of the concept
    gen = torch.Generator().manual_seed(8)
    users = [("img:a", "txt:b"), ("img:b", "txt:a")]

    def encode(z: torch.Tensor, name: str) -> torch.Tensor:
        with torch.no_grad():
            return towers[name](z)

    z_test = torch.randn(200, 16, generator=gen)

    def i2t_r1(img_enc: str, txt_enc: str) -> float:
        model.eval()
        with torch.no_grad():
            ti = model(encode(z_test, img_enc), image_encoder=img_enc).image_tokens
            tt = model(text=encode(z_test, txt_enc), text_encoder=txt_enc).text_tokens
        model.train()
        return retrieval_metrics(tt @ ti.t(), torch.arange(200))["v2t_R@1"]  # image query -> text

    before = i2t_r1(*users[0])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for step in range(300):
        img_enc, txt_enc = users[step % 2]
        z = torch.randn(cfg.batch_size, 16, generator=gen)
        with torch.no_grad():
            target = skb(z)
        out = model(encode(z, img_enc), encode(z, txt_enc), image_encoder=img_enc, text_encoder=txt_enc)
        loss = graph_adapter_loss(out.image_tokens, out.text_tokens, margin=cfg.margin, reg_weight=cfg.reg_weight,
                                  targets=target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = [i2t_r1(*u) for u in users]
    assert min(after) > 0.3 > 10 * before + 0.05, (before, after)  # chance is 1/200
    # cross-user: image tower of user 0, text tower of user 1, both mapped into the same SKB space
    assert i2t_r1("img:a", "txt:a") > 0.2
    # error-aware labelling on the adapter's own tokens: swap 20% of a fresh batch, flag them by confidence
    z = torch.randn(128, 16, generator=gen)
    noise = inject_label_noise(128, 0.2, generator=torch.Generator().manual_seed(9))
    model.eval()
    with torch.no_grad():
        out = model(encode(z, "img:a"), encode(z, "txt:b")[noise.perm], image_encoder="img:a", text_encoder="txt:b")
    conf = pair_confidence(out.image_tokens @ out.text_tokens.t())
    s = detection_scores(~confident_mask(conf, 0.0), noise.noisy)
    assert s["recall"] >= 0.9 and s["precision"] >= 0.9, s
    assert time.perf_counter() - t0 < 20
