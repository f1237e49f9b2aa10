"""Evaluation sets read from local files: COCO / Flickr30k retrieval, ImageNet-style folders.

Each builder returns an :class:`~vlexp.data.eval_set.EvalSet` and checks every path it needs
up front, so a wrong path fails before training with a message naming the missing file
or folder *and* the config key to fix. Builders are registered in :data:`EVAL_SETS` and
chosen per entry of ``eval.extra_sets`` (see :func:`build_extra_eval_sets` and
``conf/eval/{coco,flickr30k,imagenet_folder}.yaml``):

* ``coco`` / ``flickr30k``: retrieval on the Karpathy split JSON (``dataset_coco.json`` /
  ``dataset_flickr30k.json``): ``images[]`` with ``filepath`` (optional), ``filename``,
  ``split`` and ``sentences[].raw``; the first ``captions_per_image`` (5) captions of
  every image of the chosen split.
* ``imagenet_folder``: zero-shot classification on ``root/<class folder>/<image>``; class
  ids follow the sorted folder names (as :class:`torchvision.datasets.ImageFolder`), class
  names and prompt templates come from files (JSON list, JSON dict, or text lines).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlexp.data.eval_set import EvalSet
from vlexp.data.paths import need_path
from vlexp.data.records import IMAGE_ERRORS, decode_image
from vlexp.data.templates import (
    EvalDataError,
    load_name_list,
    load_templates,
    need_file,
    read_text_lines,
)
from vlexp.registry import Registry

log = logging.getLogger(__name__)

EVAL_SETS: Registry[EvalSet] = Registry("eval set", config_group="eval.extra_sets.<set>")

STAGES = ("val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# --------------------------------------------------------------------- images
class ImageFiles(torch.utils.data.Dataset):
    """Images read from files: items ``{"image", "label", "index"}`` (an EvalSet's images).

    A file that cannot be decoded raises an error naming it: evaluation numbers must come
    from the whole set (``verify_images=true`` on a set decodes everything up front).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], labels: Sequence[int] | None = None):
        self.paths = [str(p) for p in paths]
        n = len(self.paths)
        self.labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64)
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} image paths")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            image = decode_image(self.paths[i])
        except IMAGE_ERRORS as e:
            raise OSError(
                f"evaluation image {self.paths[i]} cannot be read ({type(e).__name__}: {e}); "
                "replace the file or remove it from the set"
            ) from e
        return {"image": image, "label": int(self.labels[i]), "index": i}

    def verify(self, where: str) -> None:
        """Decode every image now; raise naming the unreadable ones."""
        bad = []
        for p in self.paths:
            try:
                decode_image(p)
            except IMAGE_ERRORS as e:
                bad.append(f"{p} ({type(e).__name__})")
        if bad:
            raise EvalDataError(f"{where}: {len(bad)} image(s) cannot be decoded, e.g. {bad[:3]}")


# --------------------------------------------------------------------- helpers
def _need_dir(path: Any, key: str, what: str) -> Path:
    return need_path(path, key, what, folder=True, error=EvalDataError, unset_error=EvalDataError)


def _check_files_exist(paths: Sequence[str], key: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise EvalDataError(
            f"{key}: {len(missing)} of {len(paths)} images listed by the set do not exist, e.g. "
            f"{missing[:3]}; check the image folder (or pass check_files=false to find out later)"
        )


# --------------------------------------------------------------------- Karpathy retrieval
def read_karpathy(
    annotations: Path, split: str, captions_per_image: int | None
) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """``(filepath, filename)`` and captions of every image of ``split`` in a Karpathy JSON."""
    blob = json.loads(annotations.read_text(encoding="utf-8"))
    images = blob.get("images") if isinstance(blob, dict) else None
    if not isinstance(images, list):
        raise ValueError(
            f"{annotations}: expected a JSON object with an 'images' list (Karpathy layout)"
        )
    files, captions = [], []
    splits_found = set()
    for k, im in enumerate(images):
        splits_found.add(im.get("split"))
        if im.get("split") != split:
            continue
        try:
            name = str(im["filename"])
            caps = [str(s["raw"]).strip() for s in im["sentences"]]
        except (KeyError, TypeError):
            raise ValueError(
                f"{annotations}: image {k} lacks 'filename' or 'sentences[].raw'"
            ) from None
        caps = [c for c in caps if c]
        if captions_per_image is not None:
            caps = caps[:captions_per_image]
        if not caps:
            raise ValueError(f"{annotations}: image {k} ({name}) has no caption")
        files.append((str(im.get("filepath") or ""), name))
        captions.append(caps)
    if not files:
        raise ValueError(
            f"{annotations} has no image in split {split!r}; its splits: {sorted(map(str, splits_found))}"
        )
    return files, captions


def karpathy_set(
    set_name: str,
    root: str | os.PathLike | None,
    annotations: str | os.PathLike | None,
    default_annotations: str,
    image_dir: str = "",
    split: str = "test",
    captions_per_image: int | None = 5,
    max_images: int | None = None,
    check_files: bool = True,
    verify_images: bool = False,
    config_key: str = "eval.extra_sets.<set>",
) -> EvalSet:
    """A retrieval :class:`EvalSet` from a Karpathy-split JSON.

    Image ``k`` lives at ``root/image_dir/filepath/filename``; ``annotations`` defaults to
    ``root/default_annotations``. ``max_images`` keeps the first N images of the split.
    """
    root_p = _need_dir(root, f"{config_key}.root", "image root folder")
    ann = annotations if annotations is not None else root_p / default_annotations
    ann_p = need_file(
        ann, f"{config_key}.annotations", f"Karpathy split JSON ({default_annotations})"
    )
    base = root_p / image_dir if image_dir else root_p
    if image_dir:
        _need_dir(base, f"{config_key}.image_dir", f"image folder {image_dir!r} inside root")
    files, captions = read_karpathy(ann_p, split, captions_per_image)
    if max_images is not None:
        files, captions = files[: int(max_images)], captions[: int(max_images)]
    paths = [str(base / fp / fn) if fp else str(base / fn) for fp, fn in files]
    if check_files:
        _check_files_exist(paths, f"{config_key} (root={root_p}, image_dir={image_dir!r})")
    images = ImageFiles(paths)
    if verify_images:
        images.verify(config_key)
    flat = [c for caps in captions for c in caps]
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    log.info(
        "eval set %s: %d images, %d captions (%s split of %s)",
        set_name,
        len(paths),
        len(flat),
        split,
        ann_p,
    )
    return EvalSet(set_name, images, flat, owner, retrieval=True)


def _karpathy_factory(name: str, annotations_file: str, default_image_dir: str):
    """A registered builder of one Karpathy-split data set (explicit options, so typos in
    the config are reported with the accepted names)."""

    def build(
        set_name: str = name,
        root: str | os.PathLike | None = None,
        annotations: str | os.PathLike | None = None,
        image_dir: str = default_image_dir,
        split: str = "test",
        captions_per_image: int | None = 5,
        max_images: int | None = None,
        check_files: bool = True,
        verify_images: bool = False,
        config_key: str = f"eval.extra_sets.{name}",
    ) -> EvalSet:
        return karpathy_set(
            set_name,
            root,
            annotations,
            annotations_file,
            image_dir,
            split,
            captions_per_image,
            max_images,
            check_files,
            verify_images,
            config_key,
        )

    build.__name__ = f"{name}_set"
    build.__doc__ = (
        f"{name} retrieval from ``root`` + ``{annotations_file}`` (Karpathy split, 5 captions "
        "per image); see :func:`karpathy_set`."
    )
    return EVAL_SETS.register(name)(build)


coco_set = _karpathy_factory("coco", "dataset_coco.json", "")
flickr30k_set = _karpathy_factory("flickr30k", "dataset_flickr30k.json", "")


# --------------------------------------------------------------------- ImageNet folder
def list_image_folder(
    root: Path, max_per_class: int | None = None
) -> tuple[list[str], list[str], list[int]]:
    """Sorted class folders of ``root``, and the image paths + class ids under them."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    paths, labels = [], []
    for c, folder in enumerate(classes):
        files = sorted(
            e.path
            for e in os.scandir(root / folder)
            if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
        )
        if max_per_class is not None:
            files = files[: int(max_per_class)]
        paths += files
        labels += [c] * len(files)
    return classes, paths, labels


def load_class_names(
    spec: str | os.PathLike | Sequence[str] | Mapping[str, str] | None,
    folders: Sequence[str],
    key: str = "class_names",
    class_names_key: str | None = None,
) -> list[str]:
    """Class names in folder order from a list, a ``{folder: name}`` mapping, or a file.

    Files: a JSON list (folder order), a JSON object mapping folder -> name, a JSON object
    holding lists (pick one with ``class_names_key``, e.g. CLIP_benchmark's
    ``en_classnames.json`` with ``imagenet1k``), or text lines: ``name`` (folder order) or
    ``<folder> <name>`` (e.g. ImageNet's ``LOC_synset_mapping.txt``). ``None``: the folder
    names with ``_`` as spaces.
    """
    if spec is None:
        return [f.replace("_", " ") for f in folders]
    if isinstance(spec, str | os.PathLike):
        path = need_file(spec, key, "class names file")
        if path.suffix.lower() == ".json":
            blob = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(blob, dict) and class_names_key is None:
                if not all(isinstance(v, str) for v in blob.values()):
                    raise ValueError(
                        f"{key}={path} maps keys to lists (keys {sorted(blob)[:8]}); say which "
                        "list to use with class_names_key=<key> (e.g. imagenet1k), or give a "
                        "{folder: name} object"
                    )
                spec = {str(k): v for k, v in blob.items()}
            else:
                spec = load_name_list(path, key, class_names_key, "class_names")
        else:
            lines = read_text_lines(path)
            heads = [ln.split(None, 1) for ln in lines]
            if folders and all(len(h) == 2 and h[0] in set(folders) for h in heads):
                spec = {h[0]: h[1] for h in heads}
            else:
                spec = lines
    if isinstance(spec, Mapping):
        missing = [f for f in folders if f not in spec]
        if missing:
            raise ValueError(
                f"{key}: no class name for folder(s) {missing[:5]} ({len(missing)} in all)"
            )
        return [str(spec[f]) for f in folders]
    names = [str(n) for n in spec]
    if len(names) != len(folders):
        raise ValueError(
            f"{key}: {len(names)} class names for {len(folders)} class folders; list one name per "
            "folder in sorted folder order, or map folder -> name"
        )
    return names


@EVAL_SETS.register("imagenet_folder")
def imagenet_folder_set(
    set_name: str = "imagenet",
    root: str | os.PathLike | None = None,
    class_names: str | os.PathLike | Sequence[str] | None = None,
    templates: str | os.PathLike | Sequence[str] | None = None,
    class_names_key: str | None = None,
    templates_key: str | None = None,
    max_per_class: int | None = None,
    verify_images: bool = False,
    config_key: str = "eval.extra_sets.imagenet",
) -> EvalSet:
    """Zero-shot classification over an ImageNet-style folder (``root/<class>/<image>``)."""
    root_p = _need_dir(root, f"{config_key}.root", "folder of class folders")
    folders, paths, labels = list_image_folder(root_p, max_per_class)
    if not folders or not paths:
        raise EvalDataError(
            f"{config_key}.root={root}: expected one sub-folder per class holding images "
            f"({'/'.join(IMAGE_SUFFIXES)}), found {len(folders)} folders and {len(paths)} images"
        )
    names = load_class_names(class_names, folders, f"{config_key}.class_names", class_names_key)
    temps = load_templates(templates, f"{config_key}.templates", templates_key)
    images = ImageFiles(paths, labels)
    if verify_images:
        images.verify(config_key)
    log.info(
        "eval set %s: %d images in %d classes, %d templates (%s)",
        set_name,
        len(paths),
        len(folders),
        len(temps),
        root_p,
    )
    return EvalSet(set_name, images, [], np.zeros(0, dtype=np.int64), names, temps, retrieval=False)


# --------------------------------------------------------------------- config entry
def build_extra_eval_sets(
    specs: Mapping[str, Mapping[str, Any]] | None, prefix: str = "eval.extra_sets"
) -> dict[str, list[EvalSet]]:
    """Evaluation sets of ``eval.extra_sets``: ``{"val": [...], "test": [...]}``.

    ``specs`` maps a set name (used in metric keys, e.g. ``test/coco/i2t_R@1``) to a dict
    with ``name`` (a registered builder: coco, flickr30k, imagenet_folder), ``stages``
    (where it runs: ``[test]`` after fitting, ``[val]`` at every validation, or both) and
    the builder's options. A ``null`` entry is skipped (a way to switch a preset's set off).
    Every path is checked here, so call this before training starts.
    """
    out: dict[str, list[EvalSet]] = {s: [] for s in STAGES}
    for set_name, spec in (specs or {}).items():
        if spec is None:
            continue
        key = f"{prefix}.{set_name}"
        spec = dict(spec)
        stages = spec.pop("stages", ["test"])
        stages = [stages] if isinstance(stages, str) else list(stages)
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages:
            raise ValueError(f"{key}.stages={stages}: expected a non-empty list of {list(STAGES)}")
        if "name" not in spec:
            raise ValueError(f"{key} needs `name` (one of {EVAL_SETS.names()})")
        eval_set = EVAL_SETS.build(spec, set_name=set_name, config_key=key)
        for s in stages:
            out[s].append(eval_set)
    return out
