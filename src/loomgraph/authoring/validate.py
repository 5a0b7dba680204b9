"""Load-time validation of a graph: every problem at once, each with file, line and rule name.

The rules are documented in docs/validation.md. Here: running them all (`validate_graph`),
and the graph-level rules (schema version, names, reserved names, templates). The node-kind
rules live in `validate_kinds`, the state rules in `validate_state`, the rules on the fields
nodes and conditions read and write in `validate_fields`, and the flow rules (entry, edges,
reachability, loops) in `validate_flow`.
"""

from __future__ import annotations

import unicodedata
from contextvars import ContextVar
from pathlib import Path

from loomgraph.authoring.validate_fields import (
    check_condition_reads,
    check_conditions,
    check_reads,
    check_writes,
    known_fields,
    templates_of,
)
from loomgraph.authoring.validate_flow import (
    check_edges,
    check_entry,
    check_flow,
    check_policies,
    edge_holds,
    problem_at,
)
from loomgraph.authoring.validate_kinds import check_binds, check_kind_rules, check_kinds
from loomgraph.authoring.validate_state import check_state_types
from loomgraph.errors import Problem
from loomgraph.graph.jinja_problems import source_problems
from loomgraph.graph.spec import END, SCHEMA_VERSION, Graph
from loomgraph.graph.state import BUILTIN_FIELDS, DERIVED_NAMES

SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION,)
RESERVED_FIELDS = frozenset(BUILTIN_FIELDS) | DERIVED_NAMES

# Graph files being validated in this context: a subgraph that includes its own file would
# otherwise recurse until the stack runs out.
_validating: ContextVar[frozenset[str]] = ContextVar("loomgraph_validating", default=frozenset())


def validate_graph(graph: Graph, *, flow: bool = True) -> list[Problem]:
    """Every problem of a graph, each with file, line and rule name; without `flow`, all but
    the flow rules (reachability, loops without exit), which need networkx, unless a `when`
    is constant."""
    graph.forget_lines_if_edited()
    key = str(Path(graph.source).resolve()) if graph.source else None
    active = _validating.get()
    if key is not None and key in active:
        return [
            problem_at(
                graph,
                "subgraph-cycle",
                f"graph {graph.name!r} ({graph.source}) "
                "runs itself as a subgraph, directly or through other graphs, so "
                "it would never finish loading",
            )
        ]
    if not flow and any(
        edge.when is not None and edge_holds(edge) is not None for edge in graph.edges
    ):
        # `flow=False` says the routes were checked already (`loader.routes`: the built-in
        # graphs' and their copies'), where each `when` may or may not hold; a constant one
        # routes otherwise (`"true"` always, `"false"` never), so those routes are new.
        flow = True
    if flow:
        # Imported before a child graph is loaded (recursively, by a node's check): a first
        # import deep in that recursion could run out of stack half-way, which leaves networkx
        # half-imported and every later import of it failing.
        import networkx  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    token = _validating.set(active | {key}) if key is not None else None
    try:
        problems = _all_problems(graph, flow)
    finally:
        if token is not None:
            _validating.reset(token)
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _all_problems(graph: Graph, flow: bool) -> list[Problem]:
    instances, problems = check_kinds(graph)
    known = known_fields(graph, instances)
    problems += check_schema_version(graph)
    problems += check_names(graph)
    problems += check_reserved_names(graph)
    problems += check_state_types(graph)
    problems += check_kind_rules(graph, instances)
    problems += check_templates(graph)
    problems += check_reads(graph, instances, known)
    problems += check_writes(graph, instances)
    problems += check_conditions(graph, known)
    problems += check_condition_reads(graph, instances)
    problems += check_entry(graph)
    problems += check_edges(graph)
    problems += check_policies(graph)
    if flow:
        problems += check_flow(graph)
    return problems or check_binds(graph, instances)


# --------------------------------------------------------------------------- graph-level


def check_schema_version(graph: Graph) -> list[Problem]:
    """`schema-version`: a schema_version this loomgraph cannot read."""
    if graph.schema_version in SUPPORTED_SCHEMA_VERSIONS:
        return []
    supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
    return [
        problem_at(
            graph,
            "schema-version",
            f"schema_version {graph.schema_version} is not supported; supported: {supported}",
            "schema_version",
        )
    ]


# Line breaks, other control characters, and invisible format characters (bidi overrides).
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def check_names(graph: Graph) -> list[Problem]:
    """`bad-name`: a graph `name`, `version` or node name that is not one line of visible
    text. They are shown as one line (diagram titles and comments, run records, telemetry,
    the command line): a line break in them could only fake what follows."""
    named: list[tuple[str, str, tuple[str, ...]]] = [
        (f"graph {key}", str(getattr(graph, key)), (key,)) for key in ("name", "version")
    ]
    named += [("node name", name, ("nodes", name)) for name in graph.nodes]
    problems = []
    for what, value, path in named:
        bad = next((c for c in value if unicodedata.category(c) in _UNPRINTABLE), None)
        if bad is not None:
            message = (
                f"{what} {value!r} holds the character U+{ord(bad):04X}; "
                f"a {what.removeprefix('graph ')} is one line of visible text"
            )
            problems.append(problem_at(graph, "bad-name", message, *path))
    for name in graph.nodes:
        joiner = next((c for c in _PATH_JOINERS if c in name), None)
        if joiner is not None:
            message = (
                f"node name {name!r} holds {joiner!r}, which joins a node's path "
                "(`plan.1/model`) and idempotency keys (`run:node:visit:slot`) in the journal: "
                "a resume would read it as another node's: name it without `/` and `:`"
            )
            problems.append(problem_at(graph, "bad-name", message, "nodes", name))
    return problems


# What the journal's node paths and effect keys are joined with (`protocols.paths`,
# `engine.effects.EffectKey`): a node name holding one could be read as another node's.
_PATH_JOINERS = ("/", ":")


def check_reserved_names(graph: Graph) -> list[Problem]:
    """`reserved-name`: a node named END, or a state field named like a builtin or derived name."""
    problems = []
    if END in graph.nodes:
        problems.append(
            problem_at(
                graph,
                "reserved-name",
                f"a node cannot be named {END}: edges to END end the run",
                "nodes",
                END,
            )
        )
    for name in graph.state:
        if name in RESERVED_FIELDS:
            what = "a built-in state field" if name in BUILTIN_FIELDS else "a name conditions use"
            problems.append(
                problem_at(
                    graph,
                    "reserved-name",
                    f"state field {name!r} shadows {what}; reserved: "
                    f"{', '.join(sorted(RESERVED_FIELDS))}",
                    "state",
                    name,
                )
            )
    return problems


def check_templates(graph: Graph) -> list[Problem]:
    """`bad-template`: a template param that is not valid Jinja, calls a function or reads a
    private name."""
    return [
        problem_at(
            graph, "bad-template", f"node {name!r}: template {param!r} {why}", "nodes", name, param
        )
        for name, param, source in templates_of(graph)
        for why in source_problems(source, expression=False)
    ]
