r"""Optional keyed orthogonal mixing of real embeddings ``[B, d]`` (one matrix per session).

``Q`` is a Haar-distributed ``d x d`` orthogonal matrix drawn from the session's ``mix`` subkey: a
Gaussian matrix from the ChaCha20 keystream (Box-Muller), then ``Q R = G`` (QR) with the signs of
``diag(R)`` moved into ``Q``. :meth:`EmbeddingMixer.mix` is ``e -> e Q^T`` and :meth:`EmbeddingMixer.unmix`
``z -> z Q``; norms and inner products are preserved, so cosine retrieval on unmixed embeddings is
unchanged.

Limits (see ``docs/security.md``):

* One ``Q`` per session and dimension (a QR per item would cost ``O(d^3)`` per item). An eavesdropper
  who learns ``d`` (embedding, sent symbols) pairs of one session can solve for ``Q``; rely on the
  per-item :class:`~genscom.privacy.scramble.SymbolScrambler` for confidentiality, and use mixing only
  as an extra layer.
* Mix only where the transmitter is rotation-equivariant (the plain analog packing). A learned adapter
  or agent was trained on unmixed embeddings; mixing before it changes what it sees and costs accuracy.

Example:
    >>> mixer = EmbeddingMixer(session, dim=512)
    >>> z = mixer.mix(emb)              # [B, 512] -> [B, 512], same norms
    >>> emb_back = mixer.unmix(z)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genscom.privacy._prf import keystream_words, uniform01
from genscom.privacy.session import LinkSession

_MAX_DIM = 8192  # a d x d float64 matrix; 8192 is 512 MiB


class EmbeddingMixer:
    """Keyed orthogonal mixing of ``[B, dim]`` real embeddings, exactly inverted by :meth:`unmix`.

    Args:
        session: the link session (same key and session id at both ends).
        dim: embedding dimension ``d`` (the matrix is built once, here).
    """

    def __init__(self, session: LinkSession, *, dim: int) -> None:
        if not isinstance(session, LinkSession):
            raise TypeError(f"session must be a LinkSession, got {type(session).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= _MAX_DIM:
            raise ValueError(f"dim must be an integer in [1, {_MAX_DIM}], got {dim!r}")
        self.dim = dim
        self._session = session
        self._q = _keyed_orthogonal(session._subkey("mix"), dim)  # [d, d] float64

    def mix(self, emb: torch.Tensor) -> torch.Tensor:
        """``e Q^T``: ``[B, dim]`` real -> ``[B, dim]`` of the same dtype/device (differentiable)."""
        q = self._matrix(emb)
        return emb @ q.T

    def unmix(self, z: torch.Tensor) -> torch.Tensor:
        """``z Q``: the inverse of :meth:`mix` (up to float rounding)."""
        q = self._matrix(z)
        return z @ q

    def _matrix(self, e: torch.Tensor) -> torch.Tensor:
        if not isinstance(e, torch.Tensor) or not e.is_floating_point():
            raise TypeError(f"embeddings must be a real floating torch.Tensor [B, {self.dim}], got "
                            f"{e.dtype if isinstance(e, torch.Tensor) else type(e).__name__}")
        if e.dim() != 2 or e.shape[1] != self.dim:
            raise ValueError(f"embeddings must have shape [B, {self.dim}], got {tuple(e.shape)}; "
                             f"build the mixer with dim={e.shape[-1] if e.dim() else '?'}")
        return self._q.to(device=e.device, dtype=e.dtype)

    def __repr__(self) -> str:
        return f"EmbeddingMixer(dim={self.dim}, session={self._session!r})"


def _keyed_orthogonal(key: bytes, dim: int) -> torch.Tensor:
    """Haar orthogonal ``[dim, dim]`` float64 from ``key`` (nonce: ``"mix" || dim``)."""
    nonce = b"mix\x00" + dim.to_bytes(8, "big")
    n_pairs = (dim * dim + 1) // 2  # each Box-Muller pair of uniforms gives two Gaussians
    u = uniform01(keystream_words(key, [nonce], 2 * n_pairs)[0]).reshape(2, n_pairs)
    u1 = 1.0 - u[0]  # (0, 1]: log is finite
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u[1]
    gauss = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])
    g = torch.from_numpy(gauss[: dim * dim].reshape(dim, dim))
    q, r = torch.linalg.qr(g)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs  # Haar: column j times sign(R_jj)


__all__ = ["EmbeddingMixer"]
