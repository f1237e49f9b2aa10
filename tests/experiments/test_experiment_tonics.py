"""The TOnICS experiment driver: its control, its share measurement, its data fact, its signs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from experiments.tonics_curriculum import run as tonics_exp
from vlexp.data.synthetic.dataset import SyntheticPairs
from vlexp.samplers.tonics import SAME_OBJECT, TonicsBatchSampler


def _sampler(schedule: dict, num_pairs: int, batch: int, epochs: int) -> TonicsBatchSampler:
    tags = SyntheticPairs("train", num_pairs, seed=3).tag_table
    total = epochs * (num_pairs // batch)
    return TonicsBatchSampler(
        num_pairs, batch, seed=3, tags=tags, total_steps=total, schedule=schedule
    )


def test_p_max_zero_plans_only_diverse_batches() -> None:
    """The control row's override switches the curriculum off in every epoch."""
    override = [o for o in tonics_exp.ROWS["tonics_p0"] if "p_max" in o]
    assert override == ["sampler.schedule.p_max=0"]
    sampler = _sampler({"name": "linear", "p_max": 0.0, "end": 0.8}, 480, 16, 2)
    for epoch in (0, 1):
        plan = sampler.epoch_plan(epoch)
        assert not (plan.phase == SAME_OBJECT).any()
        assert sampler.stats["epoch_same_object_share"] == 0.0


def test_default_schedule_share_matches_ramp_mean() -> None:
    """Sampled share of same-object batches ~ the mean of p(t) = min(1, t / 0.8) over steps."""
    num_pairs, batch, epochs = 4800, 4, 2
    sampler = _sampler({"name": "linear", "p_max": 1.0, "end": 0.8}, num_pairs, batch, epochs)
    per_epoch = num_pairs // batch
    total = epochs * per_epoch
    probs = [min(1.0, (s / total) / 0.8) for s in range(total)]  # independent closed form
    expected = sum(probs) / total
    assert expected == pytest.approx(0.6, abs=2e-3)
    assert tonics_exp.expected_share(total) == pytest.approx(expected, abs=1e-12)
    shares = [float(np.mean(sampler.epoch_plan(e).phase == SAME_OBJECT)) for e in range(epochs)]
    sd = math.sqrt(sum(p * (1 - p) for p in probs)) / total  # Bernoulli draws per batch
    assert abs(float(np.mean(shares)) - expected) < 4 * sd


def test_read_curves_and_measured_share(tmp_path: Path) -> None:
    """A Lightning CSV log with blank cells: val points, per-step sampler stats, epoch shares."""
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,step,sampler/epoch_same_object_share,sampler/same_object_batch,"
        "sampler/same_object_prob,train/loss,val/mean_R@1\n"
        "0,0,0.25,0.0,0.1,2.0,\n"
        "0,1,0.25,1.0,0.3,1.9,\n"
        "0,1,,,,,0.125\n"
        "1,2,0.75,1.0,0.6,1.7,\n"
        "1,3,0.75,1.0,0.9,1.6,\n"
        "1,3,,,,,0.5\n"
    )
    c = tonics_exp.read_curves(path)
    assert c.val_steps == [1, 3] and c.val_mean_r1 == [0.125, 0.5]
    assert c.prob_steps == [0, 1, 2, 3] and c.same_batch == [0.0, 1.0, 1.0, 1.0]
    assert c.epoch_shares == {0: 0.25, 1: 0.75}
    assert c.measured_share() == pytest.approx(0.5)
    assert math.isnan(tonics_exp.Curves().measured_share())


def test_same_object_negatives_brute_force() -> None:
    """The data fact against a loop over pairs and their tag sets."""
    split = SyntheticPairs("train", 90, seed=5)
    tags, labels = split.tag_table, split.labels
    sets = [set(tags.values[tags.offsets[i] : tags.offsets[i + 1]].tolist()) for i in range(90)]
    shares = [sum(int(labels[i]) in sets[j] for j in range(90) if j != i) / 89 for i in range(90)]
    assert tonics_exp.same_object_negatives(5, 90) == pytest.approx(sum(shares) / 90, abs=1e-12)


def _fake_results(gain: float) -> dict[tuple[str, int], dict]:
    """Runs whose tonics rows beat their random rows by ``gain`` points on every metric."""
    rng = np.random.default_rng(0)
    out = {}
    for cond, rows in tonics_exp.ROWS_OF.items():
        for seed in tonics_exp.FIRST_SEEDS:
            base = 0.3 + 0.05 * rng.random()
            for row in rows:
                shift = gain / 100 if row == "tonics" else 0.0
                noise = 0.001 * rng.standard_normal()
                test = {m: base + shift + noise for m in tonics_exp.METRICS}
                share = {"random": math.nan, "tonics": 0.6, "tonics_p0": 0.0}[row]
                out[(f"{cond}-{row}", seed)] = {
                    "test": test, "cpu_seconds": 1.0, "same_object_share": share,
                }  # fmt: skip
    return out


def test_report_signs_and_seed_rule() -> None:
    """tonics better than random reads as reproduced; a tie asks for more seeds."""
    facts = {"same_object_negatives": 0.2}
    text, rows = tonics_exp.report(
        _fake_results(3.0), tonics_exp.Budget(), facts, "x.png", "1 min wall"
    )
    by = dict(rows)
    assert by["tonics - random, fine-grained acc"].mean == pytest.approx(3.0, abs=0.3)
    assert by["tonics p=0 - random, fine-grained acc"].mean == pytest.approx(0.0, abs=0.3)
    assert text.count("**reproduced at this scale**") == 2
    # every comparison under 1 point asks for seeds 3 and 4 for its condition's rows: here
    # the p=0 control ties random, while bare-noun tonics beats random by 3 points
    assert tonics_exp.conditions_needing_seeds(_fake_results(3.0)) == ["attributes"]
    assert tonics_exp.needs_more_seeds(_fake_results(0.0))
    assert tonics_exp.conditions_needing_seeds(_fake_results(0.0)) == ["attributes", "bare_nouns"]


def test_budget_is_whole_epochs() -> None:
    """Steps cover whole epochs (so each epoch's logged share is its full plan)."""
    b = tonics_exp.Budget(num_train=3200, batch_size=16, epochs=2)
    assert b.steps == 400
    assert "trainer.max_steps=400" in b.overrides()
    jobs = tonics_exp.make_jobs(b, "bare_nouns", ["random"], [0, 1])
    assert [j.key for j in jobs] == ["bare_nouns-random"] * 2
    assert "data.source.low_complexity_frac=1.0" in jobs[0].overrides


def test_invocation_wall_time_leaves_out_the_gaps() -> None:
    """Two hours between an interrupted invocation's successor and a later resume do not
    count; the interrupted one ends when the next starts."""
    log = [
        {"start": 0.0, "end": None, "jobs_run": None, "load": None},  # interrupted
        {"start": 600.0, "end": 1800.0, "jobs_run": 4, "load": [1.0, 2.0, 3.0]},
        {"start": 1900.0, "end": 1901.0, "jobs_run": 0, "load": [9.0, 9.0, 9.0]},  # reuse only
        {"start": 9000.0, "end": 9600.0, "jobs_run": 2, "load": [1.0, 1.0, 5.5]},
    ]
    text = tonics_exp.describe_invocations(log, now=10_000.0)
    # 600 + 1200 + 600 s = 40 min; the reuse-only invocation's load is not reported
    assert text.startswith("40 min wall in the 3 invocation(s) that trained runs (1 interrupted")
    assert text.endswith("end: 5.5 on 2 cores")
