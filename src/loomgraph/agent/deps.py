"""The dependency bundle: string resolution (`"echo"`, `"claude-…"`, `"sqlite:…"`) and defaults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, cast

from loomgraph._storage.dsn import backend_spec_problem
from loomgraph.engine.scope import active_scope
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


def resolve_model(
    model: str | Model,
    options: Mapping[str, Any] | None = None,
    *,
    near: str | Path | None = None,
) -> Model:
    """A Model for a name (`echo`, `claude-…`, `anthropic:NAME`, `openai:NAME`,
    `MODULE:ATTR`) or a Model object. `options` (max_tokens, temperature, base_url, …) go
    to the adapter; `near` is the file whose folder a MODULE:ATTR is looked for in first."""
    options = dict(options or {})
    if not isinstance(model, str):
        if isinstance(model, Model):
            return model
        raise ConfigError(
            f"model must be a name or an object with `name` and `stream()`, "
            f"got {type(model).__name__}"
        )
    scheme, sep, rest = model.partition(":")
    if model == "echo":
        from loomgraph.models.echo import EchoModel

        return cast(Model, _adapter(EchoModel, (), options, model))
    if model.startswith("claude-") or (scheme == "anthropic" and rest):
        from loomgraph.models.anthropic import AnthropicModel

        return cast(Model, _adapter(AnthropicModel, (rest or model,), options, model))
    if scheme in ("openai", "openai-compat") and rest:
        from loomgraph.models.openai_compat import OpenAICompatModel

        return cast(Model, _adapter(OpenAICompatModel, (rest,), options, model))
    if sep and rest and scheme not in ("anthropic", "openai", "openai-compat"):
        return _imported_model(model, options, near)
    raise ConfigError(f"unknown model {model!r}; use {MODEL_FORMS}")


def _adapter(cls: Any, args: tuple[Any, ...], options: dict[str, Any], name: str) -> Any:
    try:
        return cls(*args, **options)
    except TypeError as err:
        raise ConfigError(f"model {name!r}: {err}") from None


def _imported_model(spec: str, options: dict[str, Any], near: str | Path | None) -> Model:
    """The Model a `MODULE:ATTR` names: the object itself, or what calling it returns."""
    from loomgraph.graph.imports import import_object

    try:
        target = import_object(spec, near=near, what="model")
    except ImportError as err:
        raise ConfigError(f"unknown model {spec!r}: {err}; use {MODEL_FORMS}") from None
    if not isinstance(target, Model):
        if not callable(target):
            raise ConfigError(f"model {spec!r} is neither a Model nor a function returning one")
        target = target(**options)
    elif options:
        raise ConfigError(
            f"model {spec!r} is a Model object; settings ({', '.join(options)}) apply only to "
            "a named model or to a function returning one"
        )
    return cast(Model, _checked(target, Model, "model"))


def _split_spec(spec: str, what: str) -> tuple[str, str]:
    """A backend's spec as (scheme, what the backend is given); ConfigError for one naming
    nothing to open (`sqlite:`, a `postgres:` DSN that would connect wherever libpq's
    defaults point)."""
    problem = backend_spec_problem(spec)
    if problem is not None:
        raise ConfigError(f"{what} {problem}")
    scheme, sep, rest = spec.partition(":")
    if spec.startswith(("postgres://", "postgresql://")):
        return "postgres", spec
    return (scheme, rest) if sep else (spec, "")


def resolve_memory(memory: str | Memory | None) -> Memory:
    """A Memory for None (keeps nothing), "memory", "sqlite:PATH", "postgres://…" or an object."""
    if memory is None:
        from loomgraph.memory.null import NoMemory

        return NoMemory()
    if not isinstance(memory, str):
        return cast(Memory, _checked(memory, Memory, "memory"))
    scheme, rest = _split_spec(memory, "memory")
    if scheme == "memory":
        from loomgraph.memory.null import InMemoryMemory

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
    return cls(arg)


def _checked(obj: Any, protocol: type, what: str) -> Any:
    if not implements(obj, protocol):
        raise ConfigError(
            f"{what} object {type(obj).__name__} does not implement the "
            f"{protocol.__name__} protocol"
        )
    return obj


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
    if isinstance(budget, Bindable):
        # Price with the agent's model, keep the default ledger next to a durable journal
        # (so caps hold across processes), turn warnings into events: on a bound copy.
        site = journal.ledger_site if isinstance(journal, LedgerHost) else None
        budget = budget.bind(model=chosen.name, site=site, on_warning=_warn_run)
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
    scope = active_scope.get()
    if scope is not None and scope.run_id == warning.run_id:
        await scope.emit(BUDGET_WARNING, {"cap": warning.cap, "fraction": warning.fraction}, None)
