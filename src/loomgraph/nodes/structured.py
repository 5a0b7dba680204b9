"""Structured answers by tool forcing: the model must call one tool whose input is the answer.

Tool forcing works on every model that supports tools; the answer is validated, and on a
validation failure the errors go back to the model for a bounded number of retries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from loomgraph.errors import LoomgraphError, problem_said
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind, NoParams
from loomgraph.graph.spec import NodeSpec
from loomgraph.graph.state import final_output
from loomgraph.protocols import Message, ModelRequest, ModelResponse, ToolSpec, Usage

RESPOND_TOOL = "respond"
DEFAULT_RETRIES = 2


class OutputValidationError(LoomgraphError, ValueError):
    """The model's answer did not fit the schema after every retry; `raw` is its last answer."""

    def __init__(self, message: str, *, raw: Any, errors: list[Any]) -> None:
        super().__init__(message)
        self.raw = raw
        self.errors = errors


class StructuredAnswer:
    """The `respond` tool for one answer type, and how to read and validate an answer."""

    def __init__(self, answer_type: Any, *, label: str = "the answer") -> None:
        self.adapter: TypeAdapter[Any] = TypeAdapter(answer_type)
        self.label = label
        schema = self.adapter.json_schema()
        # Tool inputs must be objects: any other answer type is wrapped as {"value": ...}.
        self.wrapped = schema.get("type") != "object"
        if self.wrapped:
            schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
        self.tool: ToolSpec = {
            "name": RESPOND_TOOL,
            "description": "Give the final answer.",
            "parameters": schema,
        }

    def raw_answer(self, response: ModelResponse) -> Any:
        """The answer in a response: the `respond` call's input, else the text as JSON."""
        for call in response.tool_calls:
            if call["tool"] == RESPOND_TOOL:
                args = call["args"]
                return args.get("value") if self.wrapped and isinstance(args, dict) else args
        try:
            return json.loads(response.text)
        except ValueError:
            return response.text

    def validate(self, raw: Any) -> Any:
        """The answer validated into its type (raises pydantic.ValidationError)."""
        if isinstance(raw, str) and self.adapter.json_schema().get("type") != "string":
            return self.adapter.validate_json(raw)
        return self.adapter.validate_python(raw)

    def to_data(self, value: Any) -> Any:
        """A validated answer as JSON-shaped data (what the state holds)."""
        return self.adapter.dump_python(value, mode="json")

    async def ask(
        self,
        ctx: NodeContext,
        messages: Sequence[Message],
        *,
        system: str,
        retries: int = DEFAULT_RETRIES,
        max_tokens: int | None = None,
    ) -> tuple[Any, Usage]:
        """Force the answer out of the model; on invalid answers, show it the errors and retry
        (a refused or truncated turn raises: `ModelResponse.whole_answer`)."""
        conversation = list(messages)
        usage = Usage()
        raw: Any = None
        errors: list[Any] = []
        for _attempt in range(retries + 1):
            request = ModelRequest(
                messages=conversation,
                system=system,
                tools=[self.tool],
                tool_choice=RESPOND_TOOL,
                max_tokens=max_tokens,
            )
            # A refusal, or a text cut off before any `respond` call, is not argued with:
            # asked again, the model would end the same way (the engine counts its usage).
            response = (await ctx.call_model(request)).whole_answer(request, ctx.deps.model)
            usage += response.usage
            raw = self.raw_answer(response)
            try:
                return self.validate(raw), usage
            except ValidationError as err:
                errors = err.errors(include_url=False)
                conversation += _feedback(response, err)
        # Where and what, not pydantic's dump: that quotes the answer, and the feedback
        # quoted in it, again at every attempt (`.errors` and `.raw` keep them whole).
        said = [problem_said(error) for error in errors]
        more = f" (and {len(said) - _SAID} more)" if len(said) > _SAID else ""
        raise OutputValidationError(
            f"{self.label} did not fit the schema after {retries + 1} attempt(s): "
            f"{'; '.join(said[:_SAID])}{more}",
            raw=raw,
            errors=errors,
        )


# The problems an OutputValidationError's message names.
_SAID = 5


def _feedback(response: ModelResponse, err: ValidationError) -> list[Message]:
    """The model's invalid turn and the validation errors, as the next turns to show it."""
    text = f"That answer is invalid:\n{err}\nCall {RESPOND_TOOL} again with a valid answer."
    call = next((c for c in response.tool_calls if c["tool"] == RESPOND_TOOL), None)
    if call is None:
        return [response.to_message(), {"role": "user", "content": text}]
    return [
        {"role": "assistant", "content": response.text, "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": call["id"],
            "name": RESPOND_TOOL,
            "content": text,
            "is_error": True,
        },
    ]


FINISH_NODE = "structured_output"


class FinishNode(NodeKind):
    """The run's last step when `output_schema` is given: a valid final answer, forced if needed.

    When the graph's answer already fits the schema, no model call is made.
    """

    default_reads = ("messages", "output")
    default_writes = ("output",)
    implicit_writes = ("usage",)

    def __init__(self, answer: StructuredAnswer, *, retries: int = DEFAULT_RETRIES) -> None:
        super().__init__(FINISH_NODE, NodeSpec(kind=FINISH_NODE), NoParams())
        self.answer = answer
        self.retries = retries

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Keep a fitting answer; otherwise ask the model for one through `respond`."""
        try:
            return {"output": self.answer.to_data(self.answer.validate(final_output(state)))}
        except ValidationError:
            pass
        messages = with_graph_answer(state["messages"] or [], state.get("output"))
        value, usage = await self.answer.ask(ctx, messages, system=ctx.system, retries=self.retries)
        return {"output": self.answer.to_data(value), "usage": usage.to_dict()}


RESTATE = f"Give the answer above through the {RESPOND_TOOL} tool."


def with_graph_answer(messages: Sequence[Message], output: Any) -> list[Message]:
    """The conversation to ask for a structured answer: with the graph's `output` as the
    agent's last turn when it is not already there, so the model restates the run's answer,
    and a user turn last asking for it through the respond tool."""
    conversation = list(messages)
    # No `output` (react): the answer is the last assistant turn already. A strategy that
    # writes `output` (plan-execute, reflexion) keeps its work out of `messages`: asked over
    # them alone, the model would answer the task afresh.
    if output is not None:
        text = output if isinstance(output, str) else json.dumps(output, default=str)
        last: Message | dict[str, Any] = conversation[-1] if conversation else {}
        if text.strip() and not (last.get("role") == "assistant" and last.get("content") == text):
            conversation.append({"role": "assistant", "content": text})
    if conversation and conversation[-1].get("role") == "assistant":
        # A user turn last: Claude 4.6 and later refuse a request that ends with an
        # assistant turn ("does not support assistant message prefill").
        conversation.append({"role": "user", "content": RESTATE})
    return conversation
