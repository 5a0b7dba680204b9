"""A tool's identity: what an approval of one of its calls was given for.

A person approves a call of the tool they were shown: its name, description, parameter
schema and flags, from one origin (a function of this process, or an MCP server reached one
way). The identity is a digest of all of that; an approval is used only while the tool that
answers to the call's name has the identity recorded when the approval was asked for.

Computed only when an approval is asked for or an answer is used, never for an ordinary call.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from loomgraph.protocols.messages import ToolSpec

__all__ = ["ToolIdentity"]  # `LOCAL` and `digest` are for the tools package

LOCAL: Final = "local"
"""The origin of a tool with no `ToolSpec.origin`: a function of this process."""

SHOWN_CHARS: Final = 12
"""How many hex digits of a digest its short human form shows."""


def digest(value: Any) -> str:
    """The sha256 hex digest of `value` as canonical JSON (sorted keys, no spaces); a value
    JSON cannot write counts as its repr, so a digest never fails."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ToolIdentity:
    """Which tool, from where: its origin's name (`local`, or `mcp:SERVER`) and a digest over
    its whole spec, origin and how that origin is reached included."""

    origin: str
    digest: str

    @classmethod
    def of(cls, spec: ToolSpec) -> ToolIdentity:
        """The identity of the tool `spec` describes."""
        origin: Any = spec.get("origin")
        if isinstance(origin, dict):
            name = f"{origin.get('kind', '')}:{origin.get('name', '')}"
        else:  # none (a local tool), or a host's own value: the digest still covers it
            name = LOCAL if origin is None else "other"
        return cls(name, digest(spec))

    def shown(self) -> str:
        """The short human form: the origin's name and the digest's first hex digits."""
        return f"{self.origin} sha256:{self.digest[:SHOWN_CHARS]}"

    def to_dict(self) -> dict[str, str]:
        """The JSON shape journals and results keep (`shown` is for people reading it)."""
        return {"origin": self.origin, "digest": self.digest, "shown": self.shown()}

    @classmethod
    def from_dict(cls, data: Any) -> ToolIdentity | None:
        """An identity kept as `to_dict` wrote it; None for anything else (a request
        journaled before identities were recorded)."""
        if not isinstance(data, dict):
            return None
        origin, value = data.get("origin"), data.get("digest")
        if not isinstance(origin, str) or not isinstance(value, str) or not value:
            return None
        return cls(origin, value)
