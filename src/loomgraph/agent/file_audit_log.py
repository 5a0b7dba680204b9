"""The `audit_log` section of an agent file: its checks (`loomgraph validate` and
`Agent.from_file` alike: the key can be read, the log's file can be written) and the log it
makes. The checks read the key and nothing else; they write nothing."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loomgraph.authoring.agent_file import AgentFile, AgentSource
from loomgraph.authoring.agent_spec import AuditLogSpec
from loomgraph.errors import Problem

if TYPE_CHECKING:  # the audit log is loaded only for a file that has one
    from loomgraph.observability.audit_chain import AuditLogError
    from loomgraph.observability.audit_key import AuditKeyMissing

__all__ = ["audit_log_of", "audit_log_problems", "not_a_file"]


def audit_log_problems(source: AgentSource) -> list[Problem]:
    """The problems of the file's `audit_log`: no key (a variable not set, a key file
    missing or empty), two key sources, a log file that is a folder or a FIFO, or in a
    folder that does not exist. Reads the key to check it, and nothing else; writes nothing."""
    spec = source.spec.audit_log
    assert spec is not None  # `load_agent_file` checks a section the file has
    found = [_audit_key_problem(source, spec), _audit_file_problem(source, spec)]
    return [p for p in found if p is not None]


def _audit_key_problem(source: AgentSource, spec: AuditLogSpec) -> Problem | None:
    from loomgraph.observability.audit_chain import AuditLogError
    from loomgraph.observability.audit_key import resolve_audit_key

    given = [
        name
        for name, on in (
            ("key_env", spec.key_env is not None),
            ("key_file", spec.key_file is not None),
            ("unsigned", spec.unsigned),
        )
        if on
    ]
    where = ("audit_log", given[0]) if len(given) == 1 else ("audit_log",)

    def problem(message: str) -> Problem:
        return Problem("audit-log", message, str(source.path), source.line_of(*where))

    if len(given) > 1:
        return problem(
            f"`audit_log` gives {' and '.join(f'`{g}`' for g in given)}: give one key "
            "source, `key_env: NAME` or `key_file: PATH`, or `unsigned: true` alone"
        )
    key_file = Path(source.relative(spec.key_file)) if spec.key_file is not None else None
    if key_file is not None and (why := not_a_file(key_file, "audit key file")) is not None:
        return problem(why)  # (a FIFO would block the read)
    try:
        resolve_audit_key(key_file=key_file, key_env=spec.key_env, unsigned=spec.unsigned)
    except AuditLogError as err:
        return problem(_audit_said(err))
    return None


def _audit_file_problem(source: AgentSource, spec: AuditLogSpec) -> Problem | None:
    target = Path(source.relative(spec.file))
    # A log not there yet is made by the first entry: its folder must be.
    why = not_a_file(target, "audit log", missing_ok=True)
    if why is None and not target.parent.is_dir():
        why = (
            f"the audit log {target} is in a folder that does not exist: create "
            f"{target.parent} (the first entry makes the log file, not its folder)"
        )
    if why is None:
        return None
    return Problem("audit-log", why, str(source.path), source.line_of("audit_log", "file"))


def audit_log_of(loaded: AgentFile, spec: AuditLogSpec, problems: list[Problem]) -> Any:
    from loomgraph.observability import FileAuditLog
    from loomgraph.observability.audit_chain import AuditLogError

    try:
        return FileAuditLog(
            loaded.relative(spec.file),
            key_env=spec.key_env,
            key_file=loaded.relative(spec.key_file) if spec.key_file else None,
            unsigned=spec.unsigned,
        )
    except AuditLogError as err:
        said = _audit_said(err)
        problems.append(Problem("audit-log", said, str(loaded.path), loaded.line_of("audit_log")))
        return None


def _audit_said(err: AuditLogError) -> str:
    """An audit-log error said with the keys of the file's `audit_log`: a missing key names
    them, not the Python arguments (`key_file=`) its own message names."""
    from loomgraph.observability import AuditKeyMissing

    return _no_key(err) if isinstance(err, AuditKeyMissing) else str(err)


def _no_key(err: AuditKeyMissing) -> str:
    """An `AuditKeyMissing` said with the keys of the file's `audit_log`."""
    if err.named:
        return f"the audit key variable ${err.variable} (`key_env`) is not set"
    return (
        "the audit log has no key: give `audit_log` a `key_env: NAME` or `key_file: PATH`, "
        f"set ${err.variable}, or say `unsigned: true` for a log anyone can rewrite"
    )


def not_a_file(path: Path, what: str, *, missing_ok: bool = False) -> str | None:
    """Why `path` is no regular file to read (missing, unless `missing_ok`; a folder, a FIFO
    or a device; unreachable), or None when it is one."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None if missing_ok else f"no {what} at {path}"
    except OSError as err:
        return f"cannot reach the {what} {path}: {err.strerror}"
    if not stat.S_ISREG(mode):
        return f"the {what} {path} is not a regular file (a folder, FIFO or device)"
    return None


# ------------------------------------------------------------------ telemetry
