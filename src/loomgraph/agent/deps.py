"""The dependency bundle: string resolution (`"echo"`, `"claude-…"`, `"sqlite:…"`) and defaults."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, cast

from loomgraph.errors import LoomgraphError
from loomgraph.protocols import (
    BUDGET_WARNING,
    ArgumentReader,
    AuditLog,
    Budget,
    Deps,
    Hooks,
    Memory,
    Model,
    Permissions,
    PinnablePolicy,
    RunClock,
    RunLeases,
    RunRecord,
    Runtime,
    SizeLimits,
    StartableToolHost,
    Telemetry,
    ToolHost,
    UntrustedDescriptions,
    implements,
)
from loomgraph.protocols.backend_specs import backend_scheme, backend_spec_problem, split_schema
from loomgraph.protocols.ledger import Bindable, LedgerHost

# The runtime session: the run the current task works for. Tools (also those run in worker
# threads, which copy the context) and background work read the run's identity from here.
current_run: ContextVar[RunRecord | None] = ContextVar("loomgraph_current_run", default=None)


class ConfigError(LoomgraphError, ValueError):
    """An Agent argument that names nothing loomgraph knows; the message lists what exists."""


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
    return cast(Model, _checked(made, Model, "model"))


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


def _split_spec(spec: str, what: str) -> tuple[str, str]:
    """A backend's spec as (scheme, what the backend is given); ConfigError for one that
    names nothing to open (`sqlite`, `sqlite:`, `sqlite://…`, `postgres`, a DSN that would
    connect wherever libpq's defaults point) or is in no form loomgraph reads."""
    problem = backend_spec_problem(spec)
    scheme = backend_scheme(spec)
    if problem is not None or scheme is None:
        raise ConfigError(f"{what} {problem}")
    if scheme == "postgres":
        return "postgres", spec
    return scheme, spec.partition(":")[2]


def resolve_memory(memory: str | Memory | None) -> Memory:
    """A Memory for None (keeps nothing), "memory", "sqlite:PATH", "postgres://…" or an object."""
    if memory is None:
        from loomgraph.memory.null import NoMemory

        return NoMemory()
    if not isinstance(memory, str):
        return cast(Memory, _checked(memory, Memory, "memory"))
    scheme, rest = _split_spec(memory, "memory")
    if scheme == "memory":
        from loomgraph.memory.in_memory import InMemoryMemory

        return InMemoryMemory()
    return cast(
        Memory,
        _backend(
            "memory",
            scheme,
            rest,
            {
                "sqlite": ("loomgraph.memory.sqlite", "SqliteMemory"),
                "postgres": ("loomgraph.memory.postgres", "PostgresMemory"),
            },
        ),
    )


def resolve_runtime(runtime: str | Runtime | None) -> Runtime:
    """A Runtime for None or "memory" (in process), "sqlite:PATH", "postgres://…" or an object."""
    if runtime is None or runtime == "memory":
        from loomgraph.runtime.memory import InMemoryRuntime

        return InMemoryRuntime()
    if not isinstance(runtime, str):
        return cast(Runtime, _checked(runtime, Runtime, "runtime"))
    scheme, rest = _split_spec(runtime, "runtime")
    return cast(
        Runtime,
        _backend(
            "runtime",
            scheme,
            rest,
            {
                "sqlite": ("loomgraph.runtime.sqlite", "SqliteRuntime"),
                "postgres": ("loomgraph.runtime.postgres", "PostgresRuntime"),
            },
        ),
    )


def _backend(what: str, scheme: str, arg: str, known: dict[str, tuple[str, str]]) -> Any:
    import importlib

    if scheme not in known:
        raise ConfigError(
            f"unknown {what} {scheme!r}; use None, 'memory', "
            + ", ".join(f"'{k}:…'" for k in known)
            + f", or a {what} object"
        )
    module_name, cls_name = known[scheme]
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except ImportError as err:
        raise ConfigError(f"{what} backend {scheme!r} is not available: {err}") from None
    if scheme == "postgres":  # `?schema=NAME`: the backend's tables' schema
        dsn, schema = split_schema(arg)  # checked already (`_split_spec`)
        return cls(dsn) if schema is None else cls(dsn, schema=schema)
    return cls(arg)


def _checked(obj: Any, protocol: type, what: str) -> Any:
    if not implements(obj, protocol):
        raise ConfigError(
            f"{what} object {type(obj).__name__} does not implement the "
            f"{protocol.__name__} protocol"
        )
    return obj


def give_budget(deps: Deps, budget: Budget) -> None:
    """Put `budget` on a bundle made without one (bound as `build_deps` binds it): per-run
    caps given to an Agent that has no budget of its own, without making the Agent again."""
    if deps.budgeted:
        raise ValueError("the agent has a budget already: add caps to it instead")
    bound = _bound(budget, deps.model, deps.runtime)
    deps.budget = _checked(bound, Budget, "budget")
    deps.budgeted = True
    deps.run_clock = bound if isinstance(bound, RunClock) else None


def _bound(budget: Budget | None, model: Model, journal: Runtime) -> Budget | None:
    """`budget` priced with the agent's model, its default ledger next to a durable journal
    (so caps hold across processes), its warnings turned into events: a bound copy."""
    if not isinstance(budget, Bindable):
        return budget
    site = journal.ledger_site if isinstance(journal, LedgerHost) else None
    return budget.bind(model=model.name, site=site, on_warning=_warn_run)


def build_deps(
    *,
    model: str | Model,
    memory: str | Memory | None = None,
    tools: Any = None,
    runtime: str | Runtime | None = None,
    budget: Budget | None = None,
    permissions: Permissions | None = None,
    hooks: Hooks | None = None,
    telemetry: Telemetry | None = None,
    audit_log: AuditLog | None = None,
    approval_handler: Callable[..., Any] | None = None,
    max_invalid_tool_args: int = 3,
    size_limits: SizeLimits | None = None,
    tool_deps: Mapping[Any, Any] | None = None,
) -> Deps:
    """The bundle for an Agent: every missing piece is its no-op default."""
    from loomgraph.governance.null import NoBudget, NoHooks
    from loomgraph.governance.permissions import StandardPermissions
    from loomgraph.observability import NoAuditLog, NoTelemetry
    from loomgraph.tools import as_tool_host

    def given(obj: Any, protocol: type, what: str, default: type) -> Any:
        return default() if obj is None else _checked(obj, protocol, what)

    host: ToolHost = as_tool_host(tools, deps=tool_deps)
    journal = resolve_runtime(runtime)
    chosen = resolve_model(model)
    budget = _bound(budget, chosen, journal)
    permissions = given(permissions, Permissions, "permissions", StandardPermissions)
    pinnable = permissions if isinstance(permissions, PinnablePolicy) else None
    return Deps(
        model=chosen,
        tools=host,
        runtime=journal,
        leases=journal if isinstance(journal, RunLeases) else None,
        memory=resolve_memory(memory),
        budget=given(budget, Budget, "budget", NoBudget),
        budgeted=budget is not None,
        run_clock=budget if isinstance(budget, RunClock) else None,
        approval_handler=approval_handler,
        max_invalid_tool_args=max_invalid_tool_args,
        size_limits=size_limits or SizeLimits(),
        startable_tools=host if isinstance(host, StartableToolHost) else None,
        arg_reader=host if isinstance(host, ArgumentReader) else None,
        untrusted_descriptions=host if isinstance(host, UntrustedDescriptions) else None,
        # Permissions that do not say otherwise may read arguments (a policy of the user's).
        permissions_read_args=bool(getattr(permissions, "reads_arguments", True)),
        # With no configuration a destructive tool asks (the `default` mode), never runs unasked.
        permissions=permissions,
        pinnable=pinnable,
        on_tainted=pinnable.on_tainted if pinnable is not None else "ask",
        hooks=given(hooks, Hooks, "hooks", NoHooks),
        telemetry=given(telemetry, Telemetry, "telemetry", NoTelemetry),
        audit_log=given(audit_log, AuditLog, "audit_log", NoAuditLog),
    )


async def _warn_run(warning: Any) -> None:
    """A budget warning, as a `budget_warning` event of the run that crossed the threshold."""
    from loomgraph.engine.scope import active_scope  # loaded by the run this warns about

    scope = active_scope.get()
    if scope is not None and scope.run_id == warning.run_id:
        await scope.emit(BUDGET_WARNING, {"cap": warning.cap, "fraction": warning.fraction}, None)
