"""API keys: a fresh key, the hash it is stored as, the id it is listed by, and whom it names."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

__all__ = ["KEY_ID_CHARS", "KEY_PREFIX", "ApiKey", "hash_key", "key_id", "new_key"]

KEY_PREFIX = "lg_"


def hash_key(key: str) -> str:
    """The stored form of a key (keys are 256 random bits, so a plain SHA-256 is enough)."""
    return hashlib.sha256(key.encode()).hexdigest()


# A key's public id: the start of its hash, enough to name it (to revoke it), never the key.
KEY_ID_CHARS = 12


def key_id(key_hash: str) -> str:
    """The id a stored key is listed and revoked by."""
    return key_hash[:KEY_ID_CHARS]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """Who a key authenticates, and whether they may answer approvals; its id and when it
    was made, for listing and revoking."""

    user_id: str
    approver: bool = False
    label: str = ""
    key_id: str = ""
    created_at: float = 0.0


def new_key() -> str:
    """A fresh API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)
