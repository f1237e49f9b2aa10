"""The DiHT ablation's rows: data conditions, override sets and the comparisons they feed.

A row is one training configuration (a data condition plus method overrides), run once
per seed by ``experiments/diht_ablation/run.py``. The seed draws the synthetic data and
the initial weights, so rows that share a data condition and a seed form a pair.

Data conditions (``CONDITIONS``):

- ``noisy``: 30 % of train captions reduced to a bare noun, 30 % of train images showing
  their own caption as text (what CAT removes); the val/test splits stay clean.
- ``clean``: neither (the property CAT targets is absent).
- ``detailed``: clean, and every train caption names every object with all its
  attributes (``train_caption=detailed``: no concept is left out of a caption, the
  property concept distillation targets is absent). Optional (``--detailed``).

Objectives: ``clip`` is symmetric InfoNCE (CLIP). Every other objective row is
``objective=diht`` (HN-NCE, both directions summed, + concept distillation) with one
piece switched off by config, so each of them differs from ``all`` and from each other
in one value only: ``hnnce`` (concept weight 0), ``hnnce_beta0`` (concept weight 0 and
HN-NCE's hardness beta 0, i.e. summed InfoNCE: both mechanisms off), ``concepts``
(beta 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NOISY: tuple[str, ...] = (
    "data.source.low_complexity_frac=0.3",
    "data.source.text_in_image_frac=0.3",
    "data.source.action_frac=0.5",
)
"""Generator knobs of the ``noisy`` condition (the first two reach the train split only)."""

CLEAN: tuple[str, ...] = (
    "data.source.low_complexity_frac=0.0",
    "data.source.text_in_image_frac=0.0",
    "data.source.action_frac=0.5",
)
"""The ``clean`` condition: the same scenes' distribution without CAT's targets."""

DETAILED: tuple[str, ...] = (*CLEAN, "data.source.train_caption=detailed")
"""The ``detailed`` condition: clean, and every train caption names every concept."""

CONDITIONS: dict[str, tuple[str, ...]] = {"noisy": NOISY, "clean": CLEAN, "detailed": DETAILED}

DEFAULT_STEPS = 300
DEFAULT_NUM_TRAIN = 4000


def budget(steps: int = DEFAULT_STEPS, num_train: int = DEFAULT_NUM_TRAIN) -> list[str]:
    """The per-run budget: data sizes, batch, ``steps`` optimizer steps, one validation.

    ``data.num_workers=0``: each run renders its images in its own (single-thread)
    process, so two runs side by side use two cores.
    """
    if steps < 10:
        raise ValueError(f"--steps must be at least 10, got {steps}")
    if num_train < 100:
        raise ValueError(f"--num-train must be at least 100, got {num_train}")
    return [
        f"data.source.num_train={num_train}",
        "data.source.num_val=200",
        "data.source.num_test=500",
        "data.source.num_test_compositional=250",
        "data.source.num_test_single=500",
        "data.batch_size=64",
        "data.eval_batch_size=250",
        "data.num_workers=0",
        "viz.enabled=false",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"optim.warmup_steps={max(1, steps // 10)}",
    ]


CAT_COMMON: tuple[str, ...] = (
    "filter=cat",
    "filter.min_complexity=1",
    "filter.max_text_overlap=0.3",
)
"""CAT's thresholds on this data (``cat_check.md`` shows what each keeps): complexity >= 1
drops the bare nouns (the default 2 also drops every one-attribute caption, "a red
circle"); OCR overlap < 0.3 because Tesseract misreads part of the small rendered text."""

CAT_CRITERIA: dict[str, tuple[str, ...]] = {
    # +CAT: complexity and text-spotting; the action criterion would keep only the
    # generator's action captions (relation/attribute captions have no verb)
    "cat": (*CAT_COMMON, "filter.action=false"),
    "cat_complexity": (*CAT_COMMON, "filter.action=false", "filter.text_spotting=false"),
    "cat_action": (*CAT_COMMON, "filter.complexity=false", "filter.text_spotting=false"),
    "cat_text": (*CAT_COMMON, "filter.complexity=false", "filter.action=false"),
}


def diht(teacher: str, *, hnnce: bool = True, concepts: bool = True) -> list[str]:
    """``objective=diht`` with the synthetic teacher, HN-NCE's hardness and/or the concept
    term switched off (beta1=0 makes HN-NCE InfoNCE; weight 0 removes the term)."""
    out = [
        "objective=diht",
        "objective.terms.concepts.teacher.name=synthetic",
        f"objective.terms.concepts.teacher.weights={teacher}",
    ]
    if not hnnce:
        out.append("objective.terms.contrastive.beta1=0.0")
    if not concepts:
        out.append("objective.terms.concepts.weight=0.0")
    return out


@dataclass(frozen=True)
class Row:
    """One configuration of the table: its label, data condition and whether it needs
    the teacher file (rows whose concept term is on)."""

    label: str
    condition: str
    uses_teacher: bool = False


ROWS: dict[str, Row] = {
    "clip": Row("CLIP", "noisy"),
    "cat": Row("+CAT (complexity + text-spotting)", "noisy"),
    "cat_complexity": Row("CAT complexity only", "noisy"),
    "cat_action": Row("CAT action only", "noisy"),
    "cat_text": Row("CAT text-spotting only", "noisy"),
    "concepts": Row("+concept distillation", "noisy", uses_teacher=True),
    "hnnce": Row("+HN-NCE (beta 0.5)", "noisy"),
    "hnnce_beta0": Row("HN-NCE beta 0 (summed InfoNCE)", "noisy"),
    "all": Row("all (DiHT: CAT + HN-NCE + concepts)", "noisy", uses_teacher=True),
    "clip_clean": Row("CLIP, clean data", "clean"),
    "cat_clean": Row("+CAT, clean data", "clean"),
    "clip_detailed": Row("CLIP, detailed captions", "detailed"),
    "concepts_detailed": Row("+concept distillation, detailed captions", "detailed", True),
}
"""Every row; ``main_rows`` picks those a run of the experiment trains."""

DETAILED_ROWS: tuple[str, ...] = ("clip_detailed", "concepts_detailed")


def main_rows(detailed: bool = False) -> list[str]:
    """Rows of one experiment run (the ``detailed`` condition only when asked)."""
    return [r for r in ROWS if detailed or r not in DETAILED_ROWS]


def row_overrides(row: str, teacher: str) -> list[str]:
    """The overrides of ``row``: its data condition and method (no budget, no seed)."""
    if row not in ROWS:
        raise KeyError(f"unknown ablation row {row!r}; rows are {list(ROWS)}")
    method: dict[str, list[str]] = {
        "clip": ["objective=clip", "filter=none"],
        **{k: ["objective=clip", *v] for k, v in CAT_CRITERIA.items()},
        "concepts": [*diht(teacher, hnnce=False), "filter=none"],
        "hnnce": [*diht(teacher, concepts=False), "filter=none"],
        "hnnce_beta0": [*diht(teacher, hnnce=False, concepts=False), "filter=none"],
        "all": [*diht(teacher), *CAT_CRITERIA["cat"]],
        "clip_clean": ["objective=clip", "filter=none"],
        "cat_clean": ["objective=clip", *CAT_CRITERIA["cat"]],
        "clip_detailed": ["objective=clip", "filter=none"],
        "concepts_detailed": [*diht(teacher, hnnce=False), "filter=none"],
    }
    return [*CONDITIONS[ROWS[row].condition], *method[row]]


@dataclass(frozen=True)
class Comparison:
    """``method - baseline`` on the same seeds; ``claim`` names the abstract claim it
    decides (None: a control), ``expect`` what the design predicts."""

    label: str
    method: str
    baseline: str
    claim: str | None = None
    expect: str = ""


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("+CAT vs CLIP", "cat", "clip", "(1) CAT filtering improves over CLIP", "positive"),
    Comparison("CAT complexity only vs CLIP", "cat_complexity", "clip", expect="positive"),
    Comparison("CAT action only vs CLIP", "cat_action", "clip", expect="keeps few pairs"),
    Comparison("CAT text-spotting only vs CLIP", "cat_text", "clip", expect="positive"),
    Comparison("+CAT vs CLIP, clean data", "cat_clean", "clip_clean", expect="about 0"),
    Comparison(
        "+concepts vs CLIP",
        "concepts",
        "clip",
        "(2) concept distillation improves over CLIP",
        "positive",
    ),
    Comparison("+concepts vs its objective without them", "concepts", "hnnce_beta0"),
    Comparison(
        "+concepts vs CLIP, detailed captions",
        "concepts_detailed",
        "clip_detailed",
        expect="smaller than on sampled captions",
    ),
    Comparison(
        "+HN-NCE vs CLIP", "hnnce", "clip", "(3) the HN-NCE loss improves over CLIP", "positive"
    ),
    Comparison("HN-NCE beta 0 vs CLIP", "hnnce_beta0", "clip", expect="about 0"),
    Comparison("HN-NCE beta 0.5 vs beta 0", "hnnce", "hnnce_beta0", expect="positive"),
    Comparison("all (DiHT) vs CLIP", "all", "clip", expect="positive"),
)
"""Every paired comparison of the report, in table order."""


def comparisons_for(rows: Sequence[str]) -> list[Comparison]:
    """The comparisons whose two rows are both among ``rows``."""
    have = set(rows)
    return [c for c in COMPARISONS if c.method in have and c.baseline in have]
