"""The YAML loader for files people write (graph, agent and permission files, datasets).

PyYAML's safe loader, which also refuses aliases (so an alias bomb is never expanded) and
nesting deeper than MAX_YAML_DEPTH (building the data is recursive, so a few hundred `[`
would exhaust the stack). `locate` also refuses a mapping key YAML reads as no text (`null:`,
`on:`, `007:`, `1.5:`, `2024-01-02:`): every key of these files is a name, and no reader of
them takes another kind of key. Each file format turns `YamlRefused` into its own typed
error, naming the file and line. Imported by the loaders only: `import loomgraph` loads no
YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from loomgraph.errors import LoomgraphError

__all__ = [
    "MAX_YAML_DEPTH",
    "BoundedLoader",
    "Duplicate",
    "LineMap",
    "Lines",
    "Located",
    "YamlRefused",
    "key_first",
    "locate",
    "located_data",
]

# Where each part of a file's data was written: data path (keys and indexes) to line.
Lines = dict[tuple[str | int, ...], int]

# Mappings and lists inside each other: the files loomgraph reads need fewer than ten levels.
MAX_YAML_DEPTH = 64


class YamlRefused(LoomgraphError):
    """The text has an alias (`*name`: `alias`), nests too deeply (`depth`), holds an
    integer Python refuses to read (`number`), a mapping key YAML reads as no text (`key`) or
    a value it cannot build (`value`: a date `2024-02-30`), at `line`; `detail` says more."""

    def __init__(self, kind: str, line: int | None, detail: str | None = None) -> None:
        super().__init__(detail or _REFUSED[kind])
        self.kind, self.line = kind, line


_REFUSED = {
    "alias": "YAML aliases (*name) are refused, so an alias bomb cannot expand",
    "depth": f"mappings and lists nested more than {MAX_YAML_DEPTH} levels deep",
    "number": "an integer too long to read (Python reads at most 4300 digits)",
    "key": "a key must be text",
    "value": "a value YAML cannot read",
}
_STR_TAG = "tag:yaml.org,2002:str"
# What YAML 1.1 reads a plain scalar as, when not as text.
_READ_AS = {
    f"tag:yaml.org,2002:{tag}": kind
    for tag, kind in (
        ("bool", "a boolean"),
        ("int", "an integer"),
        ("float", "a number"),
        ("null", "null"),
        ("timestamp", "a date"),
        ("merge", "a merge key"),
        ("value", "a default-value key"),
        ("binary", "binary data"),
    )
}


class BoundedLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases and nesting deeper than MAX_YAML_DEPTH."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise YamlRefused("alias", event.start_mark.line + 1)
        if self._depth >= MAX_YAML_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise YamlRefused("depth", event.start_mark.line + 1)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_int(self, node: yaml.ScalarNode) -> Any:
        """An integer, or `YamlRefused` for one Python will not read (over 4300 digits)."""
        try:
            return self.construct_yaml_int(node)
        except ValueError:
            raise YamlRefused("number", node.start_mark.line + 1) from None


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_int)


class LineMap(dict[tuple[str | int, ...], int]):
    """`Lines` from `locate` (each data path at the line its value starts) that also keep
    each mapping key's own line, so that a reader handed them on as plain lines can still
    report a problem about a key at the key (`key_first`)."""

    def __init__(self, lines: Lines | None = None, key_lines: Lines | None = None) -> None:
        super().__init__(lines or {})
        self.key_lines: Lines = {} if key_lines is None else key_lines  # shared, not copied


def key_first(lines: Lines) -> Lines:
    """The lines problems are reported at: each mapping key's data path at the key's own
    line (a misspelt key, a value of the wrong shape: where the key is written, also when its
    value is a block below it), every other path (a list item, the document) where its value
    starts. Lines that are not a `LineMap` (a parsed twin's) are taken as they are."""
    return {**lines, **lines.key_lines} if isinstance(lines, LineMap) else dict(lines)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A key written twice in one mapping (the later value is the one kept)."""

    key: str
    mapping: tuple[str | int, ...]  # the data path of the mapping
    line: int


@dataclass(frozen=True, slots=True)
class Located:
    """A YAML document as plain data, with where each part of it was written."""

    data: Any
    # Each data path at the line its value starts: for a key whose value is a block (a
    # mapping or list under it), the line below the key's. A LineMap keeping `key_lines`.
    lines: Lines
    # Each mapping key's data path at the line of the key itself: where a problem about the
    # key (misspelt, unknown) is.
    key_lines: Lines
    duplicates: list[Duplicate]
    # Mapping keys YAML reads as no text (`on:`, `007:`), left out of `data`; only when
    # `locate` was asked to go on past them, else it raised the first.
    refused_keys: list[YamlRefused]


def locate(loader: BoundedLoader, *, past_keys: bool = False) -> Located:
    """The loader's single document as plain data, the lines of its data paths and keys,
    and the keys written twice. Raises YamlRefused (for a value YAML cannot build, and for a
    mapping key that is no text unless `past_keys`: then the entry is left out and the key
    listed in `refused_keys`), or the YAML library's error."""
    key_lines: Lines = {}
    lines = LineMap(key_lines=key_lines)
    duplicates: list[Duplicate] = []
    refused_keys: list[YamlRefused] = []

    def build(node: yaml.Node, path: tuple[str | int, ...]) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                try:
                    key = _text_key(loader, key_node)
                except YamlRefused as refused:
                    if not past_keys:
                        raise
                    refused_keys.append(refused)
                    continue
                line = key_node.start_mark.line + 1
                if key in out:
                    duplicates.append(Duplicate(key, path, line))
                key_lines[(*path, key)] = line
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return loader.construct_object(node)
        except ValueError as err:  # `2024-02-30` matches a date's pattern, but is no date
            raise YamlRefused("value", lines[path], _value_problem(node, err)) from None

    root = loader.get_single_node()
    data = None if root is None else build(root, ())
    return Located(data, lines, key_lines, duplicates, refused_keys)


def _text_key(loader: BoundedLoader, node: yaml.Node) -> str:
    """A mapping key as the text written; YamlRefused for one YAML reads as no text: turned
    into text it would be another name (`null:` "None", `007:` "7", `on:` "True"), and no
    reader of these files takes a key of another type (a `dict[int, …]` state default is
    written with quoted keys, which pydantic reads as numbers)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        return str(loader.construct_object(node))
    raise YamlRefused("key", node.start_mark.line + 1, _key_problem(node))


def _key_problem(node: yaml.Node) -> str:
    """Why a mapping key is refused, and how to write it as text."""
    if not isinstance(node, yaml.ScalarNode):
        return "a key must be text, not a list or mapping"
    kind = _READ_AS.get(node.tag, f"a value tagged {node.tag}")
    return (
        f"key {node.value!r} is read by YAML as {kind}, not as the text written; "
        f"quote it ('{node.value}':) to mean the text"
    )


def _value_problem(node: yaml.Node, err: ValueError) -> str:
    kind = _READ_AS.get(node.tag, f"a value tagged {node.tag}")
    return (
        f"{node.value!r} is read by YAML as {kind} but is not one ({err}); "
        f"write a valid one, or quote it ('{node.value}') to mean the text"
    )


def located_data(loader: BoundedLoader) -> tuple[Any, Lines, list[Duplicate]]:
    """The loader's single document as plain data, the line where each of its data paths'
    values starts, and the keys written twice (`locate`, without the keys' own lines)."""
    located = locate(loader)
    return located.data, located.lines, located.duplicates
