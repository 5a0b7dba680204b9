"""What a stopped run waits for (`Pending`): an approval of one tool call, bound to the tool
that was shown, or a value for an `interrupt` node. Results, the HTTP API and the CLI show it
as `to_dict` writes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loomgraph.protocols.messages import ToolCall
from loomgraph.protocols.tool_identity import ToolIdentity

__all__ = ["Pending"]


@dataclass(slots=True, frozen=True)
class Pending:
    """What a stopped run waits for: an approval of one tool call (`call`), or a value of a
    given type for an `interrupt` node (`type`)."""

    node: str
    # An approval: the call, the rule that asked, and the journal key its answer goes under.
    call: ToolCall | None = None
    rule: str = ""
    key: str = ""
    tainted: bool = False
    # When the request was made, and when an unanswered one is denied (None: never).
    asked_at: float | None = None
    deadline: float | None = None
    # A value: the type asked for (as written in the graph), the message, its JSON Schema.
    type: str = ""
    message: str = ""
    schema: dict[str, Any] | None = None
    # An approval: the tool the call was asked about (None: a request of an older journal).
    tool: ToolIdentity | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape results keep (empty fields left out)."""
        data: dict[str, Any] = {"node": self.node}
        for name in (
            "call",
            "rule",
            "key",
            "tainted",
            "asked_at",
            "deadline",
            "type",
            "message",
            "schema",
        ):
            value = getattr(self, name)
            if value:
                data[name] = value
        if self.tool is not None:
            data["tool"] = self.tool.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pending:
        """A pending request a result kept."""
        return cls(
            node=str(data.get("node", "")),
            call=data.get("call"),
            rule=str(data.get("rule", "")),
            key=str(data.get("key", "")),
            tainted=bool(data.get("tainted", False)),
            asked_at=data.get("asked_at"),
            deadline=data.get("deadline"),
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            schema=data.get("schema"),
            tool=ToolIdentity.from_dict(data.get("tool")),
        )
