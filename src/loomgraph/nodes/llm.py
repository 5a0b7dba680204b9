"""`llm`: a templated prompt whose text, or structured output, goes into a state field."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from loomgraph.graph.conditions import compile_template, condition_scope, names_used
from loomgraph.graph.context import NodeContext
from loomgraph.graph.registry import NodeKind, register_node
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import DERIVED_NAMES, TypeSyntaxError, parse_type
from loomgraph.protocols import ModelRequest, ToolSpec

RESPOND_TOOL = "respond"


class LLMParams(BaseModel):
    """Parameters of an `llm` node."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="Jinja2 template over the state")
    output: str = Field(description="the state field the answer is written to")
    schema_: str | None = Field(None, alias="schema", description="type of a structured answer")
    system: str | None = Field(None, description="Jinja2 template; default: the agent's")
    max_tokens: int | None = None


class StructuredOutputError(ValueError):
    """The model's answer did not fit the declared schema."""


@register_node("llm")
class LLMNode(NodeKind):
    """Render the prompt, ask the model once, and store its answer (validated when typed)."""

    Params = LLMParams
    params: LLMParams
    templates = ("prompt", "system")

    def reads(self) -> list[str]:
        """Declared reads, or the state fields the templates use."""
        if self.spec.reads is not None:
            return list(self.spec.reads)
        p = self.params
        used = names_used(p.prompt, expression=False) | names_used(p.system or "", expression=False)
        return sorted(used - DERIVED_NAMES | ({"messages"} if "last_message" in used else set()))

    def writes(self) -> list[str]:
        """The output field and usage."""
        if self.spec.writes is not None:
            return list(self.spec.writes)
        return [self.params.output, "usage"]

    def check(self, graph: Graph) -> list[str]:
        """The answer's type must parse."""
        if self.params.schema_:
            try:
                parse_type(self.params.schema_)
            except TypeSyntaxError as err:
                return [f"schema: {err}"]
        return []

    def bind(self, graph: Graph) -> None:
        """Compile the templates and the answer's type once."""
        p = self.params
        self.prompt: Callable[[Mapping[str, Any]], str] = compile_template(p.prompt)
        self.system_template = compile_template(p.system) if p.system else None
        self.adapter: TypeAdapter[Any] | None = None
        self.tool: ToolSpec | None = None
        self.wrapped = False
        if p.schema_:
            self.adapter = TypeAdapter(parse_type(p.schema_))
            schema = self.adapter.json_schema()
            # Tool inputs must be objects: any other answer type is wrapped as {"value": ...}.
            self.wrapped = schema.get("type") != "object"
            if self.wrapped:
                schema = {"type": "object", "properties": {"value": schema},
                          "required": ["value"]}
            self.tool = {"name": RESPOND_TOOL, "description": "Give the answer.",
                         "parameters": schema}

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Ask once; a structured answer is forced through the `respond` tool."""
        p = self.params
        scope = condition_scope(state)
        request = ModelRequest(
            messages=[{"role": "user", "content": self.prompt(scope)}],
            system=self.system_template(scope) if self.system_template else ctx.system,
            tools=[self.tool] if self.tool else (), max_tokens=p.max_tokens,
            tool_choice=RESPOND_TOOL if self.tool else None)
        response = await ctx.call_model(request)
        value: Any = response.text
        if self.adapter is not None:
            value = self._structured(response.tool_calls, response.text)
        return {p.output: value, "usage": response.usage}

    def _structured(self, calls: list[Any], text: str) -> Any:
        assert self.adapter is not None and self.tool is not None
        raw: Any = next((c["args"] for c in calls if c["tool"] == RESPOND_TOOL), None)
        if raw is None:
            try:
                raw = json.loads(text)
            except ValueError:
                raise StructuredOutputError(
                    f"node {self.name!r}: the model gave no `respond` call and its text is "
                    f"not JSON: {text[:200]!r}") from None
        elif self.wrapped and isinstance(raw, dict):
            raw = raw.get("value")
        try:
            return self.adapter.dump_python(self.adapter.validate_python(raw), mode="json")
        except ValidationError as err:
            raise StructuredOutputError(f"node {self.name!r}: answer does not fit "
                                        f"{self.params.schema_!r}: {err}") from None
