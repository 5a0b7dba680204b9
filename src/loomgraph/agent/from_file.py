"""Build an Agent's arguments from an agent file (`Agent.from_file`), and check a file as
it would (`validate_agent_file`, what `loomgraph validate` runs).

`authoring.agent_file` validates the file's shape, graph and imports; this module turns the
spec into objects: the model with its settings, tools (import paths next to the file, MCP
servers), backends, budget, permissions, audit log (`file_audit_log`) and telemetry. What
only a backend can check — `model` (the model takes its settings), `budget` (the budget
takes its caps, a cost cap can price the model), `permissions` (its rules parse, its files
read) and `audit_log` (its key, its file's folder) — is one check per section
(`SECTION_CHECKS`), which `load_agent_file` runs beside its own, for `Agent.from_file` and
for `validate_agent_file` alike: both report the same problems, every one at once, with the
file's lines. The checks read; they never write, connect or start anything (a built-in model
adapter, made offline, is made and dropped; a user's model function is read, not called).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loomgraph.agent.config_errors import ConfigError
from loomgraph.agent.file_audit_log import audit_log_of, audit_log_problems, not_a_file
from loomgraph.agent.model_specs import (
    ModelSettingsError,
    UnknownModel,
    check_model,
    resolve_model,
)
from loomgraph.authoring.agent_file import (
    AgentFile,
    AgentFileError,
    AgentSource,
    SectionCheck,
    load_agent_file,
)
from loomgraph.authoring.agent_spec import (
    BudgetSpec,
    CapsSpec,
    MCPHttpSpec,
    MCPStdioSpec,
    TelemetrySpec,
    names_an_adapter,
    unpriced_problem,
)
from loomgraph.errors import Problem
from loomgraph.graph.imports import import_object
from loomgraph.models.errors import ModelConfigError

if TYPE_CHECKING:  # governance and the audit log are loaded only for a file that has them
    from loomgraph.governance.permissions import StandardPermissions
    from loomgraph.governance.rule_errors import PermissionConfigError

__all__ = ["SECTION_CHECKS", "agent_arguments", "model_problems", "validate_agent_file"]


def validate_agent_file(path: str | Path) -> AgentFile:
    """Load an agent file and check it as `Agent.from_file` does, building nothing that acts
    (no backend made, no function of the user's called, nothing written or connected; a
    built-in model adapter is made offline and dropped); AgentFileError with every problem."""
    return load_agent_file(path, checks=SECTION_CHECKS)


def agent_arguments(path: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The Agent's keyword arguments from the file at `path`, `overrides` replacing them."""
    # A section an override replaces is not used, so it is not checked either (nor the
    # budget's prices against a model that another replaces).
    replaced = {*overrides, *(["budget"] if "model" in overrides else [])}
    checks = {key: check for key, check in SECTION_CHECKS.items() if key not in replaced}
    loaded = load_agent_file(path, checks=checks)
    spec = loaded.spec
    # The file's prices go to the model it makes as well as to its budget: the ledger charges
    # what the adapter reports, so both price alike. A budget given in Python replaces them.
    prices = spec.budget.price_table() if spec.budget and "budget" not in overrides else None
    problems: list[Problem] = []
    args: dict[str, Any] = {
        "name": spec.name,
        "instructions": loaded.instructions,
        "architecture": loaded.graph,
        "memory": loaded.backend(spec.memory),
        "runtime": loaded.backend(spec.runtime),
    }
    if "model" not in overrides:
        args["model"] = _model(loaded, problems, prices)
    if "tools" not in overrides:
        args["tools"] = _tools(loaded)
    if spec.budget is not None and "budget" not in overrides:
        args["budget"] = _budget(spec.budget)
        if "model" in args and not names_an_adapter(spec.model_spec.name):
            # A MODULE:ATTR model is named only once made (an adapter's check ran at load).
            problems += _unpriced(loaded, getattr(args["model"], "name", None))
    if spec.permissions is not None and "permissions" not in overrides:
        args["permissions"] = _permissions(loaded, problems)
    if spec.audit_log is not None and "audit_log" not in overrides:
        args["audit_log"] = audit_log_of(loaded, spec.audit_log, problems)
    if spec.telemetry is not None and "telemetry" not in overrides:
        args["telemetry"] = _telemetry(spec.telemetry, spec.name)
    if problems:  # the checks passed, but a file changed since (a permission file edited)
        raise AgentFileError(problems)
    args.update(overrides)
    return args


# ------------------------------------------------------------------ the model


def model_problems(source: AgentSource) -> list[Problem]:
    """The problems of the file's model that only making it finds: a setting the model does
    not take (each at its line, saying what the model takes), a setting it needs, a value
    its adapter refuses. Calls none of the user's code (a `MODULE:ATTR` function is read,
    not called); a name the loader refused already is not looked at again."""
    model = source.spec.model_spec
    try:
        check_model(model.name, model.options(), near=source.path)
    except UnknownModel:
        return []  # the loader's own `[model]` or `[import]` problem
    except (ConfigError, ModelConfigError) as err:
        return _model_said(err, source)
    return []


def _model(loaded: AgentFile, problems: list[Problem], prices: Any = None) -> Any:
    """The file's model, made (a built-in adapter with the budget's `prices`); problems (not
    a raw error) when making it fails as `model_problems` would have said, or as the user's
    function raises it."""
    model = loaded.spec.model_spec
    # Only the adapters take a price table: echo prices nothing, and a MODULE:ATTR model
    # takes the settings its code names (the budget prices what it does not).
    priced = {"prices": prices} if prices and names_an_adapter(model.name) else {}
    try:
        return resolve_model(model.name, {**model.options(), **priced}, near=loaded.path)
    except (ConfigError, ModelConfigError) as err:
        problems.extend(_model_said(err, loaded))
        return None


def _model_said(err: ConfigError | ModelConfigError, source: AgentSource) -> list[Problem]:
    """The error as `[model]` problems: one per setting the model does not take, at its
    line; one for those it needs, or for any other error, at the model's line."""

    def at(message: str, *setting: str) -> Problem:
        return Problem("model", message, str(source.path), source.line_of("model", *setting))

    if not isinstance(err, ModelSettingsError):
        return [at(str(err))]
    found = [at(err.about(name), name) for name in err.refused]
    return found + ([at(err.needs())] if err.missing else [])


# ------------------------------------------------------------------ tools


def _tools(loaded: AgentFile) -> list[Any]:
    tools: list[Any] = []
    for entry in loaded.spec.tools:
        if isinstance(entry, str):
            found = import_object(entry, near=loaded.path, what="tool")
            tools.extend(found if isinstance(found, list | tuple) else [found])
        else:
            tools.append(_mcp_server(entry, loaded))
    return tools


def _mcp_server(entry: MCPStdioSpec | MCPHttpSpec, loaded: AgentFile) -> Any:
    # Imported here: the MCP package is optional, and only files naming a server need it.
    from loomgraph.tools.mcp import MCPServer

    if isinstance(entry, MCPStdioSpec):
        return MCPServer.stdio(
            *entry.command,
            name=entry.name,
            prefix=entry.prefix,
            trust=entry.trust,
            timeout=entry.timeout,
            env=entry.env,
            cwd=loaded.relative(entry.cwd) if entry.cwd else str(loaded.folder),
        )
    return MCPServer.http(
        entry.url,
        name=entry.name,
        headers=entry.headers,
        prefix=entry.prefix,
        trust=entry.trust,
        timeout=entry.timeout,
    )


def _caps(spec: CapsSpec) -> Any:
    from loomgraph.governance.caps import Caps

    return Caps(**spec.model_dump(include=set(CapsSpec.model_fields), exclude_none=True))


def _budget(spec: BudgetSpec) -> Any:
    from loomgraph.governance.budget import StandardBudget
    from loomgraph.governance.caps import BudgetConfig

    config = BudgetConfig(
        **spec.model_dump(include=set(CapsSpec.model_fields), exclude_none=True),
        per_user=_caps(spec.per_user) if spec.per_user else None,
        users={user: _caps(caps) for user, caps in (spec.users or {}).items()},
        warn_at=spec.warn_at,
        prices=spec.price_table(),
    )
    return StandardBudget(config)


def budget_problems(source: AgentSource) -> list[Problem]:
    """The problem of a setting the budget refuses (a cap no ledger can count: at its line),
    or of a cost cap on a built-in model that neither the price table nor the budget's
    `prices` knows (the Agent would refuse it: its calls would be reserved at $0).
    The adapter is made offline, as the `model` check makes it, for the name it goes by."""
    from loomgraph.governance.caps import BudgetConfigError

    budget, model = source.spec.budget, source.spec.model_spec
    if budget is None:
        return []
    try:
        _budget(budget)  # what the Agent is given: a cap no ledger can count is refused
    except BudgetConfigError as err:
        where = budget.setting_at(err.field) or ()
        return [Problem("budget", str(err), str(source.path), source.line_of("budget", *where))]
    if budget.cost_cap_at() is None or not names_an_adapter(model.name):
        return []  # no cost cap; echo is priced; a MODULE:ATTR model is checked once made
    try:
        made = resolve_model(model.name, model.options(), near=source.path)
    except (ConfigError, ModelConfigError):
        return []  # the `model` check's problem
    return _unpriced(source, made.name)


def _unpriced(source: AgentSource, name: str | None) -> list[Problem]:
    """A `[budget]` problem when the budget caps cost and cannot price model `name`, at its
    `prices` (which then miss it) or else at its cost cap."""
    from loomgraph.governance.caps import BudgetConfigError, check_priced

    spec = source.spec.budget
    cap = spec.cost_cap_at() if spec is not None else None
    if spec is None or cap is None or name is None:
        return []
    try:
        check_priced(name, spec.price_table())
    except BudgetConfigError:
        said = unpriced_problem(source.spec.model_spec.name, name)
        where = ("prices",) if spec.prices is not None else cap
        return [Problem("budget", said, str(source.path), source.line_of("budget", *where))]
    return []


# ------------------------------------------------------------------ permissions


def permission_problems(source: AgentSource) -> list[Problem]:
    """The problems of the file's `permissions`: a rule that does not parse, an unknown mode,
    key or set, a permission file or set file that is missing or does not parse."""
    from loomgraph.governance.rule_errors import PermissionConfigError

    try:
        _permissions_of(source)
    except PermissionConfigError as err:
        return [_permission_problem(err, source)]
    return []


def _permissions(loaded: AgentFile, problems: list[Problem]) -> StandardPermissions | None:
    from loomgraph.governance.rule_errors import PermissionConfigError

    try:
        return _permissions_of(loaded)
    except PermissionConfigError as err:
        problems.append(_permission_problem(err, loaded))
        return None


def _permissions_of(source: AgentSource) -> StandardPermissions:
    """The file's permissions, made as the Agent gets them; PermissionConfigError located in
    the file it comes from."""
    from loomgraph.governance.permission_files import kwargs_from_data
    from loomgraph.governance.permissions import StandardPermissions
    from loomgraph.governance.rule_errors import PermissionConfigError

    given = source.spec.permissions
    if isinstance(given, str):
        target = Path(source.relative(given))
        # Checked first: reading a FIFO or device would wait, or never end.
        if (why := not_a_file(target, "permission file")) is not None:
            raise PermissionConfigError(why)
        try:
            return StandardPermissions.from_file(target)
        except PermissionConfigError as err:
            raise err.at(str(target), None) from None  # what the rules say names their file
    sub = {k[1:]: v for k, v in source.lines.items() if k[:1] == ("permissions",)}
    kwargs = kwargs_from_data(given, file=str(source.path), lines=sub, base_dir=source.folder)
    return StandardPermissions(**kwargs)


def _permission_problem(err: PermissionConfigError, source: AgentSource) -> Problem:
    """A permission error as a problem: at its own file and line when it has both, else at
    the agent file's `permissions` (naming the permission file it is about)."""
    from loomgraph.governance.rule_errors import RuleSyntaxError

    said = err.message
    if isinstance(err, RuleSyntaxError):  # its `message` is the problem without the rule
        said = f"invalid permission rule {err.rule!r}: {err.problem} (at position {err.position})"
    if err.file is not None and err.line is not None:
        return Problem("permissions", said, err.file, err.line)
    if err.file is not None and err.file != str(source.path):
        said = f"{err.file}: {said}"
    return Problem("permissions", said, str(source.path), source.line_of("permissions"))


def _telemetry(spec: TelemetrySpec, name: str) -> Any:
    from loomgraph.observability import OTelTelemetry, otlp
    from loomgraph.observability.otlp import SERVICE_NAME

    if spec.otlp_endpoint is None:
        return OTelTelemetry(capture_content=spec.capture_content)
    # The same exporter as `observability.otlp()`: traces and metrics, named as the file says,
    # else as the environment does (`OTEL_SERVICE_NAME`), else after the agent.
    return otlp(
        spec.otlp_endpoint,
        capture_content=spec.capture_content,
        service_name=spec.service_name,
        default_service_name=name or SERVICE_NAME,
    )


# The sections of an agent file only their backends can check, by top-level key (the key is
# also the `Agent` argument the section makes, which an override replaces).
SECTION_CHECKS: Mapping[str, SectionCheck] = {
    "model": model_problems,
    "budget": budget_problems,
    "permissions": permission_problems,
    "audit_log": audit_log_problems,
}
