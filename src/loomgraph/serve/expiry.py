"""A server's look for runs nobody answered in time: the runs of its agent waiting for an
approval whose request's deadline passed are sent on by the server that drives them, the
call denied as timed out — as `POST /v1/runs/{id}/resume` with no body would — so
`approval_timeout_s` needs nobody to come back. With `--fleet` the workers look instead
(`workers.expiry`)."""

from __future__ import annotations

import logging

from loomgraph.agent.resume_answers import unanswered
from loomgraph.agent.resume_errors import ResumeError
from loomgraph.protocols import RunStatus
from loomgraph.runtime.errors import RunConflict
from loomgraph.serve.errors import ServeError
from loomgraph.serve.run_pages import EVERYONE
from loomgraph.serve.service import Service

__all__ = ["send_on_expired"]

log = logging.getLogger("loomgraph.serve")

# Waiting runs read a page at a time.
_PAGE = 100


async def send_on_expired(service: Service) -> int:
    """Send on every run of the served agent waiting for an approval whose request expired
    (not one this process drives already); the number sent on. A run another server took up
    meanwhile, or that was answered or cancelled, is skipped."""
    if service.fleet:
        return 0
    sent, cursor = 0, None
    while True:
        page = await service.store.runs(
            EVERYONE,
            status=RunStatus.AWAITING_APPROVAL,
            limit=_PAGE,
            cursor=cursor,
            agent=service.agent.name,
        )
        for record in page.runs:
            if service.hub.driving(record.run_id):
                continue
            try:
                unanswered(record)  # the check `go_on` makes: an expired approval request
                await service.send_on(record.run_id)
            except (RunConflict, ServeError, ResumeError) as err:  # in time, or taken up elsewhere
                log.debug("run %s: not sent on past its deadline: %s", record.run_id, err)
                continue
            log.info("run %s: its approval request expired; sent on", record.run_id)
            sent += 1
        if not page.cursor:
            return sent
        cursor = page.cursor
