"""``vlexp eval``, ``vlexp fewshot`` and ``vlexp clip_benchmark`` on checkpoints of every
data source (synthetic, csv, webdataset streamed and resampled, wds_indexed), and
evaluation never building the training data: no stream opened, no training shard
indexed, no training table or synthetic training pair read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.cli.main import main
from vlexp.data.readers import csv_reader, webdataset_reader
from vlexp.data.shards import index as shard_index
from vlexp.data.shards.export import export_csv, export_webdataset
from vlexp.data.synthetic import build_synthetic
from vlexp.data.synthetic import dataset as synthetic_dataset
from vlexp.encoders import ENCODERS
from vlexp.train.checkpoints import plain_config

SIZE = 24
TINY = [
    "debug=tiny_run",
    f"data.source.image_size={SIZE}",
    "data.batch_size=8",
    "viz.enabled=false",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The same small synthetic splits as tar shards and as CSV tables (with classes.json)."""
    root = tmp_path_factory.mktemp("sources")
    synth = build_synthetic(
        seed=5, num_train=40, num_val=16, num_test=12, num_test_compositional=0, image_size=SIZE
    )
    for split in ("train", "val", "test"):
        export_webdataset(synth[split], root / "wds" / split, shard_size=8)
        export_csv(synth[split], root / "csv" / split)
    return root


def _source_overrides(kind: str, root: Path) -> list[str]:
    shards = [
        f"data.source.urls={root}/wds/train",
        f"data.source.val_urls={root}/wds/val",
        f"data.source.test_urls={root}/wds/test",
    ]
    return {
        "synthetic": [
            "data.source.num_train=64",
            "data.source.num_val=16",
            "data.source.num_test=12",
        ],
        "csv": [
            "data=csv",
            f"data.source.path={root}/csv/train/pairs.csv",
            f"data.source.val_path={root}/csv/val/pairs.csv",
            f"data.source.test_path={root}/csv/test/pairs.csv",
        ],
        "webdataset": ["data=webdataset", *shards],
        "webdataset_resampled": [
            "data=webdataset",
            *shards,
            "data.source.resampled=true",
            "data.source.samples_per_epoch=32",
        ],
        "wds_indexed": ["data=wds_indexed", *shards],
    }[kind]


KINDS = ["synthetic", "csv", "webdataset", "webdataset_resampled", "wds_indexed"]


def _checkpoint(kind: str, root: Path, run: Path) -> Path:
    """A random-init tiny model saved with its run config, as training saves it."""
    cfg = compose_cfg([*TINY, *_source_overrides(kind, root), f"paths.cache_dir={run}/cache"], run)
    torch.manual_seed(0)
    model = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "global_step": 0,
            "hyper_parameters": {"config": plain_config(cfg), "choices": {}},
        },
        ckpt,
    )
    return ckpt


@pytest.fixture
def no_training_data(monkeypatch, files):
    """Fail on any read of the training data: a stream, an index of training shards, the
    training table, synthetic training pairs."""

    def refuse(*args, **kwargs):
        raise AssertionError("evaluation opened the training stream")

    monkeypatch.setattr(webdataset_reader.WebDatasetPairs, "__init__", refuse)
    real_index, real_csv = shard_index.cached_index, csv_reader.CsvPairs.__init__
    real_synth = synthetic_dataset.SyntheticPairs.__init__

    def index(shards, *args, **kwargs):
        assert not any("/train/" in s for s in shards), "evaluation indexed the training shards"
        return real_index(shards, *args, **kwargs)

    def table(self, path, *args, **kwargs):
        assert "/train/" not in str(path), "evaluation read the training table"
        real_csv(self, path, *args, **kwargs)

    def synth(self, split, num_pairs=None, *args, **kwargs):
        assert split != "train" or num_pairs == 0, "evaluation generated training pairs"
        real_synth(self, split, num_pairs, *args, **kwargs)

    monkeypatch.setattr(shard_index, "cached_index", index)
    for where in ("vlexp.data.sources.common", "vlexp.data.sources.wds_indexed"):
        monkeypatch.setattr(f"{where}.cached_index", index)  # the names the sources call
    monkeypatch.setattr(csv_reader.CsvPairs, "__init__", table)
    monkeypatch.setattr(synthetic_dataset.SyntheticPairs, "__init__", synth)


@pytest.mark.parametrize("kind", KINDS)
def test_eval_and_fewshot_on_every_source(kind, files, tmp_path, monkeypatch, no_training_data):
    ckpt = _checkpoint(kind, files, tmp_path / "run")
    monkeypatch.setattr(sys, "argv", ["vlexp"])
    main(["eval", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"])
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    test = summary["test"]
    assert summary["retrieval_ties"] == "topk"  # the default convention, recorded
    name = "synthetic" if kind == "synthetic" else "heldout"
    for metric in ("i2t_R@1", "t2i_R@5", "zeroshot_top1"):
        assert 0.0 <= test[f"test/{name}/{metric}"] <= 1.0, metric
    out = tmp_path / "fewshot.json"
    args = [f"ckpt={ckpt}", "ks=[1]", "seeds=[0]", "steps=3", f"out={out}"]
    main(["fewshot", *args, f"hydra.run.dir={tmp_path / 'fewshot'}"])
    res = json.loads(out.read_text())
    assert res["ks"] == [1] and res["test_size"] > 0 and 0.0 <= res["zeroshot"] <= 1.0


def test_file_sources_score_the_same_held_out_images_alike(files, tmp_path, monkeypatch):
    """The test split as a CSV table, as shards read through an index (webdataset and
    wds_indexed): same images, captions, labels and weights, so the same numbers."""
    monkeypatch.setattr(sys, "argv", ["vlexp"])
    got = {}
    for kind in ("csv", "webdataset", "wds_indexed"):
        ckpt = _checkpoint(kind, files, tmp_path / kind)
        main(["eval", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / kind / 'eval'}"])
        got[kind] = json.loads((tmp_path / kind / "eval" / "metrics.json").read_text())["test"]
    assert got["csv"] == got["webdataset"] == got["wds_indexed"]
    assert len(got["csv"]) >= 7  # retrieval both ways at 1/5/10 plus zero-shot


@pytest.mark.parametrize("kind", KINDS)
def test_clip_benchmark_on_every_source(kind, files, tmp_path, monkeypatch, no_training_data):
    from vlexp.cli.clip_benchmark import main as clip_benchmark_main

    ckpt = _checkpoint(kind, files, tmp_path / "run")
    images = files / "csv" / "test"
    rows = (images / "pairs.csv").read_text().splitlines()[1:9]
    ann = tmp_path / "ann.txt"  # CLIP_benchmark's Flickr format: image,caption per line
    ann.write_text("image,caption\n" + "\n".join(",".join(r.split(",")[:2]) for r in rows) + "\n")
    out = tmp_path / "cb.json"
    clip_benchmark_main(
        ["eval", "--dataset", "flickr30k", "--dataset_root", str(images), "--annotation_file",
         str(ann), "--task", "zeroshot_retrieval", "--pretrained", str(ckpt), "--recall_k", "1",
         "5", "--no_amp", "--num_workers", "0", "--batch_size", "4", "--output", str(out),
         "--quiet"]
    )  # fmt: skip
    metrics = json.loads(out.read_text())["metrics"]
    assert set(metrics) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5)}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


@pytest.mark.slow
def test_eval_of_a_streamed_run_reproduces_its_test_metrics(files, tmp_path, monkeypatch):
    """The reported failure: a run trained on a non-resampled stream, then `vlexp eval`."""
    from vlexp.train.run import train

    run = tmp_path / "run"
    cfg = compose_cfg(
        [*TINY, *_source_overrides("webdataset", files), f"paths.cache_dir={run}/cache",
         "trainer.max_steps=4", "trainer.val_check_interval=2"],
        output_dir=run,
    )  # fmt: skip
    train(cfg)
    trained = json.loads((run / "metrics.json").read_text())
    monkeypatch.setattr(sys, "argv", ["vlexp"])
    main(["eval", f"ckpt={run}/checkpoints/last.ckpt", f"hydra.run.dir={tmp_path / 'eval'}"])
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert got["global_step"] == trained["global_step"] == 4
    assert got["test"] == trained["test"]


def test_eval_refuses_a_bad_retrieval_option_in_one_line(files, tmp_path, monkeypatch, capsys):
    ckpt = _checkpoint("synthetic", files, tmp_path / "run")
    monkeypatch.setattr(sys, "argv", ["vlexp"])
    with pytest.raises(SystemExit) as done:
        main(["eval", f"ckpt={ckpt}", "eval=default", "eval.retrieval_ties=random",
              f"hydra.run.dir={tmp_path / 'eval'}"])  # fmt: skip
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "eval.retrieval_ties=random" in err[-1]
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_eval_of_a_run_without_the_retrieval_options_uses_the_defaults(
    files, tmp_path, monkeypatch
):
    """A checkpoint of an older version (its eval section lacks the retrieval options)."""
    ckpt = _checkpoint("synthetic", files, tmp_path / "run")
    blob = torch.load(ckpt, weights_only=True)
    for key in ("retrieval_ties", "retrieval_identical_captions"):
        del blob["hyper_parameters"]["config"]["eval"][key]
    torch.save(blob, ckpt)
    monkeypatch.setattr(sys, "argv", ["vlexp"])
    main(["eval", f"ckpt={ckpt}", "eval=default", "eval.retrieval_ties=pessimistic",
          f"hydra.run.dir={tmp_path / 'pess'}"])  # fmt: skip
    main(["eval", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'old'}"])
    old = json.loads((tmp_path / "old" / "metrics.json").read_text())
    pess = json.loads((tmp_path / "pess" / "metrics.json").read_text())
    assert old["retrieval_ties"] == "topk" and old["retrieval_identical_captions"] is False
    assert pess["retrieval_ties"] == "pessimistic"
    for key, value in pess["test"].items():  # a lower bound of the default's numbers
        assert value <= old["test"][key] + 1e-9 if "_R@" in key else value == old["test"][key]
