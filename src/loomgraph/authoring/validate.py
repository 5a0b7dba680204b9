"""Load-time validation of a graph: every problem at once, each with file, line and rule name.

The rules are documented in docs/validation.md. Node-kind and state rules live here; the
rules on the fields nodes and conditions read and write in `validate_fields`; the flow rules
(entry, edges, reachability, loops) in `validate_flow`.
"""

from __future__ import annotations

import difflib
import types
import unicodedata
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, PydanticUserError, TypeAdapter, ValidationError

from loomgraph.authoring.validate_fields import (
    check_conditions,
    check_reads,
    check_writes,
    known_fields,
    templates_of,
)
from loomgraph.authoring.validate_flow import (
    check_condition_reads,
    check_edges,
    check_entry,
    check_flow,
    check_policies,
    did_you_mean,
    problem_at,
)
from loomgraph.errors import Problem
from loomgraph.graph.jinja_problems import source_problems
from loomgraph.graph.registry import (
    NodeKind,
    NodeKindLoadError,
    UnknownNodeKind,
    known_kinds,
    node_kind,
)
from loomgraph.graph.spec import END, SCHEMA_VERSION, Graph, NodeSpec
from loomgraph.graph.state import BUILTIN_FIELDS, DERIVED_NAMES, parse_type

SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION,)
# As the state checks a field: finite floats (the state is journaled as JSON).
_FINITE = ConfigDict(allow_inf_nan=False)
RESERVED_FIELDS = frozenset(BUILTIN_FIELDS) | DERIVED_NAMES
# The keys every node takes, whatever its kind (the others are its kind's params).
COMMON_KEYS = tuple(NodeSpec.model_fields)

# Graph files being validated in this context: a subgraph that includes its own file would
# otherwise recurse until the stack runs out.
_validating: ContextVar[frozenset[str]] = ContextVar("loomgraph_validating", default=frozenset())


def validate_graph(graph: Graph, *, flow: bool = True) -> list[Problem]:
    """Every problem of a graph, each with file, line and rule name; without `flow`, all but
    the flow rules (reachability, loops without exit), which need networkx."""
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
    return problems


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


def check_state_types(graph: Graph) -> list[Problem]:
    """`bad-type` (a type string that does not parse), `bad-default` and `bad-reducer-type`."""
    problems = []
    for name, field in graph.state.items():
        try:
            parsed = parse_type(field.type, near=graph.source)
        except Exception as err:  # an imported module may raise anything
            problems.append(
                problem_at(graph, "bad-type", f"state field {name!r}: {err}", "state", name, "type")
            )
            continue
        if (why := _default_mismatch(field.default, parsed)) is not None:
            problems.append(
                problem_at(
                    graph,
                    "bad-default",
                    f"state field {name!r}: default {field.default!r} does not fit type "
                    f"{field.type!r}: {why}",
                    "state",
                    name,
                    "default",
                )
            )
        if (why := _reducer_mismatch(field.reducer, parsed)) is not None:
            problems.append(
                problem_at(
                    graph,
                    "bad-reducer-type",
                    f"state field {name!r}: reducer {field.reducer!r} {why}, not {field.type!r}",
                    "state",
                    name,
                    "reducer",
                )
            )
    return problems


def _reducer_mismatch(reducer: str, parsed: Any) -> str | None:
    """Why a reducer cannot combine values of a type, or None when it can."""
    options = [o for o in _union_options(parsed) if o is not type(None)]
    if any(o is Any for o in options):
        return None
    bases = [get_origin(o) or o for o in options]
    if reducer == "append" and list not in bases:
        return "needs a list type like list[str]"
    if reducer == "merge" and not any(b is dict or _is_model(b) for b in bases):
        return "needs a dict type like dict[str, int]"
    if reducer == "add" and any(b in (str, bool) for b in bases):
        return "needs a number, list or dict[str, int] type"
    if reducer == "add" and any(_adds_no_numbers(o) for o in options):
        return "adds a dict's values key by key, so needs number values like dict[str, int]"
    return None


def _adds_no_numbers(option: Any) -> bool:
    """Whether `option` is a dict type whose values `add` cannot sum (text, flags, lists…)."""
    args = get_args(option)
    if get_origin(option) is not dict or len(args) != 2:
        return False
    values = [get_origin(v) or v for v in _union_options(args[1]) if v is not type(None)]
    return any(v in (str, bool, list, dict) or _is_model(v) for v in values)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _holds_model(tp: Any) -> bool:
    """Whether a type is or contains a pydantic model (which fills in its own defaults)."""
    return _is_model(tp) or any(_holds_model(arg) for arg in get_args(tp))


def _default_mismatch(default: Any, parsed: Any) -> str | None:
    """Why a field's default is not a value of its type, or None when it is (or is unset).
    It must be written as a value of the type: `"5"` for an `int` is refused, though a patch
    `"5"` would be converted. (The state holds it as the field's adapter makes it, like a
    patch: `StateSchema`; a model's defaults are filled in there.)"""
    if default is None or parsed is Any:
        return None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(parsed, config=_FINITE)
    except PydanticUserError:  # a model keeps its own config
        adapter = TypeAdapter(parsed)
    try:
        value = adapter.validate_python(default)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        at = ".".join(str(part) for part in first["loc"])
        return f"{at + ': ' if at else ''}{first['msg']}"
    except Exception as err:  # a model's own validator may raise anything
        return f"{type(err).__name__}: {err}"
    if _holds_model(parsed):
        return None
    written = adapter.dump_python(value, mode="json")
    same_type = type(written) is type(default) or _numbers(written, default)
    return None if written == default and same_type else f"write it as {written!r}"


def _numbers(a: Any, b: Any) -> bool:
    """Whether both are numbers (an int default for a float field is fine), not flags."""
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))


def _union_options(parsed: Any) -> list[Any]:
    if get_origin(parsed) in (Union, types.UnionType):
        return [o for arg in get_args(parsed) for o in _union_options(arg)]
    return [parsed]


# --------------------------------------------------------------------------- node kinds


def _unknown_kind(kind: str) -> str:
    known = known_kinds()
    hint = did_you_mean(kind, known, ignore_case=True)
    return f"unknown kind {kind!r}{hint}; registered kinds: {', '.join(known)}"


def check_kinds(graph: Graph) -> tuple[dict[str, NodeKind], list[Problem]]:
    """`unknown-node-kind` and `bad-params`; the node instances of the nodes that passed."""
    instances: dict[str, NodeKind] = {}
    problems: list[Problem] = []
    for name, spec in graph.nodes.items():
        try:
            kind = node_kind(spec.kind)
        except (UnknownNodeKind, NodeKindLoadError) as err:  # (a distribution's is broken)
            why = str(err) if isinstance(err, NodeKindLoadError) else _unknown_kind(spec.kind)
            at = ("nodes", name, "kind")
            problems.append(problem_at(graph, "unknown-node-kind", f"node {name!r}: {why}", *at))
            continue
        try:
            params = kind.Params.model_validate(spec.params)
        except ValidationError as err:
            accepted = [f.alias or n for n, f in kind.Params.model_fields.items()]
            for e in err.errors():
                param = ".".join(str(part) for part in e["loc"]) or "params"
                hint = (
                    _unknown_key_hint(spec.kind, param, accepted)
                    if e["type"] == "extra_forbidden"
                    else ""
                )
                problems.append(
                    problem_at(
                        graph,
                        "bad-params",
                        f"node {name!r} ({spec.kind}): param {param!r}: {e['msg']}{hint}",
                        "nodes",
                        name,
                        *e["loc"],
                    )
                )
            continue
        try:
            instances[name] = kind(name, spec, params)
        except Exception as err:
            problems.append(
                problem_at(
                    graph,
                    "kind-check",
                    f"node {name!r} ({spec.kind}): {type(err).__name__}: {err}",
                    "nodes",
                    name,
                )
            )
    return instances, problems


def _unknown_key_hint(kind: str, key: str, params: list[str]) -> str:
    """What a node of `kind` takes instead of the unknown `key`: the closest key, the kind's
    params and the keys every node takes."""
    close = difflib.get_close_matches(key, [*COMMON_KEYS, *params], n=1)
    return (
        f"; {kind} nodes take: {', '.join(params) or 'no params'}; every node takes: "
        f"{', '.join(COMMON_KEYS)}" + (f"; did you mean {close[0]!r}?" if close else "")
    )


def check_kind_rules(graph: Graph, instances: dict[str, NodeKind]) -> list[Problem]:
    """`kind-check`: what each node's kind says is wrong (`NodeKind.check`)."""
    problems = []
    for name, node in instances.items():
        try:
            messages = node.check(graph)
        except Exception as err:  # a third-party check must not hide the other problems
            messages = [f"check failed: {type(err).__name__}: {err}"]
        problems += [
            problem_at(graph, "kind-check", f"node {name!r}: {message}", "nodes", name)
            for message in messages
        ]
    return problems


def check_binds(graph: Graph, instances: dict[str, NodeKind]) -> list[Problem]:
    """`kind-check`: a node whose `bind` fails, so the graph could not be compiled. Only for an
    otherwise valid graph: a `bind` may rightly fail on a problem reported already."""
    problems = []
    for name, node in instances.items():
        try:
            node.bind(graph)
        except Exception as err:
            problems.append(
                problem_at(
                    graph,
                    "kind-check",
                    f"node {name!r}: bind failed: {type(err).__name__}: {err}",
                    "nodes",
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
