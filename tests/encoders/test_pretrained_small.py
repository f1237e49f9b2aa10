"""`encoder=pretrained_small`: packaged MiniLM-L6 + ImageNet EfficientNet-Lite0.

References: sentence-transformers' own MiniLM pipeline for the text tower, ImageNet labels
of real photos (through the packaged classifier weights) for the image tower.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.encoders import ENCODERS
from vlexp.encoders.tokenizers import packaged_minilm_dir
from vlexp.encoders.weights import packaged_lite0_weights, read_state_dict

SENTENCES = [
    "A man is eating food.",
    "two red cubes to the left of a small blue sphere",
    "The quick brown fox jumps over the lazy dog near the river bank.",
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ENCODERS.build({"name": "pretrained_small", "image_size": 64, "context_length": 40})


def test_encodes_a_batch(model):
    assert (model.image_size, model.embed_dim) == (64, 256)
    assert model.image_mean == (0.485, 0.456, 0.406) and model.image_std == (0.229, 0.224, 0.225)
    tok = model.tokenize(SENTENCES)
    with torch.no_grad():
        zi = model.encode_image(torch.randn(3, 3, 64, 64))
        zt = model.encode_text(**tok)
    assert zi.shape == zt.shape == (3, 256)
    torch.testing.assert_close(zi.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(zt.norm(dim=-1), torch.ones(3))


def test_default_freezing_is_last_block_plus_projections(model):
    lite, bert = model.image_tower.model, model.text_tower.model
    expected = {"image_proj.weight", "text_proj.weight", "log_logit_scale"}
    for prefix, mod in (
        ("image_tower.model.blocks.6.0", lite.blocks[6][0]),
        ("image_tower.model.conv_head", lite.conv_head),
        ("image_tower.model.bn2", lite.bn2),
        ("text_tower.model.encoder.layer.5", bert.encoder.layer[5]),
    ):
        expected |= {f"{prefix}.{n}" for n, _ in mod.named_parameters()}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    rep = model.freeze_reports
    assert (rep["image"].num_blocks, rep["text"].num_blocks) == (16, 6)


def test_text_tower_matches_sentence_transformers(model):
    st_mod = pytest.importorskip("sentence_transformers")
    try:
        st = st_mod.SentenceTransformer(
            str(packaged_minilm_dir()), device="cpu", local_files_only=True
        )
    except Exception as err:  # pragma: no cover - depends on the installed version
        pytest.skip(f"sentence-transformers cannot load the packaged MiniLM offline: {err}")
    ref = torch.as_tensor(st.encode(SENTENCES, convert_to_numpy=True))
    model.eval()
    tok = model.tokenize(SENTENCES)
    with torch.no_grad():
        ours = model.text_tower(tok["input_ids"], tok["attention_mask"])
    cos = F.cosine_similarity(ours, ref, dim=-1)
    assert cos.min() > 0.9999, cos
    print("cosine(vlexp text tower, sentence-transformers):", cos.tolist())
    assert ours.shape == (3, 384)


def test_image_tower_is_the_imagenet_classifier_backbone():
    """Packaged classifier weights on the tower's features name the photo's ImageNet class."""
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image
    from torchvision import transforms as T

    m224 = ENCODERS.build({"name": "pretrained_small", "text": {"freeze": "all"}})
    assert m224.image_size == 224
    tf = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(m224.image_mean, m224.image_std),
        ]
    )
    x = torch.stack([tf(Image.fromarray(skdata.chelsea())), tf(Image.fromarray(skdata.coffee()))])
    state = read_state_dict(packaged_lite0_weights())
    m224.eval()
    with torch.no_grad():
        logits = F.linear(m224.image_tower(x), state["_fc.weight"], state["_fc.bias"])
    top5 = logits.topk(5).indices.tolist()
    assert top5[0][0] in range(281, 286), top5[0]  # a domestic cat class
    assert top5[1][0] in (967, 968), top5[1]  # espresso / cup


def test_frozen_batchnorm_keeps_statistics_in_training(model):
    lite = model.image_tower.model
    model.train()
    assert lite.training and not lite.bn1.training and not lite.blocks[3][0].bn1.training
    assert lite.blocks[6][0].bn1.training and lite.bn2.training
    assert not model.text_tower.model.embeddings.training
    assert model.text_tower.model.encoder.layer[5].training
    frozen = lite.blocks[2][1].bn2.running_var.clone()
    trainable = lite.bn2.running_var.clone()
    with torch.no_grad():
        model.encode_image(torch.randn(4, 3, 64, 64))
    assert torch.equal(lite.blocks[2][1].bn2.running_var, frozen)
    assert not torch.equal(lite.bn2.running_var, trainable)
    model.eval()


def test_composed_config_builds_with_overrides(tmp_path):
    cfg = compose_cfg(
        [
            "encoder=pretrained_small",
            "encoder.image_size=96",
            "encoder.image.freeze=all",
            "encoder.text.freeze=none",
            "encoder.text.pooling=cls",
        ],
        output_dir=tmp_path,
    )
    m = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    assert m.image_size == 96 and m.text_tower.pooling == "cls"
    assert not any(p.requires_grad for p in m.image_tower.parameters())
    assert all(p.requires_grad for p in m.text_tower.parameters())
    assert m.image_tower.frozen_module_names == ("",)


def test_unknown_section_option_names_accepted_ones():
    with pytest.raises(TypeError, match=r"encoder.text got unknown option\(s\) \['model'\]"):
        ENCODERS.build({"name": "pretrained_small", "text": {"model": "bert-base-uncased"}})


def test_lightning_fit_trains_only_the_unfrozen_parts(tmp_path):
    """A few real optimizer steps through VLModule + Lightning: frozen weights and frozen
    BatchNorm statistics are unchanged, the trainable block and projections moved."""
    import lightning as L
    from torch.utils.data import DataLoader

    from vlexp.objectives import OBJECTIVES
    from vlexp.train.module import VLModule

    torch.manual_seed(0)
    model = ENCODERS.build(
        {"name": "pretrained_small", "image_size": 64, "embed_dim": 32, "context_length": 12}
    )
    tok = model.tokenize([f"a photo of object number {i}" for i in range(4)])
    batches = [{"image": torch.randn(4, 3, 64, 64), **tok} for _ in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = VLModule(
        model, OBJECTIVES.build({"name": "clip"}, embed_dim=32), lr=1e-3, warmup_steps=1
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    after = model.state_dict()
    lite = "image_tower.model."
    assert torch.equal(
        after[f"{lite}blocks.3.0.bn1.running_mean"], before[f"{lite}blocks.3.0.bn1.running_mean"]
    )
    assert torch.equal(
        after[f"{lite}blocks.3.0.conv_pw.weight"], before[f"{lite}blocks.3.0.conv_pw.weight"]
    )
    assert torch.equal(
        after["text_tower.model.encoder.layer.4.output.dense.weight"],
        before["text_tower.model.encoder.layer.4.output.dense.weight"],
    )
    assert not torch.equal(after[f"{lite}bn2.running_mean"], before[f"{lite}bn2.running_mean"])
    assert not torch.equal(after[f"{lite}conv_head.weight"], before[f"{lite}conv_head.weight"])
    for name in (
        "image_proj.weight",
        "text_proj.weight",
        "text_tower.model.encoder.layer.5.output.dense.weight",
    ):
        assert not torch.equal(after[name], before[name]), name
