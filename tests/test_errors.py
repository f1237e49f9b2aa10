"""A user's error ends the real command with one line on stderr and exit code 2.

Refused files (unsafe, truncated, missing) on every kind of path (a checkpoint to resume
from or evaluate, teacher weights read while building), a YAML tag in ``config=``, and
the bad-sample ceiling, each run as ``python -m vlexp.cli.main <command> ...`` in a
subprocess: exit 2, one line on stderr naming the file, no traceback (an error found
during the fit follows Lightning's own start-up lines).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlexp.data.bad_samples import TooManyBadSamples
from vlexp.errors import one_line

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this writes ``marker`` (a pickle that would run code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _evil_zip(path: Path, marker: Path) -> Path:
    torch.save({"global_step": 1, "state_dict": {}, "x": _Payload(marker)}, path)
    return path


def _cut(path: Path) -> Path:
    torch.save({"global_step": 1, "state_dict": {"model.w": torch.zeros(4096)}}, path)
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _bad_table(folder: Path, n: int = 300, bad_every: int = 10) -> Path:
    """A CSV whose every ``bad_every``-th image is a cut JPEG (10 %, above the 1 % ceiling)."""
    Image.new("RGB", (16, 16), (200, 40, 40)).save(folder / "ok.jpg", quality=95)
    data = (folder / "ok.jpg").read_bytes()
    (folder / "bad.jpg").write_bytes(data[: len(data) // 3])
    rows = ["filepath,caption"] + [
        f"{'bad' if r % bad_every == 0 else 'ok'}.jpg,pair {r}" for r in range(n)
    ]
    path = folder / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _case(name: str, tmp: Path, marker: Path) -> tuple[list[str], Path, str]:
    """(command line, the file the line must name, a word it must say) for case ``name``."""
    run = ["hydra.run.dir=" + str(tmp / "out")]
    if name == "train_resume_unsafe":
        ckpt = _evil_zip(tmp / "evil.ckpt", marker)
        return ["train", "debug=tiny_run", f"resume={ckpt}", *run], ckpt, "unsafe"
    if name == "train_resume_auto_unsafe_newest":
        (tmp / "out" / "checkpoints").mkdir(parents=True)
        torch.save({"global_step": 1, "state_dict": {}}, tmp / "out" / "checkpoints" / "last.ckpt")
        os.utime(tmp / "out" / "checkpoints" / "last.ckpt", (1000, 1000))
        hpc = tmp / "out" / "hpc_ckpt_1.ckpt"  # a raw pickle, the newest file
        hpc.write_bytes(pickle.dumps({"global_step": 2, "x": _Payload(marker)}, protocol=2))
        return ["train", "debug=tiny_run", "resume=auto", *run], hpc, "unsafe"
    if name == "train_resume_truncated":
        ckpt = _cut(tmp / "cut.ckpt")
        return ["train", "debug=tiny_run", f"resume={ckpt}", *run], ckpt, "truncated"
    if name == "train_teacher_weights_unsafe":
        weights = _evil_zip(tmp / "teacher.pt", marker)
        args = ["objective=concepts", "objective.teacher.name=synthetic"]
        return ["train", "debug=tiny_run", *args, f"objective.teacher.weights={weights}", *run], weights, "unsafe"  # fmt: skip
    if name == "eval_missing":
        ckpt = tmp / "nope.ckpt"
        return ["eval", f"ckpt={ckpt}", *run], ckpt, "does not exist"
    if name == "eval_safetensors_pickle":
        ckpt = tmp / "model.safetensors"
        torch.save({"w": torch.zeros(2)}, ckpt)
        return ["eval", f"ckpt={ckpt}", *run], ckpt, "unsafe"
    if name == "fewshot_unsafe":
        ckpt = _evil_zip(tmp / "evil.ckpt", marker)
        return ["fewshot", f"ckpt={ckpt}", *run], ckpt, "unsafe"
    if name == "eval_config_yaml_tag":
        ckpt = tmp / "ok.ckpt"
        torch.save({"global_step": 1, "state_dict": {"model.w": torch.zeros(1)}}, ckpt)
        config = tmp / "config.yaml"
        config.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
        return ["eval", f"ckpt={ckpt}", f"config={config}", *run], config, "YAML"
    if name == "train_bad_sample_ceiling":
        table = _bad_table(tmp)
        args = ["data=csv", f"data.source.path={table}", "data.source.num_train=null",
                "data.source.image_size=16", "data.source.min_samples=100",
                "data.num_workers=2", "test_after_fit=false"]  # fmt: skip
        return ["train", "debug=tiny_run", *args, *run], table, "above the ceiling"
    raise AssertionError(name)


CASES = [
    "train_resume_unsafe",
    "train_resume_auto_unsafe_newest",
    "train_resume_truncated",
    "train_teacher_weights_unsafe",
    "eval_missing",
    "eval_safetensors_pickle",
    "fewshot_unsafe",
    "eval_config_yaml_tag",
    "train_bad_sample_ceiling",
]


DURING_TRAINING = {"train_bad_sample_ceiling"}  # found while the fit reads the data


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_user_error_exits_2_with_one_line_naming_the_file(tmp_path, name):
    marker = tmp_path / "MARKER"
    argv, named, says = _case(name, tmp_path, marker)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "vlexp.cli.main", *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    if name in DURING_TRAINING:  # Lightning's start-up lines come first; the error is last
        assert [line for line in lines if line.startswith("error")] == lines[-1:]
    else:  # refused before any work: the error is all there is
        assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[-1].startswith("error: ") and str(named) in lines[-1] and says in lines[-1]
    assert not marker.exists(), "the payload ran"


def test_a_worker_error_is_reported_without_the_worker_traceback():
    """A DataLoader worker re-raises with its traceback inside the message (torch's
    ExceptionWrapper); the one line is the worker's own message."""
    from torch._utils import ExceptionWrapper

    try:
        raise TooManyBadSamples("pairs.csv: 30 of 100 samples were bad, above the ceiling")
    except TooManyBadSamples:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(TooManyBadSamples) as info:
        wrapped.reraise()
    assert "Traceback" in str(info.value)  # what torch hands the main process
    line = one_line(info.value)
    assert line == "pairs.csv: 30 of 100 samples were bad, above the ceiling"
