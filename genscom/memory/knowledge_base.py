"""A shared semantic knowledge base: FAISS inner-product index over L2-normalised embeddings, with ids and metadata.

Both ends of a link hold a copy. Entry ``i`` means the same thing at both ends
(same id and metadata, in the same order); its vector may differ (the receiver
keeps what it received). :meth:`KnowledgeBase.version_hash` hashes the ids,
metadata and order (and, with ``include_vectors=True``, the vectors), so two
copies can be checked for being in sync before an index is trusted.

Example:
    >>> kb = KnowledgeBase(dim=384)
    >>> kb.add(torch.nn.functional.normalize(torch.randn(3, 384), dim=-1), ids=["a", "b", "c"])
    >>> scores, index = kb.search(query)            # [B], [B] best entry per query
    >>> kb.save("runs/kb"); KnowledgeBase.load("runs/kb").version_hash() == kb.version_hash()
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genscom.utils import atomic_write_bytes, atomic_write_json

KB_VECTORS = "vectors.npy"
KB_META = "entries.json"


class KnowledgeBaseSyncError(RuntimeError):
    """The two ends' knowledge bases differ (version hashes disagree)."""


class KnowledgeBase:
    """FAISS flat inner-product index over ``[N, dim]`` float32 L2-normalised vectors with ids and metadata.

    Args:
        dim: embedding size.
    """

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        import faiss

        self.dim = dim
        self._index = faiss.IndexFlatIP(dim)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self.ids: list[str] = []
        self.metadata: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> torch.Tensor:
        """``[N, dim]`` float32 copy of the stored vectors."""
        return torch.from_numpy(self._vectors.copy())

    def index_bits(self) -> int:
        """Bits to name one entry: ``ceil(log2(N))`` (at least 1)."""
        return max(1, math.ceil(math.log2(max(2, len(self)))))

    def add(self, vectors: torch.Tensor, *, ids: list[str] | None = None,
            metadata: list[dict[str, Any]] | None = None, normalize: bool = True) -> list[int]:
        """Append ``vectors`` ``[n, dim]`` (L2-normalised here unless ``normalize=False``) with unique ``ids``
        and JSON-able ``metadata``.

        Returns the new entries' indices. Duplicate ids raise ``ValueError``.
        """
        if not isinstance(vectors, torch.Tensor) or vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be a [n, {self.dim}] tensor, got "
                             f"{tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__}")
        n = vectors.shape[0]
        start = len(self)
        ids = [str(start + i) for i in range(n)] if ids is None else [str(i) for i in ids]
        metadata = [{} for _ in range(n)] if metadata is None else list(metadata)
        if len(ids) != n or len(metadata) != n:
            raise ValueError(f"ids ({len(ids)}) and metadata ({len(metadata)}) must have one entry per vector ({n})")
        clash = sorted(set(ids) & set(self.ids)) or sorted({i for i in ids if ids.count(i) > 1})
        if clash:
            raise ValueError(f"ids must be unique; already present or repeated: {clash[:5]}")
        try:
            json.dumps(metadata)
        except TypeError as exc:
            raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None
        v = vectors.detach().float().cpu()
        v = (torch.nn.functional.normalize(v, dim=-1) if normalize else v).numpy().astype(np.float32)
        self._index.add(np.ascontiguousarray(v))
        self._vectors = np.concatenate([self._vectors, v], axis=0)
        self.ids.extend(ids)
        self.metadata.extend(dict(m) for m in metadata)
        return list(range(start, start + n))

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine scores ``[B, k]`` (``[B]`` if ``k == 1``) and entry indices (int64, -1 when empty)."""
        if not isinstance(queries, torch.Tensor) or queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be a [B, {self.dim}] tensor, got "
                             f"{tuple(queries.shape) if isinstance(queries, torch.Tensor) else type(queries).__name__}")
        b = queries.shape[0]
        if len(self) == 0:
            s, i = torch.full((b, k), -math.inf), torch.full((b, k), -1, dtype=torch.int64)
        else:
            q = torch.nn.functional.normalize(queries.detach().float().cpu(), dim=-1).numpy()
            s_np, i_np = self._index.search(np.ascontiguousarray(q), min(k, len(self)))
            s, i = torch.from_numpy(s_np), torch.from_numpy(i_np).to(torch.int64)
        return (s[:, 0], i[:, 0]) if k == 1 else (s, i)

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Vectors ``[B, dim]`` of entries ``indices`` ``[B]`` (bad indices raise ``IndexError``)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"entry indices must be in [0, {len(self)}), got range "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        return torch.from_numpy(self._vectors[idx.numpy()])

    def version_hash(self, *, include_vectors: bool = False) -> str:
        """SHA-256 (hex, 16 chars) of the entries' order, ids and metadata (and vectors if asked)."""
        h = hashlib.sha256()
        h.update(f"dim={self.dim};n={len(self)}".encode())
        h.update(json.dumps([self.ids, self.metadata], sort_keys=True).encode())
        if include_vectors:
            h.update(np.ascontiguousarray(self._vectors).tobytes())
        return h.hexdigest()[:16]

    def check_sync(self, other: "KnowledgeBase | str") -> None:
        """Raise :class:`KnowledgeBaseSyncError` unless ``other`` (a base or its hash) matches this one."""
        theirs = other if isinstance(other, str) else other.version_hash()
        mine = self.version_hash()
        if theirs != mine:
            raise KnowledgeBaseSyncError(f"knowledge bases are out of sync: version {mine} (n={len(self)}) vs {theirs}; "
                                         "re-share the base (KnowledgeBase.save/load) before sending indices")

    def copy(self) -> "KnowledgeBase":
        kb = KnowledgeBase(self.dim)
        if len(self):
            kb.add(torch.from_numpy(self._vectors.copy()), ids=list(self.ids), metadata=[dict(m) for m in self.metadata],
                   normalize=False)
        return kb

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``vectors.npy`` and ``entries.json`` (ids, metadata, dim, version hash) atomically."""
        import io

        folder = Path(folder)
        buf = io.BytesIO()
        np.save(buf, self._vectors)
        atomic_write_bytes(folder / KB_VECTORS, buf.getvalue())
        atomic_write_json(folder / KB_META, {"dim": self.dim, "ids": self.ids, "metadata": self.metadata,
                                             "version": self.version_hash()})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "KnowledgeBase":
        """Read a base written by :meth:`save`; a file that does not match its stored hash raises ``ValueError``."""
        from genscom.errors import BadFileError
        from genscom.loading import check_file, load_numpy, read_json

        folder = Path(folder)
        meta_path, vec_path = folder / KB_META, folder / KB_VECTORS
        fix = "rebuild the base (build_knowledge_base(...).save(folder))"
        for p in (meta_path, vec_path):
            check_file(p, expected=f"a knowledge base folder ({KB_META} and {KB_VECTORS})", fix=fix)
        meta = read_json(meta_path, expected="a knowledge base entries.json (dim, ids, metadata, version)", fix=fix)
        vec = load_numpy(vec_path, expected="a knowledge base vectors.npy (float32 [N, dim])", fix=fix)
        try:
            kb = cls(int(meta["dim"]))
            if len(vec):
                kb.add(torch.from_numpy(vec), ids=meta["ids"], metadata=meta["metadata"], normalize=False)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadFileError(folder, problem=f"the entries and vectors do not fit ({type(exc).__name__}: {exc})",
                               expected="a knowledge base written by KnowledgeBase.save", fix=fix) from None
        if kb.version_hash() != meta.get("version"):
            raise ValueError(f"knowledge base in {folder} is corrupt: version {kb.version_hash()} != stored "
                             f"{meta.get('version')}")
        return kb


def build_knowledge_base(embeddings: torch.Tensor, *, ids: list[str] | None = None,
                         metadata: list[dict[str, Any]] | None = None) -> KnowledgeBase:
    """A base holding ``embeddings`` ``[N, dim]`` (e.g. clean encoder embeddings of TRAINING clips, PROTOCOL.md)."""
    kb = KnowledgeBase(int(embeddings.shape[1]))
    kb.add(embeddings, ids=ids, metadata=metadata)
    return kb
