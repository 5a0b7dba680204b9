"""The built-in node kinds. The registry finds them through the `loomgraph.nodes` entry
points, as it finds third-party kinds; nothing imports this package to register them."""

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
