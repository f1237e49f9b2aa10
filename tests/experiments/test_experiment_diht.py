"""The DiHT ablation (experiments/diht_ablation): its rows compose into the intended
configurations and run, and its arithmetic matches independent computations."""

from __future__ import annotations

import importlib.util
import math
import shutil

import numpy as np
import pytest
from scipy import stats

from experiments.diht_ablation import analysis
from experiments.diht_ablation.ablation import (
    COMPARISONS,
    ROWS,
    Comparison,
    budget,
    comparisons_for,
    main_rows,
    row_overrides,
)
from experiments.diht_ablation.run import job_cpu_estimate, make_jobs
from tests.conftest import compose_cfg
from vlexp.filters.cat.filter import DEFAULT_SPACY_MODEL

T = "/nonexistent/teacher.pt"  # composing does not read the teacher file


def _cfg(row: str):
    return compose_cfg(row_overrides(row, T))


def _cat_available() -> bool:
    return (
        importlib.util.find_spec("spacy") is not None
        and importlib.util.find_spec(DEFAULT_SPACY_MODEL) is not None
        and shutil.which("tesseract") is not None
    )


def test_objective_rows_differ_from_all_in_one_switch():
    """concepts / hnnce / hnnce_beta0 are DiHT's objective with pieces switched off."""
    full = _cfg("all").objective.terms
    assert full.contrastive.name == "hnnce" and full.contrastive.beta1 == 0.5
    assert full.concepts.weight == 1.0 and full.concepts.teacher.weights == T
    hn, hn0, con = (_cfg(r).objective.terms for r in ("hnnce", "hnnce_beta0", "concepts"))
    assert hn.concepts.weight == 0.0 and hn.contrastive == full.contrastive
    assert hn0.contrastive.beta1 == 0.0 and hn0.concepts.weight == 0.0
    assert {k: v for k, v in hn0.contrastive.items() if k != "beta1"} == {
        k: v for k, v in hn.contrastive.items() if k != "beta1"
    }
    assert con.contrastive.beta1 == 0.0 and con.concepts == full.concepts
    assert _cfg("clip").objective.name == "clip"


def test_cat_rows_switch_the_intended_criteria():
    on = {}
    for row in ("cat", "cat_complexity", "cat_action", "cat_text", "all", "cat_clean"):
        f = _cfg(row).filter
        assert f.name == "cat" and f.min_complexity == 1 and f.max_text_overlap == 0.3
        on[row] = {c for c in ("complexity", "action", "text_spotting") if f[c]}
    assert on["cat"] == on["all"] == on["cat_clean"] == {"complexity", "text_spotting"}
    assert on["cat_complexity"] == {"complexity"}
    assert on["cat_action"] == {"action"}
    assert on["cat_text"] == {"text_spotting"}
    for row in ("clip", "hnnce", "hnnce_beta0", "concepts", "clip_clean", "clip_detailed"):
        assert _cfg(row).filter.name == "none"


def test_conditions_set_the_generator_knobs():
    noisy, clean, detailed = (_cfg(r).data.source for r in ("clip", "clip_clean", "clip_detailed"))
    assert noisy.low_complexity_frac == 0.3 and noisy.text_in_image_frac == 0.3
    assert clean.low_complexity_frac == 0.0 and clean.text_in_image_frac == 0.0
    assert noisy.train_caption == clean.train_caption == "sampled"
    assert detailed.train_caption == "detailed" and detailed.text_in_image_frac == 0.0
    assert noisy.action_frac == clean.action_frac == 0.5
    # each comparison's two rows share the data condition: only the method differs
    for c in COMPARISONS:
        assert ROWS[c.method].condition == ROWS[c.baseline].condition, c.label


def test_jobs_carry_budget_and_seed():
    jobs = make_jobs(["clip", "all"], (0, 3), T, steps=120, num_train=500)
    assert [(j.key, j.seed) for j in jobs] == [("clip", 0), ("all", 0), ("clip", 3), ("all", 3)]
    assert {"trainer.max_steps=120", "optim.warmup_steps=12", "data.source.num_train=500"} <= set(
        jobs[0].overrides
    )
    cfg = compose_cfg(jobs[1].overrides)
    assert cfg.trainer.max_steps == 120 and cfg.data.num_workers == 0
    with pytest.raises(ValueError, match="--steps must be at least 10"):
        budget(steps=5)
    with pytest.raises(KeyError, match="unknown ablation row"):
        row_overrides("nope", T)
    assert job_cpu_estimate("cat_text", 200, 2000) > job_cpu_estimate("clip", 200, 2000)
    assert "concepts_detailed" not in main_rows() and "concepts_detailed" in main_rows(True)
    assert all(c.baseline != "clip_detailed" for c in comparisons_for(main_rows()))


# --------------------------------------------------------------------------- arithmetic
def _result(i2t: float, t2i: float) -> dict:
    return {"test": {"test/synthetic/i2t_R@1": i2t, "test/synthetic/t2i_R@1": t2i}}


def test_paired_difference_matches_scipy():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.3, size=(5, 2))
    meth = base + rng.normal(0.02, 0.01, size=(5, 2))
    results = {("clip", s): _result(*base[s]) for s in range(5)}
    results |= {("cat", s): _result(*meth[s]) for s in range(5)}
    results[("cat", 9)] = _result(0.9, 0.9)  # an unpaired seed is ignored
    p = analysis.compare(results, Comparison("x", "cat", "clip"))
    d = 100 * (meth.mean(axis=1) - base.mean(axis=1))
    lo, hi = stats.t.interval(0.95, df=4, loc=d.mean(), scale=stats.sem(d))
    assert p.n == 5 and p.mean == pytest.approx(d.mean())
    assert (p.lo, p.hi) == (pytest.approx(lo, abs=1e-3), pytest.approx(hi, abs=1e-3))


def test_rows_to_extend_picks_small_differences():
    results = {}
    for s in range(3):
        results[("clip", s)] = _result(0.20 + 0.01 * s, 0.20)
        results[("cat", s)] = _result(0.25 + 0.01 * s, 0.25)  # +5 points
        results[("hnnce_beta0", s)] = _result(0.204 + 0.01 * s, 0.20)  # +0.2 points
    comps = comparisons_for(["clip", "cat", "hnnce_beta0"])
    assert analysis.rows_to_extend(results, comps) == {"hnnce_beta0", "clip"}
    assert analysis.rows_to_extend(results, comps, max_seeds=3) == set()


def _fewshot(init: list[list[float]], scratch: list[list[float]]) -> dict:
    return {
        "ks": [0, 1, 2],
        "num_classes": 12,
        "zeroshot_init": {"per_seed": init},
        "scratch": {"per_seed": scratch},
    }


def test_fewshot_paired_averages_shot_seeds_then_pairs_training_seeds():
    nan = math.nan
    rng = np.random.default_rng(1)
    fs, diffs = {}, []
    for seed in (0, 1, 2):
        zi = rng.uniform(0.1, 0.2, size=(2, 3))
        sc = rng.uniform(0.05, 0.15, size=(2, 3))
        fs[seed] = _fewshot([[0.15] * 3, *zi.tolist()], [[nan] * 3, *sc.tolist()])
        diffs.append(100 * (zi.mean() - sc.mean()))  # mean over k = 1, 2 and shot seeds
    p = analysis.fewshot_paired(fs, (1, 2))
    assert p.mean == pytest.approx(np.mean(diffs))
    assert p.sd == pytest.approx(np.std(diffs, ddof=1))
    table = analysis.fewshot_table(fs, (0, 1, 2))
    assert "| 0 | 15.0 | n/a |" in table and table.count("\n") == 4
    lines = analysis.verdict_lines({}, [], fs, small_ks=(1, 2))
    assert len(lines) == 1 and lines[0].startswith("- (4) a zero-shot-initialised")


needs_cat = pytest.mark.skipif(not _cat_available(), reason="CAT needs spaCy and Tesseract")


@pytest.mark.slow
@pytest.mark.parametrize(
    "row",
    [pytest.param(r, marks=needs_cat) if "cat" in r or r == "all" else r for r in ROWS],
)
def test_row_runs_with_debug_fast(row, teacher_file, tmp_path):
    """Each row trains one batch and evaluates (Lightning ``fast_dev_run``)."""
    from vlexp.train.run import train

    overrides = [
        *row_overrides(row, teacher_file),
        "debug=fast",
        # few pairs to parse and OCR; action-only keeps about one in six
        f"data.source.num_train={256 if row == 'cat_action' else 64}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    cfg = compose_cfg(overrides, output_dir=tmp_path / "run")
    assert cfg.trainer.fast_dev_run is True
    assert train(cfg) is None  # fast_dev_run returns no monitored value
