"""One log line per thing loaded from a user path and per mechanism switched on.

Expected tensor counts come from the reference libraries (open_clip's and timm's own
models, the keys of the saved file), never from the loader under test.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import open_clip
import pytest
import timm
import torch

from vlexp.data.readers.memory import InMemoryPairs
from vlexp.data.tags import captions_fingerprint, save_tag_file
from vlexp.data.types import TagTable
from vlexp.encoders import ENCODERS
from vlexp.encoders.image_towers import ImageModelSpec, build_open_clip_tower, build_timm_tower
from vlexp.encoders.open_clip_tower import tiny_open_clip_config
from vlexp.notices import LoadCounts, loaded_weights
from vlexp.samplers.tagging import TaggingOptions, caption_tags

TINY_NAME = "vlexp-notices-tiny"


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory) -> str:
    """A small architecture registered in open_clip's model-config registry."""
    folder = tmp_path_factory.mktemp("oc_cfg")
    cfg = tiny_open_clip_config(
        embed_dim=24, image_size=32, vision_width=32, vision_layers=2, vision_head_width=16,
        text_width=32, text_layers=2, text_heads=2, context_length=16,
    )  # fmt: skip
    (folder / f"{TINY_NAME}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(folder))
    return TINY_NAME


def _lines(caplog, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


def test_counts_compare_key_sets():
    counts = LoadCounts.of(["a", "b", "c", "d"], ["b", "c", "x", "y", "z"])
    assert counts == LoadCounts(matched=2, missing=2, unexpected=3)
    line = loaded_weights("w.pt", "encoder", counts, "a note")
    assert (
        line
        == "loaded weights w.pt into encoder: 2 tensors matched, 2 missing, 3 unexpected (a note)"
    )


def test_open_clip_train_checkpoint_says_it_was_loaded(tiny_name, tmp_path, caplog):
    torch.manual_seed(0)
    ref = open_clip.create_model(tiny_name)
    state = ref.state_dict()
    path = tmp_path / "epoch_3.pt"  # open_clip_train's layout: nested, DDP prefix, extras
    torch.save(
        {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}},
        path,
    )
    with caplog.at_level(logging.INFO, logger="vlexp"):
        ENCODERS.build({"name": "open_clip", "model": tiny_name, "pretrained": str(path)})
    n = len(open_clip.create_model(tiny_name, force_custom_text=True).state_dict())
    assert n == len(state)
    assert _lines(caplog, "loaded weights") == [
        f"loaded weights {path} into encoder (open_clip CLIP model): "
        f"{n} tensors matched, 0 missing, 0 unexpected"
    ]


def test_image_tower_from_a_whole_clip_file_counts_the_unused_tensors(tiny_name, tmp_path, caplog):
    torch.manual_seed(0)
    state = open_clip.create_model(tiny_name).state_dict()
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    visual = [k for k in state if k.startswith("visual.")]
    with caplog.at_level(logging.INFO, logger="vlexp"):
        build_open_clip_tower(ImageModelSpec("open_clip", tiny_name, path))
    assert _lines(caplog, "loaded weights") == [
        f"loaded weights {path} into encoder.image (open_clip {tiny_name} image tower): "
        f"{len(visual)} tensors matched, 0 missing, {len(state) - len(visual)} unexpected "
        "(the file's tensors outside visual. are not loaded)"
    ]


def test_timm_tower_names_the_dropped_classifier(tmp_path, caplog):
    state = timm.create_model("resnet18").state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    headless = timm.create_model("resnet18", num_classes=0).state_dict()
    with caplog.at_level(logging.INFO, logger="vlexp"):
        build_timm_tower(ImageModelSpec("timm", "resnet18", path))
    assert _lines(caplog, "loaded weights") == [
        f"loaded weights {path} into encoder.image (timm resnet18): {len(state)} tensors "
        f"matched, 0 missing, 0 unexpected (its 1000-class classifier "
        f"({len(state) - len(headless)} tensors) dropped)"
    ]


def test_hugging_face_text_tower_reports_missing_and_unexpected(tmp_path, caplog):
    """A masked-LM checkpoint loaded as a bare encoder: the LM head is unexpected, the
    pooler missing; expected counts from the file's own keys."""
    from safetensors import safe_open
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from vlexp.encoders.text_towers import load_text_tower

    cfg = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForMaskedLM(cfg).save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        file_keys = {k.removeprefix("bert.") for k in f.keys()}
    model_keys = set(BertModel(cfg).state_dict())
    matched, missing = len(model_keys & file_keys), len(model_keys - file_keys)
    unexpected = len(file_keys - model_keys)
    assert missing > 0 and unexpected > 0  # the case this test is about
    with caplog.at_level(logging.INFO, logger="vlexp"):
        load_text_tower(tmp_path)
    assert _lines(caplog, "loaded weights") == [
        f"loaded weights {tmp_path} into text tower (BertModel): {matched} tensors matched, "
        f"{missing} missing, {unexpected} unexpected"
    ]


def test_teacher_line_names_file_and_concepts(teacher_file, caplog):
    from vlexp.data.synthetic import LEAF_CLASSES
    from vlexp.objectives.concepts.teachers import build_teacher

    with caplog.at_level(logging.INFO, logger="vlexp"):
        build_teacher("synthetic", teacher_file)
    assert _lines(caplog, "loaded teacher") == [
        f"loaded teacher {Path(teacher_file).resolve()}: synthetic, {len(LEAF_CLASSES)} "
        "concepts (sigmoid per concept), input 64 px"
    ]


def test_tag_file_line_gives_pairs_and_coverage(tmp_path, caplog):
    captions = [f"caption {i}" for i in range(8)]
    lists = [[0], [], [1, 2], [], [0], [2], [], []]
    table = TagTable.from_lists(lists, ["a", "b", "c"])
    path = tmp_path / "pairs.tags.npz"
    save_tag_file(path, table, captions_fingerprint(captions), {"ontology": "mine"})
    source = InMemoryPairs([None] * 8, captions)  # type: ignore[list-item]
    with caplog.at_level(logging.INFO, logger="vlexp"):
        caption_tags(source, None, TaggingOptions(path=str(path)))
    tagged = sum(1 for t in lists if t)
    assert _lines(caplog, "loaded tag file") == [
        f"loaded tag file {path}: 8 pairs, {100 * tagged / 8:.1f}% tagged, 3 classes "
        "(ontology mine)"
    ]


def test_grad_checkpointing_says_it_is_on(caplog):
    from tests.conftest import tiny_encoder
    from vlexp.train.model_opts import apply_model_opts

    model = ENCODERS.build(tiny_encoder())
    with caplog.at_level(logging.INFO):
        apply_model_opts(model, {"grad_checkpointing": True})
    lines = _lines(caplog, "on: gradient checkpointing (")
    assert lines and all(("image_tower" in s) or ("text_tower" in s) for s in lines)
    # the same tiny model with checkpointing off says nothing
    caplog.clear()
    with caplog.at_level(logging.INFO):
        apply_model_opts(ENCODERS.build(tiny_encoder()), {"grad_checkpointing": False})
    assert not _lines(caplog, "on: ")
