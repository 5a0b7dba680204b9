"""The worker-fleet methods of `Agent` (docs/scaling.md): thin calls of `agent.submitting`,
imported at the first call so that an Agent that never uses the fleet never loads it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from loomgraph.agent.defaults import DEFAULT_QUEUE, NO_VALUE
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import Deps

if TYPE_CHECKING:
    from loomgraph.agent.result import RunResult
    from loomgraph.agent.resuming import Resumer
    from loomgraph.agent.submitting import CancelOutcome


class FleetMethods:
    """`submit`, `submit_fork`, `submit_resume`, `wait` and `cancel`, for a class with
    `deps`, `compiled`, `name` and `resumer` (an `Agent`)."""

    deps: Deps
    compiled: CompiledGraph
    name: str

    def resumer(self) -> Resumer:
        """What going on from the journal needs (an Agent's)."""
        raise NotImplementedError

    async def submit(
        self,
        prompt: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        output_schema: Any = None,
        output_retries: int | None = None,
        priority: int = 0,
        run_at: datetime | float | None = None,
        queue: str = DEFAULT_QUEUE,
    ) -> str:
        """Hand a run to the worker fleet (docs/scaling.md): journaled `queued` and enqueued
        in one transaction; higher `priority` first, not before `run_at`. The run id."""
        from loomgraph.agent import submitting

        return await submitting.submit(
            self.deps,
            self.compiled,
            prompt,
            user_id=user_id,
            session_id=session_id,
            output_schema=output_schema,
            output_retries=output_retries,
            priority=priority,
            run_at=run_at,
            queue=queue,
            agent_name=self.name,
        )

    async def submit_fork(
        self,
        run_id: str,
        *,
        at: int,
        patch: dict[str, Any] | None = None,
        priority: int = 0,
        queue: str = DEFAULT_QUEUE,
    ) -> str:
        """`fork` handed to the worker fleet (docs/scaling.md): the new run is journaled
        `queued`, with the start it goes on from, and enqueued in one transaction; a worker
        starts it, and recovers it like any fleet run. The new run's id."""
        from loomgraph.agent import submitting

        return await submitting.submit_fork(
            self.resumer(), run_id, at=at, patch=patch, priority=priority, queue=queue
        )

    async def submit_resume(
        self,
        run_id: str,
        *,
        approve: Any = NO_VALUE,
        value: Any = NO_VALUE,
        priority: int = 0,
        queue: str | None = None,
    ) -> None:
        """Give a fleet run waiting for a person its answer; a worker goes on with it (on
        the queue the run was submitted to, unless `queue` names another). With no answer,
        the run goes on past an approval request whose deadline passed (the call is denied
        as timed out); one still waiting for a person is refused (`AnswerNeeded`). A run
        another named Agent started is refused (`RunOfAnotherAgent`), nothing enqueued."""
        answer = {k: v for k, v in (("approve", approve), ("value", value)) if v is not NO_VALUE}
        from loomgraph.agent import submitting

        await submitting.submit_resume(
            self.deps, run_id, answer=answer, priority=priority, queue=queue, agent_name=self.name
        )

    async def wait(
        self, run_id: str, *, timeout: float | None = None, poll_interval: float = 0.1
    ) -> RunResult:
        """The result of a run once it stopped, wherever it runs (`RunWaitTimeout`)."""
        from loomgraph.agent import submitting

        return await submitting.wait(
            self.deps, run_id, timeout=timeout, poll_interval=poll_interval
        )

    async def cancel(self, run_id: str, *, by: str = "agent.cancel") -> CancelOutcome:
        """Cancel a fleet run: a queued one never starts, a running one stops at its next
        effect boundary; journaled `cancelled by <by>`."""
        from loomgraph.agent import submitting

        return await submitting.cancel(self.deps, run_id, by=by, agent_name=self.name)
