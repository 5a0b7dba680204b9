"""`subgraph`: run another graph as one node, mapping state in and out."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loomgraph.graph.compiled import CompiledGraph, compile_graph
from loomgraph.graph.conditions import compile_template, condition_scope, names_used
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import NodeKind, UnknownNodeKind, node_kind, register_node
from loomgraph.graph.spec import Graph, StateField
from loomgraph.graph.state import BUILTIN_FIELDS, DERIVED_NAMES, final_output
from loomgraph.nodes.llm import HISTORY_READS, earlier_turns, history_problem
from loomgraph.nodes.written_types import never_fits

# Graphs nest at most this many levels: a graph (level 1), its subgraphs (2), theirs (3) …
# Loading a child graph is recursive (check -> load -> validate -> check), so without a bound
# a long chain of files would exhaust the stack.
MAX_GRAPH_DEPTH = 32
# The level of the graph whose child is being loaded (1 outside any child graph's loading).
_level: ContextVar[int] = ContextVar("loomgraph_graph_level", default=1)


class ChildGraphParams(BaseModel):
    """Parameters of a node that runs another graph."""

    model_config = ConfigDict(extra="forbid")

    graph: str = Field(description="a built-in graph name, or a YAML path relative to this file")
    prompt: str | None = Field(
        None,
        description="Jinja2 template of the child's input (its first user message), over "
        "the state (and `item`, in a map); default: the mapped `input`",
    )
    history: bool = Field(
        False,
        description="the child starts with the run's earlier conversation (the session's "
        "earlier turns: `messages` before the run's own prompt), its input after them",
    )


class SubgraphParams(ChildGraphParams):
    """Parameters of a `subgraph` node."""

    inputs: dict[str, str] = Field(
        default_factory=lambda: {"input": "input"}, description="child field <- parent field"
    )
    outputs: dict[str, str] = Field(
        default_factory=lambda: {"output": "output"},
        description="parent field <- child field (`output` is the child's final answer)",
    )


class ChildGraphNode(NodeKind):
    """Base of the kinds that run another graph: finds and checks the child graph, and builds
    the child's first state."""

    params: ChildGraphParams
    child: Graph  # the graph it runs, as resolved when its graph was compiled
    compiled_child: CompiledGraph  # and compiled then: what each run of it runs
    templates = ("prompt",)

    def prompt_reads(self) -> set[str]:
        """The state fields the child's first values are made of besides `inputs`: those the
        prompt template uses and, with `history`, the conversation (`messages`, `input`)."""
        used = names_used(self.params.prompt or "", expression=False)
        if self.params.history:
            used = used | HISTORY_READS
        return used - DERIVED_NAMES - self.template_names

    def child_values(
        self, values: dict[str, Any], state: Mapping[str, Any], **extra: Any
    ) -> dict[str, Any]:
        """The child's first values: `values`, the rendered prompt as its input, and that input
        as the first user message (after the earlier conversation, with `history`)."""
        if self.prompt is not None:
            values["input"] = self.prompt({**condition_scope(state), **extra})
        if not values.get("messages") and values.get("input"):
            values["messages"] = [{"role": "user", "content": str(values["input"])}]
        if self.params.history:
            values["messages"] = [*earlier_turns(state), *(values.get("messages") or ())]
        return values

    def check(self, graph: Graph) -> list[str]:
        """The child graph must exist and be valid, and nest at most MAX_GRAPH_DEPTH levels."""
        ref, level = self.params.graph, _level.get()
        if level >= MAX_GRAPH_DEPTH:
            return [
                f"subgraph {ref!r} not loaded: graphs nest at most {MAX_GRAPH_DEPTH} levels "
                f"deep, and this graph is level {level} of the graphs being loaded; "
                "flatten the chain of subgraphs"
            ]
        token = _level.set(level + 1)
        try:
            child = graph.resolve_graph(ref)
        except Exception as err:
            return [f"subgraph {ref!r}: {err}"]
        finally:
            _level.reset(token)
        if problem := self.history_problem():
            return [problem]
        below = graph_levels(child, MAX_GRAPH_DEPTH - level + 1)
        if level + below > MAX_GRAPH_DEPTH:
            return [
                f"subgraph {ref!r}: graphs nest at most {MAX_GRAPH_DEPTH} levels deep, and "
                f"below this graph (level {level}) {ref!r} and its subgraphs go past level "
                f"{MAX_GRAPH_DEPTH}; flatten the chain of subgraphs"
            ]
        return self.field_problems(graph, child)

    def field_problems(self, graph: Graph, child: Graph) -> list[str]:
        """What is wrong with the fields this node maps between `graph` and its `child`."""
        return []

    def history_problem(self) -> str | None:
        """Why `history` cannot give the child the conversation: the node's `reads:` leave
        it out, or `inputs` give the child's `messages` too; None when it can."""
        if not self.params.history:
            return None
        if "messages" in getattr(self.params, "inputs", {}):
            return (
                "history: true and inputs: {messages: ...} both give the child's messages; keep one"
            )
        return history_problem(self.spec.reads, True)

    def input_problems(self, graph: Graph, child: Graph, inputs: Mapping[str, str]) -> list[str]:
        """`inputs` (child field <- parent field): each child field must exist, each parent
        field must be read, and a parent value must be able to fit the child field."""
        problems = []
        for name, source in inputs.items():
            if self.spec.reads is not None and source not in self.spec.reads:
                problems.append(
                    f"inputs: {source!r} is not in the node's `reads:`, so the child would "
                    f"always get None for {name!r}; add {source!r} to `reads:`"
                )
            if missing := no_field(child, name, "inputs"):
                problems.append(missing)
            elif name != "input" or self.params.prompt is None:  # a prompt makes the input
                problems += cannot_hold(
                    "inputs",
                    f"{source!r}",
                    field_of(graph, source),
                    f"{name!r} of graph {child.name!r}",
                    field_of(child, name),
                )
        return problems

    def bind(self, graph: Graph) -> None:
        """Resolve and compile the child graph, and compile the prompt, once."""
        # The child is a copy of its own (`resolve_graph`), compiled with its parent: a run of
        # it (each plan step, each map branch) need not work out its content key again.
        self.child = graph.resolve_graph(self.params.graph)
        self.compiled_child = compile_graph(self.child)
        self.prompt = compile_template(self.params.prompt) if self.params.prompt else None


def field_of(graph: Graph, name: str) -> StateField | None:
    """The declared (or built-in) field `name` of a graph, or None."""
    return graph.state.get(name) or BUILTIN_FIELDS.get(name)


def no_field(child: Graph, name: str, param: str) -> str | None:
    """Why `name`, named by `param`, is not a field of the `child` graph (None when it is)."""
    if field_of(child, name) is not None:
        return None
    fields = [*BUILTIN_FIELDS, *child.state]
    close = difflib.get_close_matches(name, fields, n=1)
    return (
        f"{param}: {name!r} is not a field of graph {child.name!r}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f"; its fields: {', '.join(fields)}"
    )


def cannot_hold(
    param: str, what: str, value: StateField | None, where: str, into: StateField | None
) -> list[str]:
    """A problem when no value of the field `value` can be stored in the field `into` (both
    known); `what` and `where` name them in the message."""
    if value is None or into is None or not never_fits(value.type, into):
        return []
    return [
        f"{param}: {what} ({value.type}) into {where} ({into.type}): no value of the one can "
        "be stored in the other, so every run would fail there; map fields whose types agree"
    ]


def child_graphs(graph: Graph) -> Iterator[Graph]:
    """The graphs the nodes of a (validated) graph run; those that do not resolve are left out."""
    for spec in graph.nodes.values():
        try:
            kind = node_kind(spec.kind)
        except UnknownNodeKind:
            continue
        ref = spec.params.get("graph")
        if issubclass(kind, ChildGraphNode) and isinstance(ref, str):
            try:
                yield graph.resolve_graph(ref)
            except Exception:  # reported by the node's own check
                continue


def graph_levels(graph: Graph, limit: int) -> int:
    """How many levels of graphs `graph` and its subgraphs make (1 without subgraphs), counted
    level by level (no recursion) up to `limit` + 1 at most."""
    levels, frontier = 1, {id(graph): graph}
    while levels <= limit:
        below = {id(child): child for g in frontier.values() for child in child_graphs(g)}
        if not below:
            break
        levels, frontier = levels + 1, below
    return levels


@register_node("subgraph")
class SubgraphNode(ChildGraphNode):
    """Run the child graph to its end; its transitions are journaled under this node."""

    Params = SubgraphParams
    params: SubgraphParams
    implicit_writes = ("usage",)

    def reads(self) -> list[str]:
        """Declared reads, or the parent fields the inputs take."""
        if self.spec.reads is not None:
            return list(self.spec.reads)
        return sorted(set(self.params.inputs.values()) | self.prompt_reads())

    def kind_writes(self) -> list[str]:
        """The parent fields the outputs fill, and usage."""
        return sorted(set(self.params.outputs) | {"usage"})

    def field_problems(self, graph: Graph, child: Graph) -> list[str]:
        """`inputs` and `outputs` must name fields of the graphs, whose types agree."""
        problems = self.input_problems(graph, child, self.params.inputs)
        for target, name in self.params.outputs.items():
            if missing := no_field(child, name, "outputs"):
                problems.append(missing)
            else:
                problems += cannot_hold(
                    "outputs",
                    f"{name!r} of graph {child.name!r}",
                    field_of(child, name),
                    f"{target!r}",
                    field_of(graph, target),
                )
        return problems

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Map inputs in, run the child, map outputs back, and carry its usage up."""
        p = self.params
        values = {child: state.get(parent) for child, parent in p.inputs.items()}
        final = await ctx.run_subgraph(self.compiled_child, self.child_values(values, state))
        patch = {
            parent: final_output(final) if child == "output" else final.get(child)
            for parent, child in p.outputs.items()
        }
        patch["usage"] = final.get("usage") or {}
        return patch
