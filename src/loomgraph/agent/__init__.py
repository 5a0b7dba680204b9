"""The wiring layer: `Agent`, `AgentSession`, `RunResult`, the dependency bundle's resolution,
memory wiring, checkpoints and leases. Only this layer knows every other one."""

from loomgraph.agent.agent import Agent
from loomgraph.agent.result import RunResult
from loomgraph.agent.session import AgentSession

__all__ = ["Agent", "AgentSession", "RunResult"]
