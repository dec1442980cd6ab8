"""LLM agents: the understanding agent (content -> embedding) and the generating agent (embedding -> task content).

Both run the same recipe around a shared, frozen LLM with one LoRA adapter per role::

    [role prompt(sensing, task)] [soft tokens = projector(input)] [learned query tokens] [cue] [caption ...]
                                                                    |                         |
                                                 heads(mean of query hidden states)     LM head (caption)

* understanding: input = perception features ``[B, d_p]`` or ``[B, n, d_p]``
  (the encoder's clip/frame embeddings); head ``embedding`` -> ``[B, embedding_dim]``
  (L2-normalised), the compact understanding embedding sent on the channel.
* generating: input = the received embedding ``[B, embedding_dim]``; heads
  ``retrieval`` -> ``[B, text_dim]`` (L2-normalised, in the encoder's text space),
  ``image-conditioning`` -> ``[B, n_query_tokens, image_cond_dim]``, ``caption``
  (greedy text generation after the cue ``"Caption:"``; teacher-forced LM loss in training) and, when the
  card asks for it, ``attributes`` (:class:`~genscom.agents.heads.AttributeHead`: the first object group's
  attributes read from the received embedding itself, without the LLM; :meth:`Agent.read_attributes`).

The heads read the query tokens' last hidden states (layer-normed) plus a zero-initialised
linear skip of the (layer-normed, item-averaged) input: a residual path that
keeps the heads' inputs item-dependent while the LoRA adapters learn to route
the soft tokens through the LLM (without it, joint training from scratch
collapsed to near-constant embeddings). Captions do not use the skip: they are
decoded by the LLM from the soft prefix.

The role prompt is rendered per call with the sensed SNR and channel type and
the task requirement, so the LLM conditions on them. One call uses one sensing;
callers with per-item SNRs group items (see :mod:`genscom.schemes.agent`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genscom.agents.backbone import SharedLLM
from genscom.agents.card import AgentCard, load_card
from genscom.agents.heads import AttributeHead, ImageConditioningHead, SoftPromptProjector, VectorHead
from genscom.agents.llm import PEFT_CONFIG, base_model_of, same_llm
from genscom.agents.prompts import ChannelSensing, TaskRequirement, load_prompt, render_prompt
from genscom.errors import BadFileError, first_line
from genscom.loading import MissingFileError, check_safetensors, load_safetensors, read_json
from genscom.utils import give_default_permissions

CAPTION_CUE = "\nCaption:"
AGENT_MODULES_FILE = "agent_modules.safetensors"
AGENT_META_FILE = "agent.json"

logger = logging.getLogger(__name__)
_DEFAULT_TASK = {"understanding": "understanding", "generating": "retrieval"}


@dataclass
class AgentOutput:
    """What one agent forward returns (fields ``None`` when the card has no such head).

    Attributes:
        embedding: ``[B, embedding_dim]`` float32, L2-normalised (understanding).
        retrieval: ``[B, text_dim]`` float32, L2-normalised (generating).
        image_conditioning: ``[B, n_query_tokens, image_cond_dim]`` float32 (generating).
        caption_loss: scalar mean token cross-entropy when captions were given (generating).
        query_hidden: ``[B, n_query_tokens, hidden]`` float32 hidden states of the query tokens.
        attributes: ``{attribute: [B, n_classes]}`` logits of the ``attributes`` head (generating).
    """

    embedding: torch.Tensor | None = None
    retrieval: torch.Tensor | None = None
    image_conditioning: torch.Tensor | None = None
    caption_loss: torch.Tensor | None = None
    query_hidden: torch.Tensor | None = None
    attributes: dict[str, torch.Tensor] | None = None


def _seeded(seed: int, fn: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


class Agent(nn.Module):
    """One role of an LLM agent: trainable projector, query tokens and heads around a :class:`SharedLLM`.

    Build with :meth:`from_card`. The LLM is shared, not a submodule: ``agent.parameters()``
    yields only the agent's own modules; the role's LoRA parameters are in
    :meth:`lora_parameters`.
    """

    def __init__(self, card: AgentCard, llm: SharedLLM, *, template: str, seed: int = 0) -> None:
        super().__init__()
        self.card = card
        self.role = card.role
        self.adapter_name: str = card.adapter_name  # type: ignore[assignment]
        self.template = template
        self._llm = [llm]  # a list: keep the shared LLM out of this module's parameters/state_dict
        h = llm.hidden_size
        d_in = card.perception_dim if card.role == "understanding" else card.embedding_dim
        self.d_in = d_in
        self._fusion_ids: dict[str, list[list[int]]] | None = None  # class-word tokens, built on first fusion

        def build() -> None:
            self.projector = SoftPromptProjector(d_in, h, card.n_soft_tokens, token_rms=llm.token_rms)
            self.queries = nn.Parameter(torch.randn(card.n_query_tokens, h) * llm.token_rms)
            # zero-initialised linear skip from the (normalised) input to the query states the heads read: the
            # query tokens of a frozen LLM attend mostly to the prompt, so without it the heads see near-constant
            # states and joint training collapses (measured: understanding embeddings at cosine ~1.0 across items)
            self.skip = nn.Linear(d_in, h)
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
            heads: dict[str, nn.Module] = {}
            if "embedding" in card.heads:
                heads["embedding"] = VectorHead(h, card.embedding_dim)
            if "retrieval" in card.heads:
                heads["retrieval"] = VectorHead(h, card.text_dim)
            if "image-conditioning" in card.heads:
                heads["image_conditioning"] = ImageConditioningHead(h, card.image_cond_dim)
            if "attributes" in card.heads:
                heads["attributes"] = AttributeHead(d_in, {k: len(v) for k, v in card.attribute_classes.items()})
            self.heads = nn.ModuleDict(heads)

        _seeded(seed, build)
        self.to(llm.device)
        tok = llm.tokenizer
        self._cue_ids = torch.tensor(tok(CAPTION_CUE, add_special_tokens=False)["input_ids"], dtype=torch.long)
        if self._cue_ids.numel() == 0:
            raise ValueError("the tokenizer turns the caption cue into no tokens; use a tokenizer that covers ASCII")

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_card(cls, card: AgentCard | str | os.PathLike[str], *, llm: SharedLLM | None = None,
                  device: str | torch.device = "cpu", load_adapter: bool = True, seed: int = 0,
                  cache_dir: str | os.PathLike[str] | None = None) -> "Agent":
        """Build the agent a card describes.

        Args:
            card: an :class:`AgentCard` or the path of its YAML.
            llm: an already-loaded :class:`SharedLLM` to share (multi-adapter); it must
                come from the same ``llm`` and ``quantization``. ``None`` loads one.
            load_adapter: load the card's ``adapter`` folder if it names one.
            seed: seeds the fresh projector/query/head initialisation (a forked RNG).
        """
        card = card if isinstance(card, AgentCard) else load_card(card)
        if llm is None:
            llm = SharedLLM.load(card.llm, dtype=card.dtype, quantization=card.quantization,
                                 quantize_embeddings=card.quantize_embeddings, device=device, cache_dir=cache_dir)
        elif (llm.spec and llm.spec != card.llm) or llm.quantization != card.quantization:
            raise ValueError(f"card {card.name!r} asks for llm={card.llm!r}, quantization={card.quantization!r} but the "
                             f"shared LLM is llm={llm.spec!r}, quantization={llm.quantization!r}")
        template = load_prompt(card.prompt_path())
        llm.add_adapter(card.adapter_name, card.lora, seed=seed)  # type: ignore[arg-type]
        agent = cls(card, llm, template=template, seed=seed)
        path = card.adapter_path()
        if load_adapter and path is not None:
            if not path.is_dir():
                raise ValueError(f"agent card {card.name!r} field 'adapter': {str(path)!r} does not exist; train it with "
                                 "`genscom finetune agents` or set adapter: null")
            agent.load_pretrained(path)
        return agent

    # -- access ------------------------------------------------------------------
    @property
    def llm(self) -> SharedLLM:
        return self._llm[0]

    def lora_parameters(self) -> list[nn.Parameter]:
        """This role's LoRA parameters inside the shared LLM."""
        key = f".{self.adapter_name}."
        return [p for n, p in self.llm.peft.named_parameters() if "lora_" in n and key in n]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The agent's own modules plus its LoRA adapter (what fine-tuning updates)."""
        return list(self.parameters()) + self.lora_parameters()

    def prompt(self, sensing: ChannelSensing, task: TaskRequirement | None = None) -> str:
        """The role prompt rendered for ``sensing`` and ``task`` (default task from the role)."""
        return render_prompt(self.template, sensing=sensing, task=task or TaskRequirement(_DEFAULT_TASK[self.role]))

    # -- compute -----------------------------------------------------------------
    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"inputs must be a float tensor [B, {self.d_in}] or [B, n, {self.d_in}], got {type(x).__name__}"
                            + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
        if x.dim() == 2:
            x = x[:, None, :]
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"inputs must be [B, {self.d_in}] or [B, n, {self.d_in}] for the {self.role} agent "
                             f"{self.card.name!r}, got shape {tuple(x.shape)}")
        return x.to(device=self.queries.device, dtype=torch.float32)

    def _prefix(self, x: torch.Tensor, sensing: ChannelSensing, task: TaskRequirement | None,
                with_cue: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The rendered prompt's embeddings ``[1, P, hidden]`` (shared by the batch), the per-item part
        ``[B, L, hidden]`` (soft tokens, query tokens, optional cue) and the index of the first query token
        in the whole sequence."""
        llm = self.llm
        llm.activate(self.adapter_name)
        b = x.shape[0]
        ids = llm.tokenizer(self.prompt(sensing, task), add_special_tokens=False, return_tensors="pt")["input_ids"]
        prompt = llm.embed_ids(ids)
        soft = self.projector(x).to(llm.compute_dtype)  # [B, n * S, hidden]
        parts = [soft, self.queries.to(llm.compute_dtype)[None].expand(b, -1, -1)]
        if with_cue:
            parts.append(llm.embed_ids(self._cue_ids[None]).expand(b, -1, -1))
        return prompt, torch.cat(parts, dim=1), prompt.shape[1] + soft.shape[1]

    def forward(self, inputs: torch.Tensor, *, sensing: ChannelSensing, task: TaskRequirement | None = None,
                captions: list[str] | None = None) -> AgentOutput:
        """Run the role on ``inputs`` (see the module docstring); ``captions`` (B strings) adds the caption LM loss."""
        x = self._inputs(inputs)
        b = x.shape[0]
        want_caption = captions is not None
        if want_caption and "caption" not in self.card.heads:
            raise ValueError(f"agent {self.card.name!r} has no caption head (heads={self.card.heads}); drop captions=")
        if want_caption and (not isinstance(captions, list) or len(captions) != b):
            raise ValueError(f"captions must be a list of {b} strings (one per item), got "
                             f"{type(captions).__name__} of length {len(captions) if isinstance(captions, list) else '?'}")
        prompt, prefix, q0 = self._prefix(x, sensing, task, with_cue=want_caption)
        llm = self.llm
        mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        n_cap = 0
        if want_caption:
            tok = llm.tokenizer
            enc = [tok(" " + c.strip(), add_special_tokens=False)["input_ids"][: self.card.max_caption_tokens - 1]
                   + [tok.eos_token_id] for c in captions]  # type: ignore[union-attr]
            n_cap = max(len(e) for e in enc)
            cap_ids = torch.full((b, n_cap), tok.pad_token_id, dtype=torch.long)
            cap_mask = torch.zeros((b, n_cap), dtype=torch.long)
            for i, e in enumerate(enc):
                cap_ids[i, : len(e)] = torch.tensor(e)
                cap_mask[i, : len(e)] = 1
            prefix = torch.cat([prefix, llm.embed_ids(cap_ids)], dim=1)
            mask = torch.cat([mask, cap_mask.to(mask.device)], dim=1)
        hidden = llm.hidden_states(prefix, mask, shared_prefix=prompt)  # [B, P + L, hidden]
        qh = hidden[:, q0: q0 + self.card.n_query_tokens].float()  # [B, Q, hidden]
        skip = self.skip(self.projector.norm(x).mean(dim=1))  # [B, hidden], added after the heads' input norm
        out = AgentOutput(query_hidden=qh)
        if "embedding" in self.heads:
            out.embedding = self.heads["embedding"](qh, skip=skip)
        if "retrieval" in self.heads:
            out.retrieval = self.heads["retrieval"](qh, skip=skip)
        if "image_conditioning" in self.heads:
            out.image_conditioning = self.heads["image_conditioning"](qh, skip=skip)
        if "attributes" in self.heads:
            out.attributes = self.heads["attributes"](x)
        if want_caption:
            start = hidden.shape[1] - n_cap  # position of the first caption token
            logits = llm.logits(hidden[:, start - 1: start - 1 + n_cap])  # predicts caption tokens
            targets = cap_ids.to(logits.device).masked_fill(cap_mask.to(logits.device) == 0, -100)
            out.caption_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return out

    def understand(self, features: torch.Tensor, *, sensing: ChannelSensing,
                   task: TaskRequirement | None = None) -> torch.Tensor:
        """Understanding role: perception features -> ``[B, embedding_dim]`` L2-normalised embedding."""
        if self.role != "understanding":
            raise ValueError(f"understand() needs an understanding agent; {self.card.name!r} is {self.role!r}")
        return self(features, sensing=sensing, task=task).embedding  # type: ignore[return-value]

    @torch.no_grad()
    def read_attributes(self, received: torch.Tensor) -> dict[str, list[str]]:
        """``attributes`` head: the most likely class of each attribute of the first object group, read from the
        received embeddings ``[B, embedding_dim]`` without running the LLM -> ``{attribute: B class names}``."""
        if "attributes" not in self.heads:
            raise ValueError(f"agent {self.card.name!r} has no attributes head (heads={self.card.heads}); use a card "
                             "with `attributes` in heads and its attribute_classes")
        logits = self.heads["attributes"](self._inputs(received))
        return {k: [self.card.attribute_classes[k][int(i)] for i in v.argmax(-1).tolist()] for k, v in logits.items()}

    def _fusion(self, x: torch.Tensor, weight: float) -> Any:
        """The :class:`~genscom.agents.decoding.AttributeFusion` of the ``attributes`` head read from ``x``
        ``[B, n, d_in]`` (class words tokenised once per agent)."""
        from genscom.agents.decoding import AttributeFusion, class_token_ids

        if "attributes" not in self.heads:
            raise ValueError(f"agent {self.card.name!r} has no attributes head (heads={self.card.heads}); attribute "
                             "fusion needs one: use fusion=0")
        attrs = self.card.fusion_attributes
        missing = [a for a in attrs if a not in self.card.attribute_classes]
        if missing:
            raise ValueError(f"agent {self.card.name!r}: fusion_attributes {missing} are not in its attribute_classes "
                             f"({sorted(self.card.attribute_classes)}); fix the card's fusion_attributes or use fusion=0")
        if self._fusion_ids is None:
            self._fusion_ids = {a: class_token_ids(self.llm.tokenizer, a, self.card.attribute_classes[a])
                                for a in attrs}
        logits = self.heads["attributes"](x)
        return AttributeFusion(self._fusion_ids, {a: logits[a].float().log_softmax(-1) for a in attrs}, weight)

    @torch.no_grad()
    def generate_captions(self, received: torch.Tensor, *, sensing: ChannelSensing,
                          task: TaskRequirement | None = None, max_new_tokens: int | None = None,
                          fusion: float | None = None) -> list[str]:
        """Caption head: greedy decoding after the role prompt, the soft prefix and the cue -> ``B`` strings.

        ``fusion``: weight of the ``attributes`` head in the decoding (:mod:`genscom.agents.decoding`);
        ``None`` takes the card's ``attribute_fusion``, ``0`` decodes the LM alone.
        """
        if "caption" not in self.card.heads:
            raise ValueError(f"agent {self.card.name!r} has no caption head (heads={self.card.heads})")
        from transformers import LogitsProcessorList

        x = self._inputs(received)
        weight = self.card.attribute_fusion if fusion is None else fusion
        processors = [self._fusion(x, weight)] if weight else []
        prompt, rest, _ = self._prefix(x, sensing, task or TaskRequirement("caption"), with_cue=True)
        prefix = torch.cat([prompt.expand(rest.shape[0], -1, -1), rest], dim=1)
        llm = self.llm
        tok = llm.tokenizer
        out = llm.hf.generate(inputs_embeds=prefix, attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long,
                                                                             device=prefix.device),
                              max_new_tokens=max_new_tokens or self.card.max_caption_tokens, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                              logits_processor=LogitsProcessorList(processors))
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]

    # -- persistence ---------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike[str], *, dtype: torch.dtype | None = None) -> Path:
        """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT) and the agent's modules, atomically.

        Args:
            folder: the adapter folder (replaced as a whole if it exists; its ``*.md`` files, e.g. a README, are kept).
            dtype: store floating tensors in this dtype (e.g. ``torch.float16``: half the size; loading
                casts back to the parameters' dtype). ``None`` keeps the parameters' own dtype (exact).
        """
        from safetensors.torch import load_file, save_file

        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype such as torch.float16 or None, got {dtype!r}")

        def cast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                    for k, v in state.items()}

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            peft_tmp = tmp / "_peft"
            try:
                self.llm.peft.save_pretrained(str(peft_tmp), selected_adapters=[self.adapter_name])
            except NotImplementedError:  # nf4 with a 4-bit embedding: bitsandbytes cannot state_dict() it
                shutil.rmtree(peft_tmp, ignore_errors=True)
                peft_tmp.mkdir()
                save_file({k: v.detach().cpu().contiguous() for k, v in
                           self.llm.adapter_state_dict(self.adapter_name).items()},
                          str(peft_tmp / "adapter_model.safetensors"))
                self.llm.peft.peft_config[self.adapter_name].save_pretrained(str(peft_tmp))
            src = peft_tmp / self.adapter_name if (peft_tmp / self.adapter_name).is_dir() else peft_tmp
            for f in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.move(str(src / f), str(tmp / f))
            shutil.rmtree(peft_tmp)
            # the base model as the card names it (offline alias, hub id or folder), not peft's value: a machine's
            # cache path, or null for QLoRA; resolve it with genscom.agents.llm.resolve_base_model
            peft_cfg = read_json(tmp / "adapter_config.json", expected="peft's adapter_config.json")
            peft_cfg["base_model_name_or_path"] = self.card.llm
            (tmp / "adapter_config.json").write_text(json.dumps(peft_cfg, indent=2, sort_keys=True) + "\n",
                                                     encoding="utf-8")
            if dtype is not None:
                lora = tmp / "adapter_model.safetensors"
                save_file(cast(load_file(str(lora))), str(lora))
            save_file(cast(self.state_dict()), str(tmp / AGENT_MODULES_FILE))
            give_default_permissions(tmp)  # mkdtemp makes 0700
            meta = {"role": self.role, "adapter_name": self.adapter_name, "card": self.card.to_dict(portable=True),
                    "dtype": str(dtype).removeprefix("torch.") if dtype is not None else "as trained"}
            (tmp / AGENT_META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            if folder.exists():
                for doc in folder.glob("*.md"):  # a README (e.g. of shipped adapters) stays with the folder
                    if doc.is_file() and not (tmp / doc.name).exists():
                        shutil.copy2(doc, tmp / doc.name)
                old = folder.with_name(f".{folder.name}.old{os.getpid()}")
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    def load_pretrained(self, folder: str | os.PathLike[str], *, new_heads: bool = False) -> None:
        """Load weights written by :meth:`save_pretrained` (role and shapes must match).

        ``new_heads=True`` (a warm start, e.g. fine-tuning's ``init_from``): heads this card adds to the card
        recorded in the folder's ``agent.json`` keep their fresh initialisation (logged); everything else must
        fit. A folder whose ``attributes`` head was trained on other ``attribute_classes`` does not load."""
        folder = Path(folder)
        saved_card = check_agent_folder(folder, role=self.role).get("card") or {}
        saved_classes = saved_card.get("attribute_classes") or {}
        if "attributes" in self.heads and saved_classes and saved_classes != self.card.attribute_classes:
            raise BadFileError(folder / AGENT_META_FILE, problem=f"its attributes head was trained on classes "
                               f"{saved_classes}, card {self.card.name!r} has {self.card.attribute_classes}",
                               expected="the same attribute_classes, in the same order", fix=_ADAPTER_FIX)
        added = {h.replace("-", "_") for h in self.card.heads} - \
            {h.replace("-", "_") for h in saved_card.get("heads", self.card.heads)}  # heads the card adds
        base = base_model_of(folder)
        if base is not None and not same_llm(base, self.card.llm):
            warnings.warn(f"{str(folder / PEFT_CONFIG)!r} records base model {base!r}, but card {self.card.name!r} "
                          f"loads llm {self.card.llm!r}: the LoRA weights were trained on another model",
                          UserWarning, stacklevel=2)
        path = folder / AGENT_MODULES_FILE
        state = load_safetensors(path, device=str(self.queries.device), expected="the agent's modules (safetensors "
                                 "written by Agent.save_pretrained)", fix=_ADAPTER_FIX)
        try:
            missing, unexpected = self.load_state_dict(state, strict=not (new_heads and added))
            fresh = [k for k in missing if not (k.startswith("heads.") and k.split(".")[1] in added)]
            if fresh or unexpected:
                raise RuntimeError(f"missing {fresh[:3]}, unexpected {unexpected[:3]}")
            if added:
                logger.info("%s: head(s) %s are new to %s and start fresh", self.card.name, sorted(added), folder)
        except RuntimeError as exc:
            raise BadFileError(path, problem=f"does not fit agent {self.card.name!r} (sizes or names differ: "
                                             f"{first_line(exc, limit=200)})",
                               expected="weights trained for this card", fix=_ADAPTER_FIX) from None
        self.llm.load_adapter(self.adapter_name, folder)


_ADAPTER_FIX = "train the adapters with `genscom finetune agents`, or point the card's `adapter` at another folder"


def check_agent_folder(folder: str | os.PathLike[str], *, role: str | None = None) -> dict[str, Any]:
    """Check an agent adapter folder cheaply (no model needed): ``agent.json`` parses (and names ``role``),
    and both safetensors files have sound headers. Returns the parsed ``agent.json``.

    Raises:
        FileNotFoundError: the folder or a file is missing.
        BadFileError: a file is unreadable or for another role (naming it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{str(folder)!r}: no such adapter folder; expected {AGENT_META_FILE}, "
                               f"{AGENT_MODULES_FILE} and adapter_model.safetensors. Fix: {_ADAPTER_FIX}")
    meta_path = folder / AGENT_META_FILE
    meta = read_json(meta_path, expected="an agent adapter's agent.json (JSON mapping)", fix=_ADAPTER_FIX,
                     max_bytes=2**20)
    if not isinstance(meta, dict) or meta.get("role") not in ("understanding", "generating"):
        raise BadFileError(meta_path, problem="names no agent role", expected='{"role": "understanding" or '
                           '"generating", ...} as written by Agent.save_pretrained', fix=_ADAPTER_FIX)
    if role is not None and meta["role"] != role:
        raise BadFileError(meta_path, problem=f"the adapter was trained for role {meta['role']!r}, not {role!r}",
                           expected=f"a {role} agent's adapter", fix="pair each card with its own adapter folder")
    for name in (AGENT_MODULES_FILE, "adapter_model.safetensors"):
        check_safetensors(folder / name, expected=f"{name} written by Agent.save_pretrained", fix=_ADAPTER_FIX)
    base_model_of(folder)  # adapter_config.json parses, its base model is a string or null
    return meta


def load_agent_pair(card: AgentCard | str | os.PathLike[str], *, device: str | torch.device = "cpu",
                    load_adapter: bool = True, seed: int = 0,
                    cache_dir: str | os.PathLike[str] | None = None) -> tuple[Agent, Agent]:
    """``(understanding, generating)`` agents sharing ONE LLM (two LoRA adapters), from either end's card.

    The given card's ``partner`` names the other end. Both cards must name the
    same ``llm`` and ``quantization``, and ``embedding_dim`` must agree.
    """
    first = card if isinstance(card, AgentCard) else load_card(card)
    second = first.partner_card()
    u_card, g_card = (first, second) if first.role == "understanding" else (second, first)
    if u_card.role != "understanding" or g_card.role != "generating":
        raise ValueError(f"cards {first.name!r} and its partner {second.name!r} must be one understanding and one "
                         f"generating agent, got roles {first.role!r} and {second.role!r}")
    if u_card.embedding_dim != g_card.embedding_dim:
        raise ValueError(f"embedding_dim differs between {u_card.name!r} ({u_card.embedding_dim}) and "
                         f"{g_card.name!r} ({g_card.embedding_dim}); the generating agent reads what the other sends")
    u = Agent.from_card(u_card, device=device, load_adapter=load_adapter, seed=seed, cache_dir=cache_dir)
    g = Agent.from_card(g_card, llm=u.llm, device=device, load_adapter=load_adapter, seed=seed + 1)
    return u, g
