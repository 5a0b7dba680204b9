"""The dependency bundle: backends named by strings (`"sqlite:…"`, `"postgres://…"`, the
model's: `agent.model_specs`) and the defaults of every missing part."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, cast

from loomgraph.agent.config_errors import ConfigError as ConfigError
from loomgraph.agent.config_errors import checked
from loomgraph.agent.model_specs import resolve_model
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
)
from loomgraph.protocols.backend_specs import backend_scheme, backend_spec_problem, split_schema
from loomgraph.protocols.ledger import Bindable, LedgerHost

# The runtime session: the run the current task works for. Tools (also those run in worker
# threads, which copy the context) and background work read the run's identity from here.
current_run: ContextVar[RunRecord | None] = ContextVar("loomgraph_current_run", default=None)


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
        return cast(Memory, checked(memory, Memory, "memory"))
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
        return cast(Runtime, checked(runtime, Runtime, "runtime"))
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


def give_budget(deps: Deps, budget: Budget) -> None:
    """Put `budget` on a bundle made without one (bound as `build_deps` binds it): per-run
    caps given to an Agent that has no budget of its own, without making the Agent again."""
    if deps.budgeted:
        raise ValueError("the agent has a budget already: add caps to it instead")
    bound = _bound(budget, deps.model, deps.runtime)
    deps.budget = checked(bound, Budget, "budget")
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
        return default() if obj is None else checked(obj, protocol, what)

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
