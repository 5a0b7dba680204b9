"""The built-in node kinds; importing this package registers them."""

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
