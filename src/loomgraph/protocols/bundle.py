"""`Deps`: the dependency bundle a run executes against.

The bundle is the contract between the wiring layer (`loomgraph.agent.deps` builds it from an
Agent's arguments) and the engine (which reaches every backend only through it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loomgraph.protocols.governance import (
    Budget,
    Hooks,
    Permissions,
    PinnablePolicy,
    RunClock,
    Verdict,
)
from loomgraph.protocols.memory import Memory
from loomgraph.protocols.models import Model
from loomgraph.protocols.observability import AuditLog, Telemetry
from loomgraph.protocols.runtime import RunLeases, Runtime
from loomgraph.protocols.tools import (
    ArgumentReader,
    StartableToolHost,
    ToolHost,
    UntrustedDescriptions,
)

__all__ = ["Deps", "SizeLimits"]


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """How large, in characters, what a run takes in may be: a bigger prompt is refused before
    anything is written, bigger tool arguments are a tool error (the tool does not run), a
    bigger tool result is cut, with a marker the model sees, before it is journaled, and a
    state that would outgrow `state_chars` fails the run before the transition is written."""

    prompt_chars: int = 1_000_000
    tool_args_chars: int = 1_000_000
    tool_result_chars: int = 1_000_000
    # The run's whole state as JSON: a node whose patch would take it past this fails the
    # run (`StateTooLarge`) before the transition is journaled.
    state_chars: int = 10_000_000


@dataclass(slots=True)
class Deps:
    """The dependency bundle a run executes against; every field is a protocol."""

    model: Model
    tools: ToolHost
    runtime: Runtime
    memory: Memory
    budget: Budget
    permissions: Permissions
    hooks: Hooks
    telemetry: Telemetry
    audit_log: AuditLog
    # False when the budget has no caps: reservations (and estimating them) are skipped.
    budgeted: bool = True
    # Decides `ask` verdicts in-process: (call, decision) -> True | False | {"args": ...} |
    # an Approval of this call | None (None: stop the run and wait for
    # `agent.resume(run_id, approve=...)`); anything else denies the call.
    approval_handler: Callable[..., Any] | None = None
    # What an egress tool's call gets when its arguments carry untrusted text and the rules
    # would allow it.
    on_tainted: Verdict = "ask"
    # After this many calls in a row of one tool with arguments it rejects, the run fails
    # (ToolArgsInvalid) instead of letting the model retry until a visit limit.
    max_invalid_tool_args: int = 3
    size_limits: SizeLimits = SizeLimits()
    # The runtime again when it offers leases (checked once: protocol checks are slow).
    leases: RunLeases | None = None
    # The budget again when it follows runs from start to end.
    run_clock: RunClock | None = None
    # The tool host again when it starts before each run (MCP servers to list).
    startable_tools: StartableToolHost | None = None
    # The tool host again when its tools convert what they are sent: rules and hooks then
    # read a call's arguments as the tool will receive them (`ArgumentReader`).
    arg_reader: ArgumentReader | None = None
    # The tool host again when some of its tools' descriptions are untrusted text.
    untrusted_descriptions: UntrustedDescriptions | None = None
    # False only for permissions that say they never read a call's arguments.
    permissions_read_args: bool = True
    # The permissions again when they can describe themselves, for pinning runs to them.
    pinnable: PinnablePolicy | None = None
