"""Runs nobody answered in time, sent on by a process with no server or worker to look for
them (`Agent.send_on_expired`): each of the agent's runs waiting for an approval whose
request's deadline passed is resumed without an answer, the call denied as timed out — as
`agent.resume(run_id)` would. A server (`serve.expiry`) and a fleet (`workers.expiry`) look
by themselves."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from loomgraph.agent.answers import may_go_on
from loomgraph.agent.result import RunResult
from loomgraph.agent.resume_answers import unanswered
from loomgraph.agent.resume_errors import ResumeError
from loomgraph.protocols import RunStatus, Runtime
from loomgraph.runtime.errors import RunConflict

__all__ = ["send_on_expired"]

log = logging.getLogger("loomgraph.agent")


async def send_on_expired(
    runtime: Runtime, agent: str, resume: Callable[[str], Awaitable[RunResult]]
) -> list[RunResult]:
    """`resume` each run of the agent named `agent` in `runtime` that waits for an approval
    whose request expired, oldest first; their results. A run another process drives now,
    or that was answered, cancelled or ended meanwhile, is skipped."""
    sent: list[RunResult] = []
    for record in await runtime.runs(status=RunStatus.AWAITING_APPROVAL):
        if not may_go_on(record.agent_name, agent):
            continue
        try:
            unanswered(record)  # an expired approval request, nothing else
            sent.append(await resume(record.run_id))
        except (ResumeError, RunConflict) as err:  # in time, taken up elsewhere, or ended
            log.debug("run %s: not sent on past its deadline: %s", record.run_id, err)
            continue
        log.info("run %s: its approval request expired; sent on", record.run_id)
    return sent
