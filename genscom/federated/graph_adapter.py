r"""Graph multimodal adapter: heterogeneous users' image and text features -> tokens in the shared SKB space.

Each user keeps its own frozen encoders (different image and text towers, different feature
dimensions). The adapter maps all of them into the semantic knowledge base (SKB) space, and
only the adapter travels in federated training.

Architecture (sizes in :class:`GraphAdapterConfig`; ``H`` = ``hidden_dim``, ``D`` = ``skb_dim``)::

    image features [Bi, d_img]  --heads["img:<tower>"] (Linear d_img -> H)-->  image nodes [Bi, H]
    text features  [Bt, d_txt]  --heads["txt:<tower>"] (Linear d_txt -> H)-->  text nodes  [Bt, H]

    one graph per batch over the Bi + Bt nodes (:func:`build_graph`):
      intra-modal  w_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)) on L2-normalised nodes, top-k per node
                   (``intra_topk``), symmetrised (edge if j in topk(i) or i in topk(j))
      cross-modal  s'_ij = cos(M x_i, y_j) with M a small learned map (identity at init); each node
                   keeps its top-k nodes of the other modality (``cross_topk``) and mean-pools them:
                   weight (1/k) * sigmoid(s'_ij / 0.1), so M is trained through the edge weights
      self-loops   weight 1

    L x message passing (``num_layers``), for node i over its neighbours N(i) (self included):
      a_ij = softmax_j( attention_scale * q_i . k_j / sqrt(H) + log w_ij )
      h_i  <- LayerNorm(h_i + W_o sum_j a_ij v_j);  h_i <- LayerNorm(h_i + FFN(h_i))

    output  Linear H -> D, L2-normalised: tokens aligned to the SKB space [B, D]

Only the *shared* part (everything but ``heads``) is aggregated across all users; each input head
is aggregated only among the users that have that encoder (:func:`aggregate`).

Objective (:func:`graph_adapter_loss`): VSE++ triplet loss with margin on the hardest in-batch
negative, image->text and text->image, plus ``reg_weight`` x a regulariser pulling the tokens to
their SKB targets (``1 - cos``; without targets, matched image/text tokens to each other). A
per-pair weight (0 = excluded, e.g. a low-confidence label from :mod:`genscom.federated.labels`)
removes a pair both as an anchor and as a negative.

Weights are files with a config beside them: :meth:`GraphMultimodalAdapter.save_pretrained`
writes ``model.safetensors`` + ``config.json``; :meth:`GraphMultimodalAdapter.from_pretrained`
reads them.

Example:
    >>> cfg = GraphAdapterConfig(encoders={"img:a": 16, "txt:b": 12}, skb_dim=8, hidden_dim=16)
    >>> model = build_graph_adapter(cfg, seed=0)
    >>> out = model(torch.randn(5, 16), torch.randn(5, 12), image_encoder="img:a", text_encoder="txt:b")
    >>> tuple(out.image_tokens.shape), tuple(out.text_tokens.shape)
    ((5, 8), (5, 8))
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genscom.pretrained import CONFIG_NAME, WEIGHTS_NAME  # noqa: F401  (re-exported: the folder layout)
from genscom.utils import check_positive_ints

HEADS_PREFIX = "heads."
CROSS_GATE_TEMPERATURE = 0.1  # sigmoid(s' / 0.1): a cosine of 0.3 gates ~0.95, -0.3 ~0.05


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass
class GraphAdapterConfig:
    """Shape and training defaults of a :class:`GraphMultimodalAdapter` (saved as ``config.json``).

    Defaults of ``num_layers``, ``attention_scale``, ``reg_weight``, ``margin``, ``lr`` and
    ``batch_size`` are the reference scheme's.
    """

    encoders: dict[str, int] = field(default_factory=dict)  # input head name ("img:mini") -> feature dim
    skb_dim: int = 384               # SKB space (mini profile: 384)
    hidden_dim: int = 256            # graph node width H
    num_layers: int = 1              # message-passing (GNN) layers
    attention_scale: float = 1.5     # multiplies q.k / sqrt(H) in the graph attention
    intra_topk: int = 8              # intra-modal neighbours per node (before symmetrising)
    cross_topk: int = 4              # cross-modal neighbours per node (mean-pooled)
    bandwidth: float = 0.5           # sigma of the Gaussian kernel on L2-normalised nodes (distances in [0, 2])
    ffn_mult: int = 2                # FFN width = ffn_mult * H
    reg_weight: float = 1.0          # weight of the SKB regulariser in the loss
    margin: float = 0.2              # triplet margin (hardest negatives)
    lr: float = 1e-4                 # Adam
    batch_size: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.encoders, Mapping):
            raise TypeError(f"encoders must be a mapping of head name -> feature dim, e.g. {{'img:mini': 384}}, "
                            f"got {type(self.encoders).__name__}")
        self.encoders = {k: self.encoders[k] for k in sorted(self.encoders)}
        for name, dim in self.encoders.items():
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"encoders: head name must be a non-empty string without '.', got {name!r}; "
                                 "use e.g. 'img:mini' or 'txt:minilm'")
            if not _is_int(dim) or dim < 1:
                raise ValueError(f"encoders[{name!r}] must be a positive integer feature dim, got {dim!r}")
        check_positive_ints(self, ("skb_dim", "hidden_dim", "num_layers", "intra_topk", "cross_topk", "ffn_mult",
                                   "batch_size"))
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (the triplet loss needs in-batch negatives), "
                             f"got {self.batch_size}")
        for k in ("attention_scale", "bandwidth", "lr"):
            v = getattr(self, k)
            if not _is_num(v) or v <= 0:
                raise ValueError(f"{k} must be a positive finite number, got {v!r}")
        for k in ("reg_weight", "margin"):
            v = getattr(self, k)
            if not _is_num(v) or v < 0:
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphAdapterConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys raise ``ValueError`` listing the known fields."""
        from genscom.utils import config_from_dict

        return config_from_dict(cls, dict(d))


# --------------------------------------------------------------------------- graph
@dataclass
class BatchGraph:
    """The graph of one batch: ``Bi`` image nodes first, then ``Bt`` text nodes (``N = Bi + Bt``).

    Attributes:
        intra_image: ``[Bi, Bi]`` symmetric Gaussian-kernel weights of the kept intra-modal edges (0: no edge,
            diagonal 0).
        intra_text: ``[Bt, Bt]`` the same for text nodes.
        cross_i2t: ``[Bi, Bt]`` weight of the message text ``j`` -> image ``i`` (top-k texts of each image,
            ``(1/k) sigmoid(s'_ij / 0.1)``, 0 elsewhere).
        cross_t2i: ``[Bt, Bi]`` weight of the message image ``i`` -> text ``j`` (top-k images of each text).
        cross_sim: ``[Bi, Bt]`` refined similarity ``s'`` (before selection).
        adjacency: ``[N, N]`` all edge weights, ``adjacency[i, j]`` = weight of the message ``j -> i``;
            self-loops 1.
    """

    intra_image: torch.Tensor
    intra_text: torch.Tensor
    cross_i2t: torch.Tensor
    cross_t2i: torch.Tensor
    cross_sim: torch.Tensor
    adjacency: torch.Tensor


def gaussian_kernel(x: torch.Tensor, *, bandwidth: float) -> torch.Tensor:
    """``w_ij = exp(-||x_i - x_j||^2 / (2 bandwidth^2))`` of the L2-normalised rows of ``x [n, d]`` -> ``[n, n]``."""
    z = F.normalize(x, dim=-1)
    d2 = (2.0 - 2.0 * z @ z.t()).clamp_min(0.0)  # ||a - b||^2 of unit vectors
    return torch.exp(-d2 / (2.0 * bandwidth**2))


def topk_mask(score: torch.Tensor, k: int, *, exclude_diagonal: bool = False) -> torch.Tensor:
    """Boolean ``[n, m]`` mask of each row's ``min(k, available)`` largest entries of ``score [n, m]``.

    ``exclude_diagonal``: a node is not its own neighbour (square ``score`` only). Ties go to the lower index.
    """
    n, m = score.shape
    avail = m - 1 if exclude_diagonal else m
    kk = min(k, avail)
    mask = torch.zeros(n, m, dtype=torch.bool, device=score.device)
    if kk <= 0 or n == 0:
        return mask
    s = score.detach().clone()
    if exclude_diagonal:
        s.fill_diagonal_(float("-inf"))
    idx = s.topk(kk, dim=1).indices  # (n, kk)
    return mask.scatter_(1, idx, True)


def intra_edges(x: torch.Tensor, *, k: int, bandwidth: float) -> torch.Tensor:
    """Symmetric ``[n, n]`` intra-modal edge weights: Gaussian kernel kept on top-k (per row, self excluded),
    symmetrised by union (edge if ``j in topk(i)`` or ``i in topk(j)``); zero diagonal."""
    w = gaussian_kernel(x, bandwidth=bandwidth)
    keep = topk_mask(w, k, exclude_diagonal=True)
    keep = keep | keep.t()
    return w * keep


def build_graph(image: torch.Tensor, text: torch.Tensor, *, intra_topk: int, cross_topk: int, bandwidth: float,
                mapping: Callable[[torch.Tensor], torch.Tensor] | None = None) -> BatchGraph:
    """The graph of one batch over image nodes ``[Bi, H]`` and text nodes ``[Bt, H]`` (either may have 0 rows).

    Args:
        image, text: node features.
        intra_topk: intra-modal neighbours per node (clipped to the nodes available), then symmetrised.
        cross_topk: cross-modal neighbours per node (clipped to the other modality's size), mean-pooled.
        bandwidth: Gaussian-kernel sigma (on L2-normalised nodes).
        mapping: the learned map ``M`` of the refined similarity ``s'_ij = cos(M image_i, text_j)``;
            ``None``: identity (plain cosine).

    Returns:
        :class:`BatchGraph`; edges are selected without gradient, weights keep it.
    """
    if image.dim() != 2 or text.dim() != 2 or image.shape[1] != text.shape[1]:
        raise ValueError(f"image and text nodes must be [B, H] with the same H, got {tuple(image.shape)} and "
                         f"{tuple(text.shape)}")
    bi, bt = image.shape[0], text.shape[0]
    wi = intra_edges(image, k=intra_topk, bandwidth=bandwidth)
    wt = intra_edges(text, k=intra_topk, bandwidth=bandwidth)
    mapped = mapping(image) if mapping is not None else image
    s = F.normalize(mapped, dim=-1) @ F.normalize(text, dim=-1).t()  # (Bi, Bt) refined similarity
    gate = torch.sigmoid(s / CROSS_GATE_TEMPERATURE)
    ki, kt = min(cross_topk, bt), min(cross_topk, bi)
    i2t = gate * topk_mask(s, cross_topk) / max(ki, 1)              # image i pools its top-k texts
    t2i = gate.t() * topk_mask(s.t(), cross_topk) / max(kt, 1)      # text j pools its top-k images
    n = bi + bt
    eye = torch.eye(n, dtype=image.dtype, device=image.device)
    top = torch.cat([wi, i2t], dim=1)
    bottom = torch.cat([t2i, wt], dim=1)
    adjacency = torch.cat([top, bottom], dim=0) + eye  # (N, N)
    return BatchGraph(intra_image=wi, intra_text=wt, cross_i2t=i2t, cross_t2i=t2i, cross_sim=s, adjacency=adjacency)


class GraphAttentionLayer(nn.Module):
    """One message-passing layer over a weighted graph, attention scaled by ``attention_scale``.

    ``a_ij = softmax_{j: w_ij > 0}(scale * q_i.k_j / sqrt(H) + log w_ij)``,
    ``h <- LN(h + W_o sum_j a_ij v_j)``, ``h <- LN(h + FFN(h))``.

    Input: ``h [N, H]``, ``adjacency [N, N]`` (``adjacency[i, j]`` = weight of ``j -> i``, self-loops > 0).
    Output: ``[N, H]``.
    """

    def __init__(self, hidden: int, *, attention_scale: float, ffn_mult: int) -> None:
        super().__init__()
        self.scale = attention_scale / math.sqrt(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn_mult * hidden), nn.GELU(), nn.Linear(ffn_mult * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # (N, H) each
        logits = self.scale * q @ k.t() + torch.log(adjacency.clamp_min(1e-30))  # (N, N)
        logits = logits.masked_fill(adjacency <= 0, float("-inf"))
        attn = torch.softmax(logits, dim=-1)  # every row has its self-loop, so no all -inf row
        h = self.norm1(h + self.out(attn @ v))
        return self.norm2(h + self.ffn(h))


@dataclass
class GraphAdapterOutput:
    """What :meth:`GraphMultimodalAdapter.forward` returns.

    Attributes:
        image_tokens: ``[Bi, skb_dim]`` L2-normalised (``[0, skb_dim]`` when no image was given).
        text_tokens: ``[Bt, skb_dim]`` L2-normalised.
        graph: the batch's :class:`BatchGraph` (on the projected nodes).
    """

    image_tokens: torch.Tensor
    text_tokens: torch.Tensor
    graph: BatchGraph


class GraphMultimodalAdapter(nn.Module):
    """Per-encoder input heads -> one graph per batch -> ``num_layers`` attention layers -> SKB tokens.

    Args:
        config: :class:`GraphAdapterConfig` (``encoders`` names the input heads and their feature dims).

    Attributes:
        heads: ``nn.ModuleDict`` head name -> ``Linear(feature_dim, hidden_dim)`` (per user encoder, not shared).
        cross_map: ``Linear(H, H)``, identity at init: the learned map of the cross-modal similarity.
        modality: ``[2, H]`` learned image/text type embeddings added to the nodes.
        layers, to_skb: message passing and the ``H -> skb_dim`` output map.
    """

    def __init__(self, config: GraphAdapterConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_dim
        self.heads = nn.ModuleDict({name: nn.Linear(dim, h) for name, dim in config.encoders.items()})
        self.cross_map = nn.Linear(h, h)
        with torch.no_grad():
            self.cross_map.weight.copy_(torch.eye(h))
            self.cross_map.bias.zero_()
        self.modality = nn.Parameter(torch.zeros(2, h))
        self.layers = nn.ModuleList(GraphAttentionLayer(h, attention_scale=config.attention_scale,
                                                        ffn_mult=config.ffn_mult) for _ in range(config.num_layers))
        self.to_skb = nn.Linear(h, config.skb_dim)

    # ------------------------------------------------------------------ forward
    def _project(self, x: torch.Tensor | None, encoder: str | None, what: str, type_id: int) -> torch.Tensor:
        h = self.config.hidden_dim
        ref = self.to_skb.weight
        if x is None:
            return ref.new_zeros(0, h)
        if encoder is None:
            raise ValueError(f"{what} features given without {what}_encoder; pass the head name, one of "
                             f"{sorted(self.heads)}")
        if encoder not in self.heads:
            raise ValueError(f"{what}_encoder {encoder!r} has no input head; known: {sorted(self.heads)} "
                             "(add it to GraphAdapterConfig.encoders)")
        dim = self.config.encoders[encoder]
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != dim or x.is_complex():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{what} features for head {encoder!r} must be a real [B, {dim}] tensor, got {shape}")
        return self.heads[encoder](x.to(ref.dtype)) + self.modality[type_id]

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None, *,
                image_encoder: str | None = None, text_encoder: str | None = None) -> GraphAdapterOutput:
        """Map a batch of image features ``[Bi, d_img]`` and/or text features ``[Bt, d_txt]`` to SKB tokens.

        The nodes of both modalities form one graph (:func:`build_graph`), so each token depends on the
        batch. Either input may be ``None`` (a single-modality graph: no cross-modal edges).

        Returns:
            :class:`GraphAdapterOutput` with ``image_tokens [Bi, skb_dim]``, ``text_tokens [Bt, skb_dim]``.
        """
        if image is None and text is None:
            raise ValueError("give image and/or text features")
        hi = self._project(image, image_encoder, "image", 0)  # (Bi, H)
        ht = self._project(text, text_encoder, "text", 1)     # (Bt, H)
        c = self.config
        graph = build_graph(hi, ht, intra_topk=c.intra_topk, cross_topk=c.cross_topk, bandwidth=c.bandwidth,
                            mapping=self.cross_map)
        h = torch.cat([hi, ht], dim=0)  # (N, H)
        for layer in self.layers:
            h = layer(h, graph.adjacency)
        out = F.normalize(self.to_skb(h), dim=-1)  # (N, D)
        return GraphAdapterOutput(image_tokens=out[: hi.shape[0]], text_tokens=out[hi.shape[0]:], graph=graph)

    # ------------------------------------------------------------------ federated parts
    def shared_state(self) -> dict[str, torch.Tensor]:
        """State-dict entries aggregated across all users (everything but ``heads.*``), detached copies."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith(HEADS_PREFIX)}

    def head_state(self, encoder: str) -> dict[str, torch.Tensor]:
        """State-dict entries (full keys ``heads.<encoder>.*``) of one input head, detached copies."""
        if encoder not in self.heads:
            raise ValueError(f"no input head {encoder!r}; known: {sorted(self.heads)}")
        prefix = f"{HEADS_PREFIX}{encoder}."
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(prefix)}

    def user_state(self, encoders: Sequence[str]) -> dict[str, torch.Tensor]:
        """What a user holding ``encoders`` sends: :meth:`shared_state` plus those heads."""
        state = self.shared_state()
        for e in encoders:
            state.update(self.head_state(e))
        return state

    def load_user_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a (partial) state: every shared entry must be there; heads only where given."""
        own = self.state_dict()
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise ValueError(f"state has entries this adapter does not: {unknown[:5]}; server and users must use "
                             "the same GraphAdapterConfig")
        missing = sorted(k for k in own if not k.startswith(HEADS_PREFIX) and k not in state)
        if missing:
            raise ValueError(f"state lacks shared entries {missing[:5]}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"state[{k!r}] has shape {tuple(v.shape)}, the adapter {tuple(own[k].shape)}")
        self.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state.items()}})

    # ------------------------------------------------------------------ files
    def save_pretrained(self, folder: str | os.PathLike[str], *, extra_config: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` (float32) and ``config.json`` (``{"graph_adapter": ..., **extra_config}``),
        each atomically (:func:`genscom.pretrained.save_module_folder`)."""
        from genscom.pretrained import save_module_folder

        return save_module_folder(self, folder, key="graph_adapter", config=self.config.to_dict(),
                                  extra_config=extra_config)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *,
                        device: str | torch.device = "cpu") -> "GraphMultimodalAdapter":
        """Load a folder written by :meth:`save_pretrained` (in eval mode).

        Raises:
            MissingFileError: a file is missing.
            BadFileError: ``config.json`` or ``model.safetensors`` is unreadable or does not fit (naming the file).
        """
        from genscom.pretrained import load_module_folder

        model, _ = load_module_folder(folder, key="graph_adapter",
                                      build=lambda d: cls(GraphAdapterConfig.from_dict(d)), what="graph adapter",
                                      device=device, fix="pass a folder written by GraphMultimodalAdapter.save_pretrained")
        return model


def build_graph_adapter(config: GraphAdapterConfig, *, seed: int = 0,
                        device: str | torch.device = "cpu") -> GraphMultimodalAdapter:
    """A freshly initialised adapter, seeded (the global RNG is saved and restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GraphMultimodalAdapter(config)
    return model.to(device)


# --------------------------------------------------------------------------- aggregation
def aggregate(updates: Sequence[tuple[Mapping[str, torch.Tensor], int]], *,
              base: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """FedAvg of user updates, weighted by example counts; heads only among the users that hold them.

    Args:
        updates: ``(state, num_examples)`` per user; ``state`` = :meth:`GraphMultimodalAdapter.user_state`
            (all shared entries plus the ``heads.<encoder>.*`` entries of that user's encoders).
        base: the previous global state; entries no user sent (heads of encoders absent this round) are
            kept from it. ``None``: only the entries some user sent are returned.

    Returns:
        the new global state: shared entries ``sum_u n_u w_u / sum_u n_u`` over all users; an entry of
        head ``e`` the same sum over the users whose state has it.

    Raises:
        ValueError: no updates, a count that is not a positive integer, users disagreeing on the shared
            entries or on a shape.
    """
    if not updates:
        raise ValueError("aggregate needs at least one (state, num_examples) update")
    for i, (_, n) in enumerate(updates):
        if not _is_int(n) or n < 1:
            raise ValueError(f"updates[{i}]: num_examples must be a positive integer, got {n!r}")
    shared = {k for k in updates[0][0] if not k.startswith(HEADS_PREFIX)}
    for i, (state, _) in enumerate(updates):
        mine = {k for k in state if not k.startswith(HEADS_PREFIX)}
        if mine != shared:
            raise ValueError(f"updates[{i}] has shared entries {sorted(mine ^ shared)[:5]} that updates[0] "
                             "does not (or lacks them); every user must send the whole shared part")
    out: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in (base or {}).items()}
    keys = sorted({k for state, _ in updates for k in state})
    for k in keys:
        holders = [(state[k], n) for state, n in updates if k in state]
        shapes = {tuple(t.shape) for t, _ in holders}
        if len(shapes) != 1:
            raise ValueError(f"users disagree on the shape of {k!r}: {sorted(shapes)}")
        total = float(sum(n for _, n in holders))
        acc = sum(t.detach().to(torch.float64) * (n / total) for t, n in holders)
        out[k] = acc.to(holders[0][0].dtype)  # type: ignore[union-attr]
    return out


# --------------------------------------------------------------------------- loss
def graph_adapter_loss(image_tokens: torch.Tensor, text_tokens: torch.Tensor, *, margin: float = 0.2,
                       reg_weight: float = 1.0, targets: torch.Tensor | None = None,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""Hardest-negative triplet loss (image->text and text->image) plus the SKB regulariser.

    With ``S = image_tokens @ text_tokens^T`` (``[B, B]``, pair ``i`` = row ``i`` of both) and pair
    weights ``w`` (default 1):

    * ``l_i2t(i) = max_{j != i, w_j > 0} [margin - S_ii + S_ij]_+`` (hardest text negative of image ``i``),
      ``l_t2i(i) = max_{j != i, w_j > 0} [margin - S_ii + S_ji]_+``;
    * regulariser ``r(i) = (1 - cos(img_i, t_i)) + (1 - cos(txt_i, t_i))`` with ``t_i`` = ``targets[i]``
      (the SKB entry of pair ``i``), or ``r(i) = 1 - cos(img_i, txt_i)`` without targets;
    * loss ``= sum_i w_i (l_i2t + l_t2i + reg_weight r) / sum_i w_i``.

    A pair with ``w_i = 0`` (an excluded, low-confidence label) is neither an anchor nor a negative.

    Args:
        image_tokens, text_tokens: ``[B, D]`` L2-normalised (as the adapter returns them).
        targets: optional ``[B, D]`` SKB targets.
        weights: optional ``[B]`` non-negative per-pair weights (bool masks are fine).

    Returns:
        scalar loss (0, still in the graph, if every weight is 0).
    """
    if image_tokens.dim() != 2 or image_tokens.shape != text_tokens.shape:
        raise ValueError(f"image_tokens and text_tokens must be [B, D] of the same shape (pairs), got "
                         f"{tuple(image_tokens.shape)} and {tuple(text_tokens.shape)}")
    b = image_tokens.shape[0]
    if weights is None:
        w = image_tokens.new_ones(b)
    else:
        w = torch.as_tensor(weights, device=image_tokens.device).to(image_tokens.dtype)
        if w.shape != (b,) or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be [B={b}] finite and >= 0, got shape {tuple(w.shape)}")
    s = image_tokens @ text_tokens.t()  # (B, B)
    pos = s.diagonal()
    valid = (w > 0)[None, :] & ~torch.eye(b, dtype=torch.bool, device=s.device)  # negatives j of anchor i
    neg_i2t = (margin - pos[:, None] + s).clamp_min(0).masked_fill(~valid, 0.0).amax(dim=1) if b > 1 \
        else s.new_zeros(b)
    neg_t2i = (margin - pos[:, None] + s.t()).clamp_min(0).masked_fill(~valid, 0.0).amax(dim=1) if b > 1 \
        else s.new_zeros(b)
    if targets is not None:
        if targets.shape != image_tokens.shape:
            raise ValueError(f"targets must be [B, D] = {tuple(image_tokens.shape)}, got {tuple(targets.shape)}")
        t = F.normalize(targets.to(image_tokens.dtype), dim=-1)
        reg = (1 - (image_tokens * t).sum(-1)) + (1 - (text_tokens * t).sum(-1))
    else:
        reg = 1 - (image_tokens * text_tokens).sum(-1)
    per_pair = neg_i2t + neg_t2i + reg_weight * reg
    return (w * per_pair).sum() / w.sum().clamp_min(1e-12)


__all__ = ["BatchGraph", "GraphAdapterConfig", "GraphAdapterOutput", "GraphAttentionLayer", "GraphMultimodalAdapter",
           "aggregate", "build_graph", "build_graph_adapter", "gaussian_kernel", "graph_adapter_loss", "intra_edges",
           "topk_mask"]
