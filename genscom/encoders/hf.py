"""Any CLIP or SigLIP model from the Hugging Face hub or a local folder, as an :class:`Encoder`.

Loads with ``AutoModel.from_pretrained`` + ``AutoTokenizer.from_pretrained``; the
image preprocessing (resize, centre crop, normalise) is done in torch from the
model's ``preprocessor_config.json`` (falling back to the vision config), so no
torchvision is needed. Works with ids such as ``openai/clip-vit-base-patch32`` or
``google/siglip-base-patch16-224`` for users with internet or a local copy, and
with ``local_files_only=True`` offline.

Text features are ``get_text_features`` (projected), image features
``get_image_features``; clips are encoded frame by frame and mean-pooled (meanP).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from genscom.encoders.base import Encoder, ImagePreprocess

SUPPORTED_MODEL_TYPES = ("clip", "siglip")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(out: Any) -> torch.Tensor:
    """transformers >= 5 returns a ModelOutput from ``get_*_features`` (projected ``pooler_output``)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot read features from {type(out).__name__}: no pooler_output")
    return pooled


def _hw(size: Any, default: int) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, dict):
        if size.get("height") and size.get("width"):
            return (int(size["height"]), int(size["width"]))
        if size.get("shortest_edge"):
            e = int(size["shortest_edge"])
            return (e, e)
    return (default, default)


def preprocess_from_config(processor: dict[str, Any] | None, *, image_size: int, model_type: str) -> ImagePreprocess:
    """Build the torch preprocessing from a ``preprocessor_config.json`` dict (or model defaults when ``None``).

    CLIP: short side -> ``size.shortest_edge``, centre crop ``crop_size``; SigLIP: resize to ``size``.
    """
    siglip = model_type.startswith("siglip")
    p = processor or {}
    mean = tuple(p.get("image_mean", (0.5,) * 3 if siglip else _CLIP_MEAN))
    std = tuple(p.get("image_std", (0.5,) * 3 if siglip else _CLIP_STD))
    do_crop = bool(p.get("do_center_crop", not siglip))
    interpolation = "bicubic" if int(p.get("resample", 3)) == 3 else "bilinear"
    if do_crop:
        crop = _hw(p.get("crop_size"), image_size)
        size = p.get("size", {"shortest_edge": image_size})
        short = int(size["shortest_edge"]) if isinstance(size, dict) and size.get("shortest_edge") else max(crop)
        return ImagePreprocess(size=crop, mean=mean, std=std, mode="shortest_edge_crop", shortest_edge=short,
                               interpolation=interpolation)
    return ImagePreprocess(size=_hw(p.get("size"), image_size), mean=mean, std=std, mode="resize",
                           interpolation=interpolation)


def _read_processor_config(name_or_path: str, *, local_files_only: bool, revision: str | None) -> dict[str, Any] | None:
    local = Path(name_or_path)
    if local.is_dir():
        from genscom.loading import read_json

        f = local / "preprocessor_config.json"
        if not f.is_file():
            return None
        data = read_json(f, expected="a preprocessor_config.json (JSON mapping)", max_bytes=2**20)
        return data if isinstance(data, dict) else None
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        cfg, _ = ImageProcessingMixin.get_image_processor_dict(name_or_path, local_files_only=local_files_only,
                                                               revision=revision)
    except OSError:
        return None
    return cfg


class HFClipEncoder(Encoder):
    """A CLIP/SigLIP dual encoder (``get_text_features`` / ``get_image_features``) as an Encoder.

    Args:
        model: a ``CLIPModel``/``SiglipModel`` (anything with those two methods and a ``config``).
        tokenizer: its tokenizer.
        preprocess: image preprocessing (see :func:`preprocess_from_config`).
        name: id or path, for result files.
        max_length: text tokens (CLIP: 77; SigLIP pads to 64 as trained).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, preprocess: ImagePreprocess, name: str,
                 max_length: int | None = None) -> None:
        cfg = model.config
        model_type = str(getattr(cfg, "model_type", "clip"))
        dim = getattr(cfg, "projection_dim", None) or cfg.text_config.hidden_size
        super().__init__(dim=int(dim), preprocess=preprocess, name=name)
        self.model = model
        self.tokenizer = tokenizer
        self.model_type = model_type
        self.pad_to_max = model_type.startswith("siglip")
        default_len = 64 if self.pad_to_max else int(cfg.text_config.max_position_embeddings)
        self.max_length = int(max_length or default_len)

    def forward_text(self, texts: list[str]) -> torch.Tensor:
        padding: Any = "max_length" if self.pad_to_max else True
        batch = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        kwargs = {"input_ids": batch["input_ids"].to(self.device)}
        if "attention_mask" in batch and not self.pad_to_max:
            kwargs["attention_mask"] = batch["attention_mask"].to(self.device)
        return _features(self.model.get_text_features(**kwargs))

    def forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))


def check_hf_folder(folder: str | os.PathLike[str]) -> str:
    """Check a local CLIP/SigLIP folder without loading it: ``config.json`` parses and names a supported
    ``model_type``, and every ``*.safetensors`` weights file has a sound header; return the model type.

    Raises:
        BadFileError: naming the file that is wrong and what was expected.
    """
    from genscom.errors import BadFileError
    from genscom.loading import check_safetensors, read_json

    folder = Path(folder)
    expected = f"a Hugging Face {'/'.join(SUPPORTED_MODEL_TYPES)} folder (config.json + model.safetensors)"
    cfg = read_json(folder / "config.json", expected=expected, fix="pass a CLIP/SigLIP folder written by "
                    "save_pretrained, or a profile name (see list_profiles())", max_bytes=2**20)
    model_type = str(cfg.get("model_type", "")) if isinstance(cfg, dict) else ""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise BadFileError(folder / "config.json", problem=f"a {model_type or 'untyped'!r} model; the hf profile loads "
                                                          f"dual encoders of type {', '.join(SUPPORTED_MODEL_TYPES)}",
                           expected=expected,
                           fix="pass a CLIP/SigLIP dual-encoder folder")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("*.bin")):
        raise BadFileError(folder, problem="holds no weights file", expected=expected,
                           fix="save the model with save_pretrained into this folder")
    for w in weights:
        check_safetensors(w, expected="CLIP/SigLIP weights (safetensors)", fix="re-save or re-download the model")
    return model_type


def load_hf_encoder(name_or_path: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, local_files_only: bool = False,
                    revision: str | None = None) -> HFClipEncoder:
    """Load a CLIP/SigLIP checkpoint (hub id or local folder) as an :class:`HFClipEncoder` in eval mode.

    Args:
        name_or_path: e.g. ``"openai/clip-vit-base-patch32"`` or a folder written by ``save_pretrained``
            (model + tokenizer, optionally ``preprocessor_config.json``).
        local_files_only: never contact the hub (only the local cache / folder).
        revision: hub revision (branch, tag or commit) for reproducibility.

    Raises:
        ValueError: the checkpoint is not a CLIP/SigLIP dual encoder.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from genscom.errors import BadFileError, GenscomError, first_line

    name = str(name_or_path)
    local = Path(name).is_dir()
    if local:
        check_hf_folder(name)
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=local_files_only, revision=revision)
        model_type = str(getattr(config, "model_type", ""))
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"{name!r} is a {model_type!r} model; the hf profile loads dual encoders of type "
                             f"{', '.join(SUPPORTED_MODEL_TYPES)} (e.g. openai/clip-vit-base-patch32)")
        model = AutoModel.from_pretrained(name, local_files_only=local_files_only, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only, revision=revision)
    except GenscomError:
        raise
    except Exception as exc:  # a local folder that transformers cannot read: name it, one line
        if not local:
            raise
        raise BadFileError(name, problem=f"transformers could not load it ({type(exc).__name__}: "
                                         f"{first_line(exc)})",
                           expected="a CLIP/SigLIP folder written by save_pretrained (model + tokenizer)",
                           fix="re-save or re-download the model") from None
    processor = _read_processor_config(name, local_files_only=local_files_only, revision=revision)
    preprocess = preprocess_from_config(processor, image_size=int(config.vision_config.image_size),
                                        model_type=model_type)
    enc = HFClipEncoder(model, tokenizer, preprocess=preprocess, name=name)
    return enc.to(device=device, dtype=dtype).eval()
