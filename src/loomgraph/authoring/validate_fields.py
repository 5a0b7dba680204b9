"""Field rules of graph validation: what nodes, templates and conditions read and write.

Every field read must be set by something (a builtin, `state:` or a node's writes); every
field written must be declared; an edge condition must not read what no run can give it
(visits of no node, a field that is unset at every run). Checked by `validate.validate_graph`.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any, Union, get_args, get_origin

from loomgraph.authoring.validate_flow import did_you_mean, problem_at, quoted
from loomgraph.errors import Problem
from loomgraph.graph.conditions import keys_read, names_used, visit_names
from loomgraph.graph.field_types import parse_type
from loomgraph.graph.jinja_problems import source_problems
from loomgraph.graph.registry import NodeKind, NodeKindLoadError, UnknownNodeKind, node_kind
from loomgraph.graph.spec import Graph, NodeSpec
from loomgraph.graph.state import BUILTIN_FIELDS, DERIVED_NAMES

# Names conditions see but templates do not: nodes render their templates from the state
# alone (`condition_scope(state)`), and a node's context does not hold the visit counts.
CONDITION_ONLY = frozenset({"visits"})


def templates_of(graph: Graph) -> Iterable[tuple[str, str, str]]:
    """(node, param, source) of every template param of a known kind."""
    for name, spec in graph.nodes.items():
        try:
            kind = node_kind(spec.kind)
        except (UnknownNodeKind, NodeKindLoadError):  # `check_kinds` reports it
            continue
        for param in kind.templates:
            source = spec.params.get(param)
            if isinstance(source, str):
                yield name, param, source


# --------------------------------------------------------------------------- fields


def _reads(spec: NodeSpec, node: NodeKind | None) -> list[str]:
    return node.reads() if node is not None else list(spec.reads or ())


def _writes(spec: NodeSpec, node: NodeKind | None) -> list[str]:
    return node.writes() if node is not None else list(spec.writes or ())


def known_fields(graph: Graph, instances: dict[str, NodeKind]) -> set[str]:
    """The fields a run has: builtins, declared state, and whatever some node writes."""
    known = set(BUILTIN_FIELDS) | set(graph.state)
    for name, spec in graph.nodes.items():
        known.update(_writes(spec, instances.get(name)))
    return known


def _field_path(spec: NodeSpec, key: str, field: str) -> tuple[str | int, ...]:
    """The most specific place a node names a field: its reads/writes list, else a param."""
    listed = spec.reads if key == "reads" else spec.writes
    if listed is not None and field in listed:
        return (key, listed.index(field))
    for param, value in spec.params.items():
        if value == field:
            return (param,)
        if isinstance(value, dict):
            for k, v in value.items():
                if field in (k, v):
                    return (param, k)
        if isinstance(value, list) and field in value:
            return (param, value.index(field))
    return ()


def check_reads(graph: Graph, instances: dict[str, NodeKind], known: set[str]) -> list[Problem]:
    """`undefined-read`: a node or one of its templates reads a field nothing sets."""
    problems: list[Problem] = []
    reported: set[tuple[str, str]] = set()
    for name, param, source in templates_of(graph):
        extra = instances[name].template_names if name in instances else frozenset()
        used = names_used(source, expression=False) - extra
        if CONDITION_ONLY & used:
            reported.add((name, "visits"))
            problems.append(
                problem_at(
                    graph,
                    "undefined-read",
                    f"node {name!r}: template {param!r} uses 'visits', which only edge "
                    "conditions (`when`) see: a template is rendered without it",
                    "nodes",
                    name,
                    param,
                )
            )
        for shown, field in unknown_names(source, used, known, expression=False):
            reported.add((name, field))
            problems.append(
                problem_at(
                    graph,
                    "undefined-read",
                    f"node {name!r}: template {param!r} uses {shown!r}, "
                    f"which is not a state field{did_you_mean(field, known)}",
                    "nodes",
                    name,
                    param,
                )
            )
    problems += _unread_fields(graph, instances, known, reported)
    for name, spec in graph.nodes.items():
        for field in _reads(spec, instances.get(name)):
            if field in known or (name, field) in reported:
                continue
            reported.add((name, field))
            problems.append(
                problem_at(
                    graph,
                    "undefined-read",
                    f"node {name!r} reads {field!r}, which no node writes "
                    f"and `state:` does not declare{did_you_mean(field, known)}",
                    "nodes",
                    name,
                    *_field_path(spec, "reads", field),
                )
            )
    return problems


def unknown_names(
    source: str, used: set[str], known: set[str], *, expression: bool
) -> list[tuple[str, str]]:
    """(as written, field) of each field `source` uses that no run has: a name (`x`, `self`)
    or a key of `state` (`state.x`), which would render empty or test false."""
    names = [(field, field) for field in sorted(used - known - DERIVED_NAMES)]
    if "state" in used:
        for field in keys_read("state", source, expression=expression):
            if field not in known:
                names.append((f"state.{field}", field))
    return names


def _unread_fields(
    graph: Graph, instances: dict[str, NodeKind], known: set[str], reported: set[tuple[str, str]]
) -> list[Problem]:
    """`unread-field`: a template uses a state field the node does not read. A node gets only
    the fields it reads (`reads:`, or its kind's defaults) and renders its templates from them
    (`condition_scope` of that view), so the field would always render empty. Free to use:
    the kind's `template_names` (`item`), names the template sets itself (loop variables),
    `state` and `last_message` — though `state.x` is still the node's view (`x` must be read)
    and `last_message` the last of `messages` (which must be read)."""
    problems = []
    for name, param, source in templates_of(graph):
        node = instances.get(name)
        if node is None:  # its kind or params are reported already
            continue
        extra = node.template_names
        read = set(node.reads())
        used = names_used(source, expression=False) - extra
        wanted = {field: field for field in used - DERIVED_NAMES if field in known}
        if "last_message" in used:
            wanted.setdefault("messages", "last_message")
        if "state" in used:
            for field in keys_read("state", source, expression=False):
                if field in known:
                    wanted.setdefault(field, f"state.{field}")
        for field, shown in sorted(wanted.items()):
            if field in read or (name, field) in reported:
                continue
            reported.add((name, field))
            what = (
                repr(field)
                if shown == field
                else f"{shown!r} (the last of {field!r})"
                if shown == "last_message"
                else f"{shown!r} (its field {field!r})"
            )
            if node.spec.reads is not None:
                fix = f"add {field!r} to `reads:`"
            else:
                fix = f"list it in `reads:` (`reads: [{', '.join([*sorted(read), field])}]`)"
            problems.append(
                problem_at(
                    graph,
                    "unread-field",
                    f"node {name!r}: template {param!r} uses {what}, which the node does not "
                    f"read (it reads {', '.join(map(repr, sorted(read))) or 'nothing'}), so it "
                    f"would always render empty: a node sees only the fields it reads; {fix}",
                    "nodes",
                    name,
                    param,
                )
            )
    return problems


def check_writes(graph: Graph, instances: dict[str, NodeKind]) -> list[Problem]:
    """`undeclared-write` (a node writes a field that is not a builtin nor declared in `state`)
    and `missing-write` (a node's `writes:` leaves out a field its kind writes)."""
    declared = set(BUILTIN_FIELDS) | set(graph.state)
    problems = []
    for name, spec in graph.nodes.items():
        node = instances.get(name)
        for field in dict.fromkeys(_writes(spec, node)):
            if field not in declared:
                problems.append(
                    problem_at(
                        graph,
                        "undeclared-write",
                        f"node {name!r} writes {field!r}, which is not "
                        f"a state field; declare it under `state:` with a type"
                        f"{did_you_mean(field, declared)}",
                        "nodes",
                        name,
                        *_field_path(spec, "writes", field),
                    )
                )
        if node is None or spec.writes is None:
            continue
        listed = set(node.writes())
        for field in node.kind_writes():
            if field not in listed:
                problems.append(
                    problem_at(
                        graph,
                        "missing-write",
                        f"node {name!r} ({spec.kind}) writes {field!r}, but its `writes:` "
                        f"leaves it out, so the run would fail at this node; add {field!r} "
                        "to `writes:`, or drop `writes:` to use the kind's own list",
                        "nodes",
                        name,
                        "writes",
                    )
                )
    return problems


def check_conditions(graph: Graph, known: set[str]) -> list[Problem]:
    """`bad-condition` (a `when` that is not valid Jinja, calls a function or reads a private
    name) and `undefined-read` in a `when`."""
    problems = []
    for i, edge in enumerate(graph.edges):
        if edge.when is None:
            continue
        if wrong := source_problems(edge.when, expression=True):
            problems += [
                problem_at(
                    graph, "bad-condition", f"condition {edge.when!r} {why}", "edges", i, "when"
                )
                for why in wrong
            ]
            continue
        used = names_used(edge.when, expression=True)
        for shown, field in unknown_names(edge.when, used, known, expression=True):
            problems.append(
                problem_at(
                    graph,
                    "undefined-read",
                    f"condition {edge.when!r} uses {shown!r}, which is not "
                    f"a state field{did_you_mean(field, known | DERIVED_NAMES)}",
                    "edges",
                    i,
                    "when",
                )
            )
    return problems


def check_condition_reads(graph: Graph, instances: Mapping[str, NodeKind]) -> list[Problem]:
    """`undefined-read` in a `when`: `visits.x` where `x` is no node of the graph, and a
    declared field that no node writes, that has no default, and whose type has no None (it
    would be None at every run, a value its type does not allow)."""
    written = {
        field
        for name, spec in graph.nodes.items()
        for field in (instances[name].writes() if name in instances else spec.writes or ())
    }
    problems: list[Problem] = []
    for i, edge in enumerate(graph.edges):
        if edge.when is None:
            continue
        where = f"edge from {edge.source!r} to {edge.target!r}: condition {edge.when!r}"
        for node in visit_names(edge.when):
            if node in graph.nodes:
                continue
            read = f"visits.{node}" if node.isidentifier() else f"visits[{node!r}]"
            problems.append(
                problem_at(
                    graph,
                    "undefined-read",
                    f"{where} reads {read}, but {node!r} is not a node of this graph"
                    f"{did_you_mean(node, graph.nodes)}; nodes: {quoted(graph.nodes)}",
                    "edges",
                    i,
                    "when",
                )
            )
        for name in sorted(names_used(edge.when, expression=True) & set(graph.state)):
            field = graph.state[name]
            if name in written or field.default is not None:
                continue
            if _admits_none(field.type, graph.source):
                continue
            problems.append(
                problem_at(
                    graph,
                    "undefined-read",
                    f"{where} reads {name!r}, which no node writes and which has no default, so "
                    f"it is unset (None) at every run, which its type {field.type!r} does not "
                    f"allow; add {name!r} to the `writes` of the node that sets it, or give "
                    "the field a `default:` (also when a parent graph fills it through "
                    "`inputs:`)",
                    "edges",
                    i,
                    "when",
                )
            )
    return problems


def _admits_none(text: str, near: str | None) -> bool:
    """Whether None is a value of the type string `text` (`any`, `T | None`); True when it
    does not parse (reported as `bad-type`)."""
    try:
        parsed = parse_type(text, near=near)
    except Exception:  # an imported module may raise anything
        return True
    return any(option in (Any, type(None)) for option in _options(parsed))


def _options(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return [o for arg in get_args(tp) for o in _options(arg)]
    return [tp]
