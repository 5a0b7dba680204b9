"""The journal-reading methods of `Agent`: a run's history, the graph it started with, its
events as the journal has them, and the runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from loomgraph.agent.arguments import check_text
from loomgraph.graph.compiled import CompiledGraph
from loomgraph.protocols import Deps, RunRecord, RunStatus, Transition, UnknownRun

if TYPE_CHECKING:
    from loomgraph.agent.checkpoints import Checkpoint
    from loomgraph.agent.event_ids import EventId
    from loomgraph.agent.run_events import JournalEvent


class JournalMethods:
    """`history`, `graph_of`, `events` and `runs`, for a class with `deps`, `compiled` and
    `_kept` (an `Agent`)."""

    deps: Deps
    compiled: CompiledGraph
    _kept: dict[str, CompiledGraph]

    async def _journal(self, run_id: str) -> tuple[RunRecord, list[Transition]]:
        check_text("run_id", run_id)
        runtime = self.deps.runtime
        record = await runtime.load_run(run_id)
        if record is None:
            raise UnknownRun(run_id)
        return record, await runtime.transitions(run_id)

    async def history(self, run_id: str) -> list[Checkpoint]:
        """The run's first state (seq 0), then every transition with the state after it,
        rebuilt with the graph the run started with (when the journal keeps it)."""
        from loomgraph.agent.checkpoints import history

        record, transitions = await self._journal(run_id)
        return history(await self.graph_of(record), record, transitions)

    async def graph_of(self, record: RunRecord) -> CompiledGraph:
        """The graph `record`'s run started with, as the journal keeps it (else this Agent's);
        GraphChanged when the kept graph no longer compiles here."""
        from loomgraph.agent.pinning import run_graph

        own = await run_graph(self.deps.runtime, record, self.compiled, self._kept)
        return own or self.compiled

    def events(
        self, run_id: str, *, after: EventId | str | None = None, poll_interval: float = 0.5
    ) -> AsyncIterator[JournalEvent]:
        """The run's events read from the journal after `after` (a stable id: `"seq.index"`,
        a stop's `"seq.end.k[.r]"`), then followed until the run stops, wherever it runs (see
        `agent.run_events`)."""
        from loomgraph.agent.event_ids import EventId
        from loomgraph.agent.run_events import follow_events

        if isinstance(after, str):
            after = EventId.parse(after)
        return follow_events(self.deps.runtime, run_id, after=after, poll_interval=poll_interval)

    async def runs(
        self, user_id: str | None = None, *, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """The runs in the journal, optionally of one user, in one status."""
        return await self.deps.runtime.runs(user_id, status=status)
