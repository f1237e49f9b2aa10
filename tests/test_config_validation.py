"""One validation pass before any work: every component's schema, cross-key checks,
one-line errors naming the full key, exit code 2 from the command line."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import compose_cfg
from vlexp.config import ConfigError, known_train_size, monitor_choices, validate_config
from vlexp.objectives import OBJECTIVES
from vlexp.registry import Opt, Registry
from vlexp.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]


def _error(overrides: list[str], tmp_path: Path) -> str:
    cfg = compose_cfg(overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    return str(err.value)


def _valid(overrides: list[str], tmp_path: Path) -> None:
    validate_config(compose_cfg(overrides, output_dir=tmp_path))


# ------------------------------------------------------------------ cases that fail up front
@pytest.mark.parametrize(
    "overrides,key,allowed",
    [
        (["sampler=tonics", "sampler.schedule.p_max=1.5"], "sampler.schedule.p_max=1.5", "[0, 1]"),
        (["sampler=tonics", "sampler.schedule.end=-0.1"], "sampler.schedule.end", "[0, 1]"),
        (
            ["sampler=tonics", "sampler.object_weighting=biggest"],
            "sampler.object_weighting",
            "sqrt",
        ),
        (["sampler=tonics", "sampler.tagging.source=web"], "sampler.tagging.source", "captions"),
        (["filter=cat", "filter.max_text_overlap=0"], "filter.max_text_overlap=0", "(0, 1]"),
        (["filter=cat", "filter.min_complexity=-1"], "filter.min_complexity", "[0, inf)"),
        (["filter=cat", "filter.ocr_psm=14"], "filter.ocr_psm", "[0, 13]"),
        (["filter=cat", "filter.n_process=0"], "filter.n_process", "-1"),
        (["data.source.noisy_caption_frac=1.5"], "data.source.noisy_caption_frac", "[0, 1]"),
        (["data.source.max_objects=9"], "data.source.max_objects", "[1, 4]"),
        (["data.source.num_train=many"], "data.source.num_train", "an integer"),
        (
            ["data=csv", "data.source.path=p.csv", "data.source.check_files=maybe"],
            "data.source.check_files",
            "true/false",
        ),
        (
            ["data=webdataset", "data.source.urls=s", "data.source.shuffle_buffer=-1"],
            "data.source.shuffle_buffer",
            "[0, inf)",
        ),
        (["objective=hnnce", "objective.beta1=high"], "objective.beta1=high", "a number"),
        (["objective=hnnce", "objective.reduction=max"], "objective.reduction", "mean, sum"),
        (["objective=diht", "objective.terms.contrastive.alpha=-1"], "terms.contrastive.alpha", ""),
        (["objective=diht", "objective.terms.concepts.weight=-2"], "terms.concepts.weight", ""),
        (["objective=softalign", "objective.ema_decay=1.0"], "objective.ema_decay", "(0, 1)"),
        (["encoder.pooling=max"], "encoder.pooling", "mean, cls"),
        (["objective.name=bogus"], "objective.name=bogus", "hnnce"),
        (["eval.monitor=val/bogus"], "eval.monitor=val/bogus", "val/mean_R@1"),
        (["eval.monitor=val/synthetic/i2t_R@7"], "eval.monitor", "eval.ks"),
        (["eval.retrieval_ties=random"], "eval.retrieval_ties=random", "pessimistic"),
        (
            ["eval.retrieval_identical_captions=maybe"],
            "eval.retrieval_identical_captions",
            "true/false",
        ),
        (["trainer.val_check_interval=0"], "trainer.val_check_interval=0", "integer >= 1"),
        (["trainer.val_check_interval=-5"], "trainer.val_check_interval=-5", "(0, 1]"),
        (["trainer.val_check_interval=1.5"], "trainer.val_check_interval", "(0, 1]"),
        (["aug.scale=[1.5,0.2]"], "aug.scale", "0 < lo <= hi <= 1"),
        (["aug.scale=[0.6,0.5]"], "aug.scale", "0 < lo <= hi <= 1"),
        (["aug.scale=[0.0,1.0]"], "aug.scale", "0 < lo <= hi <= 1"),
        (["aug.ratio=[1.2,0.8]"], "aug.ratio", "0 < lo <= hi"),
        (["aug.color_jitter=[0.4,0.4]"], "aug.color_jitter", "brightness, contrast"),
        (["aug.color_jitter=[0.4,0.4,0.4,0.9]"], "aug.color_jitter", "hue <= 0.5"),
        (["aug.color_jitter=-1"], "aug.color_jitter", "each >= 0"),
        (["aug.color_jitter_prob=1.5"], "aug.color_jitter_prob", "[0, 1]"),
        (["aug.gray_scale_prob=-0.1"], "aug.gray_scale_prob", "[0, 1]"),
        (
            ["data.train_crop_scale=null"],
            "data.train_crop_scale is now aug.scale",
            "aug.scale=null",
        ),
        (["data.train_crop_scale=[0.5,1.0]"], "data.train_crop_scale", "aug.scale=[0.5, 1.0]"),
        (["optim.schedule=linear"], "optim.schedule=linear", "const_cooldown"),
        (["optim.schedule=const_cooldown"], "optim.cooldown_steps is required", "decay"),
        (
            ["optim.schedule=const_cooldown", "optim.cooldown_steps=990"],
            "optim.cooldown_steps=990",
            "950 steps left after the warm-up",
        ),
        (["optim.cooldown_steps=10"], "optim.cooldown_steps=10", "optim.schedule=const_cooldown"),
        (
            ["optim.schedule=const_cooldown", "optim.cooldown_steps=10", "optim.cooldown_power=0"],
            "optim.cooldown_power=0",
            "(0, inf)",
        ),
        (["checkpoint.every_n_steps=0"], "checkpoint.every_n_steps=0", "integer"),
        (["checkpoint.every_n_epochs=1.5"], "checkpoint.every_n_epochs=1.5", "integer"),
        (["checkpoint.keep=0"], "checkpoint.keep=0", "-1 (keep all)"),
        (["logger.name=tb"], "logger.name=tb", "tensorboard"),
        (["data.source.num_train=40", "data.batch_size=64"], "data.batch_size=64", "40 pairs"),
    ],
)
def test_bad_value_fails_naming_the_full_key(overrides, key, allowed, tmp_path):
    message = _error(overrides, tmp_path)
    assert key in message and allowed in message
    assert "\n" not in message  # one line


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["+objective.bogus=1"], "objective.bogus"),
        (["objective=diht", "+objective.terms.contrastive.gamma=1"], "terms.contrastive.gamma"),
        (["objective=diht", "+objective.terms.concepts.teacher.size=3"], "teacher.size"),
        (["+data.source.colour=red"], "data.source.colour"),
        (["filter=cat", "+filter.min_complexty=3"], "filter.min_complexty"),
        (["+filter.threshold=3"], "filter.threshold"),
        (["sampler=tonics", "+sampler.schedule.pmax=0.5"], "sampler.schedule.pmax"),
        (["sampler=tonics", "+sampler.tagging.lang=en"], "sampler.tagging.lang"),
        (["+sampler.shuffle=true"], "sampler.shuffle"),
        (["+encoder.depth=3"], "encoder.depth"),
        (["+aug.hflip=0.5"], "aug.hflip"),
        (["+checkpoint.every=3"], "checkpoint.every"),
    ],
)
def test_unknown_key_in_a_component_section_fails(overrides, key, tmp_path):
    message = _error(overrides, tmp_path)
    assert f"{key}: unknown option" in message


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.val_check_interval=0.5"],
        ["trainer.val_check_interval=1"],
        ["trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1"],
        ["aug.scale=[0.2,1.0]"],
        ["aug.scale=[1.0,1.0]"],
        ["aug.scale=null"],
        ["aug=open_clip"],
        ["aug=color"],
        ["aug=none"],
        ["aug.color_jitter=0.3", "aug.gray_scale_prob=1"],
        ["optim.schedule=const"],
        ["optim.schedule=const_cooldown", "optim.cooldown_steps=950", "optim.cooldown_power=2"],
        ["checkpoint.every_n_steps=100", "checkpoint.every_n_epochs=1", "checkpoint.keep=-1"],
        ["logger=tensorboard"],
        ["eval.monitor=val/synthetic/t2i_R@5"],
        ["eval.monitor=val/synthetic/zeroshot_top1"],
        ["data.source.num_train=64", "data.batch_size=64"],
        ["sampler=tonics", "~sampler.schedule", "+sampler.schedule={name: constant, p: 0.3}"],
        ["sampler=tonics", "sampler.schedule.name=cosine"],
        ["objective=hnnce", "objective.beta1=-0.5"],
        ["sampler=tonics", "sampler.schedule=step"],
        ["sampler=tonics", "sampler/schedule=constant", "sampler.schedule.p=0.3"],
    ],
)
def test_valid_values_pass(overrides, tmp_path):
    _valid(overrides, tmp_path)


def test_every_error_is_reported_in_one_line(tmp_path):
    message = _error(
        ["objective=hnnce", "objective.beta1=high", "trainer.val_check_interval=0", "seed=x"],
        tmp_path,
    )
    assert "\n" not in message
    for key in ("objective.beta1", "trainer.val_check_interval", "seed"):
        assert key in message


# ------------------------------------------------------------------ batch vs dataset size
def test_global_batch_counts_every_process(tmp_path):
    over = ["data.source.num_train=100", "data.batch_size=64"]
    _valid(over, tmp_path)  # 64 <= 100 pairs on one process
    message = _error([*over, "trainer.devices=2"], tmp_path)  # 2 x 64 = 128 > 100
    assert "64 x 2 processes" in message and "100 pairs" in message


def _write_table(path: Path, rows: int, trailing_newline: bool) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption"])
        writer.writerows([f"img{i}.png", f"a picture, number {i}"] for i in range(rows))
    if not trailing_newline:
        path.write_bytes(path.read_bytes().rstrip(b"\r\n"))


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_csv_row_count_matches_the_csv_module(trailing_newline, tmp_path):
    table = tmp_path / "pairs.csv"
    _write_table(table, 37, trailing_newline)
    with open(table, newline="") as f:
        reference = sum(1 for _ in csv.reader(f)) - 1  # the header
    cfg = compose_cfg(["data=csv", f"data.source.path={table}"], output_dir=tmp_path)
    assert known_train_size(cfg) == reference == 37
    cfg = compose_cfg(
        ["data=csv", f"data.source.path={table}", "data.source.num_train=10"], output_dir=tmp_path
    )
    assert known_train_size(cfg) == 10


def test_batch_larger_than_a_csv_table_fails_up_front(tmp_path):
    table = tmp_path / "pairs.csv"
    _write_table(table, 20, True)
    base = ["data=csv", f"data.source.path={table}"]
    message = _error([*base, "data.batch_size=32"], tmp_path)
    assert "data.batch_size=32" in message and "20 pairs" in message
    _valid([*base, "data.batch_size=16"], tmp_path)


def test_sizes_not_known_cheaply_are_left_to_setup(tmp_path):
    cfg = compose_cfg(["data=webdataset", "data.source.urls=shards"], output_dir=tmp_path)
    assert known_train_size(cfg) is None
    cfg = compose_cfg(["data=csv", "data.source.path=missing.csv"], output_dir=tmp_path)
    assert known_train_size(cfg) is None


# ------------------------------------------------------------------ monitored metric names
def test_monitor_choices_follow_eval_ks_and_extra_sets(tmp_path):
    cfg = compose_cfg(["eval.ks=[1,3]"], output_dir=tmp_path)
    names = set(monitor_choices(cfg))
    expected = {f"val/synthetic/{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 3)}
    assert expected <= names and "val/mean_R@1" in names
    assert "val/synthetic/i2t_R@5" not in names
    cfg = compose_cfg(["eval=coco", "eval.extra_sets.coco.stages=[val,test]"], output_dir=tmp_path)
    assert "val/coco/i2t_R@1" in monitor_choices(cfg)
    cfg = compose_cfg(["eval=coco"], output_dir=tmp_path)  # test only: never logged at val
    assert "val/coco/i2t_R@1" not in monitor_choices(cfg)


# ------------------------------------------------------------------ the schema helper
@pytest.mark.parametrize(
    "opt,good,bad",
    [
        (
            Opt(float, lo=0.0, hi=1.0),
            [0, 0.0, 0.5, 1, 1.0],
            [-1e-9, 1.0000001, math.nan, True, "0.5"],
        ),
        (Opt(float, lo=0.0, hi=1.0, open_lo=True), [1e-12, 1.0], [0.0, 0, -1.0]),
        (Opt(float, lo=0.0, hi=1.0, open_hi=True), [0.0, 0.999], [1.0, 1]),
        (Opt(int, lo=1), [1, 7], [0, -3, 1.0, True, None]),
        (Opt(int, lo=1, nullable=True), [None, 2], [0, "2"]),
        (Opt(choices=("mean", "sum")), ["mean", "sum"], ["max", None, 1]),
        (Opt(choices=(0, 1)), [0, 1], [True, False, 2]),
        (Opt((bool, dict)), [True, {"a": 1}], [1, "yes"]),
        (Opt(list, each=Opt(float, lo=0.0)), [[], [0.5, 2]], [[-1.0], [0.5, "x"], "ab"]),
    ],
)
def test_opt_accepts_exactly_its_values(opt, good, bad):
    for value in good:
        assert opt.errors(value, "k") == [], value
    for value in bad:
        lines = opt.errors(value, "k")
        assert len(lines) == 1 and lines[0].split("=")[0] in ("k", "k.0", "k.1"), value


def test_nested_registry_and_signature_only_components():
    inner: Registry = Registry("thing", config_group="outer.thing")

    @inner.register("a", schema={"x": Opt(int, lo=0)})
    def make_a(x: int = 0) -> int:
        return x

    @inner.register("b")  # no schema: keys from the signature, values unchecked
    def make_b(y: int = 0) -> int:
        return y

    assert inner.config_errors({"name": "a", "x": 3}) == []
    assert inner.config_errors({"name": "a", "x": -1}) == [
        "outer.thing.x=-1: expected an integer in [0, inf)"
    ]
    assert inner.config_errors({"name": "b", "y": "anything"}) == []
    assert inner.config_errors({"name": "b", "z": 1})[0].startswith("outer.thing.z: unknown")
    assert inner.config_errors("c")[0] == "outer.thing.name=c: expected one of a, b"
    outer = Opt(registry=inner, fields={"weight": Opt(float, lo=0.0)})
    assert outer.errors({"name": "a", "weight": 2.0}, "o") == []
    assert outer.errors({"name": "a", "weight": -2.0}, "o") == [
        "o.weight=-2.0: expected a number in [0, inf)"
    ]


def test_every_registered_component_declares_or_derives_a_schema():
    from vlexp.data.sources import DATASETS
    from vlexp.filters import FILTERS

    for registry in (OBJECTIVES, SAMPLERS, FILTERS, DATASETS):
        for name in registry.names():
            assert registry.schema(name) is not None, f"{registry.kind} {name}"


# ------------------------------------------------------------------ before any work
def test_validation_runs_before_anything_is_built(tmp_path, monkeypatch):
    import vlexp.train.run as train_cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("built something before validating the config")

    monkeypatch.setattr(train_cli, "build_components", must_not_run)
    monkeypatch.setattr(train_cli, "find_resume_point", must_not_run)
    cfg = compose_cfg(["sampler=tonics", "sampler.schedule.p_max=1.5"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="sampler.schedule.p_max"):
        train_cli.train(cfg)


def test_run_exits_2_with_one_line_on_stderr(tmp_path, monkeypatch, capsys):
    import vlexp.cli.train as train_cli
    import vlexp.train.sweep

    monkeypatch.setattr(vlexp.train.sweep, "is_multirun", lambda: False)
    cfg = compose_cfg(["trainer.val_check_interval=0"], output_dir=tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train_cli.run(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "trainer.val_check_interval" in err[0]


@pytest.mark.slow
def test_command_line_user_error_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlexp.run",
            "objective=hnnce",
            "objective.beta1=high",
            "logger=csv",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "objective.beta1=high" in lines[0] and "a number" in lines[0]


def test_batch_larger_than_an_unknown_size_dataset_fails_at_sampler_setup():
    """Sizes known only after reading (shards, filtered pairs) are checked when the
    datamodule builds its sampler, before the first step."""
    with pytest.raises(ValueError, match="lower data.batch_size"):
        SAMPLERS.build({"name": "random"}, num_samples=15, batch_size=8, world_size=2)
    assert len(SAMPLERS.build({"name": "random"}, num_samples=16, batch_size=8, world_size=2)) == 1
