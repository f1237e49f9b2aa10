"""Pre-trained image towers (timm or open_clip architectures), loaded from local files only.

``encoder.image.model`` is a timm architecture name (optionally with a pretrained tag,
e.g. ``vit_base_patch16_224.augreg_in21k``, which picks the preprocessing) or
``open_clip:<arch>`` (e.g. ``open_clip:ViT-B-32``) for the image tower of an open_clip
model. ``encoder.image.weights`` is a local state-dict file (``.safetensors``/``.pth``/
``.bin``, optionally nested under ``state_dict``/``model``; or a folder holding
``model.safetensors``/``pytorch_model.bin`` as a hub snapshot does); for open_clip it may hold the
whole CLIP model (only its ``visual.*`` tensors are used). ``random`` gives random init.
:func:`resolve_image_model` checks all of this before anything is built.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlexp.encoders.freezing import FreezableMixin, groups_from_blocks, largest_module_list
from vlexp.encoders.weights import read_state_dict, weights_file
from vlexp.notices import LoadCounts, loaded_weights

OPEN_CLIP_PREFIX = "open_clip:"
RANDOM_INIT = "random"
RESERVED_TIMM_KWARGS = (
    "pretrained",
    "num_classes",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "checkpoint_path",
    "cache_dir",
)


class ImageTower(FreezableMixin, nn.Module):
    """Wraps an image backbone that maps ``(B, 3, H, W)`` images to pooled ``(B, D)`` features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    @torch.no_grad()
    def output_dim(self, image_size: int) -> int:
        """Feature width, found by running one blank image of ``image_size`` pixels."""
        was_training = self.training
        self.eval()
        try:
            out = self(torch.zeros(1, 3, image_size, image_size))
        except (RuntimeError, AssertionError, ValueError) as err:
            raise ValueError(
                f"the image model cannot take {image_size} px images ({err}). Set "
                "encoder.image_size to its input size, or for a timm ViT also set "
                f"encoder.image.kwargs.img_size={image_size} (timm then resamples the "
                "position embeddings of the loaded weights)."
            ) from err
        finally:
            self.train(was_training)
        if out.ndim != 2:
            raise ValueError(
                f"the image backbone returns shape {tuple(out.shape)} for one image; vlexp "
                "needs pooled (batch, features) output"
            )
        return int(out.shape[-1])


class TimmImageTower(ImageTower):
    """A timm model built with ``num_classes=0`` (pooled features); blocks from timm's grouping."""

    def param_groups(self) -> list[list[str]]:
        """[stem, block_1, ..., block_N] from ``group_matcher(coarse=False)``."""
        from timm.models import group_parameters

        try:
            matcher = self.model.group_matcher(coarse=False)
        except (AttributeError, NotImplementedError):
            blocks = largest_module_list(self.model)
            groups = groups_from_blocks(self.model, blocks)
        else:
            grouped = group_parameters(self.model, matcher)
            groups = [grouped[k] for k in sorted(grouped)]
        return [[f"model.{n}" for n in g] for g in groups]


class OpenClipImageTower(ImageTower):
    """The image tower (``model.visual``) of an open_clip CLIP model."""

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        """Also load the visual's tensors saved without the ``model.`` level (checkpoints
        of ``encoder=open_clip`` from before its towers became freezable)."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            if not key.startswith(f"{prefix}model."):
                state_dict[f"{prefix}model.{key[len(prefix) :]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def param_groups(self) -> list[list[str]]:
        """[stem, block_1, ..., block_N]; the final norm / projection / attention pool join the last block."""
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        visual = self.model
        if isinstance(visual, TimmModel):
            trunk = TimmImageTower(visual.trunk).param_groups()
            groups = [[n.replace("model.", "model.trunk.", 1) for n in g] for g in trunk]
            in_trunk = {n for g in groups for n in g}
            groups[-1] += [
                f"model.{n}" for n, _ in visual.named_parameters() if f"model.{n}" not in in_trunk
            ]
            return groups
        if isinstance(visual, VisionTransformer):
            blocks = [
                f"transformer.resblocks.{i}" for i in range(len(visual.transformer.resblocks))
            ]
            stem = (
                "conv1",
                "class_embedding",
                "positional_embedding",
                "ln_pre",
                "patchnorm_pre_ln",
            )
        elif isinstance(visual, ModifiedResNet):
            blocks = [
                f"layer{k}.{i}"
                for k in range(1, 5)
                for i in range(len(getattr(visual, f"layer{k}")))
            ]
            stem = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")
        else:
            blocks, stem = largest_module_list(visual), None
        groups = groups_from_blocks(visual, blocks, stem_prefixes=stem)
        return [[f"model.{n}" for n in g] for g in groups]


@dataclass(frozen=True)
class ImageModelSpec:
    """A checked ``encoder.image`` choice: which library, architecture and weights file."""

    library: str  # "timm" or "open_clip"
    arch: str
    weights: Path | None  # None = random init


def _no_download_hint(model: str, where: str) -> str:
    """One sentence saying how to get local weights for ``model``."""
    if model.startswith(OPEN_CLIP_PREFIX):
        arch = model[len(OPEN_CLIP_PREFIX) :]
        create = f"open_clip.create_model('{arch}', pretrained=TAG)"
    else:
        create = f"timm.create_model('{model}', pretrained=True)"
    return (
        f"vlexp never downloads weights: save them once elsewhere with "
        f"torch.save({create}.state_dict(), path) and set {where}.weights=/local/path (a file, "
        f"or a folder holding model.safetensors), or {where}.weights={RANDOM_INIT} for random init."
    )


def resolve_image_model(
    model: str | None, weights: str | os.PathLike | None, where: str = "encoder.image"
) -> ImageModelSpec:
    """Check the architecture name and the weights file; nothing heavy, no network."""
    if not model:
        raise ValueError(
            f"{where}.model is not set: give a timm architecture name (e.g. "
            f"vit_base_patch16_224) or {OPEN_CLIP_PREFIX}<arch> (e.g. {OPEN_CLIP_PREFIX}ViT-B-32)"
        )
    model = str(model)
    if model.startswith(("hf-hub:", "hf_hub:", "timm/")):
        raise ValueError(
            f"{where}.model={model} names a hub download. Use the timm architecture name "
            f"(e.g. {model.split(':')[-1].split('/')[-1]}) with {where}.weights pointing at a "
            f"local file. {_no_download_hint(model.split(':')[-1].split('/')[-1], where)}"
        )
    if model.startswith(OPEN_CLIP_PREFIX):
        import open_clip

        library, arch = "open_clip", model[len(OPEN_CLIP_PREFIX) :]
        known = open_clip.list_models()
        if arch not in known:
            close = difflib.get_close_matches(arch, known, n=5)
            raise ValueError(
                f"{where}.model={model}: '{arch}' is not an open_clip architecture"
                f"{f' (close: {close})' if close else ''}; see open_clip.list_models()."
            )
    else:
        import timm

        library, arch = "timm", model
        if not timm.is_model(arch.split(".")[0]):
            close = difflib.get_close_matches(arch.split(".")[0], timm.list_models(), n=5)
            raise ValueError(
                f"{where}.model={model} is not a timm architecture"
                f"{f' (close: {close})' if close else ''}; list names with "
                "timm.list_models('*pattern*'), or use open_clip:<arch> for an open_clip tower."
            )
        base, _, tag = arch.partition(".")
        if tag and arch not in timm.list_pretrained(f"{base}.*"):
            raise ValueError(
                f"{where}.model={model}: '{tag}' is not a pretrained tag of timm's '{base}' "
                f"(tags pick mean/std and the classifier size): {timm.list_pretrained(f'{base}.*')}"
            )
    if weights in (None, ""):
        raise ValueError(f"{where}.weights is not set. {_no_download_hint(model, where)}")
    if str(weights) == RANDOM_INIT:
        return ImageModelSpec(library, arch, None)
    path = weights_file(weights, f"{where}.weights")
    if path is None:
        raise FileNotFoundError(
            f"{where}.weights={weights} is not a local file or folder; "
            f"{_no_download_hint(model, where)}"
        )
    return ImageModelSpec(library, arch, path)


def _classifier_outputs(arch: str, state: Mapping[str, torch.Tensor]) -> int:
    """Rows of the classifier in ``state`` per timm's pretrained config (0 if none)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    heads = getattr(cfg, "classifier", None) if cfg is not None else None
    for head in [heads] if isinstance(heads, str) else list(heads or []):
        w = state.get(f"{head}.weight")
        if w is not None and w.ndim >= 1:
            return int(w.shape[0])
    return 0


def build_timm_tower(
    spec: ImageModelSpec, kwargs: Mapping[str, Any] | None = None, where: str = "encoder.image"
) -> TimmImageTower:
    """A timm model returning pooled features, with ``spec.weights`` loaded strictly by name.

    Loading goes through timm's own checkpoint filter (so e.g. a ViT's position embeddings
    are resampled for another ``img_size``); every tensor must match.
    """
    import timm

    kwargs = dict(kwargs or {})
    reserved = sorted(set(kwargs) & set(RESERVED_TIMM_KWARGS))
    if reserved:
        raise ValueError(
            f"{where}.kwargs may not set {reserved}: vlexp builds the model without a "
            f"classifier and loads {where}.weights itself."
        )
    if spec.weights is None:
        return TimmImageTower(
            timm.create_model(spec.arch, pretrained=False, num_classes=0, **kwargs)
        )
    state = read_state_dict(spec.weights, f"{where}.weights")
    n_cls = _classifier_outputs(spec.arch, state)
    try:
        # pretrained=True only routes ``state`` through timm's checkpoint filter: a
        # ``state_dict`` in the overlay is timm's first weight source, so nothing is
        # fetched (``state`` is never empty: read_state_dict refuses that). Tested with
        # sockets blocked: tests/encoders/test_hf_timm.py::test_resnet_bert_forward.
        model = timm.create_model(
            spec.arch,
            pretrained=True,
            num_classes=n_cls,
            pretrained_cfg_overlay={"source": "timm", "state_dict": state, "num_classes": n_cls},
            **kwargs,
        )
    except RuntimeError as err:  # strict load_state_dict: missing / unexpected / mis-shaped keys
        raise ValueError(
            f"{where}.weights={spec.weights} does not fit timm model '{spec.arch}' "
            f"(with {kwargs or 'default options'}): {str(err)[:1500]}\nSave the weights from the "
            f"same architecture: torch.save(timm.create_model('{spec.arch}', ...).state_dict(), path)."
        ) from err
    # timm loads strictly (after its own key filter): every model tensor came from the file
    counts = LoadCounts(len(model.state_dict()), 0, 0)
    model.reset_classifier(0)
    head = counts.matched - len(model.state_dict())
    dropped = f"its {n_cls}-class classifier ({head} tensors) dropped" if head else ""
    loaded_weights(spec.weights, f"{where} (timm {spec.arch})", counts, dropped)
    return TimmImageTower(model)


def build_open_clip_tower(spec: ImageModelSpec, where: str = "encoder.image") -> OpenClipImageTower:
    """The image tower of open_clip architecture ``spec.arch`` holding ``spec.weights``."""
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(spec.arch)
    vision_cfg = dict(cfg["vision_cfg"])
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False  # never fetch the trunk's weights
    visual = _build_vision_tower(
        cfg["embed_dim"], vision_cfg, quick_gelu=cfg.get("quick_gelu", False)
    )
    if spec.weights is not None:
        state = read_state_dict(spec.weights, f"{where}.weights")
        in_file = len(state)
        if any(k.startswith("visual.") for k in state):
            state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
        try:
            visual.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"{where}.weights={spec.weights} does not fit open_clip '{spec.arch}': "
                f"{str(err)[:1500]}\nSave the weights of the same architecture with "
                "torch.save(model.state_dict(), path) (a whole CLIP model or its .visual)."
            ) from err
        # strict: every tensor of the tower loaded; the rest of a whole CLIP file is unused
        counts = LoadCounts(len(state), 0, in_file - len(state))
        unused = "the file's tensors outside visual. are not loaded" if counts.unexpected else ""
        loaded_weights(spec.weights, f"{where} (open_clip {spec.arch} image tower)", counts, unused)
    return OpenClipImageTower(visual)


def timm_preprocessing(
    tower: TimmImageTower, kwargs: Mapping[str, Any] | None = None
) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(image size, mean, std) from the timm model's pretrained config.

    An ``img_size`` given in ``kwargs`` wins over the config's input size.
    """
    from timm.data import resolve_data_config

    data_cfg = resolve_data_config({}, model=tower.model)
    size = (kwargs or {}).get("img_size") or data_cfg["input_size"][-1]
    size = size[-1] if isinstance(size, (tuple, list)) else size
    return int(size), tuple(data_cfg["mean"]), tuple(data_cfg["std"])


def open_clip_preprocessing(
    arch: str,
) -> tuple[int, tuple[float, ...] | None, tuple[float, ...] | None]:
    """(image size, mean, std) for an open_clip architecture.

    Mean/std come from open_clip's pretrained configs of that architecture when they all
    agree (``None`` when they do not: the caller must then be told to set them).
    """
    import open_clip

    size = open_clip.get_model_config(arch)["vision_cfg"].get("image_size", 224)
    size = size[-1] if isinstance(size, (tuple, list)) else size
    stats = set()
    for tag in open_clip.list_pretrained_tags_by_model(arch):
        pcfg = open_clip.get_pretrained_cfg(arch, tag)
        stats.add(
            (
                tuple(pcfg.get("mean") or open_clip.OPENAI_DATASET_MEAN),
                tuple(pcfg.get("std") or open_clip.OPENAI_DATASET_STD),
            )
        )
    if not stats:
        stats = {(tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD))}
    if len(stats) != 1:
        return int(size), None, None
    mean, std = stats.pop()
    return int(size), mean, std
