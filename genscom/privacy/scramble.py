r"""Keyed unitary scrambling of analog symbols: confidentiality for the semantic-analog, adapted and agent schemes.

Per item, a unitary ``U`` is drawn from a keyed PRF (the ChaCha20 keystream of the session's
``scramble/<mode>`` subkey, with the item's 96-bit nonce):

* ``mode="permute-phase"``: ``U = D1 P``, i.e. ``y_i = exp(j theta_i) x_{pi(i)}``: a pseudo-random
  permutation ``pi`` of the ``n`` symbols and an independent uniform phase per symbol.
* ``mode="mix"`` (default): ``U = D3 F D2 F D1 P`` with ``F`` the unitary DFT (``norm="ortho"``) and
  ``D1..D3`` independent random-phase diagonals, so every sent symbol depends on every data symbol.

Why ``mix`` is the default: ``permute-phase`` keeps the *multiset of symbol magnitudes* ``{|x_k|}``, which
is a fingerprint of the content. An eavesdropper who knows the public encoder can sort ``|y|`` and match it
against the sorted magnitudes of candidate contents, and identify the item at high SNR (the test
``test_magnitude_profile_attack`` shows it). ``mix`` spreads each symbol over all positions, so ``|y|``
looks like a sample of complex Gaussians whatever the content. Both cost the same: no extra symbols and
one keystream of ``8 n (1 + layers)`` bytes per item (+ two length-``n`` FFTs for ``mix``).

**Properties** (both modes): ``unscramble(scramble(x)) = x`` up to float rounding; ``||Ux|| = ||x||``
per item; and for AWGN, ``U^H (U x + n) = x + U^H n`` with ``U^H n ~ CN(0, N0 I)`` whenever
``n ~ CN(0, N0 I)`` (circularly symmetric, i.i.d.), so the legitimate receiver sees *exactly* the noise
statistics of the unscrambled link and its accuracy is unchanged. Without the key, ``U`` is a fresh
uniformly random-looking unitary per item, and unscrambling with a wrong key leaves symbols whose
correlation with the sent ones is about ``1/sqrt(n)``.

**Fading and channel state.** On a fading channel ``y = h * (U x) + n`` with ``h`` per symbol (block
fading), the receiver must **equalise before unscrambling**: the permutation moves symbols across
coherence blocks (and ``mix`` spreads each over all of them), so ``h`` applies to the *scrambled*
positions. Pilots are inserted after the scrambler (by ``Scheme.deliver``), are public, and estimate ``h``
at the scrambled positions as before. After ZF/MMSE equalisation, unscramble the equalised symbols. In
``permute-phase`` mode only, a receiver that wants to equalise *after* unscrambling may carry the
per-symbol state along with :meth:`SymbolScrambler.unscramble_state` (``h`` or ``N0/|h|^2`` moved to the
unscrambled positions; phases cancel in ``U^H (h * U x) = (P^T h) * x``); in ``mix`` mode no per-symbol
state exists after unscrambling and that method raises.

Scrambling protects confidentiality only, not integrity: see ``docs/security.md`` and bind each item's
nonce with :class:`~genscom.privacy.header.ItemHeaders`.

Example:
    >>> session = LinkSession(LinkKey.from_file("link.key"))
    >>> scr = SymbolScrambler(session)
    >>> headers = ItemHeaders(session)
    >>> nonces, hdrs = headers.issue(ids, n_symbols=x.shape[1])        # x: [B, n] complex64
    >>> y = scr.scramble(x, nonces)                                     # send y (+ hdrs as side bits)
    >>> x_hat = scr.unscramble(equalised_y, nonces)                     # receiver, after equalising
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from genscom.privacy._prf import check_nonces, keystream_words, uniform01
from genscom.privacy.session import LinkSession

ScrambleMode = Literal["mix", "permute-phase"]
SCRAMBLE_MODES: tuple[str, ...] = ("mix", "permute-phase")
_PHASE_LAYERS = {"permute-phase": 1, "mix": 3}


@dataclass(frozen=True)
class ScrambleConfig:
    """How analog symbols are scrambled (both ends must agree)."""

    mode: ScrambleMode = field(default="mix", metadata={
        "help": "mix: permutation, phases and two unitary DFTs (hides the magnitude profile); "
                "permute-phase: permutation and per-symbol phase only"})

    def __post_init__(self) -> None:
        if self.mode not in SCRAMBLE_MODES:
            raise ValueError(f"ScrambleConfig.mode must be one of {', '.join(SCRAMBLE_MODES)}; got {self.mode!r}")


@dataclass
class _Draw:
    perm: torch.Tensor  # [B, n] int64: scrambled position i carries data symbol perm[i]
    inv: torch.Tensor  # [B, n] int64: data symbol k sits at scrambled position inv[k]
    phases: torch.Tensor  # [B, layers, n] complex unit phasors


class SymbolScrambler:
    """Keyed per-item unitary scrambling of ``[B, n]`` complex symbols (see the module docstring).

    Args:
        session: the link session (same key and session id at both ends).
        config: :class:`ScrambleConfig`.
    """

    overhead_symbols = 0  # unitary and length-preserving: no extra channel uses (the header is counted apart)

    def __init__(self, session: LinkSession, config: ScrambleConfig | None = None) -> None:
        if not isinstance(session, LinkSession):
            raise TypeError(f"session must be a LinkSession, got {type(session).__name__}")
        self.config = ScrambleConfig() if config is None else config
        self._session = session
        self._key = session._subkey(f"scramble/{self.config.mode}")

    def scramble(self, x: torch.Tensor, nonces: Sequence[bytes]) -> torch.Tensor:
        """``y = U x`` per item.

        Args:
            x: ``[B, n]`` complex64/complex128 data symbols (any device; differentiable).
            nonces: ``B`` 12-byte nonces, one fresh per item (``session.next_nonces(B)``, or
                ``ItemHeaders.issue``).

        Returns:
            ``[B, n]`` complex, same dtype/device; per-item norms equal those of ``x``.
        """
        d = self._draw(x, nonces)
        z = x.gather(-1, d.perm) * d.phases[:, 0]
        if self.config.mode == "mix":
            z = torch.fft.fft(z, dim=-1, norm="ortho") * d.phases[:, 1]
            z = torch.fft.fft(z, dim=-1, norm="ortho") * d.phases[:, 2]
        return z

    def unscramble(self, y: torch.Tensor, nonces: Sequence[bytes]) -> torch.Tensor:
        """``x = U^H y`` per item: the exact inverse of :meth:`scramble` (up to float rounding).

        Args:
            y: ``[B, n]`` complex, *already equalised* on fading channels.
            nonces: the items' nonces (from their verified headers at the receiver).
        """
        d = self._draw(y, nonces)
        z = y
        if self.config.mode == "mix":
            z = torch.fft.ifft(z * d.phases[:, 2].conj(), dim=-1, norm="ortho")
            z = torch.fft.ifft(z * d.phases[:, 1].conj(), dim=-1, norm="ortho")
        z = z * d.phases[:, 0].conj()
        return z.gather(-1, d.inv)

    def unscramble_state(self, state: torch.Tensor, nonces: Sequence[bytes]) -> torch.Tensor:
        """Move per-symbol channel state (``h``, ``N0``, ``N0/|h|^2``; real or complex ``[B, n]``) from the
        scrambled positions to the unscrambled ones: ``state[inv]`` (``permute-phase`` mode only).

        Raises:
            ValueError: in ``mix`` mode, where each symbol is spread over all positions: equalise before
                unscrambling instead.
        """
        if self.config.mode != "permute-phase":
            raise ValueError(f"unscramble_state needs mode='permute-phase', this scrambler uses {self.config.mode!r}, "
                             "which spreads every symbol over all positions; equalise before unscrambling instead")
        if not isinstance(state, torch.Tensor) or state.dim() != 2:
            raise ValueError(f"state must be a [B, n] tensor, got {getattr(state, 'shape', type(state).__name__)}")
        batch, n = state.shape
        nonces = check_nonces(nonces, batch)
        words = keystream_words(self._key, nonces, n)  # the permutation words only (same prefix as _draw)
        inv = np.argsort(np.argsort(words, axis=-1, kind="stable"), axis=-1)
        return state.gather(-1, torch.from_numpy(inv).to(state.device))

    def _draw(self, x: torch.Tensor, nonces: Sequence[bytes]) -> _Draw:
        if not isinstance(x, torch.Tensor) or not x.is_complex():
            raise TypeError(f"symbols must be a complex torch.Tensor [B, n], got "
                            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}; "
                            "pack real features with genscom.channels.power.real_to_complex first")
        if x.dim() != 2 or x.shape[1] < 1:
            raise ValueError(f"symbols must have shape [B, n] with n >= 1, got {tuple(x.shape)}; "
                             "scramble each item's data symbols (pilots excluded)")
        batch, n = x.shape
        nonces = check_nonces(nonces, batch)
        layers = _PHASE_LAYERS[self.config.mode]
        words = keystream_words(self._key, nonces, n * (1 + layers))  # [B, n (1 + layers)]
        perm = np.argsort(words[:, :n], axis=-1, kind="stable")  # uniform permutation (ties: prob ~ n^2 / 2^65)
        inv = np.argsort(perm, axis=-1)
        theta = torch.from_numpy(2.0 * math.pi * uniform01(words[:, n:]).reshape(batch, layers, n))
        theta = theta.to(device=x.device, dtype=x.real.dtype)
        phases = torch.polar(torch.ones_like(theta), theta)  # [B, layers, n] complex
        return _Draw(perm=torch.from_numpy(perm).to(x.device), inv=torch.from_numpy(inv).to(x.device),
                     phases=phases)

    def __repr__(self) -> str:
        return f"SymbolScrambler(mode={self.config.mode!r}, session={self._session!r})"


__all__ = ["SCRAMBLE_MODES", "ScrambleConfig", "ScrambleMode", "SymbolScrambler"]
