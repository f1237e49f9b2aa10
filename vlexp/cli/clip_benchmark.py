"""``python -m vlexp.cli.clip_benchmark eval --pretrained RUN_DIR_OR_CKPT --dataset ...``.

CLIP_benchmark's own command line (its ``--flag value`` syntax) with the ``vlexp`` model
type registered and chosen by default for ``eval``; see docs/CLIP_BENCHMARK.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vlexp.errors import exiting_on_user_error
from vlexp.eval.clip_benchmark import (
    MODEL_TYPE,
    ClipBenchmarkModel,
    ClipBenchmarkTokenizer,
    ensure_compat,
    wrap,
)
from vlexp.train.checkpoints import load_two_tower


def load_checkpoint(
    model_name: str = MODEL_TYPE,
    pretrained: str = "",
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[ClipBenchmarkModel, Callable[[Any], torch.Tensor], ClipBenchmarkTokenizer]:
    """CLIP_benchmark loader (``load_clip`` signature): ``pretrained`` is the checkpoint or
    run directory; ``model_name`` a run config path, or anything else (e.g. ``vlexp``) to
    use the config stored in the checkpoint (or its run directory's ``.hydra/config.yaml``).
    ``cache_dir`` is unused."""
    as_file = model_name.endswith((".yaml", ".yml")) or Path(model_name).expanduser().is_file()
    config = model_name if model_name and as_file else None  # a missing .yaml is reported
    model = load_two_tower(pretrained, config, device)
    wrapped, transform, tokenizer = wrap(model)
    return wrapped.to(device), transform, tokenizer


def register() -> None:
    """Add the ``vlexp`` model type to CLIP_benchmark (its CLI's ``--model_type`` choices)
    and apply :func:`ensure_compat`."""
    import clip_benchmark.models as cbm

    ensure_compat()
    cbm.TYPE2FUNC[MODEL_TYPE] = load_checkpoint
    if MODEL_TYPE not in cbm.MODEL_TYPES:
        cbm.MODEL_TYPES.append(MODEL_TYPE)  # the CLI's argparse choices are this list


def main(argv: Sequence[str] | None = None) -> None:
    """CLIP_benchmark's command line with the ``vlexp`` model type registered (and chosen
    by default for ``eval``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    register()
    if args and args[0] == "eval":
        if not any(a == "--model_type" or a.startswith("--model_type=") for a in args):
            args += ["--model_type", MODEL_TYPE]
        if not any(a == "--model" or a.startswith("--model=") for a in args):
            args += ["--model", MODEL_TYPE]
    from clip_benchmark import cli

    old = sys.argv
    sys.argv = ["clip_benchmark", *args]
    try:
        with exiting_on_user_error():
            cli.main()
    finally:
        sys.argv = old


if __name__ == "__main__":
    main()
