"""The library's errors worded for the command line: the remedy an error carries as data,
said as the options of the command (`--permissions FILE`, `-a FILE`, `--key-file`,
`--graph current`, `runs retry`), not as the Python arguments and calls
(`override_policy=True`, `key_file=`, `graph='current'`, `agent.retry`) its own message
names."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded only when such an error is worded
    from loomgraph.agent.checkpoints import GraphChanged
    from loomgraph.agent.governance_state import GovernanceChanged, PolicyChanged
    from loomgraph.agent.recovery import RunDeadLettered
    from loomgraph.observability.audit_key import AuditKeyMissing

# The command line goes on with a run only under the policy it is pinned to (docs/cli.md).
_NO_MOVE = "the command line does not move a run to other permissions"


def worded(err: BaseException) -> str:
    """What to print for an error of a command that goes on with a journaled run."""
    from loomgraph.agent.checkpoints import GraphChanged
    from loomgraph.agent.governance_state import GovernanceChanged, PolicyChanged
    from loomgraph.agent.recovery import RunDeadLettered
    from loomgraph.agent.resume_errors import ApprovalExpired, ToolNotOffered

    if isinstance(err, ApprovalExpired):
        return (
            f"the approval request for call {err.call_id} of run {err.run_id} expired; go on "
            f"without an answer, the call denied as timed out: loomgraph runs resume "
            f"{err.run_id} (with this command's agent and journal options)"
        )
    if isinstance(err, ToolNotOffered):  # the tools come from the command line here
        return f"{err} (--tools MODULE:ATTR as the run started with, or -a its agent file)"
    if isinstance(err, PolicyChanged):
        return policy_changed(err)
    if isinstance(err, GovernanceChanged):
        return governance_changed(err)
    if isinstance(err, GraphChanged):
        return graph_changed(err)
    if isinstance(err, RunDeadLettered):
        return dead_letter(err)
    return str(err)


def graph_changed(err: GraphChanged) -> str:
    """A run that cannot go on with its own graph: the `--graph` that moves it, when one may."""
    if not err.movable:  # the move itself was refused: nothing else to offer
        return str(err)
    return (
        f"{err.problem}; --graph current moves the run to its graph as it reads now (the "
        "agent file's, else the built-in graph of its name) and --graph FILE to a graph "
        "file, if the run's position fits it"
    )


def dead_letter(err: RunDeadLettered) -> str:
    """A dead letter refused by `runs resume`: the command that goes on with it."""
    return (
        f"run {err.run_id} is a dead letter ({err.reason}); `loomgraph runs retry "
        f"{err.run_id}`, with the same agent and journal options, forgets its failed "
        "recoveries and resumes it"
    )


def policy_changed(err: PolicyChanged) -> str:
    """A run pinned to other permissions than the command's: which permissions to give."""
    from loomgraph.governance.permissions import StandardPermissions

    if err.pinned == StandardPermissions().fingerprint():
        return (
            f"run {err.run_id} started with the default permissions (policy {err.pinned}); "
            f"these are {err.current}: leave --permissions out (and, with -a, use an agent "
            f"file without `permissions`) to go on with it; {_NO_MOVE}"
        )
    return (
        f"run {err.run_id} is pinned to permission policy {err.pinned}; these are "
        f"{err.current}: give the --permissions FILE the run started with (or the agent "
        f"file naming it), unchanged, to go on with it; {_NO_MOVE}"
    )


def governance_changed(err: GovernanceChanged) -> str:
    """A run pinned to a budget or an audit log the command's options do not give: only an
    agent file gives them, so the one the run started with."""
    from loomgraph.agent.governance_state import both_said

    pinned, current = both_said(err.changed)
    return (
        f"run {err.run_id} is pinned to {pinned}; these options give {current}: give the "
        "agent file the run started with (-a FILE), unchanged, to go on with it under its "
        "budget and audit log; the command line does not move a run to another budget or "
        "audit log"
    )


def audit_key_missing(err: AuditKeyMissing) -> str:
    """`audit verify | head` of a log without a key source: the options that give one."""
    if err.named:
        return f"the audit key variable ${err.variable} (--key-env) is not set"
    return (
        "the audit log has no key: pass --key-file PATH or --key-env NAME, set "
        f"${err.variable}, or pass --unsigned for a log written without a key"
    )
