"""Lazy concept-distillation targets: computed per batch, kept on disk, reused; and the
synthetic teacher trained on first use."""

import copy
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vlexp.objectives.concepts.teachers as teachers_mod
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.concepts.targets import load_or_compute_targets, open_targets
from vlexp.objectives.concepts.teachers import (
    SmallCNN,
    build_teacher,
    ensure_synthetic_teacher,
    load_synthetic_teacher,
    save_synthetic_teacher,
)
from vlexp.objectives.distributed import gather_features

NUM_CONCEPTS = 6


class _Pairs:
    """Random-colour images with captions; counts how often each image is read."""

    def __init__(self, n: int, seed: int = 0, size: int = 20) -> None:
        rng = np.random.default_rng(seed)
        self.images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
        self.captions = [f"pair {seed} {i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": Image.fromarray(self.images[i]), "caption": self.captions[i], "index": i}


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    save_synthetic_teacher(
        SmallCNN(NUM_CONCEPTS, width=4).eval(),
        [f"c{i}" for i in range(NUM_CONCEPTS)],
        16,
        (0.5,) * 3,
        (0.25,) * 3,
        path,
    )
    return str(path)


def _direct_logits(teacher_file: str, data: _Pairs, rows: list[int]) -> torch.Tensor:
    """Teacher outputs computed independently: plain float64 model, default layout."""
    teacher = load_synthetic_teacher(teacher_file)
    model = copy.deepcopy(teacher.model).to(memory_format=torch.contiguous_format).double()
    tf = teacher.pil_transform()
    with torch.no_grad():
        x = torch.stack([tf(data[i]["image"]) for i in rows]).double()
        return model(x)


def _objective(teacher_file: str, **kw):
    cfg = {
        "name": "concepts",
        "teacher": {"name": "synthetic", "weights": teacher_file},
        "progress": False,
        "batch_size": 4,
        **kw,
    }
    return OBJECTIVES.build(cfg, embed_dim=8)


def _step(obj, index: list[int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(len(index))
    img = F.normalize(torch.randn(len(index), 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(len(index), 8, generator=g), dim=-1)
    out = obj(gather_features(img, txt), torch.tensor(10.0), {"index": torch.tensor(index)}, 0.0)
    out.loss.backward()
    return out.loss


# ------------------------------------------------------------------ teacher fast path
def test_teacher_fast_path_matches_plain_eval(teacher_file):
    teacher = build_teacher("synthetic", weights=teacher_file)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = copy.deepcopy(teacher.model).to(memory_format=torch.contiguous_format).double()
    with torch.no_grad():
        expected = plain(x.double()).float()
    out = teacher.logits(x)
    assert not out.is_inference()  # usable next to autograd
    assert next(teacher.model.parameters()).is_contiguous(memory_format=torch.channels_last) or (
        next(teacher.model.parameters()).dim() != 4
    )
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ lazy == precomputed
def test_lazy_targets_equal_precomputed_and_direct_teacher(teacher_file, tmp_path):
    data = _Pairs(14)
    teacher = build_teacher("synthetic", weights=teacher_file)
    lazy = open_targets(teacher, data, tmp_path / "lazy", batch_size=3)
    rows = [9, 2, 9, 13, 0]
    got = lazy.lookup(torch.tensor(rows))
    assert lazy.num_done == 4 and lazy.rows_computed == 4  # distinct rows only
    pre, _ = load_or_compute_targets(teacher, data, tmp_path / "pre", batch_size=5, progress=False)
    assert pre.num_done == 14
    direct = _direct_logits(teacher_file, data, rows).float()
    tol = {"rtol": 2e-3, "atol": 2e-3}  # stored as float16
    torch.testing.assert_close(got, direct, **tol)
    torch.testing.assert_close(pre.lookup(torch.tensor(rows)), direct, **tol)
    torch.testing.assert_close(pre.lookup(torch.arange(14)), _direct_logits(
        teacher_file, data, list(range(14))
    ).float(), **tol)  # fmt: skip


def test_topk_layout_is_filled_lazily_too(teacher_file, tmp_path):
    data = _Pairs(8)
    teacher = build_teacher("synthetic", weights=teacher_file)
    lazy = open_targets(teacher, data, tmp_path, store_topk=2)
    got = lazy.lookup(torch.tensor([5, 1]))
    direct = _direct_logits(teacher_file, data, [5, 1]).float()
    top = direct.topk(2, dim=1)
    expected = torch.full_like(direct, float("-inf")).scatter(1, top.indices, top.values)
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=2e-3)


# ------------------------------------------------------------------ only what is used
def test_steps_compute_only_their_batches_rows(teacher_file, tmp_path):
    data = _Pairs(40)
    obj = _objective(teacher_file)
    obj.setup(data, cache_dir=str(tmp_path))
    batches = [[3, 1, 4, 1], [5, 9, 2, 6], [5, 3, 5, 8], [9, 1, 9, 3]]
    for b in batches:
        _step(obj, b)
    used = {i for b in batches for i in b}
    assert obj.targets.rows_computed == len(used) == obj.targets.num_done
    assert set(np.flatnonzero(np.asarray(obj.targets.done))) == used
    # batches 1-3 brought new rows (one teacher call each, batch_size 4); batch 4 none
    assert obj.teacher_work() == {"teacher_calls": 3, "rows_computed": len(used)}


def test_precompute_fills_everything_in_setup(teacher_file, tmp_path):
    obj = _objective(teacher_file, precompute=True)
    obj.setup(_Pairs(10), cache_dir=str(tmp_path))
    assert obj.targets.num_done == 10
    assert obj.teacher_work()["teacher_calls"] == 3  # ceil(10 / batch_size 4)
    _step(obj, [0, 9])
    assert obj.teacher_work()["teacher_calls"] == 3


def test_cache_survives_a_restart_and_is_reused(teacher_file, tmp_path):
    data = _Pairs(30)
    first = _objective(teacher_file)
    first.setup(data, cache_dir=str(tmp_path))
    loss1 = _step(first, [4, 8, 15, 16, 23])
    again = _objective(teacher_file)  # a new process would build exactly this
    again.load_state_dict(first.state_dict())
    again.setup(data, cache_dir=str(tmp_path))
    assert again.targets.directory == first.targets.directory
    assert again.targets.num_done == 5
    loss2 = _step(again, [4, 8, 15, 16, 23])
    assert again.teacher_work() == {"teacher_calls": 0, "rows_computed": 0}
    torch.testing.assert_close(loss2, loss1)
    _step(again, [4, 29])  # only the new row is computed
    assert again.teacher_work() == {"teacher_calls": 1, "rows_computed": 1}
    # another teacher input size is another cache entry
    other = _objective(teacher_file, teacher={"name": "synthetic", "weights": teacher_file,
                                              "input_size": 12})  # fmt: skip
    other.setup(data, cache_dir=str(tmp_path))
    assert other.targets.directory != first.targets.directory and other.targets.num_done == 0


def _fill_in_process(teacher_file: str, cache: str, rows: list[int]) -> None:
    teacher = build_teacher("synthetic", weights=teacher_file)
    targets = open_targets(teacher, _Pairs(24), cache, batch_size=2)
    targets.lookup(torch.tensor(rows))


@pytest.mark.slow
def test_two_processes_share_one_cache_entry(teacher_file, tmp_path):
    # spawn, not fork: a forked child can hang in the parent's OpenMP thread pool
    ctx = torch.multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_fill_in_process, args=(teacher_file, str(tmp_path), rows))
        for rows in (list(range(0, 14)), list(range(10, 24)))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    data = _Pairs(24)
    teacher = build_teacher("synthetic", weights=teacher_file)
    targets = open_targets(teacher, data, tmp_path)
    assert targets.num_done == 24
    torch.testing.assert_close(
        targets.lookup(torch.arange(24)),
        _direct_logits(teacher_file, data, list(range(24))).float(),
        rtol=2e-3,
        atol=2e-3,
    )
    assert targets.rows_computed == 0


# ------------------------------------------------------------------ through the trainer
@pytest.mark.slow
def test_short_fit_computes_targets_only_for_the_samples_it_used(teacher_file, tmp_path):
    from tests.conftest import compose_cfg
    from vlexp.train.run import build_components, train

    common = [
        "debug=tiny_run",
        "objective=diht",
        "objective.terms.concepts.teacher.name=synthetic",
        f"objective.terms.concepts.teacher.weights={teacher_file}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "test_after_fit=false",
    ]
    cfg = compose_cfg(common, output_dir=tmp_path / "a")
    _, dm = build_components(cfg)
    dm.setup("fit")
    used: set[int] = set()
    for step, batch in enumerate(dm.train_dataloader()):
        if step == 3:
            break
        used.update(int(i) for i in batch["index"])
    train(cfg)
    (done_file,) = (tmp_path / "cache" / "concepts").glob("*/done.npy")
    done = np.load(done_file)
    assert len(done) == 512
    assert set(np.flatnonzero(done)) == used  # 3 batches of 32, not the 512 images


# ------------------------------------------------------------------ synthetic teacher on first use
def test_missing_synthetic_teacher_fails_with_the_command_to_train_it(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="train one with .*train-synthetic"):
        build_teacher("synthetic", weights=str(missing))
    assert not missing.exists()


def test_missing_synthetic_teacher_is_built_once(tmp_path, monkeypatch):
    calls: list[str] = []
    real = teachers_mod.train_synthetic_teacher

    def counted(out: str, **kw):
        calls.append(out)
        small = {"num_train": 96, "num_val": 32, "image_size": 32, "width": 4, "epochs": 1}
        return real(out, **{**kw, **small})

    monkeypatch.setattr(teachers_mod, "train_synthetic_teacher", counted)
    path = tmp_path / "teachers" / "synthetic.pt"
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_teacher("synthetic", weights=str(path), build_if_missing=True)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and calls == [str(path)]
    teacher = build_teacher("synthetic", weights=str(path), build_if_missing=True)
    assert calls == [str(path)] and teacher.multilabel and teacher.input_size == 32
    assert ensure_synthetic_teacher(path) == Path(path)
