"""A crafted pickle through every path that loads a user-supplied file: nothing runs.

The payload is a pickle whose ``__reduce__`` writes a marker file when unpickled. Each
path must refuse it with an error naming the file, and the marker must never appear.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.io import UnreadableFileError, UnsafeFileError, load_torch_file


class _Payload:
    """Unpickling this writes ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.fixture
def evil(tmp_path) -> SimpleNamespace:
    """A run directory whose ``last.ckpt`` carries the payload, plus loose evil files."""
    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    OmegaConf.save(compose_cfg(["debug=tiny_run"]), run / ".hydra" / "config.yaml")
    blob = {"state_dict": {"model.w": torch.zeros(1)}, "global_step": 0, "x": _Payload(marker)}
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save(blob, ckpt)
    weights = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(1), "x": _Payload(marker)}, weights)
    raw = tmp_path / "raw.pt"  # a plain pickle (not torch's zip format)
    raw.write_bytes(pickle.dumps({"x": _Payload(marker)}, protocol=2))
    return SimpleNamespace(marker=marker, run=run, ckpt=ckpt, weights=weights, raw=raw)


def _refused(evil: SimpleNamespace, path: Path, call, *args, **kwargs) -> None:
    with pytest.raises(UnsafeFileError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert not evil.marker.exists(), "the payload ran"


def test_the_payload_runs_under_an_unsafe_loader(evil, tmp_path):
    """Sanity check of the fixture: plain unpickling does run the payload."""
    other = tmp_path / "OTHER"
    pickle.loads(pickle.dumps(_Payload(other)))
    assert other.read_text() == "ran"


def test_load_torch_file_refuses_both_formats(evil):
    _refused(evil, evil.ckpt, load_torch_file, evil.ckpt, "checkpoint")
    _refused(evil, evil.ckpt, load_torch_file, evil.ckpt, "checkpoint", mmap=True)
    _refused(evil, evil.raw, load_torch_file, evil.raw, "weights")
    _refused(evil, evil.raw, load_torch_file, evil.raw, "weights", mmap=True)
    text_pickle = evil.raw.with_name("protocol0.pt")  # a text pickle: no torch file at all
    text_pickle.write_bytes(pickle.dumps({"x": _Payload(evil.marker)}, protocol=0))
    with pytest.raises(UnreadableFileError, match="protocol0.pt"):
        load_torch_file(text_pickle)
    assert not evil.marker.exists()


def test_load_torch_file_reads_tensors_and_plain_values(tmp_path):
    from safetensors.torch import save_file

    blob = {"a": torch.arange(3), "meta": {"step": 4, "names": ["x", "y"], "none": None}}
    torch.save(blob, tmp_path / "ok.pt")
    got = load_torch_file(tmp_path / "ok.pt", mmap=True)
    assert torch.equal(got["a"], blob["a"]) and got["meta"] == blob["meta"]
    save_file({"w": torch.ones(2)}, str(tmp_path / "ok.safetensors"))
    assert torch.equal(load_torch_file(tmp_path / "ok.safetensors")["w"], torch.ones(2))


def test_truncated_and_missing_files_name_the_file(tmp_path):
    torch.save({"a": torch.zeros(1000)}, tmp_path / "ok.pt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes((tmp_path / "ok.pt").read_bytes()[:300])
    with pytest.raises(UnreadableFileError, match=str(cut)):
        load_torch_file(cut, "checkpoint")
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    with pytest.raises(UnreadableFileError, match="notes.ckpt' is not a torch file"):
        load_torch_file(notes, "checkpoint")
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_torch_file(tmp_path / "nope.ckpt")


def test_fewshot_probe_refuses_the_checkpoint(evil):
    from vlexp.cli import fewshot
    from vlexp.train import checkpoints

    _refused(evil, evil.ckpt, checkpoints.load_module_and_data, str(evil.ckpt))
    _refused(evil, evil.ckpt, fewshot.main, [f"ckpt={evil.ckpt}"])


def test_clip_benchmark_refuses_the_checkpoint(evil):
    from vlexp.cli import clip_benchmark
    from vlexp.train.checkpoints import load_two_tower

    _refused(evil, evil.ckpt, load_two_tower, evil.run)
    _refused(evil, evil.ckpt, clip_benchmark.load_checkpoint, "vlexp", str(evil.ckpt))


@pytest.mark.parametrize("name", ["synthetic", "efficientnet_lite0", "resnet18"])
def test_teachers_refuse_the_weights(evil, name):
    from vlexp.objectives import OBJECTIVES
    from vlexp.objectives.concepts.teachers import build_teacher

    path = evil.ckpt if name == "synthetic" else evil.weights
    _refused(evil, path, build_teacher, name, weights=str(path))
    teacher = {"name": name, "weights": str(path)}
    _refused(evil, path, OBJECTIVES.build, {"name": "concepts", "teacher": teacher}, embed_dim=8)


def test_encoder_weights_are_refused(evil):
    from vlexp.encoders.weights import read_state_dict

    _refused(evil, evil.weights, read_state_dict, evil.weights, "encoder.image.weights")


def test_training_refuses_to_resume_from_it(evil, tmp_path):
    import vlexp.train.run as run_mod

    cfg = compose_cfg(["debug=tiny_run", f"resume={evil.ckpt}"], output_dir=tmp_path / "out")
    _refused(evil, evil.ckpt, run_mod.train, cfg)
    auto = compose_cfg(["debug=tiny_run", "resume=auto"], output_dir=evil.run)
    _refused(evil, evil.ckpt, run_mod.train, auto)
    # the step count read back from last.ckpt after a spawn-based fit
    _refused(evil, evil.ckpt, run_mod.trained_steps, SimpleNamespace(global_step=0), evil.run)


@pytest.mark.slow
def test_vlexp_checkpoints_load_safely_and_resume(tmp_path):
    """A real checkpoint holds only tensors and plain values, and resume=auto uses it."""
    from vlexp.train.run import train

    common = ["debug=tiny_run", "test_after_fit=false", "trainer.val_check_interval=2"]
    train(compose_cfg([*common, "trainer.max_steps=2"], output_dir=tmp_path))
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = load_torch_file(last, "checkpoint")
    assert state["global_step"] == 2 and any(k.startswith("model.") for k in state["state_dict"])
    train(compose_cfg([*common, "trainer.max_steps=3", "resume=auto"], output_dir=tmp_path))
    assert load_torch_file(last, "checkpoint")["global_step"] == 3
