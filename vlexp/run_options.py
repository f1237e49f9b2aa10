"""The options of a training run's own config groups, declared once.

Components (encoder, objective, sampler, filter, data source) declare theirs where they
are registered; this module declares the rest: the top level, ``optim``, ``data`` (besides
``data.source``), ``eval``, ``model_opts``, ``viz``, ``logger``, ``paths`` and ``trainer``.
:func:`vlexp.config.validate_config` checks a composed config against both, unknown keys
included, and ``docs/OPTIONS.md`` is generated from them (``python -m vlexp.options_doc``).
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

from vlexp.registry import Opt

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
LOGGERS = ("wandb", "csv", "tensorboard", "none")
RETRIEVAL_TIES = ("topk", "pessimistic", "optimistic")  # vlexp.eval.metrics.retrieval
_POS_INT = Opt(int, lo=1)
_COUNT = Opt(int, lo=0)

OPTIM = {
    "lr": Opt(float, lo=0, hi=1, open_lo=True, open_hi=True, doc="peak learning rate, in (0, 1)"),
    "weight_decay": Opt(float, lo=0, doc="AdamW weight decay (>= 0)"),
    "betas": Opt(
        list,
        each=Opt(float, lo=0, hi=1, open_hi=True),
        test=lambda v: len(v) == 2,
        doc="AdamW betas: two floats in [0, 1)",
    ),  # fmt: skip
    "eps": Opt(float, lo=0, open_lo=True, doc="AdamW epsilon (> 0)"),
    "warmup_steps": Opt(int, lo=0, doc="linear warm-up steps before the cosine decay (>= 0)"),
    "min_lr_ratio": Opt(float, lo=0, hi=1, doc="final LR as a share of the peak, in [0, 1]"),
    "schedule": Opt(
        choices=("cosine", "const", "const_cooldown"),
        help="after warm-up: cosine decay, constant, or constant then a cool-down",
    ),
    "cooldown_steps": Opt(
        int, lo=1, nullable=True, help="const_cooldown: the last N steps decay to min_lr_ratio"
    ),
    "cooldown_power": Opt(
        float, lo=0, open_lo=True, help="const_cooldown: 1 = linear, else (1 - x) ** power"
    ),
    "fused": Opt(bool, nullable=True, doc="fused AdamW kernel: true/false (null: auto)"),
    "accum_freq": Opt(int, lo=1, doc="micro-batches per step; the loss keeps every negative"),
}

DATA = {
    "batch_size": Opt(int, lo=1, doc="training pairs per device and step (>= 1)"),
    "eval_batch_size": Opt(int, lo=1, nullable=True, doc="images per eval batch (>= 1)"),
    "num_workers": Opt(int, lo=0, doc="data loader worker processes (>= 0)"),
    "max_image_pixels": Opt(
        int,
        lo=1,
        nullable=True,
        help="width x height above which an image is a bad sample, read "
        "from the header, never decoded (null: PIL's own limit)",
    ),
    "jpeg_draft": Opt(bool, help="decode large JPEGs reduced, to no less than the crop needs"),
}
# data.train_crop_scale moved to aug.scale; config._check_augmentation says so in one line
MOVED_DATA_KEYS = ("train_crop_scale",)

EVAL = {
    "ks": Opt(
        list,
        each=_POS_INT,
        test=lambda v: len(v) > 0,
        doc="a non-empty list of integers >= 1 (Recall@K)",
    ),  # fmt: skip
    "chunk_size": Opt(int, lo=1, doc="query rows scored at once in retrieval (>= 1)"),
    "retrieval_ties": Opt(
        choices=RETRIEVAL_TIES,
        doc="one of topk (torch.topk's order, as CLIP_benchmark), pessimistic, optimistic: "
        "how retrieval ranks tied scores",
    ),
    "retrieval_identical_captions": Opt(
        bool, doc="true/false: a caption with the same text as an image's own is its ground truth"
    ),
    "monitor": Opt(str, nullable=True, doc="the validation metric best.ckpt and sweeps follow"),
    "monitor_mode": Opt(choices=("min", "max")),
    "extra_sets": Opt(dict, nullable=True, doc="named eval sets (see eval=coco|flickr30k|...)"),
}

MODEL_OPTS = {
    "grad_checkpointing": Opt(bool, doc="recompute tower activations in backward"),
    "compile": Opt(bool, doc="torch.compile each tower"),
    "compile_mode": Opt(choices=("default", "reduce-overhead", "max-autotune"), nullable=True),
    "compile_backend": Opt(str, doc="torch.compile backend (inductor, eager, aot_eager, ...)"),
}

VIZ = {
    "enabled": Opt(bool, doc="write pictures to <run dir>/viz/ at every validation"),
    "num_images": _POS_INT,
    "num_queries": _POS_INT,
    "top_k": _POS_INT,
}

PROGRESS = {
    "lines": Opt(choices=("auto", "always", "never"),
                 doc="text progress lines: auto (when stdout is not a terminal), always, never"),
    "every_steps": Opt(int, lo=0, doc="a line every N steps (0: none by step count)"),
    "every_s": Opt(float, lo=0, doc="a line every N seconds (0: none by time)"),
}  # fmt: skip

CHECKPOINT = {
    "every_n_steps": Opt(int, lo=1, nullable=True, help="also save every N optimizer steps"),
    "every_n_epochs": Opt(int, lo=1, nullable=True, help="also save every N-th epoch"),
    "keep": Opt(
        int,
        test=lambda v: v >= 1 or v == -1,
        doc="an integer >= 1, or -1 (keep all)",
        help="periodic checkpoints kept, the newest",
    ),
}

PATHS = {
    "root_dir": Opt(str),
    "data_dir": Opt(str),
    "cache_dir": Opt(str),
    "output_dir": Opt(str),
}

LOGGER_OPTIONS = {
    "wandb": {
        "project": Opt(str),
        "entity": Opt(str, nullable=True),
        "group": Opt(str, nullable=True),
        "run_name": Opt(str, nullable=True),
        "mode": Opt(choices=("online", "offline", "disabled"), nullable=True),
    },
    "csv": {},
    "tensorboard": {},
    "none": {},
}

# Trainer arguments vlexp sets itself (giving them in trainer.* would clash)
TRAINER_SET_BY_VLEXP = ("callbacks", "logger", "plugins", "default_root_dir",
                        "use_distributed_sampler", "enable_progress_bar")  # fmt: skip

TRAINER_CHECKED = {
    "precision": Opt(choices=PRECISIONS),
    "accelerator": Opt(choices=ACCELERATORS),
    "devices": Opt(
        (int, str, list),
        test=lambda v: (
            v == "auto"
            or (isinstance(v, int) and (v >= 1 or v == -1))
            or (isinstance(v, list | tuple) and len(v) > 0)
        ),
        doc="an integer >= 1, -1, 'auto' or a list of device ids",
    ),
    "num_nodes": _POS_INT,
    "max_steps": Opt(
        int, test=lambda v: v >= 1 or v == -1, doc="an integer >= 1 (or -1 with max_epochs)"
    ),  # fmt: skip
    "max_epochs": Opt(
        int,
        nullable=True,
        test=lambda v: v >= 1 or v == -1,
        doc="an integer >= 1 or -1 (no limit)",
    ),  # fmt: skip
    "accumulate_grad_batches": _POS_INT,
    "gradient_clip_val": Opt(float, lo=0, nullable=True, doc="max grad norm (0 disables)"),
    "val_check_interval": Opt(
        (int, float),
        nullable=True,
        test=lambda v: (isinstance(v, int) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
        doc="an integer >= 1 (steps) or a float in (0, 1] (share of an epoch)",
    ),
    "check_val_every_n_epoch": Opt(int, lo=1, nullable=True),
    "log_every_n_steps": _POS_INT,
    "num_sanity_val_steps": Opt(int, lo=-1),
    "deterministic": Opt((bool, str), nullable=True),
    "fast_dev_run": Opt((bool, int)),
    "limit_val_batches": Opt((int, float), nullable=True, lo=0),
}

TOP = {
    "task_name": Opt(str),
    "seed": Opt(int, lo=0, hi=2**32 - 1, doc="an integer in [0, 2^32 - 1] (numpy's seed range)"),
    "tags": Opt(list, each=Opt(str)),
    "resume": Opt(str, nullable=True, doc="auto, a run directory or a .ckpt file"),
    "test_after_fit": Opt(bool),
    "optim": Opt(dict, fields=OPTIM),
    "eval": Opt(dict, fields=EVAL),
    "model_opts": Opt(dict, fields=MODEL_OPTS),
    "viz": Opt(dict, fields=VIZ),
    "paths": Opt(dict, fields=PATHS),
    "progress": Opt(dict, fields=PROGRESS),
    "checkpoint": Opt(dict, fields=CHECKPOINT),
    "aug": Opt(dict, doc="an augmentation preset (aug=default|open_clip|color|none)"),
}
# groups whose schema is applied by the validator itself (components, logger, trainer, data)
COMPONENT_KEYS = ("data", "encoder", "objective", "sampler", "filter", "logger", "trainer")


@lru_cache(maxsize=1)
def trainer_arguments() -> tuple[str, ...]:
    """Keyword arguments of ``lightning.Trainer`` read from its source (no import: fast)."""
    spec = importlib.util.find_spec("lightning")  # a top-level spec imports nothing
    if spec is None or not spec.submodule_search_locations:
        return ()
    source = Path(list(spec.submodule_search_locations)[0]) / "pytorch" / "trainer" / "trainer.py"
    if not source.is_file():
        return ()
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args.args + item.args.kwonlyargs
                    return tuple(a.arg for a in args if a.arg != "self")
    return ()


def trainer_schema() -> dict[str, Opt]:
    """Every Trainer argument a config may set: the checked ones, the rest unchecked."""
    schema = {a: Opt(nullable=True) for a in trainer_arguments() if a not in TRAINER_SET_BY_VLEXP}
    schema.update(TRAINER_CHECKED)
    return schema
