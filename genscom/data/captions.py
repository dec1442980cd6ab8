"""Image-caption folders (Flickr30K / COCO style) as one-frame clip-caption datasets.

Layout::

    root/
      images/...            the pictures (any Pillow format; also flickr30k_images/, Images/, or root itself)
      <captions file>       one of the formats below

Captions file formats (detected from the content; ``captions_file=None`` tries
``dataset_flickr30k.json``, ``dataset_coco.json``, ``dataset_flickr8k.json``, ``captions.json``,
``captions.csv``, ``captions.tsv``, ``captions.txt``, ``results.csv``, ``results_20130124.token``):

* **Karpathy split JSON** (``dataset_flickr30k.json``): ``{"images": [{"filename", "split",
  "sentences": [{"raw"}], "filepath"?}]}``, the standard retrieval splits
  (``restval`` counts as train; ``split="val"`` is available).
* **COCO captions JSON** (``captions_val2017.json``): ``{"images": [{"id", "file_name"}],
  "annotations": [{"image_id", "caption"}]}``.
* **CSV / TSV** with a header naming an image column (``image``, ``image_name``,
  ``filename``, ``file_name``) and a caption column (``caption``, ``comment``, ``sentence``,
  ``text``); ``,`` ``\\t`` or ``|`` separated (Flickr30K's ``results.csv`` works).
* **Flickr token file**: ``<image>#<n>\\t<caption>`` lines.

Formats without split information are split by a seeded permutation
(``test_fraction``); ``split="all"`` keeps every image.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genscom.data.base import ClipCaptionDataset, check_split, register_dataset
from genscom.errors import BadFileError
from genscom.loading import MAX_JSON_BYTES, check_caption, check_file, read_json
from genscom.loading import load_image as read_image

CAPTION_FILES = ("dataset_flickr30k.json", "dataset_coco.json", "dataset_flickr8k.json", "captions.json",
                 "captions.csv", "captions.tsv", "captions.txt", "results.csv", "results_20130124.token")
IMAGE_DIRS = ("images", "flickr30k_images", "Images", "flickr30k-images")
_IMAGE_COLS = ("image", "image_name", "filename", "file_name", "file", "img")
_CAPTION_COLS = ("caption", "comment", "sentence", "text", "raw")
LAYOUT_HELP = ("expected root/images/ plus a captions file: Karpathy JSON (dataset_flickr30k.json), COCO captions "
               "JSON, a CSV/TSV with image and caption columns, or a Flickr .token file; see genscom.data.captions")


def parse_captions_file(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Read a captions file: ``({image_relpath: [captions]}, {image_relpath: split})`` (split map may be empty).

    Each caption is at most ``genscom.loading.MAX_CAPTION_CHARS`` characters (``InputTooLargeError`` names it).
    """
    try:
        caps, splits = _parse_captions_file(path)
    except (KeyError, TypeError, AttributeError) as exc:  # a JSON of the wrong shape
        raise BadFileError(path, problem=f"unexpected structure ({type(exc).__name__}: {exc})",
                           expected=f"a captions file ({LAYOUT_HELP})", fix="fix or replace the captions file") from None
    for name, cs in caps.items():
        for k, c in enumerate(cs):
            check_caption(c, source=f"captions file {str(path)!r}: caption {k} of {name!r}")
    return caps, splits


def _parse_captions_file(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    caps: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    if path.suffix.lower() == ".json":
        data = read_json(path, expected=f"a captions JSON ({LAYOUT_HELP})", fix="fix or replace the captions file")
        if isinstance(data, dict) and "annotations" in data and "images" in data:  # COCO
            names = {im["id"]: str(im["file_name"]) for im in data["images"]}
            for ann in data["annotations"]:
                if ann["image_id"] not in names:
                    raise ValueError(f"{str(path)!r}: annotation for unknown image_id {ann['image_id']!r}; "
                                     "every caption needs its image in 'images'")
                caps.setdefault(names[ann["image_id"]], []).append(str(ann["caption"]).strip())
            for name in names.values():
                caps.setdefault(name, [])
        elif isinstance(data, dict) and isinstance(data.get("images"), list):  # Karpathy
            for im in data["images"]:
                rel = str(Path(im.get("filepath", "")) / im["filename"])
                caps[rel] = [str(s.get("raw", " ".join(s.get("tokens", [])))).strip() for s in im.get("sentences", [])]
                sp = str(im.get("split", ""))
                splits[rel] = {"restval": "train"}.get(sp, sp)
        else:
            raise ValueError(f"captions file {str(path)!r} is neither COCO captions JSON nor Karpathy split JSON; "
                             f"{LAYOUT_HELP}")
        return caps, splits
    check_file(path, expected=f"a captions file ({LAYOUT_HELP})", max_bytes=MAX_JSON_BYTES, allow_empty=True)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadFileError(path, problem=f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                           expected="a UTF-8 captions file", fix="save the captions file as UTF-8") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"captions file {str(path)!r} is empty; {LAYOUT_HELP}")
    first = lines[0]
    if path.suffix.lower() == ".token" or ("#" in first.split("\t")[0] and "\t" in first):
        for ln in lines:
            left, _, cap = ln.partition("\t")
            caps.setdefault(left.split("#")[0].strip(), []).append(cap.strip())
        return caps, splits
    delim = max(("\t", "|", ","), key=first.count)
    rows = list(csv.reader(lines, delimiter=delim))
    header = [h.strip().lower() for h in rows[0]]
    icol = next((header.index(c) for c in _IMAGE_COLS if c in header), None)
    ccol = next((header.index(c) for c in _CAPTION_COLS if c in header), None)
    if icol is None or ccol is None:
        raise ValueError(f"captions file {str(path)!r} needs a header with an image column {_IMAGE_COLS} and a caption "
                         f"column {_CAPTION_COLS}; got {header}")
    for r in rows[1:]:
        if len(r) <= max(icol, ccol):
            raise ValueError(f"{str(path)!r}: row {r!r} has too few fields (separator {delim!r})")
        # unquoted separators inside a last-column caption (Flickr8k captions.txt) are kept as text
        cap = delim.join(r[ccol:]) if ccol == len(header) - 1 else r[ccol]
        caps.setdefault(r[icol].strip(), []).append(cap.strip())
    return caps, splits


def load_image(path: Path, *, size: int | None) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]``; with ``size``: shorter side resized to ``size`` (bicubic), centre-cropped square.

    Raises ``InputTooLargeError`` for an image declaring more than ``genscom.loading.MAX_IMAGE_PIXELS``
    pixels (checked before decoding) and ``BadFileError`` for one Pillow cannot decode.
    """
    from PIL import Image

    im = read_image(path)  # declared size checked before decoding (genscom.loading.MAX_IMAGE_PIXELS)
    if size is not None:
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8).copy()


@register_dataset("image-captions")
class ImageCaptionFolder(ClipCaptionDataset):
    """Images with captions from a local folder (see the module docstring for the formats).

    Args:
        split: ``"train"``, ``"val"`` (Karpathy only), ``"test"`` or ``"all"``.
        root: dataset folder.
        captions_file: path relative to ``root`` (or absolute); ``None`` auto-detects.
        images_dir: image folder relative to ``root``; ``None`` tries ``images``, ``flickr30k_images``, ... then ``root``.
        size: square side after resize + centre crop (``None`` keeps the native size).
        num_frames: identical frames per item ``T`` (default 1).
        test_fraction, seed: the seeded split for formats without one.
        n_items: keep only the first ``n_items`` images (sorted by file name).

    Items: ``frames`` uint8 ``[T, size, size, 3]``; ``id`` the image's relative path.
    """

    name = "image-captions"

    def __init__(self, split: str = "test", *, root: str | os.PathLike[str], captions_file: str | None = None,
                 images_dir: str | None = None, size: int | None = 224, num_frames: int = 1,
                 test_fraction: float = 0.2, seed: int = 0, n_items: int | None = None) -> None:
        self.split = check_split(split, allowed=("train", "val", "test", "all"), dataset=self.name)
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int or None, got {size!r}")
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
            raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
        if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
            raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
        if n_items is not None and (not isinstance(n_items, int) or n_items < 1):
            raise ValueError(f"n_items must be a positive int or None, got {n_items!r}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image-caption root {str(self.root)!r} is not a folder; {LAYOUT_HELP}")
        self.size, self.num_frames = size, num_frames
        if captions_file is None:
            found = [self.root / c for c in CAPTION_FILES if (self.root / c).is_file()]
            if not found:
                raise FileNotFoundError(f"no captions file in {str(self.root)!r} (tried {', '.join(CAPTION_FILES)}); "
                                        f"pass captions_file=...; {LAYOUT_HELP}")
            self.captions_file = found[0]
        else:
            p = Path(captions_file)
            self.captions_file = p if p.is_absolute() else self.root / p
            if not self.captions_file.is_file():
                raise FileNotFoundError(f"captions_file {str(self.captions_file)!r} not found; {LAYOUT_HELP}")
        if images_dir is None:
            self.images_dir = next((self.root / d for d in IMAGE_DIRS if (self.root / d).is_dir()), self.root)
        else:
            self.images_dir = self.root / images_dir
            if not self.images_dir.is_dir():
                raise FileNotFoundError(f"images_dir {str(self.images_dir)!r} is not a folder; {LAYOUT_HELP}")

        caps, splits = parse_captions_file(self.captions_file)
        names = sorted(caps)
        if self.split != "all":
            if splits:
                names = [n for n in names if splits.get(n) == self.split]
            elif self.split == "val":
                raise ValueError(f"{str(self.captions_file)!r} has no split information, so there is no 'val' split; "
                                 "use split='train', 'test' or 'all'")
            else:
                perm = np.random.default_rng(seed).permutation(len(names))
                n_test = int(round(float(test_fraction) * len(names)))
                chosen = set((perm[:n_test] if self.split == "test" else perm[n_test:]).tolist())
                names = [n for k, n in enumerate(names) if k in chosen]
        if n_items is not None:
            names = names[:n_items]
        self.names = names
        self._captions = [caps[n] for n in names]
        self._validate(len(names), len(self._captions),
                       fix=f"check {str(self.captions_file)!r} and the split ({self.split!r}); {LAYOUT_HELP}")
        no_caps = [n for n, c in zip(names, self._captions) if not c]
        if no_caps:
            raise ValueError(f"{len(no_caps)} images have no captions (e.g. {no_caps[:3]}); every image needs one")
        self.paths = [self._image_path(n) for n in names]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(names)} images are missing, e.g. {missing[:3]}; {LAYOUT_HELP}")

    def _image_path(self, rel: str) -> Path:
        p = self.images_dir / rel
        return p if p.is_file() or Path(rel).name == rel else self.images_dir / Path(rel).name

    def __len__(self) -> int:
        return len(self.names)

    def load_frames(self, i: int) -> torch.Tensor:
        img = torch.from_numpy(load_image(self.paths[i], size=self.size))
        return img.unsqueeze(0).expand(self.num_frames, *img.shape).contiguous()

    def captions_of(self, i: int) -> list[str]:
        return list(self._captions[i])

    def id_of(self, i: int) -> str:
        return self.names[i]

    def attributes_of(self, i: int) -> dict[str, Any]:
        return {"path": str(self.paths[i])}
