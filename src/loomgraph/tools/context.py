"""What loomgraph fills in for a tool, never shown to the model: the `ToolContext` of the
call, and user dependencies (`Agent(..., tool_deps={...})`) marked `Injected`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loomgraph.errors import LoomgraphError
from loomgraph.protocols import ToolRun, tool_run


@dataclass(frozen=True, slots=True)
class ToolContext:
    """The call a tool is running for: give a tool a parameter typed `ToolContext`.

    `run_id`, `user_id`, `session_id` and `node` are None when the tool is called outside a
    run (say, `ToolRegistry.call` in a test).
    """

    call_id: str
    tool: str
    idempotency_key: str
    run_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    node: str | None = None
    _run: ToolRun | None = None

    async def progress(self, message: str, **data: Any) -> None:
        """Report progress: a `tool_progress` event of the run (nothing outside a run)."""
        if self._run is not None:
            await self._run.progress(message, data)


def context_for(call_id: str, tool: str, idempotency_key: str) -> ToolContext:
    """The context of a call under way, from the run the engine says it belongs to."""
    run = tool_run.get()
    if run is None:
        return ToolContext(call_id, tool, idempotency_key)
    return ToolContext(
        call_id,
        tool,
        idempotency_key,
        run.run_id,
        run.user_id,
        run.session_id,
        run.node,
        run,
    )


class Injected:
    """Marks a tool parameter as a dependency loomgraph fills from `tool_deps`:
    `db: Annotated[Database, Injected]` (looked up by the parameter's name, then by its
    type) or `Annotated[Database, Injected("orders_db")]` (by that key)."""

    __slots__ = ("key",)

    def __init__(self, key: str | None = None) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Injected({self.key!r})"


@dataclass(frozen=True, slots=True)
class Injection:
    """One parameter loomgraph fills: the call's context, or a dependency."""

    param: str
    context: bool = False
    dep: str | None = None  # the tool_deps key
    dep_type: Any = None  # the annotated type, looked up when the key is absent


class MissingToolDependency(LoomgraphError, LookupError):
    """A tool needs an injected dependency that `tool_deps` does not provide."""

    def __init__(self, tool: str, param: str, key: str, known: Mapping[Any, Any]) -> None:
        names = ", ".join(_key_name(k) for k in known) or "none"
        super().__init__(
            f"tool {tool!r} needs dependency {key!r} for its parameter {param!r}, but "
            f"tool_deps has no such entry (it has: {names})"
        )
        self.tool = tool
        self.param = param
        self.key = key


def _key_name(key: Any) -> str:
    return key if isinstance(key, str) else getattr(key, "__name__", repr(key))


def resolve(tool: str, item: Injection, deps: Mapping[Any, Any]) -> Any:
    """The value of one injected dependency; raises MissingToolDependency."""
    key = item.dep or item.param
    if key in deps:
        return deps[key]
    if item.dep is None and item.dep_type is not None and item.dep_type in deps:
        return deps[item.dep_type]
    raise MissingToolDependency(tool, item.param, key, deps)
