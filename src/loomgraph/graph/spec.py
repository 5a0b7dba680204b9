"""The graph spec: pydantic models for graphs, nodes, edges and state declarations."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, WithJsonSchema
from pydantic_core import PydanticSerializationError

from loomgraph.errors import GraphError
from loomgraph.graph.policies import RetryPolicy

END = "END"
SCHEMA_VERSION = 1

Reducer = Literal["replace", "append", "merge", "add"]


def _version_text(value: Any) -> Any:
    """`version: 1` is read as the string "1"; a version YAML read as a fraction is refused,
    since the number has lost how it was written (`1.10` is the float 1.1): quote it."""
    if isinstance(value, float):
        raise ValueError(
            f"version {value!r} was read as a number, which loses how it was written "
            f"(1.10 and 1.1 are the same number); quote it as you mean it, e.g. "
            f'version: "{value!r}"'
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Version = Annotated[
    str,
    BeforeValidator(_version_text),
    WithJsonSchema(
        {
            "type": ["string", "integer"],
            "description": "the graph's own version: a whole number or a quoted string, "
            'e.g. 2 or "2.1"',
        }
    ),
]


class StateField(BaseModel):
    """A typed field a graph adds to the run state, and how patches combine into it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        "any",
        description="str, int, float, bool, any, list[T], dict[K, V], "
        "T | None, or a pydantic model by import path (pkg.module:Model)",
    )
    reducer: Reducer = "replace"
    default: Any = None
    description: str = ""


class EdgeSpec(BaseModel):
    """An edge; conditional edges are tried in file order, the first that holds wins."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to", description="a node name or END")
    when: str | None = Field(None, description="a sandboxed Jinja2 expression over the state")


class NodeSpec(BaseModel):
    """A node: its kind, what it reads and writes, and its kind's parameters (extra keys)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    description: str = ""
    reads: list[str] | None = None
    writes: list[str] | None = None
    max_visits: int | None = Field(None, ge=1, description="visits of this node per run")
    retry: RetryPolicy | None = None
    timeout: float | None = Field(None, gt=0, description="seconds one visit may take")
    on_error: str | None = Field(
        None, description="node a failure goes to (after retries), with the error in `error`"
    )

    @property
    def params(self) -> dict[str, Any]:
        """The parameters of the node's kind: every key that is not a common field."""
        return dict(self.model_extra or {})


class Limits(BaseModel):
    """Visit limits; a run that reaches one ends with status `limit_reached`."""

    model_config = ConfigDict(extra="forbid")

    max_visits: int = Field(50, ge=1, description="node visits per run")
    max_node_visits: int = Field(25, ge=1, description="visits of any one node per run")


class GraphMemo:
    """What was worked out from a graph as it was (whether it passed validation, its
    compiled form), under `key`: its content (as JSON), file and resolver. Copying a graph
    never copies its memo, the copies share it; `Graph.memo` checks the key on every use and
    gives a graph that no longer matches it a memo of its own, so nothing worked out from
    one graph (a copy with other limits, a graph edited since) serves another."""

    __slots__ = ("compiled", "key", "validated")

    def __init__(self) -> None:
        self.key: tuple[str, str | None, object] | None = None
        self.validated = False
        self.compiled: object = None

    def __copy__(self) -> GraphMemo:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> GraphMemo:
        return self

    def __reduce__(self) -> tuple[type[GraphMemo], tuple[()]]:
        return GraphMemo, ()  # a compiled form does not travel: it is worked out again


class Graph(BaseModel):
    """A loop strategy: typed state, nodes, edges, an entry node and limits."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    name: str
    version: Version = "1"
    description: str = ""
    state: dict[str, StateField] = Field(default_factory=dict)
    entry: str = ""
    nodes: dict[str, NodeSpec] = Field(default_factory=dict)
    edges: list[EdgeSpec] = Field(default_factory=list)
    limits: Limits = Field(default_factory=lambda: Limits())

    # Where the graph came from, for error messages; not part of the graph's value.
    _source: str | None = PrivateAttr(default=None)
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)
    # The content (as JSON) `_source` and `_lines` describe: a graph edited since is no
    # longer what the file says, and its problems name no file line
    # (`forget_lines_if_edited`). "" for content that is not JSON (its edits are not seen).
    _read_as: str | None = PrivateAttr(default=None)
    # Validation and compiling, done once per content (read it through `memo()`).
    _memo: GraphMemo = PrivateAttr(default_factory=GraphMemo)
    # Finds the graphs this one's nodes name (set by whoever loaded it: see authoring.loader).
    _resolver: Callable[[str, Graph], Graph] | None = PrivateAttr(default=None)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """A deep copy sharing the line map, which is replaced, never changed (copying it
        was most of the cost of a copy)."""
        memo = {} if memo is None else memo
        memo[id(self._lines)] = self._lines
        return super().__deepcopy__(memo)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self.to_data() == other.to_data()

    __hash__ = None  # type: ignore[assignment]

    @property
    def source(self) -> str | None:
        """The file the graph was loaded from, if any."""
        return self._source

    def resolve_graph(self, ref: str) -> Graph:
        """The graph a node of this one names: a built-in name or a path relative to this file."""
        if self._resolver is None:
            raise GraphError(
                f"graph {self.name!r} names the graph {ref!r}, but was not loaded through "
                "loomgraph.authoring (load_graph or a graph file), which knows where graphs are"
            )
        return self._resolver(ref, self)

    def memo(self) -> GraphMemo:
        """What was worked out from this graph as it is now (validated, compiled): shared
        with its copies while their content, file and resolver are its own."""
        # Its JSON, not its hash: exact (1, 1.0 and true differ) and a third of the cost,
        # paid on every compile_graph, which runs once per child graph run.
        try:
            content = self.model_dump_json()
        except PydanticSerializationError:
            # Not JSON (an object among a node's params): kept for nothing, so validation
            # runs and says what is wrong; such a graph can never be journaled anyway.
            return GraphMemo()
        key = (content, self._source, self._resolver)
        memo = self._memo
        if memo.key is None:
            memo.key = key
        elif memo.key != key:
            memo = self._memo = GraphMemo()
            memo.key = key
        return memo

    def read_from(self, source: str | None, lines: dict[tuple[str | int, ...], int]) -> None:
        """Say where the graph was read from: its file, and the line of each path in it."""
        self._source, self._lines, self._read_as = source, lines, self._content()

    def forget_lines_if_edited(self) -> None:
        """Drop the line map of a graph edited since it was read: its lines point into a
        file that no longer says what the graph does. Its `source` stays (paths in it are
        still relative to that file)."""
        if self._read_as and self._read_as != self._content():
            self._lines, self._read_as = {}, None

    def _content(self) -> str:
        """The graph as JSON, "" when it is not JSON (an object among a node's params)."""
        try:
            return self.model_dump_json()
        except PydanticSerializationError:
            return ""

    @property
    def read_file(self) -> str | None:
        """The file the graph is, as it is now: its source, unless edited since it was read."""
        return self._source if self._read_as is not None else None

    def line_of(self, *path: str | int) -> int | None:
        """The source line of a path like ("nodes", "model", "kind"), or of its nearest parent."""
        while path:
            if (line := self._lines.get(path)) is not None:
                return line
            path = path[:-1]
        return None

    def to_data(self) -> dict[str, Any]:
        """The graph as plain data, as it would be written to YAML."""
        return self.model_dump(by_alias=True, exclude_defaults=True, mode="json") | {
            "name": self.name
        }

    def content_hash(self) -> str:
        """A stable hash of the graph's content (not of its formatting)."""
        canonical = json.dumps(self.to_data(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def outgoing(self, node: str) -> list[EdgeSpec]:
        """The edges leaving a node, in file order."""
        return [e for e in self.edges if e.source == node]
