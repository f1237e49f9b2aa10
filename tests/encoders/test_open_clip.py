"""`encoder=open_clip` by architecture name, by complete config, and with a local checkpoint.

open_clip itself is the reference: a model built by name must have open_clip's
architecture, and a checkpoint saved from an open_clip model must make vlexp's towers
compute open_clip's embeddings. No test may open a network connection.
"""

from __future__ import annotations

import json
import logging
import socket

import open_clip
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.encoders import ENCODERS
from vlexp.encoders.open_clip_tower import tiny_open_clip_config

TINY_NAME = "vlexp-test-tiny"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to connect fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    """A small architecture registered in open_clip's model-config registry under TINY_NAME."""
    folder = tmp_path_factory.mktemp("oc_cfg")
    cfg = tiny_open_clip_config(
        embed_dim=24, image_size=32, vision_width=32, vision_layers=2, vision_head_width=16,
        text_width=32, text_layers=2, text_heads=2, context_length=16,
    )  # fmt: skip
    (folder / f"{TINY_NAME}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(folder))
    return TINY_NAME


def _shapes_like_open_clip(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """vlexp parameter shapes under open_clip's (custom-text) names."""
    rename = {"image_proj.weight": "visual.proj", "text_proj.weight": "text.text_projection"}
    out = {}
    for name, p in model.named_parameters():
        if name == "log_logit_scale":
            out["logit_scale"] = tuple(p.shape)
        elif name in rename:
            out[rename[name]] = tuple(p.t().shape)
        else:
            name = name.replace("image_tower.model.", "visual.", 1)
            out[name.replace("text_tower.text.", "text.", 1)] = tuple(p.shape)
    return out


def test_vit_s_32_by_name_has_open_clip_architecture():
    cfg = compose_cfg(["encoder=open_clip", "encoder.model=ViT-S-32"])
    ours = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    ref = open_clip.create_model("ViT-S-32", force_custom_text=True)
    ref_shapes = {n: tuple(p.shape) for n, p in ref.named_parameters()}
    ref_shapes["logit_scale"] = ()
    assert _shapes_like_open_clip(ours) == ref_shapes
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert (ours.image_size, ours.context_length, ours.embed_dim) == (224, 77, 384)


def test_partial_model_cfg_is_refused():
    cfg = compose_cfg(["encoder=open_clip", "encoder.model_cfg={vision_cfg:{layers:2}}"])
    enc = OmegaConf.to_container(cfg.encoder, resolve=True)
    with pytest.raises(ValueError, match=r"not a complete .*missing embed_dim.*vision_cfg\.width"):
        ENCODERS.build(enc)


def test_overrides_on_a_named_model_are_logged(tiny_name, caplog):
    overrides = {"vision_cfg": {"image_size": 48, "layers": 2}, "embed_dim": 24}
    with caplog.at_level(logging.INFO, logger="vlexp"):
        ours = ENCODERS.build({"name": "open_clip", "model": tiny_name, "model_cfg": overrides})
    lines = [r.getMessage() for r in caplog.records if "overrides" in r.getMessage()]
    assert lines == [f"encoder.model={tiny_name} with encoder.model_cfg overrides: "
                     "vision_cfg.image_size=48 (was 32)"]  # fmt: skip
    ref = open_clip.create_model(tiny_name, force_image_size=48, force_custom_text=True)
    assert ours.image_size == 48
    assert (
        ours.image_tower.model.positional_embedding.shape == ref.visual.positional_embedding.shape
    )


@pytest.mark.parametrize("fmt", ["bin", "safetensors", "folder"])
def test_local_checkpoint_gives_open_clip_embeddings(tiny_name, tmp_path, fmt):
    torch.manual_seed(0)
    ref = open_clip.create_model(tiny_name).eval()  # CLIP layout: text tower at the top level
    with torch.no_grad():
        ref.logit_scale.fill_(3.0)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if fmt == "bin":
        path = tmp_path / "open_clip_model.bin"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "open_clip_model.safetensors"
        save_file(state, str(path))
        path = tmp_path if fmt == "folder" else path
    ours = ENCODERS.build({"name": "open_clip", "model": tiny_name, "pretrained": str(path)})
    ours.eval()
    torch.testing.assert_close(ours.image_proj.weight, ref.visual.proj.t())
    torch.testing.assert_close(ours.text_proj.weight, ref.text_projection.t())
    assert float(ours.log_logit_scale) == 3.0
    images = torch.randn(3, 3, 32, 32)
    texts = ["a red cube", "two dogs on grass", "x"]
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), ref.encode_image(images, True))
        ids = open_clip.get_tokenizer(tiny_name)(texts)
        torch.testing.assert_close(ours.tokenize(texts)["input_ids"], ids)
        torch.testing.assert_close(ours.encode_text(ids), ref.encode_text(ids, True))


def test_complete_model_cfg_with_checkpoint_of_another_size_is_refused(tiny_name, tmp_path):
    torch.save(open_clip.create_model(tiny_name).state_dict(), tmp_path / "w.pt")
    cfg = tiny_open_clip_config(vision_width=64, vision_layers=2, vision_head_width=16)
    with pytest.raises(ValueError, match=r"does not fit this open_clip model"):
        ENCODERS.build(
            {"name": "open_clip", "model_cfg": cfg, "pretrained": str(tmp_path / "w.pt")}
        )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"model": "ViT-B-32", "pretrained": "openai"},
            r"is an open_clip hub tag .*ViT-B-32', pretrained='openai'.*local/path",
        ),
        ({"model": "ViT-B-32", "pretrained": "/nonexistent/w.bin"}, r"not a local file"),
        ({"model": "ViT-B-32x"}, r"not an open_clip architecture \(close: \['ViT-B-32'"),
        ({"model": "hf-hub:timm/ViT-B-16-SigLIP"}, r"hub model and vlexp never downloads"),
        ({"model": "xlm-roberta-base-ViT-B-32"}, r"Hugging Face hub; use encoder=hf_timm"),
    ],
)
def test_names_needing_a_download_fail_in_one_line(options, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
        ENCODERS.build({"name": "open_clip", **options})
    assert "\n" not in str(err.value)


def test_default_is_the_built_in_small_model():
    cfg = compose_cfg(["encoder=open_clip", "data.source.image_size=32"])
    ours = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    expected = tiny_open_clip_config(image_size=32)
    assert ours.image_size == 32
    assert ours.image_proj.weight.shape == (expected["embed_dim"], 96)
    assert len(ours.image_tower.model.transformer.resblocks) == expected["vision_cfg"]["layers"]


class _NotATensor:
    """Any pickled object other than tensors and plain values."""


def test_pickled_objects_in_a_checkpoint_are_refused(tiny_name, tmp_path):
    from vlexp.io import UnsafeFileError

    state = open_clip.create_model(tiny_name).state_dict()
    torch.save({"state_dict": state, "extra": _NotATensor()}, tmp_path / "w.pt")
    with pytest.raises(UnsafeFileError, match="refusing to load"):
        ENCODERS.build(
            {"name": "open_clip", "model": tiny_name, "pretrained": str(tmp_path / "w.pt")}
        )


def test_checkpoints_from_before_the_freezable_image_tower_still_load():
    """Earlier encoder=open_clip checkpoints name the visual's tensors image_tower.<name>."""
    cfg = tiny_open_clip_config(image_size=32, vision_layers=1, text_layers=1)
    torch.manual_seed(0)
    trained = ENCODERS.build({"name": "open_clip", "model_cfg": cfg})
    old = {
        k.replace("image_tower.model.", "image_tower.", 1): v
        for k, v in trained.state_dict().items()
    }
    assert "image_tower.conv1.weight" in old
    torch.manual_seed(1)
    fresh = ENCODERS.build({"name": "open_clip", "model_cfg": cfg})
    fresh.load_state_dict(old, strict=True)
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value, msg=name)


def test_model_pickles_for_spawned_processes():
    """ddp_spawn pickles the module: every tower of encoder=open_clip must travel."""
    import pickle

    cfg = tiny_open_clip_config(image_size=32, vision_layers=1, text_layers=1)
    model = ENCODERS.build({"name": "open_clip", "model_cfg": cfg, "text": {"freeze": "all"}})
    clone = pickle.loads(pickle.dumps(model)).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone.encode_image(images), model.eval().encode_image(images))
    assert clone.text_tower.frozen_module_names == ("",)
