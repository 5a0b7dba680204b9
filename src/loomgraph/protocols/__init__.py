"""The contracts: data types, backend protocols and event kinds. Imports nothing of ours."""

from loomgraph.protocols.contracts import *  # noqa: F403
