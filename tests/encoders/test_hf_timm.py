"""`encoder=hf_timm`: local HF text model + local timm / open_clip image weights.

Uses a tiny random-init BERT saved with ``save_pretrained`` and small timm models whose
state dicts are saved to temporary files. Non-local names must fail at once, without
opening a network connection.
"""

from __future__ import annotations

import socket
import time

import pytest
import timm
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.encoders import ENCODERS
from vlexp.encoders.tokenizers import load_tokenizer


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Tiny BERT folder (with tokenizer) and timm / open_clip weight files."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("hf_timm")
    tok = load_tokenizer(None)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    torch.save(timm.create_model("resnet18").state_dict(), root / "resnet18.pth")
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32)
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in vit.state_dict().items()}, str(root / "vit.safetensors")
    )
    return root


def _build(assets, image: dict, **top) -> torch.nn.Module:
    text = {"model": str(assets / "bert"), **top.pop("text", {})}
    return ENCODERS.build({"name": "hf_timm", "embed_dim": 16, "text": text, "image": image, **top})


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to open a connection."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_resnet_bert_forward(assets, no_network):
    model = _build(
        assets, {"model": "resnet18", "weights": str(assets / "resnet18.pth")}, image_size=64
    )
    assert (model.image_size, model.image_mean) == (64, (0.485, 0.456, 0.406))  # timm's cfg
    tok = model.tokenize(["a red cube left of a blue ball", "a dog"])
    assert tok["input_ids"].shape == (2, 32)
    zi = model.encode_image(torch.randn(2, 3, 64, 64))
    zt = model.encode_text(**tok)
    assert zi.shape == zt.shape == (2, 16)
    torch.testing.assert_close(zi.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(zt.norm(dim=-1), torch.ones(2))
    assert not [n for n, _ in model.named_parameters() if "pooler" in n]  # unused head removed
    assert no_network == []


def test_timm_weights_are_loaded(assets):
    model = _build(
        assets, {"model": "resnet18", "weights": str(assets / "resnet18.pth"), "freeze": "none"}
    )
    saved = torch.load(assets / "resnet18.pth", weights_only=True)
    got = model.image_tower.model.state_dict()
    assert "fc.weight" not in got  # classifier dropped: pooled features
    for k, v in got.items():
        assert torch.equal(v, saved[k]), k


def test_vit_from_safetensors_with_img_size_and_resampling(assets):
    model = _build(
        assets,
        {
            "model": "vit_tiny_patch16_224",
            "kwargs": {"img_size": 32},
            "weights": str(assets / "vit.safetensors"),
        },
    )
    assert model.image_size == 32 and model.image_mean == (0.5, 0.5, 0.5)
    assert model.encode_image(torch.randn(3, 3, 32, 32)).shape == (3, 16)
    # a 64 px model from the 32 px weights: timm resamples the position embeddings
    big = _build(
        assets,
        {
            "model": "vit_tiny_patch16_224",
            "kwargs": {"img_size": 64},
            "weights": str(assets / "vit.safetensors"),
        },
    )
    assert big.image_size == 64 and big.image_tower.model.pos_embed.shape[1] == 1 + 16


def test_freeze_modes_trainable_sets(assets):
    weights = str(assets / "resnet18.pth")
    counts = {}
    for mode in ("none", "all", "last_n"):
        model = _build(
            assets, {"model": "resnet18", "weights": weights, "freeze": mode}, text={"freeze": mode}
        )
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        projections = {"image_proj.weight", "text_proj.weight", "log_logit_scale"}
        assert projections <= trainable
        tower = trainable - projections
        counts[mode] = tower
    img = timm.create_model("resnet18", num_classes=0)
    assert counts["all"] == set()
    assert {n for n in counts["last_n"] if n.startswith("image_tower.")} == {
        f"image_tower.model.layer4.1.{n}" for n, _ in img.layer4[1].named_parameters()
    }
    assert {n for n in counts["last_n"] if n.startswith("text_tower.")} == {
        n for n in counts["none"] if n.startswith("text_tower.model.encoder.layer.1.")
    }
    assert len(counts["none"]) == len(list(model.named_parameters())) - 3


def test_mlp_projection_and_cls_pooling(assets):
    model = _build(
        assets,
        {"model": "resnet18", "weights": "random"},
        projection="mlp",
        projection_hidden_dim=24,
        image_size=32,
    )
    assert isinstance(model.image_proj, torch.nn.Sequential)
    assert model.image_proj[0].out_features == 24 and model.text_proj[0].in_features == 32
    assert model.text_tower.pooling == "cls"
    assert model.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 16)


def test_open_clip_tower(assets, tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config("ViT-S-32")
    torch.manual_seed(0)
    visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])
    path = tmp_path / "clip.pth"  # the whole-model layout: visual.* keys (+ a text key to ignore)
    torch.save(
        {
            "state_dict": {
                **{f"visual.{k}": v for k, v in visual.state_dict().items()},
                "token_embedding.weight": torch.zeros(3, 4),
            }
        },
        path,
    )
    model = _build(assets, {"model": "open_clip:ViT-S-32", "weights": str(path)})
    assert model.image_size == 224
    assert model.image_mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    x = torch.randn(2, 3, 224, 224)
    visual.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.image_tower(x), visual(x))
    trainable = {n for n, p in model.image_tower.named_parameters() if p.requires_grad}
    assert trainable == (
        {
            f"model.transformer.resblocks.11.{n}"
            for n, _ in visual.transformer.resblocks[11].named_parameters()
        }
        | {"model.ln_post.weight", "model.ln_post.bias", "model.proj"}
    )


def test_composed_config_builds(assets, tmp_path):
    cfg = compose_cfg(
        [
            "encoder=hf_timm",
            f"encoder.text.model={assets / 'bert'}",
            "encoder.image.model=resnet18",
            f"encoder.image.weights={assets / 'resnet18.pth'}",
            "encoder.image_size=32",
            "encoder.text.pooling=mean",
        ],
        output_dir=tmp_path,
    )
    model = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    assert model.image_size == 32 and model.text_tower.pooling == "mean"
    assert model.freeze_reports["image"].mode == "last_n"


def test_non_local_text_model_fails_fast_without_network(assets, no_network, monkeypatch):
    def no_build(*a, **k):  # nothing heavy may be built before the names are checked
        raise AssertionError("timm.create_model called before the text model was resolved")

    monkeypatch.setattr(timm, "create_model", no_build)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        _build(
            assets,
            {"model": "resnet18", "weights": str(assets / "resnet18.pth")},
            text={"model": "bert-base-uncased-not-cached-xyz"},
        )
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert "`encoder.text.model=bert-base-uncased-not-cached-xyz` is not a local folder" in msg
    assert "never downloads" in msg and "save_pretrained" in msg
    assert "encoder.text.model=/path/to/dir" in msg and "\n" not in msg
    assert no_network == []


def test_names_with_local_weights_folders(assets, tmp_path, no_network, caplog):
    """`text.model=<name> text.weights=<folder>` and an image weights folder (hub snapshot layout)."""
    import logging

    from safetensors.torch import load_file, save_file

    snap = tmp_path / "resnet18_snapshot"
    snap.mkdir()
    saved = torch.load(assets / "resnet18.pth", weights_only=True)
    save_file({k: v.contiguous() for k, v in saved.items()}, str(snap / "model.safetensors"))
    with caplog.at_level(logging.INFO, logger="vlexp"):
        model = _build(
            assets,
            {"model": "resnet18", "weights": str(snap), "freeze": "none"},
            text={"model": "bert-base-uncased", "weights": str(assets / "bert")},
        )
    assert f"encoder.text.model=bert-base-uncased loaded from {assets / 'bert'}" in caplog.text
    ours = model.image_tower.model.state_dict()
    for key, value in load_file(str(snap / "model.safetensors")).items():
        if not key.startswith("fc."):  # the classifier is dropped (pooled features)
            torch.testing.assert_close(ours[key], value)
    bert = load_file(str(assets / "bert" / "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    torch.testing.assert_close(model.text_tower.model.state_dict()[key], bert[key])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="the folder holds none of"):
        _build(assets, {"model": "resnet18", "weights": str(empty)})
    assert no_network == []


@pytest.mark.parametrize(
    "image,exc,match",
    [
        (
            {"model": "resnet18", "weights": None},
            ValueError,
            "weights is not set. vlexp never downloads",
        ),
        (
            {"model": "resnet18", "weights": "/nonexistent/r18.pth"},
            FileNotFoundError,
            r"not a local file.*torch.save\(timm.create_model\('resnet18', pretrained=True\)",
        ),
        (
            {"model": "resnett18", "weights": "random"},
            ValueError,
            "not a timm architecture.*resnet18",
        ),
        (
            {"model": "hf-hub:timm/resnet18.a1_in1k", "weights": "random"},
            ValueError,
            "hub download",
        ),
        (
            {"model": "open_clip:ViT-Q-99", "weights": "random"},
            ValueError,
            "not an open_clip architecture",
        ),
        (
            {"model": "resnet18", "weights": "random", "freeze": "most"},
            ValueError,
            "must be one of",
        ),
        (
            {"model": "resnet18", "weights": "random", "pretrained": True},
            TypeError,
            r"unknown option\(s\) \['pretrained'\]",
        ),
        (
            {"model": "resnet18.foo", "weights": "random"},
            ValueError,
            "not a pretrained tag.*a1_in1k",
        ),
        (
            {"model": "resnet18", "weights": "random", "kwargs": {"num_classes": 5}},
            ValueError,
            r"kwargs may not set \['num_classes'\]",
        ),
    ],
)
def test_image_config_errors(assets, no_network, image, exc, match):
    with pytest.raises(exc, match=match) as err:
        _build(assets, image)
    assert "\n" not in str(err.value)  # one line saying what to set
    assert no_network == []


def test_mismatched_weights_file_is_a_clear_error(assets):
    with pytest.raises(ValueError, match=r"does not fit timm model 'resnet34'"):
        _build(assets, {"model": "resnet34", "weights": str(assets / "resnet18.pth")})


def test_text_folder_without_config_and_long_context(assets, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        _build(assets, {"model": "resnet18", "weights": "random"}, text={"model": str(tmp_path)})
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        _build(
            assets, {"model": "resnet18", "weights": "random"}, context_length=128, image_size=32
        )


def test_hub_name_found_in_local_cache_without_network(assets, tmp_path, monkeypatch, no_network):
    """A hub name already in the local HF cache resolves offline (local_files_only)."""
    import shutil

    import huggingface_hub.constants

    from vlexp.encoders.text_towers import resolve_text_model

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someorg--tiny-bert"
    shutil.copytree(assets / "bert", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_text_model("someorg/tiny-bert") == repo / "snapshots" / commit
    with pytest.raises(FileNotFoundError, match="is not a local folder"):
        resolve_text_model("someorg/other-model")
    assert no_network == []


def test_wrong_image_size_for_fixed_size_vit_says_what_to_set(assets):
    with pytest.raises(ValueError, match=r"cannot take 64 px images.*kwargs.img_size=64"):
        _build(
            assets,
            {"model": "vit_tiny_patch16_224", "kwargs": {"img_size": 32}, "weights": "random"},
            image_size=64,
        )
