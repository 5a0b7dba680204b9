"""Keys of Postgres advisory locks: 64 bits of a name's SHA-256.

Postgres's own `hashtext` is 32 bits: among a few hundred thousand names two share a key (a
birthday search finds a pair in a second), so a name anyone may choose, a user id, could
be made to share another's lock. 64 bits of SHA-256 make that as hard as finding a
collision of SHA-256's first 64 bits, and the key is the same in every process and release.
"""

from __future__ import annotations

import hashlib

__all__ = ["advisory_key"]


def advisory_key(name: str) -> int:
    """The signed 64-bit key (`pg_advisory_lock(bigint)`'s) of the lock called `name`."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
