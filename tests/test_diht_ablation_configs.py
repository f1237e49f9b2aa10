"""Every row of the DiHT ablation (experiments/diht_ablation) composes and runs (debug=fast).

The override sets come from ``experiments/diht_ablation/ablation.py``, the same module
``run.sh`` uses, with the ablation's data knobs; ``debug=fast`` then shrinks the data and
runs one training batch and one eval batch (Lightning ``fast_dev_run``). The teacher is
an untrained synthetic teacher (the rows only need its file format).
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from experiments.diht_ablation.ablation import (
    DATA_KNOBS,
    ROW_NAMES,
    job_overrides,
    main,
    row_overrides,
)
from tests.conftest import compose_cfg
from vlexp.cli.train import train
from vlexp.filters.cat.filter import DEFAULT_SPACY_MODEL
from vlexp.objectives.concepts.objective import ConceptDistillation
from vlexp.objectives.concepts.teachers import SmallCNN, save_synthetic_teacher


def _cat_available() -> bool:
    """spaCy with the default English model, and the Tesseract binary, are installed."""
    return (
        importlib.util.find_spec("spacy") is not None
        and importlib.util.find_spec(DEFAULT_SPACY_MODEL) is not None
        and shutil.which("tesseract") is not None
    )


needs_cat = pytest.mark.skipif(not _cat_available(), reason="CAT needs spaCy and Tesseract")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    from vlexp.data.synthetic import LEAF_CLASSES

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "synthetic.pt"
    save_synthetic_teacher(
        SmallCNN(len(LEAF_CLASSES), width=8), LEAF_CLASSES, 64, (0.5,) * 3, (0.25,) * 3, path
    )
    return str(path)


def _row_cfg(row: str, teacher: str, tmp_path, extra: list[str] = ()):
    overrides = [
        *row_overrides(row, teacher),
        *DATA_KNOBS,
        "debug=fast",
        "data.source.num_train=64",  # fewer pairs to parse and OCR for the CAT rows
        f"paths.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]
    return compose_cfg(overrides, output_dir=tmp_path / "run")


def test_rows_differ_only_in_their_piece(teacher):
    """Each single-piece row changes CLIP's config in its own group only."""
    base = compose_cfg(row_overrides("clip", teacher) + list(DATA_KNOBS))
    groups = {
        "cat": {"filter"},
        "concepts": {"objective"},
        "hnnce": {"objective"},
        "all": {"objective", "filter"},
        "all_tonics": {"objective", "filter", "sampler"},
    }
    for row, expected in groups.items():
        cfg = compose_cfg(row_overrides(row, teacher) + list(DATA_KNOBS))
        changed = {
            k
            for k in ("objective", "filter", "sampler", "data", "encoder", "optim", "trainer")
            if cfg[k] != base[k]
        }
        assert changed == expected, (row, changed)


def test_rows_choose_the_intended_pieces(teacher):
    cfg = {row: compose_cfg(row_overrides(row, teacher)) for row in ROW_NAMES}
    assert cfg["clip"].objective.name == "clip" and cfg["clip"].filter.name == "none"
    assert cfg["cat"].filter.name == "cat"
    assert cfg["cat"].filter.action is False and cfg["cat"].filter.min_complexity == 1
    assert cfg["cat"].filter.text_spotting is True and cfg["cat"].filter.max_text_overlap == 0.3
    terms = cfg["concepts"].objective.terms
    assert terms.main.name == "clip" and terms.concepts.name == "concepts"
    assert terms.concepts.teacher == {"name": "synthetic", "weights": teacher}
    # row 3's concept term (name, weight, teacher, num_workers; the rest from the class
    # defaults) has the same values as objective=diht's concept term in rows 5 and 6
    diht_concepts = OmegaConf.to_container(cfg["all"].objective.terms.concepts, resolve=True)
    row3 = OmegaConf.to_container(terms.concepts, resolve=True)
    defaults = {
        k: p.default
        for k, p in inspect.signature(ConceptDistillation.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for key, value in diht_concepts.items():
        expected = row3[key] if key in row3 else defaults[key]
        if key == "teacher":
            assert {k: v for k, v in value.items() if v is not None} == expected
        else:
            assert value == expected, key
    assert cfg["hnnce"].objective.name == "hnnce" and cfg["hnnce"].objective.beta1 == 0.5
    assert cfg["all"].objective.terms.contrastive.name == "hnnce"
    assert cfg["all"].filter == cfg["cat"].filter
    assert cfg["all_tonics"].sampler.name == "tonics" and cfg["all"].sampler.name == "random"


def test_job_overrides_carry_seed_and_run_dir(teacher, tmp_path):
    ov = job_overrides("hnnce", teacher, 3, tmp_path / "hnnce" / "seed3")
    assert "seed=3" in ov and f"hydra.run.dir={tmp_path / 'hnnce' / 'seed3'}" in ov
    with pytest.raises(KeyError, match="unknown ablation row"):
        row_overrides("nope", teacher)
    ov = job_overrides("clip", teacher, 0, tmp_path / "clip" / "seed0", steps=300)
    assert {"trainer.max_steps=300", "trainer.val_check_interval=150",
            "optim.warmup_steps=30"} <= set(ov)  # fmt: skip


def test_run_refuses_a_sweep_dir_with_another_step_count(teacher, tmp_path):
    """A finished run of another budget is not silently reused as this budget's row."""
    run_dir = tmp_path / "clip" / "seed0"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("trainer:\n  max_steps: 150\n")
    (run_dir / "metrics.json").write_text("{}")
    argv = ["run", "--out", str(tmp_path), "--teacher", str(teacher), "--rows", "clip"]
    with pytest.raises(SystemExit, match="holds a finished run of 150 steps, not --steps 400"):
        main([*argv, "--steps", "400"])
    assert main([*argv, "--steps", "150"]) == 0  # same budget: reused, nothing run


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(r, marks=needs_cat) if r in ("cat", "all", "all_tonics") else r
        for r in ROW_NAMES
    ],
)
def test_row_runs_with_debug_fast(row, teacher, tmp_path):
    cfg = _row_cfg(row, teacher, tmp_path)
    assert cfg.trainer.fast_dev_run is True
    assert train(cfg) is None  # fast_dev_run returns no monitored value
