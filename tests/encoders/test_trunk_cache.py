"""Cached frozen trunks: same gradients and weights as the uncached towers, keyed rows."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlexp.data.pipeline import image_transform
from vlexp.encoders import ENCODERS
from vlexp.encoders.trunk_cache import (
    TrunkCacheError,
    TrunkInputs,
    build_trunk_cache,
    frozen_block_count,
)

SIZE = 64
CAPTIONS = [
    "a red circle left of a blue square",
    "two green triangles",
    "a small yellow star above a large circle",
    "a purple square",
    "a blue circle chasing a red triangle",
    "three stars",
]


def _model(
    last_n: int = 1, image_freeze: str = "last_n", text_freeze: str = "last_n"
) -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS.build(
        {
            "name": "pretrained_small",
            "image_size": SIZE,
            "embed_dim": 32,
            "text": {"freeze": text_freeze, "last_n": last_n},
            "image": {"freeze": image_freeze, "last_n": last_n},
        }
    )


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


def _inputs(num: int = 100, dataset: str = "d0", images: bool = True) -> TrunkInputs:
    return TrunkInputs(
        num_samples=num,
        dataset=dataset,
        images_deterministic=images,
        image_preprocessing={"size": SIZE},
        text_preprocessing={"context_length": 32},
    )


def _batch(model: torch.nn.Module, index: list[int]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(len(CAPTIONS), 3, SIZE, SIZE, generator=gen)
    tokens = model.tokenize(CAPTIONS)
    rows = torch.as_tensor(index) % len(CAPTIONS)
    return {
        "image": images[rows],
        "input_ids": tokens["input_ids"][rows],
        "attention_mask": tokens["attention_mask"][rows],
        "index": torch.as_tensor(index),
    }


def _clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * image @ text.T
    target = torch.arange(len(image))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _train(model, batches, cache=None, steps_per_batch: int = 1):
    """AdamW steps on ``batches``; returns the gradients of every step and final weights."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    grads = []
    for step, batch in enumerate(batches):
        torch.manual_seed(100 + step)  # dropout of the trainable top layers
        if cache is None:
            image = model.encode_image(batch["image"])
            text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        else:
            image, text = cache.encode(model, batch)
        loss = _clip_loss(image, text, model.logit_scale())
        opt.zero_grad()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        opt.step()
    return grads, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.slow
def test_gradients_and_weights_equal_uncached(model, tmp_path) -> None:
    ref_model, cached_model = copy.deepcopy(model), copy.deepcopy(model)
    cache = build_trunk_cache(cached_model, "true", _inputs(), tmp_path)
    assert cache is not None and cache.image is not None and cache.text is not None
    # overlapping batches: the second and third read rows the first stored
    batches = [
        _batch(model, [0, 1, 2, 3]),
        _batch(model, [2, 3, 4, 5]),
        _batch(model, [5, 0, 3, 1]),
    ]
    ref_grads, ref_weights = _train(ref_model, batches)
    grads, weights = _train(cached_model, batches, cache)
    assert cache.image.rows_computed == 6 and cache.text.rows_computed == 6
    for ref, got in zip(ref_grads, grads):
        assert ref.keys() == got.keys() and len(ref) > 10
        for name in ref:
            torch.testing.assert_close(
                got[name], ref[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
            )
    for name in ref_weights:
        torch.testing.assert_close(weights[name], ref_weights[name], rtol=1e-5, atol=1e-6)
    # frozen parts stayed in eval mode in the cached run too
    assert not cached_model.text_tower.model.encoder.layer[0].training
    assert cached_model.text_tower.model.encoder.layer[-1].training


@pytest.mark.slow
def test_stored_rows_are_trunk_outputs_in_float64(model, tmp_path) -> None:
    """Stored rows against the full tower's hidden states computed in float64."""
    cache = build_trunk_cache(model, "auto", _inputs(), tmp_path)
    batch = _batch(model, [0, 1, 2])
    rows = cache.text.features(batch["index"], batch["input_ids"], batch["attention_mask"])
    ref_model = copy.deepcopy(model.text_tower.model).double().eval()
    with torch.no_grad():
        hidden = ref_model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
        ).hidden_states[cache.text.split.frozen_blocks]
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(rows[mask].double(), hidden[mask], rtol=1e-4, atol=1e-4)


def _folder(model, tmp_path, inputs: TrunkInputs, side: str = "text"):
    cache = build_trunk_cache(model, "auto", inputs, tmp_path)
    return getattr(cache, side).store.folder


@pytest.mark.slow
def test_cache_reused_and_invalidated(model, tmp_path) -> None:
    base = _folder(model, tmp_path, _inputs())
    assert base == _folder(model, tmp_path, _inputs())  # same key: same rows
    # a second cache object with the same key reads the rows, computes none
    batch = _batch(model, [0, 1])
    first = build_trunk_cache(model, "auto", _inputs(), tmp_path)
    a = first.text.features(batch["index"], batch["input_ids"], batch["attention_mask"])
    second = build_trunk_cache(model, "auto", _inputs(), tmp_path)
    b = second.text.features(batch["index"], batch["input_ids"], batch["attention_mask"])
    assert second.text.rows_computed == 0 and torch.equal(a, b)
    # dataset, freeze point and weights each select another folder
    assert _folder(model, tmp_path, _inputs(dataset="d1")) != base
    assert _folder(_model(last_n=2), tmp_path, _inputs()) != base
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.text_tower.model.encoder.layer[0].output.dense.bias.add_(1e-3)
    assert _folder(changed, tmp_path, _inputs()) != base
    image_base = _folder(model, tmp_path, _inputs(), "image")
    with torch.no_grad():
        changed.image_tower.model.bn1.running_mean.add_(1e-3)  # a buffer counts too
    assert _folder(changed, tmp_path, _inputs(), "image") != image_base
    # a trainable (top) weight does not invalidate the trunk rows
    top_changed = copy.deepcopy(model)
    with torch.no_grad():
        top_changed.text_tower.model.encoder.layer[-1].output.dense.bias.add_(1.0)
        top_changed.image_tower.model.conv_head.weight.mul_(2.0)
    assert _folder(top_changed, tmp_path, _inputs()) == base
    assert _folder(top_changed, tmp_path, _inputs(), "image") == image_base


def test_random_crop_leaves_images_uncached(model, tmp_path) -> None:
    cache = build_trunk_cache(model, "auto", _inputs(images=False), tmp_path)
    assert cache.image is None and cache.text is not None
    with pytest.raises(TrunkCacheError, match="aug=none") as err:
        build_trunk_cache(model, "true", _inputs(images=False), tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(TrunkCacheError, match="streams"):
        build_trunk_cache(model, "true", _inputs(num=0), tmp_path)
    assert build_trunk_cache(model, "false", _inputs(), tmp_path) is None
    with pytest.raises(ValueError, match="auto"):
        build_trunk_cache(model, "sometimes", _inputs(), tmp_path)


def test_nothing_cached_when_the_stem_trains(tmp_path) -> None:
    m = _model(image_freeze="none")
    assert frozen_block_count(m.image_tower) is None
    cache = build_trunk_cache(m, "true", _inputs(), tmp_path)
    assert cache.image is None and cache.text is not None


def test_fixed_train_transform_ignores_the_seed() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (80, 72, 3), dtype=np.uint8))
    fixed = image_transform(64, (0.5,) * 3, (0.5,) * 3, True, None)
    evaluation = image_transform(64, (0.5,) * 3, (0.5,) * 3, False)
    assert torch.equal(fixed(img, 1), fixed(img, 2))
    assert torch.equal(fixed(img, 1), evaluation(img))
    cropped = image_transform(64, (0.5,) * 3, (0.5,) * 3, True, (0.5, 0.6))
    assert not torch.equal(cropped(img, 1), cropped(img, 2))


class _Pairs:
    """A map-style stand-in for a train source: length and captions."""

    def __init__(self, captions: list[str]) -> None:
        self.captions = captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict:
        return {"caption": self.captions[i], "index": i}


def test_run_config_decides_and_keys_by_dataset(model, tmp_path) -> None:
    from omegaconf import OmegaConf

    from vlexp.encoders.trunk_cache import trunk_cache_for_run

    def cfg(crop, gray=0.0):
        return OmegaConf.create(
            {
                "data": {"source": {"name": "synthetic"}},
                "aug": {"scale": crop, "gray_scale_prob": gray},
                "filter": {"name": "none"},
                "seed": 0,
                "paths": {"cache_dir": str(tmp_path)},
            }
        )

    pairs = _Pairs(CAPTIONS)
    cropped = trunk_cache_for_run(model, cfg([0.9, 1.0]), pairs)
    assert cropped.image is None and cropped.text is not None
    assert trunk_cache_for_run(model, cfg(None, gray=0.2), pairs).image is None  # colour: random
    fixed = trunk_cache_for_run(model, cfg(None), pairs)
    assert fixed.image is not None and fixed.text.store.folder == cropped.text.store.folder
    other = trunk_cache_for_run(model, cfg(None), _Pairs(CAPTIONS[::-1]))
    assert other.text.store.folder != fixed.text.store.folder  # other captions: other rows
    assert other.image.store.folder != fixed.image.store.folder


@pytest.mark.slow
def test_trimmed_padding_equal_without_dropout(model, tmp_path) -> None:
    """Without active dropout the text top runs on the batch's longest caption only."""
    ref_model = copy.deepcopy(model)
    for m in ref_model.text_tower.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cached_model = copy.deepcopy(ref_model)
    cache = build_trunk_cache(cached_model, "true", _inputs(), tmp_path)
    batch = _batch(model, [0, 1, 2, 3, 4, 5])
    assert cache._trim(cached_model.train()) and int(batch["attention_mask"].sum(1).max()) < 32
    ref_grads, _ = _train(ref_model, [batch])
    grads, _ = _train(cached_model, [batch], cache)
    for name in ref_grads[0]:
        torch.testing.assert_close(grads[0][name], ref_grads[0][name], rtol=1e-4, atol=1e-6)


def test_cache_pickles_with_its_model(model, tmp_path) -> None:
    """ddp_spawn pickles the module: the cache must travel with the towers it cuts."""
    import pickle

    cache = build_trunk_cache(model, "true", _inputs(), tmp_path)
    batch = _batch(model, [0, 1])
    cache.text.features(batch["index"], batch["input_ids"], batch["attention_mask"])
    model2, cache2 = pickle.loads(pickle.dumps((model, cache)))
    assert cache2.text.split.tower is model2.text_tower
    assert cache2.text.store.filled(np.array([0, 1, 2])).tolist() == [True, True, False]


@pytest.mark.slow
def test_towers_frozen_whole_cache_pooled_output(tmp_path) -> None:
    """LiT setting (both towers frozen): one pooled vector per sample, projections train."""
    lit = _model(image_freeze="all", text_freeze="all")
    ref_model, cached_model = copy.deepcopy(lit), copy.deepcopy(lit)
    cache = build_trunk_cache(cached_model, "true", _inputs(), tmp_path)
    assert cache.text.store.shape == (lit.text_tower.output_dim,)
    assert cache.image.store.shape == (1280,)
    batches = [_batch(lit, [0, 1, 2, 3]), _batch(lit, [2, 3, 4, 5])]
    ref_grads, ref_weights = _train(ref_model, batches)
    grads, weights = _train(cached_model, batches, cache)
    assert cache.text.rows_computed == 6 and cache.image.rows_computed == 6
    for ref, got in zip(ref_grads, grads):
        assert set(ref) == set(got) == {"log_logit_scale", "image_proj.weight", "text_proj.weight"}
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-6)
    for name in ref_weights:
        torch.testing.assert_close(weights[name], ref_weights[name], rtol=1e-5, atol=1e-6)
    # the stored rows are the towers' pooled outputs, recomputed here in float64
    batch = batches[0]
    rows = cache.text.store.read(batch["index"].numpy())
    tower = copy.deepcopy(lit.text_tower).double().eval()
    with torch.no_grad():
        pooled = tower(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(torch.from_numpy(rows).double(), pooled, rtol=1e-4, atol=1e-5)


def test_experiment_tonics_trains_on_fixed_images() -> None:
    """The recipe's images are uncropped and its towers locked, so both are cached whole."""
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["experiment=tonics"])
    assert cfg.aug.scale is None and cfg.encoder.trunk_cache == "auto"
    assert cfg.encoder.image.freeze == "all" and cfg.encoder.text.freeze == "all"
