"""The errors of resuming, answering and forking a run (`ResumeError` and its kinds) and of
moving one to another graph (`GraphChanged`). Raised by `checkpoints` and `resuming`, and
importable from `loomgraph.agent.checkpoints` as before."""

from __future__ import annotations

from collections.abc import Sequence

from loomgraph.errors import GraphError, LoomgraphError

__all__ = [
    "AnswerNeeded",
    "ApprovalExpired",
    "ApprovalNotPending",
    "ApprovalRefused",
    "ApprovalUsed",
    "EditedArgsInvalid",
    "GraphChanged",
    "NotACheckpoint",
    "ResumeError",
    "RunOfAnotherAgent",
    "ToolNotOffered",
    "ValueNotPending",
    "ValueUsed",
]


class GraphChanged(GraphError):
    """A run cannot go on with the graph asked for: its own graph is not kept or does not
    compile here, or its position (at `seq`) has a `node` or state `field` the other graph
    lacks. The remedy, as data for a caller that words it in its own terms (the command
    line's `--graph`): `movable`, whether moving the run to a graph as it reads now may go
    on with it (its own graph is not kept or does not compile here; not when that move is
    what was refused), and `problem`, what is wrong without the remedy's words."""

    def __init__(
        self,
        problem: str,
        *,
        run_id: str = "",
        seq: int | None = None,
        node: str | None = None,
        field: str | None = None,
        movable: bool = False,
    ) -> None:
        super().__init__(
            f"{problem}; resume(..., graph='current') moves the run to this agent's graph "
            "if the run's position fits it"
            if movable
            else problem
        )
        self.run_id, self.seq, self.node, self.field = run_id, seq, node, field
        self.problem, self.movable = problem, movable


class ResumeError(LoomgraphError, ValueError):
    """A resume that cannot be done as asked: nothing was executed."""


class NotACheckpoint(ResumeError):
    """A fork from a seq that is no checkpoint of the run's own graph: none journaled, or a
    step of a child graph (a run goes on from a node of its own graph, never from inside
    one). `.checkpoints`: the seqs a fork can start from (0: the first state)."""

    def __init__(self, run_id: str, seq: int, problem: str, checkpoints: Sequence[int]) -> None:
        super().__init__(
            f"{problem}; a fork of it starts from checkpoint {_ranges(checkpoints)} "
            "(0 is the first state)"
        )
        self.run_id, self.seq, self.checkpoints = run_id, seq, tuple(checkpoints)


class ApprovalRefused(ResumeError):
    """An approval that cannot be used: nothing was executed, the run still waits."""


class ApprovalNotPending(ApprovalRefused):
    """The approval names a call the run is not waiting for (answered, never asked, another
    run's), or the run waits for no approval."""


class ApprovalUsed(ApprovalRefused):
    """The call was already answered: an approval is used once."""


class ToolNotOffered(ApprovalRefused):
    """The run waits for approval of, or was cut off during, a call to a tool this Agent does
    not offer (a resume with other tools than the run started with): going on, the call
    would be told the tool is unknown, the request dropped or the cut-off call unreported."""


class EditedArgsInvalid(ResumeError):
    """An approval's edited arguments do not fit the tool's parameters (the JSON Schema the
    model was shown): used, the approval would only fail the call."""


class ApprovalExpired(ApprovalRefused):
    """The request's deadline passed: the call is denied when the run is resumed without an
    answer (`run_id` and `call_id` say which, for a caller that words how)."""

    def __init__(self, run_id: str, call_id: str) -> None:
        super().__init__(
            f"the approval request for call {call_id} of run {run_id} expired; resume without "
            "an answer to go on, the call denied as timed out (`resume(run_id)`; on a fleet "
            "`submit_resume(run_id)`; over HTTP `POST /v1/runs/{run_id}/resume` with no value)"
        )
        self.run_id = run_id
        self.call_id = call_id


class AnswerNeeded(ResumeError):
    """A run sent on without an answer (`submit_resume(run_id)`, `POST /v1/runs/{id}/resume`
    with no body) waits for one a person may still give: a value, or an approval whose
    request has not expired."""


class ValueNotPending(ApprovalRefused):
    """A value for a question the run is not asking now: one it names (`BoundValue.key`) was
    answered already, never asked, or the run stopped asking; or the run asks none (it is
    not `interrupted`). Nothing was executed; the run waits for what it waited for. An
    `ApprovalRefused`, so whatever drops a stale approval (a fleet worker, the server's 409)
    drops a stale value alike."""


class ValueUsed(ValueNotPending):
    """The question was answered already (its answer is journaled, and the run went on or
    goes on with it): a value is used once; resume without `value=` to go on."""


class RunOfAnotherAgent(ResumeError):
    """The run was started by an Agent of another name (`RunStart.agent`): this one may not
    resume, fork, retry or answer it. Nothing was executed or journaled."""

    def __init__(self, run_id: str, owner: str, agent_name: str) -> None:
        this = f"this agent, {agent_name!r}" if agent_name else "this agent, which is unnamed"
        super().__init__(
            f"run {run_id} was started by agent {owner!r}, not by {this}; go on with it "
            f"through an Agent(name={owner!r}) with that agent's tools"
        )
        self.run_id, self.owner, self.agent_name = run_id, owner, agent_name


def _ranges(seqs: Sequence[int]) -> str:
    """Seqs as runs, `0..3, 5, 8..9`; the middle ones left out past a dozen runs."""
    spans: list[list[int]] = []
    for seq in sorted(seqs):
        if spans and seq == spans[-1][1] + 1:
            spans[-1][1] = seq
        else:
            spans.append([seq, seq])
    text = [str(a) if a == b else f"{a}..{b}" for a, b in spans]
    return ", ".join(text if len(text) <= 12 else [*text[:6], "…", *text[-6:]])
