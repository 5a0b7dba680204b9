"""The node-kind rules of graph validation: `unknown-node-kind`, `bad-params` and
`kind-check` (what a node's kind says is wrong with it, and whether it binds).

Each node's kind is looked up in the registry and made from its params once; the instances
are what the field rules (`validate_fields`) ask for the fields each node reads and writes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from loomgraph.authoring.validate_flow import did_you_mean, problem_at
from loomgraph.errors import Problem
from loomgraph.graph.registry import (
    NodeKind,
    NodeKindLoadError,
    UnknownNodeKind,
    known_kinds,
    node_kind,
)
from loomgraph.graph.spec import Graph, NodeSpec

__all__ = ["COMMON_KEYS", "check_binds", "check_kind_rules", "check_kinds"]

# The keys every node takes, whatever its kind (the others are its kind's params).
COMMON_KEYS = tuple(NodeSpec.model_fields)


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
            node = kind(name, spec, params)
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
            continue
        if wrong := _field_problems(node, spec.kind):
            # Left out as a node that could not be made: what it reads and writes is unknown.
            problems += [
                problem_at(graph, "kind-check", f"node {name!r}: {why}", "nodes", name)
                for why in wrong
            ]
            continue
        instances[name] = node
    return instances, problems


def _shown(value: object) -> str:
    """A returned value as messages show it: `None`, `'text'`, `3 (int)`."""
    if value is None or isinstance(value, str | bytes):
        return repr(value)
    return f"{_short(value)} ({type(value).__name__})"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_problems(node: NodeKind, kind: str) -> list[str]:
    """What is wrong with the fields a node's kind says it reads and writes. The run takes
    them as they are (`tuple(node.reads())`), so each method must return field names: None
    would fail every visit, and a str would be read as one field per character."""
    out = []
    for method in ("reads", "writes", "kind_writes"):
        try:
            value = getattr(node, method)()
            if _field_names(value) is not None:  # (iterating it may raise too)
                continue
        except Exception as err:
            out.append(f"the {kind!r} kind's {method}() failed: {type(err).__name__}: {err}")
            continue
        fix = (
            "return [] when there are none"
            if value is None
            else f"return [{value!r}]"
            if isinstance(value, str)
            else "return a list of str"
        )
        out.append(
            f"the {kind!r} kind's {method}() returned {_shown(value)}, not a list of field "
            f"names, so every visit would fail; {fix}"
        )
    return out


def _field_names(value: object) -> list[str] | None:
    """`value` as field names (any iterable of str but a str), or None."""
    if not isinstance(value, Iterable) or isinstance(value, str | bytes):
        return None
    names = list(value)
    return names if all(isinstance(n, str) for n in names) else None


def _messages(value: object) -> list[str] | None:
    """What a kind's `check` returned, as messages: None is none (a `check` that falls off
    its end), a str is one, an iterable holds them; None for anything else."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable) or isinstance(value, bytes | Mapping):
        return None
    return [str(message) for message in value]


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
        kind = node.spec.kind
        try:
            returned: object = node.check(graph)
            messages = _messages(returned)
        except Exception as err:  # a third-party check must not hide the other problems
            messages = [f"check failed: {type(err).__name__}: {err}"]
        if messages is None:
            messages = [
                f"the {kind!r} kind's check() returned {_shown(returned)}, not a list of "
                "messages; return a list of str (empty when all is well)"
            ]
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
