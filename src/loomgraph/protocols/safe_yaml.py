"""The YAML loader for files people write (graph files, agent files, permission files).

PyYAML's safe loader, which also refuses aliases (so an alias bomb is never expanded) and
nesting deeper than MAX_YAML_DEPTH (building the data is recursive, so a few hundred `[`
would exhaust the stack). Each file format turns `YamlRefused` into its own typed error,
naming the file and line. Imported by the loaders only: `import loomgraph` loads no YAML.
"""

from __future__ import annotations

from typing import Any

import yaml

from loomgraph.errors import LoomgraphError

__all__ = ["MAX_YAML_DEPTH", "BoundedLoader", "YamlRefused"]

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
