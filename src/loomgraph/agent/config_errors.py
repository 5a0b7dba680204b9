"""What an Agent's arguments are refused with when they name nothing loomgraph knows
(`ConfigError`), and the check that an object given for one of its parts implements that
part's protocol (`checked`)."""

from __future__ import annotations

from typing import Any

from loomgraph.errors import LoomgraphError
from loomgraph.protocols import implements

__all__ = ["ConfigError", "checked"]


class ConfigError(LoomgraphError, ValueError):
    """An Agent argument that names nothing loomgraph knows; the message lists what exists."""


def checked(obj: Any, protocol: type, what: str) -> Any:
    """`obj`, or ConfigError naming `what` when it does not implement `protocol`."""
    if not implements(obj, protocol):
        raise ConfigError(
            f"{what} object {type(obj).__name__} does not implement the "
            f"{protocol.__name__} protocol"
        )
    return obj
