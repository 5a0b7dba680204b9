"""The YAML loader for files people write (graph files, agent files, permission files).

PyYAML's safe loader, which also refuses aliases (so an alias bomb is never expanded) and
nesting deeper than MAX_YAML_DEPTH (building the data is recursive, so a few hundred `[`
would exhaust the stack). Each file format turns `YamlRefused` into its own typed error,
naming the file and line. Imported by the loaders only: `import loomgraph` loads no YAML.
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
    "Lines",
    "Located",
    "YamlRefused",
    "locate",
    "located_data",
]

# Where each part of a file's data was written: data path (keys and indexes) to line.
Lines = dict[tuple[str | int, ...], int]

# Mappings and lists inside each other: the files loomgraph reads need fewer than ten levels.
MAX_YAML_DEPTH = 64


class YamlRefused(LoomgraphError):
    """The text has an alias (`*name`: `alias`), nests too deeply (`depth`) or holds an
    integer Python refuses to read (`number`), at `line`."""

    def __init__(self, kind: str, line: int | None) -> None:
        super().__init__(_REFUSED[kind])
        self.kind, self.line = kind, line


_REFUSED = {
    "alias": "YAML aliases (*name) are refused, so an alias bomb cannot expand",
    "depth": f"mappings and lists nested more than {MAX_YAML_DEPTH} levels deep",
    "number": "an integer too long to read (Python reads at most 4300 digits)",
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


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A key written twice in one mapping (the later value is the one kept)."""

    key: str | int
    mapping: tuple[str | int, ...]  # the data path of the mapping
    line: int


@dataclass(frozen=True, slots=True)
class Located:
    """A YAML document as plain data, with where each part of it was written."""

    data: Any
    # Each data path at the line its value starts: for a key whose value is a block (a
    # mapping or list under it), the line below the key's.
    lines: Lines
    # Each mapping key's data path at the line of the key itself: where a problem about the
    # key (misspelt, unknown) is.
    key_lines: Lines
    duplicates: list[Duplicate]


def locate(loader: BoundedLoader) -> Located:
    """The loader's single document as plain data, the lines of its data paths and keys,
    and the keys written twice. Raises YamlRefused, or the YAML library's error."""
    lines: Lines = {}
    key_lines: Lines = {}
    duplicates: list[Duplicate] = []

    def build(node: yaml.Node, path: tuple[str | int, ...]) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                key = key if isinstance(key, str | int) else str(key)
                line = key_node.start_mark.line + 1
                if key in out:
                    duplicates.append(Duplicate(key, path, line))
                key_lines[(*path, key)] = line
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node)

    root = loader.get_single_node()
    data = None if root is None else build(root, ())
    return Located(data, lines, key_lines, duplicates)


def located_data(loader: BoundedLoader) -> tuple[Any, Lines, list[Duplicate]]:
    """The loader's single document as plain data, the line where each of its data paths'
    values starts, and the keys written twice (`locate`, without the keys' own lines)."""
    located = locate(loader)
    return located.data, located.lines, located.duplicates
