"""MSR-VTT text-video retrieval from a local folder (no download).

Expected layout (the files distributed with CLIP4Clip / JSFusion)::

    root/
      MSRVTT_data.json            {"videos": [{"video_id": "video0", "split": "train", ...}],
                                   "sentences": [{"video_id": "video0", "caption": "...", ...}]}
      MSRVTT_JSFUSION_test.csv    optional: the standard 1k-A test split, columns
                                  key,vid_key,video_id,sentence (one sentence per video)
      MSRVTT_train.9k.csv         optional: the 9k training split, column video_id
      videos/all/video0.mp4 ...   (or videos/video0.mp4; any folder via ``videos_dir``)

Splits:

* ``"test"``: the 1k-A ids of the test csv, in csv order, captioned by the csv's
  sentence (``caption_source="csv"``, the standard protocol) or by all of the JSON
  sentences of each video (``caption_source="json"``). Without the csv: the JSON
  videos whose ``split`` is ``"test"`` (the full 2,990-clip test split).
* ``"train"``: the ids of the train csv; without it, every JSON video not in the 1k-A
  test csv (the "9k" split), or, with no test csv either, the JSON ``train`` and
  ``validate`` videos. Captions come from the JSON.

Frames are decoded with :func:`genscom.data.real.read_video` (PyAV). Every clip is probed at load
(:func:`genscom.data.real.probe_video`: it opens, has a video stream within the decode bounds and a
first frame); damaged clips are skipped with one warning line giving their count, the first names and
the fix, and a folder with no sound clip left is a one-line :class:`~genscom.errors.BadFileError`.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any, Literal

import torch

from genscom.data.base import ClipCaptionDataset, check_split, register_dataset
from genscom.errors import BadFileError, GenscomError, first_line
from genscom.loading import MAX_JSON_BYTES, check_caption, check_file, read_json

logger = logging.getLogger(__name__)

LAYOUT_HELP = (
    "expected root/MSRVTT_data.json (videos + sentences), optional root/MSRVTT_JSFUSION_test.csv "
    "(1k-A test: key,vid_key,video_id,sentence), optional root/MSRVTT_train.9k.csv (video_id), and the clips as "
    "root/videos/all/<video_id>.mp4 (or root/videos/<video_id>.mp4); see genscom.data.msrvtt"
)
_VIDEO_DIRS = ("videos/all", "videos", "MSRVTT_Videos", "TrainValVideo")
_VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv")
_NAMED_SKIPS = 3  # damaged videos named in the warning


def _read_csv_rows(path: Path, *, required: tuple[str, ...]) -> list[dict[str, str]]:
    check_file(path, expected=f"an MSR-VTT csv ({LAYOUT_HELP})", max_bytes=MAX_JSON_BYTES)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            missing = [c for c in required if c not in fields]
            if missing:
                raise ValueError(f"{str(path)!r} lacks column(s) {missing}; it has {fields}. {LAYOUT_HELP}")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadFileError(path, problem=f"not a readable csv ({type(exc).__name__}: {exc})",
                           expected=f"a UTF-8 csv with columns {list(required)}", fix="re-download it") from None
    for r in rows:
        if "sentence" in r:
            check_caption(r["sentence"], source=f"{str(path)!r}: the sentence of {r.get('video_id', '?')!r}")
    return rows


@register_dataset("msrvtt")
class MSRVTT(ClipCaptionDataset):
    """MSR-VTT clips and captions from ``root`` (see the module docstring for the layout).

    Args:
        split: ``"train"`` or ``"test"`` (1k-A when the test csv is present).
        root: dataset folder; ``None`` reads ``$GENSCOM_MSRVTT``.
        videos_dir: clip folder relative to ``root`` (or absolute); ``None`` tries
            ``videos/all``, ``videos``, ``MSRVTT_Videos``, ``TrainValVideo``.
        annotations, test_csv, train_csv: file names relative to ``root``.
        caption_source: test captions from the ``"csv"`` (one per clip) or the ``"json"`` (all).
        num_frames: frames sampled uniformly per clip ``T``; ``size``: frame side passed to
            ``read_video`` (``None`` keeps the native size, which stops ``stacked_frames``).
        n_items: keep only the first ``n_items`` clips (quick runs).
        check_videos: probe every kept clip at load (:func:`genscom.data.real.probe_video`: open,
            stream geometry within the decode bounds, first frame) and skip the damaged ones,
            replacing them by the next clips of the split; the count and the first few names are
            logged in one warning line and listed in ``skipped``. No clip left is a
            :class:`~genscom.errors.BadFileError` naming the clip folder. ``False`` skips the probe.

    Attributes:
        skipped: ``(path, reason)`` of each damaged video passed over at load.

    Items: ``frames`` uint8 ``[T, H, W, 3]``; ``id`` the MSR-VTT ``video_id``.
    """

    name = "msrvtt"

    def __init__(self, split: str = "test", *, root: str | os.PathLike[str] | None = None,
                 videos_dir: str | os.PathLike[str] | None = None, annotations: str = "MSRVTT_data.json",
                 test_csv: str = "MSRVTT_JSFUSION_test.csv", train_csv: str = "MSRVTT_train.9k.csv",
                 caption_source: Literal["csv", "json"] = "csv", num_frames: int = 8, size: int | None = 224,
                 n_items: int | None = None, check_videos: bool = True) -> None:
        self.split = check_split(split, dataset=self.name)
        if caption_source not in ("csv", "json"):
            raise ValueError(f"caption_source must be 'csv' or 'json', got {caption_source!r}")
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
            raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int or None, got {size!r}")
        if n_items is not None and (not isinstance(n_items, int) or isinstance(n_items, bool) or n_items < 1):
            raise ValueError(f"n_items must be a positive int or None, got {n_items!r}")
        if root is None:
            root = os.environ.get("GENSCOM_MSRVTT")
            if not root:
                raise ValueError(f"msrvtt needs root=<folder> (or $GENSCOM_MSRVTT); {LAYOUT_HELP}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"MSR-VTT root {str(self.root)!r} is not a folder; {LAYOUT_HELP}")
        self.num_frames, self.size = num_frames, size
        self.videos_dir = self._find_videos_dir(videos_dir)

        test_path, train_path, ann_path = self.root / test_csv, self.root / train_csv, self.root / annotations
        test_rows = _read_csv_rows(test_path, required=("video_id", "sentence")) if test_path.is_file() else None
        test_ids = [r["video_id"] for r in test_rows] if test_rows is not None else None
        needs_json = not (self.split == "test" and test_rows is not None and caption_source == "csv")
        videos: list[dict[str, Any]] = []
        sentences: dict[str, list[str]] = {}
        if needs_json:
            if not ann_path.is_file():
                raise FileNotFoundError(f"MSR-VTT annotations {str(ann_path)!r} not found; {LAYOUT_HELP}")
            data = read_json(ann_path, expected=f"MSRVTT_data.json ({LAYOUT_HELP})", fix="re-download the annotations")
            try:
                videos = list(data.get("videos", []))
                for s in data["sentences"]:
                    sentences.setdefault(str(s["video_id"]), []).append(
                        check_caption(str(s["caption"]), source=f"{str(ann_path)!r}: a caption of {s['video_id']!r}"))
            except (KeyError, TypeError, AttributeError) as exc:
                raise BadFileError(ann_path, problem=f"unexpected structure ({type(exc).__name__}: {exc})",
                                   expected=f"MSRVTT_data.json ({LAYOUT_HELP})",
                                   fix="re-download the annotations") from None

        if self.split == "test":
            if test_rows is not None:
                ids = test_ids or []
                if caption_source == "csv":
                    caps = {r["video_id"]: [r["sentence"]] for r in test_rows}
                else:
                    caps = sentences
            else:
                logger.info("no %s in %s: using the full JSON test split", test_csv, self.root)
                ids = [str(v["video_id"]) for v in videos if v.get("split") == "test"]
                caps = sentences
        else:
            if train_path.is_file():
                ids = [r["video_id"] for r in _read_csv_rows(train_path, required=("video_id",))]
            elif test_ids is not None:
                held = set(test_ids)
                ids = [str(v["video_id"]) for v in videos if str(v["video_id"]) not in held]
            else:
                ids = [str(v["video_id"]) for v in videos if v.get("split") in ("train", "validate")]
            caps = sentences
        head = ids if n_items is None else ids[:n_items]
        self._validate(len(head), len(head), fix=f"check the split files in {str(self.root)!r}; {LAYOUT_HELP}")
        no_caps = [v for v in head if not caps.get(v)]
        if no_caps:
            raise ValueError(f"{len(no_caps)} MSR-VTT clips have no captions (e.g. {no_caps[:3]}); "
                             f"clip and caption lists must match. {LAYOUT_HELP}")
        missing = [str(p) for p in (self._video_path(v) for v in head) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(head)} MSR-VTT clips are missing, e.g. {missing[:3]}; "
                                    f"{LAYOUT_HELP}")
        self.ids, self.paths, self.skipped = self._usable_clips(ids, caps, n_items=n_items, check_videos=check_videos)
        self._captions = [caps.get(v, []) for v in self.ids]
        self._validate(len(self.ids), len(self._captions),
                       fix=f"check the split files in {str(self.root)!r}; {LAYOUT_HELP}")

    def _usable_clips(self, ids: list[str], caps: dict[str, list[str]], *, n_items: int | None,
                      check_videos: bool) -> tuple[list[str], list[Path], list[tuple[Path, str]]]:
        """The first ``n_items`` clips (all when ``None``) of ``ids`` whose video probes sound.

        A clip whose file does not open, has no video stream, yields no first frame or declares a
        geometry past the decode bounds (:func:`genscom.data.real.probe_video`) is skipped, and the
        next clip of the split takes its place; the skipped ones are logged in ONE warning line with
        their count, the first few names and the fix. Clips past the first ``n_items`` with no
        caption or no file are passed over silently (the first ``n_items`` were checked already).

        Returns:
            ``(ids, paths, skipped)``; ``skipped`` holds ``(path, reason)`` of each damaged video.

        Raises:
            BadFileError: naming the clip folder when no clip is left.
        """
        from genscom.data.real import probe_video

        kept_ids: list[str] = []
        kept_paths: list[Path] = []
        skipped: list[tuple[Path, str]] = []
        for v in ids:
            if n_items is not None and len(kept_ids) >= n_items:
                break
            path = self._video_path(v)
            if not caps.get(v) or not path.is_file():  # only past the checked head
                continue
            if check_videos:
                try:
                    probe_video(path)
                except ValueError as exc:  # genscom's InputTooLargeError is a ValueError too
                    skipped.append((path, first_line(exc, limit=300).replace(repr(str(path)), repr(path.name))))
                    continue
            kept_ids.append(v)
            kept_paths.append(path)
        if skipped:
            names = ", ".join(p.name for p, _ in skipped[:_NAMED_SKIPS]) + (", ..." if len(skipped) > _NAMED_SKIPS else "")
            if not kept_ids:
                raise BadFileError(self.videos_dir, problem=f"none of its {len(skipped)} MSR-VTT videos of split "
                                   f"{self.split!r} decodes ({names}; first: {skipped[0][1]})",
                                   expected="H.264/MPEG-4 video files readable by FFmpeg",
                                   fix="re-encode or remove them (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4)")
            wanted = f" of the {n_items} requested" if n_items is not None and len(kept_ids) < n_items else ""
            logger.warning("skipped %d damaged MSR-VTT video(s) in %r that do not decode (%s; first: %s); using %d "
                           "clip(s)%s. Fix: re-encode or remove them", len(skipped), str(self.videos_dir), names,
                           skipped[0][1], len(kept_ids), wanted)
        return kept_ids, kept_paths, skipped

    def _find_videos_dir(self, videos_dir: str | os.PathLike[str] | None) -> Path:
        if videos_dir is not None:
            p = Path(videos_dir)
            p = p if p.is_absolute() else self.root / p
            if not p.is_dir():
                raise FileNotFoundError(f"videos_dir {str(p)!r} is not a folder; {LAYOUT_HELP}")
            return p
        for cand in _VIDEO_DIRS:
            if (self.root / cand).is_dir():
                return self.root / cand
        raise FileNotFoundError(f"no clip folder under {str(self.root)!r} (tried {', '.join(_VIDEO_DIRS)}); "
                                f"pass videos_dir=...; {LAYOUT_HELP}")

    def _video_path(self, video_id: str) -> Path:
        for ext in _VIDEO_EXTS:
            p = self.videos_dir / f"{video_id}{ext}"
            if p.is_file():
                return p
        return self.videos_dir / f"{video_id}.mp4"

    def __len__(self) -> int:
        return len(self.ids)

    def load_frames(self, i: int) -> torch.Tensor:
        from genscom.data.real import read_video

        path = self.paths[i]
        try:
            return read_video(path, num_frames=self.num_frames, size=None if self.size is None else (self.size, self.size))
        except GenscomError:
            raise
        except ValueError as exc:  # damage past the first frame that the probe at load could not see
            raise BadFileError(path, problem=f"the MSR-VTT clip does not decode ({first_line(exc, limit=200)})",
                               expected="a video file readable by FFmpeg",
                               fix="re-encode or remove it") from None

    def captions_of(self, i: int) -> list[str]:
        return list(self._captions[i])

    def id_of(self, i: int) -> str:
        return self.ids[i]

    def attributes_of(self, i: int) -> dict[str, Any]:
        return {"path": str(self.paths[i])}
