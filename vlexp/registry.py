"""A small name -> implementation registry (in the spirit of timm's model registry).

Objectives, samplers, filters, encoders and data sources register themselves under
a short name; configs select them with ``name: <registered name>`` and the remaining
keys become constructor keyword arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a config names an implementation that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of component."""

    def __init__(self, kind: str, config_group: str | None = None) -> None:
        self.kind = kind
        self.config_group = config_group or kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not factory:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``; a clear error listing choices otherwise."""
        if name not in self._entries:
            raise UnknownNameError(
                f"Unknown {self.kind} '{name}'. Registered {self.kind}s: "
                f"{', '.join(self.names()) or '(none)'}. "
                f"Pick one with `{self.config_group}.name=<name>` or a `{self.config_group}=` preset."
            )
        return self._entries[name]

    def build(self, cfg: Mapping[str, Any] | str, **context: Any) -> T:
        """Instantiate from a config mapping holding ``name`` plus keyword arguments.

        ``context`` holds runtime objects (the dataset's tag table, the embedding size,
        rank/world size, ...); each is passed only if the factory's signature names it.
        Config keys the factory does not accept are an error naming the accepted ones.
        """
        if isinstance(cfg, str):
            cfg = {"name": cfg}
        # a required value left at ``???`` arrives unset, so the factory's check names it
        kwargs = {
            k: None if isinstance(v, str) and v == "???" else v
            for k, v in dict(cfg).items()
            if k != "name" and not k.startswith("_")
        }
        if "name" not in cfg:
            raise ValueError(f"{self.kind} config needs a `name` key (one of {self.names()})")
        factory = self.get(str(cfg["name"]))
        _check_kwargs(factory, kwargs, f"{self.config_group} '{cfg['name']}'")
        kwargs.update({k: v for k, v in context.items() if _accepts(factory, k)})
        return factory(**kwargs)


def _accepts(factory: Callable[..., Any], key: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return key in params  # context goes only to factories that name it explicitly


def _check_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins: let the call raise
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        accepted = sorted(n for n in params if n != "self" and n not in kwargs)
        raise TypeError(f"{what} got unknown option(s) {unknown}; accepted options: {accepted}")
