"""Knowledge base and the memory scheme: hits send an index, misses the embedding, out-of-sync bases are caught."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from genscom.channels import AWGNChannel
from genscom.coding.mcs import channel_uses_for_bits
from genscom.memory import KnowledgeBase, KnowledgeBaseSyncError, build_knowledge_base
from genscom.schemes.base import SourceBatch
from genscom.schemes.memory import MemoryScheme


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


@pytest.fixture()
def base() -> torch.Tensor:
    return _unit(torch.randn(40, 16, generator=torch.Generator().manual_seed(0)))


def test_kb_search_save_load(base: torch.Tensor, tmp_path: Path) -> None:
    kb = build_knowledge_base(base, metadata=[{"caption": f"item {i}"} for i in range(40)])
    scores, idx = kb.search(base[[3, 17]])
    assert idx.tolist() == [3, 17] and torch.allclose(scores, torch.ones(2), atol=1e-5)
    assert kb.index_bits() == 6  # ceil(log2 40)
    kb.save(tmp_path / "kb")
    kb2 = KnowledgeBase.load(tmp_path / "kb")
    assert kb2.version_hash() == kb.version_hash() and kb2.version_hash(include_vectors=True) == kb.version_hash(include_vectors=True)
    torch.testing.assert_close(kb2.get(torch.tensor([5])), kb.get(torch.tensor([5])))
    with pytest.raises(ValueError, match="unique"):
        kb.add(base[:1], ids=["0"])
    with pytest.raises(ValueError, match=r"\[n, 16\]"):
        kb.add(torch.randn(2, 8))
    with pytest.raises(IndexError):
        kb.get(torch.tensor([40]))


def test_hit_sends_index_miss_sends_embedding(base: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(1)
    scheme = MemoryScheme(knowledge_base=build_knowledge_base(base), threshold=0.95)
    near = _unit(base[:4] + 0.02 * torch.randn(4, 16, generator=g))
    far = _unit(torch.randn(3, 16, generator=g))
    payload = scheme.transmit(SourceBatch(embeddings=torch.cat([near, far])))
    hit = payload.hit
    assert hit.tolist() == [True] * 4 + [False] * 3
    frame = channel_uses_for_bits(12, "qpsk-1/2", k=12)  # 1 flag + 6 index bits, padded to the smallest LDPC k
    assert payload.channel_uses[:4].tolist() == [frame] * 4
    assert payload.channel_uses[4:].tolist() == [frame + 8] * 3  # + ceil(16/2) analog symbols
    out = scheme.deliver(payload, AWGNChannel(), 20.0, generator=g)
    torch.testing.assert_close(out.embeddings[:4], base[:4])  # rebuilt from the receiver's copy
    assert out.extras["index_errors"] == 0 and not out.failed.any()
    # a noisy analog copy: mean cosine 1 / sqrt(1 + N0) at Es/N0 = 20 dB (8 symbols per item; the
    # per-item spread is ~0.002, so 3 items sit well within 0.005)
    cos = (out.embeddings[4:] * far).sum(-1)
    assert float(cos.mean()) == pytest.approx(1 / math.sqrt(1 + 10 ** (-20 / 10)), abs=0.005)
    assert (cos < 0.9999).all()


def test_out_of_sync_is_detected(base: torch.Tensor) -> None:
    tx = build_knowledge_base(base)
    rx = tx.copy()
    rx.add(_unit(torch.randn(1, 16)), ids=["extra"])
    scheme = MemoryScheme(knowledge_base=tx, receiver_base=rx)
    payload = scheme.transmit(SourceBatch(embeddings=base[:2]))
    with pytest.raises(KnowledgeBaseSyncError, match="out of sync"):
        scheme.deliver(payload, None, None)


def test_remember_keeps_bases_in_sync(base: torch.Tensor) -> None:
    scheme = MemoryScheme(knowledge_base=build_knowledge_base(base[:20]), threshold=0.95)
    batch = SourceBatch(embeddings=base[20:25])
    payload = scheme.transmit(batch)
    assert not payload.hit.any()
    out = scheme.deliver(payload, AWGNChannel(), 10.0, generator=torch.Generator().manual_seed(2))
    assert scheme.remember(base[20:25], payload, out, ids=[f"new{i}" for i in range(5)]) == 5
    assert scheme.tx_kb.version_hash() == scheme.rx_kb.version_hash() and len(scheme.rx_kb) == 25
    again = scheme.transmit(batch)
    assert again.hit.all()  # the content is now known: indices only
    assert (again.channel_uses < payload.channel_uses).all()
