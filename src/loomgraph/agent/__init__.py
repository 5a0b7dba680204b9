"""The wiring layer: `Agent`, `AgentSession`, `RunResult`, the dependency bundle's resolution,
memory wiring, checkpoints and leases. Only this layer knows every other one.

Each public name is imported on first use: building an Agent does not load what runs it."""

from typing import TYPE_CHECKING

from loomgraph.protocols.lazy import lazy_names

if TYPE_CHECKING:
    from loomgraph.agent.agent import Agent
    from loomgraph.agent.result import RunResult
    from loomgraph.agent.session import AgentSession

__all__ = ["Agent", "AgentSession", "RunResult"]

__getattr__ = lazy_names(
    __name__,
    {
        "Agent": "loomgraph.agent.agent",
        "AgentSession": "loomgraph.agent.session",
        "RunResult": "loomgraph.agent.result",
    },
    globals(),
)
