"""Checks an approval makes of a call and of an answer, apart from settling it: sizes, the
call an answer is bound to, the tool's identity, and how a refused answer is named."""

from __future__ import annotations

from typing import Any

from loomgraph.engine.effects import Approval
from loomgraph.engine.state_size import json_size
from loomgraph.protocols import (
    ArgumentChecker,
    ArgumentReader,
    Decision,
    ToolCall,
    ToolHost,
    ToolSpec,
    shapes,
)
from loomgraph.protocols.json_values import same_json
from loomgraph.protocols.tool_identity import ToolIdentity

__all__ = [
    "TOOL_CHANGED",
    "args_too_large",
    "edit_problem",
    "edit_too_large",
    "same_call",
    "schema_problem",
    "shape",
    "tool_changed",
]

# The rule of a call denied because its tool is not the one its approval was asked about.
TOOL_CHANGED = "approval:tool_changed"


def args_too_large(call: ToolCall, limit: int) -> str | None:
    """Why a call's arguments are over the size limit (the model's or an approver's edit:
    one limit, one message), or None."""
    size = json_size(call["args"])
    if size <= limit:
        return None
    return (
        f"Invalid arguments for tool {call['tool']!r}: they are {size} characters; "
        f"at most {limit} are accepted."
    )


def edit_too_large(call: ToolCall, answer: Approval, limit: int) -> str | None:
    """Why an answer's edited arguments for `call` are over the size limit, or None: such an
    answer is refused, never journaled, as the model's call would be."""
    if not answer.allow or answer.args is None:
        return None
    return args_too_large(ToolCall(id=call["id"], tool=call["tool"], args=answer.args), limit)


def edit_problem(tools: ToolHost, edited: ToolCall, spec: ToolSpec) -> str | None:
    """Why the tool would refuse an approval's edited arguments, or None: asked of the host
    that will run the call (`ArgumentChecker`: the check its call makes, nothing run), else
    read as a host converting arguments reads them (`ArgumentReader`), else against the
    JSON Schema of a tool of the agent's own. An approval is used once, so an edit the call
    would refuse is refused before the approval is used (a resume's) or counted (a
    handler's). A server's schema from elsewhere (`origin`) is run only by its host, whose
    pattern matcher is bounded."""
    if isinstance(tools, ArgumentChecker):
        return tools.argument_problem(edited)
    if isinstance(tools, ArgumentReader) and tools.received_args(edited) is not None:
        return None  # the tool reads them (as it converts them: "on" for a bool): they fit
    if "origin" in spec:
        return None
    return schema_problem(edited["args"], spec)


def schema_problem(args: dict[str, Any], spec: ToolSpec) -> str | None:
    """Where `args` do not fit the JSON Schema `spec` shows the model (`parameters`), or
    None; a tool without a schema, or whose schema is itself no valid schema, fits anything
    (the tool checks what it gets)."""
    schema = spec.get("parameters")
    if not isinstance(schema, dict):
        return None
    import jsonschema  # (an edited approval only: not on a run's path)

    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        found = jsonschema.exceptions.best_match(validator.iter_errors(args))
    except jsonschema.exceptions.SchemaError:
        return None
    if found is None:
        return None
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in found.absolute_path)
    return f"at ${where}: {found.message}"


def shape(value: Any) -> str:
    """What an approval handler's answer is by its type and size (`protocols.shapes.shape`),
    saying why a dict is not `{"args": ...}`: a refusal's reason goes into the audit log."""
    if isinstance(value, dict) and set(value) == {"args"}:
        return f"a value whose 'args' is None ({type(value).__name__})"
    shown = shapes.shape(value)
    return f"{shown}, not just 'args'" if isinstance(value, dict) else shown


def same_call(journaled: Any, call: ToolCall) -> bool:
    """True when a journaled call is `call`: the same id, tool and arguments."""
    return (
        isinstance(journaled, dict)
        and journaled.get("id") == call["id"]
        and journaled.get("tool") == call["tool"]
        and same_json(journaled.get("args"), call["args"])
    )


def tool_changed(
    recorded: Any, spec: ToolSpec, call: ToolCall, *, sent: bool = False
) -> Decision | None:
    """The denial of `call` when the tool its approval was asked about (`recorded`, as
    journaled) is not the tool `spec` describes now, or None: the same tool, or nothing
    recorded (a request journaled before identities were). `sent`: the approved call was
    sent before the run was cut off, so it may have acted; the model is told so rather than
    to call it again."""
    then = ToolIdentity.from_dict(recorded)
    if then is None:
        return None
    now = ToolIdentity.of(spec)
    if now == then:
        return None
    return Decision(
        "deny",
        TOOL_CHANGED,
        f"tool {call['tool']!r} changed since this call was asked about (approved: "
        f"{then.shown()}; now: {now.shown()}), so the approval does not cover it; "
        + (
            "it was sent once before the run was cut off and may have taken effect: find out "
            "before calling it again"
            if sent
            else "call it again to be asked anew"
        ),
    )
