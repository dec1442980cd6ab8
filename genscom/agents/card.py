"""Agent cards: one YAML file describes one agent (its role, LLM, LoRA, prompt, heads, sizes, quantisation).

Example (``agents/smollm2-generating.yaml``)::

    name: smollm2-generating
    role: generating                 # understanding | generating
    perception: mini                 # encoder profile feeding the understanding side
    perception_dim: 384
    llm: smollm2-135m-instruct       # offline alias, a hub id, or a local folder
    quantization: none               # none | nf4 | int8
    lora: {r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj]}
    prompt: prompts/generating.md
    heads: [retrieval, caption, image-conditioning]
    embedding_dim: 256               # size of the understanding embedding sent on the channel
    text_dim: 384                    # retrieval head output (the gallery/text space)
    adapter: smollm2-agents        # trained weights: a folder, or a name on the adapter search path (null: fresh LoRA)
    partner: smollm2-understanding.yaml

Relative paths (``prompt``, ``adapter``, ``partner``) are resolved against the
card's folder first, then its parent (the repository root for ``agents/``).
Unknown keys and bad values raise ``ValueError`` naming the field (a
:class:`~genscom.errors.BadFileError` naming the file when read from one).

**Card search path.** Wherever a card is expected (:func:`load_card`, ``genscom.load_agent``,
``--card``), a bare name such as ``smollm2-generating`` (``.yaml`` optional) is looked up,
first match wins, in:

1. the folders passed in ``search``;
2. the folders in the ``GENSCOM_CARDS`` environment variable (``os.pathsep``-separated);
3. the shipped cards, :data:`SHIPPED_CARDS`: ``genscom/cards/`` (package data, with their role
   prompts in ``genscom/cards/prompts/``), found alike in a checkout, an editable install and a
   wheel. The repository's top-level ``agents/`` and ``prompts/`` hold the same files, for paths
   such as ``--card agents/smollm2-generating.yaml``.

Anything else is a path (relative to the working folder). :func:`list_cards` lists the names
on the search path from any working folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from genscom.utils import load_config

Role = Literal["understanding", "generating"]
Quantization = Literal["none", "nf4", "int8"]
HeadName = Literal["embedding", "retrieval", "caption", "image-conditioning", "attributes"]
DType = Literal["float32", "bfloat16", "float16"]

ROLE_HEADS: dict[str, tuple[str, ...]] = {
    "understanding": ("embedding",),
    "generating": ("retrieval", "caption", "image-conditioning", "attributes"),
}
# the heads a card without a `heads` field gets (``attributes`` needs ``attribute_classes``, so it is opt-in)
DEFAULT_HEADS: dict[str, tuple[str, ...]] = {
    "understanding": ("embedding",),
    "generating": ("retrieval", "caption", "image-conditioning"),
}


def _pos_int(name: str, v: Any, *, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"agent card field {name!r} must be an integer >= {minimum}, got {v!r}")


@dataclass
class LoraSpec:
    """LoRA settings of a card's ``lora`` field (PEFT ``LoraConfig`` subset)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0  # 0 keeps fine-tuning bit-exactly resumable without RNG bookkeeping
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        _pos_int("lora.r", self.r)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"agent card field 'lora.alpha' must be a positive number, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"agent card field 'lora.dropout' must be in [0, 1), got {self.dropout!r}")
        if (not isinstance(self.target_modules, list) or not self.target_modules
                or not all(isinstance(t, str) and t for t in self.target_modules)):
            raise ValueError("agent card field 'lora.target_modules' must be a non-empty list of module names "
                             f"(e.g. [q_proj, v_proj]), got {self.target_modules!r}")


@dataclass
class AgentCard:
    """A validated agent card. See the module docstring for the YAML form.

    Attributes:
        name: card name (lower-case, used in scheme names and adapter folders).
        role: ``"understanding"`` (content -> embedding) or ``"generating"`` (embedding -> task content).
        perception: encoder profile whose embeddings feed the understanding agent (``"mini"`` offline).
        perception_dim: size of one perception feature vector.
        llm: ``"smollm2-135m-instruct"`` (offline), a hub id or a local folder.
        dtype: dtype of the (unquantised) LLM weights.
        quantization: ``"none"``, ``"nf4"`` (bitsandbytes 4-bit, QLoRA) or ``"int8"``.
        quantize_embeddings: with ``nf4``, also quantise the (tied) token embedding.
        lora: :class:`LoraSpec`.
        adapter_name: name of this role's LoRA adapter inside a shared LLM (default: ``role``).
        prompt: path of the role prompt template (:mod:`genscom.agents.prompts`).
        heads: functional heads; allowed per role in :data:`ROLE_HEADS`.
        embedding_dim: size of the understanding embedding (sent on the channel).
        text_dim: output size of the retrieval head (the perception text space).
        n_soft_tokens: soft tokens made by the projector from each input vector.
        n_query_tokens: learned query tokens whose hidden states feed the heads.
        image_cond_dim: size of each image-conditioning vector (one per query token).
        attribute_classes: for the ``attributes`` head: ``{attribute: [class names]}`` of the first object group
            (e.g. ``{"shape": ["circle", ...], "colour": ["red", ...]}``); the head reads them from the received
            embedding, and fine-tuning trains it with cross-entropy on the data's labels.
        max_caption_tokens: generation length limit of the caption head.
        attribute_fusion: weight of the ``attributes`` head in caption decoding (shallow fusion over the class
            words of ``fusion_attributes``, :mod:`genscom.agents.decoding`); ``0`` decodes the LM alone.
        fusion_attributes: the attributes fused (each a key of ``attribute_classes``).
        adapter: folder of trained weights (PEFT adapter + heads) or ``None``.
        partner: the card of the other end (for schemes that need both), or ``None``.
        description: free text.
    """

    name: str
    role: Role
    llm: str
    prompt: str
    perception: str = "mini"
    perception_dim: int = 384
    dtype: DType = "float32"
    quantization: Quantization = "none"
    quantize_embeddings: bool = True
    lora: LoraSpec = field(default_factory=LoraSpec)
    adapter_name: str | None = None
    heads: list[str] = field(default_factory=list)
    embedding_dim: int = 256
    text_dim: int = 384
    n_soft_tokens: int = 4
    n_query_tokens: int = 4
    image_cond_dim: int = 64
    attribute_classes: dict[str, list[str]] = field(default_factory=dict)
    max_caption_tokens: int = 24
    attribute_fusion: float = 0.0
    fusion_attributes: list[str] = field(default_factory=lambda: ["shape", "colour"])
    adapter: str | None = None
    partner: str | None = None
    description: str = ""
    source: str | None = field(default=None, repr=False)  # the file it was read from (set by load_card)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"agent card field 'name' must be a non-empty string, got {self.name!r}")
        if self.role not in get_args(Role):
            raise ValueError(f"agent card field 'role' must be one of {list(get_args(Role))}, got {self.role!r}")
        if not isinstance(self.llm, str) or not self.llm.strip():
            raise ValueError("agent card field 'llm' must name an LLM: 'smollm2-135m-instruct' (offline), "
                             f"a hub id or a local folder; got {self.llm!r}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"agent card field 'prompt' must be the path of a role prompt, got {self.prompt!r}")
        if self.dtype not in get_args(DType):
            raise ValueError(f"agent card field 'dtype' must be one of {list(get_args(DType))}, got {self.dtype!r}")
        if self.quantization not in get_args(Quantization):
            raise ValueError(f"agent card field 'quantization' must be one of {list(get_args(Quantization))}, "
                             f"got {self.quantization!r}")
        if not isinstance(self.quantize_embeddings, bool):
            raise ValueError(f"agent card field 'quantize_embeddings' must be true or false, got {self.quantize_embeddings!r}")
        if isinstance(self.lora, dict):
            try:
                self.lora = LoraSpec(**self.lora)
            except TypeError as exc:
                known = [f.name for f in fields(LoraSpec)]
                raise ValueError(f"agent card field 'lora' has unknown keys ({exc}); known keys: {known}") from None
        elif not isinstance(self.lora, LoraSpec):
            raise ValueError(f"agent card field 'lora' must be a mapping (r, alpha, dropout, target_modules), got {self.lora!r}")
        if self.adapter_name is None:
            self.adapter_name = self.role
        if not isinstance(self.adapter_name, str) or not self.adapter_name.replace("-", "_").isidentifier():
            raise ValueError(f"agent card field 'adapter_name' must be an identifier-like name, got {self.adapter_name!r}")
        allowed = ROLE_HEADS[self.role]
        if not self.heads:
            self.heads = list(DEFAULT_HEADS[self.role])
        if not isinstance(self.heads, list) or any(h not in allowed for h in self.heads):
            raise ValueError(f"agent card field 'heads' for role {self.role!r} must be a list drawn from {list(allowed)}, "
                             f"got {self.heads!r}")
        self._check_attribute_classes()
        for name in ("perception_dim", "embedding_dim", "text_dim", "n_soft_tokens", "n_query_tokens",
                     "image_cond_dim", "max_caption_tokens"):
            _pos_int(name, getattr(self, name))
        for name in ("adapter", "partner", "source"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ValueError(f"agent card field {name!r} must be a path string or null, got {v!r}")

    def _check_attribute_classes(self) -> None:
        classes = self.attribute_classes
        if not isinstance(classes, dict) or not all(
                isinstance(k, str) and k and isinstance(v, list) and len(v) >= 2 and len(set(map(str, v))) == len(v)
                for k, v in classes.items()):
            raise ValueError("agent card field 'attribute_classes' must map attribute names to lists of at least two "
                             f"distinct class names (e.g. {{shape: [circle, square]}}), got {classes!r}")
        self.attribute_classes = {k: [str(c) for c in v] for k, v in classes.items()}
        if ("attributes" in self.heads) != bool(self.attribute_classes):
            raise ValueError("agent card: the 'attributes' head and the 'attribute_classes' field go together; "
                             f"got heads={self.heads} and attribute_classes={self.attribute_classes or '{}'}")
        w = check_fusion_weight(self.attribute_fusion, what="agent card field 'attribute_fusion'") or 0.0
        self.attribute_fusion = w
        if not isinstance(self.fusion_attributes, list) or not all(isinstance(a, str) for a in self.fusion_attributes):
            raise ValueError(f"agent card field 'fusion_attributes' must be a list of attribute names, "
                             f"got {self.fusion_attributes!r}")
        if w > 0:
            missing = [a for a in self.fusion_attributes if a not in self.attribute_classes]
            if "caption" not in self.heads or not self.fusion_attributes or missing:
                raise ValueError("agent card: attribute_fusion > 0 needs the 'caption' and 'attributes' heads and "
                                 "fusion_attributes drawn from attribute_classes "
                                 f"({sorted(self.attribute_classes)}); got heads={self.heads}, "
                                 f"fusion_attributes={self.fusion_attributes}; set attribute_fusion: 0 to turn it off")

    # -- paths -----------------------------------------------------------------
    def resolve(self, rel: str) -> Path:
        """Resolve a path of this card: absolute, else against the card's folder, then its parent."""
        p = Path(rel).expanduser()
        if p.is_absolute():
            return p
        if self.source is not None:
            base = Path(self.source).resolve().parent
            for cand in (base / p, base.parent / p):
                if cand.exists():
                    return cand
            return base.parent / p
        return p

    def prompt_path(self) -> Path:
        path = self.resolve(self.prompt)
        if not path.is_file():
            raise ValueError(f"agent card {self.name!r} field 'prompt': {str(path)!r} does not exist; "
                             "point it at a prompt file (e.g. prompts/generating.md)")
        return path

    def adapter_path(self) -> Path | None:
        """The trained weights folder: a path (as :meth:`resolve`), else a name on the adapter search
        path (:func:`genscom.assets.find_adapter`: ``$GENSCOM_ADAPTERS``, then the shipped adapters)."""
        if self.adapter is None:
            return None
        path = self.resolve(self.adapter)
        if path.is_dir():
            return path
        from genscom.assets import find_adapter

        return find_adapter(self.adapter, train_command="genscom finetune agents")

    def partner_card(self) -> "AgentCard":
        if self.partner is None:
            raise ValueError(f"agent card {self.name!r} has no 'partner' field; add the other end's card "
                             "(e.g. partner: smollm2-understanding.yaml)")
        return load_card(self.resolve(self.partner))

    def to_dict(self, *, portable: bool = False) -> dict[str, Any]:
        """The card's fields. ``portable=True`` (what an adapter folder records): a prompt that is one of the
        shipped prompts (same name, same bytes) is written as ``prompts/<file>``, which resolves on any machine,
        not as this machine's absolute path; an absolute ``adapter`` path as its folder name."""
        d = asdict(self)
        d.pop("source")
        if portable:
            if self.adapter is not None and Path(self.adapter).is_absolute():
                d["adapter"] = Path(self.adapter).name
            path, shipped = self.resolve(self.prompt), SHIPPED_CARDS / "prompts" / Path(self.prompt).name
            if path.is_file() and shipped.is_file() and path.read_bytes() == shipped.read_bytes():
                d["prompt"] = f"prompts/{shipped.name}"
        return d


def check_fusion_weight(value: Any, *, what: str = "fusion", none_ok: bool = False) -> float | None:
    """An attribute-fusion weight (:mod:`genscom.agents.decoding`) as ``float``: a number in [0, 100], 0 for the
    LM alone; ``None`` passes through when ``none_ok`` (the card's weight). ``ValueError`` names ``what``."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError(f"{what} must be a number in [0, 100] (0: the LM alone)"
                         + (" or None (the card's)" if none_ok else "") + f", got {value!r}")
    return float(value)


def load_card(source: str | os.PathLike[str] | dict[str, Any], **overrides: Any) -> AgentCard:
    """Read and validate a card (a YAML/JSON path, a name on the card search path, or a dict);
    ``overrides`` replace fields by name.

    Raises ``ValueError`` naming any unknown or invalid field (a ``BadFileError`` naming the file
    for files), ``FileNotFoundError`` for a missing file or unknown name.
    """
    if not isinstance(source, dict):
        source = find_card(source)
    card = load_config(AgentCard, source, **overrides)
    if not isinstance(source, dict):
        card.source = str(Path(source).resolve())
    return card


SHIPPED_CARDS: Path = Path(__file__).resolve().parents[1] / "cards"
"""The cards shipped as package data (``genscom/cards/*.yaml``; prompts in ``genscom/cards/prompts/``)."""
ENV_CARDS = "GENSCOM_CARDS"


def card_search_path(search: Iterable[str | os.PathLike[str]] | None = None) -> list[Path]:
    """The folders searched for cards by name, in order (see the module doc)."""
    env = os.environ.get(ENV_CARDS, "")
    folders = [Path(p).expanduser() for p in (search or ())]
    folders += [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    folders.append(SHIPPED_CARDS)
    return folders


def list_cards(search: Iterable[str | os.PathLike[str]] | None = None) -> list[str]:
    """Sorted names of the cards (``<name>.yaml``) on the card search path, from any working folder.

    Example:
        >>> "smollm2-generating" in list_cards()  # in a checkout  # doctest: +SKIP
        True
    """
    names: set[str] = set()
    for folder in card_search_path(search):
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml") if p.is_file())
    return sorted(names)


def find_card(name_or_path: str | os.PathLike[str], *,
              search: Iterable[str | os.PathLike[str]] | None = None) -> Path:
    """An existing card file: ``name_or_path`` itself if it is a file, else a name on the card search path.

    Raises:
        FileNotFoundError: neither; the message lists the folders searched and the names found.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"card must be a path or a card name, got {type(name_or_path).__name__}")
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    name = str(name_or_path)
    if name and "/" not in name and "\\" not in name and name not in (".", ".."):
        stem = name.removesuffix(".yaml")
        for folder in card_search_path(search):
            if (folder / f"{stem}.yaml").is_file():
                return folder / f"{stem}.yaml"
    from genscom.loading import MissingFileError

    searched = ", ".join(str(f) for f in card_search_path(search)) or "(none)"
    # the fix first: the message is one line of at most 600 characters, and the lists after it grow with the cards;
    # the user's own cards (search folders, $GENSCOM_CARDS) come before the shipped ones, which are documented
    names = list_cards(search)
    shipped = {p.stem for p in SHIPPED_CARDS.glob("*.yaml")} if SHIPPED_CARDS.is_dir() else set()
    known = [n for n in names if n not in shipped] + [n for n in names if n in shipped]
    raise MissingFileError(f"agent card {name!r} is neither a file nor a name on the card search path; pass a card "
                           f"file, or add its folder to ${ENV_CARDS}. Searched: {searched}. "
                           f"Known names: {', '.join(known)}")
