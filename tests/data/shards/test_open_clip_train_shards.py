"""open_clip_train trains on shards written by vlexp's exporter, from the same environment.

The two share the webdataset library; this runs a few real ``open_clip_train.main`` steps
(tiny model, CPU, no network) on exported img2dataset-style shards.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlexp.data.readers.memory import colour_block_pairs
from vlexp.data.shards.export import export_webdataset

pytest.importorskip("open_clip_train")

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

RUNNER = textwrap.dedent(
    """
    import sys
    import open_clip
    open_clip.add_model_config(sys.argv[1])
    from open_clip_train.main import main
    main(sys.argv[2:])
    """
)


@pytest.mark.slow
def test_open_clip_train_steps_on_exported_shards(tmp_path: Path) -> None:
    export_webdataset(colour_block_pairs(64, image_size=32, seed=0), tmp_path / "s", shard_size=16)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "vlexp-tiny.json").write_text(json.dumps(TINY))
    args = {
        "--train-data": str(tmp_path / "s" / "{00000..00003}.tar"),
        "--dataset-type": "webdataset",
        "--train-num-samples": "64",
        "--batch-size": "8",
        "--epochs": "1",
        "--workers": "1",
        "--model": "vlexp-tiny",
        "--device": "cpu",
        "--precision": "fp32",
        "--lr": "1e-3",
        "--warmup": "1",
        "--seed": "0",
        "--logs": str(tmp_path / "logs"),
        "--name": "run",
        "--report-to": "",
        "--save-frequency": "1",
        "--log-every-n-steps": "1",
    }
    argv = [sys.executable, "-c", RUNNER, str(tmp_path / "cfg")]
    argv += [x for kv in args.items() for x in kv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    losses = [float(m) for m in re.findall(r"Contrastive_loss: ([0-9.naninf]+) \(", out)]
    assert len(losses) == 8, out[-3000:]  # 64 samples / batch 8, one log line per step
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]  # it learned something: the loss went down
    assert (tmp_path / "logs" / "run" / "checkpoints" / "epoch_1.pt").is_file()
