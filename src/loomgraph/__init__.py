"""loomgraph: LLM agents whose loop strategies are declarative, typed, checkpointed graphs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loomgraph.agent.agent import Agent
    from loomgraph.agent.result import RunResult
    from loomgraph.agent.session import AgentSession
    from loomgraph.graph.registry import NodeKind, register_node
    from loomgraph.graph.spec import Graph
    from loomgraph.nodes.structured import OutputValidationError
    from loomgraph.protocols.events import Event
    from loomgraph.tools import tool

__all__ = [
    "Agent",
    "AgentSession",
    "Event",
    "Graph",
    "NodeKind",
    "OutputValidationError",
    "RunResult",
    "register_node",
    "tool",
]

_EXPORTS = {
    "Agent": "loomgraph.agent.agent",
    "AgentSession": "loomgraph.agent.session",
    "RunResult": "loomgraph.agent.result",
    "Event": "loomgraph.protocols.events",
    "Graph": "loomgraph.graph.spec",
    "NodeKind": "loomgraph.graph.registry",
    "register_node": "loomgraph.graph.registry",
    "tool": "loomgraph.tools",
    "OutputValidationError": "loomgraph.nodes.structured",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import loomgraph` stays fast and pulls in nothing a program does not use.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loomgraph' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
