"""A small name -> implementation registry (in the spirit of timm's model registry).

Objectives, samplers, filters, encoders and data sources register themselves under
a short name; configs select them with ``name: <registered name>`` and the remaining
keys become constructor keyword arguments. A registration may declare the config schema
of its options (``register(name, schema={key: Opt(...)})``) so that a whole config is
checked (:meth:`Registry.config_errors`) before anything is built.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a config names an implementation that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


_TYPE_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
_TYPE_WORDS.update({list: "a list", dict: "a mapping"})


@dataclass(frozen=True)
class Opt:
    """Schema of one config option: accepted type(s), range or choices, nesting.

    ``kind`` is a type or tuple of types (``float`` accepts integers, ``int`` never
    accepts booleans); ``lo``/``hi`` bound numbers (``open_lo``/``open_hi`` exclude the
    bound); ``choices`` lists allowed values; ``nullable`` accepts ``null``;
    ``registry`` validates a nested component (a name or a mapping with ``name``; then
    ``fields`` are extra keys the caller reads, like a term's ``weight``);
    ``fields`` is the schema of a mapping value and ``each`` that of every item of a list
    or every value of a mapping; ``test`` is an extra predicate (say what it wants in
    ``doc``); ``help`` says in one line what the option does (the options reference).
    """

    kind: type | tuple[type, ...] = object
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    registry: Registry[Any] | None = None
    fields: Mapping[str, Opt] | None = None
    each: Opt | None = None
    doc: str | None = None
    test: Callable[[Any], bool] | None = None
    help: str = ""  # one line on what the option does (docs/OPTIONS.md)

    def allowed(self) -> str:
        """What the option accepts, in words (the tail of an error message)."""
        if self.doc:
            text = self.doc
        elif self.choices is not None:
            text = "one of " + ", ".join(_word(c) for c in self.choices)
        else:
            kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
            text = " or ".join(_TYPE_WORDS.get(k, k.__name__) for k in kinds)
            if self.lo is not None or self.hi is not None:
                left = "(" if self.open_lo or self.lo is None else "["
                right = ")" if self.open_hi or self.hi is None else "]"
                lo = "-inf" if self.lo is None else f"{self.lo:g}"
                hi = "inf" if self.hi is None else f"{self.hi:g}"
                text += f" in {left}{lo}, {hi}{right}"
        return text + (" or null" if self.nullable else "")

    def errors(self, value: Any, key: str, context: Mapping[str, Any] | None = None) -> list[str]:
        """Error lines for ``value`` at the dotted ``key`` (empty when valid); ``context``
        reaches nested components' ``checks`` hooks."""
        if value is None:
            return [] if self.nullable else [f"{key}=null: expected {self.allowed()}"]
        if isinstance(value, str) and value == "???":
            return []  # a required value left unset is reported by the caller
        if self.registry is not None and isinstance(value, str | Mapping):
            own = self.fields or {}
            out = check_options({k: value[k] for k in own if k in value}, own, key)
            return out + self.registry.config_errors(value, key, tuple(own), context)
        if not self._fits(value):
            return [f"{key}={_word(value)}: expected {self.allowed()}"]
        out: list[str] = []
        if self.fields is not None and isinstance(value, Mapping):
            out += check_options(value, self.fields, key, context=context)
        if self.each is not None:
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for k, v in items:
                out += self.each.errors(v, f"{key}.{k}", context)
        return out

    def _fits(self, value: Any) -> bool:
        if self.choices is not None:
            return any(value == c and type(value) is type(c) for c in self.choices) or (
                not isinstance(value, bool) and value in self.choices
            )
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if not any(_is_kind(value, k) for k in kinds):
            return False
        if self.test is not None and not self.test(value):
            return False
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                return False
            if self.lo is not None and (value < self.lo or (self.open_lo and value == self.lo)):
                return False
            if self.hi is not None and (value > self.hi or (self.open_hi and value == self.hi)):
                return False
        return True


def _is_kind(value: Any, kind: type) -> bool:
    if kind is object:
        return True
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    if kind is list:
        return isinstance(value, list | tuple)
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def _word(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if not isinstance(value, Mapping | list | tuple) else repr(value)


def check_options(
    options: Mapping[str, Any],
    schema: Mapping[str, Opt],
    prefix: str,
    extra: tuple[str, ...] = (),
    context: Mapping[str, Any] | None = None,
) -> list[str]:
    """Error lines for ``options`` against ``schema`` (unknown keys included)."""
    out: list[str] = []
    for key, value in options.items():
        full = f"{prefix}.{key}"
        if key in schema:
            out += schema[key].errors(value, full, context)
        elif key not in extra and not str(key).startswith("_"):
            accepted = ", ".join(sorted(schema)) or "no options besides name"
            out.append(f"{full}: unknown option; {prefix} accepts {accepted}")
    return out


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of component."""

    def __init__(
        self, kind: str, config_group: str | None = None, preset_group: str | None = None
    ) -> None:
        self.kind = kind
        self.config_group = config_group or kind
        # the Hydra config group whose presets set a whole component (``sampler/schedule``):
        # errors about options left over from another component point to it
        self.preset_group = preset_group
        self._entries: dict[str, Callable[..., T]] = {}
        self._schemas: dict[str, dict[str, Opt]] = {}
        self._hooks: dict[str, dict[str, Callable[..., Any]]] = {}

    def register(
        self,
        name: str,
        schema: Mapping[str, Opt] | None = None,
        hooks: Mapping[str, Callable[..., Any]] | None = None,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``, with its options' schema.

        Without a schema only unknown keys are checked (from the factory's signature).
        ``hooks`` carry what the component knows about itself before it is built, read by
        the validator without naming the component: ``checks(options, context)`` returns
        cross-key error reasons (``options`` completed with the factory's defaults); data
        sources add ``train_size(options)`` and ``eval_names(options)``.
        """

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not factory:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = factory
            if schema is not None:
                self._schemas[name] = dict(schema)
            if hooks:
                self._hooks[name] = dict(hooks)
            return factory

        return deco

    def hook(self, name: Any, key: str) -> Callable[..., Any] | None:
        """The ``key`` hook ``name`` registered (None when it has none or is unknown)."""
        return self._hooks.get(name, {}).get(key) if isinstance(name, str) else None

    def defaults(self, name: str) -> dict[str, Any]:
        """The factory's keyword defaults (what an option left out of a config takes)."""
        try:
            params = inspect.signature(self._entries[name]).parameters
        except (KeyError, TypeError, ValueError):
            return {}
        return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}

    def schema(self, name: str) -> dict[str, Opt] | None:
        """The declared option schema of ``name`` (None when it declared none)."""
        return self._schemas.get(name)

    def config_errors(
        self,
        cfg: Mapping[str, Any] | str,
        prefix: str | None = None,
        extra: tuple[str, ...] = (),
        context: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """One line per invalid or unknown option of a component config, naming the full key.

        ``prefix`` is the config key of the section (default: the registry's config group);
        ``extra`` names keys a caller handles itself (e.g. a composite term's ``weight``);
        ``context`` is handed to the component's ``checks`` hook (e.g. the encoder config).
        """
        prefix = prefix or self.config_group
        if isinstance(cfg, str):
            cfg = {"name": cfg}
        name = cfg.get("name")
        if not isinstance(name, str) or name not in self._entries:
            return [f"{prefix}.name={_word(name)}: expected one of {', '.join(self.names())}"]
        options = {k: v for k, v in cfg.items() if k != "name"}
        schema = self._schemas.get(name)
        if schema is None:
            params = _explicit_params(self._entries[name])
            if params is None:  # **kwargs and no schema: nothing to check against
                return []
            schema = {p: Opt(nullable=True) for p in params}
        extra = extra + tuple(_explicit_params(self._entries[name]) or ())
        errors = check_options(options, schema, prefix, extra, context)
        checks = self.hook(name, "checks")
        if not errors and checks is not None:
            full = {**self.defaults(name), **options}
            errors = [f"{prefix}.{reason}" for reason in checks(full, context or {})]
        if self.preset_group and any("unknown option" in e for e in errors):
            errors.append(
                f"{prefix}: to switch to another {self.kind}, pick its preset, which brings "
                f"that {self.kind}'s own options: `{self.preset_group}={name}` "
                f"(presets: {', '.join(self.names())})"
            )
        return errors

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


def _explicit_params(factory: Callable[..., Any]) -> list[str] | None:
    """Named parameters of ``factory``; None when it also takes ``**kwargs`` (or has no
    inspectable signature)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]


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
