"""How one call is decided by the rules, policy and mode that hold for its user."""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from loomgraph.governance.rules import Rule, SetSource
from loomgraph.protocols import Decision, ToolCall, ToolSpec
from loomgraph.protocols.shapes import shape
from loomgraph.protocols.tasks import stops_the_task

_log = logging.getLogger(__name__)

__all__ = ["LabelledRule", "Mode", "Policy", "PolicyResult", "RuleSet", "decide"]

Mode = Literal["default", "accept_edits", "bypass", "strict"]
PolicyResult: TypeAlias = Decision | str
Policy: TypeAlias = Callable[
    [ToolCall, ToolSpec | None, str | None], PolicyResult | Awaitable[PolicyResult]
]


@dataclass(frozen=True, slots=True)
class LabelledRule:
    """A rule and the name a Decision gives it (`deny:…`, `user:alice:allow:…`)."""

    rule: Rule
    name: str


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules, mode and policy that hold for one user, global ones merged with theirs."""

    deny: tuple[LabelledRule, ...]
    ask: tuple[LabelledRule, ...]
    allow: tuple[LabelledRule, ...]
    mode: Mode
    policy: Policy | None
    sets: Mapping[str, SetSource]


async def decide(
    rules: RuleSet, call: ToolCall, spec: ToolSpec, *, user_id: str | None
) -> Decision:
    """allow, deny or ask for one call of a known tool under `rules` (the user's, merged),
    naming the rule that decided: deny → ask (with `unless`) → allow, the policy, the mode."""
    sets = rules.sets
    for entry in rules.deny:
        if entry.rule.matches(call, spec=spec, sets=sets):
            return Decision("deny", entry.name, f"denied by rule {entry.rule.text!r}")
    excused: Decision | None = None
    for entry in rules.ask:
        if not entry.rule.matches(call, spec=spec, sets=sets):
            continue
        excuse = entry.rule.excused_by(call, spec=spec, sets=sets)
        if excuse is not None:
            # Every matching ask rule must be excused: a later one may still ask.
            prefix = entry.name[: len(entry.name) - len(f"ask:{entry.rule.text}")]
            excused = excused or Decision(
                "allow",
                f"{prefix}unless:{excuse.text}",
                f"ask rule {entry.rule.text!r} excused by {excuse.text!r}",
            )
            continue
        if rules.mode == "bypass":
            return Decision("allow", "mode:bypass", f"ask rule {entry.rule.text!r} bypassed")
        return Decision("ask", entry.name, f"rule {entry.rule.text!r} asks")
    if excused is not None:
        return excused
    for entry in rules.allow:
        if entry.rule.matches(call, every=True, spec=spec, sets=sets):
            return Decision("allow", entry.name, f"allowed by rule {entry.rule.text!r}")
    if rules.policy is not None:
        decided = await _ask_policy(rules.policy, call, spec, user_id)
        if decided is not None:
            if decided.verdict == "ask" and rules.mode == "bypass":
                return Decision("allow", "mode:bypass", f"{decided.rule} asks; bypassed")
            return decided
    return _mode_default(rules.mode, spec)


def _mode_default(mode: Mode, spec: ToolSpec) -> Decision:
    if mode == "strict":
        return Decision("deny", "mode:strict:deny", "strict mode: no rule allows this call")
    if mode == "default" and spec.get("destructive"):
        return Decision(
            "ask", "mode:default:destructive", f"tool {spec.get('name')!r} is destructive"
        )
    return Decision("allow", f"mode:{mode}:allow")


async def _ask_policy(
    policy: Policy, call: ToolCall, spec: ToolSpec, user_id: str | None
) -> Decision | None:
    """The policy's Decision, None for "default", a deny when it raises or returns junk."""
    name = getattr(policy, "__qualname__", None) or type(policy).__name__
    try:
        # A copy, as hooks and the approval handler are given: what a policy edits in the
        # call (or spec) it reads never reaches the tool, which the rules decided on as sent.
        seen_call, seen_spec = copy.deepcopy((call, spec))
    except Exception as err:  # arguments a code node gave that cannot be copied: not asked
        _log.warning("the call for permission policy %s cannot be copied", name, exc_info=err)
        return Decision("deny", "policy:error", f"the call cannot be copied for policy {name}")
    try:
        result: Any = policy(seen_call, seen_spec, user_id)
        if inspect.isawaitable(result):
            result = await result
    except asyncio.CancelledError as err:
        if stops_the_task(err):
            raise  # the run is cancelled: not the policy's failure
        # Raised by the policy itself (an async client cancelled inside it): a failure.
        _log.warning("permission policy %s raised CancelledError", name, exc_info=err)
        return Decision("deny", "policy:error", f"policy {name} raised CancelledError")
    except Exception as err:
        # Its message goes to the log only: it may quote the call's arguments, which the
        # decision's event and audit entry carry only as a hash.
        _log.warning("permission policy %s raised", name, exc_info=err)
        return Decision("deny", "policy:error", f"policy {name} raised {type(err).__name__}")
    if isinstance(result, Decision) and result.verdict in ("allow", "deny", "ask"):
        rule = f"policy:{result.rule}" if result.rule else f"policy:{name}"
        return Decision(result.verdict, rule, result.reason)
    # A str first: the `==` of an array-like (a verdict per element) raises or is no bool.
    if isinstance(result, str) and result in ("allow", "deny", "ask"):
        return Decision(result, f"policy:{name}")  # type: ignore[arg-type]
    if isinstance(result, str) and result == "default":
        return None
    # Named by type and size in the decision: the value (the call's arguments, returned by
    # a slip) goes to the log only, as an exception's message does.
    _log.warning("permission policy %s returned %r", name, result)
    what = "a Decision of no known verdict" if isinstance(result, Decision) else shape(result)
    return Decision(
        "deny",
        "policy:error",
        f"policy {name} returned {what}, not a "
        "Decision or one of 'allow', 'deny', 'ask', 'default'",
    )
