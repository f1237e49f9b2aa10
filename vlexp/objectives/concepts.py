"""`objective=concepts`: concept distillation from a frozen image teacher (DiHT).

A frozen teacher (:mod:`vlexp.teachers`) scores a concept vocabulary for every training
image; linear heads on the student's L2-normalised image embedding (and, optionally,
its text embedding) learn to predict those scores. Usable alone or as a term of
``objective=composite`` (``objective=diht`` is HN-NCE + this).

Targets (teacher temperature ``T``, optional top-k):

- single-label teachers (ImageNet classifiers): ``p = softmax(z / T)``, restricted to the
  teacher's ``top_k`` concepts and renormalised when ``top_k`` is set;
- multi-label teachers (the synthetic one): ``p_c = sigmoid(z_c / T)`` per concept, zero
  outside the top-k when ``top_k`` is set.

Losses (``loss``): ``kl`` = KL(p || softmax(student)), ``soft_ce`` = -sum p log
softmax(student) (same gradient as ``kl``, differs by the teacher's entropy), ``bce`` =
binary cross-entropy per concept summed over concepts; ``auto`` (default) is ``bce``
for multi-label teachers and ``kl`` otherwise. Every loss is a mean over the local rows,
so under DDP the averaged gradients equal those of one process holding the whole batch.

Targets are precomputed by :meth:`ConceptDistillation.setup` over the whole training
set once (batched, no grad, progress bar) and cached under
``<cache_dir>/concepts/<key>/`` where ``key`` hashes the dataset identity (length,
captions, a few images), the teacher identity (name, weights file, preprocessing) and
the cache layout; later runs load the cache (memory-mapped). With ``on_the_fly=true`` the
targets are computed from each batch's (augmented) images instead: they are
un-normalised with the student's mean/std and re-normalised for the teacher (see
:meth:`vlexp.teachers.ImageTeacher.logits_from_student`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.distributed import GatheredFeatures
from vlexp.teachers import ImageTeacher, build_teacher

log = logging.getLogger(__name__)

CACHE_VERSION = 1
LOSSES = ("auto", "kl", "soft_ce", "bce")


# --------------------------------------------------------------------------- targets
def teacher_targets(
    logits: torch.Tensor, multilabel: bool, temperature: float = 1.0, top_k: int | None = None
) -> torch.Tensor:
    """Target probabilities ``(B, C)`` from teacher logits (see the module docstring)."""
    z = logits.float() / temperature
    keep = None
    if top_k is not None and 0 < top_k < z.shape[1]:
        keep = torch.zeros_like(z, dtype=torch.bool)
        keep.scatter_(1, z.topk(top_k, dim=1).indices, True)
    if multilabel:
        p = torch.sigmoid(z)
        return p if keep is None else p * keep
    if keep is not None:
        z = z.masked_fill(~keep, float("-inf"))
    return torch.softmax(z, dim=1)


def distillation_loss(
    student_logits: torch.Tensor, targets: torch.Tensor, loss: str
) -> torch.Tensor:
    """Mean over rows of the chosen loss between student logits and target probabilities."""
    if loss == "bce":
        return (
            F.binary_cross_entropy_with_logits(student_logits.float(), targets, reduction="none")
            .sum(1)
            .mean()
        )
    log_q = torch.log_softmax(student_logits.float(), dim=1)
    if loss == "soft_ce":
        return -(targets * log_q).sum(1).mean()
    if loss == "kl":
        return (torch.xlogy(targets, targets) - targets * log_q).sum(1).mean()
    raise ValueError(f"objective.loss must be one of {LOSSES}, got {loss!r}")


# --------------------------------------------------------------------------- cache
class TargetStore:
    """Teacher logits of every training pair, looked up by ``batch["index"]``.

    Dense ``(N, C)`` float16 logits, or the top-``k`` logits per row (``idx``/``val``,
    ``(N, k)``) with the others treated as ``-inf``.
    """

    def __init__(
        self,
        num_concepts: int,
        logits: np.ndarray | None = None,
        topk_idx: np.ndarray | None = None,
        topk_val: np.ndarray | None = None,
    ) -> None:
        if (logits is None) == (topk_idx is None):
            raise ValueError("TargetStore needs either dense logits or top-k indices and values")
        self.num_concepts = num_concepts
        self.logits, self.topk_idx, self.topk_val = logits, topk_idx, topk_val

    def __len__(self) -> int:
        arr = self.logits if self.logits is not None else self.topk_idx
        return int(arr.shape[0])  # type: ignore[union-attr]

    @classmethod
    def from_logits(
        cls, logits: torch.Tensor | np.ndarray, store_topk: int | None = None
    ) -> TargetStore:
        """Build from full logits ``(N, C)``, keeping only the top ``store_topk`` if given."""
        z = torch.as_tensor(np.asarray(logits, dtype=np.float32))
        if store_topk is None or store_topk >= z.shape[1]:
            return cls(z.shape[1], logits=z.to(torch.float16).numpy())
        top = z.topk(store_topk, dim=1)
        return cls(
            z.shape[1],
            topk_idx=top.indices.to(torch.int32).numpy(),
            topk_val=top.values.to(torch.float16).numpy(),
        )

    def lookup(self, index: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """Float32 logits ``(B, C)`` of the rows ``index`` (``-inf`` where not stored)."""
        idx = index.detach().cpu().numpy().astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(
                f"batch index {int(idx.max())} outside the {len(self)} cached teacher targets; "
                "the cache belongs to another training set"
            )
        if self.logits is not None:
            out = torch.from_numpy(np.ascontiguousarray(self.logits[idx])).float()
        else:
            out = torch.full((len(idx), self.num_concepts), float("-inf"))
            out.scatter_(
                1,
                torch.from_numpy(self.topk_idx[idx].astype(np.int64)),  # type: ignore[index]
                torch.from_numpy(self.topk_val[idx]).float(),
            )  # type: ignore[index]
        return out.to(device) if device is not None else out

    def save(self, directory: Path) -> None:
        """Write the arrays as ``.npy`` files into ``directory``."""
        if self.logits is not None:
            np.save(directory / "logits.npy", self.logits)
        else:
            np.save(directory / "topk_idx.npy", self.topk_idx)
            np.save(directory / "topk_val.npy", self.topk_val)

    @classmethod
    def load(cls, directory: Path, num_concepts: int) -> TargetStore:
        """Memory-map the arrays written by :meth:`save`."""
        if (directory / "logits.npy").exists():
            return cls(num_concepts, logits=np.load(directory / "logits.npy", mmap_mode="r"))
        return cls(
            num_concepts,
            topk_idx=np.load(directory / "topk_idx.npy", mmap_mode="r"),
            topk_val=np.load(directory / "topk_val.npy", mmap_mode="r"),
        )


def dataset_identity(train_set: Any, num_image_probes: int = 4) -> dict[str, Any]:
    """Length, a hash of all captions and a hash of a few images' pixels of ``train_set``."""
    n = len(train_set)
    h = hashlib.sha1()
    for cap in train_set.captions:
        h.update(cap.encode("utf-8"))
        h.update(b"\n")
    img_hash = hashlib.sha1()
    probes = sorted({int(round(x)) for x in np.linspace(0, n - 1, num_image_probes)}) if n else []
    for i in probes:
        img = np.asarray(train_set[i]["image"])
        img_hash.update(str(img.shape).encode())
        img_hash.update(np.ascontiguousarray(img).tobytes())
    return {"len": n, "captions_sha1": h.hexdigest(), "images_sha1": img_hash.hexdigest()}


def cache_key(identity: Mapping[str, Any]) -> str:
    """Short stable hash of a JSON-able identity."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock across processes (ranks) on one machine or a POSIX file system."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _TeacherInputs(torch.utils.data.Dataset):
    def __init__(self, source: Any, transform: Callable[[Any], torch.Tensor]) -> None:
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.source[i]["image"])


@torch.no_grad()
def compute_teacher_logits(
    teacher: ImageTeacher,
    train_set: Any,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Teacher logits ``(N, C)`` of every image of ``train_set`` (batched, no grad)."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(
        _TeacherInputs(train_set, teacher.pil_transform()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=teacher.device.type == "cuda",
    )
    out = []
    for images in tqdm(loader, desc="teacher targets", unit="batch", disable=not progress):
        out.append(teacher.logits(images).cpu())
    if not out:
        return torch.zeros(0, teacher.num_concepts)
    return torch.cat(out)


def load_or_compute_targets(
    teacher: ImageTeacher,
    train_set: Any,
    cache_dir: str | os.PathLike | None,
    store_topk: int | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[TargetStore, Path | None]:
    """The cached targets of ``(train_set, teacher)``, computing and saving them if missing.

    Concurrent callers (DDP ranks) serialise on a lock file: the first computes and
    writes atomically (temporary folder, then rename), the others load its result.
    Returns the store and its folder (``None`` without ``cache_dir``: nothing saved).
    """
    if cache_dir is None:
        log.warning("no cache_dir given: teacher targets are computed but not saved")
        logits = compute_teacher_logits(teacher, train_set, batch_size, num_workers, progress)
        return TargetStore.from_logits(logits, store_topk), None
    identity = {
        "version": CACHE_VERSION,
        "dataset": dataset_identity(train_set),
        "teacher": teacher.cache_identity(),
        "store_topk": store_topk,
    }
    root = Path(cache_dir) / "concepts"
    final = root / cache_key(identity)
    with _file_lock(root / f"{final.name}.lock"):
        if (final / "meta.json").exists():
            log.info("loading cached teacher targets from %s", final)
            return TargetStore.load(final, teacher.num_concepts), final
        log.info("computing teacher targets for %d images (cache: %s)", len(train_set), final)
        start = time.time()
        logits = compute_teacher_logits(teacher, train_set, batch_size, num_workers, progress)
        store = TargetStore.from_logits(logits, store_topk)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        try:
            store.save(tmp)
            meta = {
                **identity,
                "concept_names": teacher.concept_names,
                "seconds": round(time.time() - start, 1),
                "created": time.time(),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            if final.exists():  # leftovers without meta.json: an unfinished old entry
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return TargetStore.load(final, teacher.num_concepts), final


# --------------------------------------------------------------------------- objective
@OBJECTIVES.register("concepts")
class ConceptDistillation(Objective):
    """Linear concept heads on the student's embeddings trained to match a frozen teacher.

    Options (defaults are our choices; DiHT's are not verified):

    - ``teacher``: ``{name, weights, concepts, input_size, multilabel}`` for
      :func:`vlexp.teachers.build_teacher` (default: packaged EfficientNet-Lite0);
    - ``loss``: ``auto`` | ``kl`` | ``soft_ce`` | ``bce``; ``temperature`` (teacher, 1.0);
      ``top_k`` (targets restricted to the teacher's k best concepts; null = all);
    - ``image_weight`` (1.0) and ``text_weight`` (0.0: no text head) weigh the two heads;
    - ``on_the_fly`` (false): teacher on each batch instead of the cache;
      ``store_topk`` (null): cache only each image's top-k logits (for huge datasets);
      ``batch_size``/``num_workers``/``device``/``progress`` for the precompute pass.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        teacher: Mapping[str, Any] | None = None,
        loss: str = "auto",
        temperature: float = 1.0,
        top_k: int | None = None,
        image_weight: float = 1.0,
        text_weight: float = 0.0,
        on_the_fly: bool = False,
        store_topk: int | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        device: str | None = None,
        progress: bool = True,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"objective.loss must be one of {LOSSES}, got {loss!r}")
        if temperature <= 0:
            raise ValueError(f"objective.temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"objective.top_k must be >= 1 or null, got {top_k}")
        if image_weight < 0 or text_weight < 0 or image_weight + text_weight == 0:
            raise ValueError("objective.image_weight and text_weight must be >= 0, not both 0")
        tcfg = dict(teacher or {})
        tcfg.pop("_target_", None)
        # an ImageTeacher is not an nn.Module: it stays out of the module tree (frozen,
        # never checkpointed, moved to the batch's device on demand)
        self.teacher: ImageTeacher = build_teacher(**tcfg)
        n = self.teacher.num_concepts
        self.loss_name = ("bce" if self.teacher.multilabel else "kl") if loss == "auto" else loss
        self.temperature = float(temperature)
        self.top_k = top_k
        self.image_weight = float(image_weight)
        self.text_weight = float(text_weight)
        self.image_head = nn.Linear(embed_dim, n) if image_weight > 0 else None
        self.text_head = nn.Linear(embed_dim, n) if text_weight > 0 else None
        self.on_the_fly = bool(on_the_fly)
        self.store_topk = store_topk
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.precompute_device = device
        self.progress = bool(progress)
        self.student_mean = tuple(image_mean) if image_mean is not None else (0.5, 0.5, 0.5)
        self.student_std = tuple(image_std) if image_std is not None else (0.5, 0.5, 0.5)
        self.targets: TargetStore | None = None
        self.cache_path: Path | None = None

    @property
    def concept_names(self) -> list[str]:
        return self.teacher.concept_names

    def setup(self, train_set: Any, cache_dir: str | None = None) -> None:
        """Precompute (or load) the teacher's targets for ``train_set`` unless on the fly."""
        if self.on_the_fly:
            return
        device = self.precompute_device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.teacher.to(device)
        try:
            self.targets, self.cache_path = load_or_compute_targets(
                self.teacher,
                train_set,
                cache_dir,
                self.store_topk,
                self.batch_size,
                self.num_workers,
                self.progress,
            )
        finally:
            self.teacher.to("cpu")
        if len(self.targets) != len(train_set):
            raise RuntimeError(
                f"cached teacher targets hold {len(self.targets)} rows but the training set has "
                f"{len(train_set)}; delete {self.cache_path} and rerun"
            )

    def set_targets(self, logits: torch.Tensor | np.ndarray) -> None:
        """Use given teacher logits ``(N, C)`` (row ``i`` = training pair ``i``)."""
        self.targets = TargetStore.from_logits(logits, self.store_topk)

    def teacher_logits(self, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
        """Teacher logits of this batch's pairs, from the cache or the batch images."""
        if self.on_the_fly:
            if "image" not in batch:
                raise KeyError("concept distillation on the fly needs batch['image']")
            if self.teacher.device != device:
                self.teacher.to(device)
            return self.teacher.logits_from_student(
                batch["image"], self.student_mean, self.student_std
            )
        if self.targets is None:
            raise RuntimeError(
                "concept distillation targets are not prepared: call objective.setup(train_set, "
                "cache_dir) before training (vlexp.run does), or set objective.on_the_fly=true"
            )
        if "index" not in batch:
            raise KeyError("concept distillation needs batch['index'] (rows of the training set)")
        return self.targets.lookup(torch.as_tensor(batch["index"]), device)

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:
        device = features.image.device
        targets = teacher_targets(
            self.teacher_logits(batch, device),
            self.teacher.multilabel,
            self.temperature,
            self.top_k,
        )
        loss = features.image.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        if self.image_head is not None:
            parts["loss_image"] = distillation_loss(
                self.image_head(features.image), targets, self.loss_name
            )
            loss = loss + self.image_weight * parts["loss_image"]
        if self.text_head is not None:
            parts["loss_text"] = distillation_loss(
                self.text_head(features.text), targets, self.loss_name
            )
            loss = loss + self.text_weight * parts["loss_text"]
        return ObjectiveOutput(loss, parts)

    def extra_repr(self) -> str:
        return (
            f"teacher={self.teacher.identity.get('name')}, concepts={self.teacher.num_concepts}, "
            f"loss={self.loss_name}, T={self.temperature}, top_k={self.top_k}, "
            f"on_the_fly={self.on_the_fly}"
        )
