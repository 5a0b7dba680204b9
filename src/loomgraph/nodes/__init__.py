"""The built-in node kinds. The registry imports each kind's module when a graph first names
it (`graph.registry.node_kind`), as it loads third-party kinds from their entry points;
nothing imports this package to register them, and importing it imports no kind."""

from typing import TYPE_CHECKING

from loomgraph.protocols.lazy import lazy_names

if TYPE_CHECKING:
    from loomgraph.nodes.function import FunctionNode
    from loomgraph.nodes.interrupt import InterruptNode
    from loomgraph.nodes.llm import LLMNode
    from loomgraph.nodes.map import MapNode
    from loomgraph.nodes.model import ModelNode
    from loomgraph.nodes.subgraph import SubgraphNode
    from loomgraph.nodes.tools import ToolsNode

__all__ = [
    "FunctionNode",
    "InterruptNode",
    "LLMNode",
    "MapNode",
    "ModelNode",
    "SubgraphNode",
    "ToolsNode",
]

__getattr__ = lazy_names(
    __name__,
    {
        "FunctionNode": "loomgraph.nodes.function",
        "InterruptNode": "loomgraph.nodes.interrupt",
        "LLMNode": "loomgraph.nodes.llm",
        "MapNode": "loomgraph.nodes.map",
        "ModelNode": "loomgraph.nodes.model",
        "SubgraphNode": "loomgraph.nodes.subgraph",
        "ToolsNode": "loomgraph.nodes.tools",
    },
    globals(),
)
