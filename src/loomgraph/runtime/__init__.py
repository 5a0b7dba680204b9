"""Runtime journals: where runs, transitions and effects are recorded."""

from loomgraph.runtime.memory import InMemoryRuntime, UnknownRun

__all__ = ["InMemoryRuntime", "UnknownRun"]
