"""Every option of every config group composes and instantiates; bad values fail early."""

from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_cfg
from vlexp.config import ConfigError, validate_config
from vlexp.data.sources import DATASETS
from vlexp.encoders import ENCODERS
from vlexp.filters import FILTERS
from vlexp.objectives import OBJECTIVES
from vlexp.registry import UnknownNameError
from vlexp.samplers import SAMPLERS

GROUPS = [
    "data", "aug", "encoder", "objective", "sampler", "filter", "trainer", "logger", "eval", "paths"
]  # fmt: skip


# presets with required values (``???``) and a value for each
REQUIRED = {
    "data=csv": ["data.source.path={tmp}/pairs.csv"],
    "data=webdataset": ["data.source.urls=shards"],
    "data=wds_indexed": ["data.source.urls=shards"],
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS + ["experiment", "debug"] for o in _options(g)]
)
def test_every_option_composes_and_validates(group, option, tmp_path):
    given = [v.format(tmp=tmp_path) for v in REQUIRED.get(f"{group}={option}", [])]
    # a CSV table's header is read at validation: the preset's default columns
    rows = [f"img{i}.png,caption {i}" for i in range(300)]
    (tmp_path / "pairs.csv").write_text("\n".join(["filepath,caption", *rows]) + "\n")
    cfg = compose_cfg([f"{group}={option}", *given], output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    validate_config(cfg)
    # registered names exist for every component the config selects
    OBJECTIVES.get(cfg.objective.name)
    SAMPLERS.get(cfg.sampler.name)
    FILTERS.get(cfg.filter.name)
    DATASETS.get(cfg.data.source.name)
    ENCODERS.get(cfg.encoder.name)


@pytest.mark.parametrize(
    "experiment,objective",
    [(e, o) for e in _options("experiment") for o in _options("objective")],
)
def test_experiments_accept_any_objective(experiment, objective, tmp_path):
    """An experiment file sets data/trainer knobs, never keys of one objective: the
    documented baselines (``experiment=diht objective=clip``...) must compose."""
    cfg = compose_cfg([f"experiment={experiment}", f"objective={objective}"], output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    validate_config(cfg)
    assert cfg.objective.name == OmegaConf.load(
        Path(CONF_DIR) / "objective" / f"{objective}.yaml"
    ).get("name", cfg.objective.name)


@pytest.mark.parametrize("option", _options("objective"))
def test_objectives_instantiate(option, tmp_path):
    overrides = [f"objective={option}"]
    if option == "diht_synthetic":  # needs a synthetic teacher file: an untrained one
        import torch

        from vlexp.data.synthetic import LEAF_CLASSES
        from vlexp.objectives.concepts.teachers import SmallCNN, save_synthetic_teacher

        torch.manual_seed(0)
        teacher = tmp_path / "synthetic.pt"
        save_synthetic_teacher(
            SmallCNN(len(LEAF_CLASSES), width=8), LEAF_CLASSES, 64, (0.5,) * 3, (0.25,) * 3, teacher
        )
        overrides.append(f"objective.terms.concepts.teacher.weights={teacher}")
    cfg = compose_cfg(overrides, output_dir=tmp_path)
    obj = OBJECTIVES.build(OmegaConf.to_container(cfg.objective, resolve=True), embed_dim=32)
    assert callable(obj)


@pytest.mark.parametrize("option", _options("sampler"))
def test_samplers_instantiate(option, tmp_path):
    import numpy as np

    from vlexp.data.types import TagTable
    from vlexp.samplers.tagging import split_sampler_config

    cfg = compose_cfg([f"sampler={option}"], output_dir=tmp_path)
    tags = TagTable.from_lists([[i % 5] for i in range(200)], [f"c{i}" for i in range(5)])
    options, _ = split_sampler_config(OmegaConf.to_container(cfg.sampler))
    s = SAMPLERS.build(
        options,
        num_samples=200,
        batch_size=8,
        tags=tags,
        total_steps=50,
    )
    batches = list(s)
    assert len(batches) == len(s) > 0 and all(len(b) == 8 for b in batches)
    assert np.all(np.concatenate(batches) < 200)


def test_unknown_group_option_lists_choices():
    with pytest.raises(MissingConfigException) as err:
        compose_cfg(["objective=nonexistent"])
    assert "clip" in str(err.value)  # Hydra lists the available options


def test_unknown_registered_name_lists_choices():
    with pytest.raises(UnknownNameError) as err:
        OBJECTIVES.get("nope")
    assert "clip" in str(err.value) and "objective" in str(err.value)


def test_unknown_option_key_is_rejected():
    with pytest.raises(TypeError, match="accepted options"):
        SAMPLERS.build({"name": "random", "bogus": 1}, num_samples=10, batch_size=2)


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.batch_size=0", "data.batch_size"),
        ("optim.lr=-1.0", "optim.lr"),
        ("optim.fused=maybe", "optim.fused"),
        ("trainer.precision=8-bit", "trainer.precision"),
        ("trainer.devices=0", "trainer.devices"),
        ("encoder.init_temperature=0.0", "encoder.init_temperature"),
        ("trainer.accumulate_grad_batches=4", "trainer.accumulate_grad_batches"),
    ],
)
def test_invalid_values_name_the_key(override, key, tmp_path):
    cfg = compose_cfg([override], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert key in str(err.value)
