"""`map`: run a subgraph once per item of a list, in parallel, and join the results."""

from __future__ import annotations

import difflib
import functools
import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, Field

from loomgraph.errors import LoomgraphError
from loomgraph.graph.field_types import parse_type
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import register_node
from loomgraph.graph.spec import Graph, StateField
from loomgraph.graph.state import final_output
from loomgraph.nodes.concurrency import run_all
from loomgraph.nodes.subgraph import (
    ChildGraphNode,
    ChildGraphParams,
    cannot_hold,
    field_of,
    no_field,
)
from loomgraph.nodes.written_types import never_fits
from loomgraph.protocols import RunStatus, RunStopped, Usage

# As the visit limits, a bound every map has unless its graph says otherwise: a model that
# plans 10,000 steps must not start 10,000 agents.
DEFAULT_MAX_ITEMS = 100


class MapParams(ChildGraphParams):
    """Parameters of a `map` node."""

    inputs: dict[str, str] = Field(
        default_factory=dict, description="child field <- parent field, the same for every item"
    )
    over: str = Field(
        description="the list field whose items are mapped; a dotted path "
        "(`plan.steps`) reaches into a field"
    )
    item: str = Field("input", description="the child field each item goes into")
    result: str = Field(
        "output",
        description="the child field taken as the branch's result "
        "(`output` is the child's final answer)",
    )
    output: str = Field(
        description="the field the list of results is written to, through its reducer"
    )
    concurrency: int = Field(4, ge=1, description="branches run at once")
    max_items: int = Field(
        DEFAULT_MAX_ITEMS,
        ge=1,
        description="items mapped at most: a longer list ends the run with `limit_reached` "
        "before any branch runs",
    )


@register_node("map")
class MapNode(ChildGraphNode):
    """Each item runs the child graph as its own journaled branch; results keep item order.

    A finished branch's result is journaled, so after a crash (a stop, a failed attempt) only
    unfinished branches run again, each from its child graph's entry.
    """

    Params = MapParams
    params: MapParams
    template_names = frozenset({"item"})
    output_params = ("output",)
    implicit_writes = ("usage",)

    def reads(self) -> list[str]:
        """Declared reads, or the list and the input fields."""
        if self.spec.reads is not None:
            return list(self.spec.reads)
        field = self.params.over.split(".")[0]
        return sorted({field, *self.params.inputs.values()} | self.prompt_reads())

    def check(self, graph: Graph) -> list[str]:
        """The child must exist, `over` must lead to a list, and the fields mapped must exist
        in the graphs they name, with types that agree."""
        return [*self.over_problems(graph), *super().check(graph)]

    def over_problems(self, graph: Graph) -> list[str]:
        """`over`: its field read, each further part a field of the type before it (as far
        as the types tell), and a list at its end."""
        over = self.params.over
        first, *rest = over.split(".")
        problems = []
        if self.spec.reads is not None and first not in self.spec.reads:
            problems.append(
                f"map over {over!r} reads {first!r}, which is not in the node's `reads:`; "
                f"add {first!r} to `reads:`"
            )
        field = field_of(graph, first)
        if over in ("output", "usage"):  # typed `any`, but the answer and a usage dict
            return [*problems, f"map over {over!r}, which is not a list field"]
        if field is None:  # reported as `undefined-read`
            return problems
        try:
            tp: Any = parse_type(field.type, near=graph.source)
        except Exception:  # reported as `bad-type` (an imported module may raise anything)
            return problems
        walked, name = first, field.type
        for part in rest:
            tp, why = _member(tp, part)
            if why is not None:
                return [*problems, f"map over {over!r}: {walked!r} is a {name}: {why}"]
            walked, name = f"{walked}.{part}", _type_name(tp)
        known = _known(tp)
        if known is not None and (get_origin(known) or known) is not list:
            problems.append(f"map over {over!r}, which is a {name}, not a list")
        return problems

    def field_problems(self, graph: Graph, child: Graph) -> list[str]:
        """`inputs`, `item` and `result` must be fields of the child, with types that agree,
        and `output` a list field of the parent."""
        p = self.params
        inputs = {name: source for name, source in p.inputs.items() if name != p.item}
        problems = self.input_problems(graph, child, inputs)
        if missing := no_field(child, p.item, "item"):
            problems.append(missing)
        elif p.item != "input" or p.prompt is None:  # a prompt makes the input
            element = _element(field_of(graph, p.over))
            problems += cannot_hold(
                "item",
                f"an item of {p.over!r}",
                element,
                f"{p.item!r} of graph {child.name!r}",
                field_of(child, p.item),
            )
        if missing := no_field(child, p.result, "result"):
            problems.append(missing)
        output = field_of(graph, p.output)
        if output is not None and never_fits("list", output):
            problems.append(
                f"output: {p.output!r} is a {output.type}, but a map writes a list of "
                "results; write them to a list field (e.g. `type: list[str]`)"
            )
        return problems

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Run one branch per item (at most `concurrency` at once) and join their results."""
        p = self.params
        items = items_at(state, p.over)
        if not isinstance(items, list):
            raise TypeError(f"map over {p.over!r}: expected a list, got {type(items).__name__}")
        if len(items) > p.max_items:
            raise RunStopped(
                RunStatus.LIMIT_REACHED,
                f"item limit of map {self.name!r} reached: {len(items)} items in "
                f"{p.over!r}, at most {p.max_items}",
            )
        shared = {child: state.get(parent) for child, parent in p.inputs.items() if child != p.item}

        async def branch(index: int, item: Any) -> dict[str, Any]:
            async def run_branch() -> dict[str, Any]:
                values = self.child_values({**shared, p.item: item}, state, item=item)
                final = await ctx.run_subgraph(self.compiled_child, values, branch=str(index))
                value = final_output(final) if p.result == "output" else final.get(p.result)
                return {"result": value, "usage": final.get("usage") or {}}

            name = f"branch:{index}"
            recorded = await ctx.recorded(name)
            if recorded is not None:  # finished before a crash, a stop or a failed attempt
                # Its model calls count as the uninterrupted run counted them, so a model
                # keyed by `request.call_index` gives the branches after it their own turns.
                ctx.count_replayed_model_calls(Usage.from_dict(recorded["usage"]).model_calls)
                return recorded
            # Journaled once finished (intent and outcome at once): a branch that failed or
            # stopped leaves no effect without an outcome, which a retry, a resume or an
            # answer would report as `effect_unknown_after_crash`.
            outcome = await run_branch()
            return await ctx.effect(name, {"item": item}, functools.partial(_given, outcome))

        # A branch that stops the run (an interrupt, an approval) lets the others finish or
        # stop on their own; a failure stops them before their next effect (`run_all`).
        done = await run_all(
            [functools.partial(branch, i, item) for i, item in enumerate(items)], p.concurrency
        )
        usage = sum((Usage.from_dict(d["usage"]) for d in done), Usage())
        return {p.output: [d["result"] for d in done], "usage": usage.to_dict()}


async def _given(outcome: dict[str, Any]) -> dict[str, Any]:
    """An effect's outcome, made before the effect was journaled."""
    return outcome


class MapPathError(LoomgraphError, LookupError):
    """A part of a map's `over` path that the state does not hold."""


def items_at(state: Mapping[str, Any], path: str) -> Any:
    """The value at the dotted `path` of the state; MapPathError naming the part that is not
    there (never an empty list in its place)."""
    value: Any = state
    walked: list[str] = []
    for part in path.split("."):
        if not isinstance(value, Mapping):
            raise MapPathError(
                f"map over {path!r}: {'.'.join(walked)!r} is a {type(value).__name__}, "
                f"which has no {part!r}"
            )
        if part not in value:
            keys = ", ".join(repr(k) for k in list(value)[:20]) or "none"
            where = repr(".".join(walked)) if walked else "the state the node reads"
            raise MapPathError(f"map over {path!r}: {where} has no {part!r} (it has: {keys})")
        value = value[part]
        walked.append(part)
    return value


def _options(tp: Any) -> list[Any]:
    """The options of a union type (its one type otherwise), None left out."""
    if get_origin(tp) in (Union, types.UnionType):
        return [o for arg in get_args(tp) for o in _options(arg)]
    return [] if tp is type(None) else [tp]


def _known(tp: Any) -> Any:
    """The one type a value of `tp` has, None left out; None when `tp` is any or a union."""
    options = _options(tp)
    return options[0] if len(options) == 1 and options[0] is not Any else None


def _member(tp: Any, part: str) -> tuple[Any, str | None]:
    """The type of `part` of a value of `tp` (Any when the type does not tell), and why a
    value of `tp` has no such part (None when it may have it)."""
    known = _known(tp)
    base = get_origin(known) or known
    if isinstance(base, type) and issubclass(base, BaseModel):
        fields = base.model_fields
        if part in fields:
            return fields[part].annotation, None
        close = difflib.get_close_matches(part, list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return Any, f"it has no field {part!r}{hint}; its fields: {', '.join(fields)}"
    if base is dict:
        args = get_args(known)
        return (args[1] if len(args) == 2 else Any), None
    if base in (list, str, int, float, bool):
        return Any, f"it has no field {part!r}"
    return Any, None


def _type_name(tp: Any) -> str:
    """A type as a graph file writes it (`list[str]`, `str`, `Plan`)."""
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _element(field: StateField | None) -> StateField | None:
    """The items of a field written `list[T]`, as a field of type T (None when unknown)."""
    text = field.type.strip() if field is not None else ""
    if not (text.startswith("list[") and text.endswith("]")):
        return None
    return StateField(type=text[len("list[") : -1])
