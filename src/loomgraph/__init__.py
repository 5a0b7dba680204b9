"""loomgraph: LLM agents whose loop strategies are declarative, typed, checkpointed graphs.

The names below are the public surface; everything else is imported from its own module
(`loomgraph.models`, `loomgraph.runtime.sqlite`, …, see docs/architecture.md). They are
loaded on first use, so `import loomgraph` imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loomgraph.agent.agent import Agent
    from loomgraph.agent.result import RunResult
    from loomgraph.agent.session import AgentSession
    from loomgraph.engine.effects import Approval
    from loomgraph.errors import LoomgraphError
    from loomgraph.graph.node_context import NodeContext
    from loomgraph.graph.registry import NodeKind, register_node
    from loomgraph.graph.spec import Graph
    from loomgraph.nodes.structured import OutputValidationError
    from loomgraph.protocols.events import Event
    from loomgraph.tools import tool

_EXPORTS = {
    # Running agents: an agent, a conversation with it, what a run returns, its events.
    "Agent": "loomgraph.agent.agent",
    "AgentSession": "loomgraph.agent.session",
    "RunResult": "loomgraph.agent.result",
    "Event": "loomgraph.protocols.events",
    # Approvals: a person's answer to a pending tool call, for `agent.resume(approve=...)`.
    "Approval": "loomgraph.engine.effects",
    # Tools: a Python function as a tool the model can call.
    "tool": "loomgraph.tools",
    # Strategies: a graph, and new node kinds with what a node gets when it runs.
    "Graph": "loomgraph.graph.spec",
    "NodeKind": "loomgraph.graph.registry",
    "register_node": "loomgraph.graph.registry",
    "NodeContext": "loomgraph.graph.node_context",
    # Errors: the root of every loomgraph error, and a structured answer that did not fit.
    "LoomgraphError": "loomgraph.errors",
    "OutputValidationError": "loomgraph.nodes.structured",
}

__all__ = [
    "Agent",
    "AgentSession",
    "Approval",
    "Event",
    "Graph",
    "LoomgraphError",
    "NodeContext",
    "NodeKind",
    "OutputValidationError",
    "RunResult",
    "register_node",
    "tool",
]


def __getattr__(name: str) -> Any:
    # Lazy, so `import loomgraph` stays fast and pulls in nothing a program does not use.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loomgraph' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
