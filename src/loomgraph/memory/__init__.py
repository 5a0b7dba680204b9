"""Memory backends."""

from loomgraph.memory.null import InMemoryMemory, NoMemory

__all__ = ["InMemoryMemory", "NoMemory"]
