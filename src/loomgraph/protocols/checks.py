"""`implements`: the runtime check of a backend object against its protocol.

`close()` joined the backend protocols after they were first published. A user's backend
written before then has no `close()`, and is still accepted: whoever closes a backend looks
the method up with `getattr` and skips objects without one. Every other member is required,
as `isinstance` on a `runtime_checkable` protocol would require it.
"""

from __future__ import annotations

import functools
from typing import Generic, Protocol

__all__ = ["OPTIONAL_MEMBERS", "close_backend", "implements"]

# Members a backend may lack at runtime (static type checking still asks for them).
OPTIONAL_MEMBERS = frozenset({"close"})


async def close_backend(backend: object) -> None:
    """Close a backend. One written before `close()` joined its protocol (see
    OPTIONAL_MEMBERS) holds nothing loomgraph must let go of, and is left as it is."""
    close = getattr(backend, "close", None)
    if close is not None:
        await close()


def implements(obj: object, protocol: type) -> bool:
    """Whether `obj` has every member of `protocol` except the optional ones."""
    if isinstance(obj, protocol):
        return True
    return all(hasattr(obj, name) for name in _required(protocol))


@functools.cache
def _required(protocol: type) -> frozenset[str]:
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (object, Protocol, Generic):
            continue
        names.update(getattr(klass, "__annotations__", {}))
        names.update(n for n, v in vars(klass).items() if callable(v) and not n.startswith("_"))
    return frozenset(names - OPTIONAL_MEMBERS)
