"""Hydra conventions: presets do not override the command line, required values are
``???``, the progress bar's epoch total is true, the results title names what ran."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_cfg
from vlexp.config import ConfigError, validate_config
from vlexp.data.sources import DATASETS
from vlexp.train.progress import EpochProgressBar, epoch_batches, last_epoch
from vlexp.train.report import run_title

# ---- debug presets choose a logger only when the command line did not


@pytest.mark.parametrize("preset", ["fast", "tiny_run"])
def test_debug_preset_keeps_the_logger_given_on_the_command_line(preset):
    assert compose_cfg([f"debug={preset}"]).logger.name == "csv"  # the preset's default
    for overrides in ([f"debug={preset}", "logger=wandb"], ["logger=wandb", f"debug={preset}"]):
        logger = compose_cfg(overrides).logger
        assert logger.name == "wandb" and logger.project == "vlexp", overrides


# ---- required values


@pytest.mark.parametrize(
    "data,key",
    [
        ("csv", "data.source.path"),
        ("webdataset", "data.source.urls"),
        ("wds_indexed", "data.source.urls"),
    ],
)
def test_required_values_are_missing_marks_and_fail_naming_the_key(data, key, tmp_path):
    preset = OmegaConf.load(f"{CONF_DIR}/data/{data}.yaml")
    assert OmegaConf.is_missing(preset.source, key.rsplit(".", 1)[1])  # ``???`` in the file
    cfg = compose_cfg([f"data={data}"], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    lines = [line for line in str(err.value).splitlines() if key in line]
    assert len(lines) == 1 and "is required" in lines[0], str(err.value)
    # built directly (export and tag tools), the source's own check names the key
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        DATASETS.build(OmegaConf.to_container(cfg.data.source, resolve=True))


def test_webdataset_sources_replace_the_required_urls(tmp_path):
    cfg = compose_cfg(
        ["data=webdataset", "data.source.sources=['/a/{0..1}.tar','/b/{0..1}.tar']"],
        output_dir=tmp_path,
    )
    validate_config(cfg)  # urls stays ??? but its alternative is given


@pytest.mark.slow
def test_command_with_a_missing_value_fails_naming_it(tmp_path):
    from tests.scale_helpers import run_vlexp

    proc = run_vlexp(["data=csv"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "data.source.path is required" in proc.stdout + proc.stderr


# ---- progress bar


def _simulate(max_epochs: int, max_steps: int, batches: int) -> dict[int, int]:
    """Batches trained in each epoch, by running the loop one batch at a time."""
    trained: dict[int, int] = {}
    step, epoch = 0, 0
    while max_epochs < 0 or epoch < max_epochs:
        for _ in range(batches):
            if 0 < max_steps <= step:
                return trained
            trained[epoch] = trained.get(epoch, 0) + 1
            step += 1
        epoch += 1
    return trained


@pytest.mark.parametrize("max_epochs", [-1, 1, 3, 7])
@pytest.mark.parametrize("max_steps", [-1, 1, 5, 29, 30, 31, 100])
@pytest.mark.parametrize("batches", [1, 3, 10, 30])
def test_epoch_total_matches_a_simulated_run(max_epochs, max_steps, batches):
    if max_epochs < 0 and max_steps < 0:
        assert last_epoch(max_epochs, max_steps, batches) is None  # unbounded
        return
    trained = _simulate(max_epochs, max_steps, batches)
    assert last_epoch(max_epochs, max_steps, batches) == max(trained)
    for epoch, count in trained.items():
        assert epoch_batches(epoch, max_steps, batches) == count


def test_stream_of_unknown_length_shows_no_epoch_total():
    assert last_epoch(-1, 500, float("inf")) is None
    assert last_epoch(4, 500, float("inf")) == 3
    assert epoch_batches(2, 500, float("inf")) == float("inf")


def test_progress_bar_description_with_max_steps():
    bar = EpochProgressBar()
    bar._trainer = SimpleNamespace(  # what the bar reads from its trainer
        max_epochs=-1, max_steps=100, num_training_batches=30, current_epoch=2
    )
    # Lightning's own bar says "Epoch 2/-2" here; 100 steps of 30 batches end in epoch 3
    assert bar._get_train_description(2).strip() == "Epoch 2/3"
    assert bar.total_train_batches == 30
    bar._trainer.current_epoch = 3
    assert bar.total_train_batches == 10  # the last epoch stops after 100 - 90 batches


# ---- results title


def _with_choices(overrides: list[str]) -> tuple[object, dict]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        full = compose("train", overrides=overrides, return_hydra_config=True)
    choices = {k: v for k, v in full.hydra.runtime.choices.items() if v is not None}
    return compose_cfg(overrides), choices


def test_title_names_the_tonics_recipe():
    cfg, choices = _with_choices(["experiment=tonics"])
    title = run_title(cfg, choices)
    assert title.startswith("experiment tonics: ")
    # the recipe's loss is InfoNCE (objective preset `tonics` builds `clip`)
    assert "objective clip [tonics]" in title and "sampler tonics" in title
    assert "filter none" in title and "encoder pretrained_small" in title


def test_title_names_the_terms_that_run():
    cfg, choices = _with_choices(["experiment=diht"])
    title = run_title(cfg, choices)
    assert "objective composite(hnnce + concepts) [diht_synthetic]" in title
    assert "filter cat" in title
    cfg, choices = _with_choices(["experiment=diht", "objective.terms.concepts.weight=0"])
    assert "objective composite(hnnce) [diht_synthetic]" in run_title(cfg, choices)
    assert run_title(compose_cfg([])) == (
        "objective clip, sampler random, filter none, encoder tiny"
    )  # outside a Hydra app: what the config builds
