"""Approval deadlines on a fleet: a run waiting for an approval whose request's deadline
passed is sent on by the workers themselves, the call denied as timed out — as
`submit_resume(run_id)` with no answer would — so `approval_timeout_s` means the same on a
fleet as by hand: nobody has to come back to a run nobody answered."""

from __future__ import annotations

import logging
import time

from loomgraph.agent.agent import Agent
from loomgraph.agent.fleet import FleetQueue
from loomgraph.agent.resume_errors import ResumeError
from loomgraph.agent.submitting import RunJobPending

__all__ = ["SWEEP_BATCH", "send_on_expired"]

log = logging.getLogger("loomgraph.workers")  # the worker's own logger

# Runs sent on by one look; the next look takes the rest.
SWEEP_BATCH = 100


async def send_on_expired(agent: Agent, fleet: FleetQueue) -> int:
    """Queue a plain resume for each of `agent`'s fleet runs whose approval request expired
    (at most SWEEP_BATCH); the number queued. A run another worker sent on already, or that
    was answered or cancelled meanwhile, is skipped: the run's one job and the answer checks
    of `submit_resume` decide, so workers sweeping together queue each run once."""
    queued = 0
    for run_id in await fleet.expired_approvals(agent.name, time.time(), SWEEP_BATCH):
        try:
            await agent.submit_resume(run_id)
        except (RunJobPending, ResumeError) as err:  # a job is queued, or it waits no more
            log.debug("run %s: not sent on past its deadline: %s", run_id, err)
            continue
        log.info("run %s: its approval request expired; sent on, the call denied", run_id)
        queued += 1
    return queued
