"""`encoder=open_clip`: open_clip's towers by model name or config, optionally with local weights.

Three ways to say which model (the first two are what open_clip users type):

- ``model: ViT-B-32``: an architecture from open_clip's own model-config registry (the
  JSON files in its wheel; nothing is fetched). ``model_cfg`` may then hold only the keys
  to change (e.g. ``{vision_cfg: {image_size: 64}}``); every changed key is logged in one
  line.
- ``model_cfg: {...}``: a complete open_clip model config (the ``model_configs/*.json``
  format); a dict missing an architecture key is refused, never completed from defaults.
- neither: a small built-in model sized like ``encoder=tiny`` (``image_size`` pixels).

``pretrained`` is a local checkpoint of that model (``.safetensors``, or a torch file
such as ``open_clip_pytorch_model.bin`` or an ``open_clip_train`` checkpoint; or a folder
holding one), read without running code from it; a hub tag such as ``openai`` is refused.
The loaded model computes what open_clip's model computes: open_clip's own output
projections become :class:`TwoTower`'s bias-free linear projections (the same matrices,
transposed) and its ``logit_scale`` becomes the model's temperature (a sigmoid-loss
model's ``logit_bias`` is kept for ``objective=siglip``). The BPE tokenizer ships inside
the ``open_clip_torch`` wheel. ``image``/``text`` say what trains (LiT locking,
:mod:`vlexp.encoders.freezing`) and ``image.patch_dropout`` drops patch tokens
(:mod:`vlexp.encoders.patch_dropout`).
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlexp.encoders.base import ENCODERS, TwoTower
from vlexp.encoders.freezing import (
    IMAGE_TOWER_SCHEMA,
    TOWER_SCHEMA,
    FreezableMixin,
    freeze_towers,
    groups_from_blocks,
    tower_section,
)
from vlexp.encoders.patch_dropout import (
    IMAGE_SECTION_DOC,
    PATCH_DROPOUT,
    drops_only_while_training,
    set_patch_dropout,
)
from vlexp.encoders.trunk_cache import TRUNK_CACHE_OPT, check_mode
from vlexp.notices import LoadCounts, loaded_weights
from vlexp.registry import Opt

log = logging.getLogger("vlexp")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# keys without which a model_cfg does not say which architecture to build
REQUIRED_KEYS = {
    "": ("embed_dim", "vision_cfg", "text_cfg"),
    "vision_cfg": ("image_size", "patch_size", "width", "layers"),
    "text_cfg": ("context_length", "vocab_size", "width", "heads", "layers"),
}


class OpenClipTokenizer:
    """open_clip's ``SimpleTokenizer`` behind the call signature :class:`TwoTower` uses.

    Returns ``input_ids`` (padded with 0 to ``max_length``) and an ``attention_mask`` of
    the non-padding positions; open_clip's text tower itself only reads ``input_ids``
    (causal mask, pooled at the end-of-text token).
    """

    def __init__(self, context_length: int) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.inner = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.vocab_size = len(self.inner.encoder)

    def __call__(
        self, texts: list[str], max_length: int | None = None, **_: Any
    ) -> dict[str, torch.Tensor]:
        ids = self.inner(list(texts), context_length=max_length or self.context_length)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


class OpenClipTextTower(FreezableMixin, nn.Module):
    """open_clip ``TextTransformer`` without its projection: ``(ids, mask) -> (B, width)``.

    Its blocks (for ``freeze: last_n``) are the transformer's residual blocks; the token
    and position embeddings are the stem and the final LayerNorm joins the last block.
    """

    def __init__(self, text: nn.Module) -> None:
        super().__init__()
        self.text = text

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids)

    def param_groups(self) -> list[list[str]]:
        """[embeddings, block_1, ..., block_N]; ``ln_final`` joins the last block."""
        blocks = [f"transformer.resblocks.{i}" for i in range(len(self.text.transformer.resblocks))]
        stem = ("token_embedding", "positional_embedding", "cls_emb")
        groups = groups_from_blocks(self.text, blocks, stem_prefixes=stem)
        return [[f"text.{n}" for n in g] for g in groups]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the transformer blocks (open_clip's switch)."""
        self.text.set_grad_checkpointing(enable)


def tiny_open_clip_config(
    embed_dim: int = 128,
    image_size: int = 64,
    patch_size: int = 8,
    vision_width: int = 96,
    vision_layers: int = 4,
    vision_head_width: int = 24,
    text_width: int = 96,
    text_layers: int = 2,
    text_heads: int = 4,
    context_length: int = 32,
    mlp_ratio: float = 2.0,
) -> dict[str, Any]:
    """An open_clip model-config dict sized like ``encoder=tiny`` (the benchmark's model)."""
    return {
        "embed_dim": embed_dim,
        "quick_gelu": False,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": vision_width,
            "layers": vision_layers,
            "head_width": vision_head_width,
            "mlp_ratio": mlp_ratio,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": text_width,
            "heads": text_heads,
            "layers": text_layers,
            "mlp_ratio": mlp_ratio,
        },
    }


def missing_keys(cfg: Mapping[str, Any]) -> list[str]:
    """Dotted architecture keys (:data:`REQUIRED_KEYS`) that ``cfg`` does not set."""
    out: list[str] = []
    for section, keys in REQUIRED_KEYS.items():
        node = cfg.get(section) if section else cfg
        if section and not isinstance(node, Mapping):
            continue  # reported as the top-level key itself
        out += [f"{section}.{k}" if section else k for k in keys if node.get(k) is None]
    return out


def merge_overrides(
    base: Mapping[str, Any], overrides: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """``base`` deep-updated with ``overrides``, and ``key=new (was old)`` for each change."""
    out = copy.deepcopy(dict(base))
    changes: list[str] = []
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key], sub = merge_overrides(out[key], value, f"{prefix}{key}.")
            changes += sub
        elif out.get(key) != value:
            was = f" (was {out[key]!r})" if key in out else ""
            changes.append(f"{prefix}{key}={value!r}{was}")
            out[key] = copy.deepcopy(value)
    return out, changes


def resolve_model_config(
    model: str | None,
    model_cfg: Mapping[str, Any] | None,
    image_size: int = 64,
    where: str = "encoder",
) -> dict[str, Any]:
    """The open_clip model config to build, from a name, a complete dict, or the default.

    A name is looked up in open_clip's local registry; ``model_cfg`` then holds overrides,
    logged in one line. Without a name ``model_cfg`` must be complete (:func:`missing_keys`).
    """
    import open_clip

    if model:
        name = str(model)
        if name.startswith(("hf-hub:", "hf_hub:")):
            raise ValueError(
                f"{where}.model={name} is a hub model and vlexp never downloads: give an "
                f"architecture name from open_clip.list_models() plus {where}.pretrained=/local/file"
            )
        base = open_clip.get_model_config(name)
        if base is None:
            close = difflib.get_close_matches(name, open_clip.list_models(), n=4)
            raise ValueError(
                f"{where}.model={name} is not an open_clip architecture"
                f"{f' (close: {close})' if close else ''}; see open_clip.list_models()"
            )
        cfg, changes = merge_overrides(base, dict(model_cfg or {}))
        if changes:
            log.info(
                "%s.model=%s with %s.model_cfg overrides: %s",
                where,
                name,
                where,
                ", ".join(changes),
            )
    elif model_cfg:
        cfg = copy.deepcopy(dict(model_cfg))
        missing = missing_keys(cfg)
        if missing:
            raise ValueError(
                f"{where}.model_cfg is not a complete open_clip model config (missing "
                f"{', '.join(missing)}); give every key, or name an architecture with "
                f"{where}.model=<name> (e.g. ViT-B-32) and put only the keys to change in model_cfg"
            )
    else:
        cfg = tiny_open_clip_config(image_size=int(image_size))
    _check_supported(cfg, where)
    return cfg


def _check_supported(cfg: Mapping[str, Any], where: str) -> None:
    """Refuse configs whose model needs a download or is not a plain two-tower CLIP."""
    vision, text = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}
    reason = None
    if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
        reason = "its text tower or tokenizer comes from the Hugging Face hub; use encoder=hf_timm"
    elif "multimodal_cfg" in cfg:
        reason = "it is a captioning (CoCa) model"
    elif vision.get("attentional_pool") or text.get("embed_cls"):
        reason = "its towers use attentional pooling / an appended class token"
    if reason:
        raise ValueError(
            f"{where}: this open_clip model is not supported by encoder=open_clip: {reason}"
        )


def resolve_checkpoint(
    pretrained: str | os.PathLike | None, model: str | None, where: str = "encoder"
) -> Path | None:
    """Local checkpoint file of ``pretrained`` (a file, or a folder holding one); never a tag."""
    if pretrained in (None, ""):
        return None
    import open_clip

    from vlexp.encoders.weights import weights_file

    path = weights_file(pretrained, f"{where}.pretrained")
    if path is not None:
        return path

    tags = open_clip.list_pretrained_tags_by_model(model) if model else []
    is_tag = str(pretrained) in tags
    what = "an open_clip hub tag" if is_tag else "not a local file or folder"
    create = f"open_clip.create_model('{model or 'NAME'}', pretrained='{pretrained if is_tag else 'TAG'}')"
    raise FileNotFoundError(
        f"{where}.pretrained={pretrained} is {what} and vlexp never downloads: save the weights "
        f"once elsewhere with torch.save({create}.state_dict(), path) and pass "
        f"{where}.pretrained=/local/path"
    )


def load_open_clip_checkpoint(clip: nn.Module, path: Path, where: str = "encoder") -> None:
    """Load an open_clip checkpoint into ``clip`` (a ``CustomTextCLIP``), strictly.

    Accepts both open_clip state-dict layouts (text tower at the top level or under
    ``text.``) and resamples position embeddings to the model's image size / context
    length as open_clip does.
    """
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    from vlexp.encoders.weights import read_state_dict

    state = convert_to_custom_text_state_dict(read_state_dict(path, f"{where}.pretrained"))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    try:
        resize_pos_embed(state, clip)
        resize_text_pos_embed(state, clip)
        counts = LoadCounts.of(clip.state_dict(), state)
        clip.load_state_dict(state, strict=True)
    except (RuntimeError, AssertionError) as err:  # open_clip asserts on a width change
        first = " ".join(str(err).split())[:300]
        raise ValueError(
            f"{where}.pretrained={path} does not fit this open_clip model ({first}); pass the "
            f"checkpoint of the architecture named by {where}.model"
        ) from err
    loaded_weights(path, f"{where} (open_clip CLIP model)", counts)
    resized = [
        f"{k} {shapes[k]} -> {tuple(v.shape)}" for k, v in state.items() if shapes[k] != v.shape
    ]
    if resized:
        log.info(
            "%s.pretrained=%s: position embeddings resampled: %s", where, path, ", ".join(resized)
        )


def _as_linear(proj: torch.Tensor) -> nn.Linear:
    """open_clip's ``x @ proj`` (``proj``: in x out) as a bias-free ``nn.Linear``."""
    linear = nn.Linear(proj.shape[0], proj.shape[1], bias=False)
    with torch.no_grad():
        linear.weight.copy_(proj.detach().t())
    return linear


def _split_projection(tower: nn.Module, attr: str, embed_dim: int) -> tuple[int, nn.Module]:
    """Take the output projection off an open_clip tower: (feature width, projection)."""
    proj = getattr(tower, attr, None)
    if isinstance(proj, nn.Parameter):
        setattr(tower, attr, None)
        return int(proj.shape[0]), _as_linear(proj)
    if isinstance(proj, nn.Linear):
        setattr(tower, attr, None)
        return int(proj.in_features), proj
    # the projection is inside the tower (e.g. a ResNet's attention pool, a timm trunk's head)
    return embed_dim, nn.Identity()


OPEN_CLIP_SCHEMA: dict[str, Opt] = {
    "model": Opt(str, nullable=True),
    "pretrained": Opt(str, nullable=True),
    "model_cfg": Opt(dict, nullable=True),
    "image_size": Opt(int, lo=1),
    "image_mean": Opt(list, nullable=True),
    "image_std": Opt(list, nullable=True),
    "init_temperature": Opt(float, lo=0.0, hi=1.0, open_lo=True),
    "max_logit_scale": Opt(float, lo=1.0),
    "learn_temperature": Opt(bool),
    "image": Opt(
        dict,
        nullable=True,
        fields={**IMAGE_TOWER_SCHEMA, "patch_dropout": PATCH_DROPOUT},
        test=drops_only_while_training,
        doc=IMAGE_SECTION_DOC,
    ),
    "text": Opt(dict, nullable=True, fields=TOWER_SCHEMA),
    "trunk_cache": TRUNK_CACHE_OPT,
}
IMAGE_DEFAULTS = {"freeze": "none", "last_n": 1, "freeze_norm_stats": False, "patch_dropout": None}
TEXT_DEFAULTS = {"freeze": "none", "last_n": 1}


@ENCODERS.register("open_clip", schema=OPEN_CLIP_SCHEMA)
def open_clip_two_tower(
    model: str | None = None,
    pretrained: str | None = None,
    model_cfg: Mapping[str, Any] | None = None,
    image_size: int = 64,
    image_mean: tuple[float, float, float] | None = None,
    image_std: tuple[float, float, float] | None = None,
    init_temperature: float = 0.07,
    max_logit_scale: float = 100.0,
    learn_temperature: bool = True,
    image: Mapping[str, Any] | None = None,
    text: Mapping[str, Any] | None = None,
    trunk_cache: str | bool = "auto",
) -> TwoTower:
    """open_clip towers by name (``model``) or config (``model_cfg``), with local weights.

    See the module docstring. ``image_size`` sizes only the built-in default model;
    ``image_mean``/``image_std`` default to the statistics open_clip's pretrained
    configs give the architecture (OpenAI's otherwise). With ``pretrained`` the
    temperature comes from the checkpoint and ``init_temperature`` is ignored.
    ``image``: ``freeze``, ``last_n``, ``freeze_norm_stats``, ``patch_dropout``;
    ``text``: ``freeze``, ``last_n`` (default: both towers train whole).
    """
    from open_clip.model import CustomTextCLIP

    from vlexp.encoders.image_towers import OpenClipImageTower, open_clip_preprocessing

    icfg = tower_section(image, IMAGE_DEFAULTS, "encoder.image")
    tcfg = tower_section(text, TEXT_DEFAULTS, "encoder.text")
    cache_mode = check_mode(trunk_cache)
    cfg = resolve_model_config(model, model_cfg, image_size)
    path = resolve_checkpoint(pretrained, model)
    vision_cfg, text_cfg = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
    if vision_cfg.get("timm_model_name"):
        vision_cfg["timm_model_pretrained"] = False  # the trunk's weights come from `pretrained`
    try:
        clip = CustomTextCLIP(
            int(cfg["embed_dim"]),
            vision_cfg,
            text_cfg,
            quick_gelu=bool(cfg.get("quick_gelu")),
            init_logit_bias=cfg.get("init_logit_bias"),
        )
    except TypeError as err:
        raise ValueError(f"encoder: not an open_clip model config ({err})") from err
    if path is not None:
        load_open_clip_checkpoint(clip, path)
    set_patch_dropout(clip.visual, icfg["patch_dropout"], "encoder.image.patch_dropout")
    embed_dim = int(cfg["embed_dim"])
    image_dim, image_proj = _split_projection(clip.visual, "proj", embed_dim)
    text_dim, text_proj = _split_projection(clip.text, "text_projection", embed_dim)
    size = vision_cfg.get("image_size", 224)
    context_length = int(text_cfg.get("context_length", 77))
    mean, std = OPENAI_MEAN, OPENAI_STD
    if model:
        _, named_mean, named_std = open_clip_preprocessing(str(model))
        mean, std = named_mean or mean, named_std or std
    image_tower, text_tower = OpenClipImageTower(clip.visual), OpenClipTextTower(clip.text)
    reports = freeze_towers(image_tower, text_tower, icfg, tcfg, "encoder")
    two = TwoTower(
        image_tower,
        text_tower,
        image_dim,
        text_dim,
        OpenClipTokenizer(context_length),
        embed_dim=embed_dim,
        context_length=context_length,
        image_size=int(size if isinstance(size, int) else size[-1]),
        image_mean=tuple(image_mean or mean),
        image_std=tuple(image_std or std),
        init_temperature=init_temperature,
        max_logit_scale=max_logit_scale,
        learn_temperature=learn_temperature,
    )
    two.image_proj, two.text_proj = image_proj, text_proj
    two.freeze_reports = reports
    two.trunk_cache_mode = cache_mode
    two.open_clip_config = cfg
    if path is not None:
        with torch.no_grad():
            two.log_logit_scale.copy_(clip.logit_scale.detach().reshape(()))
        if clip.logit_bias is not None:
            two.pretrained_logit_bias = float(clip.logit_bias)
            log.info(
                "encoder.pretrained=%s has a logit bias (%.4g): objective=siglip starts from "
                "it and from its logit scale; other objectives ignore it",
                path,
                two.pretrained_logit_bias,
            )
    return two
