r"""Heterogeneous users for the graph adapter task: offline towers, the SKB, non-IID shards and noisy labels.

Everything here is cheap, deterministic and offline, built once from the synthetic clips
(:class:`~genscom.data.synthetic.SyntheticClips`):

* **image towers** (two families of different architecture and dimension)

  - ``img:stats``: hand-made pixel statistics of a clip ``[T, S, S, 3]``: a colour histogram of the
    middle frame (3 channels x 8 bins), its 4x4 grid of mean RGB (48), the 4x4 grid of mean absolute
    and of signed grey change from the first to the last frame (16 + 16): 104 dims, z-scored with
    the train statistics;
  - ``img:pca``: PCA (48 components, fitted on the train split) of the first and last frames
    downsampled to 8x8 RGB (384 values);

* **text towers**

  - ``txt:tfidf``: scikit-learn TF-IDF of word 1-2-grams + truncated SVD to 32 dims (fitted on the
    train captions);
  - ``txt:hash``: hashed bag of words (``HashingVectorizer``, 128 buckets, L2-normalised, no fitting);

* **SKB** (the shared semantic knowledge base, the target space of the adapter): the concept vector
  of an item, i.e. its attributes (shape, colour, count, size and motion of each object group, and
  the background) as a multi-hot vector, mapped by a fixed seeded Gaussian projection to ``skb_dim``
  and L2-normalised;
* **users**: user ``k`` holds image tower ``IMAGE_TOWERS[k % 2]`` and text tower
  ``TEXT_TOWERS[(k // 2) % 2]``, a non-IID shard (Dirichlet(``alpha``) over the colour of the first
  object group) and a label-noise group (``clean`` / ``mild`` / ``severe``) whose fraction of pairs
  is swapped by :func:`~genscom.federated.labels.inject_label_noise`. A user's *label* of pair ``i``
  is the caption (and its SKB entry) of item ``perm[i]``: the user never sees which pairs are wrong.

Example:
    >>> data = build_graph_fed_data(n_users=3, n_train=120, n_test=40, groups=("clean", "severe"))  # doctest: +SKIP
    >>> data.users[1].image_tower, data.users[1].group                                            # doctest: +SKIP
    ('img:pca', 'severe')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_TOWERS: tuple[str, ...] = ("img:stats", "img:pca")
TEXT_TOWERS: tuple[str, ...] = ("txt:tfidf", "txt:hash")
NOISE_FRACTIONS: dict[str, float] = {"clean": 0.0, "mild": 0.2, "severe": 0.5}  # share of pairs swapped
_PCA_DIM, _SVD_DIM, _HASH_DIM, _GRID = 48, 32, 128, 4


# --------------------------------------------------------------------------- towers
def _grid_mean(x: torch.Tensor, g: int) -> torch.Tensor:
    """``x [N, S, S, C]`` -> ``[N, g*g*C]`` mean over a ``g x g`` grid of cells (``S`` divisible by ``g``)."""
    n, s, _, c = x.shape
    return x.reshape(n, g, s // g, g, s // g, c).mean(dim=(2, 4)).reshape(n, -1)


def pixel_stats(frames: torch.Tensor) -> torch.Tensor:
    """``img:stats`` raw features of uint8 clips ``[N, T, S, S, 3]`` -> ``[N, 104]`` float32 (not yet z-scored)."""
    x = frames.float() / 255.0
    mid = x[:, x.shape[1] // 2]                                  # (N, S, S, 3)
    bins = (mid * 8).long().clamp(max=7)                         # (N, S, S, 3) in 0..7
    hist = F.one_hot(bins, 8).float().mean(dim=(1, 2)).reshape(len(x), -1)  # (N, 24)
    grey = x.mean(dim=-1, keepdim=True)                          # (N, T, S, S, 1)
    change = grey[:, -1] - grey[:, 0]                            # (N, S, S, 1)
    return torch.cat([hist, _grid_mean(mid, _GRID), _grid_mean(change.abs(), _GRID), _grid_mean(change, _GRID)], 1)


def _pca_input(frames: torch.Tensor) -> np.ndarray:
    x = frames[:, [0, -1]].float().div(255.0)                    # (N, 2, S, S, 3)
    n, t, s, _, c = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(n * t, c, s, s)
    small = F.adaptive_avg_pool2d(x, 8)                          # (N*2, 3, 8, 8)
    return small.reshape(n, -1).numpy()                          # (N, 384)


@dataclass
class Towers:
    """The fitted towers: ``features(name, frames_or_captions)`` -> ``[N, dim]`` float32."""

    stats_mean: torch.Tensor
    stats_std: torch.Tensor
    pca: object
    tfidf: object
    svd: object
    hashing: object
    dims: dict[str, int] = field(default_factory=dict)

    def image(self, name: str, frames: torch.Tensor) -> torch.Tensor:
        if name == "img:stats":
            return (pixel_stats(frames) - self.stats_mean) / self.stats_std
        if name == "img:pca":
            return torch.from_numpy(self.pca.transform(_pca_input(frames))).float()  # type: ignore[attr-defined]
        raise ValueError(f"unknown image tower {name!r}; known: {sorted(IMAGE_TOWERS)}")

    def text(self, name: str, captions: Sequence[str]) -> torch.Tensor:
        if name == "txt:tfidf":
            z = self.svd.transform(self.tfidf.transform(list(captions)))  # type: ignore[attr-defined]
            return torch.from_numpy(np.asarray(z)).float()
        if name == "txt:hash":
            bow = self.hashing.transform(list(captions))  # type: ignore[attr-defined]
            return torch.from_numpy(bow.toarray()).float()
        raise ValueError(f"unknown text tower {name!r}; known: {sorted(TEXT_TOWERS)}")


def fit_towers(frames: torch.Tensor, captions: Sequence[str], *, seed: int = 0) -> Towers:
    """Fit the towers that need fitting (z-score, PCA, TF-IDF + SVD) on the train split."""
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer

    raw = pixel_stats(frames)
    pca = PCA(n_components=min(_PCA_DIM, len(frames)), random_state=seed).fit(_pca_input(frames))
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(list(captions))
    svd = TruncatedSVD(n_components=_SVD_DIM, random_state=seed).fit(tfidf.transform(list(captions)))
    hashing = HashingVectorizer(n_features=_HASH_DIM, alternate_sign=False, norm="l2")
    towers = Towers(stats_mean=raw.mean(0), stats_std=raw.std(0).clamp_min(1e-3), pca=pca, tfidf=tfidf, svd=svd,
                    hashing=hashing)
    towers.dims = {"img:stats": raw.shape[1], "img:pca": int(pca.n_components_), "txt:tfidf": _SVD_DIM,
                   "txt:hash": _HASH_DIM}
    return towers


# --------------------------------------------------------------------------- SKB
def concept_tokens(attributes: dict) -> list[str]:
    """The attribute tokens of a synthetic item (``"shape=star"``, ``"bg=gradient"``, ...)."""
    toks = [f"bg={attributes['background']}"]
    for g in attributes["groups"]:
        toks += [f"shape={g['shape']}", f"colour={g['colour']}", f"count={g['count']}", f"size={g['size']}",
                 f"motion={g['motion']}"]
    return toks


def skb_vectors(attributes: Sequence[dict], *, dim: int, seed: int = 0) -> torch.Tensor:
    """SKB entries ``[N, dim]``: multi-hot attribute tokens x a fixed Gaussian projection (seeded), L2-normalised."""
    from genscom.data.synthetic import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, SIZES

    vocab = ([f"bg={b}" for b in BACKGROUNDS] + [f"shape={s}" for s in SHAPES] + [f"colour={c}" for c in COLOURS]
             + [f"count={n}" for n in (1, 2, 3)] + [f"size={s}" for s in SIZES] + [f"motion={m}" for m in MOTIONS])
    index = {t: i for i, t in enumerate(vocab)}
    hot = torch.zeros(len(attributes), len(vocab))
    for i, a in enumerate(attributes):
        for t in concept_tokens(a):
            hot[i, index[t]] = 1.0
    proj = torch.randn(len(vocab), dim, generator=torch.Generator().manual_seed(seed + 7919))
    return F.normalize(hot @ proj, dim=-1)


# --------------------------------------------------------------------------- users
@dataclass
class UserShard:
    """One user's training data (its own towers, labels as it holds them).

    Attributes:
        image, text: ``[n, d_img]``, ``[n, d_txt]`` features of its towers; ``text[i]`` is the (possibly wrong)
            label of image ``i``.
        targets: ``[n, skb_dim]`` SKB entry of each label.
        noisy: ``[n]`` bool, the injected wrong labels (for measuring detection only; training never reads it).
    """

    index: int
    image_tower: str
    text_tower: str
    group: str
    image: torch.Tensor
    text: torch.Tensor
    targets: torch.Tensor
    noisy: torch.Tensor

    @property
    def encoders(self) -> tuple[str, str]:
        return (self.image_tower, self.text_tower)


@dataclass
class HeldOut:
    """The server's held-out pairs, featurised by every tower: ``image[tower] [n, d]``, ``text[tower] [n, d]``."""

    image: dict[str, torch.Tensor]
    text: dict[str, torch.Tensor]
    skb: torch.Tensor


@dataclass
class GraphFedData:
    users: list[UserShard]
    test: HeldOut
    encoders: dict[str, int]  # tower -> feature dim (the adapter's input heads)
    towers: Towers | None = None  # the fitted towers (e.g. to count their parameters)


def dirichlet_shards(labels: np.ndarray, n_users: int, *, alpha: float, min_items: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Split item indices among users, class ``c`` by proportions ``~ Dirichlet(alpha)``; every user gets at least
    ``min_items`` (redrawn up to 200 times)."""
    classes = np.unique(labels)
    for _ in range(200):
        parts: list[list[int]] = [[] for _ in range(n_users)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(alpha * np.ones(n_users)))[:-1] * len(idx)).astype(int)
            for u, chunk in enumerate(np.split(idx, cuts)):
                parts[u].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_items:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not give each of {n_users} users >= {min_items} items out of {len(labels)} with "
                     f"alpha={alpha}; raise n_train or alpha, or lower the number of users")


def build_graph_fed_data(*, n_users: int, n_train: int, n_test: int, groups: Sequence[str],
                         noise: dict[str, float] | None = None, skb_dim: int = 64, alpha: float = 0.5,
                         min_items: int = 16, num_frames: int = 4, frame_size: int = 32,
                         seed: int = 0, image_towers: Sequence[str] = IMAGE_TOWERS,
                         text_towers: Sequence[str] = TEXT_TOWERS) -> GraphFedData:
    """Render the synthetic clips, fit the towers, build the SKB and each user's shard (see the module docstring).

    Args:
        n_users: users (clients); user ``k`` gets noise group ``groups[k % len(groups)]``.
        n_train: train items shared out among users (non-IID); n_test: held-out items (the server's).
        noise: group -> fraction of pairs swapped (default :data:`NOISE_FRACTIONS`).
        image_towers, text_towers: user ``k`` gets ``image_towers[k % len]`` and
            ``text_towers[(k // 2) % len]``; pass one of each for homogeneous users (same shards and labels).
    """
    from genscom.data.synthetic import SyntheticClips
    from genscom.federated.labels import inject_label_noise

    noise = dict(NOISE_FRACTIONS if noise is None else noise)
    bad = [g for g in groups if g not in noise]
    if not groups or bad:
        raise ValueError(f"groups must be non-empty names from {sorted(noise)}, got {list(groups)}")
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    unknown = [t for t in image_towers if t not in IMAGE_TOWERS] + [t for t in text_towers if t not in TEXT_TOWERS]
    if not image_towers or not text_towers or unknown:
        raise ValueError(f"towers must be non-empty names from {list(IMAGE_TOWERS)} / {list(TEXT_TOWERS)}, got "
                         f"{list(image_towers)} / {list(text_towers)}")
    kw = dict(seed=seed, num_frames=num_frames, size=frame_size, n_captions=1)
    train = SyntheticClips("train", n_items=n_train, **kw)
    test = SyntheticClips("test", n_items=n_test, **kw)
    tr_frames, te_frames = train.frames(), test.frames()
    tr_caps = [train.captions_of(i)[0] for i in range(len(train))]
    te_caps = [test.captions_of(i)[0] for i in range(len(test))]
    towers = fit_towers(tr_frames, tr_caps, seed=seed)
    tr_attr = [train.attributes_of(i) for i in range(len(train))]
    tr_skb = skb_vectors(tr_attr, dim=skb_dim, seed=seed)
    te_skb = skb_vectors([test.attributes_of(i) for i in range(len(test))], dim=skb_dim, seed=seed)

    colours = np.array([a["groups"][0]["colour"] for a in tr_attr])
    shards = dirichlet_shards(colours, n_users, alpha=alpha, min_items=min_items,
                              rng=np.random.default_rng([seed, 12]))
    users = []
    for k, idx in enumerate(shards):
        it, tt = image_towers[k % len(image_towers)], text_towers[(k // 2) % len(text_towers)]
        group = groups[k % len(groups)]
        lab = inject_label_noise(len(idx), noise[group], generator=torch.Generator().manual_seed(seed * 1000 + k))
        text_items = idx[lab.perm.numpy()]  # the item whose caption user k holds as the label of pair i
        users.append(UserShard(index=k, image_tower=it, text_tower=tt, group=group,
                               image=towers.image(it, tr_frames[torch.from_numpy(idx)]),
                               text=towers.text(tt, [tr_caps[j] for j in text_items]),
                               targets=tr_skb[torch.from_numpy(text_items)], noisy=lab.noisy.clone()))
    held = HeldOut(image={t: towers.image(t, te_frames) for t in IMAGE_TOWERS},
                   text={t: towers.text(t, te_caps) for t in TEXT_TOWERS}, skb=te_skb)
    return GraphFedData(users=users, test=held, encoders=dict(towers.dims), towers=towers)


__all__ = ["GraphFedData", "HeldOut", "IMAGE_TOWERS", "NOISE_FRACTIONS", "TEXT_TOWERS", "Towers", "UserShard",
           "build_graph_fed_data", "concept_tokens", "dirichlet_shards", "fit_towers", "pixel_stats", "skb_vectors"]
