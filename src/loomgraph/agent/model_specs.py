"""Models named by a string: `echo`, `claude-…`, `anthropic:NAME`, `openai:NAME`, a
`MODULE:ATTR` naming a Model object or a function returning one — resolved into a Model
(`resolve_model`), or checked without calling the user's code (`check_model`), with the
settings each takes."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from loomgraph.agent.config_errors import ConfigError, checked
from loomgraph.protocols import Model

__all__ = ["MODEL_FORMS", "ModelSettingsError", "UnknownModel", "check_model", "resolve_model"]

MODEL_FORMS = (
    "'echo', 'claude-NAME', 'anthropic:NAME', 'openai:NAME' (an OpenAI-compatible server: "
    "OPENAI_BASE_URL or base_url), 'MODULE:ATTR' naming a Model object or a function "
    "returning one, or a Model object (e.g. ScriptedModel)"
)


class UnknownModel(ConfigError):
    """A model name that names nothing: no form loomgraph knows, or a MODULE:ATTR that does
    not import."""


class ModelSettingsError(ConfigError):
    """Settings a model does not take (`refused`), or needs and is not given (`missing`);
    `takes` is what it does take (nothing for a Model object, made already: `made`)."""

    def __init__(
        self,
        model: str,
        *,
        refused: Sequence[str] = (),
        missing: Sequence[str] = (),
        takes: Sequence[str] = (),
        made: bool = False,
    ) -> None:
        self.model, self.made = model, made
        self.refused, self.missing, self.takes = tuple(refused), tuple(missing), tuple(takes)
        said = []
        if self.refused:
            one = len(self.refused) == 1
            said.append(
                f"model {model!r} does not take {_listed(self.refused)}; {self._takes(one)}"
            )
        if self.missing:
            said.append(self.needs())
        super().__init__("; ".join(said))

    def about(self, setting: str) -> str:
        """What is wrong with one of the `refused` settings, and what the model takes."""
        return f"model {self.model!r} does not take `{setting}`; {self._takes(one=True)}"

    def needs(self) -> str:
        """What is wrong with the `missing` settings."""
        which = "which has" if len(self.missing) == 1 else "which have"
        return f"model {self.model!r} needs {_listed(self.missing)}, {which} no default"

    def _takes(self, one: bool = False) -> str:
        them = "it" if one else "them"
        if self.made:
            return (
                "it is a Model object, made already, so it takes no settings (they go to a "
                "named model, or to a function returning one)"
            )
        if not self.takes:
            return f"it takes no settings (remove {them}, or name a model that takes {them})"
        return f"it takes {_listed(self.takes)}"


def _listed(names: Sequence[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def resolve_model(
    model: str | Model,
    options: Mapping[str, Any] | None = None,
    *,
    near: str | Path | None = None,
) -> Model:
    """A Model for a name (`echo`, `claude-…`, `anthropic:NAME`, `openai:NAME`,
    `MODULE:ATTR`) or a Model object. `options` (max_tokens, temperature, base_url, …) go
    to the adapter; `near` is the file whose folder a MODULE:ATTR is looked for in first.
    ModelSettingsError for settings the model does not take (`check_model` checks alike)."""
    options = dict(options or {})
    if not isinstance(model, str):
        if isinstance(model, Model):
            return model
        raise ConfigError(
            f"model must be a name or an object with `name` and `stream()`, "
            f"got {type(model).__name__}"
        )
    maker, args = _maker(model, options, near)
    made = maker if _is_made(maker) else maker(*args, **options)
    return cast(Model, checked(made, Model, "model"))


def check_model(model: str, options: Mapping[str, Any], *, near: str | Path | None = None) -> None:
    """Raise what `resolve_model(model, options)` would, calling none of the user's code:
    ConfigError for a name naming nothing, ModelSettingsError for settings the model does not
    take (or needs), and the adapter's ModelConfigError for a value a built-in adapter
    refuses (a key or URL that could never be sent)."""
    maker, args = _maker(model, options, near)
    if _built_in(model) is not None:
        # Built-in adapters are made offline (no key read, nothing connected), so making one
        # and dropping it runs exactly the checks of its settings that building runs.
        maker(*args, **options)


def _maker(
    model: str, options: Mapping[str, Any], near: str | Path | None
) -> tuple[Any, tuple[str, ...]]:
    """What makes the model `model` names — an adapter class with its positional
    arguments, the user's function, or a Model object made already — with `options`
    checked against what it takes."""
    built_in = _built_in(model)
    maker, args = built_in if built_in is not None else (_imported(model, near), ())
    _check_takes(model, maker, args, options)
    return maker, args


def _built_in(model: str) -> tuple[type, tuple[str, ...]] | None:
    """The adapter class and positional arguments of a built-in model name, or None."""
    scheme, _, rest = model.partition(":")
    if model == "echo":
        from loomgraph.models.echo import EchoModel

        return EchoModel, (model,)
    if model.startswith("claude-") or (scheme == "anthropic" and rest):
        from loomgraph.models.anthropic import AnthropicModel

        return AnthropicModel, (rest or model,)
    if scheme in ("openai", "openai-compat") and rest:
        from loomgraph.models.openai_compat import OpenAICompatModel

        return OpenAICompatModel, (rest,)
    return None


def _imported(spec: str, near: str | Path | None) -> Any:
    """What a `MODULE:ATTR` model names: a Model object, or a function returning one."""
    from loomgraph.graph.imports import import_object

    scheme, sep, rest = spec.partition(":")
    if not sep or not rest or scheme in ("anthropic", "openai", "openai-compat"):
        raise UnknownModel(f"unknown model {spec!r}; use {MODEL_FORMS}")
    try:
        target = import_object(spec, near=near, what="model")
    except ImportError as err:
        raise UnknownModel(f"unknown model {spec!r}: {err}; use {MODEL_FORMS}") from None
    if not _is_made(target) and not callable(target):
        raise ConfigError(f"model {spec!r} is neither a Model nor a function returning one")
    return target


def _is_made(target: Any) -> bool:
    """Whether `target` is a Model object (a class with a `name` and `stream` is a maker)."""
    return not isinstance(target, type) and isinstance(target, Model)


def _check_takes(model: str, maker: Any, args: tuple[Any, ...], options: Mapping[str, Any]) -> None:
    """ModelSettingsError unless `maker(*args, **options)` fits its signature: a setting it
    has no parameter for, a parameter without a default that no setting gives; a Model
    object takes no settings at all."""
    if _is_made(maker):
        if options:
            raise ModelSettingsError(model, refused=list(options), made=True)
        return
    try:
        signature = inspect.signature(maker)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call will say
        return
    bound = signature.bind_partial(*args).arguments
    params = [p for p in signature.parameters.values() if p.name not in bound]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        refused: list[str] = []
    else:
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        refused = [name for name in options if name not in named]
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and (p.name not in options or p.kind is p.POSITIONAL_ONLY)
    ]
    if refused or missing:
        takes = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise ModelSettingsError(model, refused=refused, missing=missing, takes=takes)
