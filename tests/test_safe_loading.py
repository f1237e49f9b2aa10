"""A crafted pickle through every path that loads a user-supplied file: nothing runs.

The payload is a pickle whose ``__reduce__`` writes a marker file when unpickled. Each
path must refuse it with an error naming the file as unsafe, and the marker must never
appear. Truncated files are told apart from unsafe ones; Hugging Face model folders
are read through the same loader.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
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
    assert str(path) in message and "\n" not in message and "unsafe" in message
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
    text_pickle = evil.raw.with_name("protocol0.pt")  # a text pickle: read, never run
    text_pickle.write_bytes(pickle.dumps({"x": _Payload(evil.marker)}, protocol=0))
    _refused(evil, text_pickle, load_torch_file, text_pickle)


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


# ------------------------------------------------------------------ unsafe is not truncated
def _legacy(obj) -> Callable[[Path], None]:
    return lambda p: torch.save(obj, p, _use_new_zipfile_serialization=False)


def _raw(obj, protocol: int) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(pickle.dumps(obj, protocol=protocol))


def _cut(write, keep: float | int) -> Callable[[Path], None]:
    def cut(p: Path) -> None:
        write(p)
        data = p.read_bytes()
        p.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])

    return cut


def _torch_zip(obj) -> Callable[[Path], None]:
    return lambda p: torch.save(obj, p)


def _safetensors(p: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.ones(256)}, str(p))


TENSORS = {"w": torch.arange(256.0), "step": 3}
UNSAFE = {  # file name -> how it is written; each is a pickle that is not plain tensors
    "legacy_format.pt": lambda m: _legacy({"w": torch.zeros(2), "x": _Payload(m)}),
    "raw_protocol2.pt": lambda m: _raw({"x": _Payload(m)}, 2),
    "raw_protocol4.ckpt": lambda m: _raw({"x": _Payload(m)}, 4),
    "raw_protocol5.bin": lambda m: _raw([_Payload(m)], 5),
    "text_pickle.pth": lambda m: _raw({"x": _Payload(m)}, 0),
    "torch_zip.safetensors": lambda m: _torch_zip(TENSORS),  # a pickle posing as safetensors
    "legacy.safetensors": lambda m: _legacy(TENSORS),
}
TRUNCATED = {
    "zip_half.ckpt": _cut(_torch_zip(TENSORS), 0.5),
    "zip_300_bytes.ckpt": _cut(_torch_zip(TENSORS), 300),
    "legacy_half.pt": _cut(_legacy(TENSORS), 0.5),
    "empty.ckpt": _cut(_torch_zip(TENSORS), 0),
    "half.safetensors": _cut(_safetensors, 0.5),
}


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_unsafe_files_are_named_unsafe(evil, tmp_path, name):
    path = tmp_path / name
    UNSAFE[name](evil.marker)(path)
    _refused(evil, path, load_torch_file, path, "checkpoint")
    with pytest.raises(UnsafeFileError, match="not plain tensors|named .safetensors"):
        load_torch_file(path, "checkpoint", mmap=True)
    assert not evil.marker.exists()


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_truncated_files_are_named_truncated_not_unsafe(tmp_path, name):
    path = tmp_path / name
    TRUNCATED[name](path)
    with pytest.raises(UnreadableFileError) as info:
        load_torch_file(path, "checkpoint")
    message = str(info.value)
    assert str(path) in message and "truncated" in message and "unsafe" not in message


def test_legacy_format_with_only_tensors_loads(tmp_path):
    """torch's pre-1.6 format (one binary pickle) holding tensors and plain values is read
    by the same weights_only unpickler; a checkpoint in it is resumable."""
    from vlexp.train.checkpoints import checkpoint_step

    path = tmp_path / "old.ckpt"
    _legacy({"global_step": 7, "w": torch.arange(5.0), "meta": {"a": [1, None]}})(path)
    got = load_torch_file(path, mmap=True)
    assert torch.equal(got["w"], torch.arange(5.0)) and got["meta"] == {"a": [1, None]}
    assert checkpoint_step(path) == 7


@pytest.mark.parametrize("kind", ["torch_zip", "legacy_format", "raw_pickle"])
def test_resume_auto_refuses_an_unsafe_newest_checkpoint(evil, tmp_path, kind):
    """A crash truncates a checkpoint, it never makes one unsafe: resume=auto skips a
    truncated newest file but stops at an unsafe one instead of resuming from an older one."""
    import os

    from vlexp.train.slurm import find_resume_point

    run = tmp_path / "resumed"
    good = run / "checkpoints" / "last.ckpt"
    good.parent.mkdir(parents=True)
    torch.save({"global_step": 2, "state_dict": {"model.w": torch.zeros(1)}}, good)
    os.utime(good, (1000, 1000))
    newest = run / "hpc_ckpt_1.ckpt"
    payload = {"global_step": 9, "x": _Payload(evil.marker)}
    write = {"torch_zip": _torch_zip, "legacy_format": _legacy}.get(kind)
    (write(payload) if write else _raw(payload, 2))(newest)
    os.utime(newest, (2000, 2000))
    _refused(evil, newest, find_resume_point, "auto", run)
    _cut(_torch_zip({"global_step": 9}), 0.5)(newest)
    os.utime(newest, (2000, 2000))
    point = find_resume_point("auto", run)
    assert (point.path, point.step) == (str(good), 2)
    assert point.skipped[0][0] == str(newest) and "truncated" in point.skipped[0][1]


# ------------------------------------------------------------------ Hugging Face text towers
def _bert_folder(folder: Path, layout: str) -> torch.nn.Module:
    """A tiny random BERT saved as ``layout``: one safetensors file, safetensors shards, or
    a plain ``pytorch_model.bin`` (the reference model is returned)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)  # fmt: skip
    model = BertModel(cfg)
    model.save_pretrained(folder, max_shard_size="20KB" if layout == "sharded" else "5GB")
    if layout == "bin":
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return model


@pytest.fixture
def hf_reads_no_file(monkeypatch):
    """Fail if transformers opens a weights file itself (its torch.load / safe_open)."""
    import transformers.modeling_utils as hf

    def refuse(*args, **kwargs):
        raise AssertionError("transformers read a weights file itself")

    monkeypatch.setattr(hf, "load_state_dict", refuse)
    monkeypatch.setattr(hf, "safe_open", refuse)


@pytest.mark.parametrize("layout", ["single", "sharded", "bin"])
def test_hf_text_tower_weights_go_through_the_safe_loader(
    tmp_path, monkeypatch, hf_reads_no_file, layout
):
    import vlexp.encoders.weights as weights_mod
    from vlexp.encoders.text_towers import load_text_tower

    folder = tmp_path / "bert"
    reference = _bert_folder(folder, layout)
    read: list[str] = []

    def spy(path, *args, **kwargs):
        read.append(Path(path).name)
        return load_torch_file(path, *args, **kwargs)

    monkeypatch.setattr(weights_mod, "load_torch_file", spy)
    tower = load_text_tower(folder)
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    assert sorted(read) == files and (len(files) > 1) == (layout == "sharded")
    got = tower.model.state_dict()
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("pooler.")}
    assert set(got) == set(expected)  # vlexp drops the pooler
    assert all(torch.equal(got[k], v) for k, v in expected.items())


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors"])
def test_hf_text_tower_refuses_a_pickle_that_would_run_code(evil, tmp_path, hf_reads_no_file, name):
    from vlexp.encoders.text_towers import load_text_tower

    folder = tmp_path / "bert"
    reference = _bert_folder(folder, "bin")
    (folder / "pytorch_model.bin").unlink()
    torch.save({**reference.state_dict(), "x": _Payload(evil.marker)}, folder / name)
    _refused(evil, folder / name, load_text_tower, folder)
    with pytest.raises(UnsafeFileError) as info:
        load_text_tower(folder)
    assert "weights_only=False" not in str(info.value)


def test_fewshot_probe_refuses_the_checkpoint(evil):
    from vlexp.cli import fewshot
    from vlexp.train import checkpoints

    _refused(evil, evil.ckpt, checkpoints.load_module_and_data, str(evil.ckpt))
    _refused(evil, evil.ckpt, fewshot.probe, {"ckpt": str(evil.ckpt)})


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
    import logging

    from vlexp.train.run import train

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    # Lightning's own log (its checkpoint connector logs "`weights_only` was not set")
    connector = logging.getLogger("lightning.pytorch")
    seen = Lines()
    connector.addHandler(seen)
    try:
        common = ["debug=tiny_run", "trainer.val_check_interval=2"]
        train(compose_cfg([*common, "trainer.max_steps=2"], output_dir=tmp_path))
        last = tmp_path / "checkpoints" / "last.ckpt"
        state = load_torch_file(last, "checkpoint")
        assert state["global_step"] == 2
        assert any(k.startswith("model.") for k in state["state_dict"])
        assert "optimizer_states" in state  # the whole training state, not weights only
        train(compose_cfg([*common, "trainer.max_steps=3", "resume=auto"], output_dir=tmp_path))
        assert load_torch_file(last, "checkpoint")["global_step"] == 3
    finally:
        connector.removeHandler(seen)
    assert any("Restoring states from the checkpoint" in line for line in seen.lines)
    assert not any("weights_only" in line for line in seen.lines), seen.lines
