"""Teacher targets of concept distillation: computed when first needed, kept on disk.

The teacher's logits for training pair ``i`` (its stable index in the training set,
``batch["index"]``) live in row ``i`` of a memory-mapped array under
``<cache_dir>/concepts/<key>/`` next to a ``done`` mask (one byte per row). ``key``
hashes the dataset identity (length, captions, a few images), the teacher identity
(name, weights file, preprocessing) and the layout, so a changed dataset or teacher
gets a new entry.

:class:`LazyTargets` fills rows as training asks for them: a step whose batch holds
rows not yet done runs the teacher on those images only (the un-augmented image,
resized and centre-cropped as the teacher expects) and writes their logits, then
marks them done. Later steps, epochs and runs read the stored rows. Writes hold a file
lock and write the logits before the mask, so several processes (DDP ranks, a resumed
run next to an old one) share one entry safely: a row marked done is complete.
:meth:`LazyTargets.precompute` fills every missing row up front (batched, with a
progress bar and an ETA); an interrupted precompute keeps what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlexp.io import file_lock
from vlexp.objectives.concepts.teachers import ImageTeacher

log = logging.getLogger(__name__)

CACHE_VERSION = 2


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


class _TeacherInputs(torch.utils.data.Dataset):
    """``(row, teacher-preprocessed image)`` for the given rows of a pair source."""

    def __init__(
        self, source: Any, transform: Callable[[Any], torch.Tensor], rows: Sequence[int]
    ) -> None:
        self.source, self.transform, self.rows = source, transform, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        row = int(self.rows[i])
        return row, self.transform(self.source[row]["image"])


def _array_specs(n: int, c: int, store_topk: int | None) -> dict[str, tuple[tuple[int, int], Any]]:
    if store_topk is None or store_topk >= c:
        return {"logits": ((n, c), np.float16)}
    return {"topk_idx": ((n, store_topk), np.int32), "topk_val": ((n, store_topk), np.float16)}


def _create_entry(
    final: Path, identity: Mapping[str, Any], n: int, c: int, store_topk: int | None
) -> None:
    """Write an empty entry (zeroed arrays, nothing done) into a temporary folder, then
    rename it to ``final``; ``meta.json`` is written last, so a folder holding it is whole."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        for name, (shape, dtype) in _array_specs(n, c, store_topk).items():
            np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", dtype, shape).flush()
        np.lib.format.open_memmap(tmp / "done.npy", "w+", np.uint8, (n,)).flush()
        (tmp / "meta.json").write_text(json.dumps({**identity, "created": time.time()}, indent=1))
        if final.exists():  # leftovers without meta.json: an unfinished old entry
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class LazyTargets:
    """Teacher logits of a training set, computed on first use (see the module docstring).

    ``lookup`` is what a training step calls; ``precompute`` fills everything up front.
    ``teacher_calls`` and ``rows_computed`` count the work done by this object.
    """

    def __init__(
        self,
        teacher: ImageTeacher,
        train_set: Any,
        directory: Path | None,
        store_topk: int | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
    ) -> None:
        self.teacher, self.train_set, self.directory = teacher, train_set, directory
        self.store_topk = store_topk
        self.batch_size, self.num_workers = max(1, int(batch_size)), int(num_workers)
        self.teacher_calls = 0
        self.rows_computed = 0
        n, c = len(train_set), teacher.num_concepts
        if directory is None:
            arrays = {k: np.zeros(s, d) for k, (s, d) in _array_specs(n, c, store_topk).items()}
            self.done = np.zeros(n, np.uint8)
        else:
            arrays = {
                k: np.load(directory / f"{k}.npy", mmap_mode="r+")
                for k in _array_specs(n, c, store_topk)
            }
            self.done = np.load(directory / "done.npy", mmap_mode="r+")
        self.store = TargetStore(
            c, arrays.get("logits"), arrays.get("topk_idx"), arrays.get("topk_val")
        )
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self.store)

    @property
    def num_done(self) -> int:
        """How many rows hold the teacher's logits."""
        return int(np.count_nonzero(self.done))

    def missing(self, index: np.ndarray) -> np.ndarray:
        """The distinct rows of ``index`` not computed yet (sorted)."""
        idx = np.unique(np.asarray(index, dtype=np.int64))
        if idx.size and (idx[0] < 0 or idx[-1] >= len(self)):
            raise IndexError(
                f"batch index {int(idx[-1])} outside the {len(self)} teacher targets of the "
                "training set; the cache belongs to another training set"
            )
        return idx[self.done[idx] == 0]

    def lookup(self, index: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """Float32 logits ``(B, C)`` of rows ``index``, computing the missing ones first."""
        todo = self.missing(index.detach().cpu().numpy())
        if todo.size:
            self.fill(todo, device)
        return self.store.lookup(index, device)

    def fill(self, rows: np.ndarray, device: torch.device | None = None) -> None:
        """Run the teacher (moved to ``device`` if given) on the images of ``rows``, in
        batches, and store their logits."""
        if device is not None and self.teacher.device != torch.device(device):
            self.teacher.to(device)
        if self.teacher_calls == 0:
            log.info(
                "teacher targets are computed as training uses them (%d of %d cached; "
                "objective precompute=true computes them all first)",
                self.num_done,
                len(self),
            )
        tf = self.teacher.pil_transform()
        for s in range(0, len(rows), self.batch_size):
            part = rows[s : s + self.batch_size]
            images = torch.stack([tf(self.train_set[int(i)]["image"]) for i in part])
            self.write(part, self.teacher.logits(images))

    def write(self, rows: np.ndarray, logits: torch.Tensor) -> None:
        """Store ``logits`` as rows ``rows`` and mark them done (logits first, under the lock)."""
        self.teacher_calls += 1
        self.rows_computed += len(rows)
        part = TargetStore.from_logits(logits.detach().cpu(), self.store_topk)
        values = {"logits": part.logits, "topk_idx": part.topk_idx, "topk_val": part.topk_val}
        lock = self.directory.with_suffix(".lock") if self.directory is not None else None
        with file_lock(lock) if lock is not None else nullcontext():
            for name, arr in self._arrays.items():
                arr[rows] = values[name]
                if isinstance(arr, np.memmap):
                    arr.flush()
            self.done[rows] = 1
            if isinstance(self.done, np.memmap):
                self.done.flush()

    def precompute(self, progress: bool = True) -> None:
        """Compute every missing row now: batched loader, progress bar with an ETA."""
        from tqdm.auto import tqdm

        todo = np.flatnonzero(np.asarray(self.done) == 0)
        if not todo.size:
            return
        log.info(
            "precomputing teacher targets for %d of %d images (%s)",
            todo.size,
            len(self),
            self.directory or "not saved",
        )
        start = time.time()
        loader = torch.utils.data.DataLoader(
            _TeacherInputs(self.train_set, self.teacher.pil_transform(), todo),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.teacher.device.type == "cuda",
        )
        bar = tqdm(total=int(todo.size), desc="teacher targets", unit="img", disable=not progress)
        with bar:
            for rows, images in loader:
                self.write(rows.numpy(), self.teacher.logits(images))
                bar.update(len(rows))
        log.info("teacher targets done in %.0f s", time.time() - start)


def compute_teacher_logits(
    teacher: ImageTeacher,
    train_set: Any,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Teacher logits ``(N, C)`` of every image of ``train_set`` (batched, in memory)."""
    targets = LazyTargets(teacher, train_set, None, None, batch_size, num_workers)
    targets.precompute(progress)
    return torch.from_numpy(np.asarray(targets.store.logits)).float()


def open_targets(
    teacher: ImageTeacher,
    train_set: Any,
    cache_dir: str | os.PathLike | None,
    store_topk: int | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
) -> LazyTargets:
    """The cache entry of ``(train_set, teacher)``, created empty if missing (nothing is
    computed here). Without ``cache_dir`` the targets live in memory only."""
    if cache_dir is None:
        log.warning("no cache_dir given: teacher targets are kept in memory, not saved")
        return LazyTargets(teacher, train_set, None, store_topk, batch_size, num_workers)
    n = len(train_set)
    identity = {
        "version": CACHE_VERSION,
        "dataset": dataset_identity(train_set),
        "teacher": teacher.cache_identity(),
        "store_topk": store_topk
        if store_topk is not None and store_topk < teacher.num_concepts
        else None,
        "concept_names_sha1": hashlib.sha1("\n".join(teacher.concept_names).encode()).hexdigest(),
    }
    root = Path(cache_dir) / "concepts"
    root.mkdir(parents=True, exist_ok=True)
    final = root / cache_key(identity)
    with file_lock(final.with_suffix(".lock")):
        if not (final / "meta.json").exists():
            log.info("new teacher-target cache for %d images: %s", n, final)
            _create_entry(final, identity, n, teacher.num_concepts, identity["store_topk"])
    targets = LazyTargets(
        teacher, train_set, final, identity["store_topk"], batch_size, num_workers
    )
    log.info("teacher targets: %d of %d cached in %s", targets.num_done, n, final)
    return targets


def load_or_compute_targets(
    teacher: ImageTeacher,
    train_set: Any,
    cache_dir: str | os.PathLike | None,
    store_topk: int | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[LazyTargets, Path | None]:
    """Open the cache entry and compute every missing row now (the precompute path).

    Returns the targets and their folder (``None`` without ``cache_dir``)."""
    targets = open_targets(teacher, train_set, cache_dir, store_topk, batch_size, num_workers)
    targets.precompute(progress)
    return targets, targets.directory
