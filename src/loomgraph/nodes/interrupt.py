"""`interrupt`: stop the run for a person, and go on when they answer with a typed value."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from loomgraph.engine.effects import ANSWER_SLOT, value_intent, value_outcome
from loomgraph.graph.conditions import compile_template, condition_scope, names_used
from loomgraph.graph.field_types import TypeSyntaxError, parse_type
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import DERIVED_NAMES
from loomgraph.nodes.written_types import never_fits
from loomgraph.protocols import Pending, RunStatus, RunStopped


class InterruptParams(BaseModel):
    """Parameters of an `interrupt` node."""

    model_config = ConfigDict(extra="forbid")

    request: str = Field(description="type of the value the run waits for, e.g. pkg.mod:Model")
    message: str = Field("", description="Jinja2 template: what the person is asked")
    output: str = Field(description="the state field the value is written to")


@register_node("interrupt")
class InterruptNode(NodeKind):
    """End the run as `interrupted` with a typed request; `agent.resume(run_id, value=...)`
    validates the value against the type and continues here, writing it to `output`."""

    Params = InterruptParams
    params: InterruptParams
    templates = ("message",)
    output_params = ("output",)

    def reads(self) -> list[str]:
        """Declared reads, or the fields the message uses."""
        if self.spec.reads is not None:
            return list(self.spec.reads)
        return sorted(names_used(self.params.message, expression=False) - DERIVED_NAMES)

    def check(self, graph: Graph) -> list[str]:
        """The request type must parse, and its values fit the output field."""
        p = self.params
        try:
            parse_type(p.request, near=graph.source)
        except TypeSyntaxError as err:
            return [f"request: {err}"]
        field = graph.state.get(p.output)
        if field is not None and never_fits(p.request, field, graph.source):
            return [
                f"request type {p.request!r} can never be stored in state field {p.output!r} "
                f"({field.type}): every answer would fail the run; make the types agree"
            ]
        return []

    def bind(self, graph: Graph) -> None:
        """Compile the message and the request type once."""
        self.message = compile_template(self.params.message)
        request = parse_type(self.params.request, near=graph.source)
        self.adapter: TypeAdapter[Any] = TypeAdapter(request)

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Write the value the run was resumed with (or answered before), or stop and ask."""
        output = self.params.output
        # The answer is this visit's effect: journaled by the resume that took it up, before
        # the run went on (so a crash from then on does not lose it), or in a child graph,
        # which runs again from its entry after a crash or a stop inside it, by the node.
        recorded = await ctx.recorded(ANSWER_SLOT)
        if recorded is not None:  # the first answer stands; a value for it waits on
            return {output: recorded["value"]}
        supplied, value = ctx.take_resume_value()
        if supplied:
            # Not journaled yet only for a request of an older journal (no key) or a node run
            # alone (`loomgraph.testing`): at the top level its transition holds it, in a
            # child graph its effect.
            if ctx.qualified_node != ctx.node:
                intent = value_intent(ctx.qualified_node, self.params.request)
                answered = await ctx.effect(ANSWER_SLOT, intent, functools.partial(_answer, value))
                value = answered["value"]
            return {output: value}
        raise RunStopped(
            RunStatus.INTERRUPTED,
            f"waiting at {ctx.qualified_node!r} for a value of type {self.params.request}",
            Pending(
                ctx.qualified_node,
                key=ctx.key_of(ANSWER_SLOT),
                type=self.params.request,
                message=self.message(condition_scope(state)),
                schema=self.adapter.json_schema(),
            ),
        )


async def _answer(value: Any) -> dict[str, Any]:
    """The answer, as its effect's outcome."""
    return value_outcome(value)
