"""Build an Agent's arguments from an agent file (`Agent.from_file`).

`authoring.agent_file` validates the file; this module turns the spec into objects: the
model with its settings, tools (import paths next to the file, MCP servers), backends,
budget, permissions, audit log and telemetry. Problems found only here (a permission rule
that does not parse) are reported with the file's line like the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from loomgraph.agent.deps import resolve_model
from loomgraph.authoring.agent_file import AgentFile, AgentFileError, load_agent_file
from loomgraph.authoring.agent_spec import (
    AuditLogSpec,
    BudgetSpec,
    CapsSpec,
    MCPHttpSpec,
    MCPStdioSpec,
    TelemetrySpec,
)
from loomgraph.errors import Problem
from loomgraph.graph.imports import import_object

if TYPE_CHECKING:  # the audit log is loaded only for a file that has one
    from loomgraph.observability.audit_key import AuditKeyMissing

__all__ = ["agent_arguments"]


def agent_arguments(path: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The Agent's keyword arguments from the file at `path`, `overrides` replacing them."""
    loaded = load_agent_file(path)
    spec = loaded.spec
    problems: list[Problem] = []
    args: dict[str, Any] = {
        "name": spec.name,
        "instructions": loaded.instructions,
        "architecture": loaded.graph,
        "memory": loaded.backend(spec.memory),
        "runtime": loaded.backend(spec.runtime),
    }
    if "model" not in overrides:
        model = spec.model_spec
        args["model"] = resolve_model(model.name, model.options(), near=loaded.path)
    if "tools" not in overrides:
        args["tools"] = _tools(loaded)
    if spec.budget is not None and "budget" not in overrides:
        args["budget"] = _budget(spec.budget)
    if spec.permissions is not None and "permissions" not in overrides:
        args["permissions"] = _permissions(loaded, problems)
    if spec.audit_log is not None and "audit_log" not in overrides:
        args["audit_log"] = _audit_log(loaded, spec.audit_log, problems)
    if spec.telemetry is not None and "telemetry" not in overrides:
        args["telemetry"] = _telemetry(spec.telemetry, spec.name)
    if problems:
        raise AgentFileError(problems)
    args.update(overrides)
    return args


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
    )
    return StandardBudget(config)


def _permissions(loaded: AgentFile, problems: list[Problem]) -> Any:
    from loomgraph.governance.permission_files import kwargs_from_data
    from loomgraph.governance.permissions import StandardPermissions
    from loomgraph.governance.rule_errors import PermissionConfigError

    source = loaded.spec.permissions
    try:
        if isinstance(source, str):
            return StandardPermissions.from_file(loaded.relative(source))
        sub = {k[1:]: v for k, v in loaded.lines.items() if k[:1] == ("permissions",)}
        kwargs = kwargs_from_data(source, file=str(loaded.path), lines=sub, base_dir=loaded.folder)
        return StandardPermissions(**kwargs)
    except PermissionConfigError as err:
        line = err.line or loaded.line_of("permissions")
        problems.append(Problem("permissions", err.message, err.file or str(loaded.path), line))
        return None


def _audit_log(loaded: AgentFile, spec: AuditLogSpec, problems: list[Problem]) -> Any:
    from loomgraph.observability import AuditKeyMissing, FileAuditLog
    from loomgraph.observability.audit_chain import AuditLogError

    try:
        return FileAuditLog(
            loaded.relative(spec.file),
            key_env=spec.key_env,
            key_file=loaded.relative(spec.key_file) if spec.key_file else None,
            unsigned=spec.unsigned,
        )
    except AuditLogError as err:
        said = _no_key(err) if isinstance(err, AuditKeyMissing) else str(err)
        problems.append(Problem("audit-log", said, str(loaded.path), loaded.line_of("audit_log")))
        return None


def _no_key(err: AuditKeyMissing) -> str:
    """An `AuditKeyMissing` said with the keys of the file's `audit_log`, not the Python
    arguments (`key_file=`) its own message names."""
    if err.named:
        return f"the audit key variable ${err.variable} (`key_env`) is not set"
    return (
        "the audit log has no key: give `audit_log` a `key_env: NAME` or `key_file: PATH`, "
        f"set ${err.variable}, or say `unsigned: true` for a log anyone can rewrite"
    )


def _telemetry(spec: TelemetrySpec, name: str) -> Any:
    from loomgraph.observability import OTelTelemetry, otlp

    if spec.otlp_endpoint is None:
        return OTelTelemetry(capture_content=spec.capture_content)
    # The same exporter as `observability.otlp()`: traces and metrics, named after the agent.
    return otlp(
        spec.otlp_endpoint,
        capture_content=spec.capture_content,
        service_name=spec.service_name or name,
    )
