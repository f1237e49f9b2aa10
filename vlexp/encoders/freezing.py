"""Which parts of a pre-trained tower train, and keeping the frozen parts in eval mode.

A tower's parameters are split into ordered groups: group 0 is the *stem* (embeddings,
first convolution, ...), groups 1..N are its N blocks (transformer layers, inverted
residual blocks, ...); parameters after the last block (final norm, head convolution)
belong to the last block, as timm's layer grouping does. Freeze modes:

- ``none``: every parameter of the tower trains;
- ``all``: nothing in the tower trains (only the projection heads on top of it do);
- ``last_n``: the last ``last_n`` blocks train, the stem and earlier blocks are frozen
  (``last_n: 0`` is the same as ``all``).

Frozen sub-modules stay in eval mode even while the model trains (BatchNorm keeps its
running statistics, dropout is off), so a frozen part computes exactly what the
pre-trained network computes. ``freeze_norm_stats: true`` also keeps the BatchNorm layers
of the *trainable* blocks in eval mode (their affine weights train, their running
statistics stay the pre-trained ones: open_clip's ``--lock-image-freeze-bn-stats``).
:data:`TOWER_SCHEMA` declares these options once for every preset's tower sections.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from vlexp.registry import Opt

log = logging.getLogger("vlexp")

FREEZE_MODES = ("none", "all", "last_n")
# the options of an ``encoder.image`` / ``encoder.text`` section that say what trains
TOWER_SCHEMA: dict[str, Opt] = {
    "freeze": Opt(choices=FREEZE_MODES),
    "last_n": Opt(int, lo=0),
}
IMAGE_TOWER_SCHEMA: dict[str, Opt] = {**TOWER_SCHEMA, "freeze_norm_stats": Opt(bool)}


@dataclass(frozen=True)
class FreezeReport:
    """What :meth:`FreezableMixin.freeze` did to one tower."""

    mode: str
    last_n: int
    num_blocks: int
    params_trainable: int
    params_total: int
    norm_stats_frozen: int = 0  # BatchNorm layers of trainable blocks kept in eval mode

    def __str__(self) -> str:
        what = (
            f"last {self.last_n} of {self.num_blocks} blocks"
            if self.mode == "last_n"
            else self.mode
        )
        norms = (
            f", running statistics of {self.norm_stats_frozen} trainable BatchNorm layers fixed"
            if self.norm_stats_frozen
            else ""
        )
        return (
            f"freeze={self.mode} ({what}): {self.params_trainable:,} of "
            f"{self.params_total:,} tower parameters trainable{norms}"
        )


def check_freeze(mode: str, last_n: int, where: str) -> None:
    """Raise a clear ``ValueError`` for an unknown freeze mode or a negative ``last_n``."""
    if mode not in FREEZE_MODES:
        raise ValueError(f"{where}.freeze must be one of {list(FREEZE_MODES)}, got {mode!r}")
    if not isinstance(last_n, int) or isinstance(last_n, bool) or last_n < 0:
        raise ValueError(f"{where}.last_n must be an integer >= 0, got {last_n!r}")


def tower_section(
    cfg: Mapping[str, Any] | None, defaults: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """``defaults`` updated with ``cfg``; unknown keys are an error naming the accepted ones."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise TypeError(
            f"{where} got unknown option(s) {unknown}; accepted options: {sorted(defaults)}"
        )
    out = {**defaults, **cfg}
    check_freeze(out["freeze"], out["last_n"], where)
    return out


def groups_from_blocks(
    model: nn.Module, block_names: Sequence[str], stem_prefixes: Sequence[str] | None = None
) -> list[list[str]]:
    """Parameter-name groups [stem, block_1, ..., block_N] for blocks named ``block_names``.

    Without ``stem_prefixes``, parameters before the first block (in registration order)
    form the stem and a parameter outside every block that comes after a block joins the
    group of the latest block seen. With ``stem_prefixes``, a parameter outside the blocks
    is stem if its name starts with one of them and joins the last block otherwise (for
    models holding both stem and head tensors directly on the root module).
    """
    if not block_names:
        raise ValueError(f"{type(model).__name__}: no blocks to group parameters by")
    groups: list[list[str]] = [[] for _ in range(len(block_names) + 1)]
    current = 0
    for name, _ in model.named_parameters():
        index = next((i + 1 for i, b in enumerate(block_names) if name.startswith(b + ".")), None)
        if index is not None:
            current = index
        elif stem_prefixes is not None:
            is_stem = any(name == s or name.startswith(s + ".") for s in stem_prefixes)
            index = 0 if is_stem else len(block_names)
        groups[current if index is None else index].append(name)
    return groups


def largest_module_list(model: nn.Module, prefer_len: int | None = None) -> list[str]:
    """Names of the children of the model's main ``nn.ModuleList`` (its layer stack).

    The list whose length is ``prefer_len`` (e.g. ``config.num_hidden_layers``) wins;
    otherwise the longest one holding parameters.
    """
    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and any(True for _ in mod.parameters())
    ]
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no nn.ModuleList of layers, so `last_n` cannot tell "
            "its blocks apart; use freeze: none or freeze: all for it."
        )
    preferred = [c for c in candidates if prefer_len is not None and len(c[1]) == prefer_len]
    name, mod = (preferred or sorted(candidates, key=lambda c: -len(c[1])))[0]
    return [f"{name}.{i}" if name else str(i) for i in range(len(mod))]


def frozen_subtrees(module: nn.Module) -> list[str]:
    """Names of the largest sub-modules whose parameters are all frozen ('' = the module)."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [""]
    out: list[str] = []

    def visit(mod: nn.Module, prefix: str) -> None:
        for name, child in mod.named_children():
            child_params = list(child.parameters())
            if not child_params:
                continue  # parameter-free modules follow their parent's mode
            if not any(p.requires_grad for p in child_params):
                out.append(prefix + name)
            elif not all(p.requires_grad for p in child_params):
                visit(child, prefix + name + ".")

    visit(module, "")
    return out


def _count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def trainable_batch_norms(module: nn.Module, frozen: Sequence[str]) -> list[str]:
    """Names of the BatchNorm layers of ``module`` outside the ``frozen`` sub-modules."""
    if "" in frozen:
        return []
    return [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and not any(name == f or name.startswith(f + ".") for f in frozen)
    ]


class FreezableMixin:
    """Mixin for ``nn.Module`` towers: :meth:`freeze` by mode, frozen parts stay in eval mode.

    Subclasses implement :meth:`param_groups`. Put the mixin before ``nn.Module`` (or an
    ``nn.Module`` subclass) in the bases so its :meth:`train` runs first.
    """

    _frozen_modules: tuple[str, ...] = ()

    def param_groups(self) -> list[list[str]]:
        """Parameter names grouped as [stem, block_1, ..., block_N] (names relative to self)."""
        raise NotImplementedError

    def freeze(
        self,
        mode: str = "none",
        last_n: int = 1,
        where: str = "tower",
        freeze_norm_stats: bool = False,
    ) -> FreezeReport:
        """Set ``requires_grad`` by ``mode`` (see the module docstring) and remember frozen
        parts; ``freeze_norm_stats`` also keeps the trainable BatchNorm layers in eval mode."""
        check_freeze(mode, last_n, where)
        module: nn.Module = self  # type: ignore[assignment]
        params = dict(module.named_parameters())
        num_blocks = 0
        if mode == "none":
            trainable = set(params)
        elif mode == "all" or last_n == 0:
            trainable = set()
        else:
            groups = self.param_groups()
            num_blocks = len(groups) - 1
            grouped = [n for g in groups for n in g]
            if sorted(grouped) != sorted(params):
                raise RuntimeError(f"{where}: parameter groups do not cover the tower exactly")
            if last_n > num_blocks:
                raise ValueError(
                    f"{where}.last_n={last_n} but the tower has only {num_blocks} blocks; use "
                    f"last_n <= {num_blocks}, or freeze: none to train everything."
                )
            trainable = {n for g in groups[len(groups) - last_n :] for n in g}
        for name, p in params.items():
            p.requires_grad_(name in trainable)
        frozen = frozen_subtrees(module)
        norms = trainable_batch_norms(module, frozen) if freeze_norm_stats else []
        if freeze_norm_stats and not norms:
            raise ValueError(
                f"{where}.freeze_norm_stats=true but the trainable part of the tower holds no "
                "BatchNorm layer (frozen parts always keep their statistics); drop the option"
            )
        self._frozen_modules = tuple(frozen + norms)
        module.train(module.training)
        return FreezeReport(
            mode,
            last_n,
            num_blocks,
            _count(p for n, p in params.items() if n in trainable),
            _count(params.values()),
            len(norms),
        )

    @property
    def frozen_module_names(self) -> tuple[str, ...]:
        """Sub-modules kept in eval mode ('' means the whole tower)."""
        return self._frozen_modules

    def train(self, mode: bool = True):  # type: ignore[no-untyped-def]
        """Like ``nn.Module.train`` but frozen sub-modules always stay in eval mode."""
        super().train(mode)  # type: ignore[misc]
        if mode:
            for name in self._frozen_modules:
                if name == "":
                    super().train(False)  # type: ignore[misc]
                else:
                    self.get_submodule(name).train(False)  # type: ignore[attr-defined]
        return self


def freeze_towers(
    image_tower: FreezableMixin,
    text_tower: FreezableMixin,
    image: Mapping[str, Any],
    text: Mapping[str, Any],
    where: str = "encoder",
) -> dict[str, FreezeReport]:
    """Freeze both towers by their sections (``freeze``, ``last_n``, ``freeze_norm_stats``)
    and log one line per tower; the reports by side."""
    reports: dict[str, FreezeReport] = {}
    for side, tower, spec in (("image", image_tower, image), ("text", text_tower, text)):
        reports[side] = tower.freeze(
            spec["freeze"],
            spec["last_n"],
            f"{where}.{side}",
            freeze_norm_stats=bool(spec.get("freeze_norm_stats", False)),
        )
        if spec.get("patch_dropout") and tower.frozen_module_names == ("",):
            raise ValueError(
                f"{where}.{side}.patch_dropout={spec['patch_dropout']} on a tower frozen whole: "
                "it runs in eval mode and never drops a patch; let it train or drop the option"
            )
        log.info("%s %s tower: %s", where, side, reports[side])
    return reports
