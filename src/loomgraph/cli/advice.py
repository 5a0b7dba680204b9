"""The library's errors worded for the command line: the remedy an error carries as data,
said as the options of the command (`--permissions FILE`, `--key-file`), not as the Python
arguments (`override_policy=True`, `key_file=`) its own message names."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded only when such an error is worded
    from loomgraph.agent.governance_state import PolicyChanged
    from loomgraph.observability.audit_key import AuditKeyMissing

# The command line goes on with a run only under the policy it is pinned to (docs/cli.md).
_NO_MOVE = "the command line does not move a run to other permissions"


def worded(err: BaseException) -> str:
    """What to print for an error of a command that goes on with a journaled run."""
    from loomgraph.agent.governance_state import PolicyChanged

    if isinstance(err, PolicyChanged):
        return policy_changed(err)
    return str(err)


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


def audit_key_missing(err: AuditKeyMissing) -> str:
    """`audit verify | head` of a log without a key source: the options that give one."""
    if err.named:
        return f"the audit key variable ${err.variable} (--key-env) is not set"
    return (
        "the audit log has no key: pass --key-file PATH or --key-env NAME, set "
        f"${err.variable}, or pass --unsigned for a log written without a key"
    )
