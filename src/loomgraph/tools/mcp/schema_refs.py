"""Where a schema's `$ref`s lead, read once when a server lists its tools.

jsonschema follows a `$ref` (and `$dynamicRef`, `$recursiveRef`) by calling itself on the same
part of the arguments, as it does for `allOf`, `anyOf`, `not`, `if`... A `$ref` that leads back
to where it is through such keywords only, never through one that reads deeper into the
arguments (`properties`, `items`...), recurses until Python's stack runs out, whatever the
arguments are; so does a chain of more than REF_CHAIN such steps. Both are the schema's
fault: `ref_problem` finds them, so the tool is left out when it is listed rather than failing
every call, and a call's "nested too deeply" is never the schema's own recursion charged to
the model's arguments. (A `$ref` that does not resolve inside the schema is not followed
here: it leads nowhere, so into no loop; calling its tool is a tool error saying so.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

REF_CHAIN = 50
"""The most schemas one part of the arguments may be checked against in a row through `$ref`s
and in-place keywords (`allOf`...). jsonschema takes two or three Python frames a step, so
500 exhaust the stack on the flattest arguments; real schemas take a handful."""

_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose subschemas jsonschema applies, of every draft, and whether to the same part
# of the arguments (True) or to a part inside it (False). A subschema anywhere else is read
# only through a `$ref`, which leads to it.
_APPLIED = {
    "allOf": True,
    "anyOf": True,
    "oneOf": True,
    "not": True,
    "if": True,
    "then": True,
    "else": True,
    "dependentSchemas": True,
    "dependencies": True,  # (draft 7 and before: a schema for a property that is present)
    "extends": True,  # (draft 3)
    "type": True,  # (draft 3: a schema among the types)
    "disallow": True,  # (draft 3)
    "properties": False,
    "patternProperties": False,
    "additionalProperties": False,
    "unevaluatedProperties": False,
    "propertyNames": False,
    "items": False,
    "prefixItems": False,
    "additionalItems": False,
    "unevaluatedItems": False,
    "contains": False,
}
_MAPS = {"properties", "patternProperties", "dependentSchemas", "dependencies"}


@dataclass(slots=True)
class _Edge:
    target: int  # id() of the schema it leads to
    in_place: bool
    ref: str | None = None  # the `$ref` it follows, if it does
    where: str = ""


@dataclass(slots=True)
class _Node:
    where: str
    edges: list[_Edge] = field(default_factory=list)


class _Walk:
    """The schemas jsonschema may apply, from the root and every `$ref`, and their edges."""

    def __init__(self, cls: Any, schema: dict[str, Any]) -> None:
        from jsonschema_specifications import REGISTRY  # type: ignore[import-untyped,unused-ignore]
        from referencing import Registry, Specification
        from referencing.jsonschema import specification_with

        dialect = cls.ID_OF(cls.META_SCHEMA) or "urn:unknown-dialect"
        self.spec = specification_with(dialect, default=Specification.OPAQUE)
        root = self.spec.create_resource(schema)
        self.root = REGISTRY.combine(Registry()).resolver_with_root(root)
        self.schema = schema
        self.nodes: dict[int, _Node] = {}
        self.keep: list[Any] = []  # what the ids name stays alive while they are compared
        self.todo: list[tuple[Any, Any, str]] = [(schema, self.root, "")]
        self.anchors: list[tuple[dict[str, Any], Any, str]] | None = None

    def run(self) -> None:
        """Walk every applied schema, from the root and each `$ref` that can be followed."""
        while self.todo:
            contents, resolver, where = self.todo.pop()
            if id(contents) in self.nodes:
                continue
            node = self.nodes[id(contents)] = _Node(where)
            self.keep.append(contents)
            for keyword, value in contents.items():
                if keyword in _REFS and isinstance(value, str):
                    self._follow(node, keyword, value, resolver)
                elif keyword in _APPLIED:
                    for path, child in _children(keyword, value):
                        if isinstance(child, dict):
                            inner = resolver.in_subresource(self.spec.create_resource(child))
                            node.edges.append(_Edge(id(child), _APPLIED[keyword]))
                            self.todo.append((child, inner, _at(where, path)))

    def _follow(self, node: _Node, keyword: str, ref: str, resolver: Any) -> None:
        here = _at(node.where, keyword)
        try:
            resolved = resolver.lookup(ref)
        except Exception:  # Unresolvable, or a pointer that reads a list with a name
            return
        targets = [(resolved.contents, resolved.resolver, ref)]
        # A dynamic reference may land on any schema of its anchor, depending on the way
        # there: each is a place it may lead.
        if keyword == "$dynamicRef" and ref.startswith("#") and "/" not in ref:
            targets += [t for t in self._anchors() if t[0].get("$dynamicAnchor") == ref[1:]]
        elif keyword == "$recursiveRef":
            targets += [t for t in self._anchors() if t[0].get("$recursiveAnchor") is True]
        for contents, inner, where in targets:
            if isinstance(contents, dict):  # (true, false, or no schema: it ends there)
                node.edges.append(_Edge(id(contents), True, ref, here))
                self.todo.append((contents, inner, where))

    def _anchors(self) -> list[tuple[dict[str, Any], Any, str]]:
        # Every object of the schema with a dynamic or recursive anchor, and its resolver.
        if self.anchors is None:
            self.anchors = []
            for found, pointer in _objects(self.schema):
                if "$dynamicAnchor" in found or found.get("$recursiveAnchor") is True:
                    try:
                        with_anchor = self.root.lookup(pointer)
                    except Exception:  # (inside what is not a schema: a list of `enum`...)
                        continue
                    self.anchors.append((found, with_anchor.resolver, pointer))
        return self.anchors


def _children(keyword: str, value: Any) -> Iterator[tuple[str, Any]]:
    if keyword in _MAPS and isinstance(value, dict):
        yield from ((f"{keyword}.{name}", child) for name, child in value.items())
    elif isinstance(value, list):
        yield from ((f"{keyword}[{i}]", child) for i, child in enumerate(value))
    else:
        yield keyword, value


def _objects(schema: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every object in `schema`, with the `$ref` that points at it (`#/...`)."""
    todo: list[tuple[Any, str]] = [(schema, "#")]
    while todo:
        item, pointer = todo.pop()
        if isinstance(item, dict):
            yield item, pointer
            todo.extend((v, f"{pointer}/{_segment(str(k))}") for k, v in item.items())
        elif isinstance(item, list):
            todo.extend((v, f"{pointer}/{i}") for i, v in enumerate(item))


def _segment(key: str) -> str:
    return quote(key.replace("~", "~0").replace("/", "~1"), safe="")


def _loop_or_chain(nodes: dict[int, _Node]) -> str | None:
    """A loop of in-place steps, or a chain of more than REF_CHAIN, or None (depth-first,
    without recursion: the graph may be deeper than the stack)."""
    chain: dict[int, int] = {}  # done: the longest in-place chain from there
    for start in nodes:
        if start in chain:
            continue
        path: list[int] = [start]  # the nodes under way, each reached by `taken`'s edge
        under_way = {start}
        taken: list[_Edge | None] = [None]
        edges: list[Iterator[_Edge]] = [iter(nodes[start].edges)]
        while path:
            edge = next((e for e in edges[-1] if e.in_place), None)
            if edge is None:
                done = path.pop()
                under_way.discard(done)
                taken.pop()
                edges.pop()
                longest = [chain[e.target] + 1 for e in nodes[done].edges if e.in_place]
                chain[done] = max(longest, default=0)
                if chain[done] > REF_CHAIN:
                    start_at = nodes[done].where or "its root"
                    return (
                        f"leads through more than {REF_CHAIN} schemas in a row ($ref, allOf, "
                        f"...) from {start_at}: checking it would run out of stack"
                    )
            elif edge.target in chain:
                continue
            elif edge.target in under_way:
                loop = [*taken[path.index(edge.target) + 1 :], edge]
                ref = next(e for e in loop if e is not None and e.ref is not None)
                return (
                    f"has a $ref that loops: {_short(ref.ref or '')} at {ref.where} leads back "
                    "to itself without reading deeper into the arguments, so checking any "
                    "arguments would never end"
                )
            else:
                path.append(edge.target)
                under_way.add(edge.target)
                taken.append(edge)
                edges.append(iter(nodes[edge.target].edges))
    return None


def ref_problem(cls: Any, schema: dict[str, Any]) -> str | None:
    """Why `schema`'s `$ref`s make it unusable with `cls` (a jsonschema validator class): one
    loops, or they lead through too many schemas in a row; or None."""
    walk = _Walk(cls, schema)
    walk.run()
    return _loop_or_chain(walk.nodes)


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _short(text: str) -> str:
    return repr(text) if len(text) <= 60 else f"{text[:60]!r}..."
