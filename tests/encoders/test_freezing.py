"""Freeze modes leave exactly the expected parameters trainable; frozen parts stay in eval.

Expected trainable sets are written from each architecture's module layout (e.g.
ResNet-18's ``layer4[1]``), not from the grouping code under test.
"""

from __future__ import annotations

import pytest
import timm
import torch
from transformers import BertConfig, BertModel

from vlexp.encoders.freezing import frozen_subtrees
from vlexp.encoders.image_towers import TimmImageTower
from vlexp.encoders.text_towers import PretrainedTextTower


def _names(module, prefix: str) -> set[str]:
    return {f"{prefix}.{n}" for n, _ in module.named_parameters()}


def _trainable(tower) -> set[str]:
    return {n for n, p in tower.named_parameters() if p.requires_grad}


def _timm_tower(name: str, **kw) -> TimmImageTower:
    torch.manual_seed(0)
    return TimmImageTower(timm.create_model(name, pretrained=False, num_classes=0, **kw))


def _bert_tower(layers: int = 2) -> PretrainedTextTower:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    return PretrainedTextTower(BertModel(cfg, add_pooling_layer=False), pooling="mean")


@pytest.mark.parametrize(
    "name,kw",
    [("resnet18", {}), ("efficientnet_lite0", {}), ("vit_tiny_patch16_224", {"img_size": 32})],
)
def test_groups_cover_every_parameter_once(name, kw):
    tower = _timm_tower(name, **kw)
    groups = tower.param_groups()
    flat = [n for g in groups for n in g]
    assert sorted(flat) == sorted(n for n, _ in tower.named_parameters())
    assert len(flat) == len(set(flat))


def test_resnet18_modes():
    tower = _timm_tower("resnet18")
    m = tower.model
    rep = tower.freeze("last_n", 1)
    assert _trainable(tower) == _names(m.layer4[1], "model.layer4.1")
    assert rep.num_blocks == 8 and rep.params_trainable == sum(
        p.numel() for p in m.layer4[1].parameters()
    )
    tower.freeze("last_n", 2)
    assert _trainable(tower) == _names(m.layer4, "model.layer4")
    tower.freeze("all")
    assert _trainable(tower) == set()
    tower.freeze("last_n", 0)
    assert _trainable(tower) == set()
    tower.freeze("none")
    assert _trainable(tower) == _names(m, "model")


def test_efficientnet_last_block_includes_head_conv():
    tower = _timm_tower("efficientnet_lite0")
    m = tower.model
    tower.freeze("last_n", 1)
    expected = (
        _names(m.blocks[6][0], "model.blocks.6.0")
        | _names(m.conv_head, "model.conv_head")
        | _names(m.bn2, "model.bn2")
    )
    assert _trainable(tower) == expected
    tower.freeze("last_n", 2)  # blocks 5.3 and 6.0 (fine-grained blocks, not stages)
    assert _trainable(tower) == expected | _names(m.blocks[5][3], "model.blocks.5.3")


def test_vit_last_block_includes_final_norm_and_stem_is_frozen():
    tower = _timm_tower("vit_tiny_patch16_224", img_size=32)
    m = tower.model
    tower.freeze("last_n", 1)
    assert _trainable(tower) == _names(m.blocks[11], "model.blocks.11") | _names(
        m.norm, "model.norm"
    )
    assert not m.pos_embed.requires_grad and not m.cls_token.requires_grad


def test_bert_modes():
    tower = _bert_tower(layers=3)
    enc = tower.model.encoder
    tower.freeze("last_n", 1)
    assert _trainable(tower) == _names(enc.layer[2], "model.encoder.layer.2")
    tower.freeze("last_n", 3)
    assert _trainable(tower) == _names(enc, "model.encoder")  # embeddings stay frozen
    with pytest.raises(ValueError, match="only 3 blocks"):
        tower.freeze("last_n", 4)


@pytest.mark.parametrize(
    "mode,last_n,match", [("some", 1, "must be one of"), ("last_n", -1, "integer >= 0")]
)
def test_bad_freeze_options(mode, last_n, match):
    with pytest.raises(ValueError, match=match):
        _bert_tower().freeze(mode, last_n, where="encoder.text")


def test_frozen_batchnorm_stays_in_eval_mode_during_training():
    tower = _timm_tower("resnet18")
    m = tower.model
    tower.freeze("last_n", 1)
    parent = torch.nn.Sequential(tower)
    parent.train()  # what Lightning does at the start of fit and after validation
    assert tower.training and m.training
    assert not m.bn1.training and not m.layer1[0].bn1.training and not m.layer4[0].bn2.training
    assert m.layer4[1].bn1.training and m.layer4[1].bn2.training
    frozen_before = m.layer2[0].bn1.running_mean.clone()
    trainable_before = m.layer4[1].bn1.running_mean.clone()
    with torch.no_grad():
        tower(torch.randn(4, 3, 64, 64))
    assert torch.equal(m.layer2[0].bn1.running_mean, frozen_before)
    assert not torch.equal(m.layer4[1].bn1.running_mean, trainable_before)
    parent.eval()
    assert not m.layer4[1].bn1.training
    parent.train()
    assert m.layer4[1].bn1.training and not m.bn1.training


def test_fully_frozen_tower_computes_its_eval_output_in_train_mode():
    x = torch.randn(3, 3, 32, 32)
    tower = _timm_tower("resnet18")
    tower.freeze("all")
    assert tower.frozen_module_names == ("",)
    with torch.no_grad():
        ref = tower.eval()(x)
        tower.train()
        assert not any(mod.training for mod in tower.modules())
        torch.testing.assert_close(tower(x), ref)


def test_frozen_bert_layers_have_dropout_off():
    tower = _bert_tower(layers=2)  # hidden/attention dropout 0.1
    tower.freeze("all")
    tower.train()
    ids = torch.randint(1, 100, (2, 8))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(tower(ids, mask), tower(ids, mask))
    tower.freeze("none")
    tower.train()
    with torch.no_grad():
        assert not torch.allclose(tower(ids, mask), tower(ids, mask))


def test_training_step_moves_only_trainable_parameters():
    tower = _timm_tower("efficientnet_lite0")
    tower.freeze("last_n", 2)
    before = {n: p.detach().clone() for n, p in tower.named_parameters()}
    trainable = [p for p in tower.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=1.0)
    tower.train()
    feats = tower(torch.randn(2, 3, 64, 64))
    (feats @ torch.randn(feats.shape[1])).square().mean().backward()
    assert all(p.grad is not None for p in trainable)  # no unused trainable params (DDP-safe)
    opt.step()
    for n, p in tower.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), n
        elif p.grad.abs().max() > 1e-4:  # (a BN bias right before a BN can get ~0 gradient)
            assert not torch.equal(p, before[n]), n


def test_frozen_subtrees_are_maximal():
    tower = _bert_tower(layers=2)
    tower.freeze("last_n", 1)
    assert frozen_subtrees(tower) == ["model.embeddings", "model.encoder.layer.0"]
