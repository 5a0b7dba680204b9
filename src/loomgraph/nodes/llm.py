"""`llm`: a templated prompt whose text, or structured output, goes into a state field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loomgraph.graph.conditions import compile_template, condition_scope, names_used
from loomgraph.graph.field_types import TypeSyntaxError, parse_type
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import DERIVED_NAMES
from loomgraph.nodes.structured import DEFAULT_RETRIES, StructuredAnswer
from loomgraph.nodes.written_types import never_fits
from loomgraph.protocols import Message, ModelRequest

# What `history: true` reads: the conversation, and the run's input to find its own prompt.
HISTORY_READS = frozenset({"messages", "input"})


def earlier_turns(state: Mapping[str, Any]) -> list[Message]:
    """The run's conversation before its own prompt (the session's earlier turns): the
    `messages` before the last user message that is the run's `input`; all of them when none
    is (then none is the run's prompt)."""
    messages = list(state.get("messages") or ())
    prompt = state.get("input")
    for at in range(len(messages) - 1, -1, -1):
        message = messages[at]
        if (
            isinstance(message, Mapping)
            and message.get("role") == "user"
            and message.get("content") == prompt
        ):
            return messages[:at]
    return messages


def history_problem(reads: list[str] | None, history: bool) -> str | None:
    """Why a node with `history` (and these declared `reads:`) cannot read the conversation;
    None when it can."""
    missing = sorted(HISTORY_READS - set(reads)) if history and reads is not None else []
    if not missing:
        return None
    return (
        f"history: true reads {', '.join(map(repr, missing))} (the conversation before the "
        f"run's prompt), which the node's `reads:` leaves out; add it to `reads:`"
    )


class LLMParams(BaseModel):
    """Parameters of an `llm` node."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="Jinja2 template over the state")
    output: str = Field(description="the state field the answer is written to")
    schema_: str | None = Field(None, alias="schema", description="type of a structured answer")
    system: str | None = Field(None, description="Jinja2 template; default: the agent's")
    max_tokens: int | None = None
    retries: int = Field(DEFAULT_RETRIES, ge=0, description="tries again on an invalid answer")
    history: bool = Field(
        False,
        description="send the run's earlier conversation (the session's earlier turns: "
        "`messages` before the run's own prompt) before the prompt",
    )


@register_node("llm")
class LLMNode(NodeKind):
    """Render the prompt, ask the model, and store its answer (validated when typed)."""

    Params = LLMParams
    params: LLMParams
    templates = ("prompt", "system")
    output_params = ("output",)
    implicit_writes = ("usage",)

    def reads(self) -> list[str]:
        """Declared reads, or the state fields the templates use."""
        if self.spec.reads is not None:
            return list(self.spec.reads)
        p = self.params
        used = names_used(p.prompt, expression=False) | names_used(p.system or "", expression=False)
        if "last_message" in used:
            used.add("messages")
        if p.history:
            used |= HISTORY_READS
        return sorted(used - DERIVED_NAMES)

    def check(self, graph: Graph) -> list[str]:
        """The answer's type must parse, and its values fit the output field; `history`
        must be able to read the conversation."""
        p = self.params
        if problem := history_problem(self.spec.reads, p.history):
            return [problem]
        if p.schema_:
            try:
                parse_type(p.schema_, near=graph.source)
            except TypeSyntaxError as err:
                return [f"schema: {err}"]
        field = graph.state.get(p.output)
        if field is not None and never_fits(p.schema_ or "str", field, graph.source):
            answer = f"schema {p.schema_!r}" if p.schema_ else "the answer text (no `schema`)"
            return [
                f"{answer} can never be stored in state field {p.output!r} ({field.type}): "
                "every answer would fail the run; make the types agree"
            ]
        return []

    def bind(self, graph: Graph) -> None:
        """Compile the templates and the answer's type once."""
        p = self.params
        self.prompt: Callable[[Mapping[str, Any]], str] = compile_template(p.prompt)
        self.system_template = compile_template(p.system) if p.system else None
        self.answer = (
            StructuredAnswer(parse_type(p.schema_, near=graph.source), label=f"node {self.name!r}")
            if p.schema_
            else None
        )

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Ask once; a structured answer is forced through the `respond` tool and validated."""
        p = self.params
        scope = condition_scope(state)
        messages: list[Message] = [{"role": "user", "content": self.prompt(scope)}]
        if p.history:
            messages = [*earlier_turns(state), *messages]
        system = self.system_template(scope) if self.system_template else ctx.system
        if self.answer is not None:
            value, usage = await self.answer.ask(
                ctx, messages, system=system, retries=p.retries, max_tokens=p.max_tokens
            )
            return {p.output: self.answer.to_data(value), "usage": usage.to_dict()}
        request = ModelRequest(messages=messages, system=system, max_tokens=p.max_tokens)
        # A refused or truncated answer fails the node: it is not stored as the answer.
        response = (await ctx.call_model(request)).whole_answer(request, ctx.deps.model)
        return {p.output: response.text, "usage": response.usage.to_dict()}
